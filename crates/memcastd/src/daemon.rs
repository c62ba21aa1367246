//! The daemon: start-up, then the receive loop. Frames from the group are
//! authenticated, checked against replays and gaps, and handed to the
//! [`Applier`]; frames from this host's PHP workers go through the
//! [`Relay`]. Between receives, the loop runs its periodic tasks (each an
//! [`Every`]): heartbeats, gap and catch-up requests to the repair worker,
//! the completeness check behind the warm sentinel ([`Warmth`]), forgetting
//! idle origins, and the stats line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_bus::{BusError, Source, Sources, Subscriber};
use memcast_core::host_counters::HostCounter;
use memcast_core::replica::WARM_SENTINEL;
use memcast_core::{unix_millis, Frame, Keys, Memcached, Op, Origin, ServerAddr};
use parking_lot::Mutex;
use tracing::{debug, error, info, warn};

use crate::applier::Applier;
use crate::completeness::{MemcachedStats, Observed};
use crate::config::{ConfigError, Settings};
use crate::counters::Counters;
use crate::every::Every;
use crate::heard::HeardFrames;
use crate::key_store::{describe, KeyStore};
use crate::metrics::Shared;
use crate::peer_server::PeerServer;
use crate::php_publish::PhpPublish;
use crate::relay::Relay;
use crate::repair::{Job, RepairQueue, RepairWorker, Report};
use crate::sequences::{Learnt, Missing, Origins, Replay};
use crate::warmth::Warmth;
use crate::warnings::Warnings;

/// A gap from an origin whose repair address is unknown waits this long for
/// a heartbeat naming it before a resync is asked for instead.
const UNADDRESSED_WAIT: Duration = Duration::from_secs(3);
/// How often gaps of origins without a repair address are looked at.
const UNADDRESSED_EVERY: Duration = Duration::from_millis(500);
/// How often memcached's stats are read and the warm sentinel refreshed
/// (see [`crate::completeness`]).
const COMPLETE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often silent origins are asked where their sequence stands.
const CATCH_UP_EVERY: Duration = Duration::from_millis(500);
/// Origins not heard from for this long are forgotten.
const ORIGIN_IDLE: Duration = Duration::from_secs(600);
/// How long one receive waits before the periodic tasks get their turn.
const RECEIVE_WAIT: Duration = Duration::from_millis(50);
/// Catch-ups an origin answers in a row, with nothing of it on the group in
/// between, before this host's receiver is taken to be deaf to it and the
/// group joined again (see [`Daemon::rejoin_group`]).
const DEAF_CATCH_UPS: u32 = 3;
/// The shortest time between two rejoins; it doubles with each rejoin up
/// to [`REJOIN_MOST`], and is back to this after [`REJOIN_MOST`] without one.
const REJOIN_EVERY: Duration = Duration::from_secs(10);
const REJOIN_MOST: Duration = Duration::from_secs(300);
/// For this long after a rejoin, a frame whose sequence number was seen
/// already (or is below the window) counts as a duplicate, not a replay
/// (see [`Daemon::admit`]).
const AFTER_REJOIN_DUPLICATES: Duration = Duration::from_secs(10);
/// At exit, frames still queued are taken, up to this many.
const DRAIN_AT_EXIT: usize = 100_000;
/// Frames taken from the queue before the next batch is applied.
const DRAIN_AT_MOST: usize = 1024;
/// A configured peer whose relay is not followed here (never heard on the
/// group, or its last epoch given up) is asked for it over TCP this long
/// after memcastd started (as long as the warm-up waits for peers' relays)...
const ASK_RELAY_AFTER_MS: u64 = 500;
/// ...then again after this, doubling while it cannot be reached...
const ASK_RELAY_EVERY: Duration = Duration::from_secs(10);
const ASK_RELAY_MOST: Duration = Duration::from_secs(300);
/// ...or after this when it runs no relay (PHP there publishes directly).
const ASK_RELAY_NONE: Duration = Duration::from_secs(60);

/// Why the daemon could not start: what failed, by the flag that names it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--memcached: {0}")]
    Memcached(String),
    #[error("{0}")]
    Subscribe(#[source] BusError),
    #[error("{flag}: {source}")]
    Bus { flag: String, source: BusError },
    #[error("{flag}: {source}")]
    Listen {
        flag: String,
        source: std::io::Error,
    },
}

impl StartError {
    pub fn bus(flag: impl Into<String>, source: BusError) -> StartError {
        StartError::Bus {
            flag: flag.into(),
            source,
        }
    }
}

/// How a SIGHUP rereads the configuration: the settings as they resolve now
/// (file and flags), and how to change the log level.
pub struct Reloader {
    pub settings: Box<dyn Fn() -> Result<Settings, ConfigError> + Send>,
    pub log_level: Box<dyn Fn(&str) + Send>,
}

