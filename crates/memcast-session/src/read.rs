//! Reading a session: failover, miss confirmation and read-repair
//! ([`SessionStore::lookup`]), and opening sealed values.

use std::time::{Duration, Instant};

use memcast_core::host_counters::HostCounter;
use memcast_core::memcached::{Expect, Item, Reply};
use memcast_core::session_seal::OpenError;
use memcast_core::stored_value::Decision;
use memcast_core::StoredValue;

use crate::error::SessionError;
use crate::lock::WriteMark;
use crate::servers::{PassOn, Step};
use crate::session::{ReadState, SessionStore};

/// How long a read under a cluster-wide lock waits for the last write made
/// under that lock to be readable (replication is a few milliseconds).
pub const CATCH_UP_WAIT: Duration = Duration::from_millis(500);
const CATCH_UP_POLL: Duration = Duration::from_millis(3);

/// What one try at reading a session came to.
pub enum ReadStep {
    Done(Result<Option<Vec<u8>>, SessionError>),
    /// The last write made under the session's lock is not readable yet:
    /// try again after this wait.
    Wait(Duration),
}

/// Where a walk for a session ended.
enum Found {
    /// A miss the request may trust, on this server.
    Miss { answered: usize },
    /// A server known complete answered (or a hit was trusted as it is):
    /// the newest copy seen, and its server, is the session.
    Settled(usize, Item),
}

/// What a walk saw: the newest copy, and the servers that held less.
#[derive(Default)]
struct Seen {
    /// The newest copy so far, and its server.
    best: Option<(usize, Item)>,
    /// Servers that missed (add the session back there).
    missed: Vec<usize>,
    /// Servers that held an older copy, with its CAS (cas it back).
    older: Vec<(usize, u64)>,
}

impl Seen {
    /// A hit on server `i`: kept if it replaces the best so far by
    /// memcast's one rule ([`StoredValue::decide`]). True if an earlier
    /// server's copy lost to it.
    fn hit(&mut self, i: usize, item: Item) -> bool {
        let Some((b, best)) = self.best.take() else {
            self.best = Some((i, item));
            return false;
        };
        let replaces = match (
            StoredValue::parse(&item.value),
            StoredValue::parse(&best.value),
        ) {
            (Some(new), Some(old)) => new.decide(Some(&old)) == Decision::Replace,
            (Some(_), None) => true,
            _ => false,
        };
        if replaces {
            self.older.push((b, best.cas));
            self.best = Some((i, item));
        } else {
            self.older.push((i, item.cas));
            self.best = Some((b, best));
        }
        replaces
    }

    /// The first server that answered (the walk goes in list order).
    fn first_answered(&self, best: usize) -> usize {
        self.missed
            .iter()
            .copied()
            .chain(self.older.iter().map(|o| o.0))
            .fold(best, usize::min)
    }
}

impl SessionStore {
    /// The session's data, `None` for a miss.
    ///
    /// A miss is not proof that a session does not exist, and a hit is not
    /// proof that it is the newest: only a server *known complete* (its
    /// memcastd vouches for it with the warm sentinel, read in the same
    /// round trip) may answer alone. Past any other server (restarted,
    /// evicting, its memcastd away or partitioned) the walk goes on to the
    /// next servers until one known complete answers or all were asked;
    /// the newest copy seen is the session, written back into the servers
    /// that missed it (`add`) or held an older one (`cas`): read-repair.
    /// Ids this process just created need no confirmation. A miss that no
    /// other server can confirm is an error, never an empty session that
    /// could replace the real one elsewhere.
    ///
    /// Under a cluster-wide lock, the read also finds at least the last
    /// write made under that lock (its *write mark*), on any host: from its
    /// own memcached once replication brought it, or from the server that
    /// took it, waiting up to [`CATCH_UP_WAIT`]; past that (the write was
    /// lost) it goes on from the newest copy there is, with a warning.
    pub fn read(&mut self, id: &[u8], ttl: u64) -> Result<Option<Vec<u8>>, SessionError> {
        let started = Instant::now();
        loop {
            match self.read_step(id, ttl, started) {
                ReadStep::Done(read) => return read,
                ReadStep::Wait(wait) => std::thread::sleep(wait),
            }
        }
    }

    /// One try of [`SessionStore::read`], begun at `started`; the caller
    /// waits between tries ([`crate::ProcessStore::read_session`] with the
    /// store unlocked).
    pub fn read_step(&mut self, id: &[u8], ttl: u64, started: Instant) -> ReadStep {
        let key = self.key_for(id);
        let (mut state, mut stored) = match self.lookup_or_migrate(id, &key, Some(ttl)) {
            Ok(read) => read,
            Err(e) => return ReadStep::Done(Err(e)),
        };
        if let Some(mark) = self.locks.read_mark(&key).cloned() {
            if state.version.is_none_or(|v| v < mark.version) {
                match self.read_marked(&key, &mark) {
                    Ok((found, data)) => {
                        self.counters.lock_catch_ups += 1;
                        (state, stored) = (found, data);
                    }
                    Err(_) if started.elapsed() < CATCH_UP_WAIT => {
                        return ReadStep::Wait(CATCH_UP_POLL);
                    }
                    // Lost (its memcached restarted before replicating
                    // it, say): the newest copy there is, with a warning,
                    // rather than a session no request can read again.
                    Err(why) => {
                        self.counters.lock_writes_not_found += 1;
                        self.warnings.read = Some(
                            SessionError::BehindTheLock {
                                version: mark.version,
                                server: mark.server,
                                waited_ms: started.elapsed().as_millis(),
                                why,
                            }
                            .to_string(),
                        );
                    }
                }
            }
        }
        self.request.reads.insert(key, state);
        ReadStep::Done(Ok(stored))
    }

