//! bench/results/latest.md and its charts (gnuplot, PNG).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::apply::Apply;
use crate::cluster_lock::ClusterLockResult;
use crate::handler::Latency;
use crate::handoff::Handoffs;
use crate::lag::Lag;
use crate::replication_cpu::{ReplicationCpu, GOAL_US};
use crate::scale::Scale;
use crate::web::WebResult;

pub struct Memory {
    pub memcastd_idle_kb: u64,
    pub memcastd_load_kb: u64,
    pub fpm_idle_kb: u64,
    pub fpm_load_kb: u64,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "{cores} cores ({cpu}), {mem_gb:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn gnuplot(script: &str) {
    let mut child = Command::new("gnuplot")
        .stdin(Stdio::piped())
        .spawn()
        .expect("gnuplot (apt-get install gnuplot-nox)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "gnuplot failed");
}

/// The cluster locking section: a table and a sentence of reading.
pub fn cluster_lock(result: &ClusterLockResult) -> String {
    use crate::cluster_lock::{CONNECTIONS, POOL};
    let mut md = String::new();
    writeln!(
        md,
        "## Cluster locking: one session's requests on three hosts at once
"
    )
    .unwrap();
    writeln!(
        md,
        "nginx + php-fpm (pm = static, 8 workers) on each of the three hosts, wrk ({CONNECTIONS} threads, {CONNECTIONS} connections) on each at once, all over one pool of {POOL} existing sessions, each request picking one at random: requests of one session arrive at different hosts concurrently, as behind a round-robin load balancer, and about one request in five finds its session in use somewhere. The same page as above (read the 2 KB session and its counter, increment, write back). {} rounds of {} s, medians. req/s: the three hosts together; p50/p99: the slowest host's. \"counters\": whether the sessions' counters add up to the successful requests (plus at most one in flight per connection) in every round; otherwise the updates lost in the worst round.\n",
        result.rounds, result.seconds
    )
    .unwrap();
    writeln!(
        md,
        "| variant | req/s (3 hosts) | × host lock | p50 ms | p99 ms | non-2xx + socket errors | counters |"
    )
    .unwrap();
    writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |").unwrap();
    let median_rps = |runs: &[crate::cluster_lock::Run]| {
        let mut v: Vec<f64> = runs.iter().map(|r| r.rps).collect();
        super::median(&mut v)
    };
    let host_lock = result
        .variants
        .iter()
        .find(|(n, _)| n.ends_with("host lock"))
        .map_or(f64::NAN, |(_, runs)| median_rps(runs));
    for (name, runs) in &result.variants {
        let rps = median_rps(runs);
        let mut p50: Vec<f64> = runs.iter().map(|x| x.p50_ms).collect();
        let mut p99: Vec<f64> = runs.iter().map(|x| x.p99_ms).collect();
        let non2xx: u64 = runs.iter().map(|x| x.non2xx + x.sockerr).sum();
        let total: u64 = runs.iter().map(|x| x.requests).sum();
        let counters = if runs.iter().all(|x| x.adds_up()) {
            "add up".to_string()
        } else {
            let worst = runs.iter().map(|x| x.lost()).max().unwrap_or(0);
            let missing: u64 = runs.iter().map(|x| x.missing).sum();
            let mut c = format!("**{worst} lost** (worst round)");
            if missing > 0 {
                c.push_str(&format!(", {missing} sessions missing"));
            }
            c
        };
        writeln!(
            md,
            "| {name} | {rps:.0} | {:.2} | {:.2} | {:.2} | {non2xx} | {counters} ({total} requests) |",
            rps / host_lock,
            super::median(&mut p50),
            super::median(&mut p99),
        )
        .unwrap();
    }
    // A sentence of reading, from the numbers.
    let of = |suffix: &str| {
        result
            .variants
            .iter()
            .find(|(n, _)| n.ends_with(suffix) || n.starts_with(suffix))
            .map(|(_, runs)| {
                let mut p99: Vec<f64> = runs.iter().map(|x| x.p99_ms).collect();
                let failed: u64 = runs.iter().map(|x| x.non2xx + x.sockerr).sum();
                let lost = runs.iter().map(|x| x.lost()).max().unwrap_or(0);
                let fate = if runs.iter().all(|x| x.adds_up()) {
                    "every update counted".to_string()
                } else {
                    format!("up to {lost} updates lost in a round")
                };
                let fate = if failed > 0 {
                    format!("{fate}, {failed} requests failed or timed out")
                } else {
                    format!("{fate}, no request failed")
                };
                (median_rps(runs), super::median(&mut p99), fate)
            })
            .unwrap_or((f64::NAN, f64::NAN, String::new()))
    };
    let (c_rps, c_p99, c_fate) = of("cluster lock");
    let (h_rps, h_p99, h_fate) = of("host lock");
    let (m_rps, m_p99, m_fate) = of("php-memcached");
    writeln!(
        md,
        "\nReading: with one session's requests on several hosts at once, memcast's cluster lock served {:.2}× the host lock's requests (p99 {c_p99:.1} ms against {h_p99:.1} ms): {c_fate}. The host lock keeps apart only one host's requests: {h_fate}. php-memcached's lock (one per session, where its hash puts it) served {:.2}× the host lock's requests (p99 {m_p99:.1} ms): {m_fate}.\n",
        c_rps / h_rps,
        m_rps / h_rps
    )
    .unwrap();
    md
}

/// The replication lag table (3 hosts, rates).
/// One lag table: a row per rate.
fn lag_table(md: &mut String, lags: &[Lag]) {
    writeln!(
        md,
        "| writes/s asked | achieved | frames | lag p50 ≤ | lag p99 ≤ | max ≤ |"
    )
    .unwrap();
    writeln!(md, "| --- | --- | --- | --- | --- | --- |").unwrap();
    for l in lags {
        writeln!(
            md,
            "| {} | {:.0} | {} | {} ms | {} ms | {} ms |",
            l.rate, l.achieved, l.sent, l.p50_ms, l.p99_ms, l.max_ms
        )
        .unwrap();
    }
}

pub fn lag(lag: &[Lag], direct: &[Lag]) -> String {
    let mut md = String::new();
    writeln!(md, "## Replication\n").unwrap();
    writeln!(md, "Frames of the 2 KB session handed to host 1's relay at a steady rate; hosts 2 and 3 record how old each write was when their memcached had it (`memcast_replication_lag_seconds`; bucket bounds, versions carry milliseconds so ±1 ms).\n").unwrap();
    lag_table(&mut md, lag);
    writeln!(md, "\nThe low-latency setup, on a cluster of its own: the same frames published straight to the group from inside host 1, as PHP does without a relay (`memcast.publish = \"epgm://...\"`), and every memcastd started with `--apply-batch-us 0` (each frame applied as it comes, no window). No relay hop and no window on the way; each frame costs its receivers a wake-up and a memcached round trip of its own, and each PHP worker holds a PGM sender (see the floor's \"no window\" column for what that costs in CPU).\n").unwrap();
    lag_table(&mut md, direct);
    md
}

/// memcastd's apply rate against memcached's ceiling.
pub fn apply(apply: &Apply) -> String {
    format!(
        "\nmemcastd apply rate (loopback, one memcastd, {} frames of the 2 KB session over tcp://): **{:.0} frames/s**; memcached's own ceiling, the same number of 2 KB sets pipelined 100 per write: {:.0} sets/s; ratio {:.2}. The same burst taken by a bare ZeroMQ subscriber that stores each batch with pipelined sets and does nothing else (the floor section's subscriber): {:.0} messages/s, {:.2}× the ceiling; memcastd reaches {:.2}× this floor.\n\n",
        apply.frames,
        apply.frames_per_sec,
        apply.ceiling_per_sec,
        apply.frames_per_sec / apply.ceiling_per_sec,
        apply.floor_per_sec,
        apply.floor_per_sec / apply.ceiling_per_sec,
        apply.frames_per_sec / apply.floor_per_sec
    )
}

/// PHP's hand-off to the relay, per relay socket.
pub fn handoff(h: &Handoffs) -> String {
    let mut md = format!(
        "## PHP's hand-off to the host relay\n\nCPU per frame of the 2 KB session handed to a real memcastd relay ({} frames/s, one frame per wake-up as PHP workers send; the relay publishes to a TCP endpoint without subscribers, so the multicast send is left out), from the scheduler's run time of every thread; medians of {} rounds of {} s, the schemes alternating.\n\n| relay socket | sender (PHP's part) µs | relay µs | both µs |\n| --- | ---: | ---: | ---: |\n",
        h.rate, h.rounds, h.seconds
    );
    for r in &h.rows {
        writeln!(
            md,
            "| `{}` | {:.1} | {:.1} | {:.1} |",
            r.scheme,
            r.sender_us,
            r.relay_us,
            r.sender_us + r.relay_us
        )
        .unwrap();
    }
    md.push('\n');
    md
}

/// Cluster CPU per replicated write, per process.
pub fn replication_cpu(r: &ReplicationCpu) -> String {
    let mut md = String::new();
    writeln!(
        md,
        "## Replication CPU per replicated write ({} hosts, {} writes/s of the 2 KB session)\n",
        r.hosts, r.rate
    )
    .unwrap();
    let applied = if r.all_applied() {
        "every receiver applied every frame of phase 2 in every round".to_string()
    } else {
        let short: Vec<String> = r
            .publish_writes
            .iter()
            .zip(&r.applied_min)
            .map(|(w, a)| format!("{a:.0} of {w}"))
            .collect();
        format!(
            "**not every frame was applied** (fewest applied by a receiver, per round: {})",
            short.join(", ")
        )
    };
    writeln!(
        md,
        "A sender in the bench process does per write what a PHP worker does: `set` of the session into host 1's memcached, then seal + hand-off to host 1's relay. Each round: phase 1 store only (the baseline without replication), phase 2 store + publish, {} s each at {} writes/s; the run time of every thread of every process from /proc's `schedstat` (the scheduler's exact account; utime and stime are sampled at timer ticks and miss paced wake-ups) before and after each phase. Replication's cost = phase 2 − phase 1. {} rounds; each process's numbers are the medians of its rounds, the cluster row the median of the rounds' totals. Phase 2: {applied}; lag p50 ≤ {} ms, p99 ≤ {} ms (median of rounds); the relay sent {:.1} frames per send (`--batch-us`) and the receivers applied {:.1} frames per memcached batch (`--apply-batch-us`).\n",
        r.seconds, r.rate, r.rounds, r.lag_p50_ms, r.lag_p99_ms, r.frames_per_send, r.frames_per_apply
    )
    .unwrap();
    writeln!(
        md,
        "| process | store only µs/write | store + publish µs/write | replication µs/write |"
    )
    .unwrap();
    writeln!(md, "| --- | ---: | ---: | ---: |").unwrap();
    for row in &r.rows {
        writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} |",
            row.name, row.store_us, row.publish_us, row.replication_us
        )
        .unwrap();
    }
    let c = &r.cluster;
    writeln!(
        md,
        "| **cluster** | **{:.1}** | **{:.1}** | **{:.1}** |\n",
        c.store_us, c.publish_us, c.replication_us
    )
    .unwrap();
    writeln!(
        md,
        "Replication CPU: **{:.1} µs per replicated write**, goal ≤ {GOAL_US:.0} µs: {} ({:.2}× the goal).\n",
        c.replication_us,
        if r.met() { "met" } else { "**not met**" },
        c.replication_us / GOAL_US
    )
    .unwrap();
    md
}

