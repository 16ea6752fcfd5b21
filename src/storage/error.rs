//! Storage errors: each says what happened and, where the user can act, what to do.

use std::io;
use std::path::PathBuf;

use crate::format::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The batch bytes are not a valid batch (bad CRC, truncated, ...). Nothing was written.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] FormatError),
    #[error("batch of {size} bytes exceeds max_batch_bytes = {max}")]
    BatchTooLarge { size: usize, max: usize },
    /// A read asked for an offset the queue does not hold.
    #[error("offset {requested} is out of range for {queue}: it holds [{min}, {next})")]
    OffsetOutOfRange {
        queue: super::QueueKey,
        requested: super::QueueOffset,
        min: super::QueueOffset,
        next: super::QueueOffset,
    },
    /// A write or fsync failed earlier: the log stopped taking writes because the state of
    /// unsynced pages is unknown. Restart the shard to recover from the last durable state.
    #[error("commit log in {dir} stopped after an I/O failure ({reason}); restart to recover")]
    Failed { dir: PathBuf, reason: String },
    #[error("commit log is closed")]
    Closed,
    /// The filesystem has no room for the next segment (ENOSPC/EDQUOT while creating or
    /// preallocating it). Nothing was written and nothing is lost: reads and retention go on,
    /// and appends resume by themselves once space is freed (the log retries at most every
    /// `disk_full_retry_ms`).
    #[error(
        "disk full: {dir} has {free_bytes} bytes of free space, a new segment needs \
         {needed_bytes} ({reason}); writes resume once space is freed (retention, or delete \
         files)"
    )]
    DiskFull { dir: PathBuf, needed_bytes: u64, free_bytes: u64, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A stored batch failed its checksum on read or during recovery in a place recovery cannot
    /// truncate (the middle of sealed data).
    #[error("corrupt data in {file} at byte {offset}: {reason}")]
    Corrupt { file: String, offset: u64, reason: String },
    /// The first batch a read asked for failed its checksum or does not parse: it covers the
    /// queue's offsets `[first_offset, next_offset)`. Nothing else is wrong with the log; a
    /// reader may skip the batch by reading from `next_offset`.
    #[error(
        "corrupt batch at offsets [{first_offset}, {next_offset}) of {queue} ({file} at byte \
         {offset}): {reason}; read from offset {next_offset} to skip it"
    )]
    CorruptBatch {
        queue: super::QueueKey,
        first_offset: super::QueueOffset,
        next_offset: super::QueueOffset,
        file: String,
        offset: u64,
        reason: String,
    },
    /// A replica asked for the log's batches from `position`, but no batch starts there
    /// (no valid batch header: the position is inside a batch, or past what was written at
    /// it). The requester's position is wrong; nothing is wrong with the log.
    #[error("position {position} is not a batch boundary of this log: {reason}")]
    NotABatchBoundary { position: u64, reason: String },
    /// A replica asked for the log's batches from `position`, below the oldest position the
    /// log still holds (`oldest`, its oldest segment's base: retention deleted the segments
    /// before it); the log ends at `end`. Nothing is wrong with the log: the requester fell
    /// behind its retention and cannot continue from there.
    #[error(
        "position {position} is below this log's oldest retained position {oldest} (retention \
         deleted the segments before it; the log holds [{oldest}, {end}))"
    )]
    BelowOldest { position: u64, oldest: u64, end: u64 },
    /// A replica was handed a master's batch that does not continue its log: it lies
    /// elsewhere than where this log's next batch (or segment end) goes, or starts its queue
    /// at another offset than this log's next, or does not fit the segment where the
    /// master's did. Nothing was written; nothing is wrong with either log's bytes: the
    /// replica's position and the master's stream disagree (the reason says how).
    #[error(
        "the master's batch at position {position} does not continue this replica's log: {reason}"
    )]
    ReplicaMismatch { position: u64, reason: String },
    /// The environment cannot run the log as configured; the message says how to fix it.
    #[error("{0}")]
    Setup(String),
    #[error("invalid storage config: {0}")]
    Config(String),
}

impl StorageError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io { context: context.into(), source }
    }
}

/// Whether an I/O error means the filesystem (or the user's quota) is out of space.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
