//! Sessions sealed at rest: what memcached holds (and what crosses the
//! network) names no session id and shows no session data.
//!
//! - **Keys**: a session's memcached key is the prefix and 32 hex digits of
//!   HMAC-SHA256(session-id key, id), the first 128 bits. The session-id key
//!   is the current key's ([`SharedKey::session_id_key`]): it survives a key
//!   roll, so a roll does not move any session. Lock and per-session keys
//!   add their suffix to this key, never the id.
//! - **Values**: only the data part after the [`StoredValue`] header is
//!   sealed; memcastd reads the header alone, so it moves sealed values as
//!   opaque bytes and needs no key for them.
//!
//! ```text
//! sealed data = "\0MS" | format u8 | key id u32 | nonce (24) | ciphertext | Poly1305 tag (16)
//! format 1: plaintext = the session data;       associated data = memcached key | header
//! format 2: plaintext = inflated len u32 | LZ4 block;
//!           associated data = "\0MS" | 2 | key id | memcached key | header
//! ```
//!
//! XChaCha20-Poly1305 under a subkey of the cluster key (never the frame
//! keys), with the memcached key and the header as associated data: a value
//! copied to another session's key, or a header altered (a version raised to
//! win over a newer write), does not open. The key id lets a value sealed
//! under a key that is still accepted open after a roll; the next write
//! seals it under the current key.
//!
//! Ciphertext does not compress, so a large session is compressed before it
//! is sealed ([`SessionSeal::seal_compressed`], `memcast.compress_threshold`):
//! format 2, when that makes it smaller. memcached then holds fewer bytes and
//! every frame carrying the value is smaller, while memcastd still moves it
//! as opaque bytes. Format 1 is unchanged (small sessions, and values sealed
//! by hosts that never compress), and every host opens both. Format 2's
//! associated data begins with its preamble: a format byte changed either way
//! does not open (format 1's begins with a memcached key, never a NUL byte).
//! The declared inflated length is checked against [`MAX_INFLATED_LEN`]
//! before anything is allocated.
//!
//! [`StoredValue`]: crate::stored_value::StoredValue

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::cluster_key::{Keyring, SharedKey, AEAD_TAG_LEN, NONCE_LEN};

const MAGIC: &[u8; 3] = b"\0MS";
/// The session data as it is.
const FORMAT_PLAIN: u8 = 1;
/// The session data LZ4-compressed: inflated length u32, then the block.
const FORMAT_COMPRESSED: u8 = 2;
const PREAMBLE_LEN: usize = MAGIC.len() + 1 + 4;
const INFLATED_LEN_BYTES: usize = 4;
/// What sealing adds to a session's data (uncompressed, format 1).
pub const OVERHEAD: usize = PREAMBLE_LEN + NONCE_LEN + AEAD_TAG_LEN;
/// The most a compressed value may inflate to: the largest session
/// `memcast.max_session_size` lets any host write.
pub const MAX_INFLATED_LEN: usize = crate::frame::DEFAULT_MAX_VALUE_LEN;
/// Hex digits of the keyed hash in a memcached key (128 bits).
pub const HASH_HEX_LEN: usize = 32;
const VALUE_KEY_LABEL: &str = "memcast session values";

/// Why a value was not handed to PHP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("is not sealed (stored by a host with memcast.seal = 0, or written by another tool)")]
    NotSealed,
    #[error("is sealed under key {0:08x}, which this host no longer accepts")]
    UnknownKey(u32),
    #[error("does not open: altered in memcached, or copied there from another session's key")]
    Tampered,
    #[error(
        "is sealed in format {0}, which this memcast does not know (written by a newer version)"
    )]
    UnknownFormat(u8),
    #[error(
        "opens but declares {0} bytes inflated, over the {MAX_INFLATED_LEN} a session may hold"
    )]
    InflatesOversized(usize),
    #[error("opens but does not inflate to its declared length (a corrupt LZ4 block)")]
    DoesNotInflate,
}

/// Whether `data` is sealed session data (by its magic): ciphertext, not
/// worth trying to compress.
pub fn is_sealed(data: &[u8]) -> bool {
    data.len() >= OVERHEAD && data.starts_with(MAGIC)
}

struct ValueKey {
    id: u32,
    cipher: XChaCha20Poly1305,
}

impl ValueKey {
    fn new(key: &SharedKey) -> ValueKey {
        ValueKey {
            id: key.id(),
            cipher: XChaCha20Poly1305::new(&key.subkey(VALUE_KEY_LABEL).into()),
        }
    }
}

