//! The queue floors file (`queues.floor`): each queue's first offset after retention, so
//! offsets never go back after a restart, even for a queue whose every batch was deleted; and
//! the log's start, the first position retention kept.
//!
//! Pure codec, no I/O. Retention writes the file atomically (see
//! [`crate::storage::commit_log`]) twice a run: before it unlinks any segment, with the new
//! log start, the queue floors as they were (`index_dropped` false) and each queue's next
//! offset counting its durable batches (`nexts`); and once it dropped the queue index's
//! entries below that start, with the new floors (`index_dropped` true, no `nexts`).
//! Recovery reads it first: it deletes segments below the start that are still there and, if
//! the drop did not complete, drops those entries itself. If it must also rebuild the index
//! from the log (an unusable checkpoint), a queue with no batch left starts at its recorded
//! next offset: its batches were all in the deleted segments. The bytes come from disk, so
//! [`decode_floors`] checks everything and never panics (fuzzed by
//! `fuzz/fuzz_targets/floors_decode.rs`).
//!
//! Format, little-endian: `count: u32`, then `count` times `topic_id: u32, queue_id: u32,
//! floor: u64`, then `log_start: u64, index_dropped: u8` (0 or 1), then `next_count: u32` and
//! `next_count` times `topic_id: u32, queue_id: u32, next: u64`, then the CRC32C of
//! everything before it as `u32`. A file without the `next_count` part (written before it existed) reads as
//! no recorded next offsets; one without `log_start` and `index_dropped` either (written
//! before they existed) as log start 0, index dropped. The three lengths differ modulo 16.

use std::collections::HashMap;

use crate::format::crc::crc32c;

use super::types::{LogPosition, QueueId, QueueKey, QueueOffset, TopicId};

/// The floors file's name in the log directory.
pub const FLOOR_FILE: &str = "queues.floor";

/// What the floors file records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Floors {
    /// Each queue's first offset (a queue may have no batch left from it).
    pub queues: HashMap<QueueKey, QueueOffset>,
    /// The first log position retention kept: every segment below it is out of the log.
    pub log_start: LogPosition,
    /// Whether the queue index's entries below `log_start` were dropped and `queues` counts
    /// that drop; false between a run's unlinking of segments and the end of its drop.
    pub index_dropped: bool,
    /// Each queue's next offset counting its durable batches when `log_start` was recorded
    /// (empty once the drop is recorded, and in files written before they were recorded).
    pub nexts: HashMap<QueueKey, QueueOffset>,
}

impl Default for Floors {
    /// No file: no floors, nothing deleted, nothing to drop.
    fn default() -> Self {
        Floors {
            queues: HashMap::new(),
            log_start: LogPosition::ZERO,
            index_dropped: true,
            nexts: HashMap::new(),
        }
    }
}

/// Encodes each queue's floor (its first offset), the log's start, whether the index's
/// entries below it are dropped, and each queue's durable next offset (`nexts`, for a file
/// with `index_dropped` false) into the file's bytes.
pub fn encode_floors(
    floors: &[(QueueKey, QueueOffset)],
    log_start: LogPosition,
    index_dropped: bool,
    nexts: &[(QueueKey, QueueOffset)],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + floors.len() * 16 + TRAILER_LEN + 4 + nexts.len() * 16 + 4);
    b.extend_from_slice(&(floors.len() as u32).to_le_bytes());
    put_queues(&mut b, floors);
    b.extend_from_slice(&log_start.get().to_le_bytes());
    b.push(u8::from(index_dropped));
    b.extend_from_slice(&(nexts.len() as u32).to_le_bytes());
    put_queues(&mut b, nexts);
    let crc = crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn put_queues(b: &mut Vec<u8>, queues: &[(QueueKey, QueueOffset)]) {
    for (q, offset) in queues {
        b.extend_from_slice(&q.topic_id.get().to_le_bytes());
        b.extend_from_slice(&q.queue_id.get().to_le_bytes());
        b.extend_from_slice(&offset.get().to_le_bytes());
    }
}

/// `count` (topic, queue, offset) entries of 16 bytes from `b` (whose length the caller
/// checked).
fn get_queues(b: &[u8], count: usize) -> HashMap<QueueKey, QueueOffset> {
    let mut queues = HashMap::with_capacity(count);
    for e in b.chunks_exact(16).take(count) {
        let t = u32::from_le_bytes(e[0..4].try_into().expect("4"));
        let q = u32::from_le_bytes(e[4..8].try_into().expect("4"));
        let f = u64::from_le_bytes(e[8..16].try_into().expect("8"));
        queues.insert(QueueKey::new(TopicId::new(t), QueueId::new(q)), QueueOffset::new(f));
    }
    queues
}

/// `log_start: u64, index_dropped: u8`.
const TRAILER_LEN: usize = 9;

