//! Bounded cache of the log's most recent chunks, for reads of fresh data without disk I/O.
//!
//! Chunks enter when their write is dispatched (their bytes never change after that) and leave
//! oldest first once the cache holds more than `cache_bytes` — but never while their bytes are
//! not yet on disk (position >= the written position), since a disk read could not serve them.
//! The chunks still being written are bounded by the write pool, so memory stays bounded by
//! `cache_bytes + write pool`, plus at most [`SPARE_CHUNKS`] chunks kept for reuse.
//!
//! A chunk that leaves at its full length with nobody else holding it (no reader still has a
//! slice of it) is kept as a spare for the appender's next chunk ([`ChunkCache::take_spare`]).
//! A new 1 MiB allocation for every chunk was freshly faulted in, page by page, as the append
//! copied into it whenever the allocator had given the memory back to the kernel: a quarter of
//! the shard's core went to clearing pages with 10,000 queues and batches of four records
//! (BENCHMARKS.md, 2026-12-05 round 28). A chunk trimmed for a partial write (a flush before it
//! filled) cannot grow back and is freed.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::file::ReadBuf;
use super::types::LogPosition;
use crate::runtime::DmaBuffer;

struct Cached {
    buf: Rc<DmaBuffer>,
    /// Log position of `buf[0]`.
    start: LogPosition,
    /// Log position one past the last valid byte.
    end: LogPosition,
}

/// Chunks kept for reuse, at most.
pub const SPARE_CHUNKS: usize = 4;

pub struct ChunkCache {
    chunks: BTreeMap<LogPosition, Cached>,
    bytes: usize,
    max_bytes: usize,
    hits: u64,
    misses: u64,
    /// Length of a whole chunk: only such buffers are kept as spares.
    chunk_len: usize,
    spares: Vec<DmaBuffer>,
    reused: u64,
}

impl ChunkCache {
    /// A cache of at most `max_bytes` of written chunks, whose chunks are `chunk_len` long.
    pub fn new(max_bytes: usize, chunk_len: usize) -> Self {
        ChunkCache {
            chunks: BTreeMap::new(),
            bytes: 0,
            max_bytes,
            hits: 0,
            misses: 0,
            chunk_len,
            spares: Vec::new(),
            reused: 0,
        }
    }

    /// A buffer for the next chunk: a spare, or a new allocation. Its bytes are whatever an
    /// earlier chunk left there; the appender writes every byte it dispatches.
    pub fn take_spare(&mut self) -> DmaBuffer {
        match self.spares.pop() {
            Some(buf) => {
                self.reused += 1;
                buf
            }
            None => crate::runtime::alloc_dma(self.chunk_len),
        }
    }

    /// Chunks given out again by [`Self::take_spare`] instead of allocated.
    pub fn reused(&self) -> u64 {
        self.reused
    }

    /// What a chunk counts against `max_bytes`: its allocation, not the bytes it holds. A chunk
    /// dispatched before it filled (every group commit of a sync flush) is trimmed to what it
    /// holds but keeps its whole allocation; counted by what it held, a cache of 256 MiB held
    /// thousands of them and the broker's memory grew for minutes (BENCHMARKS.md, round 28).
    fn footprint(&self, buf: &DmaBuffer) -> usize {
        buf.len().max(self.chunk_len)
    }

    /// Takes a chunk out of the accounting; keeps its buffer as a spare if it may be.
    fn leave(&mut self, c: Cached) {
        self.bytes -= self.footprint(&c.buf);
        if c.buf.len() == self.chunk_len && self.spares.len() < SPARE_CHUNKS {
            if let Ok(buf) = Rc::try_unwrap(c.buf) {
                self.spares.push(buf);
            }
        }
    }

    /// Adds a dispatched chunk whose valid bytes are `buf[..(end - start)]`.
    pub fn insert(&mut self, start: LogPosition, end: LogPosition, buf: Rc<DmaBuffer>) {
        self.bytes += self.footprint(&buf);
        if let Some(old) = self.chunks.insert(start, Cached { buf, start, end }) {
            self.leave(old);
        }
    }

    /// Evicts oldest chunks beyond the bound whose bytes are all below `written`.
    pub fn evict(&mut self, written: LogPosition) {
        while self.bytes > self.max_bytes {
            let Some((&k, c)) = self.chunks.iter().next() else { break };
            if c.end > written {
                break;
            }
            let c = self.chunks.remove(&k).expect("the first key is present");
            self.leave(c);
        }
    }

    /// Drops every chunk below log position `start` (retention) or at/after `from` (truncation).
    pub fn retain_range(&mut self, start: LogPosition, from: LogPosition) {
        let keep: Vec<LogPosition> = self
            .chunks
            .values()
            .filter(|c| c.end <= start || c.start >= from)
            .map(|c| c.start)
            .collect();
        for k in keep {
            if let Some(c) = self.chunks.remove(&k) {
                self.leave(c);
            }
        }
    }

    /// The cached chunk holding the byte at `pos`.
    fn chunk_at(&self, pos: LogPosition) -> Option<&Cached> {
        self.chunks.range(..=pos).next_back().map(|(_, c)| c).filter(|c| pos < c.end)
    }

    /// `len` bytes of the chunk holding `pos`, from `pos`, shared (not copied).
    fn slice(c: &Cached, pos: LogPosition, len: usize) -> ReadBuf {
        ReadBuf::Chunk { buf: c.buf.clone(), start: (pos - c.start) as usize, len }
    }

    /// The bytes `[pos, pos + len)` if one cached chunk holds all of them (not counted: see
    /// [`Self::count`]).
    pub fn get(&self, pos: LogPosition, len: usize) -> Option<ReadBuf> {
        self.chunk_at(pos).filter(|c| pos + len as u64 <= c.end).map(|c| Self::slice(c, pos, len))
    }

