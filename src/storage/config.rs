//! Storage configuration: every knob with its default and its meaning.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// When a produce is acknowledged (RocketMQ's flushDiskType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushMode {
    /// SYNC_FLUSH: acknowledge after the fdatasync that covers the batch completed.
    Sync,
    /// ASYNC_FLUSH: acknowledge once appended in memory; flush every `flush_interval_ms` or
    /// `flush_bytes`. A crash can lose up to that much acknowledged data.
    Async,
}

/// How segment files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoMode {
    /// O_DIRECT through io_uring: no page cache, the broker's own chunk cache serves reads.
    Direct,
    /// Page cache + fdatasync, for filesystems without O_DIRECT (tmpfs, some network FS) or
    /// users who prefer the OS cache. Costs one extra copy per write.
    Buffered,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory of this shard's commit log (segments, index files). Created if missing.
    pub dir: PathBuf,
    /// Size of one segment file; a multiple of 4096. Default 1 GiB.
    pub segment_size_bytes: u64,
    /// Largest batch accepted. Default 4 MiB (RocketMQ's maxMessageSize). It limits new
    /// appends; batches the log stored under a larger limit stay readable
    /// ([`StorageConfig::stored_batch_limit`]).
    pub max_batch_bytes: usize,
    pub flush_mode: FlushMode,
    pub io_mode: IoMode,
    /// SYNC_FLUSH: longest wait for durability before replying FLUSH_DISK_TIMEOUT. Default 5000.
    pub sync_flush_timeout_ms: u64,
    /// ASYNC_FLUSH: flush at least this often. Default 500 (RocketMQ's flushIntervalCommitLog).
    pub flush_interval_ms: u64,
    /// ASYNC_FLUSH: flush as soon as this many bytes are not yet durable. Default 16 MiB.
    pub flush_bytes: u64,
    /// Size of one write chunk (a DMA buffer), a multiple of 4096. Default 1 MiB.
    pub chunk_size_bytes: usize,
    /// Chunks that may be filling or in flight at once: the bound on not-yet-written bytes.
    /// Appends wait (backpressure) when all are busy. Default 32.
    pub chunk_pool_chunks: usize,
    /// Bytes of recently written chunks kept in memory for reads, each chunk counted at its
    /// whole `chunk_size_bytes` (a chunk written before it filled, as every sync-flush group
    /// commit does, holds fewer bytes but all of its memory). Default 256 MiB.
    pub cache_bytes: usize,
    /// Cold reads fetch this many bytes past what a request needs and keep them (in a few
    /// bounded slots) for the next sequential read. Default 1 MiB.
    pub read_ahead_bytes: usize,
    /// A consumer whose fetch was read from disk (it is catching up, behind the chunk cache)
    /// gets its queue's next fetch read ahead while it takes this one, and the fetch after it
    /// when the bound has room to spare, so the disk keeps working between its fetches. Prefetched bytes (read and in flight) of all queues stay
    /// within this bound; the oldest unused ones go first. A prefetch starts only while the
    /// disk reads in flight, consumers' fetches' and prefetches' together, stay within it too:
    /// consumers whose own fetches keep that much read at once (large fetches, many queues)
    /// keep the disk busy without it. 0 turns prefetching off. Default 16 MiB.
    pub prefetch_bytes: usize,
    /// Multi-queue reads (FETCH_MULTI) read a cold log in 1 MiB blocks and keep the most
    /// recent ones, up to this many bytes, for the other consumers (and the other requests of
    /// a consumer) reading the same region for other queues: each block is read from disk
    /// once while kept. Size it to the log regions such readers are apart: each request spans
    /// up to twice its `max_bytes` of the log and reads as much ahead. Below what one
    /// request reads (about four times its `max_bytes`), blocks may leave before their request
    /// takes them, and its batches are then read one by one (0: always). Default 64 MiB.
    pub multi_read_keep_bytes: usize,
    /// Allocate each new segment's full size up front (fallocate). Writes then never extend
    /// the file, so io_uring completes them without handing them to kernel worker threads.
    /// Default true.
    pub preallocate: bool,
    /// Delete whole segments whose newest batch is older than this. Default 48.
    pub retention_hours: u64,
    /// Delete oldest segments while the data filesystem is fuller than this ratio, younger
    /// than `retention_hours` too. Default 0.85: RocketMQ's `diskSpaceCleanForciblyRatio`, the
    /// fill from which a RocketMQ broker deletes unexpired files (its `diskMaxUsedSpaceRatio`,
    /// 75, only deletes expired files early, which ringmq does at any fill:
    /// docs/rocketmq-compat.md). Counted as `df` does: used over used plus what the broker may
    /// still write.
    pub disk_max_used_ratio: f64,
    /// How often the log applies the retention policy on its own. It also does whenever it
    /// creates or rolls to a new segment (the disk holds one more). Default 60000.
    pub retention_check_interval_ms: u64,
    /// After the disk had no room for a new segment, appends that need one get DISK_FULL at
    /// once, and the log tries again at most this often (sooner when retention frees space).
    /// Default 1000.
    pub disk_full_retry_ms: u64,
    /// Memory the per-queue index may use: its block cache, per-queue counters and entries not
    /// yet written to the index files (the index itself lives on disk). At least 65536.
    /// Default 64 MiB.
    pub index_cache_bytes: usize,
    /// Entries (32 bytes each) per index file of a queue; a multiple of 128. Retention
    /// deletes a queue's index files whole. Default 65536 (2 MiB files).
    pub index_file_entries: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("data"),
            segment_size_bytes: 1 << 30,
            max_batch_bytes: 4 << 20,
            flush_mode: FlushMode::Async,
            io_mode: IoMode::Direct,
            sync_flush_timeout_ms: 5_000,
            flush_interval_ms: 500,
            flush_bytes: 16 << 20,
            chunk_size_bytes: 1 << 20,
            chunk_pool_chunks: 32,
            cache_bytes: 256 << 20,
            read_ahead_bytes: 1 << 20,
            prefetch_bytes: 16 << 20,
            multi_read_keep_bytes: 64 << 20,
            preallocate: true,
            retention_hours: 48,
            disk_max_used_ratio: 0.85,
            retention_check_interval_ms: 60_000,
            disk_full_retry_ms: 1_000,
            index_cache_bytes: 64 << 20,
            index_file_entries: 65_536,
        }
    }
}

