//! The memcached store against real memcached processes.

use std::ops::ControlFlow;
use std::time::Duration;

use memcast_core::memcached::{Expect, Reply};
use memcast_core::{
    apply_if_newer, Applied, Memcached, ServerAddr, StoreError, StoredValue, Timeouts, Version,
};
use memcast_testkit as kit;

fn client(mc: &kit::Memcached) -> Memcached {
    Memcached::new(ServerAddr::parse(&mc.addr()).unwrap(), Timeouts::default())
}

fn v(millis: u64, origin: u64) -> Version {
    Version {
        millis,
        counter: 0,
        origin,
    }
}

#[test]
fn set_get_gets_cas_touch_round_trip() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    assert_eq!(mc.get(b"k").unwrap(), None);
    assert_eq!(mc.set(b"k", b"a|b\r\nc", 60).unwrap(), Reply::Stored);
    assert_eq!(mc.get(b"k").unwrap().as_deref(), Some(&b"a|b\r\nc"[..]));
    let item = mc.gets(b"k").unwrap().unwrap();
    assert_eq!(mc.cas(b"k", b"new", 60, item.cas).unwrap(), Reply::Stored);
    assert_eq!(mc.cas(b"k", b"stale", 60, item.cas).unwrap(), Reply::Exists);
    assert_eq!(mc.add(b"k", b"x", 60).unwrap(), Reply::NotStored);
    assert!(mc.touch(b"k", 60).unwrap());
    assert!(!mc.touch(b"missing", 60).unwrap());
    assert_eq!(mc.delete(b"k").unwrap(), Reply::Stored);
    assert_eq!(mc.get(b"k").unwrap(), None);
}

#[test]
fn newer_version_replaces_older_and_older_is_skipped() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let key = b"memcast.sess.order";
    let old = StoredValue::live(v(100, 1), b"old");
    let new = StoredValue::live(v(200, 1), b"new");
    assert_eq!(
        apply_if_newer(&mut mc, key, &new, 60, Expect::Unknown).unwrap(),
        Applied::Stored
    );
    assert_eq!(
        apply_if_newer(&mut mc, key, &old, 60, Expect::Unknown).unwrap(),
        Applied::SkippedOlder { held: v(200, 1) }
    );
    // The same version again is a duplicate frame: skipped, nothing changes.
    assert!(matches!(
        apply_if_newer(&mut mc, key, &new, 60, Expect::Unknown).unwrap(),
        Applied::SkippedOlder { .. }
    ));
    let held = mc.get(key).unwrap().unwrap();
    assert_eq!(StoredValue::parse(&held).unwrap().data, b"new");
}

#[test]
fn stale_expectation_falls_back_to_reading_again() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let key = b"memcast.sess.race";
    // The writer believed the key missing, but a newer write got there first.
    apply_if_newer(
        &mut mc,
        key,
        &StoredValue::live(v(300, 2), b"theirs"),
        60,
        Expect::Unknown,
    )
    .unwrap();
    let ours = StoredValue::live(v(250, 1), b"ours");
    assert!(matches!(
        apply_if_newer(&mut mc, key, &ours, 60, Expect::Missing).unwrap(),
        Applied::SkippedOlder { .. }
    ));
    // And with a stale CAS token the newer write still wins.
    let item = mc.gets(key).unwrap().unwrap();
    apply_if_newer(
        &mut mc,
        key,
        &StoredValue::live(v(400, 2), b"later"),
        60,
        Expect::Unknown,
    )
    .unwrap();
    let newest = StoredValue::live(v(500, 1), b"newest");
    assert_eq!(
        apply_if_newer(&mut mc, key, &newest, 60, Expect::Cas(item.cas)).unwrap(),
        Applied::Stored
    );
    let held = mc.get(key).unwrap().unwrap();
    assert_eq!(StoredValue::parse(&held).unwrap().data, b"newest");
}

