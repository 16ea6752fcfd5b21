//! A fixed-bucket latency histogram: plain numbers, owned and written by one shard.
//!
//! Every shard records its latencies (append to acknowledgement, fsync, fetch reads) into its
//! own `LatencyHistogram`, a value with no lock and no atomic: the shard holds it in a
//! `RefCell` on its own thread, so recording is an array increment. The exporter gets a copy
//! (the type is `Copy`, 176 bytes) when it asks the shard for a snapshot, and turns the
//! per-bucket counts into Prometheus' cumulative `le` buckets there.
//!
//! The bounds are fixed, so histograms of different shards can be summed by Prometheus
//! (`sum by (le)`), and cover 10 µs (a cached read) to 10 s (a stalled disk) in roughly
//! 1-2.5-5 steps. Values are recorded in whole microseconds.

use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; an implicit last bucket holds the rest.
pub const BUCKET_BOUNDS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Counts per bucket (not cumulative), their total and the sum of the recorded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencyHistogram {
    /// `counts[i]` holds values in `(BUCKET_BOUNDS_US[i-1], BUCKET_BOUNDS_US[i]]`; the last
    /// element holds the values above every bound.
    counts: [u64; BUCKET_BOUNDS_US.len() + 1],
    count: u64,
    sum_us: u64,
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: Duration) {
        self.record_us(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_us(&mut self, latency_us: u64) {
        let bucket = BUCKET_BOUNDS_US.partition_point(|&bound| bound < latency_us);
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(latency_us);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// The buckets as Prometheus' encoder takes them: (upper bound in seconds, values in this
    /// bucket only), ending with `+Inf`; the encoder makes them cumulative.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                (BUCKET_BOUNDS_US.get(i).map_or(f64::INFINITY, |&us| us as f64 / 1e6), c)
            })
            .collect()
    }

    /// Values at or below `bound_us` (one of [`BUCKET_BOUNDS_US`], or any larger value for
    /// all of them).
    pub fn count_at_or_below_us(&self, bound_us: u64) -> u64 {
        let last = BUCKET_BOUNDS_US.partition_point(|&b| b < bound_us);
        self.counts[..=last.min(BUCKET_BOUNDS_US.len())].iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_whose_bound_is_the_first_at_or_above_them() {
        let mut h = LatencyHistogram::default();
        for us in [0, 10, 11, 25, 999, 1_000, 1_001, 10_000_000, 10_000_001, u64::MAX] {
            h.record_us(us);
        }
        assert_eq!(h.count_at_or_below_us(10), 2, "0 and 10 µs are at or below 10 µs");
        assert_eq!(h.count_at_or_below_us(25), 4, "11 and 25 µs");
        assert_eq!(h.count_at_or_below_us(500), 4);
        assert_eq!(h.count_at_or_below_us(1_000), 6, "999 and 1000 µs");
        assert_eq!(h.count_at_or_below_us(2_500), 7, "1001 µs");
        assert_eq!(h.count_at_or_below_us(10_000_000), 8, "10 s exactly");
        assert_eq!(h.count_at_or_below_us(u64::MAX), 10);
        assert_eq!(h.count(), 10);
        assert_eq!(h.sum_us(), u64::MAX, "the sum saturates instead of wrapping");
        let b = h.buckets_seconds();
        assert_eq!(b.len(), BUCKET_BOUNDS_US.len() + 1);
        assert_eq!(b[0], (0.000_010, 2));
        assert_eq!(b.last().unwrap(), &(f64::INFINITY, 2), "above 10 s");
        assert_eq!(b.iter().map(|(_, c)| c).sum::<u64>(), 10);
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0), "bounds ascend");
    }

    #[test]
    fn durations_are_recorded_in_microseconds() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_millis(3));
        h.record(Duration::from_nanos(1_500));
        assert_eq!(h.count(), 2);
        assert_eq!(h.sum_us(), 3_001);
        assert_eq!(h.count_at_or_below_us(2_500), 1);
        assert_eq!(h.count_at_or_below_us(5_000), 2);
    }
}
