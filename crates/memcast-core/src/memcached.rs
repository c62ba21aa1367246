//! A memcached text-protocol connection, and [`apply_if_newer`]: the one rule
//! every write on every replica obeys.
//!
//! Our own small client rather than a general one: we need per-operation
//! timeouts in milliseconds, `gets`/`cas`, errors that name the server, and
//! a connection that is simply dropped and reopened after any I/O failure.

/// Present in a memcached if and only if its memcastd currently knows it
/// complete: refilled from a peer since it and memcastd started, nothing
/// evicted since, no gap outstanding, no origin silent. memcastd sets it with
/// a 3 s TTL and refreshes it every second, so a dead or cut-off memcastd
/// stops vouching within seconds; with no peer it is never set. A miss on a
/// memcached without it may be a session it does not hold: readers confirm
/// it on the next server.
pub const WARM_SENTINEL: &[u8] = b"memcast:warm";

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::ControlFlow;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::failover::ServerAddr;
use crate::memcached_key;
use crate::stored_value::{Decision, StoredValue};
use crate::version::Version;

/// memcached reads a TTL above 30 days as an absolute Unix time.
const RELATIVE_TTL_MAX: u64 = 60 * 60 * 24 * 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_millis(100),
            io: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("memcached {addr}: connection refused")]
    Refused { addr: ServerAddr },
    #[error("memcached {addr}: timed out after {ms} ms")]
    Timeout { addr: ServerAddr, ms: u128 },
    #[error("memcached {addr}: {source}")]
    Io { addr: ServerAddr, source: io::Error },
    #[error("memcached {addr}: unexpected reply {reply:?}")]
    Protocol { addr: ServerAddr, reply: String },
    /// The server is up but refused this command (too large, out of memory).
    #[error("memcached {addr}: {message}")]
    Server { addr: ServerAddr, message: String },
    #[error("key {0:?} breaks memcached's key rules (empty, over 250 bytes, spaces or control characters)")]
    InvalidKey(String),
    #[error("memcached {addr}: key {key:?} kept changing under a conditional write")]
    Contended { addr: ServerAddr, key: String },
}

impl StoreError {
    /// True when the server itself is unreachable or broken, so the failover
    /// list should skip it for a while; false when only this request failed.
    pub fn is_server_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Refused { .. }
                | StoreError::Timeout { .. }
                | StoreError::Io { .. }
                | StoreError::Protocol { .. }
        )
    }

    /// True when the server answered at once that it cannot serve: it
    /// refused the connection, or closed or reset one that was open (a
    /// memcached restarting does both). Asking it again costs a connect,
    /// not a timeout, so the failover list need not skip it: a restarted
    /// memcached is used again by the next command instead of after the
    /// retry interval, which matters for the local one, as writes sent
    /// elsewhere meanwhile leave it holding older sessions.
    pub fn is_immediate(&self) -> bool {
        match self {
            StoreError::Refused { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// The answer to a storage command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

/// What a present warm sentinel (`memcast:warm`) vouches for: memcastd
/// knew this memcached complete when it had evicted `evictions` entries.
/// Its value is `<unix ms> evictions=<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vouch {
    /// None: a sentinel without the count (an older memcastd, or set by hand).
    pub evictions: Option<u64>,
}

impl Vouch {
    pub fn sentinel_value(stamp_ms: u64, evictions: u64) -> String {
        format!("{stamp_ms} evictions={evictions}")
    }

    pub fn parse(value: &[u8]) -> Vouch {
        let text = String::from_utf8_lossy(value);
        Vouch {
            evictions: text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("evictions="))
                .and_then(|n| n.parse().ok()),
        }
    }
}

/// What [`Memcached::lock_and_gets_checking_warm`] learns in one round
/// trip: the lock's CAS token if it was taken, the session, the sentinel.
pub type LockedRead = (Option<u64>, Option<Item>, Option<Vouch>);

/// A [`LockedRead`] and the value of the lock's write mark.
pub type MarkedLockedRead = (Option<u64>, Option<Item>, Option<Vouch>, Option<Vec<u8>>);

/// A key and its value, as `get_multi` returns them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A value read with `gets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Vec<u8>,
    pub cas: u64,
    /// The client flags it was stored with (memcast stores 0; other
    /// clients mark compression or serialization here).
    pub flags: u32,
}

/// One memcached server; connects lazily and reconnects after a failure.
#[derive(Debug)]
pub struct Memcached {
    addr: ServerAddr,
    timeouts: Timeouts,
    conn: Option<BufReader<Stream>>,
    line: Vec<u8>,
    connects: u64,
}

