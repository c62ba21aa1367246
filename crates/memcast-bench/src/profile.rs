//! `BENCH_ONLY=profile`: where replication's CPU goes (issue 14).
//!
//! On the three-host cluster, a sender in this process does what a PHP
//! worker does per write: stores the 2 KB session in host 1's memcached,
//! then seals the frame and hands it to host 1's relay. Three phases at a
//! steady rate (`PROFILE_RATE`, default 5 000/s):
//!
//! 1. **store only** (`PROFILE_SECONDS`, default 10 s): the local write alone,
//!    the baseline without replication;
//! 2. **store + publish** (as long): the replicated write;
//! 3. **perf** (8 s): the same traffic with `perf record` on host 2's memcastd
//!    (a receiver), then on host 1's (the relay), 4 s each.
//!
//! In phases 1 and 2 every memcastd, memcached and the sender are accounted
//! (utime + stime from /proc, per thread for memcastd); replication's cost per
//! write is phase 2 minus phase 1, per process. Writes
//! bench/results/profile-data.md; profile.md holds the reading of it.
//!
//! The sender sleeps between 1 ms ticks (no spinning, unlike the lag
//! section's), so its own CPU is what sealing and handing over cost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use memcast_bus::{BusOptions, Publisher};
use memcast_core::{
    unix_millis, Frame, Memcached, Op, ServerAddr, SharedKey, StoredValue, Timeouts, Version,
};
use memcast_testkit::cluster::Cluster;

const PERF_SECONDS: u64 = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Clock ticks per second of /proc's utime and stime.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (comm, utime + stime in ticks) of a /proc stat file.
fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let open = stat.find('(')?;
    let (comm, rest) = stat[open + 1..].rsplit_once(')')?;
    // After "pid (comm)": state is field 3; utime and stime are 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm.to_owned(), utime + stime))
}

/// A process's CPU so far, in ticks, in total and per thread name (threads
/// of one name summed: ZeroMQ's I/O threads, say).
#[derive(Clone, Default)]
struct Cpu {
    total: u64,
    threads: BTreeMap<String, u64>,
}

fn cpu_of(pid: u32) -> Cpu {
    let mut cpu = Cpu {
        total: stat_ticks(&format!("/proc/{pid}/stat")).map_or(0, |(_, t)| t),
        ..Cpu::default()
    };
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in dir.flatten() {
            let path = format!("{}/stat", task.path().display());
            if let Some((comm, ticks)) = stat_ticks(&path) {
                *cpu.threads.entry(comm).or_default() += ticks;
            }
        }
    }
    cpu
}

struct Watched {
    name: String,
    pid: u32,
    per_thread: bool,
}

fn watched(cluster: &Cluster) -> Vec<Watched> {
    let mut out = vec![Watched {
        name: "sender (PHP's part)".into(),
        pid: std::process::id(),
        per_thread: false,
    }];
    for i in 0..cluster.sites.len() {
        let role = if i == 0 { "relay" } else { "receiver" };
        out.push(Watched {
            name: format!("memcastd {} ({role})", i + 1),
            pid: cluster.memcastd_pid(i).unwrap_or(0),
            per_thread: true,
        });
        out.push(Watched {
            name: format!("memcached {}", i + 1),
            pid: cluster.sites[i].memcached.pid(),
            per_thread: false,
        });
    }
    out
}

/// CPU used by each watched process during `f`, in ticks.
fn account(procs: &[Watched], f: impl FnOnce() -> u64) -> (u64, Vec<Cpu>) {
    let before: Vec<Cpu> = procs.iter().map(|p| cpu_of(p.pid)).collect();
    let writes = f();
    let after: Vec<Cpu> = procs.iter().map(|p| cpu_of(p.pid)).collect();
    let used = before
        .iter()
        .zip(after)
        .map(|(b, a)| Cpu {
            total: a.total.saturating_sub(b.total),
            threads: a
                .threads
                .into_iter()
                .map(|(name, t)| {
                    let was = b.threads.get(&name).copied().unwrap_or(0);
                    (name, t.saturating_sub(was))
                })
                .collect(),
        })
        .collect();
    (writes, used)
}

