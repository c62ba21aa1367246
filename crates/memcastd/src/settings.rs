//! memcastd's settings, each declared once in [`declare_settings!`]'s table
//! below: its name (the TOML key; the flag is the same with dashes), the type
//! flags and the file give, the type the daemon uses, its value name, its
//! default, whether a SIGHUP can change it, and its doc. From that one table
//! come the flags ([`DaemonArgs`], whose `--help` shows each default), the
//! file's keys ([`FileSettings`]), the resolved [`Settings`], what a reload
//! takes and what it names as needing a restart, and [`declared`], the
//! reference that tests hold the README and `packaging/memcastd.toml` to.
//!
//! A default is one of: `value(V)` (or `value(V, min M)`: smaller values are
//! raised to M); `none()` (an `Option` or a list left empty); or
//! `computed(FN, "what the reference says")`, where `FN` resolves it from
//! the other settings given.

use std::path::PathBuf;

use clap::Args;
use memcast_bus::BusOptions;
use serde::{Deserialize, Deserializer};

use crate::config::{check_endpoint, invalid, parse_bool, ConfigError};

/// What a SIGHUP does with a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// Taken at once and named in the log (`max_lag_ms 10000 -> 5000`).
    Live,
    /// Taken with the key files, which are read again on every SIGHUP.
    KeyFiles,
    /// Names a socket, thread or buffer set up at start: a change is named
    /// in a warning and waits for a restart.
    Restart,
}

/// One setting as the reference shows it.
#[derive(Clone, Debug)]
pub struct SettingDoc {
    /// The TOML key.
    pub key: &'static str,
    pub value_name: &'static str,
    pub reload: Reload,
    /// As the README's table shows it: `` `60000` ``, `none`, `required`,
    /// or a phrase for a computed default.
    pub default: String,
    pub doc: String,
}

impl SettingDoc {
    /// The command-line flag: the key with dashes.
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }
}

/// A setting's doc lines as one paragraph.
fn paragraph(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--help` of a setting: its doc and its default, without the final
/// period (as clap shows a doc comment).
fn help(lines: &[&str], default: &str) -> String {
    let paragraph = paragraph(lines);
    let doc = paragraph.strip_suffix('.').unwrap_or(&paragraph);
    match default {
        "required" => doc.to_owned(),
        _ => format!("{doc} [default: {}]", default.replace('`', "")),
    }
}

/// A flag or file value: flags win over the file.
trait Given {
    fn or(self, file: Self) -> Self;
}

impl<T> Given for Option<T> {
    fn or(self, file: Self) -> Self {
        self.or(file)
    }
}

impl<T> Given for Vec<T> {
    fn or(self, file: Self) -> Self {
        if self.is_empty() {
            file
        } else {
            self
        }
    }
}

/// A TOML value that is one string or a list of them (`listen`).
fn one_or_more<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(String),
        More(Vec<String>),
    }
    Ok(match OneOrMore::deserialize(d)? {
        OneOrMore::One(s) => vec![s],
        OneOrMore::More(v) => v,
    })
}

