//! A restarted memcached refills itself from a peer while live writes keep
//! flowing, and no reader on that host notices. Three hosts over real PGM
//! (root, `make build` first).

use std::path::Path;
use std::time::{Duration, Instant};

use memcast_core::{Memcached, ServerAddr, StoredValue, Timeouts, Version};
use memcast_testkit::cluster::{Artifacts, Cluster, Publish};
use memcast_testkit::eventually;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

fn session_id(n: usize) -> String {
    format!("warm{n:028}")
}

/// `count` sessions of 1-4 KB, PHP-encoded, the same version everywhere:
/// written straight into every host's memcached (what replication would
/// have left there). Returns the bytes of one replica.
fn seed(cluster: &Cluster, count: usize) -> usize {
    let version = Version {
        millis: memcast_core::unix_millis() - 60_000,
        counter: 0,
        origin: 42,
    };
    let bytes: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = cluster
            .sites
            .iter()
            .map(|site| {
                let addr = format!("{}:11211", site.host.addr);
                s.spawn(move || {
                    let timeouts = Timeouts {
                        connect: Duration::from_secs(2),
                        io: Duration::from_secs(10),
                    };
                    let mut mc = Memcached::new(ServerAddr::parse(&addr).unwrap(), timeouts);
                    let mut total = 0;
                    for n in 0..count {
                        let pad = "p|".repeat((1000 + (n * 7919) % 3000) / 2);
                        let data = format!("n|i:{n};pad|s:{}:\"{pad}\";", pad.len());
                        let value = StoredValue::live(version, data.as_bytes()).encode();
                        total += value.len();
                        mc.set(
                            format!("memcast.sess.{}", session_id(n)).as_bytes(),
                            &value,
                            3600,
                        )
                        .unwrap();
                    }
                    total
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    bytes[0]
}

#[test]
fn restarted_memcached_refills_while_writes_flow_and_no_read_misses() {
    const SESSIONS: usize = 50_000;
    let mut cluster = Cluster::start("wu", 3, Publish::Relay, artifacts());
    assert!(
        cluster.wait_warm(Duration::from_secs(30)),
        "the new cluster never became warm"
    );
    let started = Instant::now();
    let bytes = seed(&cluster, SESSIONS);
    println!(
        "seeded {SESSIONS} sessions, {:.1} MB per replica, in {:?}",
        bytes as f64 / 1e6,
        started.elapsed()
    );
    if let Err(report) = cluster.converge(Duration::from_secs(60)) {
        panic!("seeded replicas differ:\n{report}");
    }

    // Writers on A and C keep going through the restart; a reader on B reads
    // known sessions over and over.
    let writer = |host: usize| {
        format!(
            r#"for ($i = 0; $i < 1500; $i++) {{
                session_id(sprintf("warm%028d", ($i * 37 + {host}) % {SESSIONS}));
                session_start();
                $_SESSION["written_by"] = "host{host} $i";
                session_write_close();
                usleep(3000);
            }}
            echo "done\n";"#
        )
    };
    let reader = format!(
        r#"$missing = 0; $reads = 0; $t = microtime(true);
        while (microtime(true) - $t < 25) {{
            for ($k = 0; $k < 200; $k++) {{
                $n = mt_rand(0, {SESSIONS} - 1);
                session_id(sprintf("warm%028d", $n));
                session_start(["read_and_close" => true]);
                $reads++;
                if (!isset($_SESSION["n"]) || $_SESSION["n"] !== $n) {{ $missing++; }}
                if (file_exists("{stop}")) {{ break 2; }}
            }}
        }}
        echo "reads=$reads missing=$missing\n";"#,
        stop = cluster.dir.path.join("stop-reader").display()
    );
    let writers: Vec<_> = [0, 2]
        .iter()
        .map(|&i| cluster.spawn_php(i, &writer(i + 1)))
        .collect();
    let reader = cluster.spawn_php(1, &reader);
    std::thread::sleep(Duration::from_millis(500));

    let restarted = Instant::now();
    cluster.restart_memcached(1);
    let warm = eventually(Duration::from_secs(90), || {
        cluster.raw(1, "memcast:warm").map(|_| ())
    });
    let warm_after = restarted.elapsed();
    assert!(
        warm.is_some(),
        "host B never became warm:\n{}",
        cluster.memcastd_log(1)
    );

    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    }
    std::fs::write(cluster.dir.path.join("stop-reader"), "").unwrap();
    let out = String::from_utf8_lossy(&reader.wait_with_output().unwrap().stdout).into_owned();
    let log = cluster.memcastd_log(1);
    println!("reader on B: {}", out.trim());
    println!("warm after {warm_after:?} from the restart");
    if std::env::var("WARMUP_DEBUG").is_ok() {
        println!(
            "FULL B LOG:\n{log}\nFULL A LOG:\n{}",
            cluster.memcastd_log(0)
        );
        println!("restart at {:?} before now", restarted.elapsed());
    }
    // What B's memcastd did from the restart on.
    let since_restart = log
        .split_once("memcached restarted (it is empty)")
        .map_or("", |(_, rest)| rest);
    for line in since_restart
        .lines()
        .filter(|l| l.contains("warm") || l.contains("transfer") || l.contains("resync"))
    {
        println!("B: {line}");
    }
    let converged = cluster.converge(Duration::from_secs(120));
    let (c, logs) = cluster.stop_and_count();
    println!(
        "cold_detected={} warmups={} resync_entries={} applied={}",
        c.get("cold_detected").copied().unwrap_or(0),
        c.get("warmups").copied().unwrap_or(0),
        c.get("resync_entries").copied().unwrap_or(0),
        c.get("applied").copied().unwrap_or(0)
    );
    let report = converged.unwrap_or_else(|r| panic!("B did not converge:\n{r}\n{logs}"));
    println!("{}", report.lines().last().unwrap_or_default());
    assert!(
        report.contains(" 0 differences") && report.contains(&format!("{} keys", SESSIONS + 3)),
        "{report}"
    );
    assert!(
        out.contains("missing=0"),
        "a reader on B missed sessions: {out}"
    );
    assert!(
        log.contains("memcached restarted (it is empty)"),
        "the restart was not noticed:\n{log}"
    );
}

#[test]
fn warm_up_moves_to_the_next_peer_when_one_dies_mid_transfer() {
    const SESSIONS: usize = 20_000;
    // A slow transfer (5 MB/s) so that the peer can die in the middle of it.
    let args = vec!["--transfer-mbps".to_string(), "40".to_string()];
    let mut cluster = Cluster::start_with("wd", 3, Publish::Relay, artifacts(), args);
    assert!(
        cluster.wait_warm(Duration::from_secs(30)),
        "the new cluster never became warm"
    );
    seed(&cluster, SESSIONS);
    cluster.restart_memcached(1);
    // B's first peer is A: once B's transfer from A is under way, A's memcastd dies.
    let from_a = eventually(Duration::from_secs(20), || {
        let log = cluster.memcastd_log(1);
        log.lines()
            .any(|l| l.contains("warm-up") && l.contains(&cluster.repair_addr(0)))
            .then_some(())
    });
    assert!(
        from_a.is_some(),
        "B never started its warm-up from A:\n{}",
        cluster.memcastd_log(1)
    );
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill_memcastd(0);
    let warm = eventually(Duration::from_secs(90), || {
        cluster.raw(1, "memcast:warm").map(|_| ())
    });
    let log = cluster.memcastd_log(1);
    assert!(warm.is_some(), "B never became warm:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("resync from this peer failed")
                && l.contains(&cluster.repair_addr(0))),
        "the transfer from A did not fail midway:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("resync complete") && l.contains(&cluster.repair_addr(2))),
        "B did not complete from C:\n{log}"
    );
    let report = cluster
        .converge(Duration::from_secs(60))
        .unwrap_or_else(|r| panic!("{r}\n{log}"));
    println!(
        "peer died mid-transfer, finished from the next: {}",
        report.lines().last().unwrap_or_default()
    );
}
