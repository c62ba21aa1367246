//! A miss never wipes a session: three hosts over real PGM, sessions written
//! on host 1, then host 2's memcached restarts empty (or is too small and
//! evicts) and host 2 serves one ordinary request per session (read, add a
//! key, write). Every request must find its session, and afterwards every
//! host must hold every session whole, with the new key: with no relay and
//! no `--peer` at all (nothing can refill host 2: only PHP's confirmation of
//! misses and read-repair stand between the empty memcached and the real
//! sessions) and in the recommended setup (relay, `--listen`, `--peer`).
//! Needs root and `make build`.

use std::path::Path;
use std::time::Duration;

use memcast_core::{Memcached, ServerAddr, StoredValue, Timeouts};
use memcast_testkit::cluster::{Artifacts, Cluster, Publish};
use memcast_testkit::eventually;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

fn cluster(tag: &str, bare: bool) -> Cluster {
    memcast_testkit::require_root("the edge tests (network namespaces)");
    if bare {
        Cluster::start_bare(tag, 3, artifacts())
    } else {
        Cluster::start(tag, 3, Publish::Relay, artifacts())
    }
}

fn id(tag: &str, i: usize) -> String {
    format!("edge{tag}{i:08}")
}

/// PHP on host 1 writes `n` sessions of about 1.6 KB.
fn write_sessions(cluster: &Cluster, tag: &str, n: usize) {
    let out = cluster.php(
        0,
        &format!(
            r#"$pad = str_repeat("p", 1600); $ok = 0;
            for ($i = 0; $i < {n}; $i++) {{
                session_id(sprintf("edge{tag}%08d", $i));
                session_start();
                $_SESSION["i"] = $i;
                $_SESSION["pad"] = $pad;
                if (session_write_close()) {{ $ok++; }}
            }}
            echo "written=$ok";"#
        ),
    );
    assert!(out.contains(&format!("written={n}")), "host 1: {out}");
}

