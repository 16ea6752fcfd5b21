//! Record encoding inside a batch (clients and tools; the broker does not parse records).
//!
//! ```text
//! u32 record_len           bytes after this field
//! u32 timestamp_delta_ms   record timestamp - batch first_timestamp_ms
//! u16 key_len,  key
//! u16 tag_len,  tag
//! u32 properties_len, properties: repeated (u16 name_len, name, u16 value_len, value)
//! u32 body_len, body
//! ```
//! A record's queue offset is the batch's `base_offset` plus its index in the batch.

use super::batch::FormatError;

/// Longest key or tag, in bytes.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
const FIXED: usize = 4 + 4 + 2 + 2 + 4 + 4;

/// A record to encode.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: &'a [u8],
    pub tag: &'a [u8],
    pub properties: &'a [(&'a [u8], &'a [u8])],
    pub body: &'a [u8],
    pub timestamp_ms: i64,
}

/// A decoded record borrowing from the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Position of the record inside its batch (add the batch base offset for the queue offset).
    pub index: u32,
    pub timestamp_ms: i64,
    pub key: &'a [u8],
    pub tag: &'a [u8],
    properties: &'a [u8],
    pub body: &'a [u8],
    /// The record's bytes after its length prefix (every field above lies in them).
    raw: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// Iterates `(name, value)` property pairs.
    pub fn properties(&self) -> PropertyIter<'a> {
        PropertyIter { rest: self.properties }
    }
    /// Looks up one property by name.
    pub fn property(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.properties().filter_map(Result::ok).find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    /// The record's bytes after its length prefix: the fields above are sub-slices of it.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    /// The encoded properties (see [`Self::properties`]), a sub-slice of [`Self::raw`].
    pub fn properties_raw(&self) -> &'a [u8] {
        self.properties
    }
    /// Neither a key nor properties: nothing a key index takes (keys, message ids).
    pub fn is_bare(&self) -> bool {
        self.key.is_empty() && self.properties.is_empty()
    }
}

fn props_len(props: &[(&[u8], &[u8])]) -> Result<usize, FormatError> {
    let mut n = 0usize;
    for (k, v) in props {
        for (field, len) in [("property name", k.len()), ("property value", v.len())] {
            if len > MAX_KEY_LEN {
                return Err(FormatError::FieldTooLong { field, len, max: MAX_KEY_LEN });
            }
        }
        n += 4 + k.len() + v.len();
    }
    Ok(n)
}

/// Bytes `record` takes when encoded.
pub fn encoded_len(record: &Record<'_>) -> Result<usize, FormatError> {
    for (field, len) in [("key", record.key.len()), ("tag", record.tag.len())] {
        if len > MAX_KEY_LEN {
            return Err(FormatError::FieldTooLong { field, len, max: MAX_KEY_LEN });
        }
    }
    Ok(FIXED
        + record.key.len()
        + record.tag.len()
        + props_len(record.properties)?
        + record.body.len())
}

pub(crate) fn encode(
    record: &Record<'_>,
    first_ts: i64,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let total = encoded_len(record)?;
    let delta = record.timestamp_ms.saturating_sub(first_ts).clamp(0, u32::MAX as i64) as u32;
    let body_len = u32::try_from(record.body.len()).map_err(|_| FormatError::FieldTooLong {
        field: "body",
        len: record.body.len(),
        max: u32::MAX as usize,
    })?;
    out.reserve(total);
    out.extend_from_slice(&((total - 4) as u32).to_le_bytes());
    out.extend_from_slice(&delta.to_le_bytes());
    out.extend_from_slice(&(record.key.len() as u16).to_le_bytes());
    out.extend_from_slice(record.key);
    out.extend_from_slice(&(record.tag.len() as u16).to_le_bytes());
    out.extend_from_slice(record.tag);
    out.extend_from_slice(&(props_len(record.properties)? as u32).to_le_bytes());
    for (k, v) in record.properties {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
    }
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(record.body);
    Ok(())
}

/// A bounds-checked cursor: every read says whether the bytes were there.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn sized16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn sized32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Iterates the records of a batch. Yields an error (then stops) at the first malformed record,
/// and an error if the batch holds fewer or more records than its header says.
pub struct RecordIter<'a> {
    rest: &'a [u8],
    index: u32,
    count: u32,
    first_ts: i64,
    failed: bool,
    prefetch: bool,
}

impl<'a> RecordIter<'a> {
    pub(crate) fn new(records: &'a [u8], count: u32, first_ts: i64) -> Self {
        RecordIter { rest: records, index: 0, count, first_ts, failed: false, prefetch: false }
    }