    /// The session as of the lock's write mark at least: from the server
    /// that took that write, this host's first server, or any other.
    /// `Err`: why none holds it yet.
    fn read_marked(
        &mut self,
        key: &[u8],
        mark: &WriteMark,
    ) -> Result<(ReadState, Option<Vec<u8>>), String> {
        let marked = self.servers.index_of(&mark.server);
        let mut why = Vec::new();
        if marked.is_none() {
            why.push(format!(
                "{} is not in this host's session.save_path",
                mark.server
            ));
        }
        // The server that took the write, this host's first, then the rest:
        // replication has put it on every other host by now, normally.
        let mut places: Vec<usize> = marked.into_iter().collect();
        for i in 0..self.servers.len() {
            if !places.contains(&i) {
                places.push(i);
            }
        }
        for i in places {
            match self.servers.try_one(i, |s| s.gets(key)) {
                Ok(Some(item)) => {
                    let version = StoredValue::parse(&item.value).map(|v| v.version);
                    if version.is_some_and(|v| v >= mark.version) {
                        let state = ReadState {
                            server: i,
                            expect: Expect::Cas(item.cas),
                            version,
                            created: false,
                        };
                        let data = self.open_data(key, &item.value, i);
                        return Ok((state, data));
                    }
                    why.push(format!("{} holds an older version", self.servers.name(i)));
                }
                Ok(None) => why.push(format!("{} does not hold it", self.servers.name(i))),
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(why.join("; "))
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
        let mut seen = Seen::default();
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
            if turn.failed_before > 0 || !seen.missed.is_empty() || seen.best.is_some() {
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
                if trust_miss || (complete && seen.best.is_none()) {
                    return Ok(Step::Done(match seen.best.take() {
                        Some((b, item)) => Found::Settled(b, item),
                        None => Found::Miss { answered: i },
                    }));
                }
                if complete {
                    // A copy seen earlier, on a server not known complete:
                    // every server is asked (below).
                    return Ok(Step::Next);
                }
                counters.cold_misses += 1;
                seen.missed.push(i);
                return Ok(Step::Next);
            };
            let checked = seen.best.is_some();
            if seen.hit(i, item) {
                counters.stale_hits += 1;
            }
            if checked {
                counters.checked_hits += 1;
            }
            // A refill (warm-up, anti-entropy, a repair) can put back an
            // older copy of a session whose newer one a restarted or
            // evicting memcached lost, and the peer it came from may itself
            // be behind: a hit counts alone only on the first server asked,
            // where memcastd vouches for it; past one that is not known
            // complete, every server is asked and the newest copy wins.
            let first_asked = !checked && seen.missed.is_empty();
            match seen.best.take() {
                Some((b, item)) if (vouch.is_some() && first_asked) || trust_miss => {
                    Ok(Step::Done(Found::Settled(b, item)))
                }
                best => {
                    seen.best = best;
                    Ok(Step::Next)
                }
            }
        });
        let (i, item) = match walk {
            Ok(Found::Miss { answered }) => {
                return Ok((miss_state(&seen.missed, answered), None));
            }
            Ok(Found::Settled(i, item)) => (i, item),
            Err(no_server) => match seen.best.take() {
                // Every server asked, none known complete: the newest copy.
                Some(best) => best,
                None => {
                    return match seen.missed.first() {
                        // Two servers agree, or there is no other server to ask.
                        Some(&first) if seen.missed.len() >= 2 || self.servers.len() == 1 => {
                            Ok((miss_state(&seen.missed, first), None))
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
            },
        };
        let version = StoredValue::parse(&item.value).map(|s| s.version);
        let first = seen.first_answered(i);
        let state = if first == i {
            ReadState {
                server: i,
                expect: Expect::Cas(item.cas),
                version,
                created: false,
            }
        } else {
            // Read-repair: the servers that missed or held an older copy
            // get the newest (cas: only if nothing newer came meanwhile).
            if let Some(ttl) = ttl {
                for &m in &seen.missed {
                    if let Some(Ok(_)) = self
                        .servers
                        .get_mut(m)
                        .map(|s| s.add(key, &item.value, ttl))
                    {
                        self.counters.read_repairs += 1;
                    }
                }
                for &(o, cas) in &seen.older {
                    if let Some(Ok(Reply::Stored)) = self
                        .servers
                        .get_mut(o)
                        .map(|s| s.cas(key, &item.value, ttl, cas))
                    {
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
        let header = &raw[..memcast_core::stored_value::HEADER_LEN];
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
            OpenError::UnknownFormat(_) => "unopened:unknown format",
            OpenError::InflatesOversized(_) | OpenError::DoesNotInflate => {
                "unopened:does not inflate"
            }
        };
        if self.warnings.first_time(kind) {
            self.warnings.read = Some(format!(
                "session {} on {}: the stored value {err}; read as a miss, never handed to PHP (counted in phpinfo: Sealed values not opened; warned once per process)",
                memcast_core::memcached_key::log_name(key),
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