impl Memcached {
    pub fn new(addr: ServerAddr, timeouts: Timeouts) -> Memcached {
        Memcached {
            addr,
            timeouts,
            conn: None,
            line: Vec::new(),
            connects: 0,
        }
    }

    pub fn addr(&self) -> &ServerAddr {
        &self.addr
    }

    /// Connections opened so far (the first, then one per reconnect).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        if timeouts != self.timeouts {
            self.timeouts = timeouts;
            self.conn = None;
        }
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Drops the connection; the next command reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.retrieve(b"get", key)?.map(|i| i.value))
    }

    pub fn gets(&mut self, key: &[u8]) -> Result<Option<Item>, StoreError> {
        self.retrieve(b"gets", key)
    }

    /// `gets` of `key` and of the warm sentinel in one round trip: the item,
    /// and what the sentinel vouches for if it is there (its memcastd knows
    /// this memcached complete; see [`Memcached::still_complete`]).
    pub fn gets_checking_warm(
        &mut self,
        key: &[u8],
    ) -> Result<(Option<Item>, Option<Vouch>), StoreError> {
        check_key(key)?;
        let mut cmd = Vec::with_capacity(key.len() + 32);
        push_gets_checking_warm(&mut cmd, key, None);
        self.round_trip(&cmd, |c| c.item_and_warm(key))
    }

    /// Takes a lock and reads in one round trip: `ms <lock_key> ME c` (add
    /// `token`, answering with the lock's CAS token when it was free), then
    /// `gets <key> memcast:warm`. Returns the lock's CAS (None: someone
    /// holds it, and the read is not to be trusted), the item and whether
    /// this memcached is warm. memcached runs a connection's commands in
    /// order, so the read sees everything the lock's previous holder wrote.
    pub fn lock_and_gets_checking_warm(
        &mut self,
        lock_key: &[u8],
        token: &[u8],
        ttl: u64,
        key: &[u8],
    ) -> Result<LockedRead, StoreError> {
        let (locked, item, warm, _) = self.lock_and_gets(lock_key, token, ttl, key, None)?;
        Ok((locked, item, warm))
    }

    /// As [`Memcached::lock_and_gets_checking_warm`], and in the same round
    /// trip the value of `mark_key` (a cluster-wide lock's record of the
    /// last write made under it): `gets <key> memcast:warm <mark_key>`.
    pub fn lock_and_gets_marked(
        &mut self,
        lock_key: &[u8],
        token: &[u8],
        ttl: u64,
        key: &[u8],
        mark_key: &[u8],
    ) -> Result<MarkedLockedRead, StoreError> {
        self.lock_and_gets(lock_key, token, ttl, key, Some(mark_key))
    }

    fn lock_and_gets(
        &mut self,
        lock_key: &[u8],
        token: &[u8],
        ttl: u64,
        key: &[u8],
        mark_key: Option<&[u8]>,
    ) -> Result<MarkedLockedRead, StoreError> {
        check_key(lock_key)?;
        check_key(key)?;
        if let Some(mark_key) = mark_key {
            check_key(mark_key)?;
        }
        let mut cmd = Vec::with_capacity(lock_key.len() + key.len() + token.len() + 96);
        cmd.extend_from_slice(b"ms ");
        cmd.extend_from_slice(lock_key);
        cmd.extend_from_slice(format!(" {} T{} ME c\r\n", token.len(), wire_ttl(ttl)).as_bytes());
        cmd.extend_from_slice(token);
        cmd.extend_from_slice(b"\r\n");
        push_gets_checking_warm(&mut cmd, key, mark_key);
        self.round_trip(&cmd, |c| {
            let locked = match c.meta_stored()? {
                Stored::Stored(cas) => Some(cas),
                Stored::Not(Reply::NotStored) => None,
                Stored::Not(_) => return Err(c.unexpected(b"(not NS to a meta add)")),
            };
            let (item, warm, mark) = c.item_warm_and(key, mark_key)?;
            Ok((locked, item, warm, mark))
        })
    }

    /// Sets `mark_key` to `mark` (for `ttl` seconds) and releases the lock
    /// `lock_key` if its CAS is still `cas`, pipelined in one round trip.
    /// True when the lock was deleted (false: it expired and someone else
    /// holds it now).
    pub fn release_marking(
        &mut self,
        lock_key: &[u8],
        cas: u64,
        mark_key: &[u8],
        mark: &[u8],
        ttl: u64,
    ) -> Result<bool, StoreError> {
        check_key(lock_key)?;
        check_key(mark_key)?;
        let mut cmd = Vec::with_capacity(lock_key.len() + mark_key.len() + mark.len() + 64);
        cmd.extend_from_slice(b"ms ");
        cmd.extend_from_slice(mark_key);
        cmd.extend_from_slice(format!(" {} T{} c\r\n", mark.len(), wire_ttl(ttl)).as_bytes());
        cmd.extend_from_slice(mark);
        cmd.extend_from_slice(b"\r\n");
        cmd.extend_from_slice(b"md ");
        cmd.extend_from_slice(lock_key);
        cmd.extend_from_slice(format!(" C{cas}\r\n").as_bytes());
        self.round_trip(&cmd, |c| {
            match c.meta_stored()? {
                Stored::Stored(_) => {}
                Stored::Not(_) => return Err(c.unexpected(b"(not HD to a meta set)")),
            }
            c.deleted_if_cas()
        })
    }

    /// The CAS of `key` (`mg <key> c`), `None` when it is not there: a lock
    /// holder checks that its lock is still its own.
    pub fn cas_of(&mut self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        check_key(key)?;
        let cmd = [b"mg ", key, b" c\r\n"].concat();
        self.round_trip(&cmd, |c| {
            let line = c.read_line()?;
            match line.get(..2) {
                Some(b"HD") => Ok(cas_flag(&line)),
                Some(b"EN") => Ok(None),
                _ => Err(c.unexpected(&line)),
            }
        })
    }

    /// Deletes `key` only if its CAS token is still `cas` (`md C<cas>`, one
    /// round trip): releasing a lock this process took and nobody replaced.
    /// True when it was deleted.
    pub fn delete_if_cas(&mut self, key: &[u8], cas: u64) -> Result<bool, StoreError> {
        check_key(key)?;
        let cmd = [b"md ", key, format!(" C{cas}\r\n").as_bytes()].concat();
        self.round_trip(&cmd, |c| c.deleted_if_cas())
    }

    pub fn set(&mut self, key: &[u8], value: &[u8], ttl: u64) -> Result<Reply, StoreError> {
        self.store(b"set", key, value, ttl, None)
    }

    pub fn add(&mut self, key: &[u8], value: &[u8], ttl: u64) -> Result<Reply, StoreError> {
        self.store(b"add", key, value, ttl, None)
    }

    pub fn cas(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl: u64,
        cas: u64,
    ) -> Result<Reply, StoreError> {
        self.store(b"cas", key, value, ttl, Some(cas))
    }

    /// Removes `key` only if it still has this CAS token (no one changed it
    /// since we read it): a `cas` of an already-expired value, which the text
    /// protocol allows where `delete` has no CAS.
    pub fn delete_if_unchanged(&mut self, key: &[u8], cas: u64) -> Result<Reply, StoreError> {
        check_key(key)?;
        let cmd = [b"cas ", key, format!(" 0 -1 0 {cas}\r\n\r\n").as_bytes()].concat();
        self.round_trip(&cmd, |c| c.storage_reply())
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<Reply, StoreError> {
        check_key(key)?;
        let mut cmd = Vec::with_capacity(key.len() + 10);
        cmd.extend_from_slice(b"delete ");
        cmd.extend_from_slice(key);
        cmd.extend_from_slice(b"\r\n");
        self.round_trip(&cmd, |c| c.storage_reply())
    }

    /// Adds `n` to a counter, creating it at `n` (no expiry) when absent:
    /// `ma <key> N0 J<n> D<n>`, one round trip, atomic.
    pub fn add_to_counter(&mut self, key: &[u8], n: u64) -> Result<(), StoreError> {
        check_key(key)?;
        let cmd = [b"ma ", key, format!(" N0 J{n} D{n}\r\n").as_bytes()].concat();
        self.round_trip(&cmd, |c| {
            let line = c.read_line()?;
            match line.get(..2) {
                Some(b"HD") => Ok(()),
                _ => Err(c.unexpected(&line)),
            }
        })
    }

    /// Resets the TTL; `false` when the key does not exist.
    pub fn touch(&mut self, key: &[u8], ttl: u64) -> Result<bool, StoreError> {
        check_key(key)?;
        let cmd = [b"touch ", key, format!(" {}\r\n", wire_ttl(ttl)).as_bytes()].concat();
        self.round_trip(&cmd, |c| {
            let line = c.read_line()?;
            match line.as_slice() {
                b"TOUCHED" => Ok(true),
                b"NOT_FOUND" => Ok(false),
                _ => Err(c.unexpected(&line)),
            }
        })
    }

    /// `stats` as name/value pairs.
    /// Whether a memcached whose warm sentinel said `vouch` still holds
    /// everything it held then: memcastd reads `stats` once a second, so
    /// evictions that began since its last look are not in the sentinel yet,
    /// but they are in memcached's own count, read here after the miss (on
    /// the same connection, so after it). Only a miss pays this round trip.
    pub fn still_complete(&mut self, vouch: Vouch) -> Result<bool, StoreError> {
        let Some(vouched) = vouch.evictions else {
            // A sentinel without the count (an older memcastd): as before.
            return Ok(true);
        };
        let stats = self.stats()?;
        let now = stats
            .iter()
            .find(|(name, _)| name == "evictions")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        Ok(now == Some(vouched))
    }

    pub fn stats(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        self.round_trip(b"stats\r\n", |c| {
            let mut out = Vec::new();
            loop {
                let line = c.read_line()?;
                if line == b"END" {
                    return Ok(out);
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                let mut parts = text.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("STAT"), Some(name), Some(value)) => {
                        out.push((name.to_owned(), value.to_owned()))
                    }
                    _ => return Err(c.unexpected(&line)),
                }
            }
        })
    }

    /// Values of many keys in one round trip (`get k1 k2 ...`); missing keys
    /// are simply absent from the result.
    pub fn get_multi(&mut self, keys: &[&[u8]]) -> Result<Vec<KeyValue>, StoreError> {
        let found = self.retrieve_many(b"get", keys)?;
        Ok(found.into_iter().map(|(k, item)| (k, item.value)).collect())
    }

    /// `gets` of many keys in one round trip: (key, item) of those present.
    pub fn gets_multi(&mut self, keys: &[&[u8]]) -> Result<Vec<(Vec<u8>, Item)>, StoreError> {
        self.retrieve_many(b"gets", keys)
    }

    fn retrieve_many(
        &mut self,
        verb: &[u8],
        keys: &[&[u8]],
    ) -> Result<Vec<(Vec<u8>, Item)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = verb.to_vec();
        for key in keys {
            check_key(key)?;
            cmd.push(b' ');
            cmd.extend_from_slice(key);
        }
        cmd.extend_from_slice(b"\r\n");
        self.round_trip(&cmd, |c| {
            let mut out = Vec::with_capacity(keys.len());
            while let Some(found) = c.value_or_end()? {
                out.push(found);
            }
            Ok(out)
        })
    }

    /// Conditional stores written in one go and their replies read in order
    /// (pipelining), as meta sets (`ms ... ME` for an add, `C<cas>` for a
    /// cas, flag `c`): a stored item comes back with its new CAS token, so
    /// the next write of that key needs no lookup first.
    pub fn store_many_returning_cas(
        &mut self,
        ops: &[StoreOp<'_>],
    ) -> Result<Vec<Stored>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = Vec::with_capacity(ops.iter().map(|o| o.value.len() + 300).sum());
        for op in ops {
            check_key(op.key)?;
            cmd.extend_from_slice(b"ms ");
            cmd.extend_from_slice(op.key);
            let mode = match op.cas {
                Some(cas) => format!("C{cas}"),
                None => "ME".to_string(),
            };
            cmd.extend_from_slice(
                format!(" {} T{} {mode} c\r\n", op.value.len(), wire_ttl(op.ttl)).as_bytes(),
            );
            cmd.extend_from_slice(op.value);
            cmd.extend_from_slice(b"\r\n");
        }
        self.round_trip(&cmd, |c| (0..ops.len()).map(|_| c.meta_stored()).collect())
    }

    /// Every key memcached holds, with its expiry, streamed from
    /// `lru_crawler metadump hash` (memcached 1.6: it walks the hash table in
    /// the background without blocking the server). `metadump all` walks the
    /// LRUs instead and misses items the LRU maintainer moves while it runs,
    /// which right after a burst of writes is many. `each` breaks to stop
    /// early.
    pub fn metadump(
        &mut self,
        mut each: impl FnMut(KeyMeta) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        /// How one `lru_crawler metadump` went.
        enum Dump {
            Done,
            /// Another crawl is running: try again shortly.
            Busy,
            /// `each` broke off mid-stream: the rest of the dump is unread.
            Stopped,
        }
        let mut busy_retries = 0;
        loop {
            let result = self.round_trip(b"lru_crawler metadump hash\r\n", |c| {
                let mut first = true;
                loop {
                    let line = c.read_line()?;
                    if line == b"END" {
                        return Ok(Dump::Done);
                    }
                    if first && line.starts_with(b"BUSY") {
                        return Ok(Dump::Busy);
                    }
                    first = false;
                    let Some(meta) = KeyMeta::parse(&line) else {
                        return Err(c.unexpected(&line));
                    };
                    if each(meta).is_break() {
                        return Ok(Dump::Stopped);
                    }
                }
            })?;
            match result {
                Dump::Done => return Ok(()),
                Dump::Stopped => {
                    // The unread rest would be taken for the next replies.
                    self.conn = None;
                    return Ok(());
                }
                Dump::Busy if busy_retries < 50 => {
                    busy_retries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Dump::Busy => {
                    return Err(StoreError::Server {
                        addr: self.addr.clone(),
                        message: "lru_crawler stayed busy for 5 s".into(),
                    })
                }
            }
        }
    }

    fn retrieve(&mut self, verb: &[u8], key: &[u8]) -> Result<Option<Item>, StoreError> {
        check_key(key)?;
        let cmd = [verb, b" ", key, b"\r\n"].concat();
        self.round_trip(&cmd, |c| match c.value_or_end()? {
            None => Ok(None),
            Some((k, _)) if k != key => Err(c.unexpected(b"(a value for another key)")),
            Some((_, item)) => {
                let end = c.read_line()?;
                if end == b"END" {
                    Ok(Some(item))
                } else {
                    Err(c.unexpected(&end))
                }
            }
        })
    }

    fn store(
        &mut self,
        verb: &[u8],
        key: &[u8],
        value: &[u8],
        ttl: u64,
        cas: Option<u64>,
    ) -> Result<Reply, StoreError> {
        check_key(key)?;
        let mut cmd = Vec::with_capacity(key.len() + value.len() + 64);
        cmd.extend_from_slice(verb);
        cmd.push(b' ');
        cmd.extend_from_slice(key);
        let head = match cas {
            Some(cas) => format!(" 0 {} {} {}\r\n", wire_ttl(ttl), value.len(), cas),
            None => format!(" 0 {} {}\r\n", wire_ttl(ttl), value.len()),
        };
        cmd.extend_from_slice(head.as_bytes());
        cmd.extend_from_slice(value);
        cmd.extend_from_slice(b"\r\n");
        self.round_trip(&cmd, |c| c.storage_reply())
    }

    /// Sends `cmd`, reads the reply with `read`; any failure drops the
    /// connection so the next command starts clean. That includes a server's
    /// own error (`SERVER_ERROR out of memory` from a full memcached): when
    /// it answers one command of a pipeline (a lock taken with a read, a batch
    /// of stores), the replies after it are still unread, and the next
    /// command on the connection would take them for its own (a read of one
    /// session answered with another's miss).
    fn round_trip<T>(
        &mut self,
        cmd: &[u8],
        read: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.try_round_trip(cmd, read);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_round_trip<T>(
        &mut self,
        cmd: &[u8],
        read: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
            self.connects += 1;
        }
        let addr = &self.addr;
        let io_ms = self.timeouts.io.as_millis();
        let Some(reader) = self.conn.as_mut() else {
            unreachable!("connected above")
        };
        reader
            .get_mut()
            .write_all(cmd)
            .map_err(|e| io_error(addr, io_ms, e))?;
        let mut conn = Conn {
            reader,
            addr,
            io_ms,
            line: &mut self.line,
        };
        read(&mut conn)
    }

    fn connect(&self) -> Result<BufReader<Stream>, StoreError> {
        let addr = &self.addr;
        let connect_ms = self.timeouts.connect.as_millis();
        if let Some(path) = addr.unix_path() {
            // A local socket connects at once or not at all: no timeout to set.
            let stream = UnixStream::connect(path).map_err(|e| io_error(addr, connect_ms, e))?;
            let io = Some(self.timeouts.io);
            stream
                .set_read_timeout(io)
                .and_then(|_| stream.set_write_timeout(io))
                .map_err(|e| io_error(addr, connect_ms, e))?;
            return Ok(BufReader::with_capacity(64 * 1024, Stream::Unix(stream)));
        }
        let sockaddrs = (addr.host.as_str(), addr.port)
            .to_socket_addrs()
            .map_err(|source| StoreError::Io {
                addr: addr.clone(),
                source,
            })?;
        let mut last = None;
        for sa in sockaddrs {
            match TcpStream::connect_timeout(&sa, self.timeouts.connect) {
                Ok(stream) => {
                    let io = Some(self.timeouts.io);
                    let setup = stream
                        .set_nodelay(true)
                        .and_then(|_| stream.set_read_timeout(io))
                        .and_then(|_| stream.set_write_timeout(io));
                    setup.map_err(|e| io_error(addr, connect_ms, e))?;
                    return Ok(BufReader::with_capacity(64 * 1024, Stream::Tcp(stream)));
                }
                Err(e) => last = Some(io_error(addr, connect_ms, e)),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Io {
            addr: addr.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "host has no address"),
        }))
    }
}

