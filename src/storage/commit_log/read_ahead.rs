//! Read-ahead: the few most recent disk reads that went past what a fetch asked for, kept so
//! the next sequential fetch of the same region needs no I/O. Owned by the log's state on its
//! shard; pure (no I/O).
//!
//! Bounded: at most [`READ_AHEAD_SLOTS`] buffers, each at most one fetch plus
//! `read_ahead_bytes`; the oldest goes first. Retention drops the buffers of deleted segments.
//! Bytes served from here came from disk, so the reader verifies them like any disk read.

use std::collections::VecDeque;

use crate::storage::file::ReadBuf;
use crate::storage::types::LogPosition;

/// Read-ahead buffers kept per log.
pub(super) const READ_AHEAD_SLOTS: usize = 4;

/// Recent disk reads: (log position of `buf[0]`, buf), oldest first.
pub(super) struct ReadAhead {
    slots: VecDeque<(LogPosition, ReadBuf)>,
}

impl ReadAhead {
    pub(super) fn new() -> Self {
        ReadAhead { slots: VecDeque::with_capacity(READ_AHEAD_SLOTS) }
    }

    /// The bytes `[pos, pos + len)` if a read-ahead buffer holds them (the newest one first).
    pub(super) fn hit(&self, pos: LogPosition, len: usize) -> Option<ReadBuf> {
        self.slots.iter().rev().find_map(|(start, buf)| {
            (pos >= *start && pos + len as u64 <= *start + buf.len() as u64)
                .then(|| buf.slice((pos - *start) as usize, len))
        })
    }

    /// Keeps a disk read starting at log position `start`, evicting the oldest when full.
    pub(super) fn keep(&mut self, start: LogPosition, buf: ReadBuf) {
        if self.slots.len() == READ_AHEAD_SLOTS {
            self.slots.pop_front();
        }
        self.slots.push_back((start, buf));
    }

    /// Drops the buffers that start before `pos` (their segments were deleted).
    pub(super) fn drop_before(&mut self, pos: LogPosition) {
        self.slots.retain(|(start, _)| *start >= pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pos: u64) -> LogPosition {
        LogPosition::new(pos)
    }

    fn buf(first: u8, len: usize) -> ReadBuf {
        ReadBuf::from_vec((0..len).map(|i| first.wrapping_add(i as u8)).collect())
    }

    #[test]
    fn hits_only_ranges_wholly_inside_a_buffer() {
        let mut ra = ReadAhead::new();
        ra.keep(p(100), buf(0, 50));
        assert_eq!(&ra.hit(p(110), 10).expect("inside")[..], &buf(10, 10)[..]);
        assert_eq!(&ra.hit(p(100), 50).expect("whole buffer")[..], &buf(0, 50)[..]);
        assert!(ra.hit(p(99), 10).is_none(), "starts before");
        assert!(ra.hit(p(140), 11).is_none(), "ends after");
    }

    #[test]
    fn keeps_at_most_the_slot_count_dropping_the_oldest() {
        let mut ra = ReadAhead::new();
        for i in 0..=READ_AHEAD_SLOTS as u64 {
            ra.keep(p(i * 1000), buf(i as u8, 10));
        }
        assert!(ra.hit(p(0), 10).is_none(), "the oldest was evicted");
        for i in 1..=READ_AHEAD_SLOTS as u64 {
            assert!(ra.hit(p(i * 1000), 10).is_some(), "slot {i} kept");
        }
    }

    #[test]
    fn prefers_the_newest_buffer_and_drops_before_a_position() {
        let mut ra = ReadAhead::new();
        ra.keep(p(0), buf(0, 100));
        ra.keep(p(50), buf(200, 100));
        assert_eq!(ra.hit(p(60), 1).expect("newest")[0], 210);
        ra.drop_before(p(50));
        assert!(ra.hit(p(10), 1).is_none());
        assert!(ra.hit(p(60), 1).is_some());
    }
}
