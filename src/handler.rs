//! How PHP sessions map onto memcached and the multicast group: the safe
//! half of the save handler. The FFI shell (`ffi.rs`) turns PHP's callbacks
//! into calls here and this module's errors into one PHP warning each.
//!
//! State lives for the whole PHP process (a php-fpm worker serves many
//! requests): connections, the server health table, the publisher socket and
//! the origin's clock. Only what one request read is reset at close.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use memcast_bus::{BusOptions, Publisher};
use memcast_core::host_counters::HostCounter;
use memcast_core::ini::ExtensionConfig;
use memcast_core::session_seal::{OpenError, SessionSeal};
use memcast_core::store::{Expect, Item};
use memcast_core::stored::Decision;
use memcast_core::{
    apply_create, apply_if_newer, Applied, FailoverList, Frame, Hlc, Keyring, Memcached, Op,
    Origin, ServerAddr, SharedKey, StoreError, StoredValue, Version,
};

/// Dropped frames are warned about at most this often per process.
const DROP_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Sessions whose dropped frames a process remembers, to send them again.
const MAX_UNSENT: usize = 1024;

/// A write whose frame the publisher did not take.
#[derive(Debug)]
struct Unsent {
    key: Vec<u8>,
    op: Op,
    ttl: u64,
}

/// Why a frame was not published.
#[derive(Debug)]
enum NotPublished {
    /// No usable key (warned about when the session opened).
    NoKey,
    /// The publisher could not be set up (warned about once per process).
    NoPublisher,
    /// The publisher refused it: the relay or PGM did not take it in time.
    NotTaken(String),
}

impl NotPublished {
    fn counter(&self) -> HostCounter {
        match self {
            NotPublished::NoKey => HostCounter::PublishFailedNoKey,
            NotPublished::NoPublisher => HostCounter::PublishFailedNoPublisher,
            NotPublished::NotTaken(_) => HostCounter::PublishFailedNotTaken,
        }
    }
}

/// How long a destroyed session's tombstone blocks late, older writes.
pub const TOMBSTONE_TTL: u64 = 300;

/// What this process did, shown by phpinfo().
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub reads_by_server: Vec<(String, u64)>,
    pub failovers: u64,
    /// Misses on a cold server that were asked of the next one.
    pub cold_misses: u64,
    pub read_repairs: u64,
    /// Misses on a server not known complete that no other server could
    /// confirm: the read failed rather than start an empty session.
    pub unconfirmed_misses: u64,
    /// Hits on a server not known complete that were checked against the
    /// next server, and of those, the ones where it held a newer session.
    pub checked_hits: u64,
    pub stale_hits: u64,
    /// Writes that began from a miss and found a live session: not stored.
    pub conflicts: u64,
    /// Sessions found only under the other handler's key
    /// (`memcast.migrate_from`), read as the oldest version.
    pub migrated_reads: u64,
    /// Sealed values that did not open (altered, moved, or under a key no
    /// longer accepted): misses, never handed to PHP.
    pub unopened: u64,
    pub writes: u64,
    pub write_failures: u64,
    pub published: u64,
    pub publish_drops: u64,
    /// Sessions sent again (as stored now) after their frame was dropped.
    pub resent: u64,
    /// Dropped frames not remembered for sending again (over [`MAX_UNSENT`]).
    pub unsent_forgotten: u64,
    pub lock_waits: u64,
    pub lock_failures: u64,
    pub lock_wait_ms_total: u64,
    pub lock_wait_ms_max: u64,
}

/// A lock this request holds.
#[derive(Debug)]
struct HeldLock {
    server: usize,
    key: Vec<u8>,
    token: Vec<u8>,
    /// The lock item's CAS token, released with `md C<cas>` in one round trip.
    cas: Option<u64>,
}

/// What the lock's round trip read for the session, used by the read that
/// follows instead of asking again.
struct Prefetched {
    server: usize,
    key: Vec<u8>,
    item: Option<Item>,
    warm: Option<memcast_core::store::Vouch>,
}

/// What the last read of a session found, so the write can be conditional
/// on it (one round trip) and versioned after it.
#[derive(Debug, Clone, Copy)]
struct ReadState {
    server: usize,
    expect: Expect,
    version: Option<Version>,
    /// The read was a miss: the write creates the session, and is stored
    /// (here and at every replica) only where no live session exists.
    created: bool,
}

/// Which key files, and whether to encrypt: when any differs, the keys are
/// loaded again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyFiles {
    current: PathBuf,
    accepted: Option<PathBuf>,
    encrypt: bool,
}

/// How often a long-lived process looks whether its key files changed (a
/// key rotation replaces them): one `stat` per file at most this often.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The keys loaded from the key files, and what the files looked like then.
struct LoadedKeys {
    files: KeyFiles,
    stamps: Vec<Option<(std::time::SystemTime, u64, u64)>>,
    checked: std::cell::Cell<Instant>,
    keys: Result<Keyring, String>,
    /// Built with the keys: hashing ids and sealing values (see `session_seal`).
    seal: Option<SessionSeal>,
}

