//! Reads of many queues at once, their batches chosen in log order (FETCH_MULTI).
//!
//! A consumer of many queues whose batches lie interleaved in the log (each queue's next
//! batch many other queues' batches further on) made every batch its own disk read when it
//! fetched the queues one by one. Here the queues' next batches are looked up together,
//! taken in the order they lie in the log until `max_bytes`, and the disk batches among them
//! are read in runs: batches at most [`COALESCE_GAP_BYTES`](super::reader::COALESCE_GAP_BYTES)
//! apart are read with one I/O, whichever queues they belong to.
//!
//! A consumer going through a cold log this way asks for the log's regions in order: after a
//! read from disk, the region after it (`max_bytes`) is read ahead while the answer goes out,
//! and the next request waits for that read instead of issuing its own. The spans read are
//! kept for a while ([`Scan`]): another consumer's request for other queues of the same region
//! is served from them.
//!
//! Each queue's result keeps [`CommitLog::read`]'s promises: whole visible batches from the
//! one holding its offset, in offset order, every disk byte verified before it is served; a
//! batch that fails verification ends that queue's batches (and a queue whose first batch
//! fails gets [`StorageError::CorruptBatch`]), other queues are not affected.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

use futures::FutureExt;
use rustc_hash::FxHashMap as HashMap;

use super::reader::{from_memory, FetchReads, Lookup};
use super::CommitLog;
use crate::runtime;
use crate::storage::error::{Result, StorageError};
use crate::storage::file::LogFile;
use crate::storage::file::{LogDir, ReadBuf};
use crate::storage::index::IndexEntry;
use crate::storage::types::{LogPosition, QueueKey, QueueOffset};

/// A queue not found in [`Cursors`] is looked up for at least this many bytes of entries:
/// those not read now are kept for the queue's next read.
const LOOKUP_AHEAD_BYTES: usize = 64 * 1024;
/// Entries [`Cursors`] keeps in all, at most (32 bytes each).
pub(super) const MAX_CURSOR_ENTRIES: usize = 1 << 18;

/// Index entries looked up for multi-queue reads and not read yet, by queue: a consumer of
/// thousands of queues reads each queue's next batch or two per request, and looking every
/// queue up again on every request cost more than reading (the index lookups took most of the
/// broker's core). Entries are kept only while visible; one whose segment retention deleted
/// is not used (the queue is looked up again). Bounded by [`MAX_CURSOR_ENTRIES`]: a read of
/// `n` queues keeps at most that divided by `n` per queue, and a full map is emptied.
#[derive(Default)]
pub(super) struct Cursors {
    queues: HashMap<QueueKey, Vec<IndexEntry>>,
    entries: usize,
}

impl Cursors {
    /// The entries kept for `queue` from the one starting at `offset`, all visible below
    /// `readable` and none below `oldest`; None (and forgotten) when they do not start there.
    fn take(
        &mut self,
        queue: QueueKey,
        offset: QueueOffset,
        oldest: LogPosition,
        readable: LogPosition,
    ) -> Option<Vec<IndexEntry>> {
        let mut kept = self.queues.remove(&queue)?;
        self.entries -= kept.len();
        let first = kept.iter().position(|e| e.base_offset == offset)?;
        kept.drain(..first);
        let visible = kept.iter().take_while(|e| e.end() <= readable).count();
        kept.truncate(visible);
        (!kept.is_empty() && kept[0].position >= oldest).then_some(kept)
    }

