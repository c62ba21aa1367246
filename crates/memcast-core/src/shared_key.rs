//! The cluster's shared key: loaded from a key file, used to authenticate
//! every frame with HMAC-SHA256.

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Length of the authentication tag at the end of every frame.
pub const TAG_LEN: usize = 32;
/// A key shorter than this is refused: HMAC-SHA256 wants 256 bits of secret.
pub const MIN_KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: cannot read it: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}: holds {len} bytes of key, at least {MIN_KEY_LEN} are needed (make one with: head -c 32 /dev/urandom | base64 > {path})")]
    TooShort { path: PathBuf, len: usize },
}

/// A secret shared by every host of the cluster, with a short public id so a
/// receiver knows which key a frame claims (and key rotation can come later).
#[derive(Clone)]
pub struct SharedKey {
    secret: Vec<u8>,
    id: u32,
}

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
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        SharedKey::from_secret(&bytes[..end]).ok_or(KeyError::TooShort {
            path: path.to_owned(),
            len: end,
        })
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
        Some(SharedKey {
            secret: secret.to_vec(),
            id,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