macro_rules! declare_settings {
    ($(
        $(#[doc = $doc:literal])+
        $(#[arg($($arg:tt)*)])?
        $(#[serde($($serde:tt)*)])?
        $key:ident: $given:ty => $ty:ty, $value_name:literal, $reload:ident,
            $kind:ident $args:tt;
    )*) => {
        /// The daemon's flags (every setting, as given on the command line).
        #[derive(Args, Debug, Default, Clone)]
        pub struct DaemonArgs {
            /// TOML file with the settings below (keys as the long flags, with
            /// underscores: memcached, subscribe, key_file, ...). Flags override it.
            #[arg(long, value_name = "FILE")]
            pub config: Option<PathBuf>,
            $(
                #[arg(
                    long,
                    value_name = $value_name,
                    help = help(&[$($doc),+], &declare_settings!(@default_doc $ty, $kind $args))
                    $(, $($arg)*)?
                )]
                pub $key: $given,
            )*
        }

        /// The TOML file: the same names as the flags.
        #[derive(Deserialize, Debug, Default)]
        #[serde(deny_unknown_fields)]
        pub struct FileSettings {
            $(
                #[serde(default $(, $($serde)*)?)]
                pub $key: $given,
            )*
        }

        impl DaemonArgs {
            /// The flags over the file.
            fn over(self, file: FileSettings) -> DaemonArgs {
                DaemonArgs {
                    config: self.config,
                    $($key: Given::or(self.$key, file.$key),)*
                }
            }
        }

        /// The settings the daemon runs with: flags over the file over the
        /// defaults.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $(
                $(#[doc = $doc])+
                pub $key: $ty,
            )*
        }

        impl Settings {
            /// Each setting from what was given, or its default.
            fn from_given(given: &DaemonArgs) -> Result<Settings, ConfigError> {
                Ok(Settings {
                    $($key: declare_settings!(@resolve given, $key, $ty, $kind $args),)*
                })
            }

            /// The settings a SIGHUP cannot change that differ in `new`, by
            /// the names an operator knows them by.
            pub fn needing_restart(&self, new: &Settings) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(
                    if Reload::$reload == Reload::Restart && self.$key != new.$key {
                        out.push(stringify!($key));
                    }
                )*
                out
            }

            /// Takes from `new` every setting a SIGHUP changes; returns the
            /// live ones that changed, as `name old -> new`.
            pub fn take_reloadable(&mut self, new: &Settings) -> Vec<String> {
                let mut changed = Vec::new();
                $(declare_settings!(@take self, new, changed, $key, $reload);)*
                changed
            }
        }

        /// Every setting, as the reference (README, sample file) shows it.
        pub fn declared() -> Vec<SettingDoc> {
            vec![$(
                SettingDoc {
                    key: stringify!($key),
                    value_name: $value_name,
                    reload: Reload::$reload,
                    default: declare_settings!(@default_doc $ty, $kind $args),
                    doc: paragraph(&[$($doc),+]),
                },
            )*]
        }
    };

    (@resolve $given:ident, $key:ident, $ty:ty, value ($value:expr)) => {
        $given.$key.clone().unwrap_or_else(|| $value)
    };
    (@resolve $given:ident, $key:ident, $ty:ty, value ($value:expr, min $min:expr)) => {
        $given.$key.clone().unwrap_or_else(|| $value).max($min)
    };
    (@resolve $given:ident, $key:ident, $ty:ty, none ()) => {
        $given.$key.clone()
    };
    (@resolve $given:ident, $key:ident, $ty:ty, computed ($resolve:path, $doc:literal)) => {
        $resolve($given)?
    };

    (@default_doc $ty:ty, value ($value:expr $(, min $min:expr)?)) => {{
        let value: $ty = $value;
        format!("`{value}`")
    }};
    (@default_doc $ty:ty, none ()) => {
        String::from("none")
    };
    (@default_doc $ty:ty, computed ($resolve:path, $doc:literal)) => {
        String::from($doc)
    };

    (@take $self:ident, $new:ident, $changed:ident, $key:ident, Live) => {
        if $self.$key != $new.$key {
            $changed.push(format!("{} {} -> {}", stringify!($key), $self.$key, $new.$key));
            $self.$key = $new.$key.clone();
        }
    };
    (@take $self:ident, $new:ident, $changed:ident, $key:ident, KeyFiles) => {
        $self.$key = $new.$key.clone();
    };
    (@take $self:ident, $new:ident, $changed:ident, $key:ident, Restart) => {};
}

