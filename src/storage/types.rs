//! Newtypes for things that must not be mixed.

use std::fmt;

/// A byte position in a shard's commit log, global across its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition(pub u64);

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

/// A queue within a shard's commit log: the broker's stable topic id and the queue number.
/// Topic ids are assigned once at topic creation and never reused, so data of a deleted topic
/// can never be mistaken for a new topic of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    pub topic_id: u32,
    pub queue_id: u32,
}

impl QueueKey {
    pub fn new(topic_id: u32, queue_id: u32) -> Self {
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
    pub min: u64,
    pub next: u64,
}

/// Where an appended batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub queue: QueueKey,
    /// Queue offset of the batch's first record.
    pub base_offset: u64,
    pub record_count: u32,
    pub store_timestamp_ms: i64,
    /// Log position of the batch and one past its end.
    pub position: LogPosition,
    pub end: LogPosition,
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
    pub next_offset: u64,
    /// The queue's readable offsets at the time of the read.
    pub offsets: QueueOffsets,
}
