//! Per-queue index: the pure parts (entries, per-queue bookkeeping, the checkpoint codec).
//!
//! Every stored batch of a queue has one fixed-size [`IndexEntry`] (32 bytes on disk: base
//! offset, log position, length, record count, store time). A queue's entries are numbered
//! from 0 in append order, which is also offset order, log-position order and (store
//! timestamps are made monotonic per log) time order, so every lookup is a binary search over
//! entry numbers. Entry `n` lives in index file `n / index_file_entries` of its queue, like
//! RocketMQ's ConsumeQueue; [`super::index_store`] does that I/O through a bounded block cache.
//!
//! [`QueueIndex`] is what memory holds per queue: a few counters and the entries not yet
//! written to the queue's files (`pending`). Entries are written *behind the log*: only once
//! their batch is durable, so a file never describes a batch a crash can take back, and the
//! entries a reader may not see yet (sync flush mode: not durable) are always in memory.
//!
//! [`IndexCheckpoint`] is the durable promise recovery starts from: "every batch below
//! `position` has its entry in the files, and each queue had these counters". Recovery
//! rebuilds only the entries of batches at or past it by scanning the log (see
//! `docs/format.md` 3.3).
//!
//! Runs on the shard that owns the log; nothing here does I/O.

use std::collections::VecDeque;

use super::types::{LogPosition, QueueId, QueueKey, QueueOffset, QueueOffsets, TopicId};

/// Bytes of one entry in an index file.
pub const ENTRY_BYTES: usize = 32;

/// One stored batch of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub base_offset: QueueOffset,
    pub position: LogPosition,
    pub length: u32,
    pub record_count: u32,
    pub store_timestamp_ms: i64,
}

impl IndexEntry {
    pub fn next_offset(&self) -> QueueOffset {
        self.base_offset + u64::from(self.record_count)
    }
    pub fn end(&self) -> LogPosition {
        self.position + u64::from(self.length)
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.base_offset.get().to_le_bytes());
        out[8..16].copy_from_slice(&self.position.get().to_le_bytes());
        out[16..20].copy_from_slice(&self.length.to_le_bytes());
        out[20..24].copy_from_slice(&self.record_count.to_le_bytes());
        out[24..32].copy_from_slice(&self.store_timestamp_ms.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> IndexEntry {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        IndexEntry {
            base_offset: QueueOffset::new(u64_at(0)),
            position: LogPosition::new(u64_at(8)),
            length: u32_at(16),
            record_count: u32_at(20),
            store_timestamp_ms: u64_at(24) as i64,
        }
    }
}

/// What memory holds for one queue. Entry numbers: `[first_entry, written_entries)` are in the
/// queue's index files, `[written_entries, next_entry())` are `pending`.
#[derive(Debug, Clone, Default)]
pub struct QueueIndex {
    /// Oldest retained entry; lower ones were dropped by retention (their files may be gone).
    pub first_entry: u64,
    /// Entries below this number are written to the queue's index files.
    pub written_entries: u64,
    /// Entries not yet written, oldest first.
    pub pending: VecDeque<IndexEntry>,
    /// Lowest offset still stored (the queue floor when it holds no entries).
    pub min_offset: QueueOffset,
    /// Offset the next batch gets.
    pub next_offset: QueueOffset,
}

impl QueueIndex {
    /// A queue with no entries whose offsets start at `floor`.
    pub fn with_floor(floor: QueueOffset) -> Self {
        QueueIndex { min_offset: floor, next_offset: floor, ..QueueIndex::default() }
    }

    pub fn next_entry(&self) -> u64 {
        self.written_entries + self.pending.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.next_entry() == self.first_entry
    }

    pub fn offsets(&self) -> QueueOffsets {
        QueueOffsets { min: self.min_offset, next: self.next_offset }
    }

    /// Offsets counting only batches that end at or before `visible`. Invisible batches are
    /// never durable yet, so they are always among the pending entries.
    pub fn visible_offsets(&self, visible: LogPosition) -> QueueOffsets {
        let mut o = self.offsets();
        let hidden = self.pending.iter().rev().take_while(|e| e.end() > visible).count();
        if hidden > 0 {
            o.next = self.pending[self.pending.len() - hidden].base_offset;
        }
        o
    }

