//! Reading the tail of the log in log order: what a shard rebuilds at startup from the batches
//! stored last (the idempotence windows) costs one sequential read, not a random read per
//! queue.
//!
//! The scan starts at a batch boundary at or before `end - max_bytes` (the log records where
//! batches start only in the index, so the boundary comes from the index entries of the
//! busiest queues, the index checkpoint or the segment's base) and never before the oldest
//! segment holding a batch stored at or after `since_ms`. It reads segment files in
//! [`SCAN_READ_BYTES`] pieces (one buffer at a time), verifies every batch and hands its header
//! to the caller. A batch that fails verification is reported: if its stamped fields are
//! intact the scan says whose queue it was and goes on after it, otherwise it stops there
//! (without a trusted length, nothing after it can be framed).

use std::rc::Rc;

use super::recovery::SCAN_READ_BYTES;
use super::CommitLog;
use crate::format::batch::{self as fmt, BatchHeader, BatchView, HEADER_LEN};
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{LogDir, LogFile, ReadBuf};
use crate::storage::segment::{segment_name, Segment};
use crate::storage::types::{LogPosition, QueueId, QueueKey, TopicId};

/// Busiest queues whose index is asked for a batch boundary near the scan's start.
const BOUNDARY_PROBES: usize = 8;
/// A start this close before the target needs no further lookup (at least).
const CLOSE_ENOUGH_BYTES: u64 = 64 << 10;

/// One item of a tail scan.
#[derive(Debug)]
pub enum Scanned<'a> {
    /// A verified batch at `position` (control batches are not reported).
    Batch { position: LogPosition, header: &'a BatchHeader },
    /// A batch at `position` failed verification. `queue` is its queue when its stamped
    /// fields are intact (the scan goes on after it); `None` ends the scan.
    Damaged { position: LogPosition, queue: Option<QueueKey>, reason: String },
}

/// What a tail scan covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailScan {
    /// Where it started (a batch boundary).
    pub start: LogPosition,
    /// Where it was asked to end: the readable end of the log when it began.
    pub end: LogPosition,
    /// Verified batches reported.
    pub batches: u64,
    /// Bytes read from disk.
    pub bytes_read: u64,
    /// Set when damage ended the scan before `end`.
    pub stopped_at: Option<LogPosition>,
}

