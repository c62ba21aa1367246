//! Session locking in a real web stack: nginx + php-fpm (pm = static, 10
//! workers) on loopback, a real memcached.

use std::path::Path;
use std::time::{Duration, Instant};

use memcast_testkit::web::WebStack;
use memcast_testkit::{eventually, Memcached};

const COUNTER: &str = r#"<?php
if (isset($_GET['lock'])) { ini_set('memcast.locking', $_GET['lock']); }
if (isset($_GET['expire'])) { ini_set('memcast.lock_expire', $_GET['expire']); }
$t = hrtime(true);
if (!session_start()) { http_response_code(503); echo "no session\n"; exit; }
$waited = (hrtime(true) - $t) / 1e6;
$n = ($_SESSION['n'] ?? 0) + 1;
usleep(20000);
$_SESSION['n'] = $n;
session_write_close();
printf("n=%d wait=%.1f\n", $n, $waited);
"#;

const HOLD: &str = r#"<?php
ini_set('memcast.lock_expire', 2);
session_start();
file_put_contents(__DIR__ . '/holder.pid', getmypid());
sleep(60);
"#;

const READ_AND_CLOSE: &str = r#"<?php
session_start(['read_and_close' => true]);
sleep(2);
echo "slow done\n";
"#;

const ABORT: &str = r#"<?php
session_start();
session_abort();
sleep(2);
echo "slow done\n";
"#;

fn stack(memcached: &Memcached) -> WebStack {
    let extension = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libmemcast.so");
    assert!(extension.exists(), "run `make build` first");
    let ini = [("session.save_path", memcached.addr())];
    let pages = [
        ("counter.php", COUNTER),
        ("hold.php", HOLD),
        ("read_and_close.php", READ_AND_CLOSE),
        ("abort.php", ABORT),
    ];
    WebStack::start(&extension, &ini, &pages, 10)
}

/// 50 concurrent requests of one session; returns the final counter and the
/// lock waits (ms) of each request.
fn fifty_increments(web: &WebStack, session: &str, lock: u8) -> (u32, Vec<f64>) {
    let replies: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(move || web.get(&format!("/counter.php?lock={lock}"), session)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut waits = Vec::new();
    for (status, body) in &replies {
        assert_eq!(*status, 200, "{body}\n{}", web.log());
        let wait = body
            .split("wait=")
            .nth(1)
            .and_then(|w| w.trim().parse::<f64>().ok());
        waits.push(wait.unwrap_or_else(|| panic!("odd reply {body:?}")));
    }
    let (_, last) = web.get(&format!("/counter.php?lock={lock}"), session);
    let n: u32 = last
        .split("n=")
        .nth(1)
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    (n - 1, waits)
}

#[test]
fn fifty_concurrent_requests_lose_nothing_with_the_lock_and_something_without() {
    let memcached = Memcached::start();
    let web = stack(&memcached);
    let (with_lock, mut waits) = fifty_increments(&web, "fpmlockon0000000000000000000000", 1);
    let (without, _) = fifty_increments(&web, "fpmlockoff000000000000000000000", 0);
    waits.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "locking on: counter {with_lock}/50, lock wait ms p50={:.1} p90={:.1} p99={:.1} max={:.1}; locking off: counter {without}/50",
        waits[24], waits[44], waits[49], waits[49]
    );
    assert_eq!(with_lock, 50, "{}", web.log());
    assert!(without < 50, "without the lock no update was lost ({without}/50): the test does not prove the lock matters");
}

#[test]
fn a_worker_killed_while_holding_the_lock_frees_the_session_after_lock_expire() {
    let memcached = Memcached::start();
    let web = stack(&memcached);
    let session = "fpmkilled00000000000000000000000";
    let pid_file = web.dir.path.join("www/holder.pid");
    std::thread::scope(|s| {
        let held = s.spawn(|| web.get("/hold.php", session));
        let pid = eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(&pid_file).ok()
        })
        .expect("hold.php never ran");
        // SIGKILL by PID: no shutdown, no release; only the lock's expiry helps.
        assert!(std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success());
        let started = Instant::now();
        let (status, body) = web.get("/counter.php?expire=2", session);
        let took = started.elapsed();
        println!(
            "after the holder was killed: {status} {} in {took:?}",
            body.trim()
        );
        assert_eq!(status, 200, "{body}\n{}", web.log());
        assert!(body.starts_with("n=1 "), "{body}");
        assert!(
            took < Duration::from_secs(10),
            "the session stayed locked for {took:?}"
        );
        let (status, _) = held.join().unwrap();
        assert_ne!(status, 200, "the killed request cannot have completed");
    });
}

#[test]
fn read_and_close_and_session_abort_release_the_lock_at_once() {
    let memcached = Memcached::start();
    let web = &stack(&memcached);
    for (page, session) in [
        ("/read_and_close.php", "fpmrac0000000000000000000000000"),
        ("/abort.php", "fpmabort00000000000000000000000"),
    ] {
        std::thread::scope(|s| {
            let started = Instant::now();
            let slow = s.spawn(move || {
                let r = web.get(page, session);
                (r, started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(300));
            let (status, body) = web.get("/counter.php", session);
            let fast = started.elapsed();
            let ((slow_status, slow_body), slow_took) = slow.join().unwrap();
            println!("{page}: the other request finished after {fast:?}, the page itself after {slow_took:?}");
            assert_eq!((status, slow_status), (200, 200), "{body} {slow_body}");
            assert!(fast < slow_took, "{page} held the lock through its sleep");
        });
    }
}
