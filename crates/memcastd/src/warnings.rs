//! Warnings about bad frames and failed sends, at most one per reason per
//! [`WARN_EVERY`]: a flood of bad frames must not become a flood of log
//! lines.

use std::time::{Duration, Instant};

use tracing::warn;

/// At most one warning per reason per this interval.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Warnings {
    last: Vec<(&'static str, Instant)>,
}

impl Warnings {
    /// Logs `message` unless a warning for `reason` was logged within
    /// [`WARN_EVERY`].
    pub fn warn(&mut self, reason: &'static str, message: &str) {
        if self.due(reason, Instant::now()) {
            warn!(
                "{message} (such warnings are limited to one per {}s)",
                WARN_EVERY.as_secs()
            );
        }
    }

    fn due(&mut self, reason: &'static str, now: Instant) -> bool {
        match self.last.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, at)) if now.duration_since(*at) < WARN_EVERY => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                self.last.push((reason, now));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_reason_per_interval() {
        let mut w = Warnings::default();
        let t0 = Instant::now();
        assert!(w.due("size", t0));
        assert!(!w.due("size", t0 + WARN_EVERY / 2));
        assert!(w.due("replay", t0 + WARN_EVERY / 2), "another reason");
        assert!(w.due("size", t0 + WARN_EVERY));
    }
}
