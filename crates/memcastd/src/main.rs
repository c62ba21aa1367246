//! memcastd: the companion daemon on every host. It subscribes to the memcast
//! group and applies every authenticated session write to the local
//! memcached, only if newer than what it holds; notices and repairs what the
//! network lost; and can be the host's relay, the one long-lived sender for
//! its PHP workers.
//!
//! Layout: `config` (flags and TOML, declared once), `daemon` (the receive,
//! relay and apply loop), `origins` (gap detection), `repair` (the repair and
//! resync worker), `peer_server` (repairs and snapshots for peers), `ring`
//! (the relay's replay ring), `counters`, `verify` (the convergence check).

use memcastd::{config, daemon, keys, verify};

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
        Some(Command::Keygen { file }) => {
            return match SharedKey::generate(file) {
                Ok(key) => {
                    println!(
                        "wrote a new key to {} (key id {:08x})",
                        file.display(),
                        key.id()
                    );
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
    let settings = match Settings::resolve(args, file) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    init_logging(&settings.log_level);
    let keys = match keys::KeyStore::load(
        settings.key_file.clone(),
        settings.accept_key_file.clone(),
        settings.encrypt,
    ) {
        Ok(k) => k,
        Err(e) => return fail(&e),
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
    match daemon.run(stop, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("memcastd: error: {message}");
    ExitCode::from(2)
}

/// Plain lines on stderr (journald adds the timestamp and unit).
fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("memcastd={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}
