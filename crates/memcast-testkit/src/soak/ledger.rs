//! The checker's ledger: per session, every acknowledged write (its write
//! id, host, time, and the length and CRC-32 of the data PHP encoded), and
//! every read judged against the writes acknowledged before it began.
//!
//! Write ids (`gid`) are handed out by the harness from one counter, and the
//! writes of one session never overlap, so within a session a larger id is
//! a later write. PHP stores it in the session itself (`g`), which is how a
//! read, or a value read straight from memcached, says which write it holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use memcast_core::session_seal::SessionSeal;
use memcast_core::stored_value::{StoredValue, HEADER_LEN};

/// One acknowledged write: `session_write_close()` returned true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub gid: u64,
    pub host: usize,
    pub at: Instant,
    pub len: usize,
    pub crc: u32,
    /// The request read no session although one had been acknowledged: a
    /// write that began from a miss (it forks the session's history).
    pub from_miss: bool,
}

/// What a host must hold for one session at the end.
#[derive(Clone, Debug)]
pub struct Expect {
    pub last: Ack,
    /// When the session forked (a write began from a miss): every
    /// acknowledged write from the last one before the fork on, since memcast
    /// may rightly keep the session the miss did not see.
    pub also: Vec<(u64, u32)>,
}

impl Expect {
    pub fn accepts(&self, held: &Held) -> bool {
        held.has(&self.last)
            || matches!(*held, Held::Write { gid, crc } if self.also.contains(&(gid, crc)))
    }
}

pub struct Session {
    pub id: String,
    /// Bytes of filler each write of this session carries.
    pub payload_len: usize,
    /// The host whose writer writes it now (it moves: hand-offs).
    pub owner: usize,
    /// A write is in flight.
    pub busy: bool,
    pub last_write_end: Option<Instant>,
    pub acks: Vec<Ack>,
}

impl Session {
    /// The newest write acknowledged at or before `t`.
    pub fn acked_by(&self, t: Instant) -> Option<&Ack> {
        self.acks.iter().rev().find(|a| a.at <= t)
    }

    pub fn last_ack(&self) -> Option<&Ack> {
        self.acks.last()
    }

    pub fn forked(&self) -> bool {
        self.acks.iter().any(|a| a.from_miss)
    }

    pub fn expect_at_end(&self) -> Option<Expect> {
        let last = *self.last_ack()?;
        let also = match self.acks.iter().rposition(|a| a.from_miss) {
            Some(fork) => self.acks[fork.saturating_sub(1)..]
                .iter()
                .map(|a| (a.gid, a.crc))
                .collect(),
            None => Vec::new(),
        };
        Some(Expect { last, also })
    }

    fn ack_of(&self, gid: u64) -> Option<&Ack> {
        self.acks.iter().find(|a| a.gid == gid)
    }

    /// The first acknowledged write newer than `gid`: the one a read that
    /// returned `gid` missed first.
    fn first_ack_after(&self, gid: u64) -> Option<&Ack> {
        self.acks.iter().find(|a| a.gid > gid)
    }
}

/// Whose read: the host that wrote the session last, or another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Where {
    WriterHost,
    OtherHost,
}

/// What read: a page that only reads (`read_and_close`), or the read that
/// begins a read-modify-write (a stale one there is a lost update).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReadKind {
    ReadOnly,
    ReadModifyWrite,
}

#[derive(Default, Clone)]
pub struct ReadStats {
    pub reads: u64,
    /// Older than the newest write acknowledged before the read began.
    pub stale: u64,
    /// Of the stale ones: no session at all.
    pub empty: u64,
    /// Per stale read: how long the write it missed had been acknowledged.
    pub staleness_ms: Vec<u64>,
}

/// What a read returned: the write id in the session (0: none) and the
/// CRC-32 of the session's encoding.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub gid: u64,
    pub crc: u32,
}

/// One stale read, kept to tell which fault it followed.
#[derive(Clone, Copy, Debug)]
pub struct StaleRead {
    pub at: Instant,
    pub host: usize,
    pub place: Where,
    pub empty: bool,
}

#[derive(Default)]
pub struct Ledger {
    pub sessions: Vec<Session>,
    pub next_gid: u64,
    pub reads: BTreeMap<(Where, ReadKind), ReadStats>,
    pub stale_reads: Vec<StaleRead>,
    /// How long each read-modify-write and each read-only request took, µs.
    pub write_us: Vec<u64>,
    pub read_us: Vec<u64>,
    /// The same measured inside PHP, in µs: the session calls only.
    pub php_write_us: Vec<u64>,
    pub php_read_us: Vec<u64>,
    /// Reads that returned an acknowledged write's id with other bytes.
    pub corrupt_reads: u64,
    pub writes_acked: u64,
    pub acked_by_host: BTreeMap<usize, u64>,
    /// `session_start()` returned false (the lock, every server down).
    pub start_failed: u64,
    /// `session_write_close()` returned false.
    pub close_failed: u64,
    /// Read-only requests whose `session_start()` returned false.
    pub read_failed: u64,
    /// Requests cut short: the PHP worker was killed, or hung and was killed.
    pub cut_short: u64,
    /// A PHP warning's text (numbers and ids blanked) -> how often.
    pub php_warnings: BTreeMap<String, u64>,
}

