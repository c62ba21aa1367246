//! `memcastd verify`: the convergence check. Reads every memcast session
//! from each memcached given and reports every key whose version or data
//! differs. A tombstone and an absent key both mean "no session".

use std::collections::{BTreeMap, BTreeSet};

use memcast_core::replica;
use memcast_core::{ServerAddr, StoredValue, Timeouts, Version};

use crate::peer_server::ScanError;
use sha2::{Digest, Sha256};

use crate::config::VerifyArgs;

/// What one server holds for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    version: Version,
    digest: [u8; 32],
}

/// Why the check could not compare.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verify needs at least two --peer memcached servers to compare")]
    TooFew,
    #[error("{0}")]
    Address(String),
    #[error(transparent)]
    Scan(#[from] ScanError),
}

pub fn run(args: &VerifyArgs) -> Result<bool, VerifyError> {
    if args.peers.len() < 2 {
        return Err(VerifyError::TooFew);
    }
    let mut all: Vec<BTreeMap<Vec<u8>, Held>> = Vec::new();
    for peer in &args.peers {
        all.push(sessions(peer, args.prefix.as_deref())?);
    }
    let keys: BTreeSet<&Vec<u8>> = all.iter().flat_map(|m| m.keys()).collect();
    let mut differences = 0usize;
    for key in &keys {
        let held: Vec<Option<&Held>> = all.iter().map(|m| m.get(*key)).collect();
        if held.iter().all(|h| *h == held[0]) {
            continue;
        }
        differences += 1;
        if differences <= args.show {
            let parts: Vec<String> = args
                .peers
                .iter()
                .zip(&held)
                .map(|(p, h)| match h {
                    Some(h) => format!("{p}: {} {}", h.version, hex8(&h.digest)),
                    None => format!("{p}: none"),
                })
                .collect();
            println!(
                "differs {}: {}",
                String::from_utf8_lossy(key),
                parts.join(", ")
            );
        }
    }
    let counts: Vec<String> = args
        .peers
        .iter()
        .zip(&all)
        .map(|(p, m)| format!("{p}={}", m.len()))
        .collect();
    println!(
        "verify: {} servers, {} keys ({}), {} differences",
        args.peers.len(),
        keys.len(),
        counts.join(" "),
        differences
    );
    Ok(differences == 0)
}

fn hex8(d: &[u8; 32]) -> String {
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Live sessions on one server: key -> (version, digest of the data).
fn sessions(addr: &str, prefix: Option<&str>) -> Result<BTreeMap<Vec<u8>, Held>, VerifyError> {
    let addr = ServerAddr::parse(addr).map_err(VerifyError::Address)?;
    let keep = |key: &[u8]| prefix.is_none_or(|p| key.starts_with(p.as_bytes()));
    let mut out = BTreeMap::new();
    replica::scan(&addr, Timeouts::default(), keep, |key, raw, _| {
        if let Some(stored) = StoredValue::parse(raw).filter(|s| !s.tombstone) {
            let digest: [u8; 32] = Sha256::digest(stored.data).into();
            out.insert(
                key.to_vec(),
                Held {
                    version: stored.version,
                    digest,
                },
            );
        }
        Ok::<(), ScanError>(())
    })?;
    Ok(out)
}
