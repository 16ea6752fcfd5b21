//! A connection's read buffer, for both ends of the native protocol (broker connections and
//! the client's reader threads).
//!
//! The socket reads straight into it (no intermediate copy), and frames are decoded in place.
//! The broker *lends* whole frames out of it ([`ReadBuffer::lend`]): a produce request's batch
//! stays where the socket put it until the commit log copies it into its DMA chunk, so the
//! payload is copied once on ingest.

use std::sync::Arc;

use super::shared_bytes::SharedBytes;

/// A connection's read buffer: the socket reads straight into it, frames are decoded in place.
///
/// It grows to hold one whole frame when a large one arrives and keeps that size while large
/// frames keep coming (regrowing it for every 1 MiB frame page-faulted fresh memory each time:
/// measured as half of a broker core). It shrinks back to its base size only when
/// empty after [`SMALL_FRAMES_BEFORE_SHRINK`] small frames in a row, so an idle connection
/// never pins more than that. Its size never exceeds `max_frame_bytes` (+ one read chunk).
///
/// Lending: a lent frame keeps the buffer it lies in alive and unchanged. If it is still alive
/// at the next read, that read goes to another buffer: a spare whose lent frames were all
/// dropped, or a new one; only the bytes of a partly received frame move over. Lent frames
/// live until the log copied them (a produce releases its batch before waiting for the
/// fsync), so buffers come back quickly and steady traffic moves between a few of them
/// without allocating. Kept: at most [`SPARE_BUFFERS`] buffers with frames still out and
/// one free one (pruned before each read). What lent frames pin is
/// bounded by the connection's in-flight request limit, as when each was a copy.
///
/// Frames are released in bursts (a broker's appends wait for its write pool, then copy many
/// frames at once), so more buffers fall free at once than one connection keeps. With a
/// [`BufferPool`] ([`ReadBuffer::space_for_pooled`]) those go to the pool, shared by the
/// thread's connections and bounded in bytes, and the next move takes one from there instead
/// of allocating a new, zero-filled buffer (measured: 13% of a broker core at 1.4 GB/s of 1
/// MiB produce frames, 64 MiB in flight).
pub struct ReadBuffer {
    /// Initialised once; `data.len()` is the capacity in use. Written only while unshared.
    data: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    small_frames: u32,
    /// The largest frame consumed since the buffer last shrank: frames up to this size get
    /// their whole room at once (the peer showed it sends them).
    proven: usize,
    /// Base size, and the size of one read beyond a frame.
    chunk: usize,
    /// Buffers left behind because frames lent from them were still in use, oldest first.
    spares: Vec<Arc<Vec<u8>>>,
}

/// Small frames in a row after which an empty, grown buffer shrinks back.
pub const SMALL_FRAMES_BEFORE_SHRINK: u32 = 64;
/// Buffers with lent frames still out that a connection keeps track of, to reuse once their
/// frames are dropped (each at most one grown buffer). The frames pin them anyway, within
/// the connection's in-flight bounds; past this many the oldest is forgotten, and freed when
/// its last frame is.
pub const SPARE_BUFFERS: usize = 64;

/// Free read buffers shared by the connections of one thread (a broker shard), up to
/// `max_bytes`: a connection whose lent frames were released in a burst gives the buffers it
/// does not keep to the pool, and a connection that needs a new buffer takes one from it
/// before allocating. Each buffer was a connection's, so at most one frame plus one read
/// chunk long.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Vec<Vec<u8>>,
    bytes: usize,
    max_bytes: usize,
    allocated_bytes: u64,
    reused_bytes: u64,
}

impl BufferPool {
    /// A pool holding at most `max_bytes` of free buffers (0 keeps none).
    pub fn new(max_bytes: usize) -> Self {
        BufferPool { max_bytes, ..Default::default() }
    }

    /// Bytes of free buffers held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of new buffers allocated by connections using this pool.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated_bytes
    }

    /// Bytes of buffers taken from this pool instead of allocating.
    pub fn reused_bytes(&self) -> u64 {
        self.reused_bytes
    }

    /// The free buffer given last (the likeliest to be in the CPU's caches still) of at least
    /// `len` bytes and at most twice that: a connection reading small frames does not take a
    /// buffer grown for large ones.
    fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        let i = self.free.iter().rposition(|b| b.len() >= len && b.len() <= 2 * len)?;
        let buf = self.free.remove(i);
        self.bytes -= buf.len();
        self.reused_bytes += buf.len() as u64;
        Some(buf)
    }

    /// Keeps `buf` if it fits under the bound, else drops it.
    fn give(&mut self, buf: Vec<u8>) {
        if self.bytes + buf.len() <= self.max_bytes {
            self.bytes += buf.len();
            self.free.push(buf);
        }
    }
}

