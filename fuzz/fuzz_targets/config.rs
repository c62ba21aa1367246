//! The configuration parsers: memcastd's TOML file (then resolved as the
//! daemon would), php.ini values as the extension reads them, and
//! `session.save_path` server lists. Errors are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memcast_core::ini::{self, ExtensionConfig};
use memcast_core::ServerAddr;
use memcastd::config::{self, DaemonArgs, Settings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = config::parse_file(text) {
        let _ = Settings::resolve(DaemonArgs::default(), file);
    }
    let _ = ServerAddr::parse_list(text);
    let _ = ini::parse_size(text);
    let _ = ini::parse_interval(text);
    let _ = ini::parse_bool(text);
    // Every php.ini setting at once: the n-th line is the n-th setting.
    let lines: Vec<&str> = text.lines().collect();
    let _ = ExtensionConfig::from_ini(|name| {
        let i = ini::SETTINGS
            .iter()
            .position(|s| s.name == name)
            .unwrap_or(0);
        lines
            .get(i)
            .map(|s| s.to_string())
            .unwrap_or_else(|| ini::SETTINGS[i].default.to_string_lossy().into_owned())
    });
});
