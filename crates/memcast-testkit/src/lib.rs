//! Test support, used by every memcast integration test: real memcached
//! processes on free ports, network namespaces joined by a bridge, and child
//! processes, each stopped by PID or removed when dropped, even when a test
//! fails.
//!
//! # Layout
//!
//! - this file: [`Proc`] (a child stopped by PID), [`Memcached`] on a free
//!   loopback port, [`Network`] (namespaces on a bridge, a free test
//!   subnet, links up and down), [`TempDir`], [`eventually`].
//! - [`cluster`]: N hosts in namespaces, each with memcached, memcastd and
//!   PHP ([`cluster::Cluster`]), in the README's setups; PHP's built-in web
//!   server on a host ([`cluster::PhpServer`]).
//! - [`web`]: nginx + php-fpm on loopback ([`web::WebStack`]), and one
//!   HTTP GET for both web servers.
//! - [`soak`]: the fault soak: writers and readers on every host, seeded
//!   faults, the ledger that judges every read and the end state.

pub mod cluster;
pub mod soak;
pub mod web;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends a signal by PID (never by name) and waits up to `wait` for exit.
    pub fn signal(&mut self, sig: &str, wait: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running process as /proc shows it: its PID and its start time (clock
/// ticks since boot), which together name it even if the PID is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId {
    pub pid: u32,
    start: u64,
}

impl ProcId {
    fn read(pid: u32) -> Option<(ProcId, u32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ... starttime(22) ...": comm may hold
        // spaces and parentheses, so fields are counted after its ')'.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let start = fields.get(19)?.parse().ok()?;
        Some((ProcId { pid, start }, ppid))
    }

    /// SIGKILL, if this very process still runs.
    pub fn kill(self) {
        if ProcId::read(self.pid).is_some_and(|(now, _)| now == self) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// The processes whose parent is `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<ProcId> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(ProcId::read)
        .filter(|(_, ppid)| *ppid == parent)
        .map(|(p, _)| p)
        .collect()
}

/// A port nobody listens on right now on 127.0.0.1, and never handed out
/// before by this process. The check sees only this network namespace: a
/// server started inside a host's namespace on an earlier port is
/// invisible here, and the kernel hands a freed port out again, so without
/// the memory a second server in that namespace could get the same port,
/// fail to bind, and its readiness check be answered by the first.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on 127.0.0.1");
        if given.insert(port) {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 not handed out before");
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_for_tcp(addr: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Polls `f` until it returns `Some`, or gives up after `within`.
pub fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn memcached_binary() -> PathBuf {
    for p in ["/usr/bin/memcached", "/usr/local/bin/memcached"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("memcached is not installed (apt-get install memcached)");
}

/// Options every test memcached runs with: 4 MB items so a 1 MB session fits,
/// 1 GB so the 50 000-session warm-up test is never evicted,
/// with room to spare, no UDP.
pub const MEMCACHED_ARGS: &[&str] = &["-U", "0", "-m", "1024", "-I", "4m", "-t", "2"];

/// A real memcached on a free loopback port.
pub struct Memcached {
    pub port: u16,
    proc: Proc,
}

impl Memcached {
    /// On a given loopback port: to restart a killed memcached in its place.
    pub fn start_on(port: u16) -> Memcached {
        Memcached::spawn_on(port)
            .unwrap_or_else(|| panic!("memcached did not start on port {port}"))
    }

    /// On a free loopback port.
    pub fn start() -> Memcached {
        // A free port can be taken between the probe and memcached's bind.
        (0..5)
            .find_map(|_| Memcached::spawn_on(free_port()))
            .expect("memcached did not start")
    }

    fn spawn_on(port: u16) -> Option<Memcached> {
        let mut cmd = Command::new(memcached_binary());
        cmd.args(["-l", "127.0.0.1", "-p", &port.to_string()])
            .args(MEMCACHED_ARGS)
            .args(user_arg())
            .stdout(Stdio::null());
        let mut proc = Proc::spawn("memcached", &mut cmd);
        let up =
            wait_for_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(5)) && proc.is_running();
        up.then_some(Memcached { port, proc })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// kill -9, as a crash would.
    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

/// memcached refuses to run as root without `-u`.
pub fn user_arg() -> Vec<&'static str> {
    if is_root() {
        vec!["-u", "root"]
    } else {
        vec![]
    }
}

/// The exact bytes memcached holds for `key`, read with a raw `get`.
pub fn raw_get(addr: &str, key: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("get {key}\r\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            panic!("{addr} closed the connection during get {key}");
        }
        out.extend_from_slice(&buf[..n]);
        if out == b"END\r\n" {
            return None;
        }
        let Some(eol) = out.windows(2).position(|w| w == b"\r\n") else {
            continue;
        };
        let header = String::from_utf8_lossy(&out[..eol]).into_owned();
        let len: usize = header
            .split(' ')
            .nth(3)
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("bad reply {header:?}"));
        let total = eol + 2 + len + 2 + 5;
        if out.len() >= total {
            return Some(out[eol + 2..eol + 2 + len].to_vec());
        }
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Fails loudly (never skips) when a test needs root for namespaces.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (network namespaces); run the tests as root, as CI does"
    );
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

static NEXT_NET: AtomicUsize = AtomicUsize::new(0);

/// A 198.18.<s>.0/24 no route of this machine covers yet (another test's
/// bridge, or the machine's own networks), starting the search at `seed`.
fn free_subnet(seed: usize) -> u8 {
    for k in 0..250 {
        let s = ((seed + k * 13) % 250) as u8;
        let probe = format!("198.18.{s}.1");
        let taken = Command::new("ip")
            .args(["-4", "route", "show", "to", "match", &probe])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| !l.starts_with("default"))
            })
            .unwrap_or(false);
        if !taken {
            return s;
        }
    }
    panic!("no free 198.18.x.0/24 for a test network");
}

/// A bridge in the root namespace with hosts (namespaces) attached by veth
/// pairs, on a /24 of 198.18.0.0/15 (the range set aside for test
/// networks). Everything is removed on drop.
pub struct Network {
    pub bridge: String,
    /// Every link's MTU: 1500, or jumbo frames ([`Network::with_mtu`]).
    pub mtu: u32,
    prefix: String,
    subnet: u8,
    hosts: Vec<String>,
}

/// One host: a network namespace with address `addr` on interface `iface`.
pub struct Host {
    pub netns: String,
    pub iface: String,
    pub addr: String,
}

impl Host {
    /// A command that runs inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }
}

/// The MTU of a test network's links: `MEMCAST_NET_MTU` if set (e.g. 1500
/// under `--pgm-max-tpdu 9000`, to see IP fragmentation), else `wanted`.
pub fn network_mtu(wanted: u32) -> u32 {
    std::env::var("MEMCAST_NET_MTU")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|m| (576..=65_535).contains(m))
        .unwrap_or(wanted)
}

