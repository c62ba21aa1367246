//! Publishing writes: each stored write becomes one signed frame for the
//! multicast group, sent through a [`Publish`] (the ZeroMQ bus in PHP, a
//! recorder in tests). A frame the publisher could not take is remembered by
//! its key, and once sending works again the session *as stored now* is sent
//! again: a write is never left unreplicated just because it happened while
//! memcastd restarted.

use std::time::{Duration, Instant};

use memcast_bus::{BusError, BusOptions, Publisher};
use memcast_core::host_counters::HostCounter;
use memcast_core::ini::ExtensionConfig;
use memcast_core::{Frame, Keyring, Op, Origin, StoredValue, Version};

use crate::counters::Counters;
use crate::servers::{PassOn, Servers, Step};
use crate::session::{SessionStore, Warnings};

/// Dropped frames are warned about at most this often per process.
pub const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Sessions whose dropped frames a process remembers, to send them again.
pub const MAX_UNSENT: usize = 1024;

/// Where sealed frames go.
pub trait Publish: Send {
    /// Sends one sealed frame (setting the publisher up first if need be).
    fn send(&mut self, frame: &[u8]) -> Result<(), NotPublished>;
    /// Why the publisher could not be set up, if it could not.
    fn setup_error(&self) -> Option<String>;
    /// Whether frames go straight to the multicast group (set up and
    /// working): such a publisher ends with a heartbeat.
    fn is_direct(&self) -> bool;
}

/// Makes the publisher for a `memcast.publish` endpoint.
pub type OpenPublisher = Box<dyn Fn(&str, &ExtensionConfig) -> Box<dyn Publish> + Send>;