    /// Keeps `entries` past the first `read` (at most `per_queue` of them) for `queue`'s next
    /// read.
    fn keep(
        &mut self,
        queue: QueueKey,
        mut entries: Vec<IndexEntry>,
        read: usize,
        per_queue: usize,
    ) {
        entries.drain(..read.min(entries.len()));
        entries.truncate(per_queue);
        if entries.is_empty() {
            return;
        }
        if self.entries + entries.len() > MAX_CURSOR_ENTRIES {
            self.queues.clear();
            self.entries = 0;
        }
        self.entries += entries.len();
        if let Some(old) = self.queues.insert(queue, entries) {
            self.entries -= old.len();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries
    }
}

/// The log is read for multi-queue reads in blocks of this many bytes (from each segment's
/// start).
const BLOCK_BYTES: u64 = 1 << 20;
/// A multi-queue read takes batches from at most this many times its `max_bytes` of the log,
/// and reads ahead as much past them.
const SPAN_FACTOR: usize = 2;

/// A block: its segment's base and its place in the segment.
type BlockKey = (LogPosition, u64);

/// Multi-queue reads' blocks of the log: those read (the oldest dropped past `keep_bytes`,
/// the log's `multi_read_keep_bytes`) and those being read. Consumers going through a cold log in order,
/// each for its own queues, read the same regions; each block is read from disk once while
/// it is kept, whichever request needs it first (or reads ahead into it). Bytes served from
/// here came from disk: verified on use.
pub(super) struct Scan {
    blocks: HashMap<BlockKey, ReadBuf>,
    order: VecDeque<BlockKey>,
    bytes: usize,
    keep_bytes: usize,
    reading: HashMap<BlockKey, super::Prefetch>,
}

impl Scan {
    pub(super) fn new(keep_bytes: usize) -> Self {
        Scan {
            blocks: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            keep_bytes,
            reading: HashMap::default(),
        }
    }

