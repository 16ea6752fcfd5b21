//! Tests of the batch format: headers, views, validation and the builder.

use super::*;
use crate::format::record::Record;

fn sample(n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1 << 20);
    for i in 0..n {
        let body = format!("body-{i}");
        let key = format!("k{i}");
        let rec = Record {
            key: key.as_bytes(),
            tag: if i % 2 == 0 { b"TagA" } else { b"" },
            properties: &[(b"p".as_slice(), b"v".as_slice())],
            body: body.as_bytes(),
            timestamp_ms: 1_000 + i as i64,
        };
        b.push(&rec).unwrap();
    }
    b.finish(-1, -1)
}

#[test]
fn round_trip_header_and_records() {
    let bytes = sample(3);
    let view = BatchView::parse(&bytes, 1 << 20).unwrap();
    assert_eq!(view.header.record_count, 3);
    assert_eq!(view.header.first_timestamp_ms, 1_000);
    assert_eq!(view.header.max_timestamp_ms, 1_002);
    assert!(view.header.tag_summary.may_contain(b"TagA"));
    let recs: Vec<_> = view.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1].body, b"body-1");
    assert_eq!(recs[1].key, b"k1");
    assert_eq!(recs[2].timestamp_ms, 1_002);
    assert_eq!(recs[0].properties().next().unwrap().unwrap(), (&b"p"[..], &b"v"[..]));
}

#[test]
fn fetching_room_changes_nothing_the_batch_holds() {
    let rec = Record { key: b"", tag: b"", properties: &[], body: b"body", timestamp_ms: 7 };
    let mut b = BatchBuilder::with_capacity(4096, 256);
    // Any length: within the room, past it, and with no room left at all.
    for len in [0, 1, 64, 100, 256, 4096, usize::MAX] {
        b.prefetch_room(len);
        b.push(&rec).unwrap();
    }
    while b.push(&rec).is_ok() {
        b.prefetch_room(64);
    }
    b.prefetch_room(usize::MAX);
    let count = b.record_count();
    let bytes = b.finish(-1, -1);
    let view = BatchView::parse(&bytes, 4096).unwrap();
    assert_eq!(view.header.record_count, count);
    assert!(view.records().all(|r| r.unwrap().body == b"body"));
}

#[test]
fn stamping_keeps_producer_crc_valid_and_is_checked() {
    let mut bytes = sample(2);
    let s = Stamp { topic_id: 7, queue_id: 3, base_offset: 42, store_timestamp_ms: 99, epoch: 5 };
    stamp(&mut bytes, &s);
    let view = BatchView::parse(&bytes, 1 << 20).unwrap();
    assert_eq!(view.header.stamp, s);
    view.verify_stamp().unwrap();
    assert_eq!(view.header.next_offset(), 44);
    bytes[21] ^= 1;
    let view = BatchView::parse(&bytes, 1 << 20).unwrap();
    assert!(matches!(view.verify_stamp(), Err(FormatError::StampCrcMismatch { .. })));
}

#[test]
fn a_stamped_base_offset_near_the_last_offset_saturates_the_next_offset() {
    // Both checksums hold, yet the stamp (an older version's bug, a hand-edited segment,
    // a broker speaking wrongly) puts the batch's records past the last offset. Readers
    // (recovery, fetch, the client's scan) ask for its next offset.
    let mut bytes = sample(3);
    let s = Stamp {
        topic_id: 7,
        queue_id: 3,
        base_offset: u64::MAX - 1,
        store_timestamp_ms: 99,
        epoch: 5,
    };
    stamp(&mut bytes, &s);
    let view = BatchView::parse(&bytes, 1 << 20).unwrap();
    assert!(matches!(view.verify_stamp(), Err(FormatError::StampPastLastOffset { .. })));
    // Readers of the header alone (before verifying) get a saturated offset.
    assert_eq!(view.header.next_offset(), u64::MAX);
}

#[test]
fn every_flipped_covered_bit_is_detected() {
    let bytes = sample(2);
    for i in CRC_START..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(BatchView::parse(&b, 1 << 20).is_err(), "flip at {i} undetected");
    }
}

