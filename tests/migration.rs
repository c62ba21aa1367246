//! Switching a cluster from php-memcached to memcast, host by host, logs
//! nobody out. Three hosts over real PGM, each with its memcached; the real
//! php-memcached extension (`session.save_handler = memcached`, the three
//! memcacheds as its pool) writes sessions first. Then host 3 switches to
//! memcast with `memcast.migrate_from = memcached` while hosts 1 and 2 still
//! run php-memcached, then hosts 1 and 2 switch too. Every session
//! php-memcached wrote is read whole by memcast on every host, its next
//! write reaches every memcached in memcast's format, and a session written
//! by php-memcached during the switch is not lost either.
//! Needs root, `make build` and php8.2-memcached (scripts/install-deps.sh).

use std::path::Path;
use std::time::Duration;

use memcast_core::StoredValue;
use memcast_testkit::cluster::{Artifacts, Cluster, Publish};
use memcast_testkit::eventually;

const BEFORE: usize = 40;
const DURING: usize = 10;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Runs PHP with the real php-memcached extension as the session handler
/// on host `i`, its pool every host's memcached (the same list everywhere,
/// as a php-memcached cluster is configured). Panics on a warning.
fn php_memcached(cluster: &Cluster, i: usize, code: &str) -> String {
    let pool: Vec<String> = (0..cluster.sites.len())
        .map(|j| cluster.memcached_addr(j))
        .collect();
    let out = cluster.sites[i]
        .host
        .command("php")
        .args(["-n", "-d", "extension=igbinary", "-d", "extension=msgpack"])
        .args(["-d", "extension=memcached"])
        .args(["-d", "session.save_handler=memcached"])
        .arg("-d")
        .arg(format!("session.save_path={}", pool.join(",")))
        .args(["-d", "display_errors=1", "-d", "error_reporting=-1"])
        .args(["-r", &format!("ob_start(); {code}")])
        .output()
        .expect("run php");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("Warning") && !text.contains("Fatal"),
        "php-memcached on host {}: {text}",
        i + 1
    );
    text
}

/// PHP writing sessions `{tag}00000000..n`, each with its number and who wrote it.
fn write_sessions(tag: &str, n: usize, by: &str) -> String {
    format!(
        r#"$ok = 0;
        for ($i = 0; $i < {n}; $i++) {{
            session_id(sprintf("{tag}%08d", $i));
            session_start();
            $_SESSION["i"] = $i;
            $_SESSION["by"] = "{by}";
            $_SESSION["pad"] = str_repeat("x", 200);
            if (session_write_close()) {{ $ok++; }}
        }}
        echo "written=$ok\n";"#
    )
}

/// PHP reading sessions `{tag}00000000..n`: prints one JSON line per
/// session; with `mark`, sets `$_SESSION[mark] = 1` and writes it back.
fn visit_sessions(tag: &str, n: usize, mark: Option<&str>) -> String {
    let (start, after) = match mark {
        Some(m) => (
            "",
            format!(r#"$_SESSION["{m}"] = 1; session_write_close();"#),
        ),
        None => (r#"["read_and_close" => true]"#, String::new()),
    };
    format!(
        r#"for ($i = 0; $i < {n}; $i++) {{
            session_id(sprintf("{tag}%08d", $i));
            if (!session_start({start})) {{ echo "failed $i\n"; continue; }}
            $s = $_SESSION; unset($s["pad"]);
            echo json_encode($s), "\n";
            {after}
        }}"#
    )
}

/// The JSON lines [`visit_sessions`] printed.
fn sessions_seen(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with('{') || l.starts_with('['))
        .map(str::to_owned)
        .collect()
}

/// How many of `tag`'s sessions hold, in memcast's format on every host's
/// memcached, data containing each of `want`.
fn in_memcast_format_everywhere(cluster: &Cluster, tag: &str, n: usize, want: &[&str]) -> usize {
    (0..n)
        .filter(|i| {
            let key = format!("memcast.sess.{tag}{i:08}");
            (0..cluster.sites.len()).all(|h| {
                let raw = cluster.raw(h, &key).unwrap_or_default();
                StoredValue::parse(&raw).is_some_and(|v| {
                    let data = String::from_utf8_lossy(v.data);
                    !v.tombstone && !v.created && want.iter().all(|w| data.contains(w))
                })
            })
        })
        .count()
}

