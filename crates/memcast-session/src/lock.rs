//! The session lock: an item `<session key>.lock` holding a token unique
//! to the request, taken with `add` on the first server that answers (the
//! session itself read in the same round trip), retried with exponential
//! backoff and jitter, released with `md C<cas>` so that a lock that
//! expired and was taken over by another request is left alone.
//!
//! Taking it is a sequence of steps ([`LockStep`]) so the caller waits
//! between tries holding nothing: [`crate::ProcessStore::lock_session`]
//! sleeps with the process's store unlocked.

use std::time::{Duration, Instant};

use memcast_core::store::{Item, Vouch};

use crate::error::SessionError;
use crate::servers::{PassOn, Servers, Step};
use crate::session::SessionStore;

/// A lock this request holds.
#[derive(Debug)]
struct HeldLock {
    server: usize,
    key: Vec<u8>,
    /// The lock item's CAS token, released with `md C<cas>` in one round trip.
    cas: u64,
}

/// What the lock's round trip read for the session, used by the read that
/// follows instead of asking again.
pub(crate) struct Prefetched {
    pub server: usize,
    pub key: Vec<u8>,
    pub item: Option<Item>,
    pub warm: Option<Vouch>,
}

/// The locks this request holds.
#[derive(Default)]
pub(crate) struct Locks {
    held: Vec<HeldLock>,
    prefetched: Option<Prefetched>,
}

impl Locks {
    /// What the lock read for this session key, once.
    pub fn take_prefetched(&mut self, session_key: &[u8]) -> Option<Prefetched> {
        self.prefetched.take().filter(|p| p.key == session_key)
    }

    /// Releases the locks this request took, and only those: a lock that
    /// expired and was taken by another request carries another CAS.
    pub fn release_all(&mut self, servers: &mut Servers) {
        self.prefetched = None;
        for lock in std::mem::take(&mut self.held) {
            if let Some(mc) = servers.get_mut(lock.server) {
                let _ = mc.delete_if_cas(&lock.key, lock.cas);
            }
        }
    }
}

/// One request's way to a session lock, between tries.
#[derive(Debug)]
pub struct LockAttempt {
    session_key: Vec<u8>,
    key: Vec<u8>,
    token: Vec<u8>,
    started: Instant,
    /// The backoff before the next try.
    wait: Duration,
    /// Tries that found the lock taken.
    busy: u32,
}

/// What one try at the lock came to.
#[derive(Debug)]
pub enum LockStep {
    /// Taken, after waiting this long in all.
    Held(Duration),
    /// Taken by another request: try again after this wait.
    Wait(Duration),
    Failed(SessionError),
}

impl SessionStore {
    /// The lock this request needs for session `id`; `None` when it needs
    /// none (locking off, or it holds the lock already).
    pub fn begin_lock(&mut self, id: &[u8]) -> Option<LockAttempt> {
        let cfg = self.config.as_ref()?;
        if !cfg.locking {
            return None;
        }
        let wait = cfg.lock_wait_min;
        let session_key = self.key_for(id);
        let key = [session_key.as_slice(), b".lock"].concat();
        if self.locks.held.iter().any(|held| held.key == key) {
            // PHP reads the same session again without closing it
            // (session_reset()): the lock is ours already, and waiting for
            // it would be waiting on ourselves.
            return None;
        }
        Some(LockAttempt {
            session_key,
            key,
            token: format!("{:016x}", memcast_core::origin::random_u64()).into_bytes(),
            started: Instant::now(),
            wait,
            busy: 0,
        })
    }

    /// One try: `add` of the token on the first server that answers.
    pub fn try_lock(&mut self, attempt: &mut LockAttempt) -> LockStep {
        let Some(cfg) = &self.config else {
            return LockStep::Held(Duration::ZERO);
        };
        let answer = self.servers.try_each(PassOn::ServerFailure, |turn| {
            // The lock, and the session read in the same round trip.
            let answer = turn.server.lock_and_gets_checking_warm(
                &attempt.key,
                &attempt.token,
                cfg.lock_expire,
                &attempt.session_key,
            )?;
            Ok(Step::Done((turn.index, answer)))
        });
        let c = &mut self.counters;
        match answer {
            Ok((server, (Some(cas), item, warm))) => {
                self.locks.prefetched = Some(Prefetched {
                    server,
                    key: attempt.session_key.clone(),
                    item,
                    warm,
                });
                self.locks.held.push(HeldLock {
                    server,
                    key: attempt.key.clone(),
                    cas,
                });
                let waited = attempt.started.elapsed();
                let ms = waited.as_millis() as u64;
                c.lock_wait_ms_total += ms;
                c.lock_wait_ms_max = c.lock_wait_ms_max.max(ms);
                LockStep::Held(waited)
            }
            Ok(_) if attempt.busy < cfg.lock_retries => {
                attempt.busy += 1;
                c.lock_waits += 1;
                // Full jitter in [wait/2, wait], so waiters do not retry in step.
                let half = attempt.wait / 2;
                let jitter = Duration::from_micros(
                    memcast_core::origin::random_u64() % (half.as_micros() as u64 + 1),
                );
                attempt.wait = (attempt.wait * 2).min(cfg.lock_wait_max);
                LockStep::Wait(half + jitter)
            }
            Ok(_) => {
                c.lock_failures += 1;
                LockStep::Failed(SessionError::LockBusy {
                    waited_ms: attempt.started.elapsed().as_millis(),
                    tries: u64::from(cfg.lock_retries) + 1,
                })
            }
            Err(no_server) => LockStep::Failed(match no_server.into_request_error() {
                Ok(refused) => SessionError::LockRefused(refused),
                Err(no_server) => SessionError::LockNoServer(no_server),
            }),
        }
    }
}
