//! The warm sentinel (`memcast:warm`) is present only while memcastd knows
//! its memcached complete: never without a peer, gone when memcached evicts,
//! gone within seconds of memcastd's death. Real memcached and memcastd on
//! loopback.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memcast_bus::{BusOptions, Publisher};
use memcast_testkit::{
    eventually, free_port, memcached_binary, raw_get, user_arg, wait_for_tcp, Memcached, Proc,
    TempDir,
};

const SENTINEL: &str = "memcast:warm";

/// A memcached of `megabytes` (a small one evicts soon).
struct SmallMemcached {
    addr: String,
    _proc: Proc,
}

fn small_memcached(megabytes: u32) -> SmallMemcached {
    let port = free_port();
    let mut cmd = Command::new(memcached_binary());
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "0", "-m", &megabytes.to_string(), "-t", "1"])
        .args(user_arg())
        .stdout(Stdio::null());
    let proc = Proc::spawn("memcached", &mut cmd);
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_for_tcp(&addr, Duration::from_secs(5)),
        "memcached -m {megabytes}"
    );
    SmallMemcached { addr, _proc: proc }
}

struct Daemon {
    proc: Proc,
    log: PathBuf,
    metrics: String,
    listen: String,
    /// Nothing is published; the daemon needs something to subscribe to.
    _publisher: Publisher,
}