impl LoadedKeys {
    fn load(files: KeyFiles) -> LoadedKeys {
        let stamps = LoadedKeys::stamps(&files);
        let keys = SharedKey::from_file(&files.current)
            .and_then(|current| {
                let accepted = match &files.accepted {
                    Some(p) => Some(SharedKey::from_file(p)?),
                    None => None,
                };
                Ok(Keyring::new(current, accepted, files.encrypt))
            })
            .map_err(|e| e.to_string());
        let seal = keys.as_ref().ok().map(SessionSeal::new);
        LoadedKeys {
            files,
            stamps,
            checked: std::cell::Cell::new(Instant::now()),
            keys,
            seal,
        }
    }

    fn stamps(files: &KeyFiles) -> Vec<Option<(std::time::SystemTime, u64, u64)>> {
        use std::os::unix::fs::MetadataExt;
        std::iter::once(&files.current)
            .chain(files.accepted.as_ref())
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len(), m.ino()))
            })
            .collect()
    }

    /// Whether a key file was replaced or rewritten since it was loaded
    /// (looked at no more than once per [`KEY_CHECK_EVERY`]).
    fn changed(&self) -> bool {
        if self.checked.get().elapsed() < KEY_CHECK_EVERY {
            return false;
        }
        self.checked.set(Instant::now());
        LoadedKeys::stamps(&self.files) != self.stamps
    }
}

pub struct SessionStore {
    config: Option<ExtensionConfig>,
    save_path: String,
    list: FailoverList,
    servers: Vec<Memcached>,
    reads: HashMap<Vec<u8>, ReadState>,
    /// Keys of ids this process created (and found free) in this request.
    fresh: HashSet<Vec<u8>>,
    /// Sessions read in this request that were sealed under an older,
    /// still accepted key: written whole at close even when unchanged
    /// (`session.lazy_write`), so a key roll can drop the old key.
    reseal: HashSet<Vec<u8>>,
    locks: Vec<HeldLock>,
    prefetched: Option<Prefetched>,
    origin: Origin,
    clock: Hlc,
    keys: Option<LoadedKeys>,
    publisher: Option<(String, Result<Publisher, String>)>,
    /// Writes whose frames were dropped, sent again once sending works.
    unsent: Vec<Unsent>,
    warned: Vec<String>,
    last_drop_warning: Option<Instant>,
    pending_warning: Option<String>,
    /// A value under the other handler's key that could not be read.
    read_warning: Option<String>,
    counters: Counters,
}

impl Default for SessionStore {
    fn default() -> Self {
        SessionStore::new()
    }
}

