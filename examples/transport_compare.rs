//! PGM multicast against TCP mode, measured on the same machine in one run
//! (root, `make build` first): `cargo run --release --example transport_compare`.
//!
//! For each transport, a three-host cluster (network namespaces, host relays):
//! a burst of 20 000 frames of 2 KB handed to host 1's relay as fast as it
//! takes them (seconds until both receivers hold the last one), then 3 000
//! frames paced at 1 000/s, with the replication lag (PHP's write time to
//! applied on the receiver) read from the receivers' `/metrics` histogram.

use std::path::Path;
use std::time::{Duration, Instant};

use memcast_bus::{BusOptions, Publisher};
use memcast_core::{unix_millis, Frame, Op, SharedKey, Version};
use memcast_testkit::cluster::{Artifacts, Cluster, Publish};

const BURST: u64 = 20_000;
const PACED: u64 = 3_000;

fn frame(seq: u64, key: String, value: &[u8]) -> Frame {
    Frame {
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
        key: key.into_bytes(),
        value: value.to_vec(),
    }
}

/// Cumulative bucket counts of the lag histogram: (upper bound s, count).
fn lag_buckets(cluster: &Cluster, i: usize) -> Vec<(f64, f64)> {
    let addr = format!("{}:9477", cluster.sites[i].host.addr);
    let page = memcastd::metrics::scrape(&addr, Duration::from_secs(3)).expect("scrape");
    memcastd::metrics::histogram_buckets(&page, "memcast_replication_lag_seconds")
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("| transport | burst: frames/s to both receivers | gaps | repaired | paced 1 000/s: lag p50 ≤ | lag p99 ≤ |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for tcp in [false, true] {
        let args = vec!["--metrics".to_string(), "0.0.0.0:9477".to_string()];
        let artifacts = Artifacts::release(workspace);
        let mut cluster = if tcp {
            Cluster::start_tcp("tc", 3, artifacts, args)
        } else {
            Cluster::start_with("pc", 3, Publish::Relay, artifacts, args)
        };
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
        for seq in 1..=BURST {
            let key_name = if seq == BURST {
                "memcast.sess.burstlast".to_string()
            } else {
                format!("memcast.sess.burst{:08}", seq % 5000)
            };
            php.send(&frame(seq, key_name, &value).seal(&key)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline
            && !(1..3).all(|i| cluster.raw(i, "memcast.sess.burstlast").is_some())
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let burst_secs = started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        let before: Vec<_> = (1..3).map(|i| lag_buckets(&cluster, i)).collect();
        let start = Instant::now();
        for n in 0..PACED {
            let due = start + Duration::from_micros(n * 1000);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let f = frame(BURST + n + 1, format!("memcast.sess.paced{n:06}"), &value);
            php.send(&f.seal(&key)).unwrap();
        }
        std::thread::sleep(Duration::from_secs(2));
        let after: Vec<_> = (1..3).map(|i| lag_buckets(&cluster, i)).collect();
        // The worse of the two receivers.
        let (p50, p99) = (0..2)
            .map(|r| {
                let q = memcastd::metrics::quantiles_between(
                    std::slice::from_ref(&before[r]),
                    std::slice::from_ref(&after[r]),
                    &[0.5, 0.99],
                );
                (q[0], q[1])
            })
            .fold((0.0f64, 0.0f64), |(a, b), (x, y)| (a.max(x), b.max(y)));
        let (c, _) = cluster.stop_and_count();
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        println!(
            "| {} | {:.0} | {} | {} | {:.1} ms | {:.1} ms |",
            if tcp { "TCP mode" } else { "PGM (epgm)" },
            BURST as f64 / burst_secs,
            get("gaps"),
            get("frames_repaired"),
            p50 * 1000.0,
            p99 * 1000.0
        );
    }
}
