//! `memcastd status`: asks the running daemon (its `--metrics` page) and
//! prints a short table: memcached health, frames, drops by reason, repairs,
//! what this host's PHP workers could not publish, and the origins seen with
//! their lag. Exit status: 0 healthy (memcached up and known complete), 1
//! when the daemon's memcached is down, 2 when the daemon cannot be reached,
//! 3 degraded (up, but not known complete: evicting, warming, no peer to
//! refill from...; or PHP failed to publish frames in the last minute), so it
//! serves as a health check.

use std::time::Duration;

use crate::metrics::{parse, scrape, Sample};

/// Where the metrics address came from, for the hint when it cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsSource {
    Flag,
    Config(std::path::PathBuf),
    /// Nobody named one; the config file read, if any.
    Default(Option<std::path::PathBuf>),
}

/// What to do when the metrics page cannot be reached.
pub fn unreachable_hint(addr: &str, source: &MetricsSource) -> String {
    match source {
        MetricsSource::Default(config) => format!(
            "no metrics address is configured{} and nothing answers at the default {addr}: \
             start memcastd with --metrics HOST:PORT (or `metrics = \"HOST:PORT\"` in its config file), \
             then run memcastd status --metrics HOST:PORT (or --config FILE)",
            config
                .as_ref()
                .map(|c| format!(" (no `metrics` key in {})", c.display()))
                .unwrap_or_default()
        ),
        MetricsSource::Config(config) => format!(
            "is memcastd running, with the `metrics` of {}?",
            config.display()
        ),
        MetricsSource::Flag => "is memcastd running, with this --metrics?".into(),
    }
}

pub fn run(addr: &str) -> i32 {
    run_from(addr, &MetricsSource::Flag)
}

/// As [`run`], with a hint saying where the address came from when it fails.
pub fn run_from(addr: &str, source: &MetricsSource) -> i32 {
    let page = match scrape(addr, Duration::from_secs(3)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "memcastd status: cannot reach memcastd's metrics at {addr}: {e}; {}",
                unreachable_hint(addr, source)
            );
            return 2;
        }
    };
    let samples = parse(&page);
    print!("{}", render(addr, &samples));
    exit_status(&samples)
}

/// 0 healthy, 1 memcached down, 3 up but not known complete, or PHP
/// failing to publish.
pub fn exit_status(samples: &[Sample]) -> i32 {
    if value(samples, "memcast_memcached_up", None) != Some(1.0) {
        1
    } else if !complete(samples) || php_recent_failures(samples) > 0 {
        3
    } else {
        0
    }
}

/// A daemon from before `memcast_memcached_complete` said it as "warm".
fn complete(samples: &[Sample]) -> bool {
    value(samples, "memcast_memcached_complete", None)
        .or_else(|| value(samples, "memcast_memcached_warm", None))
        == Some(1.0)
}

/// Why the memcached is not known complete, in words.
fn incomplete(samples: &[Sample]) -> String {
    let reason = samples
        .iter()
        .find(|s| s.name == "memcast_memcached_incomplete" && s.value == 1.0)
        .and_then(|s| s.labels.iter().find(|(k, _)| k == "reason"))
        .map(|(_, r)| r.as_str());
    let evictions = value(samples, "memcast_memcached_evictions", None).unwrap_or(0.0) as u64;
    match reason {
        Some("evicting") => format!("evicting: {evictions} evictions; give it more memory"),
        Some("warming") => "warming: refilling from a peer".into(),
        Some("no_peer") => "no peer to refill from: add --listen and --peer".into(),
        Some("not_refilled") => {
            "not refilled since memcastd started: --resync-on-start false".into()
        }
        Some("gap") => "repairing a gap".into(),
        Some("silent_origin") => "an origin is silent: catching up".into(),
        Some(other) => other.to_owned(),
        None => "refilling from peers".into(),
    }
}

