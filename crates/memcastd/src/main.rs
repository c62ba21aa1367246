//! memcastd: the companion daemon on every host (see the library's
//! `lib.rs` for what it does and where each part lives). This binary parses
//! the command line, runs a subcommand or starts the daemon, and turns any
//! error into one line on stderr and exit status 2.

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use memcast_core::SharedKey;
use memcastd::config::{self, Cli, Command, ConfigError, DaemonArgs, FileSettings, Settings};
use memcastd::{daemon, key_store, status, verify};

/// Where `memcastd status` looks when neither --metrics nor a config says.
const DEFAULT_METRICS: &str = "127.0.0.1:9477";

type Failure = Box<dyn Error>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ran = match cli.command {
        Some(command) => run_command(command),
        None => run_daemon(cli.daemon),
    };
    ran.unwrap_or_else(|e| {
        eprintln!("memcastd: error: {e}");
        ExitCode::from(2)
    })
}

fn run_command(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Verify(args) => Ok(match verify::run(&args)? {
            true => ExitCode::SUCCESS,
            false => ExitCode::from(1),
        }),
        Command::Status { metrics, config } => {
            let (addr, source) = metrics_address(metrics, &config)?;
            Ok(ExitCode::from(status::run_from(&addr, &source) as u8))
        }
        Command::Keygen { file, force } => keygen(&file, force),
        Command::SessionKey {
            key_file,
            prefix,
            id,
        } => {
            let key = SharedKey::from_file(&key_file)?;
            let seal = memcast_core::session_seal::SessionSeal::new(&memcast_core::Keyring::new(
                key, None, false,
            ));
            let key = seal.memcached_key(prefix.as_bytes(), id.as_bytes());
            println!("{}", String::from_utf8_lossy(&key));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--metrics`, else the config file's `metrics`, else the default; and
/// where it came from, for the hint when nothing answers there.
fn metrics_address(
    flag: Option<String>,
    config: &Path,
) -> Result<(String, status::MetricsSource), ConfigError> {
    Ok(match flag {
        Some(a) => (a, status::MetricsSource::Flag),
        None if config.exists() => match config::load_file(config)?.metrics {
            Some(a) => (a, status::MetricsSource::Config(config.to_owned())),
            None => (
                DEFAULT_METRICS.into(),
                status::MetricsSource::Default(Some(config.to_owned())),
            ),
        },
        None => (DEFAULT_METRICS.into(), status::MetricsSource::Default(None)),
    })
}

fn keygen(file: &Path, force: bool) -> Result<ExitCode, Failure> {
    // A readable key replaced hands on its session-id key.
    let kept = force && SharedKey::from_file(file).is_ok();
    let key = if force {
        SharedKey::generate_replacing(file)?
    } else {
        SharedKey::generate(file)?
    };
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
    Ok(ExitCode::SUCCESS)
}

/// The settings from `--config` (if given) and the flags.
fn resolve_settings(args: &DaemonArgs) -> Result<Settings, ConfigError> {
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => FileSettings::default(),
    };
    Settings::resolve(args.clone(), file)
}

fn run_daemon(args: DaemonArgs) -> Result<ExitCode, Failure> {
    let settings = resolve_settings(&args)?;
    let set_level = init_logging(&settings.log_level);
    // Before ZeroMQ opens any PGM socket.
    memcastd::pgm_log::install();
    let keys = key_store::KeyStore::load(
        settings.key_file.clone(),
        settings.accept_key_file.clone(),
        settings.encrypt,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let signals = [
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGHUP, &reload),
    ];
    for (sig, flag) in signals {
        signal_hook::flag::register(sig, Arc::clone(flag))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    let mut daemon = daemon::Daemon::new(settings, keys)?;
    daemon.set_reloader(daemon::Reloader {
        settings: Box::new(move || resolve_settings(&args)),
        log_level: set_level,
    });
    daemon.run(stop, reload)?;
    Ok(ExitCode::SUCCESS)
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
