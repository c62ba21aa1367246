//! The extension's `memcast.*` php.ini settings, declared once: name,
//! default and meaning. The extension registers exactly this table, phpinfo()
//! shows it, and a test checks the README's reference table against it.

use std::ffi::CStr;
use std::path::PathBuf;
use std::time::Duration;

use crate::legacy::{LegacyHandler, LegacySessions};
use crate::memcached::Timeouts;

pub struct IniSetting {
    pub name: &'static CStr,
    pub default: &'static CStr,
    pub doc: &'static str,
}

pub const PUBLISH: &CStr = c"memcast.publish";
pub const KEY_FILE: &CStr = c"memcast.key_file";
pub const PREFIX: &CStr = c"memcast.prefix";
pub const CONNECT_TIMEOUT_MS: &CStr = c"memcast.connect_timeout_ms";
pub const IO_TIMEOUT_MS: &CStr = c"memcast.io_timeout_ms";
pub const RETRY_INTERVAL: &CStr = c"memcast.retry_interval";
pub const PGM_RATE_KBPS: &CStr = c"memcast.pgm_rate_kbps";
pub const PGM_RECOVERY_MS: &CStr = c"memcast.pgm_recovery_ms";
pub const SEND_HWM: &CStr = c"memcast.send_hwm";
pub const LINGER_MS: &CStr = c"memcast.linger_ms";
pub const RELAY_TIMEOUT_MS: &CStr = c"memcast.relay_timeout_ms";
pub const WARM_CHECK: &CStr = c"memcast.warm_check";
pub const LOCKING: &CStr = c"memcast.locking";
pub const LOCK_WAIT_MIN: &CStr = c"memcast.lock_wait_min";
pub const LOCK_WAIT_MAX: &CStr = c"memcast.lock_wait_max";
pub const LOCK_RETRIES: &CStr = c"memcast.lock_retries";
pub const LOCK_EXPIRE: &CStr = c"memcast.lock_expire";
pub const LOCK_SCOPE: &CStr = c"memcast.lock_scope";
pub const ACCEPT_KEY_FILE: &CStr = c"memcast.accept_key_file";
pub const ENCRYPT: &CStr = c"memcast.encrypt";
pub const SEAL: &CStr = c"memcast.seal";
pub const MAX_SESSION_SIZE: &CStr = c"memcast.max_session_size";
pub const COMPRESS_THRESHOLD: &CStr = c"memcast.compress_threshold";
pub const MIGRATE_FROM: &CStr = c"memcast.migrate_from";
pub const MIGRATE_PREFIX: &CStr = c"memcast.migrate_prefix";