    /// For records likely out of the CPU's caches (read again long after they were written):
    /// each step hints the load of the record 8 ahead, for records of 256 bytes or more. Not
    /// for records just received or copied, which are in the caches: there the hint only
    /// costs (measured with 100-byte records).
    pub fn prefetching(mut self) -> Self {
        self.prefetch = true;
        self
    }

    fn fail(&mut self, reason: &'static str) -> Option<Result<RecordRef<'a>, FormatError>> {
        self.failed = true;
        Some(Err(FormatError::BadRecord { index: self.index, reason }))
    }
}

/// How many records ahead a walk asks the CPU to start loading: a batch read again long after
/// it was written (the key index's reader) is out of the CPU's caches, and each record's
/// length must arrive before the next record is found, so without a hint every record waits
/// for memory in turn. Guessed from the current record's size (a batch's records are usually
/// alike); a wrong guess costs one useless load. Measured: the key index's reader at
/// 0.52-0.56x its CPU per GB of 1 KiB messages (BENCHMARKS.md, round 19).
const PREFETCH_RECORDS: usize = 8;

/// Records smaller than this are not prefetched: a walk over them touches every cache line in
/// order, which the CPU's own prefetcher follows, and the hints only cost (measured with
/// 100-byte messages: the key index's reader at 0.70-0.72x its CPU per GB, but the shard's
/// other work at about 1.07x).
const PREFETCH_MIN_RECORD: usize = 256;

/// Hints the CPU to load the cache line holding the record `PREFETCH_RECORDS - 1` records
/// past `bytes[0]`, guessing each is `record` bytes long (length prefix included), unless
/// records that small need no hint or the guess falls outside `bytes`.
#[inline(always)]
fn prefetch_ahead(bytes: &[u8], record: usize) {
    if record >= PREFETCH_MIN_RECORD {
        prefetch(bytes, (PREFETCH_RECORDS - 1) * record);
    }
}

/// Hints the CPU to load the cache line holding `bytes[at]`, if `at` is inside `bytes`.
#[inline(always)]
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = bytes.get(at) {
        // SAFETY: a prefetch only hints the cache hierarchy, of a valid address here; it reads
        // nothing into the program and cannot fault.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (b as *const u8).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.index == self.count {
            if self.rest.is_empty() {
                return None;
            }
            return self.fail("bytes left after the last record");
        }
        let mut outer = Cursor { rest: self.rest };
        let Some(body) = outer.sized32() else {
            return self.fail("record length runs past the batch");
        };
        if self.prefetch {
            prefetch_ahead(outer.rest, body.len() + 4);
        }
        match record_body(body, self.index, self.first_ts) {
            Ok(rec) => {
                self.rest = outer.rest;
                self.index += 1;
                Some(Ok(rec))
            }
            Err(reason) => self.fail(reason),
        }
    }
}

/// Decodes one record's bytes after its length prefix.
fn record_body(body: &[u8], index: u32, first_ts: i64) -> Result<RecordRef<'_>, &'static str> {
    let mut c = Cursor { rest: body };
    let parsed = (|| {
        let delta = c.u32()?;
        let key = c.sized16()?;
        let tag = c.sized16()?;
        let properties = c.sized32()?;
        let payload = c.sized32()?;
        Some((delta, key, tag, properties, payload))
    })();
    let Some((delta, key, tag, properties, payload)) = parsed else {
        return Err("a field runs past the record");
    };
    if !c.rest.is_empty() {
        return Err("bytes left inside the record");
    }
    if (PropertyIter { rest: properties }).any(|p| p.is_err()) {
        return Err("malformed properties");
    }
    Ok(RecordRef {
        index,
        timestamp_ms: first_ts.saturating_add(i64::from(delta)),
        key,
        tag,
        properties,
        body: payload,
        raw: body,
    })
}

