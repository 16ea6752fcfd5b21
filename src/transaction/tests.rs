//! Tests of the pure transaction logic with a simulated clock: the check-back schedule, the
//! bounds, decisions, and replay after a crash at any point (proptest against a model).

use proptest::prelude::*;

use super::record::*;
use super::replay::*;
use super::table::*;
use crate::format::{BatchBuilder, Record};

const I: i64 = 1_000;

fn limits(check_max: u32, max_undecided: usize) -> Limits {
    Limits { check_interval_ms: I as u64, check_max, max_undecided }
}

fn dest(q: u32) -> Destination {
    Destination { topic_id: 1, queue_id: q }
}

fn batch(seq: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new(1 << 16);
    let body = seq.to_le_bytes();
    b.push(&Record { key: b"", tag: b"", properties: &[], body: &body, timestamp_ms: 5 }).unwrap();
    b.finish_transactional(7, seq)
}

fn half(id: u64, group: &str, stored_ms: i64) -> NewHalf {
    let b = batch(id as i32);
    NewHalf {
        transaction_id: id,
        group: group.into(),
        destination: dest(0),
        stored_ms,
        fingerprint: Fingerprint::of(&crate::format::batch::read_header(&b).unwrap()),
    }
}

/// Ticks every millisecond from `from` to `to` (inclusive); returns (time, id) of rollbacks.
fn tick_through(t: &mut Transactions, from: i64, to: i64) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    for now in from..=to {
        out.extend(t.tick(now).into_iter().map(|h| (now, h.transaction_id)));
    }
    out
}

#[test]
fn with_no_producer_a_half_is_rolled_back_after_check_max_unanswered_slots() {
    for check_max in [0, 1, 3, 15] {
        let mut t = Transactions::new(limits(check_max, 10));
        t.insert(half(0, "g", 100), 100);
        let end = 100 + (i64::from(check_max) + 1) * I;
        let rolled = tick_through(&mut t, 100, end + 5);
        assert_eq!(rolled, vec![(end, 0)], "check_max {check_max}");
        // Rolled back halves are deciding, no longer scheduled; finishing removes them.
        assert!(t.due_groups(end + 10 * I).is_empty());
        assert!(t.finish(0, Decision::Rollback).is_some());
        assert!(t.is_empty());
    }
}

#[test]
fn a_producer_that_always_answers_unknown_is_asked_check_max_times_one_interval_apart() {
    let check_max = 4;
    let mut t = Transactions::new(limits(check_max, 10));
    t.insert(half(3, "g", 0), 0);
    t.insert(half(4, "other", 0), 0);
    let mut asked = Vec::new();
    let mut rolled = Vec::new();
    for now in 0..=10 * I {
        // Not due before its first slot.
        for c in t.take_checks("g", now, 10) {
            asked.push((now, c.checks));
            assert_eq!(c.transaction_id, 3);
        }
        rolled.extend(t.tick(now).into_iter().map(|h| (now, h.transaction_id)));
    }
    let want: Vec<(i64, u32)> = (1..=check_max).map(|k| (i64::from(k) * I, k)).collect();
    assert_eq!(asked, want);
    // The half of "g" goes one interval after its last check; "other" (no producer) as late.
    rolled.sort();
    assert_eq!(rolled, vec![(5 * I, 3), (5 * I, 4)]);
}

#[test]
fn a_producer_that_comes_late_in_a_slot_is_still_asked_in_it() {
    let mut t = Transactions::new(limits(2, 10));
    t.insert(half(0, "g", 0), 0);
    assert!(t.tick(I + I / 2).is_empty());
    assert_eq!(t.due_groups(I + I / 2).into_iter().collect::<Vec<_>>(), vec!["g".to_string()]);
    let c = t.take_checks("g", I + I / 2, 10);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].checks, 1);
    // Asked, so the next slot opens one interval after the question.
    assert!(t.take_checks("g", 2 * I + I / 2 - 1, 10).is_empty());
    assert_eq!(t.take_checks("g", 2 * I + I / 2, 10).len(), 1);
    // Exhausted: not asked again, rolled back when the next slot opens.
    assert!(t.take_checks("g", 3 * I + I / 2, 10).is_empty());
    assert_eq!(t.tick(3 * I + I / 2).len(), 1);
}

