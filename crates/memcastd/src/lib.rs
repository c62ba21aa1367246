//! memcastd (the library behind the binary, so tests and fuzz targets reach
//! its parsers): the companion daemon on every host. It subscribes to the memcast
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
//! `counters`, `pgm_log` (OpenPGM's messages into the log; the one foreign
//! call), `php_publish` (what this host's PHP workers could not
//! publish), `verify` (the convergence check).

pub mod completeness;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod heard;
pub mod keys;
pub mod metrics;
pub mod origins;
pub mod peer_server;
pub mod pgm_log;
pub mod php_publish;
pub mod repair;
pub mod ring;
pub mod status;
pub mod verify;
