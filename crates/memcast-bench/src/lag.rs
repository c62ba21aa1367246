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

/// The 2 KB session's frame number `seq` at `rate` (keys cycle over 10 000).
fn frame(rate: u64, origin: u64, seq: u64, value: &[u8]) -> Frame {
    Frame {
        op: Op::Set,
        origin,
        epoch: 1,
        seq,
        version: Version {
            millis: unix_millis(),
            counter: 0,
            origin,
        },
        ttl: 600,
        key: format!("memcast.sess.lag{rate}x{}", seq % 10_000).into_bytes(),
        value: value.to_vec(),
    }
}

/// `lag-pub ENDPOINT KEY_FILE RATE SECONDS` (inside host 1, for
/// [`run_direct`]): publishes straight to the group as PHP does without a relay (its own
/// origin, sequence numbers from 1). Warms the receivers up, prints
/// `ready`, waits for a line on stdin, sends RATE frames/s for SECONDS,
/// prints `done sent=N`, and exits at stdin's end.
pub fn child(args: &[String]) -> Option<i32> {
    if args.get(1).map(String::as_str) != Some("lag-pub") {
        return None;
    }
    let [endpoint, key_file, rate, seconds] = &args[2..] else {
        eprintln!("lag-pub ENDPOINT KEY_FILE RATE SECONDS");
        return Some(2);
    };
    let key = SharedKey::from_file(std::path::Path::new(key_file)).expect("lag-pub: key");
    let (rate, seconds): (u64, u64) = (
        rate.parse().unwrap_or(5_000),
        seconds.parse().unwrap_or(SECONDS),
    );
    let publisher = Publisher::connect(
        endpoint,
        &BusOptions {
            rate_kbps: 1_000_000,
            ..BusOptions::default()
        },
    )
    .expect("lag-pub: publish");
    let value = crate::session_payload::sealed(&key);
    let origin = (unix_millis() << 8) | (rate % 251);
    let mut seq = 0u64;
    // PGM receivers join at the first packets they see: outside the
    // measured keys' lag (they are read before and after the run).
    for _ in 0..150 {
        seq += 1;
        let _ = publisher.send(&frame(0, origin, seq, &value).seal(&key));
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut line = String::new();
    println!("ready");
    let _ = std::io::stdin().read_line(&mut line);
    let per_tick = (rate / 1000).max(1);
    let first = seq;
    super::every_ms(seconds, |_| {
        for _ in 0..per_tick {
            seq += 1;
            let _ = publisher.send(&frame(rate, origin, seq, &value).seal(&key));
        }
    });
    println!("done sent={}", seq - first);
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    Some(0)
}

/// The low-latency setup: frames published straight to the group from
/// inside host 1, as PHP does without a relay (`memcast.publish =
/// epgm://...`), to receivers started with `--apply-batch-us 0`
/// ([`LOW_LATENCY_ARGS`]): no hop and no window on the way.
pub fn run_direct(cluster: &Cluster) -> Vec<Lag> {
    let exe = std::env::current_exe().expect("current_exe");
    let endpoint = format!(
        "epgm://{};{}:5555",
        cluster.sites[0].host.iface, cluster.group
    );
    let mut out = Vec::new();
    for rate in RATES {
        let mut c = cluster.sites[0].host.command(&exe);
        c.args(["lag-pub", &endpoint])
            .arg(cluster.key_file_of(0))
            .args([rate.to_string(), SECONDS.to_string()]);
        let mut kid = crate::floor::Kid::spawn(c);
        assert_eq!(kid.hear(), "ready", "lag-pub did not start");
        std::thread::sleep(Duration::from_millis(500));
        // The publisher stays up until the lag is read: PGM repairs come
        // from it.
        out.push(measure(cluster, rate, " (direct)", || {
            kid.say("go");
            let done = kid.hear();
            let sent = done
                .strip_prefix("done sent=")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("lag-pub said {done:?}"));
            (sent, 0)
        }));
    }
    out
}

/// One rate's lag: the receivers' histograms (hosts 2 and 3) before and
/// 2 s after `send`, which sends the frames and says how many and the
/// relay's RSS meanwhile (0 when not taken).
fn measure(cluster: &Cluster, rate: u64, setup: &str, send: impl FnOnce() -> (u64, u64)) -> Lag {
    let before: Vec<_> = (1..3).map(|i| lag_buckets(cluster, i)).collect();
    let start = Instant::now();
    let (sent, relay_rss_kb) = send();
    let achieved = sent as f64 / start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<_> = (1..3).map(|i| lag_buckets(cluster, i)).collect();
    let q: Vec<f64> = memcastd::metrics::quantiles_between(&before, &after, &[0.5, 0.99, 1.0])
        .into_iter()
        .map(|s| s * 1000.0)
        .collect();
    eprintln!(
        "bench: lag{setup} at {rate}/s (achieved {achieved:.0}/s): p50 ≤ {} ms, p99 ≤ {} ms, max ≤ {} ms",
        q[0], q[1], q[2]
    );
    Lag {
        rate,
        sent,
        p50_ms: q[0],
        p99_ms: q[1],
        max_ms: q[2],
        achieved,
        relay_rss_kb,
    }
}

/// memcastd's flags for [`run_direct`]'s cluster.
pub const LOW_LATENCY_ARGS: [&str; 2] = ["--apply-batch-us", "0"];

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
        out.push(measure(cluster, rate, "", || {
            let per_tick = (rate / 1000).max(1);
            let mut sent = 0u64;
            let mut rss = 0;
            super::every_ms(SECONDS, |tick| {
                for _ in 0..per_tick {
                    sent += 1;
                    php.send(&frame(rate, 1, sent, &value).seal(&key)).unwrap();
                }
                if tick == SECONDS * 500 {
                    rss = cluster.memcastd_pid(0).map_or(0, super::rss_kb);
                }
            });
            (sent, rss)
        }));
    }
    out
}
