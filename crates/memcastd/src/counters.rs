//! What memcastd has done, counted. Shared by the receive loop, the repair
//! worker and the peer server; logged periodically and at exit.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $doc:literal,)*) => {
        #[derive(Debug, Default)]
        pub struct Counters {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        impl Counters {
            /// Every counter: name, meaning, value.
            pub fn each(&self, mut f: impl FnMut(&'static str, &'static str, u64)) {
                $(f(stringify!($name), $doc, self.$name.load(Ordering::Relaxed));)*
            }
        }

        impl fmt::Display for Counters {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut first = true;
                $(
                    if !first { f.write_str(" ")?; }
                    first = false;
                    write!(f, "{}={}", stringify!($name), self.$name.load(Ordering::Relaxed))?;
                )*
                let _ = first;
                Ok(())
            }
        }
    };
}

counters! {
    received: "Frames received from the group.",
    applied: "Frames stored in memcached (newer than what it held).",
    apply_batches: "Batches of the group's frames applied: each one lookup (if any) and one pipelined round trip of stores (--apply-batch-us).",
    skipped_older: "Frames memcached already held in this or a newer version.",
    touched: "Touch frames applied.",
    conflicts: "Writes that began from a miss (creates) and found a live session here: the session was kept, the write lost.",
    relayed: "Frames taken from this host's PHP workers and sent to the group.",
    relay_batches: "Sends of the relay: relayed / relay_batches is the frames per batch (--batch-us).",
    heartbeats_sent: "Heartbeats sent as the host's relay.",
    gaps: "Gaps noticed in an origin's sequence numbers.",
    missing_frames: "Frames those gaps left out.",
    repair_requests: "Ranges asked of an origin's replay ring.",
    frames_repaired: "Frames received through repairs.",
    repairs_gone: "Ranges no longer in the origin's ring (resync instead).",
    repairs_failed: "Repair requests that failed (origin unreachable, bad reply).",
    catch_up_requests: "Silent origins asked directly for what they sent since (catch-up).",
    frames_caught_up: "Frames received through catch-ups.",
    frames_replayed: "Frames fetched again from origins' rings after the local memcached restarted: the last seconds before the restart, applied if newer.",
    duplicates: "Frames the group delivered after they were already fetched over TCP (dropped quietly).",
    resyncs: "Full resyncs from a peer completed.",
    resync_entries: "Sessions received through resyncs.",
    resyncs_failed: "Resyncs where no peer could serve.",
    out_of_sync: "Times this subscriber fell behind by more than --max-lag-ms.",
    cold_detected: "Times the local memcached was found restarted (empty).",
    group_rejoins: "Times the group was joined again with a new receiver: an origin answered catch-ups over TCP while nothing of it came on the group (a receiver deaf to a sender).",
    relays_learnt_by_tcp: "Relays of configured peers (--peer) never heard on the group here, learnt by asking the peer over TCP: followed by catch-up from their rings from then on (multicast from that host does not reach this one).",
    warmups: "Warm-ups completed (refilled from a peer).",
    anti_entropy_rounds: "Digest comparisons with a peer.",
    anti_entropy_buckets: "Digest buckets that differed and were fetched.",
    anti_entropy_entries: "Sessions received through anti-entropy.",
    memcached_errors: "Errors talking to memcached.",
    memcached_reconnects: "Connections to memcached opened again after the first.",
    dropped_auth: "Frames dropped: not signed with the cluster key.",
    dropped_decode: "Frames dropped: malformed.",
    dropped_size: "Frames dropped: over --max-value-bytes or --max-key-length.",
    dropped_replay: "Frames dropped: replays (sequence number seen, outside the window, old epoch, or sealed longer ago than --max-frame-age-ms).",
    received_unencrypted: "Authenticated frames that came unencrypted while this host encrypts.",
    received_compressed: "Frames from the group whose value came compressed (and was inflated).",
    key_reloads: "Key files reloaded (SIGHUP).",
    origins_evicted: "Origins forgotten early because --max-origins were tracked.",
    dropped_store: "Frames memcached refused (too large, out of memory).",
    dropped_backlog: "Frames dropped: memcached down and the backlog full.",
    dropped_relay: "Frames from PHP the relay could not send on.",
    snapshots_served: "Snapshots sent to peers.",
    ranges_served: "Repair ranges sent to peers.",
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The drop counter for a frame error's reason.
    pub fn dropped(&self, reason: &str) -> &AtomicU64 {
        match reason {
            "auth" => &self.dropped_auth,
            "size" => &self.dropped_size,
            "replay" => &self.dropped_replay,
            _ => &self.dropped_decode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_as_name_value_pairs() {
        let c = Counters::default();
        Counters::inc(&c.applied);
        Counters::add(&c.gaps, 3);
        let text = c.to_string();
        assert!(text.starts_with("received=0 applied=1 "), "{text}");
        assert!(text.contains(" gaps=3 "), "{text}");
    }
}