    fn keep(&mut self, key: BlockKey, buf: ReadBuf) {
        self.bytes += buf.len();
        if let Some(old) = self.blocks.insert(key, buf) {
            self.bytes -= old.len();
        } else {
            self.order.push_back(key);
        }
        while self.bytes > self.keep_bytes {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(b) = self.blocks.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }

    /// The reads in flight (close waits for them).
    pub(super) fn in_flight(&self) -> Vec<super::Prefetch> {
        self.reading.values().cloned().collect()
    }
}

/// Where one chosen batch's bytes come from.
enum Source {
    Ready(ReadBuf),
    FromDisk(ReadBuf),
    Disk,
}

impl<D: LogDir + 'static> CommitLog<D> {
    /// Reads `reads` (queue, offset) together: about `max_bytes` of whole batches in all
    /// (at least one batch when any queue has one), taken in log order. One result per read,
    /// in its order: the queue's batches from the one holding its offset, in offset order
    /// (none when it has nothing readable there, or its batches lie past what was taken).
    /// An I/O error fails the whole read.
    pub async fn read_many(
        self: &Rc<Self>,
        reads: &[(QueueKey, QueueOffset)],
        max_bytes: usize,
    ) -> Result<Vec<Result<Vec<ReadBuf>>>> {
        // Every queue gets an equal share first (at least what a lookup reads ahead); what
        // they leave goes to the queues that have more (a few busy queues among many idle
        // ones fill the answer).
        let share = (max_bytes / reads.len().max(1)).max(1);
        let mut looked: Vec<Result<Vec<IndexEntry>>> = Vec::with_capacity(reads.len());
        for &(queue, offset) in reads {
            looked.push(self.look(queue, offset, share.max(LOOKUP_AHEAD_BYTES)).await);
        }
        let found: usize = looked.iter().flatten().flatten().map(len).sum();
        if found < max_bytes {
            let readable = self.readable_end();
            let wanting: Vec<usize> = (0..reads.len())
                .filter(|&q| {
                    let Ok(entries) = &looked[q] else { return false };
                    let end = entries.last().map_or(reads[q].1, IndexEntry::next_offset);
                    !entries.is_empty()
                        && self
                            .index
                            .visible_offsets(reads[q].0, readable)
                            .is_some_and(|o| end < o.next)
                })
                .collect();
            let extra = (max_bytes - found) / wanting.len().max(1);
            for q in wanting {
                let Ok(entries) = &mut looked[q] else { continue };
                let from = entries.last().map_or(reads[q].1, IndexEntry::next_offset);
                // A failure here leaves the queue with what its first lookup found.
                if let Ok(more) = self.index_entries(reads[q].0, from, extra.max(1), readable).await
                {
                    entries.extend(more);
                }
            }
        }
        // The batches in log order, each named by (queue, its place in the queue's entries),
        // taken until `max_bytes`: a merge of the queues' entries (which ascend in the log),
        // so only what is taken is ordered, however many entries were looked up.
        let entries_of = |q: u32| looked[q as usize].as_ref().expect("looked up");
        let mut heads: BinaryHeap<Reverse<(LogPosition, u32, u32)>> = looked
            .iter()
            .enumerate()
            .filter_map(|(q, l)| {
                let first = l.as_ref().ok()?.first()?;
                Some(Reverse((first.position, q as u32, 0)))
            })
            .collect();
        let mut order: Vec<(LogPosition, u32, u32)> = Vec::new();
        let mut taken_bytes = 0usize;
        // Nor past [`SPAN_FACTOR`] times `max_bytes` of the log: consumers (and a consumer's
        // requests) that share a shard's queues read the same regions, and those stay few
        // enough for [`Scan`] to serve each region's later readers from memory.
        let mut span_end = LogPosition::MAX;
        while taken_bytes < max_bytes {
            let Some(&Reverse((pos, q, k))) = heads.peek() else { break };
            if pos >= span_end {
                break;
            }
            heads.pop();
            if order.is_empty() {
                span_end = pos + (SPAN_FACTOR * max_bytes) as u64;
            }
            let entries = entries_of(q);
            taken_bytes += len(&entries[k as usize]);
            order.push((pos, q, k));
            if let Some(next) = entries.get(k as usize + 1) {
                heads.push(Reverse((next.position, q, k + 1)));
            }
        }
        drop(heads);
        // Each queue's taken entries are a prefix of its entries (they ascend in the log).
        let mut taken = vec![0usize; reads.len()];
        for &(_, q, _) in &order {
            taken[q as usize] += 1;
        }
        let entry = |q: u32, k: u32| &entries_of(q)[k as usize];
        let plan: Vec<Source> = {
            let mut st = self.st.borrow_mut();
            order
                .iter()
                .map(|&(pos, q, k)| {
                    let l = entry(q, k).length as usize;
                    if let Some(buf) = from_memory(&mut st, pos, l) {
                        Source::Ready(buf)
                    } else if let Some(buf) = st.read_ahead.hit(pos, l) {
                        Source::FromDisk(buf)
                    } else {
                        Source::Disk
                    }
                })
                .collect()
        };
        let disk: Vec<Option<(LogPosition, usize)>> = order
            .iter()
            .zip(&plan)
            .map(|(&(pos, q, k), s)| {
                matches!(s, Source::Disk).then_some((pos, entry(q, k).length as usize))
            })
            .collect();
        let disk_bytes = disk.iter().flatten().map(|&(_, l)| l).sum();
        let _counted = FetchReads::count(&self.fetch_reads, disk_bytes);
        let from_disk = self.from_blocks(&disk, SPAN_FACTOR * max_bytes).await?;
        // Served per queue, in its offset order; the first batch failing verification ends
        // the queue's batches.
        let mut batches: Vec<Vec<ReadBuf>> = taken.iter().map(|&n| Vec::with_capacity(n)).collect();
        let mut stopped: Vec<Option<StorageError>> = (0..reads.len()).map(|_| None).collect();
        for (m, ((&(pos, q, _), src), disk_buf)) in
            order.iter().zip(plan).zip(from_disk).enumerate()
        {
            let q = q as usize;
            if stopped[q].is_some() {
                continue;
            }
            let buf = match src {
                Source::Ready(b) => Ok(b),
                Source::FromDisk(b) => {
                    let l = b.len();
                    self.verified(b, pos, l)
                }
                Source::Disk => {
                    let b = disk_buf.expect("every disk batch was read");
                    let l = disk[m].expect("a disk batch").1;
                    self.verified(b, pos, l)
                }
            };
            match buf {
                Ok(b) => batches[q].push(b),
                Err(e) => stopped[q] = Some(e),
            }
        }
        let per_queue = (MAX_CURSOR_ENTRIES / reads.len().max(1)).max(1);
        let mut cursors = self.cursors.borrow_mut();
        let mut out = Vec::with_capacity(reads.len());
        for (((l, &(queue, _)), batches), stop) in
            looked.into_iter().zip(reads).zip(batches).zip(stopped)
        {
            out.push(l.and_then(|entries| {
                let served = batches.len();
                let result = match stop {
                    Some(StorageError::Corrupt { file, offset: at, reason }) if served == 0 => {
                        let e = &entries[0];
                        Err(StorageError::CorruptBatch {
                            queue,
                            first_offset: e.base_offset,
                            next_offset: e.next_offset(),
                            file,
                            offset: at,
                            reason,
                        })
                    }
                    Some(StorageError::Corrupt { .. }) | None => Ok(batches),
                    Some(e) => Err(e),
                };
                // The rest are kept for the queue's next read (which starts after the last
                // batch served; a read from a damaged batch looks it up again).
                cursors.keep(queue, entries, served, per_queue);
                result
            }));
        }
        Ok(out)
    }

