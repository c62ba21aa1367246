//! `unixgram://PATH`: the host relay hand-off over a Unix datagram socket.
//!
//! Over ZeroMQ's `ipc://` every frame crosses two I/O threads: PHP's send
//! wakes PHP's own ZeroMQ thread, which writes the socket; memcastd's ZeroMQ
//! thread wakes to read it and then wakes memcastd's main loop. Here a PHP
//! worker's `sendto` puts the frame straight into the queue of the socket
//! memcastd's main loop polls: one system call in PHP, one wake-up in
//! memcastd, no thread of ZeroMQ's on either side.
//!
//! The name is Go's for the same socket type (`net.Dial("unixgram", ...)`).
//!
//! - Bounded wait: the sender's socket blocks with SO_SNDTIMEO =
//!   `send_timeout_ms`. The kernel makes a sender wait while the relay's
//!   queue is full (`net.unix.max_dgram_qlen` datagrams) or its own send
//!   buffer is taken by datagrams not read yet; after the timeout it is a
//!   [`BusError::Timeout`], as with ZeroMQ.
//! - No relay (no socket file, or a file no process reads): the kernel says
//!   so at once (ENOENT, ECONNREFUSED): [`BusError::NoRelay`], no waiting.
//!   Nothing to reconnect: every `sendto` names the path, so a restarted
//!   relay takes the next frame.
//! - Big frames: a datagram is at most [`MAX_DATAGRAM`] here (the kernel's
//!   own limit is the sender's SO_SNDBUF, ~208 KB by default, and a session
//!   may be 8 MB). Bigger frames go over ZeroMQ to `ipc://PATH.big`, which
//!   the relay binds beside the datagram socket; the PHP worker opens that
//!   ZeroMQ socket at its first big frame only. A big frame may overtake or
//!   fall behind small ones: the relay stamps its own sequence, and
//!   receivers apply by version, so order between frames does not matter.

use std::cell::{OnceCell, RefCell};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use crate::{BusError, BusOptions, Publisher};

pub const SCHEME: &str = "unixgram://";

/// Frames up to this size go as one datagram; bigger ones over ZeroMQ.
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// A `unixgram://PATH` relay takes frames too big for a datagram at
/// `ipc://PATH.big` (the same as `memcast_core::endpoint::BIG_FRAME_SUFFIX`,
/// checked by memcastd's tests).
pub const BIG_FRAME_SUFFIX: &str = ".big";

pub fn big_frame_endpoint(path: &str) -> String {
    format!("ipc://{path}{BIG_FRAME_SUFFIX}")
}

/// Below this many queued datagrams (net.unix.max_dgram_qlen, read when
/// the relay's socket is made), a burst of PHP writes while memcastd's main
/// loop is busy makes PHP wait: memcastd warns.
pub const SHORT_QUEUE: u64 = 64;

/// This network namespace's net.unix.max_dgram_qlen: how many datagrams
/// the relay's socket queues before senders wait (the kernel's default is
/// 10, systemd's 512).
pub fn queue_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn is_datagram(endpoint: &str) -> bool {
    endpoint.starts_with(SCHEME)
}

fn io_error(endpoint: &str, what: &'static str, source: std::io::Error) -> BusError {
    BusError::Io {
        endpoint: endpoint.to_owned(),
        what,
        source,
    }
}

/// A PHP worker's end: an unbound datagram socket.
pub(crate) struct Sender {
    socket: UnixDatagram,
    path: PathBuf,
    endpoint: String,
    send_timeout_ms: i32,
    options: BusOptions,
    /// ZeroMQ to `ipc://PATH.big`, opened at the first big frame.
    big: OnceCell<Box<Publisher>>,
}