declare_settings! {
    /// The local memcached to fill.
    memcached: Option<String> => String, "HOST:PORT", Restart,
        value("127.0.0.1:11211".into());

    /// Endpoint to receive frames from: epgm://IFACE;GROUP:PORT,
    /// pgm://IFACE;GROUP:PORT or tcp://HOST:PORT. Repeatable. A multicast
    /// port may be a range, epgm://IFACE;GROUP:FIRST-LAST (one subscription
    /// per port, this host's own --publish left out of it): every host
    /// subscribes to the range and publishes on its own port of it.
    subscribe: Vec<String> => Vec<String>, "ENDPOINT", Restart,
        computed(subscriptions, "required");

    /// File holding the cluster's shared key (at least 32 bytes). Frames not
    /// signed with it are dropped and counted.
    key_file: Option<PathBuf> => PathBuf, "FILE", KeyFiles,
        computed(key_file, "required");

    /// Serve Prometheus metrics on http://ADDR/metrics (HOST:PORT), which
    /// `memcastd status` also reads.
    metrics: Option<String> => Option<String>, "HOST:PORT", Restart,
        none();

    /// A second key file whose key is accepted (frames, peer requests) but
    /// never used to sign: how a cluster rolls to a new key without losing
    /// writes. Both files are read again on SIGHUP.
    accept_key_file: Option<PathBuf> => Option<PathBuf>, "FILE", KeyFiles,
        none();

    /// Encrypt the body (session id and data) of every frame this daemon
    /// seals (relayed, repaired, snapshots) with XChaCha20-Poly1305. Frames
    /// are authenticated either way; encrypted and plain frames are both
    /// accepted.
    #[arg(value_parser = parse_bool)]
    encrypt: Option<bool> => bool, "BOOL", KeyFiles,
        value(false);

    /// Frames from the group sealed longer ago than this (by the sender's
    /// clock) are dropped as replays. Keep above the worst clock skew between
    /// hosts.
    max_frame_age_ms: Option<u64> => u64, "MS", Live,
        value(60_000, min 1000);

    /// How many (origin, epoch) pairs replay and gap tracking keep; beyond it
    /// the longest-silent is forgotten.
    max_origins: Option<usize> => usize, "N", Live,
        value(10_000, min 16);

    /// Frames whose memcached key is longer are dropped (memcached's own
    /// limit is also the most allowed).
    max_key_length: Option<usize> => usize, "BYTES", Live,
        value(memcast_core::memcached_key::MAX_KEY_LEN);

    /// Take this host's PHP frames at ENDPOINT
    /// (unixgram:///run/memcast/publish.dgram, ipc:///run/memcast/publish.sock
    /// or tcp://127.0.0.1:PORT, matching memcast.publish) and send them to the
    /// group (--publish) as the host's one long-lived sender, with a replay
    /// ring and heartbeats.
    relay: Option<String> => Option<String>, "ENDPOINT", Restart,
        none();

    /// The group the relay sends to, on a port of its own that the other
    /// hosts subscribe to, e.g. epgm://eth0;239.192.1.1:5556.
    publish: Option<String> => Option<String>, "ENDPOINT", Restart,
        none();

    /// HOST:PORT: serve repairs (from the replay ring) and snapshots (for
    /// peers that resync) on this TCP address; requests must be signed with
    /// the key. tcp://ADDR:PORT: TCP mode, where there is no multicast: the
    /// relay sends this host's frames to every peer that subscribes here
    /// (--subscribe tcp://THIS-HOST:PORT on the peers). Repeatable: one of
    /// each.
    #[serde(deserialize_with = "one_or_more")]
    listen: Vec<String> => Listen, "HOST:PORT|tcp://ADDR:PORT", Restart,
        computed(listen, "none");

    /// The address peers reach --listen at, sent in heartbeats.
    advertise: Option<String> => Option<String>, "HOST:PORT", Restart,
        computed(advertise, "`--listen`, when it names a host");

    /// This host's name, sent in the relay's heartbeats: peers label its
    /// metrics with it (stable across restarts, where origin ids are not).
    host_name: Option<String> => String, "NAME", Restart,
        computed(host_name, "the system's host name");

    /// A peer memcastd's --listen address to refill from (warm-up at
    /// startup, after a memcached restart or evictions) and resync from when
    /// a gap cannot be repaired or this host falls behind. Repeatable; tried
    /// in order. Without any, the memcached is never known complete.
    peer: Vec<String> => Vec<String>, "HOST:PORT", Restart,
        none();

    /// Heartbeat interval of the relay, ms.
    heartbeat_ms: Option<u64> => u64, "MS", Restart,
        value(1000, min 10);

    /// Batching window of the relay, µs. When PHP hands over frames while
    /// the relay's last batch was taken less than this long ago, they wait
    /// out the window and then go out together, in one multicast message, so
    /// a busy relay sends once per window instead of once per frame. A frame
    /// after a quiet window goes at once (an idle host adds no delay). Kept
    /// short: until sent, a frame exists only on this host. 0 sends every
    /// frame as it comes. At most 100000.
    batch_us: Option<u64> => u64, "US", Restart,
        value(1000);

    /// Batching window for applying the group's frames, µs: as --batch-us,
    /// for frames from other hosts. They queue while the last batch was
    /// taken less than this long ago, then are applied together with one
    /// pipelined memcached round trip, so a receiver wakes once per window
    /// instead of once per frame. Longer than --batch-us costs no safety
    /// (these frames are in their sender's replay ring) but adds up to this
    /// much to replication lag under load. 0 applies every frame as it
    /// comes. At most 100000.
    apply_batch_us: Option<u64> => u64, "US", Restart,
        value(4000);

    /// Size of the relay's replay ring, MB.
    ring_mb: Option<usize> => usize, "MB", Restart,
        value(64, min 1);

    /// Repair requests sent per second at most; gaps beyond that are merged
    /// and wait.
    repairs_per_sec: Option<u32> => u32, "N", Restart,
        value(20, min 1);

    /// Shortest time between two full resyncs, seconds.
    resync_interval: Option<u64> => u64, "SECONDS", Restart,
        value(30);

    /// Every this many seconds, compare digests of what this host holds with
    /// each --peer and fetch the buckets that differ (anti-entropy: catches
    /// any loss nothing else noticed); 0 turns it off.
    anti_entropy_interval: Option<u64> => u64, "SECONDS", Restart,
        value(300);

    /// Bandwidth cap of the snapshots and anti-entropy transfers this host
    /// serves, Mbit/s; 0 for none.
    transfer_mbps: Option<u64> => u64, "MBPS", Restart,
        value(200);

    /// Warm up (a snapshot) from --peer at startup; the memcached is known
    /// complete only after one.
    #[arg(value_parser = parse_bool)]
    resync_on_start: Option<bool> => bool, "BOOL", Restart,
        computed(resync_on_start, "`true` with peers");

    /// A subscriber applying writes older than this declares itself out of
    /// sync and resyncs, ms. Assumes NTP-synced clocks.
    max_lag_ms: Option<u64> => u64, "MS", Live,
        value(10_000);

    /// PGM rate limit, kbit/s (ZMQ_RATE).
    pgm_rate_kbps: Option<i32> => i32, "KBPS", Restart,
        value(BusOptions::default().rate_kbps);

    /// PGM recovery window, ms (ZMQ_RECOVERY_IVL).
    pgm_recovery_ms: Option<i32> => i32, "MS", Restart,
        value(BusOptions::default().recovery_ms);

    /// Largest PGM packet, bytes, IP and UDP headers included
    /// (ZMQ_MULTICAST_MAXTPDU). 1500 fits an Ethernet MTU. On a network of
    /// jumbo frames (MTU 9000) set 9000: a 2 KB session, or a batch of
    /// several, then travels in one packet, which costs the relay one send
    /// and every receiver one wake-up. Larger than the network's MTU works
    /// too (IP fragments it) but a lost fragment loses the whole packet.
    /// Every host of a group must give the same value. 576 to 65535.
    pgm_max_tpdu: Option<i32> => i32, "BYTES", Restart,
        value(BusOptions::default().max_tpdu);

    /// Kernel receive buffer, bytes (ZMQ_RCVBUF).
    rcvbuf: Option<i32> => i32, "BYTES", Restart,
        value(BusOptions::default().rcvbuf);

    /// Frames queued in ZeroMQ before it drops (ZMQ_RCVHWM).
    rcvhwm: Option<i32> => i32, "FRAMES", Restart,
        value(BusOptions::default().rcvhwm);

    /// Frames the relay queues for sending before ZeroMQ drops (ZMQ_SNDHWM;
    /// a PUB socket drops silently, the ring and repairs cover it).
    sndhwm: Option<i32> => i32, "FRAMES", Restart,
        value(100_000);

    /// Largest session value accepted in a frame, bytes.
    max_value_bytes: Option<usize> => usize, "BYTES", Restart,
        value(memcast_core::frame::DEFAULT_MAX_VALUE_LEN);

    /// The relay compresses (LZ4) the value of every frame it sends on of at
    /// least this many bytes, when that makes it smaller: fewer multicast
    /// packets per write. 0: never. Receivers inflate whatever comes
    /// compressed, whatever their own setting.
    compress_threshold: Option<usize> => usize, "BYTES", Restart,
        value(1024);

    /// Frames held while memcached is unreachable, then applied when it is
    /// back; beyond this the oldest are dropped and counted.
    backlog: Option<usize> => usize, "FRAMES", Live,
        value(100_000);

    /// Connect timeout to memcached, ms.
    connect_timeout_ms: Option<u64> => u64, "MS", Restart,
        value(100);

    /// Timeout of one memcached command, ms.
    io_timeout_ms: Option<u64> => u64, "MS", Restart,
        value(1000);

    /// How often counters are logged, seconds; 0 logs them only at exit.
    stats_interval: Option<u64> => u64, "SECONDS", Live,
        value(60);

    /// error, warn, info, debug or trace.
    log_level: Option<String> => String, "LEVEL", Live,
        value("info".into());
}

