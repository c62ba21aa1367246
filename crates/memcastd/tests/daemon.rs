//! memcastd against a real memcached, fed over ZeroMQ (tcp://, so no
//! namespaces are needed; multicast is covered by tests/multihost.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use memcast_bus::{BusOptions, Publisher};
use memcast_core::cluster_key::TAG_LEN;
use memcast_core::{Frame, Op, SharedKey, StoredValue, Version};
use memcast_testkit::{eventually, Memcached, Proc, TempDir};

struct Setup {
    /// Holds the key file and the log; removed when the test ends.
    _dir: TempDir,
    key: SharedKey,
    publisher: Publisher,
    daemon: Proc,
    log: PathBuf,
    seq: u64,
}

fn memcastd(args: &[&str], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memcastd"));
    cmd.args(args).stdout(Stdio::null()).stderr(log);
    Proc::spawn("memcastd", &mut cmd)
}

fn setup(mc: &Memcached) -> Setup {
    setup_with(mc, &[])
}

fn setup_with(mc: &Memcached, extra: &[&str]) -> Setup {
    let dir = TempDir::new("daemon");
    let key_file = dir.key_file("key", 1);
    let key = SharedKey::from_file(&key_file).unwrap();
    let publisher = Publisher::bind("tcp://127.0.0.1:*", &BusOptions::default()).unwrap();
    let log = dir.path.join("memcastd.log");
    let daemon = memcastd(
        &[
            "--memcached",
            &mc.addr(),
            "--subscribe",
            publisher.endpoint(),
            "--key-file",
            key_file.to_str().unwrap(),
            "--stats-interval",
            "0",
            "--max-value-bytes",
            "100000",
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
        &log,
    );
    let mut s = Setup {
        _dir: dir,
        key,
        publisher,
        daemon,
        log,
        seq: 0,
    };
    // ZeroMQ's slow joiner: send a probe until the daemon has subscribed.
    let joined = eventually(Duration::from_secs(10), || {
        s.send(
            Op::Set,
            "memcast.sess.probe",
            b"probe",
            Version {
                millis: memcast_core::unix_millis(),
                counter: 0,
                origin: 9,
            },
        );
        mc_get(mc, "memcast.sess.probe").map(|_| ())
    });
    assert!(
        joined.is_some(),
        "memcastd never applied a frame: {}",
        s.log_text()
    );
    s
}

impl Setup {
    fn frame(&mut self, op: Op, key: &str, value: &[u8], version: Version) -> Frame {
        self.seq += 1;
        Frame {
            op,
            origin: 9,
            epoch: 1,
            seq: self.seq,
            version,
            ttl: 600,
            key: key.into(),
            value: value.to_vec(),
        }
    }

    fn send(&mut self, op: Op, key: &str, value: &[u8], version: Version) {
        let bytes = self.frame(op, key, value, version).seal(&self.key);
        self.publisher.send(&bytes).unwrap();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the final counters line.
    fn stop(&mut self) -> String {
        let status = self
            .daemon
            .signal("TERM", Duration::from_secs(5))
            .expect("memcastd did not exit on SIGTERM");
        assert!(
            status.success(),
            "memcastd exited with {status}: {}",
            self.log_text()
        );
        let log = self.log_text();
        log.lines()
            .find(|l| l.contains("memcastd stopping"))
            .unwrap_or_else(|| panic!("no final stats in {log}"))
            .to_owned()
    }
}

fn mc_get(mc: &Memcached, key: &str) -> Option<Vec<u8>> {
    let mut client = memcast_core::Memcached::new(
        memcast_core::ServerAddr::parse(&mc.addr()).unwrap(),
        memcast_core::Timeouts::default(),
    );
    client.get(key.as_bytes()).unwrap()
}

fn data_of(mc: &Memcached, key: &str) -> Option<(Version, bool, Vec<u8>)> {
    mc_get(mc, key).map(|raw| {
        let v = StoredValue::parse(&raw).expect("memcastd stored a value without a header");
        (v.version, v.tombstone, v.data.to_vec())
    })
}

fn v(millis: u64) -> Version {
    Version {
        millis,
        counter: 0,
        origin: 9,
    }
}

fn count(stats: &str, name: &str) -> u64 {
    stats
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn authenticated_frames_are_applied_and_bad_ones_dropped_and_counted() {
    let mc = Memcached::start();
    let mut s = setup(&mc);
    let wrong_key = SharedKey::from_secret(&[42u8; 32]).unwrap();
    for i in 0..100u64 {
        let value = format!("n|i:{i};name|s:3:\"a|b\";");
        s.send(
            Op::Set,
            &format!("memcast.sess.k{i}"),
            value.as_bytes(),
            v(1000 + i),
        );
        // Interleave every kind of bad input with the real writes.
        let forged = s
            .frame(
                Op::Set,
                &format!("memcast.sess.k{i}"),
                b"forged",
                v(9_999_999),
            )
            .seal(&wrong_key);
        s.publisher.send(&forged).unwrap();
        let good = s.frame(Op::Set, "memcast.sess.x", b"x", v(1)).seal(&s.key);
        s.publisher.send(&good[..good.len() / 2]).unwrap();
        s.publisher.send(b"random junk that is not a frame at all, but long enough to look like one..................").unwrap();
    }
    let big = s
        .frame(Op::Set, "memcast.sess.big", &vec![b'x'; 200_000], v(5))
        .seal(&s.key);
    s.publisher.send(&big).unwrap();
    let all = eventually(Duration::from_secs(10), || {
        (0..100u64)
            .all(|i| data_of(&mc, &format!("memcast.sess.k{i}")).is_some())
            .then_some(())
    });
    assert!(all.is_some(), "not every write arrived: {}", s.log_text());
    for i in 0..100u64 {
        let (version, tombstone, data) = data_of(&mc, &format!("memcast.sess.k{i}")).unwrap();
        assert_eq!(version, v(1000 + i));
        assert!(!tombstone);
        assert_eq!(data, format!("n|i:{i};name|s:3:\"a|b\";").as_bytes());
    }
    assert!(
        mc_get(&mc, "memcast.sess.big").is_none(),
        "an oversized frame was applied"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.daemon.is_running());
    let stats = s.stop();
    assert_eq!(count(&stats, "dropped_auth"), 100, "{stats}");
    assert_eq!(count(&stats, "dropped_decode"), 200, "{stats}");
    assert_eq!(count(&stats, "dropped_size"), 1, "{stats}");
    assert!(count(&stats, "applied") >= 100, "{stats}");
}

#[test]
fn older_frame_arriving_late_does_not_overwrite_newer() {
    let mc = Memcached::start();
    let mut s = setup(&mc);
    s.send(Op::Set, "memcast.sess.late", b"new", v(2000));
    s.send(Op::Set, "memcast.sess.late", b"old", v(1000));
    s.send(Op::Set, "memcast.sess.marker", b"m", v(3000));
    assert!(eventually(Duration::from_secs(5), || data_of(
        &mc,
        "memcast.sess.marker"
    ))
    .is_some());
    assert_eq!(data_of(&mc, "memcast.sess.late").unwrap().2, b"new");
    let stats = s.stop();
    assert!(count(&stats, "skipped_older") >= 1, "{stats}");
}

#[test]
fn delete_leaves_a_tombstone_that_blocks_an_older_write() {
    let mc = Memcached::start();
    let mut s = setup(&mc);
    s.send(Op::Set, "memcast.sess.d", b"alive", v(1000));
    s.send(Op::Delete, "memcast.sess.d", b"", v(2000));
    s.send(Op::Set, "memcast.sess.d", b"zombie", v(1500));
    s.send(Op::Set, "memcast.sess.marker", b"m", v(3000));
    assert!(eventually(Duration::from_secs(5), || data_of(
        &mc,
        "memcast.sess.marker"
    ))
    .is_some());
    let (version, tombstone, _) = data_of(&mc, "memcast.sess.d").unwrap();
    assert!(tombstone);
    assert_eq!(version, v(2000));
}

#[test]
fn frames_sent_while_memcached_is_down_are_applied_when_it_is_back() {
    let mut mc = Memcached::start();
    let port = mc.port;
    let mut s = setup(&mc);
    mc.kill();
    for i in 0..20u64 {
        s.send(
            Op::Set,
            &format!("memcast.sess.down{i}"),
            b"kept",
            v(1000 + i),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.daemon.is_running(),
        "memcastd died with memcached: {}",
        s.log_text()
    );
    let mc = Memcached::start_on(port);
    let all = eventually(Duration::from_secs(10), || {
        (0..20u64)
            .all(|i| data_of(&mc, &format!("memcast.sess.down{i}")).is_some())
            .then_some(())
    });
    assert!(
        all.is_some(),
        "frames were lost across the memcached restart: {}",
        s.log_text()
    );
    let log = s.log_text();
    assert!(log.contains("memcached is back"), "{log}");
}

#[test]
fn missing_or_short_key_file_is_a_clear_startup_error() {
    let dir = TempDir::new("nokey");
    let short = dir.path.join("short");
    std::fs::write(&short, "tiny").unwrap();
    for (file, expect) in [
        (dir.path.join("absent"), "cannot read"),
        (short, "at least 32"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_memcastd"))
            .args([
                "--subscribe",
                "tcp://127.0.0.1:1",
                "--key-file",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains(expect),
            "{err}"
        );
    }
}

#[test]
fn settings_come_from_the_config_file_and_flags_override_it() {
    let mc = Memcached::start();
    let dir = TempDir::new("config");
    let key_file = dir.key_file("key", 3);
    let key = SharedKey::from_file(&key_file).unwrap();
    let publisher = Publisher::bind("tcp://127.0.0.1:*", &BusOptions::default()).unwrap();
    let config = dir.path.join("memcastd.toml");
    std::fs::write(
        &config,
        format!(
            "memcached = \"127.0.0.1:1\"\nsubscribe = [\"{}\"]\nkey_file = \"{}\"\nstats_interval = 0\n",
            publisher.endpoint(),
            key_file.display()
        ),
    )
    .unwrap();
    let log = dir.path.join("log");
    // The file names a dead memcached; the flag points at the real one.
    let _daemon = memcastd(
        &[
            "--config",
            config.to_str().unwrap(),
            "--memcached",
            &mc.addr(),
        ],
        &log,
    );
    let frame = Frame {
        op: Op::Set,
        origin: 1,
        epoch: 1,
        seq: 1,
        version: v(1),
        ttl: 60,
        key: b"memcast.sess.cfg".to_vec(),
        value: b"ok".to_vec(),
    };
    let applied = eventually(Duration::from_secs(10), || {
        publisher.send(&frame.seal(&key)).unwrap();
        data_of(&mc, "memcast.sess.cfg")
    });
    assert!(
        applied.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_memcastd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--memcached",
        "--subscribe",
        "--key-file",
        "--config",
        "--pgm-rate-kbps",
        "--pgm-recovery-ms",
        "--rcvbuf",
        "--rcvhwm",
        "--log-level",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn readme_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_memcastd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let flags: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .filter(|w| *w != "--help" && *w != "--version")
        .collect();
    assert!(flags.len() >= 10, "{help}");
    for flag in flags {
        assert!(
            readme.contains(&format!("| `{flag} ")),
            "README.md's memcastd reference lacks {flag}"
        );
    }
}

#[test]
fn a_subscriber_that_falls_behind_declares_itself_out_of_sync_and_recovers() {
    let mc = Memcached::start();
    let mut s = setup_with(&mc, &["--max-lag-ms", "2000"]);
    let now = memcast_core::unix_millis();
    let at = |millis| Version {
        millis,
        counter: 0,
        origin: 9,
    };
    s.send(Op::Set, "memcast.sess.fresh", b"x", at(now));
    s.send(Op::Set, "memcast.sess.stale", b"x", at(now - 60_000));
    s.send(
        Op::Set,
        "memcast.sess.fresh2",
        b"x",
        at(memcast_core::unix_millis()),
    );
    assert!(eventually(Duration::from_secs(5), || data_of(
        &mc,
        "memcast.sess.fresh2"
    ))
    .is_some());
    let stats = s.stop();
    let log = s.log_text();
    assert!(
        log.contains("out of sync") && log.contains("caught up"),
        "{log}"
    );
    assert_eq!(count(&stats, "out_of_sync"), 1, "{stats}");
}

/// What `memcastd session-key` prints is the key the extension stores the
/// session under (phpt 070 shows that key holds the session, sealed).
#[test]
fn session_key_maps_an_id_to_its_memcached_key_and_survives_a_roll() {
    let dir = TempDir::new("session-key");
    let file = dir.path.join("cluster.key");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_memcastd"))
            .args(args)
            .output()
            .unwrap()
    };
    let key_of = |extra: &[&str]| {
        let mut args = vec!["session-key", "--key-file", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert!(run(&["keygen", file.to_str().unwrap()]).status.success());
    let id = "c8a60f3ef6267570cb5de6255d7bee14";
    let key = key_of(&[id]);
    let seal = memcast_core::session_seal::SessionSeal::new(&memcast_core::Keyring::new(
        SharedKey::from_file(&file).unwrap(),
        None,
        false,
    ));
    assert_eq!(
        key.as_bytes(),
        seal.memcached_key(b"memcast.sess.", id.as_bytes())
    );
    assert!(
        key.starts_with("memcast.sess.") && !key.contains(id),
        "{key}"
    );
    assert_eq!(key.len(), "memcast.sess.".len() + 32);
    assert!(key_of(&["--prefix", "app1.", id]).starts_with("app1."));
    assert_ne!(key_of(&["other-id"]), key);
    // A roll (keygen --force over the key) keeps every session's key.
    let rolled = run(&["keygen", "--force", file.to_str().unwrap()]);
    assert!(rolled.status.success());
    let said = String::from_utf8_lossy(&rolled.stdout);
    assert!(
        said.contains("keeps the replaced key's session-id key"),
        "{said}"
    );
    assert_eq!(key_of(&[id]), key, "a key roll moved the session");
    let missing = run(&["session-key", "--key-file", "/nonexistent/key", id]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/key"));
}

#[test]
fn keygen_writes_a_private_key_and_the_daemon_refuses_an_exposed_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("keygen");
    let file = dir.path.join("cluster.key");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_memcastd"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["keygen", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(SharedKey::from_file(&file).is_ok());
    let again = run(&["keygen", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "keygen overwrote a key");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&[
        "--subscribe",
        "tcp://127.0.0.1:1",
        "--key-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("0644"),
        "{err}"
    );
}

#[test]
fn replayed_and_stale_frames_are_dropped_and_counted() {
    let mc = Memcached::start();
    let mut s = setup(&mc);
    // A captured frame sent again: same (origin, epoch, seq).
    let first = s
        .frame(Op::Set, "memcast.sess.r", b"first", v(2000))
        .seal(&s.key);
    s.publisher.send(&first).unwrap();
    assert!(eventually(Duration::from_secs(5), || data_of(&mc, "memcast.sess.r")).is_some());
    // The same bytes again, and a frame that reuses the sequence number for
    // a newer write (which "apply if newer" alone would take).
    s.publisher.send(&first).unwrap();
    let mut reused = s.frame(Op::Set, "memcast.sess.r", b"replayed", v(9000));
    reused.seq -= 1;
    s.publisher.send(&reused.seal(&s.key)).unwrap();
    // Sealed 10 minutes ago: older than --max-frame-age-ms.
    let stale = s
        .frame(Op::Set, "memcast.sess.stale", b"stale", v(3000))
        .seal_at(&s.key, memcast_core::unix_millis() - 600_000);
    s.publisher.send(&stale).unwrap();
    // An origin's old epoch after its new one took over is covered by the
    // unit tests (it needs a 10 s grace period).
    s.send(Op::Set, "memcast.sess.after", b"after", v(4000));
    assert!(eventually(Duration::from_secs(5), || data_of(
        &mc,
        "memcast.sess.after"
    ))
    .is_some());
    let stats = s.stop();
    assert_eq!(count(&stats, "dropped_replay"), 3, "{stats}");
    assert_eq!(data_of(&mc, "memcast.sess.stale"), None);
    assert_eq!(data_of(&mc, "memcast.sess.r").unwrap().2, b"first");
    let log = s.log_text();
    assert!(log.contains("sequence number already received"), "{log}");
    assert!(log.contains("over --max-frame-age-ms"), "{log}");
}

#[test]
fn encrypted_frames_are_applied_and_keys_roll_on_sighup() {
    let mc = Memcached::start();
    let dir = TempDir::new("rotation");
    let next_file = dir.key_file("next", 77);
    let next = SharedKey::from_file(&next_file).unwrap();
    // Before the roll the accepted key is the current one (seed 1, as setup's).
    let accept = dir.key_file("accept", 1);
    let mut s = setup_with(
        &mc,
        &[
            "--accept-key-file",
            accept.to_str().unwrap(),
            "--encrypt",
            "true",
        ],
    );
    // Encrypted frames under the current key.
    let sealed = memcast_core::Keyring::new(s.key.clone(), None, true);
    let f = s.frame(Op::Set, "memcast.sess.enc", b"secret|s:1:\"x\";", v(100));
    s.publisher.send(&f.seal(&sealed)).unwrap();
    assert!(eventually(Duration::from_secs(5), || data_of(&mc, "memcast.sess.enc")).is_some());
    assert_eq!(
        data_of(&mc, "memcast.sess.enc").unwrap().2,
        b"secret|s:1:\"x\";"
    );
    // A frame under the next key is not accepted yet.
    let early = s.frame(Op::Set, "memcast.sess.early", b"early", v(100));
    s.publisher.send(&early.seal(&next)).unwrap();
    // Frames from one publisher arrive in order: once a frame sent after it
    // is applied, the early one has been judged (under the old keys), so the
    // roll below cannot race it.
    s.send(Op::Set, "memcast.sess.fence", b"fence", v(100));
    assert!(eventually(Duration::from_secs(5), || data_of(
        &mc,
        "memcast.sess.fence"
    ))
    .is_some());
    // Roll: the next key becomes accepted, SIGHUP.
    std::fs::rename(&next_file, &accept).unwrap();
    s.daemon.signal("HUP", Duration::ZERO);
    let reloaded = eventually(Duration::from_secs(5), || {
        s.log_text().contains("reloaded keys").then_some(())
    });
    assert!(reloaded.is_some(), "{}", s.log_text());
    let late = s.frame(Op::Set, "memcast.sess.late", b"late", v(100));
    s.publisher.send(&late.seal(&next)).unwrap();
    // Still accepts the current key too.
    s.send(Op::Set, "memcast.sess.still", b"still", v(100));
    assert!(eventually(Duration::from_secs(5), || data_of(&mc, "memcast.sess.late")).is_some());
    assert!(eventually(Duration::from_secs(5), || data_of(
        &mc,
        "memcast.sess.still"
    ))
    .is_some());
    assert_eq!(data_of(&mc, "memcast.sess.early"), None);
    let stats = s.stop();
    assert_eq!(count(&stats, "dropped_auth"), 1, "{stats}");
    assert_eq!(count(&stats, "key_reloads"), 1, "{stats}");
    let log = s.log_text();
    assert!(
        log.contains(&format!("also accepting {:08x}", next.id())),
        "{log}"
    );
}

#[test]
fn a_key_longer_than_max_key_length_is_dropped() {
    let mc = Memcached::start();
    let mut s = setup_with(&mc, &["--max-key-length", "40"]);
    s.send(
        Op::Set,
        &format!("memcast.sess.{}", "k".repeat(30)),
        b"long",
        v(1),
    );
    s.send(Op::Set, "memcast.sess.short", b"short", v(1));
    assert!(eventually(Duration::from_secs(5), || data_of(
        &mc,
        "memcast.sess.short"
    ))
    .is_some());
    let stats = s.stop();
    assert_eq!(count(&stats, "dropped_size"), 1, "{stats}");
}

#[test]
fn sighup_rereads_the_config_file_applies_what_it_can_and_names_the_rest() {
    let mc = Memcached::start();
    let dir = TempDir::new("reload");
    let config = dir.path.join("memcastd.toml");
    std::fs::write(&config, "max_frame_age_ms = 60000\n").unwrap();
    let mut s = setup_with(&mc, &["--config", config.to_str().unwrap()]);
    let hup = |s: &mut Setup, n: usize| {
        s.daemon.signal("HUP", Duration::ZERO);
        let seen = eventually(Duration::from_secs(5), || {
            let log = s.log_text();
            (log.matches("reloaded configuration").count()
                + log.matches("keeping the running one").count()
                >= n)
                .then_some(())
        });
        assert!(seen.is_some(), "{}", s.log_text());
    };
    // Sealed 5 s ago: fine under 60 s.
    let old = s.frame(Op::Set, "memcast.sess.five", b"5", v(1));
    s.publisher
        .send(&old.seal_at(&s.key, memcast_core::unix_millis() - 5000))
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || data_of(&mc, "memcast.sess.five")).is_some());
    std::fs::write(
        &config,
        "max_frame_age_ms = 2000\nlog_level = \"debug\"\npeer = [\"127.0.0.1:9\"]\n",
    )
    .unwrap();
    hup(&mut s, 1);
    let log = s.log_text();
    assert!(log.contains("max_frame_age_ms 60000 -> 2000"), "{log}");
    assert!(log.contains("log_level info -> debug"), "{log}");
    assert!(
        log.contains("only taking effect after a restart: peer"),
        "{log}"
    );
    // Now 5 s is too old.
    let old = s.frame(Op::Set, "memcast.sess.five2", b"5", v(1));
    s.publisher
        .send(&old.seal_at(&s.key, memcast_core::unix_millis() - 5000))
        .unwrap();
    // A broken file: the running configuration stays, frames still flow.
    std::fs::write(&config, "max_frame_age_ms = \"soon\"\n").unwrap();
    hup(&mut s, 2);
    assert!(
        s.log_text().contains("keeping the running one"),
        "{}",
        s.log_text()
    );
    s.send(Op::Set, "memcast.sess.after", b"after", v(1));
    assert!(eventually(Duration::from_secs(5), || data_of(
        &mc,
        "memcast.sess.after"
    ))
    .is_some());
    assert_eq!(data_of(&mc, "memcast.sess.five2"), None);
    let stats = s.stop();
    assert_eq!(count(&stats, "dropped_replay"), 1, "{stats}");
}

/// A serialized PHP session of about 2 KB: a user, hex tokens, a cart.
fn php_session() -> Vec<u8> {
    let mut out = String::from(
        "user|a:3:{s:2:\"id\";i:48213;s:4:\"name\";s:12:\"Alice Martin\";s:5:\"email\";s:24:\"alice.martin@example.com\";}",
    );
    out += "csrf_token|s:64:\"597eab4a89a5c7580534a45e431c20a7990d6d0e3f2424ee588b1701ecec8ad9\";cart|a:16:{";
    for i in 0..16u64 {
        let token = format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        out += &format!(
            "i:{i};a:3:{{s:3:\"sku\";i:{};s:5:\"title\";s:{}:\"Product {i}\";s:5:\"token\";s:16:\"{token}\";}}",
            100_000 + i * 7919,
            8 + i.to_string().len(),
        );
    }
    out += "}visits|i:37;";
    out.into_bytes()
}

#[test]
fn compressed_frames_are_stored_inflated_and_bad_compressed_bodies_are_dropped_and_counted() {
    let mc = Memcached::start();
    let mut s = setup(&mc);
    let session = php_session();
    assert!(session.len() > 1500, "{}", session.len());
    let good = s
        .frame(Op::Set, "memcast.sess.zipped1", &session, v(10))
        .seal_compressed(&s.key, 1024);
    let plain = s
        .frame(Op::Set, "memcast.sess.zipped1", &session, v(10))
        .seal(&s.key);
    assert!(
        good.len() < plain.len() * 3 / 4,
        "{} vs {}",
        good.len(),
        plain.len()
    );
    s.publisher.send(&good).unwrap();

    // What follows the compressed flag in `good`: inflated length, LZ4 block.
    let value_at = memcast_core::frame::HEADER_LEN + "memcast.sess.zipped1".len();
    let wire = good[value_at..good.len() - TAG_LEN].to_vec();
    let (len, block) = wire.split_at(4);
    // Signed with the cluster key, so only the inflating can judge them.
    let corrupted = [len, &block[..block.len() / 2]].concat();
    let bad = forged_compressed(&mut s, "memcast.sess.zipped2", &corrupted);
    s.publisher.send(&bad).unwrap();
    // A bomb: a small frame declaring 1 MB (over --max-value-bytes 100000).
    let bomb = [&1_000_000u32.to_be_bytes()[..], block].concat();
    let bad = forged_compressed(&mut s, "memcast.sess.zipped3", &bomb);
    s.publisher.send(&bad).unwrap();
    // The daemon keeps going: the next good frame, after the bad ones, lands.
    let next = s
        .frame(Op::Set, "memcast.sess.zipped4", &session, v(11))
        .seal_compressed(&s.key, 1024);
    s.publisher.send(&next).unwrap();
    let landed = eventually(Duration::from_secs(10), || {
        data_of(&mc, "memcast.sess.zipped4")
    });
    assert!(landed.is_some(), "{}", s.log_text());
    assert_eq!(
        data_of(&mc, "memcast.sess.zipped1"),
        Some((v(10), false, session.clone()))
    );
    assert_eq!(landed, Some((v(11), false, session)));
    assert_eq!(data_of(&mc, "memcast.sess.zipped2"), None);
    assert_eq!(data_of(&mc, "memcast.sess.zipped3"), None);
    let stats = s.stop();
    assert_eq!(count(&stats, "received_compressed"), 2, "{stats}");
    assert_eq!(count(&stats, "dropped_decode"), 1, "{stats}");
    assert_eq!(count(&stats, "dropped_size"), 1, "{stats}");
    let log = s.log_text();
    assert!(
        log.contains("does not inflate to its declared length")
            && log.contains("inflates to 1000000 bytes, over the limit of 100000"),
        "{log}"
    );
}

/// A frame signed with the cluster key whose flags say its value is
/// compressed, `wire` being that value as sent (inflated length, LZ4
/// block), however wrong.
fn forged_compressed(s: &mut Setup, key: &str, wire: &[u8]) -> Vec<u8> {
    let mut bytes = s.frame(Op::Set, key, wire, v(12)).seal(&s.key);
    bytes.truncate(bytes.len() - TAG_LEN);
    bytes[5] |= 2; // the flags byte; bit 1: compressed (memcast_core::frame)
    let tag = s.key.tag(&bytes);
    bytes.extend_from_slice(&tag);
    bytes
}
