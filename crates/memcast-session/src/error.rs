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
    /// Cluster-wide locking: the session's lock server did not answer.
    #[error("cannot lock session: its lock lives in {server} (memcast.lock_scope = cluster: every host locks this session there), which did not answer ({error}); not going on unlocked, as requests on other hosts may hold the lock there. Once it has been down for memcast.lock_expire ({expire_s} s; {down_ms} ms so far) the next server takes its locks over")]
    LockServerDown {
        server: String,
        error: String,
        down_ms: u128,
        expire_s: u64,
    },
    /// Cluster-wide locking: the lock server is down long enough to be
    /// taken over, but this host reaches too few servers to do it safely.
    #[error("cannot lock session: its lock server {server} has been down for {down_ms} ms, but this host reaches only {reachable} of {total} memcached servers: it may be cut off from the others, so it does not take the lock over elsewhere (memcast.lock_scope = cluster)")]
    LockCutOff {
        server: String,
        down_ms: u128,
        reachable: usize,
        total: usize,
    },
    /// Cluster-wide locking: the lock this request took is gone before its
    /// write (its server died, or it expired and was taken over).
    #[error("session not stored: this request's lock on {server} is gone ({why}), so another request may be working on the session; the write is dropped rather than overwrite it")]
    LockLost { server: String, why: String },
    #[error("cannot read session: {0}")]
    ReadNoServer(NoServer),
    /// Under a cluster-wide lock, the last write made under it is not
    /// readable from this host in time.
    #[error("session read from an older copy: the last write made under its lock (version {version}, stored in {server}) was not found after {waited_ms} ms ({why}); it was lost (its memcached restarted or evicted it before replication), so the request goes on from the newest copy there is")]
    BehindTheLock {
        version: memcast_core::Version,
        server: String,
        waited_ms: u128,
        why: String,
    },
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
