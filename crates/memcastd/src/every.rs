//! `Every`: one periodic task of the receive loop (heartbeats, catch-ups,
//! the completeness check, ...). The loop polls it between receives; a task
//! that ran waits a whole period from then, so a slow pass never makes a
//! burst of catch-up runs.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Every {
    period: Duration,
    next: Instant,
}

impl Every {
    /// First due at `first`, then every `period`; a zero period is never due.
    pub fn new(period: Duration, first: Instant) -> Every {
        Every {
            period,
            next: first,
        }
    }

    /// Whether the task is due at `now`; if so, the next time is a period
    /// from `now`.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.period.is_zero() || now < self.next {
            return false;
        }
        self.next = now + self.period;
        true
    }

    /// A new period, counted from `now`.
    pub fn set_period(&mut self, period: Duration, now: Instant) {
        self.period = period;
        self.next = now + period;
    }

    pub fn period(&self) -> Duration {
        self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn due_once_per_period_counted_from_when_it_ran() {
        let t0 = Instant::now();
        let mut every = Every::new(S, t0);
        assert!(every.due(t0));
        assert!(!every.due(t0 + S / 2));
        // Late: runs once, and the next is a period from now, not from t0 + S.
        assert!(every.due(t0 + S * 5 / 2));
        assert!(!every.due(t0 + S * 3));
        assert!(every.due(t0 + S * 7 / 2));
    }

    #[test]
    fn a_first_time_in_the_future_waits_for_it() {
        let t0 = Instant::now();
        let mut every = Every::new(S, t0 + S * 10);
        assert!(!every.due(t0 + S));
        assert!(every.due(t0 + S * 10));
    }

    #[test]
    fn a_zero_period_is_never_due_and_a_new_period_counts_from_now() {
        let t0 = Instant::now();
        let mut every = Every::new(Duration::ZERO, t0);
        assert!(!every.due(t0 + S * 100));
        every.set_period(S, t0 + S * 100);
        assert!(!every.due(t0 + S * 100));
        assert!(every.due(t0 + S * 101));
        every.set_period(Duration::ZERO, t0 + S * 101);
        assert!(!every.due(t0 + S * 200));
    }
}