/// A connection to memcached over TCP or a unix socket (memcached -s).
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A connection in the middle of reading one reply.
struct Conn<'a> {
    reader: &'a mut BufReader<Stream>,
    addr: &'a ServerAddr,
    io_ms: u128,
    line: &'a mut Vec<u8>,
}

impl Conn<'_> {
    /// One reply line without its CRLF.
    fn read_line(&mut self) -> Result<Vec<u8>, StoreError> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', self.line)
            .map_err(|e| io_error(self.addr, self.io_ms, e))?;
        if n == 0 {
            return Err(io_error(
                self.addr,
                self.io_ms,
                io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by server"),
            ));
        }
        // Replies end in CRLF; metadump lines end in a bare LF.
        if !self.line.ends_with(b"\n") {
            return Err(self.unexpected(&self.line.clone()));
        }
        let end = self.line.len() - if self.line.ends_with(b"\r\n") { 2 } else { 1 };
        let line = self.line[..end].to_vec();
        if let Some(msg) = line
            .strip_prefix(b"SERVER_ERROR ")
            .or_else(|| line.strip_prefix(b"CLIENT_ERROR "))
        {
            return Err(StoreError::Server {
                addr: self.addr.clone(),
                message: String::from_utf8_lossy(msg).into_owned(),
            });
        }
        Ok(line)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.reader
            .read_exact(buf)
            .map_err(|e| io_error(self.addr, self.io_ms, e))
    }

    /// One `VALUE <key> <flags> <bytes> [<cas>]` block, or `None` at `END`.
    fn value_or_end(&mut self) -> Result<Option<(Vec<u8>, Item)>, StoreError> {
        let line = self.read_line()?;
        if line == b"END" {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let fields: Vec<&str> = text.split(' ').collect();
        if fields.len() < 4 || fields[0] != "VALUE" {
            return Err(self.unexpected(&line));
        }
        let flags: u32 = fields[2].parse().map_err(|_| self.unexpected(&line))?;
        let len: usize = fields[3].parse().map_err(|_| self.unexpected(&line))?;
        let cas: u64 = match fields.get(4) {
            Some(f) => f.parse().map_err(|_| self.unexpected(&line))?,
            None => 0,
        };
        let key = fields[1].as_bytes().to_vec();
        let mut value = vec![0u8; len + 2];
        self.read_exact(&mut value)?;
        if &value[len..] != b"\r\n" {
            return Err(self.unexpected(b"value without CRLF"));
        }
        value.truncate(len);
        Ok(Some((key, Item { value, cas, flags })))
    }

    /// The reply to a meta set with flag `c`: stored (with the item's new
    /// CAS token), or why not.
    fn meta_stored(&mut self) -> Result<Stored, StoreError> {
        let line = self.read_line()?;
        Ok(match line.get(..2) {
            Some(b"HD") => Stored::Stored(cas_flag(&line).ok_or_else(|| self.unexpected(&line))?),
            Some(b"NS") => Stored::Not(Reply::NotStored),
            Some(b"EX") => Stored::Not(Reply::Exists),
            Some(b"NF") => Stored::Not(Reply::NotFound),
            _ => return Err(self.unexpected(&line)),
        })
    }

    /// The reply to `gets <key> memcast:warm`: the item, and what the warm
    /// sentinel vouches for if it was there.
    fn item_and_warm(&mut self, key: &[u8]) -> Result<(Option<Item>, Option<Vouch>), StoreError> {
        let (item, warm, _) = self.item_warm_and(key, None)?;
        Ok((item, warm))
    }

    /// As `item_and_warm`, and the value of `extra` if it was asked
    /// for too (`gets <key> memcast:warm <extra>`).
    fn item_warm_and(
        &mut self,
        key: &[u8],
        extra: Option<&[u8]>,
    ) -> Result<ItemWarmAnd, StoreError> {
        let (mut item, mut warm, mut other) = (None, None, None);
        while let Some((k, found)) = self.value_or_end()? {
            if k == WARM_SENTINEL {
                warm = Some(Vouch::parse(&found.value));
            } else if k == key {
                item = Some(found);
            } else if extra == Some(k.as_slice()) {
                other = Some(found.value);
            }
        }
        Ok((item, warm, other))
    }

    /// The reply to `md <key> C<cas>`: true when it deleted the key, false
    /// when the key had another CAS or was gone.
    fn deleted_if_cas(&mut self) -> Result<bool, StoreError> {
        let line = self.read_line()?;
        match line.get(..2) {
            Some(b"HD") => Ok(true),
            Some(b"EX") | Some(b"NF") => Ok(false),
            _ => Err(self.unexpected(&line)),
        }
    }

    fn storage_reply(&mut self) -> Result<Reply, StoreError> {
        let line = self.read_line()?;
        Ok(match line.as_slice() {
            b"STORED" | b"DELETED" => Reply::Stored,
            b"NOT_STORED" => Reply::NotStored,
            b"EXISTS" => Reply::Exists,
            b"NOT_FOUND" => Reply::NotFound,
            _ => return Err(self.unexpected(&line)),
        })
    }

    fn unexpected(&self, line: &[u8]) -> StoreError {
        let mut reply = String::from_utf8_lossy(line).into_owned();
        reply.truncate(80);
        StoreError::Protocol {
            addr: self.addr.clone(),
            reply,
        }
    }
}

