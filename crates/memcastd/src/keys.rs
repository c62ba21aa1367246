//! The daemon's keys: the current key file (signs and is accepted), an
//! optional second key file (only accepted: key rotation), and whether frames
//! this daemon seals are encrypted. Shared by the receive loop, the repair
//! worker and the peer server; [`KeyStore::reload`] swaps them at once
//! (SIGHUP), and a reload that fails keeps the keys in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memcast_core::{Keyring, Keys, SharedKey};
use parking_lot::RwLock;

pub struct KeyStore {
    files: parking_lot::Mutex<(PathBuf, Option<PathBuf>, bool)>,
    ring: RwLock<Arc<Keyring>>,
}

impl KeyStore {
    pub fn load(
        current: PathBuf,
        accepted: Option<PathBuf>,
        encrypt: bool,
    ) -> Result<KeyStore, String> {
        let ring = read(&current, accepted.as_ref(), encrypt)?;
        Ok(KeyStore {
            files: parking_lot::Mutex::new((current, accepted, encrypt)),
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    /// The keys in use now.
    pub fn get(&self) -> Arc<Keyring> {
        Arc::clone(&self.ring.read())
    }

    /// Reads the key files again; on error the keys in use stay.
    pub fn reload(&self) -> Result<Arc<Keyring>, String> {
        let (current, accepted, encrypt) = self.files.lock().clone();
        let ring = Arc::new(read(&current, accepted.as_ref(), encrypt)?);
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
    ) -> Result<Arc<Keyring>, String> {
        let ring = Arc::new(read(&current, accepted.as_ref(), encrypt)?);
        *self.files.lock() = (current, accepted, encrypt);
        *self.ring.write() = Arc::clone(&ring);
        Ok(ring)
    }
}

fn read(current: &Path, accepted: Option<&PathBuf>, encrypt: bool) -> Result<Keyring, String> {
    let key = SharedKey::from_private_file(current).map_err(|e| e.to_string())?;
    let other = match accepted {
        Some(path) => Some(SharedKey::from_private_file(path).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok(Keyring::new(key, other, encrypt))
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
