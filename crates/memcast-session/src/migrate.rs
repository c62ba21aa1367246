//! `memcast.migrate_from`: sessions the other handler (php-memcached,
//! pecl-memcache, or memcast unsealed) stored, read while a cluster
//! switches to memcast, and deleted with the session.

use memcast_core::legacy::{LegacyError, LegacyHandler, LegacySessions};
use memcast_core::Version;

use crate::error::SessionError;
use crate::servers::{PassOn, Step};
use crate::session::{ReadState, SessionStore};

impl SessionStore {
    /// [`SessionStore::lookup`], and on a miss it trusts, with
    /// `memcast.migrate_from` set, the other handler's key: a session found
    /// only there is the oldest version of this one. Its write is a normal
    /// write after a read (not a create: the session exists), so it
    /// replaces nothing newer that memcast wrote and spreads as any write.
    pub(crate) fn lookup_or_migrate(
        &mut self,
        id: &[u8],
        key: &[u8],
        ttl: Option<u64>,
    ) -> Result<(ReadState, Option<Vec<u8>>), SessionError> {
        let (state, stored) = self.lookup(key, ttl)?;
        // A hit, a tombstone (destroyed since), or an id this process made.
        if !state.created || self.request.fresh.contains(key) {
            return Ok((state, stored));
        }
        match self.read_legacy(id) {
            Some(data) => {
                self.counters.migrated_reads += 1;
                let migrated = ReadState {
                    version: Some(Version::ZERO),
                    created: false,
                    ..state
                };
                Ok((migrated, Some(data)))
            }
            None => Ok((state, stored)),
        }
    }

    /// The session the other handler stored under this id: it hashed each
    /// session onto one server of its pool, so every server that answers is
    /// asked until one holds it. A value that is not a session it writes is
    /// left alone, with one warning, and the session starts empty.
    fn read_legacy(&mut self, id: &[u8]) -> Option<Vec<u8>> {
        let legacy = self.legacy()?;
        let max = self.config.as_ref()?.max_session_size;
        let key = legacy.key_for(id);
        let (i, item) = self
            .servers
            .try_each(PassOn::AnyError, |turn| match turn.server.gets(&key)? {
                None => Ok(Step::Next),
                Some(item) => Ok(Step::Done((turn.index, item))),
            })
            .ok()?;
        match legacy.decode(item.value, item.flags, max) {
            Ok(data) => Some(data),
            Err(LegacyError::Destroyed) => None,
            Err(e) => {
                self.warnings.read =
                    Some(format!(
                    "{} on {}: {e}; not read, the session starts empty (memcast.migrate_from = {})",
                    String::from_utf8_lossy(&key),
                    self.servers.addr(i).map_or(String::new(), |a| a.to_string()),
                    legacy.handler.save_handler()
                ));
                None
            }
        }
    }

    /// Deletes the other handler's copy of a destroyed session on every
    /// server that answers, so it cannot come back from there.
    pub(crate) fn destroy_legacy(&mut self, id: &[u8]) {
        let Some(legacy) = self.legacy() else {
            return;
        };
        let key = legacy.key_for(id);
        let _everywhere = self.servers.try_each(PassOn::AnyError, |turn| {
            turn.server.delete(&key)?;
            Ok(Step::<()>::Next)
        });
    }

    /// Where `memcast.migrate_from` reads. memcast's own unsealed sessions
    /// only while sessions are sealed: unsealed, that key is memcast's own.
    fn legacy(&self) -> Option<LegacySessions> {
        let legacy = self.config.as_ref()?.migrate_from.clone()?;
        let own = legacy.handler == LegacyHandler::MemcastUnsealed;
        (!own || self.seal().is_some()).then_some(legacy)
    }
}
