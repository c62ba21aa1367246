//! Reading every host's memcached directly, as the checker does: many keys
//! per `get` over one connection per host, and what "every host holds every
//! acknowledged write" means.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::ledger::Held;

/// One connection to one memcached, made again after any error (the
/// memcached was restarted, the link is down).
pub struct Replica {
    pub addr: String,
    conn: Option<BufReader<TcpStream>>,
}

const BATCH: usize = 100;

impl Replica {
    pub fn new(addr: String) -> Replica {
        Replica { addr, conn: None }
    }

    fn conn(&mut self) -> std::io::Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let addr = self
                .addr
                .parse()
                .map_err(|e| std::io::Error::other(format!("{}: {e}", self.addr)))?;
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            self.conn = Some(BufReader::new(s));
        }
        Ok(self.conn.as_mut().expect("just made"))
    }

    /// The values memcached holds for `keys` (absent keys are left out).
    pub fn get_many(&mut self, keys: &[String]) -> std::io::Result<HashMap<String, Vec<u8>>> {
        let result = self.try_get_many(keys);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_get_many(&mut self, keys: &[String]) -> std::io::Result<HashMap<String, Vec<u8>>> {
        let mut found = HashMap::new();
        for batch in keys.chunks(BATCH) {
            let conn = self.conn()?;
            conn.get_mut()
                .write_all(format!("get {}\r\n", batch.join(" ")).as_bytes())?;
            loop {
                let mut line = String::new();
                if conn.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::other("connection closed"));
                }
                let line = line.trim_end();
                if line == "END" {
                    break;
                }
                // VALUE <key> <flags> <bytes>
                let parts: Vec<&str> = line.split(' ').collect();
                let (Some(&"VALUE"), Some(key), Some(len)) = (
                    parts.first(),
                    parts.get(1),
                    parts.get(3).and_then(|l| l.parse::<usize>().ok()),
                ) else {
                    return Err(std::io::Error::other(format!("bad reply {line:?}")));
                };
                let mut value = vec![0; len + 2];
                conn.read_exact(&mut value)?;
                value.truncate(len);
                found.insert(key.to_string(), value);
            }
        }
        Ok(found)
    }

    /// One number from memcached's `stats` (`evictions`, `curr_items`...).
    pub fn stat(&mut self, name: &str) -> Option<u64> {
        let result = (|| -> std::io::Result<Option<u64>> {
            let conn = self.conn()?;
            conn.get_mut().write_all(b"stats\r\n")?;
            let mut value = None;
            loop {
                let mut line = String::new();
                if conn.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::other("connection closed"));
                }
                let line = line.trim_end();
                if line == "END" {
                    return Ok(value);
                }
                if let Some(v) = line.strip_prefix(&format!("STAT {name} ")) {
                    value = v.parse().ok();
                }
            }
        })();
        if result.is_err() {
            self.conn = None;
        }
        result.ok().flatten()
    }
}

/// The memcached key of session `id`.
pub fn key_of(id: &str) -> String {
    match super::ledger::sealing() {
        Some(seal) => String::from_utf8_lossy(&seal.memcached_key(b"memcast.sess.", id.as_bytes()))
            .into_owned(),
        None => format!("memcast.sess.{id}"),
    }
}

/// Of `wanted` (session id, what it must hold), those `replica` does not
/// hold acceptably (`accepts`). An unreachable replica holds nothing.
pub fn not_held<'a, W: Copy>(
    replica: &mut Replica,
    wanted: &[(&'a str, W)],
    accepts: impl Fn(&W, &Held) -> bool,
) -> Vec<(&'a str, W, Held)> {
    let keys: Vec<String> = wanted.iter().map(|(id, _)| key_of(id)).collect();
    let values = replica.get_many(&keys).unwrap_or_default();
    wanted
        .iter()
        .zip(&keys)
        .filter_map(|((id, want), key)| {
            let held = Held::of_at(key, values.get(key).map(|v| v.as_slice()));
            (!accepts(want, &held)).then_some((*id, *want, held))
        })
        .collect()
}
