//! The process's one [`SessionStore`], shared by whatever threads PHP runs
//! callbacks on, behind a mutex that no wait holds: a thread waiting for a
//! session lock sleeps with the store unlocked, so a thread-safe PHP build
//! does not serialise every request behind one waiting for its lock.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::SessionError;
use crate::lock::LockStep;
use crate::read::ReadStep;
use crate::session::SessionStore;

/// The store, made at first use and kept for the life of the process.
pub struct ProcessStore {
    store: Mutex<Option<SessionStore>>,
}

impl Default for ProcessStore {
    fn default() -> Self {
        ProcessStore::new()
    }
}

impl ProcessStore {
    pub const fn new() -> ProcessStore {
        ProcessStore {
            store: Mutex::new(None),
        }
    }

    /// Runs `f` on the store (made first if there is none), holding the
    /// mutex only for `f`.
    pub fn with<T>(&self, f: impl FnOnce(&mut SessionStore) -> T) -> T {
        f(self.store.lock().get_or_insert_with(SessionStore::new))
    }

    /// Runs `f` on the store if there is one, making none.
    pub fn inspect<T>(&self, f: impl FnOnce(&SessionStore) -> T) -> Option<T> {
        self.store.lock().as_ref().map(f)
    }

    /// Puts `store` in place of the current one (tests choose a publisher).
    pub fn replace(&self, store: SessionStore) {
        *self.store.lock() = Some(store);
    }

    /// Takes the store away: the next use starts afresh (after a panic
    /// left it half-updated, or at shutdown).
    pub fn take(&self) -> Option<SessionStore> {
        self.store.lock().take()
    }

    /// Reads session `id` ([`SessionStore::read`]); a wait for the last
    /// write made under its cluster-wide lock holds nothing. Returns the
    /// read and the warning it leaves, if any.
    pub fn read_session(
        &self,
        id: &[u8],
        ttl: u64,
    ) -> (Result<Option<Vec<u8>>, SessionError>, Option<String>) {
        let started = Instant::now();
        loop {
            let step = self.with(|s| match s.read_step(id, ttl, started) {
                ReadStep::Done(read) => Ok((read, s.take_read_warning())),
                ReadStep::Wait(wait) => Err(wait),
            });
            match step {
                Ok(done) => return done,
                Err(wait) => std::thread::sleep(wait),
            }
        }
    }

    /// Takes the lock of session `id` for this request; each try holds the
    /// store, each wait between tries does not. Returns how long it waited.
    pub fn lock_session(&self, id: &[u8]) -> Result<Duration, SessionError> {
        let Some(mut attempt) = self.with(|s| s.begin_lock(id)) else {
            return Ok(Duration::ZERO);
        };
        loop {
            match self.with(|s| s.try_lock(&mut attempt)) {
                LockStep::Held(waited) => return Ok(waited),
                LockStep::Wait(backoff) => std::thread::sleep(backoff),
                LockStep::Failed(e) => return Err(e),
            }
        }
    }
}
