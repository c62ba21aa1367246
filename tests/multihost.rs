//! Three hosts (network namespaces on a bridge), each with its own memcached,
//! memcastd and PHP, replicating over real PGM multicast (epgm).
//!
//! Needs root and the release build (`make build`); `make test` runs it.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use memcast_core::StoredValue;
use memcast_testkit::{eventually, raw_get, Host, Network, Proc, TempDir, MEMCACHED_ARGS};

fn artifact(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/release")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

struct Site {
    host: Host,
    memcached: Proc,
    memcastd: Proc,
}

struct Cluster {
    sites: Vec<Site>,
    key_file: PathBuf,
    group: String,
    dir: TempDir,
    // Dropped last: removes the namespaces and the bridge.
    _net: Network,
}

impl Cluster {
    fn start(tag: &str) -> Cluster {
        let mut net = Network::new(tag);
        let dir = TempDir::new(tag);
        let key_file = dir.key_file("cluster.key", 5);
        let group = net.group();
        let memcastd = artifact("memcastd");
        let mut sites = Vec::new();
        for i in 1..=3u8 {
            let host = net.add_host(i);
            let mut mc = host.command(memcast_testkit::memcached_binary());
            mc.args(["-l", "0.0.0.0", "-p", "11211"])
                .args(MEMCACHED_ARGS)
                .args(memcast_testkit::user_arg());
            mc.stdout(Stdio::null());
            let memcached = Proc::spawn("memcached", &mut mc);
            assert!(
                memcast_testkit::wait_for_tcp(
                    &format!("{}:11211", host.addr),
                    Duration::from_secs(5)
                ),
                "memcached on {} did not start",
                host.netns
            );
            let log = std::fs::File::create(dir.path.join(format!("memcastd{i}.log"))).unwrap();
            let mut d = host.command(&memcastd);
            d.args(["--memcached", "127.0.0.1:11211", "--subscribe"])
                .arg(format!("epgm://{};{}:5555", host.iface, group))
                .arg("--key-file")
                .arg(&key_file)
                .args(["--stats-interval", "0"])
                .stdout(Stdio::null())
                .stderr(log);
            let memcastd = Proc::spawn("memcastd", &mut d);
            sites.push(Site {
                host,
                memcached,
                memcastd,
            });
        }
        let mut cluster = Cluster {
            sites,
            key_file,
            group,
            dir,
            _net: net,
        };
        // Until a probe written on host 1 shows up on hosts 2 and 3, the
        // receivers have not joined the group yet.
        let joined = eventually(Duration::from_secs(20), || {
            cluster.php(0, "session_id('probe0000000000000000000000000000'); session_start(); $_SESSION['p'] = microtime(true);");
            (cluster
                .raw(1, "memcast.sess.probe0000000000000000000000000000")
                .is_some()
                && cluster
                    .raw(2, "memcast.sess.probe0000000000000000000000000000")
                    .is_some())
            .then_some(())
        });
        assert!(
            joined.is_some(),
            "replication never started; logs:\n{}",
            cluster.logs()
        );
        cluster
    }

    /// Runs PHP CLI with memcast on host `i`; panics on any warning or error.
    fn php(&self, i: usize, code: &str) -> String {
        let out = self.php_output(i, code);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && !text.contains("Warning") && !text.contains("Fatal"),
            "PHP on host {}: {text}",
            i + 1
        );
        text
    }

    fn php_output(&self, i: usize, code: &str) -> Output {
        let site = &self.sites[i];
        let others: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("{}:11211", self.sites[j].host.addr))
            .collect();
        let save_path = format!("127.0.0.1:11211, {}", others.join(", "));
        site.host
            .command("php")
            .arg("-n")
            .arg("-d")
            .arg(format!("extension={}", artifact("libmemcast.so").display()))
            .args([
                "-d",
                "session.save_handler=memcast",
                "-d",
                "display_errors=1",
                "-d",
                "error_reporting=-1",
            ])
            .arg("-d")
            .arg(format!("session.save_path={save_path}"))
            .arg("-d")
            // Quoted: in INI syntax an unquoted ";" starts a comment.
            .arg(format!(
                "memcast.publish=\"epgm://{};{}:5555\"",
                site.host.iface, self.group
            ))
            .arg("-d")
            .arg(format!("memcast.key_file={}", self.key_file.display()))
            .args(["-r", &format!("ob_start(); {code}")])
            .stderr(Stdio::inherit())
            .output()
            .expect("run php")
    }

    /// What host `i`'s memcached holds for `key`, read directly.
    fn raw(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        raw_get(&format!("{}:11211", self.sites[i].host.addr), key)
    }

    /// Stops every memcastd (SIGTERM: they log their final counters) and
    /// returns their logs, for a failure message.
    fn logs(&mut self) -> String {
        for site in &mut self.sites {
            site.memcastd.signal("TERM", Duration::from_secs(3));
        }
        (1..=3)
            .map(|i| {
                std::fs::read_to_string(self.dir.path.join(format!("memcastd{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

const WRITE_SESSIONS: &str = r#"
    $ids = [];
    for ($i = 0; $i < 20; $i++) {
        session_id(sprintf("multihost%023d", $i));
        session_start();
        $_SESSION["i"] = $i;
        $_SESSION["text"] = "user|" . str_repeat("ab|", $i) . "\x00end";
        session_write_close();
    }
    echo "written\n";
"#;

const READ_SESSIONS: &str = r#"
    for ($i = 0; $i < 20; $i++) {
        session_id(sprintf("multihost%023d", $i));
        session_start();
        echo $i, ":", md5(serialize($_SESSION)), "\n";
        session_write_close();
    }
"#;

#[test]
fn write_on_host_a_is_read_on_hosts_b_and_c_and_survives_a_dead_memcached() {
    let mut cluster = Cluster::start("mh");
    assert_eq!(cluster.php(0, WRITE_SESSIONS).trim(), "written");
    let on_a = cluster.php(0, READ_SESSIONS);
    assert_eq!(on_a.lines().count(), 20);
    // Replicated to B and C by their memcastd, byte for byte.
    for site in 1..3 {
        let replicated = eventually(Duration::from_secs(10), || {
            (0..20)
                .all(|i| {
                    cluster
                        .raw(site, &format!("memcast.sess.multihost{i:023}"))
                        .is_some()
                })
                .then_some(())
        });
        assert!(
            replicated.is_some(),
            "host {} misses sessions; logs:\n{}",
            site + 1,
            cluster.logs()
        );
        assert_eq!(
            cluster.php(site, READ_SESSIONS),
            on_a,
            "host {} reads different data",
            site + 1
        );
        for i in 0..20 {
            let key = format!("memcast.sess.multihost{i:023}");
            assert_eq!(
                cluster.raw(site, &key),
                cluster.raw(0, &key),
                "{key} differs on host {}",
                site + 1
            );
        }
    }

    // Host A's memcached dies: PHP on A reads and writes through B, no error.
    cluster.sites[0].memcached.kill();
    assert_eq!(
        cluster.php(0, READ_SESSIONS),
        on_a,
        "reads on A after its memcached died"
    );
    cluster.php(
        0,
        r#"for ($i = 0; $i < 20; $i++) {
            session_id(sprintf("multihost%023d", $i));
            session_start();
            $_SESSION["after_failover"] = true;
            session_write_close();
        }"#,
    );
    // The writes landed on B (A's next server) and reached C through the group.
    let seen_on_c = eventually(Duration::from_secs(10), || {
        (0..20)
            .all(|i| {
                cluster
                    .raw(2, &format!("memcast.sess.multihost{i:023}"))
                    .is_some_and(|v| {
                        String::from_utf8_lossy(StoredValue::parse(&v).unwrap().data)
                            .contains("after_failover|b:1;")
                    })
            })
            .then_some(())
    });
    if seen_on_c.is_none() {
        let key = format!("memcast.sess.multihost{:023}", 0);
        let b = cluster
            .raw(1, &key)
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let c = cluster
            .raw(2, &key)
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        panic!(
            "writes made during the failover did not reach host C\nB: {b:?}\nC: {c:?}\nlogs:\n{}",
            cluster.logs()
        );
    }
    let after_a = cluster.php(0, READ_SESSIONS);
    assert_eq!(cluster.php(2, READ_SESSIONS), after_a);
    assert_ne!(after_a, on_a);
}

#[test]
fn two_hosts_writing_one_session_concurrently_end_identical_everywhere() {
    let mut cluster = Cluster::start("cc");
    let writer = |site: usize| {
        format!(
            r#"for ($i = 0; $i < 150; $i++) {{
                session_id("contended0000000000000000000000");
                session_start();
                $_SESSION["last"] = "host{site} write $i";
                $_SESSION["host{site}"] = $i;
                session_write_close();
            }}"#
        )
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| cluster.php(0, &writer(1)));
        let b = s.spawn(|| cluster.php(1, &writer(2)));
        a.join().unwrap();
        b.join().unwrap();
    });
    let key = "memcast.sess.contended0000000000000000000000";
    let converged = eventually(Duration::from_secs(10), || {
        let values: Vec<_> = (0..3).map(|i| cluster.raw(i, key)).collect();
        (values[0].is_some() && values.iter().all(|v| v == &values[0]))
            .then(|| values[0].clone().unwrap())
    });
    let Some(value) = converged else {
        let values: Vec<_> = (0..3)
            .map(|i| {
                cluster
                    .raw(i, key)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            })
            .collect();
        panic!("replicas differ: {values:?}\nlogs:\n{}", cluster.logs());
    };
    let data = String::from_utf8_lossy(StoredValue::parse(&value).unwrap().data).into_owned();
    assert!(data.contains("last|s:"), "{data}");
    // Every replica reads the same session through PHP too.
    let read = r#"session_id("contended0000000000000000000000"); session_start(); echo md5(serialize($_SESSION));"#;
    let a = cluster.php(0, read);
    assert_eq!(cluster.php(1, read), a);
    assert_eq!(cluster.php(2, read), a);
}
