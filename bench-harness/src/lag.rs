//! `--replication async|sync`: how far the replica is behind the master during a run, sampled
//! from the master's metrics endpoint (`ringmq_replica_lag_bytes`: bytes of the master's log
//! the replica has not acknowledged as synced, summed over shards) every [`INTERVAL`].
//!
//! The samples span the whole run (warm-up included). The time behind is an estimate: the lag
//! in bytes divided by the run's measured produce rate in bytes (the replica's own position
//! is not timestamped).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const INTERVAL: Duration = Duration::from_millis(100);
/// Samples kept at most (about 28 hours at [`INTERVAL`]); later ones are dropped.
const MAX_SAMPLES: usize = 1 << 20;
const METRIC: &str = "ringmq_replica_lag_bytes";

/// The replication lag of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationLag {
    /// Scrapes that answered, and those that did not.
    pub samples: u64,
    pub failed_samples: u64,
    pub interval_ms: u64,
    pub lag_bytes_p50: u64,
    pub lag_bytes_p99: u64,
    pub lag_bytes_max: u64,
    pub lag_bytes_mean: f64,
    /// `lag_bytes_p50` / `lag_bytes_p99` over the measured produce rate, in ms (estimates).
    pub est_time_behind_ms_p50: f64,
    pub est_time_behind_ms_p99: f64,
}

/// The sum of every `ringmq_replica_lag_bytes` series in a metrics page; None when the page
/// has none (no replica connected).
pub fn parse_lag(page: &str) -> Option<u64> {
    let mut sum = None;
    for (_, _, v) in crate::counters::samples(page).filter(|(name, _, _)| *name == METRIC) {
        *sum.get_or_insert(0u64) += v as u64;
    }
    sum
}

/// `GET <url>` over plain HTTP/1.1 (`http://host:port/path`), the body.
pub fn get(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, _)| (h, &rest[h.len()..]));
    let mut s = TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut page = String::new();
    s.take(64 << 20).read_to_string(&mut page).map_err(|e| e.to_string())?;
    let (head, body) = page.split_once("\r\n\r\n").ok_or("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_owned());
    }
    Ok(body.to_owned())
}

/// Samples the lag at `metrics_url` until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<u64>, u64)>,
}

impl Sampler {
    pub fn start(metrics_url: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut samples, mut failed) = (Vec::new(), 0u64);
            while !flag.load(Ordering::Relaxed) {
                match get(&metrics_url).map(|p| parse_lag(&p)) {
                    Ok(Some(v)) if samples.len() < MAX_SAMPLES => samples.push(v),
                    Ok(_) | Err(_) => failed += 1,
                }
                std::thread::sleep(INTERVAL);
            }
            (samples, failed)
        });
        Sampler { stop, thread }
    }

    /// Stops sampling; the summary over `produce_bytes_per_s` (the run's measured rate).
    pub fn finish(self, produce_bytes_per_s: f64) -> ReplicationLag {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, failed) = self.thread.join().unwrap_or_default();
        summarize(samples, failed, produce_bytes_per_s)
    }
}

pub fn summarize(mut samples: Vec<u64>, failed: u64, produce_bytes_per_s: f64) -> ReplicationLag {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            0
        } else {
            samples[((samples.len() - 1) as f64 * q).round() as usize]
        }
    };
    let (p50, p99) = (at(0.5), at(0.99));
    let ms = |bytes: u64| {
        if produce_bytes_per_s > 0.0 {
            bytes as f64 / produce_bytes_per_s * 1e3
        } else {
            0.0
        }
    };
    ReplicationLag {
        samples: samples.len() as u64,
        failed_samples: failed,
        interval_ms: INTERVAL.as_millis() as u64,
        lag_bytes_p50: p50,
        lag_bytes_p99: p99,
        lag_bytes_max: samples.last().copied().unwrap_or(0),
        lag_bytes_mean: if samples.is_empty() {
            0.0
        } else {
            samples.iter().sum::<u64>() as f64 / samples.len() as f64
        },
        est_time_behind_ms_p50: ms(p50),
        est_time_behind_ms_p99: ms(p99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_of_every_shard_is_summed() {
        let page =
            "# HELP ringmq_replica_lag_bytes Bytes...\n# TYPE ringmq_replica_lag_bytes gauge\n\
                    ringmq_replica_lag_bytes{shard=\"0\",replica=\"127.0.0.1:1\"} 100\n\
                    ringmq_replica_lag_bytes{shard=\"1\",replica=\"127.0.0.1:1\"} 23\n\
                    ringmq_replica_lag_bytes_other 5\nringmq_replica_in_sync{shard=\"0\"} 1\n";
        assert_eq!(parse_lag(page), Some(123));
        assert_eq!(parse_lag("ringmq_replica_in_sync{shard=\"0\"} 1\n"), None);
    }

    #[test]
    fn the_summary_takes_quantiles_and_estimates_time() {
        let s = summarize((1..=100).collect(), 2, 1000.0);
        assert_eq!((s.samples, s.failed_samples), (100, 2));
        assert_eq!((s.lag_bytes_p50, s.lag_bytes_p99, s.lag_bytes_max), (51, 99, 100));
        assert!((s.lag_bytes_mean - 50.5).abs() < 1e-9);
        assert!((s.est_time_behind_ms_p99 - 99.0).abs() < 1e-9);
        assert_eq!(summarize(Vec::new(), 0, 0.0).lag_bytes_max, 0);
    }
}
