//! Produce requests gathered into as few `writev` calls as their bounds allow: frame heads
//! and small batches copied into one buffer, larger batches written from their own buffers.

use std::io::{IoSlice, Write};
use std::sync::Arc;

use super::ProduceFrame;
use crate::protocol::{produce_multi, Request};

/// Batches smaller than this are copied into a gathered write's buffer; larger ones are
/// written from their own buffers (one iovec each, in the same `writev`).
pub(super) const GATHER_BELOW_BYTES: usize = 16 * 1024;
/// A gathered write goes out once its buffer holds this many bytes or it has this many
/// iovecs, so it stays bounded however many frames one call sends.
const GATHER_MAX_BYTES: usize = 256 * 1024;
const GATHER_MAX_SLICES: usize = 256;

/// A PRODUCE_MULTI entry's batch is copied into the gathered write below this size; from this
/// size on it is one iovec of the `writev` (the kernel copies it once either way; the copy
/// into the gather buffer was 6% of the load generator's core in many-queues).
pub(super) const MULTI_COPY_BELOW_BYTES: usize = 2048;

/// A PRODUCE_MULTI entry to gather: topic, queue id, batch.
type EntryHead = (Arc<str>, u32, Arc<Vec<u8>>);

/// Produce frames gathered for one write: heads and small batches copied into `buf`, large
/// batches kept by reference; `parts` is the order of both.
#[derive(Default)]
pub(super) struct Gathered {
    pub(super) buf: Vec<u8>,
    /// `Ok(end)`: `buf` up to `end` (from the previous part's end); `Err(i)`: `large[i]`.
    parts: Vec<std::result::Result<usize, usize>>,
    pub(super) large: Vec<Arc<Vec<u8>>>,
    pub(super) frames: usize,
}

impl Gathered {
    /// Empty, its buffer sized once for what `frames` copy into it (up to a gather's bound):
    /// grown a doubling at a time, it copied every gathered byte again on the worker's path.
    pub(super) fn with_room_for(frames: &[ProduceFrame]) -> Self {
        let copied = |f: &ProduceFrame| {
            let head = 32 + f.topic.len(); // frame and produce headers, the topic's bytes
            head + if f.batch.len() < GATHER_BELOW_BYTES { f.batch.len() } else { 0 }
        };
        let bytes: usize = frames.iter().map(copied).sum();
        // A push may pass the bound by one small frame before the gather is written.
        let bound = GATHER_MAX_BYTES + GATHER_BELOW_BYTES + 64;
        Gathered { buf: Vec::with_capacity(bytes.min(bound)), ..Default::default() }
    }

    pub(super) fn push(&mut self, id: u32, topic: &str, queue_id: u32, batch: Arc<Vec<u8>>) {
        Request::append_produce_head(&mut self.buf, id, topic, queue_id, 0, batch.len());
        if batch.len() < GATHER_BELOW_BYTES {
            self.buf.extend_from_slice(&batch);
        } else {
            self.parts.push(Ok(self.buf.len()));
            self.parts.push(Err(self.large.len()));
            self.large.push(batch);
        }
        self.frames += 1;
    }

    /// A PRODUCE_MULTI of small batches: each under [`MULTI_COPY_BELOW_BYTES`] copied into
    /// the buffer, the others written from their own buffers.
    pub(super) fn push_multi(&mut self, id: u32, entries: &[EntryHead]) {
        let bytes = entries.iter().map(|(t, _, b)| produce_multi::entry_bytes(t, b.len())).sum();
        produce_multi::append_head(&mut self.buf, id, entries.len(), bytes);
        for (topic, queue_id, batch) in entries {
            produce_multi::append_entry_head(&mut self.buf, topic, *queue_id, batch.len());
            if batch.len() < MULTI_COPY_BELOW_BYTES {
                self.buf.extend_from_slice(batch);
            } else {
                self.parts.push(Ok(self.buf.len()));
                self.parts.push(Err(self.large.len()));
                self.large.push(batch.clone());
            }
        }
        self.frames += 1;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.frames == 0
    }

    pub(super) fn is_full(&self) -> bool {
        self.buf.len() >= GATHER_MAX_BYTES || self.parts.len() >= GATHER_MAX_SLICES
    }

    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.parts.clear();
        self.large.clear();
        self.frames = 0;
    }

    pub(super) fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut slices = Vec::with_capacity(self.parts.len() + 1);
        let mut from = 0;
        for part in &self.parts {
            match *part {
                Ok(end) => {
                    slices.push(IoSlice::new(&self.buf[from..end]));
                    from = end;
                }
                Err(i) => slices.push(IoSlice::new(&self.large[i])),
            }
        }
        slices.push(IoSlice::new(&self.buf[from..]));
        slices.retain(|s| !s.is_empty());
        write_all_vectored(w, &slices)
    }
}

/// `Write::write_all_vectored` (unstable in std): writes every slice, resuming after short
/// writes (the rest of a partly written slice alone, then the others together again).
fn write_all_vectored(w: &mut impl Write, slices: &[IoSlice<'_>]) -> std::io::Result<()> {
    let (mut i, mut off) = (0, 0);
    while i < slices.len() {
        let r = if off == 0 { w.write_vectored(&slices[i..]) } else { w.write(&slices[i][off..]) };
        let mut n = match r {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let left = slices[i].len() - off;
            if n < left {
                off += n;
                break;
            }
            n -= left;
            (i, off) = (i + 1, 0);
        }
    }
    Ok(())
}
