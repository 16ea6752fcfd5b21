//! Idempotent produce: the per-(producer, queue) sequence windows of one shard.
//!
//! Owned by its shard (one [`SequenceWindows`] per shard, on the shard's thread, no I/O, no
//! clock of its own: every call takes `now_ms` from the caller), so the logic is tested
//! exhaustively without sockets or disks.
//!
//! A batch whose header carries a producer id (`>= 0`) and a base sequence goes through
//! [`SequenceWindows::check`] before it is appended:
//! - the next expected sequence of its (producer, queue) → [`Verdict::Append`]: the batch is
//!   reserved in the window (so a copy arriving meanwhile waits for it instead of being stored
//!   again), the shard appends it, then calls [`SequenceWindows::stored`] with its offsets, or
//!   [`SequenceWindows::abort`] when the append failed (nothing stored);
//! - one of the last [`WINDOW_BATCHES`] batches → [`Verdict::Duplicate`] with the original
//!   offsets (the retry is answered, not stored), or [`Verdict::InProgress`] while that batch
//!   is still being appended;
//! - anything else is refused: a sequence ahead of the expected one is a gap
//!   (`OUT_OF_ORDER_SEQUENCE`), one behind the window cannot be answered
//!   (`DUPLICATE_SEQUENCE`), a batch of an older epoch is fenced (`OUT_OF_ORDER_SEQUENCE`).
//!
//! A (producer, queue) the shard holds no state for accepts only sequence 0 (a new epoch
//! starts there too): after its state expired, was evicted or was not rebuilt at startup, a
//! producer that continues at sequence `n > 0` gets `OUT_OF_ORDER_SEQUENCE` and renumbers its
//! unacknowledged batches under its next epoch (docs/protocol.md, "Idempotent produce").
//!
//! Bounds: at most `max_states` (producer, queue) pairs, each holding at most
//! [`WINDOW_BATCHES`] entries; a pair idle for `expiry_ms` is dropped, and when the table is
//! full the least recently used pair without a batch in progress makes room. The shard
//! rebuilds the windows at startup from the tail of its log ([`SequenceWindows::recover`]).

use std::collections::hash_map::RandomState;

use hashlink::LinkedHashMap;

use crate::protocol::producer_id::{base_id, distance, epoch, next_sequence};
use crate::storage::QueueKey;

pub use crate::protocol::producer_id::WINDOW_BATCHES;

/// Which sequence window: a producer (without its epoch) on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub producer: i64,
    pub queue: QueueKey,
}

/// Where a batch was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub base_offset: u64,
    pub store_timestamp_ms: i64,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New and next in order: reserved; append it, then `stored` or `abort`.
    Append,
    /// Already stored: answer with these offsets, store nothing.
    Duplicate(Stored),
    /// The same batch is being appended right now: wait for it, then ask again.
    InProgress,
    /// Behind the window: stored long ago, offsets no longer known.
    TooOld { next_sequence: i32 },
    /// Not the next sequence: a gap (or no state and not 0).
    OutOfOrder { expected: i32 },
    /// An epoch older than the one this window follows.
    Fenced { current_epoch: u16 },
    /// A sequence of the window reused for a batch of another size.
    Mismatch { record_count: u32 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    base_sequence: i32,
    record_count: u32,
    /// `None` while the append is in progress.
    stored: Option<Stored>,
}

/// A pair's last [`WINDOW_BATCHES`] batches, oldest first, held inline: with 10,000 queues a
/// window on the heap was one more cache miss for every batch checked and stored.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    ring: [Entry; WINDOW_BATCHES],
    /// Index in `ring` of the oldest entry.
    start: usize,
    len: usize,
}

impl Window {
    fn len(&self) -> usize {
        self.len
    }

    fn slot(&self, i: usize) -> usize {
        (self.start + i) % WINDOW_BATCHES
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        (0..self.len).map(|i| &self.ring[self.slot(i)])
    }

    fn find(&self, base_sequence: i32) -> Option<Entry> {
        self.iter().find(|e| e.base_sequence == base_sequence).copied()
    }

    fn find_mut(&mut self, base_sequence: i32) -> Option<&mut Entry> {
        let i = self.position(base_sequence)?;
        let slot = self.slot(i);
        Some(&mut self.ring[slot])
    }

