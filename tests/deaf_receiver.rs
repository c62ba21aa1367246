//! Receivers that fall behind one sender, and what memcast does about it.
//!
//! A receiver deaf to one sender: host 3 hears nothing of host 1 on the
//! group (its multicast dropped on arrival; TCP still flows), as a PGM
//! receiver stuck on one sender after loss looks from outside. Host 3 gets
//! host 1's writes by catch-up from host 1's ring, sees that the origin
//! answers catch-up after catch-up while the group brings nothing of it, and
//! joins the group again with a new receiver (and again no sooner than 10 s
//! later, the wait doubling while it recurs); when the path is back, host
//! 1's writes reach it on the group, not by catch-up.
//!
//! A receiver deaf to one sender from its start never hears that relay at
//! all, so it cannot tell it is silent: it asks each configured peer whose
//! relay it does not follow for that relay's heartbeat over TCP, and
//! follows it from then on by catch-up.
//!
//! A peer that lags refills a restarted memcached: the warm-up's snapshot
//! lacks the last writes the peer has not got yet, which the restarted
//! host had applied (or, its own, stored) before; they come again from
//! their origin's ring, this host's own included.
//!
//! Its own file: one cluster at a time on the two cores. Needs root and
//! `make build`.

use std::path::Path;
use std::time::Duration;