/// The same measurement on a network of jumbo frames (`--pgm-max-tpdu
/// 9000`), beside the Ethernet-sized one.
pub fn replication_cpu_jumbo(ethernet: &ReplicationCpu, jumbo: &ReplicationCpu) -> String {
    let mut md = String::new();
    writeln!(
        md,
        "### The same on a network of jumbo frames (`--pgm-max-tpdu 9000`, every link at MTU 9000)\n"
    )
    .unwrap();
    writeln!(
        md,
        "A fresh cluster, the same sender, rate and rounds; a 2 KB frame, or a batch of about {:.1} (`--batch-us`), crosses in one PGM packet instead of two or more. Lag p50 ≤ {} ms, p99 ≤ {} ms; {}.\n",
        jumbo.frames_per_send,
        jumbo.lag_p50_ms,
        jumbo.lag_p99_ms,
        if jumbo.all_applied() {
            "every receiver applied every frame"
        } else {
            "**not every frame was applied**"
        }
    )
    .unwrap();
    writeln!(
        md,
        "| process | replication µs/write, MTU 1500 | on jumbo frames | change |"
    )
    .unwrap();
    writeln!(md, "| --- | ---: | ---: | ---: |").unwrap();
    let rows = ethernet
        .rows
        .iter()
        .chain(std::iter::once(&ethernet.cluster));
    for e in rows {
        let j = if e.name == ethernet.cluster.name {
            Some(&jumbo.cluster)
        } else {
            jumbo.rows.iter().find(|r| r.name == e.name)
        };
        let Some(j) = j else { continue };
        let bold = if e.name == ethernet.cluster.name {
            "**"
        } else {
            ""
        };
        writeln!(
            md,
            "| {bold}{}{bold} | {bold}{:.1}{bold} | {bold}{:.1}{bold} | {:+.0} % |",
            e.name,
            e.replication_us,
            j.replication_us,
            (j.replication_us / e.replication_us - 1.0) * 100.0
        )
        .unwrap();
    }
    writeln!(md).unwrap();
    md
}

