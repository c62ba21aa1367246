//! A memcast cluster for tests: hosts (namespaces on a bridge), each with its
//! own memcached, memcastd and PHP, replicating over real PGM multicast.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{eventually, raw_get, wait_for_tcp, Host, Network, Proc, TempDir, MEMCACHED_ARGS};

/// How PHP hands its frames over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// Every PHP process is its own PGM sender.
    Direct,
    /// PHP hands frames to the host's memcastd (ipc), the one sender.
    Relay,
}

/// How a PHP worker reaches its host's relay (with [`Publish::Relay`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayScheme {
    /// ZeroMQ over a Unix socket (`ipc://`).
    Ipc,
    /// A Unix datagram socket (`unixgram://`).
    Unixgram,
}

impl RelayScheme {
    /// `MEMCAST_RELAY_SCHEME=unixgram` (or `ipc`, the default) runs every
    /// relay test and benchmark over that scheme.
    pub fn from_env() -> RelayScheme {
        match std::env::var("MEMCAST_RELAY_SCHEME").as_deref() {
            Ok("unixgram") => RelayScheme::Unixgram,
            Ok("ipc") | Ok("") | Err(_) => RelayScheme::Ipc,
            Ok(other) => panic!("MEMCAST_RELAY_SCHEME={other}: ipc or unixgram"),
        }
    }

    /// The README's recommended relay socket (`unixgram://`), unless
    /// `MEMCAST_RELAY_SCHEME` names one: what the README's setups run.
    pub fn recommended() -> RelayScheme {
        match std::env::var("MEMCAST_RELAY_SCHEME").as_deref() {
            Ok("") | Err(_) => RelayScheme::Unixgram,
            _ => RelayScheme::from_env(),
        }
    }
}

/// What carries frames between hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The PGM multicast group (epgm).
    Pgm,
    /// TCP mode: no multicast on the network at all; each relay binds a
    /// fan-out (`--listen tcp://`) that every peer subscribes to.
    Tcp,
}

/// The group's shared port: PHP publishing directly sends here; with the
/// relay, host `i` publishes on `GROUP_PORT + 1 + i` and every host
/// subscribes to `GROUP_PORT..=GROUP_PORT + hosts`.
pub const GROUP_PORT: usize = 5555;

/// The setups the README documents ("Running a cluster"), and the bare
/// one it warns about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    pub publish: Publish,
    /// memcastd serves repairs and snapshots (`--listen`) and knows its
    /// peers (`--peer`): resyncs, warm-up, anti-entropy.
    pub repair: bool,
}

impl Setup {
    /// PHP publishes straight to the group; memcastd subscribes, serves
    /// repairs and snapshots and knows its peers.
    pub const MINIMAL: Setup = Setup {
        publish: Publish::Direct,
        repair: true,
    };
    /// PHP publishes straight to the group; memcastd only subscribes (no
    /// `--listen`, no `--peer`): nothing refills or repairs a host.
    pub const BARE: Setup = Setup {
        publish: Publish::Direct,
        repair: false,
    };
    /// The host relay, `--listen` and `--peer`.
    pub const RECOMMENDED: Setup = Setup {
        publish: Publish::Relay,
        repair: true,
    };

    pub fn name(&self) -> String {
        match (self.publish, self.repair) {
            (Publish::Direct, true) => "minimal".into(),
            (Publish::Direct, false) => "bare".into(),
            (Publish::Relay, true) => "recommended".into(),
            (publish, repair) => {
                format!("{publish:?}{}", if repair { "+peers" } else { "" }).to_lowercase()
            }
        }
    }
}

/// The TCP fan-out port in TCP mode.
pub const FANOUT_PORT: u16 = 5556;

/// Where the release build is: `target/release` of the workspace.
pub struct Artifacts {
    pub extension: PathBuf,
    pub memcastd: PathBuf,
}

impl Artifacts {
    pub fn release(workspace: &Path) -> Artifacts {
        let dir = workspace.join("target/release");
        let a = Artifacts {
            extension: dir.join("libmemcast.so"),
            memcastd: dir.join("memcastd"),
        };
        for p in [&a.extension, &a.memcastd] {
            assert!(
                p.exists(),
                "{} is missing: run `make build` first",
                p.display()
            );
        }
        a
    }
}

