//! A batch split by loss is repaired: a 20 ms batching window makes PHP's
//! burst leave the relay in batches of many frames, and 30 % loss on one
//! receiver's link splits nearly every one; every session still reaches
//! every host (by PGM's repair or memcast's gap and resync path). Its own
//! file, so it does not run beside tests/faults.rs' clusters on the same
//! cores. Needs root and `make build`.

use std::path::Path;
use std::time::Duration;

use memcast_testkit::cluster::{unique_writes, written, Artifacts, Cluster, Setup};

fn artifacts() -> Artifacts {
    Artifacts::release(Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn a_batch_split_by_loss_is_repaired() {
    // A 20 ms batching window: PHP's burst leaves the relay in batches of
    // many frames, and 30 % loss on host 3's link splits nearly every one.
    let mut cluster = Cluster::start_setup(
        "fb",
        3,
        Setup::RECOMMENDED,
        artifacts(),
        vec!["--batch-us".into(), "20000".into()],
    );
    // Replication under loss, not the lock (tests/cluster_lock.rs).
    cluster.lock_per_host();
    cluster.net().set_loss(3, 30);
    let out = cluster.php_output(0, &unique_writes("fb", 1, 300, 0));
    assert_eq!(written(&out), 300, "PHP stores every write locally");
    let converged = cluster.converge(Duration::from_secs(120));
    let (by_host, logs) = cluster.stop_and_count_by_host();
    let get = |h: usize, k: &str| by_host[h].get(k).copied().unwrap_or(0);
    println!(
        "batch split by loss: relayed={} relay_batches={}; host 3: received={} gaps={} missing_frames={} frames_repaired={} resyncs={}",
        get(0, "relayed"),
        get(0, "relay_batches"),
        get(2, "received"),
        get(2, "gaps"),
        get(2, "missing_frames"),
        get(2, "frames_repaired"),
        get(2, "resyncs"),
    );
    let report =
        converged.unwrap_or_else(|r| panic!("replicas never converged:\n{r}\nlogs:\n{logs}"));
    assert!(report.contains(" 0 differences"), "{report}");
    let per_batch = get(0, "relayed") as f64 / get(0, "relay_batches").max(1) as f64;
    assert!(
        per_batch >= 4.0,
        "the relay sent {per_batch:.1} frames per batch: no batches to split"
    );
    // Read every session on every host over a clean link.
    cluster.net().clear_loss(3);
    cluster.assert_unique_writes_everywhere("fb", &[1], 300);
}