use memcast_testkit::cluster::{
    finish_writers, unique_writes, Artifacts, Cluster, Setup, REPAIR_PORT,
};
use memcast_testkit::eventually;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// The recommended setup with /metrics and anti-entropy at its production
/// interval: the tests' 5 s would bring missing writes by digest comparison
/// and hide what the test is about.
fn production_anti_entropy(tag: &str) -> Cluster {
    Cluster::start_setup(
        tag,
        3,
        Setup::RECOMMENDED,
        artifacts(),
        vec![
            "--metrics".into(),
            "0.0.0.0:9477".into(),
            "--anti-entropy-interval".into(),
            "300".into(),
        ],
    )
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
fn a_receiver_deaf_to_one_sender_rejoins_the_group_and_hears_it_again() {
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
    let deaf_since = std::time::Instant::now();
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
        (cluster.unique_writes_held(2, "dr", 1, 200) == 200).then_some(())
    });
    assert!(whole.is_some(), "host 3 lacks host 1's writes");
    let caught_up = counter(&cluster, 2, "frames_caught_up");
    assert!(caught_up > 0.0, "host 3 caught up nothing while deaf");
    // Heard again: host 1's next writes come on the group, none by catch-up.
    cluster.net().hear_again(3);
    let deaf = deaf_since.elapsed().as_secs_f64();
    // The k-th rejoin comes no sooner than 10 s × (2^(k-1) - 1) after the
    // first (the wait doubles from 10 s while deafness recurs).
    let most = 1
        + (1..)
            .take_while(|k| 10.0 * (2f64.powi(*k) - 1.0) <= deaf)
            .count();
    let rejoins = counter(&cluster, 2, "group_rejoins") as usize;
    assert!(
        (1..=most).contains(&rejoins),
        "{rejoins} rejoins in {deaf:.1} s of deafness (at most {most})"
    );
    std::thread::sleep(Duration::from_secs(3));
    let before = counter(&cluster, 2, "frames_caught_up");
    let out = cluster.php_output(0, &unique_writes("da", 1, 50, 40_000));
    assert_eq!(
        memcast_testkit::cluster::written(&out),
        50,
        "PHP stores every write"
    );
    let arrived = eventually(Duration::from_secs(10), || {
        (cluster.unique_writes_held(2, "da", 1, 50) == 50).then_some(())
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
    let mut cluster = production_anti_entropy("lp");
    cluster.lock_per_host();
    let heard = eventually(Duration::from_secs(10), || {
        (relays_heard(&cluster, 0) >= 2).then_some(())
    });
    assert!(heard.is_some(), "host 1 never heard both other relays");
    // Host 2, the first peer host 1 refills from, gets nothing of host 1's
    // or host 3's writes (and still serves host 1).
    cluster.net().starve(2, &[1, 3], REPAIR_PORT);
    let writers = vec![
        cluster.spawn_php(0, &unique_writes("lp", 1, 60, 50_000)),
        cluster.spawn_php(2, &unique_writes("lp", 3, 60, 50_000)),
    ];
    assert_eq!(finish_writers(writers), 120, "PHP stores every write");
    let held = |cluster: &Cluster, at: usize| {
        cluster.unique_writes_held(at, "lp", 1, 60) + cluster.unique_writes_held(at, "lp", 3, 60)
    };
    assert!(
        eventually(Duration::from_secs(10), || (held(&cluster, 0) == 120)
            .then_some(()))
        .is_some(),
        "host 1 never held its own and host 3's writes"
    );
    assert_eq!(
        held(&cluster, 1),
        0,
        "host 2 was meant to lag: it holds some"
    );
    cluster.restart_memcached(0);
    let restarted = std::time::Instant::now();
    let whole = eventually(Duration::from_secs(5), || {
        (held(&cluster, 0) == 120).then_some(())
    });
    let took = restarted.elapsed();
    assert!(
        whole.is_some(),
        "host 1 held {} of the 120 writes (its own and host 3's) 5 s after its memcached restarted:\n{}",
        held(&cluster, 0),
        cluster.memcastd_log(0)
    );
    let replayed = counter(&cluster, 0, "frames_replayed");
    println!(
        "lagging peer: host 1 whole {:.2} s after its memcached restarted; frames_replayed={replayed}",
        took.as_secs_f64()
    );
    assert!(
        replayed >= 120.0,
        "whole, but not by the replay ({replayed})"
    );
    cluster.net().unstarve(2);
    let converged = cluster.converge(Duration::from_secs(60));
    let (_, logs) = cluster.stop_and_count_by_host();
    let report =
        converged.unwrap_or_else(|r| panic!("replicas never converged:\n{r}\nlogs:\n{logs}"));
    assert!(report.contains(" 0 differences"), "{report}");
}

#[test]
fn a_receiver_deaf_to_a_sender_from_its_start_learns_the_relay_from_the_peer_and_catches_up() {
    let mut cluster = production_anti_entropy("du");
    cluster.lock_per_host();
    // Host 3's memcastd starts again deaf to host 1: it never hears host 1's
    // relay on the group, not even once.
    cluster.net().deafen(3, 1);
    cluster.kill_memcastd(2);
    cluster.start_memcastd(2);
    let learnt = eventually(Duration::from_secs(15), || {
        (counter(&cluster, 2, "relays_learnt_by_tcp") >= 1.0).then_some(())
    });
    assert!(
        learnt.is_some(),
        "host 3 never learnt host 1's relay:\n{}",
        cluster.memcastd_log(2)
    );
    assert!(
        cluster
            .memcastd_log(2)
            .contains("is not heard on the group here"),
        "no warning on host 3:\n{}",
        cluster.memcastd_log(2)
    );
    let out = cluster.php_output(0, &unique_writes("du", 1, 100, 20_000));
    assert_eq!(
        memcast_testkit::cluster::written(&out),
        100,
        "PHP stores every write"
    );
    let whole = eventually(Duration::from_secs(15), || {
        (cluster.unique_writes_held(2, "du", 1, 100) == 100).then_some(())
    });
    assert!(
        whole.is_some(),
        "host 3 holds {} of host 1's 100 writes:\n{}",
        cluster.unique_writes_held(2, "du", 1, 100),
        cluster.memcastd_log(2)
    );
    assert!(
        counter(&cluster, 2, "frames_caught_up") >= 1.0,
        "host 3 got host 1's writes some other way than catch-up"
    );
    // Host 2 hears everyone: it asked nobody.
    assert_eq!(counter(&cluster, 1, "relays_learnt_by_tcp"), 0.0);
    assert_eq!(counter(&cluster, 2, "relays_learnt_by_tcp"), 1.0);
    let (by_host, _) = cluster.stop_and_count_by_host();
    println!(
        "deaf from the start: host 3 relays_learnt_by_tcp={} frames_caught_up={} group_rejoins={}",
        by_host[2].get("relays_learnt_by_tcp").copied().unwrap_or(0),
        by_host[2].get("frames_caught_up").copied().unwrap_or(0),
        by_host[2].get("group_rejoins").copied().unwrap_or(0),
    );
}