pub struct Site {
    pub host: Host,
    pub memcached: Proc,
    pub memcastd: Option<Proc>,
    log_n: usize,
}

pub struct Cluster {
    pub sites: Vec<Site>,
    /// The cluster key every host starts with; each host reads its own copy
    /// ([`Cluster::key_file_of`], [`Cluster::accept_key_file_of`]) so a test
    /// can roll keys host by host.
    pub key_file: PathBuf,
    pub group: String,
    pub publish: Publish,
    pub transport: Transport,
    pub relay_scheme: RelayScheme,
    /// Each relay on its own port of a subscribed range (the README's
    /// setups), or one port shared by all.
    pub ports_per_host: bool,
    /// memcastd listens for peers and is given every other host as `--peer`
    /// (false only in [`Setup::MINIMAL`]).
    pub repair: bool,
    /// Added to every memcastd's command line (tests and benchmarks tune it).
    pub memcastd_args: Vec<String>,
    /// Added to every PHP command line as `-d name=value`.
    pub php_ini: Vec<(String, String)>,
    /// `memcast.seal` for every PHP: off unless a test turns it on, as
    /// most tests look at sessions under their plain keys
    /// (`memcast.sess.<id>`); `tests/sealed.rs` tests sealing.
    pub seal: bool,
    pub dir: TempDir,
    artifacts: Artifacts,
    // Dropped last: removes the namespaces and the bridge.
    net: Network,
}

pub const REPAIR_PORT: u16 = 7711;

/// PHP that writes sessions `{tag}{host}-0..n` (host from 1), each once, its
/// value its number and host (see [`Cluster::assert_unique_writes_everywhere`]),
/// `pause_us` apart, and prints `written=N`: how many were stored.
pub fn unique_writes(tag: &str, host: usize, n: usize, pause_us: u64) -> String {
    format!(
        r#"$ok = 0;
        for ($i = 0; $i < {n}; $i++) {{
            session_id("{tag}{host}-$i");
            session_start();
            $_SESSION["i"] = $i;
            $_SESSION["host"] = {host};
            if (session_write_close()) {{ $ok++; }}
            usleep({pause_us});
        }}
        echo "written=$ok\n";"#
    )
}

/// The memcached key of write `i` of [`unique_writes`].
fn unique_write_key(tag: &str, host: usize, i: usize) -> String {
    format!("memcast.sess.{tag}{host}-{i}")
}

/// The `written=N` a writer printed.
pub fn written(out: &Output) -> usize {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("written="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("writer output: {text}"))
}

/// Waits for writers started with [`Cluster::spawn_php`]; the sum of what
/// they wrote.
pub fn finish_writers(children: Vec<Child>) -> usize {
    children
        .into_iter()
        .map(|c| written(&c.wait_with_output().expect("writer")))
        .sum()
}

impl Cluster {
    pub fn start(tag: &str, hosts: u8, publish: Publish, artifacts: Artifacts) -> Cluster {
        Cluster::start_with(tag, hosts, publish, artifacts, Vec::new())
    }

    /// With extra memcastd arguments (PGM options, say).
    pub fn start_with(
        tag: &str,
        hosts: u8,
        publish: Publish,
        artifacts: Artifacts,
        memcastd_args: Vec<String>,
    ) -> Cluster {
        Cluster::start_on(
            tag,
            hosts,
            publish,
            Transport::Pgm,
            artifacts,
            memcastd_args,
        )
    }

    /// [`Setup::BARE`]: PHP publishes straight to the group, memcastd only
    /// subscribes (no relay, no `--listen`, no `--peer`).
    pub fn start_bare(tag: &str, hosts: u8, artifacts: Artifacts) -> Cluster {
        Cluster::start_setup(tag, hosts, Setup::BARE, artifacts, Vec::new())
    }

    /// TCP mode on a network without multicast (PHP hands frames to the
    /// host relay, which fans them out over TCP).
    pub fn start_tcp(tag: &str, hosts: u8, artifacts: Artifacts, args: Vec<String>) -> Cluster {
        Cluster::start_on(tag, hosts, Publish::Relay, Transport::Tcp, artifacts, args)
    }

