//! What a push consumer tracks per queue it owns, and its local retry policy. Pure: no I/O,
//! no clock reads (times come in), tested exhaustively below.
//!
//! [`ProcessQueue`]: messages pulled and handed to the listener but not finished yet. The
//! offset the consumer may commit is the lowest unfinished one, or the next offset to pull when
//! nothing is unfinished: **the committed offset never passes an unfinished message**, so a
//! crash redelivers from the oldest message not yet processed (and may redeliver some that
//! were), never skips one. Bounded: the queue is not fetched while `max_unfinished` messages
//! are unfinished, nor (with [`ProcessQueue::with_max_span`], after RocketMQ's
//! `consumeConcurrentlyMaxSpan`) while the oldest unfinished one is more than `max_span`
//! behind the next offset to fetch: one slow or stuck message holds the commit back, and
//! without the span bound a crash or a rebalance would redeliver everything consumed after it.
//!
//! [`RetryPolicy`]: `RECONSUME_LATER` in this client redelivers locally after a growing delay
//! (RocketMQ's delay levels 1 s, 5 s, 10 s, 30 s, 1 m, 2 m...), at most `max_attempts`
//! times; then the message is given up (logged) so the queue can move on. The broker-side
//! retry topic and dead letters replace this in a later change.

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ProcessQueue {
    /// The unfinished offsets, ascending. Pulled in order they are appended, and finished
    /// mostly from the front: a sorted deque instead of a `BTreeSet`, whose insert per message
    /// was a tenth of a push consumer's fetch thread in a drain (round 37).
    unfinished: VecDeque<u64>,
    next_pull: u64,
    max_unfinished: usize,
    /// The most the newest unfinished offset may be past the oldest for more to be fetched.
    max_span: u64,
    /// Committable offset at the last commit (to commit only what moved).
    committed: Option<u64>,
    /// The position is known (not yet: [`ProcessQueue::unresolved`]).
    resolved: bool,
}

impl ProcessQueue {
    /// A queue consumed from `start`.
    pub fn new(start: u64, max_unfinished: usize) -> Self {
        ProcessQueue {
            unfinished: VecDeque::new(),
            next_pull: start,
            max_unfinished: max_unfinished.max(1),
            max_span: u64::MAX,
            committed: None,
            resolved: true,
        }
    }

    /// A queue whose start its first fetch finds: fetched from `probe`, an offset outside
    /// the queue (0 below its first retained offset, `u64::MAX` past its end) is answered
    /// OFFSET_OUT_OF_RANGE with the queue's bounds, and the consumer jumps to the nearer one
    /// (its first or its next offset: RocketMQ's CONSUME_FROM_FIRST / LAST_OFFSET). Saves a
    /// round trip per queue when a member takes thousands. Nothing is committed until the
    /// first fetch places it.
    pub fn unresolved(probe: u64, max_unfinished: usize) -> Self {
        ProcessQueue { resolved: false, ..ProcessQueue::new(probe, max_unfinished) }
    }

    /// Fetched no more while the oldest unfinished offset is more than `max_span` behind the
    /// next one to fetch. RocketMQ's `consumeConcurrentlyMaxSpan` (2,000 there) measures to
    /// the newest *unfinished* offset instead, so it stops nothing while the messages after a
    /// stuck one finish as fast as they come; measured to the fetch position, the bound holds
    /// what is consumed past a stuck message (and redelivered after a crash) to `max_span`
    /// plus what the fetches already asked for bring (the reader asks a queue's next fetch
    /// before the last answer is looked at: two fetches).
    pub fn with_max_span(mut self, max_span: u64) -> Self {
        self.max_span = max_span;
        self
    }

    pub fn next_pull(&self) -> u64 {
        self.next_pull
    }

    /// Whether more may be fetched: fewer than `max_unfinished` unfinished, spanning at
    /// most `max_span` offsets.
    pub fn has_room(&self) -> bool {
        self.unfinished.len() < self.max_unfinished && self.span() <= self.max_span
    }

    /// How far the oldest unfinished offset is behind the next one to fetch (0 with none
    /// unfinished).
    pub fn span(&self) -> u64 {
        self.unfinished.front().map_or(0, |&oldest| self.next_pull.saturating_sub(oldest))
    }

    pub fn unfinished(&self) -> usize {
        self.unfinished.len()
    }