    /// The disk batches' bytes (`disk[m]`: (position, length), None for a batch served
    /// otherwise) from the log's blocks: those kept, those being read, and the others read
    /// now (consecutive ones with one I/O); then `ahead` bytes of blocks past the last are
    /// read ahead for the next request. A batch the blocks do not hold whole (a block read
    /// short at the written end, or dropped before this request took it) is read on its own.
    async fn from_blocks(
        self: &Rc<Self>,
        disk: &[Option<(LogPosition, usize)>],
        ahead: usize,
    ) -> Result<Vec<Option<ReadBuf>>> {
        let mut needed: Vec<BlockKey> = Vec::new();
        {
            let st = self.st.borrow();
            for &(pos, len) in disk.iter().flatten() {
                let Some(seg) = st.segment_for(pos) else { continue };
                let first = (pos - seg.base) / BLOCK_BYTES;
                let last = (pos + (len as u64 - 1) - seg.base) / BLOCK_BYTES;
                needed.extend((first..=last).map(|i| (seg.base, i)));
            }
        }
        needed.sort_unstable();
        needed.dedup();
        if let Some(&(base, last)) = needed.last() {
            let more = (ahead as u64).div_ceil(BLOCK_BYTES);
            let mut wanted = needed.clone();
            wanted.extend((last + 1..=last + more).map(|i| (base, i)));
            self.read_blocks(&wanted);
        }
        for key in &needed {
            let reading = self.scan.borrow().reading.get(key).cloned();
            if let Some(r) = reading {
                r.await;
            }
        }
        let mut out = Vec::with_capacity(disk.len());
        let mut missed = Vec::new();
        for (m, &d) in disk.iter().enumerate() {
            let held = d.and_then(|(pos, len)| self.block_bytes(pos, len));
            if let (Some(_), Some((_, len))) = (&held, d) {
                self.probe.borrow_mut().multi_read_served_bytes += len as u64;
            }
            if let (None, Some((pos, len))) = (&held, d) {
                missed.push((m, pos, len));
            }
            out.push(held);
        }
        // Batches the blocks do not hold (a block read short, or dropped before this request
        // took it: `multi_read_keep_bytes` below what one request reads) are read on their
        // own, all at once.
        let reads =
            missed.iter().map(|&(_, pos, len)| self.read_span(pos, pos + len as u64, false));
        let read = futures::future::join_all(reads).await;
        for ((m, _, _), buf) in missed.into_iter().zip(read) {
            out[m] = Some(buf?);
        }
        Ok(out)
    }

    /// `[pos, pos + len)` from the kept blocks (a slice of one, or copied from several), if
    /// they hold it whole.
    fn block_bytes(&self, pos: LogPosition, len: usize) -> Option<ReadBuf> {
        let base = self.st.borrow().segment_for(pos)?.base;
        let scan = self.scan.borrow();
        let (first, last) =
            ((pos - base) / BLOCK_BYTES, (pos + (len as u64 - 1) - base) / BLOCK_BYTES);
        let slice_of = |i: u64, from: LogPosition, to: LogPosition| {
            let b = scan.blocks.get(&(base, i))?;
            let start = base + i * BLOCK_BYTES;
            let (s, e) = ((from - start) as usize, (to - start) as usize);
            (e <= b.len()).then(|| b.slice(s, e - s))
        };
        let end = pos + len as u64;
        if first == last {
            return slice_of(first, pos, end);
        }
        let mut bytes = Vec::with_capacity(len);
        for i in first..=last {
            let start = base + i * BLOCK_BYTES;
            let piece = slice_of(i, pos.max(start), end.min(start + BLOCK_BYTES))?;
            bytes.extend_from_slice(&piece);
        }
        Some(ReadBuf::from_vec(bytes))
    }