    fn position(&self, base_sequence: i32) -> Option<usize> {
        self.iter().position(|e| e.base_sequence == base_sequence)
    }

    /// Appends `entry`, dropping the oldest when the window is full.
    fn push_back(&mut self, entry: Entry) {
        if self.len == WINDOW_BATCHES {
            self.start = self.slot(1);
            self.len -= 1;
        }
        let slot = self.slot(self.len);
        self.ring[slot] = entry;
        self.len += 1;
    }

    fn pop_back(&mut self) {
        self.len = self.len.saturating_sub(1);
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

#[derive(Debug)]
struct State {
    epoch: u16,
    next_sequence: i32,
    entries: Window,
    last_used_ms: u64,
}

impl State {
    fn new(epoch: u16) -> Self {
        State { epoch, next_sequence: 0, entries: Window::default(), last_used_ms: 0 }
    }

    fn in_progress(&self) -> bool {
        self.entries.iter().any(|e| e.stored.is_none())
    }

    fn push(&mut self, entry: Entry) {
        self.next_sequence = next_sequence(entry.base_sequence, entry.record_count);
        self.entries.push_back(entry);
    }

    /// Starts the window over at a new epoch (the pair keeps its place in use order).
    fn restart(&mut self, epoch: u16) {
        self.epoch = epoch;
        self.next_sequence = 0;
        self.entries.clear();
    }
}

/// One shard's sequence windows. See the module documentation.
///
/// The pairs live in a linked hash map kept in use order (least recently used first), so a
/// batch costs one lookup and a relink however many pairs the shard holds (10,000 queues ×
/// producers is an ordinary load). It hashes with std's keyed hasher: producer ids come from
/// clients, and a fixed hash would let one pick ids that collide.
#[derive(Debug)]
pub struct SequenceWindows {
    states: LinkedHashMap<WindowKey, State, RandomState>,
    max_states: usize,
    expiry_ms: u64,
    /// The `now_ms` of the last expiry scan: one scan per millisecond is enough, as nothing
    /// idles for longer within one.
    expired_at_ms: Option<u64>,
    /// Pairs dropped since start to make room for others (not by expiry).
    evicted: u64,
}

impl SequenceWindows {
    pub fn new(max_states: usize, expiry_ms: u64) -> Self {
        SequenceWindows {
            states: LinkedHashMap::with_hasher(RandomState::new()),
            max_states: max_states.max(1),
            expiry_ms,
            expired_at_ms: None,
            evicted: 0,
        }
    }

    /// Pairs dropped since start to make room for others, the table being full (not by
    /// expiry): each such producer renumbers its next batch on that queue, and a retry of a
    /// batch the pair covered is no longer recognised. A steady rate means more pairs write to
    /// the shard than `max_states`.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// (producer, queue) pairs held.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn key(producer_id: i64, queue: QueueKey) -> WindowKey {
        WindowKey { producer: base_id(producer_id), queue }
    }

    /// Decides what to do with a batch of `producer_id` (epoch included) on `queue`.
    pub fn check(
        &mut self,
        producer_id: i64,
        queue: QueueKey,
        base_sequence: i32,
        record_count: u32,
        now_ms: u64,
    ) -> Verdict {
        debug_assert!(producer_id >= 0 && base_sequence >= 0);
        self.expire(now_ms);
        let key = Self::key(producer_id, queue);
        let batch_epoch = epoch(producer_id);
        let fresh = Entry { base_sequence, record_count, stored: None };
        // Every answer about a held pair counts as a use: it moves to the back.
        let Some(state) = self.states.to_back(&key) else {
            if base_sequence != 0 {
                return Verdict::OutOfOrder { expected: 0 };
            }
            let mut state = State::new(batch_epoch);
            state.push(fresh);
            self.insert(key, state, now_ms);
            return Verdict::Append;
        };
        state.last_used_ms = now_ms;
        if batch_epoch < state.epoch {
            Verdict::Fenced { current_epoch: state.epoch }
        } else if batch_epoch > state.epoch {
            if base_sequence == 0 {
                state.restart(batch_epoch);
                state.push(fresh);
                Verdict::Append
            } else {
                Verdict::OutOfOrder { expected: 0 }
            }
        } else if let Some(e) = state.entries.find(base_sequence) {
            if e.record_count != record_count {
                Verdict::Mismatch { record_count: e.record_count }
            } else {
                e.stored.map_or(Verdict::InProgress, Verdict::Duplicate)
            }
        } else if base_sequence == state.next_sequence {
            state.push(fresh);
            Verdict::Append
        } else if distance(base_sequence, state.next_sequence) < 1 << 30 {
            Verdict::TooOld { next_sequence: state.next_sequence }
        } else {
            Verdict::OutOfOrder { expected: state.next_sequence }
        }
    }

    /// The batch reserved by an `Append` verdict was stored.
    pub fn stored(&mut self, producer_id: i64, queue: QueueKey, base_sequence: i32, at: Stored) {
        let Some(state) = self.state_of(producer_id, queue) else { return };
        if let Some(e) = state.entries.find_mut(base_sequence) {
            e.stored = Some(at);
        }
        // Pairs admitted over the bound while their appends were in progress make room now.
        self.shrink(self.max_states);
    }

    /// The batch reserved by an `Append` verdict was not stored. The window expects it again;
    /// if later batches were reserved behind it meanwhile (only after a failed log), nothing
    /// about the pair can be trusted any more and its state is dropped.
    pub fn abort(&mut self, producer_id: i64, queue: QueueKey, base_sequence: i32) {
        let Some(state) = self.state_of(producer_id, queue) else { return };
        let drop_pair = match state.entries.position(base_sequence) {
            // The pair's first batch: as if it never came.
            Some(0) if state.entries.len() == 1 && base_sequence == 0 => true,
            Some(i) if i + 1 == state.entries.len() => {
                state.entries.pop_back();
                state.next_sequence = base_sequence;
                false
            }
            Some(_) => true,
            None => false,
        };
        if drop_pair {
            self.states.remove(&Self::key(producer_id, queue));
        }
        self.shrink(self.max_states);
    }

    /// Rebuilds from a stored batch, read in log order at startup: the log is the truth, so
    /// the batch always enters the window (a gap or a newer epoch restarts the window there).
    pub fn recover(
        &mut self,
        producer_id: i64,
        queue: QueueKey,
        base_sequence: i32,
        record_count: u32,
        at: Stored,
        now_ms: u64,
    ) {
        let key = Self::key(producer_id, queue);
        let batch_epoch = epoch(producer_id);
        let entry = Entry { base_sequence, record_count, stored: Some(at) };
        if let Some(state) = self.states.to_back(&key) {
            if batch_epoch != state.epoch || base_sequence != state.next_sequence {
                state.restart(batch_epoch);
            }
            state.push(entry);
            state.last_used_ms = now_ms;
        } else {
            let mut state = State::new(batch_epoch);
            state.push(entry);
            self.insert(key, state, now_ms);
        }
    }

    /// Drops every window of `queue` (its rebuild at startup did not reach the log's end).
    pub fn forget_queue(&mut self, queue: QueueKey) {
        let keys: Vec<WindowKey> =
            self.states.keys().filter(|k| k.queue == queue).copied().collect();
        for k in keys {
            self.states.remove(&k);
        }
    }

    /// Drops every window (a rebuild at startup could not read the log to its end: a window
    /// missing a pair's last batches would take their retries for new batches).
    pub fn forget_all(&mut self) {
        self.states.clear();
    }

    /// The state of the pair `producer_id` belongs to, if held and of the same epoch.
    fn state_of(&mut self, producer_id: i64, queue: QueueKey) -> Option<&mut State> {
        let state = self.states.get_mut(&Self::key(producer_id, queue))?;
        (state.epoch == epoch(producer_id)).then_some(state)
    }

    fn insert(&mut self, key: WindowKey, mut state: State, now_ms: u64) {
        self.shrink(self.max_states - 1);
        state.last_used_ms = now_ms;
        self.states.insert(key, state);
    }

    /// Drops least recently used pairs with nothing in progress until at most `target`
    /// remain (pairs with a batch in progress are bounded by the requests in flight).
    fn shrink(&mut self, target: usize) {
        while self.states.len() > target {
            let victim = self.states.iter().find(|(_, s)| !s.in_progress()).map(|(k, _)| *k);
            match victim {
                Some(k) => {
                    self.states.remove(&k);
                    self.evicted += 1;
                }
                None => break,
            }
        }
    }

    /// Drops pairs idle for `expiry_ms` (in use order, so the scan stops at the first live one).
    fn expire(&mut self, now_ms: u64) {
        if self.expired_at_ms == Some(now_ms) {
            return;
        }
        self.expired_at_ms = Some(now_ms);
        while let Some((_, state)) = self.states.front() {
            if now_ms < state.last_used_ms.saturating_add(self.expiry_ms) || state.in_progress() {
                break;
            }
            self.states.pop_front();
        }
    }

    /// The pairs in use order, least recently used first (tests check it against last use).
    #[cfg(test)]
    fn use_order(&self) -> Vec<WindowKey> {
        self.states.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{QueueId, TopicId};
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet, VecDeque};

    const Q: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(0));
    const P: i64 = 7 << 16;

