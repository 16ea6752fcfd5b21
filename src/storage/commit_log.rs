//! The commit log of one shard: append, group commit, read, close.
//!
//! Lives on its shard's executor (it is `!Send`); callers share it as `Rc<CommitLog>`.
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

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

use super::chunk_cache::ChunkCache;
use super::config::{FlushMode, StorageConfig};
use super::dma_dir::DmaDir;
use super::error::{is_disk_full, Result, StorageError};
use super::file::{align_down, align_up, LogDir, LogFile, ReadBuf, ALIGN};
use super::index::{IndexCheckpoint, IndexEntry, SegmentCheckpoint};
use super::index_store::{IndexMemory, IndexStore, LookupError, WritebackError, CHECKPOINT_FILE};
use super::next_segment::{
    allocate_or_give_back, create_segment, space_warning, ActiveStep, CreateFailure, IndexStep,
    NextSegment, RollStep, Shortage,
};
use super::retention::{segments_to_delete, RetentionPolicy, SegmentFacts};
use super::segment::{parse_segment_name, segment_name, Segment, INDEX_SUFFIX};
use super::types::{AppendStatus, Appended, LogPosition, QueueKey, QueueOffsets, ReadBatches};
use super::write_tracker::WriteTracker;
use crate::format::batch::{self as fmt, BatchView, FormatError, Stamp, HEADER_LEN};
use crate::runtime::{self, DmaBuffer, Semaphore, SharedClock, Signal, StaticPermit};

const FLOOR_FILE: &str = "queues.floor";
/// Read-ahead buffers kept per log (each at most one fetch plus `read_ahead_bytes`).
const READ_AHEAD_SLOTS: usize = 4;
/// Two disk batches of one fetch are read with one I/O when at most this far apart.
const COALESCE_GAP_BYTES: u64 = 128 * 1024;
/// Read size while scanning segments during recovery.
const SCAN_READ_BYTES: usize = 4 << 20;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The chunk being filled.
struct Head {
    buf: Rc<DmaBuffer>,
    /// Log position of `buf[0]` (aligned).
    pos: u64,
    /// Valid bytes from `buf[0]`.
    filled: usize,
    /// `buf[..dispatched]` was already written by an earlier write (the carried block).
    dispatched: usize,
    permit: StaticPermit,
}

/// The last partial block of a dispatched chunk, to be rewritten with more data.
struct Carry {
    pos: u64,
    bytes: Vec<u8>,
}

type Done = Shared<oneshot::Receiver<()>>;

struct State<F> {
    segments: BTreeMap<u64, Rc<Segment<F>>>,
    head: Option<Head>,
    carry: Option<Carry>,
    spare_permits: Vec<StaticPermit>,
    append_pos: u64,
    tracker: WriteTracker,
    durable: u64,
    /// Completion of the last dispatched write, for ordering a rewrite of its last block.
    last_write: Option<Done>,
    waiters: VecDeque<(u64, oneshot::Sender<std::result::Result<(), String>>)>,
    failed: Option<String>,
    closed: bool,
    flush_requested: bool,
    cache: ChunkCache,
    /// Recent disk reads that went past what was asked: (log position of buf[0], buf).
    read_ahead: VecDeque<(u64, ReadBuf)>,
    last_store_ts: i64,
    /// The segment after the active one, and the disk-full back-off.
    next: NextSegment<Rc<Segment<F>>>,
    /// Files retention removed from the log but could not unlink yet; retried every run.
    pending_deletes: Vec<String>,
    /// Index files whose entries retention dropped but which it could not delete yet (the
    /// floors write or the unlink failed); retried every run, after the floors are durable.
    pending_index_deletes: Vec<(QueueKey, u64)>,
}

impl<F> State<F> {
    fn active(&self) -> &Rc<Segment<F>> {
        self.segments.values().next_back().expect("a log always has an active segment")
    }
    fn segment_for(&self, pos: u64) -> Option<&Rc<Segment<F>>> {
        self.segments.range(..=pos).next_back().map(|(_, s)| s)
    }
}

