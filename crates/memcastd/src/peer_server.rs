//! Serves peers over TCP (`--listen`): ranges from the relay's replay ring
//! (repair) and everything the local memcached holds (snapshot, for a peer
//! that resyncs). Only requests signed with the cluster key are answered.

use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use memcast_core::peer::{self, bucket_of, Digests, Request, REQUEST_LEN};
use memcast_core::replica::{self, frame_for_stored};
use memcast_core::{unix_millis, ServerAddr, Timeouts};
use parking_lot::{Condvar, Mutex};
use tracing::{debug, info, warn};

use crate::counters::Counters;
use crate::heard::{HeardFrames, Position};
use crate::key_store::KeyStore;
use crate::ring::{Gone, ReplayRing};

/// Peers served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 8;

/// Connections served at once, at most [`MAX_CONNECTIONS`]: the accepting
/// thread waits for a free slot (it sleeps; it does not poll).
#[derive(Default)]
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn take(&self) {
        let mut used = self.used.lock();
        while *used >= MAX_CONNECTIONS {
            self.freed.wait(&mut used);
        }
        *used += 1;
    }

    fn give_back(&self) {
        *self.used.lock() -= 1;
        self.freed.notify_one();
    }
}

#[derive(Clone)]
pub struct PeerServer {
    pub keys: Arc<KeyStore>,
    pub memcached: ServerAddr,
    pub timeouts: Timeouts,
    pub ring: Option<Arc<Mutex<ReplayRing>>>,
    /// The relay's latest heartbeat, sealed (see [`Request::Relay`]); `None`
    /// without a relay.
    pub relay_heartbeat: Option<Arc<Mutex<Option<Vec<u8>>>>>,
    /// Frames heard from origins that keep no ring (see [`crate::heard`]).
    pub heard: Arc<Mutex<HeardFrames>>,
    pub counters: Arc<Counters>,
    /// Origin id and epoch stamped on snapshot frames.
    pub origin: u64,
    pub epoch: u64,
    /// Bandwidth cap of snapshots and anti-entropy transfers, bytes/s (0:
    /// none), so refilling one host does not starve live traffic.
    pub transfer_bytes_per_sec: u64,
}

