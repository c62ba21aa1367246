//! PHP hands its frames to the host relay over a Unix datagram socket
//! (`memcast.publish = "unixgram://..."`, memcastd `--relay` the same): two
//! hosts (network namespaces), real PHP, real memcastd, real PGM between
//! them. A 1 MB session, too big for a datagram, goes by the relay's
//! ZeroMQ socket beside it (`ipc://PATH.big`) and replicates too; without
//! a relay, PHP is told at once and the session is sent again later.
//! Needs root and `make build`.

use std::path::Path;
use std::time::{Duration, Instant};

use memcast_testkit::cluster::{Artifacts, Cluster, RelayScheme};
use memcast_testkit::eventually;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Writes sessions `ug-0` .. `ug-19` (small) and `ug-big` (~1 MB).
const WRITE: &str = r#"
for ($i = 0; $i < 20; $i++) {
    session_id("ug-$i"); session_start();
    $_SESSION["i"] = $i; $_SESSION["text"] = str_repeat("ab", $i);
    session_write_close();
}
session_id("ug-big"); session_start();
$_SESSION["blob"] = str_repeat("0123456789abcdef", 62000) . "end";
session_write_close();
echo "written\n";
"#;

const READ: &str = r#"
foreach (array_merge(range(0, 19), ["big"]) as $i) {
    session_id("ug-$i"); session_start();
    echo $i, ":", strlen(serialize($_SESSION)), ":", md5(serialize($_SESSION)), "\n";
    session_write_close();
}
"#;

#[test]
fn sessions_handed_over_a_datagram_socket_reach_the_other_host_a_1_mb_one_too() {
    memcast_testkit::require_root("the unixgram relay test (network namespaces)");
    let cluster = Cluster::start_relay_over("ug", 2, RelayScheme::Unixgram, artifacts(), vec![]);
    assert!(cluster.relay(0).starts_with("unixgram://"));
    assert_eq!(cluster.php(0, WRITE).trim(), "written");
    let on_a = cluster.php(0, READ);
    assert!(on_a.contains("big:9920"), "the big session: {on_a}");
    let replicated = eventually(Duration::from_secs(15), || {
        std::iter::once("memcast.sess.ug-big".to_owned())
            .chain((0..20).map(|i| format!("memcast.sess.ug-{i}")))
            .all(|key| cluster.raw(1, &key).is_some())
            .then_some(())
    });
    assert!(
        replicated.is_some(),
        "host 2 misses sessions; logs:\n{}",
        cluster.logs()
    );
    assert_eq!(cluster.php(1, READ), on_a, "host 2 reads what host 1 wrote");
}

#[test]
fn without_a_relay_php_is_told_at_once_and_sends_the_session_again_later() {
    memcast_testkit::require_root("the unixgram relay test (network namespaces)");
    let mut cluster =
        Cluster::start_relay_over("uga", 2, RelayScheme::Unixgram, artifacts(), vec![]);
    cluster.kill_memcastd(0);
    // One PHP process (output buffered, so the session may start; what it
    // prints goes to STDOUT): writes while the relay is away, then after.
    let code = r#"
        function out() { $p = ob_get_contents(); ob_clean(); fwrite(STDOUT, $p); }
        session_id("ug-away"); session_start(); $_SESSION["v"] = "away";
        $t = hrtime(true); $ok = session_write_close(); $ms = (hrtime(true) - $t) / 1e6;
        out();
        fwrite(STDOUT, "closed " . ($ok ? "true" : "false") . " in " . ($ms < 20 ? "under 20 ms" : "$ms ms") . "\n");
        fwrite(STDOUT, "back\n"); fgets(STDIN);
        session_id("ug-later"); session_start(); $_SESSION["v"] = "later";
        session_write_close();
        out();
        ob_clean(); phpinfo(INFO_MODULES); $info = ob_get_clean();
        preg_match('/^Dropped sessions sent again => (\d+)/m', $info, $m);
        fwrite(STDOUT, "resent $m[1]\n");
    "#;
    let mut php = cluster
        .php_command(0, code)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start php");
    let mut stdout = std::io::BufReader::new(php.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let started = Instant::now();
    while !seen.contains("back\n") && started.elapsed() < Duration::from_secs(20) {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
    }
    assert!(
        seen.contains("no relay is listening"),
        "PHP was not told why: {seen}"
    );
    assert!(seen.contains("closed true in under 20 ms"), "{seen}");
    cluster.start_memcastd(0);
    std::thread::sleep(memcast_bus::RELAY_RECONNECTED_WITHIN);
    {
        use std::io::Write;
        let mut stdin = php.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("write stdin");
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("php's output");
    assert!(php.wait().expect("php").success(), "{rest}");
    assert!(
        rest.contains("resent 1"),
        "ug-away was not sent again: {rest}"
    );
    let both = eventually(Duration::from_secs(10), || {
        ["memcast.sess.ug-away", "memcast.sess.ug-later"]
            .iter()
            .all(|k| cluster.raw(1, k).is_some())
            .then_some(())
    });
    assert!(
        both.is_some(),
        "host 2 misses a session; logs:\n{}",
        cluster.logs()
    );
}
