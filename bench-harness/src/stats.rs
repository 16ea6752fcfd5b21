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

/// One thread's histograms. A thread records each value once, into `interval` (or
/// `interval_delay`); the reporter cuts them every second and at the warm-up's end and the
/// run's end ([`Recorder::cut`]): what a cut takes goes into the per-second series, and into
/// the totals when it was recorded while the run was measuring.
///
/// Each value used to be recorded twice while measuring (interval and total) by the thread
/// that timed it: with four histograms of about 250 KiB of counts each per thread, likely two
/// more cache misses a message on the load generator's core.
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
    pub fn latency(&mut self, ns: u64) {
        record(&mut self.interval, ns);
    }

    pub fn delay(&mut self, ns: u64) {
        record(&mut self.interval_delay, ns);
    }

    /// Moves what was recorded since the last cut into `latency` and `delay` (the reporter's
    /// series), and into the totals when `measured` (the run measured all along since the
    /// last cut: the reporter cuts whenever measuring starts or stops).
    pub fn cut(
        &mut self,
        measured: bool,
        latency: &mut Histogram<u64>,
        delay: &mut Histogram<u64>,
    ) {
        merge(latency, &self.interval);
        merge(delay, &self.interval_delay);
        if measured {
            merge(&mut self.total, &self.interval);
            merge(&mut self.total_delay, &self.interval_delay);
        }
        self.interval.reset();
        self.interval_delay.reset();
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
    fn a_cut_counts_totals_only_while_measuring_and_feeds_the_series_always() {
        let mut r = Recorder::default();
        let (mut lat, mut delay) = (new_histogram(), new_histogram());
        r.latency(10);
        r.cut(false, &mut lat, &mut delay); // the warm-up's end
        r.latency(20);
        r.latency(30);
        r.delay(5);
        r.cut(true, &mut lat, &mut delay); // a second of the measured run
        r.latency(40);
        r.cut(false, &mut lat, &mut delay); // after the run's end
        assert_eq!((lat.len(), delay.len()), (4, 1), "the series gets everything");
        assert_eq!((r.total.len(), r.total_delay.len()), (2, 1));
        assert_eq!((r.total.min(), r.total.max()), (20, 30));
        assert_eq!((r.interval.len(), r.interval_delay.len()), (0, 0));
    }
}