fn io_error(addr: &ServerAddr, ms: u128, e: io::Error) -> StoreError {
    let addr = addr.clone();
    match e.kind() {
        io::ErrorKind::ConnectionRefused => StoreError::Refused { addr },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => StoreError::Timeout { addr, ms },
        _ => StoreError::Io { addr, source: e },
    }
}

/// Appends `gets <key> memcast:warm`: the session and the warm sentinel in
/// one round trip.
fn push_gets_checking_warm(cmd: &mut Vec<u8>, key: &[u8], extra: Option<&[u8]>) {
    cmd.extend_from_slice(b"gets ");
    cmd.extend_from_slice(key);
    cmd.push(b' ');
    cmd.extend_from_slice(WARM_SENTINEL);
    if let Some(extra) = extra {
        cmd.push(b' ');
        cmd.extend_from_slice(extra);
    }
    cmd.extend_from_slice(b"\r\n");
}

/// A `gets <key> memcast:warm <extra>` reply: the item, the warm sentinel's
/// vouch, the extra key's value.
type ItemWarmAnd = (Option<Item>, Option<Vouch>, Option<Vec<u8>>);

/// The `c<cas>` flag of a meta command's reply line.
fn cas_flag(line: &[u8]) -> Option<u64> {
    line.split(|b| *b == b' ')
        .find_map(|f| f.strip_prefix(b"c"))
        .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
}

fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if memcached_key::is_valid(key) {
        Ok(())
    } else {
        let mut shown = String::from_utf8_lossy(key).into_owned();
        shown.truncate(64);
        Err(StoreError::InvalidKey(shown))
    }
}

fn wire_ttl(ttl: u64) -> u64 {
    if ttl > RELATIVE_TTL_MAX {
        crate::unix_millis() / 1000 + ttl
    } else {
        ttl
    }
}

/// One line of `lru_crawler metadump`: a key and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    pub key: Vec<u8>,
    /// Unix seconds; `None` for an item that never expires.
    pub expires: Option<u64>,
}

impl KeyMeta {
    /// `key=<url-encoded key> exp=<unix time or -1> la=... cas=... ...`
    pub fn parse(line: &[u8]) -> Option<KeyMeta> {
        let text = std::str::from_utf8(line).ok()?;
        let mut key = None;
        let mut expires = None;
        for field in text.split(' ') {
            if let Some(k) = field.strip_prefix("key=") {
                key = Some(url_decode(k)?);
            } else if let Some(e) = field.strip_prefix("exp=") {
                let e: i64 = e.parse().ok()?;
                expires = Some(u64::try_from(e).ok().filter(|e| *e > 0));
            }
        }
        Some(KeyMeta {
            key: key?,
            expires: expires?,
        })
    }