/// The repair worker's queue and what it reports back.
struct Repairs {
    queue: RepairQueue,
    reports: Receiver<Report>,
}

/// The loop's periodic tasks (the relay's heartbeat is the relay's).
struct Timers {
    unaddressed: Every,
    catch_up: Every,
    ask_relays: Every,
    complete_check: Every,
    forget: Every,
    stats: Every,
}

impl Timers {
    fn new(s: &Settings, now: Instant) -> Timers {
        // The stats line every --stats-interval (0: only at exit).
        let stats = Duration::from_secs(s.stats_interval);
        Timers {
            unaddressed: Every::new(UNADDRESSED_EVERY, now),
            catch_up: Every::new(CATCH_UP_EVERY, now),
            ask_relays: Every::new(
                CATCH_UP_EVERY,
                now + Duration::from_millis(2 * s.heartbeat_ms + ASK_RELAY_AFTER_MS),
            ),
            complete_check: Every::new(COMPLETE_CHECK_EVERY, now),
            forget: Every::new(ORIGIN_IDLE, now + ORIGIN_IDLE),
            stats: Every::new(stats, now + stats),
        }
    }
}

pub struct Daemon {
    settings: Settings,
    reloader: Option<Reloader>,
    keys: Arc<KeyStore>,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    origins: Origins,
    /// Frames heard from origins that keep no ring, served to peers.
    heard: Arc<Mutex<HeardFrames>>,
    applier: Applier,
    relay: Option<Relay>,
    repairs: Option<Repairs>,
    warmth: Warmth,
    /// Applying writes older than `--max-lag-ms`: a resync was asked for.
    out_of_sync: bool,
    /// What this host's PHP workers could not publish.
    php_publish: PhpPublish,
    warnings: Warnings,
    /// `--batch-us` and `--apply-batch-us`, and when the last batch of
    /// each source was taken.
    relay_window: Duration,
    apply_window: Duration,
    relay_batch: Option<Instant>,
    group_batch: Option<Instant>,
    /// An origin this host's receiver seems deaf to (rejoin the group), and
    /// when the group was last joined again.
    deaf_to: Option<u64>,
    last_rejoin: Option<Instant>,
    rejoin_wait: Duration,
    /// Per configured peer whose relay is not followed: when to ask it
    /// next, and the wait after that.
    relay_asks: std::collections::HashMap<String, (Instant, Duration)>,
}