pub const SETTINGS: &[IniSetting] = &[
    IniSetting {
        name: PUBLISH,
        default: c"",
        doc: "Where each write is published: epgm://IFACE;GROUP:PORT (or pgm://, tcp://, ipc://, unixgram://). Empty: no replication.",
    },
    IniSetting {
        name: KEY_FILE,
        default: c"",
        doc: "File holding the cluster's shared key (at least 32 bytes); frames are signed with it. Required when publishing.",
    },
    IniSetting {
        name: PREFIX,
        default: c"memcast.sess.",
        doc: "Prefix of every session key in memcached.",
    },
    IniSetting {
        name: CONNECT_TIMEOUT_MS,
        default: c"100",
        doc: "Connect timeout to one memcached, milliseconds.",
    },
    IniSetting {
        name: IO_TIMEOUT_MS,
        default: c"500",
        doc: "Read/write timeout of one memcached command, milliseconds.",
    },
    IniSetting {
        name: RETRY_INTERVAL,
        default: c"2",
        doc: "How long a server that timed out is skipped before it is tried again: seconds, or milliseconds with an ms suffix (500ms). One that refused or closed the connection (restarting) is skipped 100 ms at most.",
    },
    IniSetting {
        name: PGM_RATE_KBPS,
        default: c"100000",
        doc: "PGM sender rate limit (ZMQ_RATE), kbit/s.",
    },
    IniSetting {
        name: PGM_RECOVERY_MS,
        default: c"2000",
        doc: "PGM recovery window (ZMQ_RECOVERY_IVL), milliseconds.",
    },
    IniSetting {
        name: SEND_HWM,
        default: c"10000",
        doc: "Frames queued for sending before new ones are dropped (and counted).",
    },
    IniSetting {
        name: LINGER_MS,
        default: c"1000",
        doc: "How long a PHP process waits at exit for unsent frames, milliseconds.",
    },
    IniSetting {
        name: RELAY_TIMEOUT_MS,
        default: c"50",
        doc: "With memcast.publish = unixgram://, ipc:// or tcp:// (the host relay): the longest a request waits for the local memcastd before the frame is dropped and counted, milliseconds.",
    },
    IniSetting {
        name: WARM_CHECK,
        default: c"1",
        doc: "Confirm a miss on a memcached its memcastd does not vouch for as complete (no warm sentinel: restarted, evicting, memcastd away) on the next servers before the session counts as new, and write a hit from there back (read-repair). Off: every miss is trusted; only for a single server where no memcastd runs.",
    },
    IniSetting {
        name: LOCKING,
        default: c"1",
        doc: "Lock a session from session_start() to its close, so concurrent requests of one session do not lose each other's writes.",
    },
    IniSetting {
        name: LOCK_WAIT_MIN,
        default: c"10",
        doc: "First wait before trying a held lock again, milliseconds; each wait doubles (with jitter) up to memcast.lock_wait_max.",
    },
    IniSetting {
        name: LOCK_WAIT_MAX,
        default: c"200",
        doc: "Longest wait between two tries for a held lock, milliseconds.",
    },
    IniSetting {
        name: LOCK_RETRIES,
        default: c"100",
        doc: "Tries for a held lock before session_start() gives up with a warning and returns false.",
    },
    IniSetting {
        name: LOCK_EXPIRE,
        default: c"0",
        doc: "Seconds after which a lock left by a request that died is free again; 0: max_execution_time, or 30 when that is unlimited.",
    },
    IniSetting {
        name: LOCK_SCOPE,
        default: c"cluster",
        doc: "cluster: a session's lock lives in one server every host agrees on (rendezvous hashing of the session over session.save_path's servers, which every host must name alike), so no load balancer needs sticky sessions; a host that cannot reach it fails session_start() rather than go on unlocked, and after memcast.lock_expire the next server takes its locks over. host: the first healthy server of this host's session.save_path, which only keeps apart the requests of one host (sticky sessions).",
    },
    IniSetting {
        name: ACCEPT_KEY_FILE,
        default: c"",
        doc: "A second key file, accepted but never used to sign: for rolling to a new key (see Key rotation). Both key files are read again when they change.",
    },
    IniSetting {
        name: ENCRYPT,
        default: c"0",
        doc: "Encrypt the body of every frame (session id and data) with XChaCha20-Poly1305 under the cluster key. Frames are authenticated either way.",
    },
    IniSetting {
        name: SEAL,
        default: c"1",
        doc: "With a key file: store sessions sealed, under a keyed hash of the session id and with their data encrypted and bound to that key (XChaCha20-Poly1305, a subkey of the cluster key), so neither memcached nor the network ever sees an id or session data. 0: ids and data in the clear, as other handlers store them (for tools that read sessions from memcached). Without a key file sessions are never sealed.",
    },
    IniSetting {
        name: MAX_SESSION_SIZE,
        default: c"4M",
        doc: "Largest session data written, in bytes (K and M suffixes): a larger session is not stored, session_write_close() warns and returns false. Keep it at most memcached's -I and memcastd's --max-value-bytes.",
    },
    IniSetting {
        name: COMPRESS_THRESHOLD,
        default: c"1024",
        doc: "Session data of at least this many bytes (K and M suffixes) is LZ4-compressed when that makes it smaller. Sealed sessions (memcast.seal, the default with a key file): before sealing, so memcached stores them compressed and every frame carrying them is smaller. Unsealed sessions: in the frames this process sends straight to the group (memcast.publish = epgm:// or pgm://); with the host relay (ipc://, tcp://) memcastd's --compress-threshold applies to them instead. 0: never. A memcast that predates compression reads a session sealed compressed as a miss: 0 until every host runs this version.",
    },
    IniSetting {
        name: MIGRATE_FROM,
        default: c"off",
        doc: "While switching from another save handler on the same memcached servers: memcached (php-memcached) or memcache (pecl-memcache); or memcast: sessions memcast stored unsealed (memcast.seal = 0, or before sealing existed), read while sessions are sealed. A session memcast does not hold is looked for under that handler's key on every server, and its next write stores it as memcast's (see Switching from php-memcached). off: never.",
    },
    IniSetting {
        name: MIGRATE_PREFIX,
        default: c"",
        doc: "The other handler's key prefix (memcached.sess_prefix, memcache.session_prefix_static_key). Empty: its default (memc.sess.key. for memcached, none for memcache).",
    },
];

