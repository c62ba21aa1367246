//! The session store against real memcached processes (memcast-testkit):
//! locking, failover, read-repair, miss confirmation and publishing. The
//! server walk itself is tested in `servers.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcast_bus::BusError;
use memcast_core::ini::{default_of, ExtensionConfig};
use memcast_core::{Frame, Keyring, Op, SharedKey, StoredValue};
use memcast_testkit::{free_port, raw_get, Memcached as Server, TempDir};
use parking_lot::Mutex;

use crate::publish::{NotPublished, Publish};
use crate::{ProcessStore, SessionError, SessionStore};

/// The php.ini defaults, unsealed, locks expiring after 30 s.
pub(crate) fn config() -> ExtensionConfig {
    let mut c = ExtensionConfig::from_ini(default_of).unwrap();
    c.seal = false;
    c.lock_expire = 30;
    c
}

fn opened(save_path: &str, config: ExtensionConfig) -> SessionStore {
    let mut s = SessionStore::new();
    s.open(config, save_path).unwrap();
    s
}

fn process(save_path: &str, config: ExtensionConfig) -> ProcessStore {
    let p = ProcessStore::new();
    p.replace(opened(save_path, config));
    p
}

fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

// ---------------------------------------------------------------- lock ---

fn impatient() -> ExtensionConfig {
    ExtensionConfig {
        lock_retries: 2,
        lock_wait_min: Duration::from_millis(5),
        lock_wait_max: Duration::from_millis(10),
        ..config()
    }
}

#[test]
fn a_lock_is_held_until_close_and_another_request_gives_up_meanwhile() {
    let mc = Server::start();
    let first = process(&mc.addr(), config());
    let second = process(&mc.addr(), impatient());
    assert!(first.lock_session(b"locked1").unwrap() < Duration::from_millis(100));
    // The same request reading the session again does not wait on itself.
    assert_eq!(first.lock_session(b"locked1").unwrap(), Duration::ZERO);

    let err = second.lock_session(b"locked1").unwrap_err();
    assert!(
        matches!(err, SessionError::LockBusy { tries: 3, .. }),
        "{err}"
    );
    let c = second.with(|s| s.counters());
    assert_eq!((c.lock_waits, c.lock_failures), (2, 1));
    // Another session's lock is free.
    second.lock_session(b"other1").unwrap();

    first.with(|s| s.close());
    second.lock_session(b"locked1").unwrap();
}

#[test]
fn an_expired_lock_is_taken_over_and_its_first_holder_does_not_release_it() {
    let mc = Server::start();
    let short = ExtensionConfig {
        lock_expire: 1,
        ..config()
    };
    let first = process(&mc.addr(), short);
    first.lock_session(b"expiring1").unwrap();
    // memcached expires by the whole second: 1 s may take up to 2, so the
    // second request waits up to 2 s more.
    std::thread::sleep(Duration::from_millis(1500));
    let patient = ExtensionConfig {
        lock_retries: 100,
        lock_wait_min: Duration::from_millis(20),
        lock_wait_max: Duration::from_millis(20),
        ..config()
    };
    let second = process(&mc.addr(), patient);
    second.lock_session(b"expiring1").unwrap();
    // The first request ends late: its release must not free the second's lock.
    first.with(|s| s.close());
    let third = process(&mc.addr(), impatient());
    let err = third.lock_session(b"expiring1").unwrap_err();
    assert!(matches!(err, SessionError::LockBusy { .. }), "{err}");
}

#[test]
fn waiting_for_a_lock_leaves_the_process_store_free() {
    let mc = Server::start();
    let holder = process(&mc.addr(), config());
    holder.lock_session(b"waited1").unwrap();
    // Long waits: a store held across them would block a caller for as long.
    let patient = ExtensionConfig {
        lock_retries: 1000,
        lock_wait_min: Duration::from_millis(300),
        lock_wait_max: Duration::from_millis(300),
        ..config()
    };
    let shared = Arc::new(process(&mc.addr(), patient));
    let waiter = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || shared.lock_session(b"waited1"))
    };
    // While one thread waits, another uses the same store without waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut slowest = Duration::ZERO;
    while shared.with(|s| s.counters().lock_waits) < 3 {
        assert!(Instant::now() < deadline, "the waiter never retried");
        let started = Instant::now();
        shared.with(|s| s.counters());
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        slowest < Duration::from_millis(100),
        "the store was held for {slowest:?} while a thread waited"
    );
    holder.with(|s| s.close());
    let waited = waiter.join().unwrap().unwrap();
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
}

