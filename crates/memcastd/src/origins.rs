//! Gap detection: the last sequence number seen per (origin, epoch), the
//! origin's repair address from its heartbeats, and the ranges it missed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use memcast_core::{Frame, Op};

/// A run of frames an origin sent that this host never received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub origin: u64,
    pub epoch: u64,
    pub from: u64,
    pub to: u64,
    /// Where the origin serves repairs (from its heartbeats), if it does.
    pub repair_addr: Option<String>,
}

#[derive(Debug)]
struct OriginState {
    last_seq: u64,
    repair_addr: Option<String>,
    seen: Instant,
    /// Whether [`Origins::newly_started_relay`] already reported it.
    announced: bool,
    /// Frames missed before the origin's repair address was known, and
    /// since when: held until a heartbeat names the address.
    unaddressed: Option<(u64, u64, Instant)>,
}

#[derive(Debug)]
pub struct Origins {
    map: HashMap<(u64, u64), OriginState>,
    /// Epochs (origin start times, ms) after this one began after we did, so
    /// their first frames were meant for us too.
    started_ms: u64,
}

impl Origins {
    pub fn new(started_ms: u64) -> Origins {
        Origins {
            map: HashMap::new(),
            started_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Records a frame; returns what it reveals as missing. A heartbeat
    /// carries the origin's last sequence number (so a lost tail shows) and
    /// its repair address. A new epoch is a restarted origin, not a gap.
    pub fn observe(&mut self, frame: &Frame) -> Option<Missing> {
        let heartbeat = frame.op == Op::Heartbeat;
        // Sequence numbers a heartbeat vouches for include its own.
        let covered = if heartbeat {
            frame.seq
        } else {
            frame.seq.saturating_sub(1)
        };
        let started_ms = self.started_ms;
        let state = self
            .map
            .entry((frame.origin, frame.epoch))
            .or_insert_with(|| OriginState {
                // An origin that started after us sent us everything from 1; one
                // that started before we did is covered by our startup resync.
                last_seq: if frame.epoch >= started_ms {
                    0
                } else {
                    covered
                },
                repair_addr: None,
                seen: Instant::now(),
                announced: false,
                unaddressed: None,
            });
        state.seen = Instant::now();
        if heartbeat {
            let addr = String::from_utf8_lossy(&frame.value).into_owned();
            state.repair_addr = Some(addr).filter(|a| !a.is_empty());
        }
        let mut missing = (covered > state.last_seq).then_some((state.last_seq + 1, covered));
        state.last_seq = state.last_seq.max(frame.seq);
        if state.repair_addr.is_none() {
            // Perhaps no heartbeat has arrived yet: hold the range until one
            // names the repair address (or [`Origins::unaddressed_since`]).
            if let Some((from, to)) = missing {
                let held = state.unaddressed.get_or_insert((from, to, Instant::now()));
                held.0 = held.0.min(from);
                held.1 = held.1.max(to);
            }
            return None;
        }
        if let Some((from, to, _)) = state.unaddressed.take() {
            missing = Some(match missing {
                Some((f, t)) => (f.min(from), t.max(to)),
                None => (from, to),
            });
        }
        missing.map(|(from, to)| Missing {
            origin: frame.origin,
            epoch: frame.epoch,
            from,
            to,
            repair_addr: state.repair_addr.clone(),
        })
    }

    /// Ranges missed from origins that named no repair address within
    /// `wait` (PHP workers publishing directly send no heartbeats): only a
    /// resync can bring those back.
    pub fn unaddressed_since(&mut self, wait: Duration) -> Vec<Missing> {
        let mut out = Vec::new();
        for ((origin, epoch), state) in &mut self.map {
            if let Some((from, to, since)) = state.unaddressed {
                if since.elapsed() >= wait {
                    state.unaddressed = None;
                    out.push(Missing {
                        origin: *origin,
                        epoch: *epoch,
                        from,
                        to,
                        repair_addr: None,
                    });
                }
            }
        }
        out
    }

    /// The repair address of a relay whose first heartbeat this is, when it
    /// started after we did. Such a host may hold writes nobody else has (its
    /// PHP stored them locally while its memcastd was away), so peers pull a
    /// snapshot from it once. Call after [`Origins::observe`].
    pub fn newly_started_relay(&mut self, frame: &Frame) -> Option<String> {
        if frame.op != Op::Heartbeat || frame.epoch < self.started_ms {
            return None;
        }
        let state = self.map.get_mut(&(frame.origin, frame.epoch))?;
        if state.announced {
            return None;
        }
        let addr = state.repair_addr.clone()?;
        state.announced = true;
        Some(addr)
    }

    /// Forgets origins not heard from for `idle` (short-lived PHP processes
    /// publishing directly are many), so memory stays bounded.
    pub fn forget_idle(&mut self, idle: Duration) {
        self.map.retain(|_, s| s.seen.elapsed() < idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcast_core::Version;

    fn frame(op: Op, epoch: u64, seq: u64) -> Frame {
        Frame {
            op,
            origin: 1,
            epoch,
            seq,
            version: Version::ZERO,
            ttl: 0,
            key: b"k".to_vec(),
            value: if op == Op::Heartbeat {
                b"10.0.0.1:7711".to_vec()
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn skipped_sequence_numbers_are_missing() {
        let mut o = Origins::new(0);
        o.observe(&frame(Op::Heartbeat, 5, 0));
        assert_eq!(o.observe(&frame(Op::Set, 5, 1)), None);
        assert_eq!(o.observe(&frame(Op::Set, 5, 2)), None);
        let m = o.observe(&frame(Op::Set, 5, 5)).unwrap();
        assert_eq!((m.from, m.to), (3, 4));
        assert_eq!(o.observe(&frame(Op::Set, 5, 6)), None);
    }

    #[test]
    fn heartbeat_reveals_a_lost_tail_and_the_repair_address() {
        let mut o = Origins::new(0);
        o.observe(&frame(Op::Set, 5, 1));
        let m = o.observe(&frame(Op::Heartbeat, 5, 3)).unwrap();
        assert_eq!((m.from, m.to), (2, 3));
        assert_eq!(m.repair_addr.as_deref(), Some("10.0.0.1:7711"));
        assert_eq!(o.observe(&frame(Op::Heartbeat, 5, 3)), None);
    }

    #[test]
    fn a_gap_seen_before_any_heartbeat_waits_for_the_repair_address() {
        let mut o = Origins::new(0);
        o.observe(&frame(Op::Set, 5, 1));
        assert_eq!(
            o.observe(&frame(Op::Set, 5, 4)),
            None,
            "held: no address yet"
        );
        let m = o.observe(&frame(Op::Heartbeat, 5, 6)).unwrap();
        assert_eq!(
            (m.from, m.to),
            (2, 6),
            "held range merged with the lost tail"
        );
        assert_eq!(m.repair_addr.as_deref(), Some("10.0.0.1:7711"));
    }

    #[test]
    fn a_gap_from_an_origin_without_heartbeats_goes_to_resync_after_the_wait() {
        let mut o = Origins::new(0);
        o.observe(&frame(Op::Set, 5, 1));
        o.observe(&frame(Op::Set, 5, 3));
        assert!(o.unaddressed_since(Duration::from_secs(60)).is_empty());
        let m = o.unaddressed_since(Duration::ZERO);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].from, m[0].to, m[0].repair_addr.clone()), (2, 2, None));
        assert!(o.unaddressed_since(Duration::ZERO).is_empty());
    }

    #[test]
    fn first_frames_of_an_origin_started_after_us_count_when_lost() {
        let mut o = Origins::new(100);
        assert_eq!(o.observe(&frame(Op::Set, 200, 4)), None);
        let m = o.observe(&frame(Op::Heartbeat, 200, 4)).unwrap();
        assert_eq!((m.from, m.to), (1, 3));
    }

    #[test]
    fn origin_older_than_us_is_not_a_gap_on_first_sight() {
        let mut o = Origins::new(100);
        assert_eq!(o.observe(&frame(Op::Set, 50, 40)), None);
        assert_eq!(o.observe(&frame(Op::Heartbeat, 50, 40)), None);
    }

    #[test]
    fn a_relay_started_after_us_is_announced_once() {
        let mut o = Origins::new(100);
        let hb = frame(Op::Heartbeat, 200, 0);
        o.observe(&hb);
        assert_eq!(o.newly_started_relay(&hb).as_deref(), Some("10.0.0.1:7711"));
        o.observe(&hb);
        assert_eq!(o.newly_started_relay(&hb), None);
        let older = frame(Op::Heartbeat, 50, 0);
        o.observe(&older);
        assert_eq!(o.newly_started_relay(&older), None);
    }

    #[test]
    fn new_epoch_and_duplicates_are_not_gaps() {
        let mut o = Origins::new(0);
        o.observe(&frame(Op::Set, 5, 1));
        o.observe(&frame(Op::Set, 5, 2));
        assert_eq!(o.observe(&frame(Op::Set, 6, 1)), None);
        assert_eq!(o.observe(&frame(Op::Set, 5, 2)), None);
        assert_eq!(o.observe(&frame(Op::Set, 5, 1)), None);
    }
}
