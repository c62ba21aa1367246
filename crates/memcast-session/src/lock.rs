//! The session lock: an item `<session key>.lock` holding a token unique
//! to the request, taken with `add` (the session itself read in the same
//! round trip), retried with exponential backoff and jitter, released with
//! `md C<cas>` so that a lock that expired and was taken over by another
//! request is left alone.
//!
//! Where it lives (`memcast.lock_scope`):
//! - `cluster` (default): in the first server of the session's rendezvous
//!   order over `session.save_path` (`memcast_core::lock_place`), the same
//!   on every host, so requests of one session on different hosts exclude
//!   each other. The lock also keeps a *write mark* (`<session key>.w`):
//!   the version of the last write made under it and the server that took
//!   it, so the next holder, on any host, reads at least that write
//!   (`read.rs`) even if replication has not brought it to its own
//!   memcached yet. A lock server that does not answer (dead, or out of
//!   this host's reach) fails the request, since requests that took their
//!   lock there may still run, until it has been down for
//!   `memcast.lock_expire`, when every lock it granted has expired: then
//!   the next server of the order takes its locks over, if this host
//!   reaches most servers (a host cut off from the others never does). A
//!   memcached that refuses connections is not running, which every host
//!   sees: its locks are taken over at once, and a request that still holds
//!   one cannot write: before each write it checks that its lock is still
//!   there, unchanged (the *fence*), and fails cleanly otherwise.
//! - `host`: in the first healthy server of this host's save path; keeps
//!   apart only the requests of one host (sticky sessions).
//!
//! Taking it is a sequence of steps ([`LockStep`]) so the caller waits
//! between tries holding nothing: [`crate::ProcessStore::lock_session`]
//! sleeps with the process's store unlocked.

use std::time::{Duration, Instant};

use memcast_core::ini::LockScope;
use memcast_core::memcached::{Item, MarkedLockedRead, Vouch};
use memcast_core::{lock_place, Version};

use crate::error::SessionError;
use crate::servers::{PassOn, Servers, Step};
use crate::session::SessionStore;

/// What a cluster-wide lock records of the last write made under it
/// (`<session key>.w` on the lock's server, for the session's lifetime):
/// its version and the server that took it, by its `session.save_path`
/// name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteMark {
    pub version: Version,
    pub server: String,
}

impl WriteMark {
    /// `<millis> <counter> <origin hex> <server>`.
    pub fn encode(&self) -> Vec<u8> {
        let v = &self.version;
        format!("{} {} {:x} {}", v.millis, v.counter, v.origin, self.server).into_bytes()
    }

    pub fn decode(raw: &[u8]) -> Option<WriteMark> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut fields = text.splitn(4, ' ');
        let millis = fields.next()?.parse().ok()?;
        let counter = fields.next()?.parse().ok()?;
        let origin = u64::from_str_radix(fields.next()?, 16).ok()?;
        let server = fields.next()?.to_owned();
        Some(WriteMark {
            version: Version {
                millis,
                counter,
                origin,
            },
            server,
        })
    }
}

/// The key of a session's write mark.
fn mark_key(session_key: &[u8]) -> Vec<u8> {
    [session_key, b".w"].concat()
}

/// A lock this request holds.
#[derive(Debug)]
struct HeldLock {
    server: usize,
    key: Vec<u8>,
    session_key: Vec<u8>,
    /// The lock item's CAS token, released with `md C<cas>` in one round trip.
    cas: u64,
    /// A cluster-wide lock: the mark it read when taken, and the one this
    /// request's write leaves at release (with the session's lifetime).
    cluster: bool,
    read_mark: Option<WriteMark>,
    wrote: Option<(WriteMark, u64)>,
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

    /// The write mark the cluster-wide lock of this session read when it
    /// was taken: the read must find at least that write.
    pub fn read_mark(&self, session_key: &[u8]) -> Option<&WriteMark> {
        self.held
            .iter()
            .find(|l| l.session_key == session_key)
            .and_then(|l| l.read_mark.as_ref())
    }

    /// The cluster-wide lock this request holds for a session: its server,
    /// key and CAS, for the fence before a write.
    pub fn cluster_lock_of(&self, session_key: &[u8]) -> Option<(usize, Vec<u8>, u64)> {
        self.held
            .iter()
            .find(|l| l.cluster && l.session_key == session_key)
            .map(|l| (l.server, l.key.clone(), l.cas))
    }

