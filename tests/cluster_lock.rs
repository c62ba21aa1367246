//! One session locked across the whole cluster (no sticky sessions): three
//! hosts in network namespaces, the recommended setup, PHP's built-in web
//! server with 8 workers on each. 60 concurrent requests of one session,
//! spread round-robin over the hosts, each read a counter, work 20 ms and
//! write it back; a last request reads it.

use std::path::Path;
use std::time::{Duration, Instant};

use memcast_core::lock_place::lock_order;
use memcast_core::ServerAddr;
use memcast_testkit::cluster::{Artifacts, Cluster, PhpServer, Setup};

const COUNTER: &str = r#"<?php
ob_start(); // warnings must not send the headers before the status is set
$t = hrtime(true);
if (!session_start()) { http_response_code(503); echo "no session\n"; exit; }
$waited = (hrtime(true) - $t) / 1e6;
$n = ($_SESSION['n'] ?? 0) + 1;
usleep(20000);
$_SESSION['n'] = $n;
if (!session_write_close()) { http_response_code(500); echo "not written\n"; exit; }
printf("n=%d wait=%.1f\n", $n, $waited);
"#;

// Under the lock (not read_and_close): the lock brings the last write made
// under it, on whichever host it was made.
const READ: &str = r#"<?php
ob_start();
if (!session_start()) { http_response_code(503); echo "no session\n"; exit; }
printf("n=%d\n", $_SESSION['n'] ?? 0);
session_abort();
"#;

const HOSTS: usize = 3;
const PORT: u16 = 8080;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

struct Site {
    cluster: std::sync::Mutex<Cluster>,
    servers: Vec<PhpServer>,
    _docroot: memcast_testkit::TempDir,
}

