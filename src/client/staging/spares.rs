//! Spare batch buffers of the staging area ([`super::Staging`]): buffers of answered batches
//! kept for new ones, bounded in size and in number.

/// Buffers of answered batches, used again for new ones: with many queues nearly every
/// message opens a batch, and a buffer allocated on the caller's thread and freed on the
/// worker's takes the allocator's slow path on both.
/// Bounded: buffers of at most [`SPARE_MAX_CAPACITY`], [`Spares::max_bytes`] of them in all.
pub(super) struct Spares {
    pub(super) bufs: Vec<Vec<u8>>,
    /// Capacity of `bufs`, together.
    pub(super) bytes: usize,
    max_bytes: usize,
}

/// Larger buffers are freed: their allocation is paid by many messages.
pub(super) const SPARE_MAX_CAPACITY: usize = 64 * 1024;
/// A spare at most this many times the room a new batch is expected to need is used for it.
const SPARE_OVERSIZE: usize = 4;

impl Spares {
    pub(super) fn new(max_bytes: usize) -> Spares {
        Spares { bufs: Vec::new(), bytes: 0, max_bytes }
    }

    /// The last buffer returned, for a batch expected to need `capacity` bytes. A smaller one
    /// is used too and grows as a new buffer would (taking only buffers with enough room
    /// missed most of the time with many queues: the spares filled up and every answered
    /// buffer was freed anyway). One more than [`SPARE_OVERSIZE`] times too large is freed
    /// instead: handed to a queue of one-message batches it would hold memory the staging
    /// area does not count (it counts bytes written, not capacity).
    pub(super) fn take(&mut self, capacity: usize) -> Option<Vec<u8>> {
        let buf = self.bufs.pop()?;
        self.bytes -= buf.capacity();
        (buf.capacity() <= capacity.saturating_mul(SPARE_OVERSIZE)).then_some(buf)
    }

    /// Keeps `buf` for a later batch if it is small and the spares have room; frees it if not.
    pub(super) fn put(&mut self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap <= SPARE_MAX_CAPACITY && self.bytes + cap <= self.max_bytes {
            self.bytes += cap;
            self.bufs.push(buf);
        }
    }
}
