//! The repair worker: fetches ranges this host missed from the origin's
//! replay ring, and falls back to a full resync from a peer when a range is
//! gone, the origin serves no repairs, at startup, or when this host fell
//! behind; asks a silent origin directly for what it sent since (catch-up);
//! refills a memcached that is not known complete (warm-up). Requests are
//! rate-limited and merged, so a lossy network cannot turn into a storm of
//! them. What it learns goes back to the receive loop as [`Report`]s.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_core::peer::{self, Digests, Record, Request};
use memcast_core::replica::{apply_frame, Outcome};
use memcast_core::{unix_millis, Frame, Memcached, ServerAddr, StoreError, Timeouts};
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::completeness::{MemcachedStats, WarmMark};
use crate::counters::Counters;
use crate::heard::{HeardFrames, Position};
use crate::key_store::KeyStore;
use crate::peer_server::local_digests;
use crate::sequences::Missing;

/// A warm-up that found no peer to serve it tries again this soon: readers
/// are sent elsewhere until it completes.
const WARM_UP_RETRY: Duration = Duration::from_secs(2);
/// A silent origin may be cut off: its connection attempt gives up this
/// soon, so the next try (every 500 ms) finds the link as soon as it returns.
const CATCH_UP_CONNECT: Duration = Duration::from_millis(500);
/// Other peer connections.
const CONNECT: Duration = Duration::from_secs(2);
/// Progress of a long snapshot is logged every this many entries.
const PROGRESS_EVERY: u64 = 10_000;

/// Anti-entropy leaves out writes younger than this: they may still be on
/// their way, and are not a difference yet.
const ANTI_ENTROPY_SETTLE_MS: u64 = 5_000;
/// Frames lost from an origin without a ring are looked for by comparing
/// digests this long after the loss was noticed (past the settle time, so
/// the lost writes are compared)...
const LOST_SETTLE: Duration = Duration::from_millis(ANTI_ENTROPY_SETTLE_MS + 500);
/// ...and such comparisons are this far apart at least.
const COMPARE_SPACING: Duration = Duration::from_secs(10);

/// After a warm-up, one anti-entropy round this soon (whatever the periodic
/// interval, even none). The snapshot is only as complete as the peer that
/// served it, and a peer may lag seconds behind an origin whose multicast
/// stalled (it catches up from the origin's ring every few seconds); frames
/// sent before this host heard that origin are not gaps here, so what the
/// peer lacked would otherwise stay missing (seen in the soak: a restarted
/// memcastd lacked 8 sessions written by two hosts within 0.3 s of its start).
/// Once the round's settle time has passed, that peer has caught up, and
/// the round compares with every peer.
const CHECK_AFTER_WARM_UP: Duration = Duration::from_millis(ANTI_ENTROPY_SETTLE_MS + 2_000);

pub enum Job {
    Repair(Missing),
    /// A full resync from the first configured peer that can serve one.
    /// (Frames lost from an origin that serves no repairs, a PHP process
    /// publishing directly, take a resync from every peer: the origin's own
    /// host is the one sure to hold them.)
    Resync(String),
    /// A snapshot from one peer (a relay that just started).
    PullFrom(String),
    /// The local memcached is not known complete (memcastd started, it
    /// restarted or evicted): refill it from the first peer that can serve a
    /// snapshot, then report [`Report::WarmedUp`].
    WarmUp,
    /// An origin fell silent: ask its ring for everything after `after`.
    CatchUp {
        origin: u64,
        epoch: u64,
        after: u64,
        addr: String,
    },
    /// The local memcached restarted: ask the origin's ring again for what
    /// it sent after `after` (the last seconds before the restart), applied
    /// if newer. What this host had applied just before the restart is then
    /// back even when the peer whose snapshot refills it lags behind.
    Replay {
        origin: u64,
        epoch: u64,
        after: u64,
        addr: String,
    },
    /// A configured peer whose relay this host does not hear on the group:
    /// ask it for its relay's latest heartbeat ([`Report::PeerRelay`]).
    /// A lookup, not a repair: it does not hold back the memcached's
    /// completeness ([`RepairQueue::ask`]). Done before a warm-up queued
    /// after it, so that warm-up's snapshot holds what the relay sent up to
    /// that heartbeat.
    AskRelay {
        peer: String,
        /// Passed back in the report (see [`Report::PeerRelay`]).
        after_warm_up: bool,
    },
}

impl Job {
    /// Whether [`RepairQueue::is_idle`] waits for it: every job but a lookup.
    fn counts(&self) -> bool {
        !matches!(self, Job::AskRelay { .. })
    }
}

