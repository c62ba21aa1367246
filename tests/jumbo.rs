//! `--pgm-max-tpdu`: on a network of jumbo frames (MTU 9000) memcastd sends
//! and receives PGM packets of up to 9000 bytes, so a 6 KB session crosses
//! in one packet instead of five. Three hosts (network namespaces) in the
//! README's recommended setup, real PHP, real memcastd, real PGM: sessions
//! of every size (one packet, several jumbo packets, 1 MB) reach every host
//! whole, and the receivers' interfaces count far fewer packets than
//! 1 500-byte packets would need. PHP's own Ethernet-sized packets are
//! taken too, and a receiver left at 1 500 still gets every session by
//! memcast's TCP catch-up. Needs root and `make build`.

use std::path::Path;
use std::time::Duration;

use memcast_testkit::cluster::{Artifacts, Cluster, Setup};
use memcast_testkit::eventually;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// memcastd's flags for 9 000-byte PGM packets.
const JUMBO: [&str; 2] = ["--pgm-max-tpdu", "9000"];

/// `hosts` hosts in `setup`, every memcastd sending and taking 9 000-byte
/// packets (the testkit then gives every link MTU 9000).
fn jumbo_cluster(tag: &str, hosts: u8, setup: Setup) -> Cluster {
    Cluster::start_setup(
        tag,
        hosts,
        setup,
        artifacts(),
        JUMBO.map(String::from).to_vec(),
    )
}

/// Sessions `jb-0` .. `jb-{N-1}`: 3 000 random bytes as hex (6 000 bytes
/// that LZ4 does not shrink), then `jb-big` (~1 MB, many packets).
const N: usize = 200;

fn write(n: usize) -> String {
    format!(
        r#"for ($i = 0; $i < {n}; $i++) {{
            session_id("jb-$i"); session_start();
            $_SESSION["i"] = $i; $_SESSION["t"] = bin2hex(random_bytes(3000));
            session_write_close();
        }}
        session_id("jb-big"); session_start();
        $_SESSION["blob"] = bin2hex(random_bytes(500000));
        session_write_close();
        echo "written\n";"#
    )
}

fn read(n: usize) -> String {
    format!(
        r#"foreach (array_merge(range(0, {last}), ["big"]) as $i) {{
            session_id("jb-$i"); session_start();
            echo $i, ":", strlen(serialize($_SESSION)), ":", md5(serialize($_SESSION)), "\n";
            session_write_close();
        }}"#,
        last = n - 1
    )
}

#[test]
fn jumbo_pgm_packets_carry_a_6_kb_session_in_one_and_every_session_arrives_whole() {
    memcast_testkit::require_root("the jumbo-frame test (network namespaces)");
    let mut cluster = jumbo_cluster("jb", 3, Setup::RECOMMENDED);
    assert_eq!(cluster.net().mtu, 9000, "the testkit gives jumbo frames");
    // Locks on host 1's own memcached: the packets counted below are then
    // replication's (and a few heartbeats), not lock round trips.
    cluster
        .php_ini
        .push(("memcast.lock_scope".into(), "host".into()));
    let before = [cluster.net().rx_packets(2), cluster.net().rx_packets(3)];
    assert_eq!(cluster.php(0, &write(N)).trim(), "written");
    // Frames from one sender arrive in order: the last one there, all are.
    let last_arrived = eventually(Duration::from_secs(20), || {
        [1, 2]
            .iter()
            .all(|&h| cluster.raw(h, "memcast.sess.jb-big").is_some())
            .then_some(())
    });
    assert!(
        last_arrived.is_some(),
        "the last session did not reach hosts 2 and 3; logs:\n{}",
        cluster.logs()
    );
    // 200 × 6 KB + 1 MB is 2.2 MB: over 1 500 packets of 1 500 bytes, about
    // 250 of 9 000 (measured: ~550 with heartbeats, SPMs and the poll
    // above; 2 040 at a 1 500-byte MTU).
    for (i, before) in [2u8, 3].into_iter().zip(before) {
        let got = cluster.net().rx_packets(i) - before;
        eprintln!("host {i}: {got} packets received while host 1 wrote");
        assert!(
            got < 1_000,
            "host {i} received {got} packets: PGM packets are not jumbo"
        );
    }
    let on_1 = cluster.php(0, &read(N));
    assert_eq!(on_1.lines().count(), N + 1, "host 1 reads back: {on_1}");
    let keys: Vec<String> = (0..N)
        .map(|i| format!("memcast.sess.jb-{i}"))
        .chain(["memcast.sess.jb-big".to_owned()])
        .collect();
    for host in [1, 2] {
        let arrived = eventually(Duration::from_secs(20), || {
            keys.iter()
                .all(|k| cluster.raw(host, k).is_some())
                .then_some(())
        });
        assert!(
            arrived.is_some(),
            "host {} misses sessions; logs:\n{}",
            host + 1,
            cluster.logs()
        );
        assert_eq!(
            cluster.php(host, &read(N)),
            on_1,
            "host {} reads what host 1 wrote",
            host + 1
        );
    }
}