/// Decodes the file's bytes; Err says why they are not a valid floors file.
pub fn decode_floors(b: &[u8]) -> std::result::Result<Floors, String> {
    if b.len() < 8 {
        return Err("queue floor file too short".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
        return Err("queue floor file checksum mismatch".into());
    }
    let n = u32::from_le_bytes(body[..4].try_into().expect("4")) as usize;
    let mismatch = || "queue floor file length mismatch".to_string();
    // Checked arithmetic: `n` comes from disk (a huge count must not overflow on 32 bits).
    let end = n.checked_mul(16).and_then(|l| l.checked_add(4)).ok_or_else(mismatch)?;
    let rest = body.len().checked_sub(end).ok_or_else(mismatch)?;
    // Written before the log start was recorded.
    if rest == 0 {
        return Ok(Floors { queues: get_queues(&body[4..], n), ..Floors::default() });
    }
    if rest < TRAILER_LEN {
        return Err(mismatch());
    }
    let log_start = u64::from_le_bytes(body[end..end + 8].try_into().expect("8"));
    let index_dropped = match body[end + 8] {
        0 => false,
        1 => true,
        other => return Err(format!("queue floor file: index_dropped is {other}")),
    };
    let nexts_at = end + TRAILER_LEN;
    let nexts = match rest - TRAILER_LEN {
        // Written before the next offsets were recorded.
        0 => HashMap::new(),
        more if more >= 4 => {
            let m = u32::from_le_bytes(body[nexts_at..nexts_at + 4].try_into().expect("4"));
            if (m as usize).checked_mul(16) != Some(more - 4) {
                return Err(mismatch());
            }
            get_queues(&body[nexts_at + 4..], m as usize)
        }
        _ => return Err(mismatch()),
    };
    Ok(Floors {
        queues: get_queues(&body[4..], n),
        log_start: LogPosition::new(log_start),
        index_dropped,
        nexts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floors_of(entries: &[(QueueKey, QueueOffset)], start: u64, dropped: bool) -> Floors {
        Floors {
            queues: entries.iter().copied().collect(),
            log_start: LogPosition::new(start),
            index_dropped: dropped,
            nexts: HashMap::new(),
        }
    }

    #[test]
    fn round_trips() {
        let floors = vec![
            (QueueKey::new(TopicId::new(1), QueueId::new(0)), QueueOffset::ZERO),
            (QueueKey::new(TopicId::new(7), QueueId::new(3)), QueueOffset::new(u64::MAX)),
        ];
        for (start, dropped) in [(0, true), (4096, false), (u64::MAX, true)] {
            let decoded =
                decode_floors(&encode_floors(&floors, LogPosition::new(start), dropped, &[]))
                    .unwrap();
            assert_eq!(decoded, floors_of(&floors, start, dropped));
        }
        let empty = decode_floors(&encode_floors(&[], LogPosition::ZERO, false, &[])).unwrap();
        assert_eq!(empty, floors_of(&[], 0, false));
        let nexts = [(QueueKey::new(TopicId::new(2), QueueId::new(5)), QueueOffset::new(77))];
        let with_nexts =
            decode_floors(&encode_floors(&floors, LogPosition::new(8192), false, &nexts)).unwrap();
        assert_eq!(
            with_nexts,
            Floors { nexts: nexts.iter().copied().collect(), ..floors_of(&floors, 8192, false) }
        );
    }

    /// A file as written before this format's later fields: queue (1, 2) at floor 42, then
    /// `trailer` (a log start and `index_dropped`, as before the next offsets) if given.
    fn older_file(trailer: Option<(u64, u8)>) -> Vec<u8> {
        let mut old = 1u32.to_le_bytes().to_vec();
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(&42u64.to_le_bytes());
        if let Some((start, dropped)) = trailer {
            old.extend_from_slice(&start.to_le_bytes());
            old.push(dropped);
        }
        let crc = crc32c(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        old
    }

    #[test]
    fn a_file_from_before_the_log_start_reads_as_start_zero_dropped() {
        let q = QueueKey::new(TopicId::new(1), QueueId::new(2));
        assert_eq!(
            decode_floors(&older_file(None)).unwrap(),
            floors_of(&[(q, QueueOffset::new(42))], 0, true)
        );
    }

    #[test]
    fn a_file_from_before_the_next_offsets_reads_without_them() {
        let q = QueueKey::new(TopicId::new(1), QueueId::new(2));
        assert_eq!(
            decode_floors(&older_file(Some((4096, 0)))).unwrap(),
            floors_of(&[(q, QueueOffset::new(42))], 4096, false)
        );
    }

    #[test]
    fn rejects_damaged_files() {
        let q = QueueKey::new(TopicId::new(1), QueueId::new(2));
        let good = encode_floors(
            &[(q, QueueOffset::new(42))],
            LogPosition::new(1 << 30),
            false,
            &[(q, QueueOffset::new(50))],
        );
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
    fn an_index_dropped_flag_other_than_0_or_1_is_an_error() {
        let mut body = encode_floors(&[], LogPosition::ZERO, true, &[]);
        body.truncate(body.len() - 8);
        *body.last_mut().unwrap() = 2;
        body.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_floors(&body), Err("queue floor file: index_dropped is 2".to_string()));
    }

    #[test]
    fn a_count_that_disagrees_with_the_length_is_an_error_not_a_panic() {
        // A huge count with a valid checksum: must be refused before any allocation.
        let mut body = u32::MAX.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        let crc = crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_floors(&body), Err("queue floor file length mismatch".to_string()));
    }
}