impl PeerServer {
    pub fn spawn(self, listen: &str) -> std::io::Result<std::net::SocketAddr> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        info!(%addr, "serving repairs and snapshots to peers");
        let slots = Arc::new(Slots::default());
        std::thread::Builder::new()
            .name("peer-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    slots.take();
                    let server = self.clone();
                    let done = Arc::clone(&slots);
                    let spawned =
                        std::thread::Builder::new()
                            .name("peer-conn".into())
                            .spawn(move || {
                                let peer =
                                    conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                                if let Err(e) = server.serve(conn) {
                                    debug!(%peer, "peer connection ended: {e}");
                                }
                                done.give_back();
                            });
                    if spawned.is_err() {
                        slots.give_back();
                    }
                }
            })?;
        Ok(addr)
    }

    fn serve(&self, mut conn: TcpStream) -> Result<(), ServeError> {
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = [0u8; REQUEST_LEN];
        conn.read_exact(&mut buf)?;
        let request = match Request::decode(&buf, &*self.keys.get(), unix_millis()) {
            Ok(r) => r,
            Err(e) => {
                warn!(peer = ?conn.peer_addr().ok(), "refused a peer request: {e}");
                return Err(e.into());
            }
        };
        let mut out = BufWriter::with_capacity(256 * 1024, conn);
        match request {
            Request::Range {
                origin,
                epoch,
                from,
                to,
            } => self.send_range(&mut out, origin, epoch, from, to),
            Request::Snapshot => self.send_snapshot(&mut out),
            Request::Digest { cutoff_ms } => self.send_digest(&mut out, cutoff_ms),
            Request::Buckets(set) => self
                .send_entries(&mut out, |key| set.contains(bucket_of(key)))
                .map(|_| ()),
            Request::Heard => self.send_heard(&mut out),
            Request::Relay => self.send_relay(&mut out),
        }?;
        out.flush()?;
        Ok(())
    }

    fn send_range(
        &self,
        out: &mut impl Write,
        origin: u64,
        epoch: u64,
        from: u64,
        to: u64,
    ) -> std::io::Result<()> {
        Counters::inc(&self.counters.ranges_served);
        let own = self.ring.as_ref().and_then(|ring| {
            let ring = ring.lock();
            (ring.origin == origin && ring.epoch == epoch).then(|| ring.range(from, to))
        });
        // Not this relay's own: what it heard from a ring-less origin.
        let frames = own.unwrap_or_else(|| self.heard.lock().range(origin, epoch, from, to));
        match frames {
            Ok(frames) => {
                for f in &frames {
                    peer::write_frame(out, f)?;
                }
                peer::write_end(out)
            }
            Err(Gone) => peer::write_gone(out),
        }
    }

    /// Streams every memcast value the local memcached holds (whose key
    /// passes `keep`), with its version and remaining TTL.
    fn send_entries(
        &self,
        out: &mut impl Write,
        keep: impl Fn(&[u8]) -> bool,
    ) -> std::io::Result<u64> {
        let mut sent = 0u64;
        let mut bytes = 0u64;
        let started = std::time::Instant::now();
        replica::scan(&self.memcached, self.timeouts, keep, |key, raw, ttl| {
            if let Some(frame) = frame_for_stored(key, raw, ttl, self.origin, self.epoch) {
                let sealed = frame.seal(&*self.keys.get());
                peer::write_frame(&mut *out, &sealed)?;
                sent += 1;
                bytes += sealed.len() as u64 + 4;
                self.pace(bytes, started);
            }
            Ok::<(), ScanError>(())
        })
        .map_err(std::io::Error::from)?;
        peer::write_end(out)?;
        Ok(sent)
    }

    /// Sleeps while `bytes` sent since `started` is ahead of the cap.
    fn pace(&self, bytes: u64, started: std::time::Instant) {
        if self.transfer_bytes_per_sec == 0 {
            return;
        }
        let due = Duration::from_secs_f64(bytes as f64 / self.transfer_bytes_per_sec as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            if ahead > Duration::from_millis(5) {
                std::thread::sleep(ahead);
            }
        }
    }

    fn send_snapshot(&self, out: &mut impl Write) -> std::io::Result<()> {
        let sent = self.send_entries(out, |_| true)?;
        Counters::inc(&self.counters.snapshots_served);
        info!(entries = sent, "sent a snapshot to a peer");
        Ok(())
    }

    /// The relay's latest heartbeat, as it went to the group; nothing
    /// without a relay or before its first heartbeat.
    fn send_relay(&self, out: &mut impl Write) -> std::io::Result<()> {
        let heartbeat = self.relay_heartbeat.as_ref().and_then(|h| h.lock().clone());
        if let Some(sealed) = heartbeat {
            peer::write_frame(out, &sealed)?;
        }
        peer::write_end(out)
    }

    /// How far this host holds each ring-less origin (see [`crate::heard`]).
    fn send_heard(&self, out: &mut impl Write) -> std::io::Result<()> {
        let table = self.heard.lock().table();
        self.send_table(out, Position::encode_table(&table))
    }

    /// The anti-entropy digest table.
    fn send_digest(&self, out: &mut impl Write, cutoff_ms: u64) -> std::io::Result<()> {
        let digests = local_digests(&self.memcached, self.timeouts, cutoff_ms)
            .map_err(std::io::Error::from)?;
        self.send_table(out, digests.encode())
    }

    /// A table answered as one sealed heartbeat frame carrying it.
    fn send_table(&self, out: &mut impl Write, table: Vec<u8>) -> std::io::Result<()> {
        let frame = memcast_core::Frame {
            op: memcast_core::Op::Heartbeat,
            origin: self.origin,
            epoch: self.epoch,
            seq: 0,
            version: memcast_core::Version::ZERO,
            ttl: 0,
            key: Vec::new(),
            value: table,
        };
        peer::write_frame(out, &frame.seal(&*self.keys.get()))?;
        peer::write_end(out)
    }
}

/// A scan failed: memcached, or the peer connection.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Memcached(#[from] memcast_core::StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ScanError> for std::io::Error {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Io(e) => e,
            e => std::io::Error::other(e),
        }
    }
}

/// Why serving one peer connection ended early.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Refused(#[from] memcast_core::peer::PeerError),
}

/// The digest table of what a memcached holds.
pub fn local_digests(
    memcached: &ServerAddr,
    timeouts: Timeouts,
    cutoff_ms: u64,
) -> Result<Digests, ScanError> {
    let mut digests = Digests::default();
    replica::scan(
        memcached,
        timeouts,
        |_| true,
        |key, raw, _| {
            digests.add(key, raw, cutoff_ms);
            Ok::<(), ScanError>(())
        },
    )?;
    Ok(digests)
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn a_connection_beyond_the_limit_waits_for_a_slot() {
        let slots = Arc::new(Slots::default());
        for _ in 0..MAX_CONNECTIONS {
            slots.take();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = Arc::clone(&slots);
        let t = std::thread::spawn(move || {
            waiting.take();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "took a slot beyond the limit"
        );
        slots.give_back();
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "never woke up"
        );
        t.join().unwrap();
    }
}
