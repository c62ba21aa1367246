//! The relay, its replay ring, gap repair, resync from a peer and the
//! convergence check, on real memcached and real ZeroMQ over loopback (the
//! same mechanisms over PGM between namespaces are in tests/faults.rs).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use memcast_bus::{BusOptions, Publisher, Source, Subscriber};
use memcast_core::peer::{self, Record, Request};
use memcast_core::{
    unix_millis, Frame, Memcached, Op, ServerAddr, SharedKey, StoredValue, Timeouts, Version,
};
use memcast_testkit::{eventually, free_port, wait_for_tcp, Memcached as Server, Proc, TempDir};

fn memcastd(args: &[String], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memcastd"));
    cmd.args(args)
        .arg("--stats-interval")
        .arg("0")
        .stdout(Stdio::null())
        .stderr(log);
    Proc::spawn("memcastd", &mut cmd)
}

fn client(server: &Server) -> Memcached {
    Memcached::new(
        ServerAddr::parse(&server.addr()).unwrap(),
        Timeouts::default(),
    )
}

fn php_frame(seq: u64, i: u64) -> Frame {
    Frame {
        op: Op::Set,
        origin: 77,
        epoch: 1,
        seq,
        version: Version {
            millis: unix_millis(),
            counter: i as u32,
            origin: 77,
        },
        ttl: 600,
        key: format!("memcast.sess.r{i}").into_bytes(),
        value: format!("i|i:{i};").into_bytes(),
    }
}

/// A SUB the test binds, standing in for the group: what the relay sends.
fn group_tap() -> (Subscriber, String) {
    let port = free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    // A SUB that binds: a PUB may connect to it.
    let ctx_endpoint = endpoint.clone();
    let sub = Subscriber::bind_for_tests(&ctx_endpoint, &BusOptions::default()).unwrap();
    (sub, endpoint)
}

fn fetch(addr: &str, req: Request, key: &SharedKey) -> Vec<Record> {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(&req.encode(key, unix_millis())).unwrap();
    let mut out = Vec::new();
    loop {
        match peer::read_record(&mut conn, 1 << 20) {
            Ok(Record::Frame(f)) => out.push(Record::Frame(f)),
            Ok(end) => {
                out.push(end);
                return out;
            }
            Err(_) => return out,
        }
    }
}

struct Relay {
    _dir: TempDir,
    key: SharedKey,
    key_file: String,
    listen: String,
    tap: Subscriber,
    _daemon: Proc,
    php: Publisher,
    log: std::path::PathBuf,
}

/// memcastd A as its host's relay: PHP frames in at an ipc socket, out to
/// the test's tap, repairs served at `listen`.
fn relay_host(mc: &Server) -> Relay {
    relay_host_with(mc, &["--heartbeat-ms", "100"])
}

fn relay_host_with(mc: &Server, extra: &[&str]) -> Relay {
    relay_host_over("ipc://", "publish.sock", mc, extra)
}

/// [`relay_host_with`], PHP handing frames over at `scheme` + a socket
/// named `socket` in the test's directory.
fn relay_host_over(scheme: &str, socket: &str, mc: &Server, extra: &[&str]) -> Relay {
    let dir = TempDir::new("relay");
    let key_file = dir.key_file("key", 4);
    let key = SharedKey::from_file(&key_file).unwrap();
    let (tap, group) = group_tap();
    let relay = format!("{scheme}{}/{socket}", dir.path.display());
    let listen = format!("127.0.0.1:{}", free_port());
    let unused = format!("tcp://127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--memcached",
        &mc.addr(),
        "--subscribe",
        &unused,
        "--key-file",
        key_file.to_str().unwrap(),
        "--relay",
        &relay,
        "--publish",
        &group,
        "--listen",
        &listen,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let log = dir.path.join("a.log");
    let daemon = memcastd(&args, &log);
    assert!(
        wait_for_tcp(&listen, Duration::from_secs(5)),
        "memcastd did not listen"
    );
    let php = Publisher::relay(
        &relay,
        &BusOptions {
            send_timeout_ms: 1000,
            ..BusOptions::default()
        },
    )
    .unwrap();
    Relay {
        key_file: key_file.to_str().unwrap().to_owned(),
        _dir: dir,
        key,
        listen,
        tap,
        _daemon: daemon,
        php,
        log,
    }
}

/// Frames the tap receives (opened) until `enough` says so, or 10 s.
fn drain(
    tap: &Subscriber,
    key: &SharedKey,
    enough: impl Fn(&[(Vec<u8>, Frame)]) -> bool,
) -> Vec<(Vec<u8>, Frame)> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !enough(&out) {
        if let Ok(Some((Source::Group, bytes))) = tap.recv(Duration::from_millis(20)) {
            let frame = Frame::open(&bytes, key, 1 << 20)
                .expect("the relay sent a frame that does not open");
            out.push((bytes, frame));
        }
    }
    out
}