/// A shard's commit log. See the module documentation.
pub struct CommitLog<D: LogDir = DmaDir> {
    dir: D,
    config: StorageConfig,
    pool: Rc<Semaphore>,
    append_gate: Semaphore,
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
    /// The time every decision and wait of the log reads: store timestamps, flush interval,
    /// sync-flush timeout, retention schedule and age, disk-full back-off.
    clock: SharedClock,
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
        let log = Rc::new(CommitLog {
            st: RefCell::new(State {
                segments: recovered.segments,
                head: None,
                carry: recovered.carry,
                spare_permits: Vec::new(),
                append_pos: recovered.end,
                tracker: WriteTracker::new(recovered.end),
                durable: recovered.end,
                last_write: None,
                waiters: VecDeque::new(),
                failed: None,
                closed: false,
                flush_requested: false,
                cache: ChunkCache::new(config.cache_bytes),
                read_ahead: VecDeque::with_capacity(READ_AHEAD_SLOTS),
                last_store_ts: recovered.last_store_ts,
                next: NextSegment::after_recovery(
                    config.disk_full_retry(),
                    recovered.shortage,
                    clock.now(),
                ),
                pending_deletes: Vec::new(),
                pending_index_deletes: Vec::new(),
            }),
            index: recovered.index,
            dir,
            config,
            pool,
            append_gate: Semaphore::new(1),
            flush_kick: Rc::new(Signal::default()),
            index_kick: Rc::new(Signal::default()),
            written_changed: Signal::default(),
            flusher: RefCell::new(None),
            next_changed: Signal::default(),
            retention_gate: Semaphore::new(1),
            clock,
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
                if let Some(w) = space_warning(used, total, log.config.segment_size_bytes) {
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
        Ok(log)
    }

    fn check_writable(&self) -> Result<()> {
        let st = self.st.borrow();
        if let Some(reason) = &st.failed {
            return Err(self.failed_error(reason));
        }
        if st.closed {
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
            if st.failed.is_some() {
                return;
            }
            tracing::error!(
                dir = %self.dir.path().display(),
                "commit log stopped after an I/O failure: {reason}; no further writes are \
                 accepted on this shard, restart to recover"
            );
            st.failed = Some(reason.clone());
            std::mem::take(&mut st.waiters)
        };
        for (_, tx) in waiters {
            let _ = tx.send(Err(reason.clone()));
        }
        self.flush_kick.notify();
        self.written_changed.notify();
    }

    /// Appends a producer's batch to `queue` and returns where it went. The batch is in memory
    /// (readable in async mode) but not necessarily durable: see [`Self::append_committed`].
    pub async fn append(self: &Rc<Self>, queue: QueueKey, batch: &[u8]) -> Result<Appended> {
        let max = self.config.max_batch_bytes;
        if batch.len() > max {
            return Err(StorageError::BatchTooLarge { size: batch.len(), max });
        }
        let view = BatchView::parse(batch, max)?;
        if view.header.is_control() {
            return Err(FormatError::UnknownAttributes(fmt::ATTR_CONTROL).into());
        }
        if view.header.length as usize != batch.len() {
            return Err(FormatError::BadLength {
                length: batch.len() as u64,
                min: HEADER_LEN,
                max: view.header.length as usize,
            }
            .into());
        }
        // A valid CRC over malformed records would fail every consumer of the queue.
        view.validate_records()?;
        let len = batch.len() as u64;

        let _gate = self.append_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        self.check_writable()?;
        self.ensure_active_reserved().await?;
        self.ensure_index_writable().await?;
        let needs_roll = {
            let st = self.st.borrow();
            let active = st.active();
            active.sealed_end.get().is_some()
                || st.append_pos + len + HEADER_LEN as u64
                    > active.base + self.config.segment_size_bytes
        };
        if needs_roll {
            self.roll().await?;
        }
        if self.index.must_writeback() {
            // Bound the index's unwritten entries: make them durable and write them first.
            self.flush().await?;
            self.index_writeback().await?;
        }
        self.reserve(len as usize).await?;

        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        let store_ts = self.clock.unix_ms().max(st.last_store_ts);
        st.last_store_ts = store_ts;
        let base_offset = self.index.next_offset(queue);
        let record_count = view.header.record_count;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&batch[..HEADER_LEN]);
        fmt::stamp(
            &mut header,
            &Stamp {
                topic_id: queue.topic_id,
                queue_id: queue.queue_id,
                base_offset,
                store_timestamp_ms: store_ts,
            },
        );
        let position = st.append_pos;
        self.index.push(
            queue,
            IndexEntry {
                base_offset,
                position,
                length: len as u32,
                record_count,
                store_timestamp_ms: store_ts,
            },
        );
        let active = st.active().clone();
        active.max_store_timestamp_ms.set(active.max_store_timestamp_ms.get().max(store_ts));
        self.put(st, &header);
        self.put(st, &batch[HEADER_LEN..]);
        let pending = st.append_pos - st.durable;
        drop(guard);
        if self.config.flush_mode == FlushMode::Async && pending >= self.config.flush_bytes {
            self.request_flush();
        }
        self.prepare_next_segment();
        Ok(Appended {
            queue,
            base_offset,
            record_count,
            store_timestamp_ms: store_ts,
            position: LogPosition(position),
            end: LogPosition(position + len),
        })
    }

    /// Appends and acknowledges per the flush mode: in sync mode, waits for the fdatasync
    /// covering the batch (up to `sync_flush_timeout_ms`, then `FlushDiskTimeout`).
    pub async fn append_committed(
        self: &Rc<Self>,
        queue: QueueKey,
        batch: &[u8],
    ) -> Result<(Appended, AppendStatus)> {
        let appended = self.append(queue, batch).await?;
        let status = self.commit(&appended).await?;
        Ok((appended, status))
    }

    /// The acknowledgement step of [`Self::append_committed`], for callers that release the
    /// batch's buffer between the copy and the wait: in sync mode, waits for the fdatasync
    /// covering `appended` (up to `sync_flush_timeout_ms`, then `FlushDiskTimeout`).
    pub async fn commit(self: &Rc<Self>, appended: &Appended) -> Result<AppendStatus> {
        if self.config.flush_mode == FlushMode::Async {
            return Ok(AppendStatus::Ok);
        }
        let durable =
            self.wait_durable(appended.end, Some(self.config.sync_flush_timeout())).await?;
        Ok(if durable { AppendStatus::Ok } else { AppendStatus::FlushDiskTimeout })
    }

    /// Waits until everything before `end` is durable; false if `timeout` passed first.
    pub async fn wait_durable(
        self: &Rc<Self>,
        end: LogPosition,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let rx = {
            let mut st = self.st.borrow_mut();
            if st.durable >= end.0 {
                return Ok(true);
            }
            if let Some(reason) = &st.failed {
                return Err(self.failed_error(reason));
            }
            assert!(end.0 <= st.append_pos, "waiting for {end} beyond the appended end");
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back((end.0, tx));
            st.flush_requested = true;
            rx
        };
        self.flush_kick.notify();
        let outcome = match timeout {
            Some(t) => match runtime::timeout_at(&*self.clock, self.clock.now() + t, rx).await {
                Some(r) => r,
                None => return Ok(false),
            },
            None => rx.await,
        };
        match outcome {
            Ok(Ok(())) => Ok(true),
            Ok(Err(reason)) => Err(self.failed_error(&reason)),
            Err(oneshot::Canceled) => Err(StorageError::Closed),
        }
    }

    /// Makes everything appended so far durable.
    pub async fn flush(self: &Rc<Self>) -> Result<LogPosition> {
        let end = LogPosition(self.st.borrow().append_pos);
        self.wait_durable(end, None).await?;
        Ok(end)
    }

    fn request_flush(&self) {
        self.st.borrow_mut().flush_requested = true;
        self.flush_kick.notify();
    }

    /// Acquires chunk permits so that `len` more bytes can be copied without waiting.
    async fn reserve(&self, len: usize) -> Result<()> {
        loop {
            let missing = {
                let st = self.st.borrow();
                let chunk = self.config.chunk_size_bytes;
                let space = match &st.head {
                    Some(h) => chunk - h.filled,
                    None => 0,
                };
                let carried = st.carry.as_ref().map_or(0, |c| c.bytes.len());
                let need_bytes = if st.head.is_some() { len } else { len + carried };
                let chunks = need_bytes.saturating_sub(space).div_ceil(chunk);
                chunks.saturating_sub(st.spare_permits.len())
            };
            if missing == 0 {
                return Ok(());
            }
            let permit =
                self.pool.acquire_static_permit(1).await.map_err(|_| StorageError::Closed)?;
            self.st.borrow_mut().spare_permits.push(permit);
            self.check_writable()?;
        }
    }

    /// Copies bytes into the head chunk(s); never awaits. Permits must have been reserved.
    fn put(self: &Rc<Self>, st: &mut State<D::File>, mut bytes: &[u8]) {
        let chunk = self.config.chunk_size_bytes;
        while !bytes.is_empty() {
            if st.head.is_none() {
                let permit = st.spare_permits.pop().expect("chunk permits reserved before put");
                let mut buf = runtime::alloc_dma(chunk);
                let (pos, filled) = match st.carry.take() {
                    Some(c) => {
                        buf.as_bytes_mut()[..c.bytes.len()].copy_from_slice(&c.bytes);
                        (c.pos, c.bytes.len())
                    }
                    None => {
                        assert_eq!(st.append_pos % ALIGN, 0, "a new chunk starts aligned");
                        (st.append_pos, 0)
                    }
                };
                assert_eq!(pos + filled as u64, st.append_pos, "chunk continues the log");
                st.head = Some(Head { buf: Rc::new(buf), pos, filled, dispatched: filled, permit });
            }
            let head = st.head.as_mut().expect("head chunk present");
            let n = bytes.len().min(chunk - head.filled);
            Rc::get_mut(&mut head.buf)
                .expect("the head chunk is not shared while filling")
                .as_bytes_mut()[head.filled..head.filled + n]
                .copy_from_slice(&bytes[..n]);
            head.filled += n;
            st.append_pos += n as u64;
            bytes = &bytes[n..];
            if head.filled == chunk {
                self.dispatch_head(st);
            }
        }
    }

    /// Writes the head chunk's undispatched bytes. A partial last block is carried into the
    /// next chunk, and the write that rewrites it waits for this one (same block, ordered).
    fn dispatch_head(self: &Rc<Self>, st: &mut State<D::File>) {
        let Some(mut head) = st.head.take() else { return };
        if head.dispatched == head.filled {
            // Nothing new: keep the chunk (it may still hold a carried block).
            st.head = Some(head);
            return;
        }
        let valid_start = head.pos + head.dispatched as u64;
        let valid_end = head.pos + head.filled as u64;
        let write_len = align_up(head.filled as u64) as usize;
        {
            let buf = Rc::get_mut(&mut head.buf).expect("head chunk uniquely owned");
            buf.as_bytes_mut()[head.filled..write_len].fill(0);
            buf.trim_to_size(write_len);
        }
        if head.filled as u64 % ALIGN != 0 {
            let block = align_down(head.filled as u64) as usize;
            st.carry = Some(Carry {
                pos: head.pos + block as u64,
                bytes: head.buf.as_bytes()[block..head.filled].to_vec(),
            });
        }
        let wait_for = if head.dispatched > 0 { st.last_write.clone() } else { None };
        let (done_tx, done_rx) = oneshot::channel();
        st.last_write = Some(done_rx.shared());
        st.tracker.dispatched(valid_start, valid_end);
        st.cache.insert(head.pos, valid_end, head.buf.clone());
        let seg = st.segment_for(head.pos).expect("head chunk lies in a segment").clone();
        assert!(valid_end <= seg.base + self.config.segment_size_bytes, "chunk crosses a segment");
        let file_offset = head.pos - seg.base;
        let log = self.clone();
        let Head { buf, permit, .. } = head;
        runtime::spawn_detached(async move {
            // The caller holds the state borrow while dispatching; run after it returns.
            runtime::yield_once().await;
            if let Some(prev) = wait_for {
                let _ = prev.await;
            }
            let result = seg.file.write_at(buf, file_offset).await;
            drop(permit);
            match result {
                Ok(()) => {
                    let mut st = log.st.borrow_mut();
                    seg.unsynced.set(true);
                    st.tracker.completed(valid_start, valid_end);
                    let written = st.tracker.written();
                    st.cache.evict(written);
                    drop(st);
                    log.written_changed.notify();
                }
                Err(e) => log.fail(format!(
                    "write of {} bytes at {} in segment {} failed: {e}",
                    valid_end - valid_start,
                    valid_start,
                    segment_name(seg.base)
                )),
            }
            let _ = done_tx.send(());
        });
    }

    /// Seals the active segment with an end marker and switches to the next one. The next
    /// segment is normally ready (created in the background); the switch itself never awaits.
    /// If it cannot be created for lack of space, nothing changes and the append gets DiskFull.
    async fn roll(self: &Rc<Self>) -> Result<()> {
        let marker_len = HEADER_LEN as u64;
        let (old_base, sealed_end) = {
            let st = self.st.borrow();
            let active = st.active();
            (active.base, active.sealed_end.get().unwrap_or(st.append_pos + marker_len))
        };
        let next_base = next_segment_base(old_base, sealed_end, &self.config);
        let seg = self.next_segment_for_roll(old_base, next_base).await?;
        // Reserve after the wait above: the flusher may have dispatched the head chunk
        // meanwhile. Nothing awaits between this and the switch.
        if self.st.borrow().active().sealed_end.get().is_none() {
            self.reserve(marker_len as usize).await?;
        }
        let mut st = self.st.borrow_mut();
        let active = st.active().clone();
        if active.sealed_end.get().is_none() {
            let ts = self.clock.unix_ms().max(st.last_store_ts);
            let marker = fmt::control_batch(
                &Stamp { topic_id: 0, queue_id: 0, base_offset: 0, store_timestamp_ms: ts },
                0,
            );
            assert_eq!(marker.len() as u64, marker_len, "end marker is a bare header");
            self.put(&mut st, &marker);
            assert_eq!(st.append_pos, sealed_end, "the roll was planned for this end");
            active.sealed_end.set(Some(st.append_pos));
            self.dispatch_head(&mut st);
        }
        // The carried block belongs to the sealed segment; the next segment starts fresh.
        if let Some(h) = st.head.take() {
            st.spare_permits.push(h.permit);
        }
        st.carry = None;
        st.tracker.skip_to(next_base);
        st.append_pos = next_base;
        st.segments.insert(next_base, seg);
        Ok(())
    }

    /// The segment at `base` for a roll: the one prepared in the background, or a new one.
    async fn next_segment_for_roll(
        self: &Rc<Self>,
        old_base: u64,
        base: u64,
    ) -> Result<Rc<Segment<D::File>>> {
        loop {
            let step = self.st.borrow_mut().next.for_roll(base, self.clock.now());
            match step {
                RollStep::Use(seg) => return Ok(seg),
                RollStep::Wait => {
                    self.next_changed.wait().await;
                    self.check_writable()?;
                }
                RollStep::Discard { base: stale, seg } => {
                    drop(seg);
                    self.remove_unused_segment(stale).await;
                }
                RollStep::DiskFull(reason) => return Err(self.disk_full_error(reason).await),
                RollStep::CreateNow => {
                    let created = create_segment(&self.dir, &self.config, base).await;
                    let now = self.clock.now();
                    match created {
                        Ok(seg) => {
                            let seg = Rc::new(seg);
                            let mut st = self.st.borrow_mut();
                            if let Some(seg) = st.next.created(base, Ok(seg), now) {
                                return Ok(seg);
                            }
                        }
                        Err(e) => {
                            let failure = CreateFailure::from_io(&e);
                            self.st.borrow_mut().next.created(base, Err(failure.clone()), now);
                            if failure.disk_full {
                                return Err(self.disk_full_error(failure.reason).await);
                            }
                            let reason = format!(
                                "cannot create segment after {}: {e}",
                                segment_name(old_base)
                            );
                            self.fail(reason.clone());
                            return Err(self.failed_error(&reason));
                        }
                    }
                }
            }
        }
    }

    /// Starts creating the next segment in the background once the active one is half full.
    fn prepare_next_segment(self: &Rc<Self>) {
        let base = {
            let mut st = self.st.borrow_mut();
            if st.failed.is_some() || st.closed {
                return;
            }
            let active = st.active().clone();
            let filled = st.append_pos - active.base;
            if active.sealed_end.get().is_some() || filled * 2 < self.config.segment_size_bytes {
                return;
            }
            let base =
                next_segment_base(active.base, st.append_pos + HEADER_LEN as u64, &self.config);
            if !st.next.start_background(base, self.clock.now()) {
                return;
            }
            base
        };
        let log = self.clone();
        runtime::spawn_detached(async move {
            // The appender may still hold the state borrow; run after it returns.
            runtime::yield_once().await;
            let created = create_segment(&log.dir, &log.config, base).await;
            let outcome = match created {
                Ok(seg) => Ok(Rc::new(seg)),
                Err(e) => {
                    tracing::warn!(
                        segment = %segment_name(base),
                        "creating the next segment ahead of need failed: {e}"
                    );
                    Err(CreateFailure::from_io(&e))
                }
            };
            let unused = log.st.borrow_mut().next.created(base, outcome, log.clock.now());
            if unused.is_some() {
                drop(unused);
                log.remove_unused_segment(base).await;
            }
            log.next_changed.notify();
        });
    }

    /// Deletes a created segment the log will not use (best effort: recovery discards it too).
    async fn remove_unused_segment(&self, base: u64) {
        match self.dir.remove(&segment_name(base)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                segment = %segment_name(base),
                "could not remove an unused pre-created segment: {e}"
            ),
        }
    }

