//! A connection's read buffer, for both ends of the native protocol (broker connections and
//! the client's reader threads).
//!
//! The socket reads straight into it (no intermediate copy), and frames are decoded in place.

/// A connection's read buffer: the socket reads straight into it, frames are decoded in place.
///
/// It grows to hold one whole frame when a large one arrives and keeps that size while large
/// frames keep coming (regrowing it for every 1 MiB frame page-faulted fresh memory each time:
/// measured as half of a broker core). It shrinks back to its base size only when
/// empty after [`SMALL_FRAMES_BEFORE_SHRINK`] small frames in a row, so an idle connection
/// never pins more than that. Its size never exceeds `max_frame_bytes` (+ one read chunk).
pub struct ReadBuffer {
    /// Initialised once; `data.len()` is the capacity in use.
    data: Vec<u8>,
    start: usize,
    end: usize,
    small_frames: u32,
    /// Base size, and the size of one read beyond a frame.
    chunk: usize,
}

/// Small frames in a row after which an empty, grown buffer shrinks back.
pub const SMALL_FRAMES_BEFORE_SHRINK: u32 = 64;

impl ReadBuffer {
    /// A buffer of `chunk` bytes (also its base size and the growth step).
    pub fn new(chunk: usize) -> Self {
        ReadBuffer { data: vec![0; chunk], start: 0, end: 0, small_frames: 0, chunk }
    }

    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.start + n <= self.end);
        self.start += n;
        if n <= self.chunk {
            self.small_frames = self.small_frames.saturating_add(1);
        } else {
            self.small_frames = 0;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > self.chunk && self.small_frames >= SMALL_FRAMES_BEFORE_SHRINK {
                self.data = vec![0; self.chunk];
            }
        }
    }

    /// Free space to read into, large enough that a frame of `needed` bytes fits whole.
    pub fn space_for(&mut self, needed: usize) -> &mut [u8] {
        let want = needed.max(self.end - self.start + 1);
        if self.start > 0 && self.start + want > self.data.len() {
            // Move the partial frame to the front (at most one frame's worth, usually small).
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if want > self.data.len() {
            self.data.resize(want.next_multiple_of(self.chunk), 0);
        }
        if self.end == self.data.len() {
            self.data.resize(self.data.len() + self.chunk, 0);
        }
        &mut self.data[self.end..]
    }

    pub fn advance(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 64 * 1024;

    /// Feeds `bytes` through the buffer as reads of at most `read` bytes each, consuming whole
    /// frames of `frame` bytes as they complete; returns the frames seen.
    fn feed(rb: &mut ReadBuffer, bytes: &[u8], frame: usize, read: usize) -> Vec<Vec<u8>> {
        let mut out = vec![];
        let mut at = 0;
        while at < bytes.len() {
            let buffered = rb.filled().len();
            let space = rb.space_for(frame);
            assert!(space.len() + buffered >= frame, "a whole frame always fits");
            let n = space.len().min(read).min(bytes.len() - at);
            space[..n].copy_from_slice(&bytes[at..at + n]);
            rb.advance(n);
            at += n;
            while rb.filled().len() >= frame {
                out.push(rb.filled()[..frame].to_vec());
                rb.consume(frame);
            }
        }
        out
    }

    #[test]
    fn holds_whole_large_frames_and_shrinks_only_after_small_ones() {
        let mut rb = ReadBuffer::new(CHUNK);
        let big = 1 << 20;
        let data: Vec<u8> = (0..3 * big).map(|i| (i % 251) as u8).collect();
        let frames = feed(&mut rb, &data, big, 100_000);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames.concat(), data);
        let grown = rb.data.len();
        assert!(grown >= big, "grew to hold a whole frame");
        // More large frames reuse the same memory.
        feed(&mut rb, &data, big, 300_000);
        assert_eq!(rb.data.len(), grown);
        // A run of small frames lets it shrink back once empty.
        let small: Vec<u8> = (0..64 * 100).map(|i| i as u8).collect();
        assert_eq!(feed(&mut rb, &small, 100, 777).concat(), small);
        assert_eq!(rb.data.len(), CHUNK);
    }

    #[test]
    fn partial_frames_move_to_the_front_instead_of_growing() {
        let mut rb = ReadBuffer::new(CHUNK);
        let data: Vec<u8> = (0..10 * CHUNK).map(|i| (i % 13) as u8).collect();
        let frames = feed(&mut rb, &data, 5000, 4096);
        assert_eq!(frames.concat(), data[..frames.len() * 5000]);
        assert_eq!(rb.data.len(), CHUNK, "small frames never grow the buffer");
    }
}