impl Daemon {
    /// memcastd on `memcached`, serving peers on `listen` and metrics, with
    /// `peers` to refill from.
    fn start(dir: &TempDir, name: &str, memcached: &str, peers: &[&str]) -> Daemon {
        let key = dir.path.join("cluster.key");
        if !key.exists() {
            dir.key_file("cluster.key", 3);
        }
        let publisher = Publisher::bind("tcp://127.0.0.1:*", &BusOptions::default()).unwrap();
        let metrics = format!("127.0.0.1:{}", free_port());
        let listen = format!("127.0.0.1:{}", free_port());
        let log = dir.path.join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_memcastd"));
        cmd.args(["--memcached", memcached])
            .args(["--subscribe", publisher.endpoint()])
            .arg("--key-file")
            .arg(&key)
            .args(["--listen", &listen, "--metrics", &metrics])
            .args(["--stats-interval", "0"]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let proc = Proc::spawn("memcastd", &mut cmd);
        assert!(
            wait_for_tcp(&listen, Duration::from_secs(5)),
            "memcastd {name} did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Daemon {
            proc,
            log,
            metrics,
            listen,
            _publisher: publisher,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `memcastd status`: exit status and output.
    fn status(&self) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_memcastd"))
            .args(["status", "--metrics", &self.metrics])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let page = memcastd::metrics::scrape(&self.metrics, Duration::from_secs(2)).ok()?;
        memcastd::metrics::parse(&page)
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }
}

fn has_sentinel(addr: &str) -> bool {
    raw_get(addr, SENTINEL).is_some()
}

fn set_raw(addr: &str, key: &str, value: &[u8]) {
    let mut mc = memcast_core::Memcached::new(
        memcast_core::ServerAddr::parse(addr).unwrap(),
        memcast_core::Timeouts::default(),
    );
    mc.set(key.as_bytes(), value, 0).unwrap();
}

#[test]
fn without_peers_the_sentinel_is_never_set_and_the_daemon_says_so() {
    let mc = Memcached::start();
    // A sentinel left from an earlier life: nobody vouches for it now.
    set_raw(&mc.addr(), SENTINEL, b"stale");
    let dir = TempDir::new("nopeer");
    let d = Daemon::start(&dir, "alone", &mc.addr(), &[]);
    let gone = eventually(Duration::from_secs(3), || {
        (!has_sentinel(&mc.addr())).then_some(())
    });
    assert!(gone.is_some(), "stale sentinel kept: {}", d.log_text());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(!has_sentinel(&mc.addr()), "set without a peer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = d.log_text();
    assert_eq!(
        log.matches("no --peer configured").count(),
        1,
        "one clear warning: {log}"
    );
    assert!(
        log.contains("never known complete") && log.contains("WARN"),
        "{log}"
    );
    let (code, text) = d.status();
    assert_eq!(code, 3, "degraded: {text}");
    assert!(
        text.contains("up, NOT complete (no peer to refill from"),
        "{text}"
    );
    assert_eq!(d.metric("memcast_memcached_complete"), Some(0.0));
    assert_eq!(d.metric("memcast_memcached_warm"), Some(0.0));
}

/// A peer (no peers of its own) and a daemon refilling from it.
fn refilled(dir: &TempDir, memcached: &str) -> (Memcached, Daemon, Daemon) {
    let peer_mc = Memcached::start();
    let peer = Daemon::start(dir, "peer", &peer_mc.addr(), &[]);
    let d = Daemon::start(dir, "host", memcached, &[&peer.listen]);
    let warm = eventually(Duration::from_secs(10), || {
        has_sentinel(memcached).then_some(())
    });
    assert!(
        warm.is_some(),
        "never known complete after a warm-up: {}",
        d.log_text()
    );
    (peer_mc, peer, d)
}

#[test]
fn an_evicting_memcached_is_not_known_complete() {
    let small = small_memcached(8);
    let dir = TempDir::new("evict");
    let (_peer_mc, _peer, d) = refilled(&dir, &small.addr);
    let (code, text) = d.status();
    assert_eq!(code, 0, "healthy after the warm-up: {text}");
    assert_eq!(d.metric("memcast_memcached_complete"), Some(1.0));
    // Fill it well past 8 MB: memcached evicts.
    let value = vec![b'x'; 10_000];
    for i in 0..2_000 {
        set_raw(&small.addr, &format!("filler{i}"), &value);
    }
    let lost = eventually(Duration::from_secs(4), || {
        (!has_sentinel(&small.addr)).then_some(())
    });
    assert!(
        lost.is_some(),
        "sentinel kept while evicting: {}",
        d.log_text()
    );
    let evictions = eventually(Duration::from_secs(3), || {
        d.metric("memcast_memcached_evictions").filter(|n| *n > 0.0)
    })
    .expect("evictions exported");
    assert_eq!(d.metric("memcast_memcached_complete"), Some(0.0));
    assert_eq!(d.metric("memcast_memcached_warm"), Some(0.0));
    let (code, text) = d.status();
    assert_eq!(code, 3, "degraded: {text}");
    assert!(text.contains("up, NOT complete (evicting: "), "{text}");
    let log = d.log_text();
    assert_eq!(
        log.matches("memcached is evicting").count(),
        1,
        "logged once: {log}"
    );
    // Still evicting-free for under a minute: no warm-up, no sentinel.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!has_sentinel(&small.addr));
    println!("evictions={evictions}; status:\n{text}");
}

#[test]
fn a_killed_memcastds_sentinel_expires_within_seconds() {
    let mc = Memcached::start();
    let dir = TempDir::new("killed");
    let (_peer_mc, _peer, mut d) = refilled(&dir, &mc.addr());
    // Refreshed while it runs (TTL 3 s).
    std::thread::sleep(Duration::from_secs(4));
    assert!(has_sentinel(&mc.addr()), "not refreshed: {}", d.log_text());
    d.proc.kill();
    let killed = Instant::now();
    let gone = eventually(Duration::from_secs(6), || {
        (!has_sentinel(&mc.addr())).then_some(())
    });
    assert!(gone.is_some(), "a dead memcastd still vouches");
    println!("sentinel gone {:?} after SIGKILL", killed.elapsed());
    assert!(killed.elapsed() <= Duration::from_secs(4));
}

#[test]
fn a_restarted_memcached_is_refilled_before_it_is_vouched_for() {
    let mut mc = Memcached::start();
    let dir = TempDir::new("restart");
    let (_peer_mc, _peer, d) = refilled(&dir, &mc.addr());
    let port = mc.port;
    mc.kill();
    let restarted = Memcached::start_on(port);
    let warm = eventually(Duration::from_secs(10), || {
        has_sentinel(&restarted.addr()).then_some(())
    });
    assert!(warm.is_some(), "never refilled: {}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("memcached restarted"), "{log}");
    assert_eq!(log.matches("warm-up complete").count(), 2, "{log}");
}
