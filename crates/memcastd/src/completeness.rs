//! Whether this host's memcached is known complete: it holds every session
//! its peers hold, so a miss there proves a session does not exist. That is
//! what the warm sentinel (`memcast:warm`) says to PHP, and memcastd keeps it
//! present only while all of these hold:
//!
//! - a warm-up (a snapshot from a `--peer`) completed since this memcached
//!   started and since this memcastd started (frames were missed while it
//!   was away);
//! - memcached evicted nothing since that warm-up began (`stats evictions`);
//! - no gap is outstanding (the repair worker is idle, no frames wait for
//!   memcached);
//! - no origin that serves repairs has fallen silent.
//!
//! The sentinel is set with a short TTL and refreshed every second, so a
//! memcastd that dies or is cut off stops vouching within seconds. This
//! module decides; the receive loop reads memcached's stats and writes the
//! sentinel.

use std::time::{Duration, Instant};

/// Lifetime of the warm sentinel; refreshed every second while complete.
pub const SENTINEL_TTL_S: u64 = 3;
/// Evictions must have stopped this long before a warm-up is tried again;
/// doubled after each warm-up that evictions undid, up to
/// [`EVICTIONS_QUIET_MAX`], so a too-small memcached is not refilled in a loop.
pub const EVICTIONS_QUIET: Duration = Duration::from_secs(60);
pub const EVICTIONS_QUIET_MAX: Duration = Duration::from_secs(30 * 60);

/// One run of a memcached: a restart gives it another pid and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance {
    pub pid: u64,
    /// Unix seconds (`time - uptime`, which may wobble by a second).
    pub started_s: u64,
}

impl Instance {
    pub fn same(&self, other: &Instance) -> bool {
        self.pid == other.pid && self.started_s.abs_diff(other.started_s) <= 2
    }
}

/// What memcastd reads from memcached's `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemcachedStats {
    pub instance: Instance,
    pub evictions: u64,
}

impl MemcachedStats {
    pub fn parse(stats: &[(String, String)]) -> Option<MemcachedStats> {
        let field = |name: &str| {
            stats
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        Some(MemcachedStats {
            instance: Instance {
                pid: field("pid")?,
                started_s: field("time")?.saturating_sub(field("uptime")?),
            },
            evictions: field("evictions")?,
        })
    }
}

/// What a completed warm-up vouches for: this memcached run, as of its
/// eviction count when the warm-up began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmMark {
    pub instance: Instance,
    pub evictions: u64,
}

/// Why the memcached is not known complete (the first that applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    MemcachedDown,
    /// No `--peer`: a restarted memcached cannot be refilled.
    NoPeer,
    Evicting,
    /// A warm-up is wanted and has not completed yet.
    Warming,
    /// Never refilled since memcastd started (`--resync-on-start false`).
    NotRefilled,
    /// A gap, repair or resync is outstanding.
    Gap,
    /// An origin that serves repairs has not been heard for two heartbeats.
    SilentOrigin,
}

impl Reason {
    /// The `reason` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Reason::MemcachedDown => "memcached_down",
            Reason::NoPeer => "no_peer",
            Reason::Evicting => "evicting",
            Reason::Warming => "warming",
            Reason::NotRefilled => "not_refilled",
            Reason::Gap => "gap",
            Reason::SilentOrigin => "silent_origin",
        }
    }
}

/// What the receive loop observed this second.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    /// None: memcached did not answer.
    pub stats: Option<MemcachedStats>,
    /// The repair worker has nothing to do and no frames wait for memcached.
    pub repairs_idle: bool,
    pub silent_origins: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// memcached restarted (another pid or start time): it is empty.
    Restarted,
    /// Evictions began (the total so far).
    EvictionsStarted {
        evictions: u64,
    },
    /// No eviction for this long.
    EvictionsStopped {
        quiet: Duration,
    },
    /// Known complete again; why it was not.
    Complete {
        was: Reason,
    },
    Incomplete(Reason),
}