/// The sequence numbers of the data frames (sets) among `got`, in order.
fn data_seqs(got: &[(Vec<u8>, Frame)]) -> Vec<u64> {
    got.iter()
        .filter(|(_, f)| f.op == Op::Set)
        .map(|(_, f)| f.seq)
        .collect()
}

/// Ten data frames, and a heartbeat after them that vouches for all ten.
fn ten_and_a_heartbeat(got: &[(Vec<u8>, Frame)]) -> bool {
    got.iter().filter(|(_, f)| f.op == Op::Set).count() == 10
        && got
            .iter()
            .any(|(_, f)| f.op == Op::Heartbeat && f.seq == 10)
}

#[test]
fn relay_restamps_php_frames_keeps_them_in_its_ring_and_sends_heartbeats() {
    let mc = Server::start();
    let r = relay_host(&mc);
    // Once heartbeats reach the tap it is connected; then hand over ten PHP frames.
    let early = drain(&r.tap, &r.key, |got| got.len() >= 3);
    assert!(
        early
            .iter()
            .all(|(_, f)| f.op == Op::Heartbeat && f.seq == 0),
        "heartbeats flow before any write"
    );
    assert!(early.len() >= 3, "no heartbeats from the relay");
    let sent: Vec<Frame> = (1..=10).map(|i| php_frame(i, i)).collect();
    for f in &sent {
        r.php.send(&f.seal(&r.key)).unwrap();
    }
    let got = drain(&r.tap, &r.key, ten_and_a_heartbeat);
    let data: Vec<&Frame> = got
        .iter()
        .map(|(_, f)| f)
        .filter(|f| f.op == Op::Set)
        .collect();
    assert_eq!(data.len(), 10, "relayed {} of 10", data.len());
    let (origin, epoch) = (data[0].origin, data[0].epoch);
    assert_ne!(origin, 77, "the relay sends as its own origin");
    for (i, f) in data.iter().enumerate() {
        assert_eq!((f.origin, f.epoch, f.seq), (origin, epoch, i as u64 + 1));
        assert_eq!(
            f.version, sent[i].version,
            "the write version is PHP's, untouched"
        );
        assert_eq!(f.value, sent[i].value);
    }
    let heartbeats: Vec<&Frame> = got
        .iter()
        .map(|(_, f)| f)
        .filter(|f| f.op == Op::Heartbeat)
        .collect();
    let last = heartbeats.last().expect("no heartbeat after the writes");
    assert_eq!(last.seq, 10);
    assert_eq!(last.value, r.listen.as_bytes());

    // The ring serves a range, and says when a range is not its own.
    let records = fetch(
        &r.listen,
        Request::Range {
            origin,
            epoch,
            from: 3,
            to: 5,
        },
        &r.key,
    );
    let seqs: Vec<u64> = records
        .iter()
        .filter_map(|rec| match rec {
            Record::Frame(b) => Some(Frame::open(b, &r.key, 1 << 20).unwrap().seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(records.last(), Some(&Record::End));
    let records = fetch(
        &r.listen,
        Request::Range {
            origin,
            epoch: epoch + 1,
            from: 1,
            to: 2,
        },
        &r.key,
    );
    assert_eq!(records, [Record::Gone]);
    // An unsigned (wrong key) request gets nothing at all.
    let stranger = SharedKey::from_secret(&[9u8; 32]).unwrap();
    assert!(fetch(&r.listen, Request::Snapshot, &stranger).is_empty());
}

#[test]
fn php_frames_over_unixgram_are_relayed_a_big_one_too() {
    let mc = Server::start();
    let r = relay_host_over(
        "unixgram://",
        "publish.dgram",
        &mc,
        &["--heartbeat-ms", "100"],
    );
    // The datagram socket is there once memcastd listens for peers; the
    // tap hears the relay once a heartbeat arrives (a PUB drops what it
    // sends before its subscriber is connected).
    let early = drain(&r.tap, &r.key, |got| !got.is_empty());
    assert!(
        early.iter().any(|(_, f)| f.op == Op::Heartbeat),
        "no heartbeat reached the tap"
    );
    let mut sent: Vec<Frame> = (1..=20).map(|i| php_frame(i, i)).collect();
    // A 1 MB session: too big for a datagram, it goes by ipc://PATH.big.
    let mut big = php_frame(21, 21);
    big.value = (0..1_000_000).map(|i| b'a' + (i % 26) as u8).collect();
    sent.insert(10, big);
    for f in &sent {
        r.php.send(&f.seal(&r.key)).unwrap();
    }
    let got = drain(&r.tap, &r.key, |got| {
        got.iter().filter(|(_, f)| f.op == Op::Set).count() == sent.len()
    });
    let mut data: Vec<&Frame> = got
        .iter()
        .map(|(_, f)| f)
        .filter(|f| f.op == Op::Set)
        .collect();
    assert_eq!(
        data.len(),
        sent.len(),
        "relayed {} of {}: {}",
        data.len(),
        sent.len(),
        std::fs::read_to_string(&r.log).unwrap_or_default()
    );
    assert!(
        data.iter().all(|f| f.origin != 77),
        "restamped as the relay's"
    );
    // The small ones keep their order; the big one may come before or after.
    let small: Vec<&Vec<u8>> = data
        .iter()
        .filter(|f| f.value.len() < 100)
        .map(|f| &f.key)
        .collect();
    let expected: Vec<&Vec<u8>> = sent
        .iter()
        .filter(|f| f.value.len() < 100)
        .map(|f| &f.key)
        .collect();
    assert_eq!(small, expected);
    data.retain(|f| f.value.len() >= 100);
    assert_eq!(data.len(), 1);
    assert!(
        data[0].value == sent[10].value,
        "the big session arrived changed"
    );
}

#[test]
fn the_relay_sends_a_lone_frame_at_once_and_a_burst_together_after_its_batch_window() {
    let mc = Server::start();
    // The longest window (100 ms) and rare heartbeats, so what is held shows.
    let mut r = relay_host_with(&mc, &["--batch-us", "100000", "--heartbeat-ms", "6000"]);
    let first = drain(&r.tap, &r.key, |got| !got.is_empty());
    assert!(
        first.iter().any(|(_, f)| f.op == Op::Heartbeat),
        "no heartbeat reached the tap"
    );
    // No batch for a window: a lone frame is handled and sent at once.
    r.php.send(&php_frame(1, 1).seal(&r.key)).unwrap();
    let data = |got: &[(Vec<u8>, Frame)]| data_seqs(got).len();
    let lone = drain(&r.tap, &r.key, |got| data(got) >= 1);
    assert_eq!(data(&lone), 1, "a lone frame is not held");
    let lone_at = std::time::Instant::now();
    // A burst right behind it waits out the window since that batch, then
    // goes out as one batch, before the heartbeat that names its last frame.
    for i in 2..=5 {
        r.php.send(&php_frame(i, i).seal(&r.key)).unwrap();
    }
    let rest = drain(&r.tap, &r.key, |got| data(got) >= 4);
    let held = lone_at.elapsed();
    assert_eq!(data_seqs(&rest), [2, 3, 4, 5], "{rest:?}");
    assert!(
        held >= Duration::from_millis(50),
        "the burst went out {held:?} after the lone frame, within its 100 ms window"
    );
    r._daemon
        .signal("TERM", Duration::from_secs(5))
        .expect("memcastd did not stop");
    let log = std::fs::read_to_string(&r.log).unwrap();
    let stats = log
        .lines()
        .find(|l| l.contains("memcastd stopping"))
        .unwrap_or_else(|| panic!("no final stats in {log}"));
    assert!(stats.contains(" relayed=5 "), "{stats}");
    assert!(stats.contains(" relay_batches=2 "), "{stats}");
}

#[test]
fn frames_held_in_the_relays_window_at_sigterm_are_sent_before_it_exits() {
    let mc = Server::start();
    let mut r = relay_host_with(&mc, &["--batch-us", "100000", "--heartbeat-ms", "6000"]);
    drain(&r.tap, &r.key, |got| !got.is_empty());
    let data = |got: &[(Vec<u8>, Frame)]| data_seqs(got).len();
    // A lone frame goes at once and opens the relay's 100 ms window...
    r.php.send(&php_frame(1, 1).seal(&r.key)).unwrap();
    assert_eq!(data(&drain(&r.tap, &r.key, |got| data(got) >= 1)), 1);
    // ...in which these wait, when SIGTERM comes.
    for i in 2..=5 {
        r.php.send(&php_frame(i, i).seal(&r.key)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    while let Some((_, bytes)) = r.tap.try_recv().unwrap() {
        let f = Frame::open(&bytes, &r.key, 1 << 20).unwrap();
        assert_ne!(f.op, Op::Set, "a frame left inside the window: {f:?}");
    }
    let status = r
        ._daemon
        .signal("TERM", Duration::from_secs(5))
        .expect("memcastd did not stop");
    assert!(status.success());
    let rest = drain(&r.tap, &r.key, |got| data(got) >= 4);
    assert_eq!(
        data_seqs(&rest),
        [2, 3, 4, 5],
        "PHP counted these as sent: {rest:?}"
    );
}

#[test]
fn the_groups_frames_wait_out_their_apply_window_while_the_relay_sends_at_once() {
    let mc = Server::start();
    // A group the test publishes to, beside the relay's unused one.
    let group = Publisher::bind(
        &format!("tcp://127.0.0.1:{}", free_port()),
        &BusOptions::default(),
    )
    .unwrap();
    let r = relay_host_with(
        &mc,
        &[
            "--subscribe",
            group.endpoint(),
            "--batch-us",
            "0",
            "--apply-batch-us",
            "100000",
            "--heartbeat-ms",
            "6000",
        ],
    );
    let mut mc = client(&mc);
    let mut seq = 0;
    let mut from_group = |i: u64| {
        seq += 1;
        let mut f = php_frame(seq, i);
        f.origin = 4242;
        f.version.origin = 4242;
        group.send(&f.seal(&r.key)).unwrap();
    };
    // Subscribed once a frame from the group reached memcached.
    let joined = eventually(Duration::from_secs(10), || {
        from_group(900);
        mc.get(b"memcast.sess.r900").unwrap()
    });
    assert!(joined.is_some(), "the daemon never subscribed");
    drain(&r.tap, &r.key, |got| !got.is_empty());
    // A quiet window, then a lone group frame: applied at once.
    std::thread::sleep(Duration::from_millis(150));
    let lone_at = std::time::Instant::now();
    from_group(1);
    // Polled closely: the times below are what is measured.
    let soon = |mc: &mut Memcached, keys: &[u64]| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let all = keys.iter().all(|i| {
                mc.get(format!("memcast.sess.r{i}").as_bytes())
                    .unwrap()
                    .is_some()
            });
            if all {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    };
    assert!(soon(&mut mc, &[1]), "the lone frame was never applied");
    let lone_in = lone_at.elapsed();
    assert!(
        lone_in < Duration::from_millis(60),
        "a lone frame after a quiet window waited {lone_in:?}"
    );
    // A burst right behind it waits out the 100 ms apply window...
    for i in 2..=5 {
        from_group(i);
    }
    // ...while a write of this host's PHP goes out as it comes.
    let php_at = std::time::Instant::now();
    r.php.send(&php_frame(1, 77).seal(&r.key)).unwrap();
    let out = drain(&r.tap, &r.key, |got| {
        got.iter().any(|(_, f)| f.op == Op::Set)
    });
    let php_in = php_at.elapsed();
    assert!(
        out.iter()
            .any(|(_, f)| f.op == Op::Set && f.key == b"memcast.sess.r77"),
        "the relay never sent PHP's frame"
    );
    assert!(
        php_in < Duration::from_millis(60),
        "the relay held PHP's frame {php_in:?}, in the group's apply window"
    );
    assert!(soon(&mut mc, &[2, 3, 4, 5]), "the burst was never applied");
    let burst_in = lone_at.elapsed();
    assert!(
        burst_in >= Duration::from_millis(90),
        "the burst was applied {burst_in:?} after the lone frame, inside its 100 ms window"
    );
}

#[test]
fn a_gap_is_repaired_from_the_origins_replay_ring() {
    let mc_a = Server::start();
    let mc_b = Server::start();
    let r = relay_host(&mc_a);
    // Host B subscribes to a forwarder the test controls, which loses frames 4..=6.
    let forward_port = free_port();
    let forward = Publisher::bind(
        &format!("tcp://127.0.0.1:{forward_port}"),
        &BusOptions::default(),
    )
    .unwrap();
    let dir = TempDir::new("gap");
    let args: Vec<String> = [
        "--memcached",
        &mc_b.addr(),
        "--subscribe",
        &format!("tcp://127.0.0.1:{forward_port}"),
        "--key-file",
        &r.key_file,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut b = memcastd(&args, &dir.path.join("b.log"));
    let mut mc = client(&mc_b);
    // Until a probe (from another origin) reaches B's memcached, B has not subscribed yet.
    let mut probe = php_frame(1, 999);
    probe.origin = 4242;
    let joined = eventually(Duration::from_secs(10), || {
        forward.send(&probe.seal(&r.key)).unwrap();
        mc.get(b"memcast.sess.r999").unwrap()
    });
    assert!(joined.is_some(), "B never subscribed");
    // The relay's heartbeats are flowing once the tap sees one.
    drain(&r.tap, &r.key, |got| !got.is_empty());
    for i in 1..=10 {
        r.php.send(&php_frame(i, i).seal(&r.key)).unwrap();
    }
    for (bytes, frame) in drain(&r.tap, &r.key, ten_and_a_heartbeat) {
        if !(frame.op == Op::Set && (4..=6).contains(&frame.seq)) {
            forward.send(&bytes).unwrap();
        }
    }
    let all = eventually(Duration::from_secs(10), || {
        (1..=10)
            .all(|i| {
                mc.get(format!("memcast.sess.r{i}").as_bytes())
                    .unwrap()
                    .is_some()
            })
            .then_some(())
    });
    let log = || std::fs::read_to_string(dir.path.join("b.log")).unwrap_or_default();
    assert!(
        all.is_some(),
        "B never repaired the lost frames:\n{}",
        log()
    );
    b.signal("TERM", Duration::from_secs(5))
        .expect("memcastd B did not stop");
    let stats = log();
    assert!(stats.contains("gaps=1 missing_frames=3"), "{stats}");
    assert!(stats.contains("frames_repaired=3"), "{stats}");
}

#[test]
fn resync_at_startup_fills_from_a_peer_without_overwriting_newer_writes() {
    let mc_a = Server::start();
    let mc_c = Server::start();
    let r = relay_host(&mc_a);
    let mut a = client(&mc_a);
    let mut c = client(&mc_c);
    let v = |millis| Version {
        millis,
        counter: 0,
        origin: 5,
    };
    for i in 0..300u64 {
        let value = StoredValue::live(v(1000 + i), format!("a{i}").as_bytes()).encode();
        a.set(format!("memcast.sess.s{i}").as_bytes(), &value, 3600)
            .unwrap();
    }
    a.set(
        b"memcast.sess.gone",
        &StoredValue::tombstone(v(5000)).encode(),
        300,
    )
    .unwrap();
    a.set(b"not-memcast", b"plain value", 3600).unwrap();
    // C already holds a newer version of one session: the snapshot must not win.
    c.set(
        b"memcast.sess.s7",
        &StoredValue::live(v(9999), b"newer on C").encode(),
        3600,
    )
    .unwrap();
    // C created "real" from a wrong miss (newer, empty): A's real session,
    // though older, takes it back.
    a.set(
        b"memcast.sess.real",
        &StoredValue::live(v(1500), b"real on A").encode(),
        3600,
    )
    .unwrap();
    c.set(
        b"memcast.sess.real",
        &StoredValue::created(v(9000), b"").encode(),
        3600,
    )
    .unwrap();
    let dir = TempDir::new("resync");
    let args: Vec<String> = [
        "--memcached",
        &mc_c.addr(),
        "--subscribe",
        &format!("tcp://127.0.0.1:{}", free_port()),
        "--key-file",
        &r.key_file,
        "--peer",
        &format!("127.0.0.1:{}", free_port()),
        "--peer",
        &r.listen,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut daemon = memcastd(&args, &dir.path.join("c.log"));
    let done = eventually(Duration::from_secs(10), || {
        c.get(b"memcast.sess.s299").unwrap()
    });
    let log = || std::fs::read_to_string(dir.path.join("c.log")).unwrap_or_default();
    assert!(
        done.is_some(),
        "C was not refilled (the first peer is dead, the second is not):\n{}",
        log()
    );
    std::thread::sleep(Duration::from_millis(300));
    for i in (0..300u64).filter(|i| *i != 7) {
        let raw = c
            .get(format!("memcast.sess.s{i}").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            StoredValue::parse(&raw).unwrap().data,
            format!("a{i}").as_bytes()
        );
    }
    let raw = c.get(b"memcast.sess.s7").unwrap().unwrap();
    assert_eq!(StoredValue::parse(&raw).unwrap().data, b"newer on C");
    let raw = c.get(b"memcast.sess.real").unwrap().unwrap();
    assert_eq!(StoredValue::parse(&raw).unwrap().data, b"real on A");
    assert!(
        StoredValue::parse(&c.get(b"memcast.sess.gone").unwrap().unwrap())
            .unwrap()
            .tombstone
    );
    assert_eq!(
        c.get(b"not-memcast").unwrap(),
        None,
        "only memcast's values are copied"
    );
    // The remaining TTL travels with the entry.
    let ttl_left = {
        let mut ttl = None;
        c.metadump(|m| {
            if m.key == b"memcast.sess.s1" {
                ttl = m.ttl_at(unix_millis() / 1000);
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        ttl.unwrap()
    };
    assert!((3500..=3600).contains(&ttl_left), "ttl {ttl_left}");
    daemon.signal("TERM", Duration::from_secs(5)).unwrap();
    let stats = log();
    assert!(stats.contains("resyncs=1 resync_entries=302"), "{stats}");
}

#[test]
fn verify_reports_identical_and_differing_replicas() {
    let a = Server::start();
    let b = Server::start();
    let v = Version {
        millis: 7,
        counter: 0,
        origin: 1,
    };
    for s in [&a, &b] {
        let mut m = client(s);
        m.set(
            b"memcast.sess.x",
            &StoredValue::live(v, b"same").encode(),
            60,
        )
        .unwrap();
    }
    // A tombstone and an absent key are both "no session".
    client(&a)
        .set(b"memcast.sess.t", &StoredValue::tombstone(v).encode(), 60)
        .unwrap();
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_memcastd"))
            .args(["verify", "--peer", &a.addr(), "--peer", &b.addr()])
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("1 keys") && text.contains("0 differences"),
        "{text}"
    );
    client(&b)
        .set(
            b"memcast.sess.x",
            &StoredValue::live(v, b"other").encode(),
            60,
        )
        .unwrap();
    client(&b)
        .set(
            b"memcast.sess.y",
            &StoredValue::live(v, b"only b").encode(),
            60,
        )
        .unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("differs memcast.sess.x") && text.contains("differs memcast.sess.y"),
        "{text}"
    );
    assert!(text.contains("2 differences"), "{text}");
}

/// Relay A (TCP fan-out) named `web1`, and subscriber B serving metrics.
fn relay_named(dir: &TempDir, mc: &Server, fanout: &str, name: &str) -> Proc {
    let key_file = dir.path.join("key");
    let args: Vec<String> = [
        "--memcached",
        &mc.addr(),
        "--subscribe",
        &format!("tcp://127.0.0.1:{}", free_port()),
        "--key-file",
        key_file.to_str().unwrap(),
        "--relay",
        &format!("ipc://{}/{name}.sock", dir.path.display()),
        "--listen",
        fanout,
        "--host-name",
        name,
        "--heartbeat-ms",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    memcastd(&args, &dir.path.join(format!("{name}.log")))
}

#[test]
fn origins_are_labelled_by_host_name_stable_across_a_relay_restart() {
    let dir = TempDir::new("host-labels");
    let key_file = dir.key_file("key", 6);
    let (mc_a, mc_b) = (Server::start(), Server::start());
    let fanout = format!("tcp://127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--memcached",
        &mc_b.addr(),
        "--subscribe",
        &fanout,
        "--key-file",
        key_file.to_str().unwrap(),
        "--metrics",
        &metrics,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _b = memcastd(&args, &dir.path.join("b.log"));
    let origins_of = |host: &str| -> Vec<String> {
        let Ok(page) = memcastd::metrics::scrape(&metrics, Duration::from_secs(2)) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = memcastd::metrics::parse(&page)
            .into_iter()
            .filter(|s| s.name == "memcast_origin_last_seq")
            .filter(|s| s.labels.iter().any(|(k, v)| k == "host" && v == host))
            .filter_map(|s| s.labels.into_iter().find(|(k, _)| k == "origin"))
            .map(|(_, v)| v)
            .collect();
        ids.sort();
        ids
    };
    let mut a = relay_named(&dir, &mc_a, &fanout, "web1");
    let first = eventually(Duration::from_secs(10), || {
        let ids = origins_of("web1");
        (ids.len() == 1).then_some(ids)
    })
    .expect("B never labelled A's origin web1");
    // A restarted relay is a new origin id, under the same host name.
    a.kill();
    let _a = relay_named(&dir, &mc_a, &fanout, "web1");
    let both = eventually(Duration::from_secs(10), || {
        let ids = origins_of("web1");
        (ids.len() == 2).then_some(ids)
    })
    .expect("the restarted relay was not labelled web1");
    assert!(both.contains(&first[0]), "{both:?} {first:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_memcastd"))
        .args(["status", "--metrics", &metrics])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  host  "), "{text}");
    assert_eq!(text.matches("\n  web1 ").count(), 2, "{text}");
}

/// Direct publishing (no relay): PHP workers keep no ring, so what one host
/// missed of a worker's frames comes from a peer that heard them. Host B's
/// multicast delivers frames 1-3 of a worker, then stalls: nothing tells B
/// it lacks 4-10 (no gap, no heartbeat), and with anti-entropy off only its
/// peer A, which heard all ten, can bring them; it does within seconds.
#[test]
fn frames_of_a_worker_one_host_missed_come_from_a_peer_that_heard_them() {
    let mc_a = Server::start();
    let mc_b = Server::start();
    let dir = TempDir::new("heard");
    let key_file = dir.key_file("key", 5);
    let key = SharedKey::from_file(&key_file).unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let to_a =
        Publisher::bind(&format!("tcp://127.0.0.1:{port_a}"), &BusOptions::default()).unwrap();
    let to_b =
        Publisher::bind(&format!("tcp://127.0.0.1:{port_b}"), &BusOptions::default()).unwrap();
    let (listen_a, listen_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let host = |mc: &Server, port: u16, listen: &str, peer: &str, log: &str| {
        let args: Vec<String> = [
            "--memcached",
            &mc.addr(),
            "--subscribe",
            &format!("tcp://127.0.0.1:{port}"),
            "--key-file",
            key_file.to_str().unwrap(),
            "--listen",
            listen,
            "--peer",
            peer,
            "--anti-entropy-interval",
            "0",
            "--resync-interval",
            "300",
            // No startup snapshot that would bring the frames another way.
            "--resync-on-start",
            "false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        memcastd(&args, &dir.path.join(log))
    };
    let mut a = host(&mc_a, port_a, &listen_a, &listen_b, "a.log");
    let mut b = host(&mc_b, port_b, &listen_b, &listen_a, "b.log");
    let (mut ca, mut cb) = (client(&mc_a), client(&mc_b));
    let mut probe = php_frame(1, 999);
    probe.origin = 4242;
    let joined = eventually(Duration::from_secs(10), || {
        to_a.send(&probe.seal(&key)).unwrap();
        to_b.send(&probe.seal(&key)).unwrap();
        (ca.get(b"memcast.sess.r999").unwrap().is_some()
            && cb.get(b"memcast.sess.r999").unwrap().is_some())
        .then_some(())
    });
    assert!(joined.is_some(), "A and B never both subscribed");
    let started = std::time::Instant::now();
    for i in 1..=10 {
        let sealed = php_frame(i, i).seal(&key);
        to_a.send(&sealed).unwrap();
        if i <= 3 {
            to_b.send(&sealed).unwrap();
        }
    }
    let holds_all = |c: &mut Memcached| {
        (1..=10).all(|i| {
            c.get(format!("memcast.sess.r{i}").as_bytes())
                .unwrap()
                .is_some()
        })
    };
    let log = |name: &str| std::fs::read_to_string(dir.path.join(name)).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || holds_all(&mut ca).then_some(())).is_some(),
        "A did not apply what it heard:\n{}",
        log("a.log")
    );
    let whole = eventually(Duration::from_secs(10), || holds_all(&mut cb).then_some(()));
    let took = started.elapsed();
    assert!(
        whole.is_some(),
        "B never got frames 4-10 from A:\n{}",
        log("b.log")
    );
    println!("B held all ten frames {took:?} after they were sent");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for d in [&mut a, &mut b] {
        d.signal("TERM", Duration::from_secs(5))
            .expect("memcastd did not stop");
    }
    let stats = log("b.log");
    assert!(stats.contains("frames_repaired=7"), "{stats}");
    assert!(stats.contains("anti_entropy_rounds=0"), "{stats}");
}
