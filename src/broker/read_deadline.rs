//! When a connection's reader has waited too long: the slow-frame and idle timeouts.
//!
//! A pure state machine (no clock reads, no I/O; the connection passes `now`), run by each
//! connection's reader on the shard that accepted it. Two rules, both from the broker config:
//!
//! - **A frame must arrive whole within `frame_read_timeout_ms`** of its first byte. A client
//!   that trickles a frame (slowloris: a byte every few seconds) would otherwise hold a
//!   connection slot and its read buffer forever; a per-read timeout does not catch it.
//! - **A connection with nothing to do for `idle_timeout_ms` is closed**: no bytes received and
//!   no request in flight (a long-poll fetch in flight keeps it open).
//!
//! The reader asks [`ReadDeadline::deadline`] before it waits and calls
//! [`ReadDeadline::expired`] when that time came without bytes.

use std::time::{Duration, Instant};

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A frame started but did not complete in time.
    SlowFrame,
    /// Nothing received and nothing in flight for the idle timeout.
    Idle,
}

#[derive(Debug, Clone)]
pub struct ReadDeadline {
    frame_timeout: Duration,
    idle_timeout: Duration,
    /// When bytes last arrived (or the connection opened, or a request was last in flight).
    active_at: Instant,
    /// When the first byte of the incomplete frame now buffered arrived.
    frame_started_at: Option<Instant>,
}

impl ReadDeadline {
    pub fn new(now: Instant, frame_timeout: Duration, idle_timeout: Duration) -> Self {
        ReadDeadline { frame_timeout, idle_timeout, active_at: now, frame_started_at: None }
    }

    /// After bytes arrived and every complete frame was taken: `buffered` bytes of an
    /// incomplete frame remain, and `completed` says whether a frame completed since the last
    /// call (the remaining bytes then belong to a new frame).
    pub fn received(&mut self, now: Instant, buffered: usize, completed: bool) {
        self.active_at = now;
        self.frame_started_at = match self.frame_started_at {
            _ if buffered == 0 => None,
            Some(started) if !completed => Some(started),
            _ => Some(now),
        };
    }

    /// The time the reader may wait for bytes until, and what it means if none come.
    pub fn deadline(&self) -> (Instant, Expiry) {
        match self.frame_started_at {
            Some(started) => (started + self.frame_timeout, Expiry::SlowFrame),
            None => (self.active_at + self.idle_timeout, Expiry::Idle),
        }
    }

    /// The deadline passed at `now` with no bytes: Some(reason) to close the connection, None
    /// to keep waiting (requests are in flight, so it is not idle; the idle time restarts).
    pub fn expired(&mut self, now: Instant, requests_in_flight: usize) -> Option<Expiry> {
        let (at, why) = self.deadline();
        if now < at {
            return None;
        }
        match why {
            Expiry::SlowFrame => Some(Expiry::SlowFrame),
            Expiry::Idle if requests_in_flight > 0 => {
                self.active_at = now;
                None
            }
            Expiry::Idle => Some(Expiry::Idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(600);

    #[test]
    fn an_open_connection_without_bytes_is_idle_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut d = ReadDeadline::new(t0, FRAME, IDLE);
        assert_eq!(d.deadline(), (t0 + IDLE, Expiry::Idle));
        assert_eq!(d.expired(t0 + IDLE - Duration::from_millis(1), 0), None);
        assert_eq!(d.expired(t0 + IDLE, 0), Some(Expiry::Idle));
    }

    #[test]
    fn requests_in_flight_keep_a_connection_open() {
        let t0 = Instant::now();
        let mut d = ReadDeadline::new(t0, FRAME, IDLE);
        d.received(t0, 0, true);
        assert_eq!(d.expired(t0 + IDLE, 1), None);
        assert_eq!(d.deadline(), (t0 + 2 * IDLE, Expiry::Idle), "idle time restarts");
        assert_eq!(d.expired(t0 + 2 * IDLE, 0), Some(Expiry::Idle));
    }

    #[test]
    fn a_trickled_frame_expires_from_its_first_byte_whatever_arrives_later() {
        let t0 = Instant::now();
        let mut d = ReadDeadline::new(t0, FRAME, IDLE);
        d.received(t0 + Duration::from_secs(1), 3, false);
        let start = t0 + Duration::from_secs(1);
        for s in 2..30 {
            // One more byte of the same frame every second.
            d.received(t0 + Duration::from_secs(s), 3 + s as usize, false);
            assert_eq!(d.deadline(), (start + FRAME, Expiry::SlowFrame));
        }
        assert_eq!(d.expired(start + FRAME, 5), Some(Expiry::SlowFrame), "even with requests");
    }

    #[test]
    fn each_new_frame_gets_its_own_time_and_a_complete_one_clears_it() {
        let t0 = Instant::now();
        let mut d = ReadDeadline::new(t0, FRAME, IDLE);
        d.received(t0, 10, false);
        let t1 = t0 + Duration::from_secs(20);
        // The frame completed and the read also brought the start of the next one.
        d.received(t1, 4, true);
        assert_eq!(d.deadline(), (t1 + FRAME, Expiry::SlowFrame));
        let t2 = t1 + Duration::from_secs(1);
        d.received(t2, 0, true);
        assert_eq!(d.deadline(), (t2 + IDLE, Expiry::Idle));
    }
}
