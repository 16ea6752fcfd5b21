//! Batch header, builder and validating parser.
//!
//! ```text
//! offset size field                 covered by
//!  0     4   length                 -            total bytes of the batch, header included
//!  4     2   magic  = 0x5152 ("RQ") -
//!  6     1   version = 1            -
//!  7     1   reserved (0)           -
//!  8     4   stamp_crc              -            CRC32C of bytes [12, 40)
//! 12     4   topic_id               stamp_crc    stamped by the broker
//! 16     4   queue_id               stamp_crc    stamped by the broker
//! 20     8   base_offset            stamp_crc    stamped: queue offset of the first record
//! 28     8   store_timestamp_ms     stamp_crc    stamped: broker time of the append
//! 36     4   epoch                  stamp_crc    stamped: the master epoch that wrote it (0 without replication)
//! 40     4   crc                    -            CRC32C of bytes [44, length)
//! 44     2   attributes             crc
//! 46     2   reserved (0)           crc
//! 48     4   record_count           crc
//! 52     8   first_timestamp_ms     crc
//! 60     8   max_timestamp_ms       crc
//! 68     8   producer_id            crc          -1 when the producer is not idempotent
//! 76     4   base_sequence          crc          -1 when the producer is not idempotent
//! 80     8   tag_summary            crc          64-bit Bloom filter of the records' tags
//! 88     ... records                crc
//! ```
//!
//! The producer computes `crc`; the broker never touches bytes it covers. The broker writes the
//! stamped fields and `stamp_crc`, so a stored batch is fully checksummed.

use super::crc::{crc32c, crc32c_append, crc32c_combine};
use super::tags::TagSummary;
use super::FORMAT_VERSION;

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 88;
/// First byte covered by the producer's CRC.
pub const CRC_START: usize = 44;
/// Upper bound on records in one batch (keeps per-batch work and index counts bounded).
pub const MAX_RECORDS_PER_BATCH: u32 = 1 << 20;

const MAGIC: u16 = 0x5152;
const STAMP_START: usize = 12;
const STAMP_END: usize = 40;

/// Compression codec bits (0..=2); only "none" exists in version 1.
pub const ATTR_COMPRESSION_MASK: u16 = 0b111;
/// The batch belongs to a transaction (half messages).
pub const ATTR_TRANSACTIONAL: u16 = 1 << 3;
/// A control batch written by the broker itself (no records), e.g. the end-of-segment marker.
pub const ATTR_CONTROL: u16 = 1 << 4;
const ATTR_KNOWN: u16 = ATTR_COMPRESSION_MASK | ATTR_TRANSACTIONAL | ATTR_CONTROL;

/// Why bytes are not a valid batch. Each variant names what a sender must fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("batch is truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("batch length {length} is outside [{min}, {max}]")]
    BadLength { length: u64, min: usize, max: usize },
    #[error("bad magic {0:#06x} (not a ringmq batch)")]
    BadMagic(u16),
    #[error("unsupported batch format version {0} (this broker speaks {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown attribute bits {0:#06x}")]
    UnknownAttributes(u16),
    #[error("compressed batches (codec {0}) are not supported")]
    UnsupportedCompression(u16),
    #[error("batch CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("stamped-field CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    StampCrcMismatch { expected: u32, actual: u32 },
    #[error("stamped base offset {base_offset} leaves no room for {record_count} records")]
    StampPastLastOffset { base_offset: u64, record_count: u32 },
    #[error("reserved header byte {offset} is {value}, must be 0")]
    ReservedNotZero { offset: usize, value: u8 },
    #[error("control batch carries {0} records, must carry none")]
    ControlWithRecords(u32),
    #[error("record count {0} is outside [1, {MAX_RECORDS_PER_BATCH}]")]
    BadRecordCount(u32),
    #[error("record {index} is malformed: {reason}")]
    BadRecord { index: u32, reason: &'static str },
    #[error("batch would exceed {max} bytes")]
    BatchFull { max: usize },
    #[error("field too long: {field} is {len} bytes, at most {max}")]
    FieldTooLong { field: &'static str, len: usize, max: usize },
}

/// Fields the broker writes into a batch when it appends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub topic_id: u32,
    pub queue_id: u32,
    pub base_offset: u64,
    pub store_timestamp_ms: i64,
    /// The master epoch that appended the batch (`crate::replication::epochs`); 0 on a
    /// broker without replication.
    pub epoch: u32,
}