    /// Preallocates the active segment if recovery could not (disk full), at most once per
    /// retry interval; DiskFull while it still does not fit.
    async fn ensure_active_reserved(&self) -> Result<()> {
        let step = self.st.borrow().next.active_step(self.clock.now());
        match step {
            ActiveStep::Reserved => return Ok(()),
            ActiveStep::DiskFull(reason) => return Err(self.disk_full_error(reason).await),
            ActiveStep::AllocateNow => {}
        }
        let active = self.st.borrow().active().clone();
        let outcome = allocate_or_give_back(&*active.file, self.config.segment_size_bytes).await;
        let now = self.clock.now();
        match outcome {
            Ok(()) => {
                self.st.borrow_mut().next.active_result(Ok(()), now);
                Ok(())
            }
            Err(e) if is_disk_full(&e) => {
                self.st.borrow_mut().next.active_result(Err(e.to_string()), now);
                Err(self.disk_full_error(e.to_string()).await)
            }
            Err(e) => {
                let reason = format!(
                    "preallocating active segment {} failed: {e}",
                    segment_name(active.base)
                );
                self.fail(reason.clone());
                Err(self.failed_error(&reason))
            }
        }
    }

    async fn disk_full_error(&self, reason: String) -> StorageError {
        let free_bytes = match self.dir.disk_usage().await {
            Ok((used, total)) => total.saturating_sub(used),
            Err(_) => 0,
        };
        StorageError::DiskFull {
            dir: self.dir.path().to_path_buf(),
            needed_bytes: self.config.segment_size_bytes,
            free_bytes,
            reason,
        }
    }

    /// Why appends get DISK_FULL now, if they do.
    pub fn disk_full(&self) -> Option<String> {
        self.st.borrow().next.disk_full_reason().map(str::to_string)
    }

