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
