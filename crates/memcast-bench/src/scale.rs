//! Lag, apply and CPU as the cluster grows: every host applies every other
//! host's writes, so each added host adds a receiver's work per write. For
//! clusters of 3, 5 and 8 hosts (each started fresh: memcached + memcastd in
//! its own namespace, the bench's memcastd settings), the sender of
//! [`crate::replication_cpu`] writes the session at a steady rate through
//! host 1's relay (store + publish, as PHP does); every receiver's lag
//! histogram and applied counter are read before and after, and every
//! process's CPU is accounted.

use std::time::{Duration, Instant};

use crate::replication_cpu::{account, clock_ticks, counter, lag_buckets, us, watched, Sender};

pub const SIZES: [u8; 3] = [3, 5, 8];
pub const RATE: u64 = 5_000;
const SECONDS: u64 = 4;
/// How long the receivers get to apply what is queued after the last write.
const DRAIN: Duration = Duration::from_secs(5);

pub struct Scale {
    pub hosts: usize,
    pub writes: u64,
    pub achieved: f64,
    /// The fewest frames any receiver applied.
    pub applied_min: f64,
    /// Lag bucket bounds (ms) of the worst receiver for each quantile.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The host (from 1) with the worst p99.
    pub worst_host: usize,
    /// Every process (sender, every memcastd and memcached), µs per write.
    pub cluster_us: f64,
    /// memcastd + memcached of host 1 (the relay), µs per write.
    pub relay_host_us: f64,
    /// memcastd + memcached of a receiver host, mean over receivers.
    pub receiver_host_us: f64,
    pub seconds: u64,
}

impl Scale {
    pub fn all_applied(&self) -> bool {
        self.applied_min >= self.writes as f64
    }
}

pub fn run() -> Vec<Scale> {
    SIZES.iter().map(|&n| one(n)).collect()
}

fn one(hosts: u8) -> Scale {
    let started = Instant::now();
    let cluster = super::bench_cluster(&format!("bs{hosts}"), hosts);
    eprintln!(
        "bench: scale: {hosts} hosts up after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let hz = clock_ticks();
    let procs = watched(&cluster);
    let receivers: Vec<usize> = (1..cluster.sites.len()).collect();
    let mut sender = Sender::new(&cluster);
    // Every key held everywhere first (the steady state, as in the
    // replication CPU section).
    sender.run(RATE, 2, true);
    std::thread::sleep(Duration::from_secs(1));
    let applied_before: Vec<f64> = receivers
        .iter()
        .map(|&i| counter(&cluster, i, "memcast_applied_total"))
        .collect();
    let lag_before: Vec<_> = receivers
        .iter()
        .map(|&i| lag_buckets(&cluster, i))
        .collect();
    let applied_since =
        |k: usize, i: usize| counter(&cluster, i, "memcast_applied_total") - applied_before[k];
    let ((writes, achieved), cpu) = account(&procs, || {
        let t = Instant::now();
        let writes = sender.run(RATE, SECONDS, true);
        let achieved = writes as f64 / t.elapsed().as_secs_f64();
        let deadline = Instant::now() + DRAIN;
        while Instant::now() < deadline
            && receivers
                .iter()
                .enumerate()
                .any(|(k, &i)| applied_since(k, i) < writes as f64)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        (writes, achieved)
    });
    let applied_min = receivers
        .iter()
        .enumerate()
        .map(|(k, &i)| applied_since(k, i))
        .fold(f64::INFINITY, f64::min);
    let (mut p50, mut p99, mut max, mut worst_host) = (0.0f64, 0.0f64, 0.0f64, 2);
    for (k, &i) in receivers.iter().enumerate() {
        let after = lag_buckets(&cluster, i);
        let q = memcastd::metrics::quantiles_between(
            &lag_before[k..=k],
            std::slice::from_ref(&after),
            &[0.5, 0.99, 1.0],
        );
        let q: Vec<f64> = q.into_iter().map(|s| s * 1000.0).collect();
        p50 = p50.max(q[0]);
        if q[1] > p99 || k == 0 {
            worst_host = i + 1;
        }
        p99 = p99.max(q[1]);
        max = max.max(q[2]);
    }
    let per_write = |ticks: u64| us(ticks, hz, writes);
    let host_us = |h: usize| -> f64 {
        procs
            .iter()
            .zip(&cpu)
            .filter(|(w, _)| w.host == Some(h))
            .map(|(_, c)| per_write(c.total))
            .sum()
    };
    let result = Scale {
        hosts: hosts.into(),
        writes,
        achieved,
        applied_min,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        worst_host,
        cluster_us: cpu.iter().map(|c| per_write(c.total)).sum(),
        relay_host_us: host_us(1),
        receiver_host_us: receivers.iter().map(|&i| host_us(i + 1)).sum::<f64>()
            / receivers.len().max(1) as f64,
        seconds: SECONDS,
    };
    eprintln!(
        "bench: scale: {hosts} hosts, {writes} writes at {achieved:.0}/s: fewest applied {applied_min:.0}; worst lag p50 ≤ {p50} ms, p99 ≤ {p99} ms (host {worst_host}), max ≤ {max} ms; cluster CPU {:.0} µs/write (relay host {:.0}, a receiver host {:.0})",
        result.cluster_us, result.relay_host_us, result.receiver_host_us
    );
    result
}
