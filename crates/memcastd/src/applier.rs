//! The applier: everything between an accepted frame and the local
//! memcached. It owns the connection, the frames waiting for the next batch
//! (the group's and this host's own), the backlog held while memcached is
//! unreachable, the CAS cache of what it stored, and memcached's health
//! (down since when, when to retry). Frames are applied "if newer" in
//! batches (two round trips per 128); order is kept behind the backlog.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_core::replica::{apply_batch, apply_frame, CasCache, Outcome};
use memcast_core::{unix_millis, Frame, Memcached, StoreError};
use tracing::{debug, info, warn};

use crate::counters::Counters;
use crate::metrics::Shared;
use crate::warnings::Warnings;

/// Keys whose CAS token is remembered (see [`CasCache`]).
const CAS_CACHE_KEYS: usize = 200_000;
/// This host's own writes are applied in batches of up to this many...
const OWN_BATCH: usize = 64;
/// ...or after waiting this long (see [`Whose::Own`]).
const OWN_WAIT: Duration = Duration::from_millis(20);

/// Whose frames a batch holds. They are applied alike; only the group's
/// are counted as applied frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Whose {
    Group,
    /// This host's own writes (relayed frames): PHP stored them here first,
    /// unless this memcached was being skipped (it failed moments ago), when
    /// they went to the next server only and this host would later read its
    /// own older write. Applied if newer, they are a no-op in the usual case:
    /// so they are applied rarely and in bulk (every [`OWN_WAIT`] or
    /// [`OWN_BATCH`] frames: one lookup of all their keys), and without the
    /// CAS cache, whose tokens PHP's own writes have made stale (a `cas`
    /// with one fails and costs a second round trip).
    Own,
}

pub struct Applier {
    memcached: Memcached,
    /// `--memcached` as given, for the log.
    name: String,
    /// Accepted frames waiting for the next batch.
    pending: Vec<Frame>,
    own: Vec<Frame>,
    /// When the oldest of `own` came.
    own_since: Option<Instant>,
    /// Frames held while memcached is unreachable, oldest first.
    backlog: VecDeque<Frame>,
    /// `--backlog`: beyond it the oldest are dropped.
    pub backlog_max: usize,
    /// CAS tokens of what this daemon stored, per key.
    cas_cache: CasCache,
    down_since: Option<Instant>,
    next_retry: Instant,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    warnings: Warnings,
}

impl Applier {
    pub fn new(
        memcached: Memcached,
        name: String,
        backlog_max: usize,
        shared: Arc<Shared>,
    ) -> Applier {
        Applier {
            memcached,
            name,
            pending: Vec::new(),
            own: Vec::new(),
            own_since: None,
            backlog: VecDeque::new(),
            backlog_max,
            cas_cache: CasCache::new(CAS_CACHE_KEYS),
            down_since: None,
            next_retry: Instant::now(),
            counters: Arc::clone(&shared.counters),
            shared,
            warnings: Warnings::default(),
        }
    }

    /// The connection, for the warm sentinel and the counters PHP keeps in
    /// memcached.
    pub fn memcached(&mut self) -> &mut Memcached {
        &mut self.memcached
    }

    pub fn addr(&self) -> &memcast_core::ServerAddr {
        self.memcached.addr()
    }

    /// A frame from the group, for the next batch: behind the backlog when
    /// frames still wait for memcached.
    pub fn push(&mut self, frame: Frame) {
        if !self.backlog.is_empty() {
            self.queue(frame);
            return;
        }
        self.pending.push(frame);
    }

    /// One of this host's own writes (see [`Whose::Own`]).
    pub fn push_own(&mut self, frame: Frame) {
        self.own_since.get_or_insert_with(Instant::now);
        self.own.push(frame);
    }

    /// No frame waits for memcached.
    pub fn is_idle(&self) -> bool {
        self.backlog.is_empty()
    }

    /// Applies the group's frames waiting for the next batch (this host's
    /// own writes go when due: [`Applier::flush_own_if_due`], which the loop
    /// runs after every receive).
    pub fn flush(&mut self) {
        self.flush_batch(Whose::Group);
    }

    /// Applies everything waiting, own writes included (at exit).
    pub fn flush_all(&mut self) {
        self.flush_batch(Whose::Own);
        self.flush_batch(Whose::Group);
    }

    /// Applies this host's own writes once [`OWN_BATCH`] of them wait or
    /// the oldest waited [`OWN_WAIT`].
    pub fn flush_own_if_due(&mut self, now: Instant) {
        let due = self.own.len() >= OWN_BATCH
            || self
                .own_since
                .is_some_and(|t| now.saturating_duration_since(t) >= OWN_WAIT);
        if due {
            self.flush_batch(Whose::Own);
        }
    }

