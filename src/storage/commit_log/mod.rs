//! The commit log of one shard: append, group commit, read, close.
//!
//! Lives on its shard's executor (it is `!Send`); callers share it as `Rc<CommitLog>`. This
//! file is the facade: the [`CommitLog`] type, its shared state, opening, closing and the
//! small queries. Each concept of the log lives in its own file, as more `impl CommitLog`
//! blocks over the same state:
//!
//! | file | owns |
//! |---|---|
//! | `appender.rs` | the append order, the head chunk and its carried block, chunk permits, dispatching writes |
//! | `flusher.rs` | group commit: the flusher task, durability waiters, acknowledgements |
//! | `segment_set.rs` | active, pre-created and sealed segments: rolls, preallocation, disk-full back-off |
//! | `reader.rs` | reads: planning from memory, read-ahead or disk, coalescing, verifying disk bytes |
//! | `read_ahead.rs` | the few recent disk reads kept for the next sequential read; prefetched next fetches |
//! | `recovery.rs` | rebuilding the state from disk at open |
//! | `tail_scan.rs` | reading the log's last bytes in log order (state rebuilt at startup) |
//! | `follow.rs` | reading durable batches in log order for indexes behind the log (key index) |
//! | `index_writer.rs` | writing index entries behind the log, index checkpoints |
//! | `retention_run.rs` | executing the retention policy: floors, then unlinking |
//! | `lifecycle.rs` | open, failed, closed: the legal transitions (pure) |
//!
//! # Write path
//! `append` validates the producer's batch (bounds, CRC, record framing), takes its place in
//! the append order (a FIFO gate: appends are serialized, the copy itself never awaits), stamps
//! topic, queue, base offset and store time into a copy of the header, and copies the batch
//! once into the head chunk, a DMA buffer from the bounded chunk pool. A full chunk is
//! dispatched as one O_DIRECT write; chunks are written concurrently.
//!
//! # Group commit
//! One flusher task per log. When asked (a sync-mode append waits, `flush_bytes` are pending,
//! `flush_interval_ms` passed, or `flush()`), it takes the target = everything appended so far,
//! writes the partially filled head chunk (its last partial 4 KiB block is carried into the
//! next chunk and rewritten later; the two writes of that block are ordered), waits until
//! all writes below the target completed (a contiguous prefix), fdatasyncs the segments that
//! have unsynced writes, and then declares the target durable and wakes every waiter at or
//! below it. Appends arriving during a flush are covered by the next one, so one fdatasync
//! covers every append issued before it started.
//!
//! # Failure
//! A failed write or fdatasync stops the log: state `Failed`, every waiter and every later
//! append gets [`StorageError::Failed`]. We never retry an fsync: after a failure the kernel
//! may have dropped the dirty pages (fsyncgate), so only recovery from disk is trustworthy.
//! No room for a new segment is not a failure: see [`super::next_segment`] (DiskFull, retried).
//!
//! # Index
//! Each append records the batch's entry in the [`IndexStore`] (memory only). Entries are
//! written to the per-queue index files behind the log, once durable, by the index task (kicked
//! by the flusher, so index I/O never delays a group commit); about once per
//! `segment_size_bytes` of durable log, and on close, [`CommitLog::checkpoint_index`] makes
//! them durable and records the position recovery may start scanning from. Reads look entries
//! up in the index (possibly reading index blocks) before planning their log reads.
//!
//! # Visibility
//! In sync flush mode a batch becomes readable once durable; in async mode once appended (the
//! RocketMQ behaviour). Fresh bytes are served from the chunk cache; older bytes from disk,
//! with their CRCs verified.

mod appender;
mod flusher;
mod follow;
mod index_writer;
mod lifecycle;
mod read_ahead;
mod read_many;
mod reader;
mod recovery;
mod replica;
mod retention_run;
mod segment_set;
mod tail_scan;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;

