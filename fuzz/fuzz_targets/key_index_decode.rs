//! Feeds arbitrary bytes to the key index's on-disk decoders (`ringmq::storage::key_index`): a
//! file header, an entry, the checkpoint, and a whole active-file image loaded at an arbitrary
//! count, as a shard does at start with what a crashed run left. They must never panic; what
//! they accept must survive an encode and decode unchanged, and a loaded image must answer
//! walks without looping.
//!
//! The first input byte picks a decoder; odd checkpoint modes append a correct CRC32C so the
//! fuzzer gets past the checksum to the structural checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::storage::key_index::layout::{ActiveImage, Geometry, Header, RawEntry, Walk};
use ringmq::storage::key_index::store::KeyCheckpoint;
use ringmq::storage::LogPosition;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 5 {
        0 => {
            if let Ok(h) = Header::decode(rest) {
                assert_eq!(Header::decode(&h.encode()), Ok(h));
            }
        }
        1 => {
            if let Some(e) = RawEntry::decode(rest) {
                let mut b = [0u8; 28];
                e.encode(&mut b);
                assert_eq!(RawEntry::decode(&b), Some(e));
            }
        }
        2 | 3 => {
            let mut bytes = rest.to_vec();
            if mode % 5 == 3 {
                let crc = crc32c(&bytes);
                bytes.extend_from_slice(&crc.to_le_bytes());
            }
            if let Ok(c) = KeyCheckpoint::decode(&bytes) {
                assert_eq!(KeyCheckpoint::decode(&c.encode()), Ok(c));
            }
        }
        _ => {
            let geometry = Geometry { slot_count: 7, max_entries: 64 };
            let count = u32::from(rest.first().copied().unwrap_or(0)) % 65;
            let p = LogPosition::ZERO;
            if let Ok(image) = ActiveImage::load(geometry, rest.to_vec(), count, 0, 0, (p, p)) {
                for hash in 0..7 {
                    let walk = Walk { hash, topic_id: 1, from_ms: i64::MIN, to_ms: i64::MAX };
                    let (_, steps) = image.walk(&walk, usize::MAX, usize::MAX);
                    assert!(steps <= count as usize);
                }
            }
        }
    }
});

/// CRC32C (Castagnoli), bitwise: the fuzz crate has no checksum dependency.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}
