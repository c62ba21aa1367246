//! The subscriber loop: receive, authenticate, decode, apply if newer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_bus::Subscriber;
use memcast_core::store::Expect;
use memcast_core::{
    apply_if_newer, Applied, Frame, Memcached, Op, ServerAddr, SharedKey, StoreError, StoredValue,
    Timeouts,
};
use tracing::{debug, error, info, warn};

use crate::config::Settings;
use crate::stats::Stats;

/// Warnings about bad frames: at most one per reason per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub struct Daemon {
    settings: Settings,
    key: SharedKey,
    memcached: Memcached,
    stats: Stats,
    backlog: VecDeque<Frame>,
    memcached_down_since: Option<Instant>,
    next_retry: Instant,
    last_warned: Vec<(&'static str, Instant)>,
}

impl Daemon {
    pub fn new(settings: Settings, key: SharedKey) -> Result<Daemon, String> {
        let addr =
            ServerAddr::parse(&settings.memcached).map_err(|e| format!("--memcached: {e}"))?;
        let timeouts = Timeouts {
            connect: Duration::from_millis(settings.connect_timeout_ms),
            io: Duration::from_millis(settings.io_timeout_ms),
        };
        Ok(Daemon {
            memcached: Memcached::new(addr, timeouts),
            settings,
            key,
            stats: Stats::default(),
            backlog: VecDeque::new(),
            memcached_down_since: None,
            next_retry: Instant::now(),
            last_warned: Vec::new(),
        })
    }

    /// Runs until `stop` is set (SIGTERM, SIGINT).
    pub fn run(&mut self, stop: Arc<AtomicBool>) -> Result<(), String> {
        let subscriber = Subscriber::connect(&self.settings.subscribe, &self.settings.bus)
            .map_err(|e| e.to_string())?;
        info!(
            memcached = %self.settings.memcached,
            subscribe = ?self.settings.subscribe,
            key_id = format!("{:08x}", self.key.id()),
            "memcastd started"
        );
        match self.memcached.stats() {
            Ok(_) => info!(memcached = %self.settings.memcached, "memcached reachable"),
            Err(e) => self.memcached_failed(&e),
        }
        let interval = Duration::from_secs(self.settings.stats_interval);
        let mut next_stats = Instant::now() + interval;
        while !stop.load(Ordering::Relaxed) {
            match subscriber.recv(Duration::from_millis(100)) {
                Ok(Some(bytes)) => {
                    self.handle(&bytes);
                    // Drain what is already queued before looking at timers.
                    for _ in 0..1024 {
                        match subscriber.try_recv() {
                            Ok(Some(bytes)) => self.handle(&bytes),
                            _ => break,
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    error!("receiving: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if !self.backlog.is_empty() && Instant::now() >= self.next_retry {
                self.drain_backlog();
            }
            if !interval.is_zero() && Instant::now() >= next_stats {
                info!("stats: {}", self.stats);
                next_stats = Instant::now() + interval;
            }
        }
        info!("memcastd stopping: {}", self.stats);
        Ok(())
    }

    /// One datagram from the group.
    pub fn handle(&mut self, bytes: &[u8]) {
        self.stats.received += 1;
        let frame = match Frame::open(bytes, &self.key, self.settings.max_value_bytes) {
            Ok(f) => f,
            Err(e) => {
                let reason = e.reason();
                self.stats.drop(reason);
                self.warn_rate_limited(reason, &format!("dropped a frame ({reason}): {e}"));
                return;
            }
        };
        self.stats.track(
            frame.origin,
            frame.epoch,
            frame.seq,
            frame.op == Op::Heartbeat,
        );
        if frame.op == Op::Heartbeat {
            return;
        }
        if !self.backlog.is_empty() {
            // Keep order behind the frames still waiting for memcached.
            self.queue(frame);
            return;
        }
        if let Err(frame) = self.apply(frame) {
            self.queue(frame);
        }
    }

    /// Applies a frame; gives it back when memcached is unreachable.
    fn apply(&mut self, frame: Frame) -> Result<(), Frame> {
        let result = match frame.op {
            Op::Set | Op::Delete => {
                let value = if frame.op == Op::Set {
                    StoredValue::live(frame.version, &frame.value)
                } else {
                    StoredValue::tombstone(frame.version)
                };
                let ttl = frame.ttl.into();
                apply_if_newer(
                    &mut self.memcached,
                    &frame.key,
                    &value,
                    ttl,
                    Expect::Unknown,
                )
                .map(Some)
            }
            Op::Touch => self
                .memcached
                .touch(&frame.key, frame.ttl.into())
                .map(|_| None),
            Op::Heartbeat => Ok(None),
        };
        match result {
            Ok(outcome) => {
                if let Some(since) = self.memcached_down_since.take() {
                    info!(memcached = %self.settings.memcached, down_ms = since.elapsed().as_millis() as u64, "memcached is back");
                }
                match outcome {
                    Some(Applied::Stored) => self.stats.applied += 1,
                    Some(Applied::SkippedOlder { held }) => {
                        debug!(held = %held, frame = %frame.version, "skipped: memcached holds a newer version");
                        self.stats.skipped_older += 1
                    }
                    None => self.stats.touched += 1,
                }
                Ok(())
            }
            Err(e) if e.is_server_failure() => {
                self.memcached_failed(&e);
                Err(frame)
            }
            Err(e) => {
                self.stats.memcached_errors += 1;
                self.stats.drop("store");
                self.warn_rate_limited("store", &format!("memcached refused a frame: {e}"));
                Ok(())
            }
        }
    }

    fn memcached_failed(&mut self, e: &StoreError) {
        self.stats.memcached_errors += 1;
        if self.memcached_down_since.is_none() {
            warn!(
                "{e}; holding frames until it is back (up to {} frames)",
                self.settings.backlog
            );
            self.memcached_down_since = Some(Instant::now());
        }
        let down = self
            .memcached_down_since
            .map_or(Duration::ZERO, |t| t.elapsed());
        // Retry quickly at first, then every second.
        let wait = if down < Duration::from_secs(2) {
            100
        } else {
            1000
        };
        self.next_retry = Instant::now() + Duration::from_millis(wait);
    }

    fn queue(&mut self, frame: Frame) {
        if self.backlog.len() >= self.settings.backlog {
            self.backlog.pop_front();
            self.stats.drop("backlog");
            self.warn_rate_limited(
                "backlog",
                "backlog full while memcached is down: dropped the oldest frame",
            );
        }
        self.backlog.push_back(frame);
    }

    fn drain_backlog(&mut self) {
        while let Some(frame) = self.backlog.pop_front() {
            if let Err(frame) = self.apply(frame) {
                self.backlog.push_front(frame);
                return;
            }
        }
    }

    fn warn_rate_limited(&mut self, reason: &'static str, message: &str) {
        let now = Instant::now();
        match self.last_warned.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, at)) if now.duration_since(*at) < WARN_EVERY => {}
            Some((_, at)) => {
                *at = now;
                warn!(
                    "{message} (such warnings are limited to one per {}s)",
                    WARN_EVERY.as_secs()
                );
            }
            None => {
                self.last_warned.push((reason, now));
                warn!(
                    "{message} (such warnings are limited to one per {}s)",
                    WARN_EVERY.as_secs()
                );
            }
        }
    }
}