/// PHP publishing straight to the group sends ZeroMQ's 1 500-byte packets;
/// receivers set to 9 000 take them.
#[test]
fn receivers_set_for_jumbo_packets_take_php_s_ethernet_sized_ones() {
    memcast_testkit::require_root("the jumbo-frame test (network namespaces)");
    let cluster = jumbo_cluster("jbd", 2, Setup::MINIMAL);
    assert_eq!(cluster.php(0, &write(20)).trim(), "written");
    let on_1 = cluster.php(0, &read(20));
    let arrived = eventually(Duration::from_secs(20), || {
        cluster
            .raw(1, "memcast.sess.jb-big")
            .is_some()
            .then_some(())
    });
    assert!(
        arrived.is_some(),
        "host 2 misses sessions; logs:\n{}",
        cluster.logs()
    );
    assert_eq!(
        cluster.php(1, &read(20)),
        on_1,
        "host 2 reads what host 1 wrote"
    );
}

/// A receiver left at 1 500 while its sender sends 9 000-byte packets
/// (a host missed in the roll-out) cannot take them; memcast's own repair
/// still brings it every session.
#[test]
fn a_receiver_left_at_ethernet_size_still_gets_every_session() {
    memcast_testkit::require_root("the jumbo-frame test (network namespaces)");
    let mut cluster = jumbo_cluster("jbm", 2, Setup::RECOMMENDED);
    cluster.lock_per_host();
    cluster
        .memcastd_args
        .retain(|a| a != "--pgm-max-tpdu" && a != "9000");
    cluster.kill_memcastd(1);
    cluster.start_memcastd(1);
    assert!(
        cluster.wait_warm(Duration::from_secs(30)),
        "{}",
        cluster.logs()
    );
    assert_eq!(cluster.php(0, &write(50)).trim(), "written");
    let on_1 = cluster.php(0, &read(50));
    let arrived = eventually(Duration::from_secs(60), || {
        (0..50)
            .map(|i| format!("memcast.sess.jb-{i}"))
            .chain(["memcast.sess.jb-big".to_owned()])
            .all(|k| cluster.raw(1, &k).is_some())
            .then_some(())
    });
    let on_2 = cluster.php(1, &read(50));
    let (by_host, logs) = cluster.stop_and_count_by_host();
    let get = |k: &str| by_host[1].get(k).copied().unwrap_or(0);
    println!(
        "host 2 at 1500: received={} gaps={} missing_frames={} frames_repaired={} resyncs={} resync_entries={}",
        get("received"),
        get("gaps"),
        get("missing_frames"),
        get("frames_repaired"),
        get("resyncs"),
        get("resync_entries")
    );
    assert!(arrived.is_some(), "host 2 misses sessions; logs:\n{logs}");
    assert_eq!(on_2, on_1, "host 2 reads what host 1 wrote");
    // The 6 KB frames never crossed by PGM to it: they came by TCP, from
    // the sender's ring (catch-up, repair) or a peer's snapshot.
    assert!(get("received") < 51, "host 2 took 9 000-byte packets");
    assert!(
        get("frames_caught_up") + get("frames_repaired") + get("resync_entries") >= 51,
        "the sessions reached host 2 some other way"
    );
}