    /// PHP hands frames to the host relay over `scheme`.
    pub fn start_relay_over(
        tag: &str,
        hosts: u8,
        scheme: RelayScheme,
        artifacts: Artifacts,
        memcastd_args: Vec<String>,
    ) -> Cluster {
        Cluster::start_full(
            tag,
            hosts,
            (Publish::Relay, Transport::Pgm, true, scheme, true),
            artifacts,
            memcastd_args,
        )
    }

    /// One of the README's setups, with extra memcastd arguments.
    pub fn start_setup(
        tag: &str,
        hosts: u8,
        setup: Setup,
        artifacts: Artifacts,
        memcastd_args: Vec<String>,
    ) -> Cluster {
        Cluster::start_full(
            tag,
            hosts,
            (
                setup.publish,
                Transport::Pgm,
                setup.repair,
                RelayScheme::recommended(),
                true,
            ),
            artifacts,
            memcastd_args,
        )
    }

    fn start_on(
        tag: &str,
        hosts: u8,
        publish: Publish,
        transport: Transport,
        artifacts: Artifacts,
        memcastd_args: Vec<String>,
    ) -> Cluster {
        Cluster::start_full(
            tag,
            hosts,
            (publish, transport, true, RelayScheme::from_env(), false),
            artifacts,
            memcastd_args,
        )
    }

    fn start_full(
        tag: &str,
        hosts: u8,
        (publish, transport, repair, relay_scheme, ports_per_host): (
            Publish,
            Transport,
            bool,
            RelayScheme,
            bool,
        ),
        artifacts: Artifacts,
        memcastd_args: Vec<String>,
    ) -> Cluster {
        // A memcastd told to send PGM packets larger than Ethernet's runs, as
        // an operator sets it, on a network of jumbo frames that size.
        let tpdu = memcastd_args
            .iter()
            .position(|a| a == "--pgm-max-tpdu")
            .and_then(|i| memcastd_args.get(i + 1))
            .and_then(|v| v.parse::<u32>().ok());
        let mut net = Network::with_mtu(tag, tpdu.unwrap_or(1500).max(1500));
        let dir = TempDir::new(tag);
        let key_file = dir.key_file("cluster.key", 5);
        for i in 1..=hosts {
            for copy in [format!("host{i}.key"), format!("host{i}.accept")] {
                crate::install_key(
                    &std::fs::read(&key_file).expect("read key"),
                    &dir.path.join(copy),
                );
            }
        }
        let group = net.group();
        let mut sites = Vec::new();
        for i in 1..=hosts {
            let host = net.add_host(i);
            if transport == Transport::Tcp {
                net.no_multicast(i);
            }
            let mut mc = host.command(crate::memcached_binary());
            mc.args(["-l", "0.0.0.0", "-p", "11211"])
                .args(MEMCACHED_ARGS)
                .args(crate::user_arg());
            mc.stdout(Stdio::null());
            let memcached = Proc::spawn("memcached", &mut mc);
            assert!(
                wait_for_tcp(&format!("{}:11211", host.addr), Duration::from_secs(5)),
                "memcached on {} did not start",
                host.netns
            );
            sites.push(Site {
                host,
                memcached,
                memcastd: None,
                log_n: 0,
            });
        }
        let mut cluster = Cluster {
            sites,
            key_file,
            group,
            publish,
            transport,
            relay_scheme,
            ports_per_host,
            repair,
            memcastd_args,
            php_ini: Vec::new(),
            seal: false,
            dir,
            artifacts,
            net,
        };
        for i in 0..cluster.sites.len() {
            cluster.start_memcastd(i);
        }
        // Until a probe written on each host shows up on all the others, the
        // receivers have not joined the group yet.
        for from in 0..cluster.sites.len() {
            let id = format!("probe{from}{:026}", 0);
            let key = format!("memcast.sess.{id}");
            let joined = eventually(Duration::from_secs(20), || {
                cluster.php_output(
                    from,
                    &format!(
                        "session_id('{id}'); session_start(); $_SESSION['p'] = microtime(true);"
                    ),
                );
                (0..cluster.sites.len())
                    .all(|j| cluster.raw(j, &key).is_some())
                    .then_some(())
            });
            if joined.is_none() {
                panic!(
                    "replication from host {} never started; logs:\n{}",
                    from + 1,
                    cluster.logs()
                );
            }
        }
        cluster
    }

