//! Write versions: a hybrid logical clock plus the origin id as tiebreak.
//!
//! Every replica keeps the value with the greatest [`Version`], so all of them
//! converge on the same last write whatever order frames arrive in. The wall
//! clock keeps versions close to real time (the later write usually wins);
//! the counter makes a write that follows a read strictly newer than what it
//! read even when clocks are skewed or the millisecond is the same.

use std::fmt;

use crate::unix_millis;

/// Totally ordered: milliseconds, then counter, then origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    pub millis: u64,
    pub counter: u32,
    pub origin: u64,
}

impl Version {
    /// Older than every real write; what a header-less value counts as.
    pub const ZERO: Version = Version {
        millis: 0,
        counter: 0,
        origin: 0,
    };
    pub const ENCODED_LEN: usize = 20;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.millis.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.origin.to_be_bytes());
    }

    /// Decodes the first [`Version::ENCODED_LEN`] bytes; `None` if too short.
    pub fn decode(bytes: &[u8]) -> Option<Version> {
        let b = bytes.get(..Self::ENCODED_LEN)?;
        Some(Version {
            millis: u64::from_be_bytes(b[0..8].try_into().ok()?),
            counter: u32::from_be_bytes(b[8..12].try_into().ok()?),
            origin: u64::from_be_bytes(b[12..20].try_into().ok()?),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{:016x}", self.millis, self.counter, self.origin)
    }
}

/// A hybrid logical clock owned by one origin (one PHP process, one daemon).
#[derive(Debug)]
pub struct Hlc {
    origin: u64,
    last_millis: u64,
    last_counter: u32,
    wall: fn() -> u64,
}

impl Hlc {
    pub fn new(origin: u64) -> Hlc {
        Hlc::with_wall_clock(origin, unix_millis)
    }

    /// A clock reading time from `wall` (milliseconds); tests pin it.
    pub fn with_wall_clock(origin: u64, wall: fn() -> u64) -> Hlc {
        Hlc {
            origin,
            last_millis: 0,
            last_counter: 0,
            wall,
        }
    }

    /// A new version, greater than every version this clock issued and greater
    /// than `after` (the version the request read), whatever the wall clock says.
    pub fn next(&mut self, after: Option<Version>) -> Version {
        let now = (self.wall)();
        let (mut millis, mut counter) = if now > self.last_millis {
            (now, 0)
        } else {
            (self.last_millis, self.last_counter.saturating_add(1))
        };
        if let Some(seen) = after {
            if seen.millis > millis {
                millis = seen.millis;
                counter = seen.counter.saturating_add(1);
            } else if seen.millis == millis && seen.counter >= counter {
                counter = seen.counter.saturating_add(1);
            }
        }
        if counter == u32::MAX {
            // Four billion writes in one millisecond: move to the next one.
            millis += 1;
            counter = 0;
        }
        self.last_millis = millis;
        self.last_counter = counter;
        Version {
            millis,
            counter,
            origin: self.origin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frozen() -> u64 {
        1_000
    }

    #[test]
    fn versions_order_by_time_then_counter_then_origin() {
        let a = Version {
            millis: 1,
            counter: 9,
            origin: 9,
        };
        let b = Version {
            millis: 2,
            counter: 0,
            origin: 0,
        };
        let c = Version {
            millis: 2,
            counter: 1,
            origin: 0,
        };
        let d = Version {
            millis: 2,
            counter: 1,
            origin: 1,
        };
        assert!(Version::ZERO < a && a < b && b < c && c < d);
    }

    #[test]
    fn clock_is_monotonic_within_one_millisecond() {
        let mut clock = Hlc::with_wall_clock(7, frozen);
        let first = clock.next(None);
        let second = clock.next(None);
        assert!(second > first);
        assert_eq!(second.millis, 1_000);
        assert_eq!(second.origin, 7);
    }

    #[test]
    fn write_is_newer_than_a_read_from_a_clock_in_the_future() {
        let mut clock = Hlc::with_wall_clock(1, frozen);
        let read = Version {
            millis: 5_000,
            counter: 3,
            origin: 99,
        };
        let write = clock.next(Some(read));
        assert!(write > read);
        assert_eq!(write.millis, 5_000);
        assert_eq!(write.counter, 4);
        // And the clock keeps moving forward from there.
        assert!(clock.next(None) > write);
    }

    #[test]
    fn write_is_newer_than_a_read_in_the_same_millisecond_from_a_higher_origin() {
        let mut clock = Hlc::with_wall_clock(1, frozen);
        let read = Version {
            millis: 1_000,
            counter: 0,
            origin: u64::MAX,
        };
        assert!(clock.next(Some(read)) > read);
    }

    #[test]
    fn version_round_trips_through_its_encoding() {
        let v = Version {
            millis: 0x0102_0304_0506,
            counter: 77,
            origin: 0xdead_beef,
        };
        let mut buf = Vec::new();
        v.encode(&mut buf);
        assert_eq!(buf.len(), Version::ENCODED_LEN);
        assert_eq!(Version::decode(&buf), Some(v));
        assert_eq!(Version::decode(&buf[..19]), None);
    }
}