    /// Reads whole stored batches of `queue` starting with the one holding `offset`, up to
    /// `max_bytes` (at least one batch when any is readable).
    pub async fn read(
        self: &Rc<Self>,
        queue: QueueKey,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadBatches> {
        enum Source {
            /// From memory we wrote: no checksum to verify.
            Ready(ReadBuf),
            /// From a disk read (now or read ahead earlier): verified below.
            FromDisk(ReadBuf, u64),
            Disk {
                pos: u64,
                len: usize,
            },
        }
        let visible = {
            let st = self.st.borrow();
            match self.config.flush_mode {
                FlushMode::Sync => st.durable,
                FlushMode::Async => st.append_pos,
            }
        };
        let Some(offsets) = self.index.visible_offsets(queue, visible) else {
            if offset == 0 {
                return Ok(ReadBatches {
                    batches: vec![],
                    next_offset: 0,
                    offsets: QueueOffsets::default(),
                });
            }
            return Err(StorageError::OffsetOutOfRange {
                queue,
                requested: offset,
                min: 0,
                next: 0,
            });
        };
        if offset < offsets.min || offset > offsets.next {
            return Err(StorageError::OffsetOutOfRange {
                queue,
                requested: offset,
                min: offsets.min,
                next: offsets.next,
            });
        }
        let entries = if offset < offsets.next {
            self.index_entries(queue, offset, max_bytes, visible).await?
        } else {
            Vec::new()
        };
        let (plan, offsets, next_offset) = {
            let mut guard = self.st.borrow_mut();
            let st = &mut *guard;
            let written = st.tracker.written();
            let next_offset = entries.last().map_or(offset, IndexEntry::next_offset);
            let mut plan = Vec::with_capacity(entries.len());
            for e in &entries {
                let len = e.length as usize;
                if let Some(hit) = st.cache.get(e.position, len) {
                    plan.push(Source::Ready(hit));
                } else if let Some(bytes) = memory_copy(st, e.position, len) {
                    // Straddles two cached chunks (or the head chunk): one copy, no disk I/O.
                    plan.push(Source::Ready(ReadBuf::from_vec(bytes)));
                } else if let Some(buf) = read_ahead_hit(&st.read_ahead, e.position, len) {
                    plan.push(Source::FromDisk(buf, e.position));
                } else if e.end() <= written {
                    plan.push(Source::Disk { pos: e.position, len });
                } else {
                    // Not yet on disk and not all in memory: its beginning was evicted after
                    // it reached disk (the bytes at/after `written` are always in memory).
                    plan.push(Source::Disk { pos: e.position, len });
                }
            }
            (plan, offsets, next_offset)
        };
        let mut batches = Vec::with_capacity(plan.len());
        // A batch that fails verification ends the read: the batches before it are returned
        // (the next read starts at it), and a read that starts at it reports its offsets so a
        // consumer can skip it explicitly.
        let bad_batch = |k: usize, e: StorageError, batches: Vec<ReadBuf>| match e {
            StorageError::Corrupt { file, offset: at, reason } if k == 0 => {
                Err(StorageError::CorruptBatch {
                    queue,
                    first_offset: entries[0].base_offset,
                    next_offset: entries[0].next_offset(),
                    file,
                    offset: at,
                    reason,
                })
            }
            StorageError::Corrupt { .. } => {
                Ok(ReadBatches { batches, next_offset: entries[k].base_offset, offsets })
            }
            e => Err(e),
        };
        let mut i = 0;
        while i < plan.len() {
            match &plan[i] {
                Source::Ready(b) => batches.push(b.clone()),
                Source::FromDisk(b, pos) => match self.verified(b.clone(), *pos, b.len()) {
                    Ok(b) => batches.push(b),
                    Err(e) => return bad_batch(i, e, batches),
                },
                Source::Disk { pos, len } => {
                    // Coalesce the following disk batches that lie close after this one.
                    let (start, mut end) = (*pos, *pos + *len as u64);
                    let span_limit = (max_bytes.max(self.config.read_ahead_bytes) * 2) as u64;
                    // One read never crosses into the next segment (another file).
                    let next_segment = {
                        let st = self.st.borrow();
                        st.segments.range(start + 1..).next().map_or(u64::MAX, |(b, _)| *b)
                    };
                    let mut j = i + 1;
                    while let Some(Source::Disk { pos: p, len: l }) = plan.get(j) {
                        let (p, l) = (*p, *l as u64);
                        if p < end
                            || p - end > COALESCE_GAP_BYTES
                            || p + l - start > span_limit
                            || p + l > next_segment
                        {
                            break;
                        }
                        end = p + l;
                        j += 1;
                    }
                    let span = self.read_span(start, end).await?;
                    for (k, src) in plan[i..j].iter().enumerate() {
                        let Source::Disk { pos, len } = src else { unreachable!("disk run") };
                        let b = span.slice((pos - start) as usize, *len);
                        match self.verified(b, *pos, *len) {
                            Ok(b) => batches.push(b),
                            Err(e) => return bad_batch(i + k, e, batches),
                        }
                    }
                    i = j;
                    continue;
                }
            }
            i += 1;
        }
        Ok(ReadBatches { batches, next_offset, offsets })
    }

    /// The index entries of `queue` from the one holding `offset`, about `max_bytes` of
    /// batches that end at or before `visible`.
    async fn index_entries(
        &self,
        queue: QueueKey,
        offset: u64,
        max_bytes: usize,
        visible: u64,
    ) -> Result<Vec<IndexEntry>> {
        let found = match self.index.find(&self.dir, queue, offset).await {
            Ok(Some(n)) => self.index.entries_from(&self.dir, queue, n, max_bytes, visible).await,
            Ok(None) => Err(LookupError::Gone),
            Err(e) => Err(e),
        };
        found.map_err(|e| self.lookup_error(queue, offset, e))
    }

    fn lookup_error(&self, queue: QueueKey, offset: u64, e: LookupError) -> StorageError {
        match e {
            LookupError::Gone => {
                // Retention dropped the entry while we looked for it.
                let o = self.offsets(queue);
                StorageError::OffsetOutOfRange {
                    queue,
                    requested: offset,
                    min: o.min,
                    next: o.next,
                }
            }
            LookupError::Io(e) => StorageError::io(format!("reading the index of {queue}"), e),
            LookupError::Corrupt { file, reason } => {
                StorageError::Corrupt { file, offset: 0, reason }
            }
        }
    }

    /// Checks a batch read from disk: both checksums must match.
    fn verified(&self, buf: ReadBuf, pos: u64, len: usize) -> Result<ReadBuf> {
        let corrupt = |reason: String| {
            let base = self.st.borrow().segment_for(pos).map_or(0, |s| s.base);
            StorageError::Corrupt {
                file: segment_name(base),
                offset: pos - base,
                reason: format!("batch fails verification: {reason}"),
            }
        };
        let view = BatchView::parse(&buf, len).map_err(|e| corrupt(e.to_string()))?;
        view.verify_stamp().map_err(|e| corrupt(e.to_string()))?;
        Ok(buf)
    }

    /// Reads log bytes `[start, end)` (one segment) from disk, plus up to `read_ahead_bytes`
    /// more that are already written, keeping the extra for the next sequential read.
    async fn read_span(&self, start: u64, end: u64) -> Result<ReadBuf> {
        if self.st.borrow().tracker.written() < end {
            // Only reachable when the memory path lost a batch's start (evicted after it
            // reached disk) while its end is not written yet: get it to disk first.
            self.request_flush();
            while self.st.borrow().tracker.written() < end {
                self.check_writable()?;
                runtime::sleep(Duration::from_millis(1)).await;
            }
        }
        let (seg, want_end) = {
            let st = self.st.borrow();
            let Some(seg) = st.segment_for(start).cloned() else {
                return Err(StorageError::Corrupt {
                    file: "?".into(),
                    offset: start,
                    reason: "batch lies in a deleted segment".into(),
                });
            };
            let seg_end = seg.sealed_end.get().unwrap_or(seg.base + self.config.segment_size_bytes);
            let limit = st.tracker.written().min(seg_end);
            (seg, (end + self.config.read_ahead_bytes as u64).min(limit).max(end))
        };
        let file_off = start - seg.base;
        let buf = seg
            .file
            .read_at(file_off, (want_end - start) as usize)
            .await
            .map_err(|e| StorageError::io(format!("reading {}", segment_name(seg.base)), e))?;
        if buf.len() < (end - start) as usize {
            return Err(StorageError::Corrupt {
                file: segment_name(seg.base),
                offset: file_off,
                reason: format!("short read: {} of {} bytes", buf.len(), end - start),
            });
        }
        if buf.len() as u64 > end - start {
            let mut st = self.st.borrow_mut();
            if st.read_ahead.len() == READ_AHEAD_SLOTS {
                st.read_ahead.pop_front();
            }
            st.read_ahead.push_back((start, buf.clone()));
        }
        Ok(buf)
    }

    /// Every queue that has stored batches (or had them), in key order.
    pub fn queues(&self) -> Vec<QueueKey> {
        let mut v = self.index.queue_keys();
        v.sort();
        v
    }

    /// The readable offsets of `queue` (`{0, 0}` if it was never written).
    pub fn offsets(&self, queue: QueueKey) -> QueueOffsets {
        self.index.visible_offsets(queue, self.visible_end().0).unwrap_or_default()
    }

    /// First offset of `queue` stored at or after `ts_ms`; the next offset if none. Bounded
    /// by the readable end (like [`Self::offsets`]), so a fetch at the answer never fails.
    pub async fn offset_for_timestamp(&self, queue: QueueKey, ts_ms: i64) -> Result<u64> {
        match self.index.offset_for_timestamp(&self.dir, queue, ts_ms).await {
            Ok(o) => Ok(o.min(self.offsets(queue).next)),
            // Retention dropped the entry found: the answer is now the queue's first offset.
            Err(LookupError::Gone) => Ok(self.offsets(queue).min),
            Err(e) => Err(self.lookup_error(queue, 0, e)),
        }
    }

    /// The log position up to which appended data is readable: the durable end in sync flush
    /// mode, the appended end in async mode.
    pub fn visible_end(&self) -> LogPosition {
        let st = self.st.borrow();
        LogPosition(match self.config.flush_mode {
            FlushMode::Sync => st.durable,
            FlushMode::Async => st.append_pos,
        })
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
        (LogPosition(st.append_pos), LogPosition(st.tracker.written()), LogPosition(st.durable))
    }

    /// Cache statistics: (bytes held, hits, misses).
    pub fn cache_stats(&self) -> (usize, u64, u64) {
        let st = self.st.borrow();
        let (h, m) = st.cache.stats();
        (st.cache.bytes(), h, m)
    }

    /// Bases of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.st.borrow().segments.keys().copied().collect()
    }

    /// Is the log stopped after an I/O failure?
    pub fn failure(&self) -> Option<String> {
        self.st.borrow().failed.clone()
    }

