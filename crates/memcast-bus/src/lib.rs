//! memcast's ZeroMQ layer: moves sealed frames (opaque bytes) between
//! processes over `epgm://` / `pgm://` (reliable multicast), `tcp://` or
//! `ipc://`. It knows nothing of frames' contents; the core does.
//!
//! ZeroMQ's PGM defaults lose data quietly (a 100 kbit/s rate limit, a PUB
//! socket that drops at its high-water mark), so every option that decides
//! whether a write arrives is set here from [`BusOptions`], with defaults
//! sized for session traffic.

use std::time::Duration;

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
}

fn zmq_err(what: &'static str) -> impl FnOnce(zmq::Error) -> BusError {
    move |source| BusError::Zmq { what, source }
}

/// The transports memcast speaks.
pub fn check_endpoint(endpoint: &str) -> Result<(), BusError> {
    let known = ["epgm://", "pgm://", "tcp://", "ipc://"];
    if known.iter().any(|p| endpoint.starts_with(p)) && endpoint.len() > 7 {
        Ok(())
    } else {
        Err(BusError::Endpoint {
            endpoint: endpoint.to_owned(),
            message: "expected epgm://IFACE;GROUP:PORT, pgm://IFACE;GROUP:PORT, tcp://HOST:PORT or ipc://PATH".into(),
        })
    }
}

fn is_multicast(endpoint: &str) -> bool {
    endpoint.starts_with("epgm://") || endpoint.starts_with("pgm://")
}

/// One process's sending end. Frames are queued without blocking; a full
/// queue is reported, never waited on.
pub struct Publisher {
    socket: zmq::Socket,
    // Dropped after the socket (fields drop in order), so closing lingers.
    _context: zmq::Context,
    endpoint: String,
}

impl Publisher {
    /// A publisher that connects: every PGM sender, and a PHP worker handing
    /// frames to a local daemon.
    pub fn connect(endpoint: &str, opts: &BusOptions) -> Result<Publisher, BusError> {
        Publisher::open(endpoint, opts, |socket| socket.connect(endpoint))
    }

    /// A publisher others connect to (`tcp://`, `ipc://`): the daemon's side
    /// of a host relay or a TCP fan-out, and tests.
    pub fn bind(endpoint: &str, opts: &BusOptions) -> Result<Publisher, BusError> {
        Publisher::open(endpoint, opts, |socket| socket.bind(endpoint))
    }

    fn open(
        endpoint: &str,
        opts: &BusOptions,
        attach: impl FnOnce(&zmq::Socket) -> zmq::Result<()>,
    ) -> Result<Publisher, BusError> {
        check_endpoint(endpoint)?;
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PUB).map_err(zmq_err("socket"))?;
        socket
            .set_sndhwm(opts.sndhwm)
            .map_err(zmq_err("ZMQ_SNDHWM"))?;
        socket
            .set_linger(opts.linger_ms)
            .map_err(zmq_err("ZMQ_LINGER"))?;
        socket
            .set_sndbuf(opts.sndbuf)
            .map_err(zmq_err("ZMQ_SNDBUF"))?;
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
            socket,
            _context: context,
            endpoint,
        })
    }

    /// The endpoint as connected or bound (with the real port after `:*`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queues one frame. Never blocks.
    pub fn send(&self, frame: &[u8]) -> Result<(), BusError> {
        match self.socket.send(frame, zmq::DONTWAIT) {
            Ok(()) => Ok(()),
            Err(zmq::Error::EAGAIN) => Err(BusError::QueueFull),
            Err(e) => Err(BusError::Zmq {
                what: "send",
                source: e,
            }),
        }
    }
}

/// The receiving end: one SUB socket joined to every endpoint given.
pub struct Subscriber {
    socket: zmq::Socket,
    _context: zmq::Context,
}

impl Subscriber {
    pub fn connect(endpoints: &[String], opts: &BusOptions) -> Result<Subscriber, BusError> {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::SUB).map_err(zmq_err("socket"))?;
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
        socket
            .set_subscribe(b"")
            .map_err(zmq_err("ZMQ_SUBSCRIBE"))?;
        for endpoint in endpoints {
            check_endpoint(endpoint)?;
            socket.connect(endpoint).map_err(|e| BusError::Endpoint {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(Subscriber {
            socket,
            _context: context,
        })
    }

    /// The next message, or `None` after `timeout` without one.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Vec<u8>>, BusError> {
        let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        let ready = self.socket.poll(zmq::POLLIN, ms).map_err(zmq_err("poll"))?;
        if ready == 0 {
            return Ok(None);
        }
        self.try_recv()
    }

    /// The next message if one is already queued.
    pub fn try_recv(&self) -> Result<Option<Vec<u8>>, BusError> {
        match self.socket.recv_bytes(zmq::DONTWAIT) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(BusError::Zmq {
                what: "recv",
                source: e,
            }),
        }
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
    fn frames_cross_a_tcp_connection() {
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
        assert_eq!(got.as_deref(), Some(&b"frame"[..]));
    }
}