    fn at(o: u64) -> Stored {
        Stored { base_offset: o, store_timestamp_ms: o as i64 }
    }

    fn append(w: &mut SequenceWindows, pid: i64, seq: i32, n: u32, offset: u64, now: u64) {
        assert_eq!(w.check(pid, Q, seq, n, now), Verdict::Append);
        w.stored(pid, Q, seq, at(offset));
    }

    /// `broker.idempotence_max_producer_queues` is documented at about 600 bytes a pair (its
    /// key and state inline in the map's node, with the node's two links).
    #[test]
    fn a_pair_costs_about_600_bytes() {
        let pair = std::mem::size_of::<WindowKey>() + std::mem::size_of::<State>() + 16;
        assert!(pair <= 600, "{pair} bytes a pair");
    }

    #[test]
    fn retries_in_the_window_get_their_offsets_and_gaps_are_refused() {
        let mut w = SequenceWindows::new(16, 60_000);
        assert_eq!(w.check(P, Q, 3, 1, 0), Verdict::OutOfOrder { expected: 0 }, "new: from 0");
        // Two batches more than the window holds, of 2 records each.
        let batches = WINDOW_BATCHES as u64 + 2;
        for i in 0..batches {
            append(&mut w, P, (i * 2) as i32, 2, 100 + i * 2, 0);
        }
        let next = (batches * 2) as i32;
        // Window: the last WINDOW_BATCHES batches, sequences 4..next.
        assert_eq!(w.check(P, Q, next - 2, 2, 1), Verdict::Duplicate(at(98 + next as u64)));
        assert_eq!(w.check(P, Q, 4, 2, 1), Verdict::Duplicate(at(104)));
        assert_eq!(w.check(P, Q, 2, 2, 1), Verdict::TooOld { next_sequence: next });
        assert_eq!(w.check(P, Q, next + 2, 2, 1), Verdict::OutOfOrder { expected: next });
        assert_eq!(w.check(P, Q, next - 2, 3, 1), Verdict::Mismatch { record_count: 2 });
        // A copy arriving while the original is appended waits for it.
        assert_eq!(w.check(P, Q, next, 1, 1), Verdict::Append);
        assert_eq!(w.check(P, Q, next, 1, 1), Verdict::InProgress);
        w.stored(P, Q, next, at(200));
        assert_eq!(w.check(P, Q, next, 1, 1), Verdict::Duplicate(at(200)));
        // Another queue or producer is another window.
        let q2 = QueueKey::new(TopicId::new(1), QueueId::new(1));
        assert_eq!(w.check(P, q2, 0, 1, 1), Verdict::Append);
        assert_eq!(w.check(8 << 16, Q, 0, 1, 1), Verdict::Append);
    }

