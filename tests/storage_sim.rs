//! Commit log behaviour on the simulated, fault-injecting directory.

mod common;

use std::rc::Rc;
use std::time::Duration;

use common::{batch, batch_tag, off, run, small_config};
use ringmq::format::BatchView;
use ringmq::storage::file::LogDir;
use ringmq::storage::segment::segment_name;
use ringmq::storage::sim_dir::{SimDir, SimOp};
use ringmq::storage::{
    AppendStatus, CommitLog, FlushMode, LogPosition, QueueKey, StorageConfig, StorageError,
};
use ringmq::storage::{QueueId, TopicId};

const Q1: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(0));
const Q2: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(1));
const Q3: QueueKey = QueueKey::new(TopicId::new(2), QueueId::new(0));

/// Reads every batch of `q` from offset 0 and returns the tags in order.
async fn read_all(log: &Rc<CommitLog<SimDir>>, q: QueueKey) -> Vec<u64> {
    let mut out = vec![];
    let mut off = log.offsets(q).min;
    loop {
        let r = log.read(q, off, 10_000).await.unwrap();
        if r.batches.is_empty() {
            break;
        }
        for b in &r.batches {
            let v = BatchView::parse(b, usize::MAX).unwrap();
            assert_eq!(v.header.stamp.topic_id, q.topic_id.get());
            assert_eq!(v.header.stamp.queue_id, q.queue_id.get());
            out.push(batch_tag(b));
        }
        off = r.next_offset;
    }
    out
}

#[test]
fn append_read_reopen_many_queues_across_segments() {
    run(|| async {
        let dir = SimDir::new(1);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Async)).await.unwrap();
        let mut expect = [vec![], vec![], vec![]];
        for i in 0..300u64 {
            let (q, k) = match i % 3 {
                0 => (Q1, 0),
                1 => (Q2, 1),
                _ => (Q3, 2),
            };
            let a = log.append(q, &batch(i, 1 + (i % 4) as usize, 200)).await.unwrap();
            assert_eq!(a.base_offset.get(), expect[k].iter().map(|(_, n)| *n).sum::<u64>());
            expect[k].push((i, 1 + i % 4));
        }
        assert!(log.segment_bases().len() >= 3, "segments rolled: {:?}", log.segment_bases());
        for (q, e) in [(Q1, &expect[0]), (Q2, &expect[1]), (Q3, &expect[2])] {
            assert_eq!(read_all(&log, q).await, e.iter().map(|(t, _)| *t).collect::<Vec<_>>());
        }
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Async)).await.unwrap();
        for (q, e) in [(Q1, &expect[0]), (Q2, &expect[1]), (Q3, &expect[2])] {
            assert_eq!(read_all(&log, q).await, e.iter().map(|(t, _)| *t).collect::<Vec<_>>());
            assert_eq!(log.offsets(q).next.get(), e.iter().map(|(_, n)| *n).sum::<u64>());
        }
        // Appends continue the offsets after reopening.
        let a = log.append(Q1, &batch(999, 1, 10)).await.unwrap();
        assert_eq!(a.base_offset.get(), expect[0].iter().map(|(_, n)| *n).sum::<u64>());
        log.close().await.unwrap();
    });
}

#[test]
fn sync_mode_acks_only_durable_data_and_survives_crash() {
    run(|| async {
        let dir = SimDir::new(7);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        // Many appends in flight at once: group commit covers them with few fsyncs.
        let mut tasks = vec![];
        for i in 0..64u64 {
            let log = log.clone();
            tasks.push(ringmq::runtime::spawn(async move {
                let q = if i % 2 == 0 { Q1 } else { Q2 };
                let (a, st) = log.append_committed(q, &batch(i, 2, 300)).await.unwrap();
                assert_eq!(st, AppendStatus::Ok);
                (q, i, a.base_offset)
            }));
        }
        let mut acked = vec![];
        for t in tasks {
            acked.push(t.await.expect("task ran"));
        }
        let (_, syncs) = dir.op_counts();
        assert!(syncs < 64, "group commit: {syncs} fsyncs for 64 appends");
        // Unacknowledged tail: appended but never flushed.
        log.append(Q1, &batch(1000, 1, 100)).await.unwrap();
        dir.crash();
        drop(log);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        let q1 = read_all(&log, Q1).await;
        let q2 = read_all(&log, Q2).await;
        for (q, i, off) in acked {
            let got = if q == Q1 { &q1 } else { &q2 };
            assert!(got.contains(&i), "acked batch {i} lost");
            let r = log.read(q, off, 1).await.unwrap();
            assert_eq!(batch_tag(&r.batches[0]), i);
        }
        assert!(!q1.contains(&1000), "unflushed batch survived a crash that drops unsynced data");
        log.close().await.unwrap();
    });
}

#[test]
fn torn_crashes_never_return_garbage_and_keep_acked_data() {
    for seed in 0..20u64 {
        run(move || async move {
            let dir = SimDir::new(seed * 7919 + 1);
            dir.set_torn_crash(true);
            let mut acked: Vec<(QueueKey, u64)> = vec![];
            let mut tag = 0u64;
            for _round in 0..3 {
                let log =
                    CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
                let mut tasks = vec![];
                for _ in 0..20 {
                    tag += 1;
                    let t = tag;
                    let log = log.clone();
                    let q = [Q1, Q2, Q3][(t % 3) as usize];
                    let n = 1 + (t % 5) as usize;
                    tasks.push(ringmq::runtime::spawn(async move {
                        log.append_committed(q, &batch(t, n, 500)).await.map(|(_, s)| (q, t, s))
                    }));
                }
                // Unsynced writes in flight at the moment of the crash.
                for _ in 0..5 {
                    tag += 1;
                    let _ = log.append(Q1, &batch(tag, 3, 700)).await;
                }
                for t in tasks {
                    let (q, t, s) = t.await.expect("task ran").unwrap();
                    assert_eq!(s, AppendStatus::Ok);
                    acked.push((q, t));
                }
                dir.crash();
                drop(log);
            }
            let log =
                CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
            for q in [Q1, Q2, Q3] {
                let got = read_all(&log, q).await; // read_all verifies every CRC
                for (aq, t) in &acked {
                    if *aq == q {
                        assert!(got.contains(t), "seed {seed}: acked {t} lost from {q}");
                    }
                }
                let mut sorted = got.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), got.len(), "duplicates in {q}");
            }
            log.close().await.unwrap();
        });
    }
}