#[test]
fn take_checks_is_bounded_and_oldest_first() {
    let mut t = Transactions::new(limits(3, 100));
    for id in 0..10 {
        t.insert(half(id, "g", id as i64), 0);
    }
    let first: Vec<u64> = t.take_checks("g", 2 * I, 4).iter().map(|c| c.transaction_id).collect();
    assert_eq!(first, vec![0, 1, 2, 3]);
    let next: Vec<u64> = t.take_checks("g", 2 * I, 100).iter().map(|c| c.transaction_id).collect();
    assert_eq!(next, (4..10).collect::<Vec<_>>());
}

#[test]
fn the_cap_refuses_new_halves_until_one_is_decided() {
    let mut t = Transactions::new(limits(3, 2));
    t.admit().unwrap();
    t.admit().unwrap();
    // Two halves being appended fill the table already.
    assert_eq!(t.admit(), Err(TxnError::TooMany(2)));
    t.cancel_admit();
    t.admit().unwrap();
    t.insert(half(0, "g", 0), 0);
    t.insert(half(1, "g", 0), 0);
    assert_eq!(t.admit(), Err(TxnError::TooMany(2)));
    assert!(TxnError::TooMany(2).to_string().contains("max_undecided_halves"));
    t.begin_decision(0, dest(0), "g").unwrap();
    assert!(t.admit().is_err(), "a half being decided still counts");
    t.finish(0, Decision::Commit);
    t.admit().unwrap();
}

#[test]
fn decisions_name_what_is_wrong() {
    let mut t = Transactions::new(limits(3, 10));
    t.insert(half(5, "g", 0), 0);
    assert_eq!(t.begin_decision(6, dest(0), "g"), Err(TxnError::Unknown(6)));
    assert_eq!(
        t.begin_decision(5, dest(1), "g"),
        Err(TxnError::WrongQueue { id: 5, belongs: dest(0) })
    );
    assert_eq!(
        t.begin_decision(5, dest(0), "h"),
        Err(TxnError::WrongGroup { id: 5, group: "g".into() })
    );
    let h = t.begin_decision(5, dest(0), "g").unwrap();
    assert_eq!(h.transaction_id, 5);
    // A second END_TRANSACTION while the first is being recorded.
    assert_eq!(t.begin_decision(5, dest(0), "g"), Err(TxnError::Deciding(5)));
    // Not checked while deciding.
    assert!(t.take_checks("g", 10 * I, 10).is_empty());
    assert!(t.tick(100 * I).is_empty());
    // The op record could not be written: undecided again, due (its slot opened long ago).
    t.abort_decision(5);
    assert_eq!(t.take_checks("g", 100 * I, 10).len(), 1);
    t.begin_decision(5, dest(0), "g").unwrap();
    t.finish(5, Decision::Commit);
    // A repeated commit: already decided, and which way.
    let e = t.begin_decision(5, dest(0), "g").unwrap_err();
    assert_eq!(e, TxnError::Decided { id: 5, decision: Decision::Commit });
    assert!(e.to_string().contains("already committed"));
}

#[test]
fn recent_decisions_are_bounded() {
    let mut t = Transactions::new(limits(3, 10));
    for id in 0..(RECENT_DECISIONS as u64 + 10) {
        t.remember(id, Decision::Rollback);
        t.remember(id, Decision::Rollback);
    }
    assert_eq!(t.begin_decision(0, dest(0), "g"), Err(TxnError::Unknown(0)));
    assert!(matches!(
        t.begin_decision(RECENT_DECISIONS as u64 + 9, dest(0), "g"),
        Err(TxnError::Decided { .. })
    ));
}

#[test]
fn after_a_restart_missed_slots_are_not_counted() {
    let mut t = Transactions::new(limits(2, 10));
    // Stored long before the restart at 100 intervals.
    t.insert(half(0, "g", 0), 100 * I);
    assert!(t.tick(100 * I).is_empty());
    assert_eq!(t.take_checks("g", 100 * I, 10)[0].checks, 1);
}

#[test]
fn list_shows_age_and_checks_oldest_first() {
    let mut t = Transactions::new(limits(3, 10));
    t.insert(half(2, "g", 10), 10);
    t.insert(half(1, "h", 0), 10);
    t.take_checks("g", 2 * I, 10);
    t.begin_decision(1, dest(0), "h").unwrap();
    let l = t.list(3 * I, 10);
    assert_eq!(l.len(), 2);
    assert_eq!((l[0].transaction_id, l[0].age_ms, l[0].checks, l[0].deciding), (1, 3000, 0, true));
    assert_eq!((l[1].transaction_id, l[1].age_ms, l[1].checks, l[1].deciding), (2, 2990, 1, false));
    assert_eq!(t.list(3 * I, 1).len(), 1);
}