    /// Applies one batch. On a memcached failure the frames wait in the
    /// backlog; on any other error the group's are applied one by one.
    fn flush_batch(&mut self, whose: Whose) {
        if whose == Whose::Own {
            self.own_since = None;
        }
        let frames = std::mem::take(match whose {
            Whose::Group => &mut self.pending,
            Whose::Own => &mut self.own,
        });
        if frames.is_empty() {
            return;
        }
        if !self.backlog.is_empty() {
            // Memcached is away: they wait with the others.
            for f in frames {
                self.queue(f);
            }
            return;
        }
        let started = Instant::now();
        let mut no_cache = CasCache::new(0);
        let cache = match whose {
            Whose::Group => &mut self.cas_cache,
            Whose::Own => &mut no_cache,
        };
        match apply_batch(&mut self.memcached, &frames, cache) {
            Ok(outcomes) if whose == Whose::Group => {
                Counters::inc(&self.counters.apply_batches);
                for (frame, outcome) in frames.iter().zip(outcomes) {
                    self.record(frame, outcome, started);
                }
            }
            Ok(outcomes) => {
                // Not counted as applied: in the usual case PHP stored the
                // same version here, and the frame is skipped as that write.
                let stored = outcomes.iter().filter(|o| **o == Outcome::Stored).count();
                if stored > 0 {
                    debug!(
                        stored,
                        "stored this host's own writes that PHP had stored elsewhere only"
                    );
                }
            }
            Err(e) if e.is_server_failure() => {
                self.cas_cache.clear();
                self.memcached_failed(&e);
                for f in frames {
                    self.queue(f);
                }
            }
            Err(_) if whose == Whose::Group => {
                self.cas_cache.clear();
                for f in frames {
                    if let Err(f) = self.apply(f) {
                        self.queue(f);
                    }
                }
            }
            Err(e) => {
                self.cas_cache.clear();
                debug!("this host's own writes: {e}");
            }
        }
    }

    /// Applies a frame; gives it back when memcached is unreachable.
    fn apply(&mut self, frame: Frame) -> Result<(), Frame> {
        let started = Instant::now();
        match apply_frame(&mut self.memcached, &frame) {
            Ok(outcome) => {
                self.record(&frame, outcome, started);
                Ok(())
            }
            Err(e) if e.is_server_failure() => {
                self.memcached_failed(&e);
                Err(frame)
            }
            Err(e) => {
                Counters::inc(&self.counters.memcached_errors);
                Counters::inc(&self.counters.dropped_store);
                self.warnings
                    .warn("store", &format!("memcached refused a frame: {e}"));
                Ok(())
            }
        }
    }

    /// Counts what applying a frame did, and how long it took.
    fn record(&mut self, frame: &Frame, outcome: Outcome, started: Instant) {
        self.shared
            .apply_latency
            .observe(started.elapsed().as_secs_f64());
        if frame.op.stores() {
            let lag = unix_millis().saturating_sub(frame.version.millis);
            self.shared.lag.observe(lag as f64 / 1000.0);
        }
        self.memcached_up();
        match outcome {
            Outcome::Stored => Counters::inc(&self.counters.applied),
            Outcome::SkippedOlder => Counters::inc(&self.counters.skipped_older),
            Outcome::Touched => Counters::inc(&self.counters.touched),
            Outcome::Conflict => {
                Counters::inc(&self.counters.conflicts);
                self.warnings.warn(
                    "conflict",
                    &format!(
                        "kept the session at key {} (sha256 prefix): a write from origin {:016x} began from a miss but the session exists here (counted in conflicts)",
                        memcast_core::memcached_key::log_name(&frame.key),
                        frame.origin
                    ),
                );
            }
            Outcome::Nothing => {}
        }
    }

    fn memcached_up(&mut self) {
        self.shared.memcached_up.store(true, Ordering::Relaxed);
        if let Some(since) = self.down_since.take() {
            info!(memcached = %self.name, down_ms = since.elapsed().as_millis() as u64, "memcached is back");
        }
    }

    pub fn memcached_failed(&mut self, e: &StoreError) {
        Counters::inc(&self.counters.memcached_errors);
        self.shared.memcached_up.store(false, Ordering::Relaxed);
        if self.down_since.is_none() {
            warn!(
                "{e}; holding frames until it is back (up to {} frames)",
                self.backlog_max
            );
            self.down_since = Some(Instant::now());
        }
        let down = self.down_since.map_or(Duration::ZERO, |t| t.elapsed());
        // Retry quickly at first, then every second.
        let wait = if down < Duration::from_secs(2) {
            100
        } else {
            1000
        };
        self.next_retry = Instant::now() + Duration::from_millis(wait);
    }