/// The records section of a batch held in several pieces (a batch the log keeps in memory
/// across two chunks), walked with the checks [`RecordIter`] makes: each record is decoded
/// where it lies, and only one that straddles two pieces is copied (into a buffer reused
/// for the next). Stops at the first malformed record, with its error. Prefetches as
/// [`RecordIter::prefetching`] does: such batches are read long after they were written.
/// The records section starts `skip` bytes into the pieces (a batch's header, [`super::HEADER_LEN`]).
pub fn walk_pieces(
    pieces: &[&[u8]],
    skip: usize,
    count: u32,
    first_ts: i64,
    mut each: impl FnMut(RecordRef<'_>),
) -> Result<(), FormatError> {
    let mut at = Pieces { pieces, piece: 0, offset: 0 };
    let mut scratch = Vec::new();
    let bad = |index, reason| FormatError::BadRecord { index, reason };
    if skip > at.remaining() {
        return Err(bad(0, "record length runs past the batch"));
    }
    at.skip(skip);
    for index in 0..count {
        let len = match at.borrow(4) {
            Some(b) => u32::from_le_bytes(b.try_into().expect("borrowed 4 bytes")),
            None => {
                let mut len = [0u8; 4];
                if !at.copy_to(&mut len) {
                    return Err(bad(index, "record length runs past the batch"));
                }
                u32::from_le_bytes(len)
            }
        } as usize;
        if len > at.remaining() {
            // Before any copy: a length from damaged bytes must not size a buffer.
            return Err(bad(index, "record length runs past the batch"));
        }
        let body = match at.borrow(len) {
            Some(body) => {
                at.prefetch_ahead(len + 4);
                body
            }
            None => {
                scratch.resize(len, 0);
                if !at.copy_to(&mut scratch) {
                    return Err(bad(index, "record length runs past the batch"));
                }
                &scratch[..]
            }
        };
        each(record_body(body, index, first_ts).map_err(|reason| bad(index, reason))?);
    }
    if at.remaining() > 0 {
        return Err(bad(count, "bytes left after the last record"));
    }
    Ok(())
}

/// Fills `out` with the first bytes of `pieces`, taken in order; false if they hold fewer.
pub fn copy_prefix(pieces: &[&[u8]], out: &mut [u8]) -> bool {
    Pieces { pieces, piece: 0, offset: 0 }.copy_to(out)
}

/// A read position in a sequence of byte slices.
struct Pieces<'p, 'a> {
    pieces: &'p [&'a [u8]],
    piece: usize,
    offset: usize,
}

impl<'a> Pieces<'_, 'a> {
    /// Skips exhausted pieces.
    fn settle(&mut self) {
        while self.piece < self.pieces.len() && self.offset == self.pieces[self.piece].len() {
            self.piece += 1;
            self.offset = 0;
        }
    }

    /// The next `n` bytes if one piece holds them all (then consumed), else None (nothing
    /// consumed).
    fn borrow(&mut self, n: usize) -> Option<&'a [u8]> {
        self.settle();
        if n == 0 {
            return Some(&[]);
        }
        let piece = *self.pieces.get(self.piece)?;
        let bytes = piece.get(self.offset..self.offset.checked_add(n)?)?;
        self.offset += n;
        Some(bytes)
    }

    /// Moves `n` bytes on, across pieces (at most to the end).
    fn skip(&mut self, mut n: usize) {
        while n > 0 && self.piece < self.pieces.len() {
            let step = (self.pieces[self.piece].len() - self.offset).min(n);
            self.offset += step;
            n -= step;
            self.settle();
        }
    }

    /// Fills `out` from the next bytes, across pieces; false (position undefined) if they run
    /// out first.
    fn copy_to(&mut self, out: &mut [u8]) -> bool {
        let mut done = 0;
        while done < out.len() {
            self.settle();
            let Some(piece) = self.pieces.get(self.piece) else { return false };
            let n = (piece.len() - self.offset).min(out.len() - done);
            out[done..done + n].copy_from_slice(&piece[self.offset..self.offset + n]);
            self.offset += n;
            done += n;
        }
        true
    }

    /// [`prefetch_ahead`] within the current piece, from the position.
    fn prefetch_ahead(&self, record: usize) {
        if let Some(p) = self.pieces.get(self.piece) {
            prefetch_ahead(p.get(self.offset..).unwrap_or_default(), record);
        }
    }

    fn remaining(&self) -> usize {
        let rest: usize = self.pieces.iter().skip(self.piece).map(|p| p.len()).sum();
        rest - if self.piece < self.pieces.len() { self.offset } else { 0 }
    }
}

