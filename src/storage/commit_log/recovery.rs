//! Recovery: rebuilds a log's state from its directory when it opens (before any task runs).
//!
//! Loads the queue floors and the index checkpoint, then scans the log past the checkpoint,
//! verifying every batch and rebuilding its index entries. The first byte that is not a valid
//! batch ends the log: a torn tail is truncated, segments after it are deleted (they were
//! never acknowledged: the durable position only advances contiguously). The active segment
//! is preallocated, or the next one created when the last is sealed; without room the log
//! opens for reads and appends get DiskFull.
//!
//! Promises: every acknowledged batch survives exactly once, nothing after the first invalid
//! byte is ever served, and restart time is bounded by the unindexed tail, not by the data
//! retained.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::appender::Carry;
use super::segment_set::next_segment_base;
use crate::format::batch::{self as fmt, BatchView, HEADER_LEN};
use crate::storage::config::StorageConfig;
use crate::storage::error::{is_disk_full, Result, StorageError};
use crate::storage::file::{LogDir, LogFile, ReadBuf};
use crate::storage::floors::{decode_floors, encode_floors, Floors, FLOOR_FILE};
use crate::storage::index::{IndexCheckpoint, IndexEntry, SegmentCheckpoint};
use crate::storage::index_store::{IndexStore, LookupError, WritebackError, CHECKPOINT_FILE};
use crate::storage::next_segment::{allocate_or_give_back, create_segment, Shortage};
use crate::storage::segment::{parse_segment_name, segment_name, Segment, INDEX_SUFFIX};
use crate::storage::types::{LogPosition, QueueId, QueueKey, QueueOffset, TopicId};

/// Read size while scanning segments during recovery.
pub(super) const SCAN_READ_BYTES: usize = 4 << 20;

/// What recovery found.
pub(super) struct Recovered<F> {
    pub(super) segments: BTreeMap<LogPosition, Rc<Segment<F>>>,
    pub(super) index: IndexStore<F>,
    pub(super) end: LogPosition,
    pub(super) carry: Option<Carry>,
    pub(super) last_store_ts: i64,
    /// Space recovery could not reserve (disk full); appends get DiskFull until it can.
    pub(super) shortage: Option<Shortage>,
    /// The queue index holds no entry below this position: the first segment's base, or 0
    /// without a floors file (segments deleted by hand: the first drop finds their entries).
    pub(super) index_dropped_to: LogPosition,
    /// Segments below the log start recovery could not unlink (retried by retention).
    pub(super) pending_deletes: Vec<String>,
}

/// Outcome of scanning one segment.
pub(super) enum ScanEnd {
    /// Hit the end marker: the segment is sealed at this position.
    Sealed(LogPosition),
    /// Valid data ends here; `torn` when bytes that are not a valid batch follow (a crash in the
    /// middle of a write), false at a clean end (zeros or end of file).
    Open { end: LogPosition, torn: bool },
}