    /// Starts reading the blocks of `keys` (sorted) that are neither kept nor being read,
    /// consecutive ones of a segment with one I/O, each within its segment and what is
    /// written; not while the log is closing. Failed reads leave their blocks unread (a
    /// request needing one reads its batches on its own).
    fn read_blocks(self: &Rc<Self>, keys: &[BlockKey]) {
        let st = self.st.borrow();
        if !st.life.is_open() {
            return;
        }
        let written = st.tracker.written();
        // (segment base, first block, end block)
        let mut runs: Vec<(LogPosition, u64, u64)> = Vec::new();
        {
            let scan = self.scan.borrow();
            for &(base, i) in keys {
                let Some(seg) = st.segments.get(&base) else { continue };
                let seg_end = seg.sealed_end.get().unwrap_or(base + self.config.segment_size_bytes);
                // A block read short at the written end is read again once more is written.
                let start = base + i * BLOCK_BYTES;
                let held = scan.blocks.get(&(base, i)).is_some_and(|b| {
                    b.len() as u64 == BLOCK_BYTES || start + b.len() as u64 >= written.min(seg_end)
                });
                if held || scan.reading.contains_key(&(base, i)) {
                    continue;
                }
                match runs.last_mut() {
                    Some((b, _, end)) if *b == base && *end == i => *end = i + 1,
                    _ => runs.push((base, i, i + 1)),
                }
            }
        }
        for (base, first, end) in runs {
            let Some(seg) = st.segments.get(&base).cloned() else { continue };
            let seg_end = seg.sealed_end.get().unwrap_or(seg.base + self.config.segment_size_bytes);
            let from = seg.base + first * BLOCK_BYTES;
            let to = (seg.base + end * BLOCK_BYTES).min(seg_end).min(written);
            if to <= from {
                continue;
            }
            let weak = Rc::downgrade(self);
            let task = runtime::spawn(async move {
                // glommio may poll a new task inline: the blocks are marked as being read first.
                runtime::yield_once().await;
                let want = (to - from) as usize;
                let read = seg.file.read_at(from - seg.base, want).await;
                let Some(log) = weak.upgrade() else { return };
                if let Ok(b) = &read {
                    log.probe.borrow_mut().multi_read_bytes += b.len().min(want) as u64;
                }
                let mut scan = log.scan.borrow_mut();
                for i in first..end {
                    scan.reading.remove(&(base, i));
                }
                let Ok(buf) = read else { return };
                let got = buf.len().min(want);
                for i in first..end {
                    let s = ((i - first) * BLOCK_BYTES) as usize;
                    if s >= got {
                        break;
                    }
                    let e = (s + BLOCK_BYTES as usize).min(got);
                    scan.keep((base, i), buf.slice(s, e - s));
                }
            })
            .shared();
            let mut scan = self.scan.borrow_mut();
            for i in first..end {
                scan.reading.insert((base, i), task.clone());
            }
        }
    }

