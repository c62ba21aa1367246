//! `make bench`: memcast measured against the alternatives in one run on
//! this machine, every number a median of interleaved rounds:
//!
//! - **web**: nginx + php-fpm (pm = static) + wrk inside host 1 of a
//!   three-host cluster (network namespaces), a page that reads a counter and
//!   a 2 KB payload, increments, writes back; a pool of existing sessions,
//!   each wrk thread cycling through its own share (so even handlers without
//!   locking must count exactly). Variants: memcast direct and via the host
//!   relay (cluster lock, and the host lock via the relay), php-memcached on
//!   one server, on three with two replicas (locking on and off), phpredis,
//!   files, and a page without a session.
//! - **cluster lock**: the same page behind nginx + php-fpm on each of the
//!   three hosts, wrk on each at once over one pool of sessions (one
//!   session's requests on several hosts at once, as behind a round-robin
//!   balancer): memcast's cluster lock, its host lock (which loses updates
//!   here) and php-memcached's lock.
//! - **handler**: per-call latency of session_start() and
//!   session_write_close() from PHP CLI, against raw get/set round trips of
//!   the same 2 KB value with php-memcached's client.
//! - **replication**: lag from PHP's write to applied on the other hosts at
//!   1k, 5k and 20k writes/s; memcastd's apply rate against memcached's own
//!   pipelined-set ceiling.
//! - **replication CPU**: cluster CPU per replicated write, per process
//!   (store only against store + publish, medians of rounds).
//! - **scale**: lag, apply and CPU per write at 3, 5 and 8 hosts.
//! - **memory**: memcastd and php-fpm workers, idle and under load.
//!
//! Writes bench/results/latest.md and PNG charts (gnuplot) beside it, with
//! issue 14's four goals judged on this run's numbers. Every session and
//! frame carries one realistic 2 KB PHP session ([`session_payload`]).
//!
//! `BENCH_ONLY=<section>` runs one section and prints it: `web`, `handler`,
//! `cluster_lock`, `lag`, `replication_cpu` (with its jumbo-frame run),
//! `floor`, `scale`, `apply`, `handoff`, or `profile` (replication CPU plus
//! perf, bench/results/profile-data.md).

mod apply;
mod cluster_lock;
mod floor;
mod handler;
mod handoff;
mod lag;
mod profile;
mod replication_cpu;
mod report;
mod scale;
mod session_payload;
mod web;

use std::path::{Path, PathBuf};
use std::time::Duration;

use memcast_testkit::cluster::{Artifacts, Cluster, RelayScheme};