/// The settings as the extension uses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionConfig {
    pub publish: Option<String>,
    pub key_file: Option<PathBuf>,
    pub prefix: String,
    pub timeouts: Timeouts,
    pub retry_interval: Duration,
    pub pgm_rate_kbps: i32,
    pub pgm_recovery_ms: i32,
    pub send_hwm: i32,
    pub linger_ms: i32,
    pub relay_timeout_ms: i32,
    pub warm_check: bool,
    pub locking: bool,
    pub lock_wait_min: Duration,
    pub lock_wait_max: Duration,
    pub lock_retries: u32,
    /// Seconds; 0 until resolved against max_execution_time by the caller.
    pub lock_expire: u64,
    pub lock_scope: LockScope,
    pub accept_key_file: Option<PathBuf>,
    pub encrypt: bool,
    /// Seal sessions at rest (when a key file is set): see `session_seal`.
    pub seal: bool,
    pub max_session_size: usize,
    /// Values of at least this many bytes are compressed in frames sent
    /// straight to the group (0: never).
    pub compress_threshold: usize,
    /// Where another save handler's sessions are read from (`None`: off).
    pub migrate_from: Option<LegacySessions>,
}

impl ExtensionConfig {
    /// Builds the config from current INI values (`lookup` returns a
    /// setting's value). Every error names the setting and the bad value.
    pub fn from_ini(lookup: impl Fn(&CStr) -> String) -> Result<ExtensionConfig, String> {
        let text = |name: &CStr| lookup(name).trim().to_owned();
        let non_empty = |name: &CStr| Some(text(name)).filter(|s| !s.is_empty());
        let int = |name: &CStr, min: i64, max: i64| -> Result<i64, String> {
            let raw = text(name);
            raw.parse::<i64>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    invalid(
                        name,
                        &raw,
                        &format!("expected a whole number from {min} to {max}"),
                    )
                })
        };
        let boolean = |name: &CStr| {
            parse_bool(&text(name)).ok_or_else(|| {
                invalid(
                    name,
                    &text(name),
                    "expected 1/0, on/off, yes/no, true/false",
                )
            })
        };
        // Not trimmed: a prefix of spaces would otherwise become no prefix.
        let key_prefix = |name: &CStr| {
            let prefix = lookup(name);
            if !prefix.bytes().all(|b| b > b' ' && b != 0x7f) || prefix.len() > 100 {
                return Err(invalid(
                    name,
                    &prefix,
                    "expected at most 100 bytes without spaces or control characters",
                ));
            }
            Ok(prefix)
        };
        let prefix = key_prefix(PREFIX)?;
        let migrate_prefix = key_prefix(MIGRATE_PREFIX)?;
        let migrate_from = LegacyHandler::parse(&text(MIGRATE_FROM))
            .map_err(|why| invalid(MIGRATE_FROM, &text(MIGRATE_FROM), &why))?
            .map(|handler| LegacySessions::new(handler, &migrate_prefix));
        // memcast's own unsealed keys share the prefix: sealed keys differ.
        let own = |m: &LegacySessions| m.handler == LegacyHandler::MemcastUnsealed;
        if migrate_from
            .as_ref()
            .is_some_and(|m| m.prefix == prefix && !own(m))
        {
            return Err(invalid(
                MIGRATE_PREFIX,
                &migrate_prefix,
                "the other handler's keys would be memcast's own (memcast.prefix): give memcast its own prefix",
            ));
        }
        let publish = non_empty(PUBLISH);
        if let Some(problem) = publish.as_deref().and_then(crate::endpoint::problem) {
            return Err(invalid(PUBLISH, &text(PUBLISH), &problem));
        }
        Ok(ExtensionConfig {
            publish,
            key_file: non_empty(KEY_FILE).map(PathBuf::from),
            prefix,
            timeouts: Timeouts {
                connect: Duration::from_millis(int(CONNECT_TIMEOUT_MS, 1, 60_000)? as u64),
                io: Duration::from_millis(int(IO_TIMEOUT_MS, 1, 60_000)? as u64),
            },
            retry_interval: parse_interval(&text(RETRY_INTERVAL)).ok_or_else(|| {
                invalid(
                    RETRY_INTERVAL,
                    &text(RETRY_INTERVAL),
                    "expected seconds (2) or milliseconds (500ms)",
                )
            })?,
            pgm_rate_kbps: int(PGM_RATE_KBPS, 1, i32::MAX as i64)? as i32,
            pgm_recovery_ms: int(PGM_RECOVERY_MS, 1, i32::MAX as i64)? as i32,
            send_hwm: int(SEND_HWM, 0, i32::MAX as i64)? as i32,
            linger_ms: int(LINGER_MS, 0, i32::MAX as i64)? as i32,
            relay_timeout_ms: int(RELAY_TIMEOUT_MS, 1, 60_000)? as i32,
            warm_check: boolean(WARM_CHECK)?,
            locking: boolean(LOCKING)?,
            lock_wait_min: Duration::from_millis(int(LOCK_WAIT_MIN, 1, 60_000)? as u64),
            lock_wait_max: Duration::from_millis(int(LOCK_WAIT_MAX, 1, 60_000)? as u64),
            lock_retries: int(LOCK_RETRIES, 0, 1_000_000)? as u32,
            lock_expire: int(LOCK_EXPIRE, 0, 30 * 24 * 3600)? as u64,
            lock_scope: match text(LOCK_SCOPE).to_ascii_lowercase().as_str() {
                "cluster" => LockScope::Cluster,
                "host" => LockScope::Host,
                _ => {
                    return Err(invalid(
                        LOCK_SCOPE,
                        &text(LOCK_SCOPE),
                        "expected cluster (one lock place for every host) or host (this host's first server; sticky sessions)",
                    ))
                }
            },
            accept_key_file: non_empty(ACCEPT_KEY_FILE).map(PathBuf::from),
            encrypt: boolean(ENCRYPT)?,
            seal: boolean(SEAL)?,
            max_session_size: parse_size(&text(MAX_SESSION_SIZE))
                .filter(|n| (1..=crate::frame::DEFAULT_MAX_VALUE_LEN).contains(n))
                .ok_or_else(|| {
                    invalid(
                        MAX_SESSION_SIZE,
                        &text(MAX_SESSION_SIZE),
                        "expected a size from 1 to 8M (bytes, or with a K or M suffix)",
                    )
                })?,
            compress_threshold: parse_size(&text(COMPRESS_THRESHOLD))
                .filter(|n| *n <= crate::frame::DEFAULT_MAX_VALUE_LEN)
                .ok_or_else(|| {
                    invalid(
                        COMPRESS_THRESHOLD,
                        &text(COMPRESS_THRESHOLD),
                        "expected a size from 0 (never) to 8M (bytes, or with a K or M suffix)",
                    )
                })?,
            migrate_from,
        })
    }
}