impl Ledger {
    pub fn new(ids: Vec<(String, usize, usize)>) -> Ledger {
        Ledger {
            sessions: ids
                .into_iter()
                .map(|(id, payload_len, owner)| Session {
                    id,
                    payload_len,
                    owner,
                    busy: false,
                    last_write_end: None,
                    acks: Vec::new(),
                })
                .collect(),
            next_gid: 1,
            ..Ledger::default()
        }
    }

    /// Judges one read of session `s` on `host`, begun at `started`.
    pub fn judge_read(
        &mut self,
        s: usize,
        host: usize,
        kind: ReadKind,
        started: Instant,
        seen: Seen,
    ) {
        let session = &self.sessions[s];
        let Some(last) = session.acked_by(started).copied() else {
            return; // nothing was acknowledged yet: any answer is right
        };
        let place = if last.host == host {
            Where::WriterHost
        } else {
            Where::OtherHost
        };
        let corrupt = session.ack_of(seen.gid).is_some_and(|a| a.crc != seen.crc);
        let missed = (seen.gid < last.gid)
            .then(|| session.first_ack_after(seen.gid).map(|a| a.at))
            .flatten();
        let stats = self.reads.entry((place, kind)).or_default();
        stats.reads += 1;
        if let Some(missed_at) = missed {
            self.stale_reads.push(StaleRead {
                at: started,
                host,
                place,
                empty: seen.gid == 0,
            });
            stats.stale += 1;
            stats.empty += u64::from(seen.gid == 0);
            stats
                .staleness_ms
                .push(started.saturating_duration_since(missed_at).as_millis() as u64);
        }
        self.corrupt_reads += u64::from(corrupt);
    }

    pub fn ack(&mut self, s: usize, ack: Ack) {
        self.sessions[s].acks.push(ack);
        self.writes_acked += 1;
        *self.acked_by_host.entry(ack.host).or_default() += 1;
    }

    pub fn warning(&mut self, text: &str) {
        *self.php_warnings.entry(blank_numbers(text)).or_default() += 1;
    }

    /// Every session's newest acknowledged write: what every host must hold.
    pub fn snapshot(&self) -> Vec<(usize, Ack)> {
        self.sessions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.last_ack().map(|a| (i, *a)))
            .collect()
    }
}

/// Warnings differ only by ids, hosts and timings: one line per kind.
pub fn blank_numbers(text: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

/// What a memcached holds for a session key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Absent,
    Tombstone,
    /// Not a memcast stored value, or not a soak session.
    Unreadable,
    Write {
        gid: u64,
        crc: u32,
    },
}

/// The soak's sessions are sealed (`SOAK_SEAL=1`): keys are hashed and
/// data sealed, so the checker derives and opens them as PHP does.
static SEAL: std::sync::Mutex<Option<std::sync::Arc<SessionSeal>>> = std::sync::Mutex::new(None);

pub fn seal_with(seal: Option<SessionSeal>) {
    *SEAL.lock().unwrap_or_else(|e| e.into_inner()) = seal.map(std::sync::Arc::new);
}

pub fn sealing() -> Option<std::sync::Arc<SessionSeal>> {
    SEAL.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Held {
    /// What `raw`, read at memcached key `key`, holds (opened when sealed).
    pub fn of_at(key: &str, raw: Option<&[u8]>) -> Held {
        let Some(seal) = sealing() else {
            return Held::of(raw);
        };
        let Some(raw) = raw else {
            return Held::Absent;
        };
        match StoredValue::parse(raw) {
            None => Held::Unreadable,
            Some(v) if v.tombstone => Held::Tombstone,
            Some(v) => match seal.open(key.as_bytes(), &raw[..HEADER_LEN], v.data) {
                Ok(data) => match session_gid(&data) {
                    Some(gid) => Held::Write {
                        gid,
                        crc: crc32(&data),
                    },
                    None => Held::Unreadable,
                },
                Err(_) => Held::Unreadable,
            },
        }
    }

    pub fn of(raw: Option<&[u8]>) -> Held {
        let Some(raw) = raw else {
            return Held::Absent;
        };
        match StoredValue::parse(raw) {
            None => Held::Unreadable,
            Some(v) if v.tombstone => Held::Tombstone,
            Some(v) => match session_gid(v.data) {
                Some(gid) => Held::Write {
                    gid,
                    crc: crc32(v.data),
                },
                None => Held::Unreadable,
            },
        }
    }

    /// Holds `want` whole, or a newer write of the same session.
    pub fn has(&self, want: &Ack) -> bool {
        match *self {
            Held::Write { gid, crc } => gid > want.gid || (gid == want.gid && crc == want.crc),
            _ => false,
        }
    }

    /// Holds exactly `want`, byte for byte.
    pub fn is(&self, want: &Ack) -> bool {
        *self
            == Held::Write {
                gid: want.gid,
                crc: want.crc,
            }
    }
}

/// The write id in a soak session's data: it begins `n|i:N;g|i:GID;`
/// (PHP keeps the order in which the keys were first set).
pub fn session_gid(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data.get(..64.min(data.len()))?).ok()?;
    let rest = text.strip_prefix("n|i:")?;
    let rest = &rest[rest.find(';')? + 1..];
    let rest = rest.strip_prefix("g|i:")?;
    rest[..rest.find(';')?].parse().ok()
}