// -------------------------------------------------------------- reads ---

#[test]
fn a_read_fails_over_past_a_dead_server() {
    let mc = Server::start();
    let mut writer = opened(&mc.addr(), config());
    writer.write(b"failover1", b"x|i:1;", 60).unwrap();
    let mut reader = opened(&format!("{}, {}", dead_addr(), mc.addr()), config());
    let data = reader.read(b"failover1", 60).unwrap();
    assert_eq!(data.as_deref(), Some(&b"x|i:1;"[..]));
    let c = reader.counters();
    assert_eq!(c.failovers, 1);
    assert_eq!(c.reads_by_server[1].1, 1);
}

#[test]
fn a_cold_miss_is_asked_of_the_next_server_and_repaired_from_its_hit() {
    let (cold, warm) = (Server::start(), Server::start());
    let mut writer = opened(&warm.addr(), config());
    writer.write(b"repair1", b"n|i:7;", 60).unwrap();
    let stored = raw_get(&warm.addr(), "memcast.sess.repair1").unwrap();

    let mut reader = opened(&format!("{}, {}", cold.addr(), warm.addr()), config());
    let data = reader.read(b"repair1", 60).unwrap();
    assert_eq!(data.as_deref(), Some(&b"n|i:7;"[..]));
    let c = reader.counters();
    assert_eq!((c.cold_misses, c.read_repairs, c.failovers), (1, 1, 1));
    assert_eq!(
        raw_get(&cold.addr(), "memcast.sess.repair1"),
        Some(stored),
        "the cold server did not get the session back"
    );
    // The write after it lands on the first server, newer than what was read.
    reader.write(b"repair1", b"n|i:8;", 60).unwrap();
    let now = raw_get(&cold.addr(), "memcast.sess.repair1").unwrap();
    assert_eq!(StoredValue::parse(&now).unwrap().data, b"n|i:8;");
}

#[test]
fn a_miss_is_confirmed_on_the_next_server_before_a_session_starts_empty() {
    let (a, b) = (Server::start(), Server::start());
    let mut both = opened(&format!("{}, {}", a.addr(), b.addr()), config());
    assert_eq!(
        both.read(b"nowhere1", 60).unwrap(),
        None,
        "two misses agree"
    );
    assert_eq!(both.counters().cold_misses, 2);

    // The second server away: one cold miss is no proof.
    let mut alone = opened(&format!("{}, {}", a.addr(), dead_addr()), config());
    let err = alone.read(b"nowhere1", 60).unwrap_err();
    assert!(matches!(err, SessionError::UnconfirmedMiss { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&a.addr()) && text.contains("no other server could confirm the miss"),
        "{text}"
    );
    assert_eq!(alone.counters().unconfirmed_misses, 1);

    // An id this process just made needs no confirmation.
    assert!(!alone.id_taken(b"fresh1"));
    assert_eq!(alone.read(b"fresh1", 60).unwrap(), None);

    // Nor does a miss on a server its memcastd vouches for.
    let mut setter = memcast_core::Memcached::new(
        memcast_core::ServerAddr::parse(&a.addr()).unwrap(),
        Default::default(),
    );
    setter.set(b"memcast:warm", b"1", 60).unwrap();
    assert_eq!(alone.read(b"vouched1", 60).unwrap(), None);
    assert_eq!(alone.counters().unconfirmed_misses, 1);
}

#[test]
fn a_create_that_finds_a_session_written_meanwhile_keeps_it() {
    let mc = Server::start();
    let mut late = opened(&mc.addr(), config());
    assert_eq!(late.read(b"raced1", 60).unwrap(), None);
    // Another request creates the session, and a later one writes it: a
    // live session, not another create (of two creates the newer wins).
    let mut early = opened(&mc.addr(), config());
    early.read(b"raced1", 60).unwrap();
    early.write(b"raced1", b"zero", 60).unwrap();
    early.close();
    early.read(b"raced1", 60).unwrap();
    early.write(b"raced1", b"first", 60).unwrap();
    let err = late.write(b"raced1", b"second", 60).unwrap_err();
    assert!(matches!(err, SessionError::CreateConflict { .. }), "{err}");
    assert_eq!(late.counters().conflicts, 1);
    let mut reader = opened(&mc.addr(), config());
    assert_eq!(
        reader.read(b"raced1", 60).unwrap().as_deref(),
        Some(&b"first"[..])
    );
}

// ------------------------------------------------------------ publish ---

/// Keeps every frame it is given, or refuses them while `refusing`.
#[derive(Clone, Default)]
struct Recorder {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    refusing: Arc<AtomicBool>,
}

impl Publish for Recorder {
    fn send(&mut self, frame: &[u8]) -> Result<(), NotPublished> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err(NotPublished::NotTaken(BusError::QueueFull));
        }
        self.frames.lock().push(frame.to_vec());
        Ok(())
    }
    fn setup_error(&self) -> Option<String> {
        None
    }
    fn is_direct(&self) -> bool {
        false
    }
}