    /// Seconds left at `now` (Unix seconds); `None` for no expiry, `Some(0)`
    /// when already expired.
    pub fn ttl_at(&self, now: u64) -> Option<u64> {
        self.expires.map(|e| e.saturating_sub(now))
    }
}

fn url_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// What [`apply_if_newer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Stored,
    /// memcached already held this version or a newer one.
    SkippedOlder {
        held: Version,
    },
    /// A write that began from a miss ([`apply_create`]) found a live
    /// session: the session exists, and it is kept.
    Conflict {
        held: Version,
    },
}

/// What the caller already knows of the key, to save a round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Nothing known: read first.
    Unknown,
    /// A read just found nothing: try `add`.
    Missing,
    /// A read just returned this CAS token: try `cas`.
    Cas(u64),
}

/// What a meta set did: stored, with the item's new CAS token, or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Stored(u64),
    Not(Reply),
}

/// One conditional store of [`Memcached::store_many_returning_cas`].
#[derive(Clone, Copy, Debug)]
pub struct StoreOp<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub ttl: u64,
    /// `cas` against this token; `None`: `add` (nothing may be there).
    pub cas: Option<u64>,
}

/// Stores `value` under `key` where [`StoredValue::decide`] says it
/// replaces what memcached holds (nothing, a foreign value, an older
/// version; for a created value only nothing, a tombstone or another
/// create). Conditional writes (`add`, `cas`) make the check and the store
/// one atomic step, so concurrent writers converge whatever the order.
pub fn apply_if_newer(
    mc: &mut Memcached,
    key: &[u8],
    value: &StoredValue<'_>,
    ttl: u64,
    expect: Expect,
) -> Result<Applied, StoreError> {
    store_unless(mc, key, value, ttl, expect, |raw| {
        let held = StoredValue::parse(raw);
        let version = held.map_or(Version::ZERO, |h| h.version);
        match value.decide(held.as_ref()) {
            Decision::Replace => None,
            Decision::KeepNewer => Some(Applied::SkippedOlder { held: version }),
            Decision::KeepConflict => Some(Applied::Conflict { held: version }),
        }
    })
}

