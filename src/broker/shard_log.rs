//! The broker's seam to a shard's log: the operations a shard needs from storage.
//!
//! Implemented by `Rc<`[`crate::storage::CommitLog`]`>` (one per shard, on that shard's thread):
//! on real files in production, on the storage's simulated directory in broker unit tests, so
//! request handling is tested without disks but against the real log. Keeping the seam this
//! narrow keeps storage types that the broker does not need out of it.

use crate::replication::epochs::EpochHistory;
use crate::storage::commit_log::{Followed, FollowedBatch, PositionedBatch, Scanned, TailScan};
use crate::storage::probe::LogMetrics;
use crate::storage::{BatchLimit, QueueKey, QueueOffsets, ReadBuf, StorageError};

/// A queue's readable offsets `[min, next)` as the broker and the wire count them: plain
/// numbers. Storage types them ([`crate::storage::QueueOffset`]); the conversion happens here,
/// at the seam, so the broker keeps `u64` until it adopts the newtype too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffsetRange {
    pub min: u64,
    pub next: u64,
}

impl From<QueueOffsets> for OffsetRange {
    fn from(o: QueueOffsets) -> Self {
        OffsetRange { min: o.min.get(), next: o.next.get() }
    }
}

/// Where an append's batch went, known as soon as it is copied into the log
/// ([`ShardLog::append_then`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Queue offset of the batch's first record.
    pub base_offset: u64,
    /// Log position of the batch.
    pub position: u64,
    /// No record of the batch has a key or properties (found while validating it).
    pub bare: bool,
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub record_count: u32,
    pub store_timestamp_ms: i64,
    /// SYNC_FLUSH only: the flush covering the batch did not finish within the configured
    /// timeout (the data is stored and will be flushed).
    pub flush_timed_out: bool,
    /// Log position one past the batch: it is readable once [`ShardLog::visible_end`] reaches
    /// this (at once in async mode; when the covering flush completes in sync mode, which
    /// may be after this append returned with `flush_timed_out`).
    pub end: u64,
}

