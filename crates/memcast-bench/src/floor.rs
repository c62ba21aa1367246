//! `BENCH_ONLY=floor`: the floor of this design on this machine, measured.
//!
//! The least a replicated write can cost with ZeroMQ PGM and memcached is
//! one multicast send and, on every other host, one receive and one
//! memcached `set`. This section runs exactly that and nothing of
//! memcast's: on the same three namespaced hosts, a publisher process (this
//! binary, `floor-pub`) on host 1 sends 2 KB messages to the group at the
//! replication section's rate through the same ZeroMQ options memcast uses,
//! and a subscriber process (`floor-sub`) on hosts 2 and 3 receives them,
//! with the same batching window as memcastd's `--apply-batch-us` (the
//! variant says which), and stores each batch in its host's memcached with one
//! pipelined write of plain `set`s. No seal, no HMAC, no relay hop, no
//! version check, no CAS, no counters. CPU is every thread's `schedstat`
//! run time during the timed phase, per message; lag is measured per
//! message (send time carried in it; one clock) at the receivers.
//!
//! What memcast costs beyond this is its own work; what this costs is the
//! transport's and memcached's on this machine, which no change inside
//! memcast can take away.
//!
//! One more variant is the floor of memcast's recommended setup, the host
//! relay, with the one piece of its own work no design may leave out: every
//! message authenticated. The publisher stands in for PHP: it signs each
//! message (HMAC-SHA256 in its last 32 bytes, as a frame's MAC) and hands it
//! to a bare relay process (`floor-relay`) on the same host over a
//! `unixgram://` socket; the relay takes them with memcastd's default relay
//! window (`--batch-us`), checks each MAC, stamps its own sequence number,
//! signs again and sends to the group; the subscribers check the MAC before
//! storing. Still no seal, version check, CAS, ring or counters.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memcast_bus::{BusOptions, Publisher, Subscriber};
use memcast_testkit::{memcached_binary, user_arg, wait_for_tcp, Network, Proc, MEMCACHED_ARGS};

use crate::replication_cpu::{account, Watched};

/// A message: the size of the frame memcast sends for the bench's session
/// (sealed at rest as by default, plus key, header and MAC).
pub fn message_len() -> usize {
    let dir = memcast_testkit::TempDir::new("floor");
    let key = memcast_core::SharedKey::from_file(&dir.key_file("k", 1)).expect("key");
    memcast_core::Frame {
        op: memcast_core::Op::Set,
        origin: 1,
        epoch: 1,
        seq: 1,
        version: memcast_core::Version {
            millis: memcast_core::unix_millis(),
            counter: 1,
            origin: 1,
        },
        ttl: 600,
        key: b"memcast.sess.0123456789abcdef0123456789abcdef".to_vec(),
        value: crate::session_payload::sealed(&key),
    }
    .seal(&key)
    .len()
}
/// Warm-up messages carry this bit in their sequence number.
const WARM: u64 = 1 << 63;

/// One variant: the network's MTU (and PGM packet size) and the window.
#[derive(Clone, Copy)]
pub struct Variant {
    pub label: &'static str,
    pub tpdu: u32,
    pub window_us: u64,
    /// Plain UDP multicast instead of ZeroMQ PGM (no repair, no I/O
    /// thread): what another transport could cost, not this design.
    pub udp: bool,
    /// Through a bare relay on host 1, every message's MAC checked and made
    /// at each step (see the module's documentation).
    pub hop: bool,
    /// The bare relay's window (with `hop`).
    pub relay_window_us: u64,
}

/// memcastd's default `--batch-us`: the relay's window.
pub const RELAY_WINDOW_US: u64 = 1000;

/// memcastd's default `--apply-batch-us`: the receivers' window.
pub const WINDOW_US: u64 = 4000;