/// Iterates `(name, value)` pairs of a record's properties.
pub struct PropertyIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PropertyIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), FormatError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut c = Cursor { rest: self.rest };
        match (c.sized16(), c.sized16()) {
            (Some(k), Some(v)) => {
                self.rest = c.rest;
                Some(Ok((k, v)))
            }
            _ => {
                self.rest = &[];
                Some(Err(FormatError::BadRecord { index: 0, reason: "property runs past its end" }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::{BatchBuilder, BatchView};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            recs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..20),
                 proptest::collection::vec(any::<u8>(), 0..8),
                 proptest::collection::vec(any::<u8>(), 0..300),
                 0i64..100_000),
                1..20)
        ) {
            let mut b = BatchBuilder::new(1 << 20);
            let base = 1_700_000_000_000i64;
            for (k, t, body, ts) in &recs {
                let props = [(b"trace".as_slice(), k.as_slice())];
                b.push(&Record { key: k, tag: t, properties: &props, body, timestamp_ms: base + ts }).unwrap();
            }
            let bytes = b.finish(5, 9);
            let v = BatchView::parse(&bytes, 1 << 20).unwrap();
            let first = base + recs[0].3;
            let out: Vec<_> = v.records().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(out.len(), recs.len());
            for (o, (k, t, body, ts)) in out.iter().zip(&recs) {
                prop_assert_eq!(o.key, &k[..]);
                prop_assert_eq!(o.tag, &t[..]);
                prop_assert_eq!(o.body, &body[..]);
                prop_assert_eq!(o.property(b"trace"), Some(&k[..]));
                prop_assert_eq!(o.timestamp_ms, (base + ts).max(first));
                if !t.is_empty() { prop_assert!(v.header.tag_summary.may_contain(t)); }
            }
        }

        /// Ingest validation and the consumer's decoder agree on any record bytes: a batch is
        /// accepted exactly when iterating its records succeeds.
        #[test]
        fn validation_agrees_with_the_decoder(
            records in proptest::collection::vec(any::<u8>(), 0..300),
            count in 1u32..6,
            good_prefix in 0usize..4,
        ) {
            // Some valid records first, so the random tail also lands after good ones.
            let mut b = BatchBuilder::new(1 << 16);
            for i in 0..good_prefix.max(1) {
                let props = [(b"n".as_slice(), b"v".as_slice())];
                let rec = Record { key: b"k", tag: b"t", properties: &props, body: &[i as u8; 3], timestamp_ms: 1 };
                b.push(&rec).unwrap();
            }
            let mut bytes = b.finish(-1, -1);
            if good_prefix == 0 {
                bytes.truncate(crate::format::HEADER_LEN);
            }
            bytes.extend_from_slice(&records);
            let len = bytes.len() as u32;
            bytes[0..4].copy_from_slice(&len.to_le_bytes());
            bytes[48..52].copy_from_slice(&(good_prefix as u32 + count).to_le_bytes());
            let crc = crate::format::crc::crc32c(&bytes[crate::format::CRC_START..]);
            bytes[40..44].copy_from_slice(&crc.to_le_bytes());
            let view = BatchView::parse(&bytes, 1 << 20).unwrap();
            let decoded: Result<Vec<_>, _> = view.records().collect();
            let decoded_ok = decoded.as_ref().is_ok_and(|r| r.len() as u32 == view.header.record_count);
            prop_assert_eq!(view.validate_records().is_ok(), decoded_ok);
        }

        /// Records held in pieces (cut anywhere) walk to the same records as the whole
        /// section, and to the same error: valid records first, then random bytes.
        #[test]
        fn pieces_walk_like_the_whole_section(
            good in 0usize..5,
            tail in proptest::collection::vec(any::<u8>(), 0..60),
            extra in 0u32..3,
            cuts in proptest::collection::vec(0usize..400, 0..5),
        ) {
            let mut b = BatchBuilder::new(1 << 16);
            for i in 0..good.max(1) {
                let props = [(b"n".as_slice(), b"v".as_slice())];
                let key = vec![b'k'; i * 7];
                let rec = Record { key: &key, tag: b"t", properties: &props, body: &[i as u8; 40], timestamp_ms: 1 };
                b.push(&rec).unwrap();
            }
            let bytes = b.finish(-1, -1);
            let mut records = bytes[crate::format::HEADER_LEN..].to_vec();
            records.extend_from_slice(&tail);
            let count = good.max(1) as u32 + extra;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(records.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([records.len()]) {
                pieces.push(&records[from..c]);
                from = c;
            }
            let owned = |r: RecordRef<'_>| format!("{} {:?} {:?} {:?}", r.index, r.key, r.body, r.property(b"n"));
            let whole: Result<Vec<String>, FormatError> =
                RecordIter::new(&records, count, 1).map(|r| r.map(owned)).collect();
            let mut walked = Vec::new();
            let result = walk_pieces(&pieces, 0, count, 1, |r| walked.push(owned(r)));
            match whole {
                Ok(all) => {
                    prop_assert!(result.is_ok(), "{:?}", result);
                    prop_assert_eq!(walked, all);
                }
                Err(e) => prop_assert_eq!(result.unwrap_err(), e),
            }
        }

        /// The decoder never panics, whatever the bytes.
        #[test]
        fn decoder_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(v) = BatchView::parse(&bytes, 1 << 16) {
                for r in v.records() { let _ = r; }
            }
            let mut it = RecordIter::new(&bytes, 3, 0);
            for _ in 0..10 { if it.next().is_none() { break; } }
        }
    }

    #[test]
    fn record_count_mismatch_is_an_error() {
        let mut b = BatchBuilder::new(4096);
        b.push(&Record { key: b"", tag: b"", properties: &[], body: b"x", timestamp_ms: 0 })
            .unwrap();
        let bytes = b.finish(-1, -1);
        let v = BatchView::parse(&bytes, 4096).unwrap();
        let mut it = RecordIter::new(v.records_bytes(), 2, 0);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
