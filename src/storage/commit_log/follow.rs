//! Following the log: reading written batches in log order from a position, for indexes that
//! live behind the log (the key index). Takes the bytes from the log's chunk cache while it
//! still holds them (a follower close behind the log reads no disk and allocates nothing), and
//! otherwise reads segment files in [`SCAN_READ_BYTES`] pieces, one buffer at a time; verifies
//! every batch and hands its bytes to the caller.
//!
//! Promises: only batches below the caller's bound and the written end (on disk, not
//! necessarily synced: a caller that must not claim what a crash can take back bounds by
//! [`CommitLog::durable_end`], or holds what it read until that passes it) are reported, each
//! once, in log order; the returned
//! position is where the next call continues (a batch boundary or a segment base). A range
//! retention removed is skipped (the next position is the oldest segment's base). A batch that
//! fails verification is skipped when its length can be trusted (its stamp verifies), otherwise
//! the rest of its segment is skipped, with a warning: a follower never stops on damage that
//! reads of the same bytes would report anyway.

use std::rc::Rc;

use super::reader::memory_copy;
use super::recovery::SCAN_READ_BYTES;
use super::CommitLog;
use crate::format::batch::{self as fmt, BatchHeader, BatchView, FormatError, HEADER_LEN};
use crate::format::record::{copy_prefix, walk_pieces, RecordRef};
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{LogDir, LogFile, ReadBuf};
use crate::storage::segment::{segment_name, Segment};
use crate::storage::types::LogPosition;

/// A batch as [`CommitLog::follow`] reports it: whole, or, when the log holds it in memory
/// across chunks (a 1 MiB batch over 1 MiB chunks nearly always is), in those chunks' pieces.
/// Walking the pieces where they lie instead of copying them together took the key index's
/// reader from 0.12-0.13 to 0.09 CPU seconds per GB of raw produce (BENCHMARKS.md, round 19).
pub enum FollowedBatch<'a> {
    Whole(BatchView<'a>),
    /// The header verified as far as it can be without the records
    /// ([`fmt::verify_stored_header`]); the pieces hold the whole batch, header included.
    Pieces {
        header: BatchHeader,
        pieces: &'a [&'a [u8]],
    },
}

impl FollowedBatch<'_> {
    pub fn header(&self) -> &BatchHeader {
        match self {
            FollowedBatch::Whole(v) => &v.header,
            FollowedBatch::Pieces { header, .. } => header,
        }
    }

    /// The batch's length in bytes, header included.
    pub fn length(&self) -> usize {
        self.header().length as usize
    }

    /// Calls `each` with every record, in order; stops at the first malformed one, with its
    /// error (the checks of [`BatchView::records`]). Hints the CPU to load records ahead.
    pub fn for_each_record(&self, mut each: impl FnMut(RecordRef<'_>)) -> Result<(), FormatError> {
        match self {
            // Followed batches were written a while ago: out of the caches, so prefetched.
            FollowedBatch::Whole(v) => v.records().prefetching().try_for_each(|r| r.map(&mut each)),
            FollowedBatch::Pieces { header, pieces } => walk_pieces(
                pieces,
                HEADER_LEN,
                header.record_count,
                header.first_timestamp_ms,
                each,
            ),
        }
    }

    /// The batch's bytes, copied together when it is in pieces.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            FollowedBatch::Whole(v) => v.as_bytes().to_vec(),
            FollowedBatch::Pieces { pieces, .. } => pieces.concat(),
        }
    }
}

/// What one call of [`CommitLog::follow`] covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    /// Where the next call continues.
    pub next: LogPosition,
    /// Batches reported.
    pub batches: u64,
    /// Bytes read, from disk or memory (what `max_bytes` bounds).
    pub bytes_read: u64,
    /// Of those, bytes read from disk (the chunk cache no longer held them).
    pub disk_bytes: u64,
}

