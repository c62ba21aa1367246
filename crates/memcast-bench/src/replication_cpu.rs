//! Replication's CPU per replicated write (issue 14's first goal), measured
//! without perf: a sender in this process does per write what a PHP worker
//! does (stores the session in host 1's memcached, then seals the frame and
//! hands it to host 1's relay), at a steady rate, in two phases per round:
//!
//! 1. **store only**: the local write alone, the baseline without
//!    replication;
//! 2. **store + publish**: the replicated write.
//!
//! Every memcastd, every memcached and the sender are accounted (the run
//! time of every thread, from /proc's schedstat); replication's cost per write
//! is phase 2 minus phase 1, per process. `make bench` runs it as its own
//! section (medians of rounds); `BENCH_ONLY=profile` runs one round of it
//! before perf. The scale section uses its [`Sender`] and accounting too.
//!
//! The sender sleeps between 1 ms ticks (no spinning, unlike the lag
//! section's), so its own CPU is what storing, sealing and handing over cost.

use std::collections::BTreeMap;
use std::time::Duration;

use memcast_bus::{BusOptions, Publisher};
use memcast_core::{
    unix_millis, Frame, Memcached, Op, ServerAddr, SharedKey, StoredValue, Timeouts, Version,
};
use memcast_testkit::cluster::Cluster;

/// The goal: cluster CPU per replicated write, µs.
pub const GOAL_US: f64 = 60.0;

/// Units per second of what [`Cpu`] counts: nanoseconds.
pub fn clock_ticks() -> f64 {
    1e9
}

/// (comm, run time in ns) of one thread: the scheduler's exact account
/// (`schedstat`), where utime and stime are sampled at timer ticks, which
/// the wake-ups of a paced sender and of the daemons it drives line up
/// with (a thread woken just after each tick shows almost no CPU).
fn thread_ns(task: &std::path::Path) -> Option<(String, u64)> {
    let comm = std::fs::read_to_string(task.join("comm")).ok()?;
    let sched = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let ns = sched.split_whitespace().next()?.parse().ok()?;
    Some((comm.trim().to_owned(), ns))
}

/// A process's CPU so far, in ns, in total and per thread name (threads
/// of one name summed: ZeroMQ's I/O threads, say). Threads that exited are
/// not counted: the processes watched keep theirs.
#[derive(Clone, Default)]
pub struct Cpu {
    pub total: u64,
    pub threads: BTreeMap<String, u64>,
}

pub(crate) fn cpu_of(pid: u32) -> Cpu {
    let mut cpu = Cpu::default();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in dir.flatten() {
            if let Some((comm, ns)) = thread_ns(&task.path()) {
                cpu.total += ns;
                *cpu.threads.entry(comm).or_default() += ns;
            }
        }
    }
    cpu
}

/// A process whose CPU is accounted.
pub struct Watched {
    pub name: String,
    pub pid: u32,
    pub per_thread: bool,
    /// Host number from 1, none for the sender.
    pub host: Option<usize>,
}

/// The sender, then every host's memcastd and memcached.
pub fn watched(cluster: &Cluster) -> Vec<Watched> {
    let mut out = vec![Watched {
        name: "sender (PHP's part)".into(),
        pid: std::process::id(),
        per_thread: false,
        host: None,
    }];
    for i in 0..cluster.sites.len() {
        let role = if i == 0 { "relay" } else { "receiver" };
        out.push(Watched {
            name: format!("memcastd {} ({role})", i + 1),
            pid: cluster.memcastd_pid(i).unwrap_or(0),
            per_thread: true,
            host: Some(i + 1),
        });
        out.push(Watched {
            name: format!("memcached {}", i + 1),
            pid: cluster.sites[i].memcached.pid(),
            per_thread: false,
            host: Some(i + 1),
        });
    }
    out
}

/// CPU used by each watched process during `f`, in ticks.
pub fn account<T>(procs: &[Watched], f: impl FnOnce() -> T) -> (T, Vec<Cpu>) {
    let before: Vec<Cpu> = procs.iter().map(|p| cpu_of(p.pid)).collect();
    let result = f();
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
    (result, used)
}

/// What a PHP worker does per write, at a steady rate.
pub struct Sender {
    key: SharedKey,
    relay: Publisher,
    memcached: Memcached,
    value: Vec<u8>,
    seq: u64,
}

impl Sender {
    pub fn new(cluster: &Cluster) -> Sender {
        let key = SharedKey::from_file(&cluster.key_file_of(0)).expect("key file");
        let cluster_key = key.clone();
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
            value: crate::session_payload::sealed(&cluster_key),
            seq: 0,
        }
    }

    /// `rate` writes a second for `seconds`; `publish` hands each to the
    /// relay after storing it. The number of writes.
    pub fn run(&mut self, rate: u64, seconds: u64, publish: bool) -> u64 {
        let per_tick = (rate / 1000).max(1);
        let mut sent = 0;
        crate::every_ms(seconds, |_| {
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
        });
        sent
    }
}