impl Recorder {
    fn store(&self, save_path: &str, config: ExtensionConfig) -> SessionStore {
        let recorder = self.clone();
        let mut s = SessionStore::with_publisher(Box::new(move |_, _| Box::new(recorder.clone())));
        s.open(config, save_path).unwrap();
        s
    }

    /// The frames sent so far, opened: (op, key, value).
    fn taken(&self, keys: &Keyring) -> Vec<(Op, Vec<u8>, Vec<u8>)> {
        self.frames
            .lock()
            .drain(..)
            .map(|f| {
                let f = Frame::open(&f, keys, 1 << 20).unwrap();
                (f.op, f.key, f.value)
            })
            .collect()
    }
}

fn publishing(dir: &TempDir) -> (ExtensionConfig, Keyring) {
    let key_file = dir.key_file("cluster.key", 3);
    let keys = Keyring::new(SharedKey::from_file(&key_file).unwrap(), None, false);
    let config = ExtensionConfig {
        publish: Some("ipc:///nowhere/recorded".into()),
        key_file: Some(key_file),
        ..config()
    };
    (config, keys)
}

#[test]
fn every_stored_write_is_published_as_the_frame_replicas_apply() {
    let mc = Server::start();
    let dir = TempDir::new("session-publish");
    let (config, keys) = publishing(&dir);
    let recorder = Recorder::default();
    let mut s = recorder.store(&mc.addr(), config);
    let key = b"memcast.sess.published1".to_vec();

    assert_eq!(s.read(b"published1", 60).unwrap(), None);
    s.write(b"published1", b"a|i:1;", 60).unwrap();
    s.close();
    s.read(b"published1", 60).unwrap();
    s.write(b"published1", b"a|i:2;", 60).unwrap();
    s.touch(b"published1", b"a|i:2;", 60).unwrap();
    s.destroy(b"published1").unwrap();
    assert_eq!(
        recorder.taken(&keys),
        [
            (Op::Create, key.clone(), b"a|i:1;".to_vec()),
            (Op::Set, key.clone(), b"a|i:2;".to_vec()),
            (Op::Touch, key.clone(), Vec::new()),
            (Op::Delete, key.clone(), Vec::new()),
        ]
    );
    assert_eq!(s.counters().published, 4);
}

