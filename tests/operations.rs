//! Operating memcast: TCP mode on a network with no multicast at all (three
//! hosts, a link down for 10 s repaired after), and what `/metrics` and
//! `memcastd status` report during a three-host run. Needs root and
//! `make build`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use memcast_testkit::cluster::{
    finish_writers, unique_writes, written, Artifacts, Cluster, Publish,
};
use memcast_testkit::{eventually, require_root};

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

fn memcastd() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/memcastd")
}

#[test]
fn tcp_mode_replicates_with_no_multicast_route_and_repairs_a_link_down_for_10_s() {
    require_root("the TCP mode test (network namespaces)");
    let mut cluster = Cluster::start_tcp("tcp", 3, artifacts(), Vec::new());
    // Replication across a partition, not the lock (tests/cluster_lock.rs).
    cluster.lock_per_host();
    // There is no multicast here: a route lookup for the group fails.
    for site in &cluster.sites {
        let out = Command::new("ip")
            .args(["-n", &site.host.netns, "route", "get", "239.192.1.1"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{} still routes multicast: {}",
            site.host.netns,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Written on one host, read on the others (through PHP, from their own
    // memcached).
    cluster.php(
        0,
        r#"for ($i = 0; $i < 20; $i++) { session_id("tcpread$i"); session_start(); $_SESSION["v"] = "value $i|x"; session_write_close(); }"#,
    );
    for at in 1..3 {
        let read = eventually(Duration::from_secs(10), || {
            let out = cluster.php(
                at,
                r#"$n = 0; for ($i = 0; $i < 20; $i++) { session_id("tcpread$i"); session_start(["read_and_close" => true]); if (($_SESSION["v"] ?? "") === "value $i|x") $n++; } echo $n;"#,
            );
            (out.trim() == "20").then_some(())
        });
        assert!(
            read.is_some(),
            "host {} did not read all 20\n{}",
            at + 1,
            cluster.logs()
        );
    }
    // The sessions exist first: during the outage host 3 cannot confirm a
    // miss on any other server, so a session it has never held would not
    // start there (one warning, nothing written; see "A miss is not proof").
    const N: usize = 400;
    let created = finish_writers(cluster.start_unique_writers("tcp", N, 0));
    assert_eq!(created, 3 * N, "PHP reported failed writes");
    // All three write them again while host 3's link is down for 10 s.
    let started = Instant::now();
    let writers = cluster.start_unique_writers("tcp", N, 25_000);
    std::thread::sleep(Duration::from_secs(1));
    cluster.net().set_link(3, false);
    std::thread::sleep(Duration::from_secs(10));
    cluster.net().set_link(3, true);
    let total = finish_writers(writers);
    assert_eq!(total, 3 * N, "PHP reported failed writes");
    let converged = cluster.converge(Duration::from_secs(60));
    let took = started.elapsed();
    if let Err(report) = converged {
        panic!(
            "replicas differ after the link came back:\n{report}\n{}",
            cluster.logs()
        );
    }
    cluster.assert_unique_writes_everywhere("tcp", &[1, 2, 3], N);
    let (sums, logs) = cluster.stop_and_count();
    assert_eq!(sums["dropped_auth"] + sums["dropped_decode"], 0, "{logs}");
    assert!(
        sums["frames_repaired"] + sums["resync_entries"] + sums["anti_entropy_entries"] > 0,
        "a 10 s outage was not repaired by anything: {sums:?}"
    );
    println!(
        "tcp mode: {total} writes, link down 10 s, converged {:.1} s after the writers started; relayed={} applied={} gaps={} missing_frames={} frames_repaired={} resyncs={} resync_entries={} anti_entropy_entries={}",
        took.as_secs_f64(),
        sums["relayed"],
        sums["applied"],
        sums["gaps"],
        sums["missing_frames"],
        sums["frames_repaired"],
        sums["resyncs"],
        sums["resync_entries"],
        sums["anti_entropy_entries"]
    );
}

/// One scrape of host `i`'s /metrics: name{labels} -> value.
fn scrape(cluster: &Cluster, i: usize) -> Vec<(String, f64)> {
    let addr = format!("{}:9477", cluster.sites[i].host.addr);
    let page = memcastd::metrics::scrape(&addr, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("scrape {addr}: {e}"));
    memcastd::metrics::parse(&page)
        .into_iter()
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (format!("{}{{{}}}", s.name, labels.join(",")), s.value)
        })
        .collect()
}

fn metric(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(name, _)| name == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {series} in the scrape"))
}

fn status(addr: &str) -> (i32, String) {
    let out = Command::new(memcastd())
        .args(["status", "--metrics", addr])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn metrics_count_what_was_sent_and_applied_and_status_reports_health() {
    require_root("the metrics test (network namespaces)");
    let mut cluster = Cluster::start_with(
        "met",
        3,
        Publish::Relay,
        artifacts(),
        vec!["--metrics".into(), "0.0.0.0:9477".into()],
    );
    assert!(
        cluster.wait_warm(Duration::from_secs(30)),
        "{}",
        cluster.logs()
    );
    let before: Vec<_> = (0..3).map(|i| scrape(&cluster, i)).collect();
    const N: usize = 50;
    let out = cluster.php_output(0, &unique_writes("met", 1, N, 0));
    assert_eq!(written(&out), N);
    let applied = eventually(Duration::from_secs(10), || {
        (1..3)
            .all(|i| {
                metric(&scrape(&cluster, i), "memcast_applied_total{}")
                    - metric(&before[i], "memcast_applied_total{}")
                    >= N as f64
            })
            .then_some(())
    });
    assert!(applied.is_some(), "{}", cluster.logs());
    // The per-origin table is refreshed once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let after: Vec<_> = (0..3).map(|i| scrape(&cluster, i)).collect();
    let delta = |i: usize, series: &str| metric(&after[i], series) - metric(&before[i], series);
    assert_eq!(
        delta(0, "memcast_relayed_total{}"),
        N as f64,
        "host 1 relayed"
    );
    for (i, page) in after.iter().enumerate().skip(1) {
        assert_eq!(
            delta(i, "memcast_applied_total{}"),
            N as f64,
            "host {} applied",
            i + 1
        );
        assert_eq!(
            delta(i, "memcast_frames_dropped_total{reason=auth}"),
            0.0,
            "host {}",
            i + 1
        );
        assert!(delta(i, "memcast_replication_lag_seconds_count{}") >= N as f64);
        assert!(delta(i, "memcast_apply_latency_seconds_count{}") >= N as f64);
        assert_eq!(metric(page, "memcast_memcached_up{}"), 1.0);
        assert_eq!(metric(page, "memcast_memcached_warm{}"), 1.0);
        // Host 1's relay is among the origins, with its last sequence number.
        let relay_seq = page
            .iter()
            .filter(|(name, _)| name.starts_with("memcast_origin_last_seq{"))
            .map(|(_, v)| *v)
            .fold(0.0, f64::max);
        assert!(
            relay_seq >= N as f64,
            "host {}: last seq {relay_seq}",
            i + 1
        );
    }
    println!(
        "scraped: host 1 relayed +{N}; hosts 2 and 3 applied +{N} each, dropped 0; host 2 page has {} series",
        after[1].len()
    );
    let addr2 = format!("{}:9477", cluster.sites[1].host.addr);
    let (code, text) = status(&addr2);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("memcached    up, warm"), "{text}");
    assert!(text.contains("applied"), "{text}");
    assert!(
        text.contains("origin") && text.contains("last seq"),
        "{text}"
    );
    println!("memcastd status (host 2):\n{text}");
    // Host 2's memcached stops: status says so and exits 1.
    cluster.sites[1].memcached.kill();
    let down = eventually(Duration::from_secs(10), || {
        let (code, text) = status(&addr2);
        (code == 1 && text.contains("DOWN")).then_some(text)
    });
    assert!(
        down.is_some(),
        "status never reported memcached down: {:?}",
        status(&addr2)
    );
    // Nobody listening: exit 2.
    let (code, text) = status("127.0.0.1:1");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cannot reach"), "{text}");
}