/// The transport's and memcached's floor, beside memcast's replication CPU
/// of the same run (Ethernet-sized and jumbo) when given.
pub fn floor(
    runs: &[crate::floor::FloorRun],
    memcast: Option<(&ReplicationCpu, &ReplicationCpu)>,
) -> String {
    let mut md = String::new();
    writeln!(md, "## The floor of this design on this machine\n").unwrap();
    writeln!(
        md,
        "The least a replicated write costs with ZeroMQ PGM and memcached: one multicast send, and on each other host one receive and one memcached `set`. Measured with nothing of memcast's (`floor.rs`): a publisher process on host 1 sends {}-byte messages (the size of the session's frame, sealed as by default) to the group at 5 000/s with memcast's ZeroMQ options; a subscriber process on hosts 2 and 3 receives them, batches as memcastd's receive loop does, and stores each batch with one pipelined write of plain `set`s. No seal, MAC, relay hop, version check or counters. The last two columns are the floor of memcast's recommended setup, the host relay, with the one piece of memcast's work no design may leave out, authentication: the publisher stands in for PHP and signs each message (HMAC-SHA256 in its last 32 bytes), hands it over a `unixgram://` socket to a bare relay process on host 1 that takes them with memcastd's 1 ms relay window (none in the last column), checks each MAC, stamps a sequence number, signs again and sends to the group; the subscribers check the MAC before storing (with memcastd's 4 ms apply window; none in the last column). CPU: `schedstat` run time of every thread of the processes during the timed phase, per message; lag: per message, at the receivers (the worst receiver's quantile). Medians of rounds.\n",
        runs.first().map_or(0, |r| r.size)
    )
    .unwrap();
    let mut header = String::from("| process |");
    let mut rule = String::from("| --- |");
    for r in runs {
        header.push_str(&format!(" {} |", r.variant.label));
        rule.push_str(" ---: |");
    }
    writeln!(md, "{header}\n{rule}").unwrap();
    if let Some(first) = runs.first() {
        for (i, (name, _)) in first.rows.iter().enumerate() {
            let cells: String = runs
                .iter()
                .map(|r| {
                    if r.variant.hop || !name.starts_with("relay") {
                        format!(" {:.1} |", r.rows[i].1)
                    } else {
                        " – |".to_owned()
                    }
                })
                .collect();
            writeln!(md, "| {name} µs/message |{cells}").unwrap();
        }
    }
    let cells = |f: &dyn Fn(&crate::floor::FloorRun) -> String| -> String {
        runs.iter().map(|r| format!(" {} |", f(r))).collect()
    };
    writeln!(
        md,
        "| **floor, cluster µs/message** |{}",
        cells(&|r| format!("**{:.1}**", r.total_us))
    )
    .unwrap();
    writeln!(
        md,
        "| lag p50 / p99 |{}",
        cells(&|r| format!(
            "{:.2} / {:.2} ms",
            r.lag_p50_us / 1000.0,
            r.lag_p99_us / 1000.0
        ))
    )
    .unwrap();
    writeln!(
        md,
        "| received (fewest) of sent |{}",
        cells(&|r| format!("{} of {}", r.received_min, r.sent))
    )
    .unwrap();
    writeln!(md).unwrap();
    if let (Some((ethernet, jumbo)), Some(base), Some(big)) = (
        memcast,
        runs.first(),
        runs.iter().find(|r| r.variant.tpdu > 1500),
    ) {
        writeln!(
            md,
            "memcast's replication CPU in this run, {:.1} µs per write (MTU 1500) and {:.1} (jumbo), is {:.1}× and {:.1}× this floor ({:.1} and {:.1}): memcast's own work (seal and MAC, the relay hop, version checks, counters) is the difference. The goal of ≤ {GOAL_US:.0} µs is {:.1}× the Ethernet-sized floor on this machine{}.\n",
            ethernet.cluster.replication_us,
            jumbo.cluster.replication_us,
            ethernet.cluster.replication_us / base.total_us,
            jumbo.cluster.replication_us / big.total_us,
            base.total_us,
            big.total_us,
            GOAL_US / base.total_us,
            if base.total_us > GOAL_US {
                ": below what the transport and memcached alone cost, before any of memcast's work"
            } else {
                ""
            }
        )
        .unwrap();
    }
    md
}