/// Decoded header fields (a copy; cheap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub length: u32,
    pub stamp_crc: u32,
    pub stamp: Stamp,
    pub crc: u32,
    pub attributes: u16,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub base_sequence: i32,
    pub tag_summary: TagSummary,
}

impl BatchHeader {
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    /// Queue offset one past the last record of this batch.
    pub fn next_offset(&self) -> u64 {
        // Saturating: the stamp is read from disk or a peer, and no checksum can say that its
        // base offset leaves room for the records (no queue gets near the last offset).
        self.stamp.base_offset.saturating_add(u64::from(self.record_count))
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the length field, if at least four bytes are present. Framing helper: it does not
/// validate anything else.
pub fn peek_length(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= 4).then(|| u32_at(bytes, 0))
}

/// Decodes the header without verifying checksums (callers that need trust use
/// [`BatchView::parse`]). Requires `bytes.len() >= HEADER_LEN`.
pub fn read_header(bytes: &[u8]) -> Result<BatchHeader, FormatError> {
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Truncated { needed: HEADER_LEN, have: bytes.len() });
    }
    let magic = u16_at(bytes, 4);
    if magic != MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    if bytes[6] != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(bytes[6]));
    }
    if bytes[7] != 0 {
        // Reserved and outside every CRC: a set bit can only be corruption (or a newer format).
        return Err(FormatError::ReservedNotZero { offset: 7, value: bytes[7] });
    }
    Ok(BatchHeader {
        length: u32_at(bytes, 0),
        stamp_crc: u32_at(bytes, 8),
        stamp: Stamp {
            topic_id: u32_at(bytes, 12),
            queue_id: u32_at(bytes, 16),
            base_offset: u64_at(bytes, 20),
            store_timestamp_ms: u64_at(bytes, 28) as i64,
            epoch: u32_at(bytes, 36),
        },
        crc: u32_at(bytes, 40),
        attributes: u16_at(bytes, 44),
        record_count: u32_at(bytes, 48),
        first_timestamp_ms: u64_at(bytes, 52) as i64,
        max_timestamp_ms: u64_at(bytes, 60) as i64,
        producer_id: u64_at(bytes, 68) as i64,
        base_sequence: u32_at(bytes, 76) as i32,
        tag_summary: TagSummary(u64_at(bytes, 80)),
    })
}

/// Whether the broker-stamped fields of the stored batch at the start of `bytes` (topic,
/// queue, base offset, store time) are intact, whatever the rest of it holds: a damaged batch
/// can still be attributed to its queue.
pub fn stamp_verifies(bytes: &[u8]) -> bool {
    read_header(bytes).is_ok_and(|h| crc32c(&bytes[STAMP_START..STAMP_END]) == h.stamp_crc)
}

fn check_attributes(header: &BatchHeader) -> Result<(), FormatError> {
    if header.attributes & !ATTR_KNOWN != 0 {
        return Err(FormatError::UnknownAttributes(header.attributes & !ATTR_KNOWN));
    }
    let codec = header.attributes & ATTR_COMPRESSION_MASK;
    if codec != 0 {
        return Err(FormatError::UnsupportedCompression(codec));
    }
    Ok(())
}

fn check_record_count(header: &BatchHeader) -> Result<(), FormatError> {
    let control = header.attributes & ATTR_CONTROL != 0;
    if control && (header.record_count != 0 || header.length as usize != HEADER_LEN) {
        return Err(FormatError::ControlWithRecords(header.record_count));
    }
    if !control && (header.record_count == 0 || header.record_count > MAX_RECORDS_PER_BATCH) {
        return Err(FormatError::BadRecordCount(header.record_count));
    }
    Ok(())
}

/// The header of a stored batch whose bytes this process verified when they were appended
/// and holds in pieces (the log's chunk cache, across two chunks): every check of
/// [`BatchView::parse_verified_before`] and [`BatchView::verify_stamp`] that the header alone
/// allows. `header_bytes` are the batch's first [`HEADER_LEN`] bytes; walk its records with
/// [`super::record::walk_pieces`].
pub fn verify_stored_header(
    header_bytes: &[u8],
    max_len: usize,
) -> Result<BatchHeader, FormatError> {
    let header = read_header(header_bytes)?;
    check_length(&header, max_len)?;
    check_attributes(&header)?;
    check_record_count(&header)?;
    check_stamp(&header, header_bytes)?;
    Ok(header)
}

