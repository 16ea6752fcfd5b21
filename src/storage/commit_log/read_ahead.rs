//! Read-ahead: the few most recent disk reads that went past what a fetch asked for, kept so
//! the next sequential fetch of the same region needs no I/O; and [`Prefetched`], a
//! catching-up queue's next fetch read while its consumer takes the current one. Owned by the
//! log's state on its shard; pure (no I/O).
//!
//! Bounded: at most [`READ_AHEAD_SLOTS`] buffers, each at most one fetch plus
//! `read_ahead_bytes`; the oldest goes first. Prefetched bytes, kept and in flight, stay within
//! `prefetch_bytes`. Retention drops the buffers of deleted segments. Bytes served from here
//! came from disk, so the reader verifies them like any disk read.

use std::collections::{HashMap, VecDeque};

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
/// that queue's fetch has read past it, or until room is needed for a newer one (the oldest
/// goes first). Looked up by queue, then by position (a queue's buffers are kept in log order:
/// its prefetches read its successive fetches).
/// Bounded: kept and reserved (in flight) bytes together at most `max_bytes`, counting each
/// buffer by the memory a DMA read of it takes ([`Prefetched::charge`]); at most
/// [`PREFETCHED_BUFFERS`] buffers, kept and reserved.
pub(super) struct Prefetched {
    /// By queue: (age, log position of `buf[0]`, buf), in log order.
    queues: HashMap<QueueKey, VecDeque<(u64, LogPosition, ReadBuf)>>,
    /// The age of the next buffer kept.
    next_age: u64,
    kept_bytes: usize,
    kept_buffers: usize,
    /// Of prefetches in flight (each reserved before its reads are issued).
    reserved_bytes: usize,
    reserved_buffers: usize,
    max_bytes: usize,
}

/// Buffers kept and in flight at most: a queue whose batches are small and far apart reads one
/// buffer per batch.
pub(super) const PREFETCHED_BUFFERS: usize = 1024;

impl Prefetched {
    pub(super) fn new(max_bytes: usize) -> Self {
        Prefetched {
            queues: HashMap::new(),
            next_age: 0,
            kept_bytes: 0,
            kept_buffers: 0,
            reserved_bytes: 0,
            reserved_buffers: 0,
            max_bytes,
        }
    }

    /// The memory a read of `len` bytes is counted for: a DMA read is done in whole 4 KiB
    /// blocks, plus one for an unaligned start.
    pub(super) fn charge(len: usize) -> usize {
        len.next_multiple_of(4096) + 4096
    }

    /// The bytes `[pos, pos + len)` of `queue` if one of its prefetched buffers holds them.
    pub(super) fn hit(&self, queue: QueueKey, pos: LogPosition, len: usize) -> Option<ReadBuf> {
        let bufs = self.queues.get(&queue)?;
        let after = bufs.partition_point(|(_, start, _)| *start <= pos);
        let (_, start, buf) = bufs.get(after.checked_sub(1)?)?;
        (pos + len as u64 <= *start + buf.len() as u64)
            .then(|| buf.slice((pos - *start) as usize, len))
    }

    /// Room for a prefetch of `buffers` reads charged `bytes` in all: the oldest kept buffers
    /// go to make it. False (nothing changed) when the reads in flight leave too little (the
    /// prefetches' and `fetch_reads`, the bytes fetches are reading themselves), or there is
    /// nothing to read.
    pub(super) fn reserve(&mut self, bytes: usize, buffers: usize, fetch_reads: usize) -> bool {
        if buffers == 0
            || fetch_reads + self.reserved_bytes + bytes > self.max_bytes
            || self.reserved_buffers + buffers > PREFETCHED_BUFFERS
        {
            return false;
        }
        while self.kept_bytes + self.reserved_bytes + bytes > self.max_bytes
            || self.kept_buffers + self.reserved_buffers + buffers > PREFETCHED_BUFFERS
        {
            self.evict_oldest();
        }
        self.reserved_bytes += bytes;
        self.reserved_buffers += buffers;
        true
    }

    /// Room for a prefetch further ahead than a queue's next fetch, from what is free: as
    /// [`Self::reserve`], but no kept buffer goes to make it (those are other queues' next
    /// fetches, or this one's), and fetches' own reads count against the bound with them.
    pub(super) fn reserve_free(
        &mut self,
        bytes: usize,
        buffers: usize,
        fetch_reads: usize,
    ) -> bool {
        if fetch_reads + self.kept_bytes + self.reserved_bytes + bytes > self.max_bytes
            || self.kept_buffers + self.reserved_buffers + buffers > PREFETCHED_BUFFERS
        {
            return false;
        }
        self.reserve(bytes, buffers, fetch_reads)
    }

