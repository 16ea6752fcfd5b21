//! Feeds arbitrary bytes to the queue floors decoder (`decode_floors`), which recovery runs on
//! `queues.floor` read from disk. It must never panic, and the floors it accepts must survive
//! an encode and decode unchanged.
//!
//! The first input byte picks a mode: even passes the rest as it is; odd appends a correct
//! CRC32C first, so the fuzzer gets past the checksum to the structural checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::storage::floors::{decode_floors, encode_floors};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode % 2 == 1 {
        let crc = crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    if let Ok(floors) = decode_floors(&bytes) {
        // A file may name a queue twice (the last one wins), so compare the decoded floors,
        // not the bytes.
        let mut entries: Vec<_> = floors.queues.iter().map(|(q, f)| (*q, *f)).collect();
        entries.sort();
        let mut nexts: Vec<_> = floors.nexts.iter().map(|(q, n)| (*q, *n)).collect();
        nexts.sort();
        let bytes = encode_floors(&entries, floors.log_start, floors.index_dropped, &nexts);
        let again = decode_floors(&bytes).expect("re-encoded floors decode");
        assert_eq!(again, floors, "encode then decode must give the same floors");
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
