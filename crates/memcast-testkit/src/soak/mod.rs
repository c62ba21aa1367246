//! The fault soak: a five-host cluster where PHP on every host reads,
//! modifies and writes sessions as pages do (some sessions move from host to
//! host), readers read them everywhere, and every few seconds a seeded
//! random fault strikes one host. A checker keeps every acknowledged write
//! ([`ledger`]) and judges every read against it; after each fault it times
//! how long until every host holds every acknowledged write, and at the end
//! (faults and writers stopped, a bounded settle time) it demands that every
//! host holds each session's last acknowledged write whole, read straight
//! from memcached and through PHP.
//!
//! Layout: [`ledger`] (what was acknowledged, how reads compare), [`worker`]
//! (the PHP processes), [`faults`] (what strikes, seeded), [`replicas`]
//! (reading every memcached directly).

pub mod faults;
pub mod ledger;
pub mod replicas;
pub mod worker;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::cluster::{Artifacts, Cluster, Setup};
use faults::{FaultKind, Rng, KILL_DONE, KILL_REQUESTED};
use ledger::{quantile, Ack, Expect, Held, Ledger, ReadKind, ReadStats, Where};
use replicas::{not_held, Replica};
use worker::{PhpWorker, Reply};

pub struct SoakConfig {
    pub setup: Setup,
    pub hosts: u8,
    /// How long faults are injected (the writers start earlier: each
    /// session is written once before the first fault).
    pub seconds: u64,
    pub seed: u64,
    pub sessions_per_host: usize,
    /// After the faults and writers stop, how long every host has to hold
    /// every acknowledged write.
    pub settle: Duration,
    /// How long time-to-whole is watched after each fault before the next.
    pub whole_watch: Duration,
    /// Pause between two requests of one PHP worker.
    pub pace: Duration,
    /// Share of writes that take a session over from another host (one not
    /// written for at least [`HANDOFF_PAUSE`]).
    pub handoff: f64,
    pub memcastd_args: Vec<String>,
    pub php_ini: Vec<(String, String)>,
    /// Where to copy every log of the run (memcastd, PHP, the soak's events).
    pub keep_logs: Option<PathBuf>,
    /// The kinds of fault injected (`SOAK_FAULTS=memcached_restart,...`
    /// narrows a run to reproduce one; default all).
    pub faults: Vec<FaultKind>,
}

/// A session moves to another host only this long after its last write, as
/// a user behind a load balancer moves between requests.
pub const HANDOFF_PAUSE: Duration = Duration::from_secs(1);

impl SoakConfig {
    /// The soak of `make test` / `make soak`: `SOAK_SECONDS` (default 90)
    /// of faults, `SOAK_SEED` to replay a run (default: from the clock).
    pub fn from_env(setup: Setup) -> SoakConfig {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let seconds = env("SOAK_SECONDS").map_or(90, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("SOAK_SECONDS={v}: not a number"))
        });
        let seed = env("SOAK_SEED").map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            },
            |v| {
                let hex = v.trim_start_matches("0x");
                u64::from_str_radix(hex, 16)
                    .unwrap_or_else(|_| panic!("SOAK_SEED={v}: not a hex number"))
            },
        );
        SoakConfig {
            setup,
            hosts: 5,
            seconds,
            seed,
            sessions_per_host: 500,
            settle: Duration::from_secs(30),
            whole_watch: Duration::from_secs(6),
            pace: Duration::from_millis(20),
            handoff: 0.1,
            // Production intervals: healing must not come from test-only
            // quick scans.
            memcastd_args: [
                ("--heartbeat-ms", "1000"),
                ("--resync-interval", "30"),
                ("--anti-entropy-interval", "300"),
            ]
            .iter()
            .flat_map(|(k, v)| [k.to_string(), v.to_string()])
            .collect(),
            // A killed worker's lock frees after 3 s (php-fpm's would after
            // max_execution_time).
            php_ini: vec![("memcast.lock_expire".into(), "3".into())],
            keep_logs: None,
            faults: env("SOAK_FAULTS").map_or(FaultKind::ALL.to_vec(), |v| {
                v.split(',')
                    .map(|name| {
                        FaultKind::ALL
                            .into_iter()
                            .find(|k| k.name() == name.trim())
                            .unwrap_or_else(|| panic!("SOAK_FAULTS: no fault named {name}"))
                    })
                    .collect()
            }),
        }
    }
}

/// One injected fault and what followed.
pub struct FaultRecord {
    pub kind: FaultKind,
    pub host: usize,
    /// Since the first fault's run began.
    pub at: Duration,
    pub began: Instant,
    pub lasted: Duration,
    pub detail: String,
    /// From the fault's end until every host held every write acknowledged
    /// by then; `Err(pairs)`: (session, host) pairs still missing when the
    /// watch ended.
    pub whole_after: Result<Duration, usize>,
}

pub struct SoakReport {
    pub text: String,
    /// Empty when the run proved what it must.
    pub failures: Vec<String>,
    pub writes_acked: u64,
    pub sessions_lost: usize,
    pub writer_host_stale: u64,
}