/// What the worker tells the receive loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The origin answered a repair or catch-up: frames `from..=through`
    /// (when any) were fetched from its ring and applied.
    Heard {
        origin: u64,
        epoch: u64,
        from: u64,
        through: Option<u64>,
        /// A catch-up: the origin was silent on the group, yet answered.
        caught_up: bool,
    },
    /// A catch-up found the origin's ring without that epoch or range.
    Gone { origin: u64, epoch: u64 },
    /// A warm-up completed.
    WarmedUp(WarmMark),
    /// What a peer said of its relay ([`Job::AskRelay`]): its latest
    /// heartbeat, still sealed (`None`: the peer runs no relay, or has not
    /// sent a heartbeat yet), or why it could not be asked.
    PeerRelay {
        peer: String,
        after_warm_up: bool,
        answer: Result<Option<Vec<u8>>, String>,
    },
}

/// The receive loop's end of the worker: jobs go in, and it can tell whether
/// every job sent so far has been done (the worker idle), which a memcached
/// known complete requires.
pub struct RepairQueue {
    jobs: Sender<Job>,
    sent: u64,
    settled: Arc<AtomicU64>,
}

impl RepairQueue {
    pub fn send(&mut self, job: Job) {
        self.sent += 1;
        let _ = self.jobs.send(job);
    }

    /// A lookup ([`Job::AskRelay`]): not counted in [`RepairQueue::is_idle`].
    pub fn ask(&mut self, job: Job) {
        let _ = self.jobs.send(job);
    }

    /// Every job sent was taken and nothing is left to do.
    pub fn is_idle(&self) -> bool {
        self.settled.load(Ordering::SeqCst) == self.sent
    }
}

pub struct RepairWorker {
    pub keys: Arc<KeyStore>,
    pub memcached: ServerAddr,
    pub timeouts: Timeouts,
    pub peers: Vec<String>,
    pub max_value_bytes: usize,
    pub repairs_per_sec: u32,
    pub resync_interval: Duration,
    /// Zero: no anti-entropy.
    pub anti_entropy_interval: Duration,
    pub counters: Arc<Counters>,
    pub reports: Sender<Report>,
    /// Frames heard from origins that keep no ring (see [`crate::heard`]):
    /// what peers lack is compared against it, and frames fetched from
    /// peers are kept in it too.
    pub heard: Arc<Mutex<HeardFrames>>,
}

/// How often every peer is asked how far it holds ring-less origins.
const HEARD_POLL: Duration = Duration::from_secs(1);
/// A peer ahead of this host for this long is not a frame in flight: the
/// difference is fetched from it.
const BEHIND_FOR: Duration = Duration::from_millis(900);

/// Entries, megabytes and rate of a transfer so far.
fn log_transfer(peer: &str, entries: u64, bytes: u64, started: Instant, what: &str) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let mb = bytes as f64 / 1e6;
    info!(
        peer,
        entries,
        mb = format!("{mb:.1}"),
        rate = format!("{:.0}/s {:.1} MB/s", entries as f64 / secs, mb / secs),
        "{what}"
    );
}

/// A ring-less origin a peer holds further than this host: since when,
/// and how far.
struct Behind {
    since: Instant,
    target: u64,
}

/// What the worker still has to do.
#[derive(Default)]
struct Todo {
    /// Ranges to repair, merged per (origin, epoch).
    ranges: HashMap<(u64, u64), Missing>,
    resync: Option<String>,
    resync_all: bool,
    pulls: Vec<String>,
    warm_up: bool,
    /// Per silent (origin, epoch): the last sequence number held, and where
    /// to ask.
    catch_ups: HashMap<(u64, u64), (u64, String)>,
    /// Per (origin, epoch), after a memcached restart: replay from its ring
    /// everything after this sequence number, and where to ask.
    replays: HashMap<(u64, u64), (u64, String)>,
    /// Ranges lost from origins that serve no repairs (PHP workers
    /// publishing directly): asked of the peers that heard them.
    from_peers: HashMap<(u64, u64), Missing>,
    /// Frames were lost from an origin that serves no repairs and no peer
    /// had them, first noticed then: digests are compared with every peer
    /// once those writes have settled.
    compare_since: Option<Instant>,
    /// Peers to ask for their relay's heartbeat, and whether a warm-up was
    /// queued before the question.
    relay_asks: Vec<(String, bool)>,
}

