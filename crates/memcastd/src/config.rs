//! memcastd's settings, declared once: each is a command-line flag and a key
//! of the TOML file given with `--config`, with one default. Flags override
//! the file; the file overrides the defaults.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use memcast_bus::BusOptions;
use serde::Deserialize;

/// memcastd: fills the local memcached with every session write published on
/// the memcast group, so that every host holds every session; repairs what
/// the network lost; relays this host's PHP writes to the group.
#[derive(Parser, Debug, Default)]
#[command(name = "memcastd", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compare the sessions held by several memcached servers (keys,
    /// versions, data digests) and report every difference. Exit status 0
    /// when they hold the same sessions, 1 when they differ, 2 on error.
    Verify(VerifyArgs),
    /// Ask the running memcastd (its --metrics page) how it is doing: a
    /// short table of memcached health, frames, drops by reason, repairs and
    /// origins with their lag. Exit status 0 healthy, 1 when its memcached is
    /// down, 2 when the daemon cannot be reached.
    Status {
        /// The daemon's --metrics address [default: the `metrics` key of
        /// --config, else 127.0.0.1:9477].
        #[arg(long, value_name = "HOST:PORT")]
        metrics: Option<String>,
        /// The daemon's config file, to find its metrics address.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/memcast/memcastd.toml"
        )]
        config: PathBuf,
    },
    /// Write a new random cluster key to FILE (mode 0600); refuses to
    /// overwrite an existing file unless forced.
    Keygen {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace FILE if it exists (a new file renamed over it). Every
        /// host needs the same key: copy the new file to all of them.
        #[arg(long)]
        force: bool,
    },
    /// Print the memcached key a session id is stored under when sessions
    /// are sealed (memcast.seal, on with a key file): the prefix and a keyed
    /// hash of the id under the key file's session-id key. For looking a
    /// session up in memcached; the id itself is never stored.
    SessionKey {
        /// The cluster key file (the one PHP's memcast.key_file names).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// memcast.prefix, if not the default.
        #[arg(long, value_name = "PREFIX", default_value = "memcast.sess.")]
        prefix: String,
        /// The session id (as in PHP's session cookie).
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A memcached to compare (HOST:PORT, as the daemon's --memcached); at
    /// least two. Repeatable. `--peer` is the old spelling, still accepted.
    #[arg(
        long = "memcached",
        visible_alias = "peer",
        value_name = "HOST:PORT",
        required = true,
        num_args = 1
    )]
    pub peers: Vec<String>,
    /// Only keys starting with this prefix [default: every memcast value].
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// How many differences to list [default: 20].
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub show: usize,
}

#[derive(Args, Debug, Default, Clone)]
pub struct DaemonArgs {
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

    /// Serve Prometheus metrics on http://ADDR/metrics (HOST:PORT), which
    /// `memcastd status` also reads [default: none].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,

    /// A second key file whose key is accepted (frames, peer requests) but
    /// never used to sign: how a cluster rolls to a new key without losing
    /// writes. Both files are read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub accept_key_file: Option<PathBuf>,

    /// Encrypt the body (session id and data) of every frame this daemon
    /// seals (relayed, repaired, snapshots) with XChaCha20-Poly1305
    /// [default: false]. Frames are authenticated either way; encrypted and
    /// plain frames are both accepted.
    #[arg(long, value_name = "BOOL", value_parser = parse_bool)]
    pub encrypt: Option<bool>,

    /// Frames from the group sealed longer ago than this (by the sender's
    /// clock) are dropped as replays [default: 60000]. Keep above the worst
    /// clock skew between hosts.
    #[arg(long, value_name = "MS")]
    pub max_frame_age_ms: Option<u64>,

    /// How many (origin, epoch) pairs replay and gap tracking keep; beyond
    /// it the longest-silent is forgotten [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_origins: Option<usize>,

    /// Frames whose memcached key is longer are dropped [default: 250,
    /// memcached's own limit, which is also the most allowed].
    #[arg(long, value_name = "BYTES")]
    pub max_key_length: Option<usize>,

