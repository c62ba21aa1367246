//! The relay: this host's one long-lived sender to the group, fed by its
//! PHP workers. Each frame they hand over is stamped as the host's own
//! (origin, epoch, next sequence number), kept in the replay ring for peers'
//! repairs and sent to the group (`--publish`), the TCP fan-out (`--listen
//! tcp://`) or both; a heartbeat carrying the last sequence number goes out
//! every `--heartbeat-ms`, so a lost tail is noticed.
//!
//! Sends are batched adaptively (`--relay-batch-us`): a frame goes out at
//! once when nothing was sent for a window, so an idle host adds no delay;
//! under load, frames wait until the window since the last send has passed
//! and go out together. The cost of a frame is mostly per message, not per
//! byte (every receiver wakes for it, and applies it with a memcached round
//! trip): k frames sent together cost every receiver one wake-up and one
//! round trip. Each frame keeps its own seal and sequence number, so gap
//! repair, replay protection and ordering are as for single frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_bus::{BusError, Publisher, Subscriber};
use memcast_core::{Frame, Keys, Op, Origin, Version};
use parking_lot::Mutex;
use tracing::warn;

use crate::config::Settings;
use crate::daemon::StartError;
use crate::every::Every;
use crate::ring::ReplayRing;

pub struct Relay {
    origin: Origin,
    publishers: Vec<Publisher>,
    ring: Arc<Mutex<ReplayRing>>,
    /// Where peers reach this host's repairs (`--advertise`), and its name
    /// (`--host-name`): both sent in heartbeats.
    advertise: String,
    host_name: String,
    pub heartbeat: Every,
    /// Sealed frames waiting for the batch window to pass.
    outbox: Vec<Vec<u8>>,
    /// `--relay-batch-us`.
    window: Duration,
    last_send: Option<Instant>,
}

/// What sending the outbox did.
#[derive(Debug, Default)]
pub struct Sent {
    pub frames: u64,
    /// Frames no publisher took, and the last error.
    pub failed: u64,
    pub error: Option<BusError>,
}

impl Relay {
    /// With `--relay`: takes PHP's frames on `subscriber` and opens the
    /// publishers. Without it, `None`.
    pub fn start(
        s: &Settings,
        origin: Origin,
        subscriber: &mut Subscriber,
    ) -> Result<Option<Relay>, StartError> {
        let Some(relay) = &s.relay else {
            return Ok(None);
        };
        let bus = s.bus();
        subscriber
            .bind_relay(relay, &bus)
            .map_err(|e| StartError::bus("--relay", e))?;
        if memcast_bus::datagram::is_datagram(relay) {
            if let Some(n) = memcast_bus::datagram::queue_limit()
                .filter(|&n| n < memcast_bus::datagram::SHORT_QUEUE)
            {
                warn!("--relay {relay}: net.unix.max_dgram_qlen is {n}: a burst of more than {n} PHP writes while memcastd is busy makes PHP wait (up to memcast.relay_timeout_ms); set it to 512 (sysctl -w net.unix.max_dgram_qlen=512, before memcastd starts) or use ipc://");
            }
        }
        let mut publishers = Vec::new();
        if let Some(publish) = &s.publish {
            publishers.push(
                Publisher::connect(publish, &bus).map_err(|e| StartError::bus("--publish", e))?,
            );
        }
        if let Some(fanout) = &s.listen.fanout {
            publishers.push(
                Publisher::bind(fanout, &bus)
                    .map_err(|e| StartError::bus(format!("--listen {fanout}"), e))?,
            );
        }
        if s.advertise.is_none() {
            warn!("relaying without --listen/--advertise: peers cannot repair what they miss from this host, only resync");
        }
        Ok(Some(Relay {
            ring: Arc::new(Mutex::new(ReplayRing::new(
                origin.id,
                origin.epoch,
                s.ring_bytes(),
            ))),
            origin,
            publishers,
            advertise: s.advertise.clone().unwrap_or_default(),
            host_name: s.host_name.clone(),
            // Peers pull a snapshot from a relay when they hear its first
            // heartbeat: by then every local PHP worker has reconnected, so
            // what they could not hand over while this relay was away is in
            // memcached, and in that snapshot.
            heartbeat: Every::new(
                Duration::from_millis(s.heartbeat_ms),
                Instant::now() + memcast_bus::RELAY_RECONNECTED_WITHIN,
            ),
            outbox: Vec::new(),
            window: Duration::from_micros(s.relay_batch_us),
            last_send: None,
        }))
    }

    /// This host's origin id.
    pub fn origin(&self) -> u64 {
        self.origin.id
    }

    /// The replay ring, which the peer server reads for repairs.
    pub fn ring(&self) -> Arc<Mutex<ReplayRing>> {
        Arc::clone(&self.ring)
    }

    /// A frame from this host's PHP, stamped as the host's own, kept for
    /// repairs and queued for the next send ([`Relay::send_due`]). Its write
    /// version is PHP's, untouched. Gives the frame back.
    pub fn relay(&mut self, mut frame: Frame, keys: &impl Keys) -> Frame {
        frame.origin = self.origin.id;
        frame.epoch = self.origin.epoch;
        frame.seq = self.origin.next_seq();
        let sealed = frame.seal(keys);
        // Kept even if the send fails: a peer that notices the gap repairs it.
        self.ring.lock().push(frame.seq, sealed.clone());
        self.outbox.push(sealed);
        frame
    }

    /// When the queued frames are due to go out: none queued, never.
    pub fn next_send(&self) -> Option<Instant> {
        if self.outbox.is_empty() {
            return None;
        }
        Some(
            self.last_send
                .map_or_else(Instant::now, |t| t + self.window),
        )
    }

    /// Sends the queued frames if the window since the last send has
    /// passed (or `force`: before a heartbeat, which names the last
    /// sequence number, and at exit).
    pub fn send_due(&mut self, now: Instant, force: bool) -> Sent {
        let mut sent = Sent::default();
        let due = self.next_send().is_some_and(|at| at <= now);
        if self.outbox.is_empty() || !(due || force) {
            return sent;
        }
        for frame in std::mem::take(&mut self.outbox) {
            sent.frames += 1;
            if let Err(e) = self.send(&frame) {
                sent.failed += 1;
                sent.error = Some(e);
            }
        }
        self.last_send = Some(now);
        sent
    }

    /// The last sequence number, this host's name and its repair address:
    /// whether it went out.
    pub fn send_heartbeat(&mut self, keys: &impl Keys) -> bool {
        let frame = Frame {
            op: Op::Heartbeat,
            origin: self.origin.id,
            epoch: self.origin.epoch,
            seq: self.origin.last_seq(),
            version: Version::ZERO,
            ttl: 0,
            // Peers label this origin's metrics with it.
            key: self.host_name.as_bytes().to_vec(),
            value: self.advertise.as_bytes().to_vec(),
        };
        self.send(&frame.seal(keys)).is_ok()
    }

    /// To every publisher; an error only when none took it.
    fn send(&self, sealed: &[u8]) -> Result<(), BusError> {
        let mut last = None;
        let mut any = false;
        for p in &self.publishers {
            match p.send(sealed) {
                Ok(()) => any = true,
                Err(e) => last = Some(e),
            }
        }
        match (any, last) {
            (false, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}
