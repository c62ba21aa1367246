//! A healed host is whole within seconds: in the recommended setup (relay,
//! --listen, --peer) over real PGM, host 3's link goes down for 8 s while
//! host 1 writes 2000 sessions; from the moment the link returns, host 3 must
//! hold every one of them within 3 s (its memcastd asks the silent origin's
//! ring directly instead of waiting for PGM to give up). Needs root and
//! `make build`; run with the namespace lock held. Prints the time to whole
//! and host 3's catch-up counters.

use std::path::Path;
use std::time::{Duration, Instant};

use memcast_core::{Memcached, ServerAddr, Timeouts};
use memcast_testkit::cluster::{unique_writes, written, Artifacts, Cluster, Publish};
use memcast_testkit::require_root;

const SESSIONS: usize = 2000;
const WHOLE_WITHIN: Duration = Duration::from_secs(3);

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// How many of host 1's writes `mc` holds with their own value.
fn held(mc: &mut Memcached, tag: &str) -> usize {
    let keys: Vec<String> = (0..SESSIONS)
        .map(|i| format!("memcast.sess.{tag}1-{i}"))
        .collect();
    let mut n = 0;
    for chunk in keys.chunks(100) {
        let refs: Vec<&[u8]> = chunk.iter().map(|k| k.as_bytes()).collect();
        let Ok(found) = mc.get_multi(&refs) else {
            return 0;
        };
        n += found
            .iter()
            .filter(|(key, value)| {
                let key = String::from_utf8_lossy(key);
                let i = key.rsplit('-').next().unwrap_or_default();
                value.ends_with(format!("i|i:{i};host|i:1;").as_bytes())
            })
            .count();
    }
    n
}

#[test]
fn a_host_whose_link_returns_is_whole_within_three_seconds() {
    require_root("the heal test (network namespaces)");
    let mut cluster = Cluster::start("hl", 3, Publish::Relay, artifacts());
    // Replication across a partition, not the lock (tests/cluster_lock.rs).
    cluster.lock_per_host();
    assert!(
        cluster.wait_warm(Duration::from_secs(30)),
        "never known complete:\n{}",
        cluster.logs()
    );
    let tag = "heal";
    cluster.net().set_link(3, false);
    let down = Instant::now();
    let out = cluster
        .spawn_php(0, &unique_writes(tag, 1, SESSIONS, 1_500))
        .wait_with_output()
        .expect("writer");
    assert_eq!(written(&out), SESSIONS, "host 1 stored every write");
    let writing = down.elapsed();
    assert!(
        writing < Duration::from_secs(8),
        "the writes took {writing:?}, longer than the link was to be down"
    );
    std::thread::sleep(Duration::from_secs(8).saturating_sub(down.elapsed()));
    cluster.net().set_link(3, true);
    let up = Instant::now();
    let addr = format!("{}:11211", cluster.sites[2].host.addr);
    let mut mc = Memcached::new(ServerAddr::parse(&addr).unwrap(), Timeouts::default());
    let mut last;
    let whole = loop {
        last = held(&mut mc, tag);
        if last == SESSIONS {
            break Some(up.elapsed());
        }
        if up.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // PGM delivers what it stalled once it gives up on its retransmissions
    // (~14 s): those frames were fetched already and must be dropped as
    // duplicates, not counted as replays.
    std::thread::sleep(Duration::from_secs(16));
    let (hosts, logs) = cluster.stop_and_count_by_host();
    // In the order of the hosts' logs: host 3's is the third.
    let host3 = hosts.get(2).cloned().unwrap_or_default();
    let get = |k: &str| host3.get(k).copied().unwrap_or(0);
    println!(
        "link down {:?} (writes took {writing:?}); host 3 whole {} after the link returned; host 3: catch_up_requests={} frames_caught_up={} gaps={} frames_repaired={} duplicates={} dropped_replay={} resyncs={} group_rejoins={}",
        Duration::from_secs(8),
        whole.map_or_else(|| format!("NEVER (held {last} of {SESSIONS})"), |d| format!("{d:?}")),
        get("catch_up_requests"),
        get("frames_caught_up"),
        get("gaps"),
        get("frames_repaired"),
        get("duplicates"),
        get("dropped_replay"),
        get("resyncs"),
        get("group_rejoins"),
    );
    let whole = whole.unwrap_or_else(|| panic!("host 3 never whole: {last} of {SESSIONS}\n{logs}"));
    assert!(
        whole <= WHOLE_WITHIN,
        "host 3 whole only {whole:?} after the link returned\n{logs}"
    );
    if std::env::var("HEAL_DEBUG").is_ok() {
        println!("{logs}");
    }
    assert_eq!(
        get("dropped_replay"),
        0,
        "late duplicates counted as replays:\n{}",
        logs.lines()
            .filter(|l| l.contains("dropped") || l.contains("joined the group again"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