pub const VARIANTS: [Variant; 6] = [
    Variant {
        label: "MTU 1500, batching window 4 ms (memcastd's default apply window)",
        tpdu: 1500,
        window_us: WINDOW_US,
        udp: false,
        hop: false,
        relay_window_us: 0,
    },
    Variant {
        label: "MTU 1500, no window",
        tpdu: 1500,
        window_us: 0,
        udp: false,
        hop: false,
        relay_window_us: 0,
    },
    Variant {
        label: "jumbo frames (9000), batching window 4 ms",
        tpdu: 9000,
        window_us: WINDOW_US,
        udp: false,
        hop: false,
        relay_window_us: 0,
    },
    Variant {
        label: "not this design: plain UDP multicast, MTU 1500, window 4 ms",
        tpdu: 1500,
        window_us: WINDOW_US,
        udp: true,
        hop: false,
        relay_window_us: 0,
    },
    Variant {
        label: "the host relay's floor: relay hop (window 1 ms) and a MAC checked at every step, MTU 1500, window 4 ms",
        tpdu: 1500,
        window_us: WINDOW_US,
        udp: false,
        hop: true,
        relay_window_us: RELAY_WINDOW_US,
    },
    Variant {
        label: "the host relay's floor without windows (relay and subscribers take each message as it comes)",
        tpdu: 1500,
        window_us: 0,
        udp: false,
        hop: true,
        relay_window_us: 0,
    },
];

/// `udp://LOCAL_ADDR;GROUP:PORT`: (local address, group, port).
fn udp_endpoint(endpoint: &str) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr, u16)> {
    let rest = endpoint.strip_prefix("udp://")?;
    let (local, group_port) = rest.split_once(';')?;
    let (group, port) = group_port.rsplit_once(':')?;
    Some((local.parse().ok()?, group.parse().ok()?, port.parse().ok()?))
}

/// A sender: ZeroMQ (PGM) or a plain UDP socket.
enum Tx {
    Bus(Publisher),
    Udp(std::net::UdpSocket, std::net::SocketAddr),
}

impl Tx {
    fn open(endpoint: &str, tpdu: u32) -> Tx {
        if memcast_bus::datagram::is_datagram(endpoint) {
            return Tx::Bus(Publisher::relay(endpoint, &bus(tpdu)).expect("floor-pub: relay"));
        }
        match udp_endpoint(endpoint) {
            Some((local, group, port)) => {
                let socket = std::net::UdpSocket::bind((local, 0)).expect("floor-pub: bind");
                socket.set_multicast_ttl_v4(1).expect("ttl");
                Tx::Udp(socket, (group, port).into())
            }
            None => Tx::Bus(Publisher::connect(endpoint, &bus(tpdu)).expect("floor-pub: connect")),
        }
    }

    fn send(&self, m: &[u8]) {
        let _ = match self {
            Tx::Bus(p) => p.send(m).map_err(|_| ()),
            Tx::Udp(s, to) => s.send_to(m, to).map(|_| ()).map_err(|_| ()),
        };
    }
}

/// A receiver: ZeroMQ (PGM, TCP) or a plain UDP socket joined to the group.
enum Rx {
    Bus(Subscriber),
    Udp(std::net::UdpSocket, RefCell<Vec<u8>>),
}

impl Rx {
    fn open(endpoint: &str, tpdu: u32) -> Rx {
        match udp_endpoint(endpoint) {
            Some((local, group, port)) => {
                let socket = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("floor-sub: bind");
                socket.join_multicast_v4(&group, &local).expect("join");
                Rx::Udp(socket, RefCell::new(vec![0; 65_536]))
            }
            None => Rx::Bus(
                Subscriber::connect(&[endpoint.to_owned()], &bus(tpdu))
                    .expect("floor-sub: subscribe"),
            ),
        }
    }

    fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        match self {
            Rx::Bus(sub) => sub.recv(timeout).ok().flatten().map(|(_, m)| m),
            Rx::Udp(s, buf) => {
                s.set_nonblocking(false).ok()?;
                s.set_read_timeout(Some(timeout)).ok()?;
                let mut buf = buf.borrow_mut();
                let n = s.recv(&mut buf).ok()?;
                Some(buf[..n].to_vec())
            }
        }
    }

    fn try_recv(&self) -> Option<Vec<u8>> {
        match self {
            Rx::Bus(sub) => sub.try_recv().ok().flatten().map(|(_, m)| m),
            Rx::Udp(s, buf) => {
                s.set_nonblocking(true).ok()?;
                let mut buf = buf.borrow_mut();
                let n = s.recv(&mut buf).ok()?;
                Some(buf[..n].to_vec())
            }
        }
    }
}

