//! The faults the soak injects, chosen by a seeded generator so a run can be
//! replayed (`SOAK_SEED`): which fault, on which host, for how long.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::replicas::Replica;
use super::Shared;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// memcached killed by PID and started again, empty, on the same port.
    MemcachedRestart,
    /// memcached restarted with `-m 8`, so it evicts; restored (restarted
    /// again, empty, full size) 8-15 s later.
    MemcachedSmall,
    /// memcastd SIGKILLed, started again 1-3 s later.
    MemcastdKill,
    /// The host's link down for 5-10 s.
    LinkDown,
    /// 5% of the host's packets dropped (nftables), both ways, for 8-15 s.
    Loss,
    /// A PHP writer SIGKILLed while it holds a session (after
    /// `session_start()`, before `session_write_close()`).
    PhpKill,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::MemcachedRestart,
        FaultKind::MemcachedSmall,
        FaultKind::MemcastdKill,
        FaultKind::LinkDown,
        FaultKind::Loss,
        FaultKind::PhpKill,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::MemcachedRestart => "memcached_restart",
            FaultKind::MemcachedSmall => "memcached_small",
            FaultKind::MemcastdKill => "memcastd_kill",
            FaultKind::LinkDown => "link_down",
            FaultKind::Loss => "loss_5pct",
            FaultKind::PhpKill => "php_kill",
        }
    }
}

/// splitmix64: small, seeded, the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// lo..=hi.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The PHP-kill hand-shake with a host's writer thread.
pub const KILL_IDLE: u8 = 0;
pub const KILL_REQUESTED: u8 = 1;
pub const KILL_DONE: u8 = 2;

/// Injects one fault on host `i` (from 0) and returns when it is over
/// (link back up, memcached restored...): what happened, in a few words.
pub fn inject(shared: &Shared, kind: FaultKind, i: usize, rng: &mut Rng) -> String {
    let net_host = (i + 1) as u8;
    let sleep_s = |s: u64| std::thread::sleep(Duration::from_secs(s));
    match kind {
        FaultKind::MemcachedRestart => {
            shared.cluster().restart_memcached(i);
            "killed, started again empty".into()
        }
        FaultKind::MemcachedSmall => {
            let secs = rng.between(8, 15);
            shared.cluster().restart_memcached_with_memory(i, 8);
            sleep_s(secs);
            let addr = shared.cluster_read().memcached_addr(i);
            let mut replica = Replica::new(addr);
            let (evictions, items) = (replica.stat("evictions"), replica.stat("curr_items"));
            shared.cluster().restart_memcached(i);
            format!(
                "-m 8 for {secs} s ({} evictions, {} items held), restored empty",
                evictions.map_or("?".into(), |n| n.to_string()),
                items.map_or("?".into(), |n| n.to_string())
            )
        }
        FaultKind::MemcastdKill => {
            let ms = rng.between(1000, 3000);
            shared.note_memcastd_rss(i);
            shared.cluster().kill_memcastd(i);
            std::thread::sleep(Duration::from_millis(ms));
            shared.cluster().start_memcastd(i);
            format!("SIGKILL, down {:.1} s", ms as f64 / 1000.0)
        }
        FaultKind::LinkDown => {
            let secs = rng.between(5, 10);
            shared.cluster_read().net().set_link(net_host, false);
            sleep_s(secs);
            shared.cluster_read().net().set_link(net_host, true);
            format!("down {secs} s")
        }
        FaultKind::Loss => {
            let secs = rng.between(8, 15);
            shared.cluster_read().net().set_loss(net_host, 5);
            sleep_s(secs);
            shared.cluster_read().net().clear_loss(net_host);
            format!("5% dropped for {secs} s")
        }
        FaultKind::PhpKill => {
            let flag = &shared.kill_php[i];
            flag.store(KILL_REQUESTED, Ordering::SeqCst);
            let done = crate::eventually(Duration::from_secs(60), || {
                (flag.load(Ordering::SeqCst) == KILL_DONE).then_some(())
            });
            flag.store(KILL_IDLE, Ordering::SeqCst);
            match done {
                Some(()) => "writer SIGKILLed holding a session".into(),
                None => "writer never got to hold a session in 60 s".into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            let mut kinds = FaultKind::ALL;
            r.shuffle(&mut kinds);
            (kinds, r.below(5), r.between(5, 10))
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        let mut r = Rng::new(1);
        assert!((0..1000)
            .map(|_| r.between(5, 10))
            .all(|v| (5..=10).contains(&v)));
    }
}
