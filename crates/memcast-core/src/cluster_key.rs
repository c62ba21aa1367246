//! The cluster's shared key: loaded from a key file, used to authenticate
//! every frame with HMAC-SHA256 and, when encryption is on, to encrypt its
//! body with XChaCha20-Poly1305 (a subkey derived from the same secret).
//!
//! A [`Keyring`] is what a host holds: the current key, which signs, and
//! optionally one more key that is only accepted, so a cluster can roll to a
//! new key host by host without losing a write.

use std::fmt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Length of the authentication tag at the end of every frame.
pub const TAG_LEN: usize = 32;
/// Length of the random nonce in front of an encrypted body.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag after an encrypted body.
pub const AEAD_TAG_LEN: usize = 16;
/// A key shorter than this is refused: HMAC-SHA256 wants 256 bits of secret.
pub const MIN_KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: cannot read it: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}: holds {len} bytes of key, at least {MIN_KEY_LEN} are needed (make a new one with: memcastd keygen --force {path}, then copy that file to every host)")]
    TooShort { path: PathBuf, len: usize },
    /// Refused by the policy in [`crate::key_file`].
    #[error(
        "key file {path}: mode {mode:04o} lets other users read or change the cluster key; chmod 600 {path} (or 640, owned by a group PHP and memcastd share)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("key file {path}: the {SESSION_ID_KEY_LINE} line holds {len} bytes, at least {MIN_KEY_LEN} are needed")]
    SessionIdKeyTooShort { path: PathBuf, len: usize },
    #[error("key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A secret shared by every host of the cluster, with a short public id so a
/// receiver knows which key a frame claims (and key rotation can come later).
#[derive(Clone)]
pub struct SharedKey {
    secret: Vec<u8>,
    id: u32,
    /// XChaCha20-Poly1305 under a subkey derived from the secret (never the
    /// HMAC key itself).
    cipher: XChaCha20Poly1305,
    /// The key session ids are hashed with into memcached keys. It must
    /// outlive a key roll (or every session would be looked up under new
    /// keys), so a key file may carry it from the key it replaces on a
    /// [`SESSION_ID_KEY_LINE`]; otherwise it is derived from the secret.
    session_id_key: Vec<u8>,
}

/// The line of a key file that carries the session-id key over a key roll
/// (`memcastd keygen --force` writes it); the secret is what comes before.
pub const SESSION_ID_KEY_LINE: &str = "memcast-session-id-key:";

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedKey(id {:08x})", self.id)
    }
}