    /// One queue's entries for [`Self::read_many`]: those kept from its last multi-queue
    /// read, else about `max_bytes` of them from `offset` looked up (as [`Self::read`]'s,
    /// entries below the log start dropped first).
    async fn look(
        &self,
        queue: QueueKey,
        offset: QueueOffset,
        max_bytes: usize,
    ) -> Result<Vec<IndexEntry>> {
        let readable = self.readable_end();
        let kept = self.cursors.borrow_mut().take(queue, offset, self.oldest_position(), readable);
        if let Some(entries) = kept {
            return Ok(entries);
        }
        let mut found = self.lookup(queue, offset, max_bytes, false).await?;
        if let Lookup::BelowLogStart = found {
            if let Err(e) = self.drop_index().await {
                tracing::warn!(%queue, "a fetch below the log start could not drop index entries: {e}");
            }
            found = self.lookup(queue, offset, max_bytes, true).await?;
        }
        match found {
            Lookup::Entries(_, _, entries) => Ok(entries),
            Lookup::Answered(_) => Ok(Vec::new()),
            Lookup::BelowLogStart => unreachable!("looked up with below_start_ok"),
        }
    }
}

fn len(e: &IndexEntry) -> usize {
    e.length as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::types::{QueueId, TopicId};

    fn q(n: u32) -> QueueKey {
        QueueKey::new(TopicId::new(1), QueueId::new(n))
    }

    /// Entries of one-record batches of 100 bytes from offset `from`, `n` of them, at
    /// position `at` and every 1,000 bytes after.
    fn entries(from: u64, n: u64, at: u64) -> Vec<IndexEntry> {
        (0..n)
            .map(|i| IndexEntry {
                base_offset: QueueOffset::new(from + i),
                position: LogPosition::new(at + i * 1000),
                length: 100,
                record_count: 1,
                store_timestamp_ms: 0,
            })
            .collect()
    }

    #[test]
    fn cursors_give_back_what_follows_the_batches_read_from_that_offset_only() {
        let (oldest, readable) = (LogPosition::ZERO, LogPosition::new(1 << 30));
        let mut c = Cursors::default();
        // Two of five read: offsets 2, 3, 4 kept.
        c.keep(q(1), entries(0, 5, 0), 2, 100);
        assert_eq!(c.len(), 3);
        // From offset 3: 3 and 4.
        let got = c.take(q(1), QueueOffset::new(3), oldest, readable).unwrap();
        assert_eq!(got.iter().map(|e| e.base_offset.get()).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(c.len(), 0, "taken entries leave");
        // From an offset not kept: none, and the queue's entries are forgotten.
        c.keep(q(1), entries(0, 5, 0), 2, 100);
        assert!(c.take(q(1), QueueOffset::new(0), oldest, readable).is_none());
        assert!(c.take(q(1), QueueOffset::new(2), oldest, readable).is_none());
        assert_eq!(c.len(), 0);
        // Past the readable end: cut there; below the log start: none.
        c.keep(q(2), entries(0, 5, 0), 0, 100);
        let got = c.take(q(2), QueueOffset::new(0), oldest, LogPosition::new(2100)).unwrap();
        assert_eq!(got.len(), 3);
        c.keep(q(2), entries(0, 5, 0), 0, 100);
        assert!(c.take(q(2), QueueOffset::new(0), LogPosition::new(1), readable).is_none());
    }

    #[test]
    fn cursors_keep_at_most_their_bound() {
        let mut c = Cursors::default();
        // At most `per_queue` of a queue's entries.
        c.keep(q(0), entries(0, 50, 0), 0, 10);
        assert_eq!(c.len(), 10);
        // Past the bound the map is emptied before more are kept.
        let per_queue = 1000;
        let last = (MAX_CURSOR_ENTRIES / per_queue + 5) as u32;
        for n in 1..=last {
            c.keep(q(n), entries(0, per_queue as u64, 0), 0, per_queue);
            assert!(c.len() <= MAX_CURSOR_ENTRIES, "{} entries kept", c.len());
        }
        // Keeping a queue again replaces its entries.
        let before = c.len();
        c.keep(q(last), entries(0, 1, 0), 0, per_queue);
        assert_eq!(c.len(), before - per_queue + 1);
    }

    #[test]
    fn the_scan_keeps_its_newest_blocks_within_its_bound() {
        let keep = 16 << 20;
        let mut s = Scan::new(keep);
        let block = |n: u8| ReadBuf::from_vec(vec![n; BLOCK_BYTES as usize]);
        let blocks = keep as u64 / BLOCK_BYTES;
        for i in 0..blocks + 10 {
            s.keep((LogPosition::ZERO, i), block(i as u8));
            assert!(s.bytes <= keep);
        }
        assert!(!s.blocks.contains_key(&(LogPosition::ZERO, 9)), "the oldest went first");
        assert!(s.blocks.contains_key(&(LogPosition::ZERO, 10)));
        assert!(s.blocks.contains_key(&(LogPosition::ZERO, blocks + 9)));
        // A block read again (it had been read short) replaces the old one.
        s.keep((LogPosition::ZERO, blocks + 9), ReadBuf::from_vec(vec![1; 10]));
        assert_eq!(s.blocks.len() as u64, blocks);
        assert_eq!(s.order.len() as u64, blocks);
    }
}
