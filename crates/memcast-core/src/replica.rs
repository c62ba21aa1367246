//! How one frame lands in a replica's memcached: sets and deletes only if
//! newer (a delete is a tombstone), touches as they come. The daemon's live
//! path, repairs and snapshots all go through here.

use crate::frame::{Frame, Op};
use crate::memcached::{apply_if_newer, Applied, Expect, Memcached, StoreError, StoreOp, Stored};
use crate::stored_value::{Decision, StoredValue};
use crate::version::Version;

pub use crate::memcached::WARM_SENTINEL;

/// What applying a frame did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    SkippedOlder,
    Touched,
    /// A create (a write that began from a miss) found a live session: the
    /// session is kept, the write lost.
    Conflict,
    /// A heartbeat: nothing to store.
    Nothing,
}

/// What a set or delete frame stores: the data, or a tombstone.
fn stored_value(frame: &Frame) -> Option<StoredValue<'_>> {
    match frame.op {
        Op::Set => Some(StoredValue::live(frame.version, &frame.value)),
        Op::Create => Some(StoredValue::created(frame.version, &frame.value)),
        Op::Delete => Some(StoredValue::tombstone(frame.version)),
        Op::Touch | Op::Heartbeat => None,
    }
}

pub fn apply_frame(mc: &mut Memcached, frame: &Frame) -> Result<Outcome, StoreError> {
    let ttl = u64::from(frame.ttl);
    let value = match (frame.op, stored_value(frame)) {
        (_, Some(value)) => value,
        (Op::Touch, None) => return mc.touch(&frame.key, ttl).map(|_| Outcome::Touched),
        (_, None) => return Ok(Outcome::Nothing),
    };
    let applied = apply_if_newer(mc, &frame.key, &value, ttl, Expect::Unknown)?;
    Ok(match applied {
        Applied::Stored => Outcome::Stored,
        Applied::SkippedOlder { .. } => Outcome::SkippedOlder,
        Applied::Conflict { .. } => Outcome::Conflict,
    })
}

/// Frames looked up and stored per round trip by [`apply_batch`].
const APPLY_BATCH: usize = 128;

/// The version and CAS token this replica last stored per key, so the next
/// newer write of a session it keeps receiving is one `cas` without a lookup
/// first. A stale entry (someone else wrote, memcached restarted) only costs
/// a failed `cas` and the lookup after all. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct CasCache {
    map: std::collections::HashMap<Vec<u8>, (Version, u64)>,
    max: usize,
}

