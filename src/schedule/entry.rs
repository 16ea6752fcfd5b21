//! The records of the schedule system queues (pure codecs; the bytes come back from disk, so
//! decoders check everything and never panic).
//!
//! Each shard's log holds, under the system topic `%SYS%schedule` (id `0xFFFF_FFFE`):
//! - queue 0, the **schedule queue**: an [`ENTRY_KEY`] record per scheduled batch, its body
//!   `dest_topic_id u32, dest_queue_id u32, deliver_at_ms i64` then the producer's batch,
//!   unchanged (its CRC stays valid); [`ROLLED_KEY`] records, an entry written again
//!   because it was held past `schedule.roll_after_ms`: the schedule offset of the entry it
//!   replaces, then the same entry body (one record, so the copy and the end of the old one
//!   are durable together); and [`DELIVERED_KEY`] records, each listing the schedule offsets
//!   whose batches were appended to their queues just before it.
//! - queue 1, the **timer log**: one 24-byte [`super::wheel::TimerRecord`] per record; a
//!   record's queue offset is its index.
//! - queue 2, **wheel checkpoints**: `indexed_through u64` (schedule offsets below it are in
//!   the wheel), a [`super::wheel::Checkpoint`], then the [`PendingOffsets`] (where the
//!   pending entries are, for the retention pin). Since round 41 the record's key is
//!   [`CHECKPOINT_DONE_KEY`] and the body starts with the done entries whose timers the
//!   wheel still holds ([`DoneSet`]); a [`CHECKPOINT_KEY`] record (before) reads as
//!   [`DoneSet::Unknown`].
//!
//! Little-endian throughout.

use super::pending::PendingOffsets;
use super::wheel::Checkpoint;

/// Key of a schedule entry record.
pub const ENTRY_KEY: &[u8] = b"e";
/// Key of a wheel checkpoint record before round 41: the checkpoint body alone.
pub const CHECKPOINT_KEY: &[u8] = b"c";
/// Key of a wheel checkpoint record: a [`DoneSet`], then the checkpoint body.
pub const CHECKPOINT_DONE_KEY: &[u8] = b"k";
/// Most done entries a checkpoint lists; past it the set is stored as [`DoneSet::Unknown`].
pub const MAX_DONE_IN_CHECKPOINT: usize = 4096;

/// Room in a checkpoint's batch for its header and the record's framing (with room to spare).
const CHECKPOINT_BATCH_OVERHEAD: usize = 256;

/// Bytes of a [`CHECKPOINT_DONE_KEY`] record's body besides its listed offsets, with pending
/// offsets of at most `max_ranges` ranges: about 28 KiB with the default 1,024.
pub fn checkpoint_fixed_bytes(max_ranges: usize) -> usize {
    4 + 8 + Checkpoint::ENCODED_LEN + PendingOffsets::encoded_len(max_ranges)
}

/// Done entries a checkpoint in a batch of at most `batch_bytes` can list (at most
/// [`MAX_DONE_IN_CHECKPOINT`]); more are stored as [`DoneSet::Unknown`].
pub fn done_capacity(batch_bytes: usize, max_ranges: usize) -> usize {
    let fixed = checkpoint_fixed_bytes(max_ranges) + CHECKPOINT_BATCH_OVERHEAD;
    (batch_bytes.saturating_sub(fixed) / 8).min(MAX_DONE_IN_CHECKPOINT)
}

/// Entries that are done (delivered, or replaced by a copy) while the wheel a checkpoint holds
/// still has their timers (a step that failed half-way, or timers restored at a restart that
/// had not come due again): a restart must not deliver them. Every other done entry's record
/// comes after the checkpoint's `indexed_through`, where a restart reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoneSet {
    Listed(Vec<u64>),
    /// Too many to list, or a checkpoint from before round 41: a restart reads done entries'
    /// records from the retention pin (every pending entry's are after it).
    Unknown,
}

