//! What this host heard from origins that keep no ring of their own (PHP
//! workers publishing straight to the group): the sealed frames, as they
//! came, bounded in bytes. Peers ask for them over TCP like they ask a relay
//! for its ring, so a host that missed some of a PHP worker's frames (a
//! link down, a multicast stream stalled behind a loss) gets them from any
//! host that has them, within a second or two, instead of at the next
//! digest round. Every frame is sealed by its origin: a peer serving them
//! cannot alter them.
//!
//! Each host also tells its peers, on request, how far it holds each such
//! origin ([`HeardFrames::table`]); a host that stays behind a peer for a
//! second fetches the difference ([`crate::repair`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ring::Gone;

/// Origins not heard for this long are forgotten.
const IDLE: Duration = Duration::from_secs(600);
/// Origins listed in a table at most (the most recently heard first).
pub const MAX_TABLE: usize = 16_384;

#[derive(Debug)]
struct Stream {
    frames: BTreeMap<u64, Vec<u8>>,
    /// Every sequence number from the first held through this one is held
    /// (or was, and has been pushed out by the byte bound).
    contiguous: u64,
    last_push: Instant,
}

/// One origin's position: held contiguously from `first` through `last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub origin: u64,
    pub epoch: u64,
    pub first: u64,
    pub last: u64,
}

impl Position {
    pub const ENCODED_LEN: usize = 32;

    pub fn encode_table(table: &[Position]) -> Vec<u8> {
        let mut out = Vec::with_capacity(table.len() * Self::ENCODED_LEN);
        for p in table {
            for v in [p.origin, p.epoch, p.first, p.last] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        out
    }

    pub fn decode_table(bytes: &[u8]) -> Option<Vec<Position>> {
        if !bytes.len().is_multiple_of(Self::ENCODED_LEN) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(Self::ENCODED_LEN)
                .map(|c| {
                    let at = |i: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&c[i * 8..i * 8 + 8]);
                        u64::from_be_bytes(b)
                    };
                    Position {
                        origin: at(0),
                        epoch: at(1),
                        first: at(2),
                        last: at(3),
                    }
                })
                .collect(),
        )
    }
}

#[derive(Debug)]
pub struct HeardFrames {
    streams: HashMap<(u64, u64), Stream>,
    /// Every frame held, oldest first: (origin, epoch, seq, bytes).
    order: VecDeque<(u64, u64, u64, usize)>,
    bytes: usize,
    max_bytes: usize,
    pushes: u64,
}

impl HeardFrames {
    pub fn new(max_bytes: usize) -> HeardFrames {
        HeardFrames {
            streams: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
            pushes: 0,
        }
    }

    /// Keeps a frame heard (or repaired) from a ring-less origin.
    pub fn push(&mut self, origin: u64, epoch: u64, seq: u64, sealed: &[u8]) {
        if seq == 0 {
            return;
        }
        self.pushes += 1;
        if self.pushes.is_multiple_of(4096) {
            // Workers come and go (php-fpm restarts them): forget the idle.
            self.streams.retain(|_, s| s.last_push.elapsed() < IDLE);
        }
        let stream = self.streams.entry((origin, epoch)).or_insert(Stream {
            frames: BTreeMap::new(),
            contiguous: seq - 1,
            last_push: Instant::now(),
        });
        stream.last_push = Instant::now();
        if seq <= stream.contiguous || stream.frames.contains_key(&seq) {
            return;
        }
        stream.frames.insert(seq, sealed.to_vec());
        while stream.frames.contains_key(&(stream.contiguous + 1)) {
            stream.contiguous += 1;
        }
        self.bytes += sealed.len();
        self.order.push_back((origin, epoch, seq, sealed.len()));
        while self.bytes > self.max_bytes {
            let Some((o, e, s, len)) = self.order.pop_front() else {
                break;
            };
            self.bytes -= len;
            if let Some(st) = self.streams.get_mut(&(o, e)) {
                st.frames.remove(&s);
            }
        }
    }

    /// Gives up the frames up to `seq` nobody could serve: this host stands
    /// past them (a digest round brings back what they wrote).
    pub fn skip_to(&mut self, origin: u64, epoch: u64, seq: u64) {
        if let Some(stream) = self.streams.get_mut(&(origin, epoch)) {
            stream.contiguous = stream.contiguous.max(seq);
            while stream.frames.contains_key(&(stream.contiguous + 1)) {
                stream.contiguous += 1;
            }
        }
    }

