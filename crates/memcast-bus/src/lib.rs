//! memcast's ZeroMQ layer: moves sealed frames (opaque bytes) between
//! processes over `epgm://` / `pgm://` (reliable multicast), `tcp://` or
//! `ipc://`, and from PHP to the host relay also over `unixgram://` (a Unix
//! datagram socket, [`datagram`]). It knows nothing of frames' contents;
//! the core does.
//!
//! ZeroMQ's PGM defaults lose data quietly (a 100 kbit/s rate limit, a PUB
//! socket that drops at its high-water mark), so every option that decides
//! whether a write arrives is set here from [`BusOptions`], with defaults
//! sized for session traffic.

use std::time::Duration;

pub mod datagram;
mod tpdu;

pub use tpdu::{DEFAULT_MAX_TPDU, MAX_MAX_TPDU, MIN_MAX_TPDU};

/// Socket options for both ends. Defaults are documented in the README.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusOptions {
    /// ZMQ_RATE: the PGM sender's rate limit, kbit/s.
    pub rate_kbps: i32,
    /// ZMQ_RECOVERY_IVL: how long a PGM sender keeps data for repairs, ms.
    /// Memory per sender is up to rate x interval.
    pub recovery_ms: i32,
    /// ZMQ_SNDBUF / ZMQ_RCVBUF: kernel socket buffers, bytes.
    pub sndbuf: i32,
    pub rcvbuf: i32,
    /// ZMQ_SNDHWM / ZMQ_RCVHWM: messages queued before ZeroMQ drops.
    pub sndhwm: i32,
    pub rcvhwm: i32,
    /// ZMQ_MAXMSGSIZE on receivers: larger messages are refused by ZeroMQ.
    pub max_message: i64,
    /// ZMQ_LINGER on senders: how long closing waits for unsent frames, ms.
    pub linger_ms: i32,
    /// ZMQ_MULTICAST_HOPS: TTL of multicast datagrams.
    pub multicast_hops: i32,
    /// ZMQ_SNDTIMEO (SO_SNDTIMEO for `unixgram://`) when handing frames to
    /// a local memcastd (`ipc://`, `tcp://`, `unixgram://`): the longest a PHP request waits before the frame is
    /// dropped and counted, ms.
    pub send_timeout_ms: i32,
    /// ZMQ_MULTICAST_MAXTPDU: the largest PGM packet, bytes (IP and UDP
    /// headers included). ZeroMQ's default, 1 500, fits an Ethernet MTU; on
    /// a network of jumbo frames a larger one carries a 2 KB session, or a
    /// batch of them, in one packet: one send, one wake-up per receiver.
    /// Every host of a group must use the same value.
    pub max_tpdu: i32,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            rate_kbps: 100_000,
            recovery_ms: 2_000,
            sndbuf: 4 * 1024 * 1024,
            rcvbuf: 8 * 1024 * 1024,
            sndhwm: 10_000,
            rcvhwm: 100_000,
            max_message: 16 * 1024 * 1024,
            linger_ms: 1_000,
            multicast_hops: 1,
            send_timeout_ms: 50,
            max_tpdu: DEFAULT_MAX_TPDU,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("zeromq {what}: {source}")]
    Zmq {
        what: &'static str,
        source: zmq::Error,
    },
    #[error("send queue full (high-water mark reached): frame dropped")]
    QueueFull,
    #[error("{endpoint} did not take the frame within {ms} ms: frame dropped")]
    Timeout { endpoint: String, ms: i32 },
    #[error("{endpoint}: no relay is listening ({source}): frame dropped")]
    NoRelay {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: {what}: {source}")]
    Io {
        endpoint: String,
        what: &'static str,
        source: std::io::Error,
    },
}

fn zmq_err(what: &'static str) -> impl FnOnce(zmq::Error) -> BusError {
    move |source| BusError::Zmq { what, source }
}

/// The transports memcast speaks.
pub fn check_endpoint(endpoint: &str) -> Result<(), BusError> {
    let known = ["epgm://", "pgm://", "tcp://", "ipc://", datagram::SCHEME];
    if known
        .iter()
        .any(|p| endpoint.starts_with(p) && endpoint.len() > p.len())
    {
        Ok(())
    } else {
        Err(BusError::Endpoint {
            endpoint: endpoint.to_owned(),
            message: "expected epgm://IFACE;GROUP:PORT, pgm://IFACE;GROUP:PORT, tcp://HOST:PORT, ipc://PATH or unixgram://PATH".into(),
        })
    }
}

