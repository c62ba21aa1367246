//! Sessions another PHP save handler stored on the same memcached servers,
//! read by memcast while a cluster switches over (`memcast.migrate_from`).
//!
//! - **php-memcached** (`session.save_handler = memcached`): key
//!   `memcached.sess_prefix` + id (default `memc.sess.key.`, set as
//!   libmemcached's namespace), value exactly the bytes PHP's session module
//!   handed to the handler (`session.serialize_handler`'s encoding), client
//!   flags 0: its session handler calls `memcached_set(..., flags 0)` and
//!   never compresses. `create_sid` leaves an empty value under a new id.
//! - **pecl-memcache** (`session.save_handler = memcache`): key
//!   `memcache.session_prefix_static_key` + id (default: the bare id), the
//!   value a PHP string as pecl-memcache stores one: flags 0 and the bytes,
//!   or, from `memcache.compress_threshold` bytes on (20000 by default),
//!   flag 2 and the bytes zlib-compressed.
//!
//! - **memcast itself, unsealed** (`memcast`): what memcast stored before
//!   sealing was on (`memcast.seal = 0`, or a version without it): key
//!   `memcast.prefix` + id, the value memcast's header and the plain data.
//!   Read only where sessions are sealed (else it is memcast's own key).
//!
//! Such a value has no memcast header and so no version: it counts as
//! older than any memcast write, and memcast's own key always wins.

use std::io::Read;

/// The save handler whose sessions memcast reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyHandler {
    /// php-memcached (`session.save_handler = memcached`).
    PhpMemcached,
    /// pecl-memcache (`session.save_handler = memcache`).
    PeclMemcache,
    /// memcast's own sessions stored unsealed (before `memcast.seal`).
    MemcastUnsealed,
}

/// pecl-memcache's flag for a zlib-compressed value (`MMC_COMPRESSED`).
const PECL_MEMCACHE_COMPRESSED: u32 = 0x02;

impl LegacyHandler {
    /// `memcached`, `memcache`; `off` (or empty: php.ini's `Off`) is `None`.
    pub fn parse(s: &str) -> Result<Option<LegacyHandler>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "off" | "0" | "none" => Ok(None),
            "memcached" => Ok(Some(LegacyHandler::PhpMemcached)),
            "memcache" => Ok(Some(LegacyHandler::PeclMemcache)),
            "memcast" => Ok(Some(LegacyHandler::MemcastUnsealed)),
            _ => Err("expected memcached (php-memcached), memcache (pecl-memcache), memcast (memcast's own sessions stored unsealed, before memcast.seal) or off".into()),
        }
    }

    /// The handler's own default key prefix.
    pub fn default_prefix(self) -> &'static str {
        match self {
            LegacyHandler::PhpMemcached => "memc.sess.key.",
            LegacyHandler::PeclMemcache => "",
            LegacyHandler::MemcastUnsealed => "memcast.sess.",
        }
    }

    /// The handler's name in `session.save_handler`.
    pub fn save_handler(self) -> &'static str {
        match self {
            LegacyHandler::PhpMemcached => "memcached",
            LegacyHandler::PeclMemcache => "memcache",
            LegacyHandler::MemcastUnsealed => "memcast",
        }
    }
}

/// Where and how the other handler stored its sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacySessions {
    pub handler: LegacyHandler,
    pub prefix: String,
}

/// A value under the legacy key that is not a session memcast can read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LegacyError {
    #[error("stored with client flags {flags:#x}, which {handler}'s session handler never writes (not a session, or written by another client)")]
    UnknownFlags { handler: &'static str, flags: u32 },
    #[error("compressed by pecl-memcache, and it does not inflate ({0})")]
    Corrupt(String),
    #[error("over {max} bytes once inflated (memcast.max_session_size)")]
    TooLarge { max: usize },
    #[error("has no memcast header (not a session memcast stored)")]
    NoHeader,
    /// A destroyed session's tombstone: no session, nothing to warn about.
    #[error("is a destroyed session's tombstone")]
    Destroyed,
}

impl LegacySessions {
    /// `prefix` empty: the handler's own default.
    pub fn new(handler: LegacyHandler, prefix: &str) -> LegacySessions {
        let prefix = if prefix.is_empty() {
            handler.default_prefix()
        } else {
            prefix
        };
        LegacySessions {
            handler,
            prefix: prefix.to_owned(),
        }
    }

    pub fn key_for(&self, id: &[u8]) -> Vec<u8> {
        [self.prefix.as_bytes(), id].concat()
    }

