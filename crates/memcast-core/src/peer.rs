//! The TCP protocol between memcastd peers: a subscriber asks an origin for a
//! range of frames it missed (repair), or asks any peer for everything it
//! holds (resync, warm-up).
//!
//! ```text
//! request:  "MCRQ" | format u8 | kind u8 (1 range, 2 snapshot, 3 digest,
//!           4 buckets, 5 heard, 6 relay) | key id u32 |
//!           origin u64 | epoch u64 | from u64 | to u64 | time ms u64 |
//!           HMAC-SHA256 tag (32) over everything before it
//! response: records, each u32 length + one sealed frame; length 0 ends the
//!           stream; length 0xFFFFFFFF means "that range is no longer held"
//! ```
//!
//! Requests are signed so that only cluster members can read sessions out of
//! a peer; every frame in a response is sealed like a frame on the group, so a
//! response is authenticated frame by frame with the same [`Frame::open`].

use std::io::{self, Read, Write};

use crate::cluster_key::{Keys, TAG_LEN};
use crate::frame::Frame;

const MAGIC: &[u8; 4] = b"MCRQ";
const FORMAT: u8 = 1;
pub const REQUEST_LEN: usize = 4 + 1 + 1 + 4 + 8 * 5 + TAG_LEN;
const END: u32 = 0;
const GONE: u32 = u32::MAX;
/// A request older or newer than this (by the receiver's clock) is refused.
pub const MAX_REQUEST_SKEW_MS: u64 = 5 * 60 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Frames `from..=to` of one origin's epoch. `to = u64::MAX` asks for
    /// everything after `from - 1` (a silent origin's catch-up); nothing
    /// sent since is an empty answer, a range the ring no longer holds is
    /// "gone".
    Range {
        origin: u64,
        epoch: u64,
        from: u64,
        to: u64,
    },
    /// Every session the peer holds.
    Snapshot,
    /// The peer's [`Digests`] over entries written before `cutoff_ms` (so
    /// writes still in flight do not count as differences), as one sealed
    /// heartbeat frame whose value is the digest table.
    Digest { cutoff_ms: u64 },
    /// Every session in the digest buckets given (a 256-bit set).
    Buckets(BucketSet),
    /// How far the peer holds the frames of each origin that keeps no ring
    /// (PHP workers publishing directly), as one sealed heartbeat frame
    /// whose value is the table; ranges of those origins are then asked
    /// with [`Request::Range`] like a relay's.
    Heard,
    /// The peer's relay: its latest heartbeat as one sealed frame (origin,
    /// epoch, last sequence number, host name, repair address), or an empty
    /// answer from a peer that runs no relay. How a host learns of a relay
    /// whose multicast never reaches it (see memcastd's unheard relays).
    Relay,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer request is not a memcast request")]
    NotMemcast,
    #[error("peer request signed with unknown key id {0:08x}")]
    UnknownKey(u32),
    #[error("peer request failed authentication")]
    BadTag,
    #[error("peer request is {0} ms away from this host's clock")]
    Stale(u64),
    #[error("peer request has unknown kind {0}")]
    UnknownKind(u8),
    #[error("peer record of {len} bytes is larger than the limit of {max}")]
    Oversized { len: usize, max: usize },
    #[error("peer connection: {0}")]
    Io(#[from] io::Error),
}