/// One shard's log. `!Send`: used only on the shard's thread, shared as `Rc`.
#[allow(async_fn_in_trait)]
pub trait ShardLog: 'static {
    /// Validates (CRC, record framing), stamps and stores one batch; resolves per the flush
    /// mode. `batch` is dropped as soon as its bytes are copied into the log, before waiting
    /// for durability, so a connection buffer holding it can be reused early. The data is
    /// visible to [`ShardLog::read`] once this returns, unless `flush_timed_out`: then once
    /// the flush completes (see [`ShardLog::wait_visible`]).
    async fn append<B: AsRef<[u8]>>(
        &self,
        queue: QueueKey,
        batch: B,
    ) -> Result<AppendOutcome, StorageError> {
        Ok(self.append_then(queue, batch, BatchLimit::Produced, |_| ()).await?.1)
    }
    /// [`ShardLog::append`] of a batch kept to `limit`, calling `copied` with where the batch
    /// went as soon as it is copied into the log (and `batch` dropped), before the durability
    /// wait: in the order of the log, since no other append can come between the copy and the
    /// call.
    async fn append_then<B: AsRef<[u8]>, T>(
        &self,
        queue: QueueKey,
        batch: B,
        limit: BatchLimit,
        copied: impl FnOnce(Copied) -> T,
    ) -> Result<(T, AppendOutcome), StorageError>;
    /// Whole stored batches from the one containing `offset`, about `max_bytes` (at least one
    /// batch when any exists). Empty at the end; `OffsetOutOfRange` outside `[min, next]`.
    async fn read(
        &self,
        queue: QueueKey,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<ReadBuf>, StorageError>;
    /// Several queues read together: about `max_bytes` of whole batches in all, taken in log
    /// order (at least one batch when any queue has one at its offset); one result per read,
    /// in its order. An I/O error fails the whole read.
    async fn read_many(
        &self,
        reads: &[(QueueKey, u64)],
        max_bytes: usize,
    ) -> Result<Vec<Result<Vec<ReadBuf>, StorageError>>, StorageError>;
    fn offsets(&self, queue: QueueKey) -> OffsetRange;
    /// First offset whose batch was stored at or after `timestamp_ms`, else `next`; never past
    /// the readable `next`. Async: the index it searches lives on disk.
    async fn offset_for_timestamp(
        &self,
        queue: QueueKey,
        timestamp_ms: i64,
    ) -> Result<u64, StorageError>;
    /// Keeps retention from deleting `queue`'s batches from offset `from` on (None: no pin);
    /// see [`crate::storage::CommitLog::pin_retention`].
    fn pin_retention(&self, queue: QueueKey, from: Option<u64>);
    /// [`ShardLog::pin_retention`] once the log is durable to position `durable_at`; see
    /// [`crate::storage::CommitLog::pin_retention_once_durable`].
    fn pin_retention_once_durable(&self, queue: QueueKey, from: Option<u64>, durable_at: u64);
    /// Pins `queue` from `from` unless it is pinned; see
    /// [`crate::storage::CommitLog::pin_retention_if_unpinned`].
    fn pin_retention_if_unpinned(&self, queue: QueueKey, from: u64);
    /// True once after a retention run that `queue`'s pin kept from deleting what its policy
    /// chose; see [`crate::storage::CommitLog::take_retention_held`].
    fn take_retention_held(&self, queue: QueueKey) -> bool;
    /// The log position up to which appended data is readable.
    fn visible_end(&self) -> u64;
    /// The newest store timestamp in the log (`i64::MIN` when empty): after a restart, about
    /// when the broker last ran.
    fn last_store_timestamp_ms(&self) -> i64;
    /// Reads the batches of the last `max_bytes` of the log stored at or after `since_ms` in
    /// log order, with one sequential read (see [`crate::storage::CommitLog::scan_tail`]).
    async fn scan_tail(
        &self,
        max_bytes: u64,
        since_ms: i64,
        each: impl FnMut(Scanned<'_>),
    ) -> Result<TailScan, StorageError>;
    /// Reports the written batches from log position `from` up to `up_to` in log order,
    /// reading about `max_bytes` (see [`crate::storage::CommitLog::follow`]): for indexes
    /// behind the log.
    async fn follow(
        &self,
        from: u64,
        max_bytes: u64,
        up_to: u64,
        each: impl FnMut(u64, &FollowedBatch<'_>),
    ) -> Result<Followed, StorageError>;
    /// The first log position the log still holds (retention removed what lies before).
    fn oldest_position(&self) -> u64;
    /// Resolves once everything before log position `end` is readable; an error when the log
    /// stopped first (then it never will be).
    async fn wait_visible(&self, end: u64) -> Result<(), StorageError>;
    /// An append's acknowledgement step for everything before log position `end` (see
    /// [`crate::storage::CommitLog::commit_through`]): true at once in async flush mode; in
    /// sync mode once it is synced, false if `sync_flush_timeout_ms` passed first.
    async fn commit_through(&self, end: u64) -> Result<bool, StorageError>;
    async fn flush(&self) -> Result<(), StorageError>;
    /// The log's counters (group commits, fsync latency, chunk-pool waits) and its caches'
    /// hit counts, for the metrics endpoint.
    fn metrics(&self) -> LogMetrics;
    async fn close(&self) -> Result<(), StorageError>;

    // Replication (`crate::replication`, `broker::replication`): positions, the master's
    // stream, the replica's appends, the read cap and the epoch file.

    /// Where the next append goes (everything appended ends here).
    fn append_end(&self) -> u64;
    /// Everything below this is written to its file (not necessarily synced).
    fn written_end(&self) -> u64;
    /// Everything below this is synced to disk.
    fn durable_end(&self) -> u64;
    /// Whole stored batches from position `from` up to `up_to`, about `max_bytes`; and where
    /// to continue (see [`crate::storage::CommitLog::read_batches_at`]).
    async fn read_batches_at(
        &self,
        from: u64,
        up_to: u64,
        max_bytes: usize,
    ) -> Result<(Vec<PositionedBatch>, u64), StorageError>;
    /// Appends a master's stored batch at its position; returns its queue (None for a
    /// segment-end marker). Durable after [`ShardLog::flush`].
    async fn append_replicated(
        &self,
        position: u64,
        batch: &[u8],
    ) -> Result<Option<QueueKey>, StorageError>;
    /// Reads see nothing at or past `cap` (None: no cap).
    fn set_read_cap(&self, cap: Option<u64>);
    /// The master epoch stamped into appended batches.
    fn set_epoch(&self, epoch: u32);
    /// The log's epoch history as its fsynced epoch file holds it, not cut to the log's end:
    /// it may name epochs whose data was lost in a crash, and a new master epoch must be
    /// above those too (else a replica that received data of a lost epoch would take the
    /// reused number for agreement). Cut it with [`EpochHistory::truncate_to`] before use.
    async fn load_epochs(&self) -> Result<EpochHistory, StorageError>;
    /// Makes `history` the durable epoch file.
    async fn save_epochs(&self, history: &EpochHistory) -> Result<(), StorageError>;
}
