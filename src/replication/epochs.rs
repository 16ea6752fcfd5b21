//! A shard's epoch history and where two logs diverge (Kafka KIP-101 / KIP-320 rules).
//!
//! Each master term has an epoch number. Every batch a master appends carries its epoch, and
//! each shard keeps, in an fsynced file next to its log (`epochs`), the list of
//! `<epoch, start position>`: from `start` on, batches were written by the master of `epoch`.
//! Epochs strictly increase along the list and starts never decrease.
//!
//! Why positions and epochs rather than "the replica's end": RocketMQ's controller mode lost
//! acknowledged messages when a replica that rejoined kept a tail the new master never had,
//! and Kafka before KIP-101 truncated followers to their high watermark and lost data the
//! other way. The rule used here is KIP-101/320's: two logs agree at a position exactly when
//! the same epoch wrote it there (one master per epoch, append-only within its term, and
//! replicas copy its bytes unchanged), so the point where they diverge is the end of the
//! longest prefix over which their epoch labels agree ([`divergence`]). A replica that joins
//! or rejoins physically truncates its log to that point (and its history with
//! [`EpochHistory::truncate_to`]) before it follows.
//!
//! Pure: no I/O. The file's bytes are made and checked by [`EpochHistory::encode`] /
//! [`EpochHistory::decode`]; `decode` reads bytes from disk or a peer, so it checks
//! everything and never panics.

/// The most entries a history keeps. Each failover adds one, so this is far above what a
/// shard sees; a peer that sends more is refused rather than trusted with memory.
pub const MAX_EPOCH_ENTRIES: usize = 65_536;

/// One entry: from log position `start` on, batches were written by the master of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    pub start: u64,
}

/// Why an epoch history or an update to it is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    #[error("epoch {epoch} at {start} does not follow epoch {last} at {last_start}: epochs must increase and starts must not decrease")]
    NotIncreasing { epoch: u32, start: u64, last: u32, last_start: u64 },
    #[error("epoch history has {0} entries, more than {MAX_EPOCH_ENTRIES}")]
    TooLong(usize),
    #[error("epoch file is malformed: {0}")]
    Malformed(&'static str),
    #[error("no epoch follows epoch {0}: the epoch file or a master named the last one")]
    Exhausted(u32),
}

/// The epoch a new master begins above `newest`, the newest epoch it has seen.
pub fn next_epoch(newest: u32) -> Result<u32, EpochError> {
    newest.checked_add(1).ok_or(EpochError::Exhausted(newest))
}

/// The epoch history of one shard's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochEntry>,
}

const FILE_MAGIC: u32 = 0x5245_5048; // "REPH"

impl EpochHistory {
    /// An empty history: a log written before any master epoch (positions carry no label).
    pub fn new() -> Self {
        EpochHistory::default()
    }