fn site(tag: &str, ini: &[(&str, &str)]) -> Site {
    memcast_testkit::require_root("the cluster lock test");
    let mut cluster = Cluster::start_setup(
        tag,
        HOSTS as u8,
        Setup::RECOMMENDED,
        artifacts(),
        Vec::new(),
    );
    cluster
        .php_ini
        .extend(ini.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    assert!(
        cluster.wait_warm(Duration::from_secs(20)),
        "memcached not warm:\n{}",
        cluster.logs()
    );
    let docroot = memcast_testkit::TempDir::new("cluster-lock-pages");
    std::fs::write(docroot.path.join("counter.php"), COUNTER).unwrap();
    std::fs::write(docroot.path.join("read.php"), READ).unwrap();
    let servers = (0..HOSTS)
        .map(|i| cluster.start_php_server(i, &docroot.path, PORT, 8))
        .collect();
    Site {
        cluster: std::sync::Mutex::new(cluster),
        servers,
        _docroot: docroot,
    }
}

/// Which host's memcached holds a session's cluster-wide lock (by the
/// rendezvous order every host computes), from 0.
fn lock_host_of(site: &Site) -> impl Fn(&str) -> usize {
    let servers: Vec<ServerAddr> = {
        let cluster = site.cluster.lock().unwrap_or_else(|e| e.into_inner());
        (0..HOSTS)
            .map(|i| ServerAddr::parse(&cluster.memcached_addr(i)).unwrap())
            .collect()
    };
    move |id: &str| lock_order(format!("memcast.sess.{id}").as_bytes(), &servers)[0]
}

fn counter_of(body: &str) -> Option<u64> {
    body.split("n=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// 60 concurrent increments of `session`, request k on host k mod 3;
/// `during` runs on the side once 10 of them have answered.
fn burst(site: &Site, session: &str, during: impl FnOnce() + Send) -> Vec<(usize, u16, String)> {
    let answered = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..60)
            .map(|k| {
                let server = &site.servers[k % HOSTS];
                let answered = &answered;
                s.spawn(move || {
                    let (status, body) = server.get("/counter.php", session);
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (k % HOSTS, status, body)
                })
            })
            .collect();
        let started = Instant::now();
        while answered.load(std::sync::atomic::Ordering::SeqCst) < 10
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        during();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn final_count(site: &Site, session: &str, host: usize) -> u64 {
    let (status, body) = site.servers[host].get("/read.php", session);
    assert_eq!(status, 200, "{body}");
    counter_of(&body).unwrap_or_else(|| panic!("odd reply {body:?}"))
}

fn logs(site: &Site) -> String {
    let php: String = site
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("php -S on host {}:\n{}\n", i + 1, s.log()))
        .collect();
    let cluster = site.cluster.lock().unwrap_or_else(|e| e.into_inner());
    format!("{php}{}", cluster.logs())
}

#[test]
fn sixty_concurrent_increments_over_three_hosts_end_at_sixty() {
    let site = site("ck", &[]);
    let (status, body) = site.servers[0].get("/read.php", "probe");
    assert_eq!(status, 200, "{body}\n{}", logs(&site));
    for round in 0..5 {
        let session = format!("clusterlock{round}x{}", std::process::id());
        let replies = burst(&site, &session, || {});
        for (host, status, body) in &replies {
            assert_eq!(
                *status,
                200,
                "round {round}, host {}: {body}\n{}",
                host + 1,
                logs(&site)
            );
        }
        let n = final_count(&site, &session, round % HOSTS);
        println!("round {round}: 60 x 200, counter {n}");
        assert_eq!(n, 60, "round {round}: lost updates\n{}", logs(&site));
    }
}

#[test]
fn the_host_lock_keeps_apart_only_one_hosts_requests() {
    // What memcast.lock_scope = host is for: sticky sessions. Spread over
    // three hosts, its requests lose updates: the test above can fail.
    let site = site("hk", &[("memcast.lock_scope", "host")]);
    let mut counts = Vec::new();
    for round in 0..2 {
        let session = format!("hostlock{round}x{}", std::process::id());
        let replies = burst(&site, &session, || {});
        let ok = replies
            .iter()
            .filter(|(_, status, body)| *status == 200 && counter_of(body).is_some())
            .count();
        let n = final_count(&site, &session, 0);
        println!("host lock, round {round}: {ok} of 60 answered 200, counter {n}");
        counts.push((ok as u64).saturating_sub(n));
    }
    println!("host-scoped lock over three hosts: updates lost {counts:?}");
    assert!(counts.iter().any(|&lost| lost > 0), "{counts:?}");
}

#[test]
fn a_lock_server_killed_mid_burst_loses_no_acknowledged_increment() {
    // Its locks are taken over once they have all expired (2 s here).
    let site = site("kl", &[("memcast.lock_expire", "2")]);
    // Two sessions whose lock lives in host 2's memcached, one elsewhere.
    let lock_host = lock_host_of(&site);
    let ids = (0..).map(|k| format!("killed{k}x{}", std::process::id()));
    let mut sessions: Vec<String> = ids
        .clone()
        .filter(|id| lock_host(id) == 1)
        .take(2)
        .collect();
    sessions.extend(ids.filter(|id| lock_host(id) != 1).take(1));
    // Host 2's memcached dies once 10 requests of the first session have
    // answered; the other two sessions run right after, with it dead.
    let mut ok = Vec::new();
    for (k, session) in sessions.iter().enumerate() {
        let replies = burst(&site, session, || {
            if k == 0 {
                site.cluster
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .kill_memcached(1);
            }
        });
        for (host, status, body) in &replies {
            // A request that fails says so (503: no session or no lock;
            // 500: not written), and nothing else.
            assert!(
                [200, 500, 503].contains(status),
                "host {}: {status} {body}",
                host + 1
            );
        }
        if std::env::var("CLUSTER_LOCK_DEBUG").is_ok() {
            for (host, status, body) in &replies {
                let last = body.trim().lines().last().unwrap_or("");
                println!("  {session} host {} {status} {last}", host + 1);
            }
        }
        ok.push(
            replies
                .iter()
                .filter(|(_, status, body)| *status == 200 && counter_of(body).is_some())
                .count() as u64,
        );
    }
    // Past lock_expire every session can be locked again.
    std::thread::sleep(Duration::from_millis(2500));
    for (session, ok) in sessions.iter().zip(ok) {
        let n = final_count(&site, session, 0);
        let place = if lock_host(session) == 1 {
            "its lock on host 2"
        } else {
            "its lock elsewhere"
        };
        println!(
            "host 2's memcached killed: {session} ({place}): {ok} of 60 answered 200, counter {n}"
        );
        assert_eq!(
            n,
            ok,
            "every 200 is an increment that stayed\n{}",
            logs(&site)
        );
    }
}

#[test]
fn a_lock_server_out_of_reach_fails_session_start_until_its_locks_expired() {
    // lock_expire 3 s: a lock server that times out may be cut off from this
    // host only while others still lock there, so its sessions cannot be
    // locked (one warning, session_start() false) until every lock it
    // granted has expired; then the next server takes them over.
    let site = site("pt", &[("memcast.lock_expire", "3")]);
    let lock_host = lock_host_of(&site);
    let ids = (0..).map(|k| format!("cutoff{k}x{}", std::process::id()));
    let session = ids
        .clone()
        .find(|id| lock_host(id) == 2)
        .unwrap_or_default();
    let elsewhere = ids
        .clone()
        .find(|id| lock_host(id) == 0)
        .unwrap_or_default();
    // One visit each while everything is up.
    for id in [&session, &elsewhere] {
        let (status, body) = site.servers[0].get("/counter.php", id);
        assert_eq!(status, 200, "{body}");
    }
    // Host 3 (its memcached the lock server of `session`) cut off.
    let cluster = site.cluster.lock().unwrap_or_else(|e| e.into_inner());
    cluster.net().set_link(3, false); // hosts count from 1 here
    let cut = Instant::now();
    let mut refused = 0;
    let mut served_after = None;
    while cut.elapsed() < Duration::from_secs(8) && served_after.is_none() {
        let (status, body) = site.servers[0].get("/counter.php", &session);
        if status == 200 && counter_of(&body).is_some() {
            served_after = Some(cut.elapsed());
        } else {
            assert_eq!(status, 503, "{body}");
            refused += 1;
        }
    }
    // A session whose lock lives elsewhere is served all along.
    let (status, body) = site.servers[0].get("/counter.php", &elsewhere);
    cluster.net().set_link(3, true);
    drop(cluster);
    assert_eq!(status, 200, "{body}");
    let served_after = served_after.expect("taken over after lock_expire");
    println!(
        "lock server cut off: {refused} requests refused, served again {:.1} s after the cut",
        served_after.as_secs_f64()
    );
    assert!(refused > 0);
    assert!(
        served_after >= Duration::from_secs(3),
        "taken over before its locks expired: {served_after:?}"
    );
    // Once the link is back and the lock server answers again (a worker
    // that last saw it time out asks again after its retry interval), the
    // session reads both visits.
    let back = memcast_testkit::eventually(Duration::from_secs(10), || {
        let (status, body) = site.servers[0].get("/read.php", &session);
        (status == 200).then(|| counter_of(&body)).flatten()
    });
    assert_eq!(back, Some(2));
}