/// The keys a host hashes session ids and seals session data with.
pub struct SessionSeal {
    id_hash: Hmac<Sha256>,
    /// The current key first: it seals; every key here opens.
    value_keys: Vec<ValueKey>,
}

impl std::fmt::Debug for SessionSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self
            .value_keys
            .iter()
            .map(|k| format!("{:08x}", k.id))
            .collect();
        write!(f, "SessionSeal(keys {})", ids.join(", "))
    }
}

impl SessionSeal {
    pub fn new(keys: &Keyring) -> SessionSeal {
        let current = keys.keys().next();
        let id_key = current.map_or(&[][..], |k| k.session_id_key());
        SessionSeal {
            // HMAC takes keys of any length; this cannot fail.
            id_hash: <Hmac<Sha256> as Mac>::new_from_slice(id_key)
                .unwrap_or_else(|_| unreachable!()),
            value_keys: keys.keys().map(ValueKey::new).collect(),
        }
    }

    /// The memcached key of a session: `prefix` and the keyed hash of `id`.
    pub fn memcached_key(&self, prefix: &[u8], id: &[u8]) -> Vec<u8> {
        let mut mac = self.id_hash.clone();
        mac.update(id);
        let digest = mac.finalize().into_bytes();
        let mut key = Vec::with_capacity(prefix.len() + HASH_HEX_LEN);
        key.extend_from_slice(prefix);
        for b in &digest[..HASH_HEX_LEN / 2] {
            key.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        key
    }

    /// Seals `data`, bound to the memcached `key` and the value's `header`
    /// (format 1: never compressed).
    pub fn seal(&self, key: &[u8], header: &[u8], data: &[u8]) -> Vec<u8> {
        self.seal_compressed(key, header, data, 0)
    }

    /// [`SessionSeal::seal`], with `data` LZ4-compressed inside the seal
    /// (format 2) when it is at least `threshold` bytes (0: never) and
    /// compressing makes it smaller; else format 1, as [`SessionSeal::seal`].
    pub fn seal_compressed(
        &self,
        key: &[u8],
        header: &[u8],
        data: &[u8],
        threshold: usize,
    ) -> Vec<u8> {
        let Some(current) = self.value_keys.first() else {
            return data.to_vec(); // unreachable: a keyring has a current key
        };
        let mut nonce = [0u8; NONCE_LEN];
        fill_nonce(&mut nonce);
        let preamble = |format: u8, body_len: usize| {
            let mut out = Vec::with_capacity(OVERHEAD + body_len);
            out.extend_from_slice(MAGIC);
            out.push(format);
            out.extend_from_slice(&current.id.to_be_bytes());
            out
        };
        let due = threshold > 0 && data.len() >= threshold && data.len() <= MAX_INFLATED_LEN;
        if due {
            let block_len = lz4_flex::block::get_maximum_output_size(data.len());
            let mut out = preamble(FORMAT_COMPRESSED, INFLATED_LEN_BYTES + block_len);
            let aad = [&out[..], key, header].concat();
            out.extend_from_slice(&nonce);
            let body = out.len();
            if compress_behind(&mut out, data) {
                encrypt(current, &nonce, &aad, body, &mut out);
                return out;
            }
        }
        let mut out = preamble(FORMAT_PLAIN, data.len());
        out.extend_from_slice(&nonce);
        let body = out.len();
        out.extend_from_slice(data);
        encrypt(current, &nonce, &[key, header].concat(), body, &mut out);
        out
    }

    /// Whether `sealed` was sealed under the current key (else the next
    /// write should seal it again, before the old key is dropped).
    pub fn is_under_current_key(&self, sealed: &[u8]) -> bool {
        match (self.value_keys.first(), sealed.get(4..PREAMBLE_LEN)) {
            (Some(current), Some(id)) => id == current.id.to_be_bytes(),
            _ => false,
        }
    }

    /// The session data in `sealed`, if it opens under an accepted key for
    /// this `key` and `header` (inflated, when sealed compressed).
    pub fn open(&self, key: &[u8], header: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if !is_sealed(sealed) {
            return Err(OpenError::NotSealed);
        }
        let format = sealed[3];
        let aad = match format {
            FORMAT_PLAIN => [key, header].concat(),
            FORMAT_COMPRESSED => [&sealed[..PREAMBLE_LEN], key, header].concat(),
            other => return Err(OpenError::UnknownFormat(other)),
        };
        let id = u32::from_be_bytes([sealed[4], sealed[5], sealed[6], sealed[7]]);
        let value_key = self
            .value_keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(OpenError::UnknownKey(id))?;
        let nonce = &sealed[PREAMBLE_LEN..PREAMBLE_LEN + NONCE_LEN];
        let (body, tag) = sealed[PREAMBLE_LEN + NONCE_LEN..].split_at(sealed.len() - OVERHEAD);
        let mut data = body.to_vec();
        value_key
            .cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), &aad, &mut data, tag.into())
            .map_err(|_| OpenError::Tampered)?;
        if format == FORMAT_COMPRESSED {
            return inflate(&data);
        }
        Ok(data)
    }
}