/// Where `--listen` serves: repairs and snapshots (HOST:PORT), and in TCP
/// mode the relay's fan-out (tcp://ADDR:PORT).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listen {
    pub repairs: Option<String>,
    pub fanout: Option<String>,
}

impl Settings {
    /// Flags over the file over the defaults, then each setting checked and
    /// the settings checked against each other. Every error names the flag.
    pub fn resolve(cli: DaemonArgs, file: FileSettings) -> Result<Settings, ConfigError> {
        let settings = Settings::from_given(&cli.over(file))?;
        settings.check()?;
        Ok(settings)
    }

    pub fn timeouts(&self) -> memcast_core::Timeouts {
        memcast_core::Timeouts {
            connect: std::time::Duration::from_millis(self.connect_timeout_ms),
            io: std::time::Duration::from_millis(self.io_timeout_ms),
        }
    }

    /// The ZeroMQ options of the subscriber and the relay's publishers.
    pub fn bus(&self) -> BusOptions {
        BusOptions {
            rate_kbps: self.pgm_rate_kbps,
            recovery_ms: self.pgm_recovery_ms,
            rcvbuf: self.rcvbuf,
            rcvhwm: self.rcvhwm,
            sndhwm: self.sndhwm,
            max_tpdu: self.pgm_max_tpdu,
            ..BusOptions::default()
        }
    }