/// What the threads share.
pub struct Shared {
    cluster: RwLock<Cluster>,
    ledger: Mutex<Ledger>,
    /// Every session has been written once: readers and faults begin.
    running: AtomicBool,
    stop: AtomicBool,
    kill_php: Vec<AtomicU8>,
    peak_rss_kb: Vec<AtomicU64>,
    /// Each host's last writer process's publisher counters, at the end:
    /// (published, dropped, sent again).
    publisher_counters: Mutex<Vec<Option<(u64, u64, u64)>>>,
    worker_restarts: AtomicU64,
    log_dir: PathBuf,
    pace: Duration,
    handoff: f64,
    seed: u64,
    /// Timestamped events (faults, lost workers) for the kept logs.
    events: Mutex<Vec<String>>,
    t0: Mutex<Instant>,
    /// Each host's memcached, to tell what every host held at a stale read.
    addrs: Vec<String>,
}

impl Shared {
    fn event(&self, what: String) {
        let t0 = *self.t0.lock().unwrap_or_else(|e| e.into_inner());
        let line = format!("{:+9.3} s  {what}", signed_secs(Instant::now(), t0));
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// What to add to the event of the stale read just judged: on the
    /// writing host, its explanation ([`Shared::explain_stale`]); elsewhere
    /// (replication is asynchronous) nothing. Takes the ledger, as the
    /// explanation reads every memcached.
    fn why_stale(&self, ledger: MutexGuard<'_, Ledger>, s: usize, id: &str) -> String {
        let writer_host = ledger
            .stale_reads
            .last()
            .is_some_and(|r| r.place == Where::WriterHost);
        drop(ledger);
        if writer_host {
            format!("; {}", self.explain_stale(s, id))
        } else {
            String::new()
        }
    }

    /// A stale read on the writing host, explained: the session's last
    /// acknowledged writes and what each host's memcached holds right now.
    fn explain_stale(&self, s: usize, id: &str) -> String {
        let t0 = *self.t0.lock().unwrap_or_else(|e| e.into_inner());
        let acks: Vec<String> = {
            let ledger = self.ledger();
            let acks = &ledger.sessions[s].acks;
            acks[acks.len().saturating_sub(3)..]
                .iter()
                .map(|a| {
                    format!(
                        "write {} on host {} at {:+.3} s",
                        a.gid,
                        a.host + 1,
                        signed_secs(a.at, t0)
                    )
                })
                .collect()
        };
        let key = replicas::key_of(id);
        let held: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .map(|(h, addr)| {
                let mut replica = Replica::new(addr.clone());
                let value = replica.get_many(std::slice::from_ref(&key));
                let held = match value {
                    Ok(v) => format!("{:?}", Held::of_at(&key, v.get(&key).map(|v| v.as_slice()))),
                    Err(e) => format!("unreachable ({e})"),
                };
                format!("host {} {held}", h + 1)
            })
            .collect();
        format!(
            "last acks: {}; now held: {}",
            acks.join(", "),
            held.join(", ")
        )
    }

    fn cluster(&self) -> RwLockWriteGuard<'_, Cluster> {
        self.cluster.write().unwrap_or_else(|e| e.into_inner())
    }

    fn cluster_read(&self) -> RwLockReadGuard<'_, Cluster> {
        self.cluster.read().unwrap_or_else(|e| e.into_inner())
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Keeps host `i`'s memcastd peak resident memory (VmHWM) before it goes.
    fn note_memcastd_rss(&self, i: usize) {
        let pid = self.cluster_read().memcastd_pid(i);
        if let Some(kb) = pid.and_then(peak_rss_kb) {
            self.peak_rss_kb[i].fetch_max(kb, Ordering::SeqCst);
        }
    }