/// Why a frame was not published.
#[derive(Debug, thiserror::Error)]
pub enum NotPublished {
    /// No usable key (warned about when the session opened).
    #[error("no usable key file")]
    NoKey,
    /// The publisher could not be set up (warned about once per process).
    #[error("no publisher")]
    NoPublisher,
    /// The publisher refused it: the relay or PGM did not take it in time.
    #[error(transparent)]
    NotTaken(#[from] BusError),
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

/// The bus publisher, made at the first frame: to the multicast group
/// directly, or to the local memcastd (host relay: `unixgram://`, `ipc://`
/// or `tcp://`).
pub struct BusPublisher {
    endpoint: String,
    options: BusOptions,
    connected: Option<Result<Publisher, BusError>>,
}

impl BusPublisher {
    pub fn open(endpoint: &str, config: &ExtensionConfig) -> Box<dyn Publish> {
        Box::new(BusPublisher {
            endpoint: endpoint.to_owned(),
            options: BusOptions {
                rate_kbps: config.pgm_rate_kbps,
                recovery_ms: config.pgm_recovery_ms,
                sndhwm: config.send_hwm,
                linger_ms: config.linger_ms,
                send_timeout_ms: config.relay_timeout_ms,
                ..BusOptions::default()
            },
            connected: None,
        })
    }
}

impl Publish for BusPublisher {
    fn send(&mut self, frame: &[u8]) -> Result<(), NotPublished> {
        let connected = self.connected.get_or_insert_with(|| {
            if memcast_bus::is_multicast_endpoint(&self.endpoint) {
                Publisher::connect(&self.endpoint, &self.options)
            } else {
                Publisher::relay(&self.endpoint, &self.options)
            }
        });
        match connected {
            Ok(p) => Ok(p.send(frame)?),
            Err(_) => Err(NotPublished::NoPublisher),
        }
    }

    fn setup_error(&self) -> Option<String> {
        match &self.connected {
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }

    fn is_direct(&self) -> bool {
        matches!(self.connected, Some(Ok(_))) && memcast_bus::is_multicast_endpoint(&self.endpoint)
    }
}

/// The compression threshold of the frames this process seals: only frames
/// it sends straight to the group are compressed (the host relay compresses
/// what it sends on). Sessions sealed at rest were compressed before they
/// were sealed, and frames never try to compress them again
/// (`session_seal::is_sealed`).
fn compress_threshold(endpoint: &str, config: &ExtensionConfig) -> usize {
    if !memcast_bus::is_multicast_endpoint(endpoint) {
        0
    } else {
        config.compress_threshold
    }
}

/// One write to publish.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub op: Op,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub ttl: u64,
    pub version: Version,
}

/// A write whose frame the publisher did not take.
#[derive(Debug)]
struct Unsent {
    key: Vec<u8>,
    op: Op,
    ttl: u64,
}

/// This process as a source of frames: its origin (id, epoch, sequence),
/// its publisher, and the writes still to be sent again.
pub(crate) struct Replicator {
    origin: Origin,
    open: OpenPublisher,
    publisher: Option<(String, Box<dyn Publish>)>,
    /// Writes whose frames were dropped, sent again once sending works.
    unsent: Vec<Unsent>,
    last_drop_warning: Option<Instant>,
    pending_warning: Option<String>,
}

impl Replicator {
    pub fn new(open: OpenPublisher) -> Replicator {
        Replicator {
            origin: Origin::new(),
            open,
            publisher: None,
            unsent: Vec::new(),
            last_drop_warning: None,
            pending_warning: None,
        }
    }

    pub fn origin_id(&self) -> u64 {
        self.origin.id
    }

    pub fn configure(&mut self, config: &ExtensionConfig) {
        if let Some(endpoint) = &config.publish {
            if self.publisher.as_ref().map(|(e, _)| e) != Some(endpoint) {
                self.publisher = None; // made again at the next frame
            }
        }
    }

    /// Seals and sends one frame.
    fn send_frame(
        &mut self,
        w: Outgoing,
        config: &ExtensionConfig,
        keyring: Option<&Keyring>,
    ) -> Result<(), NotPublished> {
        let Some(endpoint) = &config.publish else {
            return Err(NotPublished::NoPublisher);
        };
        let Some(keyring) = keyring else {
            return Err(NotPublished::NoKey);
        };
        let frame = Frame {
            op: w.op,
            origin: self.origin.id,
            epoch: self.origin.epoch,
            seq: self.origin.next_seq(),
            version: w.version,
            ttl: w.ttl.min(u32::MAX as u64) as u32,
            key: w.key,
            value: w.value,
        };
        let bytes = frame.seal_compressed(keyring, compress_threshold(endpoint, config));
        let (_, publisher) = self
            .publisher
            .get_or_insert_with(|| (endpoint.clone(), (self.open)(endpoint, config)));
        publisher.send(&bytes)
    }

    fn remember_unsent(&mut self, entry: Unsent, servers: &mut Servers, counters: &mut Counters) {
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
            counters.unsent_forgotten += 1;
            servers.count_on_host(HostCounter::UnsentForgotten, 1);
        }
    }

    /// Sends again, as stored now, the sessions whose frames were dropped.
    fn send_unsent(
        &mut self,
        config: &ExtensionConfig,
        keyring: Option<&Keyring>,
        servers: &mut Servers,
        counters: &mut Counters,
    ) {
        let before = counters.resent;
        let mut todo = std::mem::take(&mut self.unsent).into_iter();
        while let Some(entry) = todo.next() {
            let raw = servers.try_each(PassOn::AnyError, |turn| {
                Ok(Step::Done(turn.server.get(&entry.key)?))
            });
            let Ok(raw) = raw else {
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
            let again = Outgoing {
                op,
                key: entry.key.clone(),
                value,
                ttl: entry.ttl,
                version: stored.version,
            };
            match self.send_frame(again, config, keyring) {
                Ok(()) => counters.resent += 1,
                Err(_) => {
                    self.unsent.push(entry);
                    self.unsent.extend(todo);
                    break;
                }
            }
        }
        servers.count_on_host(HostCounter::Resent, counters.resent - before);
    }

    /// A publisher that failed to set up (once per process), or a dropped
    /// frame (at most once per process per [`DROP_WARNING_EVERY`]).
    pub fn take_warning(&mut self, warnings: &mut Warnings) -> Option<String> {
        if let Some(w) = self.pending_warning.take() {
            return Some(w);
        }
        let (endpoint, publisher) = self.publisher.as_ref()?;
        let e = publisher.setup_error()?;
        let msg = format!(
            "memcast.publish {endpoint:?}: {e}: sessions are stored locally and not replicated"
        );
        warnings.first_time(&msg).then_some(msg)
    }

    /// Closes the publisher, waiting up to the linger time for unsent frames.
    ///
    /// A process that published straight to the group first sends a
    /// heartbeat with its last sequence number: without a later packet, a
    /// receiver that lost this process's last frame could never tell.
    pub fn shutdown(&mut self, keyring: Option<&Keyring>) {
        if let (Some((_, p)), Some(key)) = (&mut self.publisher, keyring) {
            if p.is_direct() && self.origin.last_seq() > 0 {
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

impl SessionStore {
    /// Publishes one stored write (when `memcast.publish` is set); a frame
    /// the publisher did not take is remembered and sent again later.
    pub(crate) fn publish(&mut self, w: Outgoing) {
        let Some(config) = self.config.as_ref().filter(|c| c.publish.is_some()) else {
            return;
        };
        let keyring = self.keys.keyring();
        let (key, op, ttl) = (w.key.clone(), w.op, w.ttl);
        let r = &mut self.replicator;
        match r.send_frame(w, config, keyring) {
            Ok(()) => {
                self.counters.published += 1;
                if !r.unsent.is_empty() {
                    r.send_unsent(config, keyring, &mut self.servers, &mut self.counters);
                }
            }
            Err(e) => {
                self.counters.publish_drops += 1;
                self.servers.count_on_host(e.counter(), 1);
                r.remember_unsent(
                    Unsent { key, op, ttl },
                    &mut self.servers,
                    &mut self.counters,
                );
                // At most one warning per process per interval: an
                // absent memcastd must not flood the log.
                let due = r
                    .last_drop_warning
                    .is_none_or(|t| t.elapsed() >= DROP_WARNING_EVERY);
                if let (true, NotPublished::NotTaken(e)) = (due, e) {
                    r.last_drop_warning = Some(Instant::now());
                    r.pending_warning = Some(format!(
                        "{e} (the session is stored locally and is sent again once the publisher takes frames; {} frames dropped by this process so far)",
                        self.counters.publish_drops
                    ));
                }
            }
        }
    }
}