    /// Take this host's PHP frames at ENDPOINT (ipc:///run/memcast/publish.sock
    /// or tcp://127.0.0.1:PORT, matching memcast.publish) and send them to
    /// the group (--publish) as the host's one long-lived sender, with a
    /// replay ring and heartbeats.
    #[arg(long, value_name = "ENDPOINT")]
    pub relay: Option<String>,

    /// The group the relay sends to, e.g. epgm://eth0;239.192.1.1:5555.
    #[arg(long, value_name = "ENDPOINT")]
    pub publish: Option<String>,

    /// HOST:PORT: serve repairs (from the replay ring) and snapshots (for
    /// peers that resync) on this TCP address; requests must be signed with
    /// the key. tcp://ADDR:PORT: TCP mode, where there is no multicast: the
    /// relay sends this host's frames to every peer that subscribes here
    /// (--subscribe tcp://THIS-HOST:PORT on the peers). Repeatable: one of
    /// each.
    #[arg(long, value_name = "HOST:PORT|tcp://ADDR:PORT")]
    pub listen: Vec<String>,

    /// The address peers reach --listen at, sent in heartbeats [default:
    /// --listen, when it names a host].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// This host's name, sent in the relay's heartbeats: peers label its
    /// metrics with it (stable across restarts, where origin ids are not)
    /// [default: the system's host name].
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,

    /// A peer memcastd's --listen address to refill from (warm-up at
    /// startup, after a memcached restart or evictions) and resync from when
    /// a gap cannot be repaired or this host falls behind. Repeatable; tried
    /// in order. Without any, the memcached is never known complete.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Vec<String>,

    /// Heartbeat interval of the relay, ms [default: 1000].
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,

    /// Size of the relay's replay ring, MB [default: 64].
    #[arg(long, value_name = "MB")]
    pub ring_mb: Option<usize>,

    /// Repair requests sent per second at most; gaps beyond that are merged
    /// and wait [default: 20].
    #[arg(long, value_name = "N")]
    pub repairs_per_sec: Option<u32>,

    /// Shortest time between two full resyncs, seconds [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub resync_interval: Option<u64>,

    /// Every this many seconds, compare digests of what this host holds with
    /// each --peer and fetch the buckets that differ (anti-entropy: catches
    /// any loss nothing else noticed); 0 turns it off [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub anti_entropy_interval: Option<u64>,

    /// Bandwidth cap of the snapshots and anti-entropy transfers this host
    /// serves, Mbit/s; 0 for none [default: 200].
    #[arg(long, value_name = "MBPS")]
    pub transfer_mbps: Option<u64>,

    /// Warm up (a snapshot) from --peer at startup; the memcached is known
    /// complete only after one [default: true when peers are given].
    #[arg(long, value_name = "BOOL", value_parser = parse_bool)]
    pub resync_on_start: Option<bool>,

    /// A subscriber applying writes older than this declares itself out of
    /// sync and resyncs, ms [default: 10000]. Assumes NTP-synced clocks.
    #[arg(long, value_name = "MS")]
    pub max_lag_ms: Option<u64>,

    /// PGM rate limit, kbit/s (ZMQ_RATE) [default: 100000].
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

