//! What an idempotent producer's `producer_id` and `base_sequence` mean (batch header fields,
//! docs/format.md section 1.1), shared by the broker's sequence windows and the client's
//! sequencer so both sides agree on the arithmetic.
//!
//! A producer id is a non-negative `i64` in three parts:
//!
//! ```text
//! bit 62 ........ 40 | 39 ........... 16 | 15 ...... 0
//!   boot (23 bits)   | producer (24 bits) | epoch (16)
//! ```
//!
//! The broker hands out ids with epoch 0 (INIT_PRODUCER): `boot` is the broker's start count,
//! persisted in the data directory and advanced at every start, so ids are unique across
//! restarts; `producer` is a per-start counter (spread over shards). The client owns the
//! epoch: when it must renumber a queue's unacknowledged batches (the broker lost the queue's
//! sequence state, or a batch failed and left a gap) it moves that queue to the next epoch and
//! starts again at sequence 0. The broker keys its windows by the id without the epoch and
//! refuses batches of an older epoch than it has seen (they are fenced).
//!
//! Sequences count records: a batch with `base_sequence = s` and `n` records covers
//! `s .. s + n`, and the next batch of the same producer, queue and epoch starts at
//! [`next_sequence`]`(s, n)`. They wrap from `i32::MAX` to 0.

/// Batches this build's broker remembers per (producer, queue), so a retry of any of them is
/// answered with its original offsets. A producer keeps at most its broker's window in flight
/// per queue and learns it from INIT_PRODUCER_WINDOW. 16 batches of a queue with 16 queues
/// fill a connection's 256 requests in flight: with sync flush, where each reply waits for
/// the fdatasync covering its batch, the unanswered bytes set the rate (BENCHMARKS.md,
/// round 45), and 5 held a producer of 64 KiB batches to 5 MiB unanswered over 16 queues.
pub const WINDOW_BATCHES: usize = 16;

/// The window of brokers before round 45, which answer INIT_PRODUCER_WINDOW with
/// UNSUPPORTED_API: a producer keeps at most this many batches of a queue in flight there.
pub const LEGACY_WINDOW_BATCHES: usize = 5;

/// Bits of the epoch, the low part of a producer id.
pub const EPOCH_BITS: u32 = 16;
/// Largest epoch.
pub const MAX_EPOCH: u16 = u16::MAX;
/// Bits of the per-start producer number.
pub const PRODUCER_BITS: u32 = 24;
/// Bits of the broker start count.
pub const BOOT_BITS: u32 = 63 - PRODUCER_BITS - EPOCH_BITS;

/// The id without its epoch: what the broker keys sequence windows by.
pub fn base_id(producer_id: i64) -> i64 {
    producer_id >> EPOCH_BITS
}

pub fn epoch(producer_id: i64) -> u16 {
    (producer_id & i64::from(MAX_EPOCH)) as u16
}

/// The broker start count (boot) an id was made in.
pub fn boot(producer_id: i64) -> u64 {
    (producer_id as u64) >> (PRODUCER_BITS + EPOCH_BITS)
}

/// `producer_id` with its epoch replaced.
pub fn with_epoch(producer_id: i64, epoch: u16) -> i64 {
    (base_id(producer_id) << EPOCH_BITS) | i64::from(epoch)
}

/// The id the broker hands out for start `boot`, producer number `producer`; `None` when
/// either is out of its range.
pub fn compose(boot: u64, producer: u64) -> Option<i64> {
    if boot >= 1 << BOOT_BITS || producer >= 1 << PRODUCER_BITS {
        return None;
    }
    Some((((boot << PRODUCER_BITS) | producer) << EPOCH_BITS) as i64)
}

/// The sequence after a batch of `record_count` records starting at `base_sequence`, wrapping
/// past `i32::MAX` to 0.
pub fn next_sequence(base_sequence: i32, record_count: u32) -> i32 {
    let span = 1i64 << 31;
    ((i64::from(base_sequence) + i64::from(record_count)) % span) as i32
}

/// How far `sequence` lies ahead of `from` on the wrapping sequence circle, in
/// `0 .. 2^31`.
pub fn distance(from: i32, sequence: i32) -> u32 {
    let span = 1i64 << 31;
    (i64::from(sequence) - i64::from(from)).rem_euclid(span) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_into_boot_producer_and_epoch() {
        let id = compose(5, 7).unwrap();
        assert!(id > 0);
        assert_eq!(epoch(id), 0);
        assert_eq!(base_id(id), (5 << PRODUCER_BITS) | 7);
        let e = with_epoch(id, 9);
        assert_eq!((epoch(e), base_id(e)), (9, base_id(id)));
        let top = compose((1 << BOOT_BITS) - 1, (1 << PRODUCER_BITS) - 1).unwrap();
        assert!(with_epoch(top, MAX_EPOCH) > 0, "the largest id is still non-negative");
        assert_eq!(compose(1 << BOOT_BITS, 0), None);
        assert_eq!(compose(0, 1 << PRODUCER_BITS), None);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(distance(i32::MAX, 1), 2);
        assert_eq!(distance(5, 5), 0);
        assert_eq!(distance(6, 5), (1 << 31) - 1);
    }
}