/// What a [`Completeness::tick`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub events: Vec<Event>,
    /// Ask the repair worker for a warm-up now.
    pub warm_up: bool,
}

#[derive(Debug)]
pub struct Completeness {
    has_peers: bool,
    instance: Option<Instance>,
    evictions: Option<u64>,
    warmed: Option<WarmMark>,
    /// Completed warm-ups not checked against memcached's stats yet.
    offered: Vec<WarmMark>,
    warm_up_wanted: bool,
    /// While evicting: when the eviction count last moved.
    evicting: Option<Instant>,
    quiet: Duration,
    reason: Option<Reason>,
}

impl Completeness {
    /// `warm_up_at_start`: a warm-up was asked for as memcastd started.
    pub fn new(has_peers: bool, warm_up_at_start: bool) -> Completeness {
        Completeness {
            has_peers,
            instance: None,
            evictions: None,
            warmed: None,
            offered: Vec::new(),
            warm_up_wanted: has_peers && warm_up_at_start,
            evicting: None,
            quiet: EVICTIONS_QUIET,
            // Not complete until the first tick says so.
            reason: Some(Reason::Warming),
        }
    }

    /// A warm-up the repair worker completed.
    pub fn warmed_up(&mut self, mark: WarmMark) {
        self.offered.push(mark);
    }

    pub fn is_complete(&self) -> bool {
        self.reason.is_none()
    }

    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// Evictions of the current memcached run, as last read.
    pub fn evictions(&self) -> u64 {
        self.evictions.unwrap_or(0)
    }

    /// Once a second: takes what was observed, says what to do.
    pub fn tick(&mut self, seen: Observed, now: Instant) -> Step {
        let mut step = Step::default();
        let reason = match seen.stats {
            None => Some(Reason::MemcachedDown),
            Some(stats) => {
                self.take_stats(stats, now, &mut step);
                if !self.has_peers {
                    Some(Reason::NoPeer)
                } else if self.evicting.is_some() {
                    Some(Reason::Evicting)
                } else if self.warmed.is_none() && self.warm_up_wanted {
                    Some(Reason::Warming)
                } else if self.warmed.is_none() {
                    Some(Reason::NotRefilled)
                } else if !seen.repairs_idle {
                    Some(Reason::Gap)
                } else if seen.silent_origins > 0 {
                    Some(Reason::SilentOrigin)
                } else {
                    None
                }
            }
        };
        if reason != self.reason {
            match (self.reason, reason) {
                (Some(was), None) => step.events.push(Event::Complete { was }),
                (None, Some(r)) => step.events.push(Event::Incomplete(r)),
                _ => {}
            }
            self.reason = reason;
        }
        step
    }

    fn take_stats(&mut self, stats: MemcachedStats, now: Instant, step: &mut Step) {
        if self.instance.is_some_and(|i| !i.same(&stats.instance)) {
            step.events.push(Event::Restarted);
            self.warmed = None;
            self.evictions = None;
            self.evicting = None;
            self.want_warm_up(step);
        }
        self.instance = Some(stats.instance);
        let moved = self
            .evictions
            .is_some_and(|before| stats.evictions > before);
        self.evictions = Some(stats.evictions);
        if self.warmed.is_some_and(|m| stats.evictions > m.evictions) {
            self.warmed = None;
        }
        for mark in std::mem::take(&mut self.offered) {
            if !mark.instance.same(&stats.instance) {
                continue; // filled a memcached that has since restarted
            }
            if stats.evictions > mark.evictions {
                // Evicted during the warm-up: it holds less than it was sent.
                self.start_evicting(stats.evictions, now, step);
                continue;
            }
            self.warmed = Some(mark);
            self.warm_up_wanted = false;
            self.quiet = EVICTIONS_QUIET;
        }
        if moved {
            self.start_evicting(stats.evictions, now, step);
        }
        if let Some(last) = self.evicting {
            if now.duration_since(last) >= self.quiet {
                self.evicting = None;
                step.events
                    .push(Event::EvictionsStopped { quiet: self.quiet });
                if self.has_peers {
                    self.want_warm_up(step);
                    self.quiet = (self.quiet * 2).min(EVICTIONS_QUIET_MAX);
                }
            }
        }
    }