/// Lag, apply and CPU at 3, 5 and 8 hosts.
pub fn scale(rows: &[Scale]) -> String {
    let mut md = String::new();
    let (rate, seconds) = (crate::scale::RATE, rows.first().map_or(0, |r| r.seconds));
    writeln!(
        md,
        "## Cluster size: lag, apply and CPU at 3, 5 and 8 hosts\n"
    )
    .unwrap();
    writeln!(
        md,
        "Each size a fresh cluster (memcached + memcastd per host, each host its own network namespace, all on this machine's cores); the sender writes the session at {rate} writes/s for {seconds} s through host 1's relay (store + publish, as PHP does). Lag: the worst receiver's bucket bound for each quantile (`memcast_replication_lag_seconds`, ±1 ms). \"applied\": the fewest frames any receiver had applied within 5 s after the last write. CPU: run time (`schedstat`) of every thread during the run and the drain, per write: the whole cluster (the sender, every memcastd and memcached), host 1 (relay), and a receiver host (mean). Every host here shares the same cores, so at some size the machine, not the design, is the limit: frames not applied or a growing lag say where. A receiver that falls behind applies what queued in larger batches, so its CPU per write drops as its lag grows.\n"
    )
    .unwrap();
    writeln!(md, "| hosts | writes/s achieved | writes | applied (fewest receiver) | lag p50 ≤ | lag p99 ≤ (host) | max ≤ | cluster CPU µs/write | relay host µs/write | a receiver host µs/write |").unwrap();
    writeln!(
        md,
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    .unwrap();
    for r in rows {
        let applied = if r.all_applied() {
            format!("all ({:.0})", r.applied_min)
        } else {
            format!("**{:.0} of {}**", r.applied_min, r.writes)
        };
        writeln!(
            md,
            "| {} | {:.0} | {} | {applied} | {} ms | {} ms (host {}) | {} ms | {:.0} | {:.0} | {:.0} |",
            r.hosts,
            r.achieved,
            r.writes,
            r.p50_ms,
            r.p99_ms,
            r.worst_host,
            r.max_ms,
            r.cluster_us,
            r.relay_host_us,
            r.receiver_host_us
        )
        .unwrap();
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let per_receiver = if last.hosts > first.hosts {
            (last.cluster_us - first.cluster_us) / (last.hosts - first.hosts) as f64
        } else {
            f64::NAN
        };
        writeln!(
            md,
            "\nEach added host added about {per_receiver:.0} µs of cluster CPU per write ({} → {} hosts). At {rate} writes/s, one µs per write is 0.5 % of a core.\n",
            first.hosts, last.hosts
        )
        .unwrap();
    }
    md
}

/// Issue 14's four goals, each judged on this run's numbers.
fn goals(measured: &Measured<'_>) -> String {
    let verdict = |met: bool| if met { "met" } else { "**not met**" };
    let mut md = String::new();
    writeln!(md, "## Goals (issue 14), this run\n").unwrap();
    // 1. Replication CPU.
    let r = measured.replication_cpu;
    writeln!(
        md,
        "- Replication CPU per replicated 2 KB write, 3 hosts: **{:.1} µs** (goal ≤ {GOAL_US:.0}): {}. On jumbo frames (`--pgm-max-tpdu 9000`): {:.1} µs: {}.",
        r.cluster.replication_us,
        verdict(r.met()),
        measured.replication_cpu_jumbo.cluster.replication_us,
        verdict(measured.replication_cpu_jumbo.met())
    )
    .unwrap();
    // 2. Web stack.
    let web = measured.web;
    let of = |prefix: &str| {
        web.variants
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, runs)| {
                let mut rps: Vec<f64> = runs.iter().map(|x| x.rps).collect();
                let mut p99: Vec<f64> = runs.iter().map(|x| x.p99_ms).collect();
                (super::median(&mut rps), super::median(&mut p99))
            })
            .unwrap_or((f64::NAN, f64::NAN))
    };
    let (single, single_p99) = of("php-memcached, 1 server");
    let (replicas, _) = of("php-memcached, 3 servers, 2 replicas, locking");
    let mut web_met = false;
    let mut parts = Vec::new();
    for (label, prefix) in [
        ("relay", "memcast (host relay), cluster"),
        ("direct", "memcast (direct"),
    ] {
        let (rps, p99) = of(prefix);
        let met = rps / replicas >= 2.0 && rps / single >= 1.0 && p99 <= single_p99;
        web_met |= met;
        parts.push(format!(
            "{label} {:.2}× the replicas, {:.2}× single, p99 {p99:.1} ms",
            rps / replicas,
            rps / single
        ));
    }
    writeln!(
        md,
        "- Web stack (cluster lock): memcast ≥ 2.0× php-memcached with 2 replicas and locking, ≥ 1.0× php-memcached single, p99 no worse than single's ({single_p99:.1} ms): {}; {}.",
        parts.join("; "),
        verdict(web_met)
    )
    .unwrap();
    // What the floor allows: the web stack saturates the cores, so a
    // request's CPU is cores / req/s; the handler alone's plus the floor's
    // replication per write bounds the replicated variant.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let floor_us = measured.floor.first().map_or(f64::NAN, |f| f.total_us);
    // The host relay's floor: the same with the relay hop and a MAC at
    // every step (the least memcast's recommended setup can cost).
    let hop_us = measured
        .floor
        .iter()
        .find(|f| f.variant.hop)
        .map_or(f64::NAN, |f| f.total_us);
    for (lock, alone, replicated) in [
        (
            "cluster lock",
            "memcast (replication off: the handler alone), cluster",
            "memcast (host relay), cluster",
        ),
        (
            "host lock",
            "memcast (replication off: the handler alone), host",
            "memcast (host relay), host",
        ),
    ] {
        let (alone_rps, _) = of(alone);
        let (rps, p99) = of(replicated);
        let bound = cores / (cores / alone_rps + floor_us * 1e-6);
        let hop_bound = cores / (cores / alone_rps + hop_us * 1e-6);
        writeln!(
            md,
            "  - {lock}: the handler alone {:.2}× single; with the floor's {floor_us:.0} µs of replication per write added on these {cores:.0} cores, at most {:.2}× single and {:.2}× the replicas; with the host relay's floor ({hop_us:.0} µs: the relay hop and a MAC at every step), at most {:.2}× single and {:.2}× the replicas; measured replicated {:.2}× and {:.2}×, p99 {p99:.1} ms.",
            alone_rps / single,
            bound / single,
            bound / replicas,
            hop_bound / single,
            hop_bound / replicas,
            rps / single,
            rps / replicas
        )
        .unwrap();
    }
    // The same floor measured in the stack rather than added to it.
    for lock in ["cluster lock", "host lock"] {
        let (floor_rps, floor_p99) = of(&format!(
            "memcast's handler, replicated by the floor's bare relay and subscribers, {lock}"
        ));
        let (relay_rps, relay_p99) = of(&format!("memcast (host relay), {lock}"));
        writeln!(
            md,
            "  - {lock}, the floor measured in the stack: memcast's handler with its frames replicated by the floor's bare relay and subscribers instead of memcastd (the least the host relay design does: the relay hop, a MAC checked and made, a multicast send, a set on each receiver) served {:.2}× single and {:.2}× the replicas, p99 {floor_p99:.1} ms; memcast's relay {:.2}× of that, p99 {relay_p99:.1} ms.",
            floor_rps / single,
            floor_rps / replicas,
            relay_rps / floor_rps
        )
        .unwrap();
    }
    // 3. Lag at 5 000/s.
    let at5k = |lags: &[Lag]| lags.iter().find(|l| l.rate == 5_000).map(|l| l.p99_ms);
    match (at5k(measured.lag), at5k(measured.lag_direct)) {
        (Some(relay), Some(direct)) => writeln!(
            md,
            "- Lag p99 < 2 ms at 5 000 writes/s (3 hosts; bucket bounds, ±1 ms; ≤ 2 ms counts as met): the low-latency setup (PHP publishing directly, `--apply-batch-us 0`) p99 ≤ {direct} ms: {}; the recommended setup (host relay, default windows) p99 ≤ {relay} ms: {}.",
            verdict(direct <= 2.0),
            verdict(relay <= 2.0)
        )
        .unwrap(),
        _ => writeln!(md, "- Lag at 5 000 writes/s: not measured.").unwrap(),
    }
    // 4. Apply rate.
    let a = measured.apply;
    let ratio = a.frames_per_sec / a.ceiling_per_sec;
    writeln!(
        md,
        "- memcastd apply ≥ 150 000 frames/s of 2 KB and ≥ 0.6× memcached's pipelined ceiling: {:.0} frames/s, {ratio:.2}× ({:.0} sets/s): {}.\n",
        a.frames_per_sec,
        a.ceiling_per_sec,
        verdict(a.frames_per_sec >= 150_000.0 && ratio >= 0.6)
    )
    .unwrap();
    md
}

