//! Tests of the idempotence windows (split from `idempotence.rs`: no code changed).

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