    /// Frames the relay queues for sending before ZeroMQ drops (ZMQ_SNDHWM;
    /// a PUB socket drops silently, the ring and repairs cover it)
    /// [default: 100000].
    #[arg(long, value_name = "FRAMES")]
    pub sndhwm: Option<i32>,

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
    pub metrics: Option<String>,
    pub accept_key_file: Option<PathBuf>,
    pub encrypt: Option<bool>,
    pub max_frame_age_ms: Option<u64>,
    pub max_origins: Option<usize>,
    pub max_key_length: Option<usize>,
    pub relay: Option<String>,
    pub publish: Option<String>,
    #[serde(default)]
    pub listen: OneOrMore,
    pub advertise: Option<String>,
    pub host_name: Option<String>,
    #[serde(default)]
    pub peer: Vec<String>,
    pub heartbeat_ms: Option<u64>,
    pub ring_mb: Option<usize>,
    pub repairs_per_sec: Option<u32>,
    pub resync_interval: Option<u64>,
    pub resync_on_start: Option<bool>,
    pub anti_entropy_interval: Option<u64>,
    pub transfer_mbps: Option<u64>,
    pub max_lag_ms: Option<u64>,
    pub pgm_rate_kbps: Option<i32>,
    pub pgm_recovery_ms: Option<i32>,
    pub rcvbuf: Option<i32>,
    pub rcvhwm: Option<i32>,
    pub sndhwm: Option<i32>,
    pub max_value_bytes: Option<usize>,
    pub backlog: Option<usize>,
    pub connect_timeout_ms: Option<u64>,
    pub io_timeout_ms: Option<u64>,
    pub stats_interval: Option<u64>,
    pub log_level: Option<String>,
}

/// A TOML value that is one string or a list of them (`listen`).
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(from = "StringOrList")]
pub struct OneOrMore(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    More(Vec<String>),
}

impl From<StringOrList> for OneOrMore {
    fn from(v: StringOrList) -> OneOrMore {
        match v {
            StringOrList::One(s) => OneOrMore(vec![s]),
            StringOrList::More(v) => OneOrMore(v),
        }
    }
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub memcached: String,
    pub subscribe: Vec<String>,
    pub key_file: PathBuf,
    pub metrics: Option<String>,
    pub accept_key_file: Option<PathBuf>,
    pub encrypt: bool,
    pub max_frame_age_ms: u64,
    pub max_origins: usize,
    pub max_key_length: usize,
    pub relay: Option<String>,
    pub publish: Option<String>,
    /// The repair and snapshot server (HOST:PORT).
    pub listen: Option<String>,
    /// TCP mode: where the relay's fan-out binds (tcp://ADDR:PORT).
    pub fanout: Option<String>,
    pub advertise: Option<String>,
    /// Sent in the relay's heartbeats, for peers' metric labels.
    pub host_name: String,
    pub peers: Vec<String>,
    pub heartbeat_ms: u64,
    pub ring_bytes: usize,
    pub repairs_per_sec: u32,
    pub resync_interval_s: u64,
    pub resync_on_start: bool,
    pub anti_entropy_s: u64,
    pub transfer_mbps: u64,
    pub max_lag_ms: u64,
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

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

/// A boolean flag spelled as php.ini spells them (memcast.encrypt=yes).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    memcast_core::ini::parse_bool(s)
        .filter(|_| !s.trim().is_empty())
        .ok_or_else(|| format!("{s:?}: expected yes/no, on/off, true/false or 1/0"))
}

/// An endpoint flag checked part by part: libzmq says only "Invalid
/// argument" for any mistake.
fn check_endpoint(flag: &str, endpoint: &str) -> Result<(), ConfigError> {
    if let Some(problem) = memcast_core::endpoint::problem(endpoint) {
        return Err(invalid(format!("{flag} {endpoint}: {problem}")));
    }
    memcast_bus::check_endpoint(endpoint).map_err(|e| invalid(format!("{flag}: {e}")))
}

/// The kernel's host name (`uname -n`), or "localhost" if it cannot be read.
fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A memcastd address (--peer, --listen, --advertise, --metrics): the port
/// is the daemon's own, so it must be given.
fn check_daemon_addr(flag: &str, addr: &str) -> Result<(), ConfigError> {
    let parsed = memcast_core::ServerAddr::parse(addr)
        .map_err(|e| invalid(format!("{flag} {addr}: {e}")))?;
    let explicit_port = addr
        .trim()
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'));
    if parsed.unix_path().is_some() || !explicit_port {
        return Err(invalid(format!(
            "{flag} {addr}: give HOST:PORT (the port memcastd listens on, e.g. {}:7711)",
            addr.trim()
        )));
    }
    Ok(())
}