/// Stores a write whose request began from a miss ("this session is new"),
/// marked created: only where memcached holds nothing, a tombstone older
/// than it, or a value memcast did not write. A live session there means
/// the miss was wrong (a restarted or evicting memcached, a write not yet
/// replicated): the session is kept and the write loses
/// ([`Applied::Conflict`]).
pub fn apply_create(
    mc: &mut Memcached,
    key: &[u8],
    value: &StoredValue<'_>,
    ttl: u64,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let created = StoredValue {
        created: true,
        ..*value
    };
    apply_if_newer(mc, key, &created, ttl, expect)
}

/// The conditional store both rules share: `add` where nothing is held,
/// otherwise `keep(held value)` decides, `Some(outcome)` leaving memcached
/// as it is and `None` replacing the value with a `cas` against what was
/// read; a store that loses a race looks again.
fn store_unless(
    mc: &mut Memcached,
    key: &[u8],
    value: &StoredValue<'_>,
    ttl: u64,
    mut expect: Expect,
    keep: impl Fn(&[u8]) -> Option<Applied>,
) -> Result<Applied, StoreError> {
    let encoded = value.encode();
    for _ in 0..16 {
        let reply = match expect {
            Expect::Missing => mc.add(key, &encoded, ttl)?,
            Expect::Cas(cas) => mc.cas(key, &encoded, ttl, cas)?,
            Expect::Unknown => {
                expect = match mc.gets(key)? {
                    None => Expect::Missing,
                    Some(item) => match keep(&item.value) {
                        Some(outcome) => return Ok(outcome),
                        None => Expect::Cas(item.cas),
                    },
                };
                continue;
            }
        };
        match reply {
            Reply::Stored => return Ok(Applied::Stored),
            // Someone else wrote (or the key expired) in between: look again.
            Reply::NotStored | Reply::Exists | Reply::NotFound => expect = Expect::Unknown,
        }
    }
    Err(StoreError::Contended {
        addr: mc.addr().clone(),
        key: String::from_utf8_lossy(key).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadump_lines_parse() {
        let m = KeyMeta::parse(
            b"key=memcast.sess.a%20b exp=1700000100 la=1700000000 cas=5 fetch=no cls=1 size=70",
        )
        .unwrap();
        assert_eq!(m.key, b"memcast.sess.a b");
        assert_eq!(m.ttl_at(1_700_000_000), Some(100));
        assert_eq!(m.ttl_at(1_800_000_000), Some(0));
        let forever = KeyMeta::parse(b"key=k exp=-1 la=1 cas=1 fetch=no cls=1 size=1").unwrap();
        assert_eq!(forever.expires, None);
        assert_eq!(KeyMeta::parse(b"exp=-1"), None);
        assert_eq!(KeyMeta::parse(b"key=%zz exp=-1"), None);
    }
}