    /// Appends an entry; offsets and positions must continue the queue.
    pub fn push(&mut self, e: IndexEntry) {
        assert_eq!(e.base_offset, self.next_offset, "queue offsets must be contiguous");
        if let Some(last) = self.pending.back() {
            assert!(e.position >= last.end(), "log positions must grow");
        }
        if self.is_empty() {
            self.min_offset = e.base_offset;
        }
        self.next_offset = e.next_offset();
        self.pending.push_back(e);
    }

    /// The pending entry numbered `n`, if `n` is pending.
    pub fn pending_entry(&self, n: u64) -> Option<IndexEntry> {
        n.checked_sub(self.written_entries).and_then(|i| self.pending.get(i as usize)).copied()
    }

    /// How many leading pending entries describe batches ending at or before `durable`.
    pub fn writable_pending(&self, durable: LogPosition) -> usize {
        self.pending.partition_point(|e| e.end() <= durable)
    }

    /// Marks the first `n` pending entries as written to the files.
    pub fn mark_written(&mut self, n: usize) {
        self.pending.drain(..n);
        self.written_entries += n as u64;
        // Idle queues must not keep buffers: 10,000 queues × a few spare entries each would
        // eat the budget the block cache needs.
        if self.pending.is_empty() {
            self.pending = VecDeque::new();
        } else if self.pending.capacity() > 2 * self.pending.len() + 16 {
            self.pending.shrink_to(self.pending.len() + 8);
        }
    }

    /// Drops every entry below `first` (retention); `first_entry_offset` is the base offset of
    /// entry `first` (or `next_offset` when `first` is the next entry).
    pub fn drop_before(&mut self, first: u64, first_entry_offset: QueueOffset) {
        if first <= self.first_entry {
            return;
        }
        assert!(first <= self.next_entry(), "dropping entries that do not exist");
        let pending_dropped = first.saturating_sub(self.written_entries) as usize;
        if pending_dropped > 0 {
            // Retention only deletes durable data, which is written before it is dropped;
            // this keeps the counters right even if it was not.
            self.pending.drain(..pending_dropped);
            self.written_entries = first;
        }
        self.first_entry = first;
        self.min_offset = first_entry_offset;
    }

    /// Forgets entries numbered `n` and above (recovery: their batches are past the log's
    /// end); `next_offset` becomes `offset`, the base offset of the first forgotten entry.
    pub fn truncate_to(&mut self, n: u64, offset: QueueOffset) {
        if n >= self.next_entry() {
            return;
        }
        if n >= self.written_entries {
            self.pending.truncate((n - self.written_entries) as usize);
        } else {
            self.pending.clear();
            self.written_entries = n.max(self.first_entry);
        }
        self.next_offset = offset;
        if self.is_empty() {
            self.min_offset = offset;
        }
    }

    /// Bytes this queue's bookkeeping holds (counted in the index budget).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<(QueueKey, QueueIndex)>()
            + self.pending.capacity() * std::mem::size_of::<IndexEntry>()
    }
}

/// One queue's counters in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCheckpoint {
    pub queue: QueueKey,
    pub first_entry: u64,
    pub next_entry: u64,
    pub min_offset: QueueOffset,
    pub next_offset: QueueOffset,
}

/// One segment's facts in a checkpoint (so recovery need not scan segments below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCheckpoint {
    pub base: LogPosition,
    /// Position after the end marker if the segment was sealed.
    pub sealed_end: Option<LogPosition>,
    /// Newest store time of the segment's batches below the checkpoint position.
    pub max_store_timestamp_ms: i64,
}

/// The `index.checkpoint` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexCheckpoint {
    /// Every batch below this log position has its entry in the index files.
    pub position: LogPosition,
    /// `index_file_entries` the files were written with (they cannot be read with another).
    pub file_entries: u64,
    pub segments: Vec<SegmentCheckpoint>,
    pub queues: Vec<QueueCheckpoint>,
}

const CHECKPOINT_MAGIC: &[u8; 4] = b"RQIC";
const CHECKPOINT_VERSION: u32 = 1;
const CHECKPOINT_HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 4 + 4;
const SEGMENT_RECORD_BYTES: usize = 24;
const QUEUE_RECORD_BYTES: usize = 40;

