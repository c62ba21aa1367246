//! Cluster locking: a web stack (nginx + php-fpm) on each of the three
//! hosts and wrk on each at once, over one pool of sessions, so requests of
//! one session arrive at different hosts concurrently, as behind a
//! round-robin load balancer. Variants interleaved in rounds: memcast with
//! the cluster-wide lock (the default), memcast with the host lock (which
//! keeps apart only one host's requests: its lost updates are the point),
//! php-memcached on the three servers with two replicas and its lock (one
//! lock per session, where its hash puts it).

use std::process::Stdio;
use std::time::Duration;

use memcast_testkit::cluster::Cluster;
use memcast_testkit::web::WebStack;
use memcast_testkit::TempDir;

use crate::web::{kv, memcast_ini_on, stack_on};

/// Sessions shared by the three hosts' wrk.
pub const POOL: usize = 120;
/// wrk threads = connections, per host.
pub const CONNECTIONS: usize = 8;

/// Each request picks a session of the pool at random: with 3 × 8
/// connections over 120 sessions about one request in five finds its
/// session busy on some host.
const WRK_LUA: &str = r#"
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  prefix = args[1]; pool = tonumber(args[2]); path = args[3]
  math.randomseed(os.time() * 1000 + tonumber(args[4]) * 100 + tid)
end
function request()
  local id = prefix .. math.random(0, pool - 1)
  return wrk.format("GET", path, {["Cookie"] = "PHPSESSID=" .. id})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d non2xx=%d sockerr=%d duration_us=%d p50us=%d p99us=%d\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// One round of one variant, the three hosts together.
#[derive(Debug, Clone)]
pub struct Run {
    /// Sum of the three hosts' requests per second.
    pub rps: f64,
    /// The slowest host's p50 and p99.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub non2xx: u64,
    /// Counter sum minus the successful (2xx) requests: 0 ..= connections
    /// (requests in flight when wrk stopped) when nothing is lost.
    pub surplus: i64,
    pub sockerr: u64,
    pub missing: u64,
}

impl Run {
    /// Whether the counters add up: none lost, none missing.
    pub fn adds_up(&self) -> bool {
        let in_flight = (3 * CONNECTIONS) as i64 + self.sockerr as i64;
        self.missing == 0 && (0..=in_flight).contains(&self.surplus)
    }

    /// Updates lost (at least: a request in flight at the end may hide one).
    pub fn lost(&self) -> u64 {
        (-self.surplus).max(0) as u64
    }
}

pub struct ClusterLockResult {
    pub variants: Vec<(&'static str, Vec<Run>)>,
    pub rounds: usize,
    pub seconds: u64,
}

struct Variant {
    name: &'static str,
    /// memcast: the pool is written on host 1 and must reach the others.
    replicated: bool,
    stacks: Vec<WebStack>,
}

pub fn run(cluster: &Cluster, rounds: usize, seconds: u64) -> ClusterLockResult {
    let hosts = cluster.sites.len();
    let memcast_so = format!(
        "extension={}",
        super::workspace()
            .join("target/release/libmemcast.so")
            .display()
    );
    let pages = |php_args: &[String], ini: &dyn Fn(usize) -> Vec<(String, String)>| {
        (0..hosts)
            .map(|i| stack_on(cluster, i, php_args.to_vec(), ini(i)))
            .collect::<Vec<_>>()
    };
    let memcast =
        |scope: &'static str| move |i: usize| memcast_ini_on(cluster, i, cluster.relay(i), scope);
    // Every host lists the servers alike, so php-memcached's consistent
    // hash puts each session (and its lock) in the same server everywhere.
    let all_three = (0..hosts)
        .map(|j| format!("{}:11211", cluster.sites[j].host.addr))
        .collect::<Vec<_>>()
        .join(",");
    let php_memcached = |_: usize| {
        vec![
            kv("session.save_handler", "memcached"),
            kv("session.save_path", all_three.clone()),
            kv("memcached.sess_number_of_replicas", "2"),
            kv("memcached.sess_locking", "1"),
        ]
    };
    let variants = [
        Variant {
            name: "memcast (host relay), cluster lock",
            replicated: true,
            stacks: pages(std::slice::from_ref(&memcast_so), &memcast("cluster")),
        },
        Variant {
            name: "memcast (host relay), host lock",
            replicated: true,
            stacks: pages(std::slice::from_ref(&memcast_so), &memcast("host")),
        },
        Variant {
            name: "php-memcached, 3 servers, 2 replicas, locking",
            replicated: false,
            stacks: pages(&super::pecl("memcached"), &php_memcached),
        },
    ];
    let dir = TempDir::new("bench-cluster-lock");
    let lua = dir.path.join("cluster.lua");
    std::fs::write(&lua, WRK_LUA).unwrap();
    let mut results: Vec<(&'static str, Vec<Run>)> =
        variants.iter().map(|v| (v.name, Vec::new())).collect();
    for round in 0..rounds {
        for (vi, v) in variants.iter().enumerate() {
            let prefix = format!("c{vi}r{round}x");
            let (status, body) = v.stacks[0].get(&format!("/init.php?p={prefix}&n={POOL}"), "none");
            assert!(
                status == 200 && body.trim() == format!("ok {POOL}"),
                "{}: init failed: {status} {body}\n{}",
                v.name,
                v.stacks[0].log()
            );
            if v.replicated {
                // Every host holds the pool before the first request.
                std::thread::sleep(Duration::from_millis(500));
            }
            let children: Vec<_> = (0..hosts)
                .map(|i| {
                    let mut wrk = cluster.sites[i].host.command("wrk");
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
                    .arg(format!("http://127.0.0.1:{}/page.php", v.stacks[i].port))
                    .args([
                        "--",
                        &prefix,
                        &POOL.to_string(),
                        "/page.php",
                        &(i + 1).to_string(),
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                    wrk.spawn().expect("wrk (apt-get install wrk)")
                })
                .collect();
            let mut run = Run {
                rps: 0.0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                requests: 0,
                non2xx: 0,
                surplus: 0,
                sockerr: 0,
                missing: 0,
            };
            for child in children {
                let out = child.wait_with_output().unwrap();
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
                run.rps += requests as f64 / (field("duration_us") as f64 / 1e6);
                run.p50_ms = run.p50_ms.max(field("p50us") as f64 / 1000.0);
                run.p99_ms = run.p99_ms.max(field("p99us") as f64 / 1000.0);
                run.requests += requests;
                run.non2xx += field("non2xx");
                run.sockerr += field("sockerr");
            }
            if v.replicated {
                // The last writes of the other hosts reach host 1.
                std::thread::sleep(Duration::from_millis(1000));
            }
            let (status, body) = v.stacks[0].get(&format!("/sum.php?p={prefix}&n={POOL}"), "none");
            assert_eq!(status, 200, "{}: sum failed: {body}", v.name);
            let mut it = body
                .split_whitespace()
                .map(|n| n.parse::<i64>().unwrap_or(-1));
            let sum = it.next().unwrap_or(-1);
            run.missing = it.next().unwrap_or(-1) as u64;
            run.surplus = sum - (run.requests - run.non2xx) as i64;
            eprintln!(
                "bench: cluster lock round {} {:<46} {:>7.0} req/s  p50 {:.2} ms  p99 {:.2} ms  non-2xx {}  sockerr {}  counter surplus {}",
                round + 1,
                v.name,
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.non2xx,
                run.sockerr,
                run.surplus
            );
            results[vi].1.push(run);
        }
    }
    ClusterLockResult {
        variants: results,
        rounds,
        seconds,
    }
}