/// Appends `data` LZ4-compressed (inflated length u32, block) to `out`, if
/// that is smaller than `data`; else leaves `out` as it was and says so.
fn compress_behind(out: &mut Vec<u8>, data: &[u8]) -> bool {
    let start = out.len();
    let Ok(inflated_len) = u32::try_from(data.len()) else {
        return false;
    };
    out.extend_from_slice(&inflated_len.to_be_bytes());
    let block = out.len();
    out.resize(
        block + lz4_flex::block::get_maximum_output_size(data.len()),
        0,
    );
    match lz4_flex::block::compress_into(data, &mut out[block..]) {
        Ok(n) if INFLATED_LEN_BYTES + n < data.len() => {
            out.truncate(block + n);
            true
        }
        _ => {
            out.truncate(start);
            false
        }
    }
}

/// Encrypts `out[body..]` in place and appends the tag.
fn encrypt(
    value_key: &ValueKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    body: usize,
    out: &mut Vec<u8>,
) {
    let tag = value_key
        .cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut out[body..])
        // Only fails beyond 256 GiB.
        .map(|t| t.to_vec())
        .unwrap_or_else(|_| vec![0u8; AEAD_TAG_LEN]);
    out.extend_from_slice(&tag);
}

/// A format-2 plaintext inflated, once its declared length is known to be
/// within [`MAX_INFLATED_LEN`]: the buffer is that length and decoding
/// never writes past it.
fn inflate(plaintext: &[u8]) -> Result<Vec<u8>, OpenError> {
    let Some((len, block)) = plaintext.split_first_chunk::<INFLATED_LEN_BYTES>() else {
        return Err(OpenError::DoesNotInflate);
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len > MAX_INFLATED_LEN {
        return Err(OpenError::InflatesOversized(len));
    }
    let mut data = vec![0; len];
    match lz4_flex::block::decompress_into(block, &mut data) {
        Ok(n) if n == len => Ok(data),
        _ => Err(OpenError::DoesNotInflate),
    }
}

fn fill_nonce(nonce: &mut [u8; NONCE_LEN]) {
    // A 192-bit random nonce never repeats in practice; should the OS RNG
    // fail, time and a counter rather than a constant.
    if getrandom::fill(nonce).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static FALLBACK: AtomicU64 = AtomicU64::new(0);
        let n = FALLBACK.fetch_add(1, Ordering::Relaxed);
        nonce[..16].copy_from_slice(&crate::unix_nanos().to_be_bytes());
        nonce[16..].copy_from_slice(&n.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored_value::StoredValue;
    use crate::version::Version;

    fn key(seed: u8) -> SharedKey {
        SharedKey::from_secret(&[seed; 32]).unwrap()
    }

    fn ring(current: u8, accepted: Option<u8>) -> SessionSeal {
        SessionSeal::new(&Keyring::new(key(current), accepted.map(key), false))
    }

    fn header(millis: u64) -> Vec<u8> {
        let v = Version {
            millis,
            counter: 0,
            origin: 1,
        };
        StoredValue::live(v, b"").header()
    }

    #[test]
    fn a_memcached_key_names_no_id_and_is_stable() {
        let seal = ring(1, None);
        let k = seal.memcached_key(b"memcast.sess.", b"c8a60f3ef6267570");
        assert!(k.starts_with(b"memcast.sess."));
        assert_eq!(k.len(), "memcast.sess.".len() + HASH_HEX_LEN);
        assert!(!k.windows(6).any(|w| w == b"c8a60f"));
        assert_eq!(k, seal.memcached_key(b"memcast.sess.", b"c8a60f3ef6267570"));
        assert_ne!(k, seal.memcached_key(b"memcast.sess.", b"c8a60f3ef6267571"));
        assert_ne!(
            k,
            ring(2, None).memcached_key(b"memcast.sess.", b"c8a60f3ef6267570"),
            "another cluster key hashes differently"
        );
        assert!(crate::memcached_key::is_valid(
            &[k.as_slice(), b".lock"].concat()
        ));
    }

    #[test]
    fn sealed_data_opens_only_for_its_key_and_header() {
        let seal = ring(1, None);
        let data = b"user|s:5:\"alice\";";
        let sealed = seal.seal(b"k1", &header(5), data);
        assert_eq!(sealed.len(), data.len() + OVERHEAD);
        assert!(!sealed.windows(5).any(|w| w == b"alice"));
        assert_eq!(seal.open(b"k1", &header(5), &sealed).unwrap(), data);
        assert_eq!(
            seal.open(b"k2", &header(5), &sealed),
            Err(OpenError::Tampered)
        );
        assert_eq!(
            seal.open(b"k1", &header(6), &sealed),
            Err(OpenError::Tampered)
        );
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert!(seal.open(b"k1", &header(5), &flipped).is_err(), "byte {i}");
        }
        assert_eq!(
            seal.open(b"k1", &header(5), data),
            Err(OpenError::NotSealed)
        );
        assert_eq!(seal.open(b"k1", &header(5), b""), Err(OpenError::NotSealed));
    }

    #[test]
    fn a_value_opens_while_its_key_is_accepted_and_not_after() {
        let old = ring(1, None);
        let sealed = old.seal(b"k", &header(1), b"x|i:1;");
        let rolling = ring(2, Some(1));
        assert_eq!(rolling.open(b"k", &header(1), &sealed).unwrap(), b"x|i:1;");
        assert!(!rolling.is_under_current_key(&sealed));
        let resealed = rolling.seal(b"k", &header(2), b"x|i:1;");
        assert!(rolling.is_under_current_key(&resealed));
        assert_eq!(
            resealed[4..8],
            key(2).id().to_be_bytes(),
            "sealed under the current key"
        );
        let rolled = ring(2, None);
        assert_eq!(
            rolled.open(b"k", &header(1), &sealed),
            Err(OpenError::UnknownKey(key(1).id()))
        );
        assert_eq!(rolled.open(b"k", &header(2), &resealed).unwrap(), b"x|i:1;");
    }

    /// A PHP-encoded shop session of about `size` bytes, about 40 % random
    /// hex tokens (which do not compress) beside field names, ints and text.
    fn realistic_session(size: usize) -> Vec<u8> {
        let mut state = 0x6d65_6d63_6173_7431u64;
        let mut hex = |chars: usize| {
            let mut t = String::new();
            while t.len() < chars {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                t.push_str(&format!("{:016x}", z ^ (z >> 31)));
            }
            t.truncate(chars);
            t
        };
        let mut out = format!(
            "csrf_token|s:64:\"{}\";user|a:4:{{s:2:\"id\";i:48213;s:5:\"email\";s:26:\"julia.martinez@example.com\";s:14:\"remember_token\";s:64:\"{}\";s:7:\"api_key\";s:40:\"{}\";}}",
            hex(64),
            hex(64),
            hex(40)
        );
        let mut n = 0;
        while out.len() + 200 < size {
            out.push_str(&format!(
                "item{n}|a:4:{{s:7:\"line_id\";s:32:\"{}\";s:3:\"sku\";s:9:\"SKU-{:05}\";s:4:\"name\";s:24:\"Cotton t-shirt, white, M\";s:3:\"qty\";i:{};}}",
                hex(32),
                10_000 + n * 7,
                n % 4
            ));
            n += 1;
        }
        // The filler's length, whose own digits count in the session's size.
        let fixed = out.len() + "flash|s::\"\";".len();
        let filler = (1..=4)
            .map(|digits| size.saturating_sub(fixed + digits))
            .find(|n| fixed + n.to_string().len() + n == size)
            .unwrap_or(0);
        let words = "Your order confirmation was sent to your email address. ";
        let text: String = words.chars().cycle().take(filler).collect();
        out.push_str(&format!("flash|s:{}:\"{text}\";", text.len()));
        out.into_bytes()
    }

    /// A format-2 value of any plaintext, sealed properly under `seal`'s
    /// current key: what a host with the key could write.
    fn sealed_compressed_raw(
        seal: &SessionSeal,
        key: &[u8],
        hdr: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let current = &seal.value_keys[0];
        let mut out = MAGIC.to_vec();
        out.push(FORMAT_COMPRESSED);
        out.extend_from_slice(&current.id.to_be_bytes());
        let aad = [&out[..], key, hdr].concat();
        let nonce = [7u8; NONCE_LEN];
        out.extend_from_slice(&nonce);
        let body = out.len();
        out.extend_from_slice(plaintext);
        encrypt(current, &nonce, &aad, body, &mut out);
        out
    }

    #[test]
    fn a_large_session_is_sealed_compressed_and_opens_whole() {
        let seal = ring(1, None);
        let data = realistic_session(2048);
        assert_eq!(data.len(), 2048);
        let plain = seal.seal(b"k", &header(5), &data);
        let sealed = seal.seal_compressed(b"k", &header(5), &data, 1024);
        assert_eq!(sealed[3], FORMAT_COMPRESSED);
        assert_eq!(plain[3], FORMAT_PLAIN);
        assert!(is_sealed(&sealed) && is_sealed(&plain));
        assert!(
            sealed.len() < plain.len() * 3 / 4,
            "{} B sealed compressed, {} B plain",
            sealed.len(),
            plain.len()
        );
        assert!(!sealed.windows(8).any(|w| w == b"email\";s"));
        assert_eq!(seal.open(b"k", &header(5), &sealed).unwrap(), data);
        assert!(seal.is_under_current_key(&sealed));
        // Bound to its key and header like format 1.
        assert_eq!(
            seal.open(b"k2", &header(5), &sealed),
            Err(OpenError::Tampered)
        );
        assert_eq!(
            seal.open(b"k", &header(6), &sealed),
            Err(OpenError::Tampered)
        );
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert!(seal.open(b"k", &header(5), &flipped).is_err(), "byte {i}");
        }
        // Opens after a roll while its key is accepted, like format 1.
        let rolling = ring(2, Some(1));
        assert_eq!(rolling.open(b"k", &header(5), &sealed).unwrap(), data);
        assert!(!rolling.is_under_current_key(&sealed));
    }

    #[test]
    fn below_the_threshold_or_off_the_value_is_format_1_as_before() {
        let seal = ring(1, None);
        let data = realistic_session(2048);
        for (data, threshold) in [(&data[..1000], 1024), (&data[..], 0), (&data[..], 4096)] {
            let sealed = seal.seal_compressed(b"k", &header(5), data, threshold);
            assert_eq!(sealed[..4], [0, b'M', b'S', FORMAT_PLAIN]);
            assert_eq!(sealed.len(), data.len() + OVERHEAD);
            // Exactly what format 1 always was: the data encrypted under
            // key | header, nothing else in the associated data.
            let nonce = XNonce::from_slice(&sealed[PREAMBLE_LEN..PREAMBLE_LEN + NONCE_LEN]);
            let mut body = data.to_vec();
            let tag = seal.value_keys[0]
                .cipher
                .encrypt_in_place_detached(nonce, &[&b"k"[..], &header(5)].concat(), &mut body)
                .unwrap();
            assert_eq!(
                sealed[PREAMBLE_LEN + NONCE_LEN..],
                [&body[..], &tag[..]].concat()
            );
            assert_eq!(seal.open(b"k", &header(5), &sealed).unwrap(), data);
        }
    }

    #[test]
    fn an_incompressible_session_stays_format_1() {
        let seal = ring(1, None);
        let mut data = vec![0u8; 4096];
        getrandom::fill(&mut data).unwrap();
        let sealed = seal.seal_compressed(b"k", &header(5), &data, 1024);
        assert_eq!(sealed[3], FORMAT_PLAIN);
        assert_eq!(sealed.len(), data.len() + OVERHEAD);
        assert_eq!(seal.open(b"k", &header(5), &sealed).unwrap(), data);
    }

    #[test]
    fn a_format_1_value_sealed_before_compression_existed_opens() {
        // Sealed by the previous version (format 1, key 1, zero nonce):
        // fixed bytes, so a change to format 1 cannot go unnoticed.
        let seal = ring(1, None);
        let data = b"user|s:5:\"alice\";";
        let mut old = vec![0, b'M', b'S', 1];
        old.extend_from_slice(&key(1).id().to_be_bytes());
        old.extend_from_slice(&[0u8; NONCE_LEN]);
        let mut body = data.to_vec();
        let cipher = XChaCha20Poly1305::new(&key(1).subkey(VALUE_KEY_LABEL).into());
        let tag = cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&[0u8; NONCE_LEN]),
                &[&b"k1"[..], &header(5)].concat(),
                &mut body,
            )
            .unwrap();
        old.extend_from_slice(&body);
        old.extend_from_slice(&tag);
        assert_eq!(seal.open(b"k1", &header(5), &old).unwrap(), data);
    }

    #[test]
    fn a_changed_format_byte_does_not_open() {
        let seal = ring(1, None);
        let data = realistic_session(2048);
        let compressed = seal.seal_compressed(b"k", &header(5), &data, 1024);
        let mut as_plain = compressed.clone();
        as_plain[3] = FORMAT_PLAIN;
        assert_eq!(
            seal.open(b"k", &header(5), &as_plain),
            Err(OpenError::Tampered)
        );
        let plain = seal.seal(b"k", &header(5), &data);
        let mut as_compressed = plain.clone();
        as_compressed[3] = FORMAT_COMPRESSED;
        assert_eq!(
            seal.open(b"k", &header(5), &as_compressed),
            Err(OpenError::Tampered)
        );
        let mut unknown = compressed;
        unknown[3] = 3;
        assert_eq!(
            seal.open(b"k", &header(5), &unknown),
            Err(OpenError::UnknownFormat(3))
        );
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_inflating() {
        let seal = ring(1, None);
        // 4 GiB declared, a block of a few bytes: refused before allocating.
        let mut plaintext = u32::MAX.to_be_bytes().to_vec();
        plaintext.extend_from_slice(&lz4_flex::block::compress(b"tiny"));
        let bomb = sealed_compressed_raw(&seal, b"k", &header(5), &plaintext);
        assert_eq!(
            seal.open(b"k", &header(5), &bomb),
            Err(OpenError::InflatesOversized(u32::MAX as usize))
        );
        let mut plaintext = ((MAX_INFLATED_LEN + 1) as u32).to_be_bytes().to_vec();
        plaintext.extend_from_slice(&lz4_flex::block::compress(&vec![
            b'a';
            MAX_INFLATED_LEN + 1
        ]));
        let just_over = sealed_compressed_raw(&seal, b"k", &header(5), &plaintext);
        assert!(just_over.len() < 64 * 1024);
        assert_eq!(
            seal.open(b"k", &header(5), &just_over),
            Err(OpenError::InflatesOversized(MAX_INFLATED_LEN + 1))
        );
        assert!(OpenError::InflatesOversized(MAX_INFLATED_LEN + 1)
            .to_string()
            .contains("8388608"));
    }

    #[test]
    fn a_corrupt_block_inside_a_valid_seal_does_not_inflate() {
        let seal = ring(1, None);
        let data = realistic_session(2048);
        let block = lz4_flex::block::compress(&data);
        let with_len = |len: u32, block: &[u8]| [&len.to_be_bytes()[..], block].concat();
        // The genuine block opens (the helper seals as seal_compressed does).
        let good = sealed_compressed_raw(&seal, b"k", &header(5), &with_len(2048, &block));
        assert_eq!(seal.open(b"k", &header(5), &good).unwrap(), data);
        let mut truncated = block.clone();
        truncated.truncate(block.len() / 2);
        let mut garbled = block.clone();
        for b in garbled.iter_mut().step_by(7) {
            *b = 0xff;
        }
        for plaintext in [
            with_len(2047, &block), // inflates longer than declared
            with_len(2049, &block), // shorter than declared
            with_len(2048, &truncated),
            with_len(2048, &garbled),
            with_len(2048, &[]),
            vec![0, 0], // not even a length
        ] {
            let value = sealed_compressed_raw(&seal, b"k", &header(5), &plaintext);
            assert_eq!(
                seal.open(b"k", &header(5), &value),
                Err(OpenError::DoesNotInflate),
                "{:?}",
                &plaintext[..plaintext.len().min(8)]
            );
        }
    }

    #[test]
    fn sealed_data_is_recognised_by_its_magic() {
        let seal = ring(1, None);
        assert!(is_sealed(&seal.seal(b"k", &header(1), b"")));
        assert!(!is_sealed(b"user|s:5:\"alice\";"));
        assert!(!is_sealed(b"\0MS"));
        assert!(!is_sealed(b""));
    }
}
