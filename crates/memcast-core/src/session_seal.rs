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
//! sealed data = "\0MS" | 1 | key id u32 | nonce (24) | ciphertext | Poly1305 tag (16)
//! ```
//!
//! XChaCha20-Poly1305 under a subkey of the cluster key (never the frame
//! keys), with the memcached key and the header as associated data: a value
//! copied to another session's key, or a header altered (a version raised to
//! win over a newer write), does not open. The key id lets a value sealed
//! under a key that is still accepted open after a roll; the next write
//! seals it under the current key.
//!
//! [`StoredValue`]: crate::stored_value::StoredValue

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::cluster_key::{Keyring, SharedKey, AEAD_TAG_LEN, NONCE_LEN};

const MAGIC: &[u8; 3] = b"\0MS";
const FORMAT: u8 = 1;
const PREAMBLE_LEN: usize = MAGIC.len() + 1 + 4;
/// What sealing adds to a session's data.
pub const OVERHEAD: usize = PREAMBLE_LEN + NONCE_LEN + AEAD_TAG_LEN;
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

    /// Seals `data`, bound to the memcached `key` and the value's `header`.
    pub fn seal(&self, key: &[u8], header: &[u8], data: &[u8]) -> Vec<u8> {
        let Some(current) = self.value_keys.first() else {
            return data.to_vec(); // unreachable: a keyring has a current key
        };
        let mut nonce = [0u8; NONCE_LEN];
        fill_nonce(&mut nonce);
        let mut out = Vec::with_capacity(OVERHEAD + data.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&current.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let body = out.len();
        out.extend_from_slice(data);
        let aad = [key, header].concat();
        let tag = current
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut out[body..])
            // Only fails beyond 256 GiB.
            .map(|t| t.to_vec())
            .unwrap_or_else(|_| vec![0u8; AEAD_TAG_LEN]);
        out.extend_from_slice(&tag);
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
    /// this `key` and `header`; the key id it was sealed under.
    pub fn open(&self, key: &[u8], header: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD || &sealed[..3] != MAGIC || sealed[3] != FORMAT {
            return Err(OpenError::NotSealed);
        }
        let id = u32::from_be_bytes([sealed[4], sealed[5], sealed[6], sealed[7]]);
        let value_key = self
            .value_keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(OpenError::UnknownKey(id))?;
        let nonce = &sealed[PREAMBLE_LEN..PREAMBLE_LEN + NONCE_LEN];
        let (body, tag) = sealed[PREAMBLE_LEN + NONCE_LEN..].split_at(sealed.len() - OVERHEAD);
        let mut data = body.to_vec();
        let aad = [key, header].concat();
        value_key
            .cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), &aad, &mut data, tag.into())
            .map_err(|_| OpenError::Tampered)?;
        Ok(data)
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
}