    /// A pull returned `offsets` (in order) and ended at `next_offset` (past filtered or
    /// skipped records too).
    pub fn pulled(&mut self, offsets: impl IntoIterator<Item = u64>, next_offset: u64) {
        for o in offsets {
            if o < self.next_pull {
                continue;
            }
            match self.unfinished.back() {
                Some(&last) if last >= o => {
                    // Only after a jump back: in place, once.
                    if let Err(i) = self.unfinished.binary_search(&o) {
                        self.unfinished.insert(i, o);
                    }
                }
                _ => self.unfinished.push_back(o),
            }
        }
        self.next_pull = self.next_pull.max(next_offset);
        self.resolved = true;
    }

    /// The pull offset moved without messages (out of range, a damaged batch skipped).
    pub fn jump_to(&mut self, offset: u64) {
        self.next_pull = offset;
        self.resolved = true;
    }

    /// The listener finished these messages (consumed, or given up after their retries).
    pub fn finished(&mut self, offsets: impl IntoIterator<Item = u64>) {
        for o in offsets {
            if self.unfinished.front() == Some(&o) {
                self.unfinished.pop_front();
            } else if let Ok(i) = self.unfinished.binary_search(&o) {
                self.unfinished.remove(i);
            }
        }
    }

    /// The offset to commit: below it everything is finished.
    pub fn committable(&self) -> u64 {
        self.unfinished.front().copied().unwrap_or(self.next_pull)
    }

    /// The committable offset if it moved since the last [`Self::mark_committed`] (none
    /// while an [`Self::unresolved`] queue's start is not found yet).
    pub fn to_commit(&self) -> Option<u64> {
        let c = self.committable();
        (self.resolved && self.committed != Some(c)).then_some(c)
    }

    pub fn mark_committed(&mut self, offset: u64) {
        self.committed = Some(offset);
    }
}

/// Local redelivery of messages the listener asked to reconsume later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before attempt `n + 1` (the last one repeats).
    pub delays: Vec<Duration>,
    /// Deliveries after the first; past it the message is given up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let s = Duration::from_secs;
        RetryPolicy {
            // RocketMQ's first delay levels (messageDelayLevel "1s 5s 10s 30s 1m 2m ...").
            delays: vec![s(1), s(5), s(10), s(30), s(60), s(120)],
            max_attempts: 16,
        }
    }
}