/// Everything one run measured.
pub struct Measured<'a> {
    pub web: &'a WebResult,
    pub cluster_lock: &'a ClusterLockResult,
    pub handler: &'a [Latency],
    pub lag: &'a [Lag],
    pub lag_direct: &'a [Lag],
    pub replication_cpu: &'a ReplicationCpu,
    pub replication_cpu_jumbo: &'a ReplicationCpu,
    pub floor: &'a [crate::floor::FloorRun],
    pub scale: &'a [Scale],
    pub apply: &'a Apply,
    pub handoff: &'a Handoffs,
    pub memory: &'a Memory,
}

pub fn write(dir: &Path, measured: &Measured<'_>, took: Duration) -> String {
    let Measured {
        web,
        cluster_lock,
        handler,
        lag,
        lag_direct,
        replication_cpu,
        replication_cpu_jumbo,
        floor,
        scale,
        apply,
        handoff,
        memory,
    } = *measured;
    let mut md = String::new();
    let date = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = sh(
        "git",
        &[
            "-C",
            &super::workspace().display().to_string(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    writeln!(md, "# memcast benchmarks\n").unwrap();
    writeln!(
        md,
        "Measured {date} on {} (commit {commit}), by `make bench` in {:.0} s. Every alternative ran in the same run on the same machine; web variants were interleaved in {} rounds of {} s and each number is the median of the rounds.\n",
        machine(),
        took.as_secs_f64(),
        web.rounds,
        web.seconds
    )
    .unwrap();
    writeln!(
        md,
        "{}: a repeated byte would compress unrealistically well.\n",
        crate::session_payload::describe()
    )
    .unwrap();
    let goals = goals(measured);
    eprintln!("{goals}");
    md.push_str(&goals);

    // Web.
    let rps: Vec<(&str, f64)> = web
        .variants
        .iter()
        .map(|(name, runs)| {
            let mut v: Vec<f64> = runs.iter().map(|r| r.rps).collect();
            (*name, super::median(&mut v))
        })
        .collect();
    let find = |prefix: &str| {
        rps.iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map_or(f64::NAN, |(_, r)| *r)
    };
    let single = find("php-memcached, 1 server");
    let replicas = find("php-memcached, 3 servers, 2 replicas, locking");
    let ceiling = find("no session");
    writeln!(md, "## Web stack: requests per second\n").unwrap();
    writeln!(
        md,
        "nginx + php-fpm (pm = static, 8 workers) + wrk (8 threads, 8 connections) on loopback inside host 1 of three (network namespaces; the other hosts hold the remote memcached servers and memcastd). The page reads the 2 KB session and its counter, increments, writes back; each wrk thread cycles through its own 25 of 200 existing sessions. \"counters\": the sessions' counters add up to the requests wrk counted (plus at most one in-flight request per connection), every round. memcast's rows say where the session lock lives: \"cluster lock\" (`memcast.lock_scope = cluster`, the default: the first server of the session's rendezvous order over the three, another host's memcached for two sessions in three, one round trip there to lock and one to release) or \"host lock\" (`memcast.lock_scope = host`: host 1's own memcached; right only with sticky sessions). Here every session's requests come to host 1 only, so both count exactly: the difference is what the cluster lock costs on one entry host. The rows \"memcast's handler, replicated by the floor's bare relay and subscribers\" run the same handler with `memcast.publish` at the floor section's bare relay on host 1 instead of memcastd's, and the floor's bare subscribers on hosts 2 and 3 (checking each MAC, one pipelined write of `set`s per batch): the least this design's replication can cost, measured in this stack; their CPU column counts those processes in memcastd's place.\n"
    )
    .unwrap();
    writeln!(md, "| variant | req/s | × php-memcached (1 server) | × php-memcached (2 replicas, locking) | × ceiling | p50 ms | p99 ms | non-2xx | memcached + memcastd CPU, µs/request (3 hosts) | counters |").unwrap();
    writeln!(
        md,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for ((name, runs), (_, r)) in web.variants.iter().zip(&rps) {
        let mut p50: Vec<f64> = runs.iter().map(|x| x.p50_ms).collect();
        let mut p99: Vec<f64> = runs.iter().map(|x| x.p99_ms).collect();
        let mut cpu: Vec<f64> = runs.iter().map(|x| x.cluster_cpu_us).collect();
        let non2xx: u64 = runs.iter().map(|x| x.non2xx).sum();
        let total: u64 = runs.iter().map(|x| x.requests).sum();
        let session = !name.starts_with("no session");
        let exact = runs
            .iter()
            .all(|x| x.missing == 0 && (0..=8).contains(&x.surplus));
        let counters = if !session {
            "n/a".to_string()
        } else if exact {
            "add up".to_string()
        } else {
            let worst = runs.iter().map(|x| x.surplus).min().unwrap_or(0);
            format!("**{} lost**", -worst.min(0))
        };
        let counters = format!("{counters} ({total} requests)");
        writeln!(
            md,
            "| {name} | {r:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {non2xx} | {:.0} | {counters} |",
            r / single,
            r / replicas,
            r / ceiling,
            super::median(&mut p50),
            super::median(&mut p99),
            super::median(&mut cpu)
        )
        .unwrap();
    }
    writeln!(
        md,
        "\nTargets (issue 14): memcast ≥ 2.0× php-memcached with two replicas and locking: direct {:.2}×, relay {:.2}×; ≥ 1.0× php-memcached on one server: direct {:.2}×, relay {:.2}×, with p99 no worse (php-memcached single's is the bar).\n",
        find("memcast (direct") / replicas,
        find("memcast (host relay), cluster") / replicas,
        find("memcast (direct") / single,
        find("memcast (host relay), cluster") / single,
    )
    .unwrap();
    writeln!(md, "![requests per second](throughput.png)\n").unwrap();

    md.push_str(&self::cluster_lock(cluster_lock));

    // Handler.
    let raw = handler.last().expect("raw floor");
    writeln!(md, "## Handler cost without the web stack\n").unwrap();
    writeln!(md, "PHP CLI inside host 1, a 2 KB session, `session_start()` (read, with the lock when locking) and `session_write_close()` (write, and unlock) timed call by call; the floor is one `get` / `set` of the same value with php-memcached's client. µs; medians of the rounds' percentiles.\n").unwrap();
    writeln!(md, "| handler | read p50 | read p99 | write p50 | write p99 | read p50 ÷ raw get | write p50 ÷ raw set |").unwrap();
    writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |").unwrap();
    for l in handler {
        writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            l.name,
            l.read_p50,
            l.read_p99,
            l.write_p50,
            l.write_p99,
            l.read_p50 / raw.read_p50,
            l.write_p50 / raw.write_p50
        )
        .unwrap();
    }
    writeln!(md, "\n![read latency CDF](latency_cdf.png)\n").unwrap();

    // Replication.
    md.push_str(&self::lag(lag, lag_direct));
    md.push_str(&self::apply(apply));
    writeln!(md, "![lag against rate](lag.png)\n").unwrap();
    md.push_str(&self::replication_cpu(replication_cpu));
    md.push_str(&self::replication_cpu_jumbo(
        replication_cpu,
        replication_cpu_jumbo,
    ));
    md.push_str(&self::floor(
        floor,
        Some((replication_cpu, replication_cpu_jumbo)),
    ));
    md.push_str(&self::handoff(handoff));
    md.push_str(&self::scale(scale));

    // Memory.
    writeln!(md, "## Memory (resident)\n").unwrap();
    writeln!(md, "| process | idle | under load |").unwrap();
    writeln!(md, "| --- | --- | --- |").unwrap();
    writeln!(
        md,
        "| memcastd (host 1, relay, 64 MB ring) | {:.1} MB | {:.1} MB (relaying 20 000 frames/s) |",
        memory.memcastd_idle_kb as f64 / 1024.0,
        memory.memcastd_load_kb as f64 / 1024.0
    )
    .unwrap();
    writeln!(
        md,
        "| php-fpm worker with memcast | {:.1} MB | {:.1} MB (during the wrk run) |",
        memory.fpm_idle_kb as f64 / 1024.0,
        memory.fpm_load_kb as f64 / 1024.0
    )
    .unwrap();
    std::fs::write(dir.join("latest.md"), &md).unwrap();

    // Charts.
    let data = memcast_testkit::TempDir::new("bench-charts");
    let bars: String = rps
        .iter()
        .map(|(n, r)| {
            format!(
                "\"{}\" {r:.0}\n",
                n.replace(" (the stack's ceiling)", "")
                    .replace(": the handler alone", "")
                    .replace(
                        "memcast's handler, replicated by the floor's bare relay and subscribers",
                        "memcast's handler + the bare relay (floor)"
                    )
            )
        })
        .collect();
    std::fs::write(data.path.join("rps.dat"), bars).unwrap();
    for (i, l) in handler.iter().enumerate() {
        let n = l.read_us.len() as f64;
        let cdf: String = l
            .read_us
            .iter()
            .enumerate()
            .step_by((l.read_us.len() / 400).max(1))
            .map(|(k, v)| format!("{v:.2} {:.4}\n", (k + 1) as f64 / n))
            .collect();
        std::fs::write(data.path.join(format!("cdf{i}.dat")), cdf).unwrap();
    }
    let lag_dat: String = lag
        .iter()
        .map(|l| format!("{} {} {}\n", l.rate, l.p50_ms, l.p99_ms))
        .collect();
    std::fs::write(data.path.join("lag.dat"), lag_dat).unwrap();
    let d = data.path.display();
    let o = dir.display();
    gnuplot(&format!(
        "set terminal pngcairo size 1100,560 font 'sans,10' noenhanced\nset output '{o}/throughput.png'\n\
         set title 'Requests per second (median of rounds), nginx + php-fpm + wrk, {}'\n\
         set style data histograms\nset style fill solid 0.8 border -1\nset boxwidth 0.7\n\
         set ylabel 'requests/s'\nset yrange [0:*]\nset grid ytics\nunset key\nset xtics rotate by -20 left font 'sans,8' nomirror\nset bmargin 9\n\
         plot '{d}/rps.dat' using 2:xtic(1) linecolor rgb '#3b75af'\n",
        date
    ));
    let mut plots = Vec::new();
    for (i, l) in handler.iter().enumerate() {
        plots.push(format!(
            "'{d}/cdf{i}.dat' using 1:2 with lines lw 2 title '{}'",
            l.name
        ));
    }
    gnuplot(&format!(
        "set terminal pngcairo size 900,520 font 'sans,10' noenhanced\nset output '{o}/latency_cdf.png'\n\
         set title 'session_start() latency, CDF (PHP CLI, 2 KB session), {date}'\n\
         set logscale x\nset xlabel 'µs'\nset ylabel 'fraction of calls'\nset yrange [0:1]\nset grid\nset key bottom right\n\
         plot {}\n",
        plots.join(", ")
    ));
    gnuplot(&format!(
        "set terminal pngcairo size 800,480 font 'sans,10' noenhanced\nset output '{o}/lag.png'\n\
         set title 'Replication lag against write rate (2 KB frames, 3 hosts), {date}'\n\
         set logscale xy\nset xlabel 'writes/s'\nset ylabel 'lag, ms (bucket bound, log scale)'\nset yrange [0.25:*]\nset grid\nset key top left\n\
         plot '{d}/lag.dat' using 1:2 with linespoints lw 2 title 'p50', '' using 1:3 with linespoints lw 2 title 'p99'\n"
    ));
    md
}
