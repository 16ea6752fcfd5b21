//! Per-queue index: queue offset -> (log position, length, record count, store time).
//!
//! Owned by one shard's commit log. Each queue keeps its batches' entries in log order, which
//! is also offset order and (store timestamps are made monotonic per log) time order, so
//! lookups by offset and by time are binary searches.
//!
//! Persistence: when a segment is sealed and durable, the entries of all queues that point into
//! it are written to `<base>.index` (checksummed). Recovery loads index files and only scans
//! segment bytes past what they cover. Memory: 32 bytes per stored batch; retention drops the
//! entries of deleted segments, so the index is bounded by the retained log.

use std::collections::{HashMap, VecDeque};

use super::types::{QueueKey, QueueOffsets};

/// One stored batch of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub base_offset: u64,
    pub position: u64,
    pub length: u32,
    pub record_count: u32,
    pub store_timestamp_ms: i64,
}

impl IndexEntry {
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
    pub fn end(&self) -> u64 {
        self.position + u64::from(self.length)
    }
}

#[derive(Debug, Default)]
pub struct QueueIndex {
    entries: VecDeque<IndexEntry>,
    /// Offsets below this were deleted by retention (or never existed).
    floor: u64,
}

impl QueueIndex {
    pub fn with_floor(floor: u64) -> Self {
        QueueIndex { entries: VecDeque::new(), floor }
    }

    pub fn next_offset(&self) -> u64 {
        self.entries.back().map_or(self.floor, IndexEntry::next_offset)
    }

    pub fn offsets(&self) -> QueueOffsets {
        QueueOffsets {
            min: self.entries.front().map_or(self.floor, |e| e.base_offset),
            next: self.next_offset(),
        }
    }

    /// Appends an entry; offsets, positions and times must not go backwards.
    pub fn push(&mut self, e: IndexEntry) {
        if let Some(last) = self.entries.back() {
            assert_eq!(e.base_offset, last.next_offset(), "queue offsets must be contiguous");
            assert!(e.position >= last.end(), "log positions must grow");
        } else {
            assert!(e.base_offset >= self.floor, "offset below the queue floor");
        }
        self.entries.push_back(e);
    }

    /// Index of the entry containing `offset`, if stored.
    pub fn find(&self, offset: u64) -> Option<usize> {
        let i = self.entries.partition_point(|e| e.next_offset() <= offset);
        (i < self.entries.len() && self.entries[i].base_offset <= offset).then_some(i)
    }

    pub fn get(&self, i: usize) -> Option<&IndexEntry> {
        self.entries.get(i)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// First offset whose batch was stored at or after `ts_ms`; `next_offset()` if none.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> u64 {
        let i = self.entries.partition_point(|e| e.store_timestamp_ms < ts_ms);
        self.entries.get(i).map_or(self.next_offset(), |e| e.base_offset)
    }

    /// Entries whose batches lie in `[start, end)` of the log.
    pub fn entries_in(&self, start: u64, end: u64) -> impl Iterator<Item = &IndexEntry> {
        let lo = self.entries.partition_point(|e| e.position < start);
        let hi = self.entries.partition_point(|e| e.position < end);
        self.entries.range(lo..hi)
    }

    /// Drops entries of batches below log position `start` (retention); returns how many.
    pub fn drop_before(&mut self, start: u64) -> usize {
        let n = self.entries.partition_point(|e| e.position < start);
        if n > 0 {
            self.floor = self.entries[n - 1].next_offset();
        }
        self.entries.drain(..n);
        n
    }

    /// Drops entries at or past log position `end` (recovery truncation).
    pub fn truncate_from(&mut self, end: u64) {
        let n = self.entries.partition_point(|e| e.position < end);
        self.entries.truncate(n);
    }
}

/// All queues of one log.
pub type Indexes = HashMap<QueueKey, QueueIndex>;

const INDEX_MAGIC: &[u8; 4] = b"RQIX";
const INDEX_VERSION: u32 = 1;
const ENTRY_LEN: usize = 40;
const HEADER_LEN: usize = 4 + 4 + 8 + 8 + 4 + 4;

/// Contents of one segment's index file.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentIndexFile {
    pub segment_base: u64,
    /// Entries cover every batch in `[segment_base, covered_end)`.
    pub covered_end: u64,
    /// The segment was sealed at `covered_end` (its end marker ends there): no scan needed.
    pub sealed: bool,
    pub entries: Vec<(QueueKey, IndexEntry)>,
}

