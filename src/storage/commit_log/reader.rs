//! The reader: serves `read` and `offset_for_timestamp` on the log's shard.
//!
//! A read looks the queue's entries up in the index, then plans where each batch's bytes
//! come from: the chunk cache or the head chunk (memory we wrote: no checksum to verify), a
//! read-ahead or prefetched buffer, or the disk. Disk batches that lie close together in one
//! segment are read with one I/O, plus up to `read_ahead_bytes` more kept for the next
//! sequential read. A fetch read from disk starts a prefetch of the queue's next fetch
//! (`prefetch_bytes`), which that fetch then takes (or waits for, if still in flight), while
//! the log's disk reads in flight leave room for it.
//!
//! Promises: only visible batches are returned (durable in sync mode, appended in async
//! mode); every byte read from disk is verified (header and body CRCs) before it is served.
//! A batch that fails verification ends the read: the batches before it are returned, and a
//! read starting at it gets [`StorageError::CorruptBatch`] with its offsets, so a consumer can
//! skip it explicitly. Nothing damaged is ever served.

use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;

use super::read_ahead::Prefetched;
use super::{CommitLog, InFlightPrefetch, State};
use crate::format::batch::BatchView;
use crate::runtime;
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{LogDir, LogFile, ReadBuf};
use crate::storage::index::IndexEntry;
use crate::storage::index_store::LookupError;
use crate::storage::segment::segment_name;
use crate::storage::types::{LogPosition, QueueKey, QueueOffset, QueueOffsets, ReadBatches};

/// What a read finds in the index before planning (see `CommitLog::lookup`).
pub(super) enum Lookup {
    /// The readable end, the queue's offsets and the entries to read.
    Entries(LogPosition, QueueOffsets, Vec<IndexEntry>),
    /// Answered without reading (an empty queue read at offset 0).
    Answered(ReadBatches),
    /// The first entry lies below the log start.
    BelowLogStart,
}

/// Two disk batches of one fetch are read with one I/O when at most this far apart.
pub(super) const COALESCE_GAP_BYTES: u64 = 128 * 1024;
/// Queues with prefetches in flight at once, at most (each with at most [`PREFETCH_DEPTH`];
/// their bytes are bounded by `prefetch_bytes`).
const MAX_PREFETCHING_QUEUES: usize = 1024;
/// A catching-up queue's fetches read ahead at most: its next fetch, and the one after it
/// when room is free. One alone left the disk idle a quarter of the time under a single
/// queue's consumer (each prefetch was issued only once the fetch before it was served);
/// two keep a read in flight while the other is served.
pub(super) const PREFETCH_DEPTH: usize = 2;