/// The header's length is at least a bare header and at most `max_len`; returns it.
fn check_length(header: &BatchHeader, max_len: usize) -> Result<usize, FormatError> {
    let length = header.length as usize;
    if length < HEADER_LEN || length > max_len {
        return Err(FormatError::BadLength {
            length: header.length.into(),
            min: HEADER_LEN,
            max: max_len,
        });
    }
    Ok(length)
}

/// The stamp CRC over `bytes` (the batch's first [`HEADER_LEN`] bytes or more) matches the
/// header's, and the stamped offsets do not run past the last one.
fn check_stamp(header: &BatchHeader, bytes: &[u8]) -> Result<(), FormatError> {
    let actual = crc32c(&bytes[STAMP_START..STAMP_END]);
    if actual != header.stamp_crc {
        return Err(FormatError::StampCrcMismatch { expected: header.stamp_crc, actual });
    }
    let (base_offset, record_count) = (header.stamp.base_offset, header.record_count);
    if base_offset.checked_add(u64::from(record_count)).is_none() {
        return Err(FormatError::StampPastLastOffset { base_offset, record_count });
    }
    Ok(())
}

/// A validated batch borrowed from a buffer: the header is decoded and the CRC verified.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    pub header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Validates the batch at the start of `bytes` (which may hold more after it): bounds,
    /// magic, version, attributes, record count and the producer CRC. Does not check the
    /// stamp CRC (a producer's batch is not stamped yet); see [`BatchView::verify_stamp`].
    pub fn parse(bytes: &'a [u8], max_len: usize) -> Result<Self, FormatError> {
        Self::parse_checked(bytes, max_len, true)
    }

    /// [`BatchView::parse`] without the producer CRC, for bytes this process verified when
    /// they arrived and kept in memory since (the log's chunk cache): the key index reads
    /// every batch again, and the CRC of a 1 MiB batch is most of what parsing it costs. Every
    /// other check is made.
    pub fn parse_verified_before(bytes: &'a [u8], max_len: usize) -> Result<Self, FormatError> {
        Self::parse_checked(bytes, max_len, false)
    }

    fn parse_checked(bytes: &'a [u8], max_len: usize, crc: bool) -> Result<Self, FormatError> {
        let header = read_header(bytes)?;
        let length = check_length(&header, max_len)?;
        if bytes.len() < length {
            return Err(FormatError::Truncated { needed: length, have: bytes.len() });
        }
        check_attributes(&header)?;
        let bytes = &bytes[..length];
        if crc {
            let actual = crc32c(&bytes[CRC_START..]);
            if actual != header.crc {
                return Err(FormatError::CrcMismatch { expected: header.crc, actual });
            }
        }
        check_record_count(&header)?;
        Ok(BatchView { header, bytes })
    }

    /// Checks the CRC over the broker-stamped fields (for stored batches), and that the
    /// stamped base offset leaves room for the records: no checksum can say that, and every
    /// reader adds record numbers to it.
    pub fn verify_stamp(&self) -> Result<(), FormatError> {
        check_stamp(&self.header, self.bytes)
    }

    /// The whole batch, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The encoded records after the header.
    pub fn records_bytes(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// Checks the record framing without decoding into anything: every record's length and
    /// fields lie within the batch, properties are well formed, and the batch holds exactly
    /// `record_count` records. Exactly the checks [`BatchView::records`] makes, so a batch
    /// that passes can be iterated by every consumer. The broker calls it on ingest, so a
    /// batch with a valid CRC but malformed records is never stored (it would fail every
    /// consumer of its queue). Cost: a few bounds checks per record and property, no
    /// allocation.
    pub fn validate_records(&self) -> Result<(), FormatError> {
        self.validate_records_bare().map(|_| ())
    }

    /// [`Self::validate_records`], telling in the same pass whether every record is bare
    /// ([`super::RecordRef::is_bare`]: no key, no properties): the broker's key index skips
    /// such a batch instead of reading it back.
    pub fn validate_records_bare(&self) -> Result<bool, FormatError> {
        self.records().try_fold(true, |bare, r| r.map(|r| bare && r.is_bare()))
    }

    /// Iterates the records, validating each one's bounds.
    pub fn records(&self) -> super::record::RecordIter<'a> {
        super::record::RecordIter::new(
            self.records_bytes(),
            self.header.record_count,
            self.header.first_timestamp_ms,
        )
    }
}

