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
        if self.unix_path().is_some() {
            write!(f, "{}", self.host)
        } else if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What `session.save_path` takes, shown with every error about it.
pub const SAVE_PATH_FORMAT: &str =
    "expected \"host:port, host:port, ...\" (first the local memcached, then the failover list); \
also [IPv6]:port, /path/to/memcached.sock, unix:///path/to/memcached.sock, \
and the other handlers' host:port:weight, PERSISTENT=id and tcp://host:port?weight=N&timeout=N";

/// `session.save_path` read: the servers in order, and what was written in
/// another client's format and is ignored (one notice's worth).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavePath {
    pub servers: Vec<ServerAddr>,
    pub ignored: Vec<String>,
}

impl SavePath {
    /// The one notice about the ignored parts, if any.
    pub fn notice(&self) -> Option<String> {
        if self.ignored.is_empty() {
            return None;
        }
        Some(format!(
            "session.save_path: {} ignored: memcast tries the servers in the order given \
             (no weights), keeps its connections open in every process, and takes its timeouts \
             from memcast.connect_timeout_ms and memcast.io_timeout_ms",
            self.ignored.join(", ")
        ))
    }
}

/// pecl-memcache's per-server options (`tcp://h:p?weight=1&timeout=2`).
const PECL_MEMCACHE_OPTIONS: &[&str] = &[
    "weight",
    "timeout",
    "persistent",
    "retry_interval",
    "status",
];

impl ServerAddr {
    /// The socket path of a memcached listening on a unix socket (`-s`).
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        self.host
            .starts_with('/')
            .then(|| std::path::Path::new(&self.host))
    }

    /// `host`, `host:port`, `[v6]:port`, `/path.sock`, `unix:///path.sock`;
    /// an optional `tcp://` is allowed. Other clients' extras (weights,
    /// options) are refused here: see [`ServerAddr::parse_save_path`].
    pub fn parse(s: &str) -> Result<ServerAddr, String> {
        let mut ignored = Vec::new();
        let addr = parse_entry(s, &mut ignored)?;
        match ignored.first() {
            Some(extra) => Err(format!("server address {:?}: unexpected {extra}", s.trim())),
            None => Ok(addr),
        }
    }

    /// A comma-separated list, as `session.save_path` holds it.
    pub fn parse_list(list: &str) -> Result<Vec<ServerAddr>, String> {
        ServerAddr::parse_save_path(list).map(|p| p.servers)
    }

    /// `session.save_path` as memcast and the other memcached handlers write
    /// it: php-memcached's `host:port:weight` and `PERSISTENT=id`,
    /// pecl-memcache's `tcp://host:port?weight=1&timeout=1`. What memcast has
    /// no use for is listed in [`SavePath::ignored`].
    pub fn parse_save_path(list: &str) -> Result<SavePath, String> {
        let mut ignored = Vec::new();
        let mut servers = Vec::new();
        for entry in list.split(',') {
            let mut entry = entry.trim();
            // php-memcached: "PERSISTENT=id host:port, ..."
            if let Some(rest) = entry.strip_prefix("PERSISTENT=") {
                let (id, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                ignored.push(format!("PERSISTENT={id}"));
                entry = after.trim();
            }
            if entry.is_empty() {
                continue;
            }
            servers.push(
                parse_entry(entry, &mut ignored).map_err(|e| format!("{e}; {SAVE_PATH_FORMAT}"))?,
            );
        }
        if servers.is_empty() {
            return Err(format!("no memcached server given; {SAVE_PATH_FORMAT}"));
        }
        Ok(SavePath { servers, ignored })
    }
}