#[test]
fn a_dropped_frame_is_sent_again_as_stored_once_the_publisher_takes_frames() {
    let mc = Server::start();
    let dir = TempDir::new("session-unsent");
    let (config, keys) = publishing(&dir);
    let recorder = Recorder::default();
    let mut s = recorder.store(&mc.addr(), config);

    recorder.refusing.store(true, Ordering::SeqCst);
    s.read(b"dropped1", 60).unwrap();
    s.write(b"dropped1", b"d|i:1;", 60).unwrap();
    let warning = s.take_publish_error().unwrap();
    assert!(
        warning.contains("is sent again once the publisher takes frames; 1 frames dropped"),
        "{warning}"
    );
    assert!(recorder.taken(&keys).is_empty());

    recorder.refusing.store(false, Ordering::SeqCst);
    s.read(b"other2", 60).unwrap();
    s.write(b"other2", b"o", 60).unwrap();
    assert_eq!(
        recorder.taken(&keys),
        [
            (Op::Create, b"memcast.sess.other2".to_vec(), b"o".to_vec()),
            // Still a create: no request wrote it since.
            (
                Op::Create,
                b"memcast.sess.dropped1".to_vec(),
                b"d|i:1;".to_vec()
            ),
        ]
    );
    let c = s.counters();
    assert_eq!((c.publish_drops, c.resent, c.published), (1, 1, 1));
    // Counted in the local memcached for memcastd to export.
    assert_eq!(
        raw_get(&mc.addr(), "memcast:php:publish_failed:not_taken").as_deref(),
        Some(&b"1"[..])
    );
}

/// Unsealed, a large session is compressed in frames sent straight to the
/// group; sealed, it is compressed inside the seal (smaller in memcached and
/// in every frame) and frames carry it as it is.
#[test]
fn a_large_session_is_compressed_only_when_sent_straight_to_the_group_unsealed() {
    let mc = Server::start();
    let dir = TempDir::new("session-compress");
    let (config, keys) = publishing(&dir);
    let data: Vec<u8> = (0..40)
        .flat_map(|i| format!("i:{i};a:2:{{s:5:\"title\";s:10:\"Product {i:02}\";}}").into_bytes())
        .collect();
    assert!(data.len() > 1500);
    let group = "epgm://lo;239.192.1.1:5555";
    for (publish, seal, compressed) in [
        (group, false, true),
        ("ipc:///nowhere/recorded", false, false),
        (group, true, false),
    ] {
        let recorder = Recorder::default();
        let config = ExtensionConfig {
            publish: Some(publish.into()),
            seal,
            ..config.clone()
        };
        let mut s = recorder.store(&mc.addr(), config);
        s.read(b"compressed1", 60).unwrap();
        s.write(b"compressed1", &data, 60).unwrap();
        s.close();
        let frames = std::mem::take(&mut *recorder.frames.lock());
        assert_eq!(frames.len(), 1);
        let (frame, envelope) = Frame::open_envelope(&frames[0], &keys, 1 << 20).unwrap();
        assert_eq!(envelope.compressed, compressed, "{publish} seal={seal}");
        if !seal {
            assert_eq!(frame.value, data);
        }
        if compressed {
            assert!(frames[0].len() < data.len() / 2, "{}", frames[0].len());
        }
        if seal {
            assert!(memcast_core::session_seal::is_sealed(&frame.value));
            assert!(frame.value.len() < data.len() / 2, "{}", frame.value.len());
            let stored = raw_get(&mc.addr(), std::str::from_utf8(&frame.key).unwrap()).unwrap();
            assert_eq!(StoredValue::parse(&stored).unwrap().data, frame.value);
        }
    }
}

#[test]
fn without_a_usable_key_nothing_is_published_and_the_reason_is_said_once() {
    let mc = Server::start();
    let dir = TempDir::new("session-nokey");
    let (mut config, _) = publishing(&dir);
    config.key_file = Some(dir.path.join("missing.key"));
    let recorder = Recorder::default();
    let mut s = SessionStore::with_publisher({
        let r = recorder.clone();
        Box::new(move |_, _| Box::new(r.clone()))
    });
    let notices = s.open(config.clone(), &mc.addr()).unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("missing.key: cannot read it")
            && notices[0].ends_with(": sessions are stored locally and not replicated"),
        "{notices:?}"
    );
    assert!(s.open(config, &mc.addr()).unwrap().is_empty(), "said twice");
    s.read(b"unkeyed1", 60).unwrap();
    s.write(b"unkeyed1", b"u", 60).unwrap();
    assert!(recorder.frames.lock().is_empty());
    assert_eq!(s.counters().publish_drops, 1);
}