impl SessionStore {
    pub fn new() -> SessionStore {
        let origin = Origin::new();
        let clock = Hlc::new(origin.id);
        SessionStore {
            config: None,
            save_path: String::new(),
            list: FailoverList::new(Vec::new(), Default::default()),
            servers: Vec::new(),
            reads: HashMap::new(),
            fresh: HashSet::new(),
            reseal: HashSet::new(),
            locks: Vec::new(),
            prefetched: None,
            origin,
            clock,
            keys: None,
            publisher: None,
            unsent: Vec::new(),
            warned: Vec::new(),
            last_drop_warning: None,
            pending_warning: None,
            read_warning: None,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.reads_by_server = self
            .servers
            .iter()
            .zip(self.counters.reads_by_server.iter())
            .map(|(s, (_, n))| (s.addr().to_string(), *n))
            .collect();
        c
    }

    pub fn origin_id(&self) -> u64 {
        self.origin.id
    }

    /// Applies the current settings and `session.save_path`. Returns warnings
    /// that are new to this process (each is shown once per process).
    pub fn open(
        &mut self,
        config: ExtensionConfig,
        save_path: &str,
    ) -> Result<Vec<String>, String> {
        if save_path != self.save_path || self.servers.is_empty() {
            let servers = ServerAddr::parse_list(save_path)
                .map_err(|e| format!("session.save_path {save_path:?}: {e}"))?;
            self.servers = servers
                .iter()
                .map(|a| Memcached::new(a.clone(), config.timeouts))
                .collect();
            self.counters.reads_by_server = servers.iter().map(|a| (a.to_string(), 0)).collect();
            self.list = FailoverList::new(servers, config.retry_interval);
            self.save_path = save_path.to_owned();
        }
        self.list.set_retry_interval(config.retry_interval);
        for s in &mut self.servers {
            s.set_timeouts(config.timeouts);
        }
        let mut notices = Vec::new();
        // The keys are loaded whenever a key file is set: they sign frames,
        // and (memcast.seal) hash ids and seal values even without publishing.
        match &config.key_file {
            None => {
                self.keys = None;
                if config.publish.is_some() {
                    notices.push("memcast.publish is set but memcast.key_file is not: sessions are stored locally and not replicated (frames are never sent unsigned)".to_string());
                }
            }
            Some(path) => {
                let files = KeyFiles {
                    current: path.clone(),
                    accepted: config.accept_key_file.clone(),
                    encrypt: config.encrypt,
                };
                let stale = match &self.keys {
                    Some(k) => k.files != files || k.changed(),
                    None => true,
                };
                if stale {
                    self.keys = Some(LoadedKeys::load(files));
                }
                match self.keys.as_ref().map(|k| &k.keys) {
                    Some(Err(e)) => {
                        let unsealed = if config.seal { ", unsealed," } else { "" };
                        if config.publish.is_some() {
                            notices.push(format!(
                                "{e}: sessions are stored locally{unsealed} and not replicated"
                            ))
                        } else if config.seal {
                            notices.push(format!("{e}: sessions are stored unsealed"))
                        }
                    }
                    Some(Ok(ring)) => {
                        let paths = std::iter::once(path).chain(config.accept_key_file.as_ref());
                        for path in paths {
                            let mode = memcast_core::shared_key::file_mode(path);
                            if mode & 0o007 != 0 {
                                notices.push(format!(
                                    "key file {}: mode {:04o} lets every user on this host read the cluster key; chmod 640 or 600",
                                    path.display(),
                                    mode & 0o7777
                                ));
                            }
                        }
                        let mut keys = ring.keys();
                        if let (true, Some(current), Some(accepted)) =
                            (config.seal, keys.next(), keys.next())
                        {
                            if current.session_id_key() != accepted.session_id_key() {
                                notices.push(format!(
                                    "memcast.key_file {} and memcast.accept_key_file {} hash session ids differently: sessions stored under one are not found under the other; make the new key from a copy of the old one (cp OLD NEW; memcastd keygen --force NEW), which keeps the session-id key",
                                    path.display(),
                                    config.accept_key_file.as_ref().map_or(String::new(), |p| p.display().to_string())
                                ));
                            }
                        }
                    }
                    None => {}
                }
            }
        }
        if let Some(endpoint) = &config.publish {
            if self.publisher.as_ref().map(|(e, _)| e) != Some(endpoint) {
                self.publisher = None; // connected lazily, at the first write
            }
        }
        self.config = Some(config);
        notices.retain(|n| !self.warned.contains(n));
        self.warned.extend(notices.iter().cloned());
        Ok(notices)
    }

    /// Releases this request's locks and forgets what it read; connections
    /// stay open.
    pub fn close(&mut self) {
        self.unlock_all();
        self.reads.clear();
        self.fresh.clear();
        self.reseal.clear();
    }

    /// Takes the session's lock in the first server that answers: `add` of a
    /// token unique to this request, retried with exponential backoff and
    /// jitter. Returns how long it waited.
    pub fn lock(&mut self, id: &[u8]) -> Result<Duration, String> {
        let Some(cfg) = self.config.clone() else {
            return Ok(Duration::ZERO);
        };
        if !cfg.locking {
            return Ok(Duration::ZERO);
        }
        let session_key = self.key_for(id);
        let key = [session_key.as_slice(), b".lock"].concat();
        if self.locks.iter().any(|held| held.key == key) {
            // PHP reads the same session again without closing it
            // (session_reset()): the lock is ours already, and waiting for
            // it would be waiting on ourselves.
            return Ok(Duration::ZERO);
        }
        let token = format!("{:016x}", memcast_core::origin::random_u64()).into_bytes();
        let started = Instant::now();
        let mut wait = cfg.lock_wait_min;
        let mut tried = Vec::new();
        for attempt in 0..=cfg.lock_retries {
            let Some(i) = self.list.candidates(Instant::now()).first().copied() else {
                return Err(format!("cannot lock session: {}", self.no_server(tried)));
            };
            // The lock, and the session read in the same round trip.
            let answer = self.servers[i].lock_and_gets_checking_warm(
                &key,
                &token,
                cfg.lock_expire,
                &session_key,
            );
            match answer {
                Ok((Some(cas), item, warm)) => {
                    self.list.mark_ok(i);
                    self.prefetched = Some(Prefetched {
                        server: i,
                        key: session_key,
                        item,
                        warm,
                    });
                    self.locks.push(HeldLock {
                        server: i,
                        key,
                        token,
                        cas: Some(cas),
                    });
                    let waited = started.elapsed();
                    self.counters.lock_wait_ms_total += waited.as_millis() as u64;
                    self.counters.lock_wait_ms_max = self
                        .counters
                        .lock_wait_ms_max
                        .max(waited.as_millis() as u64);
                    return Ok(waited);
                }
                Ok((None, _, _)) if attempt < cfg.lock_retries => {
                    self.counters.lock_waits += 1;
                    // Full jitter in [wait/2, wait], so waiters do not retry in step.
                    let half = wait / 2;
                    let jitter = Duration::from_micros(
                        memcast_core::origin::random_u64() % (half.as_micros() as u64 + 1),
                    );
                    std::thread::sleep(half + jitter);
                    wait = (wait * 2).min(cfg.lock_wait_max);
                }
                Ok((None, _, _)) => break,
                Err(e) => {
                    self.note_failure(i, &e);
                    tried.push((i, e.to_string()));
                    if !e.is_server_failure() {
                        return Err(format!("cannot lock session: {e}"));
                    }
                }
            }
        }
        self.counters.lock_failures += 1;
        Err(format!(
            "cannot lock session: another request of this session held it for {} ms ({} tries; memcast.lock_retries, memcast.lock_wait_max)",
            started.elapsed().as_millis(),
            cfg.lock_retries + 1
        ))
    }

    /// Releases the locks this request took, and only those: a lock that
    /// expired and was taken by another request carries another token.
    fn unlock_all(&mut self) {
        self.prefetched = None;
        for lock in std::mem::take(&mut self.locks) {
            let mc = &mut self.servers[lock.server];
            match lock.cas {
                // Our lock is the item with this CAS: gone if anyone took
                // it over after it expired.
                Some(cas) => {
                    let _ = mc.delete_if_cas(&lock.key, cas);
                }
                None => {
                    if let Ok(Some(item)) = mc.gets(&lock.key) {
                        if item.value == lock.token {
                            let _ = mc.delete_if_unchanged(&lock.key, item.cas);
                        }
                    }
                }
            }
        }
    }

    fn key_for(&self, id: &[u8]) -> Vec<u8> {
        let prefix = self
            .config
            .as_ref()
            .map_or("memcast.sess.", |c| c.prefix.as_str());
        match self.seal() {
            Some(seal) => seal.memcached_key(prefix.as_bytes(), id),
            None => [prefix.as_bytes(), id].concat(),
        }
    }

    /// The sealing keys, when sessions are sealed (`memcast.seal` and a
    /// usable key file).
    fn seal(&self) -> Option<&SessionSeal> {
        if !self
            .config
            .as_ref()
            .is_some_and(|c| c.seal && c.key_file.is_some())
        {
            return None;
        }
        self.keys.as_ref().and_then(|k| k.seal.as_ref())
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
                    self.reseal.insert(key.to_vec());
                }
                return Some(data);
            }
            Err(e) => e,
        };
        self.counters.unopened += 1;
        self.count_on_host(HostCounter::SealedUnopened, 1);
        let kind = match err {
            OpenError::NotSealed => "unopened:not sealed",
            OpenError::UnknownKey(_) => "unopened:unknown key",
            OpenError::Tampered => "unopened:tampered",
        };
        if !self.warned.iter().any(|w| w == kind) {
            self.warned.push(kind.to_string());
            self.read_warning = Some(format!(
                "session {} on {}: the stored value {err}; read as a miss, never handed to PHP (counted in phpinfo: Sealed values not opened; warned once per process)",
                memcast_core::session_key::log_name(key),
                self.servers.get(server).map_or(String::new(), |s| s.addr().to_string()),
            ));
        }
        None
    }

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
    pub fn read(&mut self, id: &[u8], ttl: u64) -> Result<Option<Vec<u8>>, String> {
        let key = self.key_for(id);
        let (state, stored) = self.lookup_or_migrate(id, &key, Some(ttl))?;
        self.reads.insert(key, state);
        Ok(stored)
    }

    /// [`SessionStore::lookup`], and on a miss it trusts, with
    /// `memcast.migrate_from` set, the other handler's key: a session found
    /// only there is the oldest version of this one. Its write is a normal
    /// write after a read (not a create: the session exists), so it
    /// replaces nothing newer that memcast wrote and spreads as any write.
    fn lookup_or_migrate(
        &mut self,
        id: &[u8],
        key: &[u8],
        ttl: Option<u64>,
    ) -> Result<(ReadState, Option<Vec<u8>>), String> {
        let (state, stored) = self.lookup(key, ttl)?;
        // A hit, a tombstone (destroyed since), or an id this process made.
        if !state.created || self.fresh.contains(key) {
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

    /// The session the other handler (`memcast.migrate_from`) stored under
    /// this id: it hashed each session onto one server of its pool, so every
    /// server that answers is asked until one holds it. A value that is not
    /// a session it writes is left alone, with one warning, and the session
    /// starts empty.
    fn read_legacy(&mut self, id: &[u8]) -> Option<Vec<u8>> {
        let legacy = self.legacy()?;
        let cfg = self.config.as_ref()?;
        let max = cfg.max_session_size;
        let key = legacy.key_for(id);
        for i in self.list.candidates(Instant::now()) {
            match self.servers[i].gets(&key) {
                Ok(None) => self.list.mark_ok(i),
                Ok(Some(item)) => {
                    self.list.mark_ok(i);
                    return match legacy.decode(item.value, item.flags, max) {
                        Ok(data) => Some(data),
                        Err(memcast_core::legacy::LegacyError::Destroyed) => None,
                        Err(e) => {
                            self.read_warning = Some(format!(
                                "{} on {}: {e}; not read, the session starts empty (memcast.migrate_from = {})",
                                String::from_utf8_lossy(&key),
                                self.servers[i].addr(),
                                legacy.handler.save_handler()
                            ));
                            None
                        }
                    };
                }
                Err(e) => self.note_failure(i, &e),
            }
        }
        None
    }

    /// Deletes the other handler's copy of a destroyed session on every
    /// server that answers, so it cannot come back from there.
    fn destroy_legacy(&mut self, id: &[u8]) {
        let Some(legacy) = self.legacy() else {
            return;
        };
        let key = legacy.key_for(id);
        for i in self.list.candidates(Instant::now()) {
            match self.servers[i].delete(&key) {
                Ok(_) => self.list.mark_ok(i),
                Err(e) => self.note_failure(i, &e),
            }
        }
    }

    /// Where `memcast.migrate_from` reads. memcast's own unsealed sessions
    /// only while sessions are sealed: unsealed, that key is memcast's own.
    fn legacy(&self) -> Option<memcast_core::legacy::LegacySessions> {
        let legacy = self.config.as_ref()?.migrate_from.clone()?;
        let own = legacy.handler == memcast_core::legacy::LegacyHandler::MemcastUnsealed;
        (!own || self.seal().is_some()).then_some(legacy)
    }

    /// Why a value under the other handler's key was not read, once.
    pub fn take_read_warning(&mut self) -> Option<String> {
        self.read_warning.take()
    }

    /// Walks the servers for `key` as [`SessionStore::read`] describes:
    /// what the write should expect, and the live session's data if any.
    /// Read-repair needs the session's TTL; without one it is left to the
    /// read that follows.
    fn lookup(
        &mut self,
        key: &[u8],
        ttl: Option<u64>,
    ) -> Result<(ReadState, Option<Vec<u8>>), String> {
        let warm_check = self.config.as_ref().is_none_or(|c| c.warm_check);
        // A miss is trusted at once for an id this process just created,
        // or where no memcastd vouches for anything (warm_check off).
        let trust_miss = !warm_check || self.fresh.contains(key);
        let mut tried = Vec::new();
        let mut missed: Vec<usize> = Vec::new();
        let mut prefetched = self.prefetched.take().filter(|p| p.key == key);
        for i in self.list.candidates(Instant::now()) {
            let answer = match prefetched.take() {
                Some(p) if p.server == i => Ok((p.item, p.warm)),
                _ if trust_miss => self.servers[i].gets(key).map(|found| (found, None)),
                _ => self.servers[i].gets_checking_warm(key),
            };
            let (found, vouch) = match answer {
                Ok(a) => a,
                Err(e) => {
                    self.note_failure(i, &e);
                    tried.push((i, e.to_string()));
                    if !e.is_server_failure() {
                        break;
                    }
                    continue;
                }
            };
            self.list.mark_ok(i);
            if let Some(r) = self.counters.reads_by_server.get_mut(i) {
                r.1 += 1;
            }
            if !tried.is_empty() || !missed.is_empty() {
                self.counters.failovers += 1;
            }
            let Some(item) = found else {
                // Vouched for, and nothing evicted since memcastd looked.
                let complete = vouch.is_some_and(|v| {
                    self.servers[i].still_complete(v).unwrap_or_else(|e| {
                        self.note_failure(i, &e);
                        false
                    })
                });
                if complete || trust_miss {
                    return Ok((self.miss_state(&missed, i), None));
                }
                self.counters.cold_misses += 1;
                missed.push(i);
                continue;
            };
            // A hit on a server not known complete may be older than the
            // session elsewhere: a refill (warm-up, anti-entropy, a repair)
            // can put back an older copy of a session whose newer one this
            // memcached lost to a restart or an eviction.
            if missed.is_empty() && !trust_miss && vouch.is_none() {
                if let Some((state, data)) = self.newer_elsewhere(key, ttl, i, &item) {
                    return Ok((state, data));
                }
            }
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
                            if self.servers[m].add(key, &item.value, ttl).is_ok() {
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
            return Ok((state, data));
        }
        match missed.first() {
            // Two servers agree, or there is no other server to ask.
            Some(&first) if missed.len() >= 2 || self.servers.len() == 1 => {
                Ok((self.miss_state(&missed, first), None))
            }
            Some(&first) => {
                self.counters.unconfirmed_misses += 1;
                Err(format!(
                    "cannot read session: {} does not hold it but is not known complete (restarted, evicting, or its memcastd is away), and no other server could confirm the miss ({}); not starting an empty session that could replace the real one",
                    self.servers[first].addr(),
                    self.no_server(tried)
                ))
            }
            None => Err(format!("cannot read session: {}", self.no_server(tried))),
        }
    }

    /// Asks the server after `local` (which hit but is not known complete)
    /// for the same session: if it holds one that would replace `item`
    /// (`StoredValue::decide`), that one is read and written back into
    /// `local` (cas: only if `item` is still there). A server that does not
    /// answer is skipped; with none to ask, the hit stands.
    fn newer_elsewhere(
        &mut self,
        key: &[u8],
        ttl: Option<u64>,
        local: usize,
        item: &Item,
    ) -> Option<(ReadState, Option<Vec<u8>>)> {
        let held = StoredValue::parse(&item.value)?;
        let next: Vec<usize> = self
            .list
            .candidates(Instant::now())
            .into_iter()
            .filter(|&j| j > local)
            .collect();
        for j in next {
            let other = match self.servers[j].gets(key) {
                Ok(found) => {
                    self.list.mark_ok(j);
                    found
                }
                Err(e) => {
                    self.note_failure(j, &e);
                    continue;
                }
            };
            self.counters.checked_hits += 1;
            let other = other?;
            let newer = StoredValue::parse(&other.value)?;
            if newer.decide(Some(&held)) != Decision::Replace {
                return None;
            }
            self.counters.stale_hits += 1;
            if let Some(ttl) = ttl {
                if self.servers[local]
                    .cas(key, &other.value, ttl, item.cas)
                    .is_ok()
                {
                    self.counters.read_repairs += 1;
                }
            }
            let state = ReadState {
                server: local,
                expect: Expect::Unknown,
                version: Some(newer.version),
                created: false,
            };
            let data = self.open_data(key, &other.value, j);
            return Some((state, data));
        }
        None
    }

    /// A miss the request may trust: its write creates the session, on the
    /// first server that answered.
    fn miss_state(&self, missed: &[usize], answered: usize) -> ReadState {
        ReadState {
            server: missed.first().copied().unwrap_or(answered),
            expect: Expect::Missing,
            version: None,
            created: true,
        }
    }

    /// Stores the session in the first server that takes it, then publishes it.
    pub fn write(&mut self, id: &[u8], data: &[u8], ttl: u64) -> Result<(), String> {
        let max = self
            .config
            .as_ref()
            .map_or(usize::MAX, |c| c.max_session_size);
        if data.len() > max {
            return Err(format!(
                "session data of {} bytes is over memcast.max_session_size ({max} bytes): not stored, the previous version is kept",
                data.len()
            ));
        }
        let key = self.key_for(id);
        let read = self.reads.get(&key).copied();
        let created = read.is_some_and(|r| r.created);
        let version = self.clock.next(read.and_then(|r| r.version));
        // Sealed, the data is bound to the header as stored: a create is
        // stored with its flag (`apply_create`).
        let sealed = self.seal().map(|seal| {
            let header = StoredValue {
                created,
                ..StoredValue::live(version, &[])
            }
            .header();
            seal.seal(&key, &header, data)
        });
        let data = sealed.as_deref().unwrap_or(data);
        let value = StoredValue::live(version, data);
        self.store(&key, &value, ttl, read, created)?;
        let state = ReadState {
            server: usize::MAX,
            expect: Expect::Unknown,
            version: Some(version),
            created: false,
        };
        self.reads.insert(key.clone(), state);
        // A write that began from a miss tells every replica so: it is
        // applied only where no live session exists.
        let op = if created { Op::Create } else { Op::Set };
        self.publish(op, key, data.to_vec(), ttl, version);
        Ok(())
    }

    /// `session.lazy_write`: the data did not change, so only the expiry
    /// moves; a session read sealed under an older key is written whole,
    /// sealed under the current one.
    pub fn touch(&mut self, id: &[u8], data: &[u8], ttl: u64) -> Result<(), String> {
        let key = self.key_for(id);
        if self.reseal.remove(&key) {
            return self.write(id, data, ttl);
        }
        let mut tried = Vec::new();
        for i in self.list.candidates(Instant::now()) {
            match self.servers[i].touch(&key, ttl) {
                Ok(true) => {
                    self.list.mark_ok(i);
                    let version = self
                        .reads
                        .get(&key)
                        .and_then(|r| r.version)
                        .unwrap_or(Version::ZERO);
                    self.publish(Op::Touch, key, Vec::new(), ttl, version);
                    return Ok(());
                }
                // Gone meanwhile (expired, or a cold server): write it whole.
                Ok(false) => return self.write(id, data, ttl),
                Err(e) => {
                    self.note_failure(i, &e);
                    tried.push((i, e.to_string()));
                }
            }
        }
        self.counters.write_failures += 1;
        Err(format!("cannot store session: {}", self.no_server(tried)))
    }

    /// Leaves a tombstone (so a late, older write cannot bring the session
    /// back) and publishes the delete.
    pub fn destroy(&mut self, id: &[u8]) -> Result<(), String> {
        let key = self.key_for(id);
        let read = self.reads.remove(&key);
        let version = self.clock.next(read.and_then(|r| r.version));
        let tombstone = StoredValue::tombstone(version);
        self.store(&key, &tombstone, TOMBSTONE_TTL, read, false)?;
        self.publish(Op::Delete, key, Vec::new(), TOMBSTONE_TTL, version);
        self.destroy_legacy(id);
        Ok(())
    }

    /// Whether a live session with this id exists (strict mode). An
    /// unreachable cluster answers `Err`.
    /// A miss is confirmed as for a read, so that a restarted memcached does
    /// not make strict mode throw a live session away.
    /// A session only the other handler holds (`memcast.migrate_from`)
    /// exists too: strict mode keeps its id.
    pub fn exists(&mut self, id: &[u8]) -> Result<bool, String> {
        let key = self.key_for(id);
        Ok(self.lookup_or_migrate(id, &key, None)?.1.is_some())
    }

    /// Whether an id is taken by a live session or a tombstone (new ids
    /// must not collide); an unreachable cluster takes nothing. An id found
    /// free is remembered as created by this process: its first read needs
    /// no confirmation of the miss.
    pub fn id_taken(&mut self, id: &[u8]) -> bool {
        let taken = self.peek(id).is_ok_and(|raw| raw.is_some());
        if !taken {
            let key = self.key_for(id);
            self.fresh.insert(key);
        }
        taken
    }

    /// What the first server that answers holds for a session id.
    fn peek(&mut self, id: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let key = self.key_for(id);
        let mut tried = Vec::new();
        for i in self.list.candidates(Instant::now()) {
            match self.servers[i].get(&key) {
                Ok(raw) => {
                    self.list.mark_ok(i);
                    return Ok(raw);
                }
                Err(e) => {
                    self.note_failure(i, &e);
                    tried.push((i, e.to_string()));
                }
            }
        }
        Err(self.no_server(tried))
    }

    fn store(
        &mut self,
        key: &[u8],
        value: &StoredValue<'_>,
        ttl: u64,
        read: Option<ReadState>,
        created: bool,
    ) -> Result<(), String> {
        let mut tried = Vec::new();
        for i in self.list.candidates(Instant::now()) {
            let expect = match read {
                Some(r) if r.server == i => r.expect,
                _ => Expect::Unknown,
            };
            let applied = if created {
                apply_create(&mut self.servers[i], key, value, ttl, expect)
            } else {
                apply_if_newer(&mut self.servers[i], key, value, ttl, expect)
            };
            match applied {
                // A create found a live session, or a newer write than its
                // own: from this request's view the session was not new.
                Ok(Applied::Conflict { .. }) | Ok(Applied::SkippedOlder { .. }) if created => {
                    self.list.mark_ok(i);
                    self.counters.write_failures += 1;
                    self.counters.conflicts += 1;
                    return Err(format!(
                        "session not stored: this request started it as new (a miss), but {} now holds a session with this id; it is kept and this request's write is dropped",
                        self.servers[i].addr()
                    ));
                }
                Ok(_) => {
                    self.list.mark_ok(i);
                    self.counters.writes += 1;
                    if !tried.is_empty() {
                        self.counters.failovers += 1;
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.note_failure(i, &e);
                    tried.push((i, e.to_string()));
                }
            }
        }
        self.counters.write_failures += 1;
        Err(format!("cannot store session: {}", self.no_server(tried)))
    }

    /// A server that timed out or broke a reply is skipped for
    /// `memcast.retry_interval`; one that refused or closed the connection
    /// at once (`is_immediate`: a memcached restarting) only briefly.
    fn note_failure(&mut self, i: usize, e: &StoreError) {
        if e.is_immediate() {
            self.list
                .mark_failed_briefly(i, Instant::now(), e.to_string());
        } else if e.is_server_failure() {
            self.list.mark_failed(i, Instant::now(), e.to_string());
        }
    }

    /// "no memcached server accepted it (tried ...; skipped ...)": every
    /// server named, with what happened to it.
    fn no_server(&self, tried: Vec<(usize, String)>) -> String {
        let retry_ms = self
            .config
            .as_ref()
            .map_or(0, |c| c.retry_interval.as_millis());
        let skipped: Vec<String> = self
            .list
            .skipped(Instant::now())
            .iter()
            .filter(|s| !tried.iter().any(|(i, _)| *i == s.index))
            .map(|s| {
                let ago = retry_ms.saturating_sub(s.retry_in.as_millis());
                format!("{} (failed {ago} ms ago: {})", s.addr, s.last_error)
            })
            .collect();
        let mut parts = Vec::new();
        if !tried.is_empty() {
            let tried: Vec<String> = tried.into_iter().map(|(_, e)| e).collect();
            parts.push(format!("tried {}", tried.join("; ")));
        }
        if !skipped.is_empty() {
            parts.push(format!("skipped {}", skipped.join("; ")));
        }
        format!("no memcached server accepted it ({})", parts.join("; "))
    }

    /// Publishes one write. A frame the publisher could not take (the relay
    /// away, a full send queue) is remembered by its key, and once sending
    /// works again the session as stored now is sent again: a write is never
    /// left unreplicated just because it happened while memcastd restarted.
    fn publish(&mut self, op: Op, key: Vec<u8>, value: Vec<u8>, ttl: u64, version: Version) {
        if self
            .config
            .as_ref()
            .and_then(|c| c.publish.as_ref())
            .is_none()
        {
            return;
        }
        match self.send_frame(op, key.clone(), value, ttl, version) {
            Ok(()) => {
                self.counters.published += 1;
                if !self.unsent.is_empty() {
                    self.send_unsent();
                }
            }
            Err(e) => {
                self.counters.publish_drops += 1;
                self.count_on_host(e.counter(), 1);
                self.remember_unsent(Unsent { key, op, ttl });
                // At most one warning per process per interval: an
                // absent memcastd must not flood the log.
                let due = self
                    .last_drop_warning
                    .is_none_or(|t| t.elapsed() >= DROP_WARNING_EVERY);
                if let (true, NotPublished::NotTaken(e)) = (due, e) {
                    self.last_drop_warning = Some(Instant::now());
                    self.pending_warning = Some(format!(
                        "{e} (the session is stored locally and is sent again once the publisher takes frames; {} frames dropped by this process so far)",
                        self.counters.publish_drops
                    ));
                }
            }
        }
    }

    /// Seals and sends one frame.
    fn send_frame(
        &mut self,
        op: Op,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: u64,
        version: Version,
    ) -> Result<(), NotPublished> {
        let Some(config) = &self.config else {
            return Err(NotPublished::NoPublisher);
        };
        let Some(endpoint) = config.publish.clone() else {
            return Err(NotPublished::NoPublisher);
        };
        let Some(Ok(keyring)) = self.keys.as_ref().map(|k| &k.keys) else {
            return Err(NotPublished::NoKey);
        };
        let frame = Frame {
            op,
            origin: self.origin.id,
            epoch: self.origin.epoch,
            seq: self.origin.next_seq(),
            version,
            ttl: ttl.min(u32::MAX as u64) as u32,
            key,
            value,
        };
        let bytes = frame.seal(keyring);
        if self.publisher.is_none() {
            let opts = BusOptions {
                rate_kbps: config.pgm_rate_kbps,
                recovery_ms: config.pgm_recovery_ms,
                sndhwm: config.send_hwm,
                linger_ms: config.linger_ms,
                send_timeout_ms: config.relay_timeout_ms,
                ..BusOptions::default()
            };
            // A multicast group directly, or the local memcastd (host relay).
            let connected = if memcast_bus::is_multicast_endpoint(&endpoint) {
                Publisher::connect(&endpoint, &opts)
            } else {
                Publisher::relay(&endpoint, &opts)
            }
            .map_err(|e| e.to_string());
            self.publisher = Some((endpoint, connected));
        }
        match &self.publisher {
            Some((_, Ok(p))) => p
                .send(&bytes)
                .map_err(|e| NotPublished::NotTaken(e.to_string())),
            _ => Err(NotPublished::NoPublisher),
        }
    }

    fn remember_unsent(&mut self, entry: Unsent) {
        if let Some(held) = self.unsent.iter_mut().find(|u| u.key == entry.key) {
            // A create stays a create until it was sent.
            let op = if held.op == Op::Create && entry.op != Op::Delete {
                Op::Create
            } else {
                entry.op
            };
            *held = Unsent { op, ..entry };
        } else if self.unsent.len() < MAX_UNSENT {
            self.unsent.push(entry);
        } else {
            // Beyond this, peers' snapshot of a restarted relay and
            // anti-entropy are what catch up.
            self.counters.unsent_forgotten += 1;
            self.count_on_host(HostCounter::UnsentForgotten, 1);
        }
    }

    /// Counts in the local memcached (the first server), where this host's
    /// memcastd reads and exports it, even while no memcastd runs (see
    /// [`memcast_core::host_counters`]). Skipped while that server is failed
    /// over: a count elsewhere would be exported by another host.
    fn count_on_host(&mut self, counter: HostCounter, n: u64) {
        if n == 0 || !self.list.candidates(Instant::now()).contains(&0) {
            return;
        }
        let Some(local) = self.servers.first_mut() else {
            return;
        };
        if let Err(e) = counter.add(local, n) {
            self.note_failure(0, &e);
        }
    }

    /// Sends again, as stored now, the sessions whose frames were dropped.
    fn send_unsent(&mut self) {
        let before = self.counters.resent;
        self.send_unsent_now();
        self.count_on_host(HostCounter::Resent, self.counters.resent - before);
    }

    fn send_unsent_now(&mut self) {
        let mut todo = std::mem::take(&mut self.unsent).into_iter();
        while let Some(entry) = todo.next() {
            let raw = self
                .list
                .candidates(Instant::now())
                .into_iter()
                .find_map(|i| self.servers[i].get(&entry.key).ok());
            let Some(raw) = raw else {
                self.unsent.push(entry); // no server answered: later
                continue;
            };
            // Gone since (expired, evicted): nothing to send.
            let Some(stored) = raw.as_deref().and_then(StoredValue::parse) else {
                continue;
            };
            // What the stored value is says how it spreads (a value created
            // from a miss stays a create until a request writes it again).
            let (op, value) = if stored.tombstone {
                (Op::Delete, Vec::new())
            } else if stored.created {
                (Op::Create, stored.data.to_vec())
            } else {
                (Op::Set, stored.data.to_vec())
            };
            let sent = self.send_frame(op, entry.key.clone(), value, entry.ttl, stored.version);
            match sent {
                Ok(()) => self.counters.resent += 1,
                Err(_) => {
                    self.unsent.push(entry);
                    self.unsent.extend(todo);
                    return;
                }
            }
        }
    }

    /// A publisher that failed to connect (once per process), or a dropped
    /// frame (at most once per process per [`DROP_WARNING_EVERY`]).
    pub fn take_publish_error(&mut self) -> Option<String> {
        if let Some(w) = self.pending_warning.take() {
            return Some(w);
        }
        let msg = match &self.publisher {
            Some((endpoint, Err(e))) => format!(
                "memcast.publish {endpoint:?}: {e}: sessions are stored locally and not replicated"
            ),
            _ => return None,
        };
        if self.warned.contains(&msg) {
            return None;
        }
        self.warned.push(msg.clone());
        Some(msg)
    }

    /// Closes the publisher, waiting up to the linger time for unsent frames.
    ///
    /// A process that published straight to the group first sends a
    /// heartbeat with its last sequence number: without a later packet, a
    /// receiver that lost this process's last frame could never tell.
    pub fn shutdown(&mut self) {
        let direct = self
            .publisher
            .as_ref()
            .is_some_and(|(endpoint, p)| p.is_ok() && memcast_bus::is_multicast_endpoint(endpoint));
        if direct && self.origin.last_seq() > 0 {
            let keys = self.keys.as_ref().map(|k| &k.keys);
            if let (Some((_, Ok(p))), Some(Ok(key))) = (&self.publisher, keys) {
                let heartbeat = Frame {
                    op: Op::Heartbeat,
                    origin: self.origin.id,
                    epoch: self.origin.epoch,
                    seq: self.origin.last_seq(),
                    version: Version::ZERO,
                    ttl: 0,
                    key: Vec::new(),
                    value: Vec::new(),
                };
                let _ = p.send(&heartbeat.seal(key));
            }
        }
        self.publisher = None;
    }
}
