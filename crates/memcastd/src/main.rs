//! memcastd: the companion daemon on every host. It subscribes to the memcast
//! group and applies every authenticated session write to the local
//! memcached, only if newer than what it holds; notices and repairs what the
//! network lost; and can be the host's relay, the one long-lived sender for
//! its PHP workers.
//!
//! Layout: `config` (flags and TOML, declared once), `daemon` (the receive,
//! relay and apply loop), `completeness` (whether the memcached is known
//! complete: the warm sentinel), `origins` (gap detection, silent origins),
//! `repair` (the repair, catch-up, resync and warm-up worker), `peer_server`
//! (repairs and snapshots for peers), `ring` (the relay's replay ring),
//! `counters`, `verify` (the convergence check).

use memcastd::{config, daemon, keys, status, verify};

/// Where `memcastd status` looks when neither --metrics nor a config says.
const DEFAULT_METRICS: &str = "127.0.0.1:9477";

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use memcast_core::SharedKey;

use memcastd::config::{Cli, Command, FileSettings, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Verify(args)) => {
            return match verify::run(args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => fail(&e),
            };
        }
        Some(Command::Status { metrics, config }) => {
            let (addr, source) = match metrics {
                Some(a) => (a.clone(), status::MetricsSource::Flag),
                None if config.exists() => match config::load_file(config) {
                    Ok(f) => match f.metrics {
                        Some(a) => (a, status::MetricsSource::Config(config.clone())),
                        None => (
                            DEFAULT_METRICS.into(),
                            status::MetricsSource::Default(Some(config.clone())),
                        ),
                    },
                    Err(e) => return fail(&e.to_string()),
                },
                None => (DEFAULT_METRICS.into(), status::MetricsSource::Default(None)),
            };
            return ExitCode::from(status::run_from(&addr, &source) as u8);
        }
        Some(Command::Keygen { file, force }) => {
            // A readable key replaced hands on its session-id key.
            let kept = *force && SharedKey::from_file(file).is_ok();
            let made = if *force {
                SharedKey::generate_replacing(file)
            } else {
                SharedKey::generate(file)
            };
            return match made {
                Ok(key) => {
                    println!(
                        "wrote a new key to {} (key id {:08x}){}",
                        file.display(),
                        key.id(),
                        if kept {
                            "; it keeps the replaced key's session-id key, so sealed sessions keep their memcached keys"
                        } else {
                            ""
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            };
        }
        Some(Command::SessionKey {
            key_file,
            prefix,
            id,
        }) => {
            return match SharedKey::from_file(key_file) {
                Ok(key) => {
                    let seal = memcast_core::session_seal::SessionSeal::new(
                        &memcast_core::Keyring::new(key, None, false),
                    );
                    let key = seal.memcached_key(prefix.as_bytes(), id.as_bytes());
                    println!("{}", String::from_utf8_lossy(&key));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            };
        }
        None => {}
    }
    let args = cli.daemon;
    let file = match &args.config {
        Some(path) => match config::load_file(path) {
            Ok(f) => f,
            Err(e) => return fail(&e.to_string()),
        },
        None => FileSettings::default(),
    };
    let settings = match Settings::resolve(args.clone(), file) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let set_level = init_logging(&settings.log_level);
    // Before ZeroMQ opens any PGM socket.
    memcastd::pgm_log::install();
    let keys = match keys::KeyStore::load(
        settings.key_file.clone(),
        settings.accept_key_file.clone(),
        settings.encrypt,
    ) {
        Ok(k) => k,
        Err(e) => return fail(&e.to_string()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let signals = [
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGHUP, &reload),
    ];
    for (sig, flag) in signals {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            return fail(&format!("cannot handle signal {sig}: {e}"));
        }
    }
    let mut daemon = match daemon::Daemon::new(settings, keys) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    daemon.set_reloader(daemon::Reloader {
        settings: Box::new(move || {
            let file = match &args.config {
                Some(path) => config::load_file(path).map_err(|e| e.to_string())?,
                None => FileSettings::default(),
            };
            Settings::resolve(args.clone(), file).map_err(|e| e.to_string())
        }),
        log_level: set_level,
    });
    match daemon.run(stop, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("memcastd: error: {message}");
    ExitCode::from(2)
}

/// Plain lines on stderr (journald adds the timestamp and unit). Returns how
/// to change the level later (SIGHUP); `RUST_LOG`, when set, wins.
fn init_logging(level: &str) -> Box<dyn Fn(&str) + Send> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let from_env = std::env::var("RUST_LOG").is_ok();
    let filter = move |level: &str| {
        if from_env {
            EnvFilter::from_default_env()
        } else {
            EnvFilter::new(format!("memcastd={level}"))
        }
    };
    let (layer, handle) = reload::Layer::new(filter(level));
    // Under systemd (stderr is the journal), journald stamps each line
    // itself: no second timestamp.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let lines = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(layer);
    if journal {
        registry.with(lines.without_time()).init();
    } else {
        registry.with(lines).init();
    }
    Box::new(move |level: &str| {
        let _ = handle.modify(|f| *f = filter(level));
    })
}
