//! The relay's replay ring: the last frames it sent, bounded in bytes, so a
//! peer that missed some can ask for them again over TCP.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct ReplayRing {
    pub origin: u64,
    pub epoch: u64,
    frames: VecDeque<(u64, Vec<u8>)>,
    /// The highest sequence number pushed (0: none yet).
    last_seq: u64,
    bytes: usize,
    max_bytes: usize,
}

/// The range asked for starts before the oldest frame still held.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone;

impl ReplayRing {
    pub fn new(origin: u64, epoch: u64, max_bytes: usize) -> ReplayRing {
        ReplayRing {
            origin,
            epoch,
            frames: VecDeque::new(),
            last_seq: 0,
            bytes: 0,
            max_bytes,
        }
    }

    pub fn push(&mut self, seq: u64, sealed: Vec<u8>) {
        self.bytes += sealed.len();
        self.last_seq = self.last_seq.max(seq);
        self.frames.push_back((seq, sealed));
        while self.bytes > self.max_bytes {
            match self.frames.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Frames `from..=to` (those sent so far), or [`Gone`] when the ring no
    /// longer reaches back to `from`. Nothing sent after `from - 1` is an
    /// empty answer: a silent origin's "nothing new" (`to` may be `u64::MAX`).
    pub fn range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, Gone> {
        if from > self.last_seq {
            return Ok(Vec::new());
        }
        match self.frames.front() {
            Some((oldest, _)) if from >= *oldest => Ok(self
                .frames
                .iter()
                .filter(|(s, _)| (from..=to).contains(s))
                .map(|(_, f)| f.clone())
                .collect()),
            _ => Err(Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_serves_ranges_it_holds_and_forgets_the_oldest() {
        let mut r = ReplayRing::new(1, 1, 30);
        for seq in 1..=5u64 {
            r.push(seq, vec![seq as u8; 10]);
        }
        // 30 bytes: frames 3, 4, 5 remain.
        assert_eq!(r.range(3, 4).unwrap(), vec![vec![3u8; 10], vec![4u8; 10]]);
        assert_eq!(r.range(2, 4), Err(Gone));
        assert_eq!(r.range(5, 9).unwrap().len(), 1);
    }

    #[test]
    fn nothing_sent_after_the_range_start_is_an_empty_answer() {
        let mut r = ReplayRing::new(1, 1, 30);
        assert_eq!(r.range(1, u64::MAX), Ok(Vec::new()));
        for seq in 1..=5u64 {
            r.push(seq, vec![seq as u8; 10]);
        }
        assert_eq!(r.range(6, u64::MAX), Ok(Vec::new()));
        assert_eq!(r.range(4, u64::MAX).unwrap().len(), 2);
        assert_eq!(r.range(1, u64::MAX), Err(Gone));
    }
}
