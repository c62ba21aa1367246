//! The wire frame: one session write (or delete, touch, heartbeat) as a
//! length-prefixed binary message, authenticated with HMAC-SHA256 and, when
//! the sender encrypts, with its body encrypted by XChaCha20-Poly1305.
//!
//! ```text
//! magic "MCST" | format u8 (2) | flags u8 (bit 0: encrypted, bit 1: compressed) | op u8 |
//! (op: 1 set, 2 delete, 3 touch, 4 heartbeat, 5 create: a set that began from a miss)
//! key id u32 | origin u64 | epoch u64 | seq u64 | sent ms u64 |
//! version (20) | ttl u32 | key len u16 | value len u32 |
//! plain:     key | value
//! encrypted: nonce (24) | ciphertext of key | value | Poly1305 tag (16)
//! HMAC-SHA256 tag (32) over everything before it
//!
//! compressed: value = inflated len u32 | LZ4 block; value len counts these bytes
//! ```
//!
//! All integers are big-endian. A receiver finds the key by its id and checks
//! the HMAC before it reads a single other field, so nothing unauthenticated
//! is ever interpreted; an encrypted body is then decrypted with the header
//! as associated data. The session id (in the key) is encrypted too: it is a
//! login credential. `sent ms` is the sender's clock when it sealed the frame,
//! what receivers' replay protection judges freshness by.
//!
//! A sender may compress a large value ([`Frame::seal_compressed`]): fewer
//! multicast packets per write; never a session sealed at rest, which was
//! compressed before it was sealed, if at all (`session_seal`). It is compressed before it is encrypted and
//! signed; the key stays as is. A receiver checks the declared inflated
//! length against its value limit before inflating, so a small frame cannot
//! make it allocate more than it would accept uncompressed. Frames without
//! the flag are exactly the format-2 frames of senders that never compress.

use crate::cluster_key::{Keys, AEAD_TAG_LEN, NONCE_LEN, TAG_LEN};
use crate::memcached_key::MAX_KEY_LEN;
use crate::version::Version;

const MAGIC: &[u8; 4] = b"MCST";
const FORMAT: u8 = 2;
const FLAG_ENCRYPTED: u8 = 1;
const FLAG_COMPRESSED: u8 = 2;
/// The inflated length before a compressed value.
const INFLATED_LEN_BYTES: usize = 4;
/// Bytes before the body: magic, format, flags, op, key id, origin, epoch,
/// seq, sent ms, version, ttl, key len, value len.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 1 + 4 + 8 + 8 + 8 + 8 + Version::ENCODED_LEN + 4 + 2 + 4;
/// What encryption adds to a frame: the nonce and the Poly1305 tag.
pub const ENCRYPTION_OVERHEAD: usize = NONCE_LEN + AEAD_TAG_LEN;
/// The default largest value a frame may carry (and memcastd accepts).
pub const DEFAULT_MAX_VALUE_LEN: usize = 8 * 1024 * 1024;

/// The largest sealed frame carrying a value of at most `max_value_len`.
pub fn max_frame_len(max_value_len: usize) -> usize {
    HEADER_LEN + ENCRYPTION_OVERHEAD + MAX_KEY_LEN + max_value_len + TAG_LEN
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Set = 1,
    Delete = 2,
    Touch = 3,
    Heartbeat = 4,
    /// A set whose request began from a miss: it creates the session, so a
    /// replica applies it only where the key is absent (or a tombstone).
    /// Where a live session exists it loses: a miss is not proof that a
    /// session does not exist, and an empty session must never replace it.
    Create = 5,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            1 => Op::Set,
            2 => Op::Delete,
            3 => Op::Touch,
            4 => Op::Heartbeat,
            5 => Op::Create,
            _ => return None,
        })
    }

    /// Whether the frame stores a value (live or tombstone) in memcached.
    pub fn stores(self) -> bool {
        matches!(self, Op::Set | Op::Create | Op::Delete)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub op: Op,
    pub origin: u64,
    pub epoch: u64,
    /// Per (origin, epoch), starting at 1; a heartbeat carries the last one sent.
    pub seq: u64,
    pub version: Version,
    /// Seconds, as PHP's `session.gc_maxlifetime`.
    pub ttl: u32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Why a frame was dropped; [`FrameError::reason`] names the counter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than any valid frame")]
    Truncated(usize),
    #[error("frame of {len} bytes is larger than the limit of {max}")]
    Oversized { len: usize, max: usize },
    #[error("not a memcast frame (bad magic or format)")]
    NotMemcast,
    #[error("frame signed with unknown key id {0:08x}")]
    UnknownKey(u32),
    #[error("frame failed authentication")]
    BadTag,
    #[error("encrypted frame failed to decrypt")]
    Undecryptable,
    #[error("frame lengths do not add up")]
    BadLength,
    #[error("frame has unknown op {0}")]
    UnknownOp(u8),
    #[error("frame has unknown flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("compressed value inflates to {len} bytes, over the limit of {max}")]
    InflatesOversized { len: usize, max: usize },
    #[error("compressed value does not inflate to its declared length")]
    BadCompression,
    #[error(
        "frame key is empty, longer than {MAX_KEY_LEN} bytes, or has spaces or control characters"
    )]
    BadKey,
}

