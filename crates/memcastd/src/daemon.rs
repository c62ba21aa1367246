//! The receive loop: frames from the group are authenticated, checked for
//! gaps and applied if newer; frames from this host's PHP workers (the relay)
//! are stamped with the host's sequence, kept in the replay ring and sent to
//! the group; heartbeats go out on a timer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_bus::{Publisher, Source, Subscriber};
use memcast_core::host_counters::HostCounter;
use memcast_core::replica::{apply_batch, apply_frame, CasCache, Outcome, WARM_SENTINEL};
use memcast_core::{
    unix_millis, Frame, Keys, Memcached, Op, Origin, ServerAddr, StoreError, Version,
};
use parking_lot::Mutex;
use tracing::{debug, error, info, warn};

use crate::completeness::{Completeness, Event, MemcachedStats, Observed, Reason, SENTINEL_TTL_S};
use crate::config::Settings;
use crate::counters::Counters;
use crate::heard::HeardFrames;
use crate::keys::{describe, KeyStore};
use crate::metrics::Shared;
use crate::origins::{Missing, Origins, Replay};
use crate::peer_server::PeerServer;
use crate::php_publish::PhpPublish;
use crate::repair::{Job, RepairQueue, RepairWorker, Report};
use crate::ring::ReplayRing;

/// Warnings about bad frames: at most one per reason per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// A gap from an origin whose repair address is unknown waits this long for
/// a heartbeat naming it before a resync is asked for instead.
const UNADDRESSED_WAIT: Duration = Duration::from_secs(3);
/// How often memcached's stats are read and the warm sentinel refreshed
/// (see [`crate::completeness`]).
const COMPLETE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often silent origins are asked where their sequence stands.
const CATCH_UP_EVERY: Duration = Duration::from_millis(500);
/// Origins not heard from for this long are forgotten.
const ORIGIN_IDLE: Duration = Duration::from_secs(600);

/// This host's single sender to the group, fed by its PHP workers.
struct Relay {
    origin: Origin,
    /// The group (--publish), the TCP fan-out (--listen tcp://), or both.
    publishers: Vec<Publisher>,
    ring: Arc<Mutex<ReplayRing>>,
    advertise: String,
    interval: Duration,
    next_heartbeat: Instant,
}

/// How a SIGHUP rereads the configuration: the settings as they resolve now
/// (file and flags), and how to change the log level.
pub struct Reloader {
    pub settings: Box<dyn Fn() -> Result<Settings, String> + Send>,
    pub log_level: Box<dyn Fn(&str) + Send>,
}