/// What a PHP worker does per write, at a steady rate.
struct Sender {
    key: SharedKey,
    relay: Publisher,
    memcached: Memcached,
    value: Vec<u8>,
    seq: u64,
}

impl Sender {
    fn new(cluster: &Cluster) -> Sender {
        let key = SharedKey::from_file(&cluster.key_file_of(0)).expect("key file");
        let relay = Publisher::relay(
            &cluster.relay(0),
            &BusOptions {
                send_timeout_ms: 5_000,
                sndhwm: 1_000_000,
                ..BusOptions::default()
            },
        )
        .expect("relay socket");
        let addr = ServerAddr::parse(&cluster.memcached_addr(0)).expect("memcached address");
        let memcached = Memcached::new(
            addr,
            Timeouts {
                connect: Duration::from_secs(1),
                io: Duration::from_secs(2),
            },
        );
        Sender {
            key,
            relay,
            memcached,
            value: vec![b'v'; 2048],
            seq: 0,
        }
    }

    /// `rate` writes a second for `seconds`; `publish` hands each to the
    /// relay after storing it. The number of writes.
    fn run(&mut self, rate: u64, seconds: u64, publish: bool) -> u64 {
        let per_tick = (rate / 1000).max(1);
        let start = Instant::now();
        let mut sent = 0;
        for tick in 0..seconds * 1000 {
            let due = start + Duration::from_millis(tick);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            for _ in 0..per_tick {
                self.seq += 1;
                sent += 1;
                let version = Version {
                    millis: unix_millis(),
                    counter: (self.seq % 1000) as u32,
                    origin: 1,
                };
                let key = format!("memcast.sess.prof{}", self.seq % 10_000).into_bytes();
                let stored = StoredValue::live(version, &self.value).encode();
                self.memcached
                    .set(&key, &stored, 600)
                    .expect("local memcached set");
                if publish {
                    let frame = Frame {
                        op: Op::Set,
                        origin: 1,
                        epoch: 1,
                        seq: self.seq,
                        version,
                        ttl: 600,
                        key,
                        value: self.value.clone(),
                    };
                    self.relay
                        .send(&frame.seal(&self.key))
                        .expect("hand-off to the relay");
                }
            }
        }
        sent
    }
}

