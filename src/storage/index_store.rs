//! The on-disk per-queue index of one shard's log, read through a bounded cache.
//!
//! # What it owns
//! For every queue of the log: its [`QueueIndex`] counters and not-yet-written entries (in
//! memory), and its index files `<topic>-<queue>-<file>.qidx` in the log directory: file `f`
//! holds entries `[f * index_file_entries, (f + 1) * index_file_entries)`, 32 bytes each at
//! `(n % index_file_entries) * 32` (format in `docs/format.md` 3.3). Entries are fixed-size,
//! so entry `n` is found without any per-file table, and lookups by offset or time are binary
//! searches over entry numbers: O(log n) block reads, most of them cache hits.
//!
//! # Why one file set per queue
//! A per-shard index log would need a second per-queue structure to find a queue's entries.
//! Per-queue files (RocketMQ's ConsumeQueue layout) keep a queue's entries contiguous, so a
//! consumer reading a queue reads consecutive blocks and retention deletes whole old files.
//! The price is file handles (bounded: at most [`MAX_OPEN_INDEX_FILES`] open, fewer with a
//! small budget, least recently used closed first) and a small write per queue per write-back:
//! with thousands of queues, thousands of writes and opens, so a write-back works on
//! [`INDEX_WRITE_CONCURRENCY`] queues at once. A checkpoint makes them durable with one
//! filesystem sync (`syncfs`, [`IndexStore::sync`]), not an fdatasync per file.
//!
//! # Memory (`index_cache_bytes`)
//! Counted by [`IndexStore::memory_bytes`]: per-queue counters, pending entries, open file
//! handles, the dirty-file set and cached 4 KiB blocks. The block cache gets whatever the rest
//! leaves of the budget and shrinks as the rest grows. Pending entries are bounded: above a
//! quarter of the budget the log asks for a write-back, above half an append waits for one.
//!
//! # Writing behind the log
//! An entry is written only once its batch is durable ([`IndexStore::writeback`]): exactly the
//! new entries' bytes, at their place in the file (index files are page-cache files), and the
//! cached blocks holding them are updated. Written entries never change, so readers and the
//! writer never conflict on them. Index files are made durable only
//! by a checkpoint (one filesystem sync), which then records in `index.checkpoint` that every
//! batch below its position is indexed; a crash loses at most the entries past the last
//! checkpoint, and recovery rebuilds exactly those by scanning the log from the checkpoint
//! position.
//!
//! Runs on the shard that owns the log. Write-back, checkpoints and retention take `gate` so
//! that only one of them changes files at a time; reads never wait for it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::rc::Rc;

use rustc_hash::FxHashMap;

use super::file::{LogDir, LogFile};
use super::index::{IndexCheckpoint, IndexEntry, QueueCheckpoint, QueueIndex, ENTRY_BYTES};
use super::index_cache::{Block, BlockKey, IndexCache, BLOCK_BYTES, ENTRIES_PER_BLOCK};
use super::types::{LogPosition, QueueId, QueueKey, QueueOffset, QueueOffsets, TopicId};
use crate::runtime::{self, Semaphore};

pub const QUEUE_INDEX_SUFFIX: &str = ".qidx";
pub const CHECKPOINT_FILE: &str = "index.checkpoint";
/// Index files kept open at once at most (fewer with a small budget); more are reopened on use.
pub const MAX_OPEN_INDEX_FILES: usize = 64;
/// Queues a write-back writes at once (see [`IndexStore::writeback_live`]).
pub const INDEX_WRITE_CONCURRENCY: usize = 32;
/// Memory an open file handle costs, counted in the budget (fd, glommio state, map slots).
const OPEN_FILE_BYTES: usize = 512;

/// Name of index file `file` of `queue`.
pub fn index_file_name(queue: QueueKey, file: u64) -> String {
    let (topic, queue) = (queue.topic_id.get(), queue.queue_id.get());
    format!("{topic:010}-{queue:010}-{file:020}{QUEUE_INDEX_SUFFIX}")
}

/// Parses an index file name back into its queue and file number.
pub fn parse_index_file_name(name: &str) -> Option<(QueueKey, u64)> {
    let stem = name.strip_suffix(QUEUE_INDEX_SUFFIX)?;
    let mut parts = stem.split('-');
    let mut next = |digits: usize| {
        parts
            .next()
            .filter(|p| p.len() == digits && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u64>().ok())
    };
    let topic = u32::try_from(next(10)?).ok()?;
    let queue = u32::try_from(next(10)?).ok()?;
    let file = next(20)?;
    let key = QueueKey::new(TopicId::new(topic), QueueId::new(queue));
    parts.next().is_none().then_some((key, file))
}

