//! memcastd (the library behind the binary, so tests and fuzz targets reach
//! its parsers): the companion daemon on every host. It subscribes to the memcast
//! group and applies every authenticated session write to the local
//! memcached, only if newer than what it holds; notices and repairs what the
//! network lost; and can be the host's relay, the one long-lived sender for
//! its PHP workers.
//!
//! # Layout
//!
//! - `settings`: every setting declared once (flag, TOML key, default,
//!   live or restart, doc); `config`: the command line, the TOML file and the
//!   checks settings must pass.
//! - `daemon`: start-up and the receive loop, which hands frames to
//!   - `relay`: this host's one sender to the group (stamping, replay ring,
//!     heartbeats), with `ring` (the replay ring);
//!   - `applier`: frames into memcached, if newer, in batches; the backlog
//!     while memcached is down, the CAS cache, memcached's health;
//!   - `sequences`: replays, gaps and silent origins: the sequence numbers seen per origin;
//!   - `warmth`: the warm sentinel PHP trusts, kept as `completeness`
//!     decides (whether the memcached is known complete);
//!   - `every`: the loop's periodic tasks; `warnings`: rate-limited warnings.
//! - `repair`: the worker that repairs gaps, catches up, resyncs and warms
//!   up from peers; `peer_server`: what peers ask of this host (repairs,
//!   snapshots, digests); `heard`: frames kept for peers from origins without
//!   a ring.
//! - `key_store`: the key files in use, reloaded on SIGHUP.
//! - `metrics` (Prometheus), `counters`, `status` (`memcastd status`),
//!   `verify` (`memcastd verify`, the convergence check), `php_publish` (what
//!   this host's PHP workers could not publish), `pgm_log` (OpenPGM's
//!   messages into the log; the one foreign call).

pub mod applier;
pub mod completeness;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod every;
pub mod heard;
pub mod key_store;
pub mod metrics;
pub mod peer_server;
pub mod pgm_log;
pub mod php_publish;
pub mod relay;
pub mod repair;
pub mod ring;
pub mod sequences;
pub mod settings;
pub mod status;
pub mod verify;
pub mod warmth;
pub mod warnings;
