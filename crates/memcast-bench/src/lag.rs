//! Replication lag across the namespaces: frames of the 2 KB session handed to host 1's
//! relay (as PHP does) at a steady rate; hosts 2 and 3 record, in their
//! `memcast_replication_lag_seconds` histogram, how old each write was when
//! memcached had it. Versions carry milliseconds, so lags are good to ±1 ms.

use std::time::{Duration, Instant};

use crate::replication_cpu::lag_buckets;
use memcast_bus::{BusOptions, Publisher};
use memcast_core::{unix_millis, Frame, Op, SharedKey, Version};
use memcast_testkit::cluster::Cluster;

pub const RATES: [u64; 3] = [1_000, 5_000, 20_000];
const SECONDS: u64 = 3;

pub struct Lag {
    pub rate: u64,
    pub sent: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub achieved: f64,
    pub relay_rss_kb: u64,
}

pub fn run(cluster: &Cluster) -> Vec<Lag> {
    let key = SharedKey::from_file(&cluster.key_file_of(0)).unwrap();
    let php = Publisher::relay(
        &cluster.relay(0),
        &BusOptions {
            send_timeout_ms: 5_000,
            sndhwm: 1_000_000,
            ..BusOptions::default()
        },
    )
    .unwrap();
    let value = crate::session_payload::sealed(&key);
    let mut out = Vec::new();
    for rate in RATES {
        let before: Vec<_> = (1..3).map(|i| lag_buckets(cluster, i)).collect();
        let per_tick = (rate / 1000).max(1);
        let start = Instant::now();
        let mut sent = 0u64;
        let mut rss = 0;
        super::every_ms(SECONDS, |tick| {
            for _ in 0..per_tick {
                sent += 1;
                let frame = Frame {
                    op: Op::Set,
                    origin: 1,
                    epoch: 1,
                    seq: sent,
                    version: Version {
                        millis: unix_millis(),
                        counter: 0,
                        origin: 1,
                    },
                    ttl: 600,
                    key: format!("memcast.sess.lag{rate}x{}", sent % 10_000).into_bytes(),
                    value: value.clone(),
                };
                php.send(&frame.seal(&key)).unwrap();
            }
            if tick == SECONDS * 500 {
                rss = cluster.memcastd_pid(0).map_or(0, super::rss_kb);
            }
        });
        let achieved = sent as f64 / start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        let after: Vec<_> = (1..3).map(|i| lag_buckets(cluster, i)).collect();
        let q: Vec<f64> = memcastd::metrics::quantiles_between(&before, &after, &[0.5, 0.99, 1.0])
            .into_iter()
            .map(|s| s * 1000.0)
            .collect();
        eprintln!(
            "bench: lag at {rate}/s (achieved {achieved:.0}/s): p50 ≤ {} ms, p99 ≤ {} ms, max ≤ {} ms",
            q[0], q[1], q[2]
        );
        out.push(Lag {
            rate,
            sent,
            p50_ms: q[0],
            p99_ms: q[1],
            max_ms: q[2],
            achieved,
            relay_rss_kb: rss,
        });
    }
    out
}