impl Relay {
    /// To every publisher; an error only when none took it.
    fn send(&self, sealed: &[u8]) -> Result<(), memcast_bus::BusError> {
        let mut last = None;
        let mut any = false;
        for p in &self.publishers {
            match p.send(sealed) {
                Ok(()) => any = true,
                Err(e) => last = Some(e),
            }
        }
        match (any, last) {
            (false, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

pub struct Daemon {
    settings: Settings,
    reloader: Option<Reloader>,
    keys: Arc<KeyStore>,
    memcached: Memcached,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    origins: Origins,
    backlog: VecDeque<Frame>,
    /// Accepted frames waiting for the next batch.
    pending: Vec<Frame>,
    /// This host's own writes (relayed frames), applied here too if newer:
    /// see [`Daemon::handle_relay`].
    own: Vec<Frame>,
    /// CAS tokens of what this daemon stored, per key (see [`CasCache`]).
    cas_cache: CasCache,
    memcached_down_since: Option<Instant>,
    next_retry: Instant,
    last_warned: Vec<(&'static str, Instant)>,
    relay: Option<Relay>,
    repairs: Option<RepairQueue>,
    reports: Option<Receiver<Report>>,
    out_of_sync: bool,
    completeness: Completeness,
    /// The warm sentinel may be in memcached (set, not deleted since).
    sentinel_set: bool,
    /// Origins silent at the last look.
    silent_origins: usize,
    /// The startup warm-up waits for a heartbeat from every peer's relay
    /// (by its advertised address) or this deadline: see
    /// [`Daemon::start_warm_up_when_joined`].
    warm_up_waits: Option<(Instant, Vec<String>)>,
    /// What this host's PHP workers could not publish.
    php_publish: PhpPublish,
    /// Frames heard from origins that keep no ring, served to peers.
    heard: Arc<Mutex<HeardFrames>>,
}

impl Daemon {
    pub fn new(settings: Settings, keys: KeyStore) -> Result<Daemon, String> {
        let addr =
            ServerAddr::parse(&settings.memcached).map_err(|e| format!("--memcached: {e}"))?;
        let counters = Arc::new(Counters::default());
        let has_peers = !settings.peers.is_empty();
        let warm_up_at_start = settings.resync_on_start;
        let settings_ring_bytes = settings.ring_bytes;
        Ok(Daemon {
            reloader: None,
            memcached: Memcached::new(addr, settings.timeouts()),
            origins: Origins::new(unix_millis(), settings.max_origins),
            keys: Arc::new(keys),
            settings,
            counters: Arc::clone(&counters),
            shared: Arc::new(Shared::new(counters)),
            backlog: VecDeque::new(),
            pending: Vec::new(),
            own: Vec::new(),
            cas_cache: CasCache::new(200_000),
            memcached_down_since: None,
            next_retry: Instant::now(),
            last_warned: Vec::new(),
            relay: None,
            repairs: None,
            reports: None,
            out_of_sync: false,
            completeness: Completeness::new(has_peers, warm_up_at_start),
            sentinel_set: false,
            silent_origins: 0,
            warm_up_waits: None,
            php_publish: PhpPublish::default(),
            heard: Arc::new(Mutex::new(HeardFrames::new(settings_ring_bytes))),
        })
    }

    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    /// Runs until `stop` is set (SIGTERM, SIGINT); reloads the key files
    /// whenever `reload` is set (SIGHUP).
    pub fn run(&mut self, stop: Arc<AtomicBool>, reload: Arc<AtomicBool>) -> Result<(), String> {
        let mut s = self.settings.clone();
        let mut subscriber =
            Subscriber::connect(&s.subscribe, &s.bus).map_err(|e| e.to_string())?;
        let origin = Origin::new();
        let (origin_id, epoch) = (origin.id, origin.epoch);
        if let Some(relay) = &s.relay {
            subscriber
                .bind_relay(relay, &s.bus)
                .map_err(|e| format!("--relay: {e}"))?;
            let mut publishers = Vec::new();
            if let Some(publish) = &s.publish {
                publishers.push(
                    Publisher::connect(publish, &s.bus).map_err(|e| format!("--publish: {e}"))?,
                );
            }
            if let Some(fanout) = &s.fanout {
                publishers.push(
                    Publisher::bind(fanout, &s.bus)
                        .map_err(|e| format!("--listen {fanout}: {e}"))?,
                );
            }
            if s.advertise.is_none() {
                warn!("relaying without --listen/--advertise: peers cannot repair what they miss from this host, only resync");
            }
            self.relay = Some(Relay {
                ring: Arc::new(Mutex::new(ReplayRing::new(
                    origin.id,
                    origin.epoch,
                    s.ring_bytes,
                ))),
                origin,
                publishers,
                advertise: s.advertise.clone().unwrap_or_default(),
                interval: Duration::from_millis(s.heartbeat_ms),
                // Peers pull a snapshot from a relay when they hear its
                // first heartbeat: by then every local PHP worker has
                // reconnected, so what they could not hand over while this
                // relay was away is in memcached, and in that snapshot.
                next_heartbeat: Instant::now() + memcast_bus::RELAY_RECONNECTED_WITHIN,
            });
        }
        if let Some(addr) = &s.metrics {
            crate::metrics::serve(addr, Arc::clone(&self.shared))
                .map_err(|e| format!("--metrics {addr}: {e}"))?;
        }
        if let Some(listen) = &s.listen {
            let server = PeerServer {
                keys: Arc::clone(&self.keys),
                memcached: self.memcached.addr().clone(),
                timeouts: s.timeouts(),
                ring: self.relay.as_ref().map(|r| Arc::clone(&r.ring)),
                heard: Arc::clone(&self.heard),
                counters: Arc::clone(&self.counters),
                origin: origin_id,
                epoch,
                transfer_bytes_per_sec: s.transfer_mbps * 1_000_000 / 8,
            };
            server
                .spawn(listen)
                .map_err(|e| format!("--listen {listen}: {e}"))?;
        }
        let (report_tx, reports) = std::sync::mpsc::channel();
        let repairs = RepairWorker {
            keys: Arc::clone(&self.keys),
            memcached: self.memcached.addr().clone(),
            timeouts: s.timeouts(),
            peers: s.peers.clone(),
            max_value_bytes: s.max_value_bytes,
            repairs_per_sec: s.repairs_per_sec,
            resync_interval: Duration::from_secs(s.resync_interval_s),
            anti_entropy_interval: Duration::from_secs(s.anti_entropy_s),
            counters: Arc::clone(&self.counters),
            reports: report_tx,
            heard: Arc::clone(&self.heard),
        }
        .spawn();
        // Nothing is known about the memcached yet (frames were missed while
        // this daemon was away): it is not vouched for until a warm-up.
        self.sentinel_set = true;
        self.delete_sentinel();
        if s.peers.is_empty() {
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
            self.warm_up_waits = Some((Instant::now() + wait, s.peers.clone()));
        } else {
            warn!("--resync-on-start false: memcached is not refilled at startup, so it is not known complete and PHP confirms every miss here on the next server");
        }
        self.repairs = Some(repairs);
        self.reports = Some(reports);
        info!(
            memcached = %s.memcached,
            subscribe = ?s.subscribe,
            relay = ?s.relay,
            publish = ?s.publish,
            listen = ?s.listen,
            fanout = ?s.fanout,
            peers = ?s.peers,
            "memcastd started, {}",
            describe(&self.keys.get())
        );
        match self.memcached.stats() {
            Ok(_) => info!(memcached = %s.memcached, "memcached reachable"),
            Err(e) => self.memcached_failed(&e),
        }
        let mut interval = Duration::from_secs(s.stats_interval);
        let mut next_stats = Instant::now() + interval;
        let mut next_forget = Instant::now() + ORIGIN_IDLE;
        let mut next_unaddressed = Instant::now();
        let mut next_complete_check = Instant::now();
        let mut next_catch_up = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match subscriber.recv(Duration::from_millis(50)) {
                Ok(Some((source, bytes))) => {
                    self.handle(source, &bytes);
                    // Drain what is already queued before looking at timers,
                    // then apply it in batches (two round trips per 128).
                    for _ in 0..1024 {
                        match subscriber.try_recv() {
                            Ok(Some((source, bytes))) => self.handle(source, &bytes),
                            _ => break,
                        }
                    }
                    self.flush_pending();
                }
                Ok(None) => {}
                Err(e) => {
                    error!("receiving: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if reload.swap(false, Ordering::Relaxed) {
                self.reload();
            }
            if s.stats_interval != self.settings.stats_interval {
                s.stats_interval = self.settings.stats_interval;
                interval = Duration::from_secs(s.stats_interval);
                next_stats = Instant::now() + interval;
            }
            let now = Instant::now();
            if self.relay.as_ref().is_some_and(|r| now >= r.next_heartbeat) {
                self.heartbeat();
            }
            if !self.backlog.is_empty() && now >= self.next_retry {
                self.drain_backlog();
            }
            if now >= next_unaddressed {
                next_unaddressed = now + Duration::from_millis(500);
                for missing in self.origins.unaddressed_since(UNADDRESSED_WAIT) {
                    self.report_gap(missing);
                }
            }
            self.take_reports();
            if now >= next_catch_up {
                next_catch_up = now + CATCH_UP_EVERY;
                self.ask_silent_origins();
            }
            self.start_warm_up_when_joined(now);
            if now >= next_complete_check {
                next_complete_check = now + COMPLETE_CHECK_EVERY;
                self.check_complete();
            }
            if now >= next_forget {
                self.origins.forget_idle(ORIGIN_IDLE);
                next_forget = now + ORIGIN_IDLE;
            }
            if !interval.is_zero() && now >= next_stats {
                info!("stats: {} origins={}", self.counters, self.origins.len());
                next_stats = now + interval;
            }
        }
        self.flush_pending();
        // Nobody vouches for this memcached any more.
        self.delete_sentinel();
        if self.relay.is_some() {
            // A last heartbeat tells peers the final sequence number.
            self.heartbeat();
        }
        info!(
            "memcastd stopping: {} origins={}",
            self.counters,
            self.origins.len()
        );
        Ok(())
    }

    /// Starts the startup warm-up once every peer's relay was heard (or at
    /// the deadline).
    fn start_warm_up_when_joined(&mut self, now: Instant) {
        let Some((deadline, waiting)) = &self.warm_up_waits else {
            return;
        };
        if !waiting.is_empty() && now < *deadline {
            return;
        }
        if !waiting.is_empty() {
            debug!(peers = ?waiting, "warm-up: no heartbeat heard from these peers' relays; refilling anyway");
        }
        self.warm_up_waits = None;
        self.send_job(Job::WarmUp);
    }

    fn handle(&mut self, source: Source, bytes: &[u8]) {
        match source {
            Source::Group => self.handle_group(bytes),
            Source::Relay => self.handle_relay(bytes),
        }
    }

    /// A frame from this host's PHP: re-stamped as the host's own (origin,
    /// epoch, next sequence number), kept for repairs, sent to the group.
    /// Its write version is PHP's, untouched.
    fn handle_relay(&mut self, bytes: &[u8]) {
        let mut frame = match Frame::open(bytes, &*self.keys.get(), self.settings.max_value_bytes) {
            Ok(f) => f,
            Err(e) => {
                Counters::inc(self.counters.dropped(e.reason()));
                self.warn_rate_limited(
                    "relay-in",
                    &format!("dropped a frame from a local PHP worker: {e}"),
                );
                return;
            }
        };
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        frame.origin = relay.origin.id;
        frame.epoch = relay.origin.epoch;
        frame.seq = relay.origin.next_seq();
        let sealed = frame.seal(&*self.keys.get());
        let sent = relay.send(&sealed);
        // Kept even when the send failed: a peer that notices the gap repairs it.
        relay.ring.lock().push(frame.seq, sealed);
        // PHP stored the write here first, unless this memcached was being
        // skipped (it failed moments ago: restarted, say), when it went to
        // the next server only; then this host would later read its own
        // older write. Applied if newer, it is a no-op in the usual case.
        if frame.op.stores() {
            self.own.push(frame);
        }
        match sent {
            Ok(()) => Counters::inc(&self.counters.relayed),
            Err(e) => {
                Counters::inc(&self.counters.dropped_relay);
                self.warn_rate_limited(
                    "relay-out",
                    &format!("could not send a relayed frame: {e}"),
                );
            }
        }
    }

    fn heartbeat(&mut self) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        relay.next_heartbeat = Instant::now() + relay.interval;
        let frame = Frame {
            op: Op::Heartbeat,
            origin: relay.origin.id,
            epoch: relay.origin.epoch,
            seq: relay.origin.last_seq(),
            version: Version::ZERO,
            ttl: 0,
            // Peers label this origin's metrics with it.
            key: self.settings.host_name.as_bytes().to_vec(),
            value: relay.advertise.as_bytes().to_vec(),
        };
        if relay.send(&frame.seal(&*self.keys.get())).is_ok() {
            Counters::inc(&self.counters.heartbeats_sent);
        }
    }

    /// One datagram from the group: authenticated and decrypted, checked
    /// against replays (too old by its send time, or a sequence number
    /// already seen), then applied.
    fn handle_group(&mut self, bytes: &[u8]) {
        Counters::inc(&self.counters.received);
        let opened = Frame::open_envelope(bytes, &*self.keys.get(), self.settings.max_value_bytes);
        let (frame, envelope) = match opened {
            Ok(f) => f,
            Err(e) => {
                let reason = e.reason();
                Counters::inc(self.counters.dropped(reason));
                self.warn_rate_limited(reason, &format!("dropped a frame ({reason}): {e}"));
                return;
            }
        };
        if frame.key.len() > self.settings.max_key_length {
            Counters::inc(&self.counters.dropped_size);
            self.warn_rate_limited(
                "size",
                &format!(
                    "dropped a frame (size): key of {} bytes is over --max-key-length {}",
                    frame.key.len(),
                    self.settings.max_key_length
                ),
            );
            return;
        }
        let age = unix_millis().abs_diff(envelope.sent_ms);
        if age > self.settings.max_frame_age_ms {
            Counters::inc(&self.counters.dropped_replay);
            self.warn_rate_limited(
                "replay-age",
                &format!(
                    "dropped a frame (replay): sealed {age} ms away from this host's clock, over --max-frame-age-ms {} (origin {:016x})",
                    self.settings.max_frame_age_ms, frame.origin
                ),
            );
            return;
        }
        let own = self.relay.as_ref().map(|r| r.origin.id);
        let admitted = if own == Some(frame.origin) {
            // A host never hears its own relay on the group (PGM has no
            // loopback): such a frame was captured and sent again.
            Err(Replay::OwnOrigin)
        } else {
            self.origins.admit(&frame, envelope.sent_ms)
        };
        if let Err(Replay::Repaired) = admitted {
            Counters::inc(&self.counters.duplicates);
            return;
        }
        if let Err(replay) = admitted {
            Counters::inc(&self.counters.dropped_replay);
            self.warn_rate_limited(
                "replay",
                &format!(
                    "dropped a frame (replay): {replay} (origin {:016x} epoch {} seq {})",
                    frame.origin, frame.epoch, frame.seq
                ),
            );
            return;
        }
        if !envelope.encrypted && self.keys.get().encrypts() {
            Counters::inc(&self.counters.received_unencrypted);
            self.warn_rate_limited(
                "plaintext",
                &format!("origin {:016x} sends unencrypted frames while this host encrypts: switch encryption on there too", frame.origin),
            );
        }
        if let Some(missing) = self.origins.observe(&frame) {
            self.report_gap(missing);
        }
        let shared_with_peers = self.settings.listen.is_some() || !self.settings.peers.is_empty();
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
            if let Some((_, waiting)) = self.warm_up_waits.as_mut() {
                let addr = String::from_utf8_lossy(&frame.value);
                waiting.retain(|peer| *peer != addr);
            }
        }
        if let Some(addr) = self.origins.newly_started_relay(&frame) {
            self.send_job(Job::PullFrom(addr));
        }
        if frame.op == Op::Heartbeat {
            return;
        }
        self.check_lag(&frame);
        if !self.backlog.is_empty() {
            // Keep order behind the frames still waiting for memcached.
            self.queue(frame);
            return;
        }
        self.pending.push(frame);
    }

    /// Applies the frames taken from the group since the last flush, in
    /// one batch; on a memcached failure they wait in the backlog, on any
    /// other error they are applied one by one.
    fn flush_pending(&mut self) {
        self.flush_own();
        if self.pending.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.pending);
        if !self.backlog.is_empty() {
            for f in frames {
                self.queue(f);
            }
            return;
        }
        let started = Instant::now();
        match apply_batch(&mut self.memcached, &frames, &mut self.cas_cache) {
            Ok(outcomes) => {
                for (frame, outcome) in frames.iter().zip(outcomes) {
                    self.record(frame, outcome, started);
                }
            }
            Err(e) if e.is_server_failure() => {
                self.cas_cache.clear();
                self.memcached_failed(&e);
                for f in frames {
                    self.queue(f);
                }
            }
            Err(_) => {
                self.cas_cache.clear();
                for f in frames {
                    if let Err(f) = self.apply(f) {
                        self.queue(f);
                    }
                }
            }
        }
    }

    /// Applies this host's own writes where PHP could not store them. Not
    /// counted as applied frames: in the usual case PHP stored the same
    /// version here, and the frame is skipped as that very write.
    fn flush_own(&mut self) {
        if self.own.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.own);
        if !self.backlog.is_empty() {
            // Memcached is away: they wait with the others.
            for f in frames {
                self.queue(f);
            }
            return;
        }
        match apply_batch(&mut self.memcached, &frames, &mut self.cas_cache) {
            Ok(outcomes) => {
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
            Err(e) => {
                self.cas_cache.clear();
                debug!("this host's own writes: {e}");
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
        self.shared.memcached_up.store(true, Ordering::Relaxed);
        if let Some(since) = self.memcached_down_since.take() {
            info!(memcached = %self.settings.memcached, down_ms = since.elapsed().as_millis() as u64, "memcached is back");
        }
        match outcome {
            Outcome::Stored => Counters::inc(&self.counters.applied),
            Outcome::SkippedOlder => Counters::inc(&self.counters.skipped_older),
            Outcome::Touched => Counters::inc(&self.counters.touched),
            Outcome::Conflict => {
                Counters::inc(&self.counters.conflicts);
                self.warn_rate_limited(
                    "conflict",
                    &format!(
                        "kept the session at key {} (sha256 prefix): a write from origin {:016x} began from a miss but the session exists here (counted in conflicts)",
                        memcast_core::session_key::log_name(&frame.key),
                        frame.origin
                    ),
                );
            }
            Outcome::Nothing => {}
        }
    }

    /// Sends the repair worker a job. Until it is done the memcached is not
    /// known complete: the sentinel goes at once.
    fn send_job(&mut self, job: Job) {
        if let Some(repairs) = self.repairs.as_mut() {
            repairs.send(job);
        }
        self.delete_sentinel();
    }

    fn delete_sentinel(&mut self) {
        if self.sentinel_set {
            match self.memcached.delete(WARM_SENTINEL) {
                Ok(_) => self.sentinel_set = false,
                // Unreachable: it expires on its own within its TTL.
                Err(e) => debug!("cannot delete the warm sentinel: {e}"),
            }
        }
    }

    /// What the repair worker learnt: origins heard over TCP, rings gone,
    /// warm-ups completed.
    fn take_reports(&mut self) {
        let Some(reports) = &self.reports else {
            return;
        };
        let taken: Vec<Report> = reports.try_iter().collect();
        for report in taken {
            match report {
                Report::Heard {
                    origin,
                    epoch,
                    from,
                    through,
                } => self.origins.heard(origin, epoch, from, through),
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
                Report::WarmedUp(mark) => self.completeness.warmed_up(mark),
            }
        }
    }

    /// Asks every origin silent for two heartbeats, over its repair
    /// connection, for what it sent since; logs the ones given up.
    fn ask_silent_origins(&mut self) {
        let beat = Duration::from_millis(self.settings.heartbeat_ms);
        let (silent, given_up) = self.origins.silent(beat);
        for addr in given_up {
            warn!(%addr, "an origin has been silent and unreachable for {} s while others are heard: no longer waiting for it; what it sent last may be missing here until it returns", crate::origins::SILENT_GIVE_UP.as_secs());
        }
        self.silent_origins = silent.len();
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
        let stats = self.memcached.stats();
        self.shared
            .memcached_up
            .store(stats.is_ok(), Ordering::Relaxed);
        if self.settings.metrics.is_some() {
            // The per-origin table, for scrapes (up to --max-origins rows).
            *self.shared.origins.lock() = self.origins.stats();
        }
        match &stats {
            Err(e) if e.is_server_failure() => self.memcached_failed(e),
            Ok(_) => {
                if let Some(since) = self.memcached_down_since.take() {
                    info!(memcached = %self.settings.memcached, down_ms = since.elapsed().as_millis() as u64, "memcached is back");
                }
                self.read_php_counts();
            }
            Err(_) => {}
        }
        self.counters.memcached_reconnects.store(
            self.memcached.connects().saturating_sub(1),
            Ordering::Relaxed,
        );
        let stats = stats.ok().and_then(|s| MemcachedStats::parse(&s));
        let repairs_idle = self.repairs.as_ref().is_some_and(RepairQueue::is_idle)
            && self.backlog.is_empty()
            && !self.origins.has_unaddressed();
        let step = self.completeness.tick(
            Observed {
                stats,
                repairs_idle,
                silent_origins: self.silent_origins,
            },
            Instant::now(),
        );
        let has_peers = !self.settings.peers.is_empty();
        for event in step.events {
            match event {
                Event::Restarted => {
                    self.cas_cache.clear();
                    Counters::inc(&self.counters.cold_detected);
                    if has_peers {
                        warn!("memcached restarted (it is empty): refilling it from peers; PHP confirms misses here on the next server meanwhile");
                    } else {
                        warn!("memcached restarted (it is empty) and there is no --peer to refill it from: PHP confirms every miss here on the next server");
                    }
                }
                Event::EvictionsStarted { evictions } => warn!(
                    evictions,
                    "memcached is evicting ({evictions} evictions so far): it dropped entries to make room, so it no longer holds every session and is not known complete; PHP confirms misses here on the next server; give it more memory (memcached -m)"
                ),
                Event::EvictionsStopped { quiet } if has_peers => info!(
                    "no evictions for {} s: refilling memcached from peers",
                    quiet.as_secs()
                ),
                Event::EvictionsStopped { quiet } => {
                    info!("no evictions for {} s", quiet.as_secs())
                }
                Event::Complete {
                    was: Reason::Gap | Reason::SilentOrigin,
                } => debug!("memcached is known complete again"),
                Event::Complete { .. } => info!("memcached is known complete (warm)"),
                Event::Incomplete(reason @ (Reason::Gap | Reason::SilentOrigin)) => {
                    debug!(reason = reason.label(), "memcached is not known complete")
                }
                Event::Incomplete(reason) => info!(
                    reason = reason.label(),
                    "memcached is no longer known complete"
                ),
            }
        }
        if step.warm_up {
            self.send_job(Job::WarmUp);
        }
        let complete = self.completeness.is_complete();
        self.shared.warm.store(complete, Ordering::Relaxed);
        self.shared
            .evictions
            .store(self.completeness.evictions(), Ordering::Relaxed);
        *self.shared.incomplete.lock() = self.completeness.reason().map(Reason::label);
        if complete && self.sentinel_set {
            // Only extended, never recreated here: if memcached restarted
            // since its stats were read, the sentinel is gone with the rest
            // and the next check sees the restart.
            match self.memcached.touch(WARM_SENTINEL, SENTINEL_TTL_S) {
                Ok(true) => {}
                Ok(false) => self.sentinel_set = false,
                Err(e) => debug!("cannot refresh the warm sentinel: {e}"),
            }
        } else if complete {
            // With the eviction count it was known complete at: PHP checks
            // memcached's own count against it before trusting a miss, so
            // evictions that begin between two checks here are not missed.
            let value = memcast_core::store::Vouch::sentinel_value(
                unix_millis(),
                self.completeness.evictions(),
            );
            match self
                .memcached
                .set(WARM_SENTINEL, value.as_bytes(), SENTINEL_TTL_S)
            {
                Ok(_) => self.sentinel_set = true,
                Err(e) => debug!("cannot set the warm sentinel: {e}"),
            }
        } else {
            self.delete_sentinel();
        }
    }

    /// What this host's PHP workers counted in memcached as not published:
    /// logged when it rises, exported.
    fn read_php_counts(&mut self) {
        let counts = match HostCounter::read_all(&mut self.memcached) {
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
                self.warn_rate_limited("store", &format!("memcached refused a frame: {e}"));
                Ok(())
            }
        }
    }

    fn memcached_failed(&mut self, e: &StoreError) {
        Counters::inc(&self.counters.memcached_errors);
        self.shared.memcached_up.store(false, Ordering::Relaxed);
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
            Counters::inc(&self.counters.dropped_backlog);
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
        // The settings that change live: each one that differs is taken
        // and named in the log.
        let mut changed = Vec::new();
        macro_rules! take_live {
            ($($field:ident),*) => {$(
                if self.settings.$field != new.$field {
                    changed.push(format!(
                        "{} {} -> {}",
                        stringify!($field),
                        self.settings.$field,
                        new.$field
                    ));
                    self.settings.$field = new.$field.clone();
                }
            )*};
        }
        take_live!(
            max_lag_ms,
            max_frame_age_ms,
            max_key_length,
            max_origins,
            backlog,
            stats_interval,
            log_level
        );
        // The key files were read above.
        self.settings.key_file = new.key_file;
        self.settings.accept_key_file = new.accept_key_file;
        self.settings.encrypt = new.encrypt;
        info!(
            "reloaded configuration{}",
            if changed.is_empty() {
                String::new()
            } else {
                format!(": {}", changed.join(", "))
            }
        );
    }

    fn warn_rate_limited(&mut self, reason: &'static str, message: &str) {
        let now = Instant::now();
        let due = match self.last_warned.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, at)) if now.duration_since(*at) < WARN_EVERY => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                self.last_warned.push((reason, now));
                true
            }
        };
        if due {
            warn!(
                "{message} (such warnings are limited to one per {}s)",
                WARN_EVERY.as_secs()
            );
        }
    }
}
