//! Model test: random sequences of append / read / flush / close+reopen / crash / retention /
//! index checkpoint / index-cache eviction against an in-memory model of what each queue must
//! hold. The index runs with the smallest budget and files of 128 entries, so lookups go to
//! the index files and cross file boundaries.

mod common;

use common::{batch, batch_tag, off, run};
use proptest::prelude::*;
use ringmq::storage::commit_log::now_ms;
use ringmq::storage::index_store::CHECKPOINT_FILE;
use ringmq::storage::sim_dir::SimDir;
use ringmq::storage::{
    CommitLog, FlushMode, LogPosition, QueueId, QueueKey, StorageConfig, StorageError, TopicId,
};
use std::rc::Rc;

#[derive(Debug, Clone)]
enum Op {
    /// Append to queue `q` a batch of `records` records of `body` bytes; `commit` waits for
    /// durability (sync mode).
    Append {
        q: u8,
        records: u8,
        body: u16,
        commit: bool,
    },
    /// Read queue `q` from a position `frac`/255 through its offsets.
    Read {
        q: u8,
        frac: u8,
        max_bytes: u16,
    },
    Flush,
    Reopen,
    Crash,
    /// Retention with a clock far in the future: deletes every sealed, durable segment.
    Retention,
    /// Such a retention run, and a crash after `steps` turns of the executor (anywhere in
    /// the run: recording the log start, unlinking, dropping index entries, the floors).
    RetentionCrash {
        steps: u8,
    },
    /// A crash (inside such a retention run when `retention_steps` is set) after which the
    /// index checkpoint cannot be used (its file is gone): recovery rebuilds the queue index
    /// by scanning the log.
    CrashRebuild {
        retention_steps: Option<u8>,
    },
    /// Writes and syncs the index, then records its checkpoint.
    IndexCheckpoint,
    /// Drops every cached index block.
    ClearIndexCache,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..4, 1u8..6, 0u16..3000, any::<bool>())
            .prop_map(|(q, records, body, commit)| Op::Append { q, records, body, commit }),
        3 => (0u8..4, any::<u8>(), 1u16..20000).prop_map(|(q, frac, max_bytes)| Op::Read { q, frac, max_bytes }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Retention),
        1 => (0u8..80).prop_map(|steps| Op::RetentionCrash { steps }),
        1 => proptest::option::of(0u8..80)
            .prop_map(|retention_steps| Op::CrashRebuild { retention_steps }),
        1 => Just(Op::IndexCheckpoint),
        1 => Just(Op::ClearIndexCache),
    ]
}

fn config(mode: FlushMode) -> StorageConfig {
    StorageConfig {
        dir: "/sim".into(),
        segment_size_bytes: 64 * 1024,
        max_batch_bytes: 20 * 1024,
        chunk_size_bytes: 8192,
        chunk_pool_chunks: 8,
        cache_bytes: 12 * 1024,
        flush_mode: mode,
        flush_interval_ms: 3,
        index_cache_bytes: INDEX_BUDGET_BYTES,
        index_file_entries: 128,
        ..StorageConfig::default()
    }
}

const INDEX_BUDGET_BYTES: usize = 64 * 1024;

fn key(q: u8) -> QueueKey {
    QueueKey::new(TopicId::new(1 + u32::from(q % 2)), QueueId::new(u32::from(q)))
}

/// What the model knows: every append in order, and how many of them are durable.
#[derive(Default)]
struct Model {
    /// (queue, tag, records) in append order.
    appends: Vec<(u8, u64, u64)>,
    /// Where each append ends in the log (as `appends`).
    ends: Vec<LogPosition>,
    durable: usize,
    /// Batches of each queue deleted by retention (always its oldest).
    dropped: [usize; 4],
}