#[test]
fn concurrent_writers_converge_on_the_greatest_version() {
    let server = kit::Memcached::start();
    let addr = server.addr();
    let key = b"memcast.sess.concurrent";
    let threads: Vec<_> = (0..4u64)
        .map(|origin| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut mc = Memcached::new(ServerAddr::parse(&addr).unwrap(), Timeouts::default());
                for i in 0..200u64 {
                    let data = format!("origin {origin} write {i}");
                    let value = StoredValue::live(v(1000 + i, origin), data.as_bytes());
                    apply_if_newer(&mut mc, key, &value, 60, Expect::Unknown).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut mc = client(&server);
    let held = mc.get(key).unwrap().unwrap();
    let held = StoredValue::parse(&held).unwrap();
    assert_eq!(held.version, v(1199, 3));
    assert_eq!(held.data, b"origin 3 write 199");
}

#[test]
fn tombstone_blocks_an_older_late_write() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let key = b"memcast.sess.destroyed";
    apply_if_newer(
        &mut mc,
        key,
        &StoredValue::tombstone(v(500, 1)),
        60,
        Expect::Unknown,
    )
    .unwrap();
    let late = StoredValue::live(v(400, 2), b"resurrected?");
    assert!(matches!(
        apply_if_newer(&mut mc, key, &late, 60, Expect::Unknown).unwrap(),
        Applied::SkippedOlder { .. }
    ));
    let held = mc.get(key).unwrap().unwrap();
    assert!(StoredValue::parse(&held).unwrap().tombstone);
}

#[test]
fn keys_that_break_the_protocol_never_reach_the_socket() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    for key in [&b"a b"[..], b"a\r\nflush_all", b"", &[b'k'; 251]] {
        assert!(matches!(
            mc.set(key, b"x", 60),
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(mc.get(key), Err(StoreError::InvalidKey(_))));
    }
    assert!(
        !mc.is_connected(),
        "an invalid key must fail before connecting"
    );
}

#[test]
fn dead_server_is_a_server_failure_that_names_it() {
    let mut server = kit::Memcached::start();
    let addr = server.addr();
    let mut mc = client(&server);
    mc.set(b"k", b"v", 60).unwrap();
    server.kill();
    let err = mc.get(b"k").unwrap_err();
    assert!(err.is_server_failure(), "{err}");
    let err = mc.get(b"k").unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[test]
fn silent_server_times_out_with_the_configured_timeout() {
    // A listener that accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let timeouts = Timeouts {
        connect: Duration::from_millis(200),
        io: Duration::from_millis(80),
    };
    let mut mc = Memcached::new(ServerAddr::parse(&addr).unwrap(), timeouts);
    let err = mc.get(b"k").unwrap_err();
    assert!(matches!(err, StoreError::Timeout { ms: 80, .. }), "{err}");
    assert!(err.to_string().contains("timed out after 80 ms"), "{err}");
}

#[test]
fn oversized_value_is_a_server_error_not_a_dead_server() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let big = vec![b'x'; 5 * 1024 * 1024];
    let err = mc.set(b"big", &big, 60).unwrap_err();
    assert!(matches!(err, StoreError::Server { .. }), "{err}");
    assert!(!err.is_server_failure());
    assert_eq!(mc.set(b"small", b"ok", 60).unwrap(), Reply::Stored);
}

/// A server error that answers one command of a pipeline leaves the replies
/// after it unread; the next command must not take them for its own.
#[test]
fn a_server_error_inside_a_pipeline_does_not_answer_the_next_command() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    assert_eq!(mc.set(b"other", b"its value", 60).unwrap(), Reply::Stored);
    let big = vec![b'x'; 5 * 1024 * 1024];
    let ops = [
        memcast_core::memcached::StoreOp {
            key: b"big",
            value: &big,
            ttl: 60,
            cas: None,
        },
        memcast_core::memcached::StoreOp {
            key: b"after",
            value: b"stored",
            ttl: 60,
            cas: None,
        },
    ];
    let err = mc.store_many_returning_cas(&ops).unwrap_err();
    assert!(matches!(err, StoreError::Server { .. }), "{err}");
    // Without a clean connection this read got the second store's `HD`.
    assert_eq!(
        mc.get(b"other").unwrap().as_deref(),
        Some(&b"its value"[..])
    );
    assert_eq!(mc.gets_checking_warm(b"missing").unwrap(), (None, None));
    // The client drops the connection at the error: whether memcached
    // still read the command after it (it first swallows the 5 MB) is a
    // race, but never may that key hold anything else.
    let after = mc.get(b"after").unwrap();
    assert!(
        matches!(after.as_deref(), None | Some(b"stored")),
        "{after:?}"
    );
}

