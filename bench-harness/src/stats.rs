//! Latency histograms (HdrHistogram, nanoseconds, 3 significant digits) and their summaries.
//! Each producer and consumer thread records into its own [`Recorder`]; the reporter merges
//! them once a second (the interval histograms, then reset) and at the end (the totals).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency recorded exactly: 10 minutes. Longer values are clamped to it (and the
/// clamp is visible as a max of 600 s).
const HIGHEST_NS: u64 = 600_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, HIGHEST_NS));
}

/// Merges `from` into `into` (same bounds by construction).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from).expect("histograms share bounds");
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub p99_99_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p99_9_us: us(h.value_at_quantile(0.999)),
            p99_99_us: us(h.value_at_quantile(0.9999)),
            max_us: us(h.max()),
        }
    }
}

/// One thread's histograms: the interval ones feed the per-second series, the total ones
/// count only while the run is measuring (after the warm-up).
pub struct Recorder {
    pub interval: Histogram<u64>,
    pub total: Histogram<u64>,
    pub interval_delay: Histogram<u64>,
    pub total_delay: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            interval: new_histogram(),
            total: new_histogram(),
            interval_delay: new_histogram(),
            total_delay: new_histogram(),
        }
    }
}

impl Recorder {
    pub fn latency(&mut self, ns: u64, measuring: bool) {
        record(&mut self.interval, ns);
        if measuring {
            record(&mut self.total, ns);
        }
    }
    pub fn delay(&mut self, ns: u64, measuring: bool) {
        record(&mut self.interval_delay, ns);
        if measuring {
            record(&mut self.total_delay, ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_every_value() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000u64 {
            record(&mut a, v * 1000); // 1 µs .. 1 ms
        }
        record(&mut b, 50_000_000); // one 50 ms outlier
        merge(&mut a, &b);
        let s = LatencySummary::of(&a);
        assert_eq!(s.count, 1001);
        assert!((s.p50_us - 501.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 50_000.0).abs() / 50_000.0 < 0.001, "{s:?}");
        assert!(s.p99_us < 1_000.0 && s.p99_99_us > 49_000.0, "{s:?}");
    }

    #[test]
    fn empty_and_clamped() {
        assert_eq!(LatencySummary::of(&new_histogram()), LatencySummary::default());
        let mut h = new_histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(LatencySummary::of(&h).max_us >= 599_000_000.0);
    }

    #[test]
    fn recorder_counts_totals_only_while_measuring() {
        let mut r = Recorder::default();
        r.latency(10, false);
        r.latency(20, true);
        r.delay(5, true);
        assert_eq!(r.interval.len(), 2);
        assert_eq!(r.total.len(), 1);
        assert_eq!(r.total_delay.len(), 1);
    }
}
