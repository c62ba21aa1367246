//! Who writes: every publishing process is an origin with a random id, an
//! epoch (its start time) and a sequence number per frame, so receivers can
//! tell frames apart, notice gaps, and see a restarted origin as a new epoch.

use crate::unix_millis;

#[derive(Debug)]
pub struct Origin {
    pub id: u64,
    pub epoch: u64,
    next_seq: u64,
}

impl Origin {
    /// A fresh origin: random id, epoch = now in milliseconds.
    pub fn new() -> Origin {
        Origin {
            id: random_u64(),
            epoch: unix_millis(),
            next_seq: 1,
        }
    }

    /// The next sequence number (1, 2, 3, ...).
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The last sequence number handed out (0 before the first frame).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

impl Default for Origin {
    fn default() -> Self {
        Origin::new()
    }
}

/// A random, non-zero u64 from the operating system.
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    loop {
        if getrandom::fill(&mut buf).is_err() {
            // No OS randomness: fall back on time and pid, still unique enough
            // to tell processes apart.
            let mixed = crate::unix_millis() ^ (u64::from(std::process::id()) << 40);
            buf = mixed.to_be_bytes();
        }
        let v = u64::from_be_bytes(buf);
        if v != 0 {
            return v;
        }
    }
}
