//! Reading a session: failover, miss confirmation and read-repair
//! ([`SessionStore::lookup`]), and opening sealed values.

use memcast_core::host_counters::HostCounter;
use memcast_core::session_seal::OpenError;
use memcast_core::store::{Expect, Item};
use memcast_core::StoredValue;

use crate::error::SessionError;
use crate::servers::{PassOn, Step};
use crate::session::{ReadState, SessionStore};

/// Where a walk for a session ended.
enum Found {
    /// A miss the request may trust, on this server.
    Miss {
        answered: usize,
    },
    Hit {
        server: usize,
        item: Item,
    },
}

impl SessionStore {
    /// The session's data, `None` for a miss.
    ///
    /// A miss is not proof that a session does not exist: only a server
    /// *known complete* (its memcastd vouches for it with the warm sentinel,
    /// read in the same round trip) may answer a miss alone. A miss on any
    /// other server (restarted, evicting, its memcastd away or partitioned)
    /// is confirmed on the next servers, and a hit there is written back
    /// with `add` into the servers that missed (read-repair). Ids this
    /// process just created need no confirmation. A miss that no other
    /// server can confirm is an error, never an empty session that could
    /// replace the real one elsewhere.
    pub fn read(&mut self, id: &[u8], ttl: u64) -> Result<Option<Vec<u8>>, SessionError> {
        let key = self.key_for(id);
        let (state, stored) = self.lookup_or_migrate(id, &key, Some(ttl))?;
        self.request.reads.insert(key, state);
        Ok(stored)
    }

    /// Walks the servers for `key` as [`SessionStore::read`] describes:
    /// what the write should expect, and the live session's data if any.
    /// Read-repair needs the session's TTL; without one it is left to the
    /// read that follows.
    pub(crate) fn lookup(
        &mut self,
        key: &[u8],
        ttl: Option<u64>,
    ) -> Result<(ReadState, Option<Vec<u8>>), SessionError> {
        let warm_check = self.config.as_ref().is_none_or(|c| c.warm_check);
        // A miss is trusted at once for an id this process just created,
        // or where no memcastd vouches for anything (warm_check off).
        let trust_miss = !warm_check || self.request.fresh.contains(key);
        let mut missed: Vec<usize> = Vec::new();
        let mut prefetched = self.locks.take_prefetched(key);
        let counters = &mut self.counters;
        let walk = self.servers.try_each(PassOn::ServerFailure, |turn| {
            let i = turn.index;
            let (found, vouch) = match prefetched.take() {
                Some(p) if p.server == i => (p.item, p.warm),
                _ if trust_miss => (turn.server.gets(key)?, None),
                _ => turn.server.gets_checking_warm(key)?,
            };
            counters.count_read(i);
            if turn.failed_before > 0 || !missed.is_empty() {
                counters.failovers += 1;
            }
            let Some(item) = found else {
                // Vouched for, and nothing evicted since memcastd looked.
                let complete = vouch.is_some_and(|v| {
                    turn.server.still_complete(v).unwrap_or_else(|e| {
                        turn.note_failure(&e);
                        false
                    })
                });
                if complete || trust_miss {
                    return Ok(Step::Done(Found::Miss { answered: i }));
                }
                counters.cold_misses += 1;
                missed.push(i);
                return Ok(Step::Next);
            };
            Ok(Step::Done(Found::Hit { server: i, item }))
        });
        let (i, item) = match walk {
            Ok(Found::Miss { answered }) => return Ok((miss_state(&missed, answered), None)),
            Ok(Found::Hit { server, item }) => (server, item),
            Err(no_server) => {
                return match missed.first() {
                    // Two servers agree, or there is no other server to ask.
                    Some(&first) if missed.len() >= 2 || self.servers.len() == 1 => {
                        Ok((miss_state(&missed, first), None))
                    }
                    Some(&first) => {
                        self.counters.unconfirmed_misses += 1;
                        Err(match self.servers.addr(first).cloned() {
                            Some(server) => SessionError::UnconfirmedMiss { server, no_server },
                            None => SessionError::ReadNoServer(no_server),
                        })
                    }
                    None => Err(SessionError::ReadNoServer(no_server)),
                };
            }
        };
        let version = StoredValue::parse(&item.value).map(|s| s.version);
        let state = match missed.first() {
            None => ReadState {
                server: i,
                expect: Expect::Cas(item.cas),
                version,
                created: false,
            },
            Some(&first) => {
                // Read-repair: the servers that missed get what they lacked.
                if let Some(ttl) = ttl {
                    for &m in &missed {
                        let repaired = self
                            .servers
                            .get_mut(m)
                            .map(|s| s.add(key, &item.value, ttl));
                        if let Some(Ok(_)) = repaired {
                            self.counters.read_repairs += 1;
                        }
                    }
                }
                ReadState {
                    server: first,
                    expect: Expect::Unknown,
                    version,
                    created: false,
                }
            }
        };
        let data = self.open_data(key, &item.value, i);
        Ok((state, data))
    }

    /// The session data of a stored value as PHP gets it: opened when
    /// sessions are sealed. A value that does not open is a miss, counted
    /// and warned about once per process for each reason.
    fn open_data(&mut self, key: &[u8], raw: &[u8], server: usize) -> Option<Vec<u8>> {
        let stored = StoredValue::parse(raw).filter(|s| !s.tombstone)?;
        let Some(seal) = self.seal() else {
            return Some(stored.data.to_vec());
        };
        let header = &raw[..memcast_core::stored::HEADER_LEN];
        let err = match seal.open(key, header, stored.data) {
            Ok(data) => {
                if !seal.is_under_current_key(stored.data) {
                    self.request.reseal.insert(key.to_vec());
                }
                return Some(data);
            }
            Err(e) => e,
        };
        self.counters.unopened += 1;
        self.servers.count_on_host(HostCounter::SealedUnopened, 1);
        let kind = match err {
            OpenError::NotSealed => "unopened:not sealed",
            OpenError::UnknownKey(_) => "unopened:unknown key",
            OpenError::Tampered => "unopened:tampered",
        };
        if self.warnings.first_time(kind) {
            self.warnings.read = Some(format!(
                "session {} on {}: the stored value {err}; read as a miss, never handed to PHP (counted in phpinfo: Sealed values not opened; warned once per process)",
                memcast_core::session_key::log_name(key),
                self.servers.addr(server).map_or(String::new(), |s| s.to_string()),
            ));
        }
        None
    }
}

/// A miss the request may trust: its write creates the session, on the
/// first server that answered.
fn miss_state(missed: &[usize], answered: usize) -> ReadState {
    ReadState {
        server: missed.first().copied().unwrap_or(answered),
        expect: Expect::Missing,
        version: None,
        created: true,
    }
}