pub struct FloorRun {
    pub variant: Variant,
    /// Bytes per message.
    pub size: usize,
    /// (process, µs per message), medians of rounds.
    pub rows: Vec<(String, f64)>,
    pub total_us: f64,
    /// Messages sent in the timed phase and the fewest a receiver got.
    pub sent: u64,
    pub received_min: u64,
    /// Worst receiver's lag quantiles, µs (medians of rounds).
    pub lag_p50_us: f64,
    pub lag_p99_us: f64,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn bus(tpdu: u32) -> BusOptions {
    BusOptions {
        // As the bench's memcastd (--pgm-rate-kbps 1000000).
        rate_kbps: 1_000_000,
        max_tpdu: tpdu as i32,
        ..BusOptions::default()
    }
}

/// Runs a child role (`floor-pub`, `floor-sub`) if `args` name one; its
/// exit code.
pub fn child(args: &[String]) -> Option<i32> {
    match args.get(1).map(String::as_str) {
        Some("floor-pub") => Some(publisher(&args[2..])),
        Some("floor-sub") => Some(subscriber(&args[2..])),
        Some("floor-relay") => Some(relay(&args[2..])),
        _ => None,
    }
}

/// The key of `KEY_FILE`, or none for `-`: messages signed and checked
/// with it (HMAC-SHA256 in their last 32 bytes).
fn mac_key(arg: &str) -> Option<memcast_core::SharedKey> {
    (arg != "-").then(|| {
        memcast_core::SharedKey::from_file(std::path::Path::new(arg)).expect("floor: key file")
    })
}

const MAC_LEN: usize = 32;

fn sign(key: &memcast_core::SharedKey, m: &mut [u8]) {
    let at = m.len() - MAC_LEN;
    let tag = key.tag(&m[..at]);
    m[at..].copy_from_slice(&tag);
}

fn signed(key: &memcast_core::SharedKey, m: &[u8]) -> bool {
    m.len() >= MAC_LEN && {
        let at = m.len() - MAC_LEN;
        key.verify(&m[..at], &m[at..])
    }
}

/// Set once a line (or the end) comes on stdin: how a child is told to stop.
fn stop_at_stdin_line() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        set.store(true, Ordering::SeqCst);
    });
    stop
}

/// Sleeps out the batching window begun at `last_batch` (as memcastd's
/// receive loop does); returns when the next batch begins.
fn wait_out_window(last_batch: Option<Instant>, window: Duration) -> Instant {
    if let Some(wait) = last_batch.and_then(|l| (l + window).checked_duration_since(Instant::now()))
    {
        std::thread::sleep(wait);
    }
    Instant::now()
}

/// `floor-pub ENDPOINT RATE SECONDS TPDU SIZE KEY_FILE`: warms up, prints
/// `ready`, waits for `go` on stdin, sends RATE messages/s for SECONDS (1 ms
/// ticks, sleeping between), each signed with KEY_FILE's key unless it is
/// `-`, prints `done sent=N`, and exits at stdin's end.
fn publisher(args: &[String]) -> i32 {
    let [endpoint, rate, seconds, tpdu, size, key_file] = args else {
        eprintln!("floor-pub ENDPOINT RATE SECONDS TPDU SIZE KEY_FILE");
        return 2;
    };
    let key = mac_key(key_file);
    let size: usize = size.parse::<usize>().unwrap_or(2_000).max(16 + MAC_LEN);
    let (rate, seconds, tpdu): (u64, u64, u32) = (
        rate.parse().unwrap_or(5000),
        seconds.parse().unwrap_or(4),
        tpdu.parse().unwrap_or(1500),
    );
    let publisher = Tx::open(endpoint, tpdu);
    let mut message: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8).collect();
    let send = |seq: u64, message: &mut Vec<u8>| {
        message[..8].copy_from_slice(&unix_nanos().to_le_bytes());
        message[8..16].copy_from_slice(&seq.to_le_bytes());
        if let Some(key) = &key {
            sign(key, message);
        }
        publisher.send(message);
    };
    // PGM receivers join at the first packets they see: warm up.
    for i in 0..150 {
        send(WARM | i, &mut message);
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let per_tick = (rate / 1000).max(1);
    let mut seq = 0;
    crate::every_ms(seconds, |_| {
        for _ in 0..per_tick {
            send(seq, &mut message);
            seq += 1;
        }
    });
    let _ = writeln!(out, "done sent={seq}");
    let _ = out.flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    0
}

