//! The repair worker: fetches ranges this host missed from the origin's
//! replay ring, and falls back to a full resync from a peer when a range is
//! gone, the origin serves no repairs, at startup, or when this host fell
//! behind. Requests are rate-limited and merged, so a lossy network cannot
//! turn into a storm of them.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_core::peer::{self, Record, Request};
use memcast_core::replica::{apply_frame, Outcome};
use memcast_core::{unix_millis, Frame, Memcached, ServerAddr, SharedKey, Timeouts};
use tracing::{info, warn};

use crate::counters::Counters;
use crate::origins::Missing;

pub enum Job {
    Repair(Missing),
    /// A full resync from the configured peers.
    Resync(String),
    /// A snapshot from one peer (a relay that just started).
    PullFrom(String),
}

pub struct RepairWorker {
    pub key: SharedKey,
    pub memcached: ServerAddr,
    pub timeouts: Timeouts,
    pub peers: Vec<String>,
    pub max_value_bytes: usize,
    pub repairs_per_sec: u32,
    pub resync_interval: Duration,
    pub counters: Arc<Counters>,
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
        // Pending ranges merged per (origin, epoch).
        let mut pending: HashMap<(u64, u64), Missing> = HashMap::new();
        let mut resync: Option<String> = None;
        let mut pulls: Vec<String> = Vec::new();
        let mut next_resync = Instant::now();
        let spacing = Duration::from_secs(1) / self.repairs_per_sec;
        let mut next_repair = Instant::now();
        loop {
            let wait = if pending.is_empty() && resync.is_none() {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(20)
            };
            let wait = if pulls.is_empty() {
                wait
            } else {
                Duration::ZERO
            };
            match rx.recv_timeout(wait) {
                Ok(job) => self.queue(job, &mut pending, &mut resync, &mut pulls),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(job) = rx.try_recv() {
                self.queue(job, &mut pending, &mut resync, &mut pulls);
            }
            if let Some(peer) = pulls.pop() {
                self.pull(
                    &mut mc,
                    &peer,
                    "it started after us and may hold writes made while it was away",
                );
            }
            if Instant::now() >= next_repair {
                if let Some(id) = pending.keys().next().copied() {
                    let Some(missing) = pending.remove(&id) else {
                        continue;
                    };
                    next_repair = Instant::now() + spacing;
                    match self.repair(&mut mc, &missing) {
                        Ok(Fetch::Done(n)) => Counters::add(&self.counters.frames_repaired, n),
                        Ok(Fetch::Gone) => {
                            Counters::inc(&self.counters.repairs_gone);
                            resync.get_or_insert_with(|| {
                                "a missed range left the origin's replay ring".into()
                            });
                        }
                        Err(e) => {
                            Counters::inc(&self.counters.repairs_failed);
                            warn!(
                                origin = format!("{:016x}", missing.origin),
                                "repair failed: {e}"
                            );
                            resync.get_or_insert_with(|| "a repair failed".into());
                        }
                    }
                }
            }
            if resync.is_some() && Instant::now() >= next_resync {
                let reason = resync.take().unwrap_or_default();
                next_resync = Instant::now() + self.resync_interval;
                self.resync(&mut mc, &reason);
            }
        }
    }

    fn queue(
        &self,
        job: Job,
        pending: &mut HashMap<(u64, u64), Missing>,
        resync: &mut Option<String>,
        pulls: &mut Vec<String>,
    ) {
        match job {
            Job::PullFrom(peer) => {
                if !pulls.contains(&peer) {
                    pulls.push(peer);
                }
            }
            Job::Repair(m) if m.repair_addr.is_some() => {
                pending
                    .entry((m.origin, m.epoch))
                    .and_modify(|p| {
                        p.from = p.from.min(m.from);
                        p.to = p.to.max(m.to);
                        p.repair_addr = m.repair_addr.clone();
                    })
                    .or_insert(m);
            }
            Job::Repair(_) => {
                resync.get_or_insert_with(|| {
                    "frames lost from an origin that serves no repairs".into()
                });
            }
            Job::Resync(reason) => {
                resync.get_or_insert(reason);
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

    /// Asks each peer in turn for a snapshot until one completes.
    fn resync(&self, mc: &mut Memcached, reason: &str) {
        if self.peers.is_empty() {
            Counters::inc(&self.counters.resyncs_failed);
            warn!("resync needed ({reason}) but no --peer is configured: this replica may miss writes until they are written again");
            return;
        }
        for peer in &self.peers {
            if self.pull(mc, peer, reason) {
                return;
            }
        }
        Counters::inc(&self.counters.resyncs_failed);
        warn!(
            "resync failed: no peer could serve a snapshot; retrying in {} s",
            self.resync_interval.as_secs()
        );
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
        let sockaddr = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let mut conn = TcpStream::connect_timeout(&sockaddr, Duration::from_secs(2))
            .map_err(|e| format!("{addr}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        conn.write_all(&request.encode(&self.key, unix_millis()))
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, conn);
        let max = peer::max_record_len(self.max_value_bytes);
        let deadline = Instant::now() + budget;
        let mut n = 0u64;
        loop {
            if Instant::now() > deadline {
                return Err(format!("{addr}: took longer than {} s", budget.as_secs()));
            }
            match peer::read_record(&mut reader, max).map_err(|e| format!("{addr}: {e}"))? {
                Record::End => return Ok(Fetch::Done(n)),
                Record::Gone => return Ok(Fetch::Gone),
                Record::Frame(bytes) => {
                    let frame = match Frame::open(&bytes, &self.key, self.max_value_bytes) {
                        Ok(f) => f,
                        Err(e) => {
                            Counters::inc(self.counters.dropped(e.reason()));
                            return Err(format!("{addr}: sent a bad frame: {e}"));
                        }
                    };
                    self.apply(mc, &frame)?;
                    n += 1;
                }
            }
        }
    }

    fn apply(&self, mc: &mut Memcached, frame: &Frame) -> Result<(), String> {
        for attempt in 0..50 {
            match apply_frame(mc, frame) {
                Ok(Outcome::Stored) => Counters::inc(&self.counters.applied),
                Ok(Outcome::SkippedOlder) => Counters::inc(&self.counters.skipped_older),
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