#[test]
fn get_multi_returns_present_keys_only() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    mc.set(b"a", b"1", 60).unwrap();
    mc.set(b"c", b"3\r\n3", 60).unwrap();
    let got = mc.get_multi(&[b"a", b"b", b"c"]).unwrap();
    assert_eq!(
        got,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), b"3\r\n3".to_vec())
        ]
    );
    assert!(mc.get_multi(&[]).unwrap().is_empty());
}

#[test]
fn metadump_enumerates_every_key_with_its_expiry() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    for i in 0..500 {
        mc.set(format!("memcast.sess.k{i}").as_bytes(), b"v", 600)
            .unwrap();
    }
    mc.set(b"forever", b"v", 0).unwrap();
    let mut seen = Vec::new();
    mc.metadump(|m| {
        seen.push(m);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen.len(), 501);
    let now = memcast_core::unix_millis() / 1000;
    let k = seen.iter().find(|m| m.key == b"memcast.sess.k7").unwrap();
    assert!((590..=600).contains(&k.ttl_at(now).unwrap()), "{k:?}");
    assert_eq!(
        seen.iter().find(|m| m.key == b"forever").unwrap().expires,
        None
    );
    // The connection is still usable afterwards, and stopping early is fine.
    let mut n = 0;
    mc.metadump(|_| {
        n += 1;
        if n < 10 {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })
    .unwrap();
    assert_eq!(n, 10);
    assert_eq!(mc.get(b"forever").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn metadump_right_after_a_burst_of_writes_sees_every_key() {
    // Right after many writes memcached grows its hash table and moves items
    // between LRUs in the background; the dump must still list every key.
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let value = vec![b'v'; 2000];
    for i in 0..50_000 {
        mc.set(format!("memcast.sess.burst{i}").as_bytes(), &value, 600)
            .unwrap();
    }
    for round in 0..3 {
        let mut n = 0;
        mc.metadump(|m| {
            n += usize::from(m.key.starts_with(b"memcast.sess.burst"));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(n, 50_000, "round {round}");
    }
}

#[test]
fn delete_if_unchanged_removes_only_the_value_it_read() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    mc.set(b"lock", b"mine", 60).unwrap();
    let item = mc.gets(b"lock").unwrap().unwrap();
    mc.set(b"lock", b"theirs", 60).unwrap();
    assert_eq!(
        mc.delete_if_unchanged(b"lock", item.cas).unwrap(),
        Reply::Exists
    );
    assert_eq!(mc.get(b"lock").unwrap().as_deref(), Some(&b"theirs"[..]));
    let item = mc.gets(b"lock").unwrap().unwrap();
    assert_eq!(
        mc.delete_if_unchanged(b"lock", item.cas).unwrap(),
        Reply::Stored
    );
    assert_eq!(mc.get(b"lock").unwrap(), None);
    assert_eq!(mc.add(b"lock", b"next", 60).unwrap(), Reply::Stored);
}

/// The warm sentinel carries memcached's eviction count as memcastd last
/// saw it: a miss is vouched for only while memcached's own count is the
/// same (evictions since memcastd's last look undo the vouch at once).
#[test]
fn the_sentinel_vouches_only_while_the_eviction_count_it_carries_holds() {
    use memcast_core::memcached::Vouch;
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    assert_eq!(mc.gets_checking_warm(b"sess").unwrap(), (None, None));
    let current = |mc: &mut Memcached| -> u64 {
        mc.stats()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "evictions")
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let now = current(&mut mc);
    for (count, holds) in [(now, true), (now + 3, false)] {
        let value = Vouch::sentinel_value(1_700_000_000_000, count);
        mc.set(b"memcast:warm", value.as_bytes(), 60).unwrap();
        let (item, vouch) = mc.gets_checking_warm(b"sess").unwrap();
        assert_eq!(item, None);
        let vouch = vouch.expect("the sentinel is there");
        assert_eq!(vouch.evictions, Some(count));
        assert_eq!(mc.still_complete(vouch).unwrap(), holds, "{value}");
    }
    // Set by an older memcastd, or by hand: no count to check.
    mc.set(b"memcast:warm", b"1", 60).unwrap();
    let (_, vouch) = mc.gets_checking_warm(b"sess").unwrap();
    assert_eq!(vouch, Some(Vouch { evictions: None }));
    assert!(mc.still_complete(vouch.unwrap()).unwrap());
}

#[test]
fn a_lock_and_the_read_take_one_round_trip_and_release_only_our_lock() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let mut other = client(&server);
    mc.set(b"sess", b"data|x", 60).unwrap();
    let (cas, item, warm) = mc
        .lock_and_gets_checking_warm(b"sess.lock", b"tok1", 30, b"sess")
        .unwrap();
    let cas = cas.expect("the lock was free");
    assert_eq!(item.unwrap().value, b"data|x");
    assert!(warm.is_none(), "no sentinel set in this memcached");
    // Held: a second taker gets no lock (the read still answers).
    let (none, item, _) = other
        .lock_and_gets_checking_warm(b"sess.lock", b"tok2", 30, b"sess")
        .unwrap();
    assert_eq!(none, None);
    assert!(item.is_some());
    assert_eq!(mc.get(b"sess.lock").unwrap().as_deref(), Some(&b"tok1"[..]));
    // Released with its CAS; a stale CAS releases nothing.
    assert!(!mc.delete_if_cas(b"sess.lock", cas + 1000).unwrap());
    assert!(mc.delete_if_cas(b"sess.lock", cas).unwrap());
    assert_eq!(mc.get(b"sess.lock").unwrap(), None);
    // A lock that expired and was taken by someone else is theirs to release.
    mc.set(b"memcast:warm", b"1", 0).unwrap();
    let (mine, _, warm) = mc
        .lock_and_gets_checking_warm(b"sess.lock", b"tok3", 30, b"sess")
        .unwrap();
    assert!(warm.is_some());
    other.delete(b"sess.lock").unwrap(); // "expired"
    let (theirs, _, _) = other
        .lock_and_gets_checking_warm(b"sess.lock", b"tok4", 30, b"sess")
        .unwrap();
    assert!(theirs.is_some());
    assert!(!mc.delete_if_cas(b"sess.lock", mine.unwrap()).unwrap());
    assert_eq!(mc.get(b"sess.lock").unwrap().as_deref(), Some(&b"tok4"[..]));
    assert!(matches!(
        mc.lock_and_gets_checking_warm(b"bad key", b"t", 30, b"sess"),
        Err(StoreError::InvalidKey(_))
    ));
}

#[test]
fn a_cluster_lock_reads_and_leaves_its_write_mark_in_the_lock_round_trips() {
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let mut other = client(&server);
    mc.set(b"sess", b"data|x", 60).unwrap();
    let (cas, item, _, mark) = mc
        .lock_and_gets_marked(b"sess.lock", b"tok1", 30, b"sess", b"sess.w")
        .unwrap();
    assert!(item.is_some());
    assert_eq!(mark, None, "nothing written under the lock yet");
    // Released with the mark of this request's write, one round trip.
    assert!(mc
        .release_marking(b"sess.lock", cas.unwrap(), b"sess.w", b"v1 host-a", 60)
        .unwrap());
    assert_eq!(mc.get(b"sess.lock").unwrap(), None);
    let (cas, _, _, mark) = other
        .lock_and_gets_marked(b"sess.lock", b"tok2", 30, b"sess", b"sess.w")
        .unwrap();
    assert_eq!(mark.as_deref(), Some(&b"v1 host-a"[..]));
    // A lock taken over after it expired is not released by its first
    // owner, though the mark is still written.
    other.delete(b"sess.lock").unwrap();
    let (theirs, _, _, _) = mc
        .lock_and_gets_marked(b"sess.lock", b"tok3", 30, b"sess", b"sess.w")
        .unwrap();
    assert!(theirs.is_some());
    assert!(!other
        .release_marking(b"sess.lock", cas.unwrap(), b"sess.w", b"v2 host-b", 60)
        .unwrap());
    assert_eq!(mc.get(b"sess.lock").unwrap().as_deref(), Some(&b"tok3"[..]));
}

#[test]
fn a_batch_applies_the_newest_write_per_key_in_two_round_trips() {
    use memcast_core::replica::{apply_batch, CasCache, Outcome};
    use memcast_core::{Frame, Op};
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let frame = |op, key: &str, value: &[u8], millis| Frame {
        op,
        origin: 1,
        epoch: 1,
        seq: 0,
        version: v(millis, 1),
        ttl: 600,
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
    };
    // Held already: "b" at 50 (newer than the batch's), "c" at 10.
    apply_if_newer(
        &mut mc,
        b"b",
        &StoredValue::live(v(50, 1), b"held b"),
        600,
        Expect::Unknown,
    )
    .unwrap();
    apply_if_newer(
        &mut mc,
        b"c",
        &StoredValue::live(v(10, 1), b"held c"),
        600,
        Expect::Unknown,
    )
    .unwrap();
    let frames = vec![
        frame(Op::Set, "a", b"a1", 20),
        frame(Op::Set, "a", b"a3", 40), // newest of three for "a"
        frame(Op::Set, "a", b"a2", 30),
        frame(Op::Set, "b", b"b1", 20),  // older than held
        frame(Op::Delete, "c", b"", 20), // newer than held: a tombstone
        frame(Op::Touch, "b", b"", 1),
        frame(Op::Heartbeat, "", b"", 0),
    ];
    let mut cache = CasCache::new(1000);
    let out = apply_batch(&mut mc, &frames, &mut cache).unwrap();
    assert_eq!(
        out,
        vec![
            Outcome::SkippedOlder,
            Outcome::Stored,
            Outcome::SkippedOlder,
            Outcome::SkippedOlder,
            Outcome::Stored,
            Outcome::Touched,
            Outcome::Nothing,
        ]
    );
    let read = |mc: &mut Memcached, k: &[u8]| {
        let raw = mc.get(k).unwrap().unwrap();
        let s = StoredValue::parse(&raw).unwrap();
        (s.version.millis, s.tombstone, s.data.to_vec())
    };
    assert_eq!(read(&mut mc, b"a"), (40, false, b"a3".to_vec()));
    assert_eq!(read(&mut mc, b"b"), (50, false, b"held b".to_vec()));
    assert_eq!(read(&mut mc, b"c"), (20, true, Vec::new()));
    // 300 frames over 100 keys: every key ends at its newest.
    let many: Vec<Frame> = (0..300u64)
        .map(|i| {
            frame(
                Op::Set,
                &format!("k{}", i % 100),
                format!("{i}").as_bytes(),
                100 + i,
            )
        })
        .collect();
    apply_batch(&mut mc, &many, &mut cache).unwrap();
    for k in 0..100u64 {
        assert_eq!(
            read(&mut mc, format!("k{k}").as_bytes()).2,
            format!("{}", 200 + k).into_bytes()
        );
    }
}

#[test]
fn a_write_that_began_from_a_miss_never_replaces_a_live_session() {
    use memcast_core::apply_create;
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let key = b"memcast.sess.real";
    let real = StoredValue::live(v(100, 1), b"user|s:5:\"alice\";");
    apply_if_newer(&mut mc, key, &real, 60, Expect::Unknown).unwrap();
    // An empty session started from a wrong miss, newer by the clock: it loses.
    let empty = StoredValue::live(v(200, 2), b"");
    assert_eq!(
        apply_create(&mut mc, key, &empty, 60, Expect::Missing).unwrap(),
        Applied::Conflict { held: v(100, 1) }
    );
    assert_eq!(
        StoredValue::parse(&mc.get(key).unwrap().unwrap())
            .unwrap()
            .data,
        b"user|s:5:\"alice\";"
    );
    // The same create again (sent twice, or met by a snapshot of itself):
    // old news, not a conflict.
    assert_eq!(
        apply_create(&mut mc, key, &real, 60, Expect::Unknown).unwrap(),
        Applied::SkippedOlder { held: v(100, 1) }
    );
    // Where nothing is held, it is stored.
    let fresh = b"memcast.sess.fresh";
    assert_eq!(
        apply_create(&mut mc, fresh, &empty, 60, Expect::Unknown).unwrap(),
        Applied::Stored
    );
    // Over a tombstone: only a newer create, so a late, older one cannot
    // bring a destroyed session back.
    let gone = b"memcast.sess.gone";
    apply_if_newer(
        &mut mc,
        gone,
        &StoredValue::tombstone(v(150, 1)),
        60,
        Expect::Unknown,
    )
    .unwrap();
    assert_eq!(
        apply_create(
            &mut mc,
            gone,
            &StoredValue::live(v(120, 2), b"old"),
            60,
            Expect::Unknown
        )
        .unwrap(),
        Applied::SkippedOlder { held: v(150, 1) }
    );
    assert_eq!(
        apply_create(
            &mut mc,
            gone,
            &StoredValue::live(v(160, 2), b"new"),
            60,
            Expect::Unknown
        )
        .unwrap(),
        Applied::Stored
    );
}

/// A create that won somewhere (a memcached that had lost the session) is
/// stored marked; the real session, though older, takes its place back
/// wherever it arrives: one frame at a time, in a batch, or as a snapshot's
/// frame. And a created value spreads as a create, so it cannot take the
/// place of a real session on the way.
#[test]
fn a_real_session_takes_back_the_place_a_wrong_create_took() {
    use memcast_core::apply_create;
    use memcast_core::replica::{apply_batch, apply_frame, frame_for_stored, CasCache, Outcome};
    use memcast_core::Op;
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let real = StoredValue::live(v(100, 1), b"user|s:5:\"alice\";");
    let empty = StoredValue::live(v(200, 2), b"");
    for (n, key) in [b"memcast.sess.one".as_slice(), b"memcast.sess.two"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            apply_create(&mut mc, key, &empty, 60, Expect::Unknown).unwrap(),
            Applied::Stored
        );
        let raw = mc.get(key).unwrap().unwrap();
        let held = StoredValue::parse(&raw).unwrap();
        assert!(held.created);
        let spread = frame_for_stored(key, &raw, 60, 9, 1).unwrap();
        assert_eq!(spread.op, Op::Create);
        let back = frame_for_stored(key, &real.encode(), 60, 9, 1).unwrap();
        assert_eq!(back.op, Op::Set);
        let outcome = if n == 0 {
            apply_frame(&mut mc, &back).unwrap()
        } else {
            apply_batch(&mut mc, std::slice::from_ref(&back), &mut CasCache::new(10)).unwrap()[0]
        };
        assert_eq!(outcome, Outcome::Stored);
        let now = mc.get(key).unwrap().unwrap();
        assert_eq!(StoredValue::parse(&now), Some(real));
        // The create, arriving again, loses to it.
        assert_eq!(apply_frame(&mut mc, &spread).unwrap(), Outcome::Conflict);
    }
}

#[test]
fn a_batch_applies_creates_in_order_and_counts_the_ones_that_lose() {
    use memcast_core::replica::{apply_batch, CasCache, Outcome};
    use memcast_core::{Frame, Op};
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    let frame = |op, key: &str, value: &[u8], millis| Frame {
        op,
        origin: 1,
        epoch: 1,
        seq: 0,
        version: v(millis, 1),
        ttl: 600,
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
    };
    apply_if_newer(
        &mut mc,
        b"real",
        &StoredValue::live(v(10, 1), b"held"),
        600,
        Expect::Unknown,
    )
    .unwrap();
    let frames = vec![
        frame(Op::Create, "real", b"empty", 50), // a live session is there: loses
        frame(Op::Create, "new", b"n1", 20),     // nothing there: stored
        frame(Op::Set, "new", b"n2", 30),        // the same session's next write
        frame(Op::Set, "other", b"o1", 20),
        frame(Op::Create, "other", b"o2", 40), // after a live write in the batch: loses
    ];
    let out = apply_batch(&mut mc, &frames, &mut CasCache::new(100)).unwrap();
    assert_eq!(
        out,
        vec![
            Outcome::Conflict,
            Outcome::Stored,
            Outcome::Stored,
            Outcome::Stored,
            Outcome::Conflict
        ]
    );
    let data = |mc: &mut Memcached, k: &[u8]| {
        StoredValue::parse(&mc.get(k).unwrap().unwrap())
            .unwrap()
            .data
            .to_vec()
    };
    assert_eq!(data(&mut mc, b"real"), b"held");
    assert_eq!(data(&mut mc, b"new"), b"n2");
    assert_eq!(data(&mut mc, b"other"), b"o1");
}

#[test]
fn a_memcached_on_a_unix_socket_is_reached_by_its_path() {
    let dir = kit::TempDir::new("unix-socket");
    let socket = dir.path.join("memcached.sock");
    let mut cmd = std::process::Command::new(kit::memcached_binary());
    cmd.arg("-s")
        .arg(&socket)
        .args(kit::MEMCACHED_ARGS)
        .args(kit::user_arg())
        .stdout(std::process::Stdio::null());
    let _server = kit::Proc::spawn("memcached", &mut cmd);
    assert!(
        kit::eventually(Duration::from_secs(5), || socket.exists().then_some(())).is_some(),
        "memcached did not create {}",
        socket.display()
    );
    let save_path = format!("unix://{}", socket.display());
    let addr = ServerAddr::parse(&save_path).unwrap();
    assert_eq!(addr.to_string(), socket.display().to_string());
    let mut mc = Memcached::new(addr, Timeouts::default());
    assert_eq!(mc.set(b"k", b"over the socket", 60).unwrap(), Reply::Stored);
    assert_eq!(
        mc.get(b"k").unwrap().as_deref(),
        Some(&b"over the socket"[..])
    );
    // A socket nobody listens on is a server failure naming the path.
    let gone = dir.path.join("nobody.sock");
    let mut mc = Memcached::new(
        ServerAddr::parse(&gone.display().to_string()).unwrap(),
        Timeouts::default(),
    );
    let err = mc.get(b"k").unwrap_err();
    assert!(err.is_server_failure(), "{err}");
    assert!(err.to_string().contains("nobody.sock"), "{err}");
}

#[test]
fn host_counters_start_at_the_first_add_and_add_up() {
    use memcast_core::host_counters::{HostCounter, HostCounts};
    let server = kit::Memcached::start();
    let mut mc = client(&server);
    assert_eq!(
        HostCounter::read_all(&mut mc).unwrap(),
        HostCounts::default()
    );
    HostCounter::PublishFailedNotTaken.add(&mut mc, 1).unwrap();
    HostCounter::PublishFailedNotTaken.add(&mut mc, 1).unwrap();
    HostCounter::PublishFailedNoKey.add(&mut mc, 1).unwrap();
    HostCounter::Resent.add(&mut mc, 7).unwrap();
    let counts = HostCounter::read_all(&mut mc).unwrap();
    assert_eq!(counts.get(HostCounter::PublishFailedNotTaken), 2);
    assert_eq!(counts.get(HostCounter::PublishFailedNoKey), 1);
    assert_eq!(counts.get(HostCounter::Resent), 7);
    assert_eq!(counts.get(HostCounter::UnsentForgotten), 0);
    assert_eq!(counts.publish_failures(), 3);
    // Never expiring, and no memcast value: nothing a snapshot would copy.
    let raw = mc.get(HostCounter::Resent.key()).unwrap().unwrap();
    assert_eq!(raw, b"7");
    assert!(memcast_core::stored_value::StoredValue::parse(&raw).is_none());
}
