//! What one shard may hold in memory, by owner: the bounds the config implies, for the
//! start-up log line, `ringmq tune` and the docs.

use super::Config;

/// The DMA arena per shard when `io_memory_bytes = 0`: the hot write chunks fit, and two
/// shards still register theirs under a common 8 MiB locked-memory limit.
pub const AUTO_IO_MEMORY_BYTES: usize = 4 << 20;

/// The read buffer each open connection holds (it grows to one frame while a larger frame
/// arrives and shrinks back afterwards).
pub const CONNECTION_READ_BUFFER_BYTES: usize = 64 * 1024;

/// One shard's memory, by owner. Only the arena is resident from the start; the rest grows
/// with use up to these bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBudget {
    pub io_arena_bytes: usize,
    pub write_pool_bytes: usize,
    pub cache_bytes: usize,
    /// The queue index's block cache and entries not yet written (`index_cache_bytes`).
    pub index_bytes: usize,
    /// The key index's active file, held whole in memory, and the keys its reader took ahead
    /// of the log's durable end (`key_index`).
    pub key_index_bytes: usize,
    pub read_ahead_bytes: usize,
    /// Catching-up queues' next fetches, read ahead (`prefetch_bytes`).
    pub prefetch_bytes: usize,
    /// Multi-queue reads' blocks of the log (`multi_read_keep_bytes`).
    pub multi_read_bytes: usize,
    /// Every allowed connection's base read buffer.
    pub connection_buffers_bytes: usize,
    /// Free read buffers kept for the shard's connections to reuse (`read_buffer_pool_bytes`).
    pub read_buffer_pool_bytes: usize,
    /// A connection receiving a large frame holds up to this much while it arrives.
    pub frame_bytes: usize,
    /// A connection's requests in flight and unwritten responses hold up to this much
    /// (`max_in_flight_bytes_per_connection` plus one request over it).
    pub in_flight_bytes: usize,
}

impl MemoryBudget {
    /// The largest the shard grows to with every connection open and idle.
    pub fn bound_bytes(&self) -> usize {
        self.io_arena_bytes
            + self.write_pool_bytes
            + self.cache_bytes
            + self.index_bytes
            + self.key_index_bytes
            + self.read_ahead_bytes
            + self.prefetch_bytes
            + self.multi_read_bytes
            + self.connection_buffers_bytes
            + self.read_buffer_pool_bytes
    }
}

impl std::fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: usize| b.div_ceil(1 << 20);
        write!(
            f,
            "memory per shard: io arena {} MiB (resident from start); up to {} MiB write \
             pool, {} MiB chunk cache, {} MiB queue index, {} MiB key index, {} MiB read-ahead, \
             {} MiB prefetch, {} MiB multi-queue reads, {} MiB connection read buffers \
             (max_connections_per_shard x {} KiB), {} MiB of free read buffers, each filled \
             only as used: at most {} MiB, \
             plus frames being received (up to {} MiB each) and requests in flight (up to {} \
             MiB per connection)",
            mib(self.io_arena_bytes),
            mib(self.write_pool_bytes),
            mib(self.cache_bytes),
            mib(self.index_bytes),
            mib(self.key_index_bytes),
            mib(self.read_ahead_bytes),
            mib(self.prefetch_bytes),
            mib(self.multi_read_bytes),
            mib(self.connection_buffers_bytes),
            CONNECTION_READ_BUFFER_BYTES / 1024,
            mib(self.read_buffer_pool_bytes),
            mib(self.bound_bytes()),
            mib(self.frame_bytes),
            mib(self.in_flight_bytes),
        )
    }
}

impl Config {
    /// The DMA arena each shard executor gets (see `BrokerConfig::io_memory_bytes`).
    pub fn shard_io_memory_bytes(&self) -> usize {
        match self.broker.io_memory_bytes {
            0 => AUTO_IO_MEMORY_BYTES,
            n => n,
        }
    }

    /// What one shard may hold in memory, by owner, for the start-up log line and the docs.
    pub fn shard_memory_budget(&self) -> MemoryBudget {
        let (b, s) = (&self.broker, &self.storage);
        MemoryBudget {
            io_arena_bytes: self.shard_io_memory_bytes(),
            write_pool_bytes: s.write_pool_bytes(),
            cache_bytes: s.cache_bytes,
            index_bytes: s.index_cache_bytes,
            key_index_bytes: if self.key_index.enabled {
                self.key_index.settings().geometry.file_bytes()
                    + crate::storage::key_index::staged::max_bytes(
                        self.key_index.entries_per_file as usize,
                    )
            } else {
                0
            },
            read_ahead_bytes: 4 * (s.read_ahead_bytes + 2 * s.max_batch_bytes),
            prefetch_bytes: s.prefetch_bytes,
            multi_read_bytes: s.multi_read_keep_bytes,
            connection_buffers_bytes: b.max_connections_per_shard * CONNECTION_READ_BUFFER_BYTES,
            read_buffer_pool_bytes: b.read_buffer_pool_bytes,
            frame_bytes: b.max_frame_bytes,
            in_flight_bytes: b.max_in_flight_bytes_per_connection + b.max_frame_bytes,
        }
    }
}
