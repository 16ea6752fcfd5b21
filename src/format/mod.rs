//! The record-batch format: one layout on the wire and on disk.
//!
//! A producer encodes a [`batch`] for one queue; the broker validates its header and CRC,
//! stamps the fields it owns (topic id, queue id, base queue offset, store timestamp) into the
//! header *outside* the producer's CRC, protects them with their own small CRC, and appends the
//! bytes unchanged to the commit log. Fetches return the stored bytes as they are. The broker
//! never decodes or re-encodes individual records on its hot path; [`record`] is for clients,
//! tools and tests.
//!
//! `docs/format.md` is the normative description; the constants here are its source of truth.
//!
//! Invariants (checked by [`batch::BatchView::parse`]):
//! - `length` covers the whole batch, is at least [`HEADER_LEN`] and at most the caller's bound;
//! - the magic and version match; unknown attribute bits are rejected;
//! - `crc` (CRC32C of bytes `[CRC_START, length)`) matches;
//! - `record_count` is between 1 and [`MAX_RECORDS_PER_BATCH`] for data batches.
//!
//! Multi-byte fields are little-endian.

pub mod batch;
pub mod crc;
pub mod record;
pub mod tags;

pub use batch::{
    BatchBuilder, BatchHeader, BatchView, FormatError, Stamp, CRC_START, HEADER_LEN,
    MAX_RECORDS_PER_BATCH,
};
pub use record::{Record, RecordIter, RecordRef};
pub use tags::TagSummary;

/// The version byte written into every batch.
pub const FORMAT_VERSION: u8 = 1;