    /// Drops the oldest kept buffer (a look at every queue holding any: only when full).
    fn evict_oldest(&mut self) {
        let oldest = self
            .queues
            .iter()
            .filter_map(|(q, bufs)| bufs.front().map(|(age, _, _)| (*age, *q)))
            .min();
        if let Some((_, queue)) = oldest {
            self.remove(queue, |_, _| true, 1);
        }
    }

    /// Removes up to `at_most` of `queue`'s buffers from the front (in log order) while
    /// `used(start, end)` holds for them.
    fn remove(
        &mut self,
        queue: QueueKey,
        used: impl Fn(LogPosition, LogPosition) -> bool,
        at_most: usize,
    ) {
        let Some(bufs) = self.queues.get_mut(&queue) else { return };
        let mut removed = 0;
        while removed < at_most {
            let Some((_, start, buf)) = bufs.front() else { break };
            if !used(*start, *start + buf.len() as u64) {
                break;
            }
            self.kept_bytes -= Self::charge(buf.len());
            self.kept_buffers -= 1;
            bufs.pop_front();
            removed += 1;
        }
        if bufs.is_empty() {
            self.queues.remove(&queue);
        }
    }

    /// Keeps a buffer a prefetch of `queue` read within its reservation ([`Self::reserve`]),
    /// before it [releases](Self::release) that; whether it was kept. It goes in log order
    /// among the queue's buffers (a queue's two prefetches may finish in either order); one
    /// that overlaps a kept buffer (a prefetch of bytes already kept, after a rewind) is not
    /// kept.
    pub(super) fn keep(&mut self, queue: QueueKey, start: LogPosition, buf: ReadBuf) -> bool {
        let bufs = self.queues.entry(queue).or_default();
        let end = start + buf.len() as u64;
        let at = bufs.partition_point(|(_, s, _)| *s < start);
        let overlaps_before = at > 0 && bufs[at - 1].1 + bufs[at - 1].2.len() as u64 > start;
        let overlaps_after = bufs.get(at).is_some_and(|(_, s, _)| *s < end);
        if overlaps_before || overlaps_after {
            return false;
        }
        self.kept_bytes += Self::charge(buf.len());
        self.kept_buffers += 1;
        bufs.insert(at, (self.next_age, start, buf));
        self.next_age += 1;
        true
    }

    /// Ends a prefetch's reservation ([`Self::reserve`]).
    pub(super) fn release(&mut self, bytes: usize, buffers: usize) {
        self.reserved_bytes -= bytes;
        self.reserved_buffers -= buffers;
    }

    /// `queue`'s fetch read everything before log position `end`: its buffers that end there
    /// or earlier are used up.
    pub(super) fn consumed(&mut self, queue: QueueKey, end: LogPosition) {
        self.remove(queue, |_, buf_end| buf_end <= end, usize::MAX);
    }

    /// Drops the buffers that start before `pos` (their segments were deleted).
    pub(super) fn drop_before(&mut self, pos: LogPosition) {
        let queues: Vec<QueueKey> = self.queues.keys().copied().collect();
        for q in queues {
            self.remove(q, |start, _| start < pos, usize::MAX);
        }
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
        let c = Prefetched::charge;
        assert_eq!((c(1), c(4096), c(4097)), (8192, 8192, 12288), "whole blocks, plus one");
        let mut pf = Prefetched::new(3 * 8192);
        assert!(pf.reserve(2 * 8192, 2, 0));
        assert!(!pf.reserve(8193, 1, 0), "in flight: 2 of 3 blocks");
        assert!(!pf.reserve(0, 0, 0), "nothing to read");
        assert!(pf.keep(A, p(0), buf(0, 100)));
        assert!(pf.keep(A, p(5000), buf(0, 100)));
        pf.release(2 * 8192, 2);
        assert_eq!(pf.bytes(), (2 * 8192, 0));
        // A third needs room: the oldest kept buffer (A's first) goes.
        assert!(pf.reserve(2 * 8192, 1, 0));
        assert_eq!(pf.bytes(), (8192, 2 * 8192));
        assert!(pf.hit(A, p(0), 10).is_none());
        assert_eq!(pf.hit(A, p(5010), 5).expect("A's second kept")[0], 10);
        assert!(pf.keep(B, p(1000), buf(1, 100)));
        pf.release(2 * 8192, 1);
        // More than the bound never fits.
        assert!(!pf.reserve(3 * 8192 + 1, 1, 0));
        assert_eq!(pf.bytes(), (2 * 8192, 0));
    }