    /// Memcached's `stats`, which say whether it is up: a failure starts the
    /// backlog, a success after one ends it.
    pub fn check_memcached(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let stats = self.memcached.stats();
        self.shared
            .memcached_up
            .store(stats.is_ok(), Ordering::Relaxed);
        match &stats {
            Err(e) if e.is_server_failure() => self.memcached_failed(e),
            Ok(_) => self.memcached_up(),
            Err(_) => {}
        }
        self.counters.memcached_reconnects.store(
            self.memcached.connects().saturating_sub(1),
            Ordering::Relaxed,
        );
        stats
    }

    /// Memcached restarted empty: the CAS tokens it gave are gone.
    pub fn memcached_restarted(&mut self) {
        self.cas_cache.clear();
    }

    fn queue(&mut self, frame: Frame) {
        if self.backlog.len() >= self.backlog_max {
            self.backlog.pop_front();
            Counters::inc(&self.counters.dropped_backlog);
            self.warnings.warn(
                "backlog",
                "backlog full while memcached is down: dropped the oldest frame",
            );
        }
        self.backlog.push_back(frame);
    }

    /// Tries the backlog again once memcached's retry time has come.
    pub fn retry_backlog(&mut self, now: Instant) {
        if self.backlog.is_empty() || now < self.next_retry {
            return;
        }
        while let Some(frame) = self.backlog.pop_front() {
            if let Err(frame) = self.apply(frame) {
                self.backlog.push_front(frame);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcast_core::{Op, ServerAddr, StoredValue, Timeouts, Version};
    use memcast_testkit as kit;

    fn applier(server: &kit::Memcached, backlog_max: usize) -> Applier {
        let timeouts = Timeouts {
            connect: Duration::from_millis(200),
            io: Duration::from_millis(1000),
        };
        let addr = ServerAddr::parse(&server.addr()).unwrap();
        let shared = Arc::new(Shared::new(Arc::new(Counters::default())));
        Applier::new(
            Memcached::new(addr, timeouts),
            server.addr(),
            backlog_max,
            shared,
        )
    }

    fn set(key: &str, value: &[u8], millis: u64) -> Frame {
        Frame {
            op: Op::Set,
            origin: 9,
            epoch: 1,
            seq: millis,
            version: Version {
                millis,
                counter: 0,
                origin: 9,
            },
            ttl: 600,
            key: key.into(),
            value: value.to_vec(),
        }
    }

    fn data(a: &mut Applier, key: &str) -> Option<Vec<u8>> {
        let raw = a.memcached().get(key.as_bytes()).unwrap()?;
        Some(StoredValue::parse(&raw).unwrap().data.to_vec())
    }

    #[test]
    fn one_flush_stores_own_writes_and_group_frames_counting_only_the_groups() {
        let server = kit::Memcached::start();
        let mut a = applier(&server, 10);
        a.push(set("memcast.sess.group", b"g", 1000));
        a.push_own(set("memcast.sess.own", b"o", 1000));
        a.flush_all();
        assert_eq!(
            data(&mut a, "memcast.sess.group").as_deref(),
            Some(&b"g"[..])
        );
        assert_eq!(data(&mut a, "memcast.sess.own").as_deref(), Some(&b"o"[..]));
        assert_eq!(a.counters.applied.load(Ordering::Relaxed), 1);
        // Older than what is held: skipped, not stored.
        a.push(set("memcast.sess.group", b"older", 999));
        a.flush();
        assert_eq!(
            data(&mut a, "memcast.sess.group").as_deref(),
            Some(&b"g"[..])
        );
        assert_eq!(a.counters.skipped_older.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn frames_wait_in_the_backlog_while_memcached_is_down_and_apply_in_order() {
        let mut server = kit::Memcached::start();
        let mut a = applier(&server, 2);
        server.kill();
        for (i, value) in [b"v1", b"v2", b"v3"].iter().enumerate() {
            a.push(set("memcast.sess.k", *value, 1000 + i as u64));
            a.flush();
        }
        assert!(!a.is_idle());
        assert!(!a.shared.memcached_up.load(Ordering::Relaxed));
        assert_eq!(
            a.counters.dropped_backlog.load(Ordering::Relaxed),
            1,
            "a backlog of 2 drops the oldest of 3"
        );
        let server = kit::Memcached::start_on(server.port);
        a.retry_backlog(Instant::now() + Duration::from_secs(2));
        assert!(a.is_idle());
        assert!(a.shared.memcached_up.load(Ordering::Relaxed));
        assert_eq!(data(&mut a, "memcast.sess.k").as_deref(), Some(&b"v3"[..]));
        drop(server);
    }
}
