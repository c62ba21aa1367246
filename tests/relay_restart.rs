//! A relay restart loses no acknowledged write. A long-lived PHP process on
//! host 2 (a php-fpm worker's life: one publisher socket for many requests)
//! writes a session every few tens of milliseconds while host 2's memcastd
//! is SIGKILLed and started again 2 s later; then it stays alive without
//! writing, as an idle worker does, so nothing it might send again later
//! can help. Every session it wrote must reach hosts 1 and 3, with
//! anti-entropy off and the periodic resync far away (so only the relay and
//! what peers pull from a restarted relay can carry them).
//! Needs root and `make build`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use memcast_testkit::cluster::{Artifacts, Cluster, Publish};
use memcast_testkit::eventually;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Writes `rr2-<i>` for `WRITE_MS`, one every ~40 ms, printing `<ms> <i>`
/// per acknowledged write, then its publisher's phpinfo counters and
/// `idle`, then idles (publisher still open) until stdin closes.
const WRITER: &str = r#"
// Warnings (a dropped frame) are passed on, without sending headers.
while (ob_get_level()) { ob_end_clean(); }
ob_start();
$t0 = hrtime(true); $i = 0;
while (hrtime(true) - $t0 < WRITE_MS * 1e6) {
    session_id("rr2-$i");
    session_start();
    $_SESSION["i"] = $i;
    $_SESSION["host"] = 2;
    if (session_write_close()) { fprintf(STDOUT, "%d %d\n", intdiv(hrtime(true) - $t0, 1000000), $i); }
    $printed = ob_get_contents();
    if ($printed !== '') { ob_clean(); fwrite(STDOUT, $printed); }
    $i++;
    usleep(40000);
}
ob_clean(); phpinfo(INFO_MODULES); $info = ob_get_clean();
foreach (explode("\n", $info) as $l) {
    if (preg_match('/^(Frames published|Publish drops|Dropped sessions sent again) => (\d+)/', $l, $m)) {
        fwrite(STDOUT, "counter $m[1] = $m[2]\n");
    }
}
fwrite(STDOUT, "idle\n");
fgets(STDIN);
"#;

#[test]
fn writes_of_a_long_lived_process_reach_every_host_across_a_relay_restart() {
    memcast_testkit::require_root("the relay restart test (network namespaces)");
    let args = ["--anti-entropy-interval", "0", "--resync-interval", "300"]
        .map(String::from)
        .to_vec();
    let mut cluster = Cluster::start_with("rr", 3, Publish::Relay, artifacts(), args);
    // Killed 2.5 s in, back 2 s later; the last write is about 0.9 s after
    // that, and the writer then idles: what it could not hand over is not
    // sent again by a later write.
    let code = WRITER.replace("WRITE_MS", "5400");
    let mut writer = cluster
        .php_command(1, &code)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start php");
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    cluster.kill_memcastd(1);
    std::thread::sleep(Duration::from_secs(2));
    let restarted_ms = started.elapsed().as_millis();
    cluster.start_memcastd(1);
    let stdout = writer.stdout.take().expect("piped stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut written: Vec<(u64, usize)> = Vec::new();
    let mut counters = Vec::new();
    let mut printed = Vec::new();
    loop {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) else {
            let _ = writer.kill();
            panic!(
                "the writer stopped answering after {} writes",
                written.len()
            );
        };
        if line == "idle" {
            break;
        }
        if line.starts_with("counter") {
            counters.push(line);
        } else if let Some((ms, i)) = line
            .split_once(' ')
            .and_then(|(ms, i)| Some((ms.parse().ok()?, i.parse().ok()?)))
        {
            written.push((ms, i));
        } else if !line.trim().is_empty() {
            // PHP's warnings (a dropped frame is one).
            printed.push(line);
        }
    }
    assert!(
        written.len() > 90,
        "the writer wrote too little: {written:?}; it printed {printed:?}"
    );
    let missing_on = |at: usize| -> Vec<(u64, usize)> {
        written
            .iter()
            .copied()
            .filter(|&(_, i)| {
                !cluster
                    .raw(at, &format!("memcast.sess.rr2-{i}"))
                    .is_some_and(|raw| raw.ends_with(format!("i|i:{i};host|i:2;").as_bytes()))
            })
            .collect()
    };
    let missing = eventually(Duration::from_secs(5), || {
        let m = [missing_on(0), missing_on(2)];
        m.iter().all(|m| m.is_empty()).then_some(m.clone())
    })
    .unwrap_or_else(|| [missing_on(0), missing_on(2)]);
    // The writer may go now (its stdin closes).
    drop(writer.stdin.take());
    let _ = writer.wait();
    let (by_host, logs) = cluster.stop_and_count_by_host();
    let relayed: Vec<u64> = by_host
        .iter()
        .map(|c| c.get("relayed").copied().unwrap_or(0))
        .collect();
    println!(
        "{} writes acknowledged on host 2 (its memcastd killed 2.5 s in, back at {restarted_ms} ms); {counters:?}; \
         relayed by each memcastd at exit: {relayed:?}; missing on hosts 1 and 3: {} / {}; \
         e.g. (ms into the writer's run, session): {:?}; PHP printed: {printed:?}",
        written.len(),
        missing[0].len(),
        missing[1].len(),
        &missing[0][..missing[0].len().min(30)],
    );
    assert!(
        missing.iter().all(|m| m.is_empty()),
        "acknowledged writes never reached other hosts\n{logs}"
    );
}

/// A restarted memcastd refills its memcached from the first peer that
/// serves a snapshot, but that peer may lag (its multicast from some origin
/// stalled; it catches up from that origin's ring every few seconds), and
/// what it lacked was sent before this host heard the origin, so it is no
/// gap here. Host 1 (host 2's first peer) lacks a session host 3 holds:
/// soon after its warm-up, host 2 must hold it too, with anti-entropy off.
#[test]
fn a_warm_up_from_a_lagging_peer_is_completed_from_the_others() {
    memcast_testkit::require_root("the relay restart test (network namespaces)");
    let args = ["--anti-entropy-interval", "0", "--resync-interval", "300"]
        .map(String::from)
        .to_vec();
    let mut cluster = Cluster::start_with("rw", 3, Publish::Relay, artifacts(), args);
    cluster.php(
        0,
        r#"session_id("rw-0"); session_start(); $_SESSION["a"] = 1; session_write_close();"#,
    );
    // A write host 3 applied and host 1 has not yet: a second old.
    let version = memcast_core::Version {
        millis: memcast_core::unix_millis() - 1_000,
        counter: 0,
        origin: 7,
    };
    let data = b"only|s:12:\"host 3 has it\";";
    let stored = memcast_core::StoredValue::live(version, data).encode();
    let addr = memcast_core::ServerAddr::parse(&cluster.memcached_addr(2)).expect("address");
    memcast_core::Memcached::new(addr, memcast_core::Timeouts::default())
        .set(b"memcast.sess.rw-1", &stored, 3600)
        .expect("set on host 3");
    cluster.kill_memcastd(1);
    cluster.start_memcastd(1);
    let restarted = Instant::now();
    let held = eventually(Duration::from_secs(15), || {
        cluster
            .raw(1, "memcast.sess.rw-1")
            .filter(|raw| raw.ends_with(data))
            .map(|_| restarted.elapsed())
    });
    println!("host 2 held what only host 3 had after its warm-up: {held:?} after its restart");
    assert!(
        held.is_some(),
        "host 2 never got the session only host 3 held\n{}",
        cluster.logs()
    );
    assert!(
        cluster.raw(1, "memcast.sess.rw-0").is_some(),
        "the warm-up itself"
    );
}