    pub fn ring_bytes(&self) -> usize {
        self.ring_mb * 1024 * 1024
    }
}

fn subscriptions(given: &DaemonArgs) -> Result<Vec<String>, ConfigError> {
    if given.subscribe.is_empty() {
        return Err(invalid(
            "nothing to subscribe to: give --subscribe ENDPOINT (e.g. \"epgm://eth0;239.192.1.1:5555\")",
        ));
    }
    let own = given.publish.as_deref();
    let mut out: Vec<String> = Vec::new();
    for given_endpoint in &given.subscribe {
        let expanded = memcast_core::endpoint::expand_ports(given_endpoint)
            .map_err(|e| invalid(format!("--subscribe {given_endpoint}: {e}")))?;
        let range = expanded.len() > 1 || expanded[0] != *given_endpoint;
        for endpoint in expanded {
            check_endpoint("--subscribe", &endpoint)?;
            // A range leaves out this host's own port: its relay's packets
            // never come back (no multicast loop), and a second socket on
            // that port could take the NAKs meant for the relay's. A port
            // named on its own is kept: one port shared by every host (each
            // publishing and subscribing there) is a setup that works too.
            let own_in_range = range && Some(endpoint.as_str()) == own;
            if !own_in_range && !out.contains(&endpoint) {
                out.push(endpoint);
            }
        }
    }
    if out.is_empty() {
        return Err(invalid(
            "--subscribe gives a port range holding only this host's own --publish port: subscribe to the other hosts' ports too (e.g. \"epgm://eth0;239.192.1.1:5555-5562\", every host publishing on its own port of the range)",
        ));
    }
    Ok(out)
}

