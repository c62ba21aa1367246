//! A hostile host on the memcast group, for tests/hostile.rs: it holds no
//! cluster key, listens to the group, and sends every kind of bad input it
//! can make while real writes flow. Run inside its own network namespace:
//!
//! ```text
//! attacker --group "epgm://IFACE;GROUP:PORT" [--capture "epgm://IFACE;GROUP:FIRST-LAST"] \
//!          --max-value-bytes N --max-frame-age-ms MS
//! ```
//!
//! `--capture` (default: the `--group` endpoint) is where it listens: with
//! each relay on its own port, the range of them.
//!
//! Phases: it first sends a junk datagram every 100 ms (so receivers learn
//! of this new PGM source) until a line arrives on stdin; then it captures
//! frames from the group and sends, in order: frames signed with its own
//! key, captured frames with a flipped bit, captured frames one byte short,
//! captured frames cut to 40 bytes, random bytes, oversized frames, the
//! captured frames again at once, and the captured frames again after
//! `--max-frame-age-ms`. Last it prints what each receiver should have
//! dropped, by reason:
//!
//! ```text
//! expected auth=N decode=N size=N replay=N probes=N
//! ```
//!
//! It sends to the group only: no other address is touched.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_bus::{BusOptions, Publisher, Subscriber};
use memcast_core::frame::HEADER_LEN;
use memcast_core::{unix_millis, Frame, Op, SharedKey, Version};

const CAPTURE: usize = 60;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn arg(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("missing {name}"))
        .clone()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let group = arg(&args, "--group");
    let max_value: usize = arg(&args, "--max-value-bytes").parse().unwrap();
    let max_age: u64 = arg(&args, "--max-frame-age-ms").parse().unwrap();
    let opts = BusOptions::default();
    let publisher = Publisher::connect(&group, &opts).expect("join the group as a sender");
    let capture = args
        .iter()
        .position(|a| a == "--capture")
        .map_or_else(|| group.clone(), |_| arg(&args, "--capture"));
    let capture = memcast_core::endpoint::expand_ports(&capture).expect("--capture");
    let subscriber = Subscriber::connect(&capture, &opts).expect("join the group");
    let mut rng = Rng(0x5eed_1234_abcd_ef01 ^ unix_millis());
    let pace = || std::thread::sleep(Duration::from_millis(2));

    // Probes until told to go: junk that receivers count as `decode`.
    let go = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&go);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        flag.store(true, Ordering::Relaxed);
    });
    let mut probes = 0u64;
    while !go.load(Ordering::Relaxed) {
        publisher.send(b"probe: not a memcast frame").unwrap();
        probes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }

    // Capture real frames (heartbeats included) as they flow.
    let mut captured: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while captured.len() < CAPTURE && Instant::now() < deadline {
        if let Ok(Some((_, bytes))) = subscriber.recv(Duration::from_millis(100)) {
            if bytes.starts_with(b"MCST") {
                captured.push(bytes);
            }
        }
    }
    assert!(!captured.is_empty(), "captured nothing from the group");
    let captured_at = Instant::now();
    eprintln!("attacker: captured {} frames", captured.len());
    // Let every receiver get the originals before anything is replayed.
    std::thread::sleep(Duration::from_millis(500));
    let (mut auth, mut decode, mut size, mut replay) = (0u64, 0u64, 0u64, 0u64);

    // No key: frames signed with a key of its own, aimed at real sessions
    // (with versions far in the future) and at new ones.
    let own = SharedKey::from_secret(&rng.bytes(32)).unwrap();
    for i in 0..100u64 {
        let frame = Frame {
            op: if i % 10 == 0 { Op::Delete } else { Op::Set },
            origin: rng.next(),
            epoch: unix_millis(),
            seq: i + 1,
            version: Version {
                millis: unix_millis() + 86_400_000,
                counter: 0,
                origin: 1,
            },
            ttl: 3600,
            key: format!("memcast.sess.inj{}-{}", 1 + i % 3, i % 50).into_bytes(),
            value: b"pwned|b:1;".to_vec(),
        };
        publisher.send(&frame.seal(&own)).unwrap();
        auth += 1;
        pace();
    }
    // Forged: a real key id, one bit flipped (the tag no longer matches).
    for c in &captured {
        let mut b = c.clone();
        let at = HEADER_LEN.min(b.len() - 1);
        b[at] ^= 0x20;
        publisher.send(&b).unwrap();
        auth += 1;
        pace();
    }
    // Truncated: one byte short (authentication fails), and cut to 40 bytes
    // (shorter than any frame).
    for c in &captured {
        publisher.send(&c[..c.len() - 1]).unwrap();
        auth += 1;
        pace();
        publisher.send(&c[..40]).unwrap();
        decode += 1;
        pace();
    }
    // Random bytes.
    for _ in 0..100 {
        let n = 1 + (rng.next() % 3000) as usize;
        let mut b = rng.bytes(n);
        b[0] = 0; // never "MCST" by chance
        publisher.send(&b).unwrap();
        decode += 1;
        pace();
    }
    // Oversized: a frame-looking blob past the receivers' limit.
    for _ in 0..3 {
        let mut b = b"MCST".to_vec();
        b.extend(rng.bytes(max_value + 100_000));
        publisher.send(&b).unwrap();
        size += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Replays: at once (sequence numbers already seen)...
    for c in &captured {
        publisher.send(c).unwrap();
        replay += 1;
        pace();
    }
    // ...and once they are older than the receivers' frame age limit.
    let wait = Duration::from_millis(max_age + 1000).saturating_sub(captured_at.elapsed());
    std::thread::sleep(wait);
    for c in &captured {
        publisher.send(c).unwrap();
        replay += 1;
        pace();
    }
    // Linger so PGM delivers (and repairs) the tail before exit.
    std::thread::sleep(Duration::from_secs(2));
    println!("expected auth={auth} decode={decode} size={size} replay={replay} probes={probes}");
}