    #[test]
    fn an_aborted_append_is_expected_again() {
        let mut w = SequenceWindows::new(16, 60_000);
        append(&mut w, P, 0, 2, 0, 0);
        assert_eq!(w.check(P, Q, 2, 3, 0), Verdict::Append);
        w.abort(P, Q, 2);
        assert_eq!(w.check(P, Q, 5, 1, 0), Verdict::OutOfOrder { expected: 2 });
        assert_eq!(w.check(P, Q, 2, 3, 0), Verdict::Append);
        // Aborting a batch with later ones reserved behind it drops the pair.
        assert_eq!(w.check(P, Q, 5, 1, 0), Verdict::Append);
        w.abort(P, Q, 2);
        assert_eq!(w.check(P, Q, 6, 1, 0), Verdict::OutOfOrder { expected: 0 });
    }

    #[test]
    fn a_new_epoch_restarts_at_zero_and_fences_the_old_one() {
        let mut w = SequenceWindows::new(16, 60_000);
        append(&mut w, P, 0, 4, 0, 0);
        append(&mut w, P, 4, 4, 4, 0);
        let e1 = P | 1;
        assert_eq!(w.check(e1, Q, 3, 1, 0), Verdict::OutOfOrder { expected: 0 });
        append(&mut w, e1, 0, 1, 8, 0);
        assert_eq!(w.check(P, Q, 4, 4, 0), Verdict::Fenced { current_epoch: 1 });
        assert_eq!(w.check(P, Q, 8, 1, 0), Verdict::Fenced { current_epoch: 1 });
        assert_eq!(w.check(e1, Q, 0, 1, 0), Verdict::Duplicate(at(8)));
        assert_eq!(w.check(e1, Q, 1, 1, 0), Verdict::Append);
    }