    /// Applies the retention policy at time `now_ms`; returns the bases of deleted segments.
    ///
    /// Runs beside appends, not under the append gate: only the bookkeeping is synchronous;
    /// writing the floors and unlinking files (slow for a 1 GiB file) await without blocking
    /// appends. A file that cannot be unlinked is reported (Err) and retried on every later
    /// run: its data is already gone from the log (floors written), only its space is not yet
    /// back; recovery skips its batches by the floors if the broker restarts meanwhile.
    pub async fn enforce_retention(self: &Rc<Self>, now_ms: i64) -> Result<Vec<u64>> {
        let _running =
            self.retention_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        self.check_writable()?;
        let mut first_error = None;
        let pending = std::mem::take(&mut self.st.borrow_mut().pending_deletes);
        let retried = !pending.is_empty();
        if let Err(e) = self.delete_files(pending).await {
            first_error = Some(e);
        }
        let (used, total) =
            self.dir.disk_usage().await.map_err(|e| StorageError::io("reading disk usage", e))?;
        let doomed = {
            let st = self.st.borrow();
            let active = st.active().base;
            let facts: Vec<SegmentFacts> = st
                .segments
                .values()
                .filter(|s| s.base != active)
                // Only segments whose every byte is durable and indexed may go.
                .take_while(|s| s.sealed_end.get().is_some_and(|e| e <= st.durable))
                .map(|s| SegmentFacts {
                    base: s.base,
                    size_bytes: self.config.segment_size_bytes,
                    max_store_timestamp_ms: s.max_store_timestamp_ms.get(),
                })
                .collect();
            let policy = RetentionPolicy {
                retention_ms: self.config.retention_hours as i64 * 3_600_000,
                disk_max_used_ratio: self.config.disk_max_used_ratio,
            };
            segments_to_delete(&policy, &facts, now_ms, used, total)
        };
        let Some(&last) = doomed.last() else {
            if retried {
                self.space_freed();
            }
            return first_error.map_or(Ok(vec![]), Err);
        };
        let new_start = {
            let st = self.st.borrow();
            *st.segments.range(last + 1..).next().expect("the active segment remains").0
        };
        // Record each queue's new floor before deleting, so offsets never go back after a
        // restart even if a queue loses all its data.
        let index_gate = self.index.lock().await;
        let dropped_files = self
            .index
            .drop_before(&self.dir, new_start)
            .await
            .map_err(|e| index_error("dropping index entries", e))?;
        drop(index_gate);
        // From here the entries are gone from the index: their files must be deleted by this
        // run or a later one, whatever fails below.
        self.st.borrow_mut().pending_index_deletes.extend(dropped_files);
        let floors = {
            let mut st = self.st.borrow_mut();
            st.cache.retain_range(new_start, u64::MAX);
            st.read_ahead.retain(|(start, _)| *start >= new_start);
            encode_floors(&self.index.floors())
        };
        // If this fails the segments stay in the log (their queue entries are already
        // dropped from memory) and the next run deletes them.
        self.dir
            .write_atomic(FLOOR_FILE, &floors)
            .await
            .map_err(|e| StorageError::io("writing queue floors", e))?;
        // The floors are durable: the index files holding only dropped entries may go. Taken
        // again (not held across the floors write) so write-back and checkpoints go on meanwhile;
        // they never touch those files, which hold only entries below every queue's first.
        let index_gate = self.index.lock().await;
        let index_files = std::mem::take(&mut self.st.borrow_mut().pending_index_deletes);
        let removed = self.index.remove_files(&self.dir, &index_files).await;
        drop(index_gate);
        if let Err(e) = removed {
            // Retried by the next run (deleting a file twice is fine); recovery deletes such
            // stale files too.
            tracing::warn!("retention could not delete index files, will retry: {e}");
            first_error.get_or_insert(StorageError::io("deleting index files", e));
            self.st.borrow_mut().pending_index_deletes.extend(index_files);
        }
        let mut names = Vec::with_capacity(doomed.len());
        {
            let mut st = self.st.borrow_mut();
            for base in &doomed {
                st.segments.remove(base);
                names.push(segment_name(*base));
            }
        }
        let deleted = self.delete_files(names).await;
        self.space_freed();
        tracing::info!(deleted = doomed.len(), "retention deleted segments");
        match first_error.map_or(deleted, Err) {
            Ok(()) => Ok(doomed),
            Err(e) => Err(e),
        }
    }