impl SharedKey {
    /// The key file's contents, without trailing whitespace, are the secret.
    /// Any bytes are accepted (raw random bytes, base64, hex...).
    pub fn from_file(path: &Path) -> Result<SharedKey, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let marker = [b"\n", SESSION_ID_KEY_LINE.as_bytes()].concat();
        let (secret, id_key) = match bytes.windows(marker.len()).position(|w| w == marker) {
            Some(at) => (&bytes[..at], Some(trim_end(&bytes[at + marker.len()..]))),
            None => (&bytes[..], None),
        };
        let secret = trim_end(secret);
        let key = SharedKey::from_secret(secret).ok_or(KeyError::TooShort {
            path: path.to_owned(),
            len: secret.len(),
        })?;
        match id_key.map(trim_start) {
            None => Ok(key),
            Some(k) if k.len() < MIN_KEY_LEN || k.contains(&b'\n') => {
                Err(KeyError::SessionIdKeyTooShort {
                    path: path.to_owned(),
                    len: k.len(),
                })
            }
            Some(k) => Ok(SharedKey {
                session_id_key: k.to_vec(),
                ..key
            }),
        }
    }

    /// The key session ids are hashed with (see the field's doc).
    pub fn session_id_key(&self) -> &[u8] {
        &self.session_id_key
    }

    /// A 256-bit subkey of the secret for one purpose, named by `label`.
    pub fn subkey(&self, label: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(label.as_bytes())
            .chain_update([0u8])
            .chain_update(&self.secret)
            .finalize()
            .into()
    }

    /// Writes a new random key (32 random bytes, base64) to `path` with mode
    /// 0600; never overwrites a file.
    pub fn generate(path: &Path) -> Result<SharedKey, KeyError> {
        SharedKey::generate_keeping(path, None)
    }

    /// As [`SharedKey::generate`]; with `keep`, the new file carries that
    /// key's session-id key, so session keys in memcached survive the roll.
    fn generate_keeping(path: &Path, keep: Option<&SharedKey>) -> Result<SharedKey, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write_err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
        let text = base64(&random);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        let mut contents = format!("{text}\n").into_bytes();
        if let Some(old) = keep {
            contents.extend_from_slice(SESSION_ID_KEY_LINE.as_bytes());
            contents.push(b' ');
            contents.extend_from_slice(old.session_id_key());
            contents.push(b'\n');
        }
        file.write_all(&contents).map_err(write_err)?;
        let key = SharedKey::from_secret(text.as_bytes()).ok_or(KeyError::TooShort {
            path: path.to_owned(),
            len: text.len(),
        })?;
        Ok(match keep {
            Some(old) => SharedKey {
                session_id_key: old.session_id_key.clone(),
                ..key
            },
            None => key,
        })
    }

    /// As [`SharedKey::generate`], over an existing file: the new key is
    /// written to a private file beside it and renamed over it, so no reader
    /// ever sees half a key. A readable key it replaces hands on its
    /// session-id key (a key roll keeps every session's memcached key).
    pub fn generate_replacing(path: &Path) -> Result<SharedKey, KeyError> {
        let old = SharedKey::from_file(path).ok();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.new-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let key = SharedKey::generate_keeping(&tmp, old.as_ref()).map_err(|e| match e {
            KeyError::Write { source, .. } => KeyError::Write {
                path: path.to_owned(),
                source,
            },
            other => other,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            KeyError::Write {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(key)
    }

    /// `None` when the secret is shorter than [`MIN_KEY_LEN`].
    pub fn from_secret(secret: &[u8]) -> Option<SharedKey> {
        if secret.len() < MIN_KEY_LEN {
            return None;
        }
        let digest = Sha256::new()
            .chain_update(b"memcast key id\0")
            .chain_update(secret)
            .finalize();
        let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let subkey = Sha256::new()
            .chain_update(b"memcast encryption key\0")
            .chain_update(secret)
            .finalize();
        // Text, so a key file can carry it on a line of its own.
        let session_id_key: String = Sha256::new()
            .chain_update(b"memcast session id key\0")
            .chain_update(secret)
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(SharedKey {
            secret: secret.to_vec(),
            id,
            cipher: XChaCha20Poly1305::new(&subkey),
            session_id_key: session_id_key.into_bytes(),
        })
    }

    /// Encrypts `buf` in place under a fresh random nonce, binding `aad`;
    /// returns the nonce and the Poly1305 tag.
    pub fn encrypt(&self, aad: &[u8], buf: &mut [u8]) -> ([u8; NONCE_LEN], [u8; AEAD_TAG_LEN]) {
        let mut nonce = [0u8; NONCE_LEN];
        // A 192-bit random nonce never repeats in practice; should the OS
        // RNG fail, fall back to time and a counter rather than a constant.
        if getrandom::fill(&mut nonce).is_err() {
            use std::sync::atomic::{AtomicU64, Ordering};
            static FALLBACK: AtomicU64 = AtomicU64::new(0);
            let n = FALLBACK.fetch_add(1, Ordering::Relaxed);
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            nonce[..16].copy_from_slice(&t.to_be_bytes());
            nonce[16..].copy_from_slice(&n.to_be_bytes());
        }
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, buf)
            // Only fails for buffers beyond 256 GiB.
            .map(|t| t.into())
            .unwrap_or([0u8; AEAD_TAG_LEN]);
        (nonce, tag)
    }

    /// Decrypts `buf` in place; false (and `buf` unspecified) when the tag
    /// does not match.
    pub fn decrypt(&self, aad: &[u8], nonce: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        if nonce.len() != NONCE_LEN || tag.len() != AEAD_TAG_LEN {
            return false;
        }
        self.cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf, tag.into())
            .is_ok()
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of `tag` over `data`.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!())
    }
}