/// `unixgram://` is only the hand-off from PHP to the host relay.
fn check_zmq_endpoint(endpoint: &str) -> Result<(), BusError> {
    check_endpoint(endpoint)?;
    if datagram::is_datagram(endpoint) {
        return Err(BusError::Endpoint {
            endpoint: endpoint.to_owned(),
            message: "unixgram:// is only for handing PHP's frames to the host relay (memcast.publish and memcastd --relay)".into(),
        });
    }
    Ok(())
}

/// Over TCP (TCP mode, the relay), ZMTP heartbeats notice a peer whose link
/// died within seconds, so the connection is dropped and made again (and
/// the frames missed meanwhile show up as a gap) instead of hanging on a
/// half-open socket. PGM ignores these options.
fn set_tcp_liveness(socket: &zmq::Socket) -> Result<(), BusError> {
    socket
        .set_heartbeat_ivl(1000)
        .map_err(zmq_err("ZMQ_HEARTBEAT_IVL"))?;
    socket
        .set_heartbeat_timeout(3000)
        .map_err(zmq_err("ZMQ_HEARTBEAT_TIMEOUT"))?;
    socket
        .set_heartbeat_ttl(3000)
        .map_err(zmq_err("ZMQ_HEARTBEAT_TTL"))?;
    socket
        .set_reconnect_ivl_max(2000)
        .map_err(zmq_err("ZMQ_RECONNECT_IVL_MAX"))
}

/// How often a PHP worker's relay socket tries to reconnect to a memcastd
/// that went away, ms (ZMQ_RECONNECT_IVL; ZeroMQ adds up to as much again
/// at random). Fixed, without ZeroMQ's exponential back-off: backing off to
/// seconds kept a worker refusing frames for up to 1.7 s after its relay was
/// back (measured with strace: attempts 0.1, 0.4, 0.8, 1.7, 3.4 s after the
/// relay died), past the moment peers take their snapshot of the restarted
/// relay's memcached, so writes made in between reached no other host. A
/// refused connect to a local socket costs one system call.
pub const RELAY_RECONNECT_MS: i32 = 100;

/// Within this time of a relay binding its socket, every PHP worker that
/// was connected before has connected again (two reconnect intervals, with
/// room for a busy host). memcastd announces a new relay only after it: a
/// frame refused or lost meanwhile belongs to a write already stored in the
/// local memcached, which the snapshot peers then take carries.
pub const RELAY_RECONNECTED_WITHIN: Duration = Duration::from_millis(500);

fn is_multicast(endpoint: &str) -> bool {
    endpoint.starts_with("epgm://") || endpoint.starts_with("pgm://")
}

/// One process's sending end.
///
/// To a multicast group (`epgm://`, `pgm://`) it is a PUB socket: frames are
/// queued without blocking and a full queue is reported, never waited on. To
/// a local memcastd (`ipc://`, `tcp://`: the host relay) it is a PUSH socket
/// that only queues while connected (ZMQ_IMMEDIATE) and waits at most
/// `send_timeout_ms` for the daemon, so an absent or stuck memcastd costs a
/// request a bounded delay and a counted drop, never a hang. To a local
/// memcastd at `unixgram://` it is a Unix datagram socket with the same
/// bounded wait ([`datagram`]).
pub struct Publisher {
    way: Way,
    endpoint: String,
}

enum Way {
    Zmq {
        socket: zmq::Socket,
        relay: bool,
        send_timeout_ms: i32,
        // Dropped after the socket (fields drop in order), so closing lingers.
        _context: zmq::Context,
    },
    Datagram(datagram::Sender),
}

impl Publisher {
    /// A sender to the group: PUB, connected (`epgm://`, `pgm://`) or to a
    /// subscriber that binds (`tcp://`).
    pub fn connect(endpoint: &str, opts: &BusOptions) -> Result<Publisher, BusError> {
        Publisher::open(endpoint, opts, false, |socket| socket.connect(endpoint))
    }

