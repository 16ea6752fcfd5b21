//! Read-ahead: the few most recent disk reads that went past what a fetch asked for, kept so
//! the next sequential fetch of the same region needs no I/O; and [`Prefetched`], a
//! catching-up queue's next fetch read while its consumer takes the current one. Owned by the
//! log's state on its shard; pure (no I/O).
//!
//! Bounded: at most [`READ_AHEAD_SLOTS`] buffers, each at most one fetch plus
//! `read_ahead_bytes`; the oldest goes first. Prefetched bytes, kept and in flight, stay within
//! `prefetch_bytes`. Retention drops the buffers of deleted segments. Bytes served from here
//! came from disk, so the reader verifies them like any disk read.

use std::collections::VecDeque;

use crate::storage::file::ReadBuf;
use crate::storage::types::{LogPosition, QueueKey};

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

/// Disk reads of catching-up queues' next fetches (by the reader's prefetch), each kept until
/// that queue's fetch has read past it, or until room is needed for a newer one.
/// Bounded: kept and reserved (in flight) bytes together at most `max_bytes`.
pub(super) struct Prefetched {
    /// (queue, log position of `buf[0]`, buf), oldest first.
    bufs: VecDeque<(QueueKey, LogPosition, ReadBuf)>,
    kept_bytes: usize,
    /// Bytes of prefetches in flight (each reserved before its reads are issued).
    reserved_bytes: usize,
    max_bytes: usize,
}

impl Prefetched {
    pub(super) fn new(max_bytes: usize) -> Self {
        Prefetched { bufs: VecDeque::new(), kept_bytes: 0, reserved_bytes: 0, max_bytes }
    }

    /// The bytes `[pos, pos + len)` if a prefetched buffer holds them.
    pub(super) fn hit(&self, pos: LogPosition, len: usize) -> Option<ReadBuf> {
        self.bufs.iter().rev().find_map(|(_, start, buf)| {
            (pos >= *start && pos + len as u64 <= *start + buf.len() as u64)
                .then(|| buf.slice((pos - *start) as usize, len))
        })
    }

    /// Room for a prefetch of `bytes`: the oldest kept buffers go to make it. False (nothing
    /// changed) when prefetches in flight leave too little, or `bytes` is 0.
    pub(super) fn reserve(&mut self, bytes: usize) -> bool {
        if bytes == 0 || self.reserved_bytes + bytes > self.max_bytes {
            return false;
        }
        while self.kept_bytes + self.reserved_bytes + bytes > self.max_bytes {
            let Some((_, _, old)) = self.bufs.pop_front() else { break };
            self.kept_bytes -= old.len();
        }
        self.reserved_bytes += bytes;
        true
    }

    /// Keeps a buffer a prefetch read within its reservation ([`Self::reserve`]), before it
    /// [releases](Self::release) that.
    pub(super) fn keep(&mut self, queue: QueueKey, start: LogPosition, buf: ReadBuf) {
        debug_assert!(self.kept_bytes + buf.len() <= self.max_bytes);
        self.kept_bytes += buf.len();
        self.bufs.push_back((queue, start, buf));
    }

    /// Ends a prefetch's reservation of `bytes`.
    pub(super) fn release(&mut self, bytes: usize) {
        self.reserved_bytes -= bytes;
    }

    /// `queue`'s fetch read everything before log position `end`: its buffers that end there
    /// or earlier are used up.
    pub(super) fn consumed(&mut self, queue: QueueKey, end: LogPosition) {
        let mut freed = 0;
        self.bufs.retain(|(q, start, buf)| {
            let used = *q == queue && *start + buf.len() as u64 <= end;
            if used {
                freed += buf.len();
            }
            !used
        });
        self.kept_bytes -= freed;
    }

    /// Drops the buffers that start before `pos` (their segments were deleted).
    pub(super) fn drop_before(&mut self, pos: LogPosition) {
        let mut freed = 0;
        self.bufs.retain(|(_, start, buf)| {
            if *start < pos {
                freed += buf.len();
            }
            *start >= pos
        });
        self.kept_bytes -= freed;
    }

    #[cfg(test)]
    fn bytes(&self) -> (usize, usize) {
        (self.kept_bytes, self.reserved_bytes)
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

    use crate::storage::types::{QueueId, TopicId};

    const A: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(0));
    const B: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(1));

    #[test]
    fn prefetched_bytes_kept_and_in_flight_stay_within_the_bound() {
        let mut pf = Prefetched::new(300);
        assert!(pf.reserve(200));
        assert!(!pf.reserve(101), "in flight: 200 of 300");
        assert!(!pf.reserve(0), "nothing to prefetch");
        pf.keep(A, p(0), buf(0, 150));
        pf.release(200);
        assert_eq!(pf.bytes(), (150, 0));
        assert!(pf.reserve(100));
        pf.keep(B, p(1000), buf(1, 100));
        pf.release(100);
        assert_eq!(pf.bytes(), (250, 0));
        // A third needs room: the oldest kept buffer (A's) goes, B's stays.
        assert!(pf.reserve(100));
        assert_eq!(pf.bytes(), (100, 100));
        assert!(pf.hit(p(0), 10).is_none());
        assert_eq!(pf.hit(p(1010), 5).expect("B kept")[0], 11);
        // More than the bound never fits.
        pf.release(100);
        assert!(!pf.reserve(301));
        assert_eq!(pf.bytes(), (100, 0));
    }

    #[test]
    fn a_queues_fetch_past_a_prefetched_buffer_frees_it_and_only_its_own() {
        let mut pf = Prefetched::new(1000);
        assert!(pf.reserve(300));
        pf.keep(A, p(0), buf(0, 100));
        pf.keep(B, p(100), buf(0, 100));
        pf.keep(A, p(200), buf(0, 100));
        pf.release(300);
        pf.consumed(A, p(250));
        assert!(pf.hit(p(0), 100).is_none(), "A's first buffer was read past");
        assert!(pf.hit(p(100), 100).is_some(), "B's buffer is not A's to free");
        assert!(pf.hit(p(200), 100).is_some(), "A's second is read only in part");
        assert_eq!(pf.bytes(), (200, 0));
        pf.drop_before(p(200));
        assert_eq!(pf.bytes(), (100, 0));
        assert!(pf.hit(p(100), 1).is_none());
    }
}
