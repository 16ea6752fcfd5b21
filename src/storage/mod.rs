//! The per-shard commit log.
//!
//! Each shard (one pinned core) owns one append-only log that every queue on the shard writes
//! into, like RocketMQ's CommitLog but per core: disk writes stay sequential however many
//! queues a shard has. The log is a sequence of segment files ([`segment`]) written with
//! O_DIRECT from DMA chunks ([`commit_log`] write path), made durable by group commit (one
//! fdatasync covers every append issued before it), indexed per queue ([`index`]), and
//! recovered on open by verifying checksums past the last index checkpoint.
//!
//! Files, one concept each:
//! - [`file`](mod@file): the storage seam (`LogDir`/`LogFile`); [`dma_dir`] is the real one (glommio),
//!   [`sim_dir`] the fault-injecting one for tests.
//! - [`commit_log`]: the log itself, a directory with one file per concept: the facade,
//!   appender, flusher (group commit), segment set, reader, read-ahead, recovery, index
//!   writer and retention run.
//! - [`floors`]: the queue floors file codec (pure).
//! - [`write_tracker`]: contiguous-completion tracking of out-of-order writes.
//! - [`chunk_cache`]: bounded cache of recently written chunks for reads.
//! - [`index`]: per-queue index entries, counters and the checkpoint codec (pure).
//! - [`index_cache`]: bounded LRU cache of index blocks.
//! - [`index_store`]: the on-disk per-queue index files, write-back, checkpoints, lookups.
//! - [`key_index`]: the per-shard index of message keys (hash slots + linked entries).
//! - [`next_segment`]: the next segment, created ahead of need; the disk-full back-off.
//! - [`retention`]: which segments to delete (pure policy).
//! - [`segment`]: segment naming and per-segment state.
//! - [`config`], [`error`], [`types`].
//!
//! Everything here runs on one shard's executor thread; nothing is `Send`.

pub mod chunk_cache;
pub mod commit_log;
pub mod config;
pub mod dma_dir;
pub mod error;
pub mod file;
pub mod floors;
pub mod index;
pub mod index_cache;
pub mod index_store;
pub mod key_index;
pub mod next_segment;
pub mod probe;
pub mod retention;
pub mod segment;
pub mod sim_dir;
pub mod types;
pub mod write_tracker;

pub use commit_log::CommitLog;
pub use config::{BatchLimit, FlushMode, IoMode, StorageConfig};
pub use error::StorageError;
pub use file::ReadBuf;
pub use types::{
    AppendStatus, Appended, LogPosition, QueueId, QueueKey, QueueOffset, QueueOffsets, ReadBatches,
    TopicId,
};