/// One ordinary request per session on host `at`: read, add a key, write.
/// Returns (sessions found whole, writes acknowledged).
fn touch_every_session(cluster: &Cluster, at: usize, tag: &str, n: usize) -> (usize, usize) {
    let out = cluster.php_output(
        at,
        &format!(
            r#"$found = 0; $ok = 0;
            for ($i = 0; $i < {n}; $i++) {{
                session_id(sprintf("edge{tag}%08d", $i));
                if (!@session_start()) {{ continue; }}
                if (($_SESSION["i"] ?? -1) === $i && strlen($_SESSION["pad"] ?? "") === 1600) {{ $found++; }}
                $_SESSION["seen_on_2"] = 1;
                if (@session_write_close()) {{ $ok++; }}
            }}
            echo "found=$found ok=$ok";"#
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let num = |name: &str| -> usize {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("host {}: no {name} in {text:?}", at + 1))
    };
    (num("found="), num("ok="))
}

/// How many of the sessions host `at`'s memcached holds whole, with the key
/// host 2's request added when `seen` is set.
fn held_whole(cluster: &Cluster, at: usize, tag: &str, n: usize, seen: bool) -> usize {
    let addr = ServerAddr::parse(&format!("{}:11211", cluster.sites[at].host.addr)).unwrap();
    let mut mc = Memcached::new(addr, Timeouts::default());
    let keys: Vec<String> = (0..n)
        .map(|i| format!("memcast.sess.{}", id(tag, i)))
        .collect();
    let mut whole = 0;
    for chunk in keys.chunks(100) {
        let refs: Vec<&[u8]> = chunk.iter().map(|k| k.as_bytes()).collect();
        for (key, raw) in mc.get_multi(&refs).expect("read memcached") {
            let i: usize = String::from_utf8_lossy(&key[key.len() - 8..])
                .parse()
                .unwrap();
            let Some(v) = StoredValue::parse(&raw).filter(|v| !v.tombstone) else {
                continue;
            };
            let data = String::from_utf8_lossy(v.data);
            let intact = data.starts_with(&format!("i|i:{i};pad|s:1600:"))
                && (!seen || data.ends_with("seen_on_2|i:1;"));
            whole += usize::from(intact);
        }
    }
    whole
}

fn wait_held(cluster: &Cluster, hosts: &[usize], tag: &str, n: usize, seen: bool) -> Vec<usize> {
    let counts = || {
        hosts
            .iter()
            .map(|&h| held_whole(cluster, h, tag, n, seen))
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(20), || {
        let c = counts();
        c.iter().all(|&h| h == n).then_some(c)
    })
    .unwrap_or_else(counts)
}

fn restarted_memcached(tag: &str, bare: bool) {
    let n = 400;
    let mut cluster = cluster(tag, bare);
    write_sessions(&cluster, tag, n);
    assert_eq!(wait_held(&cluster, &[0, 1, 2], tag, n, false), [n, n, n]);
    cluster.restart_memcached(1);
    // Long enough for the old bug: memcastd declared the empty memcached
    // warm a few seconds after its restart.
    std::thread::sleep(Duration::from_secs(4));
    let (found, ok) = touch_every_session(&cluster, 1, tag, n);
    let held = wait_held(&cluster, &[0, 1, 2], tag, n, true);
    let intact: Vec<usize> = [0, 2]
        .map(|h| held_whole(&cluster, h, tag, n, false))
        .to_vec();
    println!(
        "{tag}: {n} sessions; after host 2's memcached restarted, its requests found {found} and stored {ok}; held whole with the new key on hosts 1-3: {held:?}; intact (with or without it) on hosts 1 and 3: {intact:?}"
    );
    assert_eq!((found, ok), (n, n), "{}", cluster.logs());
    assert_eq!(held, [n, n, n], "{}", cluster.logs());
}

fn evicting_memcached(tag: &str, bare: bool) {
    let n = 6000;
    let mut cluster = cluster(tag, bare);
    // Host 2's memcached is too small for the sessions: it evicts.
    cluster.restart_memcached_with_memory(1, 8);
    std::thread::sleep(Duration::from_secs(2));
    write_sessions(&cluster, tag, n);
    assert_eq!(wait_held(&cluster, &[0, 2], tag, n, false), [n, n]);
    let evictions = memcached_stat(&cluster, 1, "evictions");
    assert!(evictions > 0, "host 2's memcached did not evict");
    let (found, ok) = touch_every_session(&cluster, 1, tag, n);
    let held = wait_held(&cluster, &[0, 2], tag, n, true);
    let intact: Vec<usize> = [0, 2]
        .map(|h| held_whole(&cluster, h, tag, n, false))
        .to_vec();
    println!(
        "{tag}: {n} sessions, host 2's memcached evicted {evictions}; its requests found {found} and stored {ok}; held whole with the new key on hosts 1 and 3: {held:?}; intact (with or without it): {intact:?}"
    );
    if held != [n, n] {
        println!("{}", describe_broken(&cluster, tag, n));
    }
    assert_eq!((found, ok), (n, n), "{}", cluster.logs());
    assert_eq!(held, [n, n], "{}", cluster.logs());
}

/// What every host holds for the first sessions not whole on host 1: the
/// version and the start of the data, to tell an empty write from a lost one.
fn describe_broken(cluster: &Cluster, tag: &str, n: usize) -> String {
    let mut out = String::new();
    let broken = (0..n).filter(|&i| {
        let key = format!("memcast.sess.{}", id(tag, i));
        cluster.raw(0, &key).is_none_or(|raw| {
            StoredValue::parse(&raw).is_none_or(|v| {
                !String::from_utf8_lossy(v.data).starts_with(&format!("i|i:{i};pad|s:1600:"))
            })
        })
    });
    for i in broken.take(5) {
        let key = format!("memcast.sess.{}", id(tag, i));
        for h in 0..cluster.sites.len() {
            let shown = match cluster.raw(h, &key) {
                None => "absent".to_string(),
                Some(raw) => match StoredValue::parse(&raw) {
                    None => format!("unparsable ({} bytes)", raw.len()),
                    Some(v) => {
                        let data = String::from_utf8_lossy(v.data);
                        let head: String = data.chars().take(40).collect();
                        format!(
                            "version {:?} tombstone {} {} bytes: {head:?}",
                            v.version,
                            v.tombstone,
                            v.data.len()
                        )
                    }
                },
            };
            out.push_str(&format!("{key} on host {}: {shown}\n", h + 1));
        }
    }
    out
}

fn memcached_stat(cluster: &Cluster, at: usize, name: &str) -> u64 {
    let addr = ServerAddr::parse(&format!("{}:11211", cluster.sites[at].host.addr)).unwrap();
    Memcached::new(addr, Timeouts::default())
        .stats()
        .expect("stats")
        .into_iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_restarted_memcached_never_lets_an_empty_session_replace_the_real_one_without_peers() {
    restarted_memcached("rm", true);
}

#[test]
fn a_restarted_memcached_never_lets_an_empty_session_replace_the_real_one_recommended_setup() {
    restarted_memcached("rr", false);
}

#[test]
fn an_evicting_memcached_never_lets_an_empty_session_replace_the_real_one_without_peers() {
    evicting_memcached("em", true);
}

#[test]
fn an_evicting_memcached_never_lets_an_empty_session_replace_the_real_one_recommended_setup() {
    evicting_memcached("er", false);
}

/// Writes made on host 2 while its memcastd (the host relay) is killed and
/// restarted reach every host, with anti-entropy and periodic resyncs out of
/// the way: PHP remembers what its relay did not take and sends those
/// sessions again once it takes frames; peers pull a snapshot from the
/// restarted relay for what was written before that.
#[test]
fn writes_made_while_the_relay_restarts_reach_every_host() {
    memcast_testkit::require_root("the edge tests (network namespaces)");
    let args = ["--anti-entropy-interval", "0", "--resync-interval", "300"]
        .map(String::from)
        .to_vec();
    let mut cluster = Cluster::start_with("mr", 3, Publish::Relay, artifacts(), args);
    let n = 800;
    let writer = cluster.spawn_php(
        1,
        &memcast_testkit::cluster::unique_writes("mr", 2, n, 4_000),
    );
    std::thread::sleep(Duration::from_millis(700));
    cluster.kill_memcastd(1);
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_memcastd(1);
    let written = memcast_testkit::cluster::finish_writers(vec![writer]);
    assert_eq!(written, n, "every write is stored locally");
    let held = |at: usize| {
        (0..n)
            .filter(|i| {
                cluster
                    .raw(at, &format!("memcast.sess.mr2-{i}"))
                    .is_some_and(|raw| raw.ends_with(format!("i|i:{i};host|i:2;").as_bytes()))
            })
            .count()
    };
    let counts = eventually(Duration::from_secs(10), || {
        let c = [held(0), held(1), held(2)];
        (c == [n, n, n]).then_some(c)
    })
    .unwrap_or_else(|| [held(0), held(1), held(2)]);
    println!("{n} writes on host 2 across its relay's restart; held on hosts 1-3: {counts:?}");
    assert_eq!(counts, [n, n, n], "{}", cluster.logs());
}