/// Rebuilds the log's state from disk: loads the index checkpoint, scans the log past it
/// verifying every batch (and rebuilding its index entries), truncates a torn tail and
/// discards anything after the first invalid byte.
pub(super) async fn recover<D: LogDir>(
    dir: &D,
    config: &StorageConfig,
) -> Result<Recovered<D::File>> {
    let io = |ctx: String| move |e| StorageError::io(ctx, e);
    let names = dir.list().await.map_err(io(format!("listing {}", dir.path().display())))?;
    let mut bases: Vec<LogPosition> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    bases.sort_unstable();
    for n in names.iter().filter(|n| n.ends_with(".tmp")) {
        let _ = dir.remove(n).await;
    }
    let floor_file = dir.read_all(FLOOR_FILE).await.map_err(io("reading queue floors".into()))?;
    let has_floors = floor_file.is_some();
    let floors = match floor_file {
        Some(b) => decode_floors(&b).map_err(|reason| StorageError::Corrupt {
            file: FLOOR_FILE.into(),
            offset: 0,
            reason,
        })?,
        None => Floors::default(),
    };
    // Segments below the log start are out of the log: retention recorded the start, then
    // crashed (or failed) before unlinking them.
    let mut pending_deletes = Vec::new();
    for &base in bases.iter().filter(|b| **b < floors.log_start) {
        let name = segment_name(base);
        match dir.remove(&name).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %name, "could not delete a segment below the log start, will retry: {e}");
                pending_deletes.push(name);
            }
        }
    }
    bases.retain(|b| *b >= floors.log_start);
    let (index, checkpoint_segments) = recover_index(dir, config, &names, &floors.queues).await?;
    let mut segments = BTreeMap::new();
    let mut last_store_ts = i64::MIN;

    if bases.is_empty() {
        // A new log starts at 0; one whose segments all went (by hand) where it started.
        let first = floors.log_start;
        let seg = match create_segment(dir, config, first).await {
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
        segments.insert(first, Rc::new(seg));
        let rebuilt = !floors.index_dropped && index.checkpoint_position() < floors.log_start;
        finish_index_drop(dir, &index, &floors, rebuilt).await?;
        return Ok(Recovered {
            segments,
            index,
            end: first,
            carry: None,
            last_store_ts: 0,
            shortage: None,
            index_dropped_to: first,
            pending_deletes,
        });
    }

    // Retention recorded a log start, unlinked segments and crashed before recording the
    // floors that count their batches, and no checkpoint describes them (retention deletes
    // only checkpointed segments: this is a checkpoint that cannot be used, rebuilt from the
    // log): a queue's first scanned batch may start above its floor, and a queue with no batch
    // left starts at the next offset retention recorded for it (`finish_index_drop`).
    let gaps_ok = !floors.index_dropped && index.checkpoint_position() < floors.log_start;
    if gaps_ok {
        tracing::warn!(
            log_start = floors.log_start.get(),
            recorded_next_offsets = floors.nexts.len(),
            "rebuilding the queue index after retention deleted segments whose floors were not \
             recorded"
        );
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
        let mut seg = Segment::new(base, file, config.segment_size_bytes);
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
                Some(e) if e <= indexed_to => {
                    seg.sealed_end.set(Some(e));
                    seg.capacity = seg.capacity.max(e - base);
                }
                _ => scan_from = base.max(indexed_to),
            }
        }
        let outcome = if let Some(e) = seg.sealed_end.get() {
            ScanEnd::Sealed(e)
        } else {
            let size = seg.file.size().await.map_err(io(format!("stat {}", segment_name(base))))?;
            let len = size.max(config.segment_size_bytes);
            seg.capacity = len;
            // The name is read from disk: a base so near the top of the range that the segment
            // (and a header past it, as the scan and the appender look) would pass the last log
            // position is not a segment we wrote.
            if len.checked_add(HEADER_LEN as u64).and_then(|n| base.get().checked_add(n)).is_none()
            {
                return Err(StorageError::Corrupt {
                    file: segment_name(base),
                    offset: 0,
                    reason: "a segment at this base would end past the last log position".into(),
                });
            }
            let limit = base + len;
            let outcome =
                scan_segment(dir, &seg, config, scan_from, limit, &index, &floors, gaps_ok).await?;
            let (ScanEnd::Sealed(e) | ScanEnd::Open { end: e, .. }) = outcome;
            scanned_bytes += e.get().saturating_sub(scan_from.get());
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
    let carry = if !end.is_aligned() {
        let seg = segments.values().next_back().expect("active").clone();
        let block = end.align_down();
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
    finish_index_drop(dir, &index, &floors, gaps_ok).await?;
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
        end = end.get(),
        index_checkpoint = index.checkpoint_position().get(),
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
        index_dropped_to: if has_floors { bases[0] } else { LogPosition::ZERO },
        pending_deletes,
    })
}

/// Retention unlinked segments below the log start but did not finish dropping the queue
/// index's entries of their batches (a crash or a failed read in between): drops them, records
/// the queues' new floors, then deletes the index files that held only dropped entries.
/// `rebuilt`: the index was rebuilt from the log, which no longer holds those batches, so a
/// queue left with none starts at the next offset retention recorded for it (a file from
/// before they were recorded has none: such a queue keeps its old floor, below offsets it gave out).
async fn finish_index_drop<D: LogDir>(
    dir: &D,
    index: &IndexStore<D::File>,
    floors: &Floors,
    rebuilt: bool,
) -> Result<()> {
    if floors.index_dropped || floors.log_start == LogPosition::ZERO {
        return Ok(());
    }
    if rebuilt {
        let raised = floors.nexts.iter().filter(|(q, n)| index.raise_empty_queue(**q, **n)).count();
        if raised > 0 {
            tracing::info!(
                queues = raised,
                "queues with no batch left start at the next offset retention recorded"
            );
        }
        if floors.nexts.is_empty() {
            tracing::warn!(
                "the queue floors file records no next offsets (written before they were recorded): \
                 queues whose every batch was deleted keep their previous floor"
            );
        }
    }
    let files = index
        .drop_before(dir, floors.log_start)
        .await
        .map_err(|e| index_error("dropping index entries below the log start", e))?;
    let bytes = encode_floors(&index.floors(), floors.log_start, true, &[]);
    dir.write_atomic(FLOOR_FILE, &bytes)
        .await
        .map_err(|e| StorageError::io("writing queue floors", e))?;
    index
        .remove_files(dir, &files)
        .await
        .map_err(|e| StorageError::io("deleting index files", e))?;
    tracing::info!(
        log_start = floors.log_start.get(),
        index_files = files.len(),
        "recovery dropped the index entries retention left below the log start"
    );
    Ok(())
}