/// Where a session's lock lives (`memcast.lock_scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockScope {
    /// The first server of the session's rendezvous order over the save
    /// path (`lock_place`): the same on every host.
    Cluster,
    /// The first healthy server of this host's save path.
    Host,
}

/// The one wording of a bad value, at start-up, `ini_set()` and `session_start()`.
fn invalid(name: &CStr, raw: &str, why: &str) -> String {
    format!(
        "invalid value {raw:?} for {}: {why}",
        name.to_string_lossy()
    )
}

/// Checks one setting's new value as [`ExtensionConfig::from_ini`] would
/// read it (every other setting at its default): what PHP calls when a
/// value is set, so a mistake is reported where it is made.
pub fn check(name: &CStr, value: &str) -> Result<(), String> {
    ExtensionConfig::from_ini(|n| {
        if n == name {
            value.to_owned()
        } else {
            default_of(n)
        }
    })
    .map(|_| ())
}

/// A setting's default, as declared in [`SETTINGS`].
pub fn default_of(name: &CStr) -> String {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.default.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// PHP hands booleans over as "1" and "" (On/Off), or as written.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "" | "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// `1048576`, `512K`, `4M` (powers of 1024, as php.ini's own sizes).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    digits.trim().parse::<usize>().ok()?.checked_mul(unit)
}

