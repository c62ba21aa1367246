//! `BENCH_ONLY=profile`: where replication's CPU goes (issue 14).
//!
//! On the three-host cluster: the replication CPU measurement of
//! [`crate::replication_cpu`] (store only, then store + publish, at
//! `PROFILE_RATE`, default 5 000/s, `PROFILE_SECONDS` per phase, default 10,
//! `PROFILE_ROUNDS` rounds, default 1), then **perf** (8 s): the same
//! traffic with `perf record` on host 2's memcastd (a receiver), then on
//! host 1's (the relay), 4 s each. Writes bench/results/profile-data.md;
//! profile.md holds the reading of it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use memcast_testkit::cluster::Cluster;

use crate::replication_cpu::{ReplicationCpu, Sender};

const PERF_SECONDS: u64 = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `perf record` with DWARF call graphs on `pid` for `seconds`.
fn perf_record(pid: u32, out: &Path, seconds: u64) -> bool {
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "1999"])
        .args(["--call-graph", "dwarf,16384", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The top `n` rows of a `perf report`: (self or children %, symbol, where).
fn perf_top(data: &Path, children: bool, n: usize) -> Vec<(f64, f64, String, String)> {
    let mode = if children {
        "--children"
    } else {
        "--no-children"
    };
    let out = Command::new("perf")
        .args(["report", "-i"])
        .arg(data)
        .args([mode, "--stdio", "-g", "none", "--sort", "dso,sym"])
        .args(["--percent-limit", "0.3"])
        .output();
    let Ok(out) = out else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || !line.contains('%') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let first: Option<f64> = parts
            .next()
            .and_then(|p| p.trim_end_matches('%').parse().ok());
        let Some(first) = first else {
            continue;
        };
        let second = if children {
            parts
                .next()
                .and_then(|p| p.trim_end_matches('%').parse().ok())
        } else {
            Some(first)
        };
        let Some(second) = second else {
            continue;
        };
        let dso = parts.next().unwrap_or("").to_owned();
        let _kind = parts.next();
        let sym: String = parts.collect::<Vec<_>>().join(" ");
        if children && is_wrapper(&sym) {
            continue;
        }
        rows.push((first, second, sym, dso));
        if rows.len() == n {
            break;
        }
    }
    rows
}

/// Frames every sample passes through (start-up, the standard library's
/// entry points, unnamed libzmq frames): they say nothing about the cost.
fn is_wrapper(sym: &str) -> bool {
    const WRAPPERS: [&str; 12] = [
        "std::",
        "core::",
        "<&dyn",
        "__libc_start",
        "_start",
        "main",
        "memcastd::main",
        "memcastd::run_daemon",
        "memcastd::daemon::Daemon::run",
        "clone3",
        "start_thread",
        "0x",
    ];
    WRAPPERS.iter().any(|w| sym.starts_with(w))
}

pub fn run(cluster: &Cluster, out_dir: &Path) {
    let rate = env_u64("PROFILE_RATE", 5_000);
    let seconds = env_u64("PROFILE_SECONDS", 10);
    let rounds = env_u64("PROFILE_ROUNDS", 1) as usize;
    eprintln!("profile: {rounds} round(s) of store only, then store + publish, {rate}/s for {seconds} s each");
    let measured = crate::replication_cpu::run(cluster, rounds.max(1), rate, seconds);

    eprintln!("profile: perf on host 2's memcastd, then host 1's");
    let perf_dir = std::env::temp_dir().join(format!("memcast-profile-{}", std::process::id()));
    std::fs::create_dir_all(&perf_dir).expect("perf dir");
    let receiver_data = perf_dir.join("receiver.data");
    let relay_data = perf_dir.join("relay.data");
    let targets = [
        (cluster.memcastd_pid(1).unwrap_or(0), receiver_data.clone()),
        (cluster.memcastd_pid(0).unwrap_or(0), relay_data.clone()),
    ];
    let recorder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        targets
            .iter()
            .all(|(pid, out)| perf_record(*pid, out, PERF_SECONDS))
    });
    Sender::new(cluster).run(rate, 2 * PERF_SECONDS + 1, true);
    let recorded = recorder.join().unwrap_or(false);

    let md = report(&measured, recorded.then_some((&receiver_data, &relay_data)));
    let path = out_dir.join("profile-data.md");
    std::fs::write(&path, &md).expect("write profile-data.md");
    println!("{md}");
    eprintln!(
        "profile: wrote {}; perf data kept in {}",
        path.display(),
        perf_dir.display()
    );
}

fn report(measured: &ReplicationCpu, perf: Option<(&PathBuf, &PathBuf)>) -> String {
    let mut md = crate::report::replication_cpu(measured);
    let _ = writeln!(md, "memcastd threads, store + publish, µs/write:\n");
    let _ = writeln!(md, "| process | thread | µs/write |");
    let _ = writeln!(md, "|---|---|---:|");
    for (process, thread, us) in &measured.threads {
        let _ = writeln!(md, "| {process} | {thread} | {us:.1} |");
    }
    md.push('\n');
    if let Some((receiver, relay)) = perf {
        for (title, data) in [
            ("host 2's memcastd (a receiver)", receiver),
            ("host 1's memcastd (the relay)", relay),
        ] {
            let _ = writeln!(
                md,
                "### perf: {title}, top symbols by self time (`perf report --no-children`)\n"
            );
            let _ = writeln!(md, "| self % | symbol | object |");
            let _ = writeln!(md, "|---:|---|---|");
            for (s, _, sym, dso) in perf_top(data, false, 15) {
                let _ = writeln!(md, "| {s:.2} | `{sym}` | {dso} |");
            }
            let _ = writeln!(
                md,
                "\n### perf: {title}, top by inclusive time (`perf report --children`)\n"
            );
            let _ = writeln!(md, "| children % | self % | symbol | object |");
            let _ = writeln!(md, "|---:|---:|---|---|");
            for (c, s, sym, dso) in perf_top(data, true, 25) {
                let _ = writeln!(md, "| {c:.2} | {s:.2} | `{sym}` | {dso} |");
            }
            md.push('\n');
        }
    } else {
        md.push_str("(perf record failed: no call-graph tables)\n");
    }
    md
}