    #[test]
    fn a_window_keeps_the_last_batches_in_order_across_its_ring() {
        let e = |seq: i32| Entry { base_sequence: seq, record_count: 1, stored: None };
        let mut w = Window::default();
        let mut model: VecDeque<i32> = VecDeque::new();
        for seq in 0..23 {
            w.push_back(e(seq));
            model.push_back(seq);
            if model.len() > WINDOW_BATCHES {
                model.pop_front();
            }
            if seq % 7 == 6 {
                w.pop_back();
                model.pop_back();
            }
            let held: Vec<i32> = w.iter().map(|e| e.base_sequence).collect();
            assert_eq!(held, Vec::from(model.clone()), "after {seq}");
            for (i, s) in model.iter().enumerate() {
                assert_eq!(w.position(*s), Some(i));
            }
            assert!(w.find(seq + 100).is_none());
        }
        let last = *model.back().unwrap();
        w.find_mut(last).unwrap().record_count = 9;
        assert_eq!(w.find(last).unwrap().record_count, 9);
        w.clear();
        assert_eq!(w.len(), 0);
        assert_eq!(w.iter().count(), 0);
    }

    #[test]
    fn sequences_wrap_past_i32_max() {
        let mut w = SequenceWindows::new(16, 60_000);
        w.recover(P, Q, i32::MAX - 1, 1, at(0), 0);
        append(&mut w, P, i32::MAX, 3, 1, 0);
        assert_eq!(w.check(P, Q, 2, 1, 0), Verdict::Append);
        assert_eq!(w.check(P, Q, i32::MAX, 3, 0), Verdict::Duplicate(at(1)));
        assert_eq!(w.check(P, Q, 5, 1, 0), Verdict::OutOfOrder { expected: 3 });
    }

    #[test]
    fn idle_pairs_expire_and_a_full_table_evicts_the_least_recently_used() {
        let mut w = SequenceWindows::new(2, 1_000);
        let a = 1 << 16;
        let b = 2 << 16;
        let c = 3 << 16;
        append(&mut w, a, 0, 1, 0, 0);
        append(&mut w, b, 0, 1, 1, 10);
        assert_eq!(w.check(a, Q, 1, 1, 20), Verdict::Append); // a is now the most recent
        w.stored(a, Q, 1, at(2));
        assert_eq!(w.evicted(), 0);
        append(&mut w, c, 0, 1, 3, 30); // evicts b
        assert_eq!((w.len(), w.evicted()), (2, 1));
        assert_eq!(w.check(b, Q, 1, 1, 40), Verdict::OutOfOrder { expected: 0 }, "b evicted");
        assert_eq!(w.check(a, Q, 0, 1, 40), Verdict::Duplicate(at(0)), "a kept");
        // At 1040 a (used at 40) and c (30) are idle for 1000 ms: both expire.
        assert_eq!(w.check(b, Q, 0, 1, 1_040), Verdict::Append);
        assert_eq!(w.len(), 1);
        assert_eq!(w.evicted(), 1, "expiry is not eviction");
        // A pair with a batch in progress is neither evicted nor expired.
        let mut w = SequenceWindows::new(1, 1_000);
        assert_eq!(w.check(a, Q, 0, 1, 0), Verdict::Append);
        assert_eq!(w.check(b, Q, 0, 1, 5_000), Verdict::Append);
        assert_eq!(w.len(), 2, "over the bound rather than lose a batch in progress");
        assert_eq!(w.check(a, Q, 0, 1, 5_000), Verdict::InProgress);
    }

