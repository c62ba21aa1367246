//! [`SessionStore`]: what the save handler's callbacks call. It owns the
//! pieces (servers, keys, the lock, the replicator) and what one request
//! read; the operations themselves live with their idea: `read.rs`,
//! `write.rs`, `lock.rs`, `migrate.rs`.
//!
//! State lives for the whole PHP process (a php-fpm worker serves many
//! requests): connections, the server health table, the publisher and the
//! origin's clock. Only what one request read is reset at close.

use std::collections::{HashMap, HashSet};

use memcast_core::ini::ExtensionConfig;
use memcast_core::memcached::Expect;
use memcast_core::session_seal::SessionSeal;
use memcast_core::{Hlc, Version};

use crate::counters::Counters;
use crate::error::SessionError;
use crate::keys::SessionKeys;
use crate::lock::Locks;
use crate::publish::{OpenPublisher, Replicator};
use crate::servers::{NoServer, PassOn, Servers, Step};

/// What the last read of a session found, so the write can be conditional
/// on it (one round trip) and versioned after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadState {
    pub server: usize,
    pub expect: Expect,
    pub version: Option<Version>,
    /// The read was a miss: the write creates the session, and is stored
    /// (here and at every replica) only where no live session exists.
    pub created: bool,
}

/// What one request read and made, forgotten at close.
#[derive(Default)]
pub(crate) struct Request {
    pub reads: HashMap<Vec<u8>, ReadState>,
    /// Keys of ids this process created (and found free) in this request.
    pub fresh: HashSet<Vec<u8>>,
    /// Sessions read in this request that were sealed under an older,
    /// still accepted key: written whole at close even when unchanged
    /// (`session.lazy_write`), so a key roll can drop the old key.
    pub reseal: HashSet<Vec<u8>>,
}

/// Warnings shown once per process, and the one a read leaves for PHP.
#[derive(Default)]
pub(crate) struct Warnings {
    shown: Vec<String>,
    /// Why a stored value was not handed to PHP (sealed and not opening,
    /// or the other handler's and unreadable).
    pub read: Option<String>,
}

impl Warnings {
    /// True the first time `message` is seen in this process.
    pub fn first_time(&mut self, message: &str) -> bool {
        if self.shown.iter().any(|w| w == message) {
            return false;
        }
        self.shown.push(message.to_owned());
        true
    }
}

/// One PHP process's sessions.
pub struct SessionStore {
    pub(crate) config: Option<ExtensionConfig>,
    pub(crate) servers: Servers,
    pub(crate) keys: SessionKeys,
    pub(crate) locks: Locks,
    pub(crate) replicator: Replicator,
    pub(crate) clock: Hlc,
    pub(crate) request: Request,
    pub(crate) warnings: Warnings,
    pub(crate) counters: Counters,
}

impl Default for SessionStore {
    fn default() -> Self {
        SessionStore::new()
    }
}

impl SessionStore {
    /// Publishes over ZeroMQ ([`crate::publish::BusPublisher`]).
    pub fn new() -> SessionStore {
        SessionStore::with_publisher(Box::new(crate::publish::BusPublisher::open))
    }

    /// Publishes through publishers `open` makes (tests record frames).
    pub fn with_publisher(open: OpenPublisher) -> SessionStore {
        let replicator = Replicator::new(open);
        let clock = Hlc::new(replicator.origin_id());
        SessionStore {
            config: None,
            servers: Servers::default(),
            keys: SessionKeys::default(),
            locks: Locks::default(),
            replicator,
            clock,
            request: Request::default(),
            warnings: Warnings::default(),
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.reads_by_server = self
            .servers
            .addrs()
            .zip(self.counters.reads_by_server.iter())
            .map(|(s, (_, n))| (s.to_string(), *n))
            .collect();
        c
    }

    pub fn origin_id(&self) -> u64 {
        self.replicator.origin_id()
    }

    /// Applies the current settings and `session.save_path`. Returns warnings
    /// that are new to this process (each is shown once per process).
    pub fn open(
        &mut self,
        config: ExtensionConfig,
        save_path: &str,
    ) -> Result<Vec<String>, SessionError> {
        if self.servers.configure(save_path, &config)? {
            self.counters.reads_by_server =
                self.servers.addrs().map(|a| (a.to_string(), 0)).collect();
        }
        // The keys are loaded whenever a key file is set: they sign frames,
        // and (memcast.seal) hash ids and seal values even without publishing.
        let mut notices = self.keys.refresh(&config);
        let mixed = self.servers.mixed_host_only_names();
        if config.lock_scope == memcast_core::ini::LockScope::Cluster && !mixed.is_empty() {
            notices.push(format!(
                "memcast.lock_scope = cluster: session.save_path names {} in a way only this host can (a loopback address or a unix socket) beside servers named as every host names them, so the hosts cannot agree where each session's lock lives; locking per host instead (as memcast.lock_scope = host). Name every server as the other hosts do (this host's own memcached by its address on the cluster network), or set memcast.lock_scope = host for sticky sessions",
                mixed.join(", ")
            ));
        }
        self.replicator.configure(&config);
        self.config = Some(config);
        notices.retain(|n| self.warnings.first_time(n));
        Ok(notices)
    }

    /// Releases this request's locks and forgets what it read; connections
    /// stay open.
    pub fn close(&mut self) {
        self.locks.release_all(&mut self.servers);
        self.request = Request::default();
    }

    /// The memcached key of a session id: prefixed, and hashed when
    /// sessions are sealed.
    pub(crate) fn key_for(&self, id: &[u8]) -> Vec<u8> {
        let prefix = self
            .config
            .as_ref()
            .map_or("memcast.sess.", |c| c.prefix.as_str());
        match self.seal() {
            Some(seal) => seal.memcached_key(prefix.as_bytes(), id),
            None => [prefix.as_bytes(), id].concat(),
        }
    }

    pub(crate) fn seal(&self) -> Option<&SessionSeal> {
        self.keys.seal(self.config.as_ref())
    }

    /// Whether a live session with this id exists (strict mode). An
    /// unreachable cluster answers `Err`.
    /// A miss is confirmed as for a read, so that a restarted memcached does
    /// not make strict mode throw a live session away.
    /// A session only the other handler holds (`memcast.migrate_from`)
    /// exists too: strict mode keeps its id.
    pub fn exists(&mut self, id: &[u8]) -> Result<bool, SessionError> {
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
            self.request.fresh.insert(key);
        }
        taken
    }

    /// What the first server that answers holds for a session id.
    fn peek(&mut self, id: &[u8]) -> Result<Option<Vec<u8>>, NoServer> {
        let key = self.key_for(id);
        self.servers.try_each(PassOn::AnyError, |turn| {
            Ok(Step::Done(turn.server.get(&key)?))
        })
    }

    /// Why a stored value the last read found was not handed to PHP, once.
    pub fn take_read_warning(&mut self) -> Option<String> {
        self.warnings.read.take()
    }

    /// A publisher that failed to connect (once per process), or a dropped
    /// frame (at most once per process per
    /// [`crate::publish::DROP_WARNING_EVERY`]).
    pub fn take_publish_error(&mut self) -> Option<String> {
        self.replicator.take_warning(&mut self.warnings)
    }

    /// Closes the publisher, waiting up to the linger time for unsent frames.
    pub fn shutdown(&mut self) {
        self.replicator.shutdown(self.keys.keyring());
    }
}
