//! Bounded cache of the log's most recent chunks, for reads of fresh data without disk I/O.
//!
//! Chunks enter when their write is dispatched (their bytes never change after that) and leave
//! oldest first once the cache holds more than `cache_bytes` — but never while their bytes are
//! not yet on disk (position >= the written position), since a disk read could not serve them.
//! The chunks still being written are bounded by the write pool, so memory stays bounded by
//! `cache_bytes + write pool`.

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

pub struct ChunkCache {
    chunks: BTreeMap<LogPosition, Cached>,
    bytes: usize,
    max_bytes: usize,
    hits: u64,
    misses: u64,
}

impl ChunkCache {
    pub fn new(max_bytes: usize) -> Self {
        ChunkCache { chunks: BTreeMap::new(), bytes: 0, max_bytes, hits: 0, misses: 0 }
    }

    /// Adds a dispatched chunk whose valid bytes are `buf[..(end - start)]`.
    pub fn insert(&mut self, start: LogPosition, end: LogPosition, buf: Rc<DmaBuffer>) {
        self.bytes += buf.len();
        if let Some(old) = self.chunks.insert(start, Cached { buf, start, end }) {
            self.bytes -= old.buf.len();
        }
    }

    /// Evicts oldest chunks beyond the bound whose bytes are all below `written`.
    pub fn evict(&mut self, written: LogPosition) {
        while self.bytes > self.max_bytes {
            let Some((&k, c)) = self.chunks.iter().next() else { break };
            if c.end > written {
                break;
            }
            self.bytes -= c.buf.len();
            self.chunks.remove(&k);
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
                self.bytes -= c.buf.len();
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

    /// The bytes `[pos, pos + len)` if one cached chunk holds all of them.
    pub fn get(&mut self, pos: LogPosition, len: usize) -> Option<ReadBuf> {
        let hit = self
            .chunk_at(pos)
            .filter(|c| pos + len as u64 <= c.end)
            .map(|c| Self::slice(c, pos, len));
        if hit.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        hit
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
    /// (hits, misses) of `get`.
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
            let mut c = ChunkCache::new(8192);
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
            assert_eq!(c.stats().0, 1);
        });
    }
}