impl Todo {
    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
            && self.resync.is_none()
            && self.pulls.is_empty()
            && !self.warm_up
            && self.catch_ups.is_empty()
            && self.replays.is_empty()
            && self.from_peers.is_empty()
            && self.compare_since.is_none()
    }

    fn add(&mut self, job: Job) {
        match job {
            Job::PullFrom(peer) => {
                if !self.pulls.contains(&peer) {
                    self.pulls.push(peer);
                }
            }
            Job::Repair(m) if m.repair_addr.is_some() => {
                self.ranges
                    .entry((m.origin, m.epoch))
                    .and_modify(|p| {
                        p.from = p.from.min(m.from);
                        p.to = p.to.max(m.to);
                        p.repair_addr = m.repair_addr.clone();
                    })
                    .or_insert(m);
            }
            Job::Repair(m) => {
                self.from_peers
                    .entry((m.origin, m.epoch))
                    .and_modify(|p| {
                        p.from = p.from.min(m.from);
                        p.to = p.to.max(m.to);
                    })
                    .or_insert(m);
            }
            Job::Resync(reason) => self.need_resync(&reason, false),
            Job::WarmUp => self.warm_up = true,
            Job::AskRelay {
                peer,
                after_warm_up,
            } => {
                if !self.relay_asks.iter().any(|(p, _)| *p == peer) {
                    self.relay_asks.push((peer, after_warm_up));
                }
            }
            Job::CatchUp {
                origin,
                epoch,
                after,
                addr,
            } => {
                self.catch_ups.insert((origin, epoch), (after, addr));
            }
            Job::Replay {
                origin,
                epoch,
                after,
                addr,
            } => {
                self.replays
                    .entry((origin, epoch))
                    .and_modify(|(a, _)| *a = (*a).min(after))
                    .or_insert((after, addr));
            }
        }
    }

    fn need_resync(&mut self, reason: &str, all: bool) {
        self.resync.get_or_insert_with(|| reason.to_owned());
        self.resync_all |= all;
    }
}

#[derive(Debug)]
enum Fetch {
    /// Frames received (and applied), and the highest sequence number among
    /// them of the origin asked (repairs).
    Done {
        frames: u64,
        last_seq: Option<u64>,
    },
    Gone,
}