    /// Checks and adopts `entries` (e.g. a peer's list).
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<Self, EpochError> {
        if entries.len() > MAX_EPOCH_ENTRIES {
            return Err(EpochError::TooLong(entries.len()));
        }
        let mut h = EpochHistory { entries: Vec::with_capacity(entries.len()) };
        for e in entries {
            h.begin(e.epoch, e.start)?;
        }
        Ok(h)
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry, if any.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that the master of `epoch` writes from `start` on. An epoch that starts where
    /// the previous one started replaces it (the previous term wrote nothing that remains).
    pub fn begin(&mut self, epoch: u32, start: u64) -> Result<(), EpochError> {
        if let Some(last) = self.latest() {
            if epoch <= last.epoch || start < last.start {
                return Err(EpochError::NotIncreasing {
                    epoch,
                    start,
                    last: last.epoch,
                    last_start: last.start,
                });
            }
            if start == last.start {
                self.entries.pop();
            }
        }
        if self.entries.len() >= MAX_EPOCH_ENTRIES {
            return Err(EpochError::TooLong(self.entries.len() + 1));
        }
        self.entries.push(EpochEntry { epoch, start });
        Ok(())
    }

    /// The epoch that wrote position `pos` (`None` before the first entry).
    pub fn epoch_at(&self, pos: u64) -> Option<u32> {
        let i = self.entries.partition_point(|e| e.start <= pos);
        i.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// The first position after `pos` where a new epoch starts, if any.
    fn next_start_after(&self, pos: u64) -> Option<u64> {
        let i = self.entries.partition_point(|e| e.start <= pos);
        self.entries.get(i).map(|e| e.start)
    }

    /// After the log is truncated to `end`: drops the epochs that start at or past it (they
    /// no longer wrote anything that remains).
    pub fn truncate_to(&mut self, end: u64) {
        let keep = self.entries.partition_point(|e| e.start < end);
        self.entries.truncate(keep);
    }

    /// The file's bytes: `magic u32 | count u32 | count × (epoch u32, start u64) | crc32c u32`,
    /// little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(12 + self.entries.len() * 12);
        b.extend_from_slice(&FILE_MAGIC.to_le_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            b.extend_from_slice(&e.epoch.to_le_bytes());
            b.extend_from_slice(&e.start.to_le_bytes());
        }
        let crc = crate::format::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads bytes written by [`EpochHistory::encode`]; anything else is an error, never a panic.
    pub fn decode(b: &[u8]) -> Result<Self, EpochError> {
        if b.len() < 12 {
            return Err(EpochError::Malformed("shorter than its fixed fields"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crate::format::crc::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes"))
        {
            return Err(EpochError::Malformed("checksum mismatch"));
        }
        if u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) != FILE_MAGIC {
            return Err(EpochError::Malformed("bad magic"));
        }
        let count = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")) as usize;
        if count > MAX_EPOCH_ENTRIES {
            return Err(EpochError::TooLong(count));
        }
        if body.len() != 8 + count * 12 {
            return Err(EpochError::Malformed("length does not match the entry count"));
        }
        let entries = body[8..]
            .chunks_exact(12)
            .map(|c| EpochEntry {
                epoch: u32::from_le_bytes(c[..4].try_into().expect("4 bytes")),
                start: u64::from_le_bytes(c[4..].try_into().expect("8 bytes")),
            })
            .collect();
        EpochHistory::from_entries(entries)
    }
}

/// The position where a follower's log (history `follower`, `follower_end` bytes) stops
/// agreeing with the leader's (`leader`, `leader_end` bytes): the follower keeps `[0, point)`
/// and truncates the rest. Never above either log's end.
pub fn divergence(
    leader: &EpochHistory,
    leader_end: u64,
    follower: &EpochHistory,
    follower_end: u64,
) -> u64 {
    let end = leader_end.min(follower_end);
    let mut pos = 0u64;
    while pos < end {
        if leader.epoch_at(pos) != follower.epoch_at(pos) {
            return pos;
        }
        // Labels are constant until either history starts a new epoch.
        let next = [leader.next_start_after(pos), follower.next_start_after(pos)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        pos = next.min(end);
    }
    end
}

/// Why a leader must not lead a follower with history `follower`, if it must not: the
/// follower holds an epoch newer than the leader's newest (another master began it after
/// this one: this leader is stale), or an epoch number the leader also has but from a
/// different position (two masters picked the same number, so equal labels would not mean
/// equal data). Epochs are only begun by a master and copied whole, so neither happens
/// between a master and its own followers.
pub fn conflict(leader: &EpochHistory, follower: &EpochHistory) -> Option<String> {
    let newest = leader.latest().map_or(0, |e| e.epoch);
    for f in follower.entries() {
        if f.epoch > newest {
            return Some(format!(
                "the replica's epoch file names epoch {} (from position {}), newer than this \
                 master's newest epoch {newest}: another broker became master after this one",
                f.epoch, f.start
            ));
        }
        if let Some(l) = leader.entries().iter().find(|l| l.epoch == f.epoch) {
            if l.start != f.start {
                return Some(format!(
                    "epoch {} began at position {} on this master but at {} in the replica's \
                     epoch file: two masters picked the same epoch number",
                    f.epoch, l.start, f.start
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_next_epoch_is_one_above_and_the_last_one_has_none() {
        assert_eq!(next_epoch(0), Ok(1));
        assert_eq!(next_epoch(41), Ok(42));
        assert_eq!(next_epoch(u32::MAX), Err(EpochError::Exhausted(u32::MAX)));
    }

    fn h(entries: &[(u32, u64)]) -> EpochHistory {
        EpochHistory::from_entries(
            entries.iter().map(|&(epoch, start)| EpochEntry { epoch, start }).collect(),
        )
        .unwrap()
    }

    /// The model: each position's epoch label, one by one.
    fn labels(hist: &EpochHistory, end: u64) -> Vec<Option<u32>> {
        (0..end)
            .map(|p| hist.entries().iter().rev().find(|e| e.start <= p).map(|e| e.epoch))
            .collect()
    }

    fn brute_divergence(l: &EpochHistory, le: u64, f: &EpochHistory, fe: u64) -> u64 {
        let (a, b) = (labels(l, le), labels(f, fe));
        a.iter().zip(&b).take_while(|(x, y)| x == y).count() as u64
    }

    #[test]
    fn a_stale_master_or_a_reused_epoch_number_is_a_conflict() {
        let master = h(&[(1, 0), (2, 100), (3, 150)]);
        // Its own followers, at any point of its history: no conflict.
        for f in [h(&[]), h(&[(1, 0)]), h(&[(1, 0), (2, 100)]), master.clone()] {
            assert_eq!(conflict(&master, &f), None);
        }
        // A follower of a master promoted after this one (epoch 4).
        let newer = h(&[(1, 0), (2, 100), (4, 120)]);
        assert!(conflict(&master, &newer).unwrap().contains("newer than this master"));
        // Two masters began epoch 3, at different positions.
        let reused = h(&[(1, 0), (2, 100), (3, 170)]);
        assert!(conflict(&master, &reused).unwrap().contains("same epoch number"));
    }

    #[test]
    fn a_replica_with_a_tail_of_a_deposed_master_truncates_to_where_the_new_epoch_began() {
        // Epoch 1 wrote [0, 100); the old master (epoch 2) wrote to 180 but only 150 reached
        // the new master, which started epoch 3 at 150.
        let leader = h(&[(1, 0), (2, 100), (3, 150)]);
        let old = h(&[(1, 0), (2, 100)]);
        assert_eq!(divergence(&leader, 400, &old, 180), 150);
        // A replica that only had [0, 120) keeps all of it.
        assert_eq!(divergence(&leader, 400, &old, 120), 120);
        // One that never saw epoch 2 but wrote its own epoch-2-less tail keeps epoch 1.
        let other = h(&[(1, 0), (4, 100)]);
        assert_eq!(divergence(&leader, 400, &other, 300), 100);
    }

    #[test]
    fn histories_are_checked() {
        let mut x = h(&[(1, 0), (3, 10)]);
        assert!(matches!(x.begin(3, 20), Err(EpochError::NotIncreasing { .. })));
        assert!(matches!(x.begin(4, 5), Err(EpochError::NotIncreasing { .. })));
        x.begin(4, 10).unwrap();
        assert_eq!(
            x.entries(),
            &[EpochEntry { epoch: 1, start: 0 }, EpochEntry { epoch: 4, start: 10 }]
        );
        assert_eq!(x.epoch_at(9), Some(1));
        assert_eq!(x.epoch_at(10), Some(4));
        x.truncate_to(10);
        assert_eq!(x.latest(), Some(EpochEntry { epoch: 1, start: 0 }));
        assert_eq!(h(&[(2, 5)]).epoch_at(4), None);
    }

    #[test]
    fn the_file_round_trips_and_damage_is_an_error() {
        let x = h(&[(1, 0), (2, 4096), (7, 1 << 40)]);
        let bytes = x.encode();
        assert_eq!(EpochHistory::decode(&bytes).unwrap(), x);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(EpochHistory::decode(&bad).is_err(), "flip at {i}");
        }
        for n in 0..bytes.len() {
            assert!(EpochHistory::decode(&bytes[..n]).is_err());
        }
    }

    fn history() -> impl Strategy<Value = EpochHistory> {
        // Few epochs and small positions, so that histories share prefixes often.
        proptest::collection::vec((1u32..4, 0u64..12), 0..6).prop_map(|steps| {
            let mut hist = EpochHistory::new();
            let (mut epoch, mut start) = (0u32, 0u64);
            for (de, ds) in steps {
                epoch += de;
                start += ds;
                hist.begin(epoch, start).unwrap();
            }
            hist
        })
    }

    proptest! {
        #[test]
        fn divergence_matches_the_position_by_position_model(
            l in history(), le in 0u64..60, f in history(), fe in 0u64..60,
        ) {
            prop_assert_eq!(divergence(&l, le, &f, fe), brute_divergence(&l, le, &f, fe));
        }

        #[test]
        fn a_follower_derived_from_the_leader_diverges_where_it_was_cut(
            l in history(), le in 0u64..60, cut in 0u64..60, extra in 1u32..3,
            tail in 0u64..20,
        ) {
            // The follower copied the leader up to `cut`, then a deposed master of a newer,
            // unknown-to-the-leader epoch wrote a tail: everything up to `cut` is kept.
            let cut = cut.min(le);
            let mut f = l.clone();
            f.truncate_to(cut);
            let epoch = l.latest().map_or(0, |e| e.epoch) + extra;
            f.begin(epoch, cut).unwrap();
            prop_assert_eq!(divergence(&l, le, &f, cut + tail), cut);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = EpochHistory::decode(&bytes);
        }
    }
}
