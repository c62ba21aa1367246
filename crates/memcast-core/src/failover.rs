//! The ordered server list from `session.save_path` and its health table.
//!
//! The first server is the local memcached, the rest are the failover list.
//! A server that failed (refused, timed out) is skipped for the retry
//! interval, then tried again; the list never forgets its order.

use std::fmt;
use std::time::{Duration, Instant};

pub const DEFAULT_PORT: u16 = 11211;

/// `host:port` of one memcached.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl ServerAddr {
    /// `host`, `host:port`, `[v6]:port`; an optional `tcp://` is allowed.
    pub fn parse(s: &str) -> Result<ServerAddr, String> {
        let s = s.trim();
        let s = s.strip_prefix("tcp://").unwrap_or(s);
        if s.is_empty() {
            return Err("empty server address".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("server address {s:?}: missing ']'"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("server address {s:?}: junk after ']'")),
            };
            (host, port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("server address {s:?}: bad port {p:?}"))?,
            None => DEFAULT_PORT,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("server address {s:?}: bad host"));
        }
        Ok(ServerAddr {
            host: host.to_owned(),
            port,
        })
    }

    /// A comma-separated list, as `session.save_path` holds it.
    pub fn parse_list(list: &str) -> Result<Vec<ServerAddr>, String> {
        let servers: Vec<ServerAddr> = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(ServerAddr::parse)
            .collect::<Result<_, _>>()?;
        if servers.is_empty() {
            return Err(
                "no memcached server given (expected \"host:port, host:port, ...\")".into(),
            );
        }
        Ok(servers)
    }
}

#[derive(Debug)]
struct Health {
    failed_at: Option<Instant>,
    last_error: String,
}

/// Server order plus health: which servers to try now, in which order.
#[derive(Debug)]
pub struct FailoverList {
    servers: Vec<ServerAddr>,
    health: Vec<Health>,
    retry_interval: Duration,
}

/// A server passed over because it failed less than a retry interval ago.
#[derive(Debug, PartialEq, Eq)]
pub struct Skipped<'a> {
    pub index: usize,
    pub addr: &'a ServerAddr,
    pub retry_in: Duration,
    pub last_error: &'a str,
}

impl FailoverList {
    pub fn new(servers: Vec<ServerAddr>, retry_interval: Duration) -> FailoverList {
        let health = servers
            .iter()
            .map(|_| Health {
                failed_at: None,
                last_error: String::new(),
            })
            .collect();
        FailoverList {
            servers,
            health,
            retry_interval,
        }
    }

    pub fn servers(&self) -> &[ServerAddr] {
        &self.servers
    }

    pub fn set_retry_interval(&mut self, retry_interval: Duration) {
        self.retry_interval = retry_interval;
    }

    /// Indices of the servers to try now, in list order: the healthy ones and
    /// those whose retry interval has passed.
    pub fn candidates(&self, now: Instant) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| self.retry_in(i, now).is_none())
            .collect()
    }

    /// The servers [`FailoverList::candidates`] leaves out, and why.
    pub fn skipped(&self, now: Instant) -> Vec<Skipped<'_>> {
        (0..self.servers.len())
            .filter_map(|i| {
                self.retry_in(i, now).map(|retry_in| Skipped {
                    index: i,
                    addr: &self.servers[i],
                    retry_in,
                    last_error: &self.health[i].last_error,
                })
            })
            .collect()
    }

    pub fn mark_failed(&mut self, index: usize, now: Instant, error: impl Into<String>) {
        if let Some(h) = self.health.get_mut(index) {
            h.failed_at = Some(now);
            h.last_error = error.into();
        }
    }

    pub fn mark_ok(&mut self, index: usize) {
        if let Some(h) = self.health.get_mut(index) {
            h.failed_at = None;
        }
    }

    pub fn is_healthy(&self, index: usize, now: Instant) -> bool {
        self.retry_in(index, now).is_none()
    }

    fn retry_in(&self, index: usize, now: Instant) -> Option<Duration> {
        let failed_at = self.health[index].failed_at?;
        let since = now.saturating_duration_since(failed_at);
        self.retry_interval
            .checked_sub(since)
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> FailoverList {
        let servers = ServerAddr::parse_list("127.0.0.1:11211, 10.0.0.2:11212 ,10.0.0.3").unwrap();
        FailoverList::new(servers, Duration::from_millis(1000))
    }

    #[test]
    fn save_path_parses_into_ordered_servers() {
        let l = list();
        let names: Vec<String> = l.servers().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            ["127.0.0.1:11211", "10.0.0.2:11212", "10.0.0.3:11211"]
        );
        assert_eq!(
            ServerAddr::parse("[::1]:99").unwrap().to_string(),
            "[::1]:99"
        );
        assert_eq!(ServerAddr::parse("tcp://h:5").unwrap().port, 5);
    }

    #[test]
    fn bad_save_paths_are_errors() {
        assert!(ServerAddr::parse_list("").is_err());
        assert!(ServerAddr::parse_list(" , ").is_err());
        assert!(ServerAddr::parse("host:0").is_err());
        assert!(ServerAddr::parse("host:http").is_err());
        assert!(ServerAddr::parse("ho st:1").is_err());
        assert!(ServerAddr::parse("[::1").is_err());
    }

    #[test]
    fn all_servers_are_candidates_in_order_when_healthy() {
        assert_eq!(list().candidates(Instant::now()), [0, 1, 2]);
    }

    #[test]
    fn failed_server_is_skipped_for_the_retry_interval_then_tried_again() {
        let mut l = list();
        let t0 = Instant::now();
        l.mark_failed(0, t0, "connection refused");
        assert_eq!(l.candidates(t0 + Duration::from_millis(999)), [1, 2]);
        let skipped = l.skipped(t0 + Duration::from_millis(400));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].retry_in, Duration::from_millis(600));
        assert_eq!(skipped[0].last_error, "connection refused");
        assert_eq!(l.candidates(t0 + Duration::from_millis(1000)), [0, 1, 2]);
    }

    #[test]
    fn recovered_server_goes_back_to_its_place() {
        let mut l = list();
        let t0 = Instant::now();
        l.mark_failed(0, t0, "timed out");
        l.mark_failed(1, t0, "timed out");
        assert_eq!(l.candidates(t0), [2]);
        l.mark_ok(0);
        assert_eq!(l.candidates(t0), [0, 2]);
    }

    #[test]
    fn every_server_failed_means_no_candidates() {
        let mut l = list();
        let t0 = Instant::now();
        for i in 0..3 {
            l.mark_failed(i, t0, "refused");
        }
        assert!(l.candidates(t0).is_empty());
        assert_eq!(l.skipped(t0).len(), 3);
    }
}
