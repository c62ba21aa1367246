//! memcastd's start-up and command-line messages, run as an operator would:
//! each mistake gets an answer that says what to do, and the suggested
//! command works.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use memcast_core::SharedKey;
use memcast_testkit::TempDir;

fn memcastd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memcastd"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_short_key_files_error_suggests_a_keygen_that_works() {
    let dir = TempDir::new("short-key");
    let file = dir.path.join("cluster.key");
    std::fs::write(&file, "too short\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = file.to_str().unwrap();
    let out = memcastd(&["--subscribe", "tcp://127.0.0.1:1", "--key-file", path]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let suggested = format!("memcastd keygen --force {path}");
    assert!(err.contains(&suggested), "{err}");
    assert!(err.contains("copy that file to every host"), "{err}");
    // The command as suggested replaces the short key with a good one.
    let out = memcastd(&["keygen", "--force", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(SharedKey::from_file(&file).is_ok());
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir.path).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "a temporary file was left behind");
    // Without --force an existing key is still never overwritten.
    let before = std::fs::read(&file).unwrap();
    assert_eq!(memcastd(&["keygen", path]).status.code(), Some(2));
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn status_without_a_metrics_address_says_how_to_configure_one() {
    let dir = TempDir::new("status-hint");
    let config = dir.path.join("memcastd.toml");
    std::fs::write(&config, "subscribe = [\"tcp://127.0.0.1:1\"]\n").unwrap();
    let out = memcastd(&["status", "--config", config.to_str().unwrap()]);
    let err = stderr(&out);
    if out.status.code() != Some(2) {
        // Something answers at the default address on this machine: the
        // hint is for when nothing does.
        eprintln!("skipped: a metrics page answers at 127.0.0.1:9477");
        return;
    }
    assert!(
        err.contains("cannot reach memcastd's metrics at 127.0.0.1:9477"),
        "{err}"
    );
    assert!(err.contains("no metrics address is configured"), "{err}");
    assert!(
        err.contains(&format!("no `metrics` key in {}", config.display())),
        "{err}"
    );
    assert!(err.contains("--metrics HOST:PORT"), "{err}");
    assert!(err.contains("metrics = \"HOST:PORT\""), "{err}");
    // With an address given, the hint is about that address.
    let port = memcast_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = memcastd(&["status", "--metrics", &addr]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is memcastd running, with this --metrics?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn endpoint_and_address_mistakes_stop_the_daemon_at_start_with_what_is_wrong() {
    let dir = TempDir::new("start-mistakes");
    let key = dir.key_file("cluster.key", 1);
    let key = key.to_str().unwrap();
    for (args, says) in [
        (
            vec!["--subscribe", "epgm://239.192.1.1:5555"],
            "--subscribe epgm://239.192.1.1:5555: no interface",
        ),
        (
            vec!["--subscribe", "epgm://lo;10.1.2.3:5555"],
            "group 10.1.2.3 is not a multicast address",
        ),
        (
            vec!["--subscribe", "tcp://127.0.0.1:1", "--peer", "127.0.0.1"],
            "--peer 127.0.0.1: give HOST:PORT",
        ),
        (
            vec!["--subscribe", "tcp://127.0.0.1:1", "--encrypt", "perhaps"],
            "expected yes/no, on/off, true/false or 1/0",
        ),
    ] {
        let out = memcastd(&[&["--key-file", key][..], &args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn openpgms_own_warnings_come_through_the_log_not_raw_on_stdout() {
    let dir = TempDir::new("pgm-log");
    let key = dir.key_file("cluster.key", 2);
    let port = memcast_testkit::free_port();
    // PGM over loopback: libpgm warns that lo is a loopback device.
    let mut child = Command::new(env!("CARGO_BIN_EXE_memcastd"))
        .args([
            "--subscribe",
            &format!("epgm://127.0.0.1;239.192.1.1:{port}"),
        ])
        .arg("--key-file")
        .arg(&key)
        .args(["--memcached", "127.0.0.1:1", "--stats-interval", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = stderr(&out);
    assert!(!stdout.contains("Warn:"), "raw libpgm lines: {stdout}");
    assert!(
        err.contains(" WARN OpenPGM: Interface lo reports as a loopback device."),
        "{err}"
    );
    assert!(!err.contains("Warn:"), "{err}");
}