/// One server of a save path; other clients' extras go to `ignored`.
fn parse_entry(s: &str, ignored: &mut Vec<String>) -> Result<ServerAddr, String> {
    let s = s.trim();
    let bad = |what: String| format!("server address {s:?}: {what}");
    if s.is_empty() {
        return Err("empty server address".into());
    }
    let (rest, query) = match s.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (s, None),
    };
    if let Some(query) = query {
        for option in query.split('&').filter(|o| !o.is_empty()) {
            let name = option.split_once('=').map_or(option, |(n, _)| n);
            if !PECL_MEMCACHE_OPTIONS.contains(&name) {
                return Err(bad(format!(
                    "unknown option {name:?} (pecl-memcache's are {})",
                    PECL_MEMCACHE_OPTIONS.join(", ")
                )));
            }
            ignored.push(format!("{option} of {rest}"));
        }
    }
    let unix = rest
        .strip_prefix("unix://")
        .or_else(|| rest.strip_prefix("unix:"))
        .or_else(|| rest.starts_with('/').then_some(rest));
    if let Some(path) = unix {
        if !path.starts_with('/') {
            return Err(bad(
                "a unix socket path must be absolute (unix:///path/to/memcached.sock)".into(),
            ));
        }
        if path.chars().any(|c| c.is_control()) {
            return Err(bad("control characters in the socket path".into()));
        }
        // php-memcached: "/path/to.sock:weight"
        let path = match path.rsplit_once(':') {
            Some((p, w)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
                ignored.push(format!("weight {w} of {p}"));
                p
            }
            _ => path,
        };
        return Ok(ServerAddr {
            host: path.to_owned(),
            port: 0,
        });
    }
    if let Some((scheme, _)) = rest.split_once("://") {
        if scheme != "tcp" {
            return Err(bad(format!(
                "{scheme}:// is not a memcached transport (tcp:// or unix://)"
            )));
        }
    }
    let rest = rest.strip_prefix("tcp://").unwrap_or(rest);
    let (host, port, weight) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| bad("missing ']'".into()))?;
        let mut parts = after.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(""), None, _, _) => (host, None, None),
            (Some(""), Some(p), w, None) => (host, Some(p), w),
            _ => return Err(bad("junk after ']'".into())),
        }
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [h] => (*h, None, None),
            [h, p] => (*h, Some(*p), None),
            [h, p, w] if !h.is_empty() && h.parse::<std::net::Ipv6Addr>().is_err() => {
                (*h, Some(*p), Some(*w))
            }
            _ if rest.parse::<std::net::Ipv6Addr>().is_ok() => {
                return Err(bad(format!(
                    "write an IPv6 address in brackets: [{rest}]:{DEFAULT_PORT}"
                )))
            }
            _ => return Err(bad("too many ':' (host:port, or host:port:weight)".into())),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("bad port {p:?}")))?,
        None => DEFAULT_PORT,
    };
    if let Some(w) = weight {
        if w.parse::<u32>().is_err() {
            return Err(bad(format!("bad weight {w:?} (host:port:weight)")));
        }
        ignored.push(format!(
            "weight {w} of {}",
            ServerAddr {
                host: host.to_owned(),
                port
            }
        ));
    }
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("bad host".into()));
    }
    Ok(ServerAddr {
        host: host.to_owned(),
        port,
    })
}

#[derive(Debug)]
struct Health {
    failed_at: Option<Instant>,
    /// How long it is skipped after `failed_at`.
    skip_for: Duration,
    /// The first failure since it last answered.
    down_since: Option<Instant>,
    /// The last failure was immediate (refused, or the connection closed).
    at_once: bool,
    last_error: String,
}

