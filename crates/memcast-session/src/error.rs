//! What a session operation reports when it fails: one PHP warning each,
//! worded for the operator (what failed, where, and what is kept).

use memcast_core::{ServerAddr, StoreError};

use crate::servers::NoServer;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session.save_path {save_path:?}: {reason}")]
    SavePath { save_path: String, reason: String },
    #[error("cannot lock session: {0}")]
    LockNoServer(NoServer),
    /// A server answered, but refused the lock's command (not its failure).
    #[error("cannot lock session: {0}")]
    LockRefused(StoreError),
    #[error("cannot lock session: another request of this session held it for {waited_ms} ms ({tries} tries; memcast.lock_retries, memcast.lock_wait_max)")]
    LockBusy { waited_ms: u128, tries: u64 },
    #[error("cannot read session: {0}")]
    ReadNoServer(NoServer),
    /// A miss only a server not known complete answered: the read fails
    /// rather than start an empty session.
    #[error("cannot read session: {server} does not hold it but is not known complete (restarted, evicting, or its memcastd is away), and no other server could confirm the miss ({no_server}); not starting an empty session that could replace the real one")]
    UnconfirmedMiss {
        server: ServerAddr,
        no_server: NoServer,
    },
    #[error("session data of {len} bytes is over memcast.max_session_size ({max} bytes): not stored, the previous version is kept")]
    OverMaxSize { len: usize, max: usize },
    /// A write that began from a miss found a live session: it is kept.
    #[error("session not stored: this request started it as new (a miss), but {server} now holds a session with this id; it is kept and this request's write is dropped")]
    CreateConflict { server: ServerAddr },
    #[error("cannot store session: {0}")]
    StoreNoServer(NoServer),
}
