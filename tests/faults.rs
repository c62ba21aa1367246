//! Replication that loses nothing: three hosts over real PGM, a few thousand
//! session writes, one fault each, then every replica must hold identical
//! sessions (`memcastd verify`). Each test prints the frames written, gaps
//! seen, frames repaired and resyncs. Needs root and `make build`.

use std::path::Path;
use std::time::{Duration, Instant};

use memcast_testkit::cluster::{finish_writers, Artifacts, Cluster, Publish};

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// PHP on one host writing `n` sessions out of a pool of 300 shared by all
/// hosts (so hosts overwrite each other's sessions), `pause_us` apart.
fn writer(host: usize, n: usize, pause_us: u64) -> String {
    format!(
        r#"$ok = 0; $t0 = microtime(true);
        for ($i = 0; $i < {n}; $i++) {{
            session_id(sprintf("fault%027d", ($i * 7 + {host}) % 300));
            session_start();
            $_SESSION["last"] = "host{host} write $i";
            $_SESSION["payload"] = str_repeat("x|y", 60);
            $_SESSION["n"] = ($_SESSION["n"] ?? 0) + 1;
            if (session_write_close()) {{ $ok++; }}
            usleep({pause_us});
        }}
        fprintf(STDERR, "host{host}: %d writes in %.2f s\n", {n}, microtime(true) - $t0);
        echo "written=$ok\n";"#
    )
}

/// Runs one writer per host at once; returns the writes PHP reported stored.
fn write_everywhere(cluster: &Cluster, n: usize, pause_us: u64, during: impl FnOnce()) -> usize {
    let children: Vec<_> = (0..cluster.sites.len())
        .map(|i| cluster.spawn_php(i, &writer(i + 1, n, pause_us)))
        .collect();
    during();
    finish_writers(children)
}

/// Waits up to `within` for every replica to hold the same sessions, stops
/// the daemons, prints the counters and the verify summary, asserts zero
/// differences; returns the verify report.
fn assert_converged(name: &str, cluster: &mut Cluster, written: usize, within: Duration) -> String {
    let result = cluster.converge(within);
    let (c, logs) = cluster.stop_and_count();
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    println!(
        "{name}: written={written} received={} relayed={} gaps={} missing_frames={} frames_repaired={} repairs_gone={} resyncs={} resync_entries={} out_of_sync={} anti_entropy_buckets={} anti_entropy_entries={}",
        get("received"),
        get("relayed"),
        get("gaps"),
        get("missing_frames"),
        get("frames_repaired"),
        get("repairs_gone"),
        get("resyncs"),
        get("resync_entries"),
        get("out_of_sync"),
        get("anti_entropy_buckets"),
        get("anti_entropy_entries"),
    );
    let report =
        result.unwrap_or_else(|r| panic!("{name}: replicas never converged:\n{r}\nlogs:\n{logs}"));
    println!("{name}: {}", report.lines().last().unwrap_or_default());
    assert!(report.contains(" 0 differences"), "{report}");
    report
}

/// The writer tests' 300 shared sessions (plus the start-up probes).
fn assert_all_sessions(report: &str) {
    assert!(
        report.contains("300 keys") || report.contains("303 keys"),
        "{report}"
    );
}

#[test]
fn five_percent_loss_on_one_link() {
    let mut cluster = Cluster::start("fl", 3, Publish::Relay, artifacts());
    cluster.net().set_loss(2, 5);
    let written = write_everywhere(&cluster, 1000, 0, || {});
    let report = assert_converged("5% loss", &mut cluster, written, Duration::from_secs(120));
    assert_all_sessions(&report);
}

#[test]
fn one_link_down_for_ten_seconds() {
    let mut cluster = Cluster::start("fd", 3, Publish::Relay, artifacts());
    // Replication across a partition, not the lock (tests/cluster_lock.rs).
    cluster.lock_per_host();
    let written = write_everywhere(&cluster, 1000, 12_000, || {
        std::thread::sleep(Duration::from_secs(1));
        cluster.net().set_link(2, false);
        std::thread::sleep(Duration::from_secs(10));
        cluster.net().set_link(2, true);
    });
    let report = assert_converged(
        "link down 10 s",
        &mut cluster,
        written,
        Duration::from_secs(120),
    );
    assert_all_sessions(&report);
}

#[test]
fn memcastd_killed_and_restarted_during_the_writes() {
    let mut cluster = Cluster::start("fk", 3, Publish::Relay, artifacts());
    // PHP on host 3 warns while its memcastd is away (frames dropped, sessions
    // stored locally): the writers do not treat that as failure.
    let children: Vec<_> = (0..3)
        .map(|i| cluster.spawn_php(i, &writer(i + 1, 1000, 4_000)))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    cluster.kill_memcastd(2);
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    cluster.start_memcastd(2);
    println!("memcastd on host 3 was down {:?}", down.elapsed());
    let written = finish_writers(children);
    assert_eq!(
        written, 3000,
        "every write is stored locally even while memcastd is away"
    );
    let report = assert_converged(
        "memcastd killed",
        &mut cluster,
        written,
        Duration::from_secs(120),
    );
    assert_all_sessions(&report);
}

#[test]
fn php_processes_publishing_directly_and_exiting_after_every_write() {
    let mut cluster = Cluster::start("fx", 3, Publish::Direct, artifacts());
    let started = Instant::now();
    let written: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let cluster = &cluster;
                s.spawn(move || {
                    (0..100)
                        .map(|w| {
                            // One PHP process per write, as php-fpm with pm.max_requests = 1.
                            let code = format!(
                                r#"session_id(sprintf("fault%027d", ({w} * 7 + {h}) % 300));
                                   session_start(); $_SESSION["last"] = "host{h} process {w}";
                                   echo session_write_close() ? "ok" : "failed";"#,
                                h = i + 1
                            );
                            let out = cluster.php_output(i, &code);
                            usize::from(String::from_utf8_lossy(&out.stdout).trim() == "ok")
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!("300 PHP processes in {:?}", started.elapsed());
    assert_eq!(written, 300);
    // 300 writes over at most 300 sessions, written by their last process.
    assert_converged(
        "direct, process per write",
        &mut cluster,
        written,
        Duration::from_secs(30),
    );
}

#[test]
fn two_hosts_writing_one_session_concurrently_converge() {
    let mut cluster = Cluster::start("f2", 3, Publish::Relay, artifacts());
    let one_session = |h: usize| {
        format!(
            r#"for ($i = 0; $i < 500; $i++) {{
                session_id("contended000000000000000000000000");
                session_start();
                $_SESSION["last"] = "host{h} write $i";
                $_SESSION["host{h}"] = $i;
                session_write_close();
            }}"#
        )
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| cluster.php(0, &one_session(1)));
        let b = s.spawn(|| cluster.php(1, &one_session(2)));
        a.join().unwrap();
        b.join().unwrap();
    });
    assert_converged(
        "one session, two writers",
        &mut cluster,
        1000,
        Duration::from_secs(30),
    );
    let key = "memcast.sess.contended000000000000000000000000";
    let values: Vec<_> = (0..3).map(|i| cluster.raw(i, key)).collect();
    assert!(
        values[0].is_some() && values.iter().all(|v| v == &values[0]),
        "replicas differ"
    );
}