use self::appender::{Carry, Done, Head};
use self::flusher::flusher_loop;
pub use self::follow::{Followed, FollowedBatch};
use self::index_writer::index_loop;
use self::lifecycle::Lifecycle;
use self::read_ahead::{Prefetched, ReadAhead};
use self::recovery::recover;
pub use self::replica::{truncate_log, PositionedBatch};
use self::retention_run::{index_drop_loop, retention_loop};
pub use self::tail_scan::{Scanned, TailScan};
use super::chunk_cache::ChunkCache;
use super::config::{FlushMode, StorageConfig};
use super::dma_dir::DmaDir;
use super::error::{Result, StorageError};
use super::file::{LogDir, LogFile};
use super::index_store::{IndexMemory, IndexStore};
use super::next_segment::{space_warning, NextSegment};
use super::probe::{LogMetrics, LogProbe};
use super::segment::Segment;
use super::types::{LogPosition, QueueKey, QueueOffset, QueueOffsets};
use super::write_tracker::WriteTracker;
use crate::runtime::{self, FairGate, Semaphore, SharedClock, Signal, StaticPermit};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A prefetch's task, awaited by the fetch it reads for and by close.
type Prefetch = futures::future::Shared<runtime::JoinHandle<()>>;

/// A prefetch in flight: the fetch it reads, `[from, end)` of its queue, and its task.
struct InFlightPrefetch {
    from: QueueOffset,
    end: QueueOffset,
    task: Prefetch,
}

struct State<F> {
    segments: BTreeMap<LogPosition, Rc<Segment<F>>>,
    head: Option<Head>,
    carry: Option<Carry>,
    spare_permits: Vec<StaticPermit>,
    /// Permits of completed writes past the written end (by the end of their bytes): a chunk
    /// gives its permit back only once every write before it completed too, so the pool bounds
    /// the bytes not yet written, and the chunk cache's memory (`chunk_cache.rs`), even while
    /// one slow write holds the written end and later ones complete.
    written_permits: BTreeMap<LogPosition, StaticPermit>,
    append_pos: LogPosition,
    tracker: WriteTracker,
    durable: LogPosition,
    /// Completion of the last dispatched write, for ordering a rewrite of its last block.
    last_write: Option<Done>,
    waiters: VecDeque<(LogPosition, oneshot::Sender<std::result::Result<(), String>>)>,
    /// Open, failed or closed; see `lifecycle.rs`.
    life: Lifecycle,
    flush_requested: bool,
    cache: ChunkCache,
    /// Recent disk reads that went past what was asked.
    read_ahead: ReadAhead,
    /// Catching-up queues' next fetches, read ahead (`reader.rs`).
    prefetched: Prefetched,
    last_store_ts: i64,
    /// The segment after the active one, and the disk-full back-off.
    next: NextSegment<Rc<Segment<F>>>,
    /// Files retention removed from the log but could not unlink yet; retried every run.
    pending_deletes: Vec<String>,
    /// Index files whose entries retention dropped but which it could not delete yet (the
    /// floors write or the unlink failed); retried every run, after the floors are durable.
    pending_index_deletes: Vec<(QueueKey, u64)>,
    /// The queue index holds no entry below this position. Below the log start (the first
    /// segment's base) while retention drops the entries of segments it already unlinked,
    /// and after a drop failed (the next one drops them).
    index_dropped_to: LogPosition,
    /// The log start the floors file records, and whether its floors count the drop of the
    /// index entries below it (`retention_run.rs`).
    floors_start: LogPosition,
    floors_dropped: bool,
}