impl RetryPolicy {
    /// The delay before redelivering a message that failed `failures` times (1 = the first
    /// delivery failed), or None when it has failed too often.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures == 0 || failures > self.max_attempts {
            return None;
        }
        let i = (failures as usize - 1).min(self.delays.len().saturating_sub(1));
        Some(self.delays.get(i).copied().unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_committable_offset_never_passes_an_unfinished_message() {
        let mut q = ProcessQueue::new(10, 4);
        assert_eq!(q.committable(), 10);
        q.pulled([10, 11, 12], 13);
        assert!(q.has_room());
        q.pulled([13], 15); // 14 was filtered out by tag
        assert!(!q.has_room(), "4 unfinished");
        q.finished([11, 13]);
        assert_eq!(q.committable(), 10);
        q.finished([10]);
        assert_eq!(q.committable(), 12);
        q.finished([12]);
        assert_eq!(q.committable(), 15, "past the filtered record");
        assert_eq!(q.to_commit(), Some(15));
        q.mark_committed(15);
        assert_eq!(q.to_commit(), None);
        q.jump_to(20);
        assert_eq!(q.to_commit(), Some(20));
    }

    #[test]
    fn a_stuck_message_stops_the_fetches_once_the_unfinished_span_passes_the_bound() {
        let mut q = ProcessQueue::new(0, 1000).with_max_span(100);
        q.pulled(0..50, 50);
        q.finished(1..50); // offset 0 is stuck
        assert_eq!((q.unfinished(), q.span()), (1, 50));
        assert!(q.has_room());
        q.pulled(50..100, 100);
        q.finished(50..100);
        assert_eq!((q.unfinished(), q.span()), (1, 100));
        assert!(q.has_room(), "100 behind: at the bound");
        q.pulled(100..101, 101);
        assert!(!q.has_room(), "101 behind with 2 unfinished");
        q.finished([100]);
        assert!(!q.has_room(), "the others finishing does not make room: the stuck one does");
        q.finished([0]);
        assert!(q.has_room());
        assert_eq!((q.committable(), q.span()), (101, 0));
        // Past a record filtered out by tag the position still counts.
        q.pulled([101], 150);
        assert_eq!(q.span(), 49);
        // Without the bound only the count stops it.
        let mut q = ProcessQueue::new(0, 1000);
        q.pulled(0..5000, 5000);
        q.finished(1..5000);
        assert_eq!(q.span(), 5000);
        assert!(q.has_room());
    }

    #[test]
    fn an_unresolved_start_is_committed_only_once_a_fetch_placed_it() {
        for (probe, placed) in [(0, 40), (u64::MAX, 75)] {
            let mut q = ProcessQueue::unresolved(probe, 10);
            assert_eq!(q.next_pull(), probe);
            assert_eq!(q.to_commit(), None, "nothing committed before the first fetch");
            q.jump_to(placed); // OFFSET_OUT_OF_RANGE moved it to the queue's first / next offset
            assert_eq!(q.to_commit(), Some(placed));
        }
        // A first fetch with messages places it too.
        let mut q = ProcessQueue::unresolved(0, 10);
        q.pulled([0, 1, 2], 3);
        assert_eq!(q.to_commit(), Some(0));
        q.finished([0, 1, 2]);
        assert_eq!(q.to_commit(), Some(3));
    }

    #[test]
    fn retries_back_off_and_give_up() {
        let p = RetryPolicy {
            delays: vec![Duration::from_secs(1), Duration::from_secs(5)],
            max_attempts: 3,
        };
        assert_eq!(p.delay(0), None);
        assert_eq!(p.delay(1), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(2), Some(Duration::from_secs(5)));
        assert_eq!(p.delay(3), Some(Duration::from_secs(5)), "the last delay repeats");
        assert_eq!(p.delay(4), None);
    }

    proptest! {
        /// Whatever order messages finish in, the committable offset is the lowest unfinished
        /// one (or the pull position), and it never moves backwards.
        #[test]
        fn committable_is_the_lowest_unfinished(
            batches in proptest::collection::vec(1u64..6, 1..20),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..100),
        ) {
            let mut q = ProcessQueue::new(0, usize::MAX);
            let mut open: Vec<u64> = Vec::new();
            let mut next = 0;
            for n in batches {
                let offsets: Vec<u64> = (next..next + n).collect();
                next += n;
                q.pulled(offsets.clone(), next);
                open.extend(offsets);
            }
            let mut last = q.committable();
            for i in order {
                if open.is_empty() {
                    break;
                }
                let o = open.remove(i.index(open.len()));
                q.finished([o]);
                let c = q.committable();
                prop_assert!(c >= last);
                prop_assert_eq!(c, open.iter().min().copied().unwrap_or(next));
                last = c;
            }
        }

        /// Against a set of the unfinished offsets: any pulls (in order, overlapping what was
        /// pulled, or after a jump back), finishes (of pulled offsets, others, twice) and
        /// jumps leave the same unfinished count, span, room and committable offset.
        #[test]
        fn the_deque_behaves_as_a_set_of_unfinished_offsets(
            ops in proptest::collection::vec((0u8..3, 0u64..60, 0u64..8), 1..200),
        ) {
            let mut q = ProcessQueue::new(0, 20).with_max_span(30);
            let mut set = std::collections::BTreeSet::new();
            let mut next_pull = 0u64;
            for (op, at, n) in ops {
                match op {
                    0 => {
                        // A pull of `n` offsets from `at` (those below the pull offset ignored).
                        let offsets: Vec<u64> = (at..at + n).collect();
                        let end = at + n;
                        q.pulled(offsets.clone(), end);
                        set.extend(offsets.into_iter().filter(|&o| o >= next_pull));
                        next_pull = next_pull.max(end);
                    }
                    1 => {
                        let offsets: Vec<u64> = (at..at + n).rev().collect();
                        q.finished(offsets.clone());
                        for o in offsets {
                            set.remove(&o);
                        }
                    }
                    _ => {
                        q.jump_to(at);
                        next_pull = at;
                    }
                }
                prop_assert_eq!(q.unfinished(), set.len());
                let span = set.first().map_or(0, |f| next_pull.saturating_sub(*f));
                prop_assert_eq!(q.span(), span);
                prop_assert_eq!(q.has_room(), set.len() < 20 && span <= 30);
                prop_assert_eq!(q.committable(), set.first().copied().unwrap_or(next_pull));
                prop_assert!(q.unfinished.iter().zip(q.unfinished.iter().skip(1)).all(|(a, b)| a < b));
            }
        }
    }
}