    #[test]
    fn a_shard_cycling_through_many_pairs_keeps_the_most_recent_ones() {
        let mut w = SequenceWindows::new(4, 60_000);
        for q in 0..1_000u32 {
            let queue = QueueKey::new(TopicId::new(1), QueueId::new(q));
            assert_eq!(w.check(P, queue, 0, 1, u64::from(q)), Verdict::Append);
            w.stored(P, queue, 0, at(u64::from(q)));
        }
        assert_eq!(w.len(), 4);
        // The four most recent pairs are the ones kept, in use order.
        let kept: Vec<u32> = w.use_order().iter().map(|k| k.queue.queue_id.get()).collect();
        assert_eq!(kept, vec![996, 997, 998, 999]);
    }

    #[test]
    fn recovery_follows_the_log() {
        let mut w = SequenceWindows::new(16, 60_000);
        w.recover(P, Q, 0, 2, at(0), 0);
        w.recover(P, Q, 2, 2, at(2), 0);
        assert_eq!(w.check(P, Q, 0, 2, 0), Verdict::Duplicate(at(0)));
        assert_eq!(w.check(P, Q, 4, 1, 0), Verdict::Append);
        // A gap in the log (the pair was evicted and restarted) restarts the window there.
        let mut w = SequenceWindows::new(16, 60_000);
        w.recover(P, Q, 0, 2, at(0), 0);
        w.recover(P | 1, Q, 0, 1, at(2), 0);
        assert_eq!(w.check(P | 1, Q, 1, 1, 0), Verdict::Append);
        assert_eq!(w.check(P, Q, 0, 2, 0), Verdict::Fenced { current_epoch: 1 });
        w.forget_queue(Q);
        assert!(w.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Producer `p` sends (or resends) its batch number `batch` on queue `q`.
        Send {
            p: u8,
            q: u8,
            batch: u8,
        },
        /// The oldest append in progress completes (stored) or fails (aborted).
        Finish {
            store: bool,
        },
        /// Producer `p` starts a new epoch on queue `q` (its next send is batch 0 of it).
        NewEpoch {
            p: u8,
            q: u8,
        },
        Clock {
            ms: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..2u8, 0..2u8, 0..12u8).prop_map(|(p, q, batch)| Op::Send { p, q, batch }),
            4 => any::<bool>().prop_map(|store| Op::Finish { store }),
            1 => (0..2u8, 0..2u8).prop_map(|(p, q)| Op::NewEpoch { p, q }),
            1 => (0..3000u16).prop_map(|ms| Op::Clock { ms }),
        ]
    }

    /// Record count of batch `i` (sizes vary so sequences are not batch numbers).
    fn size(i: u8) -> u32 {
        u32::from(i % 3) + 1
    }

    fn seq_of(i: u8) -> i32 {
        (0..i).map(|j| size(j) as i32).sum()
    }

    type Model = HashMap<(u8, u8, u16), Vec<(u8, Stored)>>;

