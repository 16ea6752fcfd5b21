//! The key index file layout and its in-memory image (pure: no I/O).
//!
//! RocketMQ's IndexFile idea: a file of fixed size holding a hash-slot table and linked
//! entries. Slot `hash % slot_count` holds the number of the newest entry whose key hashes
//! there; every entry holds the number of the previous entry of its slot, so the entries of a
//! key are found newest first by following links, without reading anything else.
//!
//! ```text
//! header   64 bytes  magic "RMQKIDX1", u32 slot_count, u32 max_entries, u32 entry_count,
//!                    u32 reserved, i64 begin_store_ms, i64 end_store_ms, u64 min_position,
//!                    u64 end_position, u32 crc32c of bytes 0..56 (little endian)
//! slots    slot_count x u32: entry number + 1 of the slot's newest entry (0: empty)
//! entries  max_entries x 28 bytes: u32 key_hash, u32 topic_id, u32 queue_id, u64 offset,
//!          u32 store time - begin_store_ms (ms), u32 previous entry number + 1 (0: none)
//! ```
//! The file size is rounded up to 4 KiB. Store times never decrease along the log, so a
//! chain walked newest first has non-increasing times and a walk stops at the first entry
//! older than the range asked for.

use crate::storage::types::LogPosition;

pub const MAGIC: &[u8; 8] = b"RMQKIDX1";
pub const HEADER_BYTES: usize = 64;
pub const ENTRY_BYTES: usize = 28;
const BLOCK: usize = 4096;

/// The hash of `key` in topic `topic_id` (crc32c over both): keys of different topics land
/// in different chains, so a walk for one topic rarely steps over another's entries.
pub fn key_hash(topic_id: u32, key: &[u8]) -> u32 {
    crate::format::crc::crc32c_append(crate::format::crc::crc32c(&topic_id.to_le_bytes()), key)
}

/// Splits a record key into the keys it is indexed under: space-separated words, as
/// RocketMQ's KEYS property (empty words skipped).
pub fn split_keys(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    key.split(|b| *b == b' ').filter(|k| !k.is_empty())
}

/// The fixed dimensions of every file of one index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub slot_count: u32,
    pub max_entries: u32,
}

impl Geometry {
    pub fn validate(&self) -> Result<(), String> {
        if self.slot_count == 0 || self.max_entries == 0 {
            return Err("key index slots and entries per file must be at least 1".into());
        }
        // Entry numbers + 1 fit a u32 and a file stays well under 4 GiB.
        if self.slot_count > 1 << 24 || self.max_entries > 1 << 26 {
            return Err(format!(
                "key index file too large: {} slots (at most {}), {} entries (at most {})",
                self.slot_count,
                1u32 << 24,
                self.max_entries,
                1u32 << 26
            ));
        }
        Ok(())
    }

    fn slots_at(&self) -> usize {
        HEADER_BYTES
    }

    fn entries_at(&self) -> usize {
        HEADER_BYTES + self.slot_count as usize * 4
    }

    /// Bytes of one file (a multiple of 4 KiB).
    pub fn file_bytes(&self) -> usize {
        let raw = self.entries_at() + self.max_entries as usize * ENTRY_BYTES;
        raw.div_ceil(BLOCK) * BLOCK
    }

    /// File offset of slot `slot`.
    pub fn slot_offset(&self, slot: u32) -> usize {
        self.slots_at() + slot as usize * 4
    }

    /// File offset of entry number `n`.
    pub fn entry_offset(&self, n: u32) -> usize {
        self.entries_at() + n as usize * ENTRY_BYTES
    }

    pub fn slot_of(&self, hash: u32) -> u32 {
        hash % self.slot_count
    }
}

/// One indexed message, as stored (with its absolute store time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key_hash: u32,
    pub topic_id: u32,
    pub queue_id: u32,
    pub offset: u64,
    pub store_ms: i64,
}