    fn spawn_worker(&self, i: usize, role: &str) -> PhpWorker {
        let n = self.worker_restarts.fetch_add(1, Ordering::SeqCst);
        let log = self.log_dir.join(format!("php{}-{role}.{n}.log", i + 1));
        let mut last = None;
        for _ in 0..5 {
            match PhpWorker::spawn(&self.cluster_read(), i, &log) {
                Ok(w) => return w,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("PHP worker on host {} would not start: {last:?}", i + 1);
    }
}

/// VmHWM of a process, in kB.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Sets `stop` when dropped, so the workers end even when the fault thread
/// panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs the soak; panics only when the cluster cannot be set up.
pub fn run(config: &SoakConfig, artifacts: Artifacts) -> SoakReport {
    crate::require_root("the fault soak");
    let mut cluster = Cluster::start_setup(
        "sk",
        config.hosts,
        config.setup,
        artifacts,
        config.memcastd_args.clone(),
    );
    cluster.php_ini = config.php_ini.clone();
    // SOAK_SEAL=1: PHP seals sessions (the default with a key file); the
    // checker hashes ids and opens values with the cluster key as PHP does.
    let sealed = std::env::var("SOAK_SEAL").is_ok_and(|v| v == "1");
    cluster.seal = sealed;
    ledger::seal_with(sealed.then(|| {
        let key = memcast_core::SharedKey::from_file(&cluster.key_file).expect("the cluster key");
        memcast_core::session_seal::SessionSeal::new(&memcast_core::Keyring::new(key, None, false))
    }));
    let hosts = config.hosts as usize;
    let mut ids = Vec::new();
    for h in 0..hosts {
        for k in 0..config.sessions_per_host {
            let n = h * config.sessions_per_host + k;
            // 1-5 KB of filler, spread over memcached's slab classes.
            let len = 1024 + (n * 2_654_435_761) % 4096;
            ids.push((
                format!(
                    "soak{}x{k:06}{:012x}",
                    h + 1,
                    config.seed & 0xffff_ffff_ffff
                ),
                len,
                h,
            ));
        }
    }
    let addrs: Vec<String> = (0..hosts).map(|i| cluster.memcached_addr(i)).collect();
    let shared = Shared {
        log_dir: cluster.dir.path.clone(),
        cluster: RwLock::new(cluster),
        ledger: Mutex::new(Ledger::new(ids)),
        running: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        kill_php: (0..hosts).map(|_| AtomicU8::new(0)).collect(),
        peak_rss_kb: (0..hosts).map(|_| AtomicU64::new(0)).collect(),
        publisher_counters: Mutex::new(vec![None; hosts]),
        worker_restarts: AtomicU64::new(0),
        pace: config.pace,
        handoff: config.handoff,
        seed: config.seed,
        events: Mutex::new(Vec::new()),
        t0: Mutex::new(Instant::now()),
        addrs: addrs.clone(),
    };
    let mut replicas: Vec<Replica> = addrs.into_iter().map(Replica::new).collect();
    let mut faults = Vec::new();
    let mut prefill = Duration::ZERO;
    let mut ran = Duration::ZERO;
    let mut t0 = Instant::now();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&shared.stop);
        for i in 0..hosts {
            let shared = &shared;
            s.spawn(move || writer(shared, i));
            s.spawn(move || reader(shared, i));
        }
        let began = Instant::now();
        let all_written = crate::eventually(Duration::from_secs(300), || {
            shared
                .ledger()
                .sessions
                .iter()
                .all(|s| !s.acks.is_empty())
                .then_some(())
        });
        assert!(
            all_written.is_some(),
            "the writers did not write every session once in 300 s"
        );
        prefill = began.elapsed();
        shared.running.store(true, Ordering::SeqCst);
        let started = Instant::now();
        t0 = started;
        *shared.t0.lock().unwrap_or_else(|e| e.into_inner()) = started;
        let mut rng = Rng::new(config.seed);
        // Every kind once first (in a seeded order), then at random.
        let kinds = config.faults.clone();
        let mut first_round = kinds.clone();
        rng.shuffle(&mut first_round);
        while started.elapsed() < Duration::from_secs(config.seconds) {
            std::thread::sleep(Duration::from_millis(rng.between(1000, 2000)));
            let kind = first_round
                .pop()
                .unwrap_or_else(|| kinds[rng.below(kinds.len())]);
            let host = rng.below(hosts);
            let at = started.elapsed();
            let fault_began = Instant::now();
            shared.event(format!("fault {} on host {} begins", kind.name(), host + 1));
            let detail = faults::inject(&shared, kind, host, &mut rng);
            let lasted = fault_began.elapsed();
            shared.event(format!(
                "fault {} on host {} over: {detail}",
                kind.name(),
                host + 1
            ));
            let snapshot = shared.ledger().snapshot();
            let whole_after = time_to_whole(&shared, &mut replicas, &snapshot, config.whole_watch);
            println!(
                "  {:>6.1} s  {:<17} host {}  {:<55} {}",
                at.as_secs_f64(),
                kind.name(),
                host + 1,
                detail,
                whole_text(&whole_after)
            );
            faults.push(FaultRecord {
                kind,
                host,
                at,
                began: fault_began,
                lasted,
                detail,
                whole_after,
            });
        }
        ran = started.elapsed();
    });
    finish(config, shared, replicas, faults, prefill, ran, t0)
}

fn whole_text(w: &Result<Duration, usize>) -> String {
    match w {
        Ok(d) => format!("whole after {:.2} s", d.as_secs_f64()),
        Err(n) => format!("NOT whole when watched ({n} session x host missing)"),
    }
}

