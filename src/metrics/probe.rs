//! What a shard counts for the metrics endpoint beyond its `Stats` counters: latency
//! histograms of its produce and fetch handlers and its failed requests by error code.
//!
//! Owned by one shard, on its thread, in a `RefCell`: recording is an add, with no lock and
//! no atomic (DESIGN.md section 1: nothing shared on the data path). The shard copies it into
//! its [`super::ShardSnapshot`] when the exporter asks.

use std::time::Duration;

use super::LatencyHistogram;
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, Default)]
pub struct ShardProbe {
    pub append_ack_latency: LatencyHistogram,
    pub fetch_read_latency: LatencyHistogram,
    /// Failures by error code, indexed by the code's number (codes are dense and few; the
    /// vector grows to the largest code seen, so it is bounded by the protocol's codes).
    errors: Vec<u64>,
}

impl ShardProbe {
    pub fn record_append_ack(&mut self, latency: Duration) {
        self.append_ack_latency.record(latency);
    }

    pub fn record_fetch_read(&mut self, latency: Duration) {
        self.fetch_read_latency.record(latency);
    }

    pub fn record_error(&mut self, code: ErrorCode) {
        let i = code as usize;
        if i >= self.errors.len() {
            self.errors.resize(i + 1, 0);
        }
        self.errors[i] += 1;
    }

    /// Failures by code name, codes that never failed left out, in code order.
    pub fn errors_by_code(&self) -> Vec<(&'static str, u64)> {
        self.errors
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .filter_map(|(i, &n)| Some((ErrorCode::from_u16(i as u16)?.name(), n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_code_name() {
        let mut p = ShardProbe::default();
        p.record_error(ErrorCode::UNKNOWN_TOPIC);
        p.record_error(ErrorCode::OFFSET_OUT_OF_RANGE);
        p.record_error(ErrorCode::UNKNOWN_TOPIC);
        assert_eq!(p.errors_by_code(), [("UNKNOWN_TOPIC", 2), ("OFFSET_OUT_OF_RANGE", 1)]);
        p.record_append_ack(Duration::from_micros(70));
        p.record_fetch_read(Duration::from_micros(7));
        assert_eq!((p.append_ack_latency.count(), p.fetch_read_latency.count()), (1, 1));
    }
}
