//! Feeds arbitrary bytes to the schedule queues' decoders (`crate::schedule::entry` and the
//! wheel's checkpoint and timer records), which a shard runs on records read back from its
//! log at startup and on every delivery step. They must never panic; what they accept must
//! survive an encode and decode unchanged, and a checkpoint they accept must restore a wheel.
//!
//! The first input byte picks a decoder; for the checkpoint and the pending offsets, odd modes
//! append a correct CRC32C so the fuzzer gets past the checksum to the structural checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::schedule::entry::{
    decode_checkpoint, decode_checkpoint_record, decode_delivered, decode_entry_record,
    encode_checkpoint_record, encode_delivered, encode_rolled, Entry, CHECKPOINT_DONE_KEY,
    ROLLED_KEY,
};
use ringmq::schedule::pending::{PendingOffsets, DEFAULT_MAX_RANGES};
use ringmq::schedule::wheel::{Checkpoint, TimerRecord, Wheel};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 8 {
        0 => {
            if let Ok(e) = Entry::decode(rest) {
                assert_eq!(Entry::decode(&e.encode()), Ok(e));
            }
            // The same bytes as a rewritten entry's record (the offset it replaces first).
            if let Some(Ok((replaces, e))) = decode_entry_record(ROLLED_KEY, rest) {
                let replaces = replaces.expect("a rewritten entry names the one it replaces");
                let again = encode_rolled(replaces, &e);
                assert_eq!(decode_entry_record(ROLLED_KEY, &again), Some(Ok((Some(replaces), e))));
            }
        }
        1 => {
            if let Ok(offsets) = decode_delivered(rest) {
                assert_eq!(decode_delivered(&encode_delivered(&offsets)), Ok(offsets));
            }
        }
        2 => {
            if let Some(r) = TimerRecord::decode(rest) {
                assert_eq!(TimerRecord::decode(&r.encode()), Some(r));
            }
        }
        3 => {
            // Bounded like the broker reads it back: never more ranges than it keeps.
            if let Ok((_, _, pending)) = decode_checkpoint(rest, DEFAULT_MAX_RANGES) {
                // The encoding before round 41 re-encodes with each range's lowest offset: at
                // most half as large again.
                let again = pending.encode();
                assert!(2 * again.len() <= 3 * rest.len(), "re-encoded pending offsets grew");
                let back = PendingOffsets::decode(&again, DEFAULT_MAX_RANGES).expect("reads back");
                assert_eq!((back.len(), back.oldest()), (pending.len(), pending.oldest()));
            }
            // The same bytes as a checkpoint record with its done entries first.
            if let Some(Ok((done, at, cp, pending))) =
                decode_checkpoint_record(CHECKPOINT_DONE_KEY, rest, DEFAULT_MAX_RANGES)
            {
                let again = encode_checkpoint_record(&done, at, &cp, &pending);
                let back =
                    decode_checkpoint_record(CHECKPOINT_DONE_KEY, &again, DEFAULT_MAX_RANGES);
                let (done2, at2, cp2, pending2) = back.expect("its key").expect("reads back");
                assert_eq!((done2, at2, cp2, pending2.len()), (done, at, cp, pending.len()));
            }
        }
        6 | 7 => {
            // The pending offsets alone, with a correct CRC32C appended on mode 7.
            let mut bytes = rest.to_vec();
            if mode % 2 == 1 {
                let crc = crc32c(&bytes);
                bytes.extend_from_slice(&crc.to_le_bytes());
            }
            if let Ok(p) = PendingOffsets::decode(&bytes, DEFAULT_MAX_RANGES) {
                let again = PendingOffsets::decode(&p.encode(), DEFAULT_MAX_RANGES);
                assert_eq!(again.as_ref().map(PendingOffsets::len), Ok(p.len()));
                assert_eq!(again.as_ref().map(PendingOffsets::oldest), Ok(p.oldest()));
                // Reading it must not shift past 63 bits.
                let _ = (p.oldest(), p.range_width());
            }
        }
        _ => {
            let mut bytes = rest.to_vec();
            if mode % 2 == 1 {
                let crc = crc32c(&bytes);
                bytes.extend_from_slice(&crc.to_le_bytes());
            }
            if let Ok(cp) = Checkpoint::decode(&bytes) {
                assert_eq!(Checkpoint::decode(&cp.encode()), Ok(cp.clone()));
                let mut w = Wheel::restore(&cp, cp.records).expect("a decoded checkpoint restores");
                // Whatever it says, polling names only records the checkpoint covers.
                if let Some(index) = w.poll(i64::MAX) {
                    assert!(index < cp.records);
                }
            }
        }
    }
});

fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}