impl CasCache {
    pub fn new(max: usize) -> CasCache {
        CasCache {
            map: std::collections::HashMap::new(),
            max,
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn insert(&mut self, key: &[u8], version: Version, cas: u64) {
        if self.map.len() >= self.max && !self.map.contains_key(key) {
            self.map.clear();
        }
        self.map.insert(key.to_vec(), (version, cas));
    }
}

/// Applies many frames in few round trips: of several frames for one key
/// only the newest is stored (the others would be skipped as older anyway);
/// keys `cache` knows (stored here before, at an older version) go straight
/// to a `cas`; the others are looked up with one `gets` per
/// [`APPLY_BATCH`] keys; then every store is pipelined (meta sets, which
/// return the new CAS token for the cache). A store that loses a race is
/// redone alone through [`apply_if_newer`]. Outcomes come back in the
/// frames' order. On an error nothing is known about the batch: the caller
/// applies its frames one by one (they are idempotent) and clears the cache.
pub fn apply_batch(
    mc: &mut Memcached,
    frames: &[Frame],
    cache: &mut CasCache,
) -> Result<Vec<Outcome>, StoreError> {
    let mut out = vec![Outcome::Nothing; frames.len()];
    for (chunk_at, chunk) in frames.chunks(APPLY_BATCH).enumerate() {
        let base = chunk_at * APPLY_BATCH;
        // Keys with a create among their frames are applied one frame at a
        // time, in order: whether a create loses depends on what the frames
        // before it stored. Creates are a session's first write: rare.
        let created: std::collections::HashSet<&[u8]> = chunk
            .iter()
            .filter(|f| f.op == Op::Create)
            .map(|f| &f.key[..])
            .collect();
        // The newest frame per key; touches go one by one, heartbeats nowhere.
        let mut newest: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        for (i, f) in chunk.iter().enumerate() {
            if f.op.stores() && created.contains(&f.key[..]) {
                out[base + i] = apply_frame(mc, f)?;
                continue;
            }
            match f.op {
                Op::Create => {} // applied above
                Op::Set | Op::Delete => {
                    let slot = newest.entry(&f.key[..]).or_insert(i);
                    if chunk[*slot].version < f.version {
                        out[base + *slot] = Outcome::SkippedOlder;
                        *slot = i;
                    } else if *slot != i {
                        out[base + i] = Outcome::SkippedOlder;
                    }
                }
                Op::Touch => out[base + i] = apply_frame(mc, f)?,
                Op::Heartbeat => {}
            }
        }
        let mut todo: Vec<usize> = newest.into_values().collect();
        todo.sort_unstable();
        let known: std::collections::HashMap<usize, u64> = todo
            .iter()
            .filter_map(|&i| {
                cache
                    .map
                    .get(&chunk[i].key)
                    .filter(|(v, _)| *v < chunk[i].version)
                    .map(|(_, cas)| (i, *cas))
            })
            .collect();
        let lookup: Vec<&[u8]> = todo
            .iter()
            .filter(|i| !known.contains_key(i))
            .map(|&i| &chunk[i].key[..])
            .collect();
        let held: std::collections::HashMap<Vec<u8>, crate::memcached::Item> =
            mc.gets_multi(&lookup)?.into_iter().collect();
        let mut values: Vec<(usize, Vec<u8>, Option<u64>)> = Vec::with_capacity(todo.len());
        for &i in &todo {
            let f = &chunk[i];
            let Some(value) = stored_value(f) else {
                continue; // only sets and deletes are in `todo`
            };
            if let Some(&cas) = known.get(&i) {
                values.push((i, value.encode(), Some(cas)));
                continue;
            }
            match held.get(&f.key) {
                Some(item) => {
                    let held_value = StoredValue::parse(&item.value);
                    if value.decide(held_value.as_ref()) == Decision::Replace {
                        values.push((i, value.encode(), Some(item.cas)));
                    } else {
                        // Only sets and deletes here: never a conflict.
                        let held_version = held_value.map_or(Version::ZERO, |h| h.version);
                        cache.insert(&f.key, held_version, item.cas);
                        out[base + i] = Outcome::SkippedOlder;
                    }
                }
                None => values.push((i, value.encode(), None)),
            }
        }
        let ops: Vec<StoreOp<'_>> = values
            .iter()
            .map(|(i, v, cas)| StoreOp {
                key: &chunk[*i].key,
                value: v,
                ttl: u64::from(chunk[*i].ttl),
                cas: *cas,
            })
            .collect();
        let replies = mc.store_many_returning_cas(&ops)?;
        for ((i, _, _), reply) in values.iter().zip(replies) {
            let f = &chunk[*i];
            out[base + i] = match reply {
                Stored::Stored(cas) => {
                    cache.insert(&f.key, f.version, cas);
                    Outcome::Stored
                }
                Stored::Not(_) => {
                    cache.map.remove(&f.key);
                    apply_frame(mc, f)?
                }
            };
        }
    }
    Ok(out)
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
        } else if stored.created {
            // Spread as what it is: it must not replace a real session.
            Op::Create
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
/// holds whose key passes `keep` (expired entries skipped; ttl 0 means none).
/// Used by snapshots, anti-entropy digests and the convergence check.
///
/// The key list from `lru_crawler metadump` is spooled to a temporary file
/// first, and values are fetched afterwards in batches: memory stays bounded
/// whatever the number of sessions, and the dump is never left unread while
/// values are fetched (memcached's crawler can hold item locks while its
/// output waits for us, which would stall our own `get`s on them).
pub fn scan<E: From<StoreError> + From<std::io::Error>>(
    addr: &crate::ServerAddr,
    timeouts: crate::Timeouts,
    keep: impl Fn(&[u8]) -> bool,
    mut each: impl FnMut(&[u8], &[u8], u32) -> Result<(), E>,
) -> Result<(), E> {
    use std::io::{BufRead, Write};
    // A crawl over a busy memcached can pause longer than one command
    // should: give the scan's connections room.
    let timeouts = crate::Timeouts {
        connect: timeouts.connect,
        io: timeouts.io.max(std::time::Duration::from_secs(10)),
    };
    let spool = Spool::create()?;
    let mut out = std::io::BufWriter::new(spool.file.try_clone()?);
    let mut written: Result<(), std::io::Error> = Ok(());
    Memcached::new(addr.clone(), timeouts).metadump(|meta| {
        if keep(&meta.key) {
            let exp = meta.expires.map_or(-1, |e| e as i64);
            written = out
                .write_all(&meta.key)
                .and_then(|_| writeln!(out, "\t{exp}"));
        }
        if written.is_ok() {
            std::ops::ControlFlow::Continue(())
        } else {
            std::ops::ControlFlow::Break(())
        }
    })?;
    written?;
    out.flush()?;
    drop(out);
    let mut values = Memcached::new(addr.clone(), timeouts);
    let reader = std::io::BufReader::new(std::fs::File::open(&spool.path)?);
    let mut batch: Vec<(Vec<u8>, Option<u64>)> = Vec::with_capacity(SCAN_BATCH);
    let mut lines = reader.split(b'\n');
    loop {
        let line = lines.next().transpose()?;
        if let Some(line) = &line {
            let Some(tab) = line.iter().rposition(|&b| b == b'\t') else {
                continue;
            };
            let exp: i64 = std::str::from_utf8(&line[tab + 1..])
                .ok()
                .and_then(|e| e.parse().ok())
                .unwrap_or(-1);
            batch.push((
                line[..tab].to_vec(),
                u64::try_from(exp).ok().filter(|e| *e > 0),
            ));
        }
        if batch.len() >= SCAN_BATCH || (line.is_none() && !batch.is_empty()) {
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
        }
        if line.is_none() {
            return Ok(());
        }
    }
}

/// A temporary file, removed when dropped.
struct Spool {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl Spool {
    fn create() -> std::io::Result<Spool> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("memcast-scan-{}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Spool { path, file })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
