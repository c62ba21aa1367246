//! Where a session's cluster-wide lock lives: rendezvous (highest random
//! weight) hashing of the session's memcached key over the servers' names.
//!
//! Every host that names the servers alike computes the same order, whatever
//! order its `session.save_path` lists them in, so two requests of one
//! session on two hosts contend for the same lock. A server that goes away
//! moves only the locks it held first, each to the next server in that
//! session's own order; the others stay where they were.
//!
//! A name only one host can use for a server (loopback, a unix socket) would
//! make each host compute its own order: [`host_only_names`] finds them, so
//! the extension can say so instead of locking per host without a word.

use sha2::{Digest, Sha256};

use crate::failover::ServerAddr;

/// The servers' indices in the order a session's lock tries them: highest
/// weight first. Ties (a repeated name) keep list order.
pub fn lock_order(key: &[u8], servers: &[ServerAddr]) -> Vec<usize> {
    let mut ranked: Vec<(u64, usize)> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (weight(key, &s.to_string()), i))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, i)| i).collect()
}

/// A key's weight on one server: the first 8 bytes of SHA-256 over the
/// server's name, a zero byte and the key. Stable across hosts, builds and
/// versions, unlike std's hasher.
fn weight(key: &[u8], server: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(server.as_bytes())
        .chain_update([0u8])
        .chain_update(key)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The servers named in a way only this host can use: a loopback address,
/// `localhost`, or a unix socket. The other hosts name the same memcached
/// otherwise, so their lock orders would differ from this host's.
pub fn host_only_names(servers: &[ServerAddr]) -> Vec<&ServerAddr> {
    servers.iter().filter(|s| is_host_only(s)).collect()
}

fn is_host_only(server: &ServerAddr) -> bool {
    if server.unix_path().is_some() {
        return true;
    }
    let host = server.host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(names: &[&str]) -> Vec<ServerAddr> {
        names
            .iter()
            .map(|n| ServerAddr::parse(n).unwrap())
            .collect()
    }

    fn first(key: &[u8], list: &[ServerAddr]) -> String {
        list[lock_order(key, list)[0]].to_string()
    }

    #[test]
    fn every_host_agrees_whatever_order_it_lists_the_servers_in() {
        let a = servers(&["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]);
        let b = servers(&["10.0.0.3:11211", "10.0.0.1:11211", "10.0.0.2:11211"]);
        for n in 0..500 {
            let key = format!("memcast.sess.{n}");
            let order_a: Vec<String> = lock_order(key.as_bytes(), &a)
                .into_iter()
                .map(|i| a[i].to_string())
                .collect();
            let order_b: Vec<String> = lock_order(key.as_bytes(), &b)
                .into_iter()
                .map(|i| b[i].to_string())
                .collect();
            assert_eq!(order_a, order_b, "{key}");
        }
    }

    #[test]
    fn locks_spread_over_the_servers() {
        let list = servers(&["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]);
        let mut count = [0usize; 3];
        for n in 0..3000 {
            count[lock_order(format!("k{n}").as_bytes(), &list)[0]] += 1;
        }
        for c in count {
            assert!((800..1200).contains(&c), "{count:?}");
        }
    }

    #[test]
    fn a_server_that_goes_away_moves_only_its_own_locks_to_each_ones_next() {
        let all = servers(&["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]);
        let without_2 = servers(&["10.0.0.1:11211", "10.0.0.3:11211"]);
        let mut moved = 0;
        for n in 0..3000 {
            let key = format!("k{n}");
            let order = lock_order(key.as_bytes(), &all);
            let before = all[order[0]].to_string();
            let after = first(key.as_bytes(), &without_2);
            if before == "10.0.0.2:11211" {
                moved += 1;
                assert_eq!(after, all[order[1]].to_string());
            } else {
                assert_eq!(after, before);
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn names_only_this_host_can_use_are_found() {
        let list = servers(&[
            "127.0.0.1:11211",
            "localhost:11211",
            "[::1]:11211",
            "/run/memcached.sock",
            "10.0.0.2:11211",
            "db.example:11211",
        ]);
        let found: Vec<String> = host_only_names(&list)
            .into_iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            found,
            [
                "127.0.0.1:11211",
                "localhost:11211",
                "[::1]:11211",
                "/run/memcached.sock"
            ]
        );
    }
}