/// Which limit an append keeps to ([`StorageConfig::batch_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchLimit {
    /// `max_batch_bytes`: a batch a client sent, or one the broker builds in pieces that fit.
    Produced,
    /// [`StorageConfig::movable_batch_limit`]: a message the broker accepted earlier, under
    /// the limit of its time, moved to its queue now (lowering `max_batch_bytes` must not
    /// strand what was accepted under the old one), or a record of the broker's own that
    /// cannot be split (a scheduled messages' wheel checkpoint).
    Moved,
}

impl StorageConfig {
    /// The largest batch a segment spanning `segment_len` bytes ([`Segment::capacity`]) can
    /// hold: a batch never spans segments, and this configuration may have lowered
    /// `max_batch_bytes` and `segment_size_bytes` since the batch was written. Recovery, scans
    /// and readers of stored batches accept up to this; `max_batch_bytes` limits only what is
    /// appended now. A stored batch over `max_batch_bytes` is read whole only after its
    /// header's stamp CRC verified, so a damaged length field costs no larger read than before.
    ///
    /// [`Segment::capacity`]: crate::storage::segment::Segment::capacity
    pub fn stored_batch_limit(&self, segment_len: u64) -> usize {
        let whole = usize::try_from(segment_len).unwrap_or(usize::MAX);
        self.max_batch_bytes.max(whole)
    }

    /// The largest batch the log appends when it moves a message it already accepted (a
    /// scheduled message's delivery, a transaction's commit) or a replica copies one: half of
    /// today's segment size (what an earlier configuration with segments this size may have
    /// admitted: it kept `max_batch_bytes` under that, validated), within what the write pool
    /// can always take at once (all its chunks but one). At least `max_batch_bytes` (the pool
    /// holds two of those and a chunk, validated).
    pub fn movable_batch_limit(&self) -> usize {
        let pool = self.chunk_pool_chunks.saturating_sub(1).saturating_mul(self.chunk_size_bytes);
        let half = usize::try_from(self.segment_size_bytes / 2).unwrap_or(usize::MAX);
        half.min(pool).max(self.max_batch_bytes)
    }

    /// The limit an append of `kind` keeps to.
    pub fn batch_limit(&self, kind: BatchLimit) -> usize {
        match kind {
            BatchLimit::Produced => self.max_batch_bytes,
            BatchLimit::Moved => self.movable_batch_limit(),
        }
    }

    /// Whether a stored batch whose length field says `length` (`header`: at least its
    /// header's bytes) may be read whole from a segment of `segment_len` bytes: within
    /// [`Self::stored_batch_limit`], and past `max_batch_bytes` only with a stamp that verifies.
    pub fn frames_stored_batch(&self, length: usize, header: &[u8], segment_len: u64) -> bool {
        (crate::format::HEADER_LEN..=self.stored_batch_limit(segment_len)).contains(&length)
            && (length <= self.max_batch_bytes || crate::format::batch::stamp_verifies(header))
    }