/// Body of a [`CHECKPOINT_DONE_KEY`] record: `n u32` (`u32::MAX`: [`DoneSet::Unknown`]),
/// `n × u64`, then the [`encode_checkpoint`] body.
pub fn encode_checkpoint_record(
    done: &DoneSet,
    indexed_through: u64,
    wheel: &Checkpoint,
    pending: &PendingOffsets,
) -> Vec<u8> {
    let mut b = Vec::new();
    match done {
        DoneSet::Listed(offsets) if offsets.len() <= MAX_DONE_IN_CHECKPOINT => {
            b.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
            b.extend(offsets.iter().flat_map(|o| o.to_le_bytes()));
        }
        _ => b.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    b.extend_from_slice(&encode_checkpoint(indexed_through, wheel, pending));
    b
}

/// Decodes a checkpoint record of either key; `None` for another key.
#[allow(clippy::type_complexity)]
pub fn decode_checkpoint_record(
    key: &[u8],
    body: &[u8],
    max_ranges: usize,
) -> Option<Result<(DoneSet, u64, Checkpoint, PendingOffsets), String>> {
    if key == CHECKPOINT_KEY {
        return Some(
            decode_checkpoint(body, max_ranges).map(|(i, c, p)| (DoneSet::Unknown, i, c, p)),
        );
    }
    if key != CHECKPOINT_DONE_KEY {
        return None;
    }
    let decoded = (|| {
        let n = body.get(..4).ok_or("wheel checkpoint record is too short")?;
        let n = u32::from_le_bytes(n.try_into().expect("4 bytes"));
        let (done, rest) = if n == u32::MAX {
            (DoneSet::Unknown, &body[4..])
        } else {
            let n = n as usize;
            if n > MAX_DONE_IN_CHECKPOINT || body.len() < 4 + 8 * n {
                return Err(format!("wheel checkpoint lists {n} done entries"));
            }
            let offsets = body[4..4 + 8 * n]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            (DoneSet::Listed(offsets), &body[4 + 8 * n..])
        };
        let (indexed_through, wheel, pending) = decode_checkpoint(rest, max_ranges)?;
        Ok((done, indexed_through, wheel, pending))
    })();
    Some(decoded)
}

/// Key of a rewritten entry's record: `replaces u64`, then an entry body.
pub const ROLLED_KEY: &[u8] = b"r";
/// Key of a delivered-offsets record.
pub const DELIVERED_KEY: &[u8] = b"d";
/// Bytes of an entry body before the batch.
pub const ENTRY_HEAD_LEN: usize = 16;

/// A scheduled batch as the schedule queue holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub topic_id: u32,
    pub queue_id: u32,
    pub deliver_at_ms: i64,
    /// The producer's batch, as it was sent.
    pub batch: &'a [u8],
}

impl<'a> Entry<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ENTRY_HEAD_LEN + self.batch.len());
        b.extend_from_slice(&self.topic_id.to_le_bytes());
        b.extend_from_slice(&self.queue_id.to_le_bytes());
        b.extend_from_slice(&self.deliver_at_ms.to_le_bytes());
        b.extend_from_slice(self.batch);
        b
    }

    pub fn decode(body: &'a [u8]) -> Result<Entry<'a>, String> {
        if body.len() < ENTRY_HEAD_LEN {
            return Err(format!("schedule entry of {} bytes is too short", body.len()));
        }
        Ok(Entry {
            topic_id: u32::from_le_bytes(body[0..4].try_into().expect("4 bytes")),
            queue_id: u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")),
            deliver_at_ms: i64::from_le_bytes(body[8..16].try_into().expect("8 bytes")),
            batch: &body[ENTRY_HEAD_LEN..],
        })
    }
}

/// Body of a [`ROLLED_KEY`] record: `entry` written again in place of the one at schedule
/// offset `replaces`.
pub fn encode_rolled(replaces: u64, entry: &Entry<'_>) -> Vec<u8> {
    let mut b = replaces.to_le_bytes().to_vec();
    b.extend_from_slice(&entry.encode());
    b
}

/// The entry a schedule-queue record holds, with the offset it replaces if it is a rewritten
/// one; None for records that hold no entry (delivered records).
pub fn decode_entry_record<'a>(
    key: &[u8],
    body: &'a [u8],
) -> Option<Result<(Option<u64>, Entry<'a>), String>> {
    if key == ENTRY_KEY {
        return Some(Entry::decode(body).map(|e| (None, e)));
    }
    if key != ROLLED_KEY {
        return None;
    }
    if body.len() < 8 {
        return Some(Err(format!("rewritten schedule entry of {} bytes is too short", body.len())));
    }
    let replaces = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    Some(Entry::decode(&body[8..]).map(|e| (Some(replaces), e)))
}

/// Body of a delivered-offsets record.
pub fn encode_delivered(offsets: &[u64]) -> Vec<u8> {
    offsets.iter().flat_map(|o| o.to_le_bytes()).collect()
}