/// How long until every host holds every write of `snapshot` (or a newer
/// one); polled every 100 ms, given up after `within`.
fn time_to_whole(
    shared: &Shared,
    replicas: &mut [Replica],
    snapshot: &[(usize, Ack)],
    within: Duration,
) -> Result<Duration, usize> {
    let began = Instant::now();
    let ledger = shared.ledger();
    let ids: Vec<String> = snapshot
        .iter()
        .map(|(s, _)| ledger.sessions[*s].id.clone())
        .collect();
    drop(ledger);
    let wanted: Vec<(&str, Ack)> = ids
        .iter()
        .zip(snapshot)
        .map(|(id, (_, ack))| (id.as_str(), *ack))
        .collect();
    let mut pending: Vec<Vec<(&str, Ack)>> = replicas.iter().map(|_| wanted.clone()).collect();
    loop {
        for (replica, wanted) in replicas.iter_mut().zip(pending.iter_mut()) {
            if !wanted.is_empty() {
                *wanted = not_held(replica, wanted, |ack, held| held.has(ack))
                    .into_iter()
                    .map(|(id, ack, _)| (id, ack))
                    .collect();
            }
        }
        let missing: usize = pending.iter().map(Vec::len).sum();
        if missing == 0 {
            return Ok(began.elapsed());
        }
        if began.elapsed() >= within {
            // What is missing where, for the timeline (a few of them).
            let t0 = *shared.t0.lock().unwrap_or_else(|e| e.into_inner());
            let mut told = 0;
            for (i, (replica, wanted)) in replicas.iter_mut().zip(&pending).enumerate() {
                for (id, ack, held) in not_held(replica, wanted, |ack, held| held.has(ack)) {
                    if told < 5 {
                        told += 1;
                        shared.event(format!(
                            "not whole {:.1} s after the fault: host {} lacks {id} write {} (acknowledged on host {} at {:+.3} s), holds {held:?}",
                            within.as_secs_f64(),
                            i + 1,
                            ack.gid,
                            ack.host + 1,
                            signed_secs(ack.at, t0)
                        ));
                    }
                }
            }
            return Err(missing);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The session a writer on `host` writes next: during the prefill the next
/// of its own never written; then one of its own, or (`handoff`) one another
/// host wrote at least [`HANDOFF_PAUSE`] ago, which becomes its own.
fn pick_for_write(
    shared: &Shared,
    host: usize,
    rng: &mut Rng,
) -> Option<(usize, u64, String, usize)> {
    let mut ledger = shared.ledger();
    let now = Instant::now();
    let chosen = if !shared.running.load(Ordering::SeqCst) {
        ledger
            .sessions
            .iter()
            .position(|s| s.owner == host && !s.busy && s.acks.is_empty())
    } else {
        let handed = rng.chance(shared.handoff).then(|| {
            let idle: Vec<usize> = (0..ledger.sessions.len())
                .filter(|&i| {
                    let s = &ledger.sessions[i];
                    s.owner != host
                        && !s.busy
                        && s.last_write_end
                            .is_some_and(|t| now.duration_since(t) >= HANDOFF_PAUSE)
                })
                .collect();
            (!idle.is_empty()).then(|| idle[rng.below(idle.len())])
        });
        handed.flatten().or_else(|| {
            let own: Vec<usize> = (0..ledger.sessions.len())
                .filter(|&i| ledger.sessions[i].owner == host && !ledger.sessions[i].busy)
                .collect();
            (!own.is_empty()).then(|| own[rng.below(own.len())])
        })
    }?;
    let gid = ledger.next_gid;
    ledger.next_gid += 1;
    let s = &mut ledger.sessions[chosen];
    s.owner = host;
    s.busy = true;
    Some((chosen, gid, s.id.clone(), s.payload_len))
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Host `i`'s writer: read-modify-write requests, one at a time; killed
/// mid-request when the fault thread asks.
fn writer(shared: &Shared, i: usize) {
    let mut rng = Rng::new(shared.seed ^ (0x5752_4954_4552 + i as u64));
    let mut php = shared.spawn_worker(i, "writer");
    while !shared.stopping() {
        let Some((s, gid, id, len)) = pick_for_write(shared, i, &mut rng) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let kill = shared.running.load(Ordering::SeqCst)
            && shared.kill_php[i].load(Ordering::SeqCst) == KILL_REQUESTED;
        let started = Instant::now();
        let answer = php.request(
            &format!("W {id} {gid} {len} {}", u8::from(kill)),
            REQUEST_TIMEOUT,
        );
        let took = started.elapsed().as_micros() as u64;
        let mut ledger = shared.ledger();
        ledger.write_us.push(took);
        ledger.sessions[s].busy = false;
        ledger.sessions[s].last_write_end = Some(Instant::now());
        match answer {
            Ok((reply, printed)) => {
                for w in &printed {
                    ledger.warning(w);
                    shared.event(format!("host {} PHP printed: {w}", i + 1));
                }
                match reply {
                    Reply::Holding => {
                        drop(ledger);
                        php.kill();
                        shared.ledger().cut_short += 1;
                        shared.kill_php[i].store(KILL_DONE, Ordering::SeqCst);
                        php = shared.spawn_worker(i, "writer");
                    }
                    Reply::Write { started: false, .. } => ledger.start_failed += 1,
                    Reply::Write {
                        seen,
                        acked,
                        len,
                        crc,
                        php_us,
                        ..
                    } => {
                        ledger.php_write_us.push(php_us);
                        let before = ledger.stale_reads.len();
                        ledger.judge_read(s, i, ReadKind::ReadModifyWrite, started, seen);
                        if ledger.stale_reads.len() > before {
                            let why = shared.why_stale(ledger, s, &id);
                            shared.event(format!(
                                "host {} read-modify-write of {id} read write {} (stale){why}",
                                i + 1,
                                seen.gid
                            ));
                            ledger = shared.ledger();
                        }
                        if acked {
                            let from_miss =
                                seen.gid == 0 && ledger.sessions[s].acked_by(started).is_some();
                            let at = Instant::now();
                            ledger.ack(
                                s,
                                Ack {
                                    gid,
                                    host: i,
                                    at,
                                    len,
                                    crc,
                                    from_miss,
                                },
                            );
                        } else {
                            ledger.close_failed += 1;
                        }
                    }
                    Reply::Read { .. } | Reply::Publisher { .. } => {
                        ledger.warning("soak: a read answer to a write")
                    }
                }
            }
            Err(gone) => {
                ledger.cut_short += 1;
                ledger.warning(&format!("soak: writer lost: {}", gone.0));
                shared.event(format!("host {} writer lost: {}", i + 1, gone.0));
                drop(ledger);
                php.kill();
                php = shared.spawn_worker(i, "writer");
            }
        }
        if shared.running.load(Ordering::SeqCst) {
            std::thread::sleep(shared.pace);
        }
    }
    if let Ok((
        Reply::Publisher {
            published,
            drops,
            sent_again,
        },
        _,
    )) = php.request("I", REQUEST_TIMEOUT)
    {
        shared
            .publisher_counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())[i] = Some((published, drops, sent_again));
    }
}

/// Host `i`'s reader: read-only requests, half of them of sessions this host
/// wrote last, half of any.
fn reader(shared: &Shared, i: usize) {
    let mut rng = Rng::new(shared.seed ^ (0x5245_4144_4552 + i as u64));
    while !shared.running.load(Ordering::SeqCst) {
        if shared.stopping() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut php = shared.spawn_worker(i, "reader");
    while !shared.stopping() {
        let pick = {
            let ledger = shared.ledger();
            let mine = rng.chance(0.5);
            let candidates: Vec<usize> = (0..ledger.sessions.len())
                .filter(|&k| {
                    ledger.sessions[k]
                        .last_ack()
                        .is_some_and(|a| !mine || a.host == i)
                })
                .collect();
            (!candidates.is_empty()).then(|| {
                let k = candidates[rng.below(candidates.len())];
                (k, ledger.sessions[k].id.clone())
            })
        };
        let Some((s, id)) = pick else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let started = Instant::now();
        let answer = php.request(&format!("R {id}"), REQUEST_TIMEOUT);
        let took = started.elapsed().as_micros() as u64;
        let mut ledger = shared.ledger();
        ledger.read_us.push(took);
        match answer {
            Ok((Reply::Read { ok, seen, php_us }, printed)) => {
                ledger.php_read_us.push(php_us);
                for w in &printed {
                    ledger.warning(w);
                    shared.event(format!("host {} PHP printed: {w}", i + 1));
                }
                if ok {
                    let before = ledger.stale_reads.len();
                    ledger.judge_read(s, i, ReadKind::ReadOnly, started, seen);
                    if ledger.stale_reads.len() > before {
                        let why = shared.why_stale(ledger, s, &id);
                        shared.event(format!(
                            "host {} read of {id} returned write {} (stale){why}",
                            i + 1,
                            seen.gid
                        ));
                        ledger = shared.ledger();
                    }
                } else {
                    ledger.read_failed += 1;
                }
            }
            Ok(_) => ledger.warning("soak: a write answer to a read"),
            Err(gone) => {
                ledger.warning(&format!("soak: reader lost: {}", gone.0));
                shared.event(format!("host {} reader lost: {}", i + 1, gone.0));
                drop(ledger);
                php.kill();
                php = shared.spawn_worker(i, "reader");
            }
        }
        std::thread::sleep(shared.pace);
    }
}

/// Every session read through PHP on host `i`: those it did not return as
/// expected at the end.
fn php_read_all(shared: &Shared, i: usize, wanted: &[(String, Expect)]) -> Vec<String> {
    let mut php = shared.spawn_worker(i, "check");
    let mut bad = Vec::new();
    for (id, expect) in wanted {
        match php.request(&format!("R {id}"), REQUEST_TIMEOUT) {
            Ok((Reply::Read { ok: true, seen, .. }, _))
                if expect.accepts(&Held::Write {
                    gid: seen.gid,
                    crc: seen.crc,
                }) => {}
            Ok((reply, _)) => bad.push(format!("{id}: {reply:?}, want write {}", expect.last.gid)),
            Err(gone) => {
                bad.push(format!("{id}: {}", gone.0));
                php = shared.spawn_worker(i, "check");
            }
        }
    }
    bad
}

fn finish(
    config: &SoakConfig,
    shared: Shared,
    mut replicas: Vec<Replica>,
    faults: Vec<FaultRecord>,
    prefill: Duration,
    ran: Duration,
    t0: Instant,
) -> SoakReport {
    let hosts = config.hosts as usize;
    // Settle: faults and writers have stopped.
    let ledger = shared.ledger();
    let final_acks: Vec<(String, Expect)> = ledger
        .sessions
        .iter()
        .filter_map(|s| s.expect_at_end().map(|e| (s.id.clone(), e)))
        .collect();
    let forked = ledger.sessions.iter().filter(|s| s.forked()).count();
    drop(ledger);
    let wanted: Vec<(&str, &Expect)> = final_acks.iter().map(|(id, e)| (id.as_str(), e)).collect();
    let settle_began = Instant::now();
    let mut missing: Vec<Vec<(&str, &Expect, Held)>> = vec![Vec::new(); hosts];
    let settled = crate::eventually(config.settle, || {
        for (replica, missing) in replicas.iter_mut().zip(missing.iter_mut()) {
            *missing = not_held(replica, &wanted, |e, held| e.accepts(held));
        }
        missing
            .iter()
            .all(Vec::is_empty)
            .then(|| settle_began.elapsed())
    });
    // Replicas that hold different writes (a newer unacknowledged one here
    // only, say) although none lacks the acknowledged one.
    let mut differing = 0;
    let keys: Vec<String> = wanted.iter().map(|(id, _)| replicas::key_of(id)).collect();
    let held: Vec<_> = replicas
        .iter_mut()
        .map(|r| r.get_many(&keys).unwrap_or_default())
        .collect();
    for key in &keys {
        let first = held[0].get(key).map(|v| Held::of_at(key, Some(v)));
        if held
            .iter()
            .any(|h| h.get(key).map(|v| Held::of_at(key, Some(v))) != first)
        {
            differing += 1;
        }
    }
    let php_bad: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..hosts)
            .map(|i| {
                let (shared, acks) = (&shared, &final_acks);
                s.spawn(move || php_read_all(shared, i, acks))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["the PHP check panicked".into()])
            })
            .collect()
    });
    for i in 0..hosts {
        shared.note_memcastd_rss(i);
    }
    let (counters, _logs) = shared.cluster().stop_and_count_by_host();
    let logs = shared.cluster_read().logs();
    if let Some(dir) = &config.keep_logs {
        keep_logs(&shared, dir);
    }

    let ledger = shared.ledger();
    let mut t = String::new();
    let kb = |i: usize| shared.peak_rss_kb[i].load(Ordering::SeqCst);
    let _ = writeln!(
        t,
        "soak {}{} (seed {:x}; SOAK_SEED={:x} replays the faults): {} hosts, {} sessions of 1-5 KB, \
         {:.0} s of faults after a {:.1} s prefill; memcastd {}",
        config.setup.name(),
        if ledger::sealing().is_some() { ", sessions sealed" } else { "" },
        config.seed,
        config.seed,
        hosts,
        ledger.sessions.len(),
        ran.as_secs_f64(),
        prefill.as_secs_f64(),
        config.memcastd_args.join(" ")
    );
    let by_host: Vec<String> = (0..hosts)
        .map(|i| {
            format!(
                "host{} {}",
                i + 1,
                ledger.acked_by_host.get(&i).unwrap_or(&0)
            )
        })
        .collect();
    let _ = writeln!(
        t,
        "writes acknowledged: {} ({}); not acknowledged: session_start false {}, session_write_close false {}, cut short (worker killed) {}",
        ledger.writes_acked,
        by_host.join(", "),
        ledger.start_failed,
        ledger.close_failed,
        ledger.cut_short
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &faults {
        *kinds.entry(f.kind.name()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        t,
        "faults injected: {} ({})",
        faults.len(),
        kinds.join(", ")
    );
    let _ = writeln!(
        t,
        "  (stale: reads older than the last acknowledged write, from this fault's start to the next's; \
         on the writing host / elsewhere, empty in brackets)"
    );
    for (k, f) in faults.iter().enumerate() {
        let until = faults.get(k + 1).map(|n| n.began);
        let window: Vec<_> = ledger
            .stale_reads
            .iter()
            .filter(|r| r.at >= f.began && until.is_none_or(|u| r.at < u))
            .collect();
        let count = |place: Where| {
            let of: Vec<_> = window.iter().filter(|r| r.place == place).collect();
            let empty = of.iter().filter(|r| r.empty).count();
            format!("{} ({empty})", of.len())
        };
        let _ = writeln!(
            t,
            "  {:>6.1} s  {:<17} host {}  lasted {:>5.1} s  {:<55} {:<34} stale {} / {}",
            f.at.as_secs_f64(),
            f.kind.name(),
            f.host + 1,
            f.lasted.as_secs_f64(),
            f.detail,
            whole_text(&f.whole_after),
            count(Where::WriterHost),
            count(Where::OtherHost)
        );
    }
    let whole_ms: Vec<u64> = faults
        .iter()
        .filter_map(|f| f.whole_after.ok().map(ledger::ms))
        .collect();
    let never = faults.iter().filter(|f| f.whole_after.is_err()).count();
    let _ = writeln!(
        t,
        "time to whole after a fault: p50 {} ms, max {} ms over {} faults; not whole within {} s after {} faults",
        quantile(&whole_ms, 0.5),
        quantile(&whole_ms, 1.0),
        whole_ms.len(),
        config.whole_watch.as_secs(),
        never
    );
    let sum = |place: Where| {
        let mut all = ReadStats::default();
        for kind in [ReadKind::ReadOnly, ReadKind::ReadModifyWrite] {
            if let Some(r) = ledger.reads.get(&(place, kind)) {
                all.reads += r.reads;
                all.stale += r.stale;
                all.empty += r.empty;
                all.staleness_ms.extend(&r.staleness_ms);
            }
        }
        all
    };
    let line = |r: &ReadStats| {
        format!(
            "{} stale of {} ({} empty); staleness p50 {} ms, p99 {} ms, max {} ms",
            r.stale,
            r.reads,
            r.empty,
            quantile(&r.staleness_ms, 0.5),
            quantile(&r.staleness_ms, 0.99),
            quantile(&r.staleness_ms, 1.0)
        )
    };
    let writer_host = sum(Where::WriterHost);
    for (place, title) in [
        (
            Where::WriterHost,
            "reads on the host that wrote the session last (must be 0 stale)",
        ),
        (Where::OtherHost, "reads on other hosts"),
    ] {
        let _ = writeln!(t, "{title}: {}", line(&sum(place)));
        for (kind, name) in [
            (ReadKind::ReadOnly, "read-only pages"),
            (
                ReadKind::ReadModifyWrite,
                "read-modify-write (stale = lost update)",
            ),
        ] {
            if let Some(r) = ledger.reads.get(&(place, kind)) {
                let _ = writeln!(t, "    {name}: {}", line(r));
            }
        }
    }
    let q3 = |v: &[u64], div: f64| {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            quantile(v, 0.5) as f64 / div,
            quantile(v, 0.99) as f64 / div,
            quantile(v, 1.0) as f64 / div
        )
    };
    let _ = writeln!(
        t,
        "request time seen by the harness: read-modify-write {}; read-only {}",
        q3(&ledger.write_us, 1000.0),
        q3(&ledger.read_us, 1000.0)
    );
    let _ = writeln!(
        t,
        "time in session_start..session_write_close inside PHP: read-modify-write {}; read-only {}",
        q3(&ledger.php_write_us, 1000.0),
        q3(&ledger.php_read_us, 1000.0)
    );
    let _ = writeln!(
        t,
        "reads that failed (session_start false): {}; corrupt reads (right write id, other bytes): {}",
        ledger.read_failed, ledger.corrupt_reads
    );
    let lost_raw: std::collections::BTreeSet<&str> = missing
        .iter()
        .flat_map(|m| m.iter().map(|(id, _, _)| *id))
        .collect();
    let php_lost: std::collections::BTreeSet<&str> = php_bad
        .iter()
        .flat_map(|b| b.iter().filter_map(|l| l.split(':').next()))
        .collect();
    let lost: std::collections::BTreeSet<&str> = lost_raw.union(&php_lost).copied().collect();
    match settled {
        Some(d) => {
            let _ = writeln!(
                t,
                "settle: every host held every acknowledged write {:.2} s after the faults and writers stopped",
                d.as_secs_f64()
            );
        }
        None => {
            let _ = writeln!(
                t,
                "settle: NOT whole {} s after the faults and writers stopped",
                config.settle.as_secs()
            );
        }
    }
    let _ = writeln!(
        t,
        "sessions lost: {} of {} (read from memcached: {} sessions; through PHP: {} sessions)",
        lost.len(),
        final_acks.len(),
        lost_raw.len(),
        php_lost.len()
    );
    for (i, m) in missing.iter().enumerate() {
        if m.is_empty() {
            continue;
        }
        let mut how: BTreeMap<String, usize> = BTreeMap::new();
        for (_, expect, held) in m {
            let what = match held {
                Held::Absent => "absent".to_string(),
                Held::Tombstone => "tombstone".to_string(),
                Held::Unreadable => "not a memcast session".to_string(),
                Held::Write { gid, .. } if *gid == expect.last.gid => "other bytes".to_string(),
                Held::Write { .. } => "an older write".to_string(),
            };
            *how.entry(what).or_default() += 1;
        }
        let how: Vec<String> = how.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let _ = writeln!(
            t,
            "    host {} memcached lacks {}: {}",
            i + 1,
            m.len(),
            how.join(", ")
        );
    }
    for (i, bad) in php_bad.iter().enumerate() {
        if let Some(first) = bad.first() {
            let _ = writeln!(
                t,
                "    PHP on host {}: {} not read whole, e.g. {first}",
                i + 1,
                bad.len()
            );
        }
    }
    // The story of a few lost sessions: their last writes, what each host holds.
    for id in lost.iter().take(5) {
        let Some(session) = ledger.sessions.iter().find(|s| s.id == *id) else {
            continue;
        };
        let writes: Vec<String> = session.acks[session.acks.len().saturating_sub(4)..]
            .iter()
            .map(|a| {
                format!(
                    "{} on host {} at {:+.1} s",
                    a.gid,
                    a.host + 1,
                    signed_secs(a.at, t0)
                )
            })
            .collect();
        let key = replicas::key_of(id);
        let holds: Vec<String> = held
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let what = match Held::of_at(&key, h.get(&key).map(|v| v.as_slice())) {
                    Held::Write { gid, .. } => gid.to_string(),
                    other => format!("{other:?}").to_lowercase(),
                };
                format!("host{} {what}", i + 1)
            })
            .collect();
        let _ = writeln!(
            t,
            "    lost {id}: last acknowledged writes {}; hosts hold {}",
            writes.join(", "),
            holds.join(", ")
        );
    }
    let _ = writeln!(
        t,
        "sessions whose replicas hold different writes at the end: {differing}; \
         sessions forked by a write that began from a miss of an acknowledged session: {forked} \
         (either side of the fork is accepted at the end)"
    );
    let rss: Vec<String> = (0..hosts)
        .map(|i| format!("host{} {:.1} MB", i + 1, kb(i) as f64 / 1024.0))
        .collect();
    let _ = writeln!(t, "memcastd peak RSS (VmHWM): {}", rss.join(", "));
    // What each host's PHP handed its relay against what the relay passed
    // on (relay setups): acknowledged writes since the host's memcastd last
    // started, the last writer process's publisher counters, and relayed.
    let publishers = shared
        .publisher_counters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if counters.len() == hosts && counters.iter().any(|c| c.get("relayed").is_some()) {
        let rows: Vec<String> = (0..hosts)
            .map(|i| {
                let since = faults
                    .iter()
                    .filter(|f| f.host == i && f.kind == FaultKind::MemcastdKill)
                    .map(|f| f.began + f.lasted)
                    .max();
                let acked = ledger
                    .sessions
                    .iter()
                    .flat_map(|s| &s.acks)
                    .filter(|a| a.host == i && since.is_none_or(|t| a.at >= t))
                    .count();
                let php = publishers[i].map_or("?".into(), |(p, d, r)| {
                    format!("published {p}, dropped {d}, sent again {r}")
                });
                format!(
                    "host{} acked {acked}{} / relayed {} (last writer: {php})",
                    i + 1,
                    if since.is_some() {
                        " since its memcastd restarted"
                    } else {
                        ""
                    },
                    counters[i].get("relayed").copied().unwrap_or(0)
                )
            })
            .collect();
        let _ = writeln!(t, "relay hand-over: {}", rows.join("; "));
    }
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    for host in &counters {
        for (k, v) in host {
            *sums.entry(k.as_str()).or_default() += v;
        }
    }
    let sums: Vec<String> = sums
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        t,
        "memcastd counters at exit, summed over the last instance of each host: {}",
        sums.join(" ")
    );
    let mut warnings: Vec<(&String, &u64)> = ledger.php_warnings.iter().collect();
    warnings.sort_by_key(|w| std::cmp::Reverse(*w.1));
    let _ = writeln!(t, "PHP warnings by kind: {}", warnings.len());
    for (w, n) in warnings.iter().take(10) {
        let _ = writeln!(t, "    {n:>6} x {}", truncate(w, 200));
    }
    let mut daemon_warnings: BTreeMap<String, u64> = BTreeMap::new();
    for l in logs
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        let text = l
            .split_once("WARN")
            .or_else(|| l.split_once("ERROR"))
            .map_or(l, |x| x.1);
        *daemon_warnings
            .entry(ledger::blank_numbers(text.trim()))
            .or_default() += 1;
    }
    let mut daemon_warnings: Vec<_> = daemon_warnings.into_iter().collect();
    daemon_warnings.sort_by_key(|w| std::cmp::Reverse(w.1));
    let _ = writeln!(t, "memcastd warnings by kind: {}", daemon_warnings.len());
    for (w, n) in daemon_warnings.iter().take(10) {
        let _ = writeln!(t, "    {n:>6} x {}", truncate(w, 200));
    }

    let mut failures = Vec::new();
    if !lost.is_empty() {
        failures.push(format!("{} sessions lost", lost.len()));
    }
    if writer_host.stale > 0 {
        failures.push(format!(
            "{} stale reads on the host that wrote the session last",
            writer_host.stale
        ));
    }
    if ledger.corrupt_reads > 0 {
        failures.push(format!("{} corrupt reads", ledger.corrupt_reads));
    }
    for i in 0..hosts {
        if ledger.acked_by_host.get(&i).copied().unwrap_or(0) == 0 {
            failures.push(format!("host {} acknowledged no write", i + 1));
        }
    }
    if faults.is_empty() {
        failures.push("no fault was injected".into());
    }
    let _ = writeln!(
        t,
        "result: {}",
        if failures.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL: {}", failures.join("; "))
        }
    );
    SoakReport {
        text: t,
        failures,
        writes_acked: ledger.writes_acked,
        sessions_lost: lost.len(),
        writer_host_stale: writer_host.stale,
    }
}

/// Copies every log of the run (memcastd's, PHP's stderr, the soak's own
/// events) to `dir`, replacing what an earlier run left there.
fn keep_logs(shared: &Shared, dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let events = shared.events.lock().unwrap_or_else(|e| e.into_inner());
    let _ = std::fs::write(dir.join("soak-events.log"), events.join("\n") + "\n");
    let from = shared.cluster_read().dir.path.clone();
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            if let Some(name) = path.file_name() {
                let _ = std::fs::copy(&path, dir.join(name));
            }
        }
    }
}

/// Seconds from `t0` to `t`, negative before it.
fn signed_secs(t: Instant, t0: Instant) -> f64 {
    match t.checked_duration_since(t0) {
        Some(d) => d.as_secs_f64(),
        None => -t0.duration_since(t).as_secs_f64(),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