/// Why a lookup failed.
#[derive(Debug)]
pub enum LookupError {
    /// The entry was dropped by retention meanwhile (or never existed).
    Gone,
    Io(io::Error),
    /// An index file lacks an entry it must hold.
    Corrupt {
        file: String,
        reason: String,
    },
}

impl From<io::Error> for LookupError {
    fn from(e: io::Error) -> Self {
        LookupError::Io(e)
    }
}

/// Why a write-back failed. The difference matters: a failed write loses nothing (its entries
/// stay pending and may be written again, so a lack of space is retried later), a failed
/// fdatasync may have lost written entries (fsyncgate: never retried, the log stops).
#[derive(Debug)]
pub enum WritebackError {
    Write(io::Error),
    Sync(io::Error),
}

impl std::fmt::Display for WritebackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WritebackError::Write(e) => write!(f, "writing: {e}"),
            WritebackError::Sync(e) => write!(f, "syncing: {e}"),
        }
    }
}

/// Open index file handles, least recently used closed first.
struct OpenFiles<F> {
    files: HashMap<(QueueKey, u64), (Rc<F>, u64)>,
    lru: BTreeMap<u64, (QueueKey, u64)>,
    tick: u64,
    max_open: usize,
}

impl<F> OpenFiles<F> {
    fn get(&mut self, key: (QueueKey, u64)) -> Option<Rc<F>> {
        let (f, used) = self.files.get_mut(&key)?;
        self.lru.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.lru.insert(self.tick, key);
        Some(f.clone())
    }

    fn insert(&mut self, key: (QueueKey, u64), f: Rc<F>) {
        self.tick += 1;
        if let Some((_, used)) = self.files.insert(key, (f, self.tick)) {
            self.lru.remove(&used);
        }
        self.lru.insert(self.tick, key);
        while self.files.len() > self.max_open {
            // Dropping the handle closes the file (a reader still holding it keeps it open).
            let Some((_, old)) = self.lru.pop_first() else { break };
            self.files.remove(&old);
        }
    }

    fn remove(&mut self, key: (QueueKey, u64)) {
        if let Some((_, used)) = self.files.remove(&key) {
            self.lru.remove(&used);
        }
    }
}

/// Memory use of the index, by part (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexMemory {
    pub queues_bytes: usize,
    pub pending_bytes: usize,
    pub files_bytes: usize,
    pub cache_bytes: usize,
    pub budget_bytes: usize,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl IndexMemory {
    pub fn total_bytes(&self) -> usize {
        self.queues_bytes + self.pending_bytes + self.files_bytes + self.cache_bytes
    }
}

pub struct IndexStore<F> {
    file_entries: u64,
    budget_bytes: usize,
    /// Fx-hashed: looked up twice for every appended batch, and queue keys are the broker's
    /// own (topic ids it assigned, queue numbers below the topic's count).
    queues: RefCell<FxHashMap<QueueKey, QueueIndex>>,
    /// Sum of the pending deques' capacities, in entries.
    pending_capacity: Cell<usize>,
    cache: RefCell<IndexCache>,
    files: RefCell<OpenFiles<F>>,
    /// Index files were written since the last sync.
    unsynced: Cell<bool>,
    /// A file was created since the last directory fsync.
    created_files: Cell<bool>,
    /// Bumped when a write of entries starts and when it ends; with `writes_in_flight`, a
    /// reader caches a block it read from disk only if no write was in flight when it began
    /// and none started or ended meanwhile, so the cache never holds a copy older than the
    /// entries counted written (see [`Self::block`]).
    write_epoch: Cell<u64>,
    /// Writes of entries started and not yet ended.
    writes_in_flight: Cell<usize>,
    gate: Semaphore,
    /// Notified whenever a write-back wrote a block of entries: an append waiting for the
    /// unwritten entries to drop below their bound watches it.
    progress: runtime::Signal,
    checkpoint_position: Cell<LogPosition>,
}

