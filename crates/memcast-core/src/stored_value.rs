//! What memcached holds for a session: a small header carrying the write's
//! [`Version`] (memcached 1.6.18 has no place of its own for it), then
//! PHP's encoded session data.
//!
//! ```text
//! "MC" | format u8 | flags u8 (bit 0: tombstone, bit 1: created) | version (20) | data
//! ```
//!
//! A tombstone is what a destroyed session leaves for a short while, so that
//! an older write arriving late cannot bring the session back.
//!
//! A *created* value was written by a request that read the session as
//! missing. Such a value only ever takes the place of nothing (or of a
//! tombstone, or of another create): wherever a live session was written
//! by a request that read something, that session wins, whatever the
//! versions say ([`StoredValue::decide`]). So a miss that was wrong (a
//! memcached that lost the session) cannot spread an empty session over the
//! real one, by frames, repairs, snapshots or anti-entropy, and the host that
//! made the mistake takes the real session back from the others.

use crate::version::Version;

const MAGIC: &[u8; 2] = b"MC";
const FORMAT: u8 = 1;
const TOMBSTONE: u8 = 0x01;
const CREATED: u8 = 0x02;
pub const HEADER_LEN: usize = 4 + Version::ENCODED_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredValue<'a> {
    pub version: Version,
    pub tombstone: bool,
    /// Written by a request that began from a miss (see the module doc).
    pub created: bool,
    pub data: &'a [u8],
}

/// What to do with an incoming value where memcached holds another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Replace,
    /// The held value is this write or newer.
    KeepNewer,
    /// The incoming value was created from a miss and a real session is
    /// held: the miss was wrong, the session is kept.
    KeepConflict,
}

impl<'a> StoredValue<'a> {
    pub fn live(version: Version, data: &'a [u8]) -> StoredValue<'a> {
        StoredValue {
            version,
            tombstone: false,
            created: false,
            data,
        }
    }

    /// A write whose request read the session as missing.
    pub fn created(version: Version, data: &'a [u8]) -> StoredValue<'a> {
        StoredValue {
            created: true,
            ..StoredValue::live(version, data)
        }
    }

    pub fn tombstone(version: Version) -> StoredValue<'static> {
        StoredValue {
            version,
            tombstone: true,
            created: false,
            data: &[],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        self.encode_header(&mut out);
        out.extend_from_slice(self.data);
        out
    }

    /// The header alone: what memcastd reads, and what a sealed session's
    /// data is bound to.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        self.encode_header(&mut out);
        out
    }

    fn encode_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        let mut flags = 0;
        if self.tombstone {
            flags |= TOMBSTONE;
        }
        if self.created && !self.tombstone {
            flags |= CREATED;
        }
        out.push(flags);
        self.version.encode(out);
    }