#[test]
fn fsync_failure_stops_writes_loudly() {
    run(|| async {
        let dir = SimDir::new(3);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        log.append_committed(Q1, &batch(1, 1, 10)).await.unwrap();
        dir.fail_syncs(1);
        let err = log.append_committed(Q1, &batch(2, 1, 10)).await.unwrap_err();
        assert!(matches!(err, StorageError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("fdatasync"), "{err}");
        // No retry, no pretending: every later write is refused.
        let err = log.append(Q1, &batch(3, 1, 10)).await.unwrap_err();
        assert!(matches!(err, StorageError::Failed { .. }));
        assert!(log.failure().is_some());
        // Reopening (what an operator does) recovers the durable state.
        dir.crash();
        drop(log);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, vec![1]);
        log.close().await.unwrap();
    });
}

#[test]
fn write_errors_stop_writes() {
    run(|| async {
        let dir = SimDir::new(4);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        dir.fail_writes(1);
        let err = log.append_committed(Q1, &batch(1, 1, 10)).await.unwrap_err();
        assert!(matches!(err, StorageError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("write"), "{err}");
    });
}

/// ENOSPC on a *data* write is a failed write, not DISK_FULL: the page state is unknown, so
/// the log stops (segments are preallocated, so this only happens with preallocate = false).
#[test]
fn full_disk_on_a_data_write_still_stops_the_log() {
    run(|| async {
        let dir = SimDir::new(5);
        dir.set_capacity(Some(200_000));
        let mut cfg = small_config(FlushMode::Sync);
        cfg.preallocate = false;
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let mut result = Ok(());
        for i in 0..100 {
            if let Err(e) = log.append_committed(Q1, &batch(i, 4, 1000)).await {
                result = Err(e);
                break;
            }
        }
        let err = result.unwrap_err();
        assert!(matches!(err, StorageError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(log.failure().is_some());
    });
}

#[test]
fn invalid_batches_are_rejected_without_writing() {
    run(|| async {
        let dir = SimDir::new(6);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Async)).await.unwrap();
        let mut b = batch(1, 2, 50);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(log.append(Q1, &b).await, Err(StorageError::InvalidBatch(_))));
        let big = batch(2, 40, 1000);
        assert!(matches!(log.append(Q1, &big).await, Err(StorageError::BatchTooLarge { .. })));
        assert!(matches!(log.append(Q1, &b[..50]).await, Err(StorageError::InvalidBatch(_))));
        assert_eq!(log.offsets(Q1).next, off(0));
        // The log still works.
        log.append(Q1, &batch(3, 1, 10)).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, vec![3]);
        log.close().await.unwrap();
    });
}

#[test]
fn out_of_range_reads_name_the_valid_range() {
    run(|| async {
        let dir = SimDir::new(8);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Async)).await.unwrap();
        log.append(Q1, &batch(1, 5, 10)).await.unwrap();
        let r = log.read(Q1, off(5), 1000).await.unwrap();
        assert!(r.batches.is_empty());
        assert_eq!(r.next_offset, off(5));
        match log.read(Q1, off(6), 1000).await {
            Err(StorageError::OffsetOutOfRange { min, next, requested, .. })
                if (min, next, requested) == (off(0), off(5), off(6)) => {}
            other => panic!("unexpected {other:?}"),
        }
        // A read from the middle of a batch returns the whole batch holding it.
        let r = log.read(Q1, off(3), 1000).await.unwrap();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.next_offset, off(5));
        log.close().await.unwrap();
    });
}

#[test]
fn retention_deletes_old_segments_and_offsets_stay_monotonic() {
    run(|| async {
        let dir = SimDir::new(9);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Async)).await.unwrap();
        for i in 0..200u64 {
            log.append(if i % 2 == 0 { Q1 } else { Q2 }, &batch(i, 1, 600)).await.unwrap();
        }
        log.flush().await.unwrap();
        let before = log.segment_bases();
        assert!(before.len() >= 3);
        let next_q1 = log.offsets(Q1).next;
        // Nothing is old enough yet.
        let now = ringmq::storage::commit_log::now_ms();
        assert!(log.enforce_retention(now).await.unwrap().is_empty());
        // 49 hours later every sealed segment has expired; the active one stays.
        let deleted = log.enforce_retention(now + 49 * 3_600_000).await.unwrap();
        assert_eq!(deleted.len(), before.len() - 1);
        assert_eq!(log.segment_bases(), vec![*before.last().unwrap()]);
        let o = log.offsets(Q1);
        assert_eq!(o.next, next_q1);
        assert!(o.min > off(0));
        assert!(matches!(
            log.read(Q1, off(0), 100).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let tags = read_all(&log, Q1).await;
        assert!(!tags.is_empty() && tags.iter().all(|t| t % 2 == 0));
        log.close().await.unwrap();
        // After a restart, offsets continue where they were, even for emptied queues.
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Async)).await.unwrap();
        assert_eq!(log.offsets(Q1), o);
        let a = log.append(Q1, &batch(5000, 1, 10)).await.unwrap();
        assert_eq!(a.base_offset, next_q1);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_disk_ratio() {
    run(|| async {
        let dir = SimDir::new(10);
        dir.set_capacity(Some(1 << 20));
        let mut cfg = small_config(FlushMode::Async);
        cfg.disk_max_used_ratio = 0.2;
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        for i in 0..400u64 {
            log.append(Q1, &batch(i, 1, 600)).await.unwrap();
        }
        log.flush().await.unwrap();
        let n = log.segment_bases().len();
        let deleted = log.enforce_retention(ringmq::storage::commit_log::now_ms()).await.unwrap();
        assert!(!deleted.is_empty() && deleted.len() < n, "deleted {deleted:?} of {n}");
        let (used, total) = ringmq::storage::file::LogDir::disk_usage(&dir).await.unwrap();
        assert!(used as f64 <= total as f64 * 0.2 + 65536.0, "used {used} of {total}");
        log.close().await.unwrap();
    });
}

#[test]
fn lookup_by_timestamp() {
    run(|| async {
        let dir = SimDir::new(11);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Async)).await.unwrap();
        let a = log.append(Q1, &batch(1, 3, 10)).await.unwrap();
        ringmq::runtime::sleep(std::time::Duration::from_millis(5)).await;
        let b = log.append(Q1, &batch(2, 3, 10)).await.unwrap();
        assert!(b.store_timestamp_ms > a.store_timestamp_ms);
        assert_eq!(log.offset_for_timestamp(Q1, 0).await.unwrap(), off(0));
        assert_eq!(log.offset_for_timestamp(Q1, a.store_timestamp_ms).await.unwrap(), off(0));
        assert_eq!(log.offset_for_timestamp(Q1, a.store_timestamp_ms + 1).await.unwrap(), off(3));
        assert_eq!(log.offset_for_timestamp(Q1, b.store_timestamp_ms + 1).await.unwrap(), off(6));
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Async)).await.unwrap();
        assert_eq!(log.offset_for_timestamp(Q1, a.store_timestamp_ms + 1).await.unwrap(), off(3));
        log.close().await.unwrap();
    });
}