impl<F: LogFile> IndexStore<F> {
    /// An empty index. `file_entries` must be a multiple of [`ENTRIES_PER_BLOCK`].
    pub fn new(file_entries: u64, budget_bytes: usize) -> Self {
        assert!(
            file_entries >= ENTRIES_PER_BLOCK && file_entries % ENTRIES_PER_BLOCK == 0,
            "index_file_entries must be a positive multiple of {ENTRIES_PER_BLOCK}"
        );
        IndexStore {
            file_entries,
            budget_bytes,
            queues: RefCell::new(FxHashMap::default()),
            pending_capacity: Cell::new(0),
            cache: RefCell::new(IndexCache::new(budget_bytes)),
            files: RefCell::new(OpenFiles {
                files: HashMap::new(),
                lru: BTreeMap::new(),
                tick: 0,
                // Open handles may take a sixteenth of the budget.
                max_open: (budget_bytes / 16 / OPEN_FILE_BYTES).clamp(2, MAX_OPEN_INDEX_FILES),
            }),
            unsynced: Cell::new(false),
            created_files: Cell::new(false),
            write_epoch: Cell::new(0),
            writes_in_flight: Cell::new(0),
            gate: Semaphore::new(1),
            progress: runtime::Signal::default(),
            checkpoint_position: Cell::new(LogPosition::ZERO),
        }
    }

    // ----- bookkeeping (no I/O) -----

    /// Runs `f` on `queue`'s counters (created with `floor` if new), keeping the memory count.
    fn with_queue<T>(
        &self,
        queue: QueueKey,
        floor: QueueOffset,
        f: impl FnOnce(&mut QueueIndex) -> T,
    ) -> T {
        let out = {
            let mut queues = self.queues.borrow_mut();
            let qi = queues.entry(queue).or_insert_with(|| QueueIndex::with_floor(floor));
            let before = qi.pending.capacity();
            let out = f(qi);
            let after = qi.pending.capacity();
            // The total includes `before`, so this never underflows.
            self.pending_capacity.set(self.pending_capacity.get() + after - before);
            out
        };
        self.rebalance();
        out
    }

    /// Gives the block cache what the rest of the index leaves of the budget.
    fn rebalance(&self) {
        let m = self.memory();
        let others = m.queues_bytes + m.pending_bytes + m.files_bytes;
        self.cache.borrow_mut().set_capacity(self.budget_bytes.saturating_sub(others));
    }

    /// Records a new batch of `queue` (appended, not yet durable).
    pub fn push(&self, queue: QueueKey, e: IndexEntry) {
        self.with_queue(queue, QueueOffset::ZERO, |q| q.push(e));
    }

    /// Recovery: records a scanned batch unless it lies below the queue's floor; false if it
    /// does not continue the queue's offsets (then it is not our data). With `first_may_skip`,
    /// a queue's first batch may start above its floor: retention deleted the batches between
    /// and crashed before recording the floors that count them, and no checkpoint covers
    /// them (the index is rebuilt from the log).
    pub fn push_scanned(
        &self,
        queue: QueueKey,
        e: IndexEntry,
        floor: QueueOffset,
        first_may_skip: bool,
    ) -> bool {
        // The batch is checksummed but its offsets may still pass the last one (a bad
        // stamp): no queue of ours holds it, and its next offset would overflow.
        if e.base_offset.get().checked_add(u64::from(e.record_count)).is_none() {
            return false;
        }
        if e.next_offset() <= floor {
            return true;
        }
        self.with_queue(queue, floor, |q| {
            if e.base_offset != q.next_offset {
                if !(first_may_skip && q.is_empty() && e.base_offset > q.next_offset) {
                    return false;
                }
                q.min_offset = e.base_offset;
                q.next_offset = e.base_offset;
            }
            q.push(e);
            true
        })
    }

    /// The offset the next batch of `queue` gets.
    pub fn next_offset(&self, queue: QueueKey) -> QueueOffset {
        self.queues.borrow().get(&queue).map_or(QueueOffset::ZERO, |q| q.next_offset)
    }

    /// The offsets of `queue` counting only batches ending at or before `visible`.
    pub fn visible_offsets(&self, queue: QueueKey, visible: LogPosition) -> Option<QueueOffsets> {
        self.queues.borrow().get(&queue).map(|q| q.visible_offsets(visible))
    }

    pub fn queue_keys(&self) -> Vec<QueueKey> {
        self.queues.borrow().keys().copied().collect()
    }

    /// Every queue's lowest stored offset (for the floor file).
    pub fn floors(&self) -> Vec<(QueueKey, QueueOffset)> {
        self.queues.borrow().iter().map(|(k, q)| (*k, q.min_offset)).collect()
    }