impl Network {
    /// `name` is a short tag (a few letters) that makes every object's name
    /// unique to this process and test.
    pub fn new(name: &str) -> Network {
        Network::with_mtu(name, 1500)
    }

    /// A network whose links carry frames of up to `mtu` bytes (9000: jumbo
    /// frames), unless `MEMCAST_NET_MTU` says otherwise.
    pub fn with_mtu(name: &str, mtu: u32) -> Network {
        let mtu = network_mtu(mtu);
        require_root("a multi-host test");
        let n = NEXT_NET.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let prefix = format!("m{name}{pid}{n}");
        assert!(
            prefix.len() <= 11,
            "network tag {name:?} too long for interface names"
        );
        // Choosing a subnet and claiming it (the bridge's route) is one step
        // for this process's tests.
        static CLAIM: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let claim = CLAIM.lock().unwrap_or_else(|e| e.into_inner());
        let subnet = free_subnet(pid as usize + n * 7);
        let bridge = format!("{prefix}br");
        let net = Network {
            bridge: bridge.clone(),
            mtu,
            prefix,
            subnet,
            hosts: Vec::new(),
        };
        must(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        // The bridge's own address lets the test itself reach every host.
        must(&[
            "addr",
            "add",
            &format!("198.18.{subnet}.254/24"),
            "dev",
            &bridge,
        ]);
        must(&["link", "set", &bridge, "up"]);
        drop(claim);
        net
    }

    /// The multicast group for this network: 239.192.<subnet>.1.
    pub fn group(&self) -> String {
        format!("239.192.{}.1", self.subnet)
    }

    /// Adds host number `i` (1, 2, 3...) as 198.18.<subnet>.<i>/24.
    pub fn add_host(&mut self, i: u8) -> Host {
        let netns = self.netns(i);
        let outer = format!("{}v{i}", self.prefix);
        let iface = format!("eth{i}");
        let addr = self.host_addr(i);
        must(&["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        // `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc. Name
        // lookups stay in /etc/hosts: OpenPGM resolves the interface part of
        // "epgm://eth1;..." as a host name first, and a DNS server the
        // namespace cannot reach makes that fail instead of falling through
        // to interface names.
        let etc = PathBuf::from("/etc/netns").join(&netns);
        std::fs::create_dir_all(&etc).expect("create /etc/netns/<ns>");
        std::fs::write(etc.join("nsswitch.conf"), "hosts: files\nnetworks: files\n")
            .expect("write nsswitch.conf");
        // The inner end is created inside the namespace, so parallel tests
        // never see each other's eth<i>.
        must(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &iface, "netns", &netns,
        ]);
        let mtu = self.mtu.to_string();
        must(&["link", "set", &outer, "mtu", &mtu]);
        must(&["link", "set", &outer, "master", &self.bridge]);
        must(&["link", "set", &outer, "up"]);
        let ns = |args: &[&str]| {
            let mut full = vec!["-n", netns.as_str()];
            full.extend_from_slice(args);
            must(&full);
        };
        ns(&["link", "set", &iface, "mtu", &mtu]);
        ns(&["addr", "add", &format!("{addr}/24"), "dev", &iface]);
        ns(&["link", "set", &iface, "up"]);
        ns(&["link", "set", "lo", "up"]);
        ns(&["route", "add", "224.0.0.0/4", "dev", &iface]);
        // As a systemd host has it (and memcast's package sets): PHP's
        // datagram hand-off to the relay queues up to this many frames.
        // A new namespace starts at the kernel's 10.
        let qlen = Command::new("ip")
            .args(["netns", "exec", &netns, "sh", "-c"])
            .arg("echo 512 > /proc/sys/net/unix/max_dgram_qlen")
            .status();
        assert!(
            qlen.is_ok_and(|s| s.success()),
            "could not set net.unix.max_dgram_qlen in {netns}"
        );
        Host { netns, iface, addr }
    }
}

impl Network {
    /// Takes multicast away from host `i`: no route for 224.0.0.0/4, and the
    /// interface's multicast flag off (TCP mode's test network).
    pub fn no_multicast(&self, i: u8) {
        let ns = self.netns(i);
        let iface = format!("eth{i}");
        must(&["-n", &ns, "route", "del", "224.0.0.0/4", "dev", &iface]);
        must(&["-n", &ns, "link", "set", &iface, "multicast", "off"]);
    }

    /// Packets host `i`'s interface has received so far.
    pub fn rx_packets(&self, i: u8) -> u64 {
        let ns = self.netns(i);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "cat"])
            .arg(format!("/sys/class/net/eth{i}/statistics/rx_packets"))
            .output()
            .expect("run ip netns exec");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("rx_packets of eth{i} in {ns}: {out:?}"))
    }

    /// Host `i`'s namespace.
    fn netns(&self, i: u8) -> String {
        format!("{}h{i}", self.prefix)
    }

    /// Host `i`'s address on the network.
    fn host_addr(&self, i: u8) -> String {
        format!("198.18.{}.{i}", self.subnet)
    }

    fn outer(&self, i: u8) -> String {
        format!("{}v{i}", self.prefix)
    }

    /// Takes host `i`'s link down (or up again), at the bridge side.
    pub fn set_link(&self, i: u8, up: bool) {
        must(&[
            "link",
            "set",
            &self.outer(i),
            if up { "up" } else { "down" },
        ]);
    }

    /// Drops `percent`% of the packets on host `i`'s link, both ways, with
    /// nftables inside its namespace (this kernel has no netem); loopback is
    /// spared. The table goes with the namespace.
    pub fn set_loss(&self, i: u8, percent: u32) {
        self.nft(
            i,
            &format!(
                "table inet memcast_loss {{\n\
                   chain in {{ type filter hook input priority 0; iifname != \"lo\" numgen random mod 100 < {percent} drop; }}\n\
                   chain out {{ type filter hook output priority 0; oifname != \"lo\" numgen random mod 100 < {percent} drop; }}\n\
                 }}\n"
            ),
        );
    }

    /// Host `i` stops hearing host `from`'s multicast (what a receiver stuck
    /// on a sender looks like from outside): every multicast packet from
    /// `from`'s address is dropped as it arrives at `i`; unicast (TCP) to
    /// and from it still flows. [`Network::hear_again`] undoes it.
    pub fn deafen(&self, i: u8, from: u8) {
        let addr = self.host_addr(from);
        self.nft(
            i,
            &format!(
                "table inet memcast_deaf {{\n\
                   chain in {{ type filter hook input priority 0; ip saddr {addr} ip daddr 224.0.0.0/4 drop; }}\n\
                 }}\n"
            ),
        );
    }

    pub fn hear_again(&self, i: u8) {
        self.delete_table(i, "memcast_deaf");
    }

    /// Host `i` gets nothing of the writes of the hosts in `from`: it drops
    /// their multicast, and every TCP segment they send from `port` (the
    /// answers to its repair and catch-up requests), while they still reach
    /// it (they can fetch from it). [`Network::unstarve`] undoes it.
    pub fn starve(&self, i: u8, from: &[u8], port: u16) {
        let rules: String = from
            .iter()
            .map(|h| {
                let addr = self.host_addr(*h);
                format!(
                    "ip saddr {addr} ip daddr 224.0.0.0/4 drop; ip saddr {addr} tcp sport {port} drop; "
                )
            })
            .collect();
        self.nft(
            i,
            &format!(
                "table inet memcast_starve {{\n\
                   chain in {{ type filter hook input priority 0; {rules}}}\n\
                 }}\n"
            ),
        );
    }

    pub fn unstarve(&self, i: u8) {
        self.delete_table(i, "memcast_starve");
    }

    /// Loads nftables `rules` inside host `i`'s namespace (the tables go
    /// with the namespace).
    fn nft(&self, i: u8, rules: &str) {
        let ns = self.netns(i);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (apt-get install nftables)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write nft rules");
        assert!(child.wait().expect("nft").success(), "nft refused: {rules}");
    }

    fn delete_table(&self, i: u8, table: &str) {
        let ns = self.netns(i);
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &ns, "nft", "delete", "table", "inet", table,
            ])
            .status();
    }

    pub fn clear_loss(&self, i: u8) {
        self.delete_table(i, "memcast_loss");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Namespaces first: their veth ends go with them, and the bridge after.
        for ns in self.hosts.drain(..) {
            let _ = Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                });
            let _ = ip(&["netns", "del", &ns]);
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("memcast-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// Writes a key file (mode 0600) with a 44-byte secret derived from `seed`.
    pub fn key_file(&self, name: &str, seed: u8) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path.join(name);
        let secret: String = (0..44)
            .map(|i| (b'A' + ((i as u8).wrapping_mul(7).wrapping_add(seed)) % 26) as char)
            .collect();
        std::fs::write(&path, format!("{secret}\n")).expect("write key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key file");
        path
    }
}

/// Writes a key file as an operator would replace one: a private temporary
/// file renamed over the old one, so no reader ever sees half a key.
pub fn install_key(secret: &[u8], path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, secret).expect("write key file");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    std::fs::rename(&tmp, path).expect("install key file");
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_port_never_hands_out_a_port_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let port = super::free_port();
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
}