/// Writes the broker-owned fields and their CRC into a batch header in place.
pub fn stamp(header: &mut [u8], stamp: &Stamp) {
    assert!(header.len() >= HEADER_LEN, "stamp needs a whole header");
    header[12..16].copy_from_slice(&stamp.topic_id.to_le_bytes());
    header[16..20].copy_from_slice(&stamp.queue_id.to_le_bytes());
    header[20..28].copy_from_slice(&stamp.base_offset.to_le_bytes());
    header[28..36].copy_from_slice(&stamp.store_timestamp_ms.to_le_bytes());
    header[36..40].copy_from_slice(&stamp.epoch.to_le_bytes());
    let crc = crc32c(&header[STAMP_START..STAMP_END]);
    header[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes a header-only control batch (no records), e.g. the commit log's end-of-segment
/// marker. It is stamped and fully checksummed like any batch.
pub fn control_batch(stamp_fields: &Stamp, marker: i64) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    b[4..6].copy_from_slice(&MAGIC.to_le_bytes());
    b[6] = FORMAT_VERSION;
    b[44..46].copy_from_slice(&ATTR_CONTROL.to_le_bytes());
    b[68..76].copy_from_slice(&marker.to_le_bytes());
    b[76..80].copy_from_slice(&(-1i32).to_le_bytes());
    let crc = crc32c(&b[CRC_START..]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    stamp(&mut b, stamp_fields);
    b
}

/// Builds one batch of records for one queue (producer side).
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    max_bytes: usize,
    count: u32,
    first_ts: Option<i64>,
    max_ts: i64,
    tags: TagSummary,
    /// CRC32C of the records in `buf[HEADER_LEN..crc_upto]`: computed [`RUNNING_CRC_STEP`]
    /// bytes at a time as records are pushed (see there).
    records_crc: u32,
    crc_upto: usize,
}

/// Each time this many bytes of records are not yet in the batch's running CRC, they are added
/// to it, while they are in the cache, instead of all at once when the batch is finished: by
/// then the first records of a large batch are no longer cached, and the CRC waited for memory
/// (about 115 ns a KiB in the load generator's profile of `batched`, against 64 ns a KiB for
/// bytes just written, with the `crc32c` crate). 16 KiB at a time, not record by record: the
/// CRC's setup and the vector fold's tail are paid per call (with 1 KiB records, a record at
/// a time cost 68-76 ns a KiB, 16 KiB at a time 17-19; `benches/crc_combine.rs`), and 16 KiB
/// just written are still in the core's first-level cache. Smaller batches are checksummed
/// whole at the end, unless the caller knows the batch will be cold
/// ([`BatchBuilder::checksum_now`]).
const RUNNING_CRC_STEP: usize = 16 * 1024;

impl BatchBuilder {
    /// A builder whose finished batch will not exceed `max_bytes` (header included).
    pub fn new(max_bytes: usize) -> Self {
        Self::with_capacity(max_bytes, 64 * 1024)
    }

    /// [`Self::new`] whose buffer starts with room for `capacity` bytes (at most `max_bytes`)
    /// and grows as records come: for a caller that expects small batches.
    pub fn with_capacity(max_bytes: usize, capacity: usize) -> Self {
        Self::with_buffer(max_bytes, Vec::with_capacity(max_bytes.min(capacity).max(HEADER_LEN)))
    }

    /// [`Self::new`] writing into `buf` (emptied first): a finished batch's buffer used again.
    pub fn with_buffer(max_bytes: usize, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            max_bytes,
            count: 0,
            first_ts: None,
            max_ts: i64::MIN,
            tags: TagSummary::EMPTY,
            records_crc: 0,
            crc_upto: HEADER_LEN,
        }
    }

    /// Hints the CPU to fetch for writing the cache lines of the buffer's next `len` bytes, as
    /// far as its capacity goes: where the next record will be encoded, when the caller expects
    /// one soon. Encoding into memory not in the cache waits for each line to be fetched; a hint
    /// given one record ahead lets that happen while the caller does other work.
    #[inline]
    pub fn prefetch_room(&self, len: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let room = self.buf.capacity() - self.buf.len();
            let start = self.buf.as_ptr().wrapping_add(self.buf.len());
            let mut at = 0;
            while at < len.min(room) {
                // SAFETY: PREFETCHW only hints the cache hierarchy (a no-op where unsupported),
                // here of an address inside the buffer's allocation; it cannot fault.
                unsafe {
                    std::arch::asm!(
                        "prefetchw [{}]",
                        in(reg) start.wrapping_add(at),
                        options(nostack, preserves_flags, readonly)
                    )
                };
                at += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = len;
    }

    /// Gives back the buffer's room beyond what it holds.
    pub fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
    }

    /// Bytes the buffer holds room for now (it grows as records come).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn record_count(&self) -> u32 {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Encoded size so far, header included.
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record; `Err(BatchFull)` leaves the builder unchanged so the caller can
    /// finish this batch and start another.
    pub fn push(&mut self, record: &super::record::Record<'_>) -> Result<(), FormatError> {
        let first_ts = self.first_ts.unwrap_or(record.timestamp_ms);
        let encoded = super::record::encoded_len(record)?;
        if self.buf.len() + encoded > self.max_bytes {
            return Err(FormatError::BatchFull { max: self.max_bytes });
        }
        if self.count >= MAX_RECORDS_PER_BATCH {
            return Err(FormatError::BatchFull { max: self.max_bytes });
        }
        super::record::encode(record, first_ts, &mut self.buf)?;
        if self.buf.len() - self.crc_upto >= RUNNING_CRC_STEP {
            self.checksum_now();
        }
        self.first_ts = Some(first_ts);
        self.max_ts = self.max_ts.max(record.timestamp_ms);
        self.count += 1;
        if !record.tag.is_empty() {
            self.tags.add(record.tag);
        }
        Ok(())
    }

    /// Adds the records pushed since the last such call to the batch's running CRC now, while
    /// they are in the cache, whatever the batch's size: for a caller that will finish the
    /// batch long after its records were pushed. With 10,000 queues each batch is finished
    /// after tens of megabytes were written to the others, and its CRC at the end waited for
    /// memory: about 200 ns a KiB in the load generator's profile of `many-queues`.
    pub fn checksum_now(&mut self) {
        let new = &self.buf[self.crc_upto..];
        self.records_crc = crc32c_append(self.records_crc, new);
        self.crc_upto = self.buf.len();
    }

    /// Record bytes not yet in the running CRC (checksummed when the batch is finished).
    #[cfg(test)]
    pub(crate) fn unchecksummed_bytes(&self) -> usize {
        self.buf.len() - self.crc_upto
    }

    /// Writes the header and CRC. `producer_id`/`base_sequence` are -1 for non-idempotent sends.
    pub fn finish(self, producer_id: i64, base_sequence: i32) -> Vec<u8> {
        self.finish_with_attributes(producer_id, base_sequence, 0)
    }

    /// [`Self::finish`] for a transaction's half message (attribute bit 3): the broker holds
    /// it until the transaction ends (`crate::transaction`).
    pub fn finish_transactional(self, producer_id: i64, base_sequence: i32) -> Vec<u8> {
        self.finish_with_attributes(producer_id, base_sequence, ATTR_TRANSACTIONAL)
    }

    fn finish_with_attributes(
        mut self,
        producer_id: i64,
        base_sequence: i32,
        attributes: u16,
    ) -> Vec<u8> {
        assert!(self.count > 0, "a batch needs at least one record");
        let len = self.buf.len() as u32;
        let b = &mut self.buf;
        b[0..4].copy_from_slice(&len.to_le_bytes());
        b[4..6].copy_from_slice(&MAGIC.to_le_bytes());
        b[6] = FORMAT_VERSION;
        // attributes [44, 46): no compression, never a control batch (those are the broker's).
        b[44..46].copy_from_slice(&attributes.to_le_bytes());
        b[48..52].copy_from_slice(&self.count.to_le_bytes());
        b[52..60].copy_from_slice(&self.first_ts.unwrap_or(0).to_le_bytes());
        b[60..68].copy_from_slice(&self.max_ts.to_le_bytes());
        b[68..76].copy_from_slice(&producer_id.to_le_bytes());
        b[76..80].copy_from_slice(&base_sequence.to_le_bytes());
        b[80..88].copy_from_slice(&self.tags.0.to_le_bytes());
        let crc = if self.crc_upto > HEADER_LEN {
            let records = crc32c_append(self.records_crc, &b[self.crc_upto..]);
            let header = crc32c(&b[CRC_START..HEADER_LEN]);
            crc32c_combine(header, records, b.len() - HEADER_LEN)
        } else {
            crc32c(&b[CRC_START..])
        };
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// A builder of at most `max_bytes` holding one record (body `x`), for tests anywhere in the
/// crate.
#[cfg(test)]
pub(crate) fn one_record_builder(max_bytes: usize) -> BatchBuilder {
    let mut b = BatchBuilder::new(max_bytes);
    let r = super::Record { key: b"", tag: b"", properties: &[], body: b"x", timestamp_ms: 1 };
    b.push(&r).expect("one small record fits");
    b
}

#[cfg(test)]
mod tests;