    /// `None` for a value memcast did not write (no header).
    pub fn parse(bytes: &'a [u8]) -> Option<StoredValue<'a>> {
        if bytes.len() < HEADER_LEN || &bytes[0..2] != MAGIC || bytes[2] != FORMAT {
            return None;
        }
        Some(StoredValue {
            version: Version::decode(&bytes[4..])?,
            tombstone: bytes[3] & TOMBSTONE != 0,
            created: bytes[3] & (TOMBSTONE | CREATED) == CREATED,
            data: &bytes[HEADER_LEN..],
        })
    }

    /// Whether `self`, arriving where memcached holds `held` (None: a value
    /// memcast did not write), replaces it. Every path that stores a
    /// session (PHP's writes, frames, repairs, snapshots, anti-entropy)
    /// decides with this one rule:
    ///
    /// - a created value replaces only nothing, a foreign value or an older
    ///   tombstone; a live session is kept ([`Decision::KeepConflict`]),
    ///   except a *newer* created one: of two requests that both started
    ///   the session as new, the first to write it keeps it, on every host
    ///   whatever order their writes arrive in;
    /// - a live value written after a read replaces a created one whatever
    ///   the versions: the create's request missed it;
    /// - otherwise the newer version wins.
    pub fn decide(&self, held: Option<&StoredValue<'_>>) -> Decision {
        let Some(held) = held else {
            return Decision::Replace;
        };
        if held.version == self.version {
            return Decision::KeepNewer; // this very write
        }
        if self.created && !held.tombstone {
            return if held.created && held.version > self.version {
                Decision::Replace
            } else if held.version > self.version {
                Decision::KeepNewer
            } else {
                Decision::KeepConflict
            };
        }
        if held.created && self.is_read_based_live() {
            return Decision::Replace;
        }
        if held.version > self.version {
            Decision::KeepNewer
        } else {
            Decision::Replace
        }
    }

    /// A live session written by a request that read something.
    fn is_read_based_live(&self) -> bool {
        !self.tombstone && !self.created
    }

    /// The version of whatever memcached holds: a foreign value counts as
    /// older than any memcast write, so it is simply replaced.
    pub fn version_of(bytes: &[u8]) -> Version {
        StoredValue::parse(bytes).map_or(Version::ZERO, |v| v.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_value_round_trips() {
        let v = Version {
            millis: 9,
            counter: 1,
            origin: 2,
        };
        let data = b"a|s:1:\"b\";";
        let bytes = StoredValue::live(v, data).encode();
        assert_eq!(StoredValue::parse(&bytes), Some(StoredValue::live(v, data)));
        let t = StoredValue::tombstone(v).encode();
        let parsed = StoredValue::parse(&t).unwrap();
        assert!(parsed.tombstone && parsed.data.is_empty());
    }

    fn v(millis: u64) -> Version {
        Version {
            millis,
            counter: 0,
            origin: 7,
        }
    }

    #[test]
    fn the_created_flag_round_trips_and_old_readers_see_a_live_value() {
        let bytes = StoredValue::created(v(5), b"x|i:1;").encode();
        let parsed = StoredValue::parse(&bytes).unwrap();
        assert!(parsed.created && !parsed.tombstone);
        assert_eq!(parsed.data, b"x|i:1;");
        // A tombstone is never "created".
        let t = StoredValue {
            created: true,
            ..StoredValue::tombstone(v(6))
        };
        assert!(!StoredValue::parse(&t.encode()).unwrap().created);
    }

    #[test]
    fn one_rule_decides_every_store() {
        use Decision::*;
        let live = |m| StoredValue::live(v(m), b"real");
        let created = |m| StoredValue::created(v(m), b"");
        let tomb = |m| StoredValue::tombstone(v(m));
        // Newer wins between values written after reads (and tombstones).
        assert_eq!(live(2).decide(Some(&live(1))), Replace);
        assert_eq!(live(1).decide(Some(&live(2))), KeepNewer);
        assert_eq!(live(2).decide(Some(&live(2))), KeepNewer);
        assert_eq!(tomb(3).decide(Some(&live(2))), Replace);
        assert_eq!(live(2).decide(Some(&tomb(3))), KeepNewer);
        assert_eq!(live(1).decide(None), Replace);
        // A create takes the place of nothing, of an older tombstone or of
        // an older create; never of a real session, even an older one.
        assert_eq!(created(5).decide(None), Replace);
        assert_eq!(created(5).decide(Some(&tomb(4))), Replace);
        assert_eq!(created(5).decide(Some(&tomb(6))), KeepNewer);
        // Of two creates, the first written keeps the session everywhere.
        assert_eq!(created(5).decide(Some(&created(4))), KeepConflict);
        assert_eq!(created(4).decide(Some(&created(5))), Replace);
        assert_eq!(created(5).decide(Some(&created(5))), KeepNewer);
        assert_eq!(created(5).decide(Some(&live(1))), KeepConflict);
        assert_eq!(created(5).decide(Some(&live(9))), KeepNewer);
        // A real session takes back the place a wrong create took, even
        // when older; a destroy after the create still wins by version.
        assert_eq!(live(1).decide(Some(&created(5))), Replace);
        assert_eq!(tomb(6).decide(Some(&created(5))), Replace);
        assert_eq!(tomb(4).decide(Some(&created(5))), KeepNewer);
    }

    #[test]
    fn foreign_value_has_no_header_and_the_oldest_version() {
        assert_eq!(StoredValue::parse(b"plain php session|s:1:\"x\";"), None);
        assert_eq!(StoredValue::version_of(b"x"), Version::ZERO);
    }
}
