//! Newtypes for things that must not be mixed.

use std::fmt;

/// A byte position in a shard's commit log, global across its segments (a segment's base is
/// the position of its first byte). Not a queue offset and not an offset within a file: the
/// type keeps them apart. Zero-cost: a `u64` at run time.
///
/// Operations are the few a log needs: add a length (`pos + len`), the distance between two
/// positions (`end - start`, in bytes; panics in debug builds if `end < start`, like `u64`),
/// order, and 4 KiB block alignment for O_DIRECT.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition(u64);

impl LogPosition {
    /// The start of every log.
    pub const ZERO: LogPosition = LogPosition(0);
    /// Beyond every real position (an open upper bound).
    pub const MAX: LogPosition = LogPosition(u64::MAX);

    #[inline]
    pub const fn new(pos: u64) -> Self {
        LogPosition(pos)
    }

    /// The position as a number of bytes from the start of the log (for encoding and files).
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The start of the 4 KiB block holding this position.
    #[inline]
    pub fn align_down(self) -> Self {
        LogPosition(super::file::align_down(self.0))
    }

    /// This position rounded up to a 4 KiB block boundary.
    #[inline]
    pub fn align_up(self) -> Self {
        LogPosition(super::file::align_up(self.0))
    }

    /// Does a 4 KiB block start here?
    #[inline]
    pub fn is_aligned(self) -> bool {
        self.0 % super::file::ALIGN == 0
    }
}

impl std::ops::Add<u64> for LogPosition {
    type Output = LogPosition;
    /// The position `len` bytes further.
    #[inline]
    fn add(self, len: u64) -> LogPosition {
        LogPosition(self.0 + len)
    }
}

impl std::ops::AddAssign<u64> for LogPosition {
    #[inline]
    fn add_assign(&mut self, len: u64) {
        self.0 += len;
    }
}

