//! Replication failures are visible on the host: PHP that cannot publish (the
//! relay socket absent, the key file missing) counts it in the local
//! memcached, also while no memcastd runs; the memcastd started later exports
//! the counts on /metrics, logs them, and `memcastd status` says FAILING and
//! exits 3. session_write_close() stays true: the session is stored. Real
//! memcached, PHP and memcastd on loopback. Needs `make build`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use memcast_testkit::cluster::Artifacts;
use memcast_testkit::{eventually, free_port, raw_get, wait_for_tcp, Memcached, Proc, TempDir};

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// `n` new sessions written by one PHP process; its output (one line per
/// session_write_close(), then the warnings).
fn php_writes(memcached: &str, publish: &str, key_file: &Path, n: usize) -> String {
    let code = format!(
        r#"ob_start(); for ($i = 0; $i < {n}; $i++) {{
            session_id(bin2hex(random_bytes(16)));
            session_start();
            $_SESSION["i"] = $i;
            echo session_write_close() ? "stored\n" : "false\n";
            $_SESSION = [];
        }}"#
    );
    let out = Command::new("php")
        .arg("-n")
        .arg("-d")
        .arg(format!("extension={}", artifacts().extension.display()))
        .args(["-d", "session.save_handler=memcast"])
        .args(["-d", "display_errors=1", "-d", "error_reporting=-1"])
        .arg("-d")
        .arg(format!("session.save_path={memcached}"))
        .arg("-d")
        .arg(format!("memcast.publish={publish}"))
        .arg("-d")
        .arg(format!("memcast.key_file={}", key_file.display()))
        .args(["-d", "memcast.relay_timeout_ms=30"])
        .args(["-r", &code])
        .stdin(Stdio::null())
        .output()
        .expect("run php");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("stored\n").count(), n, "{text}");
    text
}

fn counter(memcached: &str, key: &str) -> Option<u64> {
    let raw = raw_get(memcached, key)?;
    String::from_utf8_lossy(&raw).trim().parse().ok()
}

struct Daemon {
    _proc: Proc,
    log: std::path::PathBuf,
    listen: String,
    metrics: String,
}

fn memcastd(dir: &TempDir, name: &str, memcached: &str, peers: &[&str]) -> Daemon {
    let key = dir.path.join("cluster.key");
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let subscribe = format!("tcp://127.0.0.1:{}", free_port());
    let log = dir.path.join(format!("{name}.log"));
    let mut cmd = Command::new(artifacts().memcastd);
    cmd.args(["--memcached", memcached, "--subscribe", &subscribe])
        .arg("--key-file")
        .arg(&key)
        .args(["--listen", &listen, "--metrics", &metrics])
        .args(["--stats-interval", "0"]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let proc = Proc::spawn("memcastd", &mut cmd);
    assert!(wait_for_tcp(&metrics, Duration::from_secs(5)), "{name}");
    Daemon {
        _proc: proc,
        log,
        listen,
        metrics,
    }
}

impl Daemon {
    fn metric(&self, name: &str, reason: Option<&str>) -> Option<f64> {
        let page = memcastd::metrics::scrape(&self.metrics, Duration::from_secs(2)).ok()?;
        memcastd::metrics::parse(&page)
            .into_iter()
            .find(|s| {
                s.name == name
                    && reason.is_none_or(|r| s.labels.iter().any(|(k, v)| k == "reason" && v == r))
            })
            .map(|s| s.value)
    }

    fn status(&self) -> (i32, String) {
        let out = Command::new(artifacts().memcastd)
            .args(["status", "--metrics", &self.metrics])
            .output()
            .expect("memcastd status");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

#[test]
fn publish_failures_before_and_while_memcastd_runs_reach_metrics_and_status() {
    let dir = TempDir::new("publish-failures");
    let key = dir.key_file("cluster.key", 5);
    let mc = Memcached::start();
    let absent_relay = format!("ipc://{}/no-memcastd.sock", dir.path.display());

    // No memcastd at all: PHP stores, warns, and counts in memcached.
    let out = php_writes(&mc.addr(), &absent_relay, &key, 3);
    assert_eq!(out.matches("Warning").count(), 1, "one warning: {out}");
    assert!(out.contains("did not take the frame within 30 ms"), "{out}");
    let not_taken = "memcast:php:publish_failed:not_taken";
    assert_eq!(counter(&mc.addr(), not_taken), Some(3));
    let out = php_writes(&mc.addr(), &absent_relay, &dir.path.join("missing.key"), 2);
    assert!(out.contains("missing.key: cannot read it"), "{out}");
    assert_eq!(
        counter(&mc.addr(), "memcast:php:publish_failed:no_key"),
        Some(2)
    );

    // Sealed values that did not open, as PHP counts them (phpt 071).
    let mut client = memcast_core::Memcached::new(
        memcast_core::ServerAddr::parse(&mc.addr()).unwrap(),
        memcast_core::Timeouts::default(),
    );
    memcast_core::host_counters::HostCounter::SealedUnopened
        .add(&mut client, 4)
        .unwrap();

    // memcastd starts later (known complete thanks to a peer), and shows them.
    let peer_mc = Memcached::start();
    let peer = memcastd(&dir, "peer", &peer_mc.addr(), &[]);
    let host = memcastd(&dir, "host", &mc.addr(), &[&peer.listen]);
    let complete = eventually(Duration::from_secs(15), || {
        (host.metric("memcast_memcached_complete", None) == Some(1.0)).then_some(())
    });
    let log = || std::fs::read_to_string(&host.log).unwrap_or_default();
    assert!(complete.is_some(), "never complete: {}", log());
    let failures = "memcast_php_publish_failures_total";
    let seen = eventually(Duration::from_secs(5), || {
        (host.metric(failures, Some("not_taken")) == Some(3.0)).then_some(())
    });
    assert!(
        seen.is_some(),
        "{:?}",
        host.metric(failures, Some("not_taken"))
    );
    assert_eq!(host.metric(failures, Some("no_key")), Some(2.0));
    assert_eq!(host.metric(failures, Some("no_publisher")), Some(0.0));
    assert_eq!(
        host.metric("memcast_php_sealed_unopened_total", None),
        Some(4.0)
    );
    assert_eq!(
        host.metric("memcast_php_publish_failures_recent", None),
        Some(5.0)
    );
    let (code, text) = host.status();
    assert_eq!(code, 3, "degraded: {text}");
    assert!(
        text.contains("memcached    up, warm (known complete)"),
        "{text}"
    );
    assert!(
        text.contains("php publish  FAILING: 5 frames not published in the last 60 s (5 since memcached started: no_key 2, not_taken 3"),
        "{text}"
    );
    assert!(text.contains("memcast.key_file"), "{text}");
    let logged = log();
    assert!(
        logged.contains(
            "PHP workers on this host could not publish 5 frames (no_key 2, not_taken 3)"
        ),
        "{logged}"
    );

    // More while it runs: the count rises.
    php_writes(&mc.addr(), &absent_relay, &key, 2);
    let rose = eventually(Duration::from_secs(5), || {
        (host.metric(failures, Some("not_taken")) == Some(5.0)).then_some(())
    });
    assert!(
        rose.is_some(),
        "{:?}",
        host.metric(failures, Some("not_taken"))
    );
    assert_eq!(
        host.metric("memcast_php_publish_failures_recent", None),
        Some(7.0)
    );
    // The peer's PHP failed nothing: the counts are this host's alone.
    assert_eq!(peer.metric(failures, Some("not_taken")), Some(0.0));
}
