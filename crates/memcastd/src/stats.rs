//! What memcastd has done, counted; logged periodically and at exit.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

#[derive(Debug, Default)]
pub struct Stats {
    pub received: u64,
    pub applied: u64,
    pub skipped_older: u64,
    pub touched: u64,
    /// Frames dropped, by reason: auth, decode, size, backlog, store.
    pub dropped: BTreeMap<&'static str, u64>,
    pub gaps: u64,
    pub missing_frames: u64,
    pub memcached_errors: u64,
    /// Last sequence number seen per (origin, epoch).
    pub origins: HashMap<(u64, u64), u64>,
}

impl Stats {
    pub fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Records a frame's sequence number; counts a gap when numbers were
    /// skipped. A new (origin, epoch) starts fresh: a restarted origin is not
    /// a gap.
    pub fn track(&mut self, origin: u64, epoch: u64, seq: u64, is_heartbeat: bool) {
        let last = self.origins.entry((origin, epoch)).or_insert(0);
        let expected = *last + 1;
        if *last != 0 && seq > expected {
            let missing = if is_heartbeat {
                seq - *last
            } else {
                seq - expected
            };
            if missing > 0 {
                self.gaps += 1;
                self.missing_frames += missing;
            }
        }
        if seq > *last {
            *last = seq;
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} applied={} skipped_older={} touched={} gaps={} missing_frames={} memcached_errors={} origins={}",
            self.received,
            self.applied,
            self.skipped_older,
            self.touched,
            self.gaps,
            self.missing_frames,
            self.memcached_errors,
            self.origins.len()
        )?;
        for (reason, n) in &self.dropped {
            write!(f, " dropped_{reason}={n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_sequence_numbers_are_a_gap() {
        let mut s = Stats::default();
        s.track(1, 1, 1, false);
        s.track(1, 1, 2, false);
        s.track(1, 1, 5, false);
        assert_eq!((s.gaps, s.missing_frames), (1, 2));
    }

    #[test]
    fn a_new_epoch_is_not_a_gap() {
        let mut s = Stats::default();
        s.track(1, 1, 7, false);
        s.track(1, 2, 1, false);
        s.track(2, 1, 1, false);
        assert_eq!(s.gaps, 0);
    }

    #[test]
    fn heartbeat_reveals_a_lost_tail() {
        let mut s = Stats::default();
        s.track(1, 1, 1, false);
        s.track(1, 1, 3, true); // the origin has sent 3; we saw 1
        assert_eq!((s.gaps, s.missing_frames), (1, 2));
        s.track(1, 1, 3, true);
        assert_eq!(s.gaps, 1);
    }

    #[test]
    fn duplicates_and_reordering_are_not_gaps() {
        let mut s = Stats::default();
        s.track(1, 1, 1, false);
        s.track(1, 1, 1, false);
        s.track(1, 1, 2, false);
        assert_eq!(s.gaps, 0);
    }
}
