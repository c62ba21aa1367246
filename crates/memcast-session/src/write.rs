//! Writing a session: storing it in the first server that takes it
//! ("apply if newer", or "create" after a miss), moving its expiry
//! (`session.lazy_write`), destroying it with a tombstone; each write then
//! published (see `publish.rs`).

use memcast_core::memcached::Expect;
use memcast_core::{apply_create, apply_if_newer, Applied, Op, StoredValue, Version};

use crate::error::SessionError;
use crate::publish::Outgoing;
use crate::servers::{PassOn, Step};
use crate::session::{ReadState, SessionStore};

/// How long a destroyed session's tombstone blocks late, older writes.
pub const TOMBSTONE_TTL: u64 = 300;

impl SessionStore {
    /// Stores the session in the first server that takes it, then publishes
    /// it; under a cluster-wide lock, the lock's mark will name this write.
    pub fn write(&mut self, id: &[u8], data: &[u8], ttl: u64) -> Result<(), SessionError> {
        let max = self
            .config
            .as_ref()
            .map_or(usize::MAX, |c| c.max_session_size);
        if data.len() > max {
            return Err(SessionError::OverMaxSize {
                len: data.len(),
                max,
            });
        }
        let key = self.key_for(id);
        self.fence(&key)?;
        let read = self.request.reads.get(&key).copied();
        let created = read.is_some_and(|r| r.created);
        let version = self.clock.next(read.and_then(|r| r.version));
        // Sealed, the data is bound to the header as stored: a create is
        // stored with its flag (`apply_create`). A large session is
        // compressed inside the seal: memcached and every frame hold less.
        let threshold = self.config.as_ref().map_or(0, |c| c.compress_threshold);
        let sealed = self.seal().map(|seal| {
            let header = StoredValue {
                created,
                ..StoredValue::live(version, &[])
            }
            .header();
            seal.seal_compressed(&key, &header, data, threshold)
        });
        let data = sealed.as_deref().unwrap_or(data);
        let value = StoredValue::live(version, data);
        let server = self.store(&key, &value, ttl, read, created)?;
        let name = self.servers.name(server);
        self.locks.note_write(&key, version, name, ttl);
        let state = ReadState {
            server: usize::MAX,
            expect: Expect::Unknown,
            version: Some(version),
            created: false,
        };
        self.request.reads.insert(key.clone(), state);
        // A write that began from a miss tells every replica so: it is
        // applied only where no live session exists.
        let op = if created { Op::Create } else { Op::Set };
        self.publish(Outgoing {
            op,
            key,
            value: data.to_vec(),
            ttl,
            version,
        });
        Ok(())
    }

    /// `session.lazy_write`: the data did not change, so only the expiry
    /// moves; a session read sealed under an older key is written whole,
    /// sealed under the current one.
    pub fn touch(&mut self, id: &[u8], data: &[u8], ttl: u64) -> Result<(), SessionError> {
        let key = self.key_for(id);
        if self.request.reseal.remove(&key) {
            return self.write(id, data, ttl);
        }
        let touched = self.servers.try_each(PassOn::AnyError, |turn| {
            Ok(Step::Done(turn.server.touch(&key, ttl)?))
        });
        match touched {
            Ok(true) => {
                let version = self
                    .request
                    .reads
                    .get(&key)
                    .and_then(|r| r.version)
                    .unwrap_or(Version::ZERO);
                self.publish(Outgoing {
                    op: Op::Touch,
                    key,
                    value: Vec::new(),
                    ttl,
                    version,
                });
                Ok(())
            }
            // Gone meanwhile (expired, or a cold server): write it whole.
            Ok(false) => self.write(id, data, ttl),
            Err(no_server) => {
                self.counters.write_failures += 1;
                Err(SessionError::StoreNoServer(no_server))
            }
        }
    }

    /// Leaves a tombstone (so a late, older write cannot bring the session
    /// back) and publishes the delete.
    pub fn destroy(&mut self, id: &[u8]) -> Result<(), SessionError> {
        let key = self.key_for(id);
        self.fence(&key)?;
        let read = self.request.reads.remove(&key);
        let version = self.clock.next(read.and_then(|r| r.version));
        let tombstone = StoredValue::tombstone(version);
        let server = self.store(&key, &tombstone, TOMBSTONE_TTL, read, false)?;
        let name = self.servers.name(server);
        self.locks.note_write(&key, version, name, TOMBSTONE_TTL);
        self.publish(Outgoing {
            op: Op::Delete,
            key,
            value: Vec::new(),
            ttl: TOMBSTONE_TTL,
            version,
        });
        self.destroy_legacy(id);
        Ok(())
    }

    /// Under a cluster-wide lock, a write goes ahead only if the lock is
    /// still this request's (its server answers with the same CAS): a lock
    /// server that died, or a lock that expired and was taken over, means
    /// another request may be working on the session now, so this write
    /// fails cleanly rather than overwrite that request's.
    fn fence(&mut self, key: &[u8]) -> Result<(), SessionError> {
        let Some((server, lock_key, cas)) = self.locks.cluster_lock_of(key) else {
            return Ok(());
        };
        let held = self.servers.try_one(server, |s| s.cas_of(&lock_key));
        match held {
            Ok(Some(now)) if now == cas => Ok(()),
            Ok(_) => Err(SessionError::LockLost {
                server: self.servers.name(server),
                why: "it expired and another request holds it now".into(),
            }),
            Err(e) => Err(SessionError::LockLost {
                server: self.servers.name(server),
                why: format!("its server does not answer: {e}"),
            }),
        }
    }

    /// The value into the first server that takes it: conditional on what
    /// this request read there, and only where no live session exists when
    /// the request `created` the session.
    fn store(
        &mut self,
        key: &[u8],
        value: &StoredValue<'_>,
        ttl: u64,
        read: Option<ReadState>,
        created: bool,
    ) -> Result<usize, SessionError> {
        let counters = &mut self.counters;
        let stored = self.servers.try_each(PassOn::AnyError, |turn| {
            let expect = match read {
                Some(r) if r.server == turn.index => r.expect,
                _ => Expect::Unknown,
            };
            let applied = if created {
                apply_create(turn.server, key, value, ttl, expect)?
            } else {
                apply_if_newer(turn.server, key, value, ttl, expect)?
            };
            match applied {
                // A create found a live session, or a newer write than its
                // own: from this request's view the session was not new.
                Applied::Conflict { .. } | Applied::SkippedOlder { .. } if created => {
                    Ok(Step::Done(Err(turn.server.addr().clone())))
                }
                _ => {
                    if turn.failed_before > 0 {
                        counters.failovers += 1;
                    }
                    Ok(Step::Done(Ok(turn.index)))
                }
            }
        });
        match stored {
            Ok(Ok(server)) => {
                self.counters.writes += 1;
                Ok(server)
            }
            Ok(Err(server)) => {
                self.counters.write_failures += 1;
                self.counters.conflicts += 1;
                Err(SessionError::CreateConflict { server })
            }
            Err(no_server) => {
                self.counters.write_failures += 1;
                Err(SessionError::StoreNoServer(no_server))
            }
        }
    }
}