    /// Where this host stands with `origin`'s `epoch`: the last sequence
    /// number up to which it holds (or held) every frame; None if unknown.
    pub fn contiguous(&self, origin: u64, epoch: u64) -> Option<u64> {
        self.streams.get(&(origin, epoch)).map(|s| s.contiguous)
    }

    /// Frames `from..=to` (`to = u64::MAX`: all after `from - 1`), only if
    /// every one of them up to the last held is here: a partial answer
    /// would pass for a whole one.
    pub fn range(&self, origin: u64, epoch: u64, from: u64, to: u64) -> Result<Vec<Vec<u8>>, Gone> {
        let stream = self.streams.get(&(origin, epoch)).ok_or(Gone)?;
        let to = to.min(stream.contiguous);
        if from > to {
            return Ok(Vec::new());
        }
        let held: Vec<Vec<u8>> = stream
            .frames
            .range(from..=to)
            .map(|(_, f)| f.clone())
            .collect();
        if held.len() as u64 != to - from + 1 {
            return Err(Gone);
        }
        Ok(held)
    }

    /// Every origin heard recently, with the span held contiguously.
    pub fn table(&mut self) -> Vec<Position> {
        self.streams.retain(|_, s| s.last_push.elapsed() < IDLE);
        let mut all: Vec<(&(u64, u64), &Stream)> = self.streams.iter().collect();
        all.sort_by_key(|(_, s)| std::cmp::Reverse(s.last_push));
        all.into_iter()
            .take(MAX_TABLE)
            .filter_map(|(&(origin, epoch), s)| {
                let first = *s.frames.keys().next()?;
                (first <= s.contiguous).then_some(Position {
                    origin,
                    epoch,
                    first,
                    last: s.contiguous,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_what_it_holds_without_holes() {
        let mut h = HeardFrames::new(1000);
        for seq in [1u64, 2, 3, 5, 6] {
            h.push(7, 1, seq, &[seq as u8; 10]);
        }
        assert_eq!(h.contiguous(7, 1), Some(3));
        assert_eq!(h.range(7, 1, 2, 3).unwrap().len(), 2);
        // 4 is missing: nothing past it is served as if whole.
        assert_eq!(h.range(7, 1, 2, u64::MAX).unwrap().len(), 2);
        assert_eq!(h.range(7, 1, 5, 6), Ok(Vec::new()));
        h.push(7, 1, 4, &[4; 10]);
        assert_eq!(h.contiguous(7, 1), Some(6));
        assert_eq!(h.range(7, 1, 4, u64::MAX).unwrap().len(), 3);
        assert_eq!(h.range(8, 1, 1, 2), Err(Gone));
        assert_eq!(
            h.table(),
            vec![Position {
                origin: 7,
                epoch: 1,
                first: 1,
                last: 6
            }]
        );
    }

    #[test]
    fn a_stream_joined_late_starts_where_it_was_joined() {
        let mut h = HeardFrames::new(1000);
        h.push(7, 1, 40, &[1; 10]);
        h.push(7, 1, 41, &[1; 10]);
        assert_eq!(h.contiguous(7, 1), Some(41));
        assert_eq!(h.range(7, 1, 39, 41), Err(Gone));
        assert_eq!(h.range(7, 1, 40, 41).unwrap().len(), 2);
    }

    #[test]
    fn the_byte_bound_pushes_out_the_oldest_frames() {
        let mut h = HeardFrames::new(30);
        for seq in 1..=5u64 {
            h.push(7, 1, seq, &[seq as u8; 10]);
        }
        assert_eq!(h.range(7, 1, 1, 5), Err(Gone));
        assert_eq!(h.range(7, 1, 3, 5).unwrap().len(), 3);
        assert_eq!(h.contiguous(7, 1), Some(5));
        assert_eq!(h.table()[0].first, 3);
    }

    #[test]
    fn tables_round_trip() {
        let t = vec![
            Position {
                origin: 1,
                epoch: 2,
                first: 3,
                last: 4,
            },
            Position {
                origin: u64::MAX,
                epoch: 0,
                first: 1,
                last: 9,
            },
        ];
        assert_eq!(Position::decode_table(&Position::encode_table(&t)), Some(t));
        assert_eq!(Position::decode_table(&[0; 31]), None);
    }
}
