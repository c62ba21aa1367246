//! The repair worker: fetches ranges this host missed from the origin's
//! replay ring, and falls back to a full resync from a peer when a range is
//! gone, the origin serves no repairs, at startup, or when this host fell
//! behind. Requests are rate-limited and merged, so a lossy network cannot
//! turn into a storm of them.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_core::peer::{self, Digests, Record, Request};
use memcast_core::replica::{apply_frame, Outcome, WARM_SENTINEL};
use memcast_core::{unix_millis, Frame, Memcached, ServerAddr, Timeouts};
use tracing::{debug, info, warn};

use crate::counters::Counters;
use crate::keys::KeyStore;
use crate::origins::Missing;
use crate::peer_server::local_digests;

/// A warm-up that found no peer to serve it tries again this soon: readers
/// are sent elsewhere until it completes.
const WARM_UP_RETRY: Duration = Duration::from_secs(2);
/// Set while a warm-up fills memcached; see [`RepairWorker::warm_up`].
const WARMING_MARKER: &[u8] = b"memcast:warming";
/// Progress of a long snapshot is logged every this many entries.
const PROGRESS_EVERY: u64 = 10_000;

/// Anti-entropy leaves out writes younger than this: they may still be on
/// their way, and are not a difference yet.
const ANTI_ENTROPY_SETTLE_MS: u64 = 5_000;

pub enum Job {
    Repair(Missing),
    /// A full resync from the first configured peer that can serve one.
    /// (Frames lost from an origin that serves no repairs, a PHP process
    /// publishing directly, take a resync from every peer: the origin's own
    /// host is the one sure to hold them.)
    Resync(String),
    /// A snapshot from one peer (a relay that just started).
    PullFrom(String),
    /// The local memcached is cold (restarted, or new): refill it from the
    /// first peer that can serve a snapshot, then mark it warm.
    WarmUp,
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
    /// Set by the receive loop when it asks for a warm-up, cleared here when
    /// one completes: a memcached that restarts right after a warm-up is
    /// then noticed as cold again.
    pub warming: Arc<AtomicBool>,
}

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

/// What the worker still has to do.
#[derive(Default)]
struct Todo {
    /// Ranges to repair, merged per (origin, epoch).
    ranges: HashMap<(u64, u64), Missing>,
    resync: Option<String>,
    resync_all: bool,
    pulls: Vec<String>,
    warm_up: bool,
}

impl Todo {
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
            Job::Repair(_) => {
                self.need_resync("frames lost from an origin that serves no repairs", true)
            }
            Job::Resync(reason) => self.need_resync(&reason, false),
            Job::WarmUp => self.warm_up = true,
        }
    }

    fn need_resync(&mut self, reason: &str, all: bool) {
        self.resync.get_or_insert_with(|| reason.to_owned());
        self.resync_all |= all;
    }
}

#[derive(Debug)]
enum Fetch {
    /// Frames received (and applied).
    Done(u64),
    Gone,
}

impl RepairWorker {
    pub fn spawn(self) -> Sender<Job> {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("repair".into())
            .spawn(move || self.run(rx));
        if let Err(e) = spawned {
            warn!("cannot start the repair worker: {e}; gaps will only be counted");
        }
        tx
    }