    /// Unlinks files the log no longer refers to, then syncs the directory. Names that could
    /// not be unlinked go to `pending_deletes` (retried by the next retention run); the first
    /// error is returned.
    async fn delete_files(&self, names: Vec<String>) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let mut first_error = None;
        for name in names {
            match self.dir.remove(&name).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %name, "retention could not delete a file, will retry: {e}");
                    first_error.get_or_insert(StorageError::io(format!("deleting {name}"), e));
                    self.st.borrow_mut().pending_deletes.push(name);
                }
            }
        }
        if let Err(e) = self.dir.sync_dir().await {
            first_error.get_or_insert(StorageError::io("syncing data directory", e));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Retention freed space: an append waiting out a disk-full back-off may try at once.
    fn space_freed(&self) {
        self.st.borrow_mut().next.space_freed(self.clock.now());
    }

    /// Files retention dropped from the log but could not unlink yet.
    pub fn pending_deletes(&self) -> Vec<String> {
        self.st.borrow().pending_deletes.clone()
    }

    /// Writes the index entries of every durable batch to the index files.
    async fn index_writeback(&self) -> Result<()> {
        let _gate = self.index.lock().await;
        let durable = self.st.borrow().durable;
        let written = self.index.writeback(&self.dir, durable).await;
        match written {
            Ok(()) => Ok(()),
            Err(e) => Err(self.index_write_failed("writing the queue index", e).await),
        }
    }

    /// The error for a failed index write. Without space (ENOSPC, EDQUOT) nothing was lost:
    /// the unwritten entries stay in memory, appends get DiskFull until a retry succeeds (see
    /// [`Self::ensure_index_writable`]) and reads go on. Anything else, and every failed
    /// fdatasync, stops the log like a failed data write.
    async fn index_write_failed(&self, what: &str, e: WritebackError) -> StorageError {
        match e {
            WritebackError::Write(e) if is_disk_full(&e) => {
                let reason = format!("{what}: {e}");
                tracing::warn!("{reason}; appends get DISK_FULL until there is room");
                self.st.borrow_mut().next.index_result(Err(reason.clone()), self.clock.now());
                self.disk_full_error(reason).await
            }
            e => {
                let reason = format!("{what} failed: {e}");
                self.fail(reason.clone());
                self.failed_error(&reason)
            }
        }
    }

    /// Appends wait here while the index could not be written for lack of space: DiskFull
    /// until the retry time, then one attempt (write-back, and the checkpoint if one is due).
    async fn ensure_index_writable(self: &Rc<Self>) -> Result<()> {
        let step = self.st.borrow().next.index_step(self.clock.now());
        match step {
            IndexStep::Writable => Ok(()),
            IndexStep::DiskFull(reason) => Err(self.disk_full_error(reason).await),
            IndexStep::RetryNow => {
                self.index_writeback().await?;
                if self.checkpoint_due() {
                    self.checkpoint_index().await?;
                }
                self.st.borrow_mut().next.index_result(Ok(()), self.clock.now());
                Ok(())
            }
        }
    }

    /// Is a checkpoint due? One per `segment_size_bytes` of durable log bounds what recovery
    /// scans to about two segments.
    fn checkpoint_due(&self) -> bool {
        let durable = self.st.borrow().durable;
        durable >= self.index.checkpoint_position() + self.config.segment_size_bytes
    }

    /// Writes every entry of the batches appended so far, makes the index files durable and
    /// then records `index.checkpoint`, so recovery only scans the log past this point.
    /// Waits for the log's durability of those batches first. A failed index write or sync
    /// stops the log, like a failed log write, except for a lack of space: that is DiskFull
    /// (see [`Self::index_write_failed`]), the previous checkpoint stays valid.
    pub async fn checkpoint_index(self: &Rc<Self>) -> Result<()> {
        let _gate = self.index.lock().await;
        self.check_writable()?;
        let (position, segments) = {
            let st = self.st.borrow();
            let segments = st
                .segments
                .values()
                .map(|s| SegmentCheckpoint {
                    base: s.base,
                    sealed_end: s.sealed_end.get(),
                    max_store_timestamp_ms: s.max_store_timestamp_ms.get(),
                })
                .collect();
            (st.append_pos, segments)
        };
        let queues = self.index.snapshot();
        self.wait_durable(LogPosition(position), None).await?;
        let written = self.index.writeback(&self.dir, position).await;
        if let Err(e) = written {
            return Err(self.index_write_failed("writing the queue index", e).await);
        }
        let synced = self.index.sync(&self.dir).await;
        if let Err(e) = synced {
            let what = "syncing the queue index";
            return Err(self.index_write_failed(what, WritebackError::Sync(e)).await);
        }
        let ckpt = IndexCheckpoint {
            position,
            file_entries: self.config.index_file_entries,
            segments,
            queues,
        };
        let stored = self.dir.write_atomic(CHECKPOINT_FILE, &ckpt.encode()).await;
        if let Err(e) = stored {
            // The index files are durable; only the new checkpoint is missing (the old one
            // still describes a valid prefix), so this is a write, not a sync, failure.
            let what = "writing the index checkpoint";
            return Err(self.index_write_failed(what, WritebackError::Write(e)).await);
        }
        self.index.checkpointed(position);
        Ok(())
    }

    /// Flushes everything, writes the active segment's index checkpoint (so the next open
    /// scans nothing), and stops the flusher. Appends after this fail with `Closed`.
    pub async fn close(self: &Rc<Self>) -> Result<()> {
        let _gate = self.append_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        if self.st.borrow().closed {
            return Ok(());
        }
        if self.st.borrow().failed.is_none() {
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
        self.st.borrow_mut().closed = true;
        self.flush_kick.notify();
        self.index_kick.notify();
        let handle = self.flusher.borrow_mut().take();
        if let Some(h) = handle {
            h.await;
        }
        // No task of this log may touch the directory after close returns (a log reopened on
        // it would lose files): wait for retention and for a segment creation in flight, and
        // delete the prepared segment that will not be used.
        let _retention =
            self.retention_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        while self.st.borrow().next.is_creating() {
            self.next_changed.wait().await;
        }
        let ready = self.st.borrow_mut().next.take_ready();
        if let Some((base, seg)) = ready {
            drop(seg);
            self.remove_unused_segment(base).await;
        }
        let failed = self.st.borrow().failed.clone();
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

/// Where the segment after one based at `base` and sealed at `sealed_end` starts (robust to
/// `segment_size_bytes` changing between runs).
fn next_segment_base(base: u64, sealed_end: u64, config: &StorageConfig) -> u64 {
    (base + config.segment_size_bytes).max(align_up(sealed_end))
}

impl<D: LogDir> Drop for CommitLog<D> {
    fn drop(&mut self) {
        // Lets the flusher and the index task notice the log is gone instead of waiting forever.
        self.flush_kick.notify();
        self.index_kick.notify();
    }
}

/// The bytes `[pos, pos + len)` if a read-ahead buffer holds them.
fn read_ahead_hit(slots: &VecDeque<(u64, ReadBuf)>, pos: u64, len: usize) -> Option<ReadBuf> {
    slots.iter().rev().find_map(|(start, buf)| {
        (pos >= *start && pos + len as u64 <= start + buf.len() as u64)
            .then(|| buf.slice((pos - start) as usize, len))
    })
}

/// The log bytes `[pos, pos + len)` copied from memory, if memory holds all of them.
fn memory_copy<F>(st: &State<F>, pos: u64, len: usize) -> Option<Vec<u8>> {
    // Cheap pre-check so a cold read does not allocate and copy in vain.
    let starts_in_memory = st.cache.contains(pos)
        || st.head.as_ref().is_some_and(|h| pos >= h.pos && pos < h.pos + h.filled as u64);
    if !starts_in_memory {
        return None;
    }
    let mut out = vec![0u8; len];
    (copy_from_memory(st, pos, &mut out) == len).then_some(out)
}

/// Copies the log bytes from `pos` into `out` from the cache and the head chunk.
fn copy_from_memory<F>(st: &State<F>, pos: u64, out: &mut [u8]) -> usize {
    let mut done = st.cache.copy_prefix(pos, out);
    if done < out.len() {
        if let Some(h) = &st.head {
            let at = pos + done as u64;
            if at >= h.pos && at < h.pos + h.filled as u64 {
                let from = (at - h.pos) as usize;
                let n = (h.filled - from).min(out.len() - done);
                out[done..done + n].copy_from_slice(&h.buf.as_bytes()[from..from + n]);
                done += n;
            }
        }
    }
    done
}

fn encode_floors(floors: &[(QueueKey, u64)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + floors.len() * 16);
    b.extend_from_slice(&(floors.len() as u32).to_le_bytes());
    for (q, floor) in floors {
        b.extend_from_slice(&q.topic_id.to_le_bytes());
        b.extend_from_slice(&q.queue_id.to_le_bytes());
        b.extend_from_slice(&floor.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode_floors(b: &[u8]) -> std::result::Result<HashMap<QueueKey, u64>, String> {
    if b.len() < 8 {
        return Err("queue floor file too short".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
        return Err("queue floor file checksum mismatch".into());
    }
    let n = u32::from_le_bytes(body[..4].try_into().expect("4")) as usize;
    if body.len() != 4 + n * 16 {
        return Err("queue floor file length mismatch".into());
    }
    let mut out = HashMap::with_capacity(n);
    for i in 0..n {
        let at = 4 + i * 16;
        let t = u32::from_le_bytes(body[at..at + 4].try_into().expect("4"));
        let q = u32::from_le_bytes(body[at + 4..at + 8].try_into().expect("4"));
        let f = u64::from_le_bytes(body[at + 8..at + 16].try_into().expect("8"));
        out.insert(QueueKey::new(t, q), f);
    }
    Ok(out)
}

/// What recovery found.
struct Recovered<F> {
    segments: BTreeMap<u64, Rc<Segment<F>>>,
    index: IndexStore<F>,
    end: u64,
    carry: Option<Carry>,
    last_store_ts: i64,
    /// Space recovery could not reserve (disk full); appends get DiskFull until it can.
    shortage: Option<Shortage>,
}

/// Outcome of scanning one segment.
enum ScanEnd {
    /// Hit the end marker: the segment is sealed at this position.
    Sealed(u64),
    /// Valid data ends here; `torn` when bytes that are not a valid batch follow (a crash in the
    /// middle of a write), false at a clean end (zeros or end of file).
    Open { end: u64, torn: bool },
}

/// Rebuilds the log's state from disk: loads the index checkpoint, scans the log past it
/// verifying every batch (and rebuilding its index entries), truncates a torn tail and
/// discards anything after the first invalid byte.
async fn recover<D: LogDir>(dir: &D, config: &StorageConfig) -> Result<Recovered<D::File>> {
    let io = |ctx: String| move |e| StorageError::io(ctx, e);
    let names = dir.list().await.map_err(io(format!("listing {}", dir.path().display())))?;
    let mut bases: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    bases.sort_unstable();
    for n in names.iter().filter(|n| n.ends_with(".tmp")) {
        let _ = dir.remove(n).await;
    }
    let floors = match dir.read_all(FLOOR_FILE).await.map_err(io("reading queue floors".into()))? {
        Some(b) => decode_floors(&b).map_err(|reason| StorageError::Corrupt {
            file: FLOOR_FILE.into(),
            offset: 0,
            reason,
        })?,
        None => HashMap::new(),
    };
    let (index, checkpoint_segments) = recover_index(dir, config, &names, &floors).await?;
    let mut segments = BTreeMap::new();
    let mut last_store_ts = i64::MIN;

    if bases.is_empty() {
        let seg = match create_segment(dir, config, 0).await {
            Ok(seg) => seg,
            Err(e) if is_disk_full(&e) => {
                let free_bytes =
                    dir.disk_usage().await.map_or(0, |(used, total)| total.saturating_sub(used));
                return Err(StorageError::DiskFull {
                    dir: dir.path().to_path_buf(),
                    needed_bytes: config.segment_size_bytes,
                    free_bytes,
                    reason: format!("creating the first segment: {e}"),
                });
            }
            Err(e) => return Err(StorageError::io("creating first segment", e)),
        };
        segments.insert(0, Rc::new(seg));
        return Ok(Recovered {
            segments,
            index,
            end: 0,
            carry: None,
            last_store_ts: 0,
            shortage: None,
        });
    }

    let started = std::time::Instant::now();
    let (mut scanned_bytes, mut discarded_segments) = (0u64, 0usize);
    let mut end = bases[0];
    let mut torn_tail = false;
    let mut stop_after: Option<usize> = None;
    for (i, &base) in bases.iter().enumerate() {
        let file = dir
            .open(&segment_name(base), false)
            .await
            .map_err(io(format!("opening {}", segment_name(base))))?;
        let seg = Segment::new(base, file);
        if base < end {
            // Overlaps the previous segment's data: not written by us; stop here.
            stop_after = Some(i);
            break;
        }
        // Segments the checkpoint describes are not scanned below its position.
        let indexed_to = index.checkpoint_position();
        let mut scan_from = base;
        if let Some(c) = checkpoint_segments.get(&base) {
            seg.max_store_timestamp_ms.set(c.max_store_timestamp_ms);
            match c.sealed_end {
                Some(e) if e <= indexed_to => seg.sealed_end.set(Some(e)),
                _ => scan_from = base.max(indexed_to),
            }
        }
        let outcome = if let Some(e) = seg.sealed_end.get() {
            ScanEnd::Sealed(e)
        } else {
            let size = seg.file.size().await.map_err(io(format!("stat {}", segment_name(base))))?;
            let limit = base + size.max(config.segment_size_bytes);
            let outcome =
                scan_segment(dir, &seg, config, scan_from, limit, &index, &floors).await?;
            let (ScanEnd::Sealed(e) | ScanEnd::Open { end: e, .. }) = outcome;
            scanned_bytes += e.saturating_sub(scan_from);
            outcome
        };
        last_store_ts = last_store_ts.max(seg.max_store_timestamp_ms.get());
        let seg = Rc::new(seg);
        segments.insert(base, seg.clone());
        match outcome {
            ScanEnd::Sealed(e) => {
                seg.sealed_end.set(Some(e));
                end = e;
            }
            ScanEnd::Open { end: e, torn } => {
                end = e;
                torn_tail = torn;
                stop_after = Some(i + 1);
                break;
            }
        }
    }

    // Anything after the first open (unsealed) segment is past a hole: it was never
    // acknowledged as durable (the durable position only advances contiguously). Drop it.
    if let Some(from) = stop_after {
        discarded_segments = bases.len() - from;
        for &base in &bases[from..] {
            tracing::warn!(segment = %segment_name(base), "discarding segment past the recovered end");
            let name = segment_name(base);
            match dir.remove(&name).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StorageError::io(format!("discarding {name} during recovery"), e))
                }
            }
        }
    }
    let last = segments.values().next_back().expect("at least one segment").clone();
    let mut shortage = None;
    if let Some(sealed_end) = last.sealed_end.get() {
        // Sealed with no successor (a data directory from before segments were created ahead
        // of the roll, or one whose next segment was deleted).
        let next = next_segment_base(last.base, sealed_end, config);
        match create_segment(dir, config, next).await {
            Ok(seg) => {
                segments.insert(next, Rc::new(seg));
                end = next;
            }
            Err(e) if is_disk_full(&e) => {
                // Open for reads; the first append that finds space creates it.
                shortage = Some(Shortage::NoNextSegment { base: next, reason: e.to_string() });
                end = sealed_end;
            }
            Err(e) => return Err(StorageError::io(format!("creating {}", segment_name(next)), e)),
        }
    } else {
        // Cut stale bytes past the valid end so no old batch can ever reappear after it.
        let file_end = end - last.base;
        let size =
            last.file.size().await.map_err(io(format!("stat {}", segment_name(last.base))))?;
        if size > file_end {
            if torn_tail {
                tracing::warn!(
                    segment = %segment_name(last.base),
                    valid_bytes = file_end,
                    "recovered from a torn write: truncating the invalid tail"
                );
            }
            last.file.truncate(file_end).await.map_err(io("truncating torn tail".into()))?;
            last.file.sync_data().await.map_err(io("syncing truncated segment".into()))?;
        }
        if config.preallocate {
            // Usually a no-op: the segment was preallocated when created. It is not when a
            // previous run could not (disk full); then open anyway, for reads.
            match allocate_or_give_back(&*last.file, config.segment_size_bytes).await {
                Ok(()) => {}
                Err(e) if is_disk_full(&e) => {
                    shortage = Some(Shortage::ActiveUnallocated { reason: e.to_string() });
                }
                Err(e) => return Err(StorageError::io("preallocating segment", e)),
            }
        }
    }
    dir.sync_dir().await.map_err(io("syncing data directory".into()))?;
    if end < index.checkpoint_position() {
        // The log ends before what the checkpoint indexed (only after corruption).
        index
            .truncate_from(dir, end)
            .await
            .map_err(|e| index_error("truncating the queue index", e))?;
    }
    // The block holding the end is rewritten by the next write: carry its valid prefix.
    let carry = if end % ALIGN != 0 {
        let seg = segments.values().next_back().expect("active").clone();
        let block = align_down(end);
        let buf = seg
            .file
            .read_at(block - seg.base, (end - block) as usize)
            .await
            .map_err(io("reading the last block".into()))?;
        if buf.len() != (end - block) as usize {
            return Err(StorageError::Corrupt {
                file: segment_name(seg.base),
                offset: block - seg.base,
                reason: "last block shorter than recovered data".into(),
            });
        }
        Some(Carry { pos: block, bytes: buf.to_vec() })
    } else {
        None
    };
    // Per-segment index files of the previous format are replaced by the queue index files.
    for n in &names {
        if n.strip_suffix(INDEX_SUFFIX).is_some_and(|d| d.parse::<u64>().is_ok()) {
            let _ = dir.remove(n).await;
        }
    }
    // One line per start says what recovery cost: restart time is bounded by the unindexed
    // tail it had to scan.
    tracing::info!(
        dir = %dir.path().display(),
        segments = segments.len(),
        end,
        index_checkpoint = index.checkpoint_position(),
        scanned_bytes,
        torn_tail,
        discarded_segments,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered the log"
    );
    Ok(Recovered {
        segments,
        index,
        end,
        carry,
        last_store_ts: if last_store_ts == i64::MIN { 0 } else { last_store_ts },
        shortage,
    })
}

/// The queue index as the checkpoint left it, adjusted to the queue floors; rebuilt from
/// nothing (by the log scan that follows) when the checkpoint or the index files it points to
/// cannot be trusted.
async fn recover_index<D: LogDir>(
    dir: &D,
    config: &StorageConfig,
    names: &[String],
    floors: &HashMap<QueueKey, u64>,
) -> Result<(IndexStore<D::File>, HashMap<u64, SegmentCheckpoint>)> {
    let fresh = || IndexStore::new(config.index_file_entries, config.index_cache_bytes);
    let checkpoint = match dir.read_all(CHECKPOINT_FILE).await {
        Ok(Some(b)) => match IndexCheckpoint::decode(&b) {
            Ok(c) if c.file_entries == config.index_file_entries => Some(c),
            Ok(c) => {
                tracing::warn!(
                    "index_file_entries changed from {} to {}; rebuilding the queue index from \
                     the log",
                    c.file_entries,
                    config.index_file_entries
                );
                None
            }
            Err(reason) => {
                tracing::warn!("{reason}; rebuilding the queue index from the log");
                None
            }
        },
        Ok(None) => None,
        Err(e) => return Err(StorageError::io("reading the index checkpoint", e)),
    };
    let index = fresh();
    match index.recover(dir, names, checkpoint.as_ref(), floors).await {
        Ok(()) => {
            let segments = checkpoint
                .map(|c| c.segments.into_iter().map(|s| (s.base, s)).collect())
                .unwrap_or_default();
            Ok((index, segments))
        }
        Err(e) => {
            tracing::warn!(
                "queue index files do not match the checkpoint ({}); rebuilding the queue \
                 index from the log",
                index_error("loading the queue index", e)
            );
            let index = fresh();
            index
                .recover(dir, names, None, floors)
                .await
                .map_err(|e| index_error("rebuilding the queue index", e))?;
            Ok((index, HashMap::new()))
        }
    }
}

fn index_error(what: &str, e: LookupError) -> StorageError {
    match e {
        LookupError::Io(e) => StorageError::io(what, e),
        LookupError::Gone => StorageError::Corrupt {
            file: CHECKPOINT_FILE.into(),
            offset: 0,
            reason: format!("{what}: an entry it counts is missing"),
        },
        LookupError::Corrupt { file, reason } => {
            StorageError::Corrupt { file, offset: 0, reason: format!("{what}: {reason}") }
        }
    }
}

/// Scans a segment from `from`, verifying each batch, adding index entries.
async fn scan_segment<D: LogDir>(
    dir: &D,
    seg: &Segment<D::File>,
    config: &StorageConfig,
    from: u64,
    seg_end: u64,
    index: &IndexStore<D::File>,
    floors: &HashMap<QueueKey, u64>,
) -> Result<ScanEnd> {
    let mut pos = from;
    // Set after a write-back found no room: the rest of this segment's entries stay in memory.
    let mut index_full = false;
    let mut buf = ReadBuf::from_vec(Vec::new());
    let mut buf_pos = pos;
    loop {
        if pos + HEADER_LEN as u64 > seg_end {
            return Ok(ScanEnd::Open { end: pos, torn: false });
        }
        // Make sure the header is in the buffer.
        if pos + HEADER_LEN as u64 > buf_pos + buf.len() as u64 {
            buf_pos = pos;
            buf = seg
                .file
                .read_at(pos - seg.base, SCAN_READ_BYTES.min((seg_end - pos) as usize))
                .await
                .map_err(|e| StorageError::io(format!("scanning {}", segment_name(seg.base)), e))?;
            if buf.len() < HEADER_LEN {
                return Ok(ScanEnd::Open { end: pos, torn: false });
            }
        }
        let at = (pos - buf_pos) as usize;
        let length = fmt::peek_length(&buf[at..]).unwrap_or(0) as usize;
        if length == 0 {
            return Ok(ScanEnd::Open { end: pos, torn: false });
        }
        if length < HEADER_LEN || length > config.max_batch_bytes || pos + length as u64 > seg_end {
            return Ok(ScanEnd::Open { end: pos, torn: true });
        }
        if at + length > buf.len() {
            buf_pos = pos;
            buf = seg
                .file
                .read_at(pos - seg.base, length.max(SCAN_READ_BYTES.min((seg_end - pos) as usize)))
                .await
                .map_err(|e| StorageError::io(format!("scanning {}", segment_name(seg.base)), e))?;
            if buf.len() < length {
                return Ok(ScanEnd::Open { end: pos, torn: true });
            }
        }
        let at = (pos - buf_pos) as usize;
        let Ok(view) = BatchView::parse(&buf[at..at + length], config.max_batch_bytes) else {
            return Ok(ScanEnd::Open { end: pos, torn: true });
        };
        if view.verify_stamp().is_err() {
            return Ok(ScanEnd::Open { end: pos, torn: true });
        }
        let h = view.header;
        if h.is_control() {
            return Ok(ScanEnd::Sealed(pos + length as u64));
        }
        let q = QueueKey::new(h.stamp.topic_id, h.stamp.queue_id);
        let floor = floors.get(&q).copied().unwrap_or(0);
        let entry = IndexEntry {
            base_offset: h.stamp.base_offset,
            position: pos,
            length: length as u32,
            record_count: h.record_count,
            store_timestamp_ms: h.stamp.store_timestamp_ms,
        };
        // Batches below the checkpoint are indexed already (a segment it did not describe).
        if pos >= index.checkpoint_position() && !index.push_scanned(q, entry, floor) {
            // Offsets must continue the queue exactly; anything else is not our data.
            return Ok(ScanEnd::Open { end: pos, torn: true });
        }
        if index.wants_writeback() && !index_full {
            // Scanned batches are on disk: write their entries to keep memory in budget (the
            // checkpoint after recovery makes them durable).
            match index.writeback(dir, pos + length as u64).await {
                Ok(()) => {}
                // No room: keep the entries in memory (beyond the budget, by at most the tail
                // this recovery scans) rather than refuse to open; the log then opens with
                // appends getting DISK_FULL until the index can be written.
                Err(WritebackError::Write(e)) if is_disk_full(&e) => {
                    tracing::warn!(
                        segment = %segment_name(seg.base),
                        "no room to write the queue index during recovery; keeping it in memory: {e}"
                    );
                    index_full = true;
                }
                Err(WritebackError::Write(e) | WritebackError::Sync(e)) => {
                    return Err(StorageError::io("writing the queue index during recovery", e))
                }
            }
        }
        seg.max_store_timestamp_ms
            .set(seg.max_store_timestamp_ms.get().max(h.stamp.store_timestamp_ms));
        pos += length as u64;
    }
}

/// Applies the retention policy every `retention_check_interval_ms` until the log goes away.
async fn retention_loop<D: LogDir + 'static>(weak: std::rc::Weak<CommitLog<D>>) {
    loop {
        let interval = match weak.upgrade() {
            Some(log) => Duration::from_millis(log.config.retention_check_interval_ms.max(1)),
            None => return,
        };
        let sleep = match weak.upgrade() {
            Some(log) => log.clock.sleep_until(log.clock.now() + interval),
            None => return,
        };
        sleep.await;
        let Some(log) = weak.upgrade() else { return };
        {
            let st = log.st.borrow();
            if st.closed || st.failed.is_some() {
                return;
            }
        }
        if let Err(e) = log.enforce_retention(log.clock.unix_ms()).await {
            tracing::warn!("retention failed: {e}");
        }
    }
}

/// Writes index entries behind the log and checkpoints the index when the flusher says it is
/// time. Holds only a weak reference so dropping the log ends it.
async fn index_loop<D: LogDir + 'static>(weak: std::rc::Weak<CommitLog<D>>) {
    loop {
        let kick = match weak.upgrade() {
            Some(log) => log.index_kick.clone(),
            None => return,
        };
        kick.wait().await;
        let Some(log) = weak.upgrade() else { return };
        {
            let st = log.st.borrow();
            if st.closed || st.failed.is_some() {
                return;
            }
        }
        if matches!(log.st.borrow().next.index_step(log.clock.now()), IndexStep::DiskFull(_)) {
            // No room for the index: appends retry it after the back-off, not every flush.
            continue;
        }
        let outcome = if log.checkpoint_due() {
            log.checkpoint_index().await
        } else {
            log.index_writeback().await
        };
        match outcome {
            // Failures of index I/O already stopped the log; a close meanwhile is fine; no
            // room is retried (by appends, or the next kick after the back-off).
            Err(StorageError::Closed | StorageError::DiskFull { .. }) | Ok(()) => {}
            Err(e) => {
                tracing::warn!("index write-back stopped: {e}");
                return;
            }
        }
    }
}

/// The group-commit loop. Holds only a weak reference so dropping the log ends it.
async fn flusher_loop<D: LogDir + 'static>(weak: std::rc::Weak<CommitLog<D>>) {
    loop {
        let Some(log) = weak.upgrade() else { return };
        let interval = log.config.flush_interval();
        let async_mode = log.config.flush_mode == FlushMode::Async;
        let wait = {
            let st = log.st.borrow();
            if st.closed || st.failed.is_some() {
                return;
            }
            !st.flush_requested
        };
        if wait {
            // Wait holding only the signal, so a log dropped meanwhile is freed (its Drop
            // notifies the signal, and the next upgrade fails).
            let kick = log.flush_kick.clone();
            // Sync mode waits for a kick only: no timer per group commit.
            let timer = async_mode.then(|| log.clock.sleep_until(log.clock.now() + interval));
            drop(log);
            let kicked = match timer {
                Some(timer) => runtime::first_or_timeout(kick.wait(), timer).await.is_some(),
                None => {
                    kick.wait().await;
                    true
                }
            };
            let Some(log) = weak.upgrade() else { return };
            let st = log.st.borrow();
            if !kicked && st.append_pos > st.durable {
                drop(st);
                // flush_interval_ms elapsed with data pending: flush it.
                log.st.borrow_mut().flush_requested = true;
            }
            continue;
        }
        if let Err(reason) = flush_once(&log).await {
            log.fail(reason);
            return;
        }
    }
}

/// One group commit. Err is a failed write or sync (the log must stop).
async fn flush_once<D: LogDir + 'static>(
    log: &Rc<CommitLog<D>>,
) -> std::result::Result<(), String> {
    let target = {
        let mut st = log.st.borrow_mut();
        st.flush_requested = false;
        log.dispatch_head(&mut st);
        st.append_pos
    };
    loop {
        {
            let st = log.st.borrow();
            if let Some(r) = &st.failed {
                return Err(r.clone());
            }
            if st.tracker.written() >= target {
                break;
            }
        }
        log.written_changed.wait().await;
    }
    let to_sync: Vec<Rc<Segment<D::File>>> = {
        let st = log.st.borrow();
        st.segments.values().filter(|s| s.unsynced.replace(false)).cloned().collect()
    };
    for seg in to_sync {
        seg.file
            .sync_data()
            .await
            .map_err(|e| format!("fdatasync of {} failed: {e}", segment_name(seg.base)))?;
    }
    let (ready, more) = {
        let mut st = log.st.borrow_mut();
        if let Some(r) = &st.failed {
            return Err(r.clone());
        }
        st.durable = st.durable.max(target);
        let durable = st.durable;
        // Waiters are mostly in append order, but a flush() may have queued a later end before
        // an earlier append's waiter, so sweep them all.
        let mut ready = Vec::new();
        let mut rest = VecDeque::new();
        while let Some((end, tx)) = st.waiters.pop_front() {
            if end <= durable {
                ready.push(tx);
            } else {
                rest.push_back((end, tx));
            }
        }
        let more = !rest.is_empty();
        st.waiters = rest;
        if more {
            st.flush_requested = true;
        }
        (ready, more)
    };
    for tx in ready {
        let _ = tx.send(Ok(()));
    }
    // Newly durable batches may have their index entries written now (by the index task, so
    // index I/O never delays the next group commit).
    if log.index.wants_writeback() || log.checkpoint_due() {
        log.index_kick.notify();
    }
    if more {
        log.flush_kick.notify();
    }
    Ok(())
}
