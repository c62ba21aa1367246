//! Three hosts (network namespaces on a bridge), each with its own memcached,
//! memcastd and PHP, replicating over real PGM multicast (epgm).
//!
//! Needs root and the release build (`make build`); `make test` runs it.

use std::path::Path;
use std::time::Duration;

use memcast_core::StoredValue;
use memcast_testkit::cluster::{Artifacts, Cluster, Publish};
use memcast_testkit::eventually;

fn cluster(tag: &str) -> Cluster {
    let artifacts = Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")));
    Cluster::start(tag, 3, Publish::Direct, artifacts)
}

const WRITE_SESSIONS: &str = r#"
    $ids = [];
    for ($i = 0; $i < 20; $i++) {
        session_id(sprintf("multihost%023d", $i));
        session_start();
        $_SESSION["i"] = $i;
        $_SESSION["text"] = "user|" . str_repeat("ab|", $i) . "\x00end";
        session_write_close();
    }
    echo "written\n";
"#;

const READ_SESSIONS: &str = r#"
    for ($i = 0; $i < 20; $i++) {
        session_id(sprintf("multihost%023d", $i));
        session_start();
        echo $i, ":", md5(serialize($_SESSION)), "\n";
        session_write_close();
    }
"#;

#[test]
fn write_on_host_a_is_read_on_hosts_b_and_c_and_survives_a_dead_memcached() {
    let mut cluster = cluster("mh");
    assert_eq!(cluster.php(0, WRITE_SESSIONS).trim(), "written");
    let on_a = cluster.php(0, READ_SESSIONS);
    assert_eq!(on_a.lines().count(), 20);
    // Replicated to B and C by their memcastd, byte for byte.
    for site in 1..3 {
        let replicated = eventually(Duration::from_secs(10), || {
            (0..20)
                .all(|i| {
                    cluster
                        .raw(site, &format!("memcast.sess.multihost{i:023}"))
                        .is_some()
                })
                .then_some(())
        });
        assert!(
            replicated.is_some(),
            "host {} misses sessions; logs:\n{}",
            site + 1,
            cluster.logs()
        );
        assert_eq!(
            cluster.php(site, READ_SESSIONS),
            on_a,
            "host {} reads different data",
            site + 1
        );
        for i in 0..20 {
            let key = format!("memcast.sess.multihost{i:023}");
            assert_eq!(
                cluster.raw(site, &key),
                cluster.raw(0, &key),
                "{key} differs on host {}",
                site + 1
            );
        }
    }

    // Host A's memcached dies: PHP on A reads and writes through B, no error.
    cluster.sites[0].memcached.kill();
    assert_eq!(
        cluster.php(0, READ_SESSIONS),
        on_a,
        "reads on A after its memcached died"
    );
    cluster.php(
        0,
        r#"for ($i = 0; $i < 20; $i++) {
            session_id(sprintf("multihost%023d", $i));
            session_start();
            $_SESSION["after_failover"] = true;
            session_write_close();
        }"#,
    );
    // The writes landed on B (A's next server) and reached C through the group.
    let seen_on_c = eventually(Duration::from_secs(10), || {
        (0..20)
            .all(|i| {
                cluster
                    .raw(2, &format!("memcast.sess.multihost{i:023}"))
                    .is_some_and(|v| {
                        String::from_utf8_lossy(StoredValue::parse(&v).unwrap().data)
                            .contains("after_failover|b:1;")
                    })
            })
            .then_some(())
    });
    if seen_on_c.is_none() {
        let key = format!("memcast.sess.multihost{:023}", 0);
        let b = cluster
            .raw(1, &key)
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let c = cluster
            .raw(2, &key)
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        panic!(
            "writes made during the failover did not reach host C\nB: {b:?}\nC: {c:?}\nlogs:\n{}",
            cluster.logs()
        );
    }
    let after_a = cluster.php(0, READ_SESSIONS);
    assert_eq!(cluster.php(2, READ_SESSIONS), after_a);
    assert_ne!(after_a, on_a);
}

