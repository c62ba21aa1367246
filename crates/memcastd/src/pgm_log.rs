//! OpenPGM's own messages ("Warn: Interface lo reports as a loopback
//! device.") through memcastd's log, at their level, instead of raw lines on
//! stdout outside the log format.
//!
//! libpgm (the one libzmq is linked with, `libpgm-5.3.so.0` in Debian) writes
//! its messages to stdout unless a handler is installed with
//! `pgm_log_set_handler`, which it keeps across `pgm_init`. This is memcastd's
//! only foreign call, kept to this module.

use std::ffi::{c_char, c_int, c_void, CStr};

/// `pgm_log_func_t`: level, NUL-terminated message, the closure given.
type PgmLogFn = extern "C" fn(c_int, *const c_char, *mut c_void);

#[link(name = "pgm-5.3")]
extern "C" {
    /// Returns the previous handler. Without a ZeroMQ PGM socket yet it
    /// only stores the pointers (no lock is taken before `pgm_init`).
    fn pgm_log_set_handler(handler: Option<PgmLogFn>, closure: *mut c_void) -> Option<PgmLogFn>;
}

/// Routes libpgm's messages to `tracing`. Call once at start-up, before any
/// PGM socket exists (libpgm's threads may call the handler from then on).
pub fn install() {
    // SAFETY: the handler is a plain `extern "C"` function that lives for the
    // whole program and never unwinds into C (see `on_message`); the closure
    // is unused (null). Called once, on the main thread, before ZeroMQ
    // created any PGM socket, so no libpgm thread reads the pointers meanwhile.
    unsafe {
        pgm_log_set_handler(Some(on_message), std::ptr::null_mut());
    }
}

/// libpgm's levels (`PGM_LOG_LEVEL_*`, messages.h).
const PGM_LOG_LEVEL_NORMAL: c_int = 3;
const PGM_LOG_LEVEL_WARNING: c_int = 4;

extern "C" fn on_message(level: c_int, message: *const c_char, _closure: *mut c_void) {
    if message.is_null() {
        return;
    }
    // SAFETY: libpgm passes a NUL-terminated buffer (its own stack buffer of
    // 1024 bytes) valid for the duration of this call; it is copied here.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    // A panic must not unwind into libpgm.
    let _ = std::panic::catch_unwind(|| log(level, &text));
}

/// One of libpgm's messages, its level word ("Warn: ") dropped: the log
/// line has its own.
pub fn log(level: c_int, text: &str) {
    let message = text.split_once(": ").map_or(text, |(_, m)| m);
    match level {
        l if l < PGM_LOG_LEVEL_NORMAL => {
            tracing::debug!(target: "memcastd::pgm", "OpenPGM: {message}")
        }
        PGM_LOG_LEVEL_NORMAL => tracing::info!(target: "memcastd::pgm", "OpenPGM: {message}"),
        PGM_LOG_LEVEL_WARNING => tracing::warn!(target: "memcastd::pgm", "OpenPGM: {message}"),
        _ => tracing::error!(target: "memcastd::pgm", "OpenPGM: {message}"),
    }
}
