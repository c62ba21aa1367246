//! What memcached holds for a session: a small header carrying the write's
//! [`Version`] (memcached 1.6.18 has no place of its own for it), then
//! PHP's encoded session data.
//!
//! ```text
//! "MC" | format u8 | flags u8 (bit 0: tombstone) | version (20) | data
//! ```
//!
//! A tombstone is what a destroyed session leaves for a short while, so that
//! an older write arriving late cannot bring the session back.

use crate::version::Version;

const MAGIC: &[u8; 2] = b"MC";
const FORMAT: u8 = 1;
const TOMBSTONE: u8 = 0x01;
pub const HEADER_LEN: usize = 4 + Version::ENCODED_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredValue<'a> {
    pub version: Version,
    pub tombstone: bool,
    pub data: &'a [u8],
}

impl<'a> StoredValue<'a> {
    pub fn live(version: Version, data: &'a [u8]) -> StoredValue<'a> {
        StoredValue {
            version,
            tombstone: false,
            data,
        }
    }

    pub fn tombstone(version: Version) -> StoredValue<'static> {
        StoredValue {
            version,
            tombstone: true,
            data: &[],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.push(if self.tombstone { TOMBSTONE } else { 0 });
        self.version.encode(&mut out);
        out.extend_from_slice(self.data);
        out
    }

    /// `None` for a value memcast did not write (no header).
    pub fn parse(bytes: &'a [u8]) -> Option<StoredValue<'a>> {
        if bytes.len() < HEADER_LEN || &bytes[0..2] != MAGIC || bytes[2] != FORMAT {
            return None;
        }
        Some(StoredValue {
            version: Version::decode(&bytes[4..])?,
            tombstone: bytes[3] & TOMBSTONE != 0,
            data: &bytes[HEADER_LEN..],
        })
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

    #[test]
    fn foreign_value_has_no_header_and_the_oldest_version() {
        assert_eq!(StoredValue::parse(b"plain php session|s:1:\"x\";"), None);
        assert_eq!(StoredValue::version_of(b"x"), Version::ZERO);
    }
}
