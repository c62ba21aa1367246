//! memcastd's apply rate against memcached's own ceiling, on loopback: a
//! burst of 2 KB frames published over tcp:// to one memcastd (time until
//! the last is in memcached), and the same number of 2 KB sets pipelined
//! straight into a memcached, 100 per write.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memcast_bus::{BusOptions, Publisher};
use memcast_core::{unix_millis, Frame, Op, SharedKey, Version};
use memcast_testkit::{eventually, raw_get, Memcached, Proc, TempDir};

const FRAMES: u64 = 100_000;

pub struct Apply {
    pub frames_per_sec: f64,
    pub ceiling_per_sec: f64,
    /// The same burst taken by a bare ZeroMQ subscriber that stores each
    /// batch with pipelined sets (the floor section's `floor-sub`): what
    /// ZeroMQ and memcached alone allow, without anything of memcastd's.
    pub floor_per_sec: f64,
    pub frames: u64,
}

/// A TCP publisher that queues a whole burst (ZeroMQ's high-water mark
/// above [`FRAMES`]).
fn burst_publisher() -> Publisher {
    Publisher::bind(
        "tcp://127.0.0.1:*",
        &BusOptions {
            sndhwm: 2_000_000,
            ..BusOptions::default()
        },
    )
    .unwrap()
}

/// Sends `burst` at once and waits up to 120 s for `last` in the memcached
/// at `addr`: messages per second until it was there, if it came.
fn timed_burst(publisher: &Publisher, burst: &[Vec<u8>], addr: &str, last: &str) -> Option<f64> {
    let started = Instant::now();
    for m in burst {
        publisher.send(m).unwrap();
    }
    let done = eventually(Duration::from_secs(120), || raw_get(addr, last));
    done.map(|_| burst.len() as f64 / started.elapsed().as_secs_f64())
}

/// The burst of [`run`] sent as plain messages (send time, sequence, the
/// rest) to a `floor-sub` storing them in a memcached of its own: messages
/// per second until the last is stored.
fn floor_rate(value_len: usize) -> f64 {
    let mc = Memcached::start();
    let publisher = burst_publisher();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "floor-sub",
        publisher.endpoint(),
        &mc.addr(),
        &crate::floor::WINDOW_US.to_string(),
        "1500",
        "-",
    ]);
    // Stops (stdin closed) and is reaped when dropped, a panic included.
    let _sub = crate::floor::Kid::spawn(cmd);
    let message = |seq: u64| {
        let mut m = vec![0x5a; value_len + 90];
        m[8..16].copy_from_slice(&seq.to_le_bytes());
        m
    };
    // A TCP subscriber joins a moment after it connects: probe until one
    // is stored (the warm bit keeps probes out of its count).
    let warm = 1u64 << 63;
    let mut probe = 0;
    let joined = eventually(Duration::from_secs(10), || {
        probe += 1;
        publisher.send(&message(warm | probe)).ok()?;
        raw_get(&mc.addr(), &format!("floor{}", warm | probe)).map(|_| ())
    });
    assert!(joined.is_some(), "floor-sub never stored a message");
    let burst: Vec<Vec<u8>> = (0..FRAMES).map(message).collect();
    let last = format!("floor{}", FRAMES - 1);
    timed_burst(&publisher, &burst, &mc.addr(), &last)
        .expect("floor-sub never stored the burst's last message")
}

fn frame(seq: u64, key: String, value: &[u8]) -> Frame {
    Frame {
        op: Op::Set,
        origin: 7,
        epoch: 1,
        seq,
        version: Version {
            millis: unix_millis(),
            counter: 0,
            origin: 7,
        },
        ttl: 3600,
        key: key.into_bytes(),
        value: value.to_vec(),
    }
}

fn pipelined_sets(addr: &str, prefix: &str, value: &[u8]) -> f64 {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let started = Instant::now();
    let mut line = String::new();
    for batch in 0..FRAMES / 100 {
        let mut buf = Vec::with_capacity(100 * (value.len() + 64));
        for i in 0..100 {
            let n = batch * 100 + i;
            buf.extend_from_slice(format!("set {prefix}{n} 0 3600 {}\r\n", value.len()).as_bytes());
            buf.extend_from_slice(value);
            buf.extend_from_slice(b"\r\n");
        }
        writer.write_all(&buf).unwrap();
        for _ in 0..100 {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "STORED\r\n", "memcached said {line}");
        }
    }
    FRAMES as f64 / started.elapsed().as_secs_f64()
}

pub fn run(rounds: usize) -> Apply {
    let dir = TempDir::new("bench-apply");
    let key_file = dir.key_file("key", 3);
    let key = SharedKey::from_file(&key_file).unwrap();
    let value = crate::session_payload::sealed(&key);
    let mut rates = Vec::new();
    let mut ceilings = Vec::new();
    let mut floors = Vec::new();
    for round in 0..rounds {
        let mc = Memcached::start();
        let ceiling_mc = Memcached::start();
        let publisher = burst_publisher();
        let log = std::fs::File::create(dir.path.join(format!("memcastd{round}.log"))).unwrap();
        let memcastd = super::workspace().join("target/release/memcastd");
        let mut cmd = Command::new(memcastd);
        cmd.args([
            "--memcached",
            &mc.addr(),
            "--subscribe",
            publisher.endpoint(),
        ])
        .arg("--key-file")
        .arg(&key_file)
        .args([
            "--stats-interval",
            "0",
            "--rcvhwm",
            "2000000",
            "--max-lag-ms",
            "600000",
        ])
        .stdout(Stdio::null())
        .stderr(log);
        let _daemon = Proc::spawn("memcastd", &mut cmd);
        let mut seq = 0;
        let joined = eventually(Duration::from_secs(10), || {
            seq += 1;
            publisher
                .send(&frame(seq, "memcast.sess.probe".into(), b"p").seal(&key))
                .ok()?;
            raw_get(&mc.addr(), "memcast.sess.probe").map(|_| ())
        });
        assert!(joined.is_some(), "memcastd never applied a frame");
        std::thread::sleep(Duration::from_millis(200));
        let last = format!("memcast.sess.r{round}last");
        // Sealed beforehand: on a cluster, senders seal in their own
        // processes; what is timed is memcastd taking them in.
        let sealed: Vec<Vec<u8>> = (0..FRAMES)
            .map(|n| {
                seq += 1;
                let k = if n == FRAMES - 1 {
                    last.clone()
                } else {
                    format!("memcast.sess.r{round}k{n}")
                };
                frame(seq, k, &value).seal(&key)
            })
            .collect();
        let rate =
            timed_burst(&publisher, &sealed, &mc.addr(), &last).expect("the burst never completed");
        let ceiling = pipelined_sets(&ceiling_mc.addr(), &format!("r{round}c"), &value);
        eprintln!(
            "bench: memcastd applied {FRAMES} frames of 2 KB at {rate:.0}/s; memcached took pipelined sets at {ceiling:.0}/s"
        );
        let floor = floor_rate(value.len());
        eprintln!(
            "bench: a bare ZeroMQ subscriber with pipelined sets took the burst at {floor:.0}/s"
        );
        rates.push(rate);
        ceilings.push(ceiling);
        floors.push(floor);
    }
    Apply {
        frames_per_sec: super::median(&mut rates),
        ceiling_per_sec: super::median(&mut ceilings),
        floor_per_sec: super::median(&mut floors),
        frames: FRAMES,
    }
}
