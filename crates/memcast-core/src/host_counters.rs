//! Counters PHP workers keep in the host's local memcached, for memcastd to
//! read once a second and export: what the workers could not replicate.
//!
//! They live in memcached, not in a message to memcastd, because the failure
//! they count is often the path to memcastd itself (the relay socket gone, the
//! key file unreadable): a count kept in the local memcached is there as long
//! as sessions can be stored at all, also while no memcastd runs, and the
//! memcastd started later exports it. One `ma` (meta arithmetic, created on
//! the first miss with no expiry) per failure, nothing on the success path.
//!
//! The values are plain numbers without memcast's value header, so
//! snapshots, repairs and anti-entropy never copy them to another host.

use crate::memcached::{Memcached, StoreError};

/// One thing PHP counts on its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostCounter {
    /// A frame not published because there was no usable key
    /// (`memcast.key_file` unset, missing, unreadable or too short).
    PublishFailedNoKey,
    /// A frame not published because the publisher could not be set up
    /// (`memcast.publish` refused by ZeroMQ).
    PublishFailedNoPublisher,
    /// A frame the relay (or PGM's send queue) did not take in time.
    PublishFailedNotTaken,
    /// Sessions sent again, as stored, after their frame was not published.
    Resent,
    /// Unpublished sessions a process could not remember to send again.
    UnsentForgotten,
    /// Sealed sessions that did not open (altered in memcached, moved to
    /// another session's key, unsealed, or under a key no longer accepted):
    /// read as misses. A rise is tampering or a key roll gone wrong.
    SealedUnopened,
}

impl HostCounter {
    pub const ALL: [HostCounter; 6] = [
        HostCounter::PublishFailedNoKey,
        HostCounter::PublishFailedNoPublisher,
        HostCounter::PublishFailedNotTaken,
        HostCounter::Resent,
        HostCounter::UnsentForgotten,
        HostCounter::SealedUnopened,
    ];

    /// The memcached key it is kept under.
    pub fn key(self) -> &'static [u8] {
        match self {
            HostCounter::PublishFailedNoKey => b"memcast:php:publish_failed:no_key",
            HostCounter::PublishFailedNoPublisher => b"memcast:php:publish_failed:no_publisher",
            HostCounter::PublishFailedNotTaken => b"memcast:php:publish_failed:not_taken",
            HostCounter::Resent => b"memcast:php:resent",
            HostCounter::UnsentForgotten => b"memcast:php:unsent_forgotten",
            HostCounter::SealedUnopened => b"memcast:php:sealed_unopened",
        }
    }

    /// The `reason` label of a publish failure; `None` for the other counters.
    pub fn failure_reason(self) -> Option<&'static str> {
        match self {
            HostCounter::PublishFailedNoKey => Some("no_key"),
            HostCounter::PublishFailedNoPublisher => Some("no_publisher"),
            HostCounter::PublishFailedNotTaken => Some("not_taken"),
            HostCounter::Resent | HostCounter::UnsentForgotten | HostCounter::SealedUnopened => {
                None
            }
        }
    }

    /// Adds `n` (creating the counter at `n` when memcached does not hold it).
    pub fn add(self, memcached: &mut Memcached, n: u64) -> Result<(), StoreError> {
        memcached.add_to_counter(self.key(), n)
    }

    /// Every counter's value in one round trip (absent counters are 0).
    pub fn read_all(memcached: &mut Memcached) -> Result<HostCounts, StoreError> {
        let keys: Vec<&[u8]> = HostCounter::ALL.iter().map(|c| c.key()).collect();
        let found = memcached.get_multi(&keys)?;
        let mut counts = HostCounts::default();
        for (i, c) in HostCounter::ALL.iter().enumerate() {
            counts.0[i] = found
                .iter()
                .find(|(k, _)| k.as_slice() == c.key())
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse().ok())
                .unwrap_or(0);
        }
        Ok(counts)
    }
}

/// The value of every [`HostCounter`], in [`HostCounter::ALL`]'s order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounts(pub [u64; HostCounter::ALL.len()]);

impl HostCounts {
    pub fn get(&self, counter: HostCounter) -> u64 {
        HostCounter::ALL
            .iter()
            .position(|c| *c == counter)
            .map_or(0, |i| self.0[i])
    }

    /// Frames not published, whatever the reason.
    pub fn publish_failures(&self) -> u64 {
        HostCounter::ALL
            .iter()
            .filter(|c| c.failure_reason().is_some())
            .map(|c| self.get(*c))
            .sum()
    }
}