#[test]
fn bytes_verified_before_skip_only_the_producer_crc() {
    let mut bytes = sample(2);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    assert!(matches!(BatchView::parse(&bytes, 1 << 20), Err(FormatError::CrcMismatch { .. })));
    let view = BatchView::parse_verified_before(&bytes, 1 << 20).unwrap();
    assert_eq!(view.as_bytes(), &bytes[..]);
    // Every other check still holds.
    assert!(matches!(
        BatchView::parse_verified_before(&bytes, 50),
        Err(FormatError::BadLength { .. })
    ));
    assert!(matches!(
        BatchView::parse_verified_before(&bytes[..bytes.len() - 1], 1 << 20),
        Err(FormatError::Truncated { .. })
    ));
    let mut b = bytes.clone();
    b[4] ^= 1;
    assert!(matches!(BatchView::parse_verified_before(&b, 1 << 20), Err(FormatError::BadMagic(_))));
}

#[test]
fn rejects_bad_lengths_and_truncation() {
    let bytes = sample(1);
    assert!(matches!(BatchView::parse(&bytes[..10], 1 << 20), Err(FormatError::Truncated { .. })));
    assert!(matches!(
        BatchView::parse(&bytes[..bytes.len() - 1], 1 << 20),
        Err(FormatError::Truncated { .. })
    ));
    assert!(matches!(BatchView::parse(&bytes, 50), Err(FormatError::BadLength { .. })));
    let mut b = bytes.clone();
    b[0..4].copy_from_slice(&10u32.to_le_bytes());
    assert!(matches!(BatchView::parse(&b, 1 << 20), Err(FormatError::BadLength { .. })));
    let mut b = bytes.clone();
    b[4] = 0;
    assert!(matches!(BatchView::parse(&b, 1 << 20), Err(FormatError::BadMagic(_))));
    let mut b = bytes.clone();
    b[6] = 9;
    assert!(matches!(BatchView::parse(&b, 1 << 20), Err(FormatError::UnsupportedVersion(9))));
    let mut b = bytes;
    b[7] = 1;
    assert!(matches!(BatchView::parse(&b, 1 << 20), Err(FormatError::ReservedNotZero { .. })));
}

/// Rewrites `batch`'s CRC after a change to the bytes it covers.
fn recrc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[40..44].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn record_framing_is_validated_without_iterating_by_hand() {
    let good = sample(3);
    BatchView::parse(&good, 1 << 20).unwrap().validate_records().unwrap();
    // Record 1's key length runs past its record; the CRC is made valid again.
    let mut bad = good.clone();
    let first_len = u32::from_le_bytes(bad[88..92].try_into().unwrap()) as usize;
    let second = 88 + 4 + first_len;
    bad[second + 8..second + 10].copy_from_slice(&u16::MAX.to_le_bytes());
    recrc(&mut bad);
    let view = BatchView::parse(&bad, 1 << 20).expect("header and CRC are fine");
    assert!(matches!(view.validate_records(), Err(FormatError::BadRecord { index: 1, .. })));
    // More records announced than present, and bytes left after the last record.
    for count in [4u32, 2] {
        let mut b = good.clone();
        b[48..52].copy_from_slice(&count.to_le_bytes());
        recrc(&mut b);
        let view = BatchView::parse(&b, 1 << 20).unwrap();
        assert!(matches!(view.validate_records(), Err(FormatError::BadRecord { .. })));
    }
}

#[test]
fn builder_refuses_to_exceed_its_bound() {
    let mut b = BatchBuilder::new(HEADER_LEN + 40);
    let rec = Record { key: b"", tag: b"", properties: &[], body: &[0u8; 10], timestamp_ms: 1 };
    b.push(&rec).unwrap();
    let before = b.len_bytes();
    assert!(matches!(b.push(&rec), Err(FormatError::BatchFull { .. })));
    assert_eq!(b.len_bytes(), before);
}

#[test]
fn control_batch_is_valid_without_records() {
    let s = Stamp { topic_id: 0, queue_id: 0, base_offset: 0, store_timestamp_ms: 5, epoch: 0 };
    let b = control_batch(&s, 1);
    let v = BatchView::parse(&b, 1 << 20).unwrap();
    assert!(v.header.is_control());
    v.verify_stamp().unwrap();
    assert_eq!(v.records().count(), 0);
}