impl RepairWorker {
    pub fn spawn(self) -> RepairQueue {
        let (tx, rx) = std::sync::mpsc::channel();
        let settled = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&settled);
        let spawned = std::thread::Builder::new()
            .name("repair".into())
            .spawn(move || self.run(rx, &done));
        if let Err(e) = spawned {
            warn!("cannot start the repair worker: {e}; gaps will only be counted");
        }
        RepairQueue {
            jobs: tx,
            sent: 0,
            settled,
        }
    }

    fn run(self, rx: Receiver<Job>, settled: &AtomicU64) {
        let mut taken = 0u64;
        let mut mc = Memcached::new(self.memcached.clone(), self.timeouts);
        let mut todo = Todo::default();
        let mut next_resync = Instant::now();
        let mut next_warm_up = Instant::now();
        let spacing = Duration::from_secs(1) / self.repairs_per_sec;
        let mut next_repair = Instant::now();
        let anti_entropy = !self.anti_entropy_interval.is_zero() && !self.peers.is_empty();
        let mut next_anti_entropy = Instant::now() + self.anti_entropy_interval;
        let mut next_compare = Instant::now();
        let mut check_after_warm_up: Option<Instant> = None;
        // Per (origin, epoch), the highest sequence number caught up: a
        // request sent before the receive loop heard of the last answer
        // does not fetch the same frames again.
        let mut caught_up: HashMap<(u64, u64), u64> = HashMap::new();
        let mut next_heard_poll = Instant::now() + HEARD_POLL;
        let mut behind: HashMap<(u64, u64), Behind> = HashMap::new();
        loop {
            let mut idle = if anti_entropy {
                next_anti_entropy.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(3600)
            };
            if let Some(at) = check_after_warm_up {
                idle = idle.min(at.saturating_duration_since(Instant::now()));
            }
            if !self.peers.is_empty() {
                idle = idle.min(next_heard_poll.saturating_duration_since(Instant::now()));
            }
            let wait = if !todo.pulls.is_empty()
                || !todo.catch_ups.is_empty()
                || !todo.replays.is_empty()
                || !todo.from_peers.is_empty()
            {
                Duration::ZERO
            } else if todo.warm_up {
                Duration::from_millis(100)
            } else if todo.ranges.is_empty() && todo.resync.is_none() {
                match todo.compare_since {
                    Some(_) => idle.min(Duration::from_millis(200)),
                    None => idle,
                }
            } else {
                Duration::from_millis(20)
            };
            match rx.recv_timeout(wait) {
                Ok(job) => {
                    taken += u64::from(job.counts());
                    todo.add(job);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(job) = rx.try_recv() {
                taken += u64::from(job.counts());
                todo.add(job);
            }
            // First: a warm-up queued after a question waits for its answer.
            for (peer, after_warm_up) in std::mem::take(&mut todo.relay_asks) {
                let answer = self.ask_relay(&peer).map_err(|e| e.to_string());
                let _ = self.reports.send(Report::PeerRelay {
                    peer,
                    after_warm_up,
                    answer,
                });
            }
            for ((origin, epoch), (after, addr)) in std::mem::take(&mut todo.catch_ups) {
                let held = caught_up.get(&(origin, epoch)).copied().unwrap_or(0);
                if let Some(last) = self.catch_up(&mut mc, origin, epoch, after.max(held), &addr) {
                    caught_up.insert((origin, epoch), last);
                }
            }
            if caught_up.len() > 1024 {
                caught_up.clear();
            }
            let replays = std::mem::take(&mut todo.replays);
            if !replays.is_empty() {
                // The connection is from before the restart: closed by the
                // server. The next command connects again.
                mc.disconnect();
            }
            for ((origin, epoch), (after, addr)) in replays {
                self.replay(&mut mc, origin, epoch, after, &addr);
            }
            for (_, missing) in std::mem::take(&mut todo.from_peers) {
                if !self.fetch_from_peers(&mut mc, &missing, None) {
                    todo.compare_since.get_or_insert_with(Instant::now);
                }
            }
            if !self.peers.is_empty() && Instant::now() >= next_heard_poll {
                next_heard_poll = Instant::now() + HEARD_POLL;
                if !self.catch_up_with_peers(&mut mc, &mut behind) {
                    todo.compare_since.get_or_insert_with(Instant::now);
                }
            }
            if todo.warm_up && Instant::now() >= next_warm_up {
                if self.warm_up(&mut mc) {
                    todo.warm_up = false;
                    if !self.peers.is_empty() {
                        check_after_warm_up = Some(Instant::now() + CHECK_AFTER_WARM_UP);
                    }
                } else {
                    next_warm_up = Instant::now() + WARM_UP_RETRY;
                }
            }
            if let Some(peer) = todo.pulls.pop() {
                let reason = "it started after us and may hold writes made while it was away";
                self.pull(&mut mc, &peer, reason);
            }
            if Instant::now() >= next_repair {
                if let Some(id) = todo.ranges.keys().next().copied() {
                    let Some(missing) = todo.ranges.remove(&id) else {
                        continue;
                    };
                    next_repair = Instant::now() + spacing;
                    match self.repair(&mut mc, &missing) {
                        Ok(Fetch::Done { frames, last_seq }) => {
                            Counters::add(&self.counters.frames_repaired, frames);
                            let _ = self.reports.send(Report::Heard {
                                origin: missing.origin,
                                epoch: missing.epoch,
                                from: missing.from,
                                through: last_seq,
                                caught_up: false,
                            });
                        }
                        Ok(Fetch::Gone) => {
                            Counters::inc(&self.counters.repairs_gone);
                            todo.need_resync("a missed range left the origin's replay ring", false);
                        }
                        Err(e) => {
                            Counters::inc(&self.counters.repairs_failed);
                            let origin = format!("{:016x}", missing.origin);
                            warn!(origin, "repair failed: {e}");
                            todo.need_resync("a repair failed", false);
                        }
                    }
                }
            }
            if let Some(since) = todo.compare_since {
                if !anti_entropy {
                    todo.compare_since = None;
                    todo.need_resync("frames lost from an origin that serves no repairs", true);
                } else if since.elapsed() >= LOST_SETTLE && Instant::now() >= next_compare {
                    // What an origin without a ring lost, every peer that
                    // received it holds: only the buckets that differ move.
                    todo.compare_since = None;
                    self.anti_entropy(&mut mc);
                    next_compare = Instant::now() + COMPARE_SPACING;
                    next_anti_entropy = Instant::now() + self.anti_entropy_interval;
                }
            }
            if check_after_warm_up.is_some_and(|at| Instant::now() >= at) {
                check_after_warm_up = None;
                debug!("anti-entropy round after a warm-up");
                self.anti_entropy(&mut mc);
            }
            if anti_entropy && Instant::now() >= next_anti_entropy {
                self.anti_entropy(&mut mc);
                next_anti_entropy = Instant::now() + self.anti_entropy_interval;
            }
            if todo.resync.is_some() && Instant::now() >= next_resync {
                let reason = todo.resync.take().unwrap_or_default();
                let all = std::mem::take(&mut todo.resync_all);
                next_resync = Instant::now() + self.resync_interval;
                self.resync(&mut mc, &reason, all);
            }
            if todo.is_empty() {
                settled.store(taken, Ordering::SeqCst);
            }
        }
    }

    /// Asks a silent origin's ring for everything after `after` and applies
    /// it: when a link returns, this host is whole at once instead of when
    /// the multicast layer gives up on its own retransmissions. Returns the
    /// highest sequence number fetched.
    fn catch_up(
        &self,
        mc: &mut Memcached,
        origin: u64,
        epoch: u64,
        after: u64,
        addr: &str,
    ) -> Option<u64> {
        Counters::inc(&self.counters.catch_up_requests);
        let fetched = self.fetch_after(mc, origin, epoch, after, addr, Duration::from_secs(10));
        let mut fetched_through = None;
        let report = match fetched {
            Ok(Fetch::Done { frames, last_seq }) => {
                Counters::add(&self.counters.frames_caught_up, frames);
                if frames > 0 {
                    info!(
                        origin = format!("{origin:016x}"),
                        frames, "caught up with a silent origin from its ring"
                    );
                }
                fetched_through = last_seq;
                Report::Heard {
                    origin,
                    epoch,
                    from: after + 1,
                    through: last_seq,
                    caught_up: true,
                }
            }
            Ok(Fetch::Gone) => Report::Gone { origin, epoch },
            Err(e) => {
                debug!(
                    origin = format!("{origin:016x}"),
                    "silent origin unreachable: {e}"
                );
                return None;
            }
        };
        let _ = self.reports.send(report);
        fetched_through
    }

    /// Everything `origin` sent after `after`, from its ring at `addr`,
    /// applied if newer, within `budget`.
    fn fetch_after(
        &self,
        mc: &mut Memcached,
        origin: u64,
        epoch: u64,
        after: u64,
        addr: &str,
        budget: Duration,
    ) -> Result<Fetch, FetchError> {
        let request = Request::Range {
            origin,
            epoch,
            from: after + 1,
            to: u64::MAX,
        };
        self.ask(addr, request, CATCH_UP_CONNECT)
            .and_then(|reader| self.apply_stream(addr, reader, mc, budget, false))
    }

    /// [`Job::Replay`]: what the origin sent after `after`, from its ring,
    /// applied if newer. A ring that no longer reaches back that far is no
    /// error: the warm-up's snapshot and the digest comparison after it
    /// cover the rest.
    fn replay(&self, mc: &mut Memcached, origin: u64, epoch: u64, after: u64, addr: &str) {
        let fetched = self.fetch_after(mc, origin, epoch, after, addr, Duration::from_secs(30));
        let origin = format!("{origin:016x}");
        match fetched {
            Ok(Fetch::Done { frames, .. }) => {
                Counters::add(&self.counters.frames_replayed, frames);
                info!(
                    origin,
                    frames,
                    "memcached restarted: replayed this origin's writes of the last seconds from its ring"
                );
            }
            Ok(Fetch::Gone) => info!(
                origin,
                "memcached restarted: this origin's ring no longer reaches back to the last seconds' writes; the warm-up and the digest comparison after it cover them"
            ),
            Err(e) => warn!(
                origin,
                "memcached restarted: could not replay this origin's last writes: {e}; the warm-up and the digest comparison after it cover them"
            ),
        }
    }

    /// Fetches frames `m.from..=m.to` of a ring-less origin from the peers
    /// that heard them (`first`: the peer to ask first), until this host
    /// holds them all. False when no peer had them all: the range is given
    /// up here and left to a digest round.
    fn fetch_from_peers(&self, mc: &mut Memcached, m: &Missing, first: Option<&str>) -> bool {
        let held = |heard: &Mutex<HeardFrames>| heard.lock().contiguous(m.origin, m.epoch);
        let order = first.into_iter().chain(
            self.peers
                .iter()
                .map(String::as_str)
                .filter(|p| Some(*p) != first),
        );
        for peer in order {
            let from = held(&self.heard).map_or(m.from, |h| (h + 1).max(m.from));
            if from > m.to {
                break;
            }
            Counters::inc(&self.counters.repair_requests);
            let request = Request::Range {
                origin: m.origin,
                epoch: m.epoch,
                from,
                to: m.to,
            };
            match self.fetch_keeping(peer, request, mc, Duration::from_secs(10), true) {
                Ok(Fetch::Done { frames, last_seq }) if frames > 0 => {
                    Counters::add(&self.counters.frames_repaired, frames);
                    let _ = self.reports.send(Report::Heard {
                        origin: m.origin,
                        epoch: m.epoch,
                        from,
                        through: last_seq,
                        caught_up: false,
                    });
                }
                Ok(_) => {}
                Err(e) => debug!(%peer, "frames of a ring-less origin: {e}"),
            }
        }
        if held(&self.heard).is_some_and(|h| h >= m.to) {
            return true;
        }
        Counters::inc(&self.counters.repairs_gone);
        self.heard.lock().skip_to(m.origin, m.epoch, m.to);
        false
    }

    /// Asks every peer how far it holds each ring-less origin; what one has
    /// held for a while beyond this host is fetched from it. False when
    /// something could not be fetched from any peer.
    fn catch_up_with_peers(
        &self,
        mc: &mut Memcached,
        behind: &mut HashMap<(u64, u64), Behind>,
    ) -> bool {
        let mut ahead: HashMap<(u64, u64), (u64, u64, &str)> = HashMap::new();
        for peer in &self.peers {
            let Ok(table) = self.fetch_heard(peer) else {
                continue;
            };
            for p in table {
                let mine = self.heard.lock().contiguous(p.origin, p.epoch);
                // A stream never heard here is taken from its start only.
                let Some(mine) = mine.or((p.first <= 1).then_some(0)) else {
                    continue;
                };
                if p.last > mine {
                    let e = ahead
                        .entry((p.origin, p.epoch))
                        .or_insert((mine, p.last, peer));
                    if p.last > e.1 {
                        *e = (mine, p.last, peer);
                    }
                }
            }
        }
        behind.retain(|k, _| ahead.contains_key(k));
        let mut all_fetched = true;
        for ((origin, epoch), (mine, last, peer)) in ahead {
            let b = behind.entry((origin, epoch)).or_insert(Behind {
                since: Instant::now(),
                target: last,
            });
            if mine >= b.target {
                // Caught up with what was ahead then; watch the rest anew.
                *b = Behind {
                    since: Instant::now(),
                    target: last,
                };
                continue;
            }
            if b.since.elapsed() < BEHIND_FOR {
                continue;
            }
            let missing = Missing {
                origin,
                epoch,
                from: mine + 1,
                to: b.target,
                repair_addr: None,
            };
            debug!(?missing, %peer, "a peer holds frames of a ring-less origin this host lacks");
            Counters::inc(&self.counters.gaps);
            Counters::add(&self.counters.missing_frames, b.target - mine);
            all_fetched &= self.fetch_from_peers(mc, &missing, Some(peer));
            behind.remove(&(origin, epoch));
        }
        all_fetched
    }

    fn fetch_heard(&self, addr: &str) -> Result<Vec<Position>, FetchError> {
        let table = self.fetch_table(
            addr,
            Request::Heard,
            CATCH_UP_CONNECT,
            "table of heard origins",
        )?;
        Position::decode_table(&table)
            .ok_or_else(|| FetchError::peer(addr, Problem::Malformed("table of heard origins")))
    }

    fn repair(&self, mc: &mut Memcached, m: &Missing) -> Result<Fetch, FetchError> {
        let Some(addr) = &m.repair_addr else {
            return Ok(Fetch::Gone);
        };
        Counters::inc(&self.counters.repair_requests);
        let request = Request::Range {
            origin: m.origin,
            epoch: m.epoch,
            from: m.from,
            to: m.to,
        };
        self.fetch(addr, request, mc, Duration::from_secs(10))
    }

    /// Asks each peer in turn for a snapshot until one completes, or (`all`)
    /// every peer.
    fn resync(&self, mc: &mut Memcached, reason: &str, all: bool) {
        if self.peers.is_empty() {
            Counters::inc(&self.counters.resyncs_failed);
            warn!("resync needed ({reason}) but no --peer is configured: this replica may miss writes until they are written again");
            return;
        }
        let mut any = false;
        for peer in &self.peers {
            if self.pull(mc, peer, reason) {
                any = true;
                if !all {
                    return;
                }
            }
        }
        if any {
            return;
        }
        Counters::inc(&self.counters.resyncs_failed);
        warn!(
            "resync failed: no peer could serve a snapshot; retrying in {} s",
            self.resync_interval.as_secs()
        );
    }

    /// Compares digests with every peer and fetches the buckets that differ.
    fn anti_entropy(&self, mc: &mut Memcached) {
        // Writes of the last seconds may still be on their way: leave them out.
        let cutoff_ms = unix_millis().saturating_sub(ANTI_ENTROPY_SETTLE_MS);
        let local = match local_digests(&self.memcached, self.timeouts, cutoff_ms) {
            Ok(d) => d,
            Err(e) => {
                warn!("anti-entropy: cannot read the local memcached: {e}");
                return;
            }
        };
        for peer in &self.peers {
            let remote = match self.fetch_digests(peer, cutoff_ms) {
                Ok(d) => d,
                Err(e) => {
                    debug!(%peer, "anti-entropy: no digests: {e}");
                    continue;
                }
            };
            Counters::inc(&self.counters.anti_entropy_rounds);
            let differing = local.differing(&remote);
            if differing.is_empty() {
                continue;
            }
            info!(%peer, buckets = differing.len(), "anti-entropy: fetching the buckets that differ");
            // Every differing bucket in one request, one connection.
            Counters::add(&self.counters.anti_entropy_buckets, differing.len() as u64);
            match self.fetch(
                peer,
                Request::Buckets(differing),
                mc,
                Duration::from_secs(120),
            ) {
                Ok(Fetch::Done { frames, .. }) => {
                    Counters::add(&self.counters.anti_entropy_entries, frames)
                }
                Ok(Fetch::Gone) => {}
                Err(e) => warn!(%peer, "anti-entropy: fetching {} buckets: {e}", differing.len()),
            }
        }
    }

    fn fetch_digests(&self, addr: &str, cutoff_ms: u64) -> Result<Digests, FetchError> {
        let table =
            self.fetch_table(addr, Request::Digest { cutoff_ms }, CONNECT, "digest table")?;
        Digests::decode(&table)
            .ok_or_else(|| FetchError::peer(addr, Problem::Malformed("digest table")))
    }

    /// A table a peer answers as one sealed frame (`what` names it in errors).
    fn fetch_table(
        &self,
        addr: &str,
        request: Request,
        connect: Duration,
        what: &'static str,
    ) -> Result<Vec<u8>, FetchError> {
        let mut reader = self.ask(addr, request, connect)?;
        let max = peer::max_record_len(self.max_value_bytes);
        let record = peer::read_record(&mut reader, max).map_err(|e| FetchError::peer(addr, e))?;
        match record {
            Record::Frame(bytes) => Frame::open(&bytes, &*self.keys.get(), self.max_value_bytes)
                .map(|frame| frame.value)
                .map_err(|e| FetchError::peer(addr, e)),
            _ => Err(FetchError::peer(addr, Problem::Missing(what))),
        }
    }

    /// A peer's relay: its latest heartbeat, sealed (opened by the receive
    /// loop like one from the group), or `None` when it runs no relay.
    fn ask_relay(&self, addr: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let mut reader = self.ask(addr, Request::Relay, CATCH_UP_CONNECT)?;
        let max = peer::max_record_len(self.max_value_bytes);
        match peer::read_record(&mut reader, max).map_err(|e| FetchError::peer(addr, e))? {
            Record::Frame(bytes) => Ok(Some(bytes)),
            Record::End => Ok(None),
            Record::Gone => Err(FetchError::peer(addr, Problem::Missing("relay heartbeat"))),
        }
    }

    /// Connects to a peer and sends a signed request.
    fn ask(
        &self,
        addr: &str,
        request: Request,
        connect: Duration,
    ) -> Result<std::io::BufReader<TcpStream>, FetchError> {
        let io = |e: std::io::Error| FetchError::peer(addr, e);
        let sockaddr = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| FetchError::peer(addr, Problem::NoAddress))?;
        let mut conn = TcpStream::connect_timeout(&sockaddr, connect).map_err(io)?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io)?;
        conn.write_all(&request.encode(&*self.keys.get(), unix_millis()))
            .map_err(io)?;
        Ok(std::io::BufReader::with_capacity(256 * 1024, conn))
    }

    /// Refills the memcached from the first peer that completes a snapshot
    /// (live frames keep being applied meanwhile, and both go through "only
    /// if newer"), then reports which memcached run it filled, as of its
    /// eviction count when the warm-up began: the receive loop vouches for
    /// it only while that run evicts nothing more.
    fn warm_up(&self, mc: &mut Memcached) -> bool {
        let started = Instant::now();
        // A memcached that restarted closed the connection this worker held:
        // a new one, rather than a failed command and a retry seconds later.
        mc.disconnect();
        let before = match mc.stats().map(|s| MemcachedStats::parse(&s)) {
            Ok(Some(s)) => s,
            Ok(None) => {
                warn!("warm-up: memcached's stats lack pid, uptime or evictions");
                return false;
            }
            Err(e) => {
                warn!("warm-up: memcached unreachable: {e}");
                return false;
            }
        };
        let done = self
            .peers
            .iter()
            .any(|peer| self.pull(mc, peer, "warm-up: refilling the local memcached"));
        if !done {
            warn!(
                "warm-up: no peer could serve a snapshot; retrying in {} s",
                WARM_UP_RETRY.as_secs()
            );
            return false;
        }
        match mc.stats().map(|s| MemcachedStats::parse(&s)) {
            Ok(Some(after)) if after.instance.same(&before.instance) => {}
            _ => {
                warn!("warm-up: memcached restarted during the transfer; starting over");
                return false;
            }
        }
        Counters::inc(&self.counters.warmups);
        info!(
            seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
            "warm-up complete"
        );
        let _ = self.reports.send(Report::WarmedUp(WarmMark {
            instance: before.instance,
            evictions: before.evictions,
        }));
        true
    }

    /// A snapshot from `peer`, applied if newer; true when it completed.
    fn pull(&self, mc: &mut Memcached, peer: &str, reason: &str) -> bool {
        info!(%peer, "resyncing: {reason}");
        let started = Instant::now();
        match self.fetch(peer, Request::Snapshot, mc, Duration::from_secs(600)) {
            Ok(Fetch::Done { frames: n, .. }) => {
                Counters::inc(&self.counters.resyncs);
                Counters::add(&self.counters.resync_entries, n);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                info!(%peer, entries = n, seconds = format!("{secs:.2}"), rate = format!("{:.0}/s", n as f64 / secs), "resync complete");
                true
            }
            Ok(Fetch::Gone) => {
                warn!(%peer, "peer refused the snapshot");
                false
            }
            Err(e) => {
                warn!(%peer, "resync from this peer failed: {e}");
                false
            }
        }
    }

    /// Sends `request` to `addr` and applies every frame of the answer.
    fn fetch(
        &self,
        addr: &str,
        request: Request,
        mc: &mut Memcached,
        budget: Duration,
    ) -> Result<Fetch, FetchError> {
        self.fetch_keeping(addr, request, mc, budget, false)
    }

    /// [`Self::fetch`]; `keep`: the frames are a ring-less origin's, kept
    /// in [`HeardFrames`] to serve peers in turn.
    fn fetch_keeping(
        &self,
        addr: &str,
        request: Request,
        mc: &mut Memcached,
        budget: Duration,
        keep: bool,
    ) -> Result<Fetch, FetchError> {
        let reader = self.ask(addr, request, CONNECT)?;
        self.apply_stream(addr, reader, mc, budget, keep)
    }

    /// Applies every frame of a response; the highest sequence number is
    /// taken of the frames of the origin a range request named.
    fn apply_stream(
        &self,
        addr: &str,
        mut reader: std::io::BufReader<TcpStream>,
        mc: &mut Memcached,
        budget: Duration,
        keep: bool,
    ) -> Result<Fetch, FetchError> {
        let max = peer::max_record_len(self.max_value_bytes);
        let started = Instant::now();
        let deadline = started + budget;
        let mut n = 0u64;
        let mut bytes_in = 0u64;
        let mut last_seq: Option<u64> = None;
        loop {
            if Instant::now() > deadline {
                return Err(FetchError::peer(addr, Problem::TooSlow(budget)));
            }
            match peer::read_record(&mut reader, max).map_err(|e| FetchError::peer(addr, e))? {
                Record::End => {
                    if n >= PROGRESS_EVERY {
                        log_transfer(addr, n, bytes_in, started, "transfer done");
                    }
                    return Ok(Fetch::Done {
                        frames: n,
                        last_seq,
                    });
                }
                Record::Gone => return Ok(Fetch::Gone),
                Record::Frame(bytes) => {
                    let frame = match Frame::open(&bytes, &*self.keys.get(), self.max_value_bytes) {
                        Ok(f) => f,
                        Err(e) => {
                            Counters::inc(self.counters.dropped(e.reason()));
                            return Err(FetchError::peer(addr, Problem::BadFrame(e)));
                        }
                    };
                    self.apply(mc, &frame)?;
                    if keep {
                        self.heard
                            .lock()
                            .push(frame.origin, frame.epoch, frame.seq, &bytes);
                    }
                    if frame.seq > 0 {
                        last_seq = Some(last_seq.map_or(frame.seq, |s| s.max(frame.seq)));
                    }
                    n += 1;
                    bytes_in += bytes.len() as u64;
                    if n.is_multiple_of(PROGRESS_EVERY) {
                        log_transfer(addr, n, bytes_in, started, "transfer progress");
                    }
                }
            }
        }
    }

    fn apply(&self, mc: &mut Memcached, frame: &Frame) -> Result<(), StoreError> {
        for attempt in 0..50 {
            match apply_frame(mc, frame) {
                Ok(Outcome::Stored) => Counters::inc(&self.counters.applied),
                Ok(Outcome::SkippedOlder) => Counters::inc(&self.counters.skipped_older),
                Ok(Outcome::Conflict) => Counters::inc(&self.counters.conflicts),
                Ok(_) => {}
                Err(e) if e.is_server_failure() && attempt < 49 => {
                    Counters::inc(&self.counters.memcached_errors);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) if e.is_server_failure() => return Err(e),
                Err(_) => Counters::inc(&self.counters.dropped_store),
            }
            return Ok(());
        }
        Ok(())
    }
}