    /// Counts a fetch's read of one batch: `from_memory` when memory served it (one chunk of
    /// this cache, or a copy out of two chunks or the chunk being filled), a miss otherwise.
    pub fn count(&mut self, from_memory: bool) {
        if from_memory {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
    }

    /// The bytes from `pos` to the end of the cached chunk holding `pos`, at most `max_len`,
    /// without copying (for followers of the log, so not counted in [`Self::stats`]).
    pub fn rest_of_chunk(&self, pos: LogPosition, max_len: usize) -> Option<ReadBuf> {
        self.chunk_at(pos).map(|c| Self::slice(c, pos, ((c.end - pos) as usize).min(max_len)))
    }

    /// Does a cached chunk hold the byte at `pos`?
    pub fn contains(&self, pos: LogPosition) -> bool {
        self.chunk_at(pos).is_some()
    }

    /// Appends to `out` whatever of `[pos, pos + len)` the cache holds, in order from `pos`;
    /// returns how many leading bytes were found (for batches spanning two chunks). Appends
    /// rather than fills: a buffer zeroed first cost as much as the copy (a batch of 1 MiB
    /// over chunks of 1 MiB nearly always spans two).
    pub fn extend_prefix(&self, pos: LogPosition, len: usize, out: &mut Vec<u8>) -> usize {
        let mut done = 0usize;
        while done < len {
            let at = pos + done as u64;
            let Some(c) = self.chunk_at(at) else { break };
            let n = ((c.end - at) as usize).min(len - done);
            let from = (at - c.start) as usize;
            out.extend_from_slice(&c.buf.as_bytes()[from..from + n]);
            done += n;
        }
        done
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// (hits, misses) as [`Self::count`]ed.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pos: u64) -> LogPosition {
        LogPosition::new(pos)
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        crate::runtime::run_on_new_executor(crate::runtime::ExecutorOptions::default(), f).unwrap();
    }

    fn chunk(fill: u8) -> Rc<DmaBuffer> {
        let mut b = crate::runtime::alloc_dma(4096);
        b.as_bytes_mut().fill(fill);
        Rc::new(b)
    }

    #[test]
    fn hits_misses_straddles_and_bounded_eviction() {
        run(|| async {
            let mut c = ChunkCache::new(8192, 4096);
            c.insert(p(0), p(4096), chunk(1));
            c.insert(p(4096), p(6000), chunk(2));
            assert_eq!(&*c.get(p(100), 10).unwrap(), &[1u8; 10]);
            assert!(c.get(p(4000), 200).is_none(), "a straddling range is not one chunk");
            let mut out = vec![9u8];
            assert_eq!(c.extend_prefix(p(4000), 200, &mut out), 200);
            assert_eq!(out.remove(0), 9, "appended after what was there");
            assert_eq!(&out[..96], &[1u8; 96]);
            assert_eq!(&out[96..], &[2u8; 104]);
            assert!(c.get(p(5990), 20).is_none(), "past the valid end");
            assert!(c.contains(p(5999)) && !c.contains(p(6000)));
            c.count(true);
            c.count(true);
            c.count(false);
            // Over the bound, but nothing is written yet: nothing may go.
            c.insert(p(8192), p(9000), chunk(3));
            c.evict(p(0));
            assert_eq!(c.bytes(), 3 * 4096);
            // Once written, the oldest goes first until within the bound.
            c.evict(p(9000));
            assert_eq!(c.bytes(), 8192);
            assert!(!c.contains(p(0)) && c.contains(p(4096)));
            c.retain_range(p(8192), LogPosition::MAX);
            assert!(!c.contains(p(4096)) && c.contains(p(8192)));
            assert_eq!(c.stats(), (2, 1));
        });
    }

    #[test]
    fn whole_chunks_nobody_holds_are_reused_and_the_spares_are_bounded() {
        run(|| async {
            let mut c = ChunkCache::new(0, 4096);
            let first = c.take_spare();
            assert_eq!(first.len(), 4096);
            let addr = first.as_ptr();
            c.insert(p(0), p(4096), Rc::new(first));
            c.evict(p(4096));
            assert_eq!(c.bytes(), 0);
            let again = c.take_spare();
            assert_eq!(again.as_ptr(), addr, "the evicted chunk's buffer is given out again");
            assert_eq!(c.reused(), 1);

            // A reader still holding a slice keeps the buffer: it is not reused under it.
            let held = Rc::new(again);
            c.insert(p(4096), p(8192), held.clone());
            let slice = c.rest_of_chunk(p(4096), 10).expect("cached");
            drop(held);
            c.evict(p(8192));
            assert_ne!(c.take_spare().as_ptr(), addr, "a held chunk is not a spare");
            assert_eq!(c.reused(), 1);
            drop(slice);

            // A chunk trimmed for a partial write cannot grow back: freed, not kept.
            let mut trimmed = c.take_spare();
            trimmed.trim_to_size(512);
            c.insert(p(8192), p(8704), Rc::new(trimmed));
            assert_eq!(c.bytes(), 4096, "a trimmed chunk counts its whole allocation");
            c.evict(p(8704));
            let _ = c.take_spare();
            assert_eq!(c.reused(), 1);

            // At most SPARE_CHUNKS are kept, however many leave at once.
            for i in 0..(SPARE_CHUNKS as u64 + 3) {
                let start = p(16384 + i * 4096);
                c.insert(start, start + 4096, Rc::new(crate::runtime::alloc_dma(4096)));
            }
            c.evict(LogPosition::MAX);
            for _ in 0..SPARE_CHUNKS + 3 {
                let _ = c.take_spare();
            }
            assert_eq!(c.reused(), 1 + SPARE_CHUNKS as u64);
        });
    }
}