impl FrameError {
    /// The drop counter this error increments: `size`, `auth` or `decode`.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Oversized { .. } | FrameError::InflatesOversized { .. } => "size",
            FrameError::UnknownKey(_) | FrameError::BadTag | FrameError::Undecryptable => "auth",
            _ => "decode",
        }
    }
}

/// What the envelope of an opened frame said, beside the frame itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The key it was signed with.
    pub key_id: u32,
    /// The sender's clock when it sealed the frame (ms since the epoch).
    pub sent_ms: u64,
    pub encrypted: bool,
    /// Whether its value came compressed.
    pub compressed: bool,
}

impl Frame {
    /// Encodes and signs the frame with `keys`' current key (and encrypts its
    /// body when `keys` says so), stamped with the current time.
    pub fn seal<K: Keys + ?Sized>(&self, keys: &K) -> Vec<u8> {
        self.seal_full(keys, crate::unix_millis(), 0)
    }

    /// [`Frame::seal`], with the value LZ4-compressed when it is at least
    /// `threshold` bytes (0: never) and compressing makes it smaller.
    /// Heartbeats are never compressed.
    pub fn seal_compressed<K: Keys + ?Sized>(&self, keys: &K, threshold: usize) -> Vec<u8> {
        self.seal_full(keys, crate::unix_millis(), threshold)
    }

    /// [`Frame::seal`] with the send time given: a relay's heartbeats, whose
    /// send times must grow, and tests of replay windows.
    pub fn seal_at<K: Keys + ?Sized>(&self, keys: &K, sent_ms: u64) -> Vec<u8> {
        self.seal_full(keys, sent_ms, 0)
    }