/// Why fetching from a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The peer, or the connection to it.
    #[error("{peer}: {problem}")]
    Peer { peer: String, problem: Problem },
    /// The local memcached, while applying what the peer sent.
    #[error(transparent)]
    Memcached(#[from] StoreError),
}

impl FetchError {
    fn peer(peer: &str, problem: impl Into<Problem>) -> FetchError {
        FetchError::Peer {
            peer: peer.to_owned(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no address")]
    NoAddress,
    #[error(transparent)]
    Answer(#[from] peer::PeerError),
    #[error(transparent)]
    Frame(#[from] memcast_core::FrameError),
    #[error("sent a bad frame: {0}")]
    BadFrame(memcast_core::FrameError),
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The answer held no such table.
    #[error("no {0}")]
    Missing(&'static str),
    #[error("took longer than {} s", .0.as_secs())]
    TooSlow(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(repair_addr: Option<&str>) -> Missing {
        Missing {
            origin: 7,
            epoch: 1,
            from: 3,
            to: 5,
            repair_addr: repair_addr.map(String::from),
        }
    }

    #[test]
    fn frames_lost_from_an_origin_without_a_ring_are_asked_of_peers_not_a_resync() {
        let mut todo = Todo::default();
        todo.add(Job::Repair(missing(None)));
        todo.add(Job::Repair(Missing {
            from: 9,
            to: 12,
            ..missing(None)
        }));
        let merged = &todo.from_peers[&(7, 1)];
        assert_eq!((merged.from, merged.to), (3, 12));
        assert!(todo.compare_since.is_none() && todo.resync.is_none());
        assert!(!todo.is_empty(), "not settled until asked");
    }

    #[test]
    fn a_range_from_an_origin_with_a_ring_is_repaired_from_it() {
        let mut todo = Todo::default();
        todo.add(Job::Repair(missing(Some("10.0.0.1:7711"))));
        todo.add(Job::Repair(Missing {
            from: 9,
            to: 12,
            ..missing(Some("10.0.0.1:7711"))
        }));
        let merged = &todo.ranges[&(7, 1)];
        assert_eq!((merged.from, merged.to), (3, 12));
        assert!(todo.compare_since.is_none() && todo.resync.is_none());
    }
}