impl<D: LogDir + 'static> CommitLog<D> {
    /// The first position the log still holds (the oldest segment's base).
    pub fn oldest_position(&self) -> LogPosition {
        self.st.borrow().segments.keys().next().copied().unwrap_or(LogPosition::ZERO)
    }

    /// Reports the batches from `from` (a position an earlier call returned, or zero) up to
    /// `up_to` and the written end in log order, reading about `max_bytes`, with
    /// `each(position, batch)`: each batch parsed and its CRCs verified once, here (the key
    /// index used to parse it again; the producer's CRC only for bytes read from disk, as
    /// those in memory were verified when appended); control batches are not reported. See
    /// the module documentation.
    pub async fn follow(
        self: &Rc<Self>,
        from: LogPosition,
        max_bytes: u64,
        up_to: LogPosition,
        mut each: impl FnMut(LogPosition, &FollowedBatch<'_>),
    ) -> Result<Followed> {
        let (segments, limit) = {
            let st = self.st.borrow();
            let limit = up_to.min(st.tracker.written());
            let segs: Vec<Rc<Segment<D::File>>> = st.segments.values().cloned().collect();
            (segs, limit)
        };
        let mut out = Followed { next: from, batches: 0, bytes_read: 0, disk_bytes: 0 };
        let Some(first) = segments.first() else { return Ok(out) };
        if out.next < first.base {
            out.next = first.base;
        }
        for (i, seg) in segments.iter().enumerate() {
            let next_base = segments.get(i + 1).map(|s| s.base);
            if next_base.is_some_and(|b| out.next >= b) {
                continue;
            }
            out.next = out.next.max(seg.base);
            let seg_end = seg.sealed_end.get().unwrap_or(limit).min(limit);
            let done = self.follow_segment(seg, seg_end, max_bytes, &mut out, &mut each).await?;
            if !done || out.bytes_read >= max_bytes {
                return Ok(out);
            }
            match (seg.sealed_end.get(), next_base) {
                // Sealed and read to its end: go on with the next segment.
                (Some(e), Some(b)) if out.next >= e && b <= limit => out.next = b,
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// Reads `seg` from `out.next` to `seg_end`. Returns false when it stopped early (the
    /// byte budget, or a batch not yet written whole), true when it reached `seg_end` (or
    /// skipped damage to it).
    async fn follow_segment(
        &self,
        seg: &Segment<D::File>,
        seg_end: LogPosition,
        max_bytes: u64,
        out: &mut Followed,
        each: &mut impl FnMut(LogPosition, &FollowedBatch<'_>),
    ) -> Result<bool> {
        // Batches stored under larger limits than today's are followed too.
        let max_batch = self.config.stored_batch_limit(seg.capacity);
        // `len` bytes from `pos` if memory holds at least `need` of them, else from disk. Every
        // follow used to read the disk into a fresh buffer: with the key index a few hundred
        // milliseconds behind the log, the broker read back everything it wrote, and the
        // kernel zeroed a new page for every 4 KiB of it (12.6% of the broker's samples in
        // the many-queues workload, BENCHMARKS.md 2026-12-03).
        let read =
            |pos: LogPosition, len: usize, need: usize| async move {
                if let Some(buf) = self.follow_from_memory(pos, len, need) {
                    return Ok((buf, false));
                }
                seg.file.read_at(pos - seg.base, len).await.map(|buf| (buf, true)).map_err(|e| {
                    StorageError::io(format!("following {}", segment_name(seg.base)), e)
                })
            };
        let count = |out: &mut Followed, (buf, disk): (ReadBuf, bool)| {
            out.bytes_read += buf.len() as u64;
            if disk {
                out.disk_bytes += buf.len() as u64;
            }
            (buf, disk)
        };
        // Whether `buf` came from disk: bytes from memory were verified when appended (the
        // producer's CRC at ingest, or built here), so only the stamp CRC is checked again.
        let mut from_disk = false;
        let mut buf = ReadBuf::from_vec(Vec::new());
        let mut buf_pos = out.next;
        while out.next + HEADER_LEN as u64 <= seg_end {
            if out.bytes_read >= max_bytes {
                return Ok(false);
            }
            let pos = out.next;
            let want = SCAN_READ_BYTES.min((seg_end - pos) as usize);
            if pos < buf_pos || pos + HEADER_LEN as u64 > buf_pos + buf.len() as u64 {
                let got = count(out, read(pos, want, HEADER_LEN).await?);
                (buf_pos, (buf, from_disk)) = (pos, got);
            }
            let at = (pos - buf_pos) as usize;
            let length = fmt::peek_length(&buf[at..]).unwrap_or(0) as usize;
            let framed = self.config.frames_stored_batch(length, &buf[at..], seg.capacity);
            if framed && pos + length as u64 > seg_end && seg.sealed_end.get() != Some(seg_end) {
                // The written end can fall inside a batch (it moves by chunks): this one is
                // taken once written whole.
                return Ok(false);
            }
            if !framed || pos + length as u64 > seg_end {
                tracing::warn!(
                    segment = %segment_name(seg.base),
                    "no batch can be framed at log position {pos} (length field {length}); \
                     the key index skips the rest of this segment"
                );
                out.next = seg_end;
                return Ok(true);
            }
            if at + length > buf.len() {
                if let Some(pieces) = self.memory_pieces(pos, length) {
                    out.bytes_read += length as u64;
                    let pieces: Vec<&[u8]> = pieces.iter().map(|b| &b[..]).collect();
                    let mut head = [0u8; HEADER_LEN];
                    // `length` (at least a header) bytes are in the pieces.
                    copy_prefix(&pieces, &mut head);
                    match fmt::verify_stored_header(&head, max_batch) {
                        Ok(header) if header.is_control() => {}
                        Ok(header) => {
                            out.batches += 1;
                            each(pos, &FollowedBatch::Pieces { header, pieces: &pieces });
                        }
                        Err(e) => {
                            if !self.damaged(seg, pos, &head, length, &e) {
                                out.next = seg_end;
                                return Ok(true);
                            }
                        }
                    }
                    out.next = pos + length as u64;
                    continue;
                }
                let got = count(out, read(pos, length.max(want), length).await?);
                (buf_pos, (buf, from_disk)) = (pos, got);
                if buf.len() < length {
                    return Err(StorageError::Corrupt {
                        file: segment_name(seg.base),
                        offset: pos - seg.base,
                        reason: format!("short read: {} of {length} bytes", buf.len()),
                    });
                }
            }
            let at = (pos - buf_pos) as usize;
            let bytes = &buf[at..at + length];
            let parsed = if from_disk {
                BatchView::parse(bytes, max_batch)
            } else {
                BatchView::parse_verified_before(bytes, max_batch)
            };
            match parsed.and_then(|v| v.verify_stamp().map(|()| v)) {
                Ok(view) if view.header.is_control() => {}
                Ok(view) => {
                    out.batches += 1;
                    each(pos, &FollowedBatch::Whole(view));
                }
                Err(e) => {
                    if !self.damaged(seg, pos, bytes, length, &e) {
                        out.next = seg_end;
                        return Ok(true);
                    }
                }
            }
            out.next = pos + length as u64;
        }
        Ok(true)
    }

    /// Reports a batch at `pos` of `length` bytes that failed verification; returns whether
    /// the follower may go on after it (its stamp verifies and its length is within today's
    /// `max_batch_bytes`, so it can be trusted: the stamp does not cover the length field),
    /// else it skips the rest of the segment.
    fn damaged(
        &self,
        seg: &Segment<D::File>,
        pos: LogPosition,
        bytes: &[u8],
        length: usize,
        e: &FormatError,
    ) -> bool {
        if fmt::stamp_verifies(bytes) && length <= self.config.max_batch_bytes {
            tracing::warn!(
                segment = %segment_name(seg.base),
                "damaged batch at log position {pos} not indexed: {e}"
            );
            return true;
        }
        tracing::warn!(
            segment = %segment_name(seg.base),
            "damaged batch at log position {pos} ({e}); the key index skips the rest of this \
             segment"
        );
        false
    }

    /// The `len` log bytes from `pos` as the cached chunks hold them, if they hold them all.
    fn memory_pieces(&self, pos: LogPosition, len: usize) -> Option<Vec<ReadBuf>> {
        let st = self.st.borrow();
        let mut pieces = Vec::new();
        let mut done = 0;
        while done < len {
            let piece = st.cache.rest_of_chunk(pos + done as u64, len - done)?;
            if piece.is_empty() {
                return None;
            }
            done += piece.len();
            pieces.push(piece);
        }
        Some(pieces)
    }

    /// Up to `len` log bytes from `pos` out of memory, if it holds at least `need` of them:
    /// the rest of the cached chunk holding `pos` (shared, not copied), or, for a batch that
    /// continues into the next chunk, a copy of its `need` bytes.
    fn follow_from_memory(&self, pos: LogPosition, len: usize, need: usize) -> Option<ReadBuf> {
        let st = self.st.borrow();
        match st.cache.rest_of_chunk(pos, len) {
            Some(buf) if buf.len() >= need => Some(buf),
            _ => memory_copy(&st, pos, need).map(ReadBuf::from_vec),
        }
    }
}