/// A counter of host `i`'s memcastd (all its label sets summed).
pub fn counter(cluster: &Cluster, i: usize, name: &str) -> f64 {
    counters(cluster, i, [name])[0]
}

/// Host `i`'s counters `names` (summed over their labels), from one scrape.
pub fn counters<const N: usize>(cluster: &Cluster, i: usize, names: [&str; N]) -> [f64; N] {
    let addr = format!("{}:9477", cluster.sites[i].host.addr);
    let page = memcastd::metrics::scrape(&addr, Duration::from_secs(3)).expect("scrape");
    let mut out = [0.0; N];
    for sample in memcastd::metrics::parse(&page) {
        if let Some(k) = names.iter().position(|n| *n == sample.name) {
            out[k] += sample.value;
        }
    }
    out
}

/// Host `i`'s replication lag histogram.
pub fn lag_buckets(cluster: &Cluster, i: usize) -> Vec<(f64, f64)> {
    let addr = format!("{}:9477", cluster.sites[i].host.addr);
    let page = memcastd::metrics::scrape(&addr, Duration::from_secs(3)).expect("scrape");
    memcastd::metrics::histogram_buckets(&page, "memcast_replication_lag_seconds")
}

/// µs per write of `ticks`.
pub fn us(ticks: u64, hz: f64, writes: u64) -> f64 {
    ticks as f64 / hz * 1e6 / writes.max(1) as f64
}

/// One round: store only, then store + publish.
pub struct Phases {
    pub store_writes: u64,
    pub store: Vec<Cpu>,
    pub publish_writes: u64,
    pub publish: Vec<Cpu>,
    /// Frames applied by each receiver (hosts 2..) during phase 2.
    pub applied: Vec<f64>,
    /// Lag p50 and p99 ≤ (ms, bucket bounds) over the receivers, phase 2.
    pub lag_ms: [f64; 2],
    /// Phase 2's frames per relay send (`--batch-us`), and per apply
    /// batch at the receivers (mean): what the batching achieved.
    pub batch: [f64; 2],
}

/// Frames per batch between two readings of (frames, batches) [`counters`].
fn per_batch(before: &[[f64; 2]], after: &[[f64; 2]]) -> f64 {
    let frames: f64 = before.iter().zip(after).map(|(b, a)| a[0] - b[0]).sum();
    let batches: f64 = before.iter().zip(after).map(|(b, a)| a[1] - b[1]).sum();
    frames / batches.max(1.0)
}

/// Both phases at `rate` for `seconds` each.
pub fn phases(
    cluster: &Cluster,
    procs: &[Watched],
    sender: &mut Sender,
    rate: u64,
    seconds: u64,
) -> Phases {
    let receivers = 1..cluster.sites.len();
    let (store_writes, store) = account(procs, || {
        let n = sender.run(rate, seconds, false);
        std::thread::sleep(Duration::from_millis(500));
        n
    });
    let applied_before: Vec<f64> = receivers
        .clone()
        .map(|i| counter(cluster, i, "memcast_applied_total"))
        .collect();
    let lag_before: Vec<_> = receivers.clone().map(|i| lag_buckets(cluster, i)).collect();
    let relay = |c: &Cluster| {
        [counters(
            c,
            0,
            ["memcast_relayed_total", "memcast_relay_batches_total"],
        )]
    };
    let apply = |c: &Cluster| -> Vec<[f64; 2]> {
        (1..c.sites.len())
            .map(|i| {
                counters(
                    c,
                    i,
                    ["memcast_applied_total", "memcast_apply_batches_total"],
                )
            })
            .collect()
    };
    let (relay_before, apply_before) = (relay(cluster), apply(cluster));
    let (publish_writes, publish) = account(procs, || {
        let n = sender.run(rate, seconds, true);
        // What is queued is applied (and accounted) before the end.
        std::thread::sleep(Duration::from_millis(500));
        n
    });
    let applied: Vec<f64> = receivers
        .clone()
        .zip(&applied_before)
        .map(|(i, before)| counter(cluster, i, "memcast_applied_total") - before)
        .collect();
    let lag_after: Vec<_> = receivers.map(|i| lag_buckets(cluster, i)).collect();
    let lag = memcastd::metrics::quantiles_between(&lag_before, &lag_after, &[0.5, 0.99]);
    let batch = [
        per_batch(&relay_before, &relay(cluster)),
        per_batch(&apply_before, &apply(cluster)),
    ];
    Phases {
        store_writes,
        store,
        publish_writes,
        publish,
        applied,
        lag_ms: [lag[0] * 1000.0, lag[1] * 1000.0],
        batch,
    }
}

