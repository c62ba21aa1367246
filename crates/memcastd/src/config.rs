//! memcastd's settings, declared once: each is a command-line flag and a key
//! of the TOML file given with `--config`, with one default. Flags override
//! the file; the file overrides the defaults.

use std::path::{Path, PathBuf};

use clap::Parser;
use memcast_bus::BusOptions;
use serde::Deserialize;

/// memcastd: fills the local memcached with every session write published on
/// the memcast group, so that every host holds every session.
#[derive(Parser, Debug, Default)]
#[command(name = "memcastd", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with the settings below (keys as the long flags, with
    /// underscores: memcached, subscribe, key_file, ...). Flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The local memcached to fill [default: 127.0.0.1:11211].
    #[arg(long, value_name = "HOST:PORT")]
    pub memcached: Option<String>,

    /// Endpoint to receive frames from: epgm://IFACE;GROUP:PORT,
    /// pgm://IFACE;GROUP:PORT or tcp://HOST:PORT. Repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    pub subscribe: Vec<String>,

    /// File holding the cluster's shared key (at least 32 bytes). Frames not
    /// signed with it are dropped and counted.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// PGM receive rate limit, kbit/s (ZMQ_RATE) [default: 100000].
    #[arg(long, value_name = "KBPS")]
    pub pgm_rate_kbps: Option<i32>,

    /// PGM recovery window, ms (ZMQ_RECOVERY_IVL) [default: 2000].
    #[arg(long, value_name = "MS")]
    pub pgm_recovery_ms: Option<i32>,

    /// Kernel receive buffer, bytes (ZMQ_RCVBUF) [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub rcvbuf: Option<i32>,

    /// Frames queued in ZeroMQ before it drops (ZMQ_RCVHWM) [default: 100000].
    #[arg(long, value_name = "FRAMES")]
    pub rcvhwm: Option<i32>,

    /// Largest session value accepted in a frame, bytes [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub max_value_bytes: Option<usize>,

    /// Frames held while memcached is unreachable, then applied when it is
    /// back; beyond this the oldest are dropped and counted [default: 100000].
    #[arg(long, value_name = "FRAMES")]
    pub backlog: Option<usize>,

    /// Connect timeout to memcached, ms [default: 100].
    #[arg(long, value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,

    /// Timeout of one memcached command, ms [default: 1000].
    #[arg(long, value_name = "MS")]
    pub io_timeout_ms: Option<u64>,

    /// How often counters are logged, seconds; 0 logs them only at exit
    /// [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub stats_interval: Option<u64>,

    /// error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// The TOML file: the same names as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub memcached: Option<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    pub key_file: Option<PathBuf>,
    pub pgm_rate_kbps: Option<i32>,
    pub pgm_recovery_ms: Option<i32>,
    pub rcvbuf: Option<i32>,
    pub rcvhwm: Option<i32>,
    pub max_value_bytes: Option<usize>,
    pub backlog: Option<usize>,
    pub connect_timeout_ms: Option<u64>,
    pub io_timeout_ms: Option<u64>,
    pub stats_interval: Option<u64>,
    pub log_level: Option<String>,
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub memcached: String,
    pub subscribe: Vec<String>,
    pub key_file: PathBuf,
    pub bus: BusOptions,
    pub max_value_bytes: usize,
    pub backlog: usize,
    pub connect_timeout_ms: u64,
    pub io_timeout_ms: u64,
    pub stats_interval: u64,
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub fn load_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    parse_file(&text).map_err(|message| ConfigError::File {
        path: path.to_owned(),
        message,
    })
}

pub fn parse_file(text: &str) -> Result<FileSettings, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