#[test]
fn two_hosts_writing_one_session_concurrently_end_identical_everywhere() {
    let cluster = cluster("cc");
    let writer = |site: usize| {
        format!(
            r#"for ($i = 0; $i < 150; $i++) {{
                session_id("contended0000000000000000000000");
                session_start();
                $_SESSION["last"] = "host{site} write $i";
                $_SESSION["host{site}"] = $i;
                session_write_close();
            }}"#
        )
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| cluster.php(0, &writer(1)));
        let b = s.spawn(|| cluster.php(1, &writer(2)));
        a.join().unwrap();
        b.join().unwrap();
    });
    let key = "memcast.sess.contended0000000000000000000000";
    let converged = eventually(Duration::from_secs(10), || {
        let values: Vec<_> = (0..3).map(|i| cluster.raw(i, key)).collect();
        (values[0].is_some() && values.iter().all(|v| v == &values[0]))
            .then(|| values[0].clone().unwrap())
    });
    let Some(value) = converged else {
        let values: Vec<_> = (0..3)
            .map(|i| {
                cluster
                    .raw(i, key)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            })
            .collect();
        panic!("replicas differ: {values:?}\nlogs:\n{}", cluster.logs());
    };
    let data = String::from_utf8_lossy(StoredValue::parse(&value).unwrap().data).into_owned();
    assert!(data.contains("last|s:"), "{data}");
    // Every replica reads the same session through PHP too.
    let read = r#"session_id("contended0000000000000000000000"); session_start(); echo md5(serialize($_SESSION));"#;
    let a = cluster.php(0, read);
    assert_eq!(cluster.php(1, read), a);
    assert_eq!(cluster.php(2, read), a);
}

/// A session of about 4 KB as PHP serializes it: a cart of 60 items.
const WRITE_LARGE_SESSION: &str = r#"
    session_id("compressed0000000000000000000001");
    session_start();
    for ($i = 0; $i < 60; $i++) {
        $_SESSION["cart"][] = ["sku" => 100000 + $i * 7919, "title" => "Product $i", "qty" => $i % 4];
    }
    $_SESSION["token"] = md5("token");
    session_write_close();
    echo strlen(serialize($_SESSION)) > 3000 ? "large\n" : "small\n";
"#;

const READ_LARGE_SESSION: &str = r#"
    session_id("compressed0000000000000000000001");
    session_start();
    echo count($_SESSION["cart"] ?? []), " ", md5(serialize($_SESSION)), "\n";
"#;

#[test]
fn a_large_session_crosses_compressed_and_is_stored_whole_on_the_other_host() {
    // Straight to the group, PHP compresses (memcast.compress_threshold);
    // through the host relay, memcastd does (--compress-threshold).
    for publish in [Publish::Direct, Publish::Relay] {
        let artifacts = Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")));
        let mut cluster = Cluster::start("zip", 2, publish, artifacts);
        assert_eq!(cluster.php(0, WRITE_LARGE_SESSION).trim(), "large");
        let key = "memcast.sess.compressed0000000000000000000001";
        let arrived = eventually(Duration::from_secs(10), || cluster.raw(1, key));
        assert!(arrived.is_some(), "{publish:?}: {}", cluster.logs());
        assert_eq!(
            arrived,
            cluster.raw(0, key),
            "{publish:?}: stored differently"
        );
        let on_a = cluster.php(0, READ_LARGE_SESSION);
        assert!(on_a.starts_with("60 "), "{on_a}");
        assert_eq!(cluster.php(1, READ_LARGE_SESSION), on_a, "{publish:?}");
        let (sums, logs) = cluster.stop_and_count();
        assert!(sums["received_compressed"] >= 1, "{publish:?}: {logs}");
        assert_eq!(sums["dropped_decode"], 0, "{publish:?}: {logs}");
    }
}
