//! The keys of `memcast.key_file` (and `memcast.accept_key_file`): they
//! sign frames and, with `memcast.seal`, hash session ids into memcached
//! keys and seal session data. Read and checked by
//! [`memcast_core::key_file`] (the policy shared with memcastd), loaded
//! again when the settings name other files or a file was replaced.

use std::time::{Duration, Instant};

use memcast_core::ini::ExtensionConfig;
use memcast_core::key_file::{KeyFiles, LoadedKeys, OthersReading, Stamp};
use memcast_core::session_seal::SessionSeal;
use memcast_core::{KeyError, Keyring};

/// How often a long-lived process looks whether its key files changed (a
/// key rotation replaces them): one `stat` per file at most this often.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The keys a process holds; `None` until a key file is set.
#[derive(Default)]
pub struct SessionKeys {
    loaded: Option<Loaded>,
}

struct Loaded {
    files: KeyFiles,
    /// What the files looked like just before they were read.
    stamp: Stamp,
    checked: Instant,
    keys: Result<LoadedKeys, KeyError>,
    /// Built with the keys: hashing ids and sealing values.
    seal: Option<SessionSeal>,
}

impl Loaded {
    fn load(files: KeyFiles) -> Loaded {
        let stamp = files.stamp();
        let keys = files.load(OthersReading::Warned);
        let seal = keys.as_ref().ok().map(|k| SessionSeal::new(&k.ring));
        Loaded {
            files,
            stamp,
            checked: Instant::now(),
            keys,
            seal,
        }
    }

    /// Whether a key file was replaced or rewritten since it was loaded
    /// (looked at no more than once per [`KEY_CHECK_EVERY`]).
    fn changed(&mut self) -> bool {
        if self.checked.elapsed() < KEY_CHECK_EVERY {
            return false;
        }
        self.checked = Instant::now();
        self.files.stamp() != self.stamp
    }
}

impl SessionKeys {
    /// Loads the keys the settings name (again if the files changed), and
    /// returns what the operator should be told about them.
    pub fn refresh(&mut self, config: &ExtensionConfig) -> Vec<String> {
        let Some(path) = &config.key_file else {
            self.loaded = None;
            if config.publish.is_some() {
                return vec!["memcast.publish is set but memcast.key_file is not: sessions are stored locally and not replicated (frames are never sent unsigned)".to_string()];
            }
            return Vec::new();
        };
        let files = KeyFiles {
            current: path.clone(),
            accepted: config.accept_key_file.clone(),
            encrypt: config.encrypt,
        };
        let stale = match &mut self.loaded {
            Some(k) => k.files != files || k.changed(),
            None => true,
        };
        if stale {
            self.loaded = Some(Loaded::load(files));
        }
        match self.loaded.as_ref().map(|k| &k.keys) {
            Some(Err(e)) => not_loaded(e, config).into_iter().collect(),
            Some(Ok(loaded)) => loaded_notices(loaded, config),
            None => Vec::new(),
        }
    }

    /// The keys frames are signed with, if they loaded.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.loaded.as_ref()?.keys.as_ref().ok().map(|k| &k.ring)
    }

    /// The sealing keys, when sessions are sealed (`memcast.seal` and a
    /// usable key file).
    pub fn seal(&self, config: Option<&ExtensionConfig>) -> Option<&SessionSeal> {
        if !config.is_some_and(|c| c.seal && c.key_file.is_some()) {
            return None;
        }
        self.loaded.as_ref()?.seal.as_ref()
    }
}

/// What a key file that did not load costs, when it costs anything.
fn not_loaded(e: &KeyError, config: &ExtensionConfig) -> Option<String> {
    let unsealed = if config.seal { ", unsealed," } else { "" };
    if config.publish.is_some() {
        Some(format!(
            "{e}: sessions are stored locally{unsealed} and not replicated"
        ))
    } else if config.seal {
        Some(format!("{e}: sessions are stored unsealed"))
    } else {
        None
    }
}

/// The key files' warnings, and a key roll that would lose every sealed
/// session's memcached key.
fn loaded_notices(loaded: &LoadedKeys, config: &ExtensionConfig) -> Vec<String> {
    let mut notices: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    let mut keys = loaded.ring.keys();
    if let (true, Some(current), Some(accepted)) = (config.seal, keys.next(), keys.next()) {
        if current.session_id_key() != accepted.session_id_key() {
            let path = |p: Option<&std::path::PathBuf>| {
                p.map_or(String::new(), |p| p.display().to_string())
            };
            notices.push(format!(
                "memcast.key_file {} and memcast.accept_key_file {} hash session ids differently: sessions stored under one are not found under the other; make the new key from a copy of the old one (cp OLD NEW; memcastd keygen --force NEW), which keeps the session-id key",
                path(config.key_file.as_ref()),
                path(config.accept_key_file.as_ref()),
            ));
        }
    }
    notices
}
