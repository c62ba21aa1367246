//! memcast's core: everything both the PHP extension and `memcastd` share,
//! with no PHP and no ZeroMQ types in its API.
//!
//! # Layout
//!
//! - [`version`]: the write version (a hybrid logical clock with an origin
//!   tiebreak) that orders every write cluster-wide.
//! - [`frame`]: the authenticated binary frame one write becomes on the wire.
//! - [`cluster_key`]: the cluster's shared key from a key file, and the HMAC
//!   over frames.
//! - [`key_file`]: which key files a host reads, the one policy on their
//!   permissions (extension and memcastd alike), and noticing a replacement.
//! - [`stored_value`]: the small header that carries a write's version inside the
//!   value memcached stores, so "apply only if newer" works on any replica.
//! - [`session_seal`]: sessions sealed at rest: memcached keys hashed from
//!   session ids, session data sealed under the cluster key.
//! - [`memcached_key`]: the memcached key of a session: memcached's key rules,
//!   checked before a key reaches a socket, and its name in logs.
//! - [`failover`]: the ordered server list from `session.save_path`, with the
//!   health table that skips a failed server for a retry interval.
//! - [`memcached`]: a memcached text-protocol connection (the client), the
//!   warm sentinel, and [`memcached::apply_if_newer`].
//! - [`lock_place`]: where a session's cluster-wide lock lives (rendezvous
//!   hashing over the servers' names).
//! - [`origin`]: who is writing: origin id, epoch and sequence numbers.
//! - [`peer`]: the TCP protocol between memcastd peers (repair, resync).
//! - [`replica`]: how a frame lands in a replica's memcached.
//! - [`endpoint`]: which part of a ZeroMQ endpoint is wrong, before ZeroMQ
//!   says only "Invalid argument".
//! - [`host_counters`]: what PHP could not replicate, counted in the local
//!   memcached for memcastd to export.
//! - [`ini`]: the extension's `memcast.*` php.ini settings, declared once.
//! - [`legacy`]: sessions php-memcached or pecl-memcache stored, read while
//!   a cluster switches to memcast.

pub mod cluster_key;
pub mod endpoint;
pub mod failover;
pub mod frame;
pub mod host_counters;
pub mod ini;
pub mod key_file;
pub mod legacy;
pub mod lock_place;
pub mod memcached;
pub mod memcached_key;
pub mod origin;
pub mod peer;
pub mod replica;
pub mod session_seal;
pub mod stored_value;
pub mod version;

pub use cluster_key::{KeyError, Keyring, Keys, SharedKey};
pub use failover::{FailoverList, ServerAddr};
pub use frame::{Frame, FrameError, Op};
pub use memcached::{apply_create, apply_if_newer, Applied, Memcached, StoreError, Timeouts};
pub use origin::Origin;
pub use stored_value::StoredValue;
pub use version::{Hlc, Version};

/// Nanoseconds since the Unix epoch (a nonce fallback).
pub fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, the wall-clock part of a [`Version`].
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