/// An entry's stored fields: the entry, its time delta and its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEntry {
    pub key_hash: u32,
    pub topic_id: u32,
    pub queue_id: u32,
    pub offset: u64,
    pub time_delta_ms: u32,
    /// Previous entry number + 1 in the same slot (0: none).
    pub previous: u32,
}

impl RawEntry {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.key_hash.to_le_bytes());
        out[4..8].copy_from_slice(&self.topic_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.queue_id.to_le_bytes());
        out[12..20].copy_from_slice(&self.offset.to_le_bytes());
        out[20..24].copy_from_slice(&self.time_delta_ms.to_le_bytes());
        out[24..28].copy_from_slice(&self.previous.to_le_bytes());
    }

    /// Decodes 28 bytes (shorter input: None).
    pub fn decode(b: &[u8]) -> Option<RawEntry> {
        if b.len() < ENTRY_BYTES {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(RawEntry {
            key_hash: u32_at(0),
            topic_id: u32_at(4),
            queue_id: u32_at(8),
            offset: u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
            time_delta_ms: u32_at(20),
            previous: u32_at(24),
        })
    }

    pub fn entry(&self, begin_store_ms: i64) -> Entry {
        Entry {
            key_hash: self.key_hash,
            topic_id: self.topic_id,
            queue_id: self.queue_id,
            offset: self.offset,
            // Saturating: a damaged header's time must not overflow (stores never get there).
            store_ms: begin_store_ms.saturating_add(i64::from(self.time_delta_ms)),
        }
    }
}

/// A file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub geometry: Geometry,
    pub entry_count: u32,
    pub begin_store_ms: i64,
    pub end_store_ms: i64,
    /// Log position of the first batch indexed here.
    pub min_position: LogPosition,
    /// Log position one past the last batch indexed here.
    pub end_position: LogPosition,
}

