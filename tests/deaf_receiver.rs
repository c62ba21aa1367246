//! Receivers that fall behind one sender, and what memcast does about it.
//!
//! A receiver deaf to one sender: host 3 hears nothing of host 1 on the
//! group (its multicast dropped on arrival; TCP still flows), as a PGM
//! receiver stuck on one sender after loss looks from outside. Host 3 gets
//! host 1's writes by catch-up from host 1's ring, sees that the origin
//! answers catch-up after catch-up while the group brings nothing of it, and
//! joins the group again with a new receiver: once (at most one rejoin per
//! 30 s), and when the path is back, host 1's writes reach it on the group,
//! not by catch-up.
//!
//! A peer that lags refills a restarted memcached: the warm-up's snapshot
//! lacks the last writes the peer has not got yet, which the restarted
//! host had applied before; they come again from their origin's ring.
//!
//! Its own file: one cluster at a time on the two cores. Needs root and
//! `make build`.

use std::path::Path;
use std::time::Duration;

use memcast_testkit::cluster::{finish_writers, unique_writes, Artifacts, Cluster, Setup};
use memcast_testkit::eventually;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Host `i`'s /metrics.
fn scrape(cluster: &Cluster, i: usize) -> Vec<memcastd::metrics::Sample> {
    let addr = format!("{}:9477", cluster.sites[i].host.addr);
    let page = memcastd::metrics::scrape(&addr, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("scrape {addr}: {e}"));
    memcastd::metrics::parse(&page)
}

/// Host `i`'s counter `name`.
fn counter(cluster: &Cluster, i: usize, name: &str) -> f64 {
    let series = format!("memcast_{name}_total");
    scrape(cluster, i)
        .into_iter()
        .find(|s| s.name == series && s.labels.is_empty())
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no {series} on host {}", i + 1))
}

/// Relays host `i` hears now: origins whose last frame (a heartbeat at
/// least, every 200 ms) came within the last second.
fn relays_heard(cluster: &Cluster, i: usize) -> usize {
    scrape(cluster, i)
        .into_iter()
        .filter(|s| s.name == "memcast_origin_idle_ms" && s.value < 1000.0)
        .count()
}

#[test]
fn a_receiver_deaf_to_one_sender_rejoins_the_group_once_and_hears_it_again() {
    let mut cluster = Cluster::start_setup(
        "dr",
        3,
        Setup::RECOMMENDED,
        artifacts(),
        vec!["--metrics".into(), "0.0.0.0:9477".into()],
    );
    // Replication, not the lock (tests/cluster_lock.rs).
    cluster.lock_per_host();
    // An origin never heard is not known to be silent: host 3 hears both
    // other relays first.
    let heard = eventually(Duration::from_secs(10), || {
        (relays_heard(&cluster, 2) >= 2).then_some(())
    });
    assert!(heard.is_some(), "host 3 never heard both other relays");
    cluster.net().deafen(3, 1);
    // Host 1 writes for about 12 s; host 3 hears none of it on the group.
    let writer = cluster.spawn_php(0, &unique_writes("dr", 1, 200, 60_000));
    let rejoined = eventually(Duration::from_secs(30), || {
        cluster
            .memcastd_log(2)
            .contains("joined the group again")
            .then_some(())
    });
    assert!(
        rejoined.is_some(),
        "host 3 never joined the group again:\n{}",
        cluster.memcastd_log(2)
    );
    assert_eq!(finish_writers(vec![writer]), 200, "PHP stores every write");
    // Still deaf: what host 3 holds of host 1 came by catch-up.
    let whole = eventually(Duration::from_secs(20), || {
        (0..200)
            .all(|i| cluster.raw(2, &format!("memcast.sess.dr1-{i}")).is_some())
            .then_some(())
    });
    assert!(whole.is_some(), "host 3 lacks host 1's writes");
    let caught_up = counter(&cluster, 2, "frames_caught_up");
    assert!(caught_up > 0.0, "host 3 caught up nothing while deaf");
    assert_eq!(
        counter(&cluster, 2, "group_rejoins"),
        1.0,
        "one rejoin: the second deaf stretch fell within 30 s of the first"
    );
    // Heard again: host 1's next writes come on the group, none by catch-up.
    cluster.net().hear_again(3);
    std::thread::sleep(Duration::from_secs(3));
    let before = counter(&cluster, 2, "frames_caught_up");
    let out = cluster.php_output(0, &unique_writes("da", 1, 50, 40_000));
    assert_eq!(
        memcast_testkit::cluster::written(&out),
        50,
        "PHP stores every write"
    );
    let arrived = eventually(Duration::from_secs(10), || {
        (0..50)
            .all(|i| cluster.raw(2, &format!("memcast.sess.da1-{i}")).is_some())
            .then_some(())
    });
    assert!(arrived.is_some(), "host 3 lacks host 1's later writes");
    let after = counter(&cluster, 2, "frames_caught_up");
    assert_eq!(
        after, before,
        "host 3 got host 1's writes by catch-up after the path was back"
    );
    let converged = cluster.converge(Duration::from_secs(60));
    let (by_host, logs) = cluster.stop_and_count_by_host();
    let get = |h: usize, k: &str| by_host[h].get(k).copied().unwrap_or(0);
    println!(
        "deaf receiver: host 3 frames_caught_up={} group_rejoins={} received={}; hosts 1, 2 group_rejoins={} {}",
        get(2, "frames_caught_up"),
        get(2, "group_rejoins"),
        get(2, "received"),
        get(0, "group_rejoins"),
        get(1, "group_rejoins"),
    );
    let report =
        converged.unwrap_or_else(|r| panic!("replicas never converged:\n{r}\nlogs:\n{logs}"));
    assert!(report.contains(" 0 differences"), "{report}");
    assert_eq!(
        (get(0, "group_rejoins"), get(1, "group_rejoins")),
        (0, 0),
        "hosts that heard everyone rejoined"
    );
}

