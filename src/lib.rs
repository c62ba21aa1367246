//! memcast, the PHP extension: registers the native session save handler
//! `memcast` (`session.save_handler = memcast`).
//!
//! # Layout
//!
//! - `ffi`: the FFI shell. The module entry, the `memcast.*` INI entries,
//!   phpinfo(), the nine `ps_module` callbacks and the session_write_close()
//!   wrapper. All `unsafe` lives here.
//!
//! How a session maps onto the failover list of memcached servers and onto
//! frames on the multicast group is `memcast-session` (tested on its own);
//! the wire format, versions, the memcached client, key files and the
//! settings table are in `memcast-core`; ZeroMQ is in `memcast-bus`.

#![deny(clippy::undocumented_unsafe_blocks)]

mod ffi;