impl Request {
    pub fn encode<K: Keys + ?Sized>(&self, keys: &K, now_ms: u64) -> [u8; REQUEST_LEN] {
        let key = keys.signing();
        let (kind, origin, epoch, from, to) = match *self {
            Request::Range {
                origin,
                epoch,
                from,
                to,
            } => (1u8, origin, epoch, from, to),
            Request::Snapshot => (2u8, 0, 0, 0, 0),
            Request::Digest { cutoff_ms } => (3u8, 0, 0, cutoff_ms, 0),
            Request::Buckets(set) => {
                let [a, b, c, d] = set.0;
                (4u8, a, b, c, d)
            }
            Request::Heard => (5u8, 0, 0, 0, 0),
            Request::Relay => (6u8, 0, 0, 0, 0),
        };
        let mut out = Vec::with_capacity(REQUEST_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.push(kind);
        out.extend_from_slice(&key.id().to_be_bytes());
        for v in [origin, epoch, from, to, now_ms] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        let tag = key.tag(&out);
        out.extend_from_slice(&tag);
        let mut fixed = [0u8; REQUEST_LEN];
        fixed.copy_from_slice(&out);
        fixed
    }

    pub fn decode<K: Keys + ?Sized>(
        bytes: &[u8; REQUEST_LEN],
        keys: &K,
        now_ms: u64,
    ) -> Result<Request, PeerError> {
        if &bytes[0..4] != MAGIC || bytes[4] != FORMAT {
            return Err(PeerError::NotMemcast);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let key_id = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        let key = keys.lookup(key_id).ok_or(PeerError::UnknownKey(key_id))?;
        let (signed, tag) = bytes.split_at(REQUEST_LEN - TAG_LEN);
        if !key.verify(signed, tag) {
            return Err(PeerError::BadTag);
        }
        let sent = u64_at(10 + 32);
        let skew = now_ms.abs_diff(sent);
        if skew > MAX_REQUEST_SKEW_MS {
            return Err(PeerError::Stale(skew));
        }
        match bytes[5] {
            1 => Ok(Request::Range {
                origin: u64_at(10),
                epoch: u64_at(18),
                from: u64_at(26),
                to: u64_at(34),
            }),
            2 => Ok(Request::Snapshot),
            3 => Ok(Request::Digest {
                cutoff_ms: u64_at(26),
            }),
            4 => Ok(Request::Buckets(BucketSet([
                u64_at(10),
                u64_at(18),
                u64_at(26),
                u64_at(34),
            ]))),
            5 => Ok(Request::Heard),
            6 => Ok(Request::Relay),
            k => Err(PeerError::UnknownKind(k)),
        }
    }
}

/// Anti-entropy digests: sessions fall into 256 buckets by a hash of their
/// key; each bucket's digest is the XOR of a hash of (key, version,
/// tombstone) over its entries. Two replicas holding the same sessions have
/// the same table; a differing bucket says where to look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests(pub Vec<[u8; 16]>);

pub const BUCKETS: usize = 256;

impl Default for Digests {
    fn default() -> Self {
        Digests(vec![[0u8; 16]; BUCKETS])
    }
}

/// A set of digest buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketSet(pub [u64; 4]);

impl BucketSet {
    pub fn insert(&mut self, bucket: u8) {
        self.0[usize::from(bucket / 64)] |= 1 << (bucket % 64);
    }

    pub fn contains(&self, bucket: u8) -> bool {
        self.0[usize::from(bucket / 64)] & (1 << (bucket % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The digest bucket a key falls in.
pub fn bucket_of(key: &[u8]) -> u8 {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(key)[0]
}

impl Digests {
    /// Adds one stored entry (its raw memcached value) if its version is not
    /// newer than `cutoff_ms`; values memcast did not write are ignored.
    pub fn add(&mut self, key: &[u8], raw: &[u8], cutoff_ms: u64) {
        use sha2::{Digest as _, Sha256};
        let Some(stored) = crate::stored_value::StoredValue::parse(raw) else {
            return;
        };
        if stored.version.millis > cutoff_ms {
            return;
        }
        let mut version = Vec::with_capacity(crate::version::Version::ENCODED_LEN);
        stored.version.encode(&mut version);
        let h = Sha256::new()
            .chain_update(key)
            .chain_update([0u8, u8::from(stored.tombstone)])
            .chain_update(&version)
            .finalize();
        let bucket = &mut self.0[usize::from(bucket_of(key))];
        for (d, b) in bucket.iter_mut().zip(h.iter()) {
            *d ^= b;
        }
    }

    /// Buckets whose digests differ.
    pub fn differing(&self, other: &Digests) -> BucketSet {
        let mut set = BucketSet::default();
        for b in (0..BUCKETS).filter(|&b| self.0[b] != other.0[b]) {
            set.insert(b as u8);
        }
        set
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0.concat()
    }

    pub fn decode(bytes: &[u8]) -> Option<Digests> {
        if bytes.len() != BUCKETS * 16 {
            return None;
        }
        Some(Digests(
            bytes
                .chunks_exact(16)
                .map(|c| {
                    let mut d = [0u8; 16];
                    d.copy_from_slice(c);
                    d
                })
                .collect(),
        ))
    }
}

/// One record of a response stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// A sealed frame, still to be opened (authenticated) by the reader.
    Frame(Vec<u8>),
    End,
    /// The range asked for has left the origin's replay ring.
    Gone,
}

pub fn write_frame<W: Write + ?Sized>(w: &mut W, sealed: &[u8]) -> io::Result<()> {
    let len = u32::try_from(sealed.len())
        .ok()
        .filter(|l| *l != END && *l != GONE)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame length out of range"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(sealed)
}

pub fn write_end<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    w.write_all(&END.to_be_bytes())
}

pub fn write_gone(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&GONE.to_be_bytes())
}

/// Reads one record; a length above `max_len` is an error, not an allocation.
pub fn read_record(r: &mut impl Read, max_len: usize) -> Result<Record, PeerError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    match u32::from_be_bytes(len) {
        END => Ok(Record::End),
        GONE => Ok(Record::Gone),
        n => {
            let n = n as usize;
            if n > max_len {
                return Err(PeerError::Oversized {
                    len: n,
                    max: max_len,
                });
            }
            let mut buf = vec![0u8; n];
            r.read_exact(&mut buf)?;
            Ok(Record::Frame(buf))
        }
    }
}

/// The largest record a reader should accept for frames of `max_value_len`.
pub fn max_record_len(max_value_len: usize) -> usize {
    crate::frame::max_frame_len(max_value_len)
}

/// Convenience for tests and servers: seal and write.
pub fn send_frame<K: Keys + ?Sized>(w: &mut impl Write, frame: &Frame, key: &K) -> io::Result<()> {
    write_frame(w, &frame.seal(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::SharedKey;

    fn key(b: u8) -> SharedKey {
        SharedKey::from_secret(&[b; 32]).unwrap()
    }

    #[test]
    fn digests_match_for_the_same_sessions_and_point_at_the_difference() {
        use crate::stored_value::StoredValue;
        use crate::version::Version;
        let v = |m| Version {
            millis: m,
            counter: 0,
            origin: 1,
        };
        let entries = [
            (b"a".as_slice(), StoredValue::live(v(1), b"x").encode()),
            (b"b".as_slice(), StoredValue::tombstone(v(2)).encode()),
        ];
        let mut one = Digests::default();
        let mut two = Digests::default();
        for (k, raw) in &entries {
            one.add(k, raw, u64::MAX);
        }
        for (k, raw) in entries.iter().rev() {
            two.add(k, raw, u64::MAX);
        }
        two.add(b"foreign", b"not a memcast value", u64::MAX);
        two.add(b"too new", &StoredValue::live(v(99), b"z").encode(), 50);
        assert_eq!(one, two, "order and foreign values do not matter");
        two.add(b"c", &StoredValue::live(v(3), b"y").encode(), u64::MAX);
        let differing = one.differing(&two);
        assert_eq!(differing.len(), 1);
        assert!(differing.contains(bucket_of(b"c")));
        assert_eq!(Digests::decode(&two.encode()), Some(two));
        assert_eq!(Digests::decode(&[0u8; 15]), None);
    }

    #[test]
    fn requests_round_trip() {
        for req in [
            Request::Snapshot,
            Request::Digest { cutoff_ms: 12345 },
            Request::Buckets(BucketSet([1, 0, 1 << 63, 7])),
            Request::Heard,
            Request::Relay,
            Request::Range {
                origin: 7,
                epoch: 9,
                from: 10,
                to: 20,
            },
        ] {
            let bytes = req.encode(&key(1), 1_000_000);
            assert_eq!(Request::decode(&bytes, &key(1), 1_000_500).unwrap(), req);
        }
    }

    #[test]
    fn request_under_another_key_or_forged_or_stale_is_refused() {
        let bytes = Request::Snapshot.encode(&key(1), 1_000_000);
        assert!(matches!(
            Request::decode(&bytes, &key(2), 1_000_000),
            Err(PeerError::UnknownKey(_))
        ));
        let mut forged = bytes;
        forged[30] ^= 1;
        assert!(matches!(
            Request::decode(&forged, &key(1), 1_000_000),
            Err(PeerError::BadTag)
        ));
        let later = 1_000_000 + MAX_REQUEST_SKEW_MS + 1;
        assert!(matches!(
            Request::decode(&bytes, &key(1), later),
            Err(PeerError::Stale(_))
        ));
    }

    #[test]
    fn record_stream_round_trips_and_bounds_lengths() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abc").unwrap();
        write_gone(&mut buf).unwrap();
        write_end(&mut buf).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_record(&mut r, 10).unwrap(),
            Record::Frame(b"abc".to_vec())
        );
        assert_eq!(read_record(&mut r, 10).unwrap(), Record::Gone);
        assert_eq!(read_record(&mut r, 10).unwrap(), Record::End);
        let huge = 1_000_000u32.to_be_bytes();
        assert!(matches!(
            read_record(&mut &huge[..], 10),
            Err(PeerError::Oversized { .. })
        ));
        assert!(matches!(
            read_record(&mut &b"\0\0"[..], 10),
            Err(PeerError::Io(_))
        ));
    }
}
