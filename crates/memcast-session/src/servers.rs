//! The memcached servers of `session.save_path`, in order (the local one
//! first), with the health table that skips a failed server for
//! `memcast.retry_interval_ms`. Every operation walks them the same way,
//! through [`Servers::try_each`].

use std::fmt;
use std::time::{Duration, Instant};

use memcast_core::host_counters::HostCounter;
use memcast_core::ini::ExtensionConfig;
use memcast_core::{FailoverList, Memcached, ServerAddr, StoreError};

use crate::error::SessionError;

/// The connections, in save-path order, and their health.
pub struct Servers {
    save_path: String,
    list: FailoverList,
    conns: Vec<Memcached>,
    retry_interval: Duration,
}

/// What a walk's callback says after a server answered.
pub enum Step<T> {
    /// Stop here with this answer.
    Done(T),
    /// Ask the next server.
    Next,
}

/// Which errors send a walk on to the next server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassOn {
    /// Any error: a write another server may still take.
    AnyError,
    /// Only the server's own failure (refused, timed out): an error about
    /// the request itself (a key memcached refuses) ends the walk.
    ServerFailure,
}

/// One server's turn in a walk.
pub struct Turn<'a> {
    pub index: usize,
    pub server: &'a mut Memcached,
    /// How many servers failed earlier in this walk.
    pub failed_before: usize,
    late_failure: Option<String>,
}

impl Turn<'_> {
    /// A failure after the server answered (a second round trip): the
    /// server is marked failed once the callback returns, if it is its fault.
    pub fn note_failure(&mut self, e: &StoreError) {
        if e.is_server_failure() {
            self.late_failure = Some(e.to_string());
        }
    }
}

/// A server that failed in a walk.
#[derive(Debug)]
pub struct Tried {
    pub index: usize,
    pub error: StoreError,
}

/// No server gave an answer: "no memcached server accepted it (tried ...;
/// skipped ...)", every server named with what happened to it.
#[derive(Debug)]
pub struct NoServer {
    pub tried: Vec<Tried>,
    /// The servers in their retry interval, each with its last error.
    pub skipped: Vec<String>,
}

impl NoServer {
    /// The error that ended a [`PassOn::ServerFailure`] walk early, when it
    /// was about the request rather than the server.
    pub fn into_request_error(mut self) -> Result<StoreError, NoServer> {
        match self.tried.pop() {
            Some(last) if !last.error.is_server_failure() => Ok(last.error),
            Some(last) => {
                self.tried.push(last);
                Err(self)
            }
            None => Err(self),
        }
    }
}

impl fmt::Display for NoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.tried.is_empty() {
            let tried: Vec<String> = self.tried.iter().map(|t| t.error.to_string()).collect();
            parts.push(format!("tried {}", tried.join("; ")));
        }
        if !self.skipped.is_empty() {
            parts.push(format!("skipped {}", self.skipped.join("; ")));
        }
        write!(f, "no memcached server accepted it ({})", parts.join("; "))
    }
}

impl std::error::Error for NoServer {}

impl Default for Servers {
    fn default() -> Self {
        Servers {
            save_path: String::new(),
            list: FailoverList::new(Vec::new(), Duration::ZERO),
            conns: Vec::new(),
            retry_interval: Duration::ZERO,
        }
    }
}