impl Settings {
    pub fn resolve(cli: Cli, file: FileSettings) -> Result<Settings, ConfigError> {
        let d = BusOptions::default();
        let subscribe = if cli.subscribe.is_empty() {
            file.subscribe
        } else {
            cli.subscribe
        };
        if subscribe.is_empty() {
            return Err(ConfigError::Invalid(
                "nothing to subscribe to: give --subscribe ENDPOINT (e.g. \"epgm://eth0;239.192.1.1:5555\")".into(),
            ));
        }
        for endpoint in &subscribe {
            memcast_bus::check_endpoint(endpoint)
                .map_err(|e| ConfigError::Invalid(format!("--subscribe: {e}")))?;
        }
        let key_file = cli.key_file.or(file.key_file).ok_or_else(|| {
            ConfigError::Invalid("no key file: give --key-file FILE (frames are only ever applied when signed with the cluster key)".into())
        })?;
        let memcached = cli
            .memcached
            .or(file.memcached)
            .unwrap_or_else(|| "127.0.0.1:11211".into());
        memcast_core::ServerAddr::parse(&memcached)
            .map_err(|e| ConfigError::Invalid(format!("--memcached: {e}")))?;
        let log_level = cli
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "--log-level {log_level:?}: expected error, warn, info, debug or trace"
            )));
        }
        Ok(Settings {
            memcached,
            subscribe,
            key_file,
            bus: BusOptions {
                rate_kbps: cli
                    .pgm_rate_kbps
                    .or(file.pgm_rate_kbps)
                    .unwrap_or(d.rate_kbps),
                recovery_ms: cli
                    .pgm_recovery_ms
                    .or(file.pgm_recovery_ms)
                    .unwrap_or(d.recovery_ms),
                rcvbuf: cli.rcvbuf.or(file.rcvbuf).unwrap_or(d.rcvbuf),
                rcvhwm: cli.rcvhwm.or(file.rcvhwm).unwrap_or(d.rcvhwm),
                ..d
            },
            max_value_bytes: cli
                .max_value_bytes
                .or(file.max_value_bytes)
                .unwrap_or(memcast_core::frame::DEFAULT_MAX_VALUE_LEN),
            backlog: cli.backlog.or(file.backlog).unwrap_or(100_000),
            connect_timeout_ms: cli
                .connect_timeout_ms
                .or(file.connect_timeout_ms)
                .unwrap_or(100),
            io_timeout_ms: cli.io_timeout_ms.or(file.io_timeout_ms).unwrap_or(1000),
            stats_interval: cli.stats_interval.or(file.stats_interval).unwrap_or(60),
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("memcastd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file = parse_file(
            "memcached = \"127.0.0.1:1\"\nsubscribe = [\"epgm://eth0;239.192.1.1:5555\"]\nkey_file = \"/etc/k\"\npgm_rate_kbps = 5000\n",
        )
        .unwrap();
        let s = Settings::resolve(cli(&["--memcached", "127.0.0.1:2"]), file).unwrap();
        assert_eq!(s.memcached, "127.0.0.1:2");
        assert_eq!(s.subscribe, ["epgm://eth0;239.192.1.1:5555"]);
        assert_eq!(s.key_file, PathBuf::from("/etc/k"));
        assert_eq!(s.bus.rate_kbps, 5000);
        assert_eq!(s.bus.recovery_ms, BusOptions::default().recovery_ms);
    }

    #[test]
    fn missing_key_file_or_endpoint_is_a_clear_error() {
        let err = Settings::resolve(
            cli(&["--subscribe", "tcp://127.0.0.1:1"]),
            FileSettings::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--key-file"), "{err}");
        let err =
            Settings::resolve(cli(&["--key-file", "/k"]), FileSettings::default()).unwrap_err();
        assert!(err.to_string().contains("--subscribe"), "{err}");
        let err = Settings::resolve(
            cli(&["--key-file", "/k", "--subscribe", "udp://x"]),
            FileSettings::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("udp://x"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = parse_file("memcachd = \"x\"\n").unwrap_err();
        assert!(err.contains("memcachd"), "{err}");
    }
}
