//! How one frame lands in a replica's memcached: sets and deletes only if
//! newer (a delete is a tombstone), touches as they come. The daemon's live
//! path, repairs and snapshots all go through here.

use crate::frame::{Frame, Op};
use crate::store::{apply_if_newer, Applied, Expect, Memcached, StoreError};
use crate::stored::StoredValue;

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