/// Replication CPU section: writes per second and seconds per phase.
const REPLICATION_CPU_RATE: u64 = 5_000;
const REPLICATION_CPU_SECONDS: u64 = 4;
const FLOOR_SECONDS: u64 = 4;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Resident memory of a process, KB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Children of a process (php-fpm's workers).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// `-d` lines loading a Debian PECL extension (php8.2-memcached,
/// php8.2-redis) with `php -n`: its serializer dependencies first.
pub fn pecl(extension: &str) -> Vec<String> {
    ["igbinary", "msgpack", extension]
        .iter()
        .map(|e| format!("extension={e}"))
        .collect()
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Calls `tick(n)` for every 1 ms tick of `seconds`, asleep until each is
/// due: a spinning sender would take a whole core of two from what it
/// measures. A late tick runs at once (the schedule does not drift).
pub fn every_ms(seconds: u64, mut tick: impl FnMut(u64)) {
    let start = std::time::Instant::now();
    for n in 0..seconds * 1000 {
        let due = start + Duration::from_millis(n);
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        tick(n);
    }
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The replication CPU measurement again on a fresh cluster whose network
/// carries jumbo frames and whose memcastd send 9 000-byte PGM packets.
fn replication_cpu_jumbo(rounds: usize) -> replication_cpu::ReplicationCpu {
    let cluster = bench_cluster_with("bj", 3, &JUMBO_ARGS);
    replication_cpu::run(
        &cluster,
        rounds,
        REPLICATION_CPU_RATE,
        REPLICATION_CPU_SECONDS,
    )
}

/// A cluster of `hosts` with the bench's memcastd settings, warm.
pub fn bench_cluster(tag: &str, hosts: u8) -> Cluster {
    bench_cluster_with(tag, hosts, &[])
}

/// memcastd's flags for a network of jumbo frames (the testkit then gives
/// every link MTU 9000).
pub const JUMBO_ARGS: [&str; 2] = ["--pgm-max-tpdu", "9000"];

/// Lag in the low-latency setup, on a cluster of its own.
fn lag_direct() -> Vec<lag::Lag> {
    let cluster = bench_cluster_with("bl", 3, &lag::LOW_LATENCY_ARGS);
    lag::run_direct(&cluster)
}

/// [`bench_cluster`] with more memcastd flags.
pub fn bench_cluster_with(tag: &str, hosts: u8, extra: &[&str]) -> Cluster {
    // The README's recommended relay socket (unixgram://);
    // MEMCAST_RELAY_SCHEME=ipc measures ZeroMQ's ipc:// instead.
    let scheme = RelayScheme::recommended();
    let cluster = Cluster::start_relay_over(
        tag,
        hosts,
        scheme,
        Artifacts::release(&workspace()),
        vec![
            "--metrics".into(),
            "0.0.0.0:9477".into(),
            // 20 000 frames/s of 2 KB is 330 Mbit/s: above PGM's default budget.
            "--pgm-rate-kbps".into(),
            "1000000".into(),
            // Production intervals: the tests' 5 s anti-entropy would scan
            // every memcached every 5 s and disturb what is measured.
            "--anti-entropy-interval".into(),
            "300".into(),
            "--resync-interval".into(),
            "30".into(),
            "--heartbeat-ms".into(),
            "1000".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        // Experiments: e.g. BENCH_MEMCASTD_ARGS="--apply-batch-us 0".
        .chain(
            std::env::var("BENCH_MEMCASTD_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from),
        )
        .collect(),
    );
    assert!(
        cluster.wait_warm(Duration::from_secs(30)),
        "{}",
        cluster.logs()
    );
    cluster
}

fn main() {
    // This binary is also the floor section's publisher and subscribers.
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = floor::child(&args).or_else(|| lag::child(&args)) {
        std::process::exit(code);
    }
    memcast_testkit::require_root("make bench (network namespaces)");
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let out_dir = workspace().join("bench/results");
    std::fs::create_dir_all(&out_dir).unwrap();
    let started = std::time::Instant::now();
    eprintln!("bench: three hosts (namespaces), memcastd relays; {rounds} rounds of {seconds} s per web variant");
    let only = std::env::var("BENCH_ONLY").ok();
    // Sections that start their own clusters (or none).
    match only.as_deref() {
        Some("scale") => {
            println!("{}", report::scale(&scale::run()));
            return;
        }
        Some("apply") => {
            println!("{}", report::apply(&apply::run(rounds)));
            return;
        }
        Some("floor") => {
            let floor = floor::run(rounds, REPLICATION_CPU_RATE, FLOOR_SECONDS);
            println!("{}", report::floor(&floor, None));
            return;
        }
        Some("handoff") => {
            println!("{}", report::handoff(&handoff::run(rounds)));
            return;
        }
        _ => {}
    }
    let mut cluster = bench_cluster("bn", 3);
    let memcastd_idle = cluster.memcastd_pid(0).map_or(0, rss_kb);
    // BENCH_ONLY=handler: the handler latencies alone, printed (no report),
    // e.g. to see what memcast.seal costs in a minute.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("handler") {
        for l in handler::run(&cluster, rounds) {
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                l.name, l.read_p50, l.read_p99, l.write_p50, l.write_p99
            );
        }
        return;
    }

    // BENCH_ONLY=cluster_lock: the cluster locking section alone, printed.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("cluster_lock") {
        let result = cluster_lock::run(&cluster, rounds, seconds);
        println!("{}", report::cluster_lock(&result));
        return;
    }

    // BENCH_ONLY=profile: replication's CPU per write and perf's top costs
    // (bench/results/profile-data.md).
    if std::env::var("BENCH_ONLY").as_deref() == Ok("profile") {
        profile::run(&cluster, &out_dir);
        return;
    }

    if std::env::var("BENCH_ONLY").as_deref() == Ok("replication_cpu") {
        let r = replication_cpu::run(
            &cluster,
            rounds,
            REPLICATION_CPU_RATE,
            REPLICATION_CPU_SECONDS,
        );
        drop(cluster);
        let jumbo = replication_cpu_jumbo(rounds);
        println!("{}", report::replication_cpu(&r));
        println!("{}", report::replication_cpu_jumbo(&r, &jumbo));
        return;
    }

    if std::env::var("BENCH_ONLY").as_deref() == Ok("lag") {
        let lag = lag::run(&cluster);
        drop(cluster);
        println!("{}", report::lag(&lag, &lag_direct()));
        return;
    }

    let web = web::run(&mut cluster, rounds, seconds);
    // BENCH_ONLY=web: the web stack's variants alone, printed.
    if only.as_deref() == Some("web") {
        for (name, runs) in &web.variants {
            let mut rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
            let mut p99: Vec<f64> = runs.iter().map(|r| r.p99_ms).collect();
            println!(
                "| {name} | {:.0} | {:.2} |",
                median(&mut rps),
                median(&mut p99)
            );
        }
        return;
    }
    eprintln!(
        "bench: web done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let cluster_lock = cluster_lock::run(&cluster, rounds, seconds);
    eprintln!(
        "bench: cluster lock done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let handler = handler::run(&cluster, rounds);
    eprintln!(
        "bench: handler done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let lag = lag::run(&cluster);
    let memcastd_load = lag.iter().map(|l| l.relay_rss_kb).max().unwrap_or(0);
    eprintln!(
        "bench: lag done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let replication_cpu = replication_cpu::run(
        &cluster,
        rounds,
        REPLICATION_CPU_RATE,
        REPLICATION_CPU_SECONDS,
    );
    eprintln!(
        "bench: replication CPU done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    drop(cluster);
    let lag_direct = lag_direct();
    eprintln!(
        "bench: lag of the low-latency setup done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let replication_cpu_jumbo = replication_cpu_jumbo(rounds);
    eprintln!(
        "bench: replication CPU on jumbo frames done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let floor = floor::run(rounds, REPLICATION_CPU_RATE, FLOOR_SECONDS);
    eprintln!(
        "bench: floor done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let scale = scale::run();
    eprintln!(
        "bench: scale done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let apply = apply::run(rounds);
    eprintln!(
        "bench: apply done after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let handoff = handoff::run(rounds);
    eprintln!(
        "bench: hand-off done after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let memory = report::Memory {
        memcastd_idle_kb: memcastd_idle,
        memcastd_load_kb: memcastd_load,
        fpm_idle_kb: web.fpm_idle_kb,
        fpm_load_kb: web.fpm_load_kb,
    };
    let md = report::write(
        &out_dir,
        &report::Measured {
            web: &web,
            cluster_lock: &cluster_lock,
            handler: &handler,
            lag: &lag,
            lag_direct: &lag_direct,
            replication_cpu: &replication_cpu,
            replication_cpu_jumbo: &replication_cpu_jumbo,
            floor: &floor,
            scale: &scale,
            apply: &apply,
            handoff: &handoff,
            memory: &memory,
        },
        started.elapsed(),
    );
    println!("{md}");
    eprintln!(
        "bench: wrote {} in {:.0} s",
        out_dir.join("latest.md").display(),
        started.elapsed().as_secs_f64()
    );
}