/// A shard's commit log. See the module documentation.
pub struct CommitLog<D: LogDir = DmaDir> {
    dir: D,
    config: StorageConfig,
    pool: Rc<Semaphore>,
    /// Appends, rolls and closes one at a time, in the order they asked (see `FairGate`).
    append_gate: FairGate,
    st: RefCell<State<D::File>>,
    /// The per-queue index (on disk, read through a bounded cache).
    index: IndexStore<D::File>,
    /// Shared with the flusher task, which waits on it without keeping the log alive.
    flush_kick: Rc<Signal>,
    /// Wakes the index task (write-back, checkpoints), which also holds only this signal.
    index_kick: Rc<Signal>,
    written_changed: Signal,
    flusher: RefCell<Option<runtime::JoinHandle<()>>>,
    /// Notified when a background segment creation finishes.
    next_changed: Signal,
    /// One retention run at a time (it runs without the append gate).
    retention_gate: Semaphore,
    /// One index checkpoint at a time: it holds the index's gate only while it writes entries
    /// back, not through its filesystem sync ([`CommitLog::checkpoint_index`]).
    checkpoint_gate: Semaphore,
    /// Runs retention before its timer: a segment was created or rolled to (the disk holds
    /// one more). Shared with the retention task, which waits on it without keeping the log
    /// alive.
    retention_kick: Rc<Signal>,
    /// One drop of index entries below the log start at a time (`retention_run.rs`): a
    /// retention run does not wait for the previous run's drop.
    drop_gate: Semaphore,
    /// One write of the floors file at a time (a retention run's and a drop's).
    floors_gate: Semaphore,
    /// Wakes the index drop task: a retention run moved the log start. Held like
    /// `retention_kick`.
    drop_kick: Rc<Signal>,
    /// Prefetches in flight, by queue (at most [`reader::PREFETCH_DEPTH`] each): the offsets
    /// of the fetch each reads, where it starts and where it ends, and its task (a fetch from
    /// that offset waits for it; close waits for all).
    prefetches: RefCell<std::collections::HashMap<QueueKey, Vec<InFlightPrefetch>>>,
    /// Bytes of fetches' own disk reads in flight (not prefetches'): a prefetch starts only
    /// while these and the prefetches in flight stay within `prefetch_bytes`.
    fetch_reads: std::cell::Cell<usize>,
    /// Index entries looked up by multi-queue reads and not yet read (`read_many.rs`).
    cursors: RefCell<read_many::Cursors>,
    /// Multi-queue reads' recent disk spans and the read ahead of the next (`read_many.rs`).
    scan: RefCell<read_many::Scan>,
    /// Queues whose batches from an offset on retention must keep (`pin_retention`).
    retention_pins: RefCell<std::collections::HashMap<QueueKey, crate::storage::QueueOffset>>,
    /// Pins to move to once the log is durable to a position (`pin_retention_once_durable`):
    /// queue → (offset or none, that position). At most one per pinned queue.
    retention_pins_staged: RefCell<
        std::collections::HashMap<QueueKey, (Option<crate::storage::QueueOffset>, LogPosition)>,
    >,
    /// The pinned queue whose pin last kept retention from deleting a segment its policy
    /// chose (`take_retention_held`); cleared when taken.
    retention_held: std::cell::Cell<Option<QueueKey>>,
    /// The time every decision and wait of the log reads: store timestamps, flush interval,
    /// sync-flush timeout, retention schedule and age, disk-full back-off.
    clock: SharedClock,
    /// Counters for the metrics endpoint (`probe.rs`).
    probe: RefCell<LogProbe>,
    /// The master epoch stamped into every batch this log appends (0 without replication).
    epoch: std::cell::Cell<u32>,
    /// Replication: reads see nothing at or past this position (a master's confirmed
    /// position, a replica's synced position); None: no cap.
    read_cap: std::cell::Cell<Option<LogPosition>>,
}

impl CommitLog<DmaDir> {
    /// Opens (creating or recovering) the log in `config.dir` on the real filesystem.
    pub async fn open(config: StorageConfig) -> Result<Rc<Self>> {
        config.validate().map_err(StorageError::Config)?;
        let dir = DmaDir::open(&config.dir, config.io_mode).await.map_err(StorageError::Setup)?;
        Self::open_with(dir, config).await
    }
}