    /// A PHP worker's sender to its host's memcastd (`ipc://`, `tcp://`:
    /// PUSH; `unixgram://`: a datagram socket): bounded wait, counted drops.
    pub fn relay(endpoint: &str, opts: &BusOptions) -> Result<Publisher, BusError> {
        if is_multicast(endpoint) {
            return Err(BusError::Endpoint {
                endpoint: endpoint.to_owned(),
                message: "a relay endpoint is unixgram://, ipc:// or tcp://, not multicast".into(),
            });
        }
        if datagram::is_datagram(endpoint) {
            check_endpoint(endpoint)?;
            return Ok(Publisher {
                way: Way::Datagram(datagram::Sender::open(endpoint, opts)?),
                endpoint: endpoint.to_owned(),
            });
        }
        Publisher::open(endpoint, opts, true, |socket| socket.connect(endpoint))
    }

    /// A PUB socket others subscribe to (`tcp://`): a TCP fan-out, and tests.
    pub fn bind(endpoint: &str, opts: &BusOptions) -> Result<Publisher, BusError> {
        Publisher::open(endpoint, opts, false, |socket| socket.bind(endpoint))
    }

    fn open(
        endpoint: &str,
        opts: &BusOptions,
        relay: bool,
        attach: impl FnOnce(&zmq::Socket) -> zmq::Result<()>,
    ) -> Result<Publisher, BusError> {
        check_zmq_endpoint(endpoint)?;
        let context = zmq::Context::new();
        let kind = if relay { zmq::PUSH } else { zmq::PUB };
        let mut socket = context.socket(kind).map_err(zmq_err("socket"))?;
        if relay {
            socket
                .set_immediate(true)
                .map_err(zmq_err("ZMQ_IMMEDIATE"))?;
            socket
                .set_sndtimeo(opts.send_timeout_ms)
                .map_err(zmq_err("ZMQ_SNDTIMEO"))?;
        }
        socket
            .set_sndhwm(opts.sndhwm)
            .map_err(zmq_err("ZMQ_SNDHWM"))?;
        socket
            .set_linger(opts.linger_ms)
            .map_err(zmq_err("ZMQ_LINGER"))?;
        socket
            .set_sndbuf(opts.sndbuf)
            .map_err(zmq_err("ZMQ_SNDBUF"))?;
        set_tcp_liveness(&socket)?;
        if relay {
            socket
                .set_reconnect_ivl(RELAY_RECONNECT_MS)
                .map_err(zmq_err("ZMQ_RECONNECT_IVL"))?;
            // 0: no back-off (see RELAY_RECONNECT_MS).
            socket
                .set_reconnect_ivl_max(0)
                .map_err(zmq_err("ZMQ_RECONNECT_IVL_MAX"))?;
        }
        // PGM options must be set before connecting; ZeroMQ ignores them on
        // other transports.
        if is_multicast(endpoint) {
            socket
                .set_rate(opts.rate_kbps)
                .map_err(zmq_err("ZMQ_RATE"))?;
            socket
                .set_recovery_ivl(opts.recovery_ms)
                .map_err(zmq_err("ZMQ_RECOVERY_IVL"))?;
            socket
                .set_multicast_hops(opts.multicast_hops)
                .map_err(zmq_err("ZMQ_MULTICAST_HOPS"))?;
            tpdu::set_max_tpdu(&mut socket, opts.max_tpdu)?;
        }
        attach(&socket).map_err(|e| BusError::Endpoint {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
        // After a bind to port `*`, the real endpoint.
        let endpoint = socket
            .get_last_endpoint()
            .ok()
            .and_then(|r| r.ok())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| endpoint.to_owned());
        Ok(Publisher {
            way: Way::Zmq {
                socket,
                relay,
                send_timeout_ms: opts.send_timeout_ms,
                _context: context,
            },
            endpoint,
        })
    }

    /// The endpoint as connected or bound (with the real port after `:*`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queues one frame: never blocks on a multicast group; waits at most
    /// `send_timeout_ms` for a local memcastd.
    pub fn send(&self, frame: &[u8]) -> Result<(), BusError> {
        let (socket, relay, send_timeout_ms) = match &self.way {
            Way::Datagram(sender) => return sender.send(frame),
            Way::Zmq {
                socket,
                relay,
                send_timeout_ms,
                ..
            } => (socket, *relay, *send_timeout_ms),
        };
        let flags = if relay { 0 } else { zmq::DONTWAIT };
        match socket.send(frame, flags) {
            Ok(()) => Ok(()),
            Err(zmq::Error::EAGAIN) if relay => Err(BusError::Timeout {
                endpoint: self.endpoint.clone(),
                ms: send_timeout_ms,
            }),
            Err(zmq::Error::EAGAIN) => Err(BusError::QueueFull),
            Err(e) => Err(BusError::Zmq {
                what: "send",
                source: e,
            }),
        }
    }
}

/// Whether an endpoint is a multicast group (PGM) rather than a local relay.
pub fn is_multicast_endpoint(endpoint: &str) -> bool {
    is_multicast(endpoint)
}

/// Where a received message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The group (or a TCP publisher): frames from other hosts.
    Group,
    /// This host's PHP workers, handing frames to the relay.
    Relay,
}

