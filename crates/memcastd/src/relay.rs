//! The relay: this host's one long-lived sender to the group, fed by its
//! PHP workers. Each frame they hand over is stamped as the host's own
//! (origin, epoch, next sequence number), kept in the replay ring for peers'
//! repairs and sent to the group (`--publish`), the TCP fan-out (`--listen
//! tcp://`) or both; a heartbeat carrying the last sequence number goes out
//! every `--heartbeat-ms`, so a lost tail is noticed.
//!
//! Frames are sent in batches: the receive loop takes what is queued (see
//! `--batch-us` in [`crate::daemon`]) and the relay sends it together at the
//! end. Each frame keeps its own seal and sequence number, so gap repair,
//! replay protection and ordering are as for single frames.

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
use crate::sequences::{ReplayPoint, SeqHistory};

pub struct Relay {
    origin: Origin,
    publishers: Vec<Publisher>,
    ring: Arc<Mutex<ReplayRing>>,
    /// Where peers reach this host's repairs (`--advertise`), and its name
    /// (`--host-name`): both sent in heartbeats.
    advertise: String,
    host_name: String,
    pub heartbeat: Every,
    /// Sealed frames of the batch being taken in, sent at its end.
    outbox: Vec<Vec<u8>>,
    /// `--compress-threshold`.
    compress_threshold: usize,
    /// The last sequence number once a second (see [`Relay::replay_point`]).
    history: SeqHistory,
    /// The last heartbeat sent, sealed: what the peer server tells a peer
    /// that asks for this relay (one that does not hear it on the group).
    last_heartbeat: Arc<Mutex<Option<Vec<u8>>>>,
    /// When the last heartbeat was sealed, by this host's clock.
    last_heartbeat_ms: u64,
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
            compress_threshold: s.compress_threshold,
            // Peers pull a snapshot from a relay when they hear its first
            // heartbeat: by then every local PHP worker has reconnected, so
            // what they could not hand over while this relay was away is in
            // memcached, and in that snapshot.
            heartbeat: Every::new(
                Duration::from_millis(s.heartbeat_ms),
                Instant::now() + memcast_bus::RELAY_RECONNECTED_WITHIN,
            ),
            outbox: Vec::new(),
            history: SeqHistory::default(),
            last_heartbeat: Arc::new(Mutex::new(None)),
            last_heartbeat_ms: 0,
        }))
    }

    /// This host's origin id.
    pub fn origin(&self) -> u64 {
        self.origin.id
    }

    /// Once a second: where this relay's sequence stands, kept
    /// [`crate::sequences::REPLAY_SECONDS`] back.
    pub fn sample(&mut self) {
        self.history.record(self.origin.last_seq());
    }

    /// After the local memcached restarted: this host's own writes of the
    /// last [`crate::sequences::REPLAY_SECONDS`], asked of its own ring through its repair
    /// address like any origin's (none without `--advertise`/`--listen`).
    pub fn replay_point(&self) -> Option<ReplayPoint> {
        (!self.advertise.is_empty()).then(|| ReplayPoint {
            origin: self.origin.id,
            epoch: self.origin.epoch,
            after: self.history.replay_after(),
            repair_addr: self.advertise.clone(),
        })
    }

    /// The replay ring, which the peer server reads for repairs.
    pub fn ring(&self) -> Arc<Mutex<ReplayRing>> {
        Arc::clone(&self.ring)
    }

    /// A frame from this host's PHP, stamped as the host's own, kept for
    /// repairs and queued to be sent at the batch's end ([`Relay::send_queued`]). Its write
    /// version is PHP's, untouched. Gives the frame back.
    pub fn relay(&mut self, mut frame: Frame, keys: &impl Keys) -> Frame {
        frame.origin = self.origin.id;
        frame.epoch = self.origin.epoch;
        frame.seq = self.origin.next_seq();
        let sealed = frame.seal_compressed(keys, self.compress_threshold);
        // Kept even if the send fails: a peer that notices the gap repairs it.
        self.ring.lock().push(frame.seq, sealed.clone());
        self.outbox.push(sealed);
        frame
    }

    /// Sends the frames of this batch (at its end, and before a heartbeat,
    /// which names the last sequence number).
    pub fn send_queued(&mut self) -> Sent {
        let mut sent = Sent::default();
        for frame in std::mem::take(&mut self.outbox) {
            sent.frames += 1;
            if let Err(e) = self.send(&frame) {
                sent.failed += 1;
                sent.error = Some(e);
            }
        }
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
        self.last_heartbeat_ms =
            heartbeat_sent_ms(memcast_core::unix_millis(), self.last_heartbeat_ms);
        let sealed = frame.seal_at(keys, self.last_heartbeat_ms);
        let sent = self.send(&sealed).is_ok();
        *self.last_heartbeat.lock() = Some(sealed);
        sent
    }

    /// The last heartbeat sent, for the peer server.
    pub fn last_heartbeat(&self) -> Arc<Mutex<Option<Vec<u8>>>> {
        Arc::clone(&self.last_heartbeat)
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

/// The send time a heartbeat is sealed with: now, but always after the last
/// one. Receivers take a heartbeat whose send time is not newer than the
/// last one's as a replay (its sequence number repeats by design), and two
/// can go out in one millisecond: the periodic one and the last one at
/// stop.
fn heartbeat_sent_ms(now_ms: u64, last_ms: u64) -> u64 {
    now_ms.max(last_ms + 1)
}

#[cfg(test)]
mod tests {
    use super::heartbeat_sent_ms;

    #[test]
    fn heartbeats_in_one_millisecond_or_after_a_clock_step_back_still_advance() {
        assert_eq!(heartbeat_sent_ms(1_000, 0), 1_000);
        assert_eq!(heartbeat_sent_ms(1_500, 1_000), 1_500);
        assert_eq!(heartbeat_sent_ms(1_000, 1_000), 1_001);
        assert_eq!(heartbeat_sent_ms(900, 1_000), 1_001);
    }
}
