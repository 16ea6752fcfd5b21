//! Where in the schedule queue the pending (not yet delivered) messages are, coarsely: a count
//! of pending entries per range of schedule-queue offsets. The broker pins retention from the
//! start of the oldest non-empty range, so a held message outlives any retention setting
//! (time or disk usage) until it is delivered.
//!
//! Pure and bounded: at most `max_ranges` ranges, whatever the number of pending messages.
//! When a new range would pass that bound, every range doubles in width (neighbours merge).
//! Each range also keeps the lowest offset counted in it since it was made, so the oldest
//! offset reported is the oldest pending entry itself until that entry goes while others of
//! its range stay (then it is a lower bound, within the range), not the start of a range that
//! may lie far back: a schedule queue holding few messages (all in its first range of 1,024
//! offsets) is pinned from its oldest pending one, not from the first message it ever held.
//! Entries arrive in offset order (the schedule queue is indexed in order), so a new range is
//! appended at the end; an entry below the last range is still counted correctly.

use std::collections::VecDeque;

/// Default bound on ranges: 24 KiB in a checkpoint at most.
pub const DEFAULT_MAX_RANGES: usize = 1024;
/// Ranges start 1024 offsets wide.
const INITIAL_SHIFT: u32 = 10;

/// The flag in an encoding's `shift` word saying each range carries its lowest offset.
const WITH_LOWEST: u32 = 1 << 31;

/// Counts of pending schedule entries per range of `1 << shift` offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOffsets {
    shift: u32,
    max_ranges: usize,
    /// `(offset >> shift, count, lowest offset counted)`, ranges ascending, counts positive.
    ranges: VecDeque<(u64, u64, u64)>,
}

impl PendingOffsets {
    pub fn new(max_ranges: usize) -> Self {
        PendingOffsets {
            shift: INITIAL_SHIFT,
            max_ranges: max_ranges.max(2),
            ranges: VecDeque::new(),
        }
    }

    /// Counts a pending entry at `offset`.
    pub fn insert(&mut self, offset: u64) {
        let r = offset >> self.shift;
        match self.ranges.back_mut() {
            Some((last, count, lowest)) if *last == r => {
                *count += 1;
                *lowest = (*lowest).min(offset);
            }
            Some((last, _, _)) if *last > r => {
                match self.ranges.binary_search_by_key(&r, |e| e.0) {
                    Ok(i) => {
                        self.ranges[i].1 += 1;
                        self.ranges[i].2 = self.ranges[i].2.min(offset);
                    }
                    Err(i) => self.ranges.insert(i, (r, 1, offset)),
                }
            }
            _ => self.ranges.push_back((r, 1, offset)),
        }
        while self.ranges.len() > self.max_ranges {
            self.widen();
        }
    }