/// `floor-sub ENDPOINT MEMCACHED WINDOW_US TPDU KEY_FILE`: receives,
/// batches as memcastd does, checks each message's MAC with KEY_FILE's key
/// (unless it is `-`; one that fails is not stored), stores each batch with
/// one pipelined write of `set`s; at `stop` on stdin prints
/// `received=N p50_us=.. p99_us=.. forged=N stored=N` (`received`: the
/// timed messages, `stored`: every message).
fn subscriber(args: &[String]) -> i32 {
    let [endpoint, memcached, window_us, tpdu, key_file] = args else {
        eprintln!("floor-sub ENDPOINT MEMCACHED WINDOW_US TPDU KEY_FILE");
        return 2;
    };
    let key = mac_key(key_file);
    let mut forged = 0u64;
    let window = Duration::from_micros(window_us.parse().unwrap_or(1000));
    let tpdu: u32 = tpdu.parse().unwrap_or(1500);
    let sub = Rx::open(endpoint, tpdu);
    let stream = TcpStream::connect(memcached).expect("floor-sub: memcached");
    stream.set_nodelay(true).expect("nodelay");
    let mut replies = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let stop = stop_at_stdin_line();
    let mut lag_us: Vec<f64> = Vec::new();
    let mut received = 0u64;
    // Every message stored, warm-up or not (the web floor's frames carry
    // no floor header).
    let mut stored_all = 0u64;
    let mut last_batch: Option<Instant> = None;
    let mut buf = Vec::new();
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        let Some(first) = sub.recv(Duration::from_millis(50)) else {
            continue;
        };
        last_batch = Some(wait_out_window(last_batch, window));
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match sub.try_recv() {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        let now = unix_nanos();
        buf.clear();
        let mut stored = 0;
        for m in &batch {
            if m.len() < 16 {
                continue;
            }
            if key.as_ref().is_some_and(|k| !signed(k, m)) {
                forged += 1;
                continue;
            }
            stored += 1;
            let sent = u64::from_le_bytes(m[..8].try_into().unwrap_or_default());
            let seq = u64::from_le_bytes(m[8..16].try_into().unwrap_or_default());
            if seq & WARM == 0 {
                received += 1;
                lag_us.push((now.saturating_sub(sent) / 1000) as f64);
            }
            buf.extend_from_slice(format!("set floor{seq} 0 600 {}\r\n", m.len()).as_bytes());
            buf.extend_from_slice(m);
            buf.extend_from_slice(b"\r\n");
        }
        stored_all += stored as u64;
        writer
            .write_all(&buf)
            .expect("floor-sub: write to memcached");
        for _ in 0..stored {
            line.clear();
            replies
                .read_line(&mut line)
                .expect("floor-sub: memcached reply");
        }
    }
    lag_us.sort_by(|a, b| a.total_cmp(b));
    let q = |f| crate::percentile(&lag_us, f);
    println!(
        "received={received} p50_us={:.0} p99_us={:.0} forged={forged} stored={stored_all}",
        q(0.5),
        q(0.99)
    );
    0
}

/// `floor-relay INBOX GROUP WINDOW_US TPDU KEY_FILE`: the bare host relay.
/// Takes messages at INBOX (`unixgram://`) in batches with WINDOW_US as its
/// window (memcastd's receive loop), checks each one's MAC, stamps its own
/// sequence number (bytes 16..24), signs it again and sends it to GROUP;
/// exits at `stop` on stdin, printing `relayed=N forged=N`.
fn relay(args: &[String]) -> i32 {
    let [inbox, group, window_us, tpdu, key_file] = args else {
        eprintln!("floor-relay INBOX GROUP WINDOW_US TPDU KEY_FILE");
        return 2;
    };
    let window = Duration::from_micros(window_us.parse().unwrap_or(1000));
    let tpdu: u32 = tpdu.parse().unwrap_or(1500);
    let key = mac_key(key_file).expect("floor-relay: a key file");
    let opts = bus(tpdu);
    let mut from = Subscriber::connect(&[], &opts).expect("floor-relay: socket");
    from.bind_relay(inbox, &opts).expect("floor-relay: bind");
    let to = Publisher::connect(group, &opts).expect("floor-relay: publish");
    let stop = stop_at_stdin_line();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let (mut relayed, mut forged) = (0u64, 0u64);
    let mut last_batch: Option<Instant> = None;
    let mut outbox: Vec<Vec<u8>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Ok(Some((_, first))) = from.recv(Duration::from_millis(50)) else {
            continue;
        };
        last_batch = Some(wait_out_window(last_batch, window));
        let mut next = Some(first);
        while let Some(mut m) = next.take() {
            if m.len() < 24 + MAC_LEN || !signed(&key, &m) {
                forged += 1;
            } else {
                relayed += 1;
                m[16..24].copy_from_slice(&relayed.to_le_bytes());
                sign(&key, &mut m);
                outbox.push(m);
            }
            if outbox.len() < 1024 {
                next = from.try_recv().ok().flatten().map(|(_, m)| m);
            }
        }
        for m in outbox.drain(..) {
            let _ = to.send(&m);
        }
    }
    let _ = writeln!(out, "relayed={relayed} forged={forged}");
    let _ = out.flush();
    0
}

