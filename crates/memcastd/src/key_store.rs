//! The daemon's keys: the current key file (signs and is accepted), an
//! optional second key file (only accepted: key rotation), and whether frames
//! this daemon seals are encrypted. Shared by the receive loop, the repair
//! worker and the peer server; [`KeyStore::reload`] swaps them at once
//! (SIGHUP), and a reload that fails keeps the keys in use. Reading and
//! checking the files is [`memcast_core::key_file`]'s, shared with PHP.

use std::path::PathBuf;
use std::sync::Arc;

use memcast_core::key_file::{KeyFiles, OthersReading};
use memcast_core::{KeyError, Keyring, Keys};
use parking_lot::RwLock;

pub struct KeyStore {
    files: parking_lot::Mutex<KeyFiles>,
    ring: RwLock<Arc<Keyring>>,
}

impl KeyStore {
    pub fn load(
        current: PathBuf,
        accepted: Option<PathBuf>,
        encrypt: bool,
    ) -> Result<KeyStore, KeyError> {
        let files = KeyFiles {
            current,
            accepted,
            encrypt,
        };
        let ring = read(&files)?;
        Ok(KeyStore {
            files: parking_lot::Mutex::new(files),
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    /// The keys in use now.
    pub fn get(&self) -> Arc<Keyring> {
        Arc::clone(&self.ring.read())
    }

    /// Reads the key files again; on error the keys in use stay.
    pub fn reload(&self) -> Result<Arc<Keyring>, KeyError> {
        let files = self.files.lock().clone();
        let ring = Arc::new(read(&files)?);
        *self.ring.write() = Arc::clone(&ring);
        Ok(ring)
    }

    /// Reads keys from (possibly) other files, or with encryption switched;
    /// they are used from then on, also by later [`KeyStore::reload`]s.
    pub fn reload_from(
        &self,
        current: PathBuf,
        accepted: Option<PathBuf>,
        encrypt: bool,
    ) -> Result<Arc<Keyring>, KeyError> {
        let files = KeyFiles {
            current,
            accepted,
            encrypt,
        };
        let ring = Arc::new(read(&files)?);
        *self.files.lock() = files;
        *self.ring.write() = Arc::clone(&ring);
        Ok(ring)
    }
}

/// memcastd refuses a key file other users can read
/// (see [`memcast_core::key_file`] for the policy).
fn read(files: &KeyFiles) -> Result<Keyring, KeyError> {
    Ok(files.load(OthersReading::Refused)?.ring)
}

/// "signing with key 1a2b3c4d, also accepting 5e6f7a8b, encryption on".
pub fn describe(ring: &Keyring) -> String {
    let ids = ring.ids();
    let mut out = format!("signing with key {:08x}", ids[0]);
    if let Some(other) = ids.get(1) {
        out.push_str(&format!(", also accepting {other:08x}"));
    }
    out.push_str(if ring.encrypts() {
        ", encryption on"
    } else {
        ", encryption off"
    });
    out
}