fn php_recent_failures(samples: &[Sample]) -> u64 {
    value(samples, "memcast_php_publish_failures_recent", None).unwrap_or(0.0) as u64
}

/// "ok", or "FAILING: N frames not published in the last 60 s" with what to
/// check for each reason seen.
fn php_publish(samples: &[Sample]) -> String {
    use memcast_core::host_counters::HostCounter;
    let by_reason: Vec<(HostCounter, u64)> = HostCounter::ALL
        .into_iter()
        .filter_map(|c| {
            let reason = c.failure_reason()?;
            let n = value(
                samples,
                "memcast_php_publish_failures_total",
                Some(("reason", reason)),
            )
            .unwrap_or(0.0) as u64;
            Some((c, n)).filter(|_| n > 0)
        })
        .collect();
    let total: u64 = by_reason.iter().map(|(_, n)| n).sum();
    let resent = n(samples, "php_resent");
    let recent = php_recent_failures(samples);
    let reasons: Vec<String> = by_reason
        .iter()
        .filter_map(|(c, n)| Some(format!("{} {n}", c.failure_reason()?)))
        .collect();
    if recent > 0 {
        let hints: Vec<&str> = by_reason
            .iter()
            .map(|(c, _)| crate::php_publish::hint(*c))
            .collect();
        format!(
            "FAILING: {recent} frames not published in the last 60 s ({total} since memcached started: {}; {resent} sent again); {}",
            reasons.join(", "),
            hints.join("; ")
        )
    } else if total > 0 {
        format!(
            "ok (none failed in the last 60 s; {total} frames not published since memcached started: {}; {resent} sent again)",
            reasons.join(", ")
        )
    } else {
        "ok".into()
    }
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && label.is_none_or(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}

fn n(samples: &[Sample], name: &str) -> u64 {
    value(samples, &format!("memcast_{name}_total"), None).unwrap_or(0.0) as u64
}

pub fn render(addr: &str, samples: &[Sample]) -> String {
    let mut out = format!("memcastd at {addr}\n");
    let up = value(samples, "memcast_memcached_up", None) == Some(1.0);
    let health = match (up, complete(samples)) {
        (false, _) => "DOWN".to_owned(),
        (true, true) => "up, warm (known complete)".to_owned(),
        (true, false) => format!("up, NOT complete ({})", incomplete(samples)),
    };
    out.push_str(&format!("{:<12} {health}\n", "memcached"));
    out.push_str(&format!(
        "{:<12} received {}  applied {}  skipped_older {}  relayed {}\n",
        "frames",
        n(samples, "received"),
        n(samples, "applied"),
        n(samples, "skipped_older"),
        n(samples, "relayed"),
    ));
    let mut drops: Vec<(String, u64)> = samples
        .iter()
        .filter(|s| s.name == "memcast_frames_dropped_total")
        .filter_map(|s| {
            let reason = s.labels.iter().find(|(k, _)| k == "reason")?;
            Some((reason.1.clone(), s.value as u64))
        })
        .collect();
    drops.sort();
    let drops: Vec<String> = drops.iter().map(|(r, v)| format!("{r} {v}")).collect();
    out.push_str(&format!("{:<12} {}\n", "dropped", drops.join("  ")));
    out.push_str(&format!(
        "{:<12} gaps {}  repaired {}  caught up {}  resyncs {}  warmups {}  memcached errors {}\n",
        "repairs",
        n(samples, "gaps"),
        n(samples, "frames_repaired"),
        n(samples, "frames_caught_up"),
        n(samples, "resyncs"),
        n(samples, "warmups"),
        n(samples, "memcached_errors"),
    ));
    out.push_str(&format!("{:<12} {}\n", "php publish", php_publish(samples)));
    let mut origins: Vec<(String, String, String, u64, u64, u64)> = samples
        .iter()
        .filter(|s| s.name == "memcast_origin_last_seq")
        .map(|s| {
            let label = |k: &str| {
                s.labels
                    .iter()
                    .find(|(a, _)| a == k)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default()
            };
            let (host, origin, epoch) = (label("host"), label("origin"), label("epoch"));
            let of = |name: &str| {
                samples
                    .iter()
                    .find(|x| {
                        x.name == name
                            && x.labels.iter().any(|(a, b)| a == "origin" && *b == origin)
                            && x.labels.iter().any(|(a, b)| a == "epoch" && *b == epoch)
                    })
                    .map_or(0, |x| x.value as u64)
            };
            let (lag, idle) = (of("memcast_origin_lag_ms"), of("memcast_origin_idle_ms"));
            (host, origin, epoch, s.value as u64, lag, idle)
        })
        .collect();
    origins.sort_by_key(|o| o.5);
    out.push_str(&format!("origins      {}\n", origins.len()));
    if !origins.is_empty() {
        out.push_str(&format!(
            "  {:<20}  {:<16}  {:>13}  {:>10}  {:>8}  {:>9}\n",
            "host", "origin", "epoch", "last seq", "lag ms", "idle ms"
        ));
        for (host, origin, epoch, seq, lag, idle) in origins.iter().take(20) {
            // PHP processes publishing directly send no host name.
            let host = if host.is_empty() { "-" } else { host };
            out.push_str(&format!(
                "  {host:<20}  {origin:<16}  {epoch:>13}  {seq:>10}  {lag:>8}  {idle:>9}\n"
            ));
        }
        if origins.len() > 20 {
            out.push_str(&format!("  ... {} more\n", origins.len() - 20));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(lines: &str) -> Vec<Sample> {
        parse(lines)
    }

    #[test]
    fn exit_status_says_healthy_down_or_degraded() {
        let healthy = page("memcast_memcached_up 1\nmemcast_memcached_complete 1\n");
        assert_eq!(exit_status(&healthy), 0);
        assert!(render("x", &healthy).contains("memcached    up, warm (known complete)"));
        let down = page("memcast_memcached_up 0\nmemcast_memcached_complete 0\n");
        assert_eq!(exit_status(&down), 1);
        let evicting = page(
            "memcast_memcached_up 1\nmemcast_memcached_complete 0\nmemcast_memcached_evictions 3016\nmemcast_memcached_incomplete{reason=\"evicting\"} 1\n",
        );
        assert_eq!(exit_status(&evicting), 3);
        let text = render("x", &evicting);
        assert!(
            text.contains("up, NOT complete (evicting: 3016 evictions"),
            "{text}"
        );
        let no_peer = page(
            "memcast_memcached_up 1\nmemcast_memcached_complete 0\nmemcast_memcached_incomplete{reason=\"no_peer\"} 1\n",
        );
        assert!(render("x", &no_peer).contains("no peer to refill from"));
        let failing = page(
            "memcast_memcached_up 1\nmemcast_memcached_complete 1\nmemcast_php_publish_failures_total{reason=\"not_taken\"} 4\nmemcast_php_publish_failures_recent 2\n",
        );
        assert_eq!(exit_status(&failing), 3);
        let text = render("x", &failing);
        assert!(
            text.contains("php publish  FAILING: 2 frames not published in the last 60 s (4 since memcached started: not_taken 4; 0 sent again); not_taken: the relay at memcast.publish"),
            "{text}"
        );
        let failed_before = page(
            "memcast_memcached_up 1\nmemcast_memcached_complete 1\nmemcast_php_publish_failures_total{reason=\"no_key\"} 4\nmemcast_php_publish_failures_recent 0\n",
        );
        assert_eq!(exit_status(&failed_before), 0);
        assert!(render("x", &failed_before).contains("php publish  ok (none failed in the last 60 s; 4 frames not published since memcached started: no_key 4"));
        // An older daemon says it as "warm".
        assert_eq!(
            exit_status(&page("memcast_memcached_up 1\nmemcast_memcached_warm 1\n")),
            0
        );
    }
}