fn counter(cluster: &Cluster, i: usize, name: &str) -> f64 {
    let addr = format!("{}:9477", cluster.sites[i].host.addr);
    let page = memcastd::metrics::scrape(&addr, Duration::from_secs(3)).expect("scrape");
    memcastd::metrics::parse(&page)
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

fn lag_buckets(cluster: &Cluster, i: usize) -> Vec<(f64, f64)> {
    let addr = format!("{}:9477", cluster.sites[i].host.addr);
    let page = memcastd::metrics::scrape(&addr, Duration::from_secs(3)).expect("scrape");
    memcastd::metrics::histogram_buckets(&page, "memcast_replication_lag_seconds")
}

/// `perf record` with DWARF call graphs on `pid` for `seconds`.
fn perf_record(pid: u32, out: &Path, seconds: u64) -> bool {
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "1999"])
        .args(["--call-graph", "dwarf,16384", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The top `n` rows of a `perf report`: (self or children %, symbol, where).
fn perf_top(data: &Path, children: bool, n: usize) -> Vec<(f64, f64, String, String)> {
    let mode = if children {
        "--children"
    } else {
        "--no-children"
    };
    let out = Command::new("perf")
        .args(["report", "-i"])
        .arg(data)
        .args([mode, "--stdio", "-g", "none", "--sort", "dso,sym"])
        .args(["--percent-limit", "0.3"])
        .output();
    let Ok(out) = out else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || !line.contains('%') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let first: Option<f64> = parts
            .next()
            .and_then(|p| p.trim_end_matches('%').parse().ok());
        let Some(first) = first else {
            continue;
        };
        let second = if children {
            parts
                .next()
                .and_then(|p| p.trim_end_matches('%').parse().ok())
        } else {
            Some(first)
        };
        let Some(second) = second else {
            continue;
        };
        let dso = parts.next().unwrap_or("").to_owned();
        let _kind = parts.next();
        let sym: String = parts.collect::<Vec<_>>().join(" ");
        if children && is_wrapper(&sym) {
            continue;
        }
        rows.push((first, second, sym, dso));
        if rows.len() == n {
            break;
        }
    }
    rows
}

/// Frames every sample passes through (start-up, the standard library's
/// entry points, unnamed libzmq frames): they say nothing about the cost.
fn is_wrapper(sym: &str) -> bool {
    const WRAPPERS: [&str; 12] = [
        "std::",
        "core::",
        "<&dyn",
        "__libc_start",
        "_start",
        "main",
        "memcastd::main",
        "memcastd::run_daemon",
        "memcastd::daemon::Daemon::run",
        "clone3",
        "start_thread",
        "0x",
    ];
    WRAPPERS.iter().any(|w| sym.starts_with(w))
}

fn us(ticks: u64, hz: f64, writes: u64) -> f64 {
    ticks as f64 / hz * 1e6 / writes.max(1) as f64
}

pub fn run(cluster: &Cluster, out_dir: &Path) {
    let rate = env_u64("PROFILE_RATE", 5_000);
    let seconds = env_u64("PROFILE_SECONDS", 10);
    let hz = clock_ticks();
    let procs = watched(cluster);
    let mut sender = Sender::new(cluster);
    // Warm the keys up (every key held everywhere, every CAS cache filled)
    // so both phases see the steady state.
    sender.run(rate, 3, true);
    std::thread::sleep(Duration::from_secs(1));

    eprintln!("profile: store only, {rate}/s for {seconds} s");
    let (base_writes, base) = account(&procs, || {
        let n = sender.run(rate, seconds, false);
        std::thread::sleep(Duration::from_millis(500));
        n
    });
    eprintln!("profile: store + publish, {rate}/s for {seconds} s");
    let applied_before: Vec<f64> = (1..3)
        .map(|i| counter(cluster, i, "memcast_applied_total"))
        .collect();
    let lag_before: Vec<_> = (1..3).map(|i| lag_buckets(cluster, i)).collect();
    let (repl_writes, repl) = account(&procs, || {
        let n = sender.run(rate, seconds, true);
        // What is queued is applied (and accounted) before the end.
        std::thread::sleep(Duration::from_millis(500));
        n
    });
    let applied: Vec<f64> = (1..3)
        .map(|i| counter(cluster, i, "memcast_applied_total") - applied_before[i - 1])
        .collect();
    let lag_after: Vec<_> = (1..3).map(|i| lag_buckets(cluster, i)).collect();
    eprintln!(
        "profile: frames per batch (since start): relay {:.2}, receivers {:.2} {:.2}",
        counter(cluster, 0, "memcast_relayed_total")
            / counter(cluster, 0, "memcast_relay_batches_total").max(1.0),
        counter(cluster, 1, "memcast_applied_total")
            / counter(cluster, 1, "memcast_apply_batches_total").max(1.0),
        counter(cluster, 2, "memcast_applied_total")
            / counter(cluster, 2, "memcast_apply_batches_total").max(1.0),
    );
    let lag: Vec<f64> = memcastd::metrics::quantiles_between(&lag_before, &lag_after, &[0.5, 0.99])
        .into_iter()
        .map(|s| s * 1000.0)
        .collect();

    eprintln!("profile: perf on host 2's memcastd, then host 1's");
    let perf_dir = std::env::temp_dir().join(format!("memcast-profile-{}", std::process::id()));
    std::fs::create_dir_all(&perf_dir).expect("perf dir");
    let receiver_data = perf_dir.join("receiver.data");
    let relay_data = perf_dir.join("relay.data");
    let targets = [
        (cluster.memcastd_pid(1).unwrap_or(0), receiver_data.clone()),
        (cluster.memcastd_pid(0).unwrap_or(0), relay_data.clone()),
    ];
    let recorder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        targets
            .iter()
            .all(|(pid, out)| perf_record(*pid, out, PERF_SECONDS))
    });
    sender.run(rate, 2 * PERF_SECONDS + 1, true);
    let recorded = recorder.join().unwrap_or(false);

    let md = report(Report {
        rate,
        seconds,
        hz,
        procs: &procs,
        base: (base_writes, &base),
        repl: (repl_writes, &repl),
        applied: &applied,
        lag: &lag,
        perf: recorded.then_some((&receiver_data, &relay_data)),
    });
    let path = out_dir.join("profile-data.md");
    std::fs::write(&path, &md).expect("write profile-data.md");
    println!("{md}");
    eprintln!(
        "profile: wrote {}; perf data kept in {}",
        path.display(),
        perf_dir.display()
    );
}