/// The keys a host signs, checks and (optionally) encrypts frames with.
pub trait Keys {
    /// The key new frames are signed with.
    fn signing(&self) -> &SharedKey;
    /// The key with this id, if this host accepts it.
    fn lookup(&self, id: u32) -> Option<&SharedKey>;
    /// Whether new frames have their bodies encrypted.
    fn encrypts(&self) -> bool;
}

/// One key alone: signs, is the only key accepted, does not encrypt.
impl Keys for SharedKey {
    fn signing(&self) -> &SharedKey {
        self
    }
    fn lookup(&self, id: u32) -> Option<&SharedKey> {
        (id == self.id).then_some(self)
    }
    fn encrypts(&self) -> bool {
        false
    }
}

/// The current key, one more accepted key (key rotation), and whether to
/// encrypt. Frames under either key are accepted, encrypted or not: both
/// kinds are authenticated, and a cluster switches encryption on host by
/// host like a key.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: SharedKey,
    accepted: Option<SharedKey>,
    encrypt: bool,
}

impl Keyring {
    pub fn new(current: SharedKey, accepted: Option<SharedKey>, encrypt: bool) -> Keyring {
        // The same key given twice is simply the current key.
        let accepted = accepted.filter(|a| a.id != current.id);
        Keyring {
            current,
            accepted,
            encrypt,
        }
    }

    /// The current key, then the accepted one if any.
    pub fn keys(&self) -> impl Iterator<Item = &SharedKey> {
        std::iter::once(&self.current).chain(self.accepted.as_ref())
    }

    /// The ids of the keys accepted, the current one first.
    pub fn ids(&self) -> Vec<u32> {
        std::iter::once(self.current.id)
            .chain(self.accepted.as_ref().map(|k| k.id))
            .collect()
    }
}