/// µs per write of one process (or the cluster's total).
pub struct Row {
    pub name: String,
    pub store_us: f64,
    pub publish_us: f64,
    pub replication_us: f64,
}

/// Medians over rounds.
pub struct ReplicationCpu {
    pub rate: u64,
    pub seconds: u64,
    pub rounds: usize,
    pub hosts: usize,
    pub rows: Vec<Row>,
    /// Medians of the rounds' totals (not sums of the medians above).
    pub cluster: Row,
    /// (process, thread, µs/write in store + publish) of every memcastd.
    pub threads: Vec<(String, String, f64)>,
    /// Writes of phase 2 in each round, and the fewest any receiver applied.
    pub publish_writes: Vec<u64>,
    pub applied_min: Vec<f64>,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    /// Frames per relay send and per receiver apply batch (medians).
    pub frames_per_send: f64,
    pub frames_per_apply: f64,
}

impl ReplicationCpu {
    /// Every receiver applied every frame of phase 2, in every round.
    pub fn all_applied(&self) -> bool {
        self.publish_writes
            .iter()
            .zip(&self.applied_min)
            .all(|(w, a)| *a >= *w as f64)
    }

    pub fn met(&self) -> bool {
        self.cluster.replication_us <= GOAL_US
    }
}

/// `rounds` rounds of both phases, after a warm-up that fills every key
/// everywhere (and every CAS cache), so both phases see the steady state.
pub fn run(cluster: &Cluster, rounds: usize, rate: u64, seconds: u64) -> ReplicationCpu {
    let hz = clock_ticks();
    let procs = watched(cluster);
    let mut sender = Sender::new(cluster);
    sender.run(rate, 2, true);
    std::thread::sleep(Duration::from_secs(1));
    let mut per_round = Vec::new();
    for round in 0..rounds {
        let p = phases(cluster, &procs, &mut sender, rate, seconds);
        let total = |cpu: &[Cpu], writes| cpu.iter().map(|c| us(c.total, hz, writes)).sum::<f64>();
        let (s, x) = (
            total(&p.store, p.store_writes),
            total(&p.publish, p.publish_writes),
        );
        eprintln!(
            "bench: replication CPU round {}: store only {s:.1} µs/write, store + publish {x:.1}, replication {:.1} (goal ≤ {GOAL_US}); lag p99 ≤ {} ms; frames per relay send {:.1}, per apply batch {:.1}",
            round + 1,
            x - s,
            p.lag_ms[1],
            p.batch[0],
            p.batch[1]
        );
        per_round.push(p);
    }
    let med = |f: &dyn Fn(&Phases) -> f64| {
        let mut v: Vec<f64> = per_round.iter().map(f).collect();
        super::median(&mut v)
    };
    let rows = procs
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let store = |p: &Phases| us(p.store[i].total, hz, p.store_writes);
            let publish = |p: &Phases| us(p.publish[i].total, hz, p.publish_writes);
            Row {
                name: w.name.clone(),
                store_us: med(&store),
                publish_us: med(&publish),
                replication_us: med(&|p| publish(p) - store(p)),
            }
        })
        .collect();
    let store_total = |p: &Phases| {
        p.store
            .iter()
            .map(|c| us(c.total, hz, p.store_writes))
            .sum::<f64>()
    };
    let publish_total = |p: &Phases| {
        p.publish
            .iter()
            .map(|c| us(c.total, hz, p.publish_writes))
            .sum::<f64>()
    };
    let cluster_row = Row {
        name: "cluster".into(),
        store_us: med(&store_total),
        publish_us: med(&publish_total),
        replication_us: med(&|p| publish_total(p) - store_total(p)),
    };
    let mut threads = Vec::new();
    for (i, w) in procs.iter().enumerate().filter(|(_, w)| w.per_thread) {
        let names: Vec<String> = per_round
            .iter()
            .flat_map(|p| p.publish[i].threads.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for thread in names {
            let v = med(&|p| {
                us(
                    p.publish[i].threads.get(&thread).copied().unwrap_or(0),
                    hz,
                    p.publish_writes,
                )
            });
            if v > 0.0 {
                threads.push((w.name.clone(), thread, v));
            }
        }
    }
    ReplicationCpu {
        rate,
        seconds,
        rounds,
        hosts: cluster.sites.len(),
        rows,
        cluster: cluster_row,
        threads,
        publish_writes: per_round.iter().map(|p| p.publish_writes).collect(),
        applied_min: per_round
            .iter()
            .map(|p| p.applied.iter().copied().fold(f64::INFINITY, f64::min))
            .collect(),
        lag_p50_ms: med(&|p| p.lag_ms[0]),
        lag_p99_ms: med(&|p| p.lag_ms[1]),
        frames_per_send: med(&|p| p.batch[0]),
        frames_per_apply: med(&|p| p.batch[1]),
    }
}
