//! When to try again: a backoff schedule within a total time budget. Pure (the caller passes
//! `now` and does the waiting), so it is tested without sleeping.
//!
//! Used by the pull consumer to ride out a broker restart: the first retry waits `initial`,
//! each later one twice as long up to `max`, and no retry starts past `budget` from the first
//! failure's schedule start.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RetrySchedule {
    next: Duration,
    max: Duration,
    deadline: Instant,
}

impl RetrySchedule {
    pub fn new(initial: Duration, max: Duration, budget: Duration, now: Instant) -> Self {
        RetrySchedule { next: initial, max: max.max(initial), deadline: now + budget }
    }

    /// How long to wait before the next attempt, or `None` when the budget is spent. The
    /// last wait is cut so the attempt starts by the deadline.
    pub fn next_wait(&mut self, now: Instant) -> Option<Duration> {
        if now >= self.deadline {
            return None;
        }
        let wait = self.next.min(self.deadline - now);
        self.next = (self.next * 2).min(self.max);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_stops_at_the_budget() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = RetrySchedule::new(ms(50), ms(200), ms(500), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        while let Some(w) = s.next_wait(now) {
            waits.push(w.as_millis());
            now += w;
        }
        assert_eq!(waits, [50, 100, 200, 150], "the last wait ends at the budget");
        assert_eq!(now, t0 + ms(500));
    }
}