    /// Dedup is promised while a pair's state is held: once it is gone (expired, evicted,
    /// dropped), the model forgets what that pair stored.
    fn forget_lost(w: &SequenceWindows, stored: &mut Model) {
        stored.retain(|&(p, q, _), _| {
            let key = WindowKey {
                producer: i64::from(p) + 1,
                queue: QueueKey::new(TopicId::new(1), QueueId::new(u32::from(q))),
            };
            w.states.contains_key(&key)
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Whatever producers send, resend, reorder or abandon, and however appends end:
        /// a batch is stored at most once per epoch, the stored sequences of an epoch have no
        /// gap, a duplicate gets exactly the original's offsets, the window never answers a
        /// batch it holds as too old or out of order, and the table stays bounded.
        #[test]
        fn windows_store_each_batch_once_in_order(ops in proptest::collection::vec(op(), 1..200)) {
            let max_states = 3;
            let expiry_ms = 2_000;
            let mut w = SequenceWindows::new(max_states, expiry_ms);
            let mut now = 0u64;
            let mut offset = 0u64;
            let mut epochs: HashMap<(u8, u8), u16> = HashMap::new();
            // (p, q, epoch) -> stored (batch, offsets) in store order
            let mut stored: Model = HashMap::new();
            let mut in_progress: VecDeque<(u8, u8, u16, u8)> = VecDeque::new();
            let mut busy: HashSet<(u8, u8, u16, u8)> = HashSet::new();
            for op in ops {
                match op {
                    Op::Clock { ms } => now += u64::from(ms),
                    Op::NewEpoch { p, q } => *epochs.entry((p, q)).or_default() += 1,
                    Op::Send { p, q, batch } => {
                        // Expiry runs inside `check`; apply it first so the model knows.
                        w.expire(now);
                        forget_lost(&w, &mut stored);
                        let e = *epochs.get(&(p, q)).unwrap_or(&0);
                        let pid = (i64::from(p) + 1) << 16 | i64::from(e);
                        let queue = QueueKey::new(TopicId::new(1), QueueId::new(u32::from(q)));
                        let v = w.check(pid, queue, seq_of(batch), size(batch), now);
                        let mine = stored.entry((p, q, e)).or_default();
                        let was_stored = mine.iter().find(|(b, _)| *b == batch).map(|(_, s)| *s);
                        match v {
                            Verdict::Append => {
                                prop_assert!(was_stored.is_none(), "batch {batch} stored twice");
                                prop_assert!(!busy.contains(&(p, q, e, batch)), "appended twice at once");
                                // No gap: the previous stored batch of the epoch is batch - 1
                                // (unless in-progress ones sit between, or state was lost).
                                in_progress.push_back((p, q, e, batch));
                                busy.insert((p, q, e, batch));
                            }
                            Verdict::Duplicate(s) => {
                                prop_assert_eq!(Some(s), was_stored, "duplicate of batch {}", batch);
                            }
                            Verdict::InProgress => {
                                prop_assert!(busy.contains(&(p, q, e, batch)));
                            }
                            Verdict::TooOld { .. } | Verdict::OutOfOrder { .. } => {
                                prop_assert!(!busy.contains(&(p, q, e, batch)));
                            }
                            Verdict::Fenced { current_epoch } => prop_assert!(current_epoch > e),
                            Verdict::Mismatch { .. } => prop_assert!(false, "sizes are fixed per batch"),
                        }
                    }
                    Op::Finish { store } => {
                        let Some((p, q, e, batch)) = in_progress.pop_front() else { continue };
                        busy.remove(&(p, q, e, batch));
                        let pid = (i64::from(p) + 1) << 16 | i64::from(e);
                        let queue = QueueKey::new(TopicId::new(1), QueueId::new(u32::from(q)));
                        if store {
                            let s = Stored { base_offset: offset, store_timestamp_ms: 0 };
                            offset += 1;
                            w.stored(pid, queue, seq_of(batch), s);
                            let mine = stored.entry((p, q, e)).or_default();
                            if let Some((last, _)) = mine.last() {
                                prop_assert!(batch > *last, "stored out of order within an epoch");
                            }
                            mine.push((batch, s));
                        } else {
                            // A failed append: the log refuses the ones queued behind it too.
                            w.abort(pid, queue, seq_of(batch));
                            let later: Vec<_> = in_progress
                                .iter()
                                .copied()
                                .filter(|&(p2, q2, e2, _)| (p2, q2, e2) == (p, q, e))
                                .collect();
                            in_progress.retain(|&(p2, q2, e2, _)| (p2, q2, e2) != (p, q, e));
                            for (_, _, _, b) in later {
                                busy.remove(&(p, q, e, b));
                                w.abort(pid, queue, seq_of(b));
                            }
                        }
                    }
                }
                forget_lost(&w, &mut stored);
                prop_assert!(w.len() <= max_states + in_progress.len());
                let order = w.use_order();
                prop_assert_eq!(order.len(), w.len());
                let by_use: Vec<u64> = order.iter().map(|k| w.states[k].last_used_ms).collect();
                prop_assert!(by_use.windows(2).all(|p| p[0] <= p[1]), "use order follows last use");
            }
        }
    }
}