/// The queue index as the checkpoint left it, adjusted to the queue floors; rebuilt from
/// nothing (by the log scan that follows) when the checkpoint or the index files it points to
/// cannot be trusted.
pub(super) async fn recover_index<D: LogDir>(
    dir: &D,
    config: &StorageConfig,
    names: &[String],
    floors: &HashMap<QueueKey, QueueOffset>,
) -> Result<(IndexStore<D::File>, HashMap<LogPosition, SegmentCheckpoint>)> {
    let fresh = || IndexStore::new(config.index_file_entries, config.index_cache_bytes);
    let checkpoint = match dir.read_all(CHECKPOINT_FILE).await {
        Ok(Some(b)) => match IndexCheckpoint::decode(&b) {
            Ok(c) if !position_within_segments(&c, config) => {
                tracing::warn!(
                    "the index checkpoint position {} lies past the segments it describes; \
                     rebuilding the queue index from the log",
                    c.position
                );
                None
            }
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

/// Whether a checkpoint's position lies where its newest segment can end (the log's append
/// position when it was written always does). A checksum-valid checkpoint past that cannot
/// be trusted: recovery would scan from a position no segment holds (and overflow near the
/// top of the range). A `segment_size_bytes` lowered since then only costs a rebuild.
fn position_within_segments(c: &IndexCheckpoint, config: &StorageConfig) -> bool {
    let Some(last) = c.segments.iter().max_by_key(|s| s.base) else {
        return c.position == LogPosition::ZERO;
    };
    let sealed_end = last.sealed_end.map_or(0, LogPosition::get);
    last.base
        .get()
        .checked_add(config.segment_size_bytes)
        .is_some_and(|end| c.position.get() <= end.max(sealed_end))
}

pub(super) fn index_error(what: &str, e: LookupError) -> StorageError {
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
pub(super) async fn scan_segment<D: LogDir>(
    dir: &D,
    seg: &Segment<D::File>,
    config: &StorageConfig,
    from: LogPosition,
    seg_end: LogPosition,
    index: &IndexStore<D::File>,
    floors: &Floors,
    gaps_ok: bool,
) -> Result<ScanEnd> {
    let mut pos = from;
    let max_batch = config.stored_batch_limit(seg.capacity);
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
        // A batch stored under a larger `max_batch_bytes` than today's is data, not a torn
        // write (recovery cut every such batch, and everything after it, after a crash).
        let framed = config.frames_stored_batch(length, &buf[at..], seg.capacity);
        if !framed || pos + length as u64 > seg_end {
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
        let Ok(view) = BatchView::parse(&buf[at..at + length], max_batch) else {
            return Ok(ScanEnd::Open { end: pos, torn: true });
        };
        if view.verify_stamp().is_err() {
            return Ok(ScanEnd::Open { end: pos, torn: true });
        }
        let h = view.header;
        if h.is_control() {
            return Ok(ScanEnd::Sealed(pos + length as u64));
        }
        let q = QueueKey::new(TopicId::new(h.stamp.topic_id), QueueId::new(h.stamp.queue_id));
        let floor = floors.queues.get(&q).copied().unwrap_or_default();
        let entry = IndexEntry {
            base_offset: QueueOffset::new(h.stamp.base_offset),
            position: pos,
            length: length as u32,
            record_count: h.record_count,
            store_timestamp_ms: h.stamp.store_timestamp_ms,
        };
        // Batches below the checkpoint are indexed already (a segment it did not describe).
        if pos >= index.checkpoint_position() && !index.push_scanned(q, entry, floor, gaps_ok) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{run_on_new_executor, ExecutorOptions};
    use crate::storage::sim_dir::SimDir;

    fn config() -> StorageConfig {
        StorageConfig {
            dir: "/sim".into(),
            segment_size_bytes: 64 * 1024,
            index_file_entries: 128,
            ..StorageConfig::default()
        }
    }

    /// A file named like a segment whose base lies so near the top of the range that the
    /// segment would end past the last log position (a stray or hand-made file): a clear
    /// error, not an overflow.
    #[test]
    fn a_segment_named_near_the_last_position_is_refused() {
        run_on_new_executor(ExecutorOptions::default(), || async {
            let dir = SimDir::new(1);
            let base = LogPosition::new(u64::MAX - 4095);
            dir.open(&segment_name(base), true).await.unwrap();
            match recover(&dir, &config()).await {
                Err(StorageError::Corrupt { file, .. }) => assert_eq!(file, segment_name(base)),
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("recovered a log past the last position"),
            }
        })
        .unwrap();
    }

    /// A checksum-valid index checkpoint (an older version's bug, a hand-edited file) whose
    /// position lies past where its segments can end: it cannot be trusted, so the index is
    /// rebuilt from the log, not scanned from there.
    #[test]
    fn a_checkpoint_position_past_its_segments_rebuilds_the_index() {
        run_on_new_executor(ExecutorOptions::default(), || async {
            let dir = SimDir::new(1);
            let config = config();
            dir.open(&segment_name(LogPosition::ZERO), true).await.unwrap();
            let ckpt = IndexCheckpoint {
                position: LogPosition::new(u64::MAX),
                file_entries: config.index_file_entries,
                segments: vec![SegmentCheckpoint {
                    base: LogPosition::ZERO,
                    sealed_end: None,
                    max_store_timestamp_ms: 0,
                }],
                queues: vec![],
            };
            dir.write_atomic(CHECKPOINT_FILE, &ckpt.encode()).await.unwrap();
            let recovered = recover(&dir, &config).await.unwrap();
            assert_eq!(recovered.end, LogPosition::ZERO);
            assert_eq!(recovered.index.checkpoint_position(), LogPosition::ZERO);
        })
        .unwrap();
    }
}