#[test]
fn a_restarted_memcached_is_whole_at_once_even_when_the_peer_refilling_it_lags() {
    // Production's anti-entropy interval: only the replay can make host 1
    // whole before the digest comparison 7 s after its warm-up.
    let mut cluster = Cluster::start_setup(
        "lp",
        3,
        Setup::RECOMMENDED,
        artifacts(),
        vec![
            "--metrics".into(),
            "0.0.0.0:9477".into(),
            "--anti-entropy-interval".into(),
            "300".into(),
        ],
    );
    cluster.lock_per_host();
    let heard = eventually(Duration::from_secs(10), || {
        (relays_heard(&cluster, 0) >= 2).then_some(())
    });
    assert!(heard.is_some(), "host 1 never heard both other relays");
    // Host 2, the first peer host 1 refills from, gets nothing of host 3.
    cluster.net().cut(2, 3);
    let out = cluster.php_output(2, &unique_writes("lp", 3, 60, 50_000));
    assert_eq!(
        memcast_testkit::cluster::written(&out),
        60,
        "PHP stores every write"
    );
    let key = |i: usize| format!("memcast.sess.lp3-{i}");
    let all_on =
        |cluster: &Cluster, host: usize| (0..60).all(|i| cluster.raw(host, &key(i)).is_some());
    assert!(
        eventually(Duration::from_secs(10), || all_on(&cluster, 0)
            .then_some(()))
        .is_some(),
        "host 1 never got host 3's writes"
    );
    assert!(
        (0..60).all(|i| cluster.raw(1, &key(i)).is_none()),
        "host 2 was meant to lag: it holds host 3's writes"
    );
    cluster.restart_memcached(0);
    let restarted = std::time::Instant::now();
    let whole = eventually(Duration::from_secs(5), || all_on(&cluster, 0).then_some(()));
    let took = restarted.elapsed();
    let missing = (0..60)
        .filter(|&i| cluster.raw(0, &key(i)).is_none())
        .count();
    assert!(
        whole.is_some(),
        "host 1 lacked {missing} of host 3's 60 writes 5 s after its memcached restarted:\n{}",
        cluster.memcastd_log(0)
    );
    let replayed = counter(&cluster, 0, "frames_replayed");
    println!(
        "lagging peer: host 1 whole {:.2} s after its memcached restarted; frames_replayed={replayed}",
        took.as_secs_f64()
    );
    assert!(
        replayed >= 60.0,
        "whole, but not by the replay ({replayed})"
    );
    cluster.net().uncut(2);
    let converged = cluster.converge(Duration::from_secs(60));
    let (_, logs) = cluster.stop_and_count_by_host();
    let report =
        converged.unwrap_or_else(|r| panic!("replicas never converged:\n{r}\nlogs:\n{logs}"));
    assert!(report.contains(" 0 differences"), "{report}");
}