/// The receiving end: one SUB socket joined to every endpoint given, and
/// optionally the PULL socket PHP workers hand frames to (the host relay),
/// with `unixgram://` also the datagram socket they send to.
pub struct Subscriber {
    socket: zmq::Socket,
    relay: Option<zmq::Socket>,
    datagrams: Option<datagram::Inbox>,
    /// What the group socket was made from, to make it again
    /// ([`Subscriber::rejoin_group`]).
    endpoints: Vec<String>,
    opts: BusOptions,
    _context: zmq::Context,
}

impl Subscriber {
    pub fn connect(endpoints: &[String], opts: &BusOptions) -> Result<Subscriber, BusError> {
        let context = zmq::Context::new();
        let socket = group_socket(&context, endpoints, opts)?;
        Ok(Subscriber {
            socket,
            relay: None,
            datagrams: None,
            endpoints: endpoints.to_vec(),
            opts: opts.clone(),
            _context: context,
        })
    }

    /// Leaves the group and joins it again with a new socket (the relay's
    /// sockets stay): a new PGM receiver, without whatever state the old
    /// one was stuck in. What was queued in the old socket, and what
    /// arrives while the new one joins, is lost to this socket: the
    /// caller repairs it as it repairs any gap.
    pub fn rejoin_group(&mut self) -> Result<(), BusError> {
        let fresh = group_socket(&self._context, &self.endpoints, &self.opts)?;
        self.socket = fresh;
        Ok(())
    }