    /// Waits until every host's memcastd has marked its memcached warm.
    pub fn wait_warm(&self, within: Duration) -> bool {
        eventually(within, || {
            (0..self.sites.len())
                .all(|i| self.raw(i, "memcast:warm").is_some())
                .then_some(())
        })
        .is_some()
    }

    pub fn repair_addr(&self, i: usize) -> String {
        format!("{}:{REPAIR_PORT}", self.sites[i].host.addr)
    }

    fn relay_endpoint(&self, i: usize) -> String {
        match self.relay_scheme {
            RelayScheme::Ipc => format!("ipc://{}/relay{}.sock", self.dir.path.display(), i + 1),
            RelayScheme::Unixgram => format!(
                "unixgram://{}/relay{}.dgram",
                self.dir.path.display(),
                i + 1
            ),
        }
    }

    /// Starts (or restarts) memcastd on host `i`, as relay and repair server.
    pub fn start_memcastd(&mut self, i: usize) {
        self.sites[i].log_n += 1;
        let host = &self.sites[i].host;
        let epgm = format!("epgm://{};{}:{GROUP_PORT}", host.iface, self.group);
        let log_path = self
            .dir
            .path
            .join(format!("memcastd{}.{}.log", i + 1, self.sites[i].log_n));
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut d = host.command(&self.artifacts.memcastd);
        d.args(["--memcached", "127.0.0.1:11211"]);
        // The README's setups: each host's relay publishes on its own port of
        // a range and subscribes to the whole range (memcastd leaves its own
        // out), so no host's sockets take another's packets only to drop
        // them; the range starts at the shared port PHP publishing directly
        // uses. Other relay clusters share one port, the layout from before,
        // which must keep working.
        let relayed = self.ports_per_host
            && self.publish == Publish::Relay
            && self.transport == Transport::Pgm;
        let epgm_publish = if relayed {
            format!(
                "epgm://{};{}:{}",
                host.iface,
                self.group,
                GROUP_PORT + 1 + i
            )
        } else {
            epgm.clone()
        };
        match self.transport {
            Transport::Pgm if relayed => {
                d.args([
                    "--subscribe",
                    &format!(
                        "epgm://{};{}:{GROUP_PORT}-{}",
                        host.iface,
                        self.group,
                        GROUP_PORT + self.sites.len()
                    ),
                ]);
            }
            Transport::Pgm => {
                d.args(["--subscribe", &epgm]);
            }
            Transport::Tcp => {
                d.args(["--listen", &format!("tcp://{}:{FANOUT_PORT}", host.addr)]);
                for j in (0..self.sites.len()).filter(|&j| j != i) {
                    let peer = &self.sites[j].host.addr;
                    d.args(["--subscribe", &format!("tcp://{peer}:{FANOUT_PORT}")]);
                }
            }
        }
        d.arg("--key-file")
            .arg(self.key_file_of(i))
            .arg("--accept-key-file")
            .arg(self.accept_key_file_of(i));
        if self.repair {
            d.args(["--listen", &self.repair_addr(i)]);
        }
        // Quick defaults for tests; `memcastd_args` may set any of them
        // instead (the benchmark runs with production intervals).
        for (flag, value) in [
            ("--heartbeat-ms", "200"),
            ("--resync-interval", "5"),
            ("--anti-entropy-interval", "5"),
            ("--stats-interval", "0"),
        ] {
            if !self.memcastd_args.iter().any(|a| a == flag) {
                d.args([flag, value]);
            }
        }
        d.args(&self.memcastd_args);
        if self.publish == Publish::Relay {
            d.args(["--relay", &self.relay_endpoint(i)]);
            if self.transport == Transport::Pgm {
                d.args(["--publish", &epgm_publish]);
            }
        }
        for j in (0..self.sites.len()).filter(|&j| j != i && self.repair) {
            d.args(["--peer", &self.repair_addr(j)]);
        }
        d.stdout(Stdio::null()).stderr(log);
        self.sites[i].memcastd = Some(Proc::spawn("memcastd", &mut d));
        if !self.repair {
            // Nothing to connect to: it is up when it has not exited at once.
            std::thread::sleep(Duration::from_millis(200));
            let running = self.sites[i]
                .memcastd
                .as_mut()
                .is_some_and(|p| p.is_running());
            assert!(
                running,
                "memcastd on host {} exited; log:\n{}",
                i + 1,
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            return;
        }
        assert!(
            wait_for_tcp(&self.repair_addr(i), Duration::from_secs(5)),
            "memcastd on host {} did not listen; log:\n{}",
            i + 1,
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// The relay endpoint of host `i` (visible from the root namespace too:
    /// it is a file).
    pub fn relay(&self, i: usize) -> String {
        self.relay_endpoint(i)
    }

    pub fn memcastd_pid(&self, i: usize) -> Option<u32> {
        self.sites[i].memcastd.as_ref().map(|p| p.pid())
    }

    /// `memcast.lock_scope = host` for every PHP: for tests of replication
    /// across a partition, where the cluster-wide lock (rightly) refuses the
    /// sessions whose lock lives on the cut-off host until lock_expire.
    pub fn lock_per_host(&mut self) {
        self.php_ini
            .push(("memcast.lock_scope".into(), "host".into()));
    }

    /// kill -9 host `i`'s memcached, leaving it down.
    pub fn kill_memcached(&mut self, i: usize) {
        self.sites[i].memcached.kill();
    }

    /// kill -9 host `i`'s memcached and start it again, empty.
    pub fn restart_memcached(&mut self, i: usize) {
        self.restart_memcached_with(i, &[]);
    }

    /// kill -9 host `i`'s memcached and start it again, empty, with `extra`
    /// arguments after the usual ones (`-m 8 -I 1m`: a small one that evicts).
    pub fn restart_memcached_with(&mut self, i: usize, extra: &[&str]) {
        self.sites[i].memcached.kill();
        let host = &self.sites[i].host;
        let mut mc = host.command(crate::memcached_binary());
        mc.args(["-l", "0.0.0.0", "-p", "11211"])
            .args(MEMCACHED_ARGS)
            .args(extra)
            .args(crate::user_arg())
            .stdout(Stdio::null());
        let (addr, netns) = (format!("{}:11211", host.addr), host.netns.clone());
        self.sites[i].memcached = Proc::spawn("memcached", &mut mc);
        assert!(
            wait_for_tcp(&addr, Duration::from_secs(5)),
            "memcached on {netns} did not restart"
        );
    }

    /// The log of host `i`'s current memcastd.
    pub fn memcastd_log(&self, i: usize) -> String {
        let path = self
            .dir
            .path
            .join(format!("memcastd{}.{}.log", i + 1, self.sites[i].log_n));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// kill -9 memcastd on host `i`.
    pub fn kill_memcastd(&mut self, i: usize) {
        if let Some(mut p) = self.sites[i].memcastd.take() {
            p.kill();
        }
    }

    /// Runs PHP CLI with memcast on host `i`; panics on any warning or error.
    pub fn php(&self, i: usize, code: &str) -> String {
        let out = self.php_output(i, code);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && !text.contains("Warning") && !text.contains("Fatal"),
            "PHP on host {}: {text}",
            i + 1
        );
        text
    }

    pub fn php_output(&self, i: usize, code: &str) -> Output {
        self.php_command(i, code).output().expect("run php")
    }

    pub fn php_command(&self, i: usize, code: &str) -> Command {
        let mut c = self.php_base(i);
        c.args(["-r", &format!("ob_start(); {code}")])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    /// PHP's built-in web server on host `i` (`php -S`), serving `docroot`
    /// with `workers` worker processes (`PHP_CLI_SERVER_WORKERS`) and this
    /// cluster's memcast settings; ready when this returns.
    pub fn start_php_server(&self, i: usize, docroot: &Path, port: u16, workers: u32) -> PhpServer {
        let addr = format!("{}:{port}", self.sites[i].host.addr);
        let log = std::fs::File::create(self.dir.path.join(format!("php-server{}.log", i + 1)))
            .expect("php server log");
        let mut c = self.php_base(i);
        c.env("PHP_CLI_SERVER_WORKERS", workers.to_string())
            .args(["-S", &addr, "-t"])
            .arg(docroot)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let master = Proc::spawn("php -S", &mut c);
        assert!(
            wait_for_tcp(&addr, Duration::from_secs(10)),
            "php -S on host {} did not start",
            i + 1
        );
        PhpServer {
            master,
            addr,
            log: self.dir.path.join(format!("php-server{}.log", i + 1)),
        }
    }

    /// `php` on host `i` with this cluster's memcast settings.
    fn php_base(&self, i: usize) -> Command {
        let site = &self.sites[i];
        let others: Vec<String> = (0..self.sites.len())
            .filter(|&j| j != i)
            .map(|j| format!("{}:11211", self.sites[j].host.addr))
            .collect();
        // The local memcached first, by the name the other hosts use for it:
        // a cluster-wide lock needs every host to name the servers alike.
        let save_path = std::iter::once(format!("{}:11211", site.host.addr))
            .chain(others)
            .collect::<Vec<_>>()
            .join(", ");
        let publish = match self.publish {
            Publish::Direct => format!("epgm://{};{}:{GROUP_PORT}", site.host.iface, self.group),
            Publish::Relay => self.relay_endpoint(i),
        };
        let mut c = site.host.command("php");
        c.arg("-n")
            .arg("-d")
            .arg(format!("extension={}", self.artifacts.extension.display()))
            .args([
                "-d",
                "session.save_handler=memcast",
                "-d",
                "display_errors=1",
                "-d",
                "error_reporting=-1",
            ])
            .arg("-d")
            .arg(format!("session.save_path={save_path}"))
            // Quoted: in INI syntax an unquoted ";" starts a comment.
            .arg("-d")
            .arg(format!("memcast.publish=\"{publish}\""))
            .arg("-d")
            .arg(format!(
                "memcast.key_file={}",
                self.key_file_of(i).display()
            ))
            .arg("-d")
            .arg(format!(
                "memcast.accept_key_file={}",
                self.accept_key_file_of(i).display()
            ))
            .arg("-d")
            .arg(format!("memcast.seal={}", u8::from(self.seal)))
            .args(
                self.php_ini
                    .iter()
                    .flat_map(|(k, v)| ["-d".to_string(), format!("{k}={v}")]),
            );
        c
    }

    /// Starts PHP on host `i` without waiting, its stdout piped.
    pub fn spawn_php(&self, i: usize, code: &str) -> Child {
        self.php_command(i, code)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start php")
    }

    /// One [`unique_writes`] writer per host, started at once.
    pub fn start_unique_writers(&self, tag: &str, n: usize, pause_us: u64) -> Vec<Child> {
        (0..self.sites.len())
            .map(|i| self.spawn_php(i, &unique_writes(tag, i + 1, n, pause_us)))
            .collect()
    }

    /// Every session the [`unique_writes`] writers of `hosts` (from 1)
    /// wrote is on every host with its own value.
    /// How many of the `n` writes of [`unique_writes`] (`tag`, `host`) host
    /// `at`'s memcached holds, in any version.
    pub fn unique_writes_held(&self, at: usize, tag: &str, host: usize, n: usize) -> usize {
        (0..n)
            .filter(|&i| self.raw(at, &unique_write_key(tag, host, i)).is_some())
            .count()
    }

    pub fn assert_unique_writes_everywhere(&self, tag: &str, hosts: &[usize], n: usize) {
        let mut missing = Vec::new();
        for &host in hosts {
            for i in 0..n {
                let key = unique_write_key(tag, host, i);
                let want = format!("i|i:{i};host|i:{host};");
                for at in 0..self.sites.len() {
                    let raw = self.raw(at, &key).unwrap_or_default();
                    if !raw.ends_with(want.as_bytes()) {
                        missing.push(format!("{key} on host {}", at + 1));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "{} writes missing or wrong, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            self.logs()
        );
    }

    /// What host `i`'s memcached holds for `key`, read directly.
    pub fn raw(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        raw_get(&format!("{}:11211", self.sites[i].host.addr), key)
    }

    /// `memcastd verify` over every host's memcached: (identical, report).
    pub fn verify(&self) -> (bool, String) {
        let mut c = Command::new(&self.artifacts.memcastd);
        c.arg("verify");
        for s in &self.sites {
            c.args(["--peer", &format!("{}:11211", s.host.addr)]);
        }
        let out = c.output().expect("run memcastd verify");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code() == Some(0), text)
    }

    /// Waits until every replica holds the same sessions; the last report.
    pub fn converge(&self, within: Duration) -> Result<String, String> {
        let mut last = String::new();
        let done = eventually(within, || {
            let (same, report) = self.verify();
            last = report.clone();
            same.then_some(report)
        });
        done.ok_or(last)
    }

    /// Stops every memcastd (SIGTERM: each logs its final counters) and
    /// returns the sum of every counter, with the logs.
    pub fn stop_and_count(&mut self) -> (BTreeMap<String, u64>, String) {
        let (hosts, logs) = self.stop_and_count_by_host();
        let mut sums = BTreeMap::new();
        for counters in hosts {
            for (k, n) in counters {
                *sums.entry(k).or_insert(0) += n;
            }
        }
        (sums, logs)
    }

    /// Like [`Cluster::stop_and_count`], each memcastd's counters apart
    /// (in the order of their final log lines).
    pub fn stop_and_count_by_host(&mut self) -> (Vec<BTreeMap<String, u64>>, String) {
        for s in &mut self.sites {
            if let Some(p) = s.memcastd.as_mut() {
                p.signal("TERM", Duration::from_secs(5));
            }
        }
        let logs = self.logs();
        let hosts = logs
            .lines()
            .filter(|l| l.contains("memcastd stopping:"))
            .map(|line| {
                line.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter_map(|(k, v)| Some((k.to_owned(), v.parse::<u64>().ok()?)))
                    .collect()
            })
            .collect();
        (hosts, logs)
    }

    pub fn logs(&self) -> String {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir.path)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p: &PathBuf| p.extension().is_some_and(|e| e == "log"));
        names.sort();
        names
            .iter()
            .map(|p| {
                format!(
                    "--- {}\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The network, for faults (links, loss).
    pub fn net(&self) -> &Network {
        &self.net
    }

    /// One more host on the bridge with nothing running (an outsider).
    pub fn add_bare_host(&mut self, i: u8) -> Host {
        self.net.add_host(i)
    }

    /// The key file host `i` (from 0) signs with.
    pub fn key_file_of(&self, i: usize) -> PathBuf {
        self.dir.path.join(format!("host{}.key", i + 1))
    }

    /// The second key file host `i` accepts (at first the same key).
    pub fn accept_key_file_of(&self, i: usize) -> PathBuf {
        self.dir.path.join(format!("host{}.accept", i + 1))
    }

    /// kill -9 host `i`'s memcached and start it again, empty, with
    /// `memory_mb` of memory (`-m`) instead of the tests' 1 GB: a small one
    /// evicts.
    pub fn restart_memcached_with_memory(&mut self, i: usize, memory_mb: u32) {
        // memcached takes the last of repeated options.
        self.restart_memcached_with(i, &["-m", &memory_mb.to_string()]);
    }

    /// Host `i`'s memcached address, as the other hosts and the test reach it.
    pub fn memcached_addr(&self, i: usize) -> String {
        format!("{}:11211", self.sites[i].host.addr)
    }
}

/// PHP's built-in web server on one host ([`Cluster::start_php_server`]).
pub struct PhpServer {
    master: Proc,
    pub addr: String,
    log: PathBuf,
}

impl PhpServer {
    /// `GET path` with the session cookie; returns (status, body).
    pub fn get(&self, path: &str, session: &str) -> (u16, String) {
        crate::web::http_get(&self.addr, path, session)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PhpServer {
    /// The master and then its workers, by PID (the workers outlive a
    /// master that is killed).
    fn drop(&mut self) {
        let workers = crate::children_of(self.master.pid());
        if self.master.signal("TERM", Duration::from_secs(5)).is_none() {
            self.master.kill();
        }
        for worker in workers {
            worker.kill();
        }
    }
}