impl std::ops::Sub for LogPosition {
    type Output = u64;
    /// The distance in bytes from `earlier` to `self`.
    #[inline]
    fn sub(self, earlier: LogPosition) -> u64 {
        self.0 - earlier.0
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

/// An offset in one queue: the number of a record, counted from 0 over the queue's life
/// (never reused, even after retention). Not a log position: the type keeps them apart.
/// Zero-cost: a `u64` at run time; the broker and the wire use the bare number.
///
/// Operations: add a record count (`offset + count`), the number of records between two
/// offsets (`next - first`), order. Displays as the bare number, as on the wire.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QueueOffset(u64);

impl QueueOffset {
    /// A queue's first offset.
    pub const ZERO: QueueOffset = QueueOffset(0);

    #[inline]
    pub const fn new(offset: u64) -> Self {
        QueueOffset(offset)
    }

    /// The offset as a number (for encoding, the broker and the wire).
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::ops::Add<u64> for QueueOffset {
    type Output = QueueOffset;
    /// The offset `records` records further.
    #[inline]
    fn add(self, records: u64) -> QueueOffset {
        QueueOffset(self.0 + records)
    }
}

impl std::ops::Sub for QueueOffset {
    type Output = u64;
    /// The number of records from `earlier` to `self`.
    #[inline]
    fn sub(self, earlier: QueueOffset) -> u64 {
        self.0 - earlier.0
    }
}

impl fmt::Display for QueueOffset {
    /// The bare number, honouring width and fill (`{:010}`), as a `u64` would.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A topic's id on a broker: assigned once at topic creation and never reused, so data of a
/// deleted topic can never be mistaken for a new topic of the same name. Zero-cost (`u32`).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TopicId(u32);

impl TopicId {
    #[inline]
    pub const fn new(id: u32) -> Self {
        TopicId(id)
    }

    /// The id as a number (for encoding, the broker and the wire).
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for TopicId {
    /// The bare number, honouring width and fill (`{:010}`), as a `u32` would.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A queue's number within its topic (0..queue count). Zero-cost (`u32`).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QueueId(u32);

impl QueueId {
    #[inline]
    pub const fn new(id: u32) -> Self {
        QueueId(id)
    }

    /// The number (for encoding, the broker and the wire).
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for QueueId {
    /// The bare number, honouring width and fill (`{:010}`), as a `u32` would.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A queue within a shard's commit log: the broker's stable topic id and the queue number.
/// Typed fields, so the two numbers cannot be swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    pub topic_id: TopicId,
    pub queue_id: QueueId,
}

impl QueueKey {
    #[inline]
    pub const fn new(topic_id: TopicId, queue_id: QueueId) -> Self {
        QueueKey { topic_id, queue_id }
    }
}

impl fmt::Display for QueueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic#{}/q{}", self.topic_id, self.queue_id)
    }
}

/// The offsets a queue currently holds: `[min, next)`. `next` is where the next record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueOffsets {
    pub min: QueueOffset,
    pub next: QueueOffset,
}

/// Where an appended batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub queue: QueueKey,
    /// Queue offset of the batch's first record.
    pub base_offset: QueueOffset,
    pub record_count: u32,
    pub store_timestamp_ms: i64,
    /// Log position of the batch and one past its end.
    pub position: LogPosition,
    pub end: LogPosition,
    /// No record has a key or properties (checked while validating a producer's batch; false
    /// where not checked).
    pub bare: bool,
}

/// How an append was acknowledged (maps to RocketMQ's SendStatus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendStatus {
    /// SEND_OK: appended, and durable if the log runs in sync flush mode.
    Ok,
    /// FLUSH_DISK_TIMEOUT: sync flush mode, and the covering fdatasync did not finish within
    /// `sync_flush_timeout_ms`. The batch is appended and will be flushed.
    FlushDiskTimeout,
}

/// Result of a read: whole stored batches, unmodified.
#[derive(Debug, Clone)]
pub struct ReadBatches {
    pub batches: Vec<super::file::ReadBuf>,
    /// Offset after the last returned batch (where the next read should start).
    pub next_offset: QueueOffset,
    /// The queue's readable offsets at the time of the read.
    pub offsets: QueueOffsets,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_positions_add_lengths_measure_distances_and_align() {
        let start = LogPosition::new(4000);
        let end = start + 200;
        assert_eq!(end, LogPosition::new(4200));
        assert_eq!(end - start, 200, "distance in bytes");
        let mut p = start;
        p += 96;
        assert_eq!(p.get(), 4096);
        assert!(p.is_aligned() && !start.is_aligned());
        assert_eq!(start.align_down(), LogPosition::ZERO);
        assert_eq!(start.align_up(), LogPosition::new(4096));
        assert_eq!(p.align_up(), p, "an aligned position stays");
        assert!(LogPosition::ZERO < start && start < LogPosition::MAX);
        assert_eq!(end.to_string(), "@4200");
        assert_eq!(std::mem::size_of::<LogPosition>(), std::mem::size_of::<u64>());
    }

    #[test]
    fn queue_offsets_add_record_counts_and_count_records_between() {
        let first = QueueOffset::new(10);
        let next = first + 5;
        assert_eq!(next, QueueOffset::new(15));
        assert_eq!(next - first, 5);
        assert!(QueueOffset::ZERO < first);
        assert_eq!(next.to_string(), "15", "displayed as on the wire");
        assert_eq!(std::mem::size_of::<QueueOffset>(), std::mem::size_of::<u64>());
    }

    #[test]
    fn ids_display_as_their_numbers_and_keep_formatting_widths() {
        let key = QueueKey::new(TopicId::new(7), QueueId::new(3));
        assert_eq!(key.to_string(), "topic#7/q3");
        // File names pad ids: a newtype must format exactly like the number it wraps.
        assert_eq!(format!("{:010}", key.topic_id), format!("{:010}", 7u32));
        assert_eq!(format!("{:>4}", QueueOffset::new(5)), "   5");
        assert_eq!((key.topic_id.get(), key.queue_id.get()), (7, 3));
        assert_eq!(std::mem::size_of::<QueueKey>(), 2 * std::mem::size_of::<u32>());
    }
}
