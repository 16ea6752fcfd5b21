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
mod tests;
