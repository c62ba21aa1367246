//! memcast's session store: how PHP sessions map onto the ordered list of
//! memcached servers and onto frames for the multicast group. No PHP types:
//! the extension's FFI shell (`src/ffi.rs`) turns PHP's save-handler
//! callbacks into calls on [`ProcessStore`] and [`SessionStore`], and each
//! [`SessionError`] into one PHP warning.
//!
//! # Layout
//!
//! - [`process`]: the process's one store behind a mutex no wait holds.
//! - [`session`]: [`SessionStore`], what the callbacks call: open, close,
//!   exists, id_taken, and what one request read.
//! - [`servers`]: the save path's servers and their health, walked by one
//!   function, [`Servers::try_each`]: try each in order, skip those in their
//!   retry interval, remember what happened to each.
//! - [`lock`]: the session lock, taken step by step with backoff.
//! - [`read`]: reading a session: miss confirmation, read-repair, sealed
//!   values opened.
//! - [`write`]: storing, touching and destroying a session.
//! - [`migrate`]: sessions the previous save handler stored
//!   (`memcast.migrate_from`).
//! - [`publish`]: each write as a frame through a [`Publish`]er, and the
//!   dropped ones sent again.
//! - [`keys`]: the key files (through `memcast_core::key_file`) and the seal.
//! - [`counters`]: what phpinfo() shows.
//! - [`error`]: [`SessionError`], every way an operation fails.

#![forbid(unsafe_code)]

pub mod counters;
pub mod error;
pub mod keys;
pub mod lock;
pub mod migrate;
pub mod process;
pub mod publish;
pub mod read;
pub mod servers;
pub mod session;
pub mod write;

pub use counters::Counters;
pub use error::SessionError;
pub use lock::{LockAttempt, LockStep, WriteMark};
pub use process::ProcessStore;
pub use publish::{BusPublisher, NotPublished, OpenPublisher, Publish};
pub use read::ReadStep;
pub use servers::{NoServer, PassOn, Servers, Step, Turn};
pub use session::SessionStore;
pub use write::TOMBSTONE_TTL;

#[cfg(test)]
mod tests;