/// How long a server that failed at once is skipped
/// ([`FailoverList::mark_failed_briefly`]).
pub const BRIEF_SKIP: Duration = Duration::from_millis(100);

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
                skip_for: retry_interval,
                down_since: None,
                at_once: false,
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
        self.mark(index, now, self.retry_interval, error.into());
        if let Some(h) = self.health.get_mut(index) {
            h.at_once = false;
        }
    }

    /// A server that failed at once (refused or closed the connection: a
    /// memcached restarting) is skipped only for [`BRIEF_SKIP`] or the
    /// retry interval if shorter: long enough that one request does not
    /// ask it again for every step, short enough that a restarted memcached
    /// takes the next request's writes, not the next server.
    pub fn mark_failed_briefly(&mut self, index: usize, now: Instant, error: impl Into<String>) {
        let skip = self.retry_interval.min(BRIEF_SKIP);
        self.mark(index, now, skip, error.into());
        if let Some(h) = self.health.get_mut(index) {
            h.at_once = true;
        }
    }

    fn mark(&mut self, index: usize, now: Instant, skip_for: Duration, error: String) {
        if let Some(h) = self.health.get_mut(index) {
            h.failed_at = Some(now);
            h.down_since.get_or_insert(now);
            h.skip_for = skip_for;
            h.last_error = error;
        }
    }

    pub fn mark_ok(&mut self, index: usize) {
        if let Some(h) = self.health.get_mut(index) {
            h.failed_at = None;
            h.down_since = None;
        }
    }

    /// How long the server has failed every time it was asked (`None`: it
    /// answered last time, or was never asked).
    pub fn down_for(&self, index: usize, now: Instant) -> Option<Duration> {
        let since = self.health.get(index)?.down_since?;
        Some(now.saturating_duration_since(since))
    }

    /// Whether the server is down and its last failure was immediate
    /// ([`FailoverList::mark_failed_briefly`]): not running, rather than
    /// out of reach.
    pub fn failed_at_once(&self, index: usize) -> bool {
        self.health
            .get(index)
            .is_some_and(|h| h.down_since.is_some() && h.at_once)
    }

    /// What the server's last failure was.
    pub fn last_error(&self, index: usize) -> &str {
        self.health.get(index).map_or("", |h| h.last_error.as_str())
    }

    pub fn is_healthy(&self, index: usize, now: Instant) -> bool {
        self.retry_in(index, now).is_none()
    }

    fn retry_in(&self, index: usize, now: Instant) -> Option<Duration> {
        let failed_at = self.health[index].failed_at?;
        let since = now.saturating_duration_since(failed_at);
        self.health[index]
            .skip_for
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

    fn servers(path: &str) -> (Vec<String>, Vec<String>) {
        let p = ServerAddr::parse_save_path(path).unwrap();
        (p.servers.iter().map(|s| s.to_string()).collect(), p.ignored)
    }

    #[test]
    fn other_clients_save_paths_are_read_and_their_extras_ignored() {
        assert_eq!(
            servers("127.0.0.1:11211:1, 10.0.0.2:11212:3"),
            (
                vec!["127.0.0.1:11211".into(), "10.0.0.2:11212".into()],
                vec![
                    "weight 1 of 127.0.0.1:11211".into(),
                    "weight 3 of 10.0.0.2:11212".into()
                ]
            )
        );
        assert_eq!(
            servers("PERSISTENT=pool1 127.0.0.1:11211, 10.0.0.2"),
            (
                vec!["127.0.0.1:11211".into(), "10.0.0.2:11211".into()],
                vec!["PERSISTENT=pool1".into()]
            )
        );
        assert_eq!(
            servers("tcp://h1:5?weight=1&timeout=2.5, tcp://[::1]:6"),
            (
                vec!["h1:5".into(), "[::1]:6".into()],
                vec![
                    "weight=1 of tcp://h1:5".into(),
                    "timeout=2.5 of tcp://h1:5".into()
                ]
            )
        );
        assert_eq!(
            servers("[::1]:11211, [fe80::1]"),
            (vec!["[::1]:11211".into(), "[fe80::1]:11211".into()], vec![])
        );
        assert_eq!(
            servers("[::1]:11211:2").1,
            vec!["weight 2 of [::1]:11211".to_string()]
        );
        let p = ServerAddr::parse_save_path("/run/mc.sock, unix:///tmp/b.sock, 127.0.0.1").unwrap();
        assert_eq!(
            p.servers[0].unix_path(),
            Some(std::path::Path::new("/run/mc.sock"))
        );
        assert_eq!(
            p.servers[1].unix_path(),
            Some(std::path::Path::new("/tmp/b.sock"))
        );
        assert_eq!(p.servers[1].to_string(), "/tmp/b.sock");
        assert_eq!(p.servers[2].unix_path(), None);
        assert!(p.notice().is_none());
        let notice = ServerAddr::parse_save_path("PERSISTENT=x h:1:2")
            .unwrap()
            .notice()
            .unwrap();
        assert!(
            notice.contains("PERSISTENT=x, weight 2 of h:1 ignored"),
            "{notice}"
        );
    }

    #[test]
    fn a_bad_save_path_is_one_error_showing_the_format() {
        for bad in [
            "udp://h:1",
            "::1",
            "h:1:heavy",
            "tcp://h:1?colour=blue",
            "unix://relative.sock",
            "h:1:2:3",
            "PERSISTENT=x",
        ] {
            let e = ServerAddr::parse_save_path(bad).unwrap_err();
            assert!(e.contains("expected \"host:port, host:port"), "{bad}: {e}");
        }
        assert!(ServerAddr::parse_save_path("::1")
            .unwrap_err()
            .contains("[::1]:11211"));
        assert!(
            ServerAddr::parse("h:1:2").is_err(),
            "a single address takes no weight"
        );
    }

    #[test]
    fn all_servers_are_candidates_in_order_when_healthy() {
        assert_eq!(list().candidates(Instant::now()), [0, 1, 2]);
    }

    #[test]
    fn down_for_counts_from_the_first_failure_until_the_server_answers() {
        let mut l = list();
        let t0 = Instant::now();
        assert_eq!(l.down_for(0, t0), None);
        l.mark_failed(0, t0, "timed out");
        l.mark_failed_briefly(0, t0 + Duration::from_secs(3), "refused");
        assert_eq!(
            l.down_for(0, t0 + Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(l.last_error(0), "refused");
        l.mark_ok(0);
        assert_eq!(l.down_for(0, t0 + Duration::from_secs(6)), None);
    }

    #[test]
    fn a_server_that_failed_at_once_is_skipped_only_briefly() {
        let mut l = list();
        let t0 = Instant::now();
        l.mark_failed_briefly(0, t0, "connection closed by server");
        l.mark_failed(1, t0, "timed out");
        assert_eq!(l.candidates(t0 + BRIEF_SKIP / 2), [2]);
        assert_eq!(l.candidates(t0 + BRIEF_SKIP), [0, 2]);
        // Never longer than the retry interval.
        let mut short = FailoverList::new(l.servers().to_vec(), Duration::from_millis(10));
        short.mark_failed_briefly(0, t0, "refused");
        assert_eq!(short.candidates(t0 + Duration::from_millis(10)), [0, 1, 2]);
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
