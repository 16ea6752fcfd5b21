//! The broker's seam to a shard's log: the five operations a shard needs from storage.
//!
//! Implemented by `Rc<`[`crate::storage::CommitLog`]`>` (one per shard, on that shard's thread):
//! on real files in production, on the storage's simulated directory in broker unit tests, so
//! request handling is tested without disks but against the real log. Keeping the seam this
//! narrow keeps storage types that the broker does not need out of it.

use crate::storage::{QueueKey, QueueOffsets, ReadBuf, StorageError};

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub record_count: u32,
    pub store_timestamp_ms: i64,
    /// SYNC_FLUSH only: the flush covering the batch did not finish within the configured
    /// timeout (the data is stored and will be flushed).
    pub flush_timed_out: bool,
}

/// One shard's log. `!Send`: used only on the shard's thread, shared as `Rc`.
#[allow(async_fn_in_trait)]
pub trait ShardLog: 'static {
    /// Validates (CRC), stamps and stores one batch; resolves per the flush mode. Data is
    /// visible to [`ShardLog::read`] once this returns.
    async fn append(&self, queue: QueueKey, batch: &[u8]) -> Result<AppendOutcome, StorageError>;
    /// Whole stored batches from the one containing `offset`, about `max_bytes` (at least one
    /// batch when any exists). Empty at the end; `OffsetOutOfRange` outside `[min, next]`.
    async fn read(
        &self,
        queue: QueueKey,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<ReadBuf>, StorageError>;
    fn offsets(&self, queue: QueueKey) -> QueueOffsets;
    /// First offset whose batch was stored at or after `timestamp_ms`, else `next`. Async: the
    /// index it searches lives on disk.
    async fn offset_for_timestamp(
        &self,
        queue: QueueKey,
        timestamp_ms: i64,
    ) -> Result<u64, StorageError>;
    async fn flush(&self) -> Result<(), StorageError>;
    async fn close(&self) -> Result<(), StorageError>;
}