impl Model {
    fn queue(&self, q: u8) -> Vec<(u64, u64)> {
        self.appends.iter().filter(|a| a.0 == q).map(|a| (a.1, a.2)).collect()
    }
    /// In sync flush mode only durable batches are readable.
    fn visible(&self, q: u8) -> Vec<(u64, u64)> {
        self.appends[..self.durable].iter().filter(|a| a.0 == q).map(|a| (a.1, a.2)).collect()
    }
    /// Tags of the batches of `q` still stored.
    fn kept_tags(&self, q: u8) -> Vec<u64> {
        self.queue(q).iter().skip(self.dropped[q as usize]).map(|(t, _)| *t).collect()
    }
    /// The log may make appends durable that nobody waited for: a flush it needs for its own
    /// work (index write-back before an append, retention) covers everything appended so far.
    /// In sync mode those become readable too, so the model learns the log's durable end
    /// (which must cover everything the model already counts as durable).
    fn learn_durable(&mut self, durable_end: LogPosition) {
        let covered = self.ends.iter().take_while(|e| **e <= durable_end).count();
        assert!(covered >= self.durable, "durable end {durable_end:?} went back");
        self.durable = covered;
    }
    /// How many of `q`'s batches a floor of `min` drops. The floor must be a batch
    /// boundary (of a batch the model knows) at or above the model's.
    fn dropped_to(&self, q: u8, min: u64) -> usize {
        let batches = self.queue(q);
        let mut offset = 0u64;
        let mut dropped = 0usize;
        while offset < min {
            assert!(dropped < batches.len(), "queue {q}: floor {min} past every batch");
            offset += batches[dropped].1;
            dropped += 1;
        }
        assert_eq!(offset, min, "queue {q}: floor {min} splits a batch");
        assert!(dropped >= self.dropped[q as usize], "queue {q}: floor went back");
        dropped
    }
    /// Lowest offset of `q` still stored.
    fn min_offset(&self, q: u8) -> u64 {
        self.queue(q).iter().take(self.dropped[q as usize]).map(|(_, n)| n).sum()
    }
}

async fn tags_of(log: &Rc<CommitLog<SimDir>>, q: QueueKey) -> Vec<u64> {
    let mut out = vec![];
    let mut off = log.offsets(q).min;
    loop {
        let r = log.read(q, off, 4096).await.expect("read");
        if r.batches.is_empty() {
            return out;
        }
        out.extend(r.batches.iter().map(|b| batch_tag(b)));
        off = r.next_offset;
    }
}

