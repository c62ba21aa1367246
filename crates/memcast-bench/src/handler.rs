//! Per-call latency from PHP CLI inside host 1: session_start() (read) and
//! session_write_close() (write) of the bench's 2 KB session, memcast and
//! php-memcached, locking on and off, against raw get/set round trips of the
//! same value with php-memcached's client (the floor). memcast seals
//! sessions (the default with a key file), and once more with
//! `memcast.seal=0`: the cost of sealing.

use std::process::Stdio;

use memcast_testkit::cluster::Cluster;

const CALLS: usize = 2000;

const HANDLER: &str = r#"ob_start();
$n = N; $id = 'lat' . bin2hex(random_bytes(6));
session_id($id); session_start(); $_SESSION = []; SESSION_DECODE; $_SESSION['n'] = 0; session_write_close();
$r = []; $w = [];
for ($i = 0; $i < $n; $i++) {
    session_id($id);
    $t0 = hrtime(true); session_start(); $t1 = hrtime(true);
    $_SESSION['n']++;
    $t2 = hrtime(true); $ok = session_write_close(); $t3 = hrtime(true);
    if (!$ok || $_SESSION['n'] !== $i + 1) { fwrite(STDERR, "session lost at $i\n"); exit(1); }
    $r[] = $t1 - $t0; $w[] = $t3 - $t2;
}
ob_end_clean();
echo implode(',', $r), "\n", implode(',', $w), "\n";
"#;

const RAW: &str = r#"
$n = N; $m = new Memcached(); $m->addServer('127.0.0.1', 11211);
$v = SESSION_LITERAL . 'n|i:0;'; $m->set('rawbench', $v);
$r = []; $w = [];
for ($i = 0; $i < $n; $i++) {
    $t0 = hrtime(true); $got = $m->get('rawbench'); $t1 = hrtime(true);
    $ok = $m->set('rawbench', $v); $t2 = hrtime(true);
    if ($got !== $v || !$ok) { fwrite(STDERR, "raw get/set failed\n"); exit(1); }
    $r[] = $t1 - $t0; $w[] = $t2 - $t1;
}
echo implode(',', $r), "\n", implode(',', $w), "\n";
"#;

pub struct Latency {
    pub name: &'static str,
    /// Microseconds, every call of every round, sorted.
    pub read_us: Vec<f64>,
    pub write_us: Vec<f64>,
    /// Medians over rounds of each round's p50 and p99.
    pub read_p50: f64,
    pub read_p99: f64,
    pub write_p50: f64,
    pub write_p99: f64,
}

pub fn run(cluster: &Cluster, rounds: usize) -> Vec<Latency> {
    let so = super::workspace().join("target/release/libmemcast.so");
    let others: Vec<String> = cluster.sites[1..]
        .iter()
        .map(|s| format!("{}:11211", s.host.addr))
        .collect();
    // With a key file sessions are sealed (memcast.seal's default).
    let memcast = |locking: &str, seal: &str| -> Vec<String> {
        vec![
            format!("extension={}", so.display()),
            "session.save_handler=memcast".into(),
            format!("session.save_path=127.0.0.1:11211, {}", others.join(", ")),
            format!("memcast.publish={}", cluster.relay(0)),
            format!("memcast.key_file={}", cluster.key_file_of(0).display()),
            format!("memcast.locking={locking}"),
            format!("memcast.seal={seal}"),
        ]
    };
    let memcached = |locking: &str| -> Vec<String> {
        let mut ini = super::pecl("memcached");
        ini.extend([
            "session.save_handler=memcached".into(),
            "session.save_path=127.0.0.1:11211".into(),
            format!("memcached.sess_locking={locking}"),
        ]);
        ini
    };
    let configs: Vec<(&'static str, Vec<String>, &str)> = vec![
        ("memcast, locking", memcast("1", "1"), HANDLER),
        (
            "memcast, locking, memcast.seal=0",
            memcast("1", "0"),
            HANDLER,
        ),
        ("memcast, no locking", memcast("0", "1"), HANDLER),
        (
            "memcast, no locking, memcast.seal=0",
            memcast("0", "0"),
            HANDLER,
        ),
        ("php-memcached, locking", memcached("1"), HANDLER),
        ("php-memcached, no locking", memcached("0"), HANDLER),
        (
            "raw memcached get / set (php-memcached client)",
            memcached("0"),
            RAW,
        ),
    ];
    let mut out: Vec<Latency> = configs
        .iter()
        .map(|(name, _, _)| Latency {
            name,
            read_us: Vec::new(),
            write_us: Vec::new(),
            read_p50: 0.0,
            read_p99: 0.0,
            write_p50: 0.0,
            write_p99: 0.0,
        })
        .collect();
    let mut per_round: Vec<[Vec<f64>; 4]> = configs.iter().map(|_| Default::default()).collect();
    for _ in 0..rounds {
        for (ci, (name, ini, script)) in configs.iter().enumerate() {
            // Let the previous run's replication settle (same two cores).
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let mut php = cluster.sites[0].host.command("php");
            php.arg("-n");
            for d in ini {
                php.arg("-d").arg(d);
            }
            let script = script
                .replace("N;", &format!("{CALLS};"))
                .replace("SESSION_DECODE", &crate::session_payload::php_decode())
                .replace("SESSION_LITERAL", &crate::session_payload::php_literal());
            php.args(["-r", &script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let o = php.output().unwrap();
            assert!(
                o.status.success(),
                "{name}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let mut parse = || -> Vec<f64> {
                let mut v: Vec<f64> = lines
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|n| n.trim().parse::<f64>().ok())
                    .map(|ns| ns / 1000.0)
                    .collect();
                v.sort_by(|a, b| a.total_cmp(b));
                v
            };
            let (r, w) = (parse(), parse());
            assert_eq!(r.len(), CALLS, "{name}: {text}");
            per_round[ci][0].push(super::percentile(&r, 0.5));
            per_round[ci][1].push(super::percentile(&r, 0.99));
            per_round[ci][2].push(super::percentile(&w, 0.5));
            per_round[ci][3].push(super::percentile(&w, 0.99));
            out[ci].read_us.extend(r);
            out[ci].write_us.extend(w);
            eprintln!(
                "bench: {name:<48} read p50 {:>6.1} µs  write p50 {:>6.1} µs",
                per_round[ci][0].last().unwrap(),
                per_round[ci][2].last().unwrap()
            );
        }
    }
    for (ci, l) in out.iter_mut().enumerate() {
        l.read_us.sort_by(|a, b| a.total_cmp(b));
        l.write_us.sort_by(|a, b| a.total_cmp(b));
        l.read_p50 = super::median(&mut per_round[ci][0]);
        l.read_p99 = super::median(&mut per_round[ci][1]);
        l.write_p50 = super::median(&mut per_round[ci][2]);
        l.write_p99 = super::median(&mut per_round[ci][3]);
    }
    out
}
