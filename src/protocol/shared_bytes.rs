//! Immutable bytes shared without copying: a range of a reference-counted buffer.
//!
//! A produce request's batch is one of these. On the broker it is a range of the connection's
//! read buffer ([`super::read_buffer::ReadBuffer::lend`]): the socket read the bytes there, the
//! request borrows them, and the commit log copies them straight into its DMA chunk, which is
//! the one copy on ingest (DESIGN.md section 3). It is `Send`, so a produce forwarded to the
//! owner shard carries the same bytes across threads without a copy either; the buffer it
//! points into is freed (or reused by its connection) once every such range is dropped.
//!
//! Clients and tests build one from a `Vec<u8>` (no copy).

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// A cheap-to-clone, immutable byte range of a shared buffer.
#[derive(Clone)]
pub struct SharedBytes {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl SharedBytes {
    /// `range` of `buf`. Panics if the range is out of bounds (a programmer error).
    pub(crate) fn from_shared(buf: Arc<Vec<u8>>, range: Range<usize>) -> Self {
        assert!(range.start <= range.end && range.end <= buf.len(), "range within the buffer");
        SharedBytes { buf, start: range.start, end: range.end }
    }

    /// A sub-range of these bytes, sharing the same buffer. Panics if out of bounds.
    pub fn slice(&self, range: Range<usize>) -> SharedBytes {
        assert!(range.start <= range.end && range.end <= self.len(), "slice within the bytes");
        SharedBytes {
            buf: self.buf.clone(),
            start: self.start + range.start,
            end: self.start + range.end,
        }
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(v: Vec<u8>) -> Self {
        let end = v.len();
        SharedBytes { buf: Arc::new(v), start: 0, end }
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SharedBytes {}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A batch can be megabytes; its length and first bytes identify it in logs.
        let shown = &self[..self.len().min(16)];
        write!(f, "SharedBytes({} bytes: {:02x?}", self.len(), shown)?;
        f.write_str(if self.len() > shown.len() { "..)" } else { ")" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_the_buffer_and_compare_by_content() {
        let whole = SharedBytes::from((0u8..100).collect::<Vec<_>>());
        let part = whole.slice(10..20);
        assert_eq!(&*part, &(10u8..20).collect::<Vec<_>>()[..]);
        assert!(std::ptr::eq(&whole[10], &part[0]), "no copy");
        assert_eq!(part.slice(2..4), SharedBytes::from(vec![12, 13]));
        assert_eq!(part.slice(5..5).len(), 0);
        let dbg = format!("{part:?}");
        assert!(dbg.starts_with("SharedBytes(10 bytes"), "{dbg}");
    }

    #[test]
    #[should_panic(expected = "slice within the bytes")]
    fn slicing_past_the_end_is_a_programmer_error() {
        SharedBytes::from(vec![1, 2, 3]).slice(1..4);
    }
}
