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

/// The shortest wait of a fixed-rate producer: when its next message is due sooner, it sleeps
/// this long and then sends every message that came due meanwhile, each timed from its own
/// intended time (so the lateness is in the measured latency and the publish delay).
///
/// Sleeping until each message's own time made a producer at 336k msg/s sleep and wake 336k
/// times a second on the core it shares with the client's worker and reader threads: ack p99
/// was 41 ms with no consumer running (BENCHMARKS.md, "Many small batches: reused buffers,
/// and a fixed-rate producer's sleeps").
pub const MIN_SLEEP_NS: u64 = 50_000;

/// When to send a message intended at `intended_ns`, at `now_ns`: now when it is due,
/// otherwise at its intended time but not before [`MIN_SLEEP_NS`] from now.
pub fn send_time(intended_ns: u64, now_ns: u64) -> u64 {
    if intended_ns <= now_ns {
        now_ns
    } else {
        intended_ns.max(now_ns + MIN_SLEEP_NS)
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
    fn a_message_due_soon_waits_the_minimum_sleep_and_late_ones_go_at_once() {
        // Due: sent now, however late.
        assert_eq!(send_time(100, 100), 100);
        assert_eq!(send_time(100, 5_000_000), 5_000_000);
        // Due in 3 µs (336k msg/s): one sleep of MIN_SLEEP_NS instead of one per message.
        assert_eq!(send_time(1_003_000, 1_000_000), 1_000_000 + MIN_SLEEP_NS);
        // Due later than the minimum sleep: sent on time.
        assert_eq!(send_time(2_000_000, 1_000_000), 2_000_000);
        // At 336k msg/s, the ~17 messages intended within one minimum sleep go out together
        // after it: each later than intended by less than the sleep.
        let mut s = Schedule::new(0, 336_000);
        let mut now = 0;
        let mut sleeps = 0;
        for _ in 0..336 {
            let intended = s.next_intended(now);
            let at = send_time(intended, now);
            if at > now {
                sleeps += 1;
                now = at;
            }
            assert!(now >= intended && now - intended <= MIN_SLEEP_NS);
        }
        assert!((19..=21).contains(&sleeps), "{sleeps} sleeps for 1 ms of messages");
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
