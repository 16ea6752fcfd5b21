//! What the consumers saw, checked against what the producers sent: every message exactly
//! once (a bitmap per producer: one bit per message sent, so bounded by the run's size) and,
//! for keyed workloads, each (producer, key)'s messages in send order. Pure logic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    First,
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Next,
    /// Messages of this key were skipped (maybe still to come out of order, or lost).
    Gap {
        missing: u64,
    },
    /// An earlier message of this key came after a later one (or again).
    Backwards,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySummary {
    pub unique: u64,
    pub duplicates: u64,
    pub order_violations: u64,
    pub key_gaps: u64,
    /// Bodies without a harness header (not ours, or corrupted).
    pub foreign: u64,
}

#[derive(Default)]
pub struct Verifier {
    /// Producer -> bitmap of sequence numbers seen.
    seen: HashMap<u32, Vec<u64>>,
    /// (producer, key) -> next expected key sequence.
    next_key_seq: HashMap<(u32, u32), u64>,
    pub summary: VerifySummary,
}

impl Verifier {
    pub fn observe(&mut self, producer: u32, seq: u64) -> Seen {
        let bits = self.seen.entry(producer).or_default();
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.summary.duplicates += 1;
            return Seen::Duplicate;
        }
        bits[word] |= 1 << bit;
        self.summary.unique += 1;
        Seen::First
    }

    pub fn observe_key(&mut self, producer: u32, key: u32, key_seq: u64) -> Order {
        let next = self.next_key_seq.entry((producer, key)).or_insert(0);
        if key_seq == *next {
            *next += 1;
            Order::Next
        } else if key_seq > *next {
            let missing = key_seq - *next;
            *next = key_seq + 1;
            self.summary.key_gaps += 1;
            Order::Gap { missing }
        } else {
            self.summary.order_violations += 1;
            Order::Backwards
        }
    }

    pub fn foreign(&mut self) {
        self.summary.foreign += 1;
    }

    /// How many of producer `p`'s first `sent` messages were never seen.
    pub fn missing(&self, producer: u32, sent: u64) -> u64 {
        let bits = self.seen.get(&producer).map(Vec::as_slice).unwrap_or(&[]);
        let seen = (0..sent)
            .filter(|s| bits.get((s / 64) as usize).is_some_and(|w| w & (1 << (s % 64)) != 0));
        sent - seen.count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_missing() {
        let mut v = Verifier::default();
        for s in [0, 1, 2, 200, 1] {
            v.observe(7, s);
        }
        assert_eq!(v.summary.unique, 4);
        assert_eq!(v.summary.duplicates, 1);
        assert_eq!(v.missing(7, 3), 0);
        assert_eq!(v.missing(7, 201), 197);
        assert_eq!(v.missing(8, 5), 5);
    }

    #[test]
    fn per_key_order() {
        let mut v = Verifier::default();
        assert_eq!(v.observe_key(0, 1, 0), Order::Next);
        assert_eq!(v.observe_key(0, 2, 0), Order::Next); // keys are independent
        assert_eq!(v.observe_key(1, 1, 0), Order::Next); // so are producers
        assert_eq!(v.observe_key(0, 1, 1), Order::Next);
        assert_eq!(v.observe_key(0, 1, 4), Order::Gap { missing: 2 });
        assert_eq!(v.observe_key(0, 1, 3), Order::Backwards);
        assert_eq!(v.observe_key(0, 1, 5), Order::Next);
        assert_eq!(v.summary.order_violations, 1);
        assert_eq!(v.summary.key_gaps, 1);
    }
}
