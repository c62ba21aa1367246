//! The web stack benchmark: one nginx + php-fpm per variant inside host 1,
//! wrk on loopback inside the same namespace, variants interleaved in rounds.

use std::process::Stdio;
use std::time::Duration;

use memcast_testkit::cluster::Cluster;
use memcast_testkit::web::{WebOptions, WebStack};
use memcast_testkit::{Proc, TempDir};

const WORKERS: usize = 8;
const CONNECTIONS: usize = 8;
const POOL: usize = 200;

/// Reads the session (the shared 2 KB one plus a counter), increments the
/// counter, writes back; 500 if the session's content did not survive.
fn page() -> String {
    format!(
        r#"<?php
session_start();
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
if (($_SESSION['auth']['{}'] ?? '') !== '{}') {{ http_response_code(500); echo "session content lost"; exit; }}
echo $_SESSION['n'];
"#,
        crate::session_payload::CHECK_KEY,
        crate::session_payload::check_value()
    )
}

const NO_SESSION: &str = "<?php echo 'ok';\n";

/// Creates the pool's sessions: the shared 2 KB session, counter 0.
fn init() -> String {
    format!(
        r#"<?php
$p = $_GET['p']; $n = (int) $_GET['n']; $ok = 0;
for ($i = 0; $i < $n; $i++) {{
    session_id($p . $i); session_start();
    $_SESSION = []; {}; $_SESSION['n'] = 0;
    $ok += session_write_close() ? 1 : 0;
}}
echo "ok $ok";
"#,
        crate::session_payload::php_decode()
    )
}

const SUM: &str = r#"<?php
$p = $_GET['p']; $n = (int) $_GET['n']; $sum = 0; $missing = 0;
for ($i = 0; $i < $n; $i++) {
    session_id($p . $i); session_start(['read_and_close' => true]);
    if (!isset($_SESSION['n'])) { $missing++; }
    $sum += $_SESSION['n'] ?? 0;
}
echo "$sum $missing";
"#;

const WRK_LUA: &str = r#"
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  prefix = args[1]; pool = tonumber(args[2]); nthreads = tonumber(args[3]); path = args[4]
  per = math.floor(pool / nthreads)
  i = 0
end
function request()
  local id = prefix .. ((tid - 1) + nthreads * (i % per))
  i = i + 1
  return wrk.format("GET", path, {["Cookie"] = "PHPSESSID=" .. id})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d non2xx=%d sockerr=%d duration_us=%d p50us=%d p99us=%d\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"#;

pub struct Variant {
    pub name: &'static str,
    pub session: bool,
    stack: WebStack,
    /// Replicated by the floor's bare relay and subscribers, not memcastd.
    floor: bool,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub non2xx: u64,
    /// Counter sum minus requests (0 ..= connections when nothing is lost).
    pub surplus: i64,
    pub missing: u64,
    /// CPU time the cluster's memcastd and memcached processes (all three
    /// hosts) used during the run, per request, µs.
    pub cluster_cpu_us: f64,
}

pub struct WebResult {
    pub variants: Vec<(&'static str, Vec<Run>)>,
    pub fpm_idle_kb: u64,
    pub fpm_load_kb: u64,
    pub rounds: usize,
    pub seconds: u64,
}

fn stack(cluster: &Cluster, php_args: Vec<String>, ini: Vec<(String, String)>) -> WebStack {
    stack_on(cluster, 0, php_args, ini)
}

/// The bench's pages behind nginx + php-fpm inside host `i`.
pub(crate) fn stack_on(
    cluster: &Cluster,
    i: usize,
    php_args: Vec<String>,
    ini: Vec<(String, String)>,
) -> WebStack {
    WebStack::start_with(WebOptions {
        host: Some(&cluster.sites[i].host),
        php_args,
        ini,
        pages: vec![
            ("page.php".into(), page()),
            ("nosession.php".into(), NO_SESSION.into()),
            ("init.php".into(), init()),
            ("sum.php".into(), SUM.into()),
        ],
        workers: WORKERS,
    })
}

/// memcast on host `i`: its own memcached first, every server named by the
/// address the other hosts use for it (a loopback name would make the
/// cluster lock fall back to the host lock), `lock_scope` as given.
pub(crate) fn memcast_ini_on(
    cluster: &Cluster,
    i: usize,
    publish: String,
    lock_scope: &str,
) -> Vec<(String, String)> {
    let save_path = std::iter::once(i)
        .chain((0..cluster.sites.len()).filter(|&j| j != i))
        .map(|j| format!("{}:11211", cluster.sites[j].host.addr))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        kv("session.save_handler", "memcast"),
        kv("session.save_path", save_path),
        kv("memcast.publish", publish),
        kv("memcast.lock_scope", lock_scope),
        kv(
            "memcast.key_file",
            cluster.key_file_of(i).display().to_string(),
        ),
        kv(
            "memcast.accept_key_file",
            cluster.accept_key_file_of(i).display().to_string(),
        ),
    ]
}

pub(crate) fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