    pub fn sync_flush_timeout(&self) -> Duration {
        Duration::from_millis(self.sync_flush_timeout_ms)
    }
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(1))
    }
    pub fn disk_full_retry(&self) -> Duration {
        Duration::from_millis(self.disk_full_retry_ms.max(1))
    }

    /// Checks the knobs against each other; the message names the knob to fix.
    pub fn validate(&self) -> Result<(), String> {
        const ALIGN: u64 = 4096;
        if self.segment_size_bytes % ALIGN != 0 || self.segment_size_bytes < 64 * 1024 {
            return Err(format!(
                "segment_size_bytes = {} must be a multiple of 4096 and at least 65536",
                self.segment_size_bytes
            ));
        }
        if self.segment_size_bytes > u32::MAX as u64 {
            return Err("segment_size_bytes must be below 4 GiB".into());
        }
        if self.chunk_size_bytes as u64 % ALIGN != 0 || self.chunk_size_bytes == 0 {
            return Err(format!(
                "chunk_size_bytes = {} must be a positive multiple of 4096",
                self.chunk_size_bytes
            ));
        }
        if self.chunk_pool_chunks < 2 {
            return Err("chunk_pool_chunks must be at least 2".into());
        }
        if self.write_pool_bytes() < 2 * self.max_batch_bytes + self.chunk_size_bytes {
            return Err(format!(
                "chunk_size_bytes * chunk_pool_chunks = {} must hold at least two max_batch_bytes \
                 batches plus a chunk ({})",
                self.write_pool_bytes(),
                2 * self.max_batch_bytes + self.chunk_size_bytes
            ));
        }
        let min_batch = crate::format::HEADER_LEN + 32;
        if self.max_batch_bytes < min_batch {
            return Err(format!("max_batch_bytes must be at least {min_batch}"));
        }
        if self.max_batch_bytes as u64 + 2 * crate::format::HEADER_LEN as u64
            > self.segment_size_bytes / 2
        {
            return Err(format!(
                "max_batch_bytes = {} must be under half of segment_size_bytes = {}",
                self.max_batch_bytes, self.segment_size_bytes
            ));
        }
        if !(self.disk_max_used_ratio > 0.0 && self.disk_max_used_ratio <= 1.0) {
            return Err("disk_max_used_ratio must be in (0, 1]".into());
        }
        if self.retention_hours == 0 {
            return Err("retention_hours must be at least 1".into());
        }
        if self.index_cache_bytes < 64 * 1024 {
            return Err(format!(
                "index_cache_bytes = {} must be at least 65536",
                self.index_cache_bytes
            ));
        }
        if self.index_file_entries == 0 || self.index_file_entries % 128 != 0 {
            return Err(format!(
                "index_file_entries = {} must be a positive multiple of 128",
                self.index_file_entries
            ));
        }
        Ok(())
    }

    /// Bytes of chunk memory the write path may hold at once.
    pub fn write_pool_bytes(&self) -> usize {
        self.chunk_size_bytes * self.chunk_pool_chunks
    }

    /// DMA memory one log uses at most: the write pool, the chunk cache, the read-ahead slots,
    /// prefetched fetches, multi-queue reads' blocks and room for reads in flight. Size the shard executor's `io_memory` with this: buffers
    /// then come from glommio's pre-allocated arena and are reused, instead of fresh heap
    /// memory that page-faults on every chunk (measured: the largest cost on the append path).
    pub fn dma_memory_bytes(&self) -> usize {
        let read_ahead = 4 * (self.read_ahead_bytes + 2 * self.max_batch_bytes);
        let reads_in_flight = 16 << 20;
        self.write_pool_bytes()
            + self.cache_bytes
            + read_ahead
            + self.prefetch_bytes
            + self.multi_read_keep_bytes
            + reads_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_knobs_are_validated() {
        StorageConfig::default().validate().unwrap();
        let small = StorageConfig { index_cache_bytes: 1000, ..StorageConfig::default() };
        assert!(small.validate().unwrap_err().contains("index_cache_bytes"));
        for entries in [0, 100, 129] {
            let c = StorageConfig { index_file_entries: entries, ..StorageConfig::default() };
            assert!(c.validate().unwrap_err().contains("index_file_entries"));
        }
        let c = StorageConfig { index_file_entries: 256, ..StorageConfig::default() };
        c.validate().unwrap();
    }
}
