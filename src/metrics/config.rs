//! The `[metrics]` section of the broker config.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SeriesLimits;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics`. Default true.
    pub enabled: bool,
    /// Address of the HTTP endpoint, `IP:port`. Default `127.0.0.1:9105` (this host only:
    /// the endpoint has no authentication). Port 0 picks a free port; the ready line says
    /// which.
    pub listen: String,
    /// Most per-queue series (`ringmq_queue_*`) a scrape shows. Default 1000.
    pub max_queue_series: usize,
    /// Most per-group series (`ringmq_group_*`) a scrape shows. Default 1000.
    pub max_group_series: usize,
    /// How long a scrape waits for the shards' answers. Default 5000.
    pub scrape_timeout_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: "127.0.0.1:9105".into(),
            max_queue_series: 1000,
            max_group_series: 1000,
            scrape_timeout_ms: 5000,
        }
    }
}

/// Most series of one kind a config may ask for: a scrape of 100,000 series is already
/// megabytes of text every scrape interval.
pub const MAX_SERIES_LIMIT: usize = 100_000;

impl MetricsConfig {
    /// The endpoint's address; an error that names the key when it is not `IP:port`.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|e| {
            format!("metrics.listen = {:?} is not an IP:port address ({e})", self.listen)
        })
    }

    pub fn limits(&self) -> SeriesLimits {
        SeriesLimits {
            max_queue_series: self.max_queue_series,
            max_group_series: self.max_group_series,
        }
    }

    pub fn scrape_timeout(&self) -> Duration {
        Duration::from_millis(self.scrape_timeout_ms)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.listen_addr()?;
        for (name, v) in [
            ("max_queue_series", self.max_queue_series),
            ("max_group_series", self.max_group_series),
        ] {
            if v > MAX_SERIES_LIMIT {
                return Err(format!("metrics.{name} = {v} exceeds {MAX_SERIES_LIMIT}"));
            }
        }
        if !(100..=60_000).contains(&self.scrape_timeout_ms) {
            return Err(format!(
                "metrics.scrape_timeout_ms = {} must be within 100..=60000",
                self.scrape_timeout_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_on_and_local_and_bad_values_name_their_key() {
        let d = MetricsConfig::default();
        assert!(d.enabled);
        assert!(d.listen_addr().unwrap().ip().is_loopback());
        d.validate().unwrap();
        let bad = MetricsConfig { listen: "localhost".into(), ..d.clone() };
        assert!(bad.validate().unwrap_err().contains("metrics.listen"));
        let bad = MetricsConfig { max_group_series: MAX_SERIES_LIMIT + 1, ..d.clone() };
        assert!(bad.validate().unwrap_err().contains("metrics.max_group_series"));
        let bad = MetricsConfig { scrape_timeout_ms: 0, ..d };
        assert!(bad.validate().unwrap_err().contains("metrics.scrape_timeout_ms"));
    }
}