pub fn run(cluster: &mut Cluster, rounds: usize, seconds: u64) -> WebResult {
    let others: Vec<String> = cluster.sites[1..]
        .iter()
        .map(|s| format!("{}:11211", s.host.addr))
        .collect();
    // redis-server and a files directory inside host 1.
    let files = TempDir::new("bench-files");
    let mut redis = cluster.sites[0].host.command("redis-server");
    redis
        .args([
            "--port",
            "6379",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null());
    let _redis = Proc::spawn("redis-server", &mut redis);
    assert!(
        wait_for_tcp_in(cluster, "127.0.0.1:6379"),
        "redis-server did not start"
    );
    let memcast_so = format!(
        "extension={}",
        super::workspace()
            .join("target/release/libmemcast.so")
            .display()
    );
    let memcast_ini = |publish: String, scope: &str| memcast_ini_on(&*cluster, 0, publish, scope);
    let memcached_ext = super::pecl("memcached");
    let redis_ext = super::pecl("redis");
    let all_three = format!("127.0.0.1:11211,{}", others.join(",").replace(' ', ""));
    // The floor of replication under this stack (see floor::WebFloor).
    let web_floor =
        crate::floor::WebFloor::start(cluster, &cluster.key_file_of(0).display().to_string());
    let direct = format!(
        "epgm://{};{}:5555",
        cluster.sites[0].host.iface, cluster.group
    );
    let variants = [
        Variant {
            name: "memcast (direct publish), cluster lock",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                vec![memcast_so.clone()],
                memcast_ini(direct, "cluster"),
            ),
        },
        Variant {
            name: "memcast (host relay), cluster lock",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                vec![memcast_so.clone()],
                memcast_ini(cluster.relay(0), "cluster"),
            ),
        },
        Variant {
            name: "memcast (host relay), host lock",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                vec![memcast_so.clone()],
                memcast_ini(cluster.relay(0), "host"),
            ),
        },
        Variant {
            name: "memcast's handler, replicated by the floor's bare relay and subscribers, cluster lock",
            session: true,
            floor: true,
            stack: stack(
                cluster,
                vec![memcast_so.clone()],
                memcast_ini(web_floor.inbox.clone(), "cluster"),
            ),
        },
        Variant {
            name: "memcast's handler, replicated by the floor's bare relay and subscribers, host lock",
            session: true,
            floor: true,
            stack: stack(
                cluster,
                vec![memcast_so.clone()],
                memcast_ini(web_floor.inbox.clone(), "host"),
            ),
        },
        Variant {
            name: "memcast (replication off: the handler alone), cluster lock",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                vec![memcast_so.clone()],
                memcast_ini(String::new(), "cluster"),
            ),
        },
        Variant {
            name: "memcast (replication off: the handler alone), host lock",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                vec![memcast_so.clone()],
                memcast_ini(String::new(), "host"),
            ),
        },
        Variant {
            name: "php-memcached, 1 server",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                memcached_ext.clone(),
                vec![
                    kv("session.save_handler", "memcached"),
                    kv("session.save_path", "127.0.0.1:11211"),
                ],
            ),
        },
        Variant {
            name: "php-memcached, 3 servers, 2 replicas, locking",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                memcached_ext.clone(),
                vec![
                    kv("session.save_handler", "memcached"),
                    kv("session.save_path", all_three.clone()),
                    kv("memcached.sess_number_of_replicas", "2"),
                    kv("memcached.sess_locking", "1"),
                ],
            ),
        },
        Variant {
            name: "php-memcached, 3 servers, 2 replicas, no locking",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                memcached_ext,
                vec![
                    kv("session.save_handler", "memcached"),
                    kv("session.save_path", all_three),
                    kv("memcached.sess_number_of_replicas", "2"),
                    kv("memcached.sess_locking", "0"),
                ],
            ),
        },
        Variant {
            name: "phpredis",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                redis_ext,
                vec![
                    kv("session.save_handler", "redis"),
                    kv("session.save_path", "tcp://127.0.0.1:6379"),
                ],
            ),
        },
        Variant {
            name: "files",
            session: true,
            floor: false,
            stack: stack(
                cluster,
                Vec::new(),
                vec![
                    kv("session.save_handler", "files"),
                    kv("session.save_path", files.path.display().to_string()),
                ],
            ),
        },
        Variant {
            name: "no session (the stack's ceiling)",
            session: false,
            floor: false,
            stack: stack(cluster, Vec::new(), Vec::new()),
        },
    ];
    let lua = files.path.join("bench.lua");
    std::fs::write(&lua, WRK_LUA).unwrap();
    let relay_fpm = variants[1].stack.fpm_pid();
    let fpm_idle_kb = super::children(relay_fpm)
        .into_iter()
        .map(super::rss_kb)
        .max()
        .unwrap_or(0);
    let mut fpm_load_kb = 0;
    let mut results: Vec<(&'static str, Vec<Run>)> =
        variants.iter().map(|v| (v.name, Vec::new())).collect();
    for round in 0..rounds {
        for (vi, v) in variants.iter().enumerate() {
            let prefix = format!("b{vi}r{round}x");
            if v.session {
                let (status, body) = v
                    .stack
                    .get(&format!("/init.php?p={prefix}&n={POOL}"), "none");
                assert!(
                    status == 200 && body.trim() == format!("ok {POOL}"),
                    "{}: init failed: {status} {body}\n{}",
                    v.name,
                    v.stack.log()
                );
            }
            let path = if v.session {
                "/page.php"
            } else {
                "/nosession.php"
            };
            let mut wrk = cluster.sites[0].host.command("wrk");
            wrk.args([
                "-t",
                &CONNECTIONS.to_string(),
                "-c",
                &CONNECTIONS.to_string(),
                "-d",
                &format!("{seconds}s"),
                "--latency",
                "-s",
            ])
            .arg(&lua)
            .arg(format!("http://127.0.0.1:{}{path}", v.stack.port))
            .args([
                "--",
                &prefix,
                &POOL.to_string(),
                &CONNECTIONS.to_string(),
                path,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let floor_pids = if v.floor {
                web_floor.pids()
            } else {
                Vec::new()
            };
            let cpu_before = cluster_cpu_ticks(cluster) + pids_cpu(&floor_pids);
            let child = wrk.spawn().expect("wrk (apt-get install wrk)");
            if vi == 1 {
                std::thread::sleep(Duration::from_secs(seconds / 2));
                let load = super::children(relay_fpm)
                    .into_iter()
                    .map(super::rss_kb)
                    .max()
                    .unwrap_or(0);
                fpm_load_kb = fpm_load_kb.max(load);
            }
            let out = child.wait_with_output().unwrap();
            let cpu_ticks =
                (cluster_cpu_ticks(cluster) + pids_cpu(&floor_pids)).saturating_sub(cpu_before);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text
                .lines()
                .find(|l| l.starts_with("BENCH "))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: wrk said {text}{}",
                        v.name,
                        String::from_utf8_lossy(&out.stderr)
                    )
                })
                .to_owned();
            let field = |name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            let requests = field("requests");
            let (surplus, missing) = if v.session {
                let (status, body) = v
                    .stack
                    .get(&format!("/sum.php?p={prefix}&n={POOL}"), "none");
                assert_eq!(status, 200, "{}: sum failed: {body}", v.name);
                let mut it = body
                    .split_whitespace()
                    .map(|n| n.parse::<i64>().unwrap_or(-1));
                let sum = it.next().unwrap_or(-1);
                let missing = it.next().unwrap_or(-1);
                (sum - requests as i64, missing as u64)
            } else {
                (0, 0)
            };
            let run = Run {
                rps: requests as f64 / (field("duration_us") as f64 / 1e6),
                p50_ms: field("p50us") as f64 / 1000.0,
                p99_ms: field("p99us") as f64 / 1000.0,
                requests,
                non2xx: field("non2xx") + field("sockerr"),
                surplus,
                missing,
                cluster_cpu_us: cpu_ticks as f64 * 1e6 / ticks_per_sec() / requests.max(1) as f64,
            };
            eprintln!(
                "bench: round {} {:<50} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  non-2xx {}  counter surplus {}  cluster CPU {:.0} µs/req",
                round + 1,
                v.name,
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.non2xx,
                run.surplus,
                run.cluster_cpu_us
            );
            results[vi].1.push(run);
        }
    }
    let (relayed, stored) = web_floor.finish();
    let floor_requests: u64 = variants
        .iter()
        .zip(&results)
        .filter(|(v, _)| v.floor)
        .flat_map(|(_, (_, runs))| runs.iter().map(|r| r.requests))
        .sum();
    // Every request wrote once (and each round's init wrote the pool).
    assert!(
        relayed >= floor_requests && stored >= floor_requests,
        "the web floor's relay relayed {relayed} and its subscribers stored at least {stored} frames for {floor_requests} requests"
    );
    WebResult {
        variants: results,
        fpm_idle_kb,
        fpm_load_kb,
        rounds,
        seconds,
    }
}

pub(crate) fn ticks_per_sec() -> f64 {
    crate::replication_cpu::clock_ticks()
}

/// Run time (schedstat, ns) of every thread of every memcastd and memcached
/// of the cluster, as the replication CPU section counts it.
pub(crate) fn cluster_cpu_ticks(cluster: &Cluster) -> u64 {
    let mut pids = Vec::new();
    for (i, site) in cluster.sites.iter().enumerate() {
        pids.push(site.memcached.pid());
        if let Some(p) = cluster.memcastd_pid(i) {
            pids.push(p);
        }
    }
    pids_cpu(&pids)
}

/// Run time (schedstat, ns) of every thread of these processes.
fn pids_cpu(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|&pid| crate::replication_cpu::cpu_of(pid).total)
        .sum()
}

/// A TCP port inside host 1 (redis on its loopback): checked from inside.
fn wait_for_tcp_in(cluster: &Cluster, addr: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let ok = cluster.sites[0]
            .host
            .command("bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/{}", addr.replace(':', "/")),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