    fn seal_full<K: Keys + ?Sized>(&self, keys: &K, sent_ms: u64, threshold: usize) -> Vec<u8> {
        let key = keys.signing();
        let encrypt = keys.encrypts();
        let compressed = self.compressed_value(threshold);
        let value = compressed.as_deref().unwrap_or(&self.value);
        let body_len = self.key.len() + value.len();
        let mut out = Vec::with_capacity(HEADER_LEN + ENCRYPTION_OVERHEAD + body_len + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        let mut flags = 0;
        if encrypt {
            flags |= FLAG_ENCRYPTED;
        }
        if compressed.is_some() {
            flags |= FLAG_COMPRESSED;
        }
        out.push(flags);
        out.push(self.op as u8);
        out.extend_from_slice(&key.id().to_be_bytes());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&sent_ms.to_be_bytes());
        self.version.encode(&mut out);
        out.extend_from_slice(&self.ttl.to_be_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        if encrypt {
            let mut body = Vec::with_capacity(body_len);
            body.extend_from_slice(&self.key);
            body.extend_from_slice(value);
            let (nonce, tag) = key.encrypt(&out, &mut body);
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&body);
            out.extend_from_slice(&tag);
        } else {
            out.extend_from_slice(&self.key);
            out.extend_from_slice(value);
        }
        let tag = key.tag(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// The value as a compressed frame carries it (inflated length, LZ4
    /// block), when it is due for compression and comes out smaller. A
    /// session sealed at rest is ciphertext (compressed before sealing when
    /// large): not worth an attempt.
    fn compressed_value(&self, threshold: usize) -> Option<Vec<u8>> {
        let due = threshold > 0
            && self.value.len() >= threshold
            && self.op != Op::Heartbeat
            && !crate::session_seal::is_sealed(&self.value)
            && u32::try_from(self.value.len()).is_ok();
        if !due {
            return None;
        }
        let mut out = vec![
            0;
            INFLATED_LEN_BYTES
                + lz4_flex::block::get_maximum_output_size(self.value.len())
        ];
        out[..INFLATED_LEN_BYTES].copy_from_slice(&(self.value.len() as u32).to_be_bytes());
        let n = lz4_flex::block::compress_into(&self.value, &mut out[INFLATED_LEN_BYTES..]).ok()?;
        out.truncate(INFLATED_LEN_BYTES + n);
        (out.len() < self.value.len()).then_some(out)
    }

    /// Authenticates and decodes `bytes`. `max_value_len` bounds the value.
    pub fn open<K: Keys + ?Sized>(
        bytes: &[u8],
        keys: &K,
        max_value_len: usize,
    ) -> Result<Frame, FrameError> {
        Frame::open_envelope(bytes, keys, max_value_len).map(|(frame, _)| frame)
    }

    /// [`Frame::open`], also returning what the envelope said.
    pub fn open_envelope<K: Keys + ?Sized>(
        bytes: &[u8],
        keys: &K,
        max_value_len: usize,
    ) -> Result<(Frame, Envelope), FrameError> {
        let max_len = max_frame_len(max_value_len);
        if bytes.len() > max_len {
            return Err(FrameError::Oversized {
                len: bytes.len(),
                max: max_len,
            });
        }
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(FrameError::Truncated(bytes.len()));
        }
        if &bytes[0..4] != MAGIC || bytes[4] != FORMAT {
            return Err(FrameError::NotMemcast);
        }
        let mut r = Reader(&bytes[7..]);
        let key_id = r.u32();
        let key = keys.lookup(key_id).ok_or(FrameError::UnknownKey(key_id))?;
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        if !key.verify(signed, tag) {
            return Err(FrameError::BadTag);
        }
        let flags = bytes[5];
        if flags & !(FLAG_ENCRYPTED | FLAG_COMPRESSED) != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        let encrypted = flags & FLAG_ENCRYPTED != 0;
        let compressed = flags & FLAG_COMPRESSED != 0;
        let op = Op::from_u8(bytes[6]).ok_or(FrameError::UnknownOp(bytes[6]))?;
        let origin = r.u64();
        let epoch = r.u64();
        let seq = r.u64();
        let sent_ms = r.u64();
        let version = Version::decode(r.take(Version::ENCODED_LEN)).ok_or(FrameError::BadLength)?;
        let ttl = r.u32();
        let key_len = r.u16() as usize;
        let value_len = r.u32() as usize;
        let overhead = if encrypted { ENCRYPTION_OVERHEAD } else { 0 };
        if HEADER_LEN + overhead + key_len + value_len != signed.len() {
            return Err(FrameError::BadLength);
        }
        let (header, body) = signed.split_at(HEADER_LEN);
        // Plain bodies are read in place; a decrypted one is the buffer the
        // value then keeps (one copy of the value either way).
        let decrypted;
        let body: &[u8] = if encrypted {
            let (nonce, rest) = body.split_at(NONCE_LEN);
            let (ciphertext, aead_tag) = rest.split_at(rest.len() - AEAD_TAG_LEN);
            let mut plain = ciphertext.to_vec();
            if !key.decrypt(header, nonce, &mut plain, aead_tag) {
                return Err(FrameError::Undecryptable);
            }
            decrypted = plain;
            &decrypted
        } else {
            body
        };
        let (k, v) = body.split_at(key_len);
        if op != Op::Heartbeat && !crate::memcached_key::is_valid(k) {
            return Err(FrameError::BadKey);
        }
        let value = if compressed {
            inflate(v, max_value_len)?
        } else {
            v.to_vec()
        };
        let frame = Frame {
            op,
            origin,
            epoch,
            seq,
            version,
            ttl,
            key: k.to_vec(),
            value,
        };
        let envelope = Envelope {
            key_id,
            sent_ms,
            encrypted,
            compressed,
        };
        Ok((frame, envelope))
    }
}

/// A compressed value (inflated length, LZ4 block) inflated, once its
/// declared length is known to be within `max_value_len`: the buffer is
/// that length and decoding never writes past it.
fn inflate(wire: &[u8], max_value_len: usize) -> Result<Vec<u8>, FrameError> {
    if wire.len() < INFLATED_LEN_BYTES {
        return Err(FrameError::BadLength);
    }
    let (len, block) = wire.split_at(INFLATED_LEN_BYTES);
    let len = Reader(len).u32() as usize;
    if len > max_value_len {
        return Err(FrameError::InflatesOversized {
            len,
            max: max_value_len,
        });
    }
    let mut value = vec![0; len];
    match lz4_flex::block::decompress_into(block, &mut value) {
        Ok(n) if n == len => Ok(value),
        _ => Err(FrameError::BadCompression),
    }
}

/// Reads fixed-width fields from a slice whose length was checked beforehand.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2));
        u16::from_be_bytes(b)
    }
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4));
        u32::from_be_bytes(b)
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8));
        u64::from_be_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_key::{Keyring, SharedKey};

    fn key(b: u8) -> SharedKey {
        SharedKey::from_secret(&[b; 32]).unwrap()
    }

    fn sample() -> Frame {
        Frame {
            op: Op::Set,
            origin: 0x1122_3344_5566_7788,
            epoch: 1_700_000_000_000,
            seq: 42,
            version: Version {
                millis: 1_700_000_000_123,
                counter: 3,
                origin: 0x1122_3344_5566_7788,
            },
            ttl: 1440,
            key: b"memcast.sess.abc".to_vec(),
            // PHP's session encoding is full of '|', which broke the seed's text format.
            value: b"user|s:5:\"alice\";cart|a:1:{i:0;s:3:\"a|b\";}\0\xff".to_vec(),
        }
    }

    #[test]
    fn frame_round_trips() {
        let f = sample();
        let bytes = f.seal(&key(1));
        assert_eq!(Frame::open(&bytes, &key(1), 1 << 20), Ok(f));
        for op in [Op::Set, Op::Create, Op::Delete, Op::Touch] {
            let f = Frame { op, ..sample() };
            assert_eq!(Frame::open(&f.seal(&key(1)), &key(1), 1 << 20), Ok(f));
        }
        assert!(Op::Create.stores() && !Op::Touch.stores() && !Op::Heartbeat.stores());
    }

    fn encrypting(b: u8) -> Keyring {
        Keyring::new(key(b), None, true)
    }

    #[test]
    fn encrypted_frame_round_trips_and_hides_key_and_value() {
        let f = sample();
        let bytes = f.seal(&encrypting(1));
        let (opened, env) = Frame::open_envelope(&bytes, &key(1), 1 << 20).unwrap();
        assert_eq!(opened, f);
        assert!(env.encrypted);
        assert_eq!(env.key_id, key(1).id());
        let hay = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!hay(b"alice"), "value in clear");
        assert!(!hay(b"sess.abc"), "session id in clear");
        let plain = f.seal(&key(1));
        assert!(
            plain.windows(5).any(|w| w == b"alice"),
            "control: plain frames carry it"
        );
    }

    #[test]
    fn encrypted_frame_with_a_tampered_body_is_rejected_even_when_resigned() {
        // Someone holding the HMAC key but flipping ciphertext: the AEAD tag fails.
        let mut bytes = sample().seal(&encrypting(1));
        bytes.truncate(bytes.len() - TAG_LEN);
        bytes[HEADER_LEN + NONCE_LEN + 2] ^= 0x40;
        let tag = key(1).tag(&bytes);
        bytes.extend_from_slice(&tag);
        assert_eq!(
            Frame::open(&bytes, &key(1), 1 << 20),
            Err(FrameError::Undecryptable)
        );
    }

    #[test]
    fn every_truncation_of_an_encrypted_frame_is_rejected() {
        let bytes = sample().seal(&encrypting(1));
        for n in 0..bytes.len() {
            assert!(
                Frame::open(&bytes[..n], &key(1), 1 << 20).is_err(),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn a_keyring_opens_frames_of_its_previous_key_and_signs_with_the_new_one() {
        let rolled = Keyring::new(key(2), Some(key(1)), false);
        let old = sample().seal(&key(1));
        assert_eq!(Frame::open(&old, &rolled, 1 << 20), Ok(sample()));
        let new = sample().seal(&rolled);
        let (_, env) = Frame::open_envelope(&new, &rolled, 1 << 20).unwrap();
        assert_eq!(env.key_id, key(2).id());
        assert_eq!(
            Frame::open(&new, &key(1), 1 << 20).unwrap_err().reason(),
            "auth",
            "a host without the new key cannot read it"
        );
        let stranger = sample().seal(&key(3));
        assert_eq!(
            Frame::open(&stranger, &rolled, 1 << 20),
            Err(FrameError::UnknownKey(key(3).id()))
        );
    }

    #[test]
    fn the_send_time_travels_in_the_envelope() {
        let bytes = sample().seal_at(&key(1), 1_234_567);
        let (_, env) = Frame::open_envelope(&bytes, &key(1), 1 << 20).unwrap();
        assert_eq!(env.sent_ms, 1_234_567);
        assert!(!env.encrypted);
    }

    #[test]
    fn frame_under_another_key_is_rejected_as_auth() {
        let bytes = sample().seal(&key(1));
        let err = Frame::open(&bytes, &key(2), 1 << 20).unwrap_err();
        assert_eq!(err.reason(), "auth");
    }

    #[test]
    fn forged_frame_with_the_right_key_id_is_rejected() {
        let mut bytes = sample().seal(&key(1));
        let n = bytes.len();
        bytes[n - TAG_LEN - 1] ^= 0x01; // flip one value bit
        assert_eq!(
            Frame::open(&bytes, &key(1), 1 << 20),
            Err(FrameError::BadTag)
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = sample().seal(&key(1));
        for n in 0..bytes.len() {
            assert!(
                Frame::open(&bytes[..n], &key(1), 1 << 20).is_err(),
                "prefix {n} accepted"
            );
        }
    }

    #[test]
    fn oversized_frame_is_rejected_before_authentication() {
        let mut f = sample();
        f.value = vec![b'x'; 2000];
        let bytes = f.seal(&key(1));
        let err = Frame::open(&bytes, &key(1), 1000).unwrap_err();
        assert_eq!(err.reason(), "size");
    }

    #[test]
    fn signed_frame_with_lying_lengths_is_rejected() {
        let f = sample();
        let mut bytes = f.seal(&key(1));
        bytes.truncate(bytes.len() - TAG_LEN);
        // Claim a longer value than the frame holds, then sign it honestly.
        let at = HEADER_LEN - 4;
        bytes[at..HEADER_LEN].copy_from_slice(&(f.value.len() as u32 + 5).to_be_bytes());
        let tag = key(1).tag(&bytes);
        bytes.extend_from_slice(&tag);
        assert_eq!(
            Frame::open(&bytes, &key(1), 1 << 20),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn signed_frame_with_a_key_that_breaks_memcached_is_rejected() {
        let mut f = sample();
        f.key = b"memcast.sess.a b\r\nflush_all".to_vec();
        let bytes = f.seal(&key(1));
        assert_eq!(
            Frame::open(&bytes, &key(1), 1 << 20),
            Err(FrameError::BadKey)
        );
    }

    /// A serialized PHP session of about 2 KB, as `session_encode()` writes
    /// it: a user record, random hex tokens, a cart of items.
    fn php_session() -> Vec<u8> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut hex = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b"0123456789abcdef"[(x % 16) as usize])
                })
                .collect()
        };
        let s = |v: &str| format!("s:{}:\"{v}\";", v.len());
        let mut out = format!(
            "user|a:4:{{{}i:48213;{}{}{}{}{}i:1764154023;}}csrf_token|{}",
            s("id"),
            s("name"),
            s("Alice Martin"),
            s("email"),
            s("alice.martin@example.com"),
            s("login_at"),
            s(&hex(64))
        );
        out += "cart|a:16:{";
        for i in 0..16 {
            out += &format!(
                "i:{i};a:4:{{{}i:{};{}{}{}i:{};{}{}}}",
                s("sku"),
                100_000 + i * 7919,
                s("title"),
                s(&format!("Product {i} {}", hex(8))),
                s("qty"),
                1 + i % 4,
                s("token"),
                s(&hex(16))
            );
        }
        out += "}last_seen|i:1764154100;visits|i:37;";
        out.into_bytes()
    }

    fn big() -> Frame {
        Frame {
            value: php_session(),
            ..sample()
        }
    }

    #[test]
    fn a_large_value_is_sent_compressed_and_opens_whole_plain_or_encrypted() {
        let f = big();
        assert!((1800..2400).contains(&f.value.len()), "{}", f.value.len());
        for keys in [Keyring::new(key(1), None, false), encrypting(1)] {
            let plain = f.seal(&keys);
            let compressed = f.seal_compressed(&keys, 1024);
            assert!(
                compressed.len() + 400 < plain.len(),
                "{} bytes compressed, {} plain",
                compressed.len(),
                plain.len()
            );
            let (opened, env) = Frame::open_envelope(&compressed, &key(1), 1 << 20).unwrap();
            assert_eq!(opened, f);
            assert!(env.compressed);
            assert_eq!(env.encrypted, keys.encrypts());
            // The key is never compressed: a plain frame still shows it.
            let shows_key = compressed.windows(8).any(|w| w == b"sess.abc");
            assert_eq!(shows_key, !keys.encrypts());
            let (_, env) = Frame::open_envelope(&plain, &key(1), 1 << 20).unwrap();
            assert!(!env.compressed);
        }
    }

    #[test]
    fn a_value_below_the_threshold_or_with_compression_off_is_sent_plain() {
        let f = big();
        let n = f.value.len();
        let compressed = |threshold| {
            let bytes = f.seal_compressed(&key(1), threshold);
            let (opened, env) = Frame::open_envelope(&bytes, &key(1), 1 << 20).unwrap();
            assert_eq!(opened, f);
            env.compressed
        };
        assert!(compressed(n));
        assert!(!compressed(n + 1));
        assert!(!compressed(0));
        let small = sample().seal_compressed(&key(1), 1);
        let (_, env) = Frame::open_envelope(&small, &key(1), 1 << 20).unwrap();
        assert!(!env.compressed, "a value that would grow is sent plain");
    }

    #[test]
    fn incompressible_values_and_heartbeats_are_sent_plain() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let random: Vec<u8> = (0..2048)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let f = Frame {
            value: random,
            ..sample()
        };
        let bytes = f.seal_compressed(&key(1), 1024);
        assert_eq!(bytes.len(), f.seal(&key(1)).len());
        let (opened, env) = Frame::open_envelope(&bytes, &key(1), 1 << 20).unwrap();
        assert_eq!((opened, env.compressed), (f, false));
        let heartbeat = Frame {
            op: Op::Heartbeat,
            value: vec![b'a'; 4096],
            ..sample()
        };
        let bytes = heartbeat.seal_compressed(&key(1), 1024);
        let (_, env) = Frame::open_envelope(&bytes, &key(1), 1 << 20).unwrap();
        assert!(!env.compressed);
        // A session sealed at rest is not even tried (it is ciphertext,
        // compressed before sealing if at all): told by its magic, so a
        // compressible value behind the magic shows the attempt is skipped.
        let sealed = Frame {
            value: [&b"\0MS\x02"[..], &[0u8; 4096]].concat(),
            ..sample()
        };
        let bytes = sealed.seal_compressed(&key(1), 1024);
        let (opened, env) = Frame::open_envelope(&bytes, &key(1), 1 << 20).unwrap();
        assert_eq!((opened, env.compressed), (sealed, false));
    }

    /// A frame signed with the cluster key whose value is `wire` as a
    /// compressed frame carries it (inflated length, LZ4 block), however
    /// wrong: what a sender holding the key could send.
    fn forged_compressed(wire: &[u8]) -> Vec<u8> {
        let mut bytes = Frame {
            value: wire.to_vec(),
            ..sample()
        }
        .seal(&key(1));
        bytes.truncate(bytes.len() - TAG_LEN);
        bytes[5] |= FLAG_COMPRESSED;
        let tag = key(1).tag(&bytes);
        bytes.extend_from_slice(&tag);
        bytes
    }

    fn wire_value(value: &[u8]) -> (u32, Vec<u8>) {
        (value.len() as u32, lz4_flex::block::compress(value))
    }

    fn with_len(len: u32, block: &[u8]) -> Vec<u8> {
        [&len.to_be_bytes()[..], block].concat()
    }

    #[test]
    fn the_forging_helper_makes_frames_that_open() {
        let (len, block) = wire_value(&php_session());
        let (opened, env) =
            Frame::open_envelope(&forged_compressed(&with_len(len, &block)), &key(1), 1 << 20)
                .unwrap();
        assert!(env.compressed);
        assert_eq!(opened.value, php_session());
    }

    #[test]
    fn a_decompression_bomb_is_refused_by_its_declared_length_before_inflating() {
        // 1 MB of zeros compresses to about 4 KB: a small frame, a large value.
        let (len, block) = wire_value(&vec![0u8; 1 << 20]);
        let bytes = forged_compressed(&with_len(len, &block));
        let max = 64 * 1024;
        assert!(
            bytes.len() < max_frame_len(max),
            "the frame itself is small"
        );
        let err = Frame::open(&bytes, &key(1), max).unwrap_err();
        assert_eq!(err, FrameError::InflatesOversized { len: 1 << 20, max });
        assert_eq!(err.reason(), "size");
        // A declared length no receiver could allocate: refused as well.
        let err = Frame::open(
            &forged_compressed(&with_len(u32::MAX, &block)),
            &key(1),
            max,
        );
        assert_eq!(err.unwrap_err().reason(), "size");
        // The same through the sealer: over the limit once inflated.
        let huge = Frame {
            value: vec![b'a'; 100_000],
            ..sample()
        };
        let sealed = huge.seal_compressed(&key(1), 1024);
        assert!(sealed.len() < 2000);
        assert_eq!(
            Frame::open(&sealed, &key(1), 65_536).unwrap_err().reason(),
            "size"
        );
        assert_eq!(Frame::open(&sealed, &key(1), 100_000).unwrap(), huge);
    }

    #[test]
    fn a_signed_frame_whose_compressed_value_does_not_inflate_is_a_decode_error() {
        let (len, block) = wire_value(&php_session());
        let cases = [
            ("truncated block", with_len(len, &block[..block.len() / 2])),
            ("garbage block", with_len(len, &[0xff; 64])),
            ("empty block", with_len(len, &[])),
            ("declared one byte longer", with_len(len + 1, &block)),
            ("declared one byte shorter", with_len(len - 1, &block)),
            ("declared empty", with_len(0, &block)),
        ];
        for (what, wire) in cases {
            let err = Frame::open(&forged_compressed(&wire), &key(1), 1 << 20).unwrap_err();
            assert_eq!(err, FrameError::BadCompression, "{what}");
            assert_eq!(err.reason(), "decode", "{what}");
        }
        for short in [&[][..], &[0, 0, 8]] {
            assert_eq!(
                Frame::open(&forged_compressed(short), &key(1), 1 << 20),
                Err(FrameError::BadLength)
            );
        }
    }

    #[test]
    fn every_truncation_of_a_compressed_frame_is_rejected() {
        for keys in [Keyring::new(key(1), None, false), encrypting(1)] {
            let bytes = big().seal_compressed(&keys, 1024);
            for n in 0..bytes.len() {
                assert!(
                    Frame::open(&bytes[..n], &key(1), 1 << 20).is_err(),
                    "prefix {n}"
                );
            }
        }
    }

    #[test]
    fn random_bytes_are_rejected() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [0, 1, 50, 96, 97, 200, 5000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(Frame::open(&bytes, &key(1), 1 << 20).is_err());
        }
    }
}