/// The floor of replication under the web stack: the bare relay on host 1
/// taking memcast's PHP handler's frames (their MACs are checked as memcast
/// seals them: HMAC-SHA256 of all before the last 32 bytes) at a
/// `unixgram://` socket of its own, and the bare subscribers on the other
/// hosts storing them in their memcached, on a group port of their own
/// (memcastd's range does not include it). What memcast's handler plus
/// nothing of memcastd's but the least a relay must do serves in the web
/// stack: the web variant that bounds memcast's relay by measurement.
pub(crate) struct WebFloor {
    relay: Kid,
    subs: Vec<Kid>,
    /// Where PHP hands its frames (`memcast.publish`).
    pub inbox: String,
    _dir: memcast_testkit::TempDir,
}

/// The web floor's group port: outside memcastd's `--subscribe` range.
const WEB_FLOOR_PORT: u16 = 5599;

impl WebFloor {
    /// Starts the bare relay on `cluster`'s host 1 and a bare subscriber on
    /// every other host, every message checked with `key_file`'s key.
    pub(crate) fn start(cluster: &memcast_testkit::cluster::Cluster, key_file: &str) -> WebFloor {
        let dir = memcast_testkit::TempDir::new("web-floor");
        let inbox = format!("unixgram://{}", dir.path.join("relay.dgram").display());
        let group = &cluster.group;
        let endpoint =
            |h: &memcast_testkit::Host| format!("epgm://{};{group}:{WEB_FLOOR_PORT}", h.iface);
        let subs: Vec<Kid> = cluster.sites[1..]
            .iter()
            .map(|site| spawn_sub(&site.host, &endpoint(&site.host), WINDOW_US, 1500, key_file))
            .collect();
        let host1 = &cluster.sites[0].host;
        let relay = spawn_relay(
            host1,
            &inbox,
            &endpoint(host1),
            RELAY_WINDOW_US,
            1500,
            key_file,
        );
        WebFloor {
            relay,
            subs,
            inbox,
            _dir: dir,
        }
    }

    /// The relay's and the subscribers' PIDs (their CPU is the variant's
    /// replication, as memcastd's is the others').
    pub(crate) fn pids(&self) -> Vec<u32> {
        std::iter::once(&self.relay)
            .chain(&self.subs)
            .map(|k| k.child.id())
            .collect()
    }

    /// Stops them; what the relay relayed and the fewest frames a
    /// subscriber received. Panics if a frame failed its MAC check (the
    /// floor would not be memcast's frames, checked).
    pub(crate) fn finish(mut self) -> (u64, u64) {
        self.relay.say("stop");
        let said = self.relay.hear();
        assert_eq!(field(&said, "forged"), Some(0), "floor-relay: {said}");
        let relayed = field(&said, "relayed").unwrap_or(0);
        let mut fewest = u64::MAX;
        for s in &mut self.subs {
            s.say("stop");
            let r = s.hear();
            assert_eq!(field(&r, "forged"), Some(0), "floor-sub: {r}");
            fewest = fewest.min(field(&r, "stored").unwrap_or(0));
        }
        (relayed, fewest)
    }
}

/// A `floor-sub` inside `host`, storing in its memcached.
fn spawn_sub(
    host: &memcast_testkit::Host,
    endpoint: &str,
    window_us: u64,
    tpdu: u32,
    key_file: &str,
) -> Kid {
    let mut c = host.command(std::env::current_exe().expect("current_exe"));
    c.args(["floor-sub", endpoint, "127.0.0.1:11211"])
        .arg(window_us.to_string())
        .arg(tpdu.to_string())
        .arg(key_file);
    Kid::spawn(c)
}