    /// A SUB that binds (publishers connect to it): a test's stand-in for
    /// the group, to see what a relay sends.
    pub fn bind_for_tests(endpoint: &str, opts: &BusOptions) -> Result<Subscriber, BusError> {
        let sub = Subscriber::connect(&[], opts)?;
        sub.socket.bind(endpoint).map_err(|e| BusError::Endpoint {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
        Ok(sub)
    }

    /// Also receive frames PHP workers hand over at `endpoint` (`ipc://...`,
    /// `tcp://127.0.0.1:...`, or `unixgram://PATH`: the datagram socket at
    /// PATH and, for frames too big for a datagram, `ipc://PATH.big`).
    pub fn bind_relay(&mut self, endpoint: &str, opts: &BusOptions) -> Result<(), BusError> {
        check_endpoint(endpoint)?;
        if let Some(path) = endpoint.strip_prefix(datagram::SCHEME) {
            let inbox = datagram::Inbox::bind(endpoint)?;
            self.bind_relay(&datagram::big_frame_endpoint(path), opts)?;
            self.datagrams = Some(inbox);
            return Ok(());
        }
        if let Some(path) = endpoint.strip_prefix("ipc://") {
            // A socket file left by a daemon that was killed would make bind fail.
            let _ = std::fs::remove_file(path);
        }
        let socket = self._context.socket(zmq::PULL).map_err(zmq_err("socket"))?;
        socket
            .set_rcvhwm(opts.rcvhwm)
            .map_err(zmq_err("ZMQ_RCVHWM"))?;
        socket
            .set_maxmsgsize(opts.max_message)
            .map_err(zmq_err("ZMQ_MAXMSGSIZE"))?;
        socket.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
        socket.bind(endpoint).map_err(|e| BusError::Endpoint {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
        self.relay = Some(socket);
        Ok(())
    }

    /// The next message from either socket, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Result<Option<(Source, Vec<u8>)>, BusError> {
        self.recv_from(Sources::ALL, timeout)
    }

    /// A message already queued on either socket (relay first: local writes
    /// are what other hosts wait for).
    pub fn try_recv(&self) -> Result<Option<(Source, Vec<u8>)>, BusError> {
        self.try_recv_from(Sources::ALL)
    }

    /// The next message from the sources in `from`, or `None` after
    /// `timeout`. A source left out does not wake the caller: its messages
    /// wait in its queue (how memcastd batches one source's frames while
    /// still taking the other's at once).
    pub fn recv_from(
        &self,
        from: Sources,
        timeout: Duration,
    ) -> Result<Option<(Source, Vec<u8>)>, BusError> {
        if let Some(m) = self.try_recv_from(from)? {
            return Ok(Some(m));
        }
        // Rounded up: a wait of under a millisecond must not become a poll
        // that returns at once (a busy loop until the time has come).
        let ms = timeout.as_micros().div_ceil(1000).min(i64::MAX as u128) as i64;
        let mut items = Vec::with_capacity(3);
        if from.group {
            items.push(self.socket.as_poll_item(zmq::POLLIN));
        }
        if from.relay {
            if let Some(relay) = &self.relay {
                items.push(relay.as_poll_item(zmq::POLLIN));
            }
            if let Some(datagrams) = &self.datagrams {
                items.push(zmq::PollItem::from_fd(datagrams.fd(), zmq::POLLIN));
            }
        }
        // zmq_poll with no items sleeps out the timeout.
        let ready = match zmq::poll(&mut items, ms) {
            Ok(n) => n,
            // A signal (SIGTERM, SIGINT): the caller's loop decides what next.
            Err(zmq::Error::EINTR) => return Ok(None),
            Err(e) => return Err(zmq_err("poll")(e)),
        };
        if ready == 0 {
            return Ok(None);
        }
        self.try_recv_from(from)
    }

    /// A message already queued on a socket of the sources in `from`
    /// (relay first).
    pub fn try_recv_from(&self, from: Sources) -> Result<Option<(Source, Vec<u8>)>, BusError> {
        if from.relay {
            if let Some(datagrams) = &self.datagrams {
                if let Some(bytes) = datagrams.try_recv()? {
                    return Ok(Some((Source::Relay, bytes)));
                }
            }
            if let Some(relay) = &self.relay {
                if let Some(bytes) = recv_now(relay)? {
                    return Ok(Some((Source::Relay, bytes)));
                }
            }
        }
        if !from.group {
            return Ok(None);
        }
        Ok(recv_now(&self.socket)?.map(|b| (Source::Group, b)))
    }
}

/// Which of a [`Subscriber`]'s sources a receive takes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    pub group: bool,
    pub relay: bool,
}

impl Sources {
    pub const ALL: Sources = Sources {
        group: true,
        relay: true,
    };
}

/// The SUB socket joined to every endpoint, with the receiving options.
fn group_socket(
    context: &zmq::Context,
    endpoints: &[String],
    opts: &BusOptions,
) -> Result<zmq::Socket, BusError> {
    let mut socket = context.socket(zmq::SUB).map_err(zmq_err("socket"))?;
    socket
        .set_rcvhwm(opts.rcvhwm)
        .map_err(zmq_err("ZMQ_RCVHWM"))?;
    socket
        .set_rcvbuf(opts.rcvbuf)
        .map_err(zmq_err("ZMQ_RCVBUF"))?;
    socket
        .set_maxmsgsize(opts.max_message)
        .map_err(zmq_err("ZMQ_MAXMSGSIZE"))?;
    socket
        .set_rate(opts.rate_kbps)
        .map_err(zmq_err("ZMQ_RATE"))?;
    socket
        .set_recovery_ivl(opts.recovery_ms)
        .map_err(zmq_err("ZMQ_RECOVERY_IVL"))?;
    socket.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
    // A receiver's buffers are sized by it: it must be at least the
    // senders' (the group's one value).
    if endpoints.iter().any(|e| is_multicast(e)) {
        tpdu::set_max_tpdu(&mut socket, opts.max_tpdu)?;
    }
    set_tcp_liveness(&socket)?;
    socket
        .set_subscribe(b"")
        .map_err(zmq_err("ZMQ_SUBSCRIBE"))?;
    for endpoint in endpoints {
        check_zmq_endpoint(endpoint)?;
        socket.connect(endpoint).map_err(|e| BusError::Endpoint {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(socket)
}

fn recv_now(socket: &zmq::Socket) -> Result<Option<Vec<u8>>, BusError> {
    match socket.recv_bytes(zmq::DONTWAIT) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(zmq::Error::EAGAIN) => Ok(None),
        Err(e) => Err(BusError::Zmq {
            what: "recv",
            source: e,
        }),
    }
}

/// Whether this libzmq was built with PGM (Debian's is; zmq-sys's vendored
/// build is not).
pub fn has_pgm() -> bool {
    zmq::has("pgm").unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_libzmq_has_pgm() {
        assert!(
            has_pgm(),
            "libzmq without PGM: the system libzmq must be linked (see .cargo/config.toml)"
        );
    }

    #[test]
    fn a_relay_s_datagram_socket_file_goes_with_it_unless_another_took_the_path() {
        let dir = std::env::temp_dir().join(format!("memcast-bus-dg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.sock");
        let endpoint = format!("unixgram://{}", path.display());
        let opts = BusOptions::default();
        let mut first = Subscriber::connect(&[], &opts).unwrap();
        first.bind_relay(&endpoint, &opts).unwrap();
        assert!(path.exists());
        drop(first);
        assert!(!path.exists(), "the socket file outlived its relay");
        // A second relay binding the same path (a restart) keeps its file
        // when the first one goes after it.
        let mut old = Subscriber::connect(&[], &opts).unwrap();
        old.bind_relay(&endpoint, &opts).unwrap();
        let mut new = Subscriber::connect(&[], &opts).unwrap();
        new.bind_relay(&endpoint, &opts).unwrap();
        drop(old);
        assert!(path.exists(), "the old relay removed the new one's socket");
        let sender = Publisher::relay(&endpoint, &opts).unwrap();
        sender.send(b"frame").unwrap();
        assert_eq!(
            new.recv(Duration::from_secs(1)).unwrap(),
            Some((Source::Relay, b"frame".to_vec()))
        );
        drop(new);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_transport_is_a_clear_error() {
        let err = check_endpoint("udp://239.1.1.1:5555")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("udp://239.1.1.1:5555") && err.contains("epgm://"),
            "{err}"
        );
    }

    #[test]
    fn frames_cross_a_tcp_connection_and_after_rejoining() {
        let opts = BusOptions::default();
        let ctx = zmq::Context::new();
        let publisher_side = ctx.socket(zmq::PUB).unwrap();
        publisher_side.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = publisher_side.get_last_endpoint().unwrap().unwrap();
        let sub = Subscriber::connect(std::slice::from_ref(&endpoint), &opts).unwrap();
        // Slow joiner: keep sending until the subscription is through.
        let mut got = None;
        for _ in 0..100 {
            publisher_side.send(&b"frame"[..], 0).unwrap();
            if let Some(m) = sub.recv(Duration::from_millis(20)).unwrap() {
                got = Some(m);
                break;
            }
        }
        assert_eq!(got, Some((Source::Group, b"frame".to_vec())));
        // A new socket joins the same endpoints; frames come through it.
        let mut sub = sub;
        sub.rejoin_group().unwrap();
        let mut again = None;
        for _ in 0..100 {
            publisher_side.send(&b"after"[..], 0).unwrap();
            if let Some(m) = sub.recv(Duration::from_millis(20)).unwrap() {
                again = Some(m);
                break;
            }
        }
        assert_eq!(again, Some((Source::Group, b"after".to_vec())));
    }

    #[test]
    fn a_source_left_out_keeps_its_frames_queued_and_does_not_wake_the_caller() {
        let opts = BusOptions::default();
        let ctx = zmq::Context::new();
        let group = ctx.socket(zmq::PUB).unwrap();
        group.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = group.get_last_endpoint().unwrap().unwrap();
        let mut sub = Subscriber::connect(std::slice::from_ref(&endpoint), &opts).unwrap();
        let dir = std::env::temp_dir().join(format!("memcast-bus-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let relay = format!("unixgram://{}/relay.sock", dir.display());
        sub.bind_relay(&relay, &opts).unwrap();
        // Slow joiner: one group frame through, then one more queued.
        let mut joined = false;
        for _ in 0..100 {
            group.send(&b"probe"[..], 0).unwrap();
            if sub.recv(Duration::from_millis(20)).unwrap().is_some() {
                joined = true;
                break;
            }
        }
        assert!(joined, "the subscription never went through");
        while sub.try_recv().unwrap().is_some() {}
        group.send(&b"queued"[..], 0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let relay_only = Sources {
            group: false,
            relay: true,
        };
        let started = std::time::Instant::now();
        assert_eq!(
            sub.recv_from(relay_only, Duration::from_millis(30))
                .unwrap(),
            None
        );
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "woken by the group"
        );
        assert_eq!(sub.try_recv_from(relay_only).unwrap(), None);
        // The relay's frame is taken; the group's still waits for its turn.
        let php = Publisher::relay(&relay, &opts).unwrap();
        php.send(b"local").unwrap();
        assert_eq!(
            sub.recv_from(relay_only, Duration::from_secs(5)).unwrap(),
            Some((Source::Relay, b"local".to_vec()))
        );
        let nothing = Sources {
            group: false,
            relay: false,
        };
        let started = std::time::Instant::now();
        assert_eq!(
            sub.recv_from(nothing, Duration::from_millis(20)).unwrap(),
            None
        );
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "no source: a sleep"
        );
        assert_eq!(
            sub.recv_from(Sources::ALL, Duration::from_secs(5)).unwrap(),
            Some((Source::Group, b"queued".to_vec()))
        );
        drop(sub);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn relay_hands_frames_to_the_daemon_and_times_out_without_one() {
        let dir = std::env::temp_dir().join(format!("memcast-bus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let endpoint = format!("ipc://{}/relay.sock", dir.display());
        let opts = BusOptions {
            send_timeout_ms: 30,
            ..BusOptions::default()
        };
        // No daemon: the send gives up after the timeout.
        let lonely = Publisher::relay(&endpoint, &opts).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            lonely.send(b"x"),
            Err(BusError::Timeout { ms: 30, .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(lonely);
        // With a daemon bound, frames arrive marked as relayed.
        let mut inbox = Subscriber::connect(&[], &opts).unwrap();
        inbox.bind_relay(&endpoint, &opts).unwrap();
        let php = Publisher::relay(&endpoint, &opts).unwrap();
        let mut sent = false;
        for _ in 0..50 {
            if php.send(b"frame").is_ok() {
                sent = true;
                break;
            }
        }
        assert!(sent, "the relay never took a frame");
        assert_eq!(
            inbox.recv(Duration::from_secs(5)).unwrap(),
            Some((Source::Relay, b"frame".to_vec()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relay_socket_is_back_soon_after_the_daemon_returns() {
        let dir = std::env::temp_dir().join(format!("memcast-bus-back-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let endpoint = format!("ipc://{}/relay.sock", dir.display());
        let opts = BusOptions::default();
        let bind = || {
            let mut inbox = Subscriber::connect(&[], &opts).unwrap();
            inbox.bind_relay(&endpoint, &opts).unwrap();
            inbox
        };
        let inbox = bind();
        let php = Publisher::relay(&endpoint, &opts).unwrap();
        assert!(
            (0..50).any(|_| php.send(b"before").is_ok()),
            "never connected"
        );
        drop(inbox);
        // Away long enough for a backing-off socket to wait seconds.
        std::thread::sleep(Duration::from_millis(2500));
        let inbox = bind();
        std::thread::sleep(RELAY_RECONNECTED_WITHIN);
        let started = std::time::Instant::now();
        php.send(b"after")
            .expect("reconnected within RELAY_RECONNECTED_WITHIN");
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "the send waited"
        );
        assert_eq!(
            inbox.recv(Duration::from_secs(5)).unwrap(),
            Some((Source::Relay, b"after".to_vec()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn datagram_endpoint(tag: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("memcast-dgram-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let endpoint = format!("unixgram://{}/relay.dgram", dir.display());
        (dir, endpoint)
    }

    #[test]
    fn datagram_relay_absent_is_an_immediate_clear_error() {
        let (dir, endpoint) = datagram_endpoint("absent");
        let opts = BusOptions::default();
        let lonely = Publisher::relay(&endpoint, &opts).unwrap();
        let started = std::time::Instant::now();
        let err = lonely.send(b"x").unwrap_err();
        assert!(matches!(err, BusError::NoRelay { .. }), "{err}");
        assert!(err.to_string().contains(&endpoint), "{err}");
        // A socket file nobody reads any more (a killed relay's).
        let path = endpoint.strip_prefix("unixgram://").unwrap();
        drop(std::os::unix::net::UnixDatagram::bind(path).unwrap());
        let err = lonely.send(b"x").unwrap_err();
        assert!(matches!(err, BusError::NoRelay { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_millis(20),
            "waited {:?} for an absent relay",
            started.elapsed()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn datagram_frames_arrive_in_order_marked_relayed() {
        let (dir, endpoint) = datagram_endpoint("order");
        let opts = BusOptions::default();
        let mut inbox = Subscriber::connect(&[], &opts).unwrap();
        inbox.bind_relay(&endpoint, &opts).unwrap();
        let php = Publisher::relay(&endpoint, &opts).unwrap();
        let mut got = Vec::new();
        for i in 0..1000u32 {
            php.send(&i.to_be_bytes()).unwrap();
            // Read as we go: the kernel queues only a few datagrams.
            while let Some(m) = inbox.try_recv().unwrap() {
                got.push(m);
            }
        }
        while got.len() < 1000 {
            match inbox.recv(Duration::from_secs(5)).unwrap() {
                Some(m) => got.push(m),
                None => break,
            }
        }
        let expected: Vec<_> = (0..1000u32)
            .map(|i| (Source::Relay, i.to_be_bytes().to_vec()))
            .collect();
        assert_eq!(got, expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stuck_datagram_relay_costs_a_send_at_most_the_timeout() {
        let (dir, endpoint) = datagram_endpoint("stuck");
        let opts = BusOptions {
            send_timeout_ms: 40,
            ..BusOptions::default()
        };
        // Bound, never read: its queue fills.
        let mut inbox = Subscriber::connect(&[], &opts).unwrap();
        inbox.bind_relay(&endpoint, &opts).unwrap();
        let php = Publisher::relay(&endpoint, &opts).unwrap();
        let frame = vec![7u8; 2048];
        let mut taken = 0;
        let refused = loop {
            let started = std::time::Instant::now();
            match php.send(&frame) {
                Ok(()) => taken += 1,
                Err(e) => break (e, started.elapsed()),
            }
            assert!(taken < 100_000, "the relay's queue never filled");
        };
        assert!(
            matches!(refused.0, BusError::Timeout { ms: 40, .. }),
            "{}",
            refused.0
        );
        assert!(
            refused.1 >= Duration::from_millis(35) && refused.1 < Duration::from_millis(500),
            "a refused send took {:?}",
            refused.1
        );
        assert!(taken > 0);
        // What was queued is still there, in order, once the relay reads.
        assert_eq!(
            inbox.try_recv().unwrap(),
            Some((Source::Relay, frame.clone()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_frame_too_big_for_a_datagram_arrives_by_zeromq() {
        let (dir, endpoint) = datagram_endpoint("big");
        let opts = BusOptions {
            send_timeout_ms: 2000,
            ..BusOptions::default()
        };
        let mut inbox = Subscriber::connect(&[], &opts).unwrap();
        inbox.bind_relay(&endpoint, &opts).unwrap();
        let php = Publisher::relay(&endpoint, &opts).unwrap();
        let largest = vec![1u8; datagram::MAX_DATAGRAM];
        let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        php.send(b"small").unwrap();
        php.send(&largest).unwrap();
        php.send(&big).unwrap();
        php.send(b"after").unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            match inbox.recv(Duration::from_secs(5)).unwrap() {
                Some((source, bytes)) => {
                    assert_eq!(source, Source::Relay);
                    got.push(bytes);
                }
                None => break,
            }
        }
        got.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        let expected = vec![b"after".to_vec(), b"small".to_vec(), largest, big];
        let lengths = |v: &[Vec<u8>]| v.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(lengths(&got), lengths(&expected));
        assert!(got == expected, "a frame arrived changed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_restarted_datagram_relay_takes_the_next_frame() {
        let (dir, endpoint) = datagram_endpoint("back");
        let opts = BusOptions::default();
        let bind = || {
            let mut inbox = Subscriber::connect(&[], &opts).unwrap();
            inbox.bind_relay(&endpoint, &opts).unwrap();
            inbox
        };
        let php = Publisher::relay(&endpoint, &opts).unwrap();
        let inbox = bind();
        php.send(b"before").unwrap();
        drop(inbox);
        assert!(matches!(php.send(b"away"), Err(BusError::NoRelay { .. })));
        let inbox = bind();
        php.send(b"after").unwrap();
        assert_eq!(
            inbox.recv(Duration::from_secs(5)).unwrap(),
            Some((Source::Relay, b"after".to_vec()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unixgram_is_only_for_the_relay() {
        let opts = BusOptions::default();
        let err = Subscriber::connect(&["unixgram:///tmp/x".to_owned()], &opts)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("host relay"), "{err}");
        assert!(Publisher::connect("unixgram:///tmp/x", &opts).is_err());
    }
}