    /// A write of this session under its cluster-wide lock: left as the
    /// lock's mark at release.
    pub fn note_write(&mut self, session_key: &[u8], version: Version, server: String, ttl: u64) {
        if let Some(lock) = self
            .held
            .iter_mut()
            .find(|l| l.cluster && l.session_key == session_key)
        {
            lock.wrote = Some((WriteMark { version, server }, ttl));
        }
    }

    /// Releases the locks this request took, and only those: a lock that
    /// expired and was taken by another request carries another CAS. A
    /// cluster-wide lock under which this request wrote leaves its mark in
    /// the same round trip.
    pub fn release_all(&mut self, servers: &mut Servers) {
        self.prefetched = None;
        for lock in std::mem::take(&mut self.held) {
            let Some(mc) = servers.get_mut(lock.server) else {
                continue;
            };
            let _ = match &lock.wrote {
                Some((mark, ttl)) => mc.release_marking(
                    &lock.key,
                    lock.cas,
                    &mark_key(&lock.session_key),
                    &mark.encode(),
                    *ttl,
                ),
                None => mc.delete_if_cas(&lock.key, lock.cas),
            };
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
    /// A cluster-wide lock: the servers in the session's rendezvous order.
    order: Option<Vec<usize>>,
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
        let order = (cfg.lock_scope == LockScope::Cluster && self.servers.named_as_a_cluster())
            .then(|| lock_place::lock_order(&session_key, self.servers.addr_list()));
        Some(LockAttempt {
            session_key,
            key,
            token: format!("{:016x}", memcast_core::origin::random_u64()).into_bytes(),
            started: Instant::now(),
            wait,
            busy: 0,
            order,
        })
    }

    /// One try at a cluster-wide lock, in the first server of the
    /// session's order that is not known to have been down for
    /// `lock_expire` (whose locks have all expired). A server that does not
    /// answer fails the request: requests on other hosts may hold the lock
    /// there.
    fn try_cluster_lock(
        &mut self,
        order: &[usize],
        attempt: &LockAttempt,
        expire_s: u64,
    ) -> Result<(usize, MarkedLockedRead), SessionError> {
        let expire = Duration::from_secs(expire_s);
        let mut taken_over = None;
        for &i in order {
            // A memcached that refuses or closes connections is not running:
            // every host sees that, and a request still holding a lock it
            // granted cannot write (the fence in `write.rs` finds its lock
            // gone), so the next server takes its locks over at once. One
            // that times out may be out of this host's reach only, while
            // others still lock there: its locks are taken over once they
            // have all expired.
            if self.servers.failed_at_once(i) && self.servers.is_skipped(i) {
                continue;
            }
            // Down long enough, and not due to be asked again yet (its
            // retry interval): the next server has its locks. Once its
            // retry interval has passed it is asked again: it may be back.
            let down = self.servers.down_for(i);
            let long_down = down.is_some_and(|d| d >= expire);
            if long_down && self.servers.is_skipped(i) {
                taken_over.get_or_insert((i, down.unwrap_or_default()));
                continue;
            }
            if let Some((first, down)) = taken_over {
                // A host cut off from most servers must not take the lock
                // over beside the hosts that still reach the first one.
                let (reachable, total) = self.servers.probe_reachable();
                if reachable * 2 <= total {
                    return Err(SessionError::LockCutOff {
                        server: self.servers.name(first),
                        down_ms: down.as_millis(),
                        reachable,
                        total,
                    });
                }
            }
            let answer = if self.servers.is_skipped(i) {
                Err(None)
            } else {
                self.servers
                    .try_one(i, |server| {
                        server.lock_and_gets_marked(
                            &attempt.key,
                            &attempt.token,
                            expire_s,
                            &attempt.session_key,
                            &mark_key(&attempt.session_key),
                        )
                    })
                    .map_err(Some)
            };
            match answer {
                Ok(read) => return Ok((i, read)),
                Err(Some(e)) if e.is_immediate() => continue,
                // Still down, and long enough: the next server takes over.
                Err(Some(e)) if long_down && e.is_server_failure() => {
                    taken_over.get_or_insert((i, down.unwrap_or_default()));
                    continue;
                }
                Err(Some(e)) if !e.is_server_failure() => return Err(SessionError::LockRefused(e)),
                Err(_) => {
                    return Err(SessionError::LockServerDown {
                        server: self.servers.name(i),
                        error: self.servers.last_error(i),
                        down_ms: self.servers.down_for(i).unwrap_or_default().as_millis(),
                        expire_s,
                    })
                }
            }
        }
        Err(SessionError::LockServerDown {
            server: order
                .first()
                .map_or_else(String::new, |&i| self.servers.name(i)),
            error: "every server of session.save_path has been down for memcast.lock_expire".into(),
            down_ms: 0,
            expire_s,
        })
    }

    /// One try: `add` of the token on the first server that answers (host
    /// scope) or on the session's lock server (cluster scope).
    pub fn try_lock(&mut self, attempt: &mut LockAttempt) -> LockStep {
        let Some(cfg) = &self.config else {
            return LockStep::Held(Duration::ZERO);
        };
        let (expire_s, retries, wait_max) = (cfg.lock_expire, cfg.lock_retries, cfg.lock_wait_max);
        let answer = match attempt.order.take() {
            Some(order) => {
                let answer = self.try_cluster_lock(&order, attempt, expire_s);
                attempt.order = Some(order);
                answer
            }
            None => self
                .servers
                .try_each(PassOn::ServerFailure, |turn| {
                    // The lock, and the session read in the same round trip.
                    let (locked, item, warm) = turn.server.lock_and_gets_checking_warm(
                        &attempt.key,
                        &attempt.token,
                        expire_s,
                        &attempt.session_key,
                    )?;
                    Ok(Step::Done((turn.index, (locked, item, warm, None))))
                })
                .map_err(|no_server| match no_server.into_request_error() {
                    Ok(refused) => SessionError::LockRefused(refused),
                    Err(no_server) => SessionError::LockNoServer(no_server),
                }),
        };
        let c = &mut self.counters;
        match answer {
            Ok((server, (Some(cas), item, warm, mark))) => {
                self.locks.prefetched = Some(Prefetched {
                    server,
                    key: attempt.session_key.clone(),
                    item,
                    warm,
                });
                self.locks.held.push(HeldLock {
                    server,
                    key: attempt.key.clone(),
                    session_key: attempt.session_key.clone(),
                    cas,
                    cluster: attempt.order.is_some(),
                    read_mark: mark.as_deref().and_then(WriteMark::decode),
                    wrote: None,
                });
                let waited = attempt.started.elapsed();
                let ms = waited.as_millis() as u64;
                c.lock_wait_ms_total += ms;
                c.lock_wait_ms_max = c.lock_wait_ms_max.max(ms);
                LockStep::Held(waited)
            }
            Ok(_) if attempt.busy < retries => {
                attempt.busy += 1;
                c.lock_waits += 1;
                // Full jitter in [wait/2, wait], so waiters do not retry in step.
                let half = attempt.wait / 2;
                let jitter = Duration::from_micros(
                    memcast_core::origin::random_u64() % (half.as_micros() as u64 + 1),
                );
                attempt.wait = (attempt.wait * 2).min(wait_max);
                LockStep::Wait(half + jitter)
            }
            Ok(_) => {
                c.lock_failures += 1;
                LockStep::Failed(SessionError::LockBusy {
                    waited_ms: attempt.started.elapsed().as_millis(),
                    tries: u64::from(retries) + 1,
                })
            }
            Err(e) => LockStep::Failed(e),
        }
    }
}

#[cfg(test)]
mod mark_tests {
    use super::*;

    #[test]
    fn a_write_mark_reads_back_as_written() {
        let mark = WriteMark {
            version: Version {
                millis: 1_700_000_000_123,
                counter: 7,
                origin: 0xdead_beef_0042,
            },
            server: "[2001:db8::1]:11211".into(),
        };
        assert_eq!(WriteMark::decode(&mark.encode()), Some(mark));
        assert_eq!(WriteMark::decode(b"12 x 1f host:1"), None);
        assert_eq!(WriteMark::decode(b"12 1"), None);
    }
}