#[test]
fn a_rolling_switch_from_php_memcached_logs_nobody_out() {
    memcast_testkit::require_root("the migration test (network namespaces)");
    let probe = std::process::Command::new("php")
        .args(["-n", "-d", "extension=igbinary", "-d", "extension=msgpack"])
        .args([
            "-d",
            "extension=memcached",
            "-r",
            "echo phpversion('memcached');",
        ])
        .output()
        .expect("run php");
    assert!(
        probe.status.success() && !probe.stdout.is_empty(),
        "php-memcached is missing: run scripts/install-deps.sh (php8.2-memcached)"
    );
    let mut cluster = Cluster::start("mig", 3, Publish::Relay, artifacts());
    cluster
        .php_ini
        .push(("memcast.migrate_from".into(), "memcached".into()));

    // Before: php-memcached on every host. Its consistent hashing puts each
    // session on one memcached of the pool; host 2 reads host 1's writes.
    let out = php_memcached(&cluster, 0, &write_sessions("old", BEFORE, "memcached"));
    assert!(out.contains(&format!("written={BEFORE}")), "{out}");
    let seen = sessions_seen(&php_memcached(
        &cluster,
        1,
        &visit_sessions("old", BEFORE, None),
    ));
    assert_eq!(seen.len(), BEFORE, "php-memcached on host 2 reads them");
    let per_server: Vec<usize> = (0..3)
        .map(|h| {
            (0..BEFORE)
                .filter(|i| {
                    cluster
                        .raw(h, &format!("memc.sess.key.old{i:08}"))
                        .is_some()
                })
                .count()
        })
        .collect();
    assert_eq!(per_server.iter().sum::<usize>(), BEFORE, "{per_server:?}");
    assert!(
        per_server.iter().filter(|&&n| n > 0).count() >= 2,
        "php-memcached spread its sessions over the pool: {per_server:?}"
    );

    // Host 3 switches to memcast; hosts 1 and 2 still run php-memcached.
    let seen = sessions_seen(&cluster.php(2, &visit_sessions("old", BEFORE, Some("seen3"))));
    assert_eq!(seen.len(), BEFORE, "memcast on host 3 read every session");
    for (i, s) in seen.iter().enumerate() {
        assert!(
            s.starts_with(&format!(r#"{{"i":{i},"by":"memcached""#)),
            "session {i}: {s}"
        );
    }
    let out = php_memcached(&cluster, 0, &write_sessions("new", DURING, "memcached"));
    assert!(out.contains(&format!("written={DURING}")), "{out}");
    // Host 3's writes reach every memcached in memcast's format, as writes
    // after a read (not creates).
    let replicated = eventually(Duration::from_secs(10), || {
        (in_memcast_format_everywhere(&cluster, "old", BEFORE, &["seen3|i:1;"]) == BEFORE)
            .then_some(())
    });
    assert!(
        replicated.is_some(),
        "{} of {BEFORE} migrated sessions on every host\n{}",
        in_memcast_format_everywhere(&cluster, "old", BEFORE, &["seen3|i:1;"]),
        cluster.logs()
    );

    // Hosts 1 and 2 switch too. Host 1 reads every session: memcast's own
    // copy where host 3 wrote one, php-memcached's where only it holds one
    // (written during the switch), and writes each.
    let seen = sessions_seen(&cluster.php(0, &visit_sessions("old", BEFORE, Some("seen1"))));
    assert_eq!(seen.len(), BEFORE);
    assert!(
        seen.iter().all(|s| s.contains(r#""seen3":1"#)),
        "memcast's own copy wins over php-memcached's: {seen:?}"
    );
    let seen = sessions_seen(&cluster.php(0, &visit_sessions("new", DURING, Some("seen1"))));
    assert_eq!(seen.len(), DURING);
    assert!(
        seen.iter().all(|s| s.contains(r#""by":"memcached""#)),
        "{seen:?}"
    );

    // Strict mode keeps an id only php-memcached holds.
    let out = php_memcached(&cluster, 1, &write_sessions("strict", 1, "memcached"));
    assert!(out.contains("written=1"), "{out}");
    let out = cluster.php(
        1,
        r#"ini_set("session.use_strict_mode", 1); session_id("strict00000000");
        session_start(); echo session_id(), " ", $_SESSION["by"], "\n";"#,
    );
    assert!(out.contains("strict00000000 memcached"), "{out}");

    // Nothing lost: every session, read on host 2, carries host 1's last write.
    let whole = eventually(Duration::from_secs(10), || {
        let old = sessions_seen(&cluster.php(1, &visit_sessions("old", BEFORE, None)));
        let new = sessions_seen(&cluster.php(1, &visit_sessions("new", DURING, None)));
        let all_seen1 = old
            .iter()
            .chain(&new)
            .filter(|s| s.contains(r#""seen1":1"#))
            .count();
        (all_seen1 == BEFORE + DURING).then_some(())
    });
    assert!(
        whole.is_some(),
        "host 2 lacks host 1's writes\n{}",
        cluster.logs()
    );
    assert_eq!(
        in_memcast_format_everywhere(
            &cluster,
            "new",
            DURING,
            &["seen1|i:1;", "by|s:9:\"memcached\";"]
        ),
        DURING
    );
    let converged = cluster.converge(Duration::from_secs(15));
    assert!(converged.is_ok(), "{converged:?}");

    // A destroyed session cannot come back from php-memcached's key.
    let out = cluster.php(
        2,
        r#"session_id("new00000003"); session_start(); var_dump(session_destroy());"#,
    );
    assert!(out.contains("bool(true)"), "{out}");
    for h in 0..3 {
        assert!(
            cluster.raw(h, "memc.sess.key.new00000003").is_none(),
            "php-memcached's copy left on host {}",
            h + 1
        );
    }
    let out = eventually(Duration::from_secs(10), || {
        let out = cluster.php(
            0,
            r#"session_id("new00000003"); session_start(["read_and_close" => true]); echo json_encode($_SESSION), "\n";"#,
        );
        out.contains("[]").then_some(out)
    });
    assert!(out.is_some(), "the destroyed session is back on host 1");
}