/// `2` (seconds), `2s`, `500ms`.
pub fn parse_interval(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.trim().parse::<u64>().ok().map(Duration::from_millis);
    }
    let secs = s.strip_suffix('s').unwrap_or(s).trim();
    secs.parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(name: &CStr) -> String {
        SETTINGS
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.default.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_parse() {
        let cfg = ExtensionConfig::from_ini(defaults).unwrap();
        assert_eq!(cfg.publish, None);
        assert_eq!(cfg.prefix, "memcast.sess.");
        assert_eq!(cfg.retry_interval, Duration::from_secs(2));
        assert_eq!(cfg.timeouts.io, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = ExtensionConfig::from_ini(|n| {
            if n == IO_TIMEOUT_MS {
                "fast".into()
            } else {
                defaults(n)
            }
        })
        .unwrap_err();
        assert!(
            err.contains("memcast.io_timeout_ms") && err.contains("fast"),
            "{err}"
        );
        let err = ExtensionConfig::from_ini(|n| {
            if n == PREFIX {
                "a b".into()
            } else {
                defaults(n)
            }
        })
        .unwrap_err();
        assert!(err.contains("memcast.prefix"), "{err}");
    }

    #[test]
    fn each_setting_is_checked_alone_when_set() {
        let e = check(CONNECT_TIMEOUT_MS, "abc").unwrap_err();
        assert_eq!(
            e,
            "invalid value \"abc\" for memcast.connect_timeout_ms: expected a whole number from 1 to 60000"
        );
        assert!(check(CONNECT_TIMEOUT_MS, "250").is_ok());
        let e = check(PREFIX, "   ").unwrap_err();
        assert!(e.contains("without spaces"), "{e}");
        assert!(check(PREFIX, "").is_ok(), "an empty prefix is a choice");
        let e = check(PUBLISH, "epgm://eth0").unwrap_err();
        assert!(e.contains("quote the value"), "{e}");
        assert!(check(PUBLISH, "epgm://eth0;239.192.1.1:5555").is_ok());
        assert!(check(PUBLISH, "").is_ok());
        assert!(check(ENCRYPT, "yes").is_ok());
        assert!(check(LOCKING, "maybe").is_err());
        assert!(check(MAX_SESSION_SIZE, "9M").is_err());
        assert!(check(COMPRESS_THRESHOLD, "0").is_ok());
        assert!(check(COMPRESS_THRESHOLD, "2K").is_ok());
        assert!(check(COMPRESS_THRESHOLD, "-1").is_err());
        assert!(check(COMPRESS_THRESHOLD, "9M").is_err());
        assert!(check(RETRY_INTERVAL, "soon").is_err());
        let e = check(MIGRATE_FROM, "php-memcached").unwrap_err();
        assert!(e.contains("memcached (php-memcached), memcache"), "{e}");
        assert!(check(MIGRATE_FROM, "memcached").is_ok());
        assert!(check(MIGRATE_FROM, "").is_ok(), "php.ini's Off");
        assert!(check(MIGRATE_PREFIX, "a b").is_err());
        assert!(check(MIGRATE_PREFIX, "app.sess.").is_ok());
        for s in SETTINGS {
            assert!(check(s.name, &default_of(s.name)).is_ok(), "{:?}", s.name);
        }
    }

    #[test]
    fn migrate_from_names_a_handler_and_its_prefix() {
        let with = |from: &str, prefix: &str| {
            ExtensionConfig::from_ini(|n| match n {
                n if n == MIGRATE_FROM => from.into(),
                n if n == MIGRATE_PREFIX => prefix.into(),
                n => defaults(n),
            })
        };
        assert_eq!(with("off", "").unwrap().migrate_from, None);
        let m = with("memcached", "").unwrap().migrate_from.unwrap();
        assert_eq!(m.prefix, "memc.sess.key.");
        let p = with("memcache", "").unwrap().migrate_from.unwrap();
        assert_eq!(p.prefix, "");
        let custom = with("memcached", "shop.").unwrap().migrate_from.unwrap();
        assert_eq!(custom.prefix, "shop.");
        let e = with("memcached", "memcast.sess.").unwrap_err();
        assert!(e.contains("memcast.migrate_prefix"), "{e}");
    }

    #[test]
    fn sizes_take_k_and_m_suffixes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("4m"), Some(4 << 20));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size(""), None);
        let cfg = ExtensionConfig::from_ini(defaults).unwrap();
        assert_eq!(cfg.max_session_size, 4 << 20);
        assert!(!cfg.encrypt);
        assert_eq!(cfg.accept_key_file, None);
    }

    #[test]
    fn intervals_take_seconds_or_milliseconds() {
        assert_eq!(parse_interval("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_interval("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_interval("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_interval("soon"), None);
    }

    #[test]
    fn the_installed_memcast_ini_shows_every_setting_with_its_default() {
        let ini = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../php/memcast.ini"
        ))
        .unwrap();
        assert!(ini.lines().any(|l| l == "extension=libmemcast.so"));
        for s in SETTINGS {
            let name = s.name.to_string_lossy();
            let default = s.default.to_string_lossy();
            let plain = format!(";{name} = {default}");
            let quoted = format!(";{name} = \"{default}\"");
            assert!(
                ini.lines().any(|l| l == plain || l == quoted),
                "php/memcast.ini lacks {plain}"
            );
        }
    }

    /// The lock's waits double from lock_wait_min up to lock_wait_max, each
    /// jittered within [wait/2, wait], lock_retries times (SessionStore::lock):
    /// the README's row gives the range at the defaults.
    #[test]
    fn the_readmes_lock_retries_row_gives_the_real_range_at_the_defaults() {
        let ms = |name: &CStr| default_of(name).parse::<u64>().unwrap();
        let (min, max, retries) = (ms(LOCK_WAIT_MIN), ms(LOCK_WAIT_MAX), ms(LOCK_RETRIES));
        let mut wait = min;
        let mut longest = 0;
        for _ in 0..retries {
            longest += wait;
            wait = (wait * 2).min(max);
        }
        let shortest = longest / 2;
        let seconds = |ms: u64| format!("{:.1}", ms as f64 / 1000.0);
        let range = format!(
            "{} to {} s at the defaults",
            seconds(shortest),
            seconds(longest)
        );
        assert_eq!(range, "9.7 to 19.3 s at the defaults");
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let row = readme
            .lines()
            .find(|l| l.starts_with("| `memcast.lock_retries` |"))
            .unwrap();
        assert!(row.contains(&range), "{row}");
    }

    #[test]
    fn every_setting_is_in_the_readme_reference_with_its_default() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        for s in SETTINGS {
            let name = s.name.to_string_lossy();
            let default = s.default.to_string_lossy();
            let row = format!("| `{name}` | `{default}` |");
            assert!(
                readme.contains(&row),
                "README.md lacks the row starting {row}"
            );
        }
    }
}