impl Settings {
    /// The settings a SIGHUP cannot change (they name sockets, threads or
    /// buffers set up at start), with the names an operator knows them by.
    pub fn needing_restart(&self, new: &Settings) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name, same: bool| {
            if !same {
                out.push(name);
            }
        };
        check("memcached", self.memcached == new.memcached);
        check("subscribe", self.subscribe == new.subscribe);
        check("relay", self.relay == new.relay);
        check("publish", self.publish == new.publish);
        check(
            "listen",
            self.listen == new.listen && self.fanout == new.fanout,
        );
        check("advertise", self.advertise == new.advertise);
        check("host_name", self.host_name == new.host_name);
        check("peer", self.peers == new.peers);
        check("metrics", self.metrics == new.metrics);
        check("heartbeat_ms", self.heartbeat_ms == new.heartbeat_ms);
        check("ring_mb", self.ring_bytes == new.ring_bytes);
        check(
            "repairs_per_sec",
            self.repairs_per_sec == new.repairs_per_sec,
        );
        check(
            "resync_interval",
            self.resync_interval_s == new.resync_interval_s,
        );
        check(
            "anti_entropy_interval",
            self.anti_entropy_s == new.anti_entropy_s,
        );
        check("transfer_mbps", self.transfer_mbps == new.transfer_mbps);
        check("pgm_rate_kbps", self.bus.rate_kbps == new.bus.rate_kbps);
        check(
            "pgm_recovery_ms",
            self.bus.recovery_ms == new.bus.recovery_ms,
        );
        check("rcvbuf", self.bus.rcvbuf == new.bus.rcvbuf);
        check("rcvhwm", self.bus.rcvhwm == new.bus.rcvhwm);
        check("sndhwm", self.bus.sndhwm == new.bus.sndhwm);
        check(
            "max_value_bytes",
            self.max_value_bytes == new.max_value_bytes,
        );
        check(
            "connect_timeout_ms",
            self.connect_timeout_ms == new.connect_timeout_ms,
        );
        check("io_timeout_ms", self.io_timeout_ms == new.io_timeout_ms);
        out
    }

    pub fn resolve(cli: DaemonArgs, file: FileSettings) -> Result<Settings, ConfigError> {
        let d = BusOptions::default();
        let subscribe = if cli.subscribe.is_empty() {
            file.subscribe
        } else {
            cli.subscribe
        };
        if subscribe.is_empty() {
            return Err(invalid(
                "nothing to subscribe to: give --subscribe ENDPOINT (e.g. \"epgm://eth0;239.192.1.1:5555\")".into(),
            ));
        }
        for endpoint in &subscribe {
            check_endpoint("--subscribe", endpoint)?;
        }
        let key_file = cli.key_file.or(file.key_file).ok_or_else(|| {
            invalid("no key file: give --key-file FILE (frames are only ever applied when signed with the cluster key)".into())
        })?;
        let memcached = cli
            .memcached
            .or(file.memcached)
            .unwrap_or_else(|| "127.0.0.1:11211".into());
        memcast_core::ServerAddr::parse(&memcached)
            .map_err(|e| invalid(format!("--memcached: {e}")))?;
        let relay = cli.relay.or(file.relay);
        let publish = cli.publish.or(file.publish);
        let listens = if cli.listen.is_empty() {
            file.listen.0
        } else {
            cli.listen
        };
        let (fanouts, listens): (Vec<String>, Vec<String>) =
            listens.into_iter().partition(|l| l.contains("://"));
        if listens.len() > 1 || fanouts.len() > 1 {
            return Err(invalid(
                "--listen: at most one HOST:PORT (repairs) and one tcp://ADDR:PORT (TCP fan-out)"
                    .into(),
            ));
        }
        let fanout = fanouts.into_iter().next();
        if let Some(f) = &fanout {
            if !f.starts_with("tcp://") {
                return Err(invalid(format!(
                    "--listen {f}: a fan-out is tcp://ADDR:PORT"
                )));
            }
            if relay.is_none() {
                return Err(invalid(format!(
                    "--listen {f}: the TCP fan-out sends what the relay takes from PHP; give --relay too"
                )));
            }
        }
        if let Some(r) = &relay {
            check_endpoint("--relay", r)?;
            if publish.is_none() && fanout.is_none() {
                return Err(invalid(
                    "--relay needs --publish (the group to send this host's frames to) or --listen tcp://ADDR:PORT (TCP mode)".into(),
                ));
            }
        }
        if let Some(p) = &publish {
            check_endpoint("--publish", p)?;
            if relay.is_none() {
                return Err(invalid(
                    "--publish is what the relay sends to: give --relay too".into(),
                ));
            }
        }
        let listen = listens.into_iter().next();
        let advertise = cli.advertise.or(file.advertise).or_else(|| {
            listen
                .clone()
                .filter(|l| !l.starts_with("0.0.0.0:") && !l.starts_with("[::]:"))
        });
        let host_name = cli
            .host_name
            .or(file.host_name)
            .unwrap_or_else(system_host_name);
        if host_name.is_empty()
            || host_name.len() > 64
            || host_name.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(invalid(format!(
                "--host-name {host_name:?}: expected 1 to 64 bytes without spaces or control characters"
            )));
        }
        let peers = if cli.peer.is_empty() {
            file.peer
        } else {
            cli.peer
        };
        for p in &peers {
            check_daemon_addr("--peer", p)?;
        }
        if let Some(l) = &listen {
            check_daemon_addr("--listen", l)?;
        }
        if let Some(a) = &advertise {
            check_daemon_addr("--advertise", a)?;
        }
        if let Some(f) = &fanout {
            check_endpoint("--listen", f)?;
        }
        let log_level = cli
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(invalid(format!(
                "--log-level {log_level:?}: expected error, warn, info, debug or trace"
            )));
        }
        let resync_on_start = cli
            .resync_on_start
            .or(file.resync_on_start)
            .unwrap_or(!peers.is_empty());
        let metrics = cli.metrics.or(file.metrics);
        if let Some(m) = &metrics {
            check_daemon_addr("--metrics", m)?;
        }
        let max_key_length = cli
            .max_key_length
            .or(file.max_key_length)
            .unwrap_or(memcast_core::session_key::MAX_KEY_LEN);
        if max_key_length == 0 || max_key_length > memcast_core::session_key::MAX_KEY_LEN {
            return Err(invalid(format!(
                "--max-key-length {max_key_length}: must be 1 to {} (memcached's limit)",
                memcast_core::session_key::MAX_KEY_LEN
            )));
        }
        Ok(Settings {
            memcached,
            subscribe,
            key_file,
            metrics,
            accept_key_file: cli.accept_key_file.or(file.accept_key_file),
            encrypt: cli.encrypt.or(file.encrypt).unwrap_or(false),
            max_frame_age_ms: cli
                .max_frame_age_ms
                .or(file.max_frame_age_ms)
                .unwrap_or(60_000)
                .max(1000),
            max_origins: cli
                .max_origins
                .or(file.max_origins)
                .unwrap_or(10_000)
                .max(16),
            max_key_length,
            relay,
            publish,
            listen,
            fanout,
            advertise,
            host_name,
            peers,
            heartbeat_ms: cli
                .heartbeat_ms
                .or(file.heartbeat_ms)
                .unwrap_or(1000)
                .max(10),
            ring_bytes: cli.ring_mb.or(file.ring_mb).unwrap_or(64).max(1) * 1024 * 1024,
            repairs_per_sec: cli
                .repairs_per_sec
                .or(file.repairs_per_sec)
                .unwrap_or(20)
                .max(1),
            resync_interval_s: cli.resync_interval.or(file.resync_interval).unwrap_or(30),
            resync_on_start,
            anti_entropy_s: cli
                .anti_entropy_interval
                .or(file.anti_entropy_interval)
                .unwrap_or(300),
            transfer_mbps: cli.transfer_mbps.or(file.transfer_mbps).unwrap_or(200),
            max_lag_ms: cli.max_lag_ms.or(file.max_lag_ms).unwrap_or(10_000),
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
                sndhwm: cli.sndhwm.or(file.sndhwm).unwrap_or(100_000),
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

    pub fn timeouts(&self) -> memcast_core::Timeouts {
        memcast_core::Timeouts {
            connect: std::time::Duration::from_millis(self.connect_timeout_ms),
            io: std::time::Duration::from_millis(self.io_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> DaemonArgs {
        Cli::try_parse_from(std::iter::once("memcastd").chain(args.iter().copied()))
            .unwrap()
            .daemon
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file = parse_file(
            "memcached = \"127.0.0.1:1\"\nsubscribe = [\"epgm://eth0;239.192.1.1:5555\"]\nkey_file = \"/etc/k\"\npgm_rate_kbps = 5000\npeer = [\"10.0.0.2:7711\"]\n",
        )
        .unwrap();
        let s = Settings::resolve(cli(&["--memcached", "127.0.0.1:2"]), file).unwrap();
        assert_eq!(s.memcached, "127.0.0.1:2");
        assert_eq!(s.subscribe, ["epgm://eth0;239.192.1.1:5555"]);
        assert_eq!(s.key_file, PathBuf::from("/etc/k"));
        assert_eq!(s.bus.rate_kbps, 5000);
        assert_eq!(s.bus.recovery_ms, BusOptions::default().recovery_ms);
        assert_eq!(s.peers, ["10.0.0.2:7711"]);
        assert!(s.resync_on_start, "peers given: resync at start by default");
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
    fn relay_and_publish_go_together() {
        let base = ["--key-file", "/k", "--subscribe", "tcp://127.0.0.1:1"];
        let with = |extra: &[&str]| {
            Settings::resolve(cli(&[&base[..], extra].concat()), FileSettings::default())
        };
        assert!(with(&["--relay", "ipc:///tmp/r.sock"])
            .unwrap_err()
            .to_string()
            .contains("--publish"));
        assert!(with(&["--publish", "tcp://127.0.0.1:2"])
            .unwrap_err()
            .to_string()
            .contains("--relay"));
        let s = with(&[
            "--relay",
            "ipc:///tmp/r.sock",
            "--publish",
            "epgm://eth0;239.1.1.1:5555",
            "--listen",
            "10.0.0.1:7711",
        ])
        .unwrap();
        assert_eq!(s.advertise.as_deref(), Some("10.0.0.1:7711"));
        let s = with(&["--listen", "0.0.0.0:7711"]).unwrap();
        assert_eq!(
            s.advertise, None,
            "a wildcard address is not one peers can reach"
        );
    }

    fn error_of(args: &[&str]) -> String {
        let base = ["--key-file", "/k"];
        Settings::resolve(cli(&[&base[..], args].concat()), FileSettings::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn each_endpoint_mistake_names_the_part_that_is_wrong() {
        for (endpoint, says) in [
            ("epgm://eth0;10.0.0.1:5555", "group 10.0.0.1 is not a multicast address"),
            ("epgm://eth0;nowhere:5555", "is not an IPv4 address"),
            ("epgm://239.192.1.1:5555", "no interface: PGM needs the one to send and listen on, epgm://IFACE;239.192.1.1:5555"),
            ("epgm://eth0;239.192.1.1", "no port after the group"),
            ("epgm://eth0", "quote the value"),
            ("tcp://10.0.0.1", "no port: tcp://10.0.0.1:PORT"),
            ("tcp://:5", "bad address"),
        ] {
            let e = error_of(&["--subscribe", endpoint]);
            assert!(e.starts_with(&format!("--subscribe {endpoint}: ")), "{e}");
            assert!(e.contains(says), "{endpoint}: {e}");
        }
        let e = error_of(&[
            "--subscribe",
            "tcp://127.0.0.1:1",
            "--relay",
            "ipc:///tmp/r",
            "--publish",
            "pgm://eth0;224.0.0.300:5555",
        ]);
        assert!(
            e.contains("--publish") && e.contains("not an IPv4 address"),
            "{e}"
        );
    }

    #[test]
    fn daemon_addresses_need_their_port_at_start() {
        let sub = ["--subscribe", "tcp://127.0.0.1:1"];
        let e = error_of(&[&sub[..], &["--peer", "127.0.0.1"]].concat());
        assert_eq!(
            e,
            "--peer 127.0.0.1: give HOST:PORT (the port memcastd listens on, e.g. 127.0.0.1:7711)"
        );
        let e = error_of(&[&sub[..], &["--peer", "[::1]"]].concat());
        assert!(e.starts_with("--peer [::1]: give HOST:PORT"), "{e}");
        let e = error_of(&[&sub[..], &["--metrics", "localhost"]].concat());
        assert!(e.starts_with("--metrics localhost: give HOST:PORT"), "{e}");
        let e = error_of(&[&sub[..], &["--listen", "10.0.0.1"]].concat());
        assert!(e.starts_with("--listen 10.0.0.1: give HOST:PORT"), "{e}");
        let ok = Settings::resolve(
            cli(&[
                &["--key-file", "/k"][..],
                &sub[..],
                &["--peer", "[::1]:7711", "--peer", "h:7711"],
            ]
            .concat()),
            FileSettings::default(),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn booleans_are_spelled_as_in_php_ini() {
        let base = ["--key-file", "/k", "--subscribe", "tcp://127.0.0.1:1"];
        for (word, value) in [
            ("yes", true),
            ("on", true),
            ("1", true),
            ("true", true),
            ("no", false),
            ("off", false),
            ("0", false),
            ("false", false),
        ] {
            let s = Settings::resolve(
                cli(&[&base[..], &["--encrypt", word, "--resync-on-start", word]].concat()),
                FileSettings::default(),
            )
            .unwrap();
            assert_eq!((s.encrypt, s.resync_on_start), (value, value), "{word}");
        }
        let e = Cli::try_parse_from(["memcastd", "--encrypt", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected yes/no, on/off, true/false or 1/0"),
            "{e}"
        );
    }

    #[test]
    fn a_reload_names_only_what_changed_by_its_config_key() {
        let base = ["--key-file", "/k", "--subscribe", "tcp://127.0.0.1:1"];
        let a = Settings::resolve(cli(&base), FileSettings::default()).unwrap();
        let b = Settings::resolve(
            cli(&[&base[..], &["--rcvhwm", "5", "--io-timeout-ms", "7"]].concat()),
            FileSettings::default(),
        )
        .unwrap();
        assert_eq!(a.needing_restart(&b), ["rcvhwm", "io_timeout_ms"]);
        assert!(a.needing_restart(&a).is_empty());
    }

    #[test]
    fn verify_calls_memcached_addresses_memcached_and_still_takes_peer() {
        let c = Cli::try_parse_from(["memcastd", "verify", "--memcached", "a:1", "--peer", "b:2"])
            .unwrap();
        let Some(Command::Verify(v)) = c.command else {
            panic!("not verify")
        };
        assert_eq!(v.peers, ["a:1", "b:2"]);
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = parse_file("memcachd = \"x\"\n").unwrap_err();
        assert!(err.contains("memcachd"), "{err}");
    }

    #[test]
    fn verify_takes_peers() {
        let c =
            Cli::try_parse_from(["memcastd", "verify", "--peer", "a:1", "--peer", "b:2"]).unwrap();
        let Some(Command::Verify(v)) = c.command else {
            panic!("not verify")
        };
        assert_eq!(v.peers, ["a:1", "b:2"]);
    }
}
