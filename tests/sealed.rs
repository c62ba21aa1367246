//! Nothing to steal from a memcached: three hosts over real PGM with sealing
//! on (`memcast.seal`, the default with a key file). Every host writes
//! sessions with known ids and payloads; a dump of every key and value of
//! every memcached (`lru_crawler metadump` and `get`, as anyone who reaches
//! port 11211 could) holds none of the ids and none of the payload bytes;
//! every session reads back on every host. Then the cluster key rolls host
//! by host while all three write: nothing is lost.
//! Needs root and `make build`.

use std::path::Path;
use std::time::Duration;

use memcast_core::{ServerAddr, SharedKey, StoreError, Timeouts};
use memcast_testkit::cluster::{finish_writers, Artifacts, Cluster, Publish};
use memcast_testkit::{eventually, install_key, require_root};

const PAYLOAD: &str = "payload-secret-7Qz";

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

struct ScanFailed(String);

impl From<StoreError> for ScanFailed {
    fn from(e: StoreError) -> Self {
        ScanFailed(e.to_string())
    }
}

impl From<std::io::Error> for ScanFailed {
    fn from(e: std::io::Error) -> Self {
        ScanFailed(e.to_string())
    }
}

/// Every key and value host `i`'s memcached holds.
fn dump(cluster: &Cluster, i: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let addr = ServerAddr::parse(&cluster.memcached_addr(i)).unwrap();
    let mut all = Vec::new();
    let scanned = memcast_core::replica::scan(
        &addr,
        Timeouts::default(),
        |_| true,
        |key, value, _| {
            all.push((key.to_vec(), value.to_vec()));
            Ok::<(), ScanFailed>(())
        },
    );
    if let Err(ScanFailed(e)) = scanned {
        panic!("dump of host {}: {e}", i + 1);
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// PHP on host `host` (from 1) writes `n` sessions `sealed{host}x{i}`.
fn write_known_sessions(cluster: &Cluster, host: usize, n: usize) {
    let out = cluster.php(
        host - 1,
        &format!(
            r#"$ok = 0;
            for ($i = 0; $i < {n}; $i++) {{
                session_id("sealed{host}x$i");
                session_start();
                $_SESSION["user"] = "{PAYLOAD}-{host}-$i";
                if (session_write_close()) {{ $ok++; }}
            }}
            echo "written=$ok";"#
        ),
    );
    assert!(out.contains(&format!("written={n}")), "host {host}: {out}");
}

/// PHP on host `at` reads every known session and every unique write
/// (`unique_writes` of `tag`, `writes` per host): how many read back whole,
/// and phpinfo's count of values that did not open. Sessions that are not
/// found are aborted, never written.
fn read_everything(cluster: &Cluster, at: usize, known: usize, tag: &str, writes: usize) -> String {
    cluster.php(
        at,
        &format!(
            r#"$found = 0; $wrong = [];
            for ($h = 1; $h <= 3; $h++) {{
                for ($i = 0; $i < {known}; $i++) {{
                    session_id("sealed{{$h}}x$i"); session_start();
                    if (($_SESSION["user"] ?? "") === "{PAYLOAD}-$h-$i") {{ $found++; }} else {{ $wrong[] = "sealed{{$h}}x$i"; }}
                    empty($_SESSION) ? session_abort() : session_write_close();
                }}
                for ($i = 0; $i < {writes}; $i++) {{
                    session_id("{tag}$h-$i"); session_start();
                    if (($_SESSION["i"] ?? -1) === $i && ($_SESSION["host"] ?? 0) === $h) {{ $found++; }} else {{ $wrong[] = "{tag}$h-$i"; }}
                    empty($_SESSION) ? session_abort() : session_write_close();
                }}
            }}
            ob_start(); phpinfo(INFO_MODULES);
            preg_match("/Sealed values not opened \(read as misses\) => (\d+)/", ob_get_clean(), $m);
            echo "found=$found unopened=$m[1] wrong=", implode(",", array_slice($wrong, 0, 5)), "\n";"#
        ),
    )
}

/// Replaces host `i`'s key files and sends its memcastd SIGHUP; waits until
/// it logged the reload, and PHP noticed the files changed.
fn roll(cluster: &mut Cluster, i: usize, sign: &[u8], accept: &[u8]) {
    let before = cluster.memcastd_log(i).matches("reloaded keys").count();
    install_key(sign, &cluster.key_file_of(i));
    install_key(accept, &cluster.accept_key_file_of(i));
    let pid = cluster.memcastd_pid(i).expect("memcastd running");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = eventually(Duration::from_secs(5), || {
        (cluster.memcastd_log(i).matches("reloaded keys").count() > before).then_some(())
    });
    assert!(
        done.is_some(),
        "host {} did not reload\n{}",
        i + 1,
        cluster.logs()
    );
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn no_id_and_no_data_in_any_memcached_and_a_key_roll_during_writes_loses_nothing() {
    require_root("the sealed-at-rest test (network namespaces)");
    let mut cluster = Cluster::start("seal", 3, Publish::Relay, artifacts());
    cluster.seal = true;
    const KNOWN: usize = 50;
    for host in 1..=3 {
        write_known_sessions(&cluster, host, KNOWN);
    }
    if let Err(report) = cluster.converge(Duration::from_secs(30)) {
        panic!("replicas differ:\n{report}\n{}", cluster.logs());
    }
    // What an attacker who reaches any memcached gets.
    let mut session_keys = 0;
    for i in 0..3 {
        let all = dump(&cluster, i);
        for (key, value) in &all {
            for secret in [&b"sealed"[..], PAYLOAD.as_bytes(), b"user|"] {
                assert!(
                    !contains(key, secret) && !contains(value, secret),
                    "host {}: {:?} in {} = {:?}",
                    i + 1,
                    String::from_utf8_lossy(secret),
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                );
            }
        }
        let hashed = |k: &[u8]| {
            k.len() == "memcast.sess.".len() + 32
                && k.starts_with(b"memcast.sess.")
                && k[13..].iter().all(u8::is_ascii_hexdigit)
        };
        let here = all.iter().filter(|(k, _)| hashed(k)).count();
        let others: Vec<String> = all
            .iter()
            .filter(|(k, _)| !hashed(k))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(
            here,
            3 * KNOWN,
            "host {}: session keys; others: {others:?}",
            i + 1
        );
        session_keys += here;
        // Besides: the testkit's start-up probes (written before this test
        // turned sealing on) and memcast's own keys, none a session.
        // The cluster-wide lock's keys (`.lock`, and the write mark `.w`)
        // are made from the hashed key: no id either.
        let lock_key = |k: &str| {
            k.rsplit_once('.')
                .is_some_and(|(base, end)| (end == "w" || end == "lock") && hashed(base.as_bytes()))
        };
        assert!(
            others.iter().all(|k| !k.starts_with("memcast.sess.")
                || k.starts_with("memcast.sess.probe")
                || lock_key(k)),
            "host {}: {others:?}",
            i + 1
        );
    }
    // The operator's way from an id to its key.
    let out = std::process::Command::new(&artifacts().memcastd)
        .args(["session-key", "--key-file"])
        .arg(cluster.key_file_of(0))
        .arg("sealed2x7")
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    for i in 0..3 {
        assert!(
            cluster.raw(i, &key).is_some(),
            "{key} not on host {}",
            i + 1
        );
    }
    for at in 0..3 {
        let out = read_everything(&cluster, at, KNOWN, "none", 0);
        assert!(
            out.contains(&format!("found={} unopened=0", 3 * KNOWN)),
            "host {}: {out}",
            at + 1
        );
    }
    println!(
        "sealed: {session_keys} session keys dumped from 3 memcached, no id and no payload in any; {} sessions read back on each host",
        3 * KNOWN
    );

    // The roll, while all three hosts write. The new key is made from the
    // old one (as `memcastd keygen --force` over a copy does): it keeps the
    // session-id key, so no session moves.
    let old = std::fs::read(&cluster.key_file).unwrap();
    let id_key = SharedKey::from_file(&cluster.key_file)
        .unwrap()
        .session_id_key()
        .to_vec();
    let new = [
        &b"a-brand-new-cluster-key-with-more-than-32-bytes\nmemcast-session-id-key: "[..],
        &id_key,
        b"\n",
    ]
    .concat();
    const N: usize = 600;
    let writers = cluster.start_unique_writers("rot", N, 25_000);
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..3 {
        roll(&mut cluster, i, &old, &new);
    }
    for i in 0..3 {
        roll(&mut cluster, i, &new, &old);
    }
    // Every host seals under the new key now; a request that reads a
    // session sealed under the old one seals it again, before the old key
    // is dropped (README: step 3 after that, or after the sessions' lifetime).
    let pass = read_everything(&cluster, 0, KNOWN, "rot", N);
    assert!(pass.contains("unopened=0"), "{pass}");
    for i in 0..3 {
        roll(&mut cluster, i, &new, &new);
    }
    let written = finish_writers(writers);
    assert_eq!(written, 3 * N, "PHP reported failed writes");
    if let Err(report) = cluster.converge(Duration::from_secs(30)) {
        panic!(
            "replicas differ after the roll:\n{report}\n{}",
            cluster.logs()
        );
    }
    for at in 0..3 {
        let out = read_everything(&cluster, at, KNOWN, "rot", N);
        assert!(
            out.contains(&format!("found={} unopened=0", 3 * KNOWN + 3 * N)),
            "host {} after the roll: {out}\n{}",
            at + 1,
            cluster.logs()
        );
    }
    let (sums, logs) = cluster.stop_and_count();
    assert_eq!(sums["dropped_auth"], 0, "{logs}");
    println!(
        "key roll: {} writes during 9 reloads; {} sessions read back on each host after it, unopened=0",
        3 * N,
        3 * KNOWN + 3 * N
    );
}

/// A logged-in shop session of about 2.6 KB as PHP encodes it: a third of it
/// random-looking hex tokens, which do not compress.
const WRITE_LARGE_SESSION: &str = r#"
    session_id("sealedlarge00000000000000000001");
    session_start();
    $tok = fn ($s, $n) => substr(hash("sha256", $s) . hash("sha256", "$s+"), 0, $n);
    $_SESSION["csrf_token"] = $tok("csrf", 64);
    $_SESSION["user"] = ["id" => 48213, "email" => "julia.martinez@example.com", "remember_token" => $tok("rt", 64)];
    for ($i = 0; $i < 12; $i++) {
        $_SESSION["cart"][] = ["line_id" => $tok("line$i", 32), "sku" => "SKU-" . (10000 + 7 * $i), "name" => "Cotton t-shirt, white, M", "qty" => $i % 4];
    }
    $_SESSION["form_nonces"] = array_map(fn ($i) => $tok("nonce$i", 40), range(1, 8));
    $_SESSION["flash"] = str_repeat("Your order confirmation was sent to your email address. ", 3);
    echo strlen(session_encode()), "\n";
    session_write_close();
"#;

const READ_LARGE_SESSION: &str = r#"
    session_id("sealedlarge00000000000000000001");
    session_start();
    echo count($_SESSION["cart"] ?? []), " ", strlen(session_encode()), " ", md5(session_encode()), "\n";
"#;

/// A large session is compressed before it is sealed (memcast.compress_threshold):
/// memcached holds less than the session, on every host, and frames carry
/// the sealed value as it is (never compressed again, neither by PHP sending
/// straight to the group nor by the relay); it reads back whole everywhere.
#[test]
fn a_large_sealed_session_is_stored_compressed_and_replicates_whole() {
    require_root("the sealed-at-rest test (network namespaces)");
    for publish in [Publish::Direct, Publish::Relay] {
        let mut cluster = Cluster::start("szip", 2, publish, artifacts());
        cluster.seal = true;
        let written: usize = cluster.php(0, WRITE_LARGE_SESSION).trim().parse().unwrap();
        assert!(written > 2500, "{written}");
        let seal = memcast_core::session_seal::SessionSeal::new(&memcast_core::Keyring::new(
            SharedKey::from_file(&cluster.key_file).unwrap(),
            None,
            false,
        ));
        let key = seal.memcached_key(b"memcast.sess.", b"sealedlarge00000000000000000001");
        let key = String::from_utf8(key).unwrap();
        let arrived = eventually(Duration::from_secs(10), || cluster.raw(1, &key));
        assert!(arrived.is_some(), "{publish:?}: {}", cluster.logs());
        let stored = cluster.raw(0, &key).unwrap();
        assert_eq!(
            arrived.as_ref(),
            Some(&stored),
            "{publish:?}: stored differently"
        );
        let value = memcast_core::StoredValue::parse(&stored).unwrap();
        assert_eq!(
            value.data[..4],
            [0, b'M', b'S', 2],
            "{publish:?}: sealed compressed"
        );
        assert!(
            value.data.len() < written * 3 / 4,
            "{publish:?}: {} B stored for a {written} B session",
            value.data.len()
        );
        let header = &stored[..memcast_core::stored_value::HEADER_LEN];
        let opened = seal.open(key.as_bytes(), header, value.data).unwrap();
        assert_eq!(opened.len(), written);
        let on_a = cluster.php(0, READ_LARGE_SESSION);
        assert!(on_a.starts_with(&format!("12 {written} ")), "{on_a}");
        assert_eq!(cluster.php(1, READ_LARGE_SESSION), on_a, "{publish:?}");
        let (sums, logs) = cluster.stop_and_count();
        assert_eq!(sums["received_compressed"], 0, "{publish:?}: {logs}");
        assert_eq!(sums["dropped_decode"], 0, "{publish:?}: {logs}");
        println!(
            "{publish:?}: a {written} B session sealed compressed: {} B in memcached, replicated whole",
            value.data.len()
        );
    }
}