    fn start_evicting(&mut self, evictions: u64, now: Instant, step: &mut Step) {
        if self.evicting.is_none() {
            step.events.push(Event::EvictionsStarted { evictions });
        }
        self.evicting = Some(now);
        self.warmed = None;
    }

    fn want_warm_up(&mut self, step: &mut Step) {
        if self.has_peers {
            self.warm_up_wanted = true;
            step.warm_up = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: Instance = Instance {
        pid: 10,
        started_s: 1000,
    };

    fn stats(instance: Instance, evictions: u64) -> Observed {
        Observed {
            stats: Some(MemcachedStats {
                instance,
                evictions,
            }),
            repairs_idle: true,
            silent_origins: 0,
        }
    }

    fn warmed(evictions: u64) -> WarmMark {
        WarmMark {
            instance: RUN,
            evictions,
        }
    }

    /// Peers, a warm-up asked at start, and completed at `evictions`.
    fn complete_at(t: Instant, evictions: u64) -> Completeness {
        let mut c = Completeness::new(true, true);
        c.tick(stats(RUN, evictions), t);
        assert_eq!(c.reason(), Some(Reason::Warming));
        c.warmed_up(warmed(evictions));
        let step = c.tick(stats(RUN, evictions), t);
        assert_eq!(
            step.events,
            vec![Event::Complete {
                was: Reason::Warming
            }]
        );
        assert!(c.is_complete());
        c
    }

    #[test]
    fn stats_give_the_run_and_the_evictions() {
        let s: Vec<(String, String)> = [
            ("pid", "42"),
            ("uptime", "100"),
            ("time", "1700000100"),
            ("evictions", "7"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let parsed = MemcachedStats::parse(&s).unwrap();
        assert_eq!(parsed.instance.pid, 42);
        assert_eq!(parsed.instance.started_s, 1_700_000_000);
        assert_eq!(parsed.evictions, 7);
        assert!(MemcachedStats::parse(&s[..3]).is_none());
        let wobble = Instance {
            pid: 42,
            started_s: 1_700_000_001,
        };
        assert!(parsed.instance.same(&wobble));
        assert!(!parsed.instance.same(&Instance { pid: 43, ..wobble }));
    }

    #[test]
    fn without_peers_it_is_never_complete() {
        let t = Instant::now();
        let mut c = Completeness::new(false, true);
        let step = c.tick(stats(RUN, 0), t);
        assert_eq!(c.reason(), Some(Reason::NoPeer));
        assert!(!step.warm_up);
        c.warmed_up(warmed(0));
        c.tick(stats(RUN, 0), t);
        assert_eq!(c.reason(), Some(Reason::NoPeer));
        let restarted = Instance {
            pid: 11,
            started_s: 2000,
        };
        let step = c.tick(stats(restarted, 0), t);
        assert_eq!(step.events, vec![Event::Restarted]);
        assert!(!step.warm_up, "nothing to refill from");
    }

    #[test]
    fn complete_only_after_a_warm_up_of_this_run() {
        let t = Instant::now();
        let mut c = Completeness::new(true, true);
        c.tick(stats(RUN, 0), t);
        assert_eq!(c.reason(), Some(Reason::Warming));
        // A warm-up of an earlier run does not count.
        c.warmed_up(WarmMark {
            instance: Instance { pid: 9, ..RUN },
            evictions: 0,
        });
        c.tick(stats(RUN, 0), t);
        assert_eq!(c.reason(), Some(Reason::Warming));
        c.warmed_up(warmed(0));
        assert_eq!(
            c.tick(stats(RUN, 0), t).events,
            vec![Event::Complete {
                was: Reason::Warming
            }]
        );
    }

    #[test]
    fn without_a_startup_warm_up_it_is_not_refilled() {
        let mut c = Completeness::new(true, false);
        c.tick(stats(RUN, 0), Instant::now());
        assert_eq!(c.reason(), Some(Reason::NotRefilled));
    }

    #[test]
    fn a_restart_undoes_completeness_and_asks_for_a_warm_up() {
        let t = Instant::now();
        let mut c = complete_at(t, 0);
        let restarted = Instance {
            pid: 11,
            started_s: 2000,
        };
        let step = c.tick(stats(restarted, 0), t);
        assert!(step.warm_up);
        assert_eq!(
            step.events,
            vec![Event::Restarted, Event::Incomplete(Reason::Warming)]
        );
    }

    #[test]
    fn evictions_undo_completeness_and_a_quiet_minute_brings_a_warm_up() {
        let t = Instant::now();
        let mut c = complete_at(t, 5);
        let step = c.tick(stats(RUN, 9), t + Duration::from_secs(1));
        assert_eq!(
            step.events,
            vec![
                Event::EvictionsStarted { evictions: 9 },
                Event::Incomplete(Reason::Evicting)
            ]
        );
        // Still evicting: logged once, no warm-up.
        let step = c.tick(stats(RUN, 20), t + Duration::from_secs(2));
        assert_eq!(step, Step::default());
        let step = c.tick(stats(RUN, 20), t + Duration::from_secs(30));
        assert!(!step.warm_up);
        let step = c.tick(stats(RUN, 20), t + Duration::from_secs(62));
        assert!(step.warm_up);
        assert_eq!(c.reason(), Some(Reason::Warming));
        // The warm-up itself evicts: not complete, and the next try waits longer.
        c.warmed_up(warmed(20));
        let later = t + Duration::from_secs(70);
        let step = c.tick(stats(RUN, 25), later);
        assert_eq!(c.reason(), Some(Reason::Evicting));
        assert!(step
            .events
            .contains(&Event::EvictionsStarted { evictions: 25 }));
        assert!(!c.tick(stats(RUN, 25), later + EVICTIONS_QUIET).warm_up);
        assert!(c.tick(stats(RUN, 25), later + 2 * EVICTIONS_QUIET).warm_up);
        // This one holds: complete again.
        c.warmed_up(warmed(25));
        c.tick(stats(RUN, 25), later + 2 * EVICTIONS_QUIET);
        assert!(c.is_complete());
        assert_eq!(c.evictions(), 25);
    }

    #[test]
    fn evictions_before_the_warm_up_began_do_not_count() {
        let t = Instant::now();
        let mut c = Completeness::new(true, true);
        c.tick(stats(RUN, 3), t);
        c.warmed_up(warmed(3));
        c.tick(stats(RUN, 3), t);
        assert!(c.is_complete());
    }

    #[test]
    fn a_gap_or_a_silent_origin_or_memcached_down_is_not_complete() {
        let t = Instant::now();
        let mut c = complete_at(t, 0);
        let mut busy = stats(RUN, 0);
        busy.repairs_idle = false;
        assert_eq!(c.tick(busy, t).events, vec![Event::Incomplete(Reason::Gap)]);
        let mut silent = stats(RUN, 0);
        silent.silent_origins = 1;
        c.tick(silent, t);
        assert_eq!(c.reason(), Some(Reason::SilentOrigin));
        let down = Observed {
            stats: None,
            repairs_idle: true,
            silent_origins: 0,
        };
        c.tick(down, t);
        assert_eq!(c.reason(), Some(Reason::MemcachedDown));
        assert_eq!(
            c.tick(stats(RUN, 0), t).events,
            vec![Event::Complete {
                was: Reason::MemcachedDown
            }]
        );
    }
}
