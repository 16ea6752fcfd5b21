//! The send schedule of one producer. At a fixed rate, message `i` is *intended* to be sent
//! at `start + i / rate`, whatever happened before: when the producer falls behind (the broker
//! stalled, the client blocked) it sends the late messages at once, and their latency is still
//! counted from the intended time. This is what avoids coordinated omission; the gap between
//! intended and actual send time is reported as the publish delay. Pure logic, no clock.

#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    /// Messages per second; 0 = as fast as possible (no schedule).
    rate: u64,
    sent: u64,
}

impl Schedule {
    pub fn new(start_ns: u64, rate: u64) -> Self {
        Schedule { start_ns, rate, sent: 0 }
    }

    pub fn is_fixed_rate(&self) -> bool {
        self.rate > 0
    }

    /// Intended send time of the next message, or `now` without a rate. Advances.
    pub fn next_intended(&mut self, now_ns: u64) -> u64 {
        let i = self.sent;
        self.sent += 1;
        if self.rate == 0 {
            return now_ns;
        }
        // u128: i * 1e9 overflows u64 after ~18 billion messages.
        self.start_ns + (i as u128 * 1_000_000_000 / self.rate as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_ignores_when_messages_were_actually_sent() {
        let mut s = Schedule::new(1_000, 4); // every 250 ms
        let times: Vec<u64> = (0..4).map(|_| s.next_intended(u64::MAX)).collect();
        assert_eq!(times, vec![1_000, 250_001_000, 500_001_000, 750_001_000]);
        // A stall does not move the schedule: the next message was due long ago.
        assert_eq!(s.next_intended(10_000_000_000), 1_000_001_000);
    }

    #[test]
    fn max_rate_uses_now() {
        let mut s = Schedule::new(0, 0);
        assert!(!s.is_fixed_rate());
        assert_eq!(s.next_intended(42), 42);
        assert_eq!(s.next_intended(43), 43);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let mut s = Schedule { start_ns: 0, rate: 3, sent: 30_000_000_000 };
        assert_eq!(s.next_intended(0), 10_000_000_000_000_000_000);
    }
}