/// A `floor-relay` inside `host`, taking messages at `inbox` and sending
/// to `group`; returns once it is ready.
fn spawn_relay(
    host: &memcast_testkit::Host,
    inbox: &str,
    group: &str,
    window_us: u64,
    tpdu: u32,
    key_file: &str,
) -> Kid {
    let mut c = host.command(std::env::current_exe().expect("current_exe"));
    c.args(["floor-relay", inbox, group])
        .arg(window_us.to_string())
        .arg(tpdu.to_string())
        .arg(key_file);
    let mut kid = Kid::spawn(c);
    assert_eq!(kid.hear(), "ready", "floor-relay did not start");
    kid
}

/// A child with pipes, killed and reaped on drop (by its PID).
pub(crate) struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Kid {
    pub(crate) fn spawn(mut cmd: Command) -> Kid {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a floor child");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Kid {
            child,
            stdin,
            stdout,
        }
    }

    pub(crate) fn say(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    pub(crate) fn hear(&mut self) -> String {
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        line.trim().to_owned()
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

struct Round {
    cpu_us: Vec<f64>,
    sent: u64,
    received_min: u64,
    lag_p50_us: u64,
    lag_p99_us: u64,
}

const NAMES: [&str; 6] = [
    "publisher (host 1)",
    "relay (host 1)",
    "subscriber 2",
    "memcached 2",
    "subscriber 3",
    "memcached 3",
];

fn round(v: Variant, rate: u64, seconds: u64, size: usize) -> Round {
    let exe = std::env::current_exe().expect("current_exe");
    let mut net = Network::with_mtu("fl", v.tpdu.max(1500));
    let hosts: Vec<_> = (1..=3).map(|i| net.add_host(i)).collect();
    let group = net.group();
    let endpoint = |h: &memcast_testkit::Host| {
        if v.udp {
            format!("udp://{};{group}:5555", h.addr)
        } else {
            format!("epgm://{};{group}:5555", h.iface)
        }
    };
    let mut memcached = Vec::new();
    for h in &hosts[1..] {
        let mut mc = h.command(memcached_binary());
        mc.args(["-l", "0.0.0.0", "-p", "11211"])
            .args(MEMCACHED_ARGS)
            .args(user_arg())
            .stdout(Stdio::null());
        memcached.push(Proc::spawn("memcached", &mut mc));
        assert!(
            wait_for_tcp(&format!("{}:11211", h.addr), Duration::from_secs(5)),
            "memcached on {} did not start",
            h.netns
        );
    }
    // The hop variant's key and the relay's socket.
    let dir = memcast_testkit::TempDir::new("floor-hop");
    let key_file = if v.hop {
        dir.key_file("k", 1).display().to_string()
    } else {
        "-".to_owned()
    };
    let inbox = format!("unixgram://{}", dir.path.join("relay.dgram").display());
    let mut subs: Vec<Kid> = hosts[1..]
        .iter()
        .map(|h| spawn_sub(h, &endpoint(h), v.window_us, v.tpdu, &key_file))
        .collect();
    let mut relay = v.hop.then(|| {
        spawn_relay(
            &hosts[0],
            &inbox,
            &endpoint(&hosts[0]),
            v.relay_window_us,
            v.tpdu,
            &key_file,
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut publisher = {
        let mut c = hosts[0].command(&exe);
        let to = if v.hop {
            inbox.clone()
        } else {
            endpoint(&hosts[0])
        };
        c.args(["floor-pub", &to])
            .arg(rate.to_string())
            .arg(seconds.to_string())
            .arg(v.tpdu.to_string())
            .arg(size.to_string())
            .arg(&key_file);
        Kid::spawn(c)
    };
    assert_eq!(publisher.hear(), "ready", "floor-pub did not start");
    std::thread::sleep(Duration::from_millis(300));
    let pids = [
        Some(publisher.child.id()),
        relay.as_ref().map(|r| r.child.id()),
        Some(subs[0].child.id()),
        Some(memcached[0].pid()),
        Some(subs[1].child.id()),
        Some(memcached[1].pid()),
    ];
    // Without a relay its row is 0.
    let present: Vec<usize> = (0..NAMES.len()).filter(|&i| pids[i].is_some()).collect();
    let procs: Vec<Watched> = present
        .iter()
        .map(|&i| Watched {
            name: NAMES[i].into(),
            pid: pids[i].unwrap_or_default(),
            per_thread: false,
            host: None,
        })
        .collect();
    let (sent, measured) = account(&procs, || {
        publisher.say("go");
        let done = publisher.hear();
        // The last messages' way to memcached.
        std::thread::sleep(Duration::from_millis(300));
        field(&done, "sent").unwrap_or_else(|| panic!("floor-pub said {done:?}"))
    });
    let results: Vec<String> = subs
        .iter_mut()
        .map(|s| {
            s.say("stop");
            s.hear()
        })
        .collect();
    if let Some(r) = relay.as_mut() {
        r.say("stop");
        let said = r.hear();
        assert_eq!(field(&said, "forged"), Some(0), "floor-relay: {said}");
        assert!(
            field(&said, "relayed").unwrap_or(0) >= sent,
            "floor-relay relayed less than was sent ({sent}): {said}"
        );
    }
    for r in &results {
        assert_eq!(field(r, "forged"), Some(0), "floor-sub: {r}");
    }
    let mut cpu_us = vec![0.0; NAMES.len()];
    for (&i, c) in present.iter().zip(&measured) {
        cpu_us[i] = c.total as f64 / 1000.0 / sent.max(1) as f64;
    }
    drop(relay);
    drop(publisher);
    drop(subs);
    drop(memcached);
    drop(net);
    let got = |name: &'static str| {
        results
            .iter()
            .map(move |r| field(r, name).unwrap_or(0))
            .collect::<Vec<u64>>()
            .into_iter()
    };
    Round {
        cpu_us,
        sent,
        received_min: got("received").min().unwrap_or(0),
        lag_p50_us: got("p50_us").max().unwrap_or(0),
        lag_p99_us: got("p99_us").max().unwrap_or(0),
    }
}

pub fn run(rounds: usize, rate: u64, seconds: u64) -> Vec<FloorRun> {
    let size = message_len();
    VARIANTS
        .iter()
        .map(|&variant| {
            let runs: Vec<Round> = (0..rounds)
                .map(|r| {
                    let one = round(variant, rate, seconds, size);
                    eprintln!(
                        "bench: floor, {}, round {}: {:.1} µs/message; lag p50 {} µs, p99 {} µs; received {} of {}",
                        variant.label,
                        r + 1,
                        one.cpu_us.iter().sum::<f64>(),
                        one.lag_p50_us,
                        one.lag_p99_us,
                        one.received_min,
                        one.sent
                    );
                    one
                })
                .collect();
            let med = |f: &dyn Fn(&Round) -> f64| {
                let mut v: Vec<f64> = runs.iter().map(f).collect();
                crate::median(&mut v)
            };
            FloorRun {
                variant,
                size,
                rows: NAMES
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.to_string(), med(&|r: &Round| r.cpu_us[i])))
                    .collect(),
                total_us: med(&|r: &Round| r.cpu_us.iter().sum()),
                sent: runs.iter().map(|r| r.sent).min().unwrap_or(0),
                received_min: runs.iter().map(|r| r.received_min).min().unwrap_or(0),
                lag_p50_us: med(&|r: &Round| r.lag_p50_us as f64),
                lag_p99_us: med(&|r: &Round| r.lag_p99_us as f64),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_variants_mac_takes_a_signed_message_and_nothing_altered() {
        let dir = memcast_testkit::TempDir::new("floor-mac");
        let key = mac_key(&dir.key_file("k", 1).display().to_string()).unwrap();
        let other = mac_key(&dir.key_file("o", 2).display().to_string()).unwrap();
        assert!(mac_key("-").is_none());
        let mut m: Vec<u8> = (0..message_len()).map(|i| i as u8).collect();
        assert!(!signed(&key, &m));
        sign(&key, &mut m);
        assert!(signed(&key, &m));
        assert!(!signed(&other, &m));
        // The relay's restamp breaks the publisher's MAC until signed again.
        m[16] ^= 1;
        assert!(!signed(&key, &m));
        sign(&key, &mut m);
        assert!(signed(&key, &m));
        assert!(!signed(&key, &m[..MAC_LEN - 1]));
    }
}
