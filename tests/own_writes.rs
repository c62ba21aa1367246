//! A host reads its own last write: a PHP process (a php-fpm worker's life)
//! on host 3 writes a session, host 3's memcached restarts (empty, refilled
//! from a peer), the same process writes the session again, and a later
//! request on host 3 must read that write, not the one before.
//! Needs root and `make build`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use memcast_testkit::cluster::{Artifacts, Cluster, Publish};
use memcast_testkit::eventually;

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// `W <n>` writes session `ow-1` with `n`; `R` reads it; each answers one line.
const WORKER: &str = r#"
while (ob_get_level()) { ob_end_clean(); }
ob_start();
while (($line = fgets(STDIN)) !== false) {
    $a = explode(' ', trim($line));
    $_SESSION = [];
    session_id("ow-1");
    if ($a[0] === 'W') {
        session_start();
        $_SESSION["n"] = (int)$a[1];
        $ok = session_write_close();
        $out = ob_get_contents(); ob_clean();
        fwrite(STDOUT, "W " . ($ok ? 1 : 0) . " " . str_replace("\n", " ", $out) . "\n");
    } else {
        session_start(['read_and_close' => true]);
        $out = ob_get_contents(); ob_clean();
        fwrite(STDOUT, "R " . ($_SESSION["n"] ?? 0) . " " . str_replace("\n", " ", $out) . "\n");
    }
}
"#;

#[test]
fn a_host_reads_its_own_write_made_while_its_memcached_came_back() {
    memcast_testkit::require_root("the own-writes test (network namespaces)");
    let mut cluster = Cluster::start("ow", 3, Publish::Relay, artifacts());
    let mut php = cluster
        .php_command(2, WORKER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start php");
    let mut stdin = php.stdin.take().expect("stdin");
    let mut lines = BufReader::new(php.stdout.take().expect("stdout")).lines();
    let mut ask = |line: &str| -> String {
        writeln!(stdin, "{line}").expect("to php");
        lines.next().expect("php answered").expect("php output")
    };
    println!("first write: {}", ask("W 1"));
    cluster.restart_memcached(2);
    assert!(
        eventually(Duration::from_secs(10), || cluster.raw(2, "memcast:warm")).is_some(),
        "host 3's memcached was not refilled"
    );
    println!("second write: {}", ask("W 2"));
    let local = cluster.raw(2, "memcast.sess.ow-1");
    println!(
        "host 3's memcached after it: {:?}",
        local.as_deref().map(String::from_utf8_lossy)
    );
    // Past the retry interval a failed server is skipped for (2 s).
    std::thread::sleep(Duration::from_millis(2500));
    let read = ask("R");
    println!("read on host 3: {read}");
    drop(stdin);
    let _ = php.kill();
    let _ = php.wait();
    assert!(
        read.starts_with("R 2 "),
        "host 3 read {read:?}, not its own last write\n{}",
        cluster.logs()
    );
}