impl ReadBuffer {
    /// A buffer of `chunk` bytes (also its base size and the growth step).
    pub fn new(chunk: usize) -> Self {
        ReadBuffer {
            data: Arc::new(vec![0; chunk]),
            start: 0,
            end: 0,
            small_frames: 0,
            proven: 0,
            chunk,
            spares: Vec::new(),
        }
    }

    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Consumes the first `n` filled bytes and returns them without copying: they stay valid
    /// (and this memory is not reused) until the returned bytes and all their slices drop.
    pub fn lend(&mut self, n: usize) -> SharedBytes {
        assert!(self.start + n <= self.end, "lend within the filled bytes");
        let bytes = SharedBytes::from_shared(self.data.clone(), self.start..self.start + n);
        self.consume(n);
        bytes
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.start + n <= self.end);
        self.start += n;
        self.proven = self.proven.max(n);
        if n <= self.chunk {
            self.small_frames = self.small_frames.saturating_add(1);
        } else {
            self.small_frames = 0;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > self.chunk && self.small_frames >= SMALL_FRAMES_BEFORE_SHRINK {
                self.data = Arc::new(vec![0; self.chunk]);
                self.proven = 0;
                self.spares.retain(|s| s.len() <= self.chunk);
            }
        }
    }

    /// Free space to read into, toward holding a whole frame of `needed` bytes. A frame larger
    /// than any this connection sent before gets room as its bytes arrive, not as its header
    /// announces: at most twice its received bytes plus one chunk, so a peer that sends the
    /// header of a `max_frame_bytes` frame and stalls holds one chunk, not the whole frame
    /// (zero-filled memory committed for nothing). Frames up to the largest one already
    /// received get their whole room at once, as a connection streaming large frames needs
    /// (a new buffer while lent frames pin the old one is then allocated in one step).
    pub fn space_for(&mut self, needed: usize) -> &mut [u8] {
        self.space_in(needed, None)
    }

    /// [`ReadBuffer::space_for`], with free buffers beyond the one this connection keeps
    /// given to `pool`, and a new buffer taken from it when one is needed.
    pub fn space_for_pooled(&mut self, needed: usize, pool: &mut BufferPool) -> &mut [u8] {
        self.space_in(needed, Some(pool))
    }

    fn space_in(&mut self, needed: usize, pool: Option<&mut BufferPool>) -> &mut [u8] {
        let held = self.end - self.start;
        let want = if needed <= self.proven { needed } else { needed.min(2 * held + self.chunk) };
        let want = want.max(held + 1);
        if Arc::get_mut(&mut self.data).is_none() {
            self.move_to_unshared(want, pool);
        } else if !self.spares.is_empty() {
            self.prune_spares(pool);
        }
        let data = Arc::get_mut(&mut self.data).expect("the buffer being filled is unshared");
        if self.start > 0 && self.start + want > data.len() {
            // Move the partial frame to the front (at most one frame's worth, usually small).
            data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if want > data.len() {
            data.resize(want.next_multiple_of(self.chunk), 0);
        }
        if self.end == data.len() {
            data.resize(data.len() + self.chunk, 0);
        }
        &mut data[self.end..]
    }

    /// Continues in a buffer nobody else holds, leaving the current one to its lent frames:
    /// the largest spare whose frames were all dropped (so a connection that keeps receiving
    /// large frames keeps reusing a grown buffer), else one from the pool, else a new one just
    /// large enough. Copies only the partly received frame.
    fn move_to_unshared(&mut self, want: usize, mut pool: Option<&mut BufferPool>) {
        let reusable = self
            .spares
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| s.len() >= want)
            .filter_map(|(i, s)| Arc::get_mut(s).map(|b| (i, b.len())))
            .max_by_key(|&(_, len)| len)
            .map(|(i, _)| i);
        let len = want.next_multiple_of(self.chunk);
        let next = match reusable {
            Some(i) => self.spares.remove(i),
            None => match pool.as_deref_mut().and_then(|p| p.take(len)) {
                Some(buf) => Arc::new(buf),
                None => {
                    if let Some(p) = pool.as_deref_mut() {
                        p.allocated_bytes += len as u64;
                    }
                    Arc::new(vec![0; len])
                }
            },
        };
        let old = std::mem::replace(&mut self.data, next);
        let partial = self.end - self.start;
        Arc::get_mut(&mut self.data).expect("a reusable spare is unshared")[..partial]
            .copy_from_slice(&old[self.start..self.end]);
        self.start = 0;
        self.end = partial;
        self.spares.push(old);
        self.prune_spares(pool);
    }

    /// Buffers with frames still out cost nothing extra (the frames pin them); of those whose
    /// frames are all gone, one is kept for the next move and the rest go to the pool (or are
    /// freed). Past [`SPARE_BUFFERS`], the oldest is forgotten (freed when its last lent
    /// frame is).
    fn prune_spares(&mut self, mut pool: Option<&mut BufferPool>) {
        // The newest free one is kept: its frames were the last copied out, so it is the
        // likeliest to be in the CPU's caches. Older free ones go to the pool, oldest first.
        let newest_free = self.spares.iter_mut().rposition(|s| Arc::get_mut(s).is_some());
        let mut i = 0;
        let mut end = newest_free.unwrap_or(0);
        while i < end {
            if Arc::get_mut(&mut self.spares[i]).is_some() {
                let spare = self.spares.remove(i);
                end -= 1;
                if let (Some(p), Ok(buf)) = (pool.as_deref_mut(), Arc::try_unwrap(spare)) {
                    p.give(buf);
                }
            } else {
                i += 1;
            }
        }
        if self.spares.len() > SPARE_BUFFERS {
            self.spares.remove(0);
        }
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
            assert!(
                space.len() + buffered >= frame.min(2 * buffered + CHUNK),
                "room for the frame, or for twice what arrived of it"
            );
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
    fn a_large_frame_announced_but_not_sent_holds_one_chunk() {
        let mut rb = ReadBuffer::new(CHUNK);
        let announced = 8 << 20;
        let space = rb.space_for(announced);
        space[..4].copy_from_slice(&(announced as u32).to_le_bytes());
        rb.advance(4);
        for _ in 0..10 {
            let space = rb.space_for(announced);
            assert!(space.len() < 2 * CHUNK, "{} bytes of room for 4 received", space.len());
        }
        assert!(rb.data.len() <= 2 * CHUNK, "buffer of {} bytes", rb.data.len());
        // As the frame's bytes come, the buffer grows with them and the frame completes whole.
        let data: Vec<u8> = (0..announced - 4).map(|i| (i % 251) as u8).collect();
        let mut at = 0;
        while at < data.len() {
            let held = rb.filled().len();
            let room = rb.space_for(announced).len();
            assert!(rb.data.len() <= 2 * held + 2 * CHUNK, "grows with what arrived");
            let n = room.min(data.len() - at);
            rb.space_for(announced)[..n].copy_from_slice(&data[at..at + n]);
            rb.advance(n);
            at += n;
        }
        assert_eq!(rb.filled().len(), announced);
        assert_eq!(&rb.filled()[4..], &data[..]);
        // Once such a frame was received, the next one of that size gets its room at once, even
        // in a new buffer while the first frame is still lent out.
        let lent = rb.lend(announced);
        assert!(rb.space_for(announced).len() >= announced);
        drop(lent);
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

    /// Reads `bytes` in pieces of `read`, lending every complete `frame`-byte frame; `keep`
    /// says how many of the most recent lent frames stay alive. Returns every frame's bytes as
    /// seen when it was dropped, and the distinct buffers the reads went into.
    fn feed_lending(bytes: &[u8], frame: usize, read: usize, keep: usize) -> (Vec<u8>, usize) {
        let mut rb = ReadBuffer::new(CHUNK);
        let mut alive = std::collections::VecDeque::new();
        let mut seen = Vec::new();
        let mut buffers = std::collections::HashSet::new();
        let mut at = 0;
        while at < bytes.len() {
            let space = rb.space_for(frame);
            let n = space.len().min(read).min(bytes.len() - at);
            space[..n].copy_from_slice(&bytes[at..at + n]);
            buffers.insert(rb.data.as_ptr() as usize);
            rb.advance(n);
            at += n;
            while rb.filled().len() >= frame {
                alive.push_back(rb.lend(frame));
                while alive.len() > keep {
                    seen.extend_from_slice(&alive.pop_front().unwrap());
                }
            }
        }
        for f in alive {
            seen.extend_from_slice(&f);
        }
        (seen, buffers.len())
    }

    #[test]
    fn lent_frames_stay_intact_while_reading_goes_on() {
        let data: Vec<u8> = (0..400 * 1000).map(|i| (i % 251) as u8).collect();
        // Frames kept alive across many later reads, frames straddling reads, large frames.
        for (frame, read, keep) in [(1000, 3000, 50), (1000, 777, 3), (100_000, 30_000, 2)] {
            let (seen, _) = feed_lending(&data, frame, read, keep);
            assert_eq!(seen.len(), data.len() / frame * frame);
            assert!(seen == data[..seen.len()], "a lent frame changed ({frame}, {read}, {keep})");
        }
    }

    #[test]
    fn buffers_are_reused_once_their_lent_frames_are_dropped() {
        let data: Vec<u8> = (0..2000 * 100).map(|i| i as u8).collect();
        // Every frame dropped before the next read: one buffer throughout.
        assert_eq!(feed_lending(&data, 100, 100, 0).1, 1);
        // Three frames alive at a time: reads move between a few buffers, never allocating
        // one per read.
        let (_, buffers) = feed_lending(&data, 100, 100, 3);
        assert!(buffers <= SPARE_BUFFERS + 1, "{buffers} buffers for 2000 reads");
    }

    #[test]
    fn an_idle_connection_keeps_at_most_one_free_spare() {
        let mut rb = ReadBuffer::new(CHUNK);
        let read_one = |rb: &mut ReadBuffer| {
            rb.space_for(10)[..10].fill(7);
            rb.advance(10);
            rb.lend(10)
        };
        let lent: Vec<_> = (0..10).map(|_| read_one(&mut rb)).collect();
        assert!(rb.spares.len() <= SPARE_BUFFERS, "{} spares", rb.spares.len());
        drop(lent);
        let last = read_one(&mut rb);
        read_one(&mut rb);
        drop(last);
        rb.space_for(10); // the next read
        let free = rb.spares.iter().filter(|s| Arc::strong_count(s) == 1).count();
        assert!(free <= 1, "{free} free spares kept");
        assert!(rb.spares.len() <= 2, "{} spares", rb.spares.len());
    }

    /// Reads 20 bursts of `burst` frames of `frame` bytes into one connection's buffer,
    /// with `in_flight` frames lent and alive before each burst is released at once (as
    /// appends waiting for the write pool release them). Returns the bytes of new buffers
    /// allocated after the first rounds.
    fn bursts(pool: &mut BufferPool, frame: usize, in_flight: usize, burst: usize) -> u64 {
        let mut rb = ReadBuffer::new(CHUNK);
        let mut alive = std::collections::VecDeque::new();
        let mut after_warmup = 0;
        for round in 0..20 {
            if round == 3 {
                // By now `in_flight` frames were alive at once: the buffers they need exist.
                after_warmup = pool.allocated_bytes();
            }
            for _ in 0..burst {
                let mut at = 0;
                while at < frame {
                    let space = rb.space_for_pooled(frame, pool);
                    let n = space.len().min(frame - at).min(CHUNK);
                    space[..n].fill(round as u8);
                    rb.advance(n);
                    at += n;
                }
                alive.push_back(rb.lend(frame));
            }
            while alive.len() > in_flight - burst {
                let f = alive.pop_front().unwrap();
                assert!(f.iter().all(|&b| b == f[0]), "a lent frame changed");
            }
            assert!(pool.bytes() <= pool.max_bytes, "{} bytes pooled", pool.bytes());
        }
        pool.allocated_bytes() - after_warmup
    }

    #[test]
    fn buffers_released_in_a_burst_are_read_into_again_through_the_pool() {
        let frame = 4 * CHUNK;
        // 40 frames in flight, released 16 at a time: one connection keeps a single
        // free buffer, so without a pool most of each burst is freed and allocated again.
        let mut none = BufferPool::new(0);
        let without = bursts(&mut none, frame, 40, 16);
        assert!(without >= 100 * frame as u64, "{without} bytes allocated without a pool");
        let mut pool = BufferPool::new(32 * frame);
        assert_eq!(bursts(&mut pool, frame, 40, 16), 0, "allocated after the first bursts");
        assert!(pool.reused_bytes() > 200 * frame as u64);
        // A pool too small for a burst still bounds what it holds, and saves what it can.
        let mut small = BufferPool::new(4 * frame + 4 * CHUNK);
        let with_small = bursts(&mut small, frame, 40, 16);
        assert!(with_small < without, "{with_small} against {without}");
    }

    #[test]
    fn the_pool_gives_back_a_buffer_large_enough_or_none() {
        let mut pool = BufferPool::new(8 * CHUNK);
        pool.give(vec![1; CHUNK]);
        pool.give(vec![2; 2 * CHUNK]);
        pool.give(vec![3; 5 * CHUNK]);
        pool.give(vec![4; CHUNK]); // over the bound: dropped
        assert_eq!(pool.bytes(), 8 * CHUNK);
        assert!(pool.take(6 * CHUNK).is_none(), "none large enough");
        // Not a buffer more than twice the size asked: that one stays for larger frames.
        assert_eq!(pool.take(2 * CHUNK).unwrap()[0], 2);
        assert_eq!(pool.take(CHUNK).unwrap()[0], 1);
        assert!(pool.take(CHUNK).is_none(), "only the 5-chunk buffer is left");
        assert_eq!(pool.take(3 * CHUNK).unwrap()[0], 3);
        assert_eq!(pool.bytes(), 0);
        assert_eq!(pool.reused_bytes(), 8 * CHUNK as u64);
        // Of two that fit, the one given last.
        pool.give(vec![5; CHUNK]);
        pool.give(vec![6; CHUNK]);
        assert_eq!(pool.take(CHUNK).unwrap()[0], 6);
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