#[test]
fn corruption_at_rest_is_detected_on_read() {
    run(|| async {
        let dir = SimDir::new(12);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 0;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        for i in 0..100u64 {
            log.append(Q1, &batch(i, 1, 600)).await.unwrap();
        }
        log.close().await.unwrap();
        // Corrupt a record byte of batch 5 in the first (sealed, indexed) segment.
        let len = batch(0, 1, 600).len();
        dir.corrupt(&segment_name(LogPosition::ZERO), 5 * len + 500);
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        // A read across it returns the good batches before it and stops there.
        let r = log.read(Q1, off(0), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, vec![0, 1, 2, 3, 4]);
        assert_eq!(r.next_offset, off(5));
        // A read that starts at it names its offsets (and never serves its bytes).
        match log.read(Q1, off(5), 100).await.unwrap_err() {
            StorageError::CorruptBatch { first_offset, next_offset, .. }
                if (first_offset, next_offset) == (off(5), off(6)) => {}
            err => panic!("expected the damaged batch's offsets, got {err}"),
        }
        // Reading from its end skips it; the rest of the queue is intact.
        let r = log.read(Q1, off(6), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, (6..100).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

/// Regression: one fetch coalesced disk reads across a segment boundary into one short read.
#[test]
fn large_disk_reads_across_segment_boundaries() {
    run(|| async {
        let dir = SimDir::new(13);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 0;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        for i in 0..300u64 {
            log.append(Q1, &batch(i, 1, 600)).await.unwrap();
        }
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        assert!(log.segment_bases().len() >= 3);
        let r = log.read(Q1, off(0), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, (0..300).collect::<Vec<_>>());
        // Read-ahead serves the next sequential reads of a smaller consumer.
        let mut at = off(0);
        let mut seen = 0;
        while at < off(300) {
            let r = log.read(Q1, at, 4096).await.unwrap();
            seen += r.batches.len();
            at = r.next_offset;
        }
        assert_eq!(seen, 300);
        log.close().await.unwrap();
    });
}

/// Rounds of the next two tests: each one small Q1 batch (tag = round), then 10 Q2 batches
/// of 14 KB (tags 1000..): 140 KB of Q2, more than the coalescing gap, between Q1's batches.
const ROUNDS: u64 = 6;

async fn write_q1_between_q2(dir: &SimDir, cfg: &StorageConfig) {
    let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
    for i in 0..ROUNDS {
        log.append(Q1, &batch(i, 1, 600)).await.unwrap();
        for j in 0..10 {
            log.append(Q2, &batch(1000 + i * 10 + j, 1, 14_000)).await.unwrap();
        }
    }
    log.close().await.unwrap();
}

/// A fetch whose batches lie far apart (other queues' batches between them) reads them as
/// several disk runs, issued at once: the batches still come back in order, and a damaged
/// batch in a later run ends the read there as it does for one run.
#[test]
fn a_fetch_of_batches_far_apart_reads_them_in_order_and_stops_at_a_damaged_one() {
    run(|| async {
        let dir = SimDir::new(14);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 0;
        cfg.read_ahead_bytes = 0;
        cfg.segment_size_bytes = 1 << 20;
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        assert_eq!(log.segment_bases().len(), 1, "all in one segment: runs split by the gap");
        let r = log.read(Q1, off(0), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, (0..ROUNDS).collect::<Vec<_>>());
        let q2 = read_all(&log, Q2).await;
        assert_eq!(q2, (0..ROUNDS * 10).map(|t| 1000 + t).collect::<Vec<_>>());
        log.close().await.unwrap();
        // Damage Q1's batch 3 (its fourth disk run).
        let round = (batch(0, 1, 600).len() + 10 * batch(1000, 1, 14_000).len()) as u64;
        dir.corrupt(&segment_name(LogPosition::ZERO), (3 * round + 500) as usize);
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let r = log.read(Q1, off(0), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, vec![0, 1, 2]);
        assert_eq!(r.next_offset, off(3));
        match log.read(Q1, off(3), 1 << 20).await.unwrap_err() {
            StorageError::CorruptBatch { first_offset, next_offset, .. }
                if (first_offset, next_offset) == (off(3), off(4)) => {}
            err => panic!("expected the damaged batch's offsets, got {err}"),
        }
        let r = log.read(Q1, off(4), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, (4..ROUNDS).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

#[test]
fn a_fetch_of_batches_far_apart_reads_no_other_queues_bytes_ahead() {
    run(|| async {
        let dir = SimDir::new(15);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 0;
        cfg.read_ahead_bytes = 64 << 10;
        // Read-ahead alone (the next test reads the next fetch ahead).
        cfg.prefetch_bytes = 0;
        cfg.segment_size_bytes = 4 << 20;
        // Q1's batches lie 140 KB apart, between Q2's: every Q1 batch is a disk run.
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let before = dir.read_bytes();
        let r = log.read(Q1, off(0), 1 << 20).await.unwrap();
        assert_eq!(r.batches.len() as u64, ROUNDS);
        let served: u64 = r.batches.iter().map(|b| b.len() as u64).sum();
        // Its batches and its index page, not 64 KiB ahead of each of them.
        let read = dir.read_bytes() - before;
        assert!(read < served + (64 << 10), "read {read} bytes to serve {served}");
        // One run (Q2's adjacent batches): read ahead, so the next fetch reads nothing.
        let first = log.read(Q2, off(0), 30_000).await.unwrap();
        assert_eq!(first.batches.len(), 2);
        let reads = dir.read_count();
        let next = log.read(Q2, first.next_offset, 30_000).await.unwrap();
        assert_eq!(next.batches.len(), 2);
        assert_eq!(dir.read_count(), reads, "served from the read-ahead");
        log.close().await.unwrap();
    });
}

/// A queue whose fetch was read from disk is catching up: its next fetch is read while its
/// consumer takes the current one, and is then served from those reads. Every batch still
/// comes once, in order, and nothing is read twice, also when the next fetch comes at once
/// (it waits for the prefetch's reads). With `prefetch_bytes = 0`, or a bound below one fetch,
/// every fetch reads the disk itself.
#[test]
fn a_catching_up_queues_next_fetch_is_read_while_it_takes_the_current_one() {
    run(|| async {
        // (prefetch_bytes, prefetching, the consumer waits for the prefetch before its next fetch)
        let cases = [(32 << 20, true, true), (32 << 20, true, false), (0, false, false)];
        for (prefetch_bytes, prefetched, pause) in cases.into_iter().chain([(1000, false, false)]) {
            let dir = SimDir::new(16);
            let mut cfg = small_config(FlushMode::Async);
            cfg.cache_bytes = 0;
            cfg.read_ahead_bytes = 0;
            cfg.prefetch_bytes = prefetch_bytes;
            cfg.segment_size_bytes = 4 << 20;
            // Q1's batches lie 140 KB apart: two of them a fetch, each its own disk read.
            write_q1_between_q2(&dir, &cfg).await;
            let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
            let fetch = 2 * batch(0, 1, 600).len();
            let (mut tags, mut at, mut served) = (Vec::new(), off(0), 0u64);
            // Disk reads during the fetches after the first.
            let mut read_in_fetches = 0;
            let mut fetches = 0;
            while tags.len() < ROUNDS as usize {
                let before = dir.read_count();
                let prefetched_before = log.metrics().probe.prefetch_bytes;
                let r = log.read(Q1, at, fetch).await.unwrap();
                if fetches > 0 {
                    read_in_fetches += dir.read_count() - before;
                }
                fetches += 1;
                tags.extend(r.batches.iter().map(|b| batch_tag(b)));
                served += r.batches.iter().map(|b| b.len() as u64).sum::<u64>();
                at = r.next_offset;
                // The consumer takes its time: its next fetch is read meanwhile (polled with a
                // bound; the last fetch has no next).
                let mut polls = 0;
                while pause
                    && tags.len() < ROUNDS as usize
                    && log.metrics().probe.prefetch_bytes == prefetched_before
                {
                    polls += 1;
                    assert!(polls < 5000, "the next fetch was not read ahead");
                    ringmq::runtime::sleep(Duration::from_millis(1)).await;
                }
            }
            assert_eq!(tags, (0..ROUNDS).collect::<Vec<_>>(), "prefetch_bytes {prefetch_bytes}");
            assert_eq!(fetches, ROUNDS / 2);
            let m = log.metrics().probe;
            if prefetched {
                if pause {
                    // Each fetch after the first was read while the one before was taken.
                    assert_eq!(read_in_fetches, 0);
                }
                assert_eq!(m.prefetch_served_bytes, served * 2 / 3);
                assert_eq!(m.prefetch_bytes, m.prefetch_served_bytes, "nothing read twice");
            } else {
                assert!(read_in_fetches >= ROUNDS - 2, "each batch read by its fetch");
                assert_eq!((m.prefetch_bytes, m.prefetch_served_bytes), (0, 0));
            }
            log.close().await.unwrap();
        }
    });
}

/// Close waits for a prefetch in flight (it reads segment files close is about to close), and
/// the log reopens with every batch readable.
#[test]
fn close_waits_for_a_prefetch_in_flight() {
    run(|| async {
        let dir = SimDir::new(17);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 0;
        cfg.read_ahead_bytes = 0;
        cfg.segment_size_bytes = 4 << 20;
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let fetch = 2 * batch(0, 1, 600).len();
        let first = log.read(Q1, off(0), fetch).await.unwrap();
        assert_eq!(first.batches.len(), 2);
        // The prefetch of the next fetch has not read yet: its reads take 50 ms each.
        assert_eq!(log.metrics().probe.prefetch_bytes, 0);
        dir.set_latency(SimOp::Read, Duration::from_millis(50));
        log.close().await.unwrap();
        assert_eq!(log.metrics().probe.prefetch_bytes, fetch as u64, "it finished first");
        dir.set_latency(SimOp::Read, Duration::ZERO);
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..ROUNDS).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

#[test]
fn slow_fsync_reports_flush_disk_timeout_and_still_flushes() {
    run(|| async {
        let dir = SimDir::new(14);
        let mut cfg = small_config(FlushMode::Sync);
        cfg.sync_flush_timeout_ms = 20;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        dir.set_sync_delay(std::time::Duration::from_millis(150));
        let (a, status) = log.append_committed(Q1, &batch(1, 2, 10)).await.unwrap();
        assert_eq!(status, AppendStatus::FlushDiskTimeout);
        // The batch stays and is flushed; once durable it survives a crash.
        assert!(log.wait_durable(a.end, None).await.unwrap());
        dir.set_sync_delay(std::time::Duration::ZERO);
        dir.crash();
        drop(log);
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, vec![1]);
        log.close().await.unwrap();
    });
}

/// The flusher must not keep a dropped log alive (it waits holding only its wake-up signal).
#[test]
fn a_dropped_log_is_freed_in_both_flush_modes() {
    for mode in [FlushMode::Sync, FlushMode::Async] {
        run(move || async move {
            let dir = SimDir::new(15);
            let log = CommitLog::open_with(dir.clone(), small_config(mode)).await.unwrap();
            log.append_committed(Q1, &batch(1, 1, 10)).await.unwrap();
            let weak = std::rc::Rc::downgrade(&log);
            drop(log);
            for _ in 0..100 {
                if weak.upgrade().is_none() {
                    return;
                }
                ringmq::runtime::sleep(std::time::Duration::from_millis(2)).await;
            }
            panic!("{mode:?}: the log is still alive after being dropped");
        });
    }
}

/// A prefetch in flight holds the log only weakly: a dropped log is freed (its flusher and
/// index writer stop) while the prefetch's reads still run. Holding it made a crashed log's
/// index writer write into the index files of the log reopened on its directory
/// (`storage_model.rs`, `crash_with_a_prefetch_in_flight`).
#[test]
fn a_dropped_log_is_freed_while_a_prefetch_reads() {
    run(|| async {
        let dir = SimDir::new(18);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 0;
        cfg.read_ahead_bytes = 0;
        cfg.segment_size_bytes = 4 << 20;
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let fetch = 2 * batch(0, 1, 600).len();
        let first = log.read(Q1, off(0), fetch).await.unwrap();
        let mut polls = 0;
        while log.metrics().probe.prefetch_bytes == 0 {
            polls += 1;
            assert!(polls < 5000, "the second fetch was not read ahead");
            ringmq::runtime::sleep(Duration::from_millis(1)).await;
        }
        // The second fetch is served from memory and starts the third's prefetch, whose reads
        // are held.
        dir.pause(SimOp::Read);
        let second = log.read(Q1, first.next_offset, fetch).await.unwrap();
        assert_eq!(second.batches.len(), 2);
        let weak = Rc::downgrade(&log);
        drop(log);
        for _ in 0..100 {
            if weak.upgrade().is_none() {
                dir.resume(SimOp::Read);
                return;
            }
            ringmq::runtime::sleep(Duration::from_millis(2)).await;
        }
        panic!("the log is still alive while its prefetch reads");
    });
}

// ---- Disk full (issue 7.4) ----

/// A config whose disk-full back-off is short, so tests that wait for a retry stay fast.
fn disk_full_config(mode: FlushMode) -> StorageConfig {
    StorageConfig { disk_full_retry_ms: 5, ..small_config(mode) }
}

/// Appends `tag`s to Q1 until one fails; returns the acknowledged tags and the error.
async fn append_until_error(
    log: &Rc<CommitLog<SimDir>>,
    first_tag: u64,
) -> (Vec<u64>, StorageError) {
    let mut acked = vec![];
    for tag in first_tag..first_tag + 10_000 {
        match log.append_committed(Q1, &batch(tag, 1, 1500)).await {
            Ok(_) => acked.push(tag),
            Err(e) => return (acked, e),
        }
    }
    panic!("10,000 appends never failed");
}

/// Retries an append while it gets DiskFull, for at most `bound`.
async fn append_when_space(log: &Rc<CommitLog<SimDir>>, tag: u64, bound: Duration) {
    let start = std::time::Instant::now();
    loop {
        match log.append_committed(Q1, &batch(tag, 1, 1500)).await {
            Ok(_) => return,
            Err(StorageError::DiskFull { .. }) if start.elapsed() < bound => {
                ringmq::runtime::sleep(Duration::from_millis(2)).await
            }
            Err(e) => panic!("append did not resume: {e}"),
        }
    }
}

/// Segment files in the directory that the log does not use: partial or leaked ones.
fn stray_segments(dir: &SimDir, log: &CommitLog<SimDir>) -> Vec<String> {
    let used: Vec<String> = log.segment_bases().into_iter().map(segment_name).collect();
    dir.names().into_iter().filter(|n| n.ends_with(".log") && !used.contains(n)).collect()
}

#[test]
fn disk_full_on_segment_creation_is_retriable_and_appends_resume() {
    run(|| async {
        let dir = SimDir::new(20);
        // Room for three 64 KiB segments plus metadata, not four.
        dir.set_capacity(Some(3 * 65_536 + 20_000));
        let log =
            CommitLog::open_with(dir.clone(), disk_full_config(FlushMode::Sync)).await.unwrap();
        let (acked, err) = append_until_error(&log, 0).await;
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("disk full") && text.contains("free space"), "{text}");
        assert!(log.failure().is_none(), "disk full must not stop the log");
        assert!(log.disk_full().is_some());
        // The failed creation left no partial file behind, and no byte more than the capacity.
        assert_eq!(stray_segments(&dir, &log), Vec::<String>::new());
        // Reads go on, and so does DISK_FULL (no busy retry: fails at once).
        assert_eq!(read_all(&log, Q1).await, acked);
        let again = log.append_committed(Q1, &batch(9_999, 1, 1500)).await.unwrap_err();
        assert!(matches!(again, StorageError::DiskFull { .. }), "{again}");
        // An operator frees space: appends resume by themselves.
        dir.set_capacity(None);
        append_when_space(&log, 10_000, Duration::from_secs(5)).await;
        assert!(log.disk_full().is_none());
        let mut want = acked.clone();
        want.push(10_000);
        assert_eq!(read_all(&log, Q1).await, want);
        log.close().await.unwrap();
        let log =
            CommitLog::open_with(dir.clone(), disk_full_config(FlushMode::Sync)).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, want);
        log.close().await.unwrap();
    });
}

#[test]
fn enospc_creating_a_file_is_disk_full_too() {
    run(|| async {
        let dir = SimDir::new(21);
        let log =
            CommitLog::open_with(dir.clone(), disk_full_config(FlushMode::Async)).await.unwrap();
        dir.fail_next(SimOp::Create, 1_000_000, libc::ENOSPC);
        let (acked, err) = append_until_error(&log, 0).await;
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        assert!(log.failure().is_none());
        dir.fail_next(SimOp::Create, 0, libc::ENOSPC);
        append_when_space(&log, 50_000, Duration::from_secs(5)).await;
        let mut want = acked;
        want.push(50_000);
        assert_eq!(read_all(&log, Q1).await, want);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_runs_on_a_full_disk_and_its_freed_space_resumes_appends_at_once() {
    run(|| async {
        let dir = SimDir::new(22);
        dir.set_capacity(Some(3 * 65_536 + 20_000));
        // A back-off far longer than the test: only freed space can make the retry due.
        let cfg = StorageConfig { disk_full_retry_ms: 3_600_000, ..small_config(FlushMode::Sync) };
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let (acked, err) = append_until_error(&log, 0).await;
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        let now = ringmq::storage::commit_log::now_ms();
        let deleted = log.enforce_retention(now + 49 * 3_600_000).await.unwrap();
        assert!(!deleted.is_empty());
        log.append_committed(Q1, &batch(7_000, 1, 1500)).await.unwrap();
        let tags = read_all(&log, Q1).await;
        assert_eq!(tags.last(), Some(&7_000));
        assert!(tags.len() < acked.len() + 1, "old segments were deleted");
        log.close().await.unwrap();
    });
}

/// A restart on a full disk must not need more space than the log already has: an active
/// segment that was never fully preallocated (here: written with preallocate = false) and
/// cannot be now still opens, serves reads, and takes appends once space is freed.
#[test]
fn recovery_on_a_full_disk_opens_for_reads() {
    run(|| async {
        let dir = SimDir::new(23);
        let mut cfg = disk_full_config(FlushMode::Sync);
        cfg.preallocate = false;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        for tag in 0..10 {
            log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
        }
        log.close().await.unwrap();
        let (used, _) = dir.disk_usage().await.unwrap();
        dir.set_capacity(Some(used + 1_000));
        cfg.preallocate = true;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..10).collect::<Vec<_>>());
        assert!(log.disk_full().is_some());
        let (used_after_open, _) = dir.disk_usage().await.unwrap();
        assert!(used_after_open <= used, "recovery took space: {used_after_open} > {used}");
        let err = log.append_committed(Q1, &batch(10, 1, 1000)).await.unwrap_err();
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        dir.set_capacity(None);
        append_when_space(&log, 10, Duration::from_secs(5)).await;
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..11).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

/// A sealed last segment without its successor (a data directory from before segments were
/// created ahead) on a full disk: recovery opens for reads instead of failing.
#[test]
fn recovery_without_room_for_the_next_segment_opens_for_reads() {
    run(|| async {
        let dir = SimDir::new(24);
        let cfg = disk_full_config(FlushMode::Sync);
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let mut tag = 0;
        while log.segment_bases().len() < 2 {
            log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
            tag += 1;
        }
        log.close().await.unwrap();
        // Drop the second segment (and the batch in it): the first is sealed with no successor.
        let second = *log.segment_bases().last().unwrap();
        dir.remove_now(&segment_name(second));
        let kept: Vec<u64> = (0..tag - 1).collect();
        let (used, _) = dir.disk_usage().await.unwrap();
        dir.set_capacity(Some(used + 1_000));
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, kept);
        let err = log.append_committed(Q1, &batch(100, 1, 1000)).await.unwrap_err();
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        assert_eq!(stray_segments(&dir, &log), Vec::<String>::new());
        dir.set_capacity(None);
        append_when_space(&log, 100, Duration::from_secs(5)).await;
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let mut want = kept;
        want.push(100);
        assert_eq!(read_all(&log, Q1).await, want);
        log.close().await.unwrap();
    });
}

#[test]
fn a_fresh_log_on_a_full_disk_says_disk_full_and_leaves_nothing() {
    run(|| async {
        let dir = SimDir::new(25);
        dir.set_capacity(Some(10_000));
        let err = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync))
            .await
            .err()
            .expect("a 64 KiB segment does not fit in 10 KB");
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        assert!(dir.names().iter().all(|n| !n.ends_with(".log")), "{:?}", dir.names());
    });
}

/// The queue index lives in files too: ENOSPC writing them must not stop the log. Appends
/// get DISK_FULL (their entries could not be kept within the index budget otherwise), reads
/// go on from the entries still in memory, and once space is back the index is written and
/// appends resume by themselves; nothing acknowledged is lost across a restart.
#[test]
fn enospc_writing_the_index_is_disk_full_and_appends_resume() {
    run(|| async {
        let dir = SimDir::new(29);
        let cfg = disk_full_config(FlushMode::Sync);
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        for tag in 0..20 {
            log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
        }
        // The segment is preallocated, so only the index files can grow: they do not fit.
        let (used, _) = dir.disk_usage().await.unwrap();
        dir.set_capacity(Some(used));
        let err = log.checkpoint_index().await.unwrap_err();
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        assert!(log.failure().is_none(), "an index write without space must not stop the log");
        assert!(log.disk_full().is_some());
        let err = log.append_committed(Q1, &batch(20, 1, 1000)).await.unwrap_err();
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        assert_eq!(read_all(&log, Q1).await, (0..20).collect::<Vec<_>>());
        // A restart while the disk is still full opens for reads (no checkpoint fits).
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..20).collect::<Vec<_>>());
        assert!(log.failure().is_none());
        let err = log.append_committed(Q1, &batch(20, 1, 1000)).await.unwrap_err();
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        dir.set_capacity(None);
        append_when_space(&log, 20, Duration::from_secs(5)).await;
        assert!(log.disk_full().is_none());
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..21).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

/// Recovery writes the entries it rebuilds once they pass a quarter of the index budget. On a
/// full disk it keeps them in memory instead and opens for reads; the index is written (and
/// appends resume) once there is room.
#[test]
fn recovery_of_a_long_unindexed_tail_on_a_full_disk_opens_for_reads() {
    run(|| async {
        let dir = SimDir::new(31);
        let cfg = StorageConfig {
            // No checkpoint during the run (one per segment), and a small index budget.
            segment_size_bytes: 4 << 20,
            index_cache_bytes: 65_536,
            ..disk_full_config(FlushMode::Async)
        };
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let n = 3_000u64;
        for tag in 0..n {
            log.append(Q1, &batch(tag, 1, 50)).await.unwrap();
        }
        log.flush().await.unwrap();
        dir.crash();
        drop(log);
        dir.fail_next(SimOp::Write, 1_000_000, libc::ENOSPC);
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..n).collect::<Vec<_>>());
        assert!(log.failure().is_none());
        let err = log.append_committed(Q1, &batch(n, 1, 50)).await.unwrap_err();
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        dir.fail_next(SimOp::Write, 0, libc::ENOSPC);
        append_when_space(&log, n, Duration::from_secs(5)).await;
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..=n).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

// ---- No stalls (issue 9.3) ----

/// Awaits `fut` for at most 5 s; a stall fails the test instead of hanging it.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match ringmq::runtime::timeout(Duration::from_secs(5), fut).await {
        Some(v) => v,
        None => panic!("{what} stalled"),
    }
}

#[test]
fn appends_complete_while_the_next_segment_is_created_and_rolls_only_switch() {
    run(|| async {
        let dir = SimDir::new(26);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        // Every fallocate hangs until resumed: a very slow segment creation.
        dir.pause(SimOp::Allocate);
        let mut tag = 0u64;
        let mut polls = 0;
        while dir.in_progress(SimOp::Allocate) == 0 {
            bounded("append", log.append_committed(Q1, &batch(tag, 1, 1000))).await.unwrap();
            tag += 1;
            polls += 1;
            assert!(polls < 1000, "no segment creation started ahead of the roll");
        }
        assert_eq!(log.segment_bases(), vec![LogPosition::ZERO], "creation starts before the roll");
        // Appends complete while the creation is still held.
        for _ in 0..5 {
            bounded("append", log.append_committed(Q1, &batch(tag, 1, 1000))).await.unwrap();
            tag += 1;
        }
        assert_eq!(dir.in_progress(SimOp::Allocate), 1, "the creation is still in progress");
        dir.resume(SimOp::Allocate);
        for _ in 0..1000 {
            if dir.in_progress(SimOp::Allocate) == 0 && dir.in_progress(SimOp::Sync) == 0 {
                break;
            }
            ringmq::runtime::sleep(Duration::from_millis(1)).await;
        }
        // The next segment is ready: the roll must not create or allocate anything.
        dir.pause(SimOp::Create);
        dir.pause(SimOp::Allocate);
        while log.segment_bases().len() < 2 {
            bounded("append across the roll", log.append_committed(Q1, &batch(tag, 1, 1000)))
                .await
                .unwrap();
            tag += 1;
        }
        dir.resume(SimOp::Create);
        dir.resume(SimOp::Allocate);
        assert_eq!(read_all(&log, Q1).await, (0..tag).collect::<Vec<_>>());
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..tag).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

#[test]
fn appends_complete_while_retention_deletes() {
    run(|| async {
        let dir = SimDir::new(27);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        let mut tag = 0u64;
        while log.segment_bases().len() < 4 {
            log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
            tag += 1;
        }
        // Unlinking hangs until resumed: a very slow delete of a huge segment.
        dir.pause(SimOp::Remove);
        let retention = {
            let log = log.clone();
            let now = ringmq::storage::commit_log::now_ms();
            ringmq::runtime::spawn(async move { log.enforce_retention(now + 49 * 3_600_000).await })
        };
        for _ in 0..5000 {
            if dir.in_progress(SimOp::Remove) > 0 {
                break;
            }
            ringmq::runtime::yield_once().await;
        }
        assert!(dir.in_progress(SimOp::Remove) > 0, "retention did not start deleting");
        for _ in 0..5 {
            bounded("append", log.append_committed(Q1, &batch(tag, 1, 1000))).await.unwrap();
            tag += 1;
        }
        assert!(dir.in_progress(SimOp::Remove) > 0, "the delete is still in progress");
        dir.resume(SimOp::Remove);
        let deleted = bounded("retention", retention).await.expect("task ran").unwrap();
        assert_eq!(deleted.len(), 3);
        assert_eq!(read_all(&log, Q1).await.last(), Some(&(tag - 1)));
        log.close().await.unwrap();
    });
}

/// Retention searches each queue's index for the first entry it keeps, reading index blocks:
/// slow reads there must not hold appends back (it runs outside the append gate, and appends
/// do not wait for the index gate it holds while the index is within its budget).
#[test]
fn appends_complete_while_retention_searches_the_index() {
    run(|| async {
        let dir = SimDir::new(30);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        let mut tag = 0u64;
        while log.segment_bases().len() < 4 {
            log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
            tag += 1;
        }
        // Every entry on disk and none cached: the search must read index blocks.
        log.checkpoint_index().await.unwrap();
        log.clear_index_cache();
        dir.pause(SimOp::Read);
        let retention = {
            let log = log.clone();
            let now = ringmq::storage::commit_log::now_ms();
            ringmq::runtime::spawn(async move { log.enforce_retention(now + 49 * 3_600_000).await })
        };
        for _ in 0..5000 {
            if dir.in_progress(SimOp::Read) > 0 {
                break;
            }
            ringmq::runtime::yield_once().await;
        }
        assert!(dir.in_progress(SimOp::Read) > 0, "retention did not read the index");
        for _ in 0..5 {
            bounded("append", log.append_committed(Q1, &batch(tag, 1, 1000))).await.unwrap();
            tag += 1;
        }
        assert!(dir.in_progress(SimOp::Read) > 0, "the index read is still in progress");
        dir.resume(SimOp::Read);
        let deleted = bounded("retention", retention).await.expect("task ran").unwrap();
        assert_eq!(deleted.len(), 3);
        assert_eq!(read_all(&log, Q1).await.last(), Some(&(tag - 1)));
        log.close().await.unwrap();
    });
}

// ---- More faults (issue 9.6) ----

#[test]
fn a_failed_remove_during_retention_is_reported_and_retried() {
    run(|| async {
        let dir = SimDir::new(28);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        let mut tag = 0u64;
        while log.segment_bases().len() < 3 {
            log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
            tag += 1;
        }
        let offsets = log.offsets(Q1);
        let first = segment_name(LogPosition::ZERO);
        dir.fail_next(SimOp::Remove, 1, libc::EIO);
        let later = ringmq::storage::commit_log::now_ms() + 49 * 3_600_000;
        let err = log.enforce_retention(later).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("deleting") && text.contains("EIO"), "{text}");
        // The data is gone from the log; the file waits for the next run.
        assert!(!log.segment_bases().contains(&LogPosition::ZERO));
        assert_eq!(log.pending_deletes(), vec![first.clone()]);
        assert!(dir.file_len(&first).is_some());
        assert!(log.offsets(Q1).min > off(0));
        assert!(log.failure().is_none());
        log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
        log.enforce_retention(later).await.unwrap();
        assert!(log.pending_deletes().is_empty());
        assert!(dir.file_len(&first).is_none());
        // A restart with the file still there would not resurrect its batches either.
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        assert_eq!(log.offsets(Q1).next, offsets.next + 1);
        log.close().await.unwrap();
    });
}

#[test]
fn a_file_left_by_a_failed_remove_is_not_resurrected_by_a_restart() {
    run(|| async {
        let dir = SimDir::new(29);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        let mut tag = 0u64;
        while log.segment_bases().len() < 3 {
            log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
            tag += 1;
        }
        dir.fail_next(SimOp::Remove, 100, libc::EIO);
        let later = ringmq::storage::commit_log::now_ms() + 49 * 3_600_000;
        assert!(log.enforce_retention(later).await.is_err());
        let min = log.offsets(Q1).min;
        assert!(dir.file_len(&segment_name(LogPosition::ZERO)).is_some());
        log.close().await.unwrap();
        dir.fail_next(SimOp::Remove, 0, libc::EIO);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        assert_eq!(log.offsets(Q1).min, min, "deleted batches came back");
        assert_eq!(read_all(&log, Q1).await.first(), Some(&min.get()));
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_rename_of_the_floors_keeps_the_segments_for_the_next_run() {
    run(|| async {
        let dir = SimDir::new(30);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        let mut tag = 0u64;
        while log.segment_bases().len() < 3 {
            log.append_committed(Q1, &batch(tag, 1, 1000)).await.unwrap();
            tag += 1;
        }
        let bases = log.segment_bases();
        // Every rename fails (no checkpoint is due meanwhile: that would stop the log).
        dir.fail_next(SimOp::Rename, 1_000, libc::EIO);
        let later = ringmq::storage::commit_log::now_ms() + 49 * 3_600_000;
        let err = log.enforce_retention(later).await.unwrap_err();
        assert!(err.to_string().contains("floors"), "{err}");
        assert_eq!(log.segment_bases(), bases, "nothing deleted without durable floors");
        assert!(dir.file_len(&segment_name(LogPosition::ZERO)).is_some());
        dir.fail_next(SimOp::Rename, 0, libc::EIO);
        let deleted = log.enforce_retention(later).await.unwrap();
        assert_eq!(deleted.len(), bases.len() - 1);
        assert!(dir.file_len(&segment_name(LogPosition::ZERO)).is_none());
        log.close().await.unwrap();
    });
}

/// Retention drops index entries before it writes the floors; if that write fails, the index
/// files holding only dropped entries must still be deleted by the next run (the entries are
/// gone, so the next run's search no longer finds them).
#[test]
fn index_files_of_a_run_whose_floors_failed_are_deleted_by_the_next_run() {
    run(|| async {
        let dir = SimDir::new(32);
        let cfg = StorageConfig { index_file_entries: 128, ..small_config(FlushMode::Sync) };
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let mut tag = 0u64;
        while log.segment_bases().len() < 4 {
            log.append_committed(Q1, &batch(tag, 1, 100)).await.unwrap();
            tag += 1;
        }
        log.checkpoint_index().await.unwrap();
        let qidx = |dir: &SimDir| -> Vec<String> {
            dir.names().into_iter().filter(|n| n.ends_with(".qidx")).collect()
        };
        let before = qidx(&dir);
        assert!(before.len() >= 3, "{before:?}");
        dir.fail_next(SimOp::Rename, 1, libc::EIO);
        let later = ringmq::storage::commit_log::now_ms() + 49 * 3_600_000;
        let err = log.enforce_retention(later).await.unwrap_err();
        assert!(err.to_string().contains("floors"), "{err}");
        let deleted = log.enforce_retention(later).await.unwrap();
        assert_eq!(deleted.len(), 3);
        let after = qidx(&dir);
        assert!(after.len() < before.len(), "no index file deleted: {after:?}");
        assert!(!after.contains(&before[0]), "{after:?}");
        assert_eq!(read_all(&log, Q1).await.last(), Some(&(tag - 1)));
        log.close().await.unwrap();
    });
}

#[test]
fn eio_on_read_is_reported_and_never_serves_garbage() {
    run(|| async {
        let dir = SimDir::new(31);
        let mut cfg = small_config(FlushMode::Sync);
        cfg.cache_bytes = 0;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        for tag in 0..100u64 {
            log.append_committed(Q1, &batch(tag, 1, 600)).await.unwrap();
        }
        dir.fail_next(SimOp::Read, 1, libc::EIO);
        let err = log.read(Q1, off(0), 4096).await.unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");
        assert!(err.to_string().contains("reading") && err.to_string().contains("EIO"), "{err}");
        assert!(log.failure().is_none(), "a read error does not stop writes");
        // The next read is served, whole and correct.
        assert_eq!(read_all(&log, Q1).await, (0..100).collect::<Vec<_>>());
        // A read error during recovery fails the open; it never truncates data it could not
        // read. After a crash (no index for the tail) recovery must scan.
        log.append(Q1, &batch(100, 1, 600)).await.unwrap();
        log.flush().await.unwrap();
        dir.crash();
        drop(log);
        for failing in 1..4 {
            dir.fail_next(SimOp::Read, failing, libc::EIO);
            match CommitLog::open_with(dir.clone(), cfg.clone()).await {
                Err(e) => assert!(e.to_string().contains("EIO"), "{e}"),
                Ok(log) => {
                    // The failing reads hit only optional files (an index): data intact.
                    dir.fail_next(SimOp::Read, 0, libc::EIO);
                    assert_eq!(read_all(&log, Q1).await, (0..101).collect::<Vec<_>>());
                    log.close().await.unwrap();
                }
            }
        }
        dir.fail_next(SimOp::Read, 0, libc::EIO);
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..101).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

#[test]
fn the_async_flush_interval_and_store_times_follow_the_logs_clock() {
    run(|| async {
        let clock = ringmq::runtime::SimClock::new(1_700_000_000_000);
        let mut cfg = small_config(FlushMode::Async);
        cfg.flush_interval_ms = 60_000;
        cfg.flush_bytes = 1 << 30; // only the interval flushes
        let log = CommitLog::open_with_clock(SimDir::new(61), cfg, clock.clone()).await.unwrap();
        let q = QueueKey::new(TopicId::new(1), QueueId::new(0));
        let out = log.append(q, &batch(0, 3, 10)).await.unwrap();
        assert_eq!(out.store_timestamp_ms, 1_700_000_000_000, "stamped with the log's clock");
        // However long the flusher runs, nothing is flushed before the clock reaches the interval.
        for _ in 0..100 {
            ringmq::runtime::yield_once().await;
        }
        let (appended, _, durable) = log.positions();
        assert!(durable < appended, "flushed before flush_interval_ms passed on the clock");
        clock.advance(Duration::from_millis(59_999));
        for _ in 0..100 {
            ringmq::runtime::yield_once().await;
        }
        assert!(log.positions().2 < appended, "flushed a millisecond early");
        clock.advance(Duration::from_millis(1));
        let real = std::time::Instant::now();
        while log.positions().2 < appended {
            assert!(real.elapsed() < Duration::from_secs(10), "the interval flush never came");
            ringmq::runtime::sleep(Duration::from_millis(1)).await;
        }
        log.close().await.unwrap();
    });
}

#[test]
fn the_log_counts_group_commits_fsync_times_and_waits_for_a_chunk() {
    run(|| async {
        let dir = SimDir::new(27);
        let config = StorageConfig {
            chunk_pool_chunks: 2,
            max_batch_bytes: 4096,
            ..small_config(FlushMode::Async)
        };
        let log = CommitLog::open_with(dir.clone(), config).await.unwrap();
        let before = log.metrics().probe;
        assert_eq!(before.chunk_pool_waits, 0);
        // Writes hang: dispatched chunks keep their permits, so once two chunks (16 KiB) are
        // filled an append waits for a chunk.
        dir.pause(SimOp::Write);
        let appender = log.clone();
        let appends = ringmq::runtime::spawn(async move {
            for tag in 0..8u64 {
                appender.append(Q1, &batch(tag, 1, 3500)).await.unwrap();
            }
        });
        for polls in 0.. {
            if log.metrics().probe.chunk_pool_waits >= 1 {
                break;
            }
            assert!(polls < 1000, "no append waited for a chunk");
            ringmq::runtime::sleep(Duration::from_millis(1)).await;
        }
        dir.resume(SimOp::Write);
        bounded("appends", appends).await;
        bounded("flush", log.flush()).await.unwrap();
        let after = log.metrics().probe;
        assert!(after.chunk_pool_waits >= 1);
        assert!(after.flushes > before.flushes, "{after:?}");
        assert!(after.fsync_latency.count() > before.fsync_latency.count(), "{after:?}");
        assert_eq!(read_all(&log, Q1).await, (0..8).collect::<Vec<_>>());
        assert!(log.metrics().chunk_cache_hits > 0, "fresh data is read from the cache");
        log.close().await.unwrap();
    });
}