/// CRC-32 (IEEE, as PHP's `hash('crc32b')`).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The `q` quantile (0..=1) of `values`, nearest rank; 0 for none.
pub fn quantile(values: &[u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcast_core::version::Version;

    #[test]
    fn crc32_matches_php_crc32b() {
        // php -r 'echo hash("crc32b", "The quick brown fox jumps over the lazy dog");'
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414f_a339
        );
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn gid_is_read_from_the_session_data() {
        assert_eq!(session_gid(b"n|i:3;g|i:1234;w|i:2;p|s:0:\"\";"), Some(1234));
        assert_eq!(session_gid(b"g|i:1;"), None);
        assert_eq!(session_gid(b""), None);
    }

    #[test]
    fn held_values_are_judged_by_write_id_and_crc() {
        let data = b"n|i:1;g|i:7;";
        let v = Version {
            millis: 1,
            counter: 0,
            origin: 1,
        };
        let raw = StoredValue::live(v, data).encode();
        let held = Held::of(Some(&raw));
        let ack = |gid, crc| Ack {
            gid,
            host: 0,
            at: Instant::now(),
            len: data.len(),
            crc,
            from_miss: false,
        };
        assert!(held.is(&ack(7, crc32(data))));
        assert!(!held.has(&ack(7, 1)), "same write id, other bytes");
        assert!(held.has(&ack(6, 1)), "a newer write");
        assert!(!held.has(&ack(8, 1)), "an older write");
        assert_eq!(Held::of(None), Held::Absent);
        assert_eq!(
            Held::of(Some(&StoredValue::tombstone(v).encode())),
            Held::Tombstone
        );
        assert_eq!(Held::of(Some(b"plain")), Held::Unreadable);
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_stale_by_the_time_since_that_write() {
        let mut l = Ledger::new(vec![("s".into(), 0, 0)]);
        let t0 = Instant::now();
        let ack = |gid, host, at| Ack {
            gid,
            host,
            at,
            len: 0,
            crc: 9,
            from_miss: false,
        };
        l.ack(0, ack(1, 0, t0));
        l.ack(0, ack(5, 1, t0 + Duration::from_millis(100)));
        let read = |l: &mut Ledger, host, at_ms, gid, crc| {
            l.judge_read(
                0,
                host,
                ReadKind::ReadOnly,
                t0 + Duration::from_millis(at_ms),
                Seen { gid, crc },
            )
        };
        read(&mut l, 0, 50, 1, 9); // before write 5, on its writer: fresh
        read(&mut l, 1, 400, 1, 9); // on the writer host, 300 ms stale
        read(&mut l, 2, 400, 0, 0); // elsewhere, empty, 400 ms stale
        read(&mut l, 2, 400, 5, 8); // right write id, wrong bytes
        let writer = &l.reads[&(Where::WriterHost, ReadKind::ReadOnly)];
        assert_eq!((writer.reads, writer.stale, writer.empty), (2, 1, 0));
        assert_eq!(writer.staleness_ms, vec![300]);
        let other = &l.reads[&(Where::OtherHost, ReadKind::ReadOnly)];
        assert_eq!((other.reads, other.stale, other.empty), (2, 1, 1));
        assert_eq!(other.staleness_ms, vec![400]);
        assert_eq!(l.corrupt_reads, 1);
    }

    #[test]
    fn after_a_fork_either_side_of_it_is_accepted_at_the_end() {
        let mut l = Ledger::new(vec![("s".into(), 0, 0)]);
        let t = Instant::now();
        let ack = |gid, from_miss| Ack {
            gid,
            host: 0,
            at: t,
            len: 0,
            crc: gid as u32,
            from_miss,
        };
        let held = |gid: u64| Held::Write {
            gid,
            crc: gid as u32,
        };
        l.ack(0, ack(1, false));
        l.ack(0, ack(2, false));
        let plain = l.sessions[0].expect_at_end().unwrap();
        assert!(plain.accepts(&held(2)) && !plain.accepts(&held(1)));
        l.ack(0, ack(3, true)); // read nothing although 2 was acknowledged
        l.ack(0, ack(4, false));
        let forked = l.sessions[0].expect_at_end().unwrap();
        assert!(l.sessions[0].forked());
        assert!(forked.accepts(&held(4)) && forked.accepts(&held(2)));
        assert!(!forked.accepts(&held(1)), "older than the fork");
        assert!(
            !forked.accepts(&Held::Write { gid: 2, crc: 7 }),
            "not whole"
        );
        assert!(!forked.accepts(&Held::Absent));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn warnings_are_counted_by_kind() {
        assert_eq!(
            blank_numbers("Warning: host 198.18.3.2:11211 took 512 ms"),
            "Warning: host #.#.#.#:# took # ms"
        );
    }
}
