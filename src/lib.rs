//! memcast, the PHP extension: registers the native session save handler
//! `memcast` (`session.save_handler = memcast`).
//!
//! # Layout
//!
//! - `ffi`: the FFI shell. The module entry, the `memcast.*` INI entries,
//!   phpinfo(), the nine `ps_module` callbacks and the session_write_close()
//!   wrapper. All `unsafe` lives here.
//! - `handler`: the safe half. How a session maps onto the failover list of
//!   memcached servers and onto frames on the multicast group.
//!
//! The wire format, versions, the memcached client and the settings table are
//! in `memcast-core`; ZeroMQ is in `memcast-bus`.

#![deny(clippy::undocumented_unsafe_blocks)]

mod ffi;
mod handler;