impl IndexCheckpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            CHECKPOINT_HEADER_BYTES
                + self.segments.len() * SEGMENT_RECORD_BYTES
                + self.queues.len() * QUEUE_RECORD_BYTES
                + 4,
        );
        b.extend_from_slice(CHECKPOINT_MAGIC);
        b.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        b.extend_from_slice(&self.position.get().to_le_bytes());
        b.extend_from_slice(&self.file_entries.to_le_bytes());
        b.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.queues.len() as u32).to_le_bytes());
        for s in &self.segments {
            b.extend_from_slice(&s.base.get().to_le_bytes());
            // 0 means not sealed: no segment ends at the log's very start.
            b.extend_from_slice(&s.sealed_end.map_or(0, LogPosition::get).to_le_bytes());
            b.extend_from_slice(&s.max_store_timestamp_ms.to_le_bytes());
        }
        for q in &self.queues {
            b.extend_from_slice(&q.queue.topic_id.get().to_le_bytes());
            b.extend_from_slice(&q.queue.queue_id.get().to_le_bytes());
            b.extend_from_slice(&q.first_entry.to_le_bytes());
            b.extend_from_slice(&q.next_entry.to_le_bytes());
            b.extend_from_slice(&q.min_offset.get().to_le_bytes());
            b.extend_from_slice(&q.next_offset.get().to_le_bytes());
        }
        let crc = crate::format::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a checkpoint; Err says why it cannot be trusted (recovery then
    /// rebuilds the whole index by scanning the log).
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < CHECKPOINT_HEADER_BYTES + 4 {
            return Err("index checkpoint too short".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crate::format::crc::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
            return Err("index checkpoint checksum mismatch".into());
        }
        if &body[0..4] != CHECKPOINT_MAGIC {
            return Err("not an index checkpoint".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8"));
        if u32_at(4) != CHECKPOINT_VERSION {
            return Err(format!("unsupported index checkpoint version {}", u32_at(4)));
        }
        let position = LogPosition::new(u64_at(8));
        let file_entries = u64_at(16);
        let segment_count = u32_at(24) as usize;
        let queue_count = u32_at(28) as usize;
        let expect = CHECKPOINT_HEADER_BYTES
            + segment_count * SEGMENT_RECORD_BYTES
            + queue_count * QUEUE_RECORD_BYTES;
        if body.len() != expect {
            return Err("index checkpoint length does not match its counts".into());
        }
        let mut at = CHECKPOINT_HEADER_BYTES;
        let mut segments = Vec::with_capacity(segment_count);
        for _ in 0..segment_count {
            let (base, sealed_end) = (u64_at(at), u64_at(at + 8));
            if sealed_end != 0 && sealed_end < base {
                return Err(format!(
                    "index checkpoint seals the segment at {base} at {sealed_end}, below its base"
                ));
            }
            segments.push(SegmentCheckpoint {
                base: LogPosition::new(base),
                sealed_end: (sealed_end != 0).then_some(LogPosition::new(sealed_end)),
                max_store_timestamp_ms: u64_at(at + 16) as i64,
            });
            at += SEGMENT_RECORD_BYTES;
        }
        let mut queues = Vec::with_capacity(queue_count);
        for _ in 0..queue_count {
            let q = QueueCheckpoint {
                queue: QueueKey::new(TopicId::new(u32_at(at)), QueueId::new(u32_at(at + 4))),
                first_entry: u64_at(at + 8),
                next_entry: u64_at(at + 16),
                min_offset: QueueOffset::new(u64_at(at + 24)),
                next_offset: QueueOffset::new(u64_at(at + 32)),
            };
            if q.first_entry > q.next_entry || q.min_offset > q.next_offset {
                return Err(format!("index checkpoint of {} has inverted counters", q.queue));
            }
            // Entries are numbered from 0 and each holds at least one record, so there are
            // never more entries than offsets; past that, entry numbers can overflow.
            if q.next_entry > q.next_offset.get() {
                return Err(format!(
                    "index checkpoint of {} counts {} entries but {} offsets",
                    q.queue, q.next_entry, q.next_offset
                ));
            }
            queues.push(q);
            at += QUEUE_RECORD_BYTES;
        }
        Ok(IndexCheckpoint { position, file_entries, segments, queues })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pos: u64) -> LogPosition {
        LogPosition::new(pos)
    }

    fn o(offset: u64) -> QueueOffset {
        QueueOffset::new(offset)
    }

    fn entry(base: u64, pos: u64, n: u32, ts: i64) -> IndexEntry {
        IndexEntry {
            base_offset: o(base),
            position: p(pos),
            length: 100,
            record_count: n,
            store_timestamp_ms: ts,
        }
    }

    #[test]
    fn entry_round_trip() {
        let e = entry(u64::MAX - 9, 1 << 40, 7, -5);
        let mut b = [0u8; ENTRY_BYTES];
        e.encode(&mut b);
        assert_eq!(IndexEntry::decode(&b), e);
    }

    #[test]
    fn pending_write_drop_and_visibility() {
        let mut q = QueueIndex::with_floor(o(10));
        assert_eq!(q.offsets(), QueueOffsets { min: o(10), next: o(10) });
        q.push(entry(10, 0, 5, 1));
        q.push(entry(15, 100, 5, 2));
        q.push(entry(20, 200, 1, 3));
        assert_eq!(q.visible_offsets(p(150)), QueueOffsets { min: o(10), next: o(15) });
        assert_eq!(q.visible_offsets(p(300)), QueueOffsets { min: o(10), next: o(21) });
        assert_eq!(q.writable_pending(p(200)), 2);
        q.mark_written(2);
        assert_eq!((q.written_entries, q.next_entry()), (2, 3));
        assert_eq!(q.pending_entry(2), Some(entry(20, 200, 1, 3)));
        assert_eq!(q.pending_entry(1), None);
        q.drop_before(1, o(15));
        assert_eq!(q.offsets(), QueueOffsets { min: o(15), next: o(21) });
        q.truncate_to(2, o(20));
        assert_eq!(q.offsets(), QueueOffsets { min: o(15), next: o(20) });
        assert_eq!(q.next_entry(), 2);
        q.push(entry(20, 300, 1, 4));
        q.mark_written(1);
        assert_eq!(q.pending.capacity(), 0, "an idle queue keeps no buffer");
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn gaps_are_a_programmer_error() {
        let mut q = QueueIndex::default();
        q.push(entry(0, 0, 10, 1));
        q.push(entry(11, 200, 1, 1));
    }

    #[test]
    fn checkpoint_round_trip_and_corruption() {
        let c = IndexCheckpoint {
            position: p(4096),
            file_entries: 128,
            segments: vec![
                SegmentCheckpoint {
                    base: p(0),
                    sealed_end: Some(p(4000)),
                    max_store_timestamp_ms: 9,
                },
                SegmentCheckpoint { base: p(65536), sealed_end: None, max_store_timestamp_ms: 10 },
            ],
            queues: vec![QueueCheckpoint {
                queue: QueueKey::new(TopicId::new(1), QueueId::new(2)),
                first_entry: 3,
                next_entry: 9,
                min_offset: o(30),
                next_offset: o(90),
            }],
        };
        let mut b = c.encode();
        assert_eq!(IndexCheckpoint::decode(&b).unwrap(), c);
        b[30] ^= 1;
        assert!(IndexCheckpoint::decode(&b).is_err());
        assert!(IndexCheckpoint::decode(&b[..10]).is_err());
    }

    #[test]
    fn a_checkpoint_sealing_a_segment_below_its_base_is_refused() {
        let mut c = IndexCheckpoint {
            position: p(70000),
            file_entries: 128,
            segments: vec![SegmentCheckpoint {
                base: p(65536),
                sealed_end: Some(p(65536)),
                max_store_timestamp_ms: 9,
            }],
            queues: vec![],
        };
        assert_eq!(IndexCheckpoint::decode(&c.encode()).unwrap(), c);
        c.segments[0].sealed_end = Some(p(4000));
        let e = IndexCheckpoint::decode(&c.encode()).unwrap_err();
        assert!(e.contains("below its base"), "{e}");
    }
}