    /// Uncounts the entry at `offset` (delivered or dropped). False if no pending entry was
    /// counted in its range (a caller's bookkeeping error; nothing changes).
    pub fn remove(&mut self, offset: u64) -> bool {
        let r = offset >> self.shift;
        match self.ranges.binary_search_by_key(&r, |e| e.0) {
            Ok(i) => {
                self.ranges[i].1 -= 1;
                if self.ranges[i].1 == 0 {
                    self.ranges.remove(i);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// A lower bound of the oldest pending entry's offset (`None`: nothing pending): the
    /// lowest offset counted in the oldest range, at most one range width below the true
    /// oldest (the true oldest unless a lower one of its range was removed).
    pub fn oldest(&self) -> Option<u64> {
        self.ranges.front().map(|&(_, _, lowest)| lowest)
    }

    /// Entries counted.
    pub fn len(&self) -> u64 {
        // Saturating: only every offset below 2^64 pending at once would reach it.
        self.ranges.iter().fold(0u64, |n, &(_, c, _)| n.saturating_add(c))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Width of a range, in offsets.
    pub fn range_width(&self) -> u64 {
        1u64 << self.shift
    }

    fn widen(&mut self) {
        self.shift += 1;
        let mut merged: VecDeque<(u64, u64, u64)> = VecDeque::with_capacity(self.ranges.len());
        for &(r, c, low) in &self.ranges {
            let r = r >> 1;
            match merged.back_mut() {
                Some((last, count, lowest)) if *last == r => {
                    *count += c;
                    *lowest = (*lowest).min(low);
                }
                _ => merged.push_back((r, c, low)),
            }
        }
        self.ranges = merged;
    }

    /// Bytes [`Self::encode`] takes for `ranges` ranges.
    pub fn encoded_len(ranges: usize) -> usize {
        12 + 24 * ranges
    }

    /// Little-endian: `shift u32` (its top bit set: ranges carry their lowest offset),
    /// `n u32`, `n × (range u64, count u64, lowest u64)`, `crc32c u32`.
    /// [`PendingOffsets::decode`] also reads the encoding before round 41, without `lowest`
    /// (the top bit clear): each range's start then.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::encoded_len(self.ranges.len()));
        b.extend_from_slice(&(self.shift | WITH_LOWEST).to_le_bytes());
        b.extend_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        for &(r, c, lowest) in &self.ranges {
            b.extend_from_slice(&r.to_le_bytes());
            b.extend_from_slice(&c.to_le_bytes());
            b.extend_from_slice(&lowest.to_le_bytes());
        }
        let crc = crate::format::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes bytes read back from disk; checks everything, never panics. The bound is the
    /// caller's (a checkpoint written under a larger bound is widened to fit).
    pub fn decode(b: &[u8], max_ranges: usize) -> Result<PendingOffsets, String> {
        if b.len() < 12 {
            return Err(format!("pending offsets of {} bytes are too short", b.len()));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crate::format::crc::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes"))
        {
            return Err("pending offsets: checksum mismatch".into());
        }
        let word = u32::from_le_bytes(body[0..4].try_into().expect("4 bytes"));
        let (shift, with_lowest) = (word & !WITH_LOWEST, word & WITH_LOWEST != 0);
        let n = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")) as usize;
        let each = if with_lowest { 24 } else { 16 };
        if shift >= 64 || body.len() != 8 + each * n {
            return Err(format!("pending offsets: shift {shift} or count {n} out of range"));
        }
        let mut ranges = VecDeque::with_capacity(n);
        for c in body[8..].chunks_exact(each) {
            let u = |at: usize| u64::from_le_bytes(c[at..at + 8].try_into().expect("8 bytes"));
            let (r, count) = (u(0), u(8));
            if count == 0 || ranges.back().is_some_and(|&(last, _, _)| last >= r) {
                return Err("pending offsets: ranges not ascending or empty".into());
            }
            // A range covers `1 << shift` offsets below 2^64: more entries, or a range past
            // the last offset, cannot come from `insert` (and would overflow the sums).
            if r > u64::MAX >> shift || count > 1u64 << shift {
                return Err(format!("pending offsets: range {r} of {count} does not fit"));
            }
            let lowest = if with_lowest { u(16) } else { r << shift };
            if lowest >> shift != r {
                return Err(format!("pending offsets: lowest {lowest} is not in range {r}"));
            }
            ranges.push_back((r, count, lowest));
        }
        let mut p = PendingOffsets { shift, max_ranges: max_ranges.max(2), ranges };
        while p.ranges.len() > p.max_ranges {
            p.widen();
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert at the next offset plus this gap.
        Insert(u64),
        /// Remove the pending entry at this index (modulo their number).
        Remove(usize),
        /// Encode, decode, continue with the decoded copy.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop_oneof![0..4u64, 0..5_000u64, 0..1u64 << 22].prop_map(Op::Insert),
            3 => any::<usize>().prop_map(Op::Remove),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Against a model (every pending offset): the count is exact, the oldest is a lower
        /// bound within one range width, the bound on ranges holds, and a round trip through
        /// the encoding changes nothing.
        #[test]
        fn counts_and_oldest_match_a_model(
            ops in proptest::collection::vec(op(), 1..400),
            max in 2usize..12,
            start in 0u64..1 << 40,
        ) {
            let mut p = PendingOffsets::new(max);
            let mut model: BTreeMap<u64, ()> = BTreeMap::new();
            let mut next = start;
            for op in ops {
                match op {
                    Op::Insert(gap) => {
                        next += gap;
                        p.insert(next);
                        model.insert(next, ());
                        next += 1;
                    }
                    Op::Remove(i) => {
                        if model.is_empty() {
                            prop_assert!(!p.remove(next + (1 << 30)));
                            continue;
                        }
                        let o = *model.keys().nth(i % model.len()).unwrap();
                        model.remove(&o);
                        prop_assert!(p.remove(o));
                    }
                    Op::Restart => {
                        let q = PendingOffsets::decode(&p.encode(), max).unwrap();
                        prop_assert_eq!(&q, &p);
                        p = q;
                    }
                }
                prop_assert_eq!(p.len(), model.len() as u64);
                prop_assert!(p.ranges.len() <= max);
                match model.keys().next() {
                    None => prop_assert_eq!(p.oldest(), None),
                    Some(&min) => {
                        let lb = p.oldest().unwrap();
                        prop_assert!(lb <= min && min - lb < p.range_width(), "{lb} vs {min}");
                    }
                }
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = PendingOffsets::decode(&bytes, 8);
        }
    }

    #[test]
    fn an_entry_below_the_last_range_is_counted_in_its_own() {
        let mut p = PendingOffsets::new(8);
        p.insert(10 << INITIAL_SHIFT);
        p.insert(3 << INITIAL_SHIFT);
        p.insert(3 << INITIAL_SHIFT);
        assert_eq!(p.oldest(), Some(3 << INITIAL_SHIFT));
        assert!(p.remove(3 << INITIAL_SHIFT) && p.remove(3 << INITIAL_SHIFT));
        assert_eq!(p.oldest(), Some(10 << INITIAL_SHIFT));
        assert!(!p.remove(3 << INITIAL_SHIFT), "nothing is left in that range");
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn bad_bytes_are_refused_and_a_larger_bound_is_widened_to_fit() {
        let mut p = PendingOffsets::new(64);
        for i in 0..40u64 {
            p.insert(i << 12);
        }
        let bytes = p.encode();
        let mut flipped = bytes.clone();
        flipped[9] ^= 1;
        assert!(PendingOffsets::decode(&flipped, 64).is_err());
        assert!(PendingOffsets::decode(&bytes[..bytes.len() - 1], 64).is_err());
        let small = PendingOffsets::decode(&bytes, 4).unwrap();
        assert!(small.ranges.len() <= 4);
        assert_eq!(small.len(), 40);
        assert_eq!(small.oldest(), Some(0));
    }

    /// The encoding before round 41 (no lowest offsets).
    fn encoded(shift: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&shift.to_le_bytes());
        b.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
        for &(r, c) in ranges {
            b.extend_from_slice(&r.to_le_bytes());
            b.extend_from_slice(&c.to_le_bytes());
        }
        let crc = crate::format::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn impossible_ranges_with_a_valid_checksum_are_refused() {
        // More entries in a range than it has offsets: their sum would overflow.
        let full = 1u64 << 63;
        assert!(PendingOffsets::decode(&encoded(63, &[(0, full), (1, full + 1)]), 8).is_err());
        // A range past the last offset: widening would shift by 64.
        assert!(PendingOffsets::decode(&encoded(63, &[(0, 1), (1, 1), (2, 1)]), 2).is_err());
        // The largest honest ranges are accepted and counted without overflow.
        let p = PendingOffsets::decode(&encoded(63, &[(0, full), (1, full)]), 2).unwrap();
        assert_eq!(p.len(), u64::MAX);
        assert_eq!(p.oldest(), Some(0));
    }

    /// The oldest pending entry itself, not the start of its range: a schedule queue of a
    /// few messages, all in its first range, is pinned from the oldest still pending.
    #[test]
    fn the_oldest_is_the_lowest_offset_counted_in_the_first_range() {
        let mut p = PendingOffsets::new(8);
        p.insert(5);
        p.insert(7);
        assert_eq!(p.oldest(), Some(5));
        assert!(p.remove(5));
        assert_eq!(p.oldest(), Some(5), "a lower bound while its range holds 7");
        assert!(p.remove(7));
        p.insert(9);
        assert_eq!(p.oldest(), Some(9), "a range made again starts at what it holds");
        p.insert(3);
        assert_eq!(p.oldest(), Some(3));
        let q = PendingOffsets::decode(&p.encode(), 8).unwrap();
        assert_eq!((q.oldest(), q.len()), (Some(3), 2));
        // The encoding before round 41 still reads, each range from its start.
        let old = PendingOffsets::decode(&encoded(10, &[(0, 2), (4, 1)]), 8).unwrap();
        assert_eq!((old.oldest(), old.len()), (Some(0), 3));
        // A lowest offset outside its range is refused.
        let mut bad = p.encode();
        bad[24..32].copy_from_slice(&(1u64 << 20).to_le_bytes());
        let n = bad.len() - 4;
        let crc = crate::format::crc::crc32c(&bad[..n]);
        bad[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(PendingOffsets::decode(&bad, 8).is_err());
    }
}