/// Past 16 KiB of records the running CRC takes them 16 KiB at a time, not a record at a time
/// (a call per 1 KiB record cost more than the CRC of its bytes); what is left is checksummed
/// when the batch is finished.
#[test]
fn a_large_batch_is_checksummed_sixteen_kib_at_a_time() {
    let body = [9u8; 1000];
    let r = Record { key: b"", tag: b"", properties: &[], body: &body, timestamp_ms: 1 };
    let mut b = BatchBuilder::new(1 << 20);
    let mut pushed = 0;
    let mut steps = 0;
    while steps < 3 {
        b.push(&r).unwrap();
        pushed += 1;
        if b.unchecksummed_bytes() == 0 {
            steps += 1;
            continue;
        }
        let since = b.unchecksummed_bytes();
        assert!(since < RUNNING_CRC_STEP, "{since} bytes waited past a step");
        if b.len_bytes() - HEADER_LEN > RUNNING_CRC_STEP {
            assert!(since > 1000, "a record at a time: {since} bytes after {pushed} records");
        }
    }
    assert!(pushed >= 3 * RUNNING_CRC_STEP / 1050, "{pushed} records for three steps");
    b.push(&r).unwrap();
    assert!(b.unchecksummed_bytes() > 0, "the next record waits for the next step");
    let bytes = b.finish(-1, -1);
    BatchView::parse(&bytes, bytes.len()).expect("the joined CRC holds");
}

proptest::proptest! {
    /// Whether the records' CRC was computed as they came (`RUNNING_CRC_STEP` bytes at a time, or
    /// when the caller asked: `now`) or at the end, the finished batch carries the CRC of its
    /// bytes; so does a builder whose buffer held another batch before.
    #[test]
    fn the_crc_is_that_of_the_finished_bytes_however_large_the_batch(
        sizes in proptest::collection::vec(0usize..6000, 1..40),
        now in proptest::collection::vec(proptest::prelude::any::<bool>(), 40),
        reuse in proptest::prelude::any::<bool>(),
    ) {
        let mut b = BatchBuilder::new(1 << 20);
        if reuse {
            let mut first = BatchBuilder::new(1 << 20);
            for _ in 0..8 {
                let body = [3u8; 5000];
                let r = Record { key: b"", tag: b"", properties: &[], body: &body, timestamp_ms: 1 };
                first.push(&r).unwrap();
            }
            b = BatchBuilder::with_buffer(1 << 20, first.finish(-1, -1));
        }
        for (i, size) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
            let r = Record { key: b"k", tag: b"t", properties: &[], body: &body, timestamp_ms: i as i64 };
            b.push(&r).unwrap();
            if now[i] {
                b.checksum_now();
            }
        }
        let bytes = b.finish(7, 3);
        let crc = u32::from_le_bytes(bytes[40..44].try_into().unwrap());
        proptest::prop_assert_eq!(crc, crc32c::crc32c(&bytes[CRC_START..]));
        proptest::prop_assert!(BatchView::parse(&bytes, bytes.len()).is_ok());
    }
}

/// A record's key and properties.
type KeyProps<'a> = (&'a [u8], &'a [(&'a [u8], &'a [u8])]);

#[test]
fn validation_tells_whether_every_record_is_bare() {
    let build = |recs: &[KeyProps<'_>]| {
        let mut b = BatchBuilder::new(1 << 16);
        for (key, properties) in recs {
            let rec = Record { key, tag: b"tg", properties, body: b"body", timestamp_ms: 3 };
            b.push(&rec).unwrap();
        }
        b.finish(-1, -1)
    };
    let bare = |batch: &[u8]| BatchView::parse(batch, 1 << 16).unwrap().validate_records_bare();
    assert!(bare(&build(&[(b"", &[]), (b"", &[])])).unwrap());
    assert!(!bare(&build(&[(b"", &[]), (b"k", &[])])).unwrap(), "a key in the last");
    let id: &[(&[u8], &[u8])] = &[(b"UNIQ_KEY", b"id")];
    assert!(!bare(&build(&[(b"", id), (b"", &[])])).unwrap(), "a property in the first");
    // Malformed records are an error, whatever their keys (the framing test above).
    assert!(bare(&sample(3)).is_ok_and(|b| !b), "sample's records have keys");
}