impl<D: LogDir + 'static> CommitLog<D> {
    /// Opens the log in `dir`, recovering whatever a previous run left.
    pub async fn open_with(dir: D, config: StorageConfig) -> Result<Rc<Self>> {
        Self::open_with_clock(dir, config, runtime::system_clock()).await
    }

    /// [`CommitLog::open_with`] on a given clock (a [`runtime::SimClock`] in tests).
    pub async fn open_with_clock(
        dir: D,
        config: StorageConfig,
        clock: SharedClock,
    ) -> Result<Rc<Self>> {
        config.validate().map_err(StorageError::Config)?;
        let recovered = recover(&dir, &config).await?;
        let pool = Rc::new(Semaphore::new(config.chunk_pool_chunks as u64));
        let log_start = *recovered.segments.keys().next().expect("recovery leaves a segment");
        let multi_read_keep_bytes = config.multi_read_keep_bytes;
        let log = Rc::new(CommitLog {
            st: RefCell::new(State {
                segments: recovered.segments,
                head: None,
                carry: recovered.carry,
                spare_permits: Vec::new(),
                written_permits: BTreeMap::new(),
                append_pos: recovered.end,
                tracker: WriteTracker::new(recovered.end),
                durable: recovered.end,
                last_write: None,
                waiters: VecDeque::new(),
                life: Lifecycle::Open,
                flush_requested: false,
                cache: ChunkCache::new(config.cache_bytes, config.chunk_size_bytes),
                read_ahead: ReadAhead::new(),
                prefetched: Prefetched::new(config.prefetch_bytes),
                last_store_ts: recovered.last_store_ts,
                next: NextSegment::after_recovery(
                    config.disk_full_retry(),
                    recovered.shortage,
                    clock.now(),
                ),
                pending_deletes: recovered.pending_deletes,
                pending_index_deletes: Vec::new(),
                index_dropped_to: recovered.index_dropped_to,
                floors_start: log_start,
                floors_dropped: true,
            }),
            index: recovered.index,
            dir,
            config,
            pool,
            append_gate: FairGate::new(),
            flush_kick: Rc::new(Signal::default()),
            index_kick: Rc::new(Signal::default()),
            written_changed: Signal::default(),
            flusher: RefCell::new(None),
            next_changed: Signal::default(),
            retention_gate: Semaphore::new(1),
            checkpoint_gate: Semaphore::new(1),
            retention_kick: Rc::new(Signal::default()),
            drop_gate: Semaphore::new(1),
            floors_gate: Semaphore::new(1),
            drop_kick: Rc::new(Signal::default()),
            retention_pins: RefCell::new(std::collections::HashMap::new()),
            retention_held: std::cell::Cell::new(None),
            retention_pins_staged: RefCell::new(std::collections::HashMap::new()),
            prefetches: RefCell::new(std::collections::HashMap::new()),
            fetch_reads: std::cell::Cell::new(0),
            cursors: RefCell::new(read_many::Cursors::default()),
            scan: RefCell::new(read_many::Scan::new(multi_read_keep_bytes)),
            clock,
            probe: RefCell::new(LogProbe::default()),
            epoch: std::cell::Cell::new(0),
            read_cap: std::cell::Cell::new(None),
        });
        let weak = Rc::downgrade(&log);
        let handle = runtime::spawn(async move { flusher_loop(weak).await });
        *log.flusher.borrow_mut() = Some(handle);
        // Persist what recovery rebuilt, so the next open scans nothing before this point. The
        // recovered bytes may not have been fdatasynced by the run that wrote them.
        let active = log.st.borrow().active().clone();
        active
            .file
            .sync_data()
            .await
            .map_err(|e| StorageError::io("syncing the active segment", e))?;
        match log.checkpoint_index().await {
            Ok(()) => {}
            // The index stays in memory (within its budget) and is written once there is room;
            // reads must not be refused for it.
            Err(StorageError::DiskFull { reason, .. }) => {
                tracing::warn!("could not checkpoint the queue index at open: {reason}");
            }
            Err(e) => return Err(e),
        }
        match log.dir.disk_usage().await {
            Ok((used, total)) => {
                let (seg, ratio) = (log.config.segment_size_bytes, log.config.disk_max_used_ratio);
                if let Some(w) = space_warning(used, total, seg, ratio) {
                    tracing::warn!(dir = %log.dir.path().display(), "{w}");
                }
            }
            Err(e) => tracing::warn!("cannot read the data filesystem's free space: {e}"),
        }
        if let Some(reason) = log.disk_full() {
            tracing::warn!(
                dir = %log.dir.path().display(),
                "opened without room for new data ({reason}): reads work, appends get DISK_FULL \
                 until space is freed"
            );
        }
        let weak = Rc::downgrade(&log);
        runtime::spawn_detached(async move { index_loop(weak).await });
        let weak = Rc::downgrade(&log);
        runtime::spawn_detached(async move { retention_loop(weak).await });
        let weak = Rc::downgrade(&log);
        runtime::spawn_detached(async move { index_drop_loop(weak).await });
        Ok(log)
    }

    fn check_writable(&self) -> Result<()> {
        let st = self.st.borrow();
        if let Some(reason) = st.life.failure() {
            return Err(self.failed_error(reason));
        }
        if st.life.is_closed() {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    fn failed_error(&self, reason: &str) -> StorageError {
        StorageError::Failed { dir: self.dir.path().to_path_buf(), reason: reason.to_string() }
    }

    /// Stops the log after an I/O failure: every waiter and later append gets an error.
    fn fail(&self, reason: String) {
        let waiters = {
            let mut st = self.st.borrow_mut();
            if !st.life.fail(reason.clone()) {
                // Already stopped: the first failure is the one reported. One after close is
                // still an I/O error an operator must see.
                if st.life.is_closed() {
                    tracing::error!(dir = %self.dir.path().display(), "I/O failure after close: {reason}");
                }
                return;
            }
            tracing::error!(
                dir = %self.dir.path().display(),
                "commit log stopped after an I/O failure: {reason}; no further writes are \
                 accepted on this shard, restart to recover"
            );
            std::mem::take(&mut st.waiters)
        };
        for (_, tx) in waiters {
            let _ = tx.send(Err(reason.clone()));
        }
        self.flush_kick.notify();
        self.written_changed.notify();
    }

    /// The readable offsets of `queue` (`{0, 0}` if it was never written).
    pub fn offsets(&self, queue: QueueKey) -> QueueOffsets {
        self.index.visible_offsets(queue, self.readable_end()).unwrap_or_default()
    }

    /// Stamps `epoch` into every batch appended from now on (a master's epoch).
    pub fn set_epoch(&self, epoch: u32) {
        self.epoch.set(epoch);
    }

    /// Caps what reads see at `cap` (None: no cap): replication keeps a master's consumers
    /// below its confirmed position and a replica's below what it synced.
    pub fn set_read_cap(&self, cap: Option<LogPosition>) {
        self.read_cap.set(cap);
    }

    /// The position reads see up to: [`Self::visible_end`], lowered to the read cap if any.
    pub fn readable_end(&self) -> LogPosition {
        let visible = self.visible_end();
        self.read_cap.get().map_or(visible, |cap| cap.min(visible))
    }

    /// The log's directory (for files kept next to the segments, e.g. the epoch file).
    pub fn dir(&self) -> &D {
        &self.dir
    }

    /// The log position up to which appended data is readable: the durable end in sync flush
    /// mode, the appended end in async mode.
    /// The newest store timestamp given to a batch (`i64::MIN` for an empty log); after a
    /// restart, the newest one recovered.
    pub fn last_store_timestamp_ms(&self) -> i64 {
        self.st.borrow().last_store_ts
    }

    pub fn visible_end(&self) -> LogPosition {
        let st = self.st.borrow();
        match self.config.flush_mode {
            FlushMode::Sync => st.durable,
            FlushMode::Async => st.append_pos,
        }
    }

    /// Memory the per-queue index holds, by part; its total stays within `index_cache_bytes`.
    pub fn index_memory(&self) -> IndexMemory {
        self.index.memory()
    }

    /// Drops the index's cached blocks (they are read again from the index files on use).
    pub fn clear_index_cache(&self) {
        self.index.clear_cache();
    }

    /// (appended end, written end, durable end) of the log.
    pub fn positions(&self) -> (LogPosition, LogPosition, LogPosition) {
        let st = self.st.borrow();
        (st.append_pos, st.tracker.written(), st.durable)
    }

    /// Cache statistics: (bytes held, hits, misses).
    pub fn cache_stats(&self) -> (usize, u64, u64) {
        let st = self.st.borrow();
        let (h, m) = st.cache.stats();
        (st.cache.bytes(), h, m)
    }

    /// The log's counters and its caches' hit counts, for the metrics endpoint.
    pub fn metrics(&self) -> LogMetrics {
        let (chunk_cache_hits, chunk_cache_misses) = self.st.borrow().cache.stats();
        let index = self.index.memory();
        LogMetrics {
            probe: *self.probe.borrow(),
            chunk_cache_hits,
            chunk_cache_misses,
            index_cache_hits: index.cache_hits,
            index_cache_misses: index.cache_misses,
            segments: self.st.borrow().segments.len() as u64,
        }
    }

    /// Bases of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<LogPosition> {
        self.st.borrow().segments.keys().copied().collect()
    }

    /// Is the log stopped after an I/O failure?
    pub fn failure(&self) -> Option<String> {
        self.st.borrow().life.failure().map(str::to_string)
    }

    /// Flushes everything, writes the active segment's index checkpoint (so the next open
    /// scans nothing), and stops the flusher. Appends after this fail with `Closed`.
    pub async fn close(self: &Rc<Self>) -> Result<()> {
        let _gate = self.append_gate.acquire().await;
        if self.st.borrow().life.is_closed() {
            return Ok(());
        }
        if self.st.borrow().life.is_open() {
            self.flush().await?;
            // Everything is durable: checkpoint the index so the next open scans nothing.
            // Without room for it the next open scans from the previous checkpoint instead.
            match self.checkpoint_index().await {
                Ok(()) => {}
                Err(StorageError::DiskFull { reason, .. }) => {
                    tracing::warn!("closing without an index checkpoint: {reason}");
                }
                Err(e) => return Err(e),
            }
        }
        let failed = self.st.borrow_mut().life.close();
        self.flush_kick.notify();
        self.index_kick.notify();
        self.retention_kick.notify();
        self.drop_kick.notify();
        // No prefetch starts now; those in flight read segment files closed below.
        let mut prefetches: Vec<_> =
            self.prefetches.borrow().values().flatten().map(|p| p.task.clone()).collect();
        prefetches.extend(self.scan.borrow().in_flight());
        futures::future::join_all(prefetches).await;
        let handle = self.flusher.borrow_mut().take();
        if let Some(h) = handle {
            h.await;
        }
        // No task of this log may touch the directory after close returns (a log reopened on
        // it would lose files): wait for retention and its drop of index entries, for an index
        // checkpoint (its sync and file write run outside the index gate) and for a segment
        // creation in flight, and delete
        // the prepared segment that will not be used.
        let _retention =
            self.retention_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        let _checkpoint =
            self.checkpoint_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        let _drop = self.drop_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        while self.st.borrow().next.is_creating() {
            self.next_changed.wait().await;
        }
        let ready = self.st.borrow_mut().next.take_ready();
        if let Some((base, seg)) = ready {
            drop(seg);
            self.remove_unused_segment(base).await;
        }
        self.pool.close();
        let segments: Vec<_> = self.st.borrow().segments.values().cloned().collect();
        for s in segments {
            let _ = s.file.close().await;
        }
        match failed {
            Some(reason) => Err(self.failed_error(&reason)),
            None => Ok(()),
        }
    }
}

impl<D: LogDir> Drop for CommitLog<D> {
    fn drop(&mut self) {
        // Lets the flusher, the index and the retention tasks notice the log is gone instead of
        // waiting on.
        self.flush_kick.notify();
        self.index_kick.notify();
        self.retention_kick.notify();
        self.drop_kick.notify();
    }
}
