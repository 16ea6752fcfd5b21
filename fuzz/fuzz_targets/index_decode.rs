//! Feeds arbitrary bytes to the index checkpoint decoder (`IndexCheckpoint::decode`), which
//! recovery runs on `index.checkpoint` read from disk. It must never panic, and a file it
//! accepts must re-encode to exactly the same bytes.
//!
//! The first input byte picks a mode: even passes the rest as it is; odd appends a correct
//! CRC32C first, so the fuzzer gets past the checksum to the structural checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::storage::index::IndexCheckpoint;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode % 2 == 1 {
        let crc = crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    if let Ok(file) = IndexCheckpoint::decode(&bytes) {
        assert_eq!(file.encode(), bytes, "decode then encode must give the same bytes");
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