impl SegmentIndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.entries.len() * ENTRY_LEN + 4);
        b.extend_from_slice(INDEX_MAGIC);
        b.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        b.extend_from_slice(&self.segment_base.to_le_bytes());
        b.extend_from_slice(&self.covered_end.to_le_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        b.extend_from_slice(&u32::from(self.sealed).to_le_bytes());
        for (q, e) in &self.entries {
            b.extend_from_slice(&q.topic_id.to_le_bytes());
            b.extend_from_slice(&q.queue_id.to_le_bytes());
            b.extend_from_slice(&e.base_offset.to_le_bytes());
            b.extend_from_slice(&e.position.to_le_bytes());
            b.extend_from_slice(&e.length.to_le_bytes());
            b.extend_from_slice(&e.record_count.to_le_bytes());
            b.extend_from_slice(&e.store_timestamp_ms.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies an index file; Err says why it cannot be trusted (recovery then
    /// rebuilds the segment's entries by scanning it).
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER_LEN + 4 {
            return Err("index file too short".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
            return Err("index file checksum mismatch".into());
        }
        if &body[0..4] != INDEX_MAGIC {
            return Err("not an index file".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8"));
        if u32_at(4) != INDEX_VERSION {
            return Err(format!("unsupported index version {}", u32_at(4)));
        }
        let segment_base = u64_at(8);
        let covered_end = u64_at(16);
        let count = u32_at(24) as usize;
        let sealed = match u32_at(28) {
            0 => false,
            1 => true,
            other => return Err(format!("bad sealed flag {other}")),
        };
        if body.len() != HEADER_LEN + count * ENTRY_LEN {
            return Err("index file length does not match its entry count".into());
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = HEADER_LEN + i * ENTRY_LEN;
            entries.push((
                QueueKey::new(u32_at(at), u32_at(at + 4)),
                IndexEntry {
                    base_offset: u64_at(at + 8),
                    position: u64_at(at + 16),
                    length: u32_at(at + 24),
                    record_count: u32_at(at + 28),
                    store_timestamp_ms: u64_at(at + 32) as i64,
                },
            ));
        }
        Ok(SegmentIndexFile { segment_base, covered_end, sealed, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: u64, pos: u64, n: u32, ts: i64) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            position: pos,
            length: 100,
            record_count: n,
            store_timestamp_ms: ts,
        }
    }

    #[test]
    fn find_by_offset_and_time() {
        let mut q = QueueIndex::default();
        q.push(entry(0, 0, 10, 100));
        q.push(entry(10, 500, 5, 200));
        q.push(entry(15, 900, 1, 200));
        q.push(entry(16, 2000, 4, 300));
        assert_eq!(q.find(0), Some(0));
        assert_eq!(q.find(9), Some(0));
        assert_eq!(q.find(10), Some(1));
        assert_eq!(q.find(15), Some(2));
        assert_eq!(q.find(19), Some(3));
        assert_eq!(q.find(20), None);
        assert_eq!(q.offsets(), QueueOffsets { min: 0, next: 20 });
        assert_eq!(q.offset_for_timestamp(0), 0);
        assert_eq!(q.offset_for_timestamp(150), 10);
        assert_eq!(q.offset_for_timestamp(200), 10);
        assert_eq!(q.offset_for_timestamp(250), 16);
        assert_eq!(q.offset_for_timestamp(301), 20);
        assert_eq!(q.drop_before(900), 2);
        assert_eq!(q.offsets(), QueueOffsets { min: 15, next: 20 });
        assert_eq!(q.find(9), None);
        assert_eq!(q.drop_before(10_000), 2);
        assert_eq!(q.offsets(), QueueOffsets { min: 20, next: 20 });
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn gaps_are_a_programmer_error() {
        let mut q = QueueIndex::default();
        q.push(entry(0, 0, 10, 1));
        q.push(entry(11, 200, 1, 1));
    }

    #[test]
    fn index_file_round_trip_and_corruption() {
        let f = SegmentIndexFile {
            segment_base: 4096,
            covered_end: 9000,
            sealed: true,
            entries: vec![(QueueKey::new(1, 2), entry(5, 4096, 3, 77))],
        };
        let mut b = f.encode();
        assert_eq!(SegmentIndexFile::decode(&b).unwrap(), f);
        b[30] ^= 1;
        assert!(SegmentIndexFile::decode(&b).is_err());
        assert!(SegmentIndexFile::decode(&b[..10]).is_err());
    }
}
