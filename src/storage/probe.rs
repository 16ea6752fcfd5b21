//! What one commit log counts about itself for the metrics endpoint (Redpanda calls this a
//! probe): group commits, fdatasync latency and waits for a free write chunk.
//!
//! Owned by its [`super::CommitLog`], on the log's shard only: plain numbers in a `RefCell`,
//! no atomics and no lock, so counting costs an add on the write path. The shard copies them
//! (with the chunk and index caches' hit counts, which those caches keep themselves) into a
//! [`LogMetrics`] when the exporter asks; see `src/metrics/`.

use crate::metrics::LatencyHistogram;

/// The log's own counters, updated where the work happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogProbe {
    /// Group commits completed (each made everything appended before it durable).
    pub flushes: u64,
    /// Time of each segment fdatasync; its count is the number of fdatasyncs.
    pub fsync_latency: LatencyHistogram,
    /// Appends that found no free chunk in the pool and had to wait for a write to complete.
    pub chunk_pool_waits: u64,
    /// Appends that waited because the queue index's unwritten entries were at their bound.
    pub index_room_waits: u64,
    /// Time of each queue index checkpoint (write-back, fdatasync of every written index
    /// file, the checkpoint file).
    pub index_checkpoint_latency: LatencyHistogram,
    /// Bytes read from disk ahead of catching-up queues' fetches (`prefetch_bytes`).
    pub prefetch_bytes: u64,
    /// Batch bytes fetches took from those reads (the rest were evicted or are still kept).
    pub prefetch_served_bytes: u64,
    /// Bytes multi-queue reads (FETCH_MULTI) read from disk into blocks of the log.
    pub multi_read_bytes: u64,
    /// Batch bytes multi-queue reads served from those blocks.
    pub multi_read_served_bytes: u64,
    /// Segments retention deleted because their newest batch was older than
    /// `retention_hours`.
    pub retention_expired_segments: u64,
    /// Segments retention deleted younger than that, because the filesystem was fuller than
    /// `disk_max_used_ratio`: what consumers had not read of them is lost to them.
    pub retention_disk_segments: u64,
    /// At the last retention run: segments its policy chose that a pin kept (held scheduled
    /// messages, undecided transactions, the committed offsets' last snapshot).
    pub retention_pinned_segments: u64,
}

/// A copy of a log's counters and its caches' hit counts, `Send` for the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogMetrics {
    pub probe: LogProbe,
    pub chunk_cache_hits: u64,
    pub chunk_cache_misses: u64,
    pub index_cache_hits: u64,
    pub index_cache_misses: u64,
    /// Segment files of the log, the one being written included.
    pub segments: u64,
}
