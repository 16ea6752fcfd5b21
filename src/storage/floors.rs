//! The queue floors file (`queues.floor`): each queue's first offset after retention, so
//! offsets never go back after a restart, even for a queue whose every batch was deleted.
//!
//! Pure codec, no I/O. Retention writes the file atomically (see
//! [`crate::storage::commit_log`]) before it unlinks any segment; recovery reads it first.
//! The bytes come from disk, so [`decode_floors`] checks everything and never panics (fuzzed
//! by `fuzz/fuzz_targets/floors_decode.rs`).
//!
//! Format, little-endian: `count: u32`, then `count` times `topic_id: u32, queue_id: u32,
//! floor: u64`, then the CRC32C of everything before it as `u32`.

use std::collections::HashMap;

use super::types::{QueueId, QueueKey, QueueOffset, TopicId};

/// The floors file's name in the log directory.
pub const FLOOR_FILE: &str = "queues.floor";

/// Encodes each queue's floor (its first offset) into the file's bytes.
pub fn encode_floors(floors: &[(QueueKey, QueueOffset)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + floors.len() * 16);
    b.extend_from_slice(&(floors.len() as u32).to_le_bytes());
    for (q, floor) in floors {
        b.extend_from_slice(&q.topic_id.get().to_le_bytes());
        b.extend_from_slice(&q.queue_id.get().to_le_bytes());
        b.extend_from_slice(&floor.get().to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the file's bytes; Err says why they are not a valid floors file.
pub fn decode_floors(b: &[u8]) -> std::result::Result<HashMap<QueueKey, QueueOffset>, String> {
    if b.len() < 8 {
        return Err("queue floor file too short".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
        return Err("queue floor file checksum mismatch".into());
    }
    let n = u32::from_le_bytes(body[..4].try_into().expect("4")) as usize;
    if body.len() != 4 + n * 16 {
        return Err("queue floor file length mismatch".into());
    }
    let mut out = HashMap::with_capacity(n);
    for i in 0..n {
        let at = 4 + i * 16;
        let t = u32::from_le_bytes(body[at..at + 4].try_into().expect("4"));
        let q = u32::from_le_bytes(body[at + 4..at + 8].try_into().expect("4"));
        let f = u64::from_le_bytes(body[at + 8..at + 16].try_into().expect("8"));
        out.insert(QueueKey::new(TopicId::new(t), QueueId::new(q)), QueueOffset::new(f));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let floors = vec![
            (QueueKey::new(TopicId::new(1), QueueId::new(0)), QueueOffset::ZERO),
            (QueueKey::new(TopicId::new(7), QueueId::new(3)), QueueOffset::new(u64::MAX)),
        ];
        let decoded = decode_floors(&encode_floors(&floors)).expect("valid");
        assert_eq!(decoded, floors.into_iter().collect::<HashMap<_, _>>());
        assert_eq!(decode_floors(&encode_floors(&[])).expect("empty is valid"), HashMap::new());
    }

    #[test]
    fn rejects_damaged_files() {
        let good = encode_floors(&[(
            QueueKey::new(TopicId::new(1), QueueId::new(2)),
            QueueOffset::new(42),
        )]);
        for len in 0..good.len() {
            assert!(decode_floors(&good[..len]).is_err(), "truncated to {len} bytes");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(decode_floors(&bad).is_err(), "bit flipped in byte {at}");
        }
    }

    #[test]
    fn a_count_that_disagrees_with_the_length_is_an_error_not_a_panic() {
        // A huge count with a valid checksum: must be refused before any allocation.
        let mut body = u32::MAX.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_floors(&body), Err("queue floor file length mismatch".to_string()));
    }
}