#[test]
fn a_delivered_copy_is_found_by_its_fingerprint() {
    let mut t = Transactions::new(limits(3, 10));
    t.insert(half(1, "g", 0), 0);
    t.insert(half(2, "g", 0), 0);
    let fp = half(2, "g", 0).fingerprint;
    assert_eq!(t.find_delivered(dest(0), fp).map(|h| h.transaction_id), Some(2));
    assert_eq!(t.find_delivered(dest(1), fp), None);
    assert_eq!(t.low_watermark(10), 1);
    assert_eq!(t.low_watermark_after(1, 10), 2);
    assert_eq!(t.low_watermark_after(2, 10), 1);
    t.finish(1, Decision::Rollback);
    assert_eq!(t.low_watermark_after(2, 10), 10);
    t.finish(2, Decision::Commit);
    assert_eq!(t.find_delivered(dest(0), fp), None);
    assert_eq!(t.low_watermark(10), 10);
}

/// What the pure table can be asked to do, in any order.
#[derive(Debug, Clone)]
enum Step {
    Insert { group: u8 },
    Advance { ms: i64 },
    Ask { group: u8, max: usize },
    Decide { pick: prop::sample::Index, commit: bool },
    Abort { pick: prop::sample::Index },
    Finish { pick: prop::sample::Index },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..3).prop_map(|group| Step::Insert { group }),
        (0i64..(2 * I)).prop_map(|ms| Step::Advance { ms }),
        (0u8..3, 1usize..4).prop_map(|(group, max)| Step::Ask { group, max }),
        (any::<prop::sample::Index>(), any::<bool>())
            .prop_map(|(pick, commit)| Step::Decide { pick, commit }),
        any::<prop::sample::Index>().prop_map(|pick| Step::Abort { pick }),
        any::<prop::sample::Index>().prop_map(|pick| Step::Finish { pick }),
    ]
}

