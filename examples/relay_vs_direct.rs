//! Measures what a PHP write costs with each way of publishing, on a real
//! three-host cluster over PGM (root, `make build` first):
//! `cargo run --release --example relay_vs_direct`.
//!
//! - a long-lived worker (php-fpm): many writes in one process;
//! - a short-lived one (CLI, pm.max_requests = 1): one write per process.

use std::path::Path;
use std::time::Instant;

use memcast_testkit::cluster::{Artifacts, Cluster, Publish};

fn per_write_us(cluster: &Cluster, writes: usize) -> f64 {
    let code = format!(
        r#"$t = hrtime(true);
        for ($i = 0; $i < {writes}; $i++) {{
            session_id(sprintf("bench%027d", $i % 200));
            session_start(); $_SESSION["n"] = $i; $_SESSION["p"] = str_repeat("x", 2000);
            session_write_close();
        }}
        echo (hrtime(true) - $t) / 1000 / {writes};"#
    );
    cluster
        .php(0, &code)
        .trim()
        .parse()
        .expect("php printed a number")
}

fn per_process_ms(cluster: &Cluster, processes: usize) -> f64 {
    let started = Instant::now();
    for i in 0..processes {
        cluster.php(
            0,
            &format!(
                r#"session_id(sprintf("bench%027d", {i})); session_start(); $_SESSION["n"] = 1;"#
            ),
        );
    }
    started.elapsed().as_secs_f64() * 1000.0 / processes as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut rows = Vec::new();
    for (name, mode) in [
        ("direct (epgm from PHP)", Publish::Direct),
        ("host relay (ipc to memcastd)", Publish::Relay),
    ] {
        let cluster = Cluster::start("bn", 3, mode, Artifacts::release(workspace));
        let long: Vec<f64> = (0..3).map(|_| per_write_us(&cluster, 2000)).collect();
        let short: Vec<f64> = (0..3).map(|_| per_process_ms(&cluster, 50)).collect();
        let started = Instant::now();
        let converged = cluster.converge(std::time::Duration::from_secs(30));
        let secs = started.elapsed().as_secs_f64();
        let report = match &converged {
            Ok(r) | Err(r) => r.lines().last().unwrap_or_default().to_owned(),
        };
        rows.push((
            name,
            median(long),
            median(short),
            converged.is_ok(),
            format!("{report} (after {secs:.1} s)"),
        ));
    }
    println!("| publishing | long-lived worker: µs per write (2 KB) | one process per write: ms per process | replicas converged |");
    println!("| --- | --- | --- | --- |");
    for (name, long, short, same, _) in &rows {
        println!("| {name} | {long:.0} | {short:.1} | {same} |");
    }
    for (name, _, _, _, report) in &rows {
        println!("{name}: {report}");
    }
}