impl Header {
    pub fn empty(geometry: Geometry) -> Header {
        Header {
            geometry,
            entry_count: 0,
            begin_store_ms: 0,
            end_store_ms: 0,
            min_position: LogPosition::ZERO,
            end_position: LogPosition::ZERO,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.geometry.slot_count.to_le_bytes());
        b[12..16].copy_from_slice(&self.geometry.max_entries.to_le_bytes());
        b[16..20].copy_from_slice(&self.entry_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.begin_store_ms.to_le_bytes());
        b[32..40].copy_from_slice(&self.end_store_ms.to_le_bytes());
        b[40..48].copy_from_slice(&self.min_position.get().to_le_bytes());
        b[48..56].copy_from_slice(&self.end_position.get().to_le_bytes());
        let crc = crate::format::crc::crc32c(&b[..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() < HEADER_BYTES {
            return Err(format!("key index header is {} bytes, not {HEADER_BYTES}", b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err("not a key index file (bad magic)".into());
        }
        let crc = u32::from_le_bytes(b[56..60].try_into().expect("4 bytes"));
        if crc != crate::format::crc::crc32c(&b[..56]) {
            return Err("key index header checksum mismatch".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let geometry = Geometry { slot_count: u32_at(8), max_entries: u32_at(12) };
        geometry.validate()?;
        let entry_count = u32_at(16);
        if entry_count > geometry.max_entries {
            return Err(format!(
                "key index header counts {entry_count} entries, more than its {}",
                geometry.max_entries
            ));
        }
        Ok(Header {
            geometry,
            entry_count,
            begin_store_ms: u64_at(24) as i64,
            end_store_ms: u64_at(32) as i64,
            min_position: LogPosition::new(u64_at(40)),
            end_position: LogPosition::new(u64_at(48)),
        })
    }

    /// Could this file hold an entry stored in `[from_ms, to_ms]`?
    pub fn overlaps(&self, from_ms: i64, to_ms: i64) -> bool {
        self.entry_count > 0 && self.begin_store_ms <= to_ms && self.end_store_ms >= from_ms
    }
}

/// Why an entry was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError {
    /// Every entry is used, or the store time is too far past the file's first one for the
    /// 32-bit delta: seal this file and add to a new one.
    Full,
}

/// A walk over one slot's chain, newest first, in a file read through `read`.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    pub hash: u32,
    pub topic_id: u32,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// What a walk step decides about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A match: report it, then go on to `next` (entry number + 1; 0 ends).
    Match(Entry, u32),
    /// Not a match: go on to `next`.
    Skip(u32),
    /// Older than the range: nothing further along the chain can match.
    Stop,
}

impl Walk {
    /// Decides about entry `raw` of a file that begins at `begin_store_ms` and holds `count`
    /// valid entries. A link to an entry at or past `count` (written after the checkpoint the
    /// file was loaded from) or not older than the current one ends the walk: chains only
    /// point backwards, so anything else is damage and must not loop.
    pub fn step(&self, raw: &RawEntry, current: u32, count: u32, begin_store_ms: i64) -> Step {
        let entry = raw.entry(begin_store_ms);
        if entry.store_ms < self.from_ms {
            return Step::Stop;
        }
        let next = if raw.previous <= current && raw.previous <= count { raw.previous } else { 0 };
        if raw.key_hash == self.hash
            && raw.topic_id == self.topic_id
            && entry.store_ms <= self.to_ms
        {
            Step::Match(entry, next)
        } else {
            Step::Skip(next)
        }
    }
}

/// The active (newest) file held whole in memory, with the 4 KiB blocks changed since it was
/// last written. Bounded: exactly one file's bytes.
pub struct ActiveImage {
    pub header: Header,
    bytes: Vec<u8>,
    dirty: Vec<bool>,
}

impl ActiveImage {
    pub fn new(geometry: Geometry) -> ActiveImage {
        let size = geometry.file_bytes();
        ActiveImage {
            header: Header::empty(geometry),
            bytes: vec![0; size],
            dirty: vec![false; size / BLOCK],
        }
    }

    /// Loads a file image written by an earlier run, keeping its first `count` entries (what
    /// the checkpoint says is indexed and durable). The slots and links are rebuilt from those
    /// entries, so nothing the crashed run wrote after its checkpoint (slots pointing at later
    /// entries, torn blocks past the counted ones) can leak in; later entries are cleared.
    pub fn load(
        geometry: Geometry,
        mut bytes: Vec<u8>,
        count: u32,
        begin_store_ms: i64,
        end_store_ms: i64,
        positions: (LogPosition, LogPosition),
    ) -> Result<ActiveImage, String> {
        if count > geometry.max_entries {
            return Err(format!("checkpoint counts {count} entries, more than a file holds"));
        }
        bytes.resize(geometry.file_bytes(), 0);
        let blocks = bytes.len() / BLOCK;
        let mut image = ActiveImage {
            header: Header {
                geometry,
                entry_count: count,
                begin_store_ms,
                end_store_ms,
                min_position: positions.0,
                end_position: positions.1,
            },
            bytes,
            dirty: vec![true; blocks],
        };
        let slots = geometry.slot_offset(0)..geometry.entry_offset(0);
        image.bytes[slots].fill(0);
        for n in 0..count {
            let mut raw = image.raw(n);
            let slot = geometry.slot_of(raw.key_hash);
            raw.previous = image.slot(slot);
            let at = geometry.entry_offset(n);
            raw.encode(&mut image.bytes[at..at + ENTRY_BYTES]);
            image.set_slot(slot, n + 1);
        }
        let rest = geometry.entry_offset(count)..image.bytes.len();
        image.bytes[rest].fill(0);
        Ok(image)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.header.entry_count == 0
    }

    fn mark(&mut self, at: usize, len: usize) {
        if len == 0 {
            return;
        }
        for b in at / BLOCK..=(at + len - 1) / BLOCK {
            self.dirty[b] = true;
        }
    }

    pub fn slot(&self, slot: u32) -> u32 {
        let at = self.header.geometry.slot_offset(slot);
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn set_slot(&mut self, slot: u32, v: u32) {
        let at = self.header.geometry.slot_offset(slot);
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        self.mark(at, 4);
    }

    /// Entry number `n` (must be below the file's capacity).
    pub fn raw(&self, n: u32) -> RawEntry {
        let at = self.header.geometry.entry_offset(n);
        RawEntry::decode(&self.bytes[at..at + ENTRY_BYTES]).expect("entry in range")
    }

    /// Adds one entry for a batch at `position` ending at `end`.
    pub fn add(
        &mut self,
        entry: Entry,
        position: LogPosition,
        end: LogPosition,
    ) -> Result<(), AddError> {
        let g = self.header.geometry;
        let n = self.header.entry_count;
        if n >= g.max_entries {
            return Err(AddError::Full);
        }
        if n == 0 {
            self.header.begin_store_ms = entry.store_ms;
            self.header.end_store_ms = entry.store_ms;
            self.header.min_position = position;
        }
        // Store times never go back along the log; a clock step back is indexed at the
        // file's latest time rather than before its start.
        let store_ms = entry.store_ms.max(self.header.begin_store_ms);
        let Some(Ok(delta)) = store_ms.checked_sub(self.header.begin_store_ms).map(u32::try_from)
        else {
            return Err(AddError::Full);
        };
        let slot = g.slot_of(entry.key_hash);
        let raw = RawEntry {
            key_hash: entry.key_hash,
            topic_id: entry.topic_id,
            queue_id: entry.queue_id,
            offset: entry.offset,
            time_delta_ms: delta,
            previous: self.slot(slot),
        };
        let at = g.entry_offset(n);
        raw.encode(&mut self.bytes[at..at + ENTRY_BYTES]);
        self.mark(at, ENTRY_BYTES);
        self.set_slot(slot, n + 1);
        self.header.entry_count = n + 1;
        self.header.end_store_ms = self.header.end_store_ms.max(store_ms);
        self.header.end_position = self.header.end_position.max(end);
        Ok(())
    }

    /// Notes that the log up to `end` is indexed here (batches without keys add no entry).
    pub fn advance(&mut self, end: LogPosition) {
        self.header.end_position = self.header.end_position.max(end);
    }

    /// Matches of `walk` in this image, newest first, at most `max`, after at most
    /// `max_steps` entries read. Returns (matches, steps taken).
    pub fn walk(&self, walk: &Walk, max: usize, max_steps: usize) -> (Vec<Entry>, usize) {
        let count = self.header.entry_count;
        let mut out = Vec::new();
        let mut next = self.slot(self.header.geometry.slot_of(walk.hash));
        let mut steps = 0;
        while next != 0 && next <= count && out.len() < max && steps < max_steps {
            steps += 1;
            let current = next - 1;
            match walk.step(&self.raw(current), current, count, self.header.begin_store_ms) {
                Step::Match(e, n) => {
                    out.push(e);
                    next = n;
                }
                Step::Skip(n) => next = n,
                Step::Stop => break,
            }
        }
        (out, steps)
    }

    /// The dirty runs of blocks as (file offset, length), clearing the marks. The header
    /// block is written with the current header.
    pub fn take_dirty(&mut self) -> Vec<(usize, usize)> {
        self.dirty[0] = true;
        let header = self.header.encode();
        self.bytes[..HEADER_BYTES].copy_from_slice(&header);
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (b, d) in self.dirty.iter_mut().enumerate() {
            if !*d {
                continue;
            }
            *d = false;
            match runs.last_mut() {
                Some((at, len)) if *at + *len == b * BLOCK => *len += BLOCK,
                _ => runs.push((b * BLOCK, BLOCK)),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests;
