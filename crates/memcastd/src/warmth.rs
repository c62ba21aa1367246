//! Warmth: what this daemon tells PHP about its memcached. [`Completeness`]
//! decides whether the memcached is known complete; this module acts on it:
//! it keeps the warm sentinel (`memcast:warm`) in memcached while complete
//! and deletes it the moment it is not, logs the decisions, exports them,
//! and holds the startup warm-up until every peer's relay was heard.

use std::sync::atomic::Ordering;
use std::time::Instant;

use memcast_core::replica::WARM_SENTINEL;
use memcast_core::{unix_millis, Memcached};
use tracing::{debug, info, warn};

use crate::completeness::{Completeness, Event, Observed, Reason, WarmMark, SENTINEL_TTL_S};
use crate::metrics::Shared;

pub struct Warmth {
    completeness: Completeness,
    has_peers: bool,
    /// The warm sentinel may be in memcached (set, not deleted since).
    sentinel_set: bool,
    /// Origins silent at the last look.
    pub silent_origins: usize,
    /// The startup warm-up waits for a heartbeat from every peer's relay
    /// (by its advertised address) or this deadline: see
    /// [`Warmth::start_warm_up_when_joined`].
    warm_up_waits: Option<(Instant, Vec<String>)>,
}

/// What one completeness check asks of the daemon.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// memcached restarted: it is empty.
    pub restarted: bool,
    /// Ask the repair worker for a warm-up now.
    pub warm_up: bool,
}

impl Warmth {
    pub fn new(has_peers: bool, warm_up_at_start: bool) -> Warmth {
        Warmth {
            completeness: Completeness::new(has_peers, warm_up_at_start),
            has_peers,
            // Unknown at start: the first delete makes sure.
            sentinel_set: true,
            silent_origins: 0,
            warm_up_waits: None,
        }
    }

    /// The startup warm-up starts once every one of `peers` was heard, or
    /// at `deadline`.
    pub fn wait_for_peers(&mut self, deadline: Instant, peers: Vec<String>) {
        self.warm_up_waits = Some((deadline, peers));
    }

    /// Whether the startup warm-up still waits for peers' relays (its job
    /// not yet sent).
    pub fn waiting_for_peers(&self) -> bool {
        self.warm_up_waits.is_some()
    }

    /// A heartbeat from the relay that advertises `addr`.
    pub fn heard_relay(&mut self, addr: &str) {
        if let Some((_, waiting)) = self.warm_up_waits.as_mut() {
            waiting.retain(|peer| peer != addr);
        }
    }

    /// Whether the startup warm-up starts now: every peer's relay was heard
    /// (or the deadline passed).
    pub fn start_warm_up_when_joined(&mut self, now: Instant) -> bool {
        let Some((deadline, waiting)) = &self.warm_up_waits else {
            return false;
        };
        if !waiting.is_empty() && now < *deadline {
            return false;
        }
        if !waiting.is_empty() {
            debug!(peers = ?waiting, "warm-up: no heartbeat heard from these peers' relays; refilling anyway");
        }
        self.warm_up_waits = None;
        true
    }

    /// A warm-up the repair worker completed.
    pub fn warmed_up(&mut self, mark: WarmMark) {
        self.completeness.warmed_up(mark);
    }

    /// Once a second: whether memcached is known complete, given what was
    /// observed; logs what changed and exports it.
    pub fn check_complete(&mut self, seen: Observed, shared: &Shared) -> Checked {
        let step = self.completeness.tick(seen, Instant::now());
        let mut checked = Checked {
            restarted: false,
            warm_up: step.warm_up,
        };
        for event in step.events {
            checked.restarted |= event == Event::Restarted;
            self.log(event);
        }
        let complete = self.completeness.is_complete();
        shared.warm.store(complete, Ordering::Relaxed);
        shared
            .evictions
            .store(self.completeness.evictions(), Ordering::Relaxed);
        *shared.incomplete.lock() = self.completeness.reason().map(Reason::label);
        checked
    }

    fn log(&self, event: Event) {
        let has_peers = self.has_peers;
        match event {
            Event::Restarted if has_peers => warn!("memcached restarted (it is empty): refilling it from peers; PHP confirms misses here on the next server meanwhile"),
            Event::Restarted => warn!("memcached restarted (it is empty) and there is no --peer to refill it from: PHP confirms every miss here on the next server"),
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

    /// The sentinel to match the last check: extended (short TTL) or set
    /// while complete, deleted while not.
    pub fn update_sentinel(&mut self, memcached: &mut Memcached) {
        let complete = self.completeness.is_complete();
        if complete && self.sentinel_set {
            // Only extended, never recreated here: if memcached restarted
            // since its stats were read, the sentinel is gone with the rest
            // and the next check sees the restart.
            match memcached.touch(WARM_SENTINEL, SENTINEL_TTL_S) {
                Ok(true) => {}
                Ok(false) => self.sentinel_set = false,
                Err(e) => debug!("cannot refresh the warm sentinel: {e}"),
            }
        } else if complete {
            // With the eviction count it was known complete at: PHP checks
            // memcached's own count against it before trusting a miss, so
            // evictions that begin between two checks here are not missed.
            let value = memcast_core::memcached::Vouch::sentinel_value(
                unix_millis(),
                self.completeness.evictions(),
            );
            match memcached.set(WARM_SENTINEL, value.as_bytes(), SENTINEL_TTL_S) {
                Ok(_) => self.sentinel_set = true,
                Err(e) => debug!("cannot set the warm sentinel: {e}"),
            }
        } else {
            self.delete_sentinel(memcached);
        }
    }

    /// Nobody vouches for this memcached until the next check says so.
    pub fn delete_sentinel(&mut self, memcached: &mut Memcached) {
        if self.sentinel_set {
            match memcached.delete(WARM_SENTINEL) {
                Ok(_) => self.sentinel_set = false,
                // Unreachable: it expires on its own within its TTL.
                Err(e) => debug!("cannot delete the warm sentinel: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_startup_warm_up_waits_for_every_peers_relay_or_the_deadline() {
        let t0 = Instant::now();
        let mut w = Warmth::new(true, true);
        assert!(!w.start_warm_up_when_joined(t0), "nothing planned");
        w.wait_for_peers(
            t0 + Duration::from_secs(3),
            vec!["a:1".into(), "b:1".into()],
        );
        w.heard_relay("a:1");
        assert!(!w.start_warm_up_when_joined(t0));
        w.heard_relay("b:1");
        assert!(w.start_warm_up_when_joined(t0));
        assert!(!w.start_warm_up_when_joined(t0), "once");
        w.wait_for_peers(t0 + Duration::from_secs(3), vec!["a:1".into()]);
        assert!(!w.start_warm_up_when_joined(t0 + Duration::from_secs(2)));
        assert!(w.start_warm_up_when_joined(t0 + Duration::from_secs(3)));
    }
}
