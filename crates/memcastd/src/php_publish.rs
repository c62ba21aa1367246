//! What this host's PHP workers could not publish, as they count it in the
//! local memcached ([`memcast_core::host_counters`]): read on the daemon's
//! once-a-second check, logged when it rises, exported by `/metrics`, and
//! `memcastd status` says "degraded" while it rose in the last minute.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use memcast_core::host_counters::{HostCounter, HostCounts};

/// Failures within this long make the host "failing to publish".
pub const RECENT: Duration = Duration::from_secs(60);
/// A rising count is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct PhpPublish {
    counts: HostCounts,
    /// (when, failures so far): the first is the last reading at or before
    /// [`RECENT`] ago, the baseline of [`PhpPublish::recent_failures`].
    history: VecDeque<(Instant, u64)>,
    /// When the last warning was logged, and the counts it covered.
    logged: Option<(Instant, HostCounts)>,
}

impl PhpPublish {
    pub fn counts(&self) -> HostCounts {
        self.counts
    }

    /// Frames not published in the last [`RECENT`]. Counts found at the
    /// first reading (from before memcastd started) are recent for the
    /// first [`RECENT`]: nobody has seen them yet.
    pub fn recent_failures(&self) -> u64 {
        let base = self.history.front().map_or(0, |(_, n)| *n);
        self.counts.publish_failures().saturating_sub(base)
    }

    /// Takes a new reading; returns a warning when failures rose (at most
    /// one per [`LOG_EVERY`], covering everything since the last one).
    pub fn observe(&mut self, counts: HostCounts, now: Instant) -> Option<String> {
        let failures = counts.publish_failures();
        if failures < self.counts.publish_failures() {
            // memcached restarted: counting starts over.
            self.history.clear();
            self.logged = None;
        }
        if self.history.is_empty() {
            self.history.push_back((now, 0));
        }
        self.history.push_back((now, failures));
        while self
            .history
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) >= RECENT)
        {
            self.history.pop_front();
        }
        self.counts = counts;
        let since = self.logged.map_or_else(HostCounts::default, |(_, c)| c);
        let rose = failures > since.publish_failures();
        let due = self
            .logged
            .is_none_or(|(t, _)| now.duration_since(t) >= LOG_EVERY);
        if !(rose && due) {
            return None;
        }
        self.logged = Some((now, counts));
        Some(warning(&counts, &since))
    }
}

/// "PHP workers on this host could not publish N frames (reason n, ...)",
/// with what to check for each reason.
fn warning(now: &HostCounts, since: &HostCounts) -> String {
    let mut parts = Vec::new();
    let mut hints = Vec::new();
    for c in HostCounter::ALL {
        let Some(reason) = c.failure_reason() else {
            continue;
        };
        let n = now.get(c).saturating_sub(since.get(c));
        if n == 0 {
            continue;
        }
        parts.push(format!("{reason} {n}"));
        hints.push(hint(c));
    }
    format!(
        "PHP workers on this host could not publish {} frames ({}): those sessions are stored here but not replicated until a worker sends them again; {}",
        now.publish_failures()
            .saturating_sub(since.publish_failures()),
        parts.join(", "),
        hints.join("; ")
    )
}

/// What to check when PHP counts this reason.
pub fn hint(c: HostCounter) -> &'static str {
    match c {
        HostCounter::PublishFailedNoKey => {
            "no_key: memcast.key_file is unset, missing, unreadable by PHP or too short (the PHP log says which)"
        }
        HostCounter::PublishFailedNoPublisher => {
            "no_publisher: memcast.publish could not be set up (the PHP log says why)"
        }
        HostCounter::PublishFailedNotTaken => {
            "not_taken: the relay at memcast.publish did not take them in memcast.relay_timeout_ms (is memcastd running with --relay at that same endpoint, and may PHP's user open it?), or PGM's send queue was full"
        }
        HostCounter::Resent | HostCounter::UnsentForgotten | HostCounter::SealedUnopened => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(no_key: u64, not_taken: u64) -> HostCounts {
        let mut c = HostCounts::default();
        c.0[0] = no_key;
        c.0[2] = not_taken;
        c
    }

    #[test]
    fn a_rise_is_recent_for_a_minute_and_logged_once_a_minute() {
        let t0 = Instant::now();
        let mut p = PhpPublish::default();
        assert_eq!(p.observe(counts(0, 0), t0), None);
        assert_eq!(p.recent_failures(), 0);
        let w = p
            .observe(counts(2, 1), t0 + Duration::from_secs(1))
            .unwrap();
        assert!(
            w.starts_with(
                "PHP workers on this host could not publish 3 frames (no_key 2, not_taken 1)"
            ),
            "{w}"
        );
        assert!(w.contains("memcast.key_file"), "{w}");
        assert_eq!(p.recent_failures(), 3);
        // More within the minute: counted, not logged yet.
        assert_eq!(p.observe(counts(2, 5), t0 + Duration::from_secs(30)), None);
        assert_eq!(p.recent_failures(), 7);
        let w = p
            .observe(counts(2, 6), t0 + Duration::from_secs(62))
            .unwrap();
        assert!(
            w.contains("could not publish 5 frames (not_taken 5)"),
            "{w}"
        );
        // The last rise (at 62 s) is within the minute at 95 s, not at 130 s.
        p.observe(counts(2, 6), t0 + Duration::from_secs(95));
        assert_eq!(p.recent_failures(), 1);
        p.observe(counts(2, 6), t0 + Duration::from_secs(130));
        assert_eq!(p.recent_failures(), 0);
    }

    #[test]
    fn counts_found_at_start_are_recent_and_a_restart_starts_over() {
        let t0 = Instant::now();
        let mut p = PhpPublish::default();
        assert!(p.observe(counts(4, 0), t0).is_some());
        assert_eq!(p.recent_failures(), 4);
        p.observe(counts(4, 0), t0 + Duration::from_secs(61));
        assert_eq!(p.recent_failures(), 0);
        // memcached restarted: 1 is a new failure.
        assert!(p
            .observe(counts(1, 0), t0 + Duration::from_secs(62))
            .is_some());
        assert_eq!(p.recent_failures(), 1);
    }
}
