//! Prometheus metrics: `--metrics ADDR` serves `GET /metrics` in the
//! OpenMetrics text format, encoded by prometheus-client from the daemon's
//! counters (read at scrape time), its state (memcached up, warm, origins)
//! and two histograms (apply latency, replication lag). `memcastd status`
//! reads the same page.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::counters::Counters;
use memcast_core::host_counters::{HostCounter, HostCounts};

/// One (origin, epoch) as the receive loop last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginStat {
    pub origin: u64,
    pub epoch: u64,
    pub last_seq: u64,
    /// How far behind its last write was when applied (ms).
    pub lag_ms: u64,
    /// Since its last frame (ms).
    pub idle_ms: u64,
    /// The host name its heartbeats carry ("" when none does).
    pub host: String,
}

/// What the daemon publishes for scrapes.
#[derive(Debug)]
pub struct Shared {
    pub counters: Arc<Counters>,
    pub memcached_up: AtomicBool,
    /// The memcached is known complete (the warm sentinel is set).
    pub warm: AtomicBool,
    /// memcached's `stats evictions` (of its current run).
    pub evictions: AtomicU64,
    /// Why it is not known complete (a [`crate::completeness::Reason`] label).
    pub incomplete: Mutex<Option<&'static str>>,
    pub origins: Mutex<Vec<OriginStat>>,
    /// What this host's PHP workers could not publish (they count it in
    /// the local memcached), and how many of those in the last minute.
    pub php: Mutex<(HostCounts, u64)>,
    /// Seconds from a frame's arrival to memcached's answer.
    pub apply_latency: Histogram,
    /// Seconds from the write in PHP (its version) to applied here.
    pub lag: Histogram,
}

impl Shared {
    pub fn new(counters: Arc<Counters>) -> Shared {
        Shared {
            counters,
            memcached_up: AtomicBool::new(true),
            warm: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            incomplete: Mutex::new(Some("warming")),
            origins: Mutex::new(Vec::new()),
            php: Mutex::new((HostCounts::default(), 0)),
            // 50 µs to ~0.8 s.
            apply_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            // 0.5 ms to ~16 s.
            lag: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
        }
    }
}

/// Counters whose names say "dropped_<reason>" become one family with a
/// `reason` label; the rest are `memcast_<name>_total`.
#[derive(Debug)]
struct Collect(Arc<Shared>);