impl Sender {
    pub fn open(endpoint: &str, opts: &BusOptions) -> Result<Sender, BusError> {
        let path = endpoint.strip_prefix(SCHEME).unwrap_or(endpoint);
        let socket = UnixDatagram::unbound().map_err(|e| io_error(endpoint, "socket", e))?;
        // A zero timeout would mean "forever" to the kernel (and std refuses
        // it): no wait at all is a non-blocking socket.
        match u64::try_from(opts.send_timeout_ms) {
            Ok(ms) if ms > 0 => socket
                .set_write_timeout(Some(Duration::from_millis(ms)))
                .map_err(|e| io_error(endpoint, "SO_SNDTIMEO", e))?,
            _ => socket
                .set_nonblocking(true)
                .map_err(|e| io_error(endpoint, "O_NONBLOCK", e))?,
        }
        Ok(Sender {
            socket,
            path: PathBuf::from(path),
            endpoint: endpoint.to_owned(),
            send_timeout_ms: opts.send_timeout_ms,
            options: opts.clone(),
            big: OnceCell::new(),
        })
    }

    pub fn send(&self, frame: &[u8]) -> Result<(), BusError> {
        if frame.len() > MAX_DATAGRAM {
            return self.send_big(frame);
        }
        match self.socket.send_to(frame, &self.path) {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => Err(BusError::Timeout {
                    endpoint: self.endpoint.clone(),
                    ms: self.send_timeout_ms,
                }),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => Err(BusError::NoRelay {
                    endpoint: self.endpoint.clone(),
                    source: e,
                }),
                // A send buffer smaller than MAX_DATAGRAM (wmem_default
                // lowered): this frame takes the big frames' way.
                _ if e.raw_os_error() == Some(libc::EMSGSIZE) => self.send_big(frame),
                _ => Err(io_error(&self.endpoint, "sendto", e)),
            },
        }
    }

    fn send_big(&self, frame: &[u8]) -> Result<(), BusError> {
        if self.big.get().is_none() {
            let path = self.path.to_string_lossy();
            let big = Publisher::relay(&big_frame_endpoint(&path), &self.options)?;
            let _ = self.big.set(Box::new(big));
        }
        match self.big.get() {
            Some(big) => big.send(frame),
            None => Err(io_error(
                &self.endpoint,
                "big-frame socket",
                std::io::Error::other("not opened"),
            )),
        }
    }
}

/// memcastd's end: the bound datagram socket its main loop polls.
pub(crate) struct Inbox {
    socket: UnixDatagram,
    endpoint: String,
    /// One datagram at a time; one byte more than the largest we send, to
    /// notice a longer one (cut off by the kernel).
    buffer: RefCell<Vec<u8>>,
    /// The socket file and its (device, inode) as bound: removed at drop
    /// if it is still ours (a daemon started meanwhile binds a new one).
    file: Option<(PathBuf, (u64, u64))>,
}

fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // A file left behind would look like a relay to PHP's senders until
        // the next bind; they are told `NoRelay` at once either way.
        if let Some((path, id)) = &self.file {
            if identity(path) == Some(*id) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Inbox {
    /// Binds `unixgram://PATH` (a socket file left by a killed daemon is
    /// removed first, as for `ipc://`).
    pub fn bind(endpoint: &str) -> Result<Inbox, BusError> {
        let path = endpoint.strip_prefix(SCHEME).unwrap_or(endpoint);
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path).map_err(|e| BusError::Endpoint {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
        socket
            .set_nonblocking(true)
            .map_err(|e| io_error(endpoint, "O_NONBLOCK", e))?;
        // SO_RCVBUF is not what bounds this queue (std cannot set it anyway):
        // a Unix datagram is charged to its sender's SO_SNDBUF until read,
        // and the queue holds at most net.unix.max_dgram_qlen datagrams.
        let file = identity(std::path::Path::new(path)).map(|id| (PathBuf::from(path), id));
        Ok(Inbox {
            socket,
            endpoint: endpoint.to_owned(),
            buffer: RefCell::new(vec![0; MAX_DATAGRAM + 1]),
            file,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// A datagram already queued, if any.
    pub fn try_recv(&self) -> Result<Option<Vec<u8>>, BusError> {
        let mut buffer = self.buffer.borrow_mut();
        loop {
            match self.socket.recv(&mut buffer) {
                // Longer than any sender of ours sends: not a frame.
                Ok(n) if n > MAX_DATAGRAM => continue,
                Ok(n) => return Ok(Some(buffer[..n].to_vec())),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&self.endpoint, "recv", e)),
            }
        }
    }
}