impl<D: LogDir + 'static> CommitLog<D> {
    /// Scans the batches of the last `max_bytes` of the readable log that lie in segments
    /// holding batches stored at or after `since_ms`, oldest first, calling `each` for every
    /// batch (see the module documentation). Reads what is on disk: call it before appending
    /// (at startup), when everything readable is written.
    pub async fn scan_tail(
        self: &Rc<Self>,
        max_bytes: u64,
        since_ms: i64,
        mut each: impl FnMut(Scanned<'_>),
    ) -> Result<TailScan> {
        let end = self.visible_end().min(self.st.borrow().tracker.written());
        let start = self.tail_start(end, max_bytes, since_ms).await;
        let mut scan = TailScan { start, end, batches: 0, bytes_read: 0, stopped_at: None };
        let segments: Vec<Rc<Segment<D::File>>> = {
            let st = self.st.borrow();
            let first = st.segment_for(start).map_or(start, |s| s.base);
            st.segments.range(first..end).map(|(_, s)| s.clone()).collect()
        };
        for seg in segments {
            let from = start.max(seg.base);
            if let Some(at) = self.scan_segment_tail(&seg, from, end, &mut scan, &mut each).await? {
                scan.stopped_at = Some(at);
                break;
            }
        }
        Ok(scan)
    }

    /// A batch boundary at or before `end - max_bytes`, as close to it as the index tells,
    /// and never before the oldest segment holding a batch stored at or after `since_ms`.
    async fn tail_start(&self, end: LogPosition, max_bytes: u64, since_ms: i64) -> LogPosition {
        let target = LogPosition::new(end.get().saturating_sub(max_bytes));
        let (recent, floor) = {
            let st = self.st.borrow();
            // Store times never decrease along the log, so older segments hold nothing newer.
            let recent = st
                .segments
                .values()
                .find(|s| s.max_store_timestamp_ms.get() >= since_ms)
                .map_or(end, |s| s.base.min(end));
            (recent, st.segment_for(target).map(|s| s.base))
        };
        let floor = match floor {
            Some(f) if recent <= target && f < target => f,
            // The start is a segment base: no search needed.
            Some(f) if recent <= target => return f,
            _ => return recent,
        };
        let mut best = floor;
        let checkpoint = self.index.checkpoint_position();
        if checkpoint >= best && checkpoint <= target {
            best = checkpoint;
        }
        // Close enough: reading this much more costs less than another lookup.
        let slack = (max_bytes / 64).max(CLOSE_ENOUGH_BYTES);
        for queue in self.index.busiest_queues(BOUNDARY_PROBES) {
            if target - best <= slack {
                break;
            }
            // Only a hint: a failed lookup leaves an earlier (still correct) start.
            if let Ok(Some(p)) =
                self.index.last_position_at_or_before(&self.dir, queue, target).await
            {
                if p > best && p <= target {
                    best = p;
                }
            }
        }
        best
    }

    /// Scans `seg` from boundary `from` to its end (or `end`). Returns where damage stopped
    /// the scan, if it did.
    async fn scan_segment_tail(
        &self,
        seg: &Segment<D::File>,
        from: LogPosition,
        end: LogPosition,
        scan: &mut TailScan,
        each: &mut impl FnMut(Scanned<'_>),
    ) -> Result<Option<LogPosition>> {
        // Batches stored under larger limits than today's are read too.
        let max_batch = self.config.stored_batch_limit(seg.capacity);
        // Past a sealed segment's end marker, or the log's end, nothing is a batch.
        let seg_end = seg.sealed_end.get().unwrap_or(end).min(end);
        let read = |pos: LogPosition, len: usize| async move {
            seg.file
                .read_at(pos - seg.base, len)
                .await
                .map_err(|e| StorageError::io(format!("scanning {}", segment_name(seg.base)), e))
        };
        let mut pos = from;
        let mut buf = ReadBuf::from_vec(Vec::new());
        let mut buf_pos = pos;
        while pos + HEADER_LEN as u64 <= seg_end {
            let want = SCAN_READ_BYTES.min((seg_end - pos) as usize);
            if pos + HEADER_LEN as u64 > buf_pos + buf.len() as u64 {
                (buf_pos, buf) = (pos, read(pos, want).await?);
                scan.bytes_read += buf.len() as u64;
            }
            let at = (pos - buf_pos) as usize;
            let length = fmt::peek_length(&buf[at..]).unwrap_or(0) as usize;
            let framed = buf.len() >= at + HEADER_LEN
                && self.config.frames_stored_batch(length, &buf[at..], seg.capacity)
                && pos + length as u64 <= seg_end;
            if !framed {
                let reason = format!("no batch can be framed here (length field {length})");
                each(Scanned::Damaged { position: pos, queue: None, reason });
                return Ok(Some(pos));
            }
            if at + length > buf.len() {
                (buf_pos, buf) = (pos, read(pos, length.max(want)).await?);
                scan.bytes_read += buf.len() as u64;
                if buf.len() < length {
                    let reason = format!("short read: {} of {length} bytes", buf.len());
                    each(Scanned::Damaged { position: pos, queue: None, reason });
                    return Ok(Some(pos));
                }
            }
            let at = (pos - buf_pos) as usize;
            let bytes = &buf[at..at + length];
            match BatchView::parse(bytes, max_batch).and_then(|v| v.verify_stamp().map(|()| v)) {
                Ok(view) if view.header.is_control() => return Ok(None),
                Ok(view) => {
                    scan.batches += 1;
                    each(Scanned::Batch { position: pos, header: &view.header });
                }
                // Its length is trusted to go on past it only within today's limit: the
                // stamp does not cover the length field.
                Err(e) if fmt::stamp_verifies(bytes) && length <= self.config.max_batch_bytes => {
                    let h = fmt::read_header(bytes).expect("the stamp verified");
                    let queue = QueueKey::new(
                        TopicId::new(h.stamp.topic_id),
                        QueueId::new(h.stamp.queue_id),
                    );
                    each(Scanned::Damaged {
                        position: pos,
                        queue: Some(queue),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    each(Scanned::Damaged { position: pos, queue: None, reason: e.to_string() });
                    return Ok(Some(pos));
                }
            }
            pos += length as u64;
        }
        Ok(None)
    }
}