impl Servers {
    /// Applies `session.save_path` and the timeouts. Returns whether the
    /// server list was replaced (connections and health start afresh).
    pub fn configure(
        &mut self,
        save_path: &str,
        config: &ExtensionConfig,
    ) -> Result<bool, SessionError> {
        let replaced = save_path != self.save_path || self.conns.is_empty();
        if replaced {
            let addrs =
                ServerAddr::parse_list(save_path).map_err(|reason| SessionError::SavePath {
                    save_path: save_path.to_owned(),
                    reason,
                })?;
            self.conns = addrs
                .iter()
                .map(|a| Memcached::new(a.clone(), config.timeouts))
                .collect();
            self.list = FailoverList::new(addrs, config.retry_interval);
            self.save_path = save_path.to_owned();
        }
        self.retry_interval = config.retry_interval;
        self.list.set_retry_interval(config.retry_interval);
        for s in &mut self.conns {
            s.set_timeouts(config.timeouts);
        }
        Ok(replaced)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// The servers' addresses, in save-path order.
    pub fn addr_list(&self) -> &[ServerAddr] {
        self.list.servers()
    }

    /// A server's save-path name (`host:port`), as write marks carry it.
    pub fn name(&self, index: usize) -> String {
        self.addr(index).map_or_else(String::new, |a| a.to_string())
    }

    /// The server this host names `name`, if it lists it.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.addrs().position(|a| a.to_string() == name)
    }

    /// Whether these servers make a cluster every host names alike, as a
    /// cluster-wide lock needs (`memcast_core::lock_place`): more than one,
    /// and none named by a loopback address or a unix socket. A list of
    /// only such names is one host's own, where the first healthy server
    /// keeps every request of the host apart anyway.
    pub fn named_as_a_cluster(&self) -> bool {
        self.len() > 1 && self.host_only_names().is_empty()
    }

    /// Names only this host can use (loopback, unix sockets) in a list that
    /// also names other hosts' servers: the mistake that keeps hosts from
    /// agreeing where a session's lock lives. Empty when there is none.
    pub fn mixed_host_only_names(&self) -> Vec<String> {
        let own = self.host_only_names();
        if own.len() == self.len() {
            return Vec::new();
        }
        own
    }

    fn host_only_names(&self) -> Vec<String> {
        memcast_core::lock_place::host_only_names(self.addr_list())
            .into_iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// How long the server has failed every time it was asked.
    pub fn down_for(&self, index: usize) -> Option<Duration> {
        self.list.down_for(index, Instant::now())
    }

    /// Whether the server is down and refused or closed the connection
    /// last time (not running, rather than out of reach).
    pub fn failed_at_once(&self, index: usize) -> bool {
        self.list.failed_at_once(index)
    }

    /// Whether the server is in its retry interval (not to be asked now).
    pub fn is_skipped(&self, index: usize) -> bool {
        !self.list.is_healthy(index, Instant::now())
    }

    pub fn last_error(&self, index: usize) -> String {
        self.list.last_error(index).to_owned()
    }

    /// One server, with the health table kept as [`Servers::try_each`]
    /// keeps it (indices come from this list: one outside it is an error).
    pub fn try_one<T>(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut Memcached) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(conn) = self.conns.get_mut(index) else {
            return Err(StoreError::Protocol {
                addr: ServerAddr {
                    host: format!("(server {index} of {})", self.save_path),
                    port: 0,
                },
                reply: "no such server".into(),
            });
        };
        let answer = f(conn);
        match &answer {
            Ok(_) => self.list.mark_ok(index),
            Err(e) => self.note_failure(index, e),
        }
        answer
    }