fn key_file(given: &DaemonArgs) -> Result<PathBuf, ConfigError> {
    given.key_file.clone().ok_or_else(|| {
        invalid("no key file: give --key-file FILE (frames are only ever applied when signed with the cluster key)")
    })
}

fn listen(given: &DaemonArgs) -> Result<Listen, ConfigError> {
    let (fanouts, repairs): (Vec<&String>, Vec<&String>) =
        given.listen.iter().partition(|l| l.contains("://"));
    if repairs.len() > 1 || fanouts.len() > 1 {
        return Err(invalid(
            "--listen: at most one HOST:PORT (repairs) and one tcp://ADDR:PORT (TCP fan-out)",
        ));
    }
    Ok(Listen {
        repairs: repairs.first().map(|l| l.to_string()),
        fanout: fanouts.first().map(|l| l.to_string()),
    })
}

/// Given, or `--listen` when it names a host peers can reach.
fn advertise(given: &DaemonArgs) -> Result<Option<String>, ConfigError> {
    Ok(given.advertise.clone().or(listen(given)?
        .repairs
        .filter(|l| !l.starts_with("0.0.0.0:") && !l.starts_with("[::]:"))))
}

fn host_name(given: &DaemonArgs) -> Result<String, ConfigError> {
    Ok(given.host_name.clone().unwrap_or_else(system_host_name))
}

fn resync_on_start(given: &DaemonArgs) -> Result<bool, ConfigError> {
    Ok(given.resync_on_start.unwrap_or(!given.peer.is_empty()))
}

