//! memcastd's command line (the daemon's flags and the subcommands), the
//! TOML file given with `--config`, and the checks a resolved
//! [`Settings`] must pass. The settings themselves are declared once, in
//! [`crate::settings`]: flags override the file; the file overrides the
//! defaults.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

pub use crate::settings::{DaemonArgs, FileSettings, Listen, Settings};

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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// A setting's value, or settings that do not go together: the message
    /// names the flag.
    #[error("{0}")]
    Invalid(String),
}

pub fn load_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

pub fn parse_file(text: &str) -> Result<FileSettings, toml::de::Error> {
    toml::from_str(text)
}

pub(crate) fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// A boolean flag spelled as php.ini spells them (memcast.encrypt=yes).
pub fn parse_bool(s: &str) -> Result<bool, NotABool> {
    memcast_core::ini::parse_bool(s)
        .filter(|_| !s.trim().is_empty())
        .ok_or_else(|| NotABool(s.to_owned()))
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected yes/no, on/off, true/false or 1/0")]
pub struct NotABool(String);

/// An endpoint flag checked part by part: libzmq says only "Invalid
/// argument" for any mistake.
pub(crate) fn check_endpoint(flag: &str, endpoint: &str) -> Result<(), ConfigError> {
    if let Some(problem) = memcast_core::endpoint::problem(endpoint) {
        return Err(invalid(format!("{flag} {endpoint}: {problem}")));
    }
    memcast_bus::check_endpoint(endpoint).map_err(|e| invalid(format!("{flag}: {e}")))?;
    if flag != "--relay" && memcast_bus::datagram::is_datagram(endpoint) {
        return Err(invalid(format!(
            "{flag} {endpoint}: unixgram:// is only where PHP hands frames to the relay (--relay)"
        )));
    }
    Ok(())
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

/// The longest batching window, µs (`--batch-us`, `--apply-batch-us`).
pub const MAX_BATCH_US: u64 = 100_000;

impl Settings {
    /// What each setting's own resolution cannot see: addresses and
    /// endpoints checked part by part, and the settings that must go
    /// together. Each message names the flag.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        memcast_core::ServerAddr::parse(&self.memcached)
            .map_err(|e| invalid(format!("--memcached: {e}")))?;
        self.check_relay()?;
        let name = &self.host_name;
        if name.is_empty() || name.len() > 64 || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(invalid(format!(
                "--host-name {name:?}: expected 1 to 64 bytes without spaces or control characters"
            )));
        }
        for p in &self.peer {
            check_daemon_addr("--peer", p)?;
        }
        if let Some(l) = &self.listen.repairs {
            check_daemon_addr("--listen", l)?;
        }
        if let Some(a) = &self.advertise {
            check_daemon_addr("--advertise", a)?;
        }
        if let Some(f) = &self.listen.fanout {
            check_endpoint("--listen", f)?;
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return Err(invalid(format!(
                "--log-level {:?}: expected error, warn, info, debug or trace",
                self.log_level
            )));
        }
        if let Some(m) = &self.metrics {
            check_daemon_addr("--metrics", m)?;
        }
        let tpdu = memcast_bus::MIN_MAX_TPDU..=memcast_bus::MAX_MAX_TPDU;
        if !tpdu.contains(&self.pgm_max_tpdu) {
            return Err(invalid(format!(
                "--pgm-max-tpdu {}: must be {} to {} bytes (a PGM packet, IP header included)",
                self.pgm_max_tpdu,
                tpdu.start(),
                tpdu.end()
            )));
        }
        for (flag, us) in [
            ("--batch-us", self.batch_us),
            ("--apply-batch-us", self.apply_batch_us),
        ] {
            if us > MAX_BATCH_US {
                return Err(invalid(format!(
                    "{flag} {us}: at most {MAX_BATCH_US} (a batching window of 0.1 s; frames wait that long)"
                )));
            }
        }
        let most = memcast_core::memcached_key::MAX_KEY_LEN;
        if self.max_key_length == 0 || self.max_key_length > most {
            return Err(invalid(format!(
                "--max-key-length {}: must be 1 to {most} (memcached's limit)",
                self.max_key_length
            )));
        }
        Ok(())
    }

    /// The relay takes from PHP and sends to --publish, to a TCP fan-out
    /// (--listen tcp://), or both: each needs the other side.
    fn check_relay(&self) -> Result<(), ConfigError> {
        let (relay, publish, fanout) = (&self.relay, &self.publish, &self.listen.fanout);
        if let Some(f) = fanout {
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
        if let Some(r) = relay {
            check_endpoint("--relay", r)?;
            if publish.is_none() && fanout.is_none() {
                return Err(invalid(
                    "--relay needs --publish (the group to send this host's frames to) or --listen tcp://ADDR:PORT (TCP mode)",
                ));
            }
        }
        if let Some(p) = publish {
            check_endpoint("--publish", p)?;
            if relay.is_none() {
                return Err(invalid(
                    "--publish is what the relay sends to: give --relay too",
                ));
            }
        }
        Ok(())
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
        assert_eq!(s.bus().rate_kbps, 5000);
        assert_eq!(
            s.bus().recovery_ms,
            memcast_bus::BusOptions::default().recovery_ms
        );
        assert_eq!(s.peer, ["10.0.0.2:7711"]);
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
    fn the_core_and_the_bus_agree_where_big_frames_go() {
        assert_eq!(
            memcast_core::endpoint::BIG_FRAME_SUFFIX,
            memcast_bus::datagram::BIG_FRAME_SUFFIX
        );
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
        let dgram = "unixgram:///tmp/r.dgram";
        let pgm = "epgm://eth0;239.1.1.1:5555";
        assert!(with(&["--relay", dgram, "--publish", pgm]).is_ok());
        let err = with(&["--relay", dgram, "--publish", dgram]).unwrap_err();
        assert!(err.to_string().contains("only where PHP hands"), "{err}");
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
    fn a_batching_window_over_a_tenth_of_a_second_is_refused_by_name() {
        let sub = ["--subscribe", "tcp://127.0.0.1:1"];
        for flag in ["--batch-us", "--apply-batch-us"] {
            let e = error_of(&[&sub[..], &[flag, "100001"]].concat());
            assert_eq!(
                e,
                format!("{flag} 100001: at most 100000 (a batching window of 0.1 s; frames wait that long)")
            );
        }
        let s = Settings::resolve(
            cli(&[
                &["--key-file", "/k"][..],
                &sub[..],
                &["--batch-us", "100000", "--apply-batch-us", "0"],
            ]
            .concat()),
            FileSettings::default(),
        )
        .unwrap();
        assert_eq!((s.batch_us, s.apply_batch_us), (100_000, 0));
    }

    #[test]
    fn the_pgm_packet_size_is_checked_and_reaches_the_bus() {
        let sub = ["--subscribe", "tcp://127.0.0.1:1"];
        for bad in ["100", "70000"] {
            let e = error_of(&[&sub[..], &["--pgm-max-tpdu", bad]].concat());
            assert_eq!(
                e,
                format!("--pgm-max-tpdu {bad}: must be 576 to 65535 bytes (a PGM packet, IP header included)")
            );
        }
        let s = Settings::resolve(
            cli(&[
                &["--key-file", "/k"][..],
                &sub[..],
                &["--pgm-max-tpdu", "9000"],
            ]
            .concat()),
            FileSettings::default(),
        )
        .unwrap();
        assert_eq!(s.bus().max_tpdu, 9000);
        let s = Settings::resolve(
            cli(&[&["--key-file", "/k"][..], &sub[..]].concat()),
            FileSettings::default(),
        )
        .unwrap();
        assert_eq!(s.bus().max_tpdu, 1500, "ZeroMQ's default, an Ethernet MTU");
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
        let err = parse_file("memcachd = \"x\"\n").unwrap_err().to_string();
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