async fn run_ops(seed: u64, mode: FlushMode, ops: Vec<Op>) {
    let dir = SimDir::new(seed);
    // Half the runs tear unsynced writes at sector granularity on crash.
    dir.set_torn_crash(seed % 2 == 0);
    let mut log = CommitLog::open_with(dir.clone(), config(mode)).await.unwrap();
    let mut m = Model::default();
    let mut next_tag = 0u64;
    for op in ops {
        match op {
            Op::Append { q, records, body, commit } => {
                next_tag += 1;
                let b = batch(next_tag, records as usize, body as usize);
                let expect_offset: u64 = m.queue(q).iter().map(|(_, n)| n).sum();
                let a = if commit {
                    let (a, _) = log.append_committed(key(q), &b).await.unwrap();
                    a
                } else {
                    log.append(key(q), &b).await.unwrap()
                };
                assert_eq!(a.base_offset, off(expect_offset));
                m.appends.push((q, next_tag, u64::from(records)));
                m.ends.push(a.end);
                if commit && mode == FlushMode::Sync {
                    m.durable = m.appends.len();
                }
            }
            Op::Read { q, frac, max_bytes } => {
                m.learn_durable(log.positions().2);
                let batches = match mode {
                    FlushMode::Sync => m.visible(q),
                    FlushMode::Async => m.queue(q),
                };
                let total: u64 = batches.iter().map(|(_, n)| n).sum();
                let min = m.min_offset(q).min(total);
                let at = min + (total - min) * u64::from(frac) / 255;
                let r = log.read(key(q), off(at), max_bytes as usize).await.unwrap();
                // Expected: the batch holding `at`, then as many as fit in max_bytes.
                let mut start = 0u64;
                let idx = batches.iter().position(|(_, n)| {
                    let hit = at < start + n;
                    start += n;
                    hit
                });
                match idx {
                    None => assert!(r.batches.is_empty(), "read past the end returned data"),
                    Some(i) => {
                        let got: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
                        assert!(!got.is_empty());
                        let want: Vec<u64> =
                            batches[i..i + got.len()].iter().map(|(t, _)| *t).collect();
                        assert_eq!(got, want);
                        let size: usize = r.batches.iter().map(|b| b.len()).sum();
                        assert!(got.len() == 1 || size <= max_bytes as usize);
                    }
                }
            }
            Op::Flush => {
                log.flush().await.unwrap();
                m.durable = m.appends.len();
            }
            Op::Reopen => {
                log.close().await.unwrap();
                log = CommitLog::open_with(dir.clone(), config(mode)).await.unwrap();
                m.durable = m.appends.len();
            }
            Op::Crash | Op::RetentionCrash { .. } | Op::CrashRebuild { .. } => {
                let retention_steps = match op {
                    Op::RetentionCrash { steps } => Some(steps),
                    Op::CrashRebuild { retention_steps } => retention_steps,
                    _ => None,
                };
                if let Some(steps) = retention_steps {
                    let run = {
                        let log = log.clone();
                        let far_future = now_ms() + 100 * 3_600_000;
                        ringmq::runtime::spawn(async move {
                            let _ = log.enforce_retention(far_future).await;
                        })
                    };
                    for _ in 0..steps {
                        ringmq::runtime::yield_once().await;
                    }
                    dir.crash();
                    // The run goes on against a dead directory handle: it only gets errors,
                    // and must not hang.
                    let ended =
                        ringmq::runtime::timeout(std::time::Duration::from_secs(5), run).await;
                    assert!(ended.is_some(), "a retention run hung after a crash");
                } else {
                    dir.crash();
                }
                if matches!(op, Op::CrashRebuild { .. }) {
                    dir.remove_now(CHECKPOINT_FILE);
                }
                drop(log);
                log = CommitLog::open_with(dir.clone(), config(mode)).await.unwrap();
                // Retention may have deleted durable batches before the crash: each queue's
                // floor is a batch boundary at or above what the model had dropped.
                for q in 0..4u8 {
                    m.dropped[q as usize] = m.dropped_to(q, log.offsets(key(q)).min.get());
                }
                // What survived must be every durable append plus a prefix of the rest.
                let mut kept = 0usize;
                for q in 0..4u8 {
                    let got = tags_of(&log, key(q)).await;
                    let want = m.kept_tags(q);
                    assert!(
                        want.starts_with(&got),
                        "queue {q}: {got:?} is not a prefix of {want:?}"
                    );
                    // Retention deletes durable batches only, so they are in the prefix.
                    kept += m.dropped[q as usize] + got.len();
                }
                assert!(kept >= m.durable, "lost durable appends: kept {kept} < {}", m.durable);
                m.appends.truncate(kept);
                m.ends.truncate(kept);
                for q in 0..4u8 {
                    let got = tags_of(&log, key(q)).await;
                    assert_eq!(
                        got,
                        m.kept_tags(q),
                        "survivors of queue {q} are not the global prefix"
                    );
                }
                m.durable = m.appends.len();
            }
            Op::Retention => {
                let far_future = now_ms() + 100 * 3_600_000;
                log.enforce_retention(far_future).await.unwrap();
                for q in 0..4u8 {
                    let min = log.offsets(key(q)).min.get();
                    m.dropped[q as usize] = m.dropped_to(q, min);
                    if min > 0 {
                        assert!(matches!(
                            log.read(key(q), off(min - 1), 100).await,
                            Err(StorageError::OffsetOutOfRange { .. })
                        ));
                    }
                }
            }
            Op::IndexCheckpoint => {
                log.checkpoint_index().await.unwrap();
                m.durable = m.appends.len();
            }
            Op::ClearIndexCache => log.clear_index_cache(),
        }
        let memory = log.index_memory();
        assert!(memory.total_bytes() <= INDEX_BUDGET_BYTES, "index over budget: {memory:?}");
    }
    log.flush().await.unwrap();
    for q in 0..4u8 {
        assert_eq!(tags_of(&log, key(q)).await, m.kept_tags(q));
        let total: u64 = m.queue(q).iter().map(|(_, n)| n).sum();
        assert_eq!(log.offsets(key(q)).next, off(total));
        assert_eq!(log.offsets(key(q)).min, off(m.min_offset(q)));
        if total > 0 {
            assert!(matches!(
                log.read(key(q), off(total + 1), 100).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
        }
    }
    log.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(
        seed in any::<u64>(),
        sync in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mode = if sync { FlushMode::Sync } else { FlushMode::Async };
        run(move || run_ops(seed, mode, ops));
    }
}

/// Regression cases found while developing the model test are kept here by name.
#[test]
fn crash_right_after_segment_roll() {
    let mut ops = vec![];
    for i in 0..40u8 {
        ops.push(Op::Append { q: i % 4, records: 5, body: 2900, commit: i % 7 == 0 });
    }
    ops.push(Op::Crash);
    ops.push(Op::Append { q: 1, records: 1, body: 10, commit: true });
    ops.push(Op::Reopen);
    run(move || run_ops(99, FlushMode::Sync, ops));
}

/// Found by `log_matches_model` in CI (seed 285404002391266404, sync mode): retention flushed
/// the log, so an append nobody waited for became durable and readable; the model expected a
/// read to stop before it. Data the log made durable on its own is readable (the model now
/// learns the log's durable end before a read).
#[test]
fn an_append_made_durable_by_retention_is_readable_in_sync_mode() {
    // (records, body, commit) of each append to queue 0, as the failing case made them.
    let appends = [
        (3, 713, false),
        (3, 1099, false),
        (5, 2229, false),
        (4, 801, false),
        (4, 2947, false),
        (5, 2492, false),
        (4, 2848, false),
        (1, 2361, false),
        (1, 1910, false),
        (5, 490, false),
        (1, 1501, true),
        (1, 0, false),
    ];
    let mut ops: Vec<Op> = appends
        .into_iter()
        .map(|(records, body, commit)| Op::Append { q: 0, records, body, commit })
        .collect();
    ops.push(Op::Retention);
    ops.push(Op::Read { q: 0, frac: 0, max_bytes: 1730 });
    run(move || run_ops(285404002391266404, FlushMode::Sync, ops));
}

/// Found by `log_matches_model` (CI, 2026-12-03): a crash while a prefetch was in flight. The
/// prefetch's task held the crashed log alive, so its index writer went on writing the index
/// files of the log reopened on the same directory ("entry 5 is missing").
#[test]
fn crash_with_a_prefetch_in_flight() {
    let ops = vec![
        Op::Crash,
        Op::Append { q: 1, records: 4, body: 179, commit: false },
        Op::Append { q: 2, records: 1, body: 555, commit: false },
        Op::IndexCheckpoint,
        Op::Read { q: 0, frac: 0, max_bytes: 1 },
        Op::Append { q: 3, records: 5, body: 1931, commit: false },
        Op::ClearIndexCache,
        Op::Append { q: 0, records: 2, body: 2187, commit: false },
        Op::Append { q: 1, records: 3, body: 2595, commit: false },
        Op::Append { q: 3, records: 1, body: 1735, commit: false },
        Op::Append { q: 0, records: 3, body: 238, commit: false },
        Op::Append { q: 2, records: 1, body: 0, commit: false },
        Op::IndexCheckpoint,
        Op::Append { q: 0, records: 2, body: 505, commit: false },
        Op::Append { q: 0, records: 1, body: 383, commit: false },
        Op::Append { q: 2, records: 2, body: 1866, commit: false },
        Op::Append { q: 0, records: 2, body: 2048, commit: false },
        Op::Append { q: 0, records: 5, body: 2630, commit: false },
        Op::Read { q: 1, frac: 0, max_bytes: 1 },
        Op::Append { q: 2, records: 2, body: 2298, commit: false },
        Op::Append { q: 3, records: 1, body: 2614, commit: false },
        Op::Read { q: 2, frac: 0, max_bytes: 4649 },
        Op::Read { q: 3, frac: 0, max_bytes: 1 },
        Op::Append { q: 0, records: 4, body: 2251, commit: false },
        Op::Read { q: 1, frac: 130, max_bytes: 1592 },
        Op::Append { q: 1, records: 5, body: 2131, commit: false },
        Op::Append { q: 1, records: 1, body: 2348, commit: false },
        Op::Append { q: 2, records: 4, body: 1008, commit: false },
        Op::Append { q: 2, records: 4, body: 694, commit: true },
        Op::Append { q: 0, records: 4, body: 2707, commit: true },
        Op::Read { q: 1, frac: 153, max_bytes: 6907 },
        Op::Append { q: 0, records: 2, body: 2889, commit: true },
        Op::Read { q: 1, frac: 115, max_bytes: 574 },
        Op::Append { q: 1, records: 3, body: 1657, commit: false },
    ];
    run(move || run_ops(3613338673496833866, FlushMode::Async, ops));
}

/// Found by `log_matches_model` with `RetentionCrash` (round 30): a crash inside a retention
/// run.
#[test]
fn a_crash_inside_a_retention_run_loses_no_durable_append() {
    let a = |q, records, body, commit| Op::Append { q, records, body, commit };
    let ops = vec![
        a(0, 4, 432, false),
        a(0, 4, 2631, false),
        a(0, 3, 1575, false),
        a(0, 1, 2085, true),
        a(1, 2, 2986, false),
        a(0, 5, 2616, false),
        a(0, 5, 950, true),
        a(0, 3, 851, true),
        a(0, 3, 1516, false),
        a(0, 4, 1165, false),
        a(0, 3, 2090, false),
        a(2, 1, 2616, false),
        a(3, 5, 1533, false),
        a(3, 1, 2900, true),
        a(2, 5, 2598, false),
        Op::Retention,
        a(1, 4, 2810, false),
        a(0, 2, 2387, true),
        Op::RetentionCrash { steps: 0 },
        a(0, 5, 453, true),
        a(0, 5, 2354, false),
        a(0, 5, 1529, false),
        Op::Flush,
        Op::RetentionCrash { steps: 2 },
    ];
    run(move || run_ops(735980021921639306, FlushMode::Sync, ops));
}

/// Found by `log_matches_model` with `CrashRebuild` (round 31): a crash inside a retention
/// run that also loses the index checkpoint, so recovery rebuilds the index from the log. Queue
/// 1's only batch was in a deleted segment; the queue kept its old floor (0), below the offset
/// it had given out, and the model counted that batch as lost.
#[test]
fn a_crash_inside_retention_with_the_index_rebuilt_keeps_emptied_queues_offsets() {
    let a = |q, records, body, commit| Op::Append { q, records, body, commit };
    let ops = vec![
        a(0, 5, 1635, false),
        a(0, 2, 2496, false),
        a(0, 5, 2470, false),
        a(1, 5, 1175, false),
        a(0, 1, 0, false),
        a(2, 3, 1239, false),
        a(2, 4, 1570, false),
        a(2, 3, 807, false),
        Op::IndexCheckpoint,
        a(0, 1, 1375, false),
        a(2, 2, 2661, false),
        Op::Flush,
        a(0, 1, 0, false),
        a(0, 1, 0, false),
        a(0, 1, 0, false),
        a(0, 3, 233, false),
        a(0, 5, 2385, false),
        Op::Flush,
        Op::CrashRebuild { retention_steps: Some(3) },
        // The queue goes on from the offset it had reached.
        a(1, 2, 100, true),
    ];
    run(move || run_ops(3101878834011201, FlushMode::Async, ops));
}

/// Found by `log_matches_model` (round 31, 6,000 cases): a read of queue 1's index block began
/// while a write-back of its entries was in flight, completed first, and was cached without
/// them; once the write ended, every lookup of those entries failed as "missing (the file is
/// shorter than written)" although the file held them (the index's block cache, not the
/// crashes, was at fault: `index_store::tests::a_block_read_during_a_write_of_its_queue_is_not_cached`).
#[test]
fn a_block_read_beside_a_write_back_never_hides_written_entries() {
    let a = |q, records, body| Op::Append { q, records, body, commit: false };
    let ops = vec![
        a(0, 1, 380),
        a(0, 4, 1521),
        a(0, 1, 2800),
        a(0, 5, 1303),
        Op::Crash,
        a(1, 1, 1631),
        Op::Flush,
        Op::Crash,
        Op::Reopen,
        Op::RetentionCrash { steps: 0 },
        a(1, 3, 617),
        a(1, 3, 2524),
        a(1, 5, 2428),
        a(1, 5, 2737),
        a(1, 5, 2247),
        Op::ClearIndexCache,
        Op::Flush,
        a(3, 1, 2011),
        a(0, 4, 1569),
        a(1, 5, 1501),
        a(2, 1, 368),
    ];
    run(move || run_ops(5364773060362887310, FlushMode::Async, ops));
}