pub fn decode_delivered(body: &[u8]) -> Result<Vec<u64>, String> {
    if body.len() % 8 != 0 {
        return Err(format!("delivered record of {} bytes is not whole offsets", body.len()));
    }
    Ok(body.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Body of a wheel checkpoint record.
pub fn encode_checkpoint(
    indexed_through: u64,
    wheel: &Checkpoint,
    pending: &PendingOffsets,
) -> Vec<u8> {
    let mut b = indexed_through.to_le_bytes().to_vec();
    b.extend_from_slice(&wheel.encode());
    b.extend_from_slice(&pending.encode());
    b
}

/// Decodes a wheel checkpoint record; `max_ranges` bounds the pending offsets read back. A
/// checkpoint without pending offsets (written before they existed) is refused: the broker
/// then rebuilds the wheel from the schedule queue, which is slower but exact.
pub fn decode_checkpoint(
    body: &[u8],
    max_ranges: usize,
) -> Result<(u64, Checkpoint, PendingOffsets), String> {
    let wheel_end = 8 + Checkpoint::ENCODED_LEN;
    if body.len() <= wheel_end {
        return Err("wheel checkpoint record is too short (or from a version without pending \
                    offsets)"
            .into());
    }
    let indexed_through = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let wheel = Checkpoint::decode(&body[8..wheel_end]).map_err(|e| e.to_string())?;
    let pending = PendingOffsets::decode(&body[wheel_end..], max_ranges)?;
    if pending.len() != wheel.pending {
        return Err(format!(
            "wheel checkpoint counts {} pending timers but its pending offsets {}",
            wheel.pending,
            pending.len()
        ));
    }
    Ok((indexed_through, wheel, pending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::wheel::Wheel;

    #[test]
    fn records_round_trip_and_bad_bytes_are_refused() {
        let e = Entry { topic_id: 3, queue_id: 9, deliver_at_ms: -5, batch: b"batch" };
        assert_eq!(Entry::decode(&e.encode()), Ok(e));
        assert!(Entry::decode(&[0; 15]).is_err());
        assert_eq!(decode_delivered(&encode_delivered(&[1, u64::MAX])), Ok(vec![1, u64::MAX]));
        assert!(decode_delivered(&[0; 9]).is_err());
        assert_eq!(decode_entry_record(ENTRY_KEY, &e.encode()), Some(Ok((None, e))));
        assert_eq!(
            decode_entry_record(ROLLED_KEY, &encode_rolled(41, &e)),
            Some(Ok((Some(41), e)))
        );
        assert!(decode_entry_record(ROLLED_KEY, &[0; 7]).unwrap().is_err());
        assert!(decode_entry_record(ROLLED_KEY, &[0; 23]).unwrap().is_err());
        assert_eq!(decode_entry_record(DELIVERED_KEY, &encode_delivered(&[1])), None);
        let cp = Wheel::new(10, 12345).unwrap().checkpoint();
        let none = PendingOffsets::new(8);
        assert_eq!(
            decode_checkpoint(&encode_checkpoint(77, &cp, &none), 8),
            Ok((77, cp.clone(), none.clone()))
        );
        assert!(decode_checkpoint(&[1; 20], 8).is_err());
        // The format before pending offsets is refused (the wheel is rebuilt instead).
        let mut old = 77u64.to_le_bytes().to_vec();
        old.extend_from_slice(&cp.encode());
        assert!(decode_checkpoint(&old, 8).is_err());
        // Checkpoint records: with their done entries, too many of them, or from before.
        let listed = DoneSet::Listed(vec![3, 9]);
        let body = encode_checkpoint_record(&listed, 77, &cp, &none);
        assert_eq!(
            decode_checkpoint_record(CHECKPOINT_DONE_KEY, &body, 8),
            Some(Ok((listed, 77, cp.clone(), none.clone())))
        );
        let many = DoneSet::Listed((0..MAX_DONE_IN_CHECKPOINT as u64 + 1).collect());
        let body = encode_checkpoint_record(&many, 77, &cp, &none);
        assert_eq!(
            decode_checkpoint_record(CHECKPOINT_DONE_KEY, &body, 8),
            Some(Ok((DoneSet::Unknown, 77, cp.clone(), none.clone())))
        );
        let old = encode_checkpoint(77, &cp, &none);
        assert_eq!(
            decode_checkpoint_record(CHECKPOINT_KEY, &old, 8),
            Some(Ok((DoneSet::Unknown, 77, cp.clone(), none.clone())))
        );
        assert_eq!(decode_checkpoint_record(ENTRY_KEY, &old, 8), None);
        for bad in [&[1u8, 0, 0][..], &[2, 0, 0, 0, 1, 2, 3], &[0xFF, 0xFF, 0xFF, 0x7F]] {
            assert!(decode_checkpoint_record(CHECKPOINT_DONE_KEY, bad, 8).unwrap().is_err());
        }
        // Pending offsets that disagree with the wheel's count are refused.
        let mut one = PendingOffsets::new(8);
        one.insert(5);
        assert!(decode_checkpoint(&encode_checkpoint(77, &cp, &one), 8).is_err());
    }
}