    #[test]
    fn fetches_reads_in_flight_leave_a_prefetch_less_room() {
        let mut pf = Prefetched::new(4 * 8192);
        assert!(!pf.reserve(2 * 8192, 1, 2 * 8192 + 1), "fetches read half the bound, and more");
        assert!(pf.reserve(2 * 8192, 1, 2 * 8192), "exactly the bound");
        assert!(!pf.reserve(2 * 8192, 1, 8192), "with that prefetch in flight: 5 blocks of 4");
        // Kept buffers are memory, not reads in flight: they make room only by going.
        assert!(pf.keep(A, p(0), buf(0, 100)));
        pf.release(2 * 8192, 1);
        assert!(pf.reserve(2 * 8192, 1, 2 * 8192));
        assert!(pf.hit(A, p(0), 10).is_some(), "room without evicting it");
    }

    #[test]
    fn at_most_a_fixed_number_of_buffers_is_kept_and_in_flight() {
        let mut pf = Prefetched::new(usize::MAX / 2);
        assert!(!pf.reserve(1, PREFETCHED_BUFFERS + 1, 0));
        assert!(pf.reserve(1, PREFETCHED_BUFFERS, 0));
        for i in 0..PREFETCHED_BUFFERS as u64 {
            assert!(pf.keep(A, p(i * 100), buf(0, 10)));
        }
        pf.release(1, PREFETCHED_BUFFERS);
        // The next reservation evicts the oldest buffers to stay within the count.
        assert!(pf.reserve(1, 2, 0));
        assert!(pf.hit(A, p(0), 10).is_none() && pf.hit(A, p(100), 10).is_none());
        assert!(pf.hit(A, p(200), 10).is_some());
    }

    #[test]
    fn a_prefetch_further_ahead_takes_only_free_room() {
        // Room for 4 blocks of 8 KiB; a kept buffer of 100 bytes is charged one.
        let mut pf = Prefetched::new(4 * 8192);
        assert!(pf.reserve(8192, 1, 0));
        assert!(pf.keep(A, p(0), buf(0, 100)));
        pf.release(8192, 1);
        // The free 3 blocks may go further ahead, not a fourth.
        assert!(!pf.reserve_free(4 * 8192, 1, 0), "would evict A's kept buffer");
        assert!(!pf.reserve_free(3 * 8192, 1, 1), "fetches' own reads count too");
        assert!(pf.reserve_free(3 * 8192, 1, 0));
        assert!(pf.hit(A, p(0), 100).is_some(), "nothing evicted");
        assert!(!pf.reserve_free(1, 1, 0), "full");
        // The next fetch's prefetch may still take the kept buffer's room.
        pf.release(3 * 8192, 1);
        assert!(pf.reserve(4 * 8192, 1, 0));
        assert!(pf.hit(A, p(0), 100).is_none());
    }

    #[test]
    fn a_queues_fetch_past_a_prefetched_buffer_frees_it_and_only_its_own() {
        let mut pf = Prefetched::new(1 << 20);
        assert!(pf.reserve(3 * 8192, 3, 0));
        assert!(pf.keep(A, p(0), buf(0, 100)));
        assert!(pf.keep(B, p(100), buf(0, 100)));
        assert!(pf.keep(A, p(200), buf(7, 100)));
        assert!(!pf.keep(A, p(250), buf(0, 10)), "overlaps A's last");
        assert!(!pf.keep(A, p(50), buf(0, 10)), "overlaps A's first");
        assert!(pf.keep(A, p(150), buf(3, 10)), "between two: kept in log order");
        assert_eq!(&pf.hit(A, p(150), 10).expect("kept")[..], &buf(3, 10)[..]);
        pf.release(3 * 8192, 3);
        assert!(pf.hit(B, p(0), 10).is_none(), "only a queue's own buffers serve it");
        assert_eq!(pf.hit(A, p(250), 10).expect("A's second")[0], 57);
        assert!(pf.hit(A, p(290), 11).is_none(), "ends past the buffer");
        pf.consumed(A, p(250));
        assert!(pf.hit(A, p(0), 100).is_none(), "A's first buffer was read past");
        assert!(pf.hit(B, p(100), 100).is_some(), "B's buffer is not A's to free");
        assert!(pf.hit(A, p(200), 100).is_some(), "A's second is read only in part");
        assert_eq!(pf.bytes(), (2 * 8192, 0));
        pf.drop_before(p(200));
        assert_eq!(pf.bytes(), (8192, 0));
        assert!(pf.hit(B, p(100), 1).is_none());
    }
}