    /// The session data PHP's session module gets from a value found under
    /// the legacy key, at most `max_len` bytes.
    pub fn decode(
        &self,
        value: Vec<u8>,
        flags: u32,
        max_len: usize,
    ) -> Result<Vec<u8>, LegacyError> {
        match (self.handler, flags) {
            (LegacyHandler::MemcastUnsealed, 0) => {
                match crate::stored_value::StoredValue::parse(&value) {
                    None => Err(LegacyError::NoHeader),
                    Some(s) if s.tombstone => Err(LegacyError::Destroyed),
                    Some(s) if s.data.len() > max_len => {
                        Err(LegacyError::TooLarge { max: max_len })
                    }
                    Some(s) => Ok(s.data.to_vec()),
                }
            }
            (_, 0) => Ok(value),
            (LegacyHandler::PeclMemcache, PECL_MEMCACHE_COMPRESSED) => {
                let mut out = Vec::new();
                let limit = max_len as u64 + 1;
                flate2::read::ZlibDecoder::new(value.as_slice())
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(|e| LegacyError::Corrupt(e.to_string()))?;
                if out.len() > max_len {
                    return Err(LegacyError::TooLarge { max: max_len });
                }
                Ok(out)
            }
            (handler, flags) => Err(LegacyError::UnknownFlags {
                handler: handler.save_handler(),
                flags,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn names_and_default_prefixes() {
        assert_eq!(LegacyHandler::parse("off"), Ok(None));
        assert_eq!(LegacyHandler::parse(""), Ok(None), "php.ini's Off");
        assert_eq!(
            LegacyHandler::parse(" Memcached "),
            Ok(Some(LegacyHandler::PhpMemcached))
        );
        assert!(
            LegacyHandler::parse("1").is_err(),
            "php.ini's On names no handler"
        );
        assert!(LegacyHandler::parse("redis").is_err());
        let m = LegacySessions::new(LegacyHandler::PhpMemcached, "");
        assert_eq!(m.key_for(b"abc"), b"memc.sess.key.abc");
        let p = LegacySessions::new(LegacyHandler::PeclMemcache, "");
        assert_eq!(p.key_for(b"abc"), b"abc");
        let custom = LegacySessions::new(LegacyHandler::PhpMemcached, "app1.");
        assert_eq!(custom.key_for(b"abc"), b"app1.abc");
    }

    #[test]
    fn memcasts_own_unsealed_values_are_read_past_their_header() {
        use crate::stored_value::StoredValue;
        use crate::version::Version;
        let m = LegacySessions::new(LegacyHandler::MemcastUnsealed, "");
        assert_eq!(
            LegacyHandler::parse("memcast"),
            Ok(Some(LegacyHandler::MemcastUnsealed))
        );
        assert_eq!(m.key_for(b"abc"), b"memcast.sess.abc");
        let v = Version {
            millis: 1,
            counter: 0,
            origin: 1,
        };
        let live = StoredValue::live(v, b"a|i:1;").encode();
        assert_eq!(m.decode(live, 0, 100), Ok(b"a|i:1;".to_vec()));
        let gone = StoredValue::tombstone(v).encode();
        assert_eq!(m.decode(gone, 0, 100), Err(LegacyError::Destroyed));
        assert_eq!(
            m.decode(b"a|i:1;".to_vec(), 0, 100),
            Err(LegacyError::NoHeader)
        );
        let big = StoredValue::live(v, &[b'x'; 200]).encode();
        assert_eq!(
            m.decode(big, 0, 100),
            Err(LegacyError::TooLarge { max: 100 })
        );
    }

    #[test]
    fn plain_values_are_the_session_data() {
        let m = LegacySessions::new(LegacyHandler::PhpMemcached, "");
        assert_eq!(m.decode(b"a|i:1;".to_vec(), 0, 100), Ok(b"a|i:1;".to_vec()));
        assert_eq!(m.decode(Vec::new(), 0, 100), Ok(Vec::new()));
        let e = m.decode(b"x".to_vec(), 0x10, 100).unwrap_err();
        assert!(e.to_string().contains("0x10"), "{e}");
    }

    #[test]
    fn pecl_memcache_compressed_values_are_inflated_within_the_limit() {
        let data = "k|s:5:\"hello\";".repeat(2000).into_bytes();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        let packed = z.finish().unwrap();
        let p = LegacySessions::new(LegacyHandler::PeclMemcache, "");
        assert_eq!(p.decode(packed.clone(), 2, 1 << 20), Ok(data.clone()));
        assert_eq!(
            p.decode(packed.clone(), 2, 100),
            Err(LegacyError::TooLarge { max: 100 })
        );
        assert!(matches!(
            p.decode(b"not zlib".to_vec(), 2, 100),
            Err(LegacyError::Corrupt(_))
        ));
        // php-memcached's sessions are never compressed: flag 2 is not theirs.
        let m = LegacySessions::new(LegacyHandler::PhpMemcached, "");
        assert!(m.decode(packed, 2, 1 << 20).is_err());
    }
}