    /// Entries waiting to be written, in bytes.
    pub fn pending_bytes(&self) -> usize {
        self.queues.borrow().values().map(|q| q.pending.len()).sum::<usize>()
            * std::mem::size_of::<IndexEntry>()
    }

    /// Pending entries are a quarter of the budget: time for a write-back.
    pub fn wants_writeback(&self) -> bool {
        self.pending_capacity.get() * std::mem::size_of::<IndexEntry>() >= self.budget_bytes / 4
    }

    /// Pending entries are half the budget: appends must wait for a write-back.
    pub fn must_writeback(&self) -> bool {
        self.pending_capacity.get() * std::mem::size_of::<IndexEntry>() >= self.budget_bytes / 2
    }

    /// Ready after the next block of entries is written (or after a notification since the
    /// last wait): see [`IndexStore::must_writeback`].
    pub fn progress(&self) -> &runtime::Signal {
        &self.progress
    }

    /// The position of the last durable checkpoint.
    pub fn checkpoint_position(&self) -> LogPosition {
        self.checkpoint_position.get()
    }

    pub fn memory(&self) -> IndexMemory {
        let queues = self.queues.borrow();
        let cache = self.cache.borrow();
        let (cache_hits, cache_misses) = cache.stats();
        IndexMemory {
            queues_bytes: queues.capacity()
                * (std::mem::size_of::<(QueueKey, QueueIndex)>() + std::mem::size_of::<u64>()),
            pending_bytes: self.pending_capacity.get() * std::mem::size_of::<IndexEntry>(),
            files_bytes: self.files.borrow().files.len() * OPEN_FILE_BYTES,
            cache_bytes: cache.bytes(),
            budget_bytes: self.budget_bytes,
            cache_hits,
            cache_misses,
        }
    }

