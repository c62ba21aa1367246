//! Measures PGM settings on a real three-host cluster (root, `make build`
//! first): `cargo run --release --example pgm_sizing`.
//!
//! A burst of 2 KB session frames is handed to host 1's relay as fast as it
//! takes them; hosts 2 and 3 receive them over epgm. For each ZMQ_RATE it
//! reports how long delivery took, what the receivers saw (frames, gaps,
//! repairs) and the relay's resident memory afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use memcast_bus::{BusOptions, Publisher};
use memcast_core::{unix_millis, Frame, Op, SharedKey, Version};
use memcast_testkit::cluster::{Artifacts, Cluster, Publish};

const FRAMES: u64 = 20_000;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("| ZMQ_RATE (kbit/s) | recovery (ms) | relay SNDHWM | frames sent | seconds until both receivers had all | frames/s | frames received over PGM (2 receivers) | gaps | repaired from the ring | relay RSS (MB) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (rate, recovery, hwm) in [
        (10_000, 2_000, 100_000),
        (100_000, 2_000, 10_000),
        (100_000, 2_000, 100_000),
        (1_000_000, 2_000, 100_000),
        (100_000, 10_000, 100_000),
    ] {
        let args = vec![
            "--sndhwm".to_string(),
            hwm.to_string(),
            "--pgm-rate-kbps".to_string(),
            rate.to_string(),
            "--pgm-recovery-ms".to_string(),
            recovery.to_string(),
        ];
        let mut cluster =
            Cluster::start_with("pz", 3, Publish::Relay, Artifacts::release(workspace), args);
        let key = SharedKey::from_file(&cluster.key_file).unwrap();
        let php = Publisher::relay(
            &cluster.relay(0),
            &BusOptions {
                send_timeout_ms: 5_000,
                sndhwm: 1_000_000,
                ..BusOptions::default()
            },
        )
        .unwrap();
        let value = vec![b'x'; 2048];
        let started = Instant::now();
        for seq in 1..=FRAMES {
            let frame = Frame {
                op: Op::Set,
                origin: 1,
                epoch: 1,
                seq,
                version: Version {
                    millis: unix_millis(),
                    counter: 0,
                    origin: 1,
                },
                ttl: 600,
                // The last frame has a key of its own: its arrival means all arrived.
                key: if seq == FRAMES {
                    b"memcast.sess.pgmlast".to_vec()
                } else {
                    format!("memcast.sess.pgm{:08}", seq % 5000).into_bytes()
                },
                value: value.clone(),
            };
            php.send(&frame.seal(&key)).expect("relay took the frame");
        }
        // Delivered when the last frame is on both receivers; then let the
        // counters settle.
        let last = "memcast.sess.pgmlast";
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline && !(1..3).all(|i| cluster.raw(i, last).is_some()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let rss = cluster.memcastd_pid(0).map_or(0, rss_kb);
        let (c, _) = cluster.stop_and_count();
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        let received = get("received");
        println!(
            "| {rate} | {recovery} | {hwm} | {FRAMES} | {secs:.2} | {:.0} | {received} | {} | {} | {:.1} |",
            FRAMES as f64 / secs,
            get("gaps"),
            get("frames_repaired"),
            rss as f64 / 1024.0
        );
    }
}
