//! Bounded LRU cache of index blocks (4 KiB each, 128 entries of one queue).
//!
//! Owned by one shard's [`super::index_store::IndexStore`]. Blocks hold exactly what the
//! index file holds (they enter after a read from the file or after a write to it), so an
//! evicted block is simply read again. The capacity is not fixed: the store gives the cache
//! whatever part of `index_cache_bytes` its other memory (per-queue counters, entries not yet
//! written) leaves, and shrinks it as that grows, so the index as a whole stays in budget.
//!
//! Pure bookkeeping, no I/O: tested without files.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::index::ENTRY_BYTES;
use super::types::QueueKey;

/// Bytes of one index block: the unit of index I/O (direct-I/O aligned).
pub const BLOCK_BYTES: usize = 4096;
/// Entries in one block.
pub const ENTRIES_PER_BLOCK: u64 = (BLOCK_BYTES / ENTRY_BYTES) as u64;
/// Memory one cached block costs besides its bytes (map slot, LRU slot, Rc header).
const BLOCK_OVERHEAD_BYTES: usize = 96;

/// A block: queue and block number (entry number / [`ENTRIES_PER_BLOCK`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub queue: QueueKey,
    pub block: u64,
}

pub type Block = Rc<Vec<u8>>;

pub struct IndexCache {
    blocks: HashMap<BlockKey, (Block, u64)>,
    /// Last-use tick -> block, oldest first.
    lru: BTreeMap<u64, BlockKey>,
    tick: u64,
    capacity_bytes: usize,
    hits: u64,
    misses: u64,
}

impl IndexCache {
    pub fn new(capacity_bytes: usize) -> Self {
        IndexCache {
            blocks: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            capacity_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// Memory one cached block costs.
    pub const fn block_cost_bytes() -> usize {
        BLOCK_BYTES + BLOCK_OVERHEAD_BYTES
    }

    pub fn bytes(&self) -> usize {
        self.blocks.len() * Self::block_cost_bytes()
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// (hits, misses) of `get`.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    pub fn get(&mut self, key: BlockKey) -> Option<Block> {
        let Some((block, used)) = self.blocks.get_mut(&key) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        self.lru.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.lru.insert(self.tick, key);
        Some(block.clone())
    }

    /// Applies `f` to the cached copy of `key`, if the cache holds one (a write-back adding
    /// entries to a block). Neither a hit nor a use: the block keeps its place. A reader still
    /// holding the block keeps its own copy as it was.
    pub fn update(&mut self, key: BlockKey, f: impl FnOnce(&mut [u8])) {
        if let Some((block, _)) = self.blocks.get_mut(&key) {
            f(Rc::make_mut(block).as_mut_slice());
        }
    }

    /// Adds or replaces a block, then evicts the least recently used ones over capacity.
    pub fn insert(&mut self, key: BlockKey, block: Block) {
        assert_eq!(block.len(), BLOCK_BYTES, "index blocks are whole");
        self.tick += 1;
        if let Some((_, used)) = self.blocks.insert(key, (block, self.tick)) {
            self.lru.remove(&used);
        }
        self.lru.insert(self.tick, key);
        self.evict();
    }

    /// Sets the capacity and evicts down to it.
    pub fn set_capacity(&mut self, capacity_bytes: usize) {
        self.capacity_bytes = capacity_bytes;
        self.evict();
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
        self.lru.clear();
    }

    fn evict(&mut self) {
        while self.bytes() > self.capacity_bytes {
            let Some((_, key)) = self.lru.pop_first() else { return };
            self.blocks.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::types::{QueueId, TopicId};

    fn key(q: u32, block: u64) -> BlockKey {
        BlockKey { queue: QueueKey::new(TopicId::new(1), QueueId::new(q)), block }
    }

    fn block(fill: u8) -> Block {
        Rc::new(vec![fill; BLOCK_BYTES])
    }

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let mut c = IndexCache::new(2 * IndexCache::block_cost_bytes());
        c.insert(key(0, 0), block(1));
        c.insert(key(0, 1), block(2));
        assert!(c.get(key(0, 0)).is_some()); // now block 1 is the oldest
        c.insert(key(1, 0), block(3));
        assert_eq!(c.len(), 2);
        assert!(c.get(key(0, 1)).is_none());
        assert_eq!(c.get(key(0, 0)).unwrap()[0], 1);
        assert!(c.bytes() <= 2 * IndexCache::block_cost_bytes());
        c.insert(key(0, 0), block(9)); // replacing does not grow
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(key(0, 0)).unwrap()[0], 9);
        c.set_capacity(0);
        assert!(c.is_empty());
        assert_eq!(c.stats(), (3, 1));
    }
}