impl Collector for Collect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let mut dropped = Vec::new();
        let mut result = Ok(());
        shared.counters.each(|name, help, value| {
            if let Some(reason) = name.strip_prefix("dropped_") {
                dropped.push((reason, value));
                return;
            }
            if result.is_err() {
                return;
            }
            let full = format!("memcast_{name}");
            let counter = ConstCounter::new(value);
            result = encoder
                .encode_descriptor(&full, help, None, counter.metric_type())
                .and_then(|m| counter.encode(m));
        });
        result?;
        {
            let mut family = encoder.encode_descriptor(
                "memcast_frames_dropped",
                "Frames dropped, by reason: auth (not the cluster key), decode (malformed), size, replay, store (memcached refused), backlog (memcached down too long), relay (could not send on).",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (reason, value) in dropped {
                let labels = [("reason", reason)];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, on) in [
            (
                "memcast_memcached_up",
                "1 while the local memcached answers.",
                shared.memcached_up.load(Ordering::Relaxed),
            ),
            (
                "memcast_memcached_complete",
                "1 while the local memcached is known complete (refilled from a peer since it and memcastd started, no eviction since, no gap outstanding, no origin silent): a miss there proves a session does not exist.",
                shared.warm.load(Ordering::Relaxed),
            ),
            (
                "memcast_memcached_warm",
                "The same as memcast_memcached_complete: 1 while memcastd keeps the warm sentinel in the local memcached.",
                shared.warm.load(Ordering::Relaxed),
            ),
        ] {
            let gauge = ConstGauge::new(i64::from(on));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let evictions = ConstGauge::new(shared.evictions.load(Ordering::Relaxed) as i64);
        evictions.encode(encoder.encode_descriptor(
            "memcast_memcached_evictions",
            "Evictions of the local memcached (its stats, since it started): any after a warm-up means it no longer holds every session.",
            None,
            evictions.metric_type(),
        )?)?;
        {
            let mut family = encoder.encode_descriptor(
                "memcast_memcached_incomplete",
                "1 with the reason the local memcached is not known complete: memcached_down, no_peer, evicting, warming, not_refilled, gap, silent_origin (no sample while complete).",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            if let Some(reason) = *shared.incomplete.lock() {
                ConstGauge::new(1).encode(family.encode_family(&[("reason", reason)])?)?;
            }
        }
        let (php, php_recent) = *shared.php.lock();
        {
            let mut family = encoder.encode_descriptor(
                "memcast_php_publish_failures",
                "Frames this host's PHP workers could not publish, by reason: no_key (memcast.key_file unset, missing, unreadable, short), no_publisher (memcast.publish could not be set up), not_taken (the relay or PGM did not take it in time). Counted by PHP in the local memcached, so also while no memcastd ran; since that memcached started.",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for c in HostCounter::ALL {
                if let Some(reason) = c.failure_reason() {
                    ConstCounter::new(php.get(c))
                        .encode(family.encode_family(&[("reason", reason)])?)?;
                }
            }
        }
        for (name, help, counter) in [
            (
                "memcast_php_resent",
                "Sessions this host's PHP workers sent again, as stored, after their frame was not published.",
                HostCounter::Resent,
            ),
            (
                "memcast_php_unsent_forgotten",
                "Unpublished sessions a PHP worker could not remember to send again (over 1024 per process): left to peers' snapshots and anti-entropy.",
                HostCounter::UnsentForgotten,
            ),
            (
                "memcast_php_sealed_unopened",
                "Sealed sessions this host's PHP workers read that did not open (altered in memcached, moved to another session's key, unsealed, or under a key no longer accepted): read as misses. A rise is tampering, or a key roll that dropped the old key too early.",
                HostCounter::SealedUnopened,
            ),
        ] {
            let counter = ConstCounter::new(php.get(counter));
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let recent = ConstGauge::new(php_recent as i64);
        recent.encode(encoder.encode_descriptor(
            "memcast_php_publish_failures_recent",
            "Frames this host's PHP workers could not publish in the last 60 s (memcastd status says degraded while it is above 0).",
            None,
            recent.metric_type(),
        )?)?;
        let origins = shared.origins.lock().clone();
        let count = ConstGauge::new(origins.len() as i64);
        count.encode(encoder.encode_descriptor(
            "memcast_origins",
            "Origins (origin, epoch) tracked.",
            None,
            count.metric_type(),
        )?)?;
        for (name, help, pick) in [
            (
                "memcast_origin_last_seq",
                "Highest sequence number seen per origin and epoch.",
                (|o: &OriginStat| o.last_seq as i64) as fn(&OriginStat) -> i64,
            ),
            (
                "memcast_origin_lag_ms",
                "How old the origin's last write was when it was applied here, ms.",
                |o: &OriginStat| o.lag_ms as i64,
            ),
            (
                "memcast_origin_idle_ms",
                "Since the origin's last frame, ms.",
                |o: &OriginStat| o.idle_ms as i64,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for o in &origins {
                let labels = [
                    ("host", o.host.clone()),
                    ("origin", format!("{:016x}", o.origin)),
                    ("epoch", o.epoch.to_string()),
                ];
                ConstGauge::new(pick(o)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

pub fn registry(shared: &Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "memcast_apply_latency_seconds",
        "From a frame's arrival to memcached's answer.",
        shared.apply_latency.clone(),
    );
    registry.register(
        "memcast_replication_lag_seconds",
        "From the write in PHP (its version's clock) to applied on this host.",
        shared.lag.clone(),
    );
    registry.register_collector(Box::new(Collect(Arc::clone(shared))));
    registry
}

/// Serves `GET /metrics` on `addr` from a thread of its own.
pub fn serve(addr: &str, shared: Arc<Shared>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    info!(addr, "serving metrics on http://{addr}/metrics");
    let registry = registry(&shared);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(conn) => {
                        if let Err(e) = answer(conn, &registry) {
                            warn!("metrics request: {e}");
                        }
                    }
                    Err(e) => warn!("metrics: accept: {e}"),
                }
            }
        })?;
    Ok(())
}

fn answer(mut conn: TcpStream, registry: &Registry) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let (status, kind, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics\r" {
        let mut text = String::new();
        match prometheus_client::encoding::text::encode(&mut text, registry) {
            Ok(()) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(_) => (
                "500 Internal Server Error",
                "text/plain",
                "encoding failed\n".into(),
            ),
        }
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".into())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Why the metrics page could not be read; each names the address.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}: no address")]
    NoAddress(String),
    #[error("{0}: not an HTTP reply")]
    NotHttp(String),
    #[error("{addr}: {status}")]
    Status { addr: String, status: String },
}

/// Fetches the metrics page (what `memcastd status` reads).
pub fn scrape(addr: &str, timeout: Duration) -> Result<String, ScrapeError> {
    use std::net::ToSocketAddrs;
    let io = |source| ScrapeError::Io {
        addr: addr.to_owned(),
        source,
    };
    let sa = addr
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| ScrapeError::NoAddress(addr.to_owned()))?;
    let mut conn = TcpStream::connect_timeout(&sa, timeout).map_err(io)?;
    conn.set_read_timeout(Some(timeout)).ok();
    conn.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(io)?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).map_err(io)?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| ScrapeError::NotHttp(addr.to_owned()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(ScrapeError::Status {
            addr: addr.to_owned(),
            status: head.lines().next().unwrap_or_default().to_owned(),
        });
    }
    Ok(body.to_owned())
}

/// One sample of the page: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the text format's sample lines (comments skipped).
pub fn parse(page: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.trim_end_matches('}');
                let labels = inner
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The cumulative buckets of histogram `name` on a page: (upper bound,
/// count), as `<name>_bucket{le=...}` lists them.
pub fn histogram_buckets(page: &str, name: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    parse(page)
        .into_iter()
        .filter(|s| s.name == bucket)
        .filter_map(|s| {
            let le = &s.labels.iter().find(|(k, _)| k == "le")?.1;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, s.value))
        })
        .collect()
}

/// Bucket bounds under which the fractions `qs` of what one histogram
/// observed between two reads fell, pooled over several copies of it (one
/// per host): `before` and `after` hold each copy's buckets. NaN when
/// nothing was observed.
pub fn quantiles_between(
    before: &[Vec<(f64, f64)>],
    after: &[Vec<(f64, f64)>],
    qs: &[f64],
) -> Vec<f64> {
    let n = after.first().map_or(0, Vec::len);
    let mut cum = vec![0.0; n];
    for (b, a) in before.iter().zip(after) {
        for (k, c) in cum.iter_mut().enumerate() {
            *c += a.get(k).map_or(0.0, |x| x.1) - b.get(k).map_or(0.0, |x| x.1);
        }
    }
    let total = cum.last().copied().unwrap_or(0.0);
    qs.iter()
        .map(|q| {
            (0..n)
                .find(|&k| cum[k] >= q * total - 1e-9 && cum[k] > 0.0)
                .map_or(f64::NAN, |k| after[0][k].0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_counter_and_parses_back() {
        let counters = Arc::new(Counters::default());
        Counters::add(&counters.received, 7);
        Counters::add(&counters.dropped_auth, 3);
        Counters::add(&counters.dropped_replay, 2);
        let shared = Arc::new(Shared::new(Arc::clone(&counters)));
        shared.apply_latency.observe(0.0002);
        shared.lag.observe(0.003);
        shared.origins.lock().push(OriginStat {
            origin: 0xab,
            epoch: 5,
            last_seq: 42,
            lag_ms: 3,
            idle_ms: 10,
            host: "web1".into(),
        });
        let mut page = String::new();
        prometheus_client::encoding::text::encode(&mut page, &registry(&shared)).unwrap();
        let samples = parse(&page);
        let value = |name: &str, label: Option<(&str, &str)>| {
            samples
                .iter()
                .find(|s| {
                    s.name == name
                        && label.is_none_or(|(k, v)| s.labels.iter().any(|l| l.0 == k && l.1 == v))
                })
                .map(|s| s.value)
        };
        assert_eq!(value("memcast_received_total", None), Some(7.0), "{page}");
        assert_eq!(
            value("memcast_frames_dropped_total", Some(("reason", "auth"))),
            Some(3.0)
        );
        assert_eq!(
            value("memcast_frames_dropped_total", Some(("reason", "replay"))),
            Some(2.0)
        );
        assert_eq!(
            value(
                "memcast_origin_last_seq",
                Some(("origin", "00000000000000ab"))
            ),
            Some(42.0)
        );
        // Labelled by the host name its heartbeats carry, too.
        assert_eq!(
            value("memcast_origin_last_seq", Some(("host", "web1"))),
            Some(42.0)
        );
        assert_eq!(value("memcast_memcached_up", None), Some(1.0));
        assert_eq!(value("memcast_memcached_complete", None), Some(0.0));
        assert_eq!(
            value("memcast_memcached_incomplete", Some(("reason", "warming"))),
            Some(1.0)
        );
        assert_eq!(value("memcast_memcached_evictions", None), Some(0.0));
        assert_eq!(
            value("memcast_apply_latency_seconds_count", None),
            Some(1.0)
        );
        assert_eq!(
            value("memcast_replication_lag_seconds_count", None),
            Some(1.0)
        );
        let before = vec![histogram_buckets(&page, "memcast_replication_lag_seconds")];
        shared.lag.observe(0.0007);
        shared.lag.observe(0.0007);
        shared.lag.observe(0.02);
        let mut page2 = String::new();
        prometheus_client::encoding::text::encode(&mut page2, &registry(&shared)).unwrap();
        let after = vec![histogram_buckets(&page2, "memcast_replication_lag_seconds")];
        assert_eq!(
            quantiles_between(&before, &after, &[0.5, 1.0]),
            vec![0.001, 0.032],
            "p50 in the 1 ms bucket, the max in the 32 ms one"
        );
        assert!(quantiles_between(&after, &after, &[0.5])[0].is_nan());
        counters.each(|name, _, _| {
            if !name.starts_with("dropped_") {
                assert!(page.contains(&format!("memcast_{name}_total")), "{name}");
            }
        });
    }
}