impl Daemon {
    pub fn new(settings: Settings, keys: KeyStore) -> Result<Daemon, StartError> {
        let addr = ServerAddr::parse(&settings.memcached).map_err(StartError::Memcached)?;
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared::new(Arc::clone(&counters)));
        let applier = Applier::new(
            Memcached::new(addr, settings.timeouts()),
            settings.memcached.clone(),
            settings.backlog,
            Arc::clone(&shared),
        );
        Ok(Daemon {
            reloader: None,
            origins: Origins::new(unix_millis(), settings.max_origins),
            keys: Arc::new(keys),
            counters,
            shared,
            heard: Arc::new(Mutex::new(HeardFrames::new(settings.ring_bytes()))),
            applier,
            relay: None,
            repairs: None,
            warmth: Warmth::new(!settings.peer.is_empty(), settings.resync_on_start),
            out_of_sync: false,
            php_publish: PhpPublish::default(),
            warnings: Warnings::default(),
            relay_window: Duration::from_micros(settings.batch_us),
            apply_window: Duration::from_micros(settings.apply_batch_us),
            relay_batch: None,
            group_batch: None,
            deaf_to: None,
            last_rejoin: None,
            rejoin_wait: REJOIN_EVERY,
            relay_asks: std::collections::HashMap::new(),
            settings,
        })
    }

    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    /// Runs until `stop` is set (SIGTERM, SIGINT); rereads the configuration
    /// and the key files whenever `reload` is set (SIGHUP).
    pub fn run(
        &mut self,
        stop: Arc<AtomicBool>,
        reload: Arc<AtomicBool>,
    ) -> Result<(), StartError> {
        let mut subscriber = self.start()?;
        let mut timers = Timers::new(&self.settings, Instant::now());
        while !stop.load(Ordering::Relaxed) {
            self.receive(&mut subscriber);
            if reload.swap(false, Ordering::Relaxed) {
                self.reload();
                let stats = Duration::from_secs(self.settings.stats_interval);
                if stats != timers.stats.period() {
                    timers.stats.set_period(stats, Instant::now());
                }
            }
            self.run_due(&mut timers, Instant::now());
            if let Some(origin) = self.deaf_to.take() {
                self.rejoin_group(&mut subscriber, origin, Instant::now());
            }
        }
        self.stop(&mut subscriber);
        Ok(())
    }

    /// Opens the sockets and servers, starts the repair worker, and says
    /// what this memcached is (not known complete until a warm-up).
    fn start(&mut self) -> Result<Subscriber, StartError> {
        let s = self.settings.clone();
        let mut subscriber =
            Subscriber::connect(&s.subscribe, &s.bus()).map_err(StartError::Subscribe)?;
        let origin = Origin::new();
        let (origin_id, epoch) = (origin.id, origin.epoch);
        self.relay = Relay::start(&s, origin, &mut subscriber)?;
        if let Some(addr) = &s.metrics {
            crate::metrics::serve(addr, Arc::clone(&self.shared)).map_err(|source| {
                StartError::Listen {
                    flag: format!("--metrics {addr}"),
                    source,
                }
            })?;
        }
        if let Some(listen) = &s.listen.repairs {
            let server = PeerServer {
                keys: Arc::clone(&self.keys),
                memcached: self.applier.addr().clone(),
                timeouts: s.timeouts(),
                ring: self.relay.as_ref().map(Relay::ring),
                relay_heartbeat: self.relay.as_ref().map(Relay::last_heartbeat),
                heard: Arc::clone(&self.heard),
                counters: Arc::clone(&self.counters),
                origin: origin_id,
                epoch,
                transfer_bytes_per_sec: s.transfer_mbps * 1_000_000 / 8,
            };
            server.spawn(listen).map_err(|source| StartError::Listen {
                flag: format!("--listen {listen}"),
                source,
            })?;
        }
        self.repairs = Some(self.start_repairs());
        // Nothing is known about the memcached yet (frames were missed while
        // this daemon was away): it is not vouched for until a warm-up.
        self.warmth.delete_sentinel(self.applier.memcached());
        self.plan_warm_up();
        info!(
            memcached = %s.memcached,
            subscribe = ?s.subscribe,
            relay = ?s.relay,
            publish = ?s.publish,
            listen = ?s.listen.repairs,
            fanout = ?s.listen.fanout,
            peers = ?s.peer,
            "memcastd started, {}",
            describe(&self.keys.get())
        );
        match self.applier.memcached().stats() {
            Ok(_) => info!(memcached = %s.memcached, "memcached reachable"),
            Err(e) => self.applier.memcached_failed(&e),
        }
        Ok(subscriber)
    }

    fn start_repairs(&self) -> Repairs {
        let s = &self.settings;
        let (report_tx, reports) = std::sync::mpsc::channel();
        let queue = RepairWorker {
            keys: Arc::clone(&self.keys),
            memcached: self.applier.addr().clone(),
            timeouts: s.timeouts(),
            peers: s.peer.clone(),
            max_value_bytes: s.max_value_bytes,
            repairs_per_sec: s.repairs_per_sec,
            resync_interval: Duration::from_secs(s.resync_interval),
            anti_entropy_interval: Duration::from_secs(s.anti_entropy_interval),
            counters: Arc::clone(&self.counters),
            reports: report_tx,
            heard: Arc::clone(&self.heard),
        }
        .spawn();
        Repairs { queue, reports }
    }

    /// The startup warm-up: when, or why there is none.
    fn plan_warm_up(&mut self) {
        let s = &self.settings;
        if s.peer.is_empty() {
            warn!("no --peer configured: a restarted or evicting memcached cannot be refilled, so this memcached is never known complete (no {} sentinel) and PHP confirms every miss here on the next server; give every host --listen and each memcastd its peers with --peer to fix this", String::from_utf8_lossy(WARM_SENTINEL));
        } else if s.resync_on_start {
            // Frames an origin sent before this host first heard it are not
            // gaps here: the snapshot must be taken after that, so it holds
            // them. Every relay heartbeats, so once each peer's relay was
            // heard its stream is joined (peers that are down: the deadline).
            let wait = Duration::from_millis(2 * s.heartbeat_ms + 500);
            info!(
                "refilling memcached from peers before vouching for it (warm-up), once every peer's relay was heard (at most {} ms)",
                wait.as_millis()
            );
            self.warmth
                .wait_for_peers(Instant::now() + wait, s.peer.clone());
        } else {
            warn!("--resync-on-start false: memcached is not refilled at startup, so it is not known complete and PHP confirms every miss here on the next server");
        }
    }

    /// Waits a moment for a frame, then takes it and whatever is queued
    /// behind it as one batch: the relay sends its frames together, the
    /// group's are applied together. Each source has its window, from the
    /// start of its last batch: `--batch-us` for the relay (short: its
    /// frames are the only copy outside this host until they are sent) and
    /// `--apply-batch-us` for the group (longer: those frames are safe in
    /// their sender's ring). Inside its window a source is not listened to:
    /// its frames queue, and the loop sleeps instead of waking for each;
    /// then they are taken at once. After a quiet window a frame is handled
    /// as it comes (an idle host adds no delay).
    fn receive(&mut self, subscriber: &mut Subscriber) {
        let now = Instant::now();
        let relay_from = self.relay_batch.map_or(now, |t| t + self.relay_window);
        let group_from = self.group_batch.map_or(now, |t| t + self.apply_window);
        let from = Sources {
            relay: relay_from <= now,
            group: group_from <= now,
        };
        let mut wait = RECEIVE_WAIT;
        for until in [relay_from, group_from] {
            if until > now {
                wait = wait.min(until - now);
            }
        }
        if wait < Duration::from_millis(1) {
            // ZeroMQ waits in whole milliseconds: the last part of a
            // window is slept exactly (the other source waits as long).
            std::thread::sleep(wait);
            return;
        }
        // Whole milliseconds, rounded down: woken at the window's end or
        // just before it, never a millisecond after.
        let wait = Duration::from_millis(wait.as_millis() as u64);
        match subscriber.recv_from(from, wait) {
            Ok(Some((source, bytes))) => {
                let started = Instant::now();
                let (mut relayed, mut grouped) = (0, 0);
                let mut next = Some((source, bytes));
                while let Some((source, bytes)) = next.take() {
                    match source {
                        Source::Relay => relayed += 1,
                        Source::Group => grouped += 1,
                    }
                    self.handle(source, &bytes);
                    if relayed + grouped < DRAIN_AT_MOST {
                        next = subscriber.try_recv_from(from).ok().flatten();
                    }
                }
                // A batch cut short by the cap leaves its source listened
                // to: what is queued behind it goes next, not a window later.
                let full = relayed + grouped >= DRAIN_AT_MOST;
                if relayed > 0 {
                    self.relay_batch = (!full).then_some(started);
                    // Other hosts wait for these: sent before applying here.
                    self.send_relayed();
                }
                if grouped > 0 {
                    self.group_batch = (!full).then_some(started);
                    self.applier.flush();
                }
            }
            Ok(None) => {}
            Err(e) => {
                error!("receiving: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The periodic tasks that are due at `now`.
    fn run_due(&mut self, t: &mut Timers, now: Instant) {
        if self.relay.as_mut().is_some_and(|r| r.heartbeat.due(now)) {
            self.heartbeat();
        }
        self.applier.retry_backlog(now);
        self.applier.flush_own_if_due(now);
        if t.unaddressed.due(now) {
            for missing in self.origins.unaddressed_since(UNADDRESSED_WAIT) {
                self.report_gap(missing);
            }
        }
        self.take_reports();
        if t.catch_up.due(now) {
            self.ask_silent_origins();
        }
        // Before the warm-up may start: its snapshot then holds what an
        // unheard relay sent up to the heartbeat its host answers with.
        if t.ask_relays.due(now) {
            self.ask_unheard_relays(now);
        }
        if self.warmth.start_warm_up_when_joined(now) {
            self.send_job(Job::WarmUp);
        }
        if t.complete_check.due(now) {
            self.check_complete();
        }
        if t.forget.due(now) {
            self.origins.forget_idle(ORIGIN_IDLE);
        }
        if t.stats.due(now) {
            info!("stats: {} origins={}", self.counters, self.origins.len());
        }
    }

    /// What is queued and left to apply, then the goodbyes: the sentinel
    /// goes and a last heartbeat tells peers the final sequence number.
    fn stop(&mut self, subscriber: &mut Subscriber) {
        // What queued inside the batching windows: PHP's frames are relayed
        // (PHP counted them as sent), the group's applied.
        for _ in 0..DRAIN_AT_EXIT {
            match subscriber.try_recv_from(Sources::ALL) {
                Ok(Some((source, bytes))) => self.handle(source, &bytes),
                _ => break,
            }
        }
        self.send_relayed();
        self.applier.flush_all();
        // Nobody vouches for this memcached any more.
        self.warmth.delete_sentinel(self.applier.memcached());
        self.heartbeat();
        info!(
            "memcastd stopping: {} origins={}",
            self.counters,
            self.origins.len()
        );
    }

    fn handle(&mut self, source: Source, bytes: &[u8]) {
        match source {
            Source::Group => self.handle_group(bytes),
            Source::Relay => self.handle_relay(bytes),
        }
    }

    /// A frame from this host's PHP: sent as the host's own by the relay,
    /// and applied here too if newer (see the applier's own writes).
    fn handle_relay(&mut self, bytes: &[u8]) {
        let frame = match Frame::open(bytes, &*self.keys.get(), self.settings.max_value_bytes) {
            Ok(f) => f,
            Err(e) => {
                Counters::inc(self.counters.dropped(e.reason()));
                self.warnings.warn(
                    "relay-in",
                    &format!("dropped a frame from a local PHP worker: {e}"),
                );
                return;
            }
        };
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        let frame = relay.relay(frame, &*self.keys.get());
        if frame.op.stores() {
            self.applier.push_own(frame);
        }
    }

    /// Sends the relay's frames of this batch, counting what went out and
    /// what could not.
    fn send_relayed(&mut self) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        let sent = relay.send_queued();
        if sent.frames == 0 {
            return;
        }
        Counters::inc(&self.counters.relay_batches);
        Counters::add(&self.counters.relayed, sent.frames - sent.failed);
        Counters::add(&self.counters.dropped_relay, sent.failed);
        if let Some(e) = sent.error {
            self.warnings.warn(
                "relay-out",
                &format!("could not send {} relayed frames: {e}", sent.failed),
            );
        }
    }

    fn heartbeat(&mut self) {
        // The heartbeat names the last sequence number: what it covers goes
        // out first, or receivers would take frames still queued for gaps.
        self.send_relayed();
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if relay.send_heartbeat(&*self.keys.get()) {
            Counters::inc(&self.counters.heartbeats_sent);
        }
    }

    /// One datagram from the group: authenticated and decrypted, checked
    /// against replays (too old by its send time, or a sequence number
    /// already seen), then applied.
    fn handle_group(&mut self, bytes: &[u8]) {
        Counters::inc(&self.counters.received);
        let Some(frame) = self.admit(bytes) else {
            return;
        };
        if let Some(missing) = self.origins.observe(&frame) {
            self.report_gap(missing);
        }
        let shared_with_peers =
            self.settings.listen.repairs.is_some() || !self.settings.peer.is_empty();
        if shared_with_peers
            && frame.op != Op::Heartbeat
            && !self.origins.serves_repairs(frame.origin, frame.epoch)
        {
            // Peers that missed it can get it from here.
            self.heard
                .lock()
                .push(frame.origin, frame.epoch, frame.seq, bytes);
        }
        self.counters
            .origins_evicted
            .store(self.origins.evicted(), Ordering::Relaxed);
        if frame.op == Op::Heartbeat {
            self.warmth
                .heard_relay(&String::from_utf8_lossy(&frame.value));
        }
        if let Some(addr) = self.origins.newly_started_relay(&frame) {
            self.send_job(Job::PullFrom(addr));
        }
        if frame.op == Op::Heartbeat {
            return;
        }
        self.check_lag(&frame);
        self.applier.push(frame);
    }

    /// The frame in `bytes` if it opens with the cluster key, fits the
    /// limits and is no replay; every drop counted and warned about.
    fn admit(&mut self, bytes: &[u8]) -> Option<Frame> {
        let opened = Frame::open_envelope(bytes, &*self.keys.get(), self.settings.max_value_bytes);
        let (frame, envelope) = match opened {
            Ok(f) => f,
            Err(e) => {
                let reason = e.reason();
                Counters::inc(self.counters.dropped(reason));
                self.warnings
                    .warn(reason, &format!("dropped a frame ({reason}): {e}"));
                return None;
            }
        };
        if frame.key.len() > self.settings.max_key_length {
            Counters::inc(&self.counters.dropped_size);
            self.warnings.warn(
                "size",
                &format!(
                    "dropped a frame (size): key of {} bytes is over --max-key-length {}",
                    frame.key.len(),
                    self.settings.max_key_length
                ),
            );
            return None;
        }
        let age = unix_millis().abs_diff(envelope.sent_ms);
        if age > self.settings.max_frame_age_ms {
            Counters::inc(&self.counters.dropped_replay);
            self.warnings.warn(
                "replay-age",
                &format!(
                    "dropped a frame (replay): sealed {age} ms away from this host's clock, over --max-frame-age-ms {} (origin {:016x})",
                    self.settings.max_frame_age_ms, frame.origin
                ),
            );
            return None;
        }
        let admitted = if self.relay.as_ref().map(Relay::origin) == Some(frame.origin) {
            // A host never hears its own relay on the group (PGM has no
            // loopback): such a frame was captured and sent again.
            Err(Replay::OwnOrigin)
        } else {
            self.origins.admit(&frame, envelope.sent_ms)
        };
        match admitted {
            Ok(()) => {}
            Err(Replay::Repaired) => {
                Counters::inc(&self.counters.duplicates);
                return None;
            }
            Err(Replay::Duplicate | Replay::BelowWindow)
                if self
                    .last_rejoin
                    .is_some_and(|t| t.elapsed() < AFTER_REJOIN_DUPLICATES) =>
            {
                // A new receiver can be given again what the old one
                // delivered: dropped all the same, but not a replay.
                Counters::inc(&self.counters.duplicates);
                return None;
            }
            Err(replay) => {
                Counters::inc(&self.counters.dropped_replay);
                self.warnings.warn(
                    "replay",
                    &format!(
                        "dropped a frame (replay): {replay} (origin {:016x} epoch {} seq {})",
                        frame.origin, frame.epoch, frame.seq
                    ),
                );
                return None;
            }
        }
        if envelope.compressed {
            Counters::inc(&self.counters.received_compressed);
        }
        if !envelope.encrypted && self.keys.get().encrypts() {
            Counters::inc(&self.counters.received_unencrypted);
            self.warnings.warn(
                "plaintext",
                &format!("origin {:016x} sends unencrypted frames while this host encrypts: switch encryption on there too", frame.origin),
            );
        }
        Some(frame)
    }

    /// Sends the repair worker a job. Until it is done the memcached is not
    /// known complete: the sentinel goes at once.
    fn send_job(&mut self, job: Job) {
        if let Some(repairs) = self.repairs.as_mut() {
            repairs.queue.send(job);
        }
        self.warmth.delete_sentinel(self.applier.memcached());
    }

    /// What the repair worker learnt: origins heard over TCP, rings gone,
    /// warm-ups completed.
    fn take_reports(&mut self) {
        let Some(repairs) = &self.repairs else {
            return;
        };
        let taken: Vec<Report> = repairs.reports.try_iter().collect();
        for report in taken {
            match report {
                Report::Heard {
                    origin,
                    epoch,
                    from,
                    through,
                    caught_up,
                } => {
                    self.origins.heard(origin, epoch, from, through);
                    if caught_up && self.origins.caught_up(origin, epoch) >= DEAF_CATCH_UPS {
                        self.deaf_to = Some(origin);
                    }
                }
                Report::Gone { origin, epoch } => {
                    self.origins.give_up(origin, epoch);
                    if self.origins.newest_epoch(origin).is_none_or(|e| e <= epoch) {
                        // Not a restart (whose host is pulled from anyway):
                        // what it sent is out of its ring.
                        self.send_job(Job::Resync(format!(
                            "a silent origin's ring no longer holds what this host missed (origin {origin:016x})"
                        )));
                    }
                }
                Report::WarmedUp(mark) => self.warmth.warmed_up(mark),
                Report::PeerRelay {
                    peer,
                    after_warm_up,
                    answer,
                } => self.peer_relay(peer, after_warm_up, answer),
            }
        }
    }

    /// Asks each configured peer whose relay this host does not follow
    /// (never heard on the group: its multicast does not reach this host)
    /// for that relay's heartbeat, over TCP ([`Daemon::peer_relay`]).
    /// Without this an origin never heard would never be caught up: only
    /// the anti-entropy comparison, minutes apart, would bring its writes.
    fn ask_unheard_relays(&mut self, now: Instant) {
        let Some(repairs) = self.repairs.as_mut() else {
            return;
        };
        let followed = self.origins.relay_addrs();
        let own = self.settings.advertise.as_deref();
        for peer in &self.settings.peer {
            if Some(peer.as_str()) == own || followed.contains(peer.as_str()) {
                self.relay_asks.remove(peer);
                continue;
            }
            let (next, wait) = self
                .relay_asks
                .entry(peer.clone())
                .or_insert((now, ASK_RELAY_EVERY));
            if now < *next {
                continue;
            }
            *next = now + *wait;
            repairs.queue.ask(Job::AskRelay {
                peer: peer.clone(),
                after_warm_up: !self.warmth.waiting_for_peers(),
            });
        }
    }

    /// A peer's answer about its relay: one not heard on the group is
    /// followed from now on (caught up from its ring while silent here),
    /// with a warning, since its writes reach this host seconds late.
    fn peer_relay(
        &mut self,
        peer: String,
        after_warm_up: bool,
        answer: Result<Option<Vec<u8>>, String>,
    ) {
        let now = Instant::now();
        let sealed = match answer {
            Ok(Some(sealed)) => sealed,
            Ok(None) => {
                // No relay there (or none yet): PHP on that host publishes
                // directly, which the heard tables cover.
                self.relay_asks
                    .insert(peer, (now + ASK_RELAY_NONE, ASK_RELAY_EVERY));
                return;
            }
            Err(e) => {
                debug!(%peer, "could not ask a peer for its relay: {e}");
                if let Some((at, wait)) = self.relay_asks.get_mut(&peer) {
                    *wait = (*wait * 2).min(ASK_RELAY_MOST);
                    *at = now + *wait;
                }
                return;
            }
        };
        self.relay_asks
            .insert(peer.clone(), (now + ASK_RELAY_EVERY, ASK_RELAY_EVERY));
        let frame = match Frame::open(&sealed, &*self.keys.get(), self.settings.max_value_bytes) {
            Ok(f) if f.op == Op::Heartbeat => f,
            Ok(_) => return,
            Err(e) => {
                Counters::inc(self.counters.dropped(e.reason()));
                self.warnings.warn(
                    e.reason(),
                    &format!("dropped peer {peer}'s answer about its relay: {e}"),
                );
                return;
            }
        };
        if self.relay.as_ref().map(Relay::origin) == Some(frame.origin) {
            return;
        }
        let Learnt::New(missing) = self.origins.learn(&frame, after_warm_up) else {
            return; // heard on the group meanwhile, or an older epoch
        };
        Counters::inc(&self.counters.relays_learnt_by_tcp);
        let host = String::from_utf8_lossy(&frame.key).into_owned();
        // Once per relay start (origin, epoch): not rate-limited.
        warn!(
            "the relay of peer {peer} (host {host:?}, origin {:016x}) is not heard on the group here: learnt from the peer over TCP; its writes reach this host by catch-up from its ring, seconds late, until the group delivers them: check that multicast from that host reaches this one (interface, group and port, TTL, IGMP snooping, firewall)",
            frame.origin
        );
        self.warmth
            .heard_relay(&String::from_utf8_lossy(&frame.value));
        if let Some(addr) = self.origins.newly_started_relay(&frame) {
            self.send_job(Job::PullFrom(addr));
        }
        if let Some(m) = missing {
            self.report_gap(m);
        }
    }

    /// The group's receiver seems deaf to `origin`: it answered catch-up
    /// after catch-up over TCP (so it is up and sending, heartbeats at
    /// least) while nothing of it came on the group. A PGM receiver can stay
    /// stuck on one sender after loss, and a switch can forget a multicast
    /// membership; either way this host would get that origin's writes only
    /// seconds late, by catch-up, for as long as it runs. A new receiver
    /// (which also joins the group at the IP level again) ends both. At most
    /// once per [`REJOIN_EVERY`], doubling while it keeps recurring; what is
    /// lost in the swap is repaired as any gap.
    fn rejoin_group(&mut self, subscriber: &mut Subscriber, origin: u64, now: Instant) {
        if let Some(last) = self.last_rejoin {
            let since = now.saturating_duration_since(last);
            if since < self.rejoin_wait {
                return;
            }
            // Deaf again soon after the last rejoin: wait longer next time.
            self.rejoin_wait = if since >= REJOIN_MOST {
                REJOIN_EVERY
            } else {
                (self.rejoin_wait * 2).min(REJOIN_MOST)
            };
        }
        self.last_rejoin = Some(now);
        match subscriber.rejoin_group() {
            Ok(()) => {
                Counters::inc(&self.counters.group_rejoins);
                self.origins.forget_catch_ups();
                warn!(
                    origin = format!("{origin:016x}"),
                    "an origin answered {DEAF_CATCH_UPS} catch-ups in a row while nothing of it came on the group: its writes reached this host only by catch-up, seconds late; joined the group again with a new receiver (next time no sooner than in {} s; if this keeps repeating, that host's multicast does not reach this one: a firewall, or IGMP snooping without a querier)", self.rejoin_wait.as_secs()
                );
            }
            Err(e) => error!("joining the group again: {e}"),
        }
    }

    /// Asks every origin silent for two heartbeats, over its repair
    /// connection, for what it sent since; logs the ones given up.
    fn ask_silent_origins(&mut self) {
        let beat = Duration::from_millis(self.settings.heartbeat_ms);
        let (silent, given_up) = self.origins.silent(beat);
        for addr in given_up {
            warn!(%addr, "an origin has been silent and unreachable for {} s while others are heard: no longer waiting for it; what it sent last may be missing here until it returns", crate::sequences::SILENT_GIVE_UP.as_secs());
        }
        self.warmth.silent_origins = silent.len();
        for o in silent {
            self.send_job(Job::CatchUp {
                origin: o.origin,
                epoch: o.epoch,
                after: o.last_seq,
                addr: o.repair_addr,
            });
        }
    }

    /// Once a second: memcached's stats (up, restarted, evicting), whether it
    /// is known complete, and the warm sentinel set (short TTL) or deleted
    /// to match (see [`crate::completeness`]).
    fn check_complete(&mut self) {
        let stats = self.applier.check_memcached();
        if self.settings.metrics.is_some() {
            // The per-origin table, for scrapes (up to --max-origins rows).
            *self.shared.origins.lock() = self.origins.stats();
        }
        if stats.is_ok() {
            self.read_php_counts();
        }
        let repairs_idle = self.repairs.as_ref().is_some_and(|r| r.queue.is_idle())
            && self.applier.is_idle()
            && !self.origins.has_unaddressed();
        let seen = Observed {
            stats: stats.ok().and_then(|s| MemcachedStats::parse(&s[..])),
            repairs_idle,
            silent_origins: self.warmth.silent_origins,
        };
        let checked = self.warmth.check_complete(seen, &self.shared);
        if checked.restarted {
            self.applier.memcached_restarted();
            Counters::inc(&self.counters.cold_detected);
            // The warm-up's snapshot is only as recent as its peer: what this
            // host applied in the last seconds comes again from each ring.
            let own = self.relay.as_ref().and_then(Relay::replay_point);
            for p in self.origins.replay_points().into_iter().chain(own) {
                self.send_job(Job::Replay {
                    origin: p.origin,
                    epoch: p.epoch,
                    after: p.after,
                    addr: p.repair_addr,
                });
            }
        }
        self.origins.sample();
        if let Some(relay) = self.relay.as_mut() {
            relay.sample();
        }
        if checked.warm_up {
            self.send_job(Job::WarmUp);
        }
        self.warmth.update_sentinel(self.applier.memcached());
    }

    /// What this host's PHP workers counted in memcached as not published:
    /// logged when it rises, exported.
    fn read_php_counts(&mut self) {
        let counts = match HostCounter::read_all(self.applier.memcached()) {
            Ok(c) => c,
            Err(e) => return debug!("cannot read PHP's publish counters: {e}"),
        };
        if let Some(w) = self.php_publish.observe(counts, Instant::now()) {
            warn!("{w}");
        }
        *self.shared.php.lock() = (counts, self.php_publish.recent_failures());
    }

    fn report_gap(&mut self, missing: Missing) {
        debug!(?missing, "gap");
        Counters::inc(&self.counters.gaps);
        Counters::add(&self.counters.missing_frames, missing.to - missing.from + 1);
        self.send_job(Job::Repair(missing));
    }

    /// A subscriber applying writes much older than now has fallen behind:
    /// it says so and resyncs rather than serve stale data quietly.
    fn check_lag(&mut self, frame: &Frame) {
        if frame.op == Op::Touch {
            return;
        }
        let lag = unix_millis().saturating_sub(frame.version.millis);
        let max = self.settings.max_lag_ms;
        if lag > max && !self.out_of_sync {
            self.out_of_sync = true;
            Counters::inc(&self.counters.out_of_sync);
            warn!(
                lag_ms = lag,
                max_lag_ms = max,
                "out of sync: applying writes older than --max-lag-ms; resyncing from peers"
            );
            self.send_job(Job::Resync(format!("fell {lag} ms behind")));
        } else if self.out_of_sync && lag <= max / 2 {
            self.out_of_sync = false;
            info!(lag_ms = lag, "caught up: back in sync");
        }
    }

    /// SIGHUP: the configuration file again (when there is one), then the
    /// key files (rotation). What can change live does; what needs a
    /// restart is named in a warning; on any error the running
    /// configuration and keys stay.
    fn reload(&mut self) {
        let new = match self.reloader.as_ref().map(|r| (r.settings)()) {
            None => self.settings.clone(),
            Some(Ok(new)) => new,
            Some(Err(e)) => {
                error!("reloading the configuration failed, keeping the running one: {e}");
                return;
            }
        };
        let keys = self.keys.reload_from(
            new.key_file.clone(),
            new.accept_key_file.clone(),
            new.encrypt,
        );
        match keys {
            Ok(ring) => {
                Counters::inc(&self.counters.key_reloads);
                info!("reloaded keys: {}", describe(&ring));
            }
            Err(e) => {
                error!("reloading keys failed, keeping the keys in use: {e}");
                return;
            }
        }
        let restart = self.settings.needing_restart(&new);
        if !restart.is_empty() {
            warn!(
                "changed in the configuration but only taking effect after a restart: {}",
                restart.join(", ")
            );
        }
        if self.settings.max_origins != new.max_origins {
            self.origins.set_max(new.max_origins);
        }
        if self.settings.log_level != new.log_level {
            if let Some(r) = &self.reloader {
                (r.log_level)(&new.log_level);
            }
        }
        // Each live setting that differs is taken and named in the log.
        let changed = self.settings.take_reloadable(&new);
        self.applier.backlog_max = self.settings.backlog;
        info!(
            "reloaded configuration{}",
            if changed.is_empty() {
                String::new()
            } else {
                format!(": {}", changed.join(", "))
            }
        );
    }
}
