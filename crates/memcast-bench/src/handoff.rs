//! What handing a frame from PHP to the host relay costs, per relay socket:
//! CPU µs per frame in the sender (this process: the send, and ZeroMQ's I/O
//! thread for `ipc://`) and in the relay (memcastd, all its threads), from
//! the scheduler's run time of every thread (/proc/PID/task/*/schedstat), at
//! a steady rate as PHP workers send (`HANDOFF_RATE`, default 5 000 frames/s
//! of the 2 KB session, `HANDOFF_SECONDS` per run, default 4). The schemes
//! alternate round by round, so a noisy neighbour hits both alike.
//!
//! The relay publishes to a TCP endpoint nobody subscribes to, so its
//! figure leaves out the multicast send (the same for every scheme).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::replication_cpu::{account, Watched};
use memcast_bus::{BusOptions, Publisher};
use memcast_core::{unix_millis, Frame, Op, SharedKey, Version};
use memcast_testkit::{eventually, free_port, wait_for_tcp, Memcached as Server, Proc, TempDir};

/// One scheme's medians.
pub struct Handoff {
    pub scheme: &'static str,
    pub sender_us: f64,
    pub relay_us: f64,
}

pub struct Handoffs {
    pub rate: u64,
    pub seconds: u64,
    pub rounds: usize,
    pub rows: Vec<Handoff>,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn relayed(metrics: &str) -> f64 {
    memcastd::metrics::scrape(metrics, Duration::from_secs(3))
        .map(|page| {
            memcastd::metrics::parse(&page)
                .into_iter()
                .filter(|s| s.name == "memcast_relayed_total")
                .map(|s| s.value)
                .sum()
        })
        .unwrap_or(0.0)
}

/// (sender µs/frame, relay µs/frame) for one run over `scheme`.
fn one(scheme: &str, socket: &str, mc: &Server, rate: u64, seconds: u64) -> (f64, f64) {
    let dir = TempDir::new("handoff");
    let key_file = dir.key_file("key", 4);
    let key = SharedKey::from_file(&key_file).unwrap();
    let relay = format!("{scheme}{}/{socket}", dir.path.display());
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let nobody = format!("tcp://127.0.0.1:{}", free_port());
    let unused = format!("tcp://127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path.join("memcastd.log")).unwrap();
    let mut cmd = Command::new(super::workspace().join("target/release/memcastd"));
    cmd.args(["--memcached", &mc.addr(), "--subscribe", &unused])
        .args(["--key-file", key_file.to_str().unwrap()])
        .args(["--relay", &relay, "--publish", &nobody])
        .args(["--listen", &listen, "--metrics", &metrics])
        .args(["--stats-interval", "0"])
        .stdout(Stdio::null())
        .stderr(log);
    let daemon = Proc::spawn("memcastd", &mut cmd);
    assert!(wait_for_tcp(&listen, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(600));
    let php = Publisher::relay(
        &relay,
        &BusOptions {
            send_timeout_ms: 5_000,
            ..BusOptions::default()
        },
    )
    .unwrap();
    let total = rate * seconds;
    // Sealed beforehand: only the hand-off is measured here.
    let frames: Vec<Vec<u8>> = (1..=total)
        .map(|seq| {
            Frame {
                op: Op::Set,
                origin: 77,
                epoch: 1,
                seq,
                version: Version {
                    millis: unix_millis(),
                    counter: seq as u32,
                    origin: 77,
                },
                ttl: 600,
                key: format!("memcast.sess.cost{}", seq % 10_000).into_bytes(),
                value: crate::session_payload::sealed(&key),
            }
            .seal(&key)
        })
        .collect();
    php.send(&frames[0]).unwrap(); // connected (ipc) before the clock starts
    let before = relayed(&metrics);
    // The scheduler's run time of every thread, as the replication CPU
    // section accounts it.
    let procs = [
        Watched {
            name: "sender".into(),
            pid: std::process::id(),
            per_thread: false,
            host: None,
        },
        Watched {
            name: "relay".into(),
            pid: daemon.pid(),
            per_thread: true,
            host: None,
        },
    ];
    let per_ms = (rate / 1000).max(1);
    let sent = (total - 1) as f64;
    let ((), cpu) = account(&procs, || {
        let start = Instant::now();
        for (i, frame) in frames[1..].iter().enumerate() {
            if (i as u64).is_multiple_of(per_ms) {
                let due = start + Duration::from_millis(i as u64 / per_ms);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            php.send(frame).expect("hand-off");
        }
        let all = eventually(Duration::from_secs(10), || {
            (relayed(&metrics) - before >= sent).then_some(())
        });
        assert!(all.is_some(), "the relay did not take every frame");
    });
    let us_per_frame = |ns: u64| ns as f64 / 1000.0 / sent;
    let threads: Vec<String> = cpu[1]
        .threads
        .iter()
        .map(|(name, ns)| format!("{name} {:.1}", us_per_frame(*ns)))
        .collect();
    eprintln!(
        "bench: hand-off over {scheme}: relay threads µs/frame: {}",
        threads.join(", ")
    );
    drop(php);
    drop(daemon);
    (us_per_frame(cpu[0].total), us_per_frame(cpu[1].total))
}

pub fn run(rounds: usize) -> Handoffs {
    let (rate, seconds) = (env_or("HANDOFF_RATE", 5000), env_or("HANDOFF_SECONDS", 4));
    let mc = Server::start();
    let schemes = [("ipc://", "publish.sock"), ("unixgram://", "publish.dgram")];
    let mut results = vec![(Vec::new(), Vec::new()); schemes.len()];
    for r in 0..rounds {
        for (i, (scheme, socket)) in schemes.iter().enumerate() {
            let (s, d) = one(scheme, socket, &mc, rate, seconds);
            eprintln!(
                "bench: hand-off round {} {scheme:<12} sender {s:6.1} µs/frame, relay {d:6.1} µs/frame",
                r + 1
            );
            results[i].0.push(s);
            results[i].1.push(d);
        }
    }
    Handoffs {
        rate,
        seconds,
        rounds,
        rows: schemes
            .iter()
            .zip(results)
            .map(|((scheme, _), (mut s, mut d))| Handoff {
                scheme,
                sender_us: super::median(&mut s),
                relay_us: super::median(&mut d),
            })
            .collect(),
    }
}