proptest! {
    /// Whatever happens: a half is asked at most `check_max` times, never twice within one
    /// interval, never before its first slot; it is rolled back only after `check_max` checks
    /// and never before `(check_max + 1)` intervals from its store; with a tick at least every
    /// interval nothing outlives `2 x (check_max + 1)` intervals undecided; the cap holds.
    #[test]
    fn the_schedule_keeps_its_promises(
        steps in proptest::collection::vec(step(), 1..200),
        check_max in 0u32..4,
    ) {
        let cap = 6;
        let mut t = Transactions::new(limits(check_max, cap));
        let mut now = 0i64;
        let mut next_id = 0u64;
        // id -> (stored, asked times, deciding)
        let mut model: std::collections::BTreeMap<u64, (i64, Vec<i64>, bool)> = Default::default();
        for s in steps {
            match s {
                Step::Insert { group } => {
                    let ok = t.admit().is_ok();
                    prop_assert_eq!(ok, model.len() < cap);
                    if ok {
                        t.insert(half(next_id, &format!("g{group}"), now), now);
                        model.insert(next_id, (now, vec![], false));
                        next_id += 1;
                    }
                }
                Step::Advance { ms } => {
                    now += ms;
                    for h in t.tick(now) {
                        let (stored, asked, deciding) = model.get_mut(&h.transaction_id).unwrap();
                        prop_assert!(!*deciding);
                        prop_assert!(now >= *stored + (i64::from(check_max) + 1) * I);
                        if let Some(last) = asked.last() {
                            prop_assert!(now >= last + I);
                        }
                        *deciding = true;
                    }
                }
                Step::Ask { group, max } => {
                    let got = t.take_checks(&format!("g{group}"), now, max);
                    prop_assert!(got.len() <= max);
                    for c in got {
                        let (stored, asked, deciding) = model.get_mut(&c.transaction_id).unwrap();
                        prop_assert!(!*deciding);
                        prop_assert!(now >= *stored + I);
                        if let Some(last) = asked.last() {
                            prop_assert!(now >= last + I);
                        }
                        asked.push(now);
                        prop_assert!(asked.len() as u32 <= check_max);
                        prop_assert!(c.checks as usize >= asked.len());
                    }
                }
                Step::Decide { pick, commit } => {
                    if model.is_empty() { continue; }
                    let id = *model.keys().nth(pick.index(model.len())).unwrap();
                    let r = t.begin_decision(id, dest(0), &format!("g{}", 0));
                    let (_, _, deciding) = model.get_mut(&id).unwrap();
                    match r {
                        Ok(_) => { prop_assert!(!*deciding); *deciding = true; }
                        Err(TxnError::Deciding(_)) => prop_assert!(*deciding),
                        Err(TxnError::WrongGroup { .. }) => {}
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                    let _ = commit;
                }
                Step::Abort { pick } => {
                    if model.is_empty() { continue; }
                    let id = *model.keys().nth(pick.index(model.len())).unwrap();
                    t.abort_decision(id);
                    model.get_mut(&id).unwrap().2 = false;
                }
                Step::Finish { pick } => {
                    if model.is_empty() { continue; }
                    let id = *model.keys().nth(pick.index(model.len())).unwrap();
                    if model[&id].2 {
                        prop_assert!(t.finish(id, Decision::Rollback).is_some());
                        model.remove(&id);
                    }
                }
            }
            prop_assert_eq!(t.len(), model.len());
            prop_assert_eq!(t.low_watermark(next_id), model.keys().next().copied().unwrap_or(next_id));
            for (id, (_, asked, _)) in &model {
                prop_assert!(t.checks(*id).unwrap() >= asked.len() as u32);
                prop_assert!(t.checks(*id).unwrap() <= check_max);
            }
        }
        // Ticking every interval from here decides everything within 2 x (check_max + 1)
        // intervals of its store, whoever asks.
        let horizon = now + 2 * (i64::from(check_max) + 2) * I;
        while now < horizon {
            now += I;
            for h in t.tick(now) {
                model.get_mut(&h.transaction_id).unwrap().2 = true;
            }
        }
        for (id, (stored, _, deciding)) in &model {
            prop_assert!(*deciding || *stored > now - 2 * (i64::from(check_max) + 1) * I, "{} undecided", id);
        }
    }

    /// The log as the broker writes it (halves; op records built at decision time, copied in
    /// any order later; decisions abandoned), cut at any point by a crash: replay from the last
    /// op record's watermark gives exactly the halves without an op record in the log, with
    /// their groups and destinations, and remembers the decided ones it read.
    #[test]
    fn replay_after_a_crash_at_any_point_finds_exactly_the_undecided_halves(
        actions in proptest::collection::vec((0u8..4, any::<prop::sample::Index>()), 0..120),
    ) {
        let mut t = Transactions::new(limits(15, 1000));
        let mut halves: Vec<Vec<u8>> = Vec::new();
        let mut ops: Vec<Vec<u8>> = Vec::new();
        // Op records built but not yet copied into the log: (id, body).
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut decided = std::collections::BTreeSet::new();
        for (kind, pick) in actions {
            match kind {
                0 | 1 => {
                    let id = halves.len() as u64;
                    let b = batch(id as i32);
                    let record = HalfRecord {
                        group: format!("g{}", id % 3),
                        destination: dest((id % 4) as u32),
                        op_from: ops.len() as u64,
                        batch: &b,
                    };
                    halves.push(record.encode().unwrap());
                    t.insert(decode_half_for_test(id, &halves[id as usize]), 0);
                }
                2 => {
                    // Begin a decision: the op record is built now, with the watermark now.
                    let undecided: Vec<u64> = (0..halves.len() as u64)
                        .filter(|id| t.contains(*id) && !pending.iter().any(|(p, _)| p == id))
                        .collect();
                    if undecided.is_empty() { continue; }
                    let id = undecided[pick.index(undecided.len())];
                    let group = format!("g{}", id % 3);
                    t.begin_decision(id, dest((id % 4) as u32), &group).unwrap();
                    let op = OpRecord {
                        decision: if id % 2 == 0 { Decision::Commit } else { Decision::Rollback },
                        by: DecidedBy::Producer,
                        transaction_id: id,
                        low_watermark: t.low_watermark(halves.len() as u64),
                    };
                    pending.push((id, op.encode()));
                }
                _ => {
                    // Copy one pending op record (any of them) into the log, or abandon it.
                    if pending.is_empty() { continue; }
                    let (id, body) = pending.remove(pick.index(pending.len()));
                    if pick.index(5) == 0 {
                        t.abort_decision(id);
                    } else {
                        ops.push(body);
                        t.finish(id, Decision::Commit);
                        decided.insert(id);
                    }
                }
            }
        }
        // Crash: replay as the broker does at start.
        let from = replay_from(ops.last().map(|b| b.as_slice()), 0, halves.len() as u64);
        let mut r = TxnReplay::new(limits(15, 1000), from, 0, i64::MIN);
        if (from as usize) < halves.len() {
            let (_, op_from) = half_origin(&halves[from as usize]).unwrap();
            for op in &ops[op_from as usize..] {
                r.op(op);
            }
        }
        for (id, body) in halves.iter().enumerate().skip(from as usize) {
            r.half(id as u64, 0, body);
        }
        prop_assert_eq!(r.skipped, 0);
        let got = r.finish();
        let want: Vec<u64> = (0..halves.len() as u64).filter(|id| !decided.contains(id)).collect();
        let got_ids: Vec<u64> = got.list(0, usize::MAX).iter().map(|h| h.transaction_id).collect();
        prop_assert_eq!(&got_ids, &want);
        for h in got.list(0, usize::MAX) {
            prop_assert_eq!(h.group, format!("g{}", h.transaction_id % 3));
            prop_assert_eq!(h.destination, dest((h.transaction_id % 4) as u32));
            prop_assert!(!h.deciding);
        }
        // Halves decided at or after the watermark are remembered as decided.
        let mut got = got;
        for id in decided.iter().filter(|id| **id >= from) {
            let group = format!("g{}", id % 3);
            let decided_err = matches!(
                got.begin_decision(*id, dest((id % 4) as u32), &group),
                Err(TxnError::Decided { .. })
            );
            prop_assert!(decided_err);
        }
    }
}

fn decode_half_for_test(id: u64, body: &[u8]) -> NewHalf {
    decode_half(id, 0, body).expect("a half record the test wrote")
}

#[test]
fn replay_skips_garbage_and_starts_at_the_half_queue_start_without_ops() {
    assert_eq!(replay_from(None, 3, 9), 3);
    assert_eq!(replay_from(Some(b"junk"), 3, 9), 3);
    let op = |w| {
        OpRecord {
            decision: Decision::Commit,
            by: DecidedBy::Producer,
            transaction_id: 0,
            low_watermark: w,
        }
        .encode()
    };
    assert_eq!(replay_from(Some(&op(5)), 3, 9), 5);
    // A watermark behind retention, or past the end (impossible unless damaged): clamped.
    assert_eq!(replay_from(Some(&op(1)), 3, 9), 3);
    assert_eq!(replay_from(Some(&op(20)), 3, 9), 9);
    let mut r = TxnReplay::new(limits(1, 10), 0, 0, i64::MIN);
    r.op(b"x");
    r.half(0, 0, b"y");
    assert_eq!((r.ops, r.halves, r.skipped), (1, 1, 2));
    assert!(r.finish().is_empty());
}

#[test]
fn checks_used_before_a_restart_count_against_the_limit() {
    // Stored at 0, slots open at I, 2I, 3I...; the broker last ran at 2.5 I: the first slot
    // closed (used), the second was open (granted again).
    let mut t = Transactions::new(limits(3, 10));
    t.admit().unwrap();
    t.insert_replayed(half(1, "g", 0), 10 * I, I * 5 / 2);
    assert_eq!(t.checks(1), Some(1));
    // Long down: no more than the slots closed while it ran, whatever the downtime.
    assert!(t.tick(10 * I).is_empty());
    // A half whose every check was used before the stop is rolled back at the next slot,
    // however many times the broker restarts.
    let mut t = Transactions::new(limits(3, 10));
    t.admit().unwrap();
    t.insert_replayed(half(2, "g", 0), 10 * I, 100 * I);
    assert_eq!(t.checks(2), Some(3));
    assert!(t.take_checks("g", 10 * I, 10).is_empty(), "no check left to ask");
    let rolled: Vec<u64> = t.tick(10 * I).iter().map(|h| h.transaction_id).collect();
    assert_eq!(rolled, vec![2]);
    // Never seen running (an empty log before): nothing counted.
    let mut t = Transactions::new(limits(3, 10));
    t.admit().unwrap();
    t.insert_replayed(half(3, "g", 0), 0, i64::MIN);
    assert_eq!(t.checks(3), Some(0));
}
