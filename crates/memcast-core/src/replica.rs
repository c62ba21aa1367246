//! How one frame lands in a replica's memcached: sets and deletes only if
//! newer (a delete is a tombstone), touches as they come. The daemon's live
//! path, repairs and snapshots all go through here.

use crate::frame::{Frame, Op};
use crate::store::{apply_if_newer, Applied, Expect, Memcached, StoreError};
use crate::stored::StoredValue;

/// The key memcastd sets in its memcached once that memcached holds
/// everything (after a refill from a peer, or at once when there is no peer).
/// A memcached without it restarted and is still cold: a miss there may be a
/// session it has not received yet, so readers ask the next server.
pub const WARM_SENTINEL: &[u8] = b"memcast:warm";

/// What applying a frame did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    SkippedOlder,
    Touched,
    /// A heartbeat: nothing to store.
    Nothing,
}

pub fn apply_frame(mc: &mut Memcached, frame: &Frame) -> Result<Outcome, StoreError> {
    let ttl = u64::from(frame.ttl);
    let value = match frame.op {
        Op::Set => StoredValue::live(frame.version, &frame.value),
        Op::Delete => StoredValue::tombstone(frame.version),
        Op::Touch => return mc.touch(&frame.key, ttl).map(|_| Outcome::Touched),
        Op::Heartbeat => return Ok(Outcome::Nothing),
    };
    Ok(
        match apply_if_newer(mc, &frame.key, &value, ttl, Expect::Unknown)? {
            Applied::Stored => Outcome::Stored,
            Applied::SkippedOlder { .. } => Outcome::SkippedOlder,
        },
    )
}

/// A stored value as the frame that would recreate it on another replica
/// (for snapshots): `None` for values memcast did not write.
pub fn frame_for_stored(
    key: &[u8],
    raw: &[u8],
    ttl: u32,
    origin: u64,
    epoch: u64,
) -> Option<Frame> {
    let stored = StoredValue::parse(raw)?;
    Some(Frame {
        op: if stored.tombstone {
            Op::Delete
        } else {
            Op::Set
        },
        origin,
        epoch,
        seq: 0,
        version: stored.version,
        ttl,
        key: key.to_vec(),
        value: stored.data.to_vec(),
    })
}

/// Keys fetched per `get` while scanning.
const SCAN_BATCH: usize = 64;

/// Calls `each(key, raw value, remaining ttl)` for every entry memcached
/// holds whose key passes `keep` (expired entries skipped; ttl 0 means none),
/// in bounded memory: keys stream from `lru_crawler metadump` on one
/// connection, values come in batches on another. Used by snapshots,
/// anti-entropy digests and the convergence check.
pub fn scan<E: From<StoreError>>(
    addr: &crate::ServerAddr,
    timeouts: crate::Timeouts,
    keep: impl Fn(&[u8]) -> bool,
    mut each: impl FnMut(&[u8], &[u8], u32) -> Result<(), E>,
) -> Result<(), E> {
    let mut dump = Memcached::new(addr.clone(), timeouts);
    let mut values = Memcached::new(addr.clone(), timeouts);
    let mut batch: Vec<(Vec<u8>, Option<u64>)> = Vec::with_capacity(SCAN_BATCH);
    let mut failed: Option<E> = None;
    let mut flush = |batch: &mut Vec<(Vec<u8>, Option<u64>)>| -> Result<(), E> {
        let keys: Vec<&[u8]> = batch.iter().map(|(k, _)| k.as_slice()).collect();
        let got = values.get_multi(&keys)?;
        let now = crate::unix_millis() / 1000;
        for (key, raw) in got {
            let Some((_, expires)) = batch.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let ttl = match expires {
                None => 0,
                Some(e) if *e > now => (*e - now).min(u64::from(u32::MAX)) as u32,
                Some(_) => continue,
            };
            each(&key, &raw, ttl)?;
        }
        batch.clear();
        Ok(())
    };
    dump.metadump(|meta| {
        if !keep(&meta.key) {
            return true;
        }
        batch.push((meta.key, meta.expires));
        if batch.len() >= SCAN_BATCH {
            if let Err(e) = flush(&mut batch) {
                failed = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    flush(&mut batch)
}