/// The kernel's host name (`uname -n`), or "localhost" if it cannot be read.
fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_file, Cli};
    use clap::Parser;

    const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

    fn read(path: &str) -> String {
        std::fs::read_to_string(format!("{REPO}/{path}")).unwrap()
    }

    fn cli(args: &[&str]) -> DaemonArgs {
        Cli::try_parse_from(std::iter::once("memcastd").chain(args.iter().copied()))
            .unwrap()
            .daemon
    }

    fn base() -> Settings {
        Settings::resolve(
            cli(&["--key-file", "/k", "--subscribe", "tcp://127.0.0.1:1"]),
            FileSettings::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_subscribed_port_range_is_every_port_but_this_hosts_own() {
        let resolve = |args: &[&str]| {
            let mut all = vec!["--key-file", "/k"];
            all.extend(args);
            Settings::resolve(cli(&all), FileSettings::default())
        };
        let s = resolve(&[
            "--subscribe",
            "epgm://eth0;239.192.1.1:5555-5558",
            "--subscribe",
            "epgm://eth0;239.192.1.1:5556",
            "--relay",
            "unixgram:///run/memcast/publish.dgram",
            "--publish",
            "epgm://eth0;239.192.1.1:5557",
        ])
        .unwrap();
        assert_eq!(
            s.subscribe,
            [
                "epgm://eth0;239.192.1.1:5555",
                "epgm://eth0;239.192.1.1:5556",
                "epgm://eth0;239.192.1.1:5558"
            ]
        );
        // One port shared by every host: named on its own, it is kept.
        let shared = resolve(&[
            "--subscribe",
            "epgm://eth0;239.192.1.1:5555",
            "--relay",
            "unixgram:///run/memcast/publish.dgram",
            "--publish",
            "epgm://eth0;239.192.1.1:5555",
        ])
        .unwrap();
        assert_eq!(shared.subscribe, ["epgm://eth0;239.192.1.1:5555"]);
        let only_own = resolve(&[
            "--subscribe",
            "epgm://eth0;239.192.1.1:5557-5557",
            "--relay",
            "unixgram:///run/memcast/publish.dgram",
            "--publish",
            "epgm://eth0;239.192.1.1:5557",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            only_own.contains("only this host's own --publish"),
            "{only_own}"
        );
        let bad = resolve(&["--subscribe", "epgm://eth0;239.192.1.1:5558-5555"])
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("--subscribe epgm://eth0;239.192.1.1:5558-5555: bad port range"),
            "{bad}"
        );
    }

    #[test]
    fn defaults_are_the_declared_ones() {
        let s = base();
        assert_eq!(s.memcached, "127.0.0.1:11211");
        assert_eq!(s.max_frame_age_ms, 60_000);
        assert_eq!(s.ring_bytes(), 64 << 20);
        let sndhwm = 100_000;
        assert_eq!(
            s.bus(),
            BusOptions {
                sndhwm,
                ..BusOptions::default()
            }
        );
        assert_eq!(s.log_level, "info");
        assert!(!s.resync_on_start, "no peers: no warm-up at start");
        let doc = |key| declared().into_iter().find(|d| d.key == key).unwrap();
        assert_eq!(doc("memcached").default, "`127.0.0.1:11211`");
        assert_eq!(doc("rcvbuf").default, "`8388608`");
        assert_eq!(doc("metrics").default, "none");
        assert_eq!(doc("key_file").default, "required");
    }

    #[test]
    fn minimums_raise_smaller_values() {
        let s = Settings::resolve(
            cli(&[
                "--key-file",
                "/k",
                "--subscribe",
                "tcp://127.0.0.1:1",
                "--max-frame-age-ms",
                "5",
                "--ring-mb",
                "0",
                "--heartbeat-ms",
                "1",
            ]),
            FileSettings::default(),
        )
        .unwrap();
        assert_eq!(
            (s.max_frame_age_ms, s.ring_mb, s.heartbeat_ms),
            (1000, 1, 10)
        );
    }

    #[test]
    fn help_shows_each_default_once_declared() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("The local memcached to fill [default: 127.0.0.1:11211]"));
        assert!(help.contains("[default: true with peers]"), "{help}");
    }

    #[test]
    fn every_flag_is_a_file_key_and_a_declared_setting() {
        use clap::CommandFactory;
        let keys: Vec<&str> = declared().iter().map(|d| d.key).collect();
        let cmd = Cli::command();
        let flags: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|f| !["help", "version", "config"].contains(f))
            .map(|f| f.replace('-', "_"))
            .collect();
        assert_eq!(flags, keys);
        for key in keys {
            // Every key parses as a file key (its type aside).
            let err = parse_file(&format!("{key} = {{}}\n")).unwrap_err();
            assert!(!err.to_string().contains("unknown field"), "{key}: {err}");
        }
    }

    /// A reload takes exactly the live and key-file settings and names every
    /// other one that changed.
    #[test]
    fn a_reload_classifies_every_setting_as_declared() {
        let a = base();
        for d in declared() {
            let flag = d.flag();
            let value = match d.value_name {
                "BOOL" => "yes",
                "LEVEL" => "debug",
                "FILE" => "/other",
                "NAME" => "other-host",
                "ENDPOINT" if d.key == "publish" => continue,
                "ENDPOINT" if d.key == "relay" => continue,
                "ENDPOINT" => "tcp://127.0.0.1:9",
                "HOST:PORT" | "HOST:PORT|tcp://ADDR:PORT" => "127.0.0.1:9",
                "BYTES" if d.key == "pgm_max_tpdu" => "9000",
                _ => "77",
            };
            let mut args = vec!["--key-file", "/k", "--subscribe", "tcp://127.0.0.1:1"];
            if d.key == "key_file" || d.key == "subscribe" {
                args.truncate(if d.key == "key_file" { 0 } else { 2 });
                if d.key == "key_file" {
                    args.extend(["--subscribe", "tcp://127.0.0.1:1"]);
                }
            }
            args.extend([flag.as_str(), value]);
            let b = Settings::resolve(cli(&args), FileSettings::default()).unwrap();
            assert_ne!(a, b, "{flag} {value} changed nothing");
            let restart = a.needing_restart(&b);
            let mut taken = a.clone();
            let changed = taken.take_reloadable(&b);
            match d.reload {
                Reload::Restart => {
                    assert!(restart.contains(&d.key), "{flag}: {restart:?}");
                    assert!(changed.is_empty(), "{flag}: {changed:?}");
                }
                Reload::Live => {
                    assert!(restart.is_empty(), "{flag}: {restart:?}");
                    assert_eq!(taken, b, "{flag} not taken");
                    assert!(
                        changed[0].starts_with(&format!("{} ", d.key)),
                        "{changed:?}"
                    );
                }
                Reload::KeyFiles => {
                    assert!(restart.is_empty(), "{flag}: {restart:?}");
                    assert_eq!(taken, b, "{flag} not taken");
                    assert!(changed.is_empty(), "{flag}: {changed:?}");
                }
            }
        }
    }

    /// `packaging/memcastd.toml`: every line `#key = value` is a declared
    /// key whose value parses, every setting is there, and a key is in a
    /// paragraph that says "Reloadable" exactly when a SIGHUP changes it.
    #[test]
    fn the_shipped_sample_config_agrees_with_the_declaration() {
        let sample = read("packaging/memcastd.toml");
        let declared = declared();
        let mut seen = Vec::new();
        for paragraph in sample.split("\n\n") {
            let reloadable = paragraph.contains("Reloadable");
            for line in paragraph.lines() {
                let setting = line.trim_start_matches('#');
                let Some((key, _)) = setting.split_once(" = ") else {
                    continue;
                };
                if !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    continue; // prose
                }
                let d = declared
                    .iter()
                    .find(|d| d.key == key)
                    .unwrap_or_else(|| panic!("the sample sets {key}, which is no setting"));
                parse_file(setting).unwrap_or_else(|e| panic!("the sample's {setting}: {e}"));
                assert_eq!(
                    reloadable,
                    d.reload != Reload::Restart,
                    "the sample says {key} is {}reloadable",
                    if reloadable { "" } else { "not " }
                );
                seen.push(key);
            }
        }
        for d in &declared {
            assert!(seen.contains(&d.key), "the sample lacks {}", d.key);
        }
    }

    /// The README's memcastd table has one row per setting (and --config),
    /// each with its flag, value name and default as declared; its reload
    /// paragraph names every live setting.
    #[test]
    fn the_readmes_reference_agrees_with_the_declaration() {
        let readme = read("README.md");
        let section = readme.split("## memcastd reference").nth(1).unwrap();
        let rows: Vec<&str> = section
            .split("\n```")
            .next()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("| `--"))
            .collect();
        let declared = declared();
        for d in &declared {
            // A `|` cannot stand in a Markdown table: the first spelling.
            let value_name = d.value_name.split('|').next().unwrap();
            let row = format!("| `{} {value_name}` | {} |", d.flag(), d.default);
            assert!(
                rows.iter().any(|r| r.starts_with(&row)),
                "README.md lacks the row starting {row}"
            );
        }
        assert_eq!(
            rows.len(),
            declared.len() + 1,
            "one row per setting and --config"
        );
        let reload = readme
            .split("\n\n")
            .find(|p| p.starts_with("`systemctl reload memcastd`"))
            .unwrap();
        for d in declared.iter().filter(|d| d.reload == Reload::Live) {
            assert!(reload.contains(&format!("`{}`", d.key)), "{}", d.key);
        }
    }
}
