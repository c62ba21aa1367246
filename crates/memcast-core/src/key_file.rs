//! Key files on disk: which files a host's keys come from, the one policy on
//! their permissions, and how a reader notices that they were replaced. The
//! PHP extension and memcastd both load their keys through
//! [`KeyFiles::load`]; what a key file holds is [`SharedKey::from_file`]'s.
//!
//! # Permission policy
//!
//! - A key file its group or other users can **write** is refused, by both:
//!   whoever can change the key can forge every frame and session.
//! - A key file other users can **read** (any access by "other"): memcastd
//!   refuses it ([`OthersReading::Refused`]); the extension uses it and
//!   warns once per process ([`OthersReading::Warned`]), because refusing
//!   would stop replication and sealing on a host that works, over a mode.
//! - Group read is fine: PHP's user and memcastd's share the key through a
//!   group (mode 0640), which is what the messages recommend.
//!
//! Reloading: memcastd reads the files again on SIGHUP; the extension when
//! a file's [`Stamp`] changed (a key rotation replaces the file).

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cluster_key::{file_mode, KeyError, Keyring, SharedKey};

/// Mode bits that let the group or other users change a key file.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// Mode bits that give other users (not the group) any access.
const OPEN_TO_OTHERS: u32 = 0o007;

/// What a reader does with a key file other users can read (see the
/// module's policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OthersReading {
    /// memcastd: the key is not loaded.
    Refused,
    /// The extension: the key is loaded, with a [`KeyFileWarning`].
    Warned,
}

/// The files a host's keys come from, and whether frames are encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFiles {
    /// Signs, and is accepted.
    pub current: PathBuf,
    /// Only accepted (a key roll).
    pub accepted: Option<PathBuf>,
    pub encrypt: bool,
}

/// Keys read from their files, with what the reader should be told.
#[derive(Debug)]
pub struct LoadedKeys {
    pub ring: Keyring,
    pub warnings: Vec<KeyFileWarning>,
}

/// A key file loaded but not as private as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFileWarning {
    ReadableByOthers { path: PathBuf, mode: u32 },
}

impl fmt::Display for KeyFileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileWarning::ReadableByOthers { path, mode } => write!(
                f,
                "key file {}: mode {mode:04o} lets every user on this host read the cluster key; chmod 640 or 600",
                path.display()
            ),
        }
    }
}

/// Modification time, length and inode of each key file (`None`: could not
/// be looked at): a rewrite or a replacement changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(Vec<Option<(SystemTime, u64, u64)>>);

impl KeyFiles {
    /// The current file, then the accepted one if any.
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.current).chain(self.accepted.as_ref())
    }

    /// Reads both files and applies the permission policy to each.
    pub fn load(&self, others_reading: OthersReading) -> Result<LoadedKeys, KeyError> {
        let mut warnings = Vec::new();
        let mut read = |path: &Path| -> Result<SharedKey, KeyError> {
            let key = SharedKey::from_file(path)?;
            let mode = file_mode(path) & 0o7777;
            let exposed = match others_reading {
                OthersReading::Refused => mode & (WRITABLE_BY_OTHERS | OPEN_TO_OTHERS),
                OthersReading::Warned => mode & WRITABLE_BY_OTHERS,
            };
            if exposed != 0 {
                return Err(KeyError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
            if mode & OPEN_TO_OTHERS != 0 {
                warnings.push(KeyFileWarning::ReadableByOthers {
                    path: path.to_owned(),
                    mode,
                });
            }
            Ok(key)
        };
        let current = read(&self.current)?;
        let accepted = self.accepted.as_deref().map(&mut read).transpose()?;
        Ok(LoadedKeys {
            ring: Keyring::new(current, accepted, self.encrypt),
            warnings,
        })
    }

    /// What the files look like now (one `stat` each): taken before a
    /// [`KeyFiles::load`], a later different stamp means they were replaced.
    pub fn stamp(&self) -> Stamp {
        Stamp(
            self.paths()
                .map(|p| {
                    let m = std::fs::metadata(p).ok()?;
                    Some((m.modified().ok()?, m.len(), m.ino()))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key_file(dir: &Path, name: &str, byte: u8, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, [byte; 40]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("memcast-keyfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn files(current: PathBuf, accepted: Option<PathBuf>) -> KeyFiles {
        KeyFiles {
            current,
            accepted,
            encrypt: false,
        }
    }

    #[test]
    fn private_and_group_readable_files_load_quietly_for_both_readers() {
        let d = dir("private");
        let a = key_file(&d.0, "a", b'a', 0o600);
        let b = key_file(&d.0, "b", b'b', 0o640);
        for reader in [OthersReading::Refused, OthersReading::Warned] {
            let loaded = files(a.clone(), Some(b.clone())).load(reader).unwrap();
            assert_eq!(loaded.ring.ids().len(), 2);
            assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        }
    }

    #[test]
    fn a_file_others_can_read_is_refused_by_memcastd_and_warned_about_by_php() {
        let d = dir("readable");
        let a = key_file(&d.0, "a", b'a', 0o644);
        let err = files(a.clone(), None)
            .load(OthersReading::Refused)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        let loaded = files(a.clone(), None).load(OthersReading::Warned).unwrap();
        let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [format!(
                "key file {}: mode 0644 lets every user on this host read the cluster key; chmod 640 or 600",
                a.display()
            )]
        );
    }

    #[test]
    fn a_file_its_group_or_others_can_write_is_refused_by_both() {
        let d = dir("writable");
        let good = key_file(&d.0, "good", b'g', 0o600);
        for mode in [0o660, 0o602, 0o666] {
            let bad = key_file(&d.0, &format!("bad{mode:o}"), b'b', mode);
            for reader in [OthersReading::Refused, OthersReading::Warned] {
                // As the current key and as the accepted one.
                for f in [
                    files(bad.clone(), None),
                    files(good.clone(), Some(bad.clone())),
                ] {
                    let err = f.load(reader).unwrap_err();
                    assert!(
                        matches!(&err, KeyError::Exposed { path, .. } if *path == bad),
                        "{mode:o} {reader:?}: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_stamp_changes_when_a_file_is_replaced() {
        let d = dir("stamp");
        let a = key_file(&d.0, "a", b'a', 0o600);
        let f = files(a.clone(), None);
        let before = f.stamp();
        assert_eq!(f.stamp(), before);
        let next = key_file(&d.0, "next", b'n', 0o600);
        std::fs::rename(&next, &a).unwrap();
        assert_ne!(f.stamp(), before, "a replaced key file went unnoticed");
    }
}