impl<D: LogDir + 'static> CommitLog<D> {
    /// Reads whole stored batches of `queue` starting with the one holding `offset`, up to
    /// `max_bytes` (at least one batch when any is readable).
    pub async fn read(
        self: &Rc<Self>,
        queue: QueueKey,
        offset: QueueOffset,
        max_bytes: usize,
    ) -> Result<ReadBatches> {
        enum Source {
            /// From memory we wrote: no checksum to verify.
            Ready(ReadBuf),
            /// From a disk read (now or read ahead earlier): verified below.
            FromDisk(ReadBuf, LogPosition),
            Disk {
                pos: LogPosition,
                len: usize,
            },
        }
        let (visible, offsets, entries) = match self.lookup(queue, offset, max_bytes, false).await?
        {
            Lookup::Entries(v, o, e) => (v, o, e),
            Lookup::Answered(r) => return Ok(r),
            Lookup::BelowLogStart => {
                // Retention deleted this batch's segment and its index entries are still to
                // be dropped: drop them (or wait for the drop in flight), then look again
                // (the queue's new floor). Only once: if the drop failed, the entry stays
                // until a later one and the read below reports the batch as gone.
                if let Err(e) = self.drop_index().await {
                    tracing::warn!(%queue, "a fetch below the log start could not drop index entries: {e}");
                }
                match self.lookup(queue, offset, max_bytes, true).await? {
                    Lookup::Entries(v, o, e) => (v, o, e),
                    Lookup::Answered(r) => return Ok(r),
                    Lookup::BelowLogStart => unreachable!("looked up with below_start_ok"),
                }
            }
        };
        let (plan, offsets, next_offset) = {
            let mut guard = self.st.borrow_mut();
            let st = &mut *guard;
            let written = st.tracker.written();
            let next_offset = entries.last().map_or(offset, IndexEntry::next_offset);
            let mut plan = Vec::with_capacity(entries.len());
            for e in &entries {
                let len = e.length as usize;
                if let Some(buf) = from_memory(st, e.position, len) {
                    plan.push(Source::Ready(buf));
                } else if let Some(buf) = st.read_ahead.hit(e.position, len) {
                    plan.push(Source::FromDisk(buf, e.position));
                } else if let Some(buf) = st.prefetched.hit(queue, e.position, len) {
                    self.probe.borrow_mut().prefetch_served_bytes += len as u64;
                    plan.push(Source::FromDisk(buf, e.position));
                } else if e.end() <= written {
                    plan.push(Source::Disk { pos: e.position, len });
                } else {
                    // Not yet on disk and not all in memory: its beginning was evicted after
                    // it reached disk (the bytes at/after `written` are always in memory).
                    plan.push(Source::Disk { pos: e.position, len });
                }
            }
            if let Some(last) = entries.last() {
                st.prefetched.consumed(queue, last.end());
            }
            (plan, offsets, next_offset)
        };
        // A queue read from disk is catching up: read its next fetch while this one is served
        // and its consumer takes it, so the disk keeps working between the consumer's fetches.
        let cold = plan.iter().any(|s| matches!(s, Source::Disk { .. } | Source::FromDisk(..)));
        let own_reads: usize =
            plan.iter().map(|s| if let Source::Disk { len, .. } = s { *len } else { 0 }).sum();
        let prefetching = cold
            && next_offset < offsets.next
            && self.start_prefetch(queue, next_offset, max_bytes, visible, own_reads).await;
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
        // Disk batches that lie close together in one segment are read with one I/O each (a
        // run), and every run's read is issued at once: a catching-up consumer's fetch holds
        // several batches of its queue, spread over the log between other queues' batches,
        // and reading them one after the other left the disk with one read in flight per fetch.
        let disk: Vec<_> = plan
            .iter()
            .map(|s| match s {
                Source::Disk { pos, len } => Some((*pos, *len)),
                _ => None,
            })
            .collect();
        let runs = self.disk_runs(&disk, max_bytes);
        // Bounded by the fetch: at most one read per batch of at most `max_bytes` of entries.
        // Read ahead only when the fetch is one run: a queue whose batches lie apart (between
        // other queues' batches) would read ahead other queues' bytes, which with more
        // catching-up queues than read-ahead slots are evicted before anyone reads them (a
        // drain of 8 interleaved queues read twice the bytes it served).
        // A prefetch of the next fetch reads (more of) what read-ahead would.
        let read_ahead = runs.len() == 1 && !prefetching;
        let run_bytes = runs.iter().map(|&(_, _, s, e)| (e - s) as usize).sum();
        let _counted = FetchReads::count(&self.fetch_reads, run_bytes);
        let spans = futures::future::join_all(
            runs.iter().map(|&(_, _, s, e)| self.read_span(s, e, read_ahead)),
        )
        .await;
        let mut spans = runs.iter().zip(spans);
        let mut i = 0;
        while i < plan.len() {
            match &plan[i] {
                Source::Ready(b) => batches.push(b.clone()),
                Source::FromDisk(b, pos) => match self.verified(b.clone(), *pos, b.len()) {
                    Ok(b) => batches.push(b),
                    Err(e) => return bad_batch(i, e, batches),
                },
                Source::Disk { .. } => {
                    let Some((&(first, j, start, _), span)) = spans.next() else {
                        unreachable!("a run for every disk batch")
                    };
                    debug_assert_eq!(first, i);
                    let span = span?;
                    for (k, src) in plan[i..j].iter().enumerate() {
                        let Source::Disk { pos, len } = src else { unreachable!("disk run") };
                        let b = span.slice((*pos - start) as usize, *len);
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

    /// Groups a fetch's batches into disk runs, each read with one I/O: consecutive disk
    /// batches (`Some((position, length))`; `None` is one served from memory) at most
    /// [`COALESCE_GAP_BYTES`] apart, within one segment and twice the larger of `max_bytes`
    /// and `read_ahead_bytes`. Each run is (first index, end index, start, end).
    pub(super) fn disk_runs(
        &self,
        batches: &[Option<(LogPosition, usize)>],
        max_bytes: usize,
    ) -> Vec<(usize, usize, LogPosition, LogPosition)> {
        let span_limit = (max_bytes.max(self.config.read_ahead_bytes) * 2) as u64;
        let mut runs = Vec::new();
        let mut i = 0;
        while i < batches.len() {
            let Some((pos, len)) = batches[i] else {
                i += 1;
                continue;
            };
            let (start, mut end) = (pos, pos + len as u64);
            // One read never crosses into the next segment (another file).
            let next_segment = {
                let st = self.st.borrow();
                st.segments.range(start + 1..).next().map_or(LogPosition::MAX, |(b, _)| *b)
            };
            let mut j = i + 1;
            while let Some(Some((p, l))) = batches.get(j) {
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
            runs.push((i, j, start, end));
            i = j;
        }
        runs
    }

    /// Starts reading ahead `queue`'s fetch from `from` (of `max_bytes`), and the one after
    /// it: the batches each would read from disk, up to the first one memory holds or that is
    /// not written yet, kept (unverified: that fetch verifies them like any disk read) within
    /// `prefetch_bytes`. A fetch already being read ahead is passed over (the next one starts
    /// where it ends). Whether one started: not while [`PREFETCH_DEPTH`] of the queue's are in
    /// flight, while the log is closing, or without room: the disk reads in flight (other
    /// fetches', this one's `own_reads`, and the prefetches') and the next fetch's reads
    /// within `prefetch_bytes`, and the one after it only within what is free (no kept buffer
    /// goes for it). Consumers whose own fetches keep that much read at once (large fetches,
    /// many queues) keep the disk busy without it; reading ahead for them added reads, some of
    /// them read twice (BENCHMARKS.md: 176 MB of 1,967 MB in a drain of 4 MiB fetches).
    ///
    /// The index lookups are done here, on the fetch's path (their blocks are usually cached
    /// by this fetch's own lookup); the reads go on in tasks that hold the log only weakly, so
    /// a dropped log is not kept alive (and its background tasks not left running) by reads
    /// in flight. Failed reads are left to that fetch, which reads again what is not kept.
    async fn start_prefetch(
        self: &Rc<Self>,
        queue: QueueKey,
        mut from: QueueOffset,
        max_bytes: usize,
        visible: LogPosition,
        own_reads: usize,
    ) -> bool {
        let mut started = false;
        for depth in 0..PREFETCH_DEPTH {
            match self.start_one_prefetch(queue, from, max_bytes, visible, own_reads, depth).await {
                Some((end, began)) => {
                    started |= began;
                    from = end;
                }
                None => break,
            }
        }
        started
    }

    /// The prefetch of `queue`'s fetch from `from`, `depth` fetches past the one being served
    /// (see [`Self::start_prefetch`]): where that fetch ends and whether a prefetch started
    /// for it (false: one was already in flight, or memory already holds it). None: it could
    /// not start, and none further ahead may.
    async fn start_one_prefetch(
        self: &Rc<Self>,
        queue: QueueKey,
        from: QueueOffset,
        max_bytes: usize,
        visible: LogPosition,
        own_reads: usize,
        depth: usize,
    ) -> Option<(QueueOffset, bool)> {
        // Ok(end): that fetch is being read ahead already; Err(room): whether one may start.
        let state = |log: &Self| {
            let prefetches = log.prefetches.borrow();
            let mine = prefetches.get(&queue);
            if let Some(p) = mine.and_then(|v| v.iter().find(|p| p.from == from)) {
                return Ok(p.end);
            }
            Err(log.config.prefetch_bytes > 0
                && log.st.borrow().life.is_open()
                && match mine {
                    Some(mine) => mine.len() < PREFETCH_DEPTH,
                    None => prefetches.len() < MAX_PREFETCHING_QUEUES,
                })
        };
        match state(self) {
            Ok(end) => return Some((end, false)),
            Err(false) => return None,
            Err(true) => {}
        }
        let entries = self.index_entries(queue, from, max_bytes, visible).await.ok()?;
        let end = entries.last()?.next_offset();
        // Another fetch of the queue may have started one during the lookup.
        match state(self) {
            Ok(end) => return Some((end, false)),
            Err(false) => return None,
            Err(true) => {}
        }
        let disk: Vec<_> = {
            let st = self.st.borrow();
            let written = st.tracker.written();
            let mut disk = Vec::with_capacity(entries.len());
            for e in &entries {
                let len = e.length as usize;
                if st.cache.contains(e.position) || e.end() > written {
                    break;
                }
                let kept = st.read_ahead.hit(e.position, len).is_some()
                    || st.prefetched.hit(queue, e.position, len).is_some();
                disk.push((!kept).then_some((e.position, len)));
            }
            disk
        };
        let runs = self.disk_runs(&disk, max_bytes);
        if runs.is_empty() {
            // Kept already: go on past it; from memory (or not written): nothing further.
            return (disk.len() == entries.len()).then_some((end, false));
        }
        let charge = |&(_, _, s, e): &(usize, usize, LogPosition, LogPosition)| {
            Prefetched::charge((e - s) as usize)
        };
        let reserved: usize = runs.iter().map(charge).sum();
        let fetch_reads = self.fetch_reads.get() + own_reads;
        let room = {
            let mut st = self.st.borrow_mut();
            if depth == 0 {
                st.prefetched.reserve(reserved, runs.len(), fetch_reads)
            } else {
                st.prefetched.reserve_free(reserved, runs.len(), fetch_reads)
            }
        };
        if !room {
            return None;
        }
        // Each read owns its segment (the file stays open while it runs), not the log.
        let reads: Vec<_> = {
            let st = self.st.borrow();
            runs.iter()
                .filter_map(|&(_, _, start, end)| {
                    let seg = st.segment_for(start).cloned()?;
                    let len = (end - start) as usize;
                    Some(async move {
                        let buf = seg.file.read_at(start - seg.base, len).await.ok()?;
                        (buf.len() >= len).then(|| (start, buf.slice(0, len)))
                    })
                })
                .collect()
        };
        let (weak, buffers) = (Rc::downgrade(self), runs.len());
        let task = runtime::spawn(async move {
            // glommio may poll a new task inline: its entry goes in `prefetches` first.
            runtime::yield_once().await;
            let spans = futures::future::join_all(reads).await;
            let Some(log) = weak.upgrade() else { return };
            let mut st = log.st.borrow_mut();
            for (start, buf) in spans.into_iter().flatten() {
                let len = buf.len() as u64;
                if st.prefetched.keep(queue, start, buf) {
                    log.probe.borrow_mut().prefetch_bytes += len;
                }
            }
            st.prefetched.release(reserved, buffers);
            drop(st);
            let mut prefetches = log.prefetches.borrow_mut();
            if let Some(mine) = prefetches.get_mut(&queue) {
                mine.retain(|p| p.from != from);
                if mine.is_empty() {
                    prefetches.remove(&queue);
                }
            }
        });
        let task = task.shared();
        self.prefetches.borrow_mut().entry(queue).or_default().push(InFlightPrefetch {
            from,
            end,
            task,
        });
        Some((end, true))
    }

    /// The index entries of `queue` from the one holding `offset`, about `max_bytes` of
    /// batches that end at or before `visible`.
    pub(super) async fn index_entries(
        &self,
        queue: QueueKey,
        offset: QueueOffset,
        max_bytes: usize,
        visible: LogPosition,
    ) -> Result<Vec<IndexEntry>> {
        let found = match self.index.find(&self.dir, queue, offset).await {
            Ok(Some(n)) => self.index.entries_from(&self.dir, queue, n, max_bytes, visible).await,
            Ok(None) => Err(LookupError::Gone),
            Err(e) => Err(e),
        };
        found.map_err(|e| self.lookup_error(queue, offset, e))
    }

    pub(super) fn lookup_error(
        &self,
        queue: QueueKey,
        offset: QueueOffset,
        e: LookupError,
    ) -> StorageError {
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
    pub(super) fn verified(&self, buf: ReadBuf, pos: LogPosition, len: usize) -> Result<ReadBuf> {
        let corrupt = |reason: String| {
            let base = self.st.borrow().segment_for(pos).map_or(LogPosition::ZERO, |s| s.base);
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

    /// A read's index lookup: the readable end, the queue's offsets and the entries of the
    /// batches to read. Unless `below_start_ok`, entries below the log start (whose
    /// segments retention deleted while it drops them from the index) give
    /// [`Lookup::BelowLogStart`].
    pub(super) async fn lookup(
        &self,
        queue: QueueKey,
        offset: QueueOffset,
        max_bytes: usize,
        below_start_ok: bool,
    ) -> Result<Lookup> {
        let visible = self.readable_end();
        let Some(offsets) = self.index.visible_offsets(queue, visible) else {
            if offset == QueueOffset::ZERO {
                return Ok(Lookup::Answered(ReadBatches {
                    batches: vec![],
                    next_offset: QueueOffset::ZERO,
                    offsets: QueueOffsets::default(),
                }));
            }
            return Err(StorageError::OffsetOutOfRange {
                queue,
                requested: offset,
                min: QueueOffset::ZERO,
                next: QueueOffset::ZERO,
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
        // This fetch is being read ahead (the queue's previous fetch started it): wait for
        // those reads instead of issuing the same ones again.
        let in_flight = self
            .prefetches
            .borrow()
            .get(&queue)
            .and_then(|mine| mine.iter().find(|p| p.from == offset).map(|p| p.task.clone()));
        if let Some(reads) = in_flight {
            reads.await;
        }
        let entries = if offset < offsets.next {
            self.index_entries(queue, offset, max_bytes, visible).await?
        } else {
            Vec::new()
        };
        if !below_start_ok && entries.first().is_some_and(|e| e.position < self.oldest_position()) {
            return Ok(Lookup::BelowLogStart);
        }
        Ok(Lookup::Entries(visible, offsets, entries))
    }

    /// Reads log bytes `[start, end)` (one segment) from disk, plus (with `read_ahead`) up to
    /// `read_ahead_bytes` more that are already written, keeping the extra for the next
    /// sequential read.
    pub(super) async fn read_span(
        &self,
        start: LogPosition,
        end: LogPosition,
        read_ahead: bool,
    ) -> Result<ReadBuf> {
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
                    offset: start.get(),
                    reason: "batch lies in a deleted segment".into(),
                });
            };
            let seg_end = seg.sealed_end.get().unwrap_or(seg.base + self.config.segment_size_bytes);
            let limit = st.tracker.written().min(seg_end);
            let ahead = if read_ahead { self.config.read_ahead_bytes as u64 } else { 0 };
            (seg, (end + ahead).min(limit).max(end))
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
            self.st.borrow_mut().read_ahead.keep(start, buf.clone());
        }
        Ok(buf)
    }

    /// First offset of `queue` stored at or after `ts_ms`; the next offset if none. Bounded
    /// by the readable end (like [`Self::offsets`]), so a fetch at the answer never fails.
    pub async fn offset_for_timestamp(&self, queue: QueueKey, ts_ms: i64) -> Result<QueueOffset> {
        match self.index.offset_for_timestamp(&self.dir, queue, ts_ms).await {
            Ok(o) => Ok(o.min(self.offsets(queue).next)),
            // Retention dropped the entry found: the answer is now the queue's first offset.
            Err(LookupError::Gone) => Ok(self.offsets(queue).min),
            Err(e) => Err(self.lookup_error(queue, QueueOffset::ZERO, e)),
        }
    }
}

/// A fetch's batch at `[pos, pos + len)` out of memory, counted in the chunk cache's hits
/// or misses: shared from the one cached chunk that holds it, or copied when it straddles two
/// (or reaches into the chunk being filled), one copy and no disk I/O.
pub(super) fn from_memory<F>(st: &mut State<F>, pos: LogPosition, len: usize) -> Option<ReadBuf> {
    let found = st.cache.get(pos, len).or_else(|| memory_copy(st, pos, len).map(ReadBuf::from_vec));
    st.cache.count(found.is_some());
    found
}

/// The log bytes `[pos, pos + len)` copied from memory, if memory holds all of them.
pub(super) fn memory_copy<F>(st: &State<F>, pos: LogPosition, len: usize) -> Option<Vec<u8>> {
    // Cheap pre-check so a cold read does not allocate and copy in vain.
    let starts_in_memory = st.cache.contains(pos)
        || st.head.as_ref().is_some_and(|h| pos >= h.pos && pos < h.pos + h.filled as u64);
    if !starts_in_memory {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    (extend_from_memory(st, pos, len, &mut out) == len).then_some(out)
}

/// Appends the log bytes `[pos, pos + len)` to `out` from the cache and the head chunk, as far
/// as memory holds them; returns how many.
pub(super) fn extend_from_memory<F>(
    st: &State<F>,
    pos: LogPosition,
    len: usize,
    out: &mut Vec<u8>,
) -> usize {
    let mut done = st.cache.extend_prefix(pos, len, out);
    if done < len {
        if let Some(h) = &st.head {
            let at = pos + done as u64;
            if at >= h.pos && at < h.pos + h.filled as u64 {
                let from = (at - h.pos) as usize;
                let n = (h.filled - from).min(len - done);
                out.extend_from_slice(&h.buf.as_bytes()[from..from + n]);
                done += n;
            }
        }
    }
    done
}

/// Counts a fetch's disk reads in `CommitLog::fetch_reads` while they are in flight (until
/// dropped: also when the fetch is).
pub(super) struct FetchReads<'a> {
    counter: &'a std::cell::Cell<usize>,
    bytes: usize,
}

impl<'a> FetchReads<'a> {
    pub(super) fn count(counter: &'a std::cell::Cell<usize>, bytes: usize) -> Self {
        counter.set(counter.get() + bytes);
        FetchReads { counter, bytes }
    }
}

impl Drop for FetchReads<'_> {
    fn drop(&mut self) {
        self.counter.set(self.counter.get() - self.bytes);
    }
}