impl Keys for Keyring {
    fn signing(&self) -> &SharedKey {
        &self.current
    }
    fn lookup(&self, id: u32) -> Option<&SharedKey> {
        if id == self.current.id {
            Some(&self.current)
        } else {
            self.accepted.as_ref().filter(|k| k.id == id)
        }
    }
    fn encrypts(&self) -> bool {
        self.encrypt
    }
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// The permission bits of a file (0 when they cannot be read).
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("memcast-keygen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let made = SharedKey::generate(&path).unwrap();
        assert_eq!(file_mode(&path) & 0o777, 0o600);
        let private = crate::key_file::KeyFiles {
            current: path.clone(),
            accepted: None,
            encrypt: false,
        };
        let loaded = private.load(crate::key_file::OthersReading::Refused);
        assert_eq!(loaded.unwrap().ring.ids(), [made.id()]);
        assert!(
            matches!(SharedKey::generate(&path), Err(KeyError::Write { .. })),
            "overwrote a key"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
        assert_eq!(base64(b"any carnal pleasu"), "YW55IGNhcm5hbCBwbGVhc3U=");
        assert_eq!(base64(b"any carnal pleasur"), "YW55IGNhcm5hbCBwbGVhc3Vy");
    }

    #[test]
    fn encryption_round_trips_and_rejects_tampering() {
        let a = SharedKey::from_secret(&[1u8; 32]).unwrap();
        let b = SharedKey::from_secret(&[2u8; 32]).unwrap();
        let mut buf = b"user|s:5:\"alice\";".to_vec();
        let (nonce, tag) = a.encrypt(b"header", &mut buf);
        assert_ne!(&buf[..], b"user|s:5:\"alice\";", "not encrypted");
        let sealed = buf.clone();
        assert!(a.decrypt(b"header", &nonce, &mut buf, &tag));
        assert_eq!(&buf[..], b"user|s:5:\"alice\";");
        let mut other = sealed.clone();
        assert!(!b.decrypt(b"header", &nonce, &mut other, &tag), "wrong key");
        let mut other = sealed.clone();
        assert!(!a.decrypt(b"headex", &nonce, &mut other, &tag), "wrong aad");
        let mut other = sealed.clone();
        other[0] ^= 1;
        assert!(
            !a.decrypt(b"header", &nonce, &mut other, &tag),
            "flipped bit"
        );
        let (nonce2, _) = a.encrypt(b"header", &mut b"x".to_vec());
        assert_ne!(nonce, nonce2, "nonces repeat");
    }

    #[test]
    fn keyring_accepts_current_and_previous_and_signs_with_current() {
        let a = SharedKey::from_secret(&[1u8; 32]).unwrap();
        let b = SharedKey::from_secret(&[2u8; 32]).unwrap();
        let c = SharedKey::from_secret(&[3u8; 32]).unwrap();
        let ring = Keyring::new(b.clone(), Some(a.clone()), true);
        assert_eq!(ring.signing().id(), b.id());
        assert!(ring.lookup(a.id()).is_some());
        assert!(ring.lookup(b.id()).is_some());
        assert!(ring.lookup(c.id()).is_none());
        assert_eq!(ring.ids(), vec![b.id(), a.id()]);
        assert_eq!(
            Keyring::new(a.clone(), Some(a.clone()), false).ids(),
            vec![a.id()]
        );
    }

    #[test]
    fn a_replacing_key_keeps_the_session_id_key_and_a_fresh_one_does_not() {
        let dir = std::env::temp_dir().join(format!("memcast-idkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let first = SharedKey::generate(&path).unwrap();
        let rolled = SharedKey::generate_replacing(&path).unwrap();
        assert_ne!(first.id(), rolled.id(), "not a new key");
        assert_eq!(first.session_id_key(), rolled.session_id_key());
        let loaded = SharedKey::from_file(&path).unwrap();
        assert_eq!(
            loaded.id(),
            rolled.id(),
            "the id line is not part of the secret"
        );
        assert_eq!(loaded.session_id_key(), first.session_id_key());
        // Rolled twice: still the first key's.
        SharedKey::generate_replacing(&path).unwrap();
        let again = SharedKey::from_file(&path).unwrap();
        assert_eq!(again.session_id_key(), first.session_id_key());
        let other = SharedKey::generate(&dir.join("other")).unwrap();
        assert_ne!(other.session_id_key(), first.session_id_key());
        std::fs::write(
            &path,
            b"0123456789012345678901234567890123\nmemcast-session-id-key: short\n",
        )
        .unwrap();
        let err = SharedKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("memcast-session-id-key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(SharedKey::from_secret(&[7u8; 31]).is_none());
        assert!(SharedKey::from_secret(&[7u8; 32]).is_some());
    }

    #[test]
    fn different_secrets_have_different_ids_and_tags() {
        let a = SharedKey::from_secret(&[1u8; 32]).unwrap();
        let b = SharedKey::from_secret(&[2u8; 32]).unwrap();
        assert_ne!(a.id(), b.id());
        let tag = a.tag(b"hello");
        assert!(a.verify(b"hello", &tag));
        assert!(!b.verify(b"hello", &tag));
        assert!(!a.verify(b"hellO", &tag));
    }

    #[test]
    fn key_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("memcast-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, b"too short\n").unwrap();
        let err = SharedKey::from_file(&short).unwrap_err().to_string();
        assert!(err.contains("short") && err.contains("9 bytes"), "{err}");
        let missing = dir.join("missing");
        let err = SharedKey::from_file(&missing).unwrap_err().to_string();
        assert!(
            err.contains("missing") && err.contains("cannot read"),
            "{err}"
        );
        let good = dir.join("good");
        std::fs::write(&good, [b'k'; 40]).unwrap();
        std::fs::write(dir.join("good-nl"), [&[b'k'; 40][..], b"\n"].concat()).unwrap();
        let a = SharedKey::from_file(&good).unwrap();
        let b = SharedKey::from_file(&dir.join("good-nl")).unwrap();
        assert_eq!(a.id(), b.id(), "a trailing newline is not part of the key");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