    /// How many servers answer now, of how many: each one not in its retry
    /// interval is asked (one small `get`), so a server that came back
    /// counts again; one that failed within its retry interval does not.
    pub fn probe_reachable(&mut self) -> (usize, usize) {
        let mut reachable = 0;
        for i in 0..self.len() {
            if self.is_skipped(i) {
                continue;
            }
            if self.try_one(i, |s| s.get(b"memcast:warm")).is_ok() {
                reachable += 1;
            }
        }
        (reachable, self.len())
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn addrs(&self) -> impl Iterator<Item = &ServerAddr> {
        self.conns.iter().map(|c| c.addr())
    }

    pub fn addr(&self, index: usize) -> Option<&ServerAddr> {
        self.conns.get(index).map(|c| c.addr())
    }

    /// One server, bypassing the health table (a lock release, a repair).
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Memcached> {
        self.conns.get_mut(index)
    }

    /// Tries each server in order, skipping those in their retry interval,
    /// until `f` answers [`Step::Done`]. A server that answers is marked
    /// healthy; one whose error is its own fault is marked failed (and
    /// skipped until its retry interval passes); every error is remembered
    /// for the [`NoServer`] returned when no server gave an answer.
    pub fn try_each<T>(
        &mut self,
        pass_on: PassOn,
        mut f: impl FnMut(&mut Turn<'_>) -> Result<Step<T>, StoreError>,
    ) -> Result<T, NoServer> {
        let mut tried = Vec::new();
        for index in self.list.candidates(Instant::now()) {
            let mut turn = Turn {
                index,
                server: &mut self.conns[index],
                failed_before: tried.len(),
                late_failure: None,
            };
            let answer = f(&mut turn);
            let late_failure = turn.late_failure.take();
            match answer {
                Ok(step) => {
                    self.list.mark_ok(index);
                    if let Some(e) = late_failure {
                        self.list.mark_failed(index, Instant::now(), e);
                    }
                    if let Step::Done(v) = step {
                        return Ok(v);
                    }
                }
                Err(error) => {
                    let ends_walk = pass_on == PassOn::ServerFailure && !error.is_server_failure();
                    self.note_failure(index, &error);
                    tried.push(Tried { index, error });
                    if ends_walk {
                        break;
                    }
                }
            }
        }
        Err(self.no_server(tried))
    }

    /// A server that timed out or broke a reply is skipped for
    /// `memcast.retry_interval`; one that refused or closed the connection
    /// at once (`is_immediate`: a memcached restarting) only briefly, so a
    /// restarted local memcached takes the next requests' writes again
    /// instead of leaving them to the next server.
    fn note_failure(&mut self, index: usize, e: &StoreError) {
        if e.is_immediate() {
            self.list
                .mark_failed_briefly(index, Instant::now(), e.to_string());
        } else if e.is_server_failure() {
            self.list.mark_failed(index, Instant::now(), e.to_string());
        }
    }

    fn no_server(&self, tried: Vec<Tried>) -> NoServer {
        let retry_ms = self.retry_interval.as_millis();
        let skipped = self
            .list
            .skipped(Instant::now())
            .iter()
            .filter(|s| !tried.iter().any(|t| t.index == s.index))
            .map(|s| {
                let ago = retry_ms.saturating_sub(s.retry_in.as_millis());
                format!("{} (failed {ago} ms ago: {})", s.addr, s.last_error)
            })
            .collect();
        NoServer { tried, skipped }
    }

    /// Counts in the local memcached (the first server), where this host's
    /// memcastd reads and exports it, even while no memcastd runs (see
    /// [`memcast_core::host_counters`]). Skipped while that server is failed
    /// over: a count elsewhere would be exported by another host.
    pub fn count_on_host(&mut self, counter: HostCounter, n: u64) {
        if n == 0 || self.conns.is_empty() || !self.list.is_healthy(0, Instant::now()) {
            return;
        }
        if let Err(e) = counter.add(&mut self.conns[0], n) {
            self.note_failure(0, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcast_core::Timeouts;
    use memcast_testkit::{free_port, Memcached as Server};

    fn config() -> ExtensionConfig {
        ExtensionConfig {
            retry_interval: Duration::from_secs(30),
            timeouts: Timeouts {
                connect: Duration::from_millis(200),
                io: Duration::from_millis(500),
            },
            ..crate::tests::config()
        }
    }

    /// A save path of a port nothing listens on, then two live servers.
    fn dead_then_two() -> (Servers, Server, Server, u16) {
        let (a, b) = (Server::start(), Server::start());
        let dead = free_port();
        let mut servers = Servers::default();
        let save_path = format!("127.0.0.1:{dead}, {}, {}", a.addr(), b.addr());
        assert!(servers.configure(&save_path, &config()).unwrap());
        (servers, a, b, dead)
    }

    #[test]
    fn try_each_passes_a_dead_server_and_then_skips_it_in_its_retry_interval() {
        let (mut servers, _a, _b, dead) = dead_then_two();
        let mut asked = Vec::new();
        let answer = servers.try_each(PassOn::AnyError, |turn| {
            asked.push(turn.index);
            turn.server.set(b"k", b"v", 60)?;
            Ok(Step::Done((turn.index, turn.failed_before)))
        });
        assert_eq!(answer.unwrap(), (1, 1), "the live server after one failure");
        assert_eq!(asked, [0, 1]);

        asked.clear();
        let answer = servers.try_each(PassOn::AnyError, |turn| {
            asked.push(turn.index);
            Ok(Step::Done(turn.server.get(b"k")?))
        });
        assert_eq!(answer.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(
            asked,
            [1],
            "the dead server was asked again within its retry interval"
        );

        // Every server walked, none answering: each is named with its error.
        let none = servers
            .try_each(PassOn::AnyError, |_| Ok(Step::<()>::Next))
            .unwrap_err();
        assert!(none.tried.is_empty());
        let text = none.to_string();
        assert!(
            text.starts_with("no memcached server accepted it (skipped 127.0.0.1:")
                && text.contains(&format!("127.0.0.1:{dead} (failed "))
                && text.contains("connection refused"),
            "{text}"
        );
    }

    #[test]
    fn try_each_remembers_every_failure_and_a_request_error_ends_a_read_walk() {
        let (mut servers, _a, _b, _dead) = dead_then_two();
        let first_live = servers.try_each(PassOn::AnyError, |turn| {
            turn.server.set(b"k", b"v", 60)?;
            Ok(Step::Done(turn.index))
        });
        assert_eq!(first_live.unwrap(), 1);
        let bad_key = vec![b'x'; 300];
        let mut asked = Vec::new();
        let none = servers
            .try_each(PassOn::AnyError, |turn| {
                asked.push(turn.index);
                Ok(Step::Done(turn.server.get(&bad_key)?))
            })
            .unwrap_err();
        assert_eq!(asked, [1, 2], "a write walk goes on past any error");
        let indices: Vec<usize> = none.tried.iter().map(|t| t.index).collect();
        assert_eq!(indices, [1, 2]);
        let text = none.to_string();
        assert!(
            text.starts_with("no memcached server accepted it (tried key ")
                && text.contains("; skipped 127.0.0.1:"),
            "{text}"
        );

        // The request's own error ends a read walk at the first live server,
        // and does not mark it failed.
        asked.clear();
        let none = servers
            .try_each(PassOn::ServerFailure, |turn| {
                asked.push(turn.index);
                Ok(Step::Done(turn.server.get(&bad_key)?))
            })
            .unwrap_err();
        assert_eq!(asked, [1]);
        let err = none.into_request_error().unwrap();
        assert!(matches!(err, StoreError::InvalidKey(_)), "{err}");
        let answer = servers.try_each(PassOn::AnyError, |turn| {
            Ok(Step::Done((turn.index, turn.server.get(b"k")?)))
        });
        assert_eq!(answer.unwrap(), (1, Some(b"v".to_vec())));
    }

    #[test]
    fn a_failure_noted_after_an_answer_marks_the_server_failed() {
        let (mut servers, _a, _b, _dead) = dead_then_two();
        let late = StoreError::Refused {
            addr: ServerAddr::parse("127.0.0.1:1").unwrap(),
        };
        let first = servers.try_each(PassOn::AnyError, |turn| {
            turn.note_failure(&late);
            Ok(Step::<usize>::Next)
        });
        assert!(first.is_err());
        let next = servers.try_each(PassOn::AnyError, |turn| Ok(Step::Done(turn.index)));
        assert!(next.is_err(), "every server was marked failed");
    }
}
