//! Feeds arbitrary bytes to the batch decoder: `BatchView::parse`, `verify_stamp`, the record
//! iterator and the property iterator must never panic, and what they accept must be
//! self-consistent.
//!
//! Random bytes almost never carry a valid CRC, so the first input byte picks a mode:
//! - even: the rest is passed to the decoder as it is (header checks, framing);
//! - odd: the rest is made into a plausible batch first (length, magic, version and CRC fixed
//!   up, attributes masked to the known bits, control bit cleared) so that the fuzzer can
//!   reach the record and property decoders.
//!
//! Properties checked on every accepted batch:
//! - the view covers exactly `length` bytes and `record_count` is within bounds;
//! - iteration yields at most `record_count` records, stops after the first error, and when it
//!   succeeds it yields exactly `record_count` records;
//! - `validate_records` (the broker's ingest check) succeeds exactly when iteration does;
//! - re-encoding the decoded records with `BatchBuilder` and decoding again gives the same keys,
//!   tags, properties and bodies, timestamps as the encoder defines them, and a tag summary that
//!   contains every tag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::format::batch::{ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_TRANSACTIONAL};
use ringmq::format::{BatchBuilder, BatchView, Record, RecordRef, CRC_START, HEADER_LEN};

/// Bound passed to `parse`; large enough for anything libFuzzer generates.
const MAX_LEN: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        check(rest);
    } else {
        check(&repair(rest));
    }
});

/// Fixes the header fields a CRC or a value check guards, leaving the records as they are.
fn repair(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if b.len() < HEADER_LEN {
        b.resize(HEADER_LEN, 0);
    }
    let len = b.len().min(MAX_LEN);
    b.truncate(len);
    b[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    b[4..6].copy_from_slice(&0x5152u16.to_le_bytes());
    b[6] = ringmq::format::FORMAT_VERSION;
    let attributes = u16::from_le_bytes([b[44], b[45]]) & ATTR_TRANSACTIONAL;
    b[44..46].copy_from_slice(&attributes.to_le_bytes());
    // Keep record_count small enough to be reachable by the bytes present.
    let count = u32::from_le_bytes(b[48..52].try_into().unwrap()) % 64 + 1;
    b[48..52].copy_from_slice(&count.to_le_bytes());
    let crc = crc32c(&b[CRC_START..]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

fn crc32c(bytes: &[u8]) -> u32 {
    // The same CRC the format uses, computed through the public encoder path would need a
    // dependency; a bitwise CRC32C is short and independent of the code under test.
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn check(bytes: &[u8]) {
    let _ = ringmq::format::batch::peek_length(bytes);
    let _ = ringmq::format::batch::read_header(bytes);
    let Ok(view) = BatchView::parse(bytes, MAX_LEN) else { return };
    let h = view.header;
    assert_eq!(view.as_bytes().len(), h.length as usize);
    assert!(h.length as usize >= HEADER_LEN && h.length as usize <= bytes.len());
    assert_eq!(view.records_bytes().len(), h.length as usize - HEADER_LEN);
    assert_eq!(h.attributes & !(ATTR_COMPRESSION_MASK | ATTR_TRANSACTIONAL | ATTR_CONTROL), 0);
    assert_eq!(h.attributes & ATTR_COMPRESSION_MASK, 0);
    if !h.is_control() {
        assert!(h.record_count >= 1);
    }
    let _ = view.verify_stamp();

    let mut records = Vec::new();
    let mut failed = false;
    for (i, r) in view.records().enumerate() {
        assert!(!failed, "the iterator must stop after an error");
        assert!(i as u64 <= u64::from(h.record_count), "more records than record_count");
        match r {
            Ok(rec) => {
                assert_eq!(rec.index as usize, i);
                // Every property either decodes or the iterator reports an error and stops.
                let props: Vec<_> = rec.properties().collect();
                assert!(props.iter().all(|p| p.is_ok()), "the record iterator validated them");
                if let Some(Ok((name, value))) = props.first() {
                    assert_eq!(rec.property(name), Some(*value));
                }
                records.push(rec);
            }
            Err(_) => failed = true,
        }
    }
    // Ingest validation (the broker's check) accepts exactly what consumers can iterate.
    assert_eq!(view.validate_records().is_ok(), !failed, "validate_records disagrees");
    if failed {
        return;
    }
    assert_eq!(records.len() as u64, u64::from(h.record_count));
    if !records.is_empty() {
        round_trip(&view, &records);
    }
}

/// Re-encodes decoded records and checks the second decode matches the first.
fn round_trip(view: &BatchView<'_>, records: &[RecordRef<'_>]) {
    let props: Vec<Vec<(&[u8], &[u8])>> =
        records.iter().map(|r| r.properties().map(|p| p.unwrap()).collect()).collect();
    let mut builder = BatchBuilder::new(usize::MAX / 2);
    for (r, p) in records.iter().zip(&props) {
        builder
            .push(&Record {
                key: r.key,
                tag: r.tag,
                properties: p,
                body: r.body,
                timestamp_ms: r.timestamp_ms,
            })
            .expect("decoded records are within the encoder's limits");
    }
    let bytes = builder.finish(view.header.producer_id, view.header.base_sequence);
    let again = BatchView::parse(&bytes, usize::MAX).expect("re-encoded batch parses");
    assert_eq!(again.header.record_count, view.header.record_count);
    // The encoder stores timestamps as deltas from the first record, clamped at 0.
    let first = records[0].timestamp_ms;
    for (a, b) in again.records().map(|r| r.expect("re-encoded record decodes")).zip(records) {
        assert_eq!(a.key, b.key);
        assert_eq!(a.tag, b.tag);
        assert_eq!(a.body, b.body);
        assert!(a.properties().map(|p| p.unwrap()).eq(b.properties().map(|p| p.unwrap())));
        assert_eq!(a.timestamp_ms, b.timestamp_ms.max(first));
        if !b.tag.is_empty() {
            assert!(again.header.tag_summary.may_contain(b.tag), "Bloom filter false negative");
        }
    }
}