    fn run(self, rx: Receiver<Job>) {
        let mut mc = Memcached::new(self.memcached.clone(), self.timeouts);
        let mut todo = Todo::default();
        let mut next_resync = Instant::now();
        let mut next_warm_up = Instant::now();
        let spacing = Duration::from_secs(1) / self.repairs_per_sec;
        let mut next_repair = Instant::now();
        let anti_entropy = !self.anti_entropy_interval.is_zero() && !self.peers.is_empty();
        let mut next_anti_entropy = Instant::now() + self.anti_entropy_interval;
        loop {
            let idle = if anti_entropy {
                next_anti_entropy.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(3600)
            };
            let wait = if !todo.pulls.is_empty() || todo.warm_up {
                Duration::from_millis(if todo.warm_up { 100 } else { 0 })
            } else if todo.ranges.is_empty() && todo.resync.is_none() {
                idle
            } else {
                Duration::from_millis(20)
            };
            match rx.recv_timeout(wait) {
                Ok(job) => todo.add(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(job) = rx.try_recv() {
                todo.add(job);
            }
            if todo.warm_up && Instant::now() >= next_warm_up {
                if self.warm_up(&mut mc) {
                    todo.warm_up = false;
                    self.warming.store(false, Ordering::SeqCst);
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
                        Ok(Fetch::Done(n)) => Counters::add(&self.counters.frames_repaired, n),
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
        }
    }

    fn repair(&self, mc: &mut Memcached, m: &Missing) -> Result<Fetch, String> {
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
                warn!("anti-entropy: cannot read the local memcached: {e:?}");
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
                Ok(Fetch::Done(n)) => Counters::add(&self.counters.anti_entropy_entries, n),
                Ok(Fetch::Gone) => {}
                Err(e) => warn!(%peer, "anti-entropy: fetching {} buckets: {e}", differing.len()),
            }
        }
    }

    fn fetch_digests(&self, addr: &str, cutoff_ms: u64) -> Result<Digests, String> {
        let mut reader = self.ask(addr, Request::Digest { cutoff_ms })?;
        let max = peer::max_record_len(self.max_value_bytes);
        match peer::read_record(&mut reader, max).map_err(|e| format!("{addr}: {e}"))? {
            Record::Frame(bytes) => {
                let frame = Frame::open(&bytes, &*self.keys.get(), self.max_value_bytes)
                    .map_err(|e| format!("{addr}: {e}"))?;
                Digests::decode(&frame.value)
                    .ok_or_else(|| format!("{addr}: malformed digest table"))
            }
            _ => Err(format!("{addr}: no digest table")),
        }
    }

    /// Connects to a peer and sends a signed request.
    fn ask(&self, addr: &str, request: Request) -> Result<std::io::BufReader<TcpStream>, String> {
        let sockaddr = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let mut conn = TcpStream::connect_timeout(&sockaddr, Duration::from_secs(2))
            .map_err(|e| format!("{addr}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        conn.write_all(&request.encode(&*self.keys.get(), unix_millis()))
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok(std::io::BufReader::with_capacity(256 * 1024, conn))
    }

    /// Refills a cold memcached from the first peer that completes a
    /// snapshot (live frames keep being applied meanwhile, and both go
    /// through "only if newer"), then sets the warm sentinel so readers trust
    /// its misses again. Without peers there is nothing to refill from: it is
    /// warm at once.
    fn warm_up(&self, mc: &mut Memcached) -> bool {
        let started = Instant::now();
        // A marker with a token of ours: if memcached restarts during the
        // transfer, the marker is gone with everything else, and this
        // warm-up must not declare the new, empty memcached warm.
        let token = format!("{:016x}", memcast_core::origin::random_u64());
        if let Err(e) = mc.set(WARMING_MARKER, token.as_bytes(), 0) {
            warn!("warm-up: memcached unreachable: {e}");
            return false;
        }
        let done = self.peers.is_empty()
            || self
                .peers
                .iter()
                .any(|peer| self.pull(mc, peer, "warm-up: the local memcached is cold"));
        if !done {
            warn!(
                "warm-up: no peer could serve a snapshot; retrying in {} s",
                WARM_UP_RETRY.as_secs()
            );
            return false;
        }
        match mc.get(WARMING_MARKER) {
            Ok(Some(t)) if t == token.as_bytes() => {}
            _ => {
                warn!("warm-up: memcached restarted during the transfer; starting over");
                return false;
            }
        }
        let stamp = unix_millis().to_string();
        match mc.set(WARM_SENTINEL, stamp.as_bytes(), 0) {
            Ok(_) => {
                let _ = mc.delete(WARMING_MARKER);
                Counters::inc(&self.counters.warmups);
                info!(
                    seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                    "warm-up complete: memcached is warm"
                );
                true
            }
            Err(e) => {
                warn!("warm-up: cannot mark memcached warm: {e}");
                false
            }
        }
    }

    /// A snapshot from `peer`, applied if newer; true when it completed.
    fn pull(&self, mc: &mut Memcached, peer: &str, reason: &str) -> bool {
        info!(%peer, "resyncing: {reason}");
        let started = Instant::now();
        match self.fetch(peer, Request::Snapshot, mc, Duration::from_secs(600)) {
            Ok(Fetch::Done(n)) => {
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
    ) -> Result<Fetch, String> {
        let mut reader = self.ask(addr, request)?;
        let max = peer::max_record_len(self.max_value_bytes);
        let started = Instant::now();
        let deadline = started + budget;
        let mut n = 0u64;
        let mut bytes_in = 0u64;
        loop {
            if Instant::now() > deadline {
                return Err(format!("{addr}: took longer than {} s", budget.as_secs()));
            }
            match peer::read_record(&mut reader, max).map_err(|e| format!("{addr}: {e}"))? {
                Record::End => {
                    if n >= PROGRESS_EVERY {
                        log_transfer(addr, n, bytes_in, started, "transfer done");
                    }
                    return Ok(Fetch::Done(n));
                }
                Record::Gone => return Ok(Fetch::Gone),
                Record::Frame(bytes) => {
                    let frame = match Frame::open(&bytes, &*self.keys.get(), self.max_value_bytes) {
                        Ok(f) => f,
                        Err(e) => {
                            Counters::inc(self.counters.dropped(e.reason()));
                            return Err(format!("{addr}: sent a bad frame: {e}"));
                        }
                    };
                    self.apply(mc, &frame)?;
                    n += 1;
                    bytes_in += bytes.len() as u64;
                    if n.is_multiple_of(PROGRESS_EVERY) {
                        log_transfer(addr, n, bytes_in, started, "transfer progress");
                    }
                }
            }
        }
    }

    fn apply(&self, mc: &mut Memcached, frame: &Frame) -> Result<(), String> {
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
                Err(e) if e.is_server_failure() => return Err(e.to_string()),
                Err(_) => Counters::inc(&self.counters.dropped_store),
            }
            return Ok(());
        }
        Ok(())
    }
}