struct Report<'a> {
    rate: u64,
    seconds: u64,
    hz: f64,
    procs: &'a [Watched],
    base: (u64, &'a [Cpu]),
    repl: (u64, &'a [Cpu]),
    applied: &'a [f64],
    lag: &'a [f64],
    perf: Option<(&'a PathBuf, &'a PathBuf)>,
}

fn report(r: Report<'_>) -> String {
    let mut md = String::new();
    let (bw, base) = r.base;
    let (rw, repl) = r.repl;
    let _ = writeln!(
        md,
        "## Replication CPU per write ({} writes/s of 2 KB, {} s per phase, 3 hosts)\n",
        r.rate, r.seconds
    );
    let _ = writeln!(
        md,
        "Store only: {bw} writes; store + publish: {rw} writes, applied on host 2: {:.0}, host 3: {:.0}; lag p50 ≤ {} ms, p99 ≤ {} ms.\n",
        r.applied.first().copied().unwrap_or(f64::NAN),
        r.applied.get(1).copied().unwrap_or(f64::NAN),
        r.lag.first().copied().unwrap_or(f64::NAN),
        r.lag.get(1).copied().unwrap_or(f64::NAN),
    );
    let _ = writeln!(
        md,
        "| process | store only µs/write | store + publish µs/write | replication µs/write |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    let (mut tb, mut tr) = (0.0, 0.0);
    for (i, p) in r.procs.iter().enumerate() {
        let b = us(base[i].total, r.hz, bw);
        let x = us(repl[i].total, r.hz, rw);
        tb += b;
        tr += x;
        let _ = writeln!(md, "| {} | {b:.1} | {x:.1} | {:.1} |", p.name, x - b);
    }
    let _ = writeln!(
        md,
        "| **cluster** | **{tb:.1}** | **{tr:.1}** | **{:.1}** |\n",
        tr - tb
    );
    let _ = writeln!(md, "memcastd threads, store + publish, µs/write:\n");
    let _ = writeln!(md, "| process | thread | µs/write |");
    let _ = writeln!(md, "|---|---|---:|");
    for (i, p) in r.procs.iter().enumerate().filter(|(_, p)| p.per_thread) {
        for (thread, ticks) in repl[i].threads.iter().filter(|(_, t)| **t > 0) {
            let _ = writeln!(
                md,
                "| {} | {thread} | {:.1} |",
                p.name,
                us(*ticks, r.hz, rw)
            );
        }
    }
    md.push('\n');
    if let Some((receiver, relay)) = r.perf {
        for (title, data) in [
            ("host 2's memcastd (a receiver)", receiver),
            ("host 1's memcastd (the relay)", relay),
        ] {
            let _ = writeln!(
                md,
                "### perf: {title}, top symbols by self time (`perf report --no-children`)\n"
            );
            let _ = writeln!(md, "| self % | symbol | object |");
            let _ = writeln!(md, "|---:|---|---|");
            for (s, _, sym, dso) in perf_top(data, false, 15) {
                let _ = writeln!(md, "| {s:.2} | `{sym}` | {dso} |");
            }
            let _ = writeln!(
                md,
                "\n### perf: {title}, top by inclusive time (`perf report --children`)\n"
            );
            let _ = writeln!(md, "| children % | self % | symbol | object |");
            let _ = writeln!(md, "|---:|---:|---|---|");
            for (c, s, sym, dso) in perf_top(data, true, 25) {
                let _ = writeln!(md, "| {c:.2} | {s:.2} | `{sym}` | {dso} |");
            }
            md.push('\n');
        }
    } else {
        md.push_str("(perf record failed: no call-graph tables)\n");
    }
    md
}