    /// Everything the index holds in memory, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory().total_bytes()
    }

    /// Drops every cached block (they are re-read on use).
    pub fn clear_cache(&self) {
        self.cache.borrow_mut().clear();
    }

    /// The counters a checkpoint records, as of now.
    pub fn snapshot(&self) -> Vec<QueueCheckpoint> {
        let mut v: Vec<QueueCheckpoint> = self
            .queues
            .borrow()
            .iter()
            .map(|(k, q)| QueueCheckpoint {
                queue: *k,
                first_entry: q.first_entry,
                next_entry: q.next_entry(),
                min_offset: q.min_offset,
                next_offset: q.next_offset,
            })
            .collect();
        v.sort_by_key(|q| q.queue);
        v
    }

    fn file_of(&self, block: u64) -> (u64, u64) {
        let blocks_per_file = self.file_entries / ENTRIES_PER_BLOCK;
        (block / blocks_per_file, (block % blocks_per_file) * BLOCK_BYTES as u64)
    }

    // ----- reads -----

    async fn file<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        file: u64,
        create: bool,
    ) -> io::Result<Rc<F>> {
        if let Some(f) = self.files.borrow_mut().get((queue, file)) {
            return Ok(f);
        }
        let f = Rc::new(dir.open_buffered(&index_file_name(queue, file), create).await?);
        self.files.borrow_mut().insert((queue, file), f.clone());
        self.rebalance();
        Ok(f)
    }

    /// Block `block` of `queue`, from the cache or its file (zero-padded past the file's end).
    async fn block<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        block: u64,
    ) -> io::Result<Block> {
        let key = BlockKey { queue, block };
        if let Some(b) = self.cache.borrow_mut().get(key) {
            return Ok(b);
        }
        // A write in flight when the read begins may land after the read took the bytes
        // (both are in flight at once), and once it ends its entries count as written: a copy
        // without them must not stay in the cache. A write starting or ending during the read
        // moves the epoch. (Checking only the epoch cached such copies: lookups of the entries
        // then failed as missing until the block left the cache; found by `storage_model`.)
        let epoch = self.write_epoch.get();
        let quiet = self.writes_in_flight.get() == 0;
        let (file, at) = self.file_of(block);
        let f = self.file(dir, queue, file, false).await?;
        let buf = f.read_at(at, BLOCK_BYTES).await?;
        let mut bytes = vec![0u8; BLOCK_BYTES];
        bytes[..buf.len()].copy_from_slice(&buf);
        let b = Rc::new(bytes);
        if quiet && self.write_epoch.get() == epoch {
            self.cache.borrow_mut().insert(key, b.clone());
        }
        Ok(b)
    }

    /// Entry `n` of `queue`.
    pub async fn entry<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        n: u64,
    ) -> Result<IndexEntry, LookupError> {
        Ok(self.entry_and_block(dir, queue, n).await?.0)
    }

    /// Entry `n` of `queue` and, if it is written, the block holding it with the number of
    /// entries known written before the block was read (the block holds all of those; a
    /// write-back meanwhile may have added more that this copy lacks).
    async fn entry_and_block<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        n: u64,
    ) -> Result<(IndexEntry, Option<(Block, u64)>), LookupError> {
        let written = {
            let queues = self.queues.borrow();
            let Some(q) = queues.get(&queue) else { return Err(LookupError::Gone) };
            if n < q.first_entry || n >= q.next_entry() {
                return Err(LookupError::Gone);
            }
            if let Some(e) = q.pending_entry(n) {
                return Ok((e, None));
            }
            q.written_entries
        };
        let block = match self.block(dir, queue, n / ENTRIES_PER_BLOCK).await {
            Ok(b) => b,
            Err(e) => return Err(self.explain_missing(queue, n, e)),
        };
        let e = self.decode_slot(queue, &block, n)?;
        Ok((e, Some((block, written))))
    }

    /// Entry `n` from its block; an all-zero slot means the file lacks a written entry.
    fn decode_slot(
        &self,
        queue: QueueKey,
        block: &Block,
        n: u64,
    ) -> Result<IndexEntry, LookupError> {
        let slot = (n % ENTRIES_PER_BLOCK) as usize * ENTRY_BYTES;
        let e = IndexEntry::decode(&block[slot..slot + ENTRY_BYTES]);
        if e.length == 0 {
            return Err(LookupError::Corrupt {
                file: index_file_name(queue, n / self.file_entries),
                reason: format!("entry {n} is missing (the file is shorter than written)"),
            });
        }
        // Index files carry no checksum: an entry whose offsets or bytes would pass the last
        // one is damage (its next offset or end would overflow).
        let offsets_fit = e.base_offset.get().checked_add(u64::from(e.record_count)).is_some();
        if !offsets_fit || e.position.get().checked_add(u64::from(e.length)).is_none() {
            return Err(LookupError::Corrupt {
                file: index_file_name(queue, n / self.file_entries),
                reason: format!("entry {n} reaches past the last offset or log position"),
            });
        }
        Ok(e)
    }

    /// A read error of entry `n`: `Gone` if retention dropped it meanwhile.
    fn explain_missing(&self, queue: QueueKey, n: u64, e: io::Error) -> LookupError {
        let dropped = self.queues.borrow().get(&queue).map_or(true, |q| n < q.first_entry);
        if dropped {
            LookupError::Gone
        } else if e.kind() == io::ErrorKind::NotFound {
            LookupError::Corrupt {
                file: index_file_name(queue, n / self.file_entries),
                reason: format!("index file holding entry {n} is missing"),
            }
        } else {
            LookupError::Io(e)
        }
    }

    /// First entry number in `[lo, hi)` for which `pred` is false (entries sorted by it).
    async fn partition<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        mut lo: u64,
        mut hi: u64,
        pred: impl Fn(&IndexEntry) -> bool,
    ) -> Result<u64, LookupError> {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.entry(dir, queue, mid).await?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// [`Self::partition`] for a boundary expected near `lo`: probes `lo`, `lo + 1`,
    /// `lo + 3`, `lo + 7`, ... until `pred` is false, then searches between the last two
    /// probes. A boundary `d` entries in costs about 2 log2(d) probes, all in `lo`'s block
    /// while `d` is small, where a binary search over `[lo, hi)` first reads blocks far away.
    async fn partition_from<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        lo: u64,
        hi: u64,
        pred: impl Fn(&IndexEntry) -> bool,
    ) -> Result<u64, LookupError> {
        // Every entry below `from` satisfies `pred`.
        let (mut from, mut step) = (lo, 1u64);
        while from < hi {
            let probe = from.saturating_add(step - 1).min(hi - 1);
            if !pred(&self.entry(dir, queue, probe).await?) {
                return self.partition(dir, queue, from, probe, &pred).await;
            }
            from = probe + 1;
            step = step.saturating_mul(2);
        }
        Ok(hi)
    }

    /// Number of the entry holding `offset`, if the queue stores it.
    pub async fn find<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        offset: QueueOffset,
    ) -> Result<Option<u64>, LookupError> {
        let (lo, hi) = {
            let queues = self.queues.borrow();
            let Some(q) = queues.get(&queue) else { return Ok(None) };
            if offset < q.min_offset || offset >= q.next_offset || q.is_empty() {
                return Ok(None);
            }
            if q.pending.front().is_some_and(|e| e.base_offset <= offset) {
                let i = q.pending.partition_point(|e| e.next_offset() <= offset);
                return Ok(Some(q.written_entries + i as u64));
            }
            (q.first_entry, q.written_entries)
        };
        let n = self.partition(dir, queue, lo, hi, |e| e.next_offset() <= offset).await?;
        Ok((n < hi).then_some(n))
    }

    /// First offset of `queue` stored at or after `ts_ms`; the next offset if none.
    pub async fn offset_for_timestamp<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        ts_ms: i64,
    ) -> Result<QueueOffset, LookupError> {
        let (lo, hi, next_offset) = {
            let queues = self.queues.borrow();
            let Some(q) = queues.get(&queue) else { return Ok(QueueOffset::ZERO) };
            if q.pending.front().is_some_and(|e| e.store_timestamp_ms < ts_ms) {
                // The answer is among the pending entries (or past them).
                let i = q.pending.partition_point(|e| e.store_timestamp_ms < ts_ms);
                return Ok(q.pending.get(i).map_or(q.next_offset, |e| e.base_offset));
            }
            (q.first_entry, q.next_entry(), q.next_offset)
        };
        let n = self.partition(dir, queue, lo, hi, |e| e.store_timestamp_ms < ts_ms).await?;
        if n == hi {
            return Ok(next_offset);
        }
        Ok(self.entry(dir, queue, n).await?.base_offset)
    }

    /// Log position of the last batch of `queue` that starts at or before `target`, if the
    /// queue still holds one: a batch boundary a scan of the log can start from.
    pub async fn last_position_at_or_before<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        target: LogPosition,
    ) -> Result<Option<LogPosition>, LookupError> {
        let (lo, hi) = {
            let queues = self.queues.borrow();
            let Some(q) = queues.get(&queue) else { return Ok(None) };
            (q.first_entry, q.next_entry())
        };
        let n = self.partition(dir, queue, lo, hi, |e| e.position <= target).await?;
        if n == lo {
            return Ok(None);
        }
        Ok(Some(self.entry(dir, queue, n - 1).await?.position))
    }

    /// Up to `k` queues holding the most entries, most first: their entries lie densest in
    /// the log.
    pub fn busiest_queues(&self, k: usize) -> Vec<QueueKey> {
        let queues = self.queues.borrow();
        let mut all: Vec<(u64, QueueKey)> =
            queues.iter().map(|(key, q)| (q.next_entry() - q.first_entry, *key)).collect();
        let k = k.min(all.len());
        if k == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        all.truncate(k);
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.into_iter().map(|(_, key)| key).collect()
    }

    /// Entries from number `n` on whose batches end at or before `visible`, about `max_bytes`
    /// of batches (at least one when one is visible).
    pub async fn entries_from<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        mut n: u64,
        max_bytes: usize,
        visible: LogPosition,
    ) -> Result<Vec<IndexEntry>, LookupError> {
        let mut out: Vec<IndexEntry> = Vec::new();
        let mut total = 0usize;
        loop {
            let next_entry = self.queues.borrow().get(&queue).map_or(0, |q| q.next_entry());
            if n >= next_entry {
                return Ok(out);
            }
            // One lookup per block: the rest of the block's written entries come from it.
            let (first, block) = self.entry_and_block(dir, queue, n).await?;
            let mut batch = vec![first];
            if let Some((b, written)) = block {
                let block_end = (n / ENTRIES_PER_BLOCK + 1) * ENTRIES_PER_BLOCK;
                for k in n + 1..block_end.min(written) {
                    batch.push(self.decode_slot(queue, &b, k)?);
                }
            }
            for e in batch {
                if e.end() > visible || (total > 0 && total + e.length as usize > max_bytes) {
                    return Ok(out);
                }
                total += e.length as usize;
                out.push(e);
                n += 1;
            }
        }
    }
}

mod recovery;
mod writes;

pub use writes::DropPlan;

#[cfg(test)]
mod tests;
