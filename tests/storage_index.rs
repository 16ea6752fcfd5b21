//! The on-disk queue index: recovery from its checkpoint, rebuilding what it cannot trust,
//! retention of index files, and failures of index I/O. (Retention of entries not yet written
//! is tested deterministically in `index_store`'s unit tests.)

mod common;

use common::{batch, batch_tag, off, run, small_config};
use ringmq::storage::commit_log::{Scanned, TailScan};
use ringmq::storage::file::LogDir;
use ringmq::storage::sim_dir::{SimDir, SimOp};
use ringmq::storage::{CommitLog, FlushMode, QueueKey, StorageConfig, StorageError};
use ringmq::storage::{QueueId, TopicId};
use std::rc::Rc;

const QA: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(0));
const QB: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(1));

fn config() -> StorageConfig {
    StorageConfig {
        index_cache_bytes: 64 * 1024,
        index_file_entries: 128,
        ..small_config(FlushMode::Async)
    }
}

async fn tags(log: &Rc<CommitLog<SimDir>>, q: QueueKey) -> Vec<u64> {
    let mut out = vec![];
    let mut off = log.offsets(q).min;
    loop {
        let r = log.read(q, off, 64 * 1024).await.expect("read");
        if r.batches.is_empty() {
            return out;
        }
        out.extend(r.batches.iter().map(|b| batch_tag(b)));
        off = r.next_offset;
    }
}

/// Appends `n` batches alternating between the queues, tags from `first`.
async fn fill(log: &Rc<CommitLog<SimDir>>, first: u64, n: u64) {
    for t in first..first + n {
        let q = if t % 2 == 0 { QA } else { QB };
        log.append(q, &batch(t, 2, 1500)).await.unwrap();
    }
}

fn expected(from: u64, to: u64, q: QueueKey) -> Vec<u64> {
    (from..to).filter(|t| (t % 2 == 0) == (q == QA)).collect()
}

async fn index_files(dir: &SimDir) -> Vec<String> {
    let names = dir.list().await.unwrap();
    names.into_iter().filter(|n| n.ends_with(".qidx")).collect()
}

#[test]
fn recovery_scans_only_past_the_checkpoint() {
    run(|| async {
        let dir = SimDir::new(3);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        fill(&log, 0, 300).await; // several segments, several index files per queue
        log.checkpoint_index().await.unwrap();
        assert!(index_files(&dir).await.len() >= 4);
        fill(&log, 300, 40).await;
        log.flush().await.unwrap();
        // Corrupt a batch in the first (sealed, checkpointed) segment. A scan from the start
        // would stop there and lose everything after it; recovery from the checkpoint does not
        // read it, so only that one batch reports corruption when read.
        dir.corrupt(&format!("{:020}.log", 0), 3000);
        dir.crash();
        drop(log);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        assert_eq!(log.offsets(QA).next, off(2 * 170));
        assert_eq!(log.offsets(QB).next, off(2 * 170));
        // The batches appended after the checkpoint were re-indexed by the scan.
        let r = log.read(QA, off(2 * 160), 1 << 20).await.unwrap();
        let got: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(got, expected(320, 340, QA));
        // The corrupted batch is reported, not served.
        let mut corrupt = 0;
        for q in [QA, QB] {
            for o in (0..40).step_by(2).map(off) {
                match log.read(q, o, 1).await {
                    Ok(r) => assert_eq!(r.batches.len(), 1),
                    Err(StorageError::CorruptBatch { first_offset, .. }) => {
                        assert_eq!(first_offset, o);
                        corrupt += 1
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
        assert_eq!(corrupt, 1);
        log.close().await.unwrap();
    });
}

#[test]
fn an_untrustworthy_index_is_rebuilt_from_the_log() {
    run(|| async {
        let dir = SimDir::new(4);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        fill(&log, 0, 300).await;
        log.close().await.unwrap();

        // A damaged checkpoint: every entry is rebuilt by scanning.
        dir.corrupt("index.checkpoint", 10);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        assert_eq!(tags(&log, QA).await, expected(0, 300, QA));
        assert_eq!(tags(&log, QB).await, expected(0, 300, QB));
        log.close().await.unwrap();

        // An index file the checkpoint counts on is gone: rebuilt as well.
        let files = index_files(&dir).await;
        dir.remove(&files[1]).await.unwrap();
        dir.sync_dir().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        assert_eq!(tags(&log, QA).await, expected(0, 300, QA));
        assert_eq!(tags(&log, QB).await, expected(0, 300, QB));
        log.close().await.unwrap();

        // Files written with another index_file_entries cannot be read: rebuilt.
        let other = StorageConfig { index_file_entries: 256, ..config() };
        let log = CommitLog::open_with(dir.clone(), other.clone()).await.unwrap();
        assert_eq!(tags(&log, QA).await, expected(0, 300, QA));
        assert_eq!(tags(&log, QB).await, expected(0, 300, QB));
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), other).await.unwrap();
        assert_eq!(tags(&log, QA).await, expected(0, 300, QA));
        log.close().await.unwrap();
    });
}

#[test]
fn retention_deletes_whole_index_files_and_floors_survive_reopen() {
    run(|| async {
        let dir = SimDir::new(5);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        fill(&log, 0, 60).await;
        log.flush().await.unwrap();
        let far_future = ringmq::storage::commit_log::now_ms() + 100 * 3_600_000;
        assert!(!log.enforce_retention(far_future).await.unwrap().is_empty());
        let min_a = log.offsets(QA).min;
        assert!(min_a > off(0));
        fill(&log, 60, 300).await;
        log.checkpoint_index().await.unwrap();
        let kept_a = tags(&log, QA).await;
        assert_eq!(kept_a.last(), Some(&358));
        let files_before = index_files(&dir).await.len();
        log.flush().await.unwrap();
        assert!(!log.enforce_retention(far_future).await.unwrap().is_empty());
        // Index files holding only dropped entries are deleted with their segments.
        assert!(index_files(&dir).await.len() < files_before);
        let min_b = log.offsets(QB).min;
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        assert_eq!(log.offsets(QB).min, min_b);
        let got = tags(&log, QB).await;
        assert_eq!(got.last(), Some(&359));
        assert_eq!(log.read(QB, min_b, 1).await.unwrap().batches.len(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_index_write_stops_the_log() {
    run(|| async {
        let dir = SimDir::new(6);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        fill(&log, 0, 10).await;
        log.flush().await.unwrap();
        // The log's data is written; the next write is the index write-back.
        dir.fail_writes(1);
        assert!(matches!(log.checkpoint_index().await, Err(StorageError::Failed { .. })));
        assert!(log.failure().is_some());
        assert!(matches!(
            log.append(QA, &batch(99, 1, 10)).await,
            Err(StorageError::Failed { .. })
        ));
        // What was acknowledged is still there after a restart.
        drop(log);
        dir.crash();
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        assert_eq!(tags(&log, QA).await, expected(0, 10, QA));
        log.close().await.unwrap();
    });
}

/// An append at the index's bound (unwritten entries at half of `index_cache_bytes`) waits
/// only until the index writer has written enough of them back, not for every queue's: with
/// index files slow to create (as on a filesystem that has just deleted as many) and 200
/// queues, the append used to wait until all 200 files were created and written.
#[test]
fn an_append_at_the_index_bound_waits_only_for_enough_write_back() {
    run(|| async {
        const QUEUES: u64 = 200;
        let dir = SimDir::new(7);
        // No checkpoint due (it writes everything back) while the test runs.
        let cfg = StorageConfig { segment_size_bytes: 16 << 20, ..config() };
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        dir.set_latency(SimOp::Create, std::time::Duration::from_millis(20));
        let q = |t: u64| QueueKey::new(TopicId::new(2), QueueId::new((t % QUEUES) as u32));
        let half = cfg.index_cache_bytes / 2;
        let mut t = 0;
        while log.index_memory().pending_bytes < half {
            log.append(q(t), &batch(t, 1, 10)).await.unwrap();
            t += 1;
            assert!(t < 100_000, "the index never reached its bound");
        }
        log.append(q(t), &batch(t, 1, 10)).await.unwrap();
        let created = index_files(&dir).await.len();
        assert!(
            created < QUEUES as usize / 2,
            "{created} of {QUEUES} index files were created before the append went on"
        );
        log.close().await.unwrap();
        // Everything appended is indexed.
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        for k in 0..QUEUES {
            let offsets = log.offsets(q(k));
            assert_eq!(offsets.next.get(), (t + 1 + QUEUES - 1 - k) / QUEUES, "queue {k}");
        }
        log.close().await.unwrap();
    });
}

/// The index files on a real filesystem with O_DIRECT (aligned block writes and reads, files
/// growing block by block, deletion by retention), across a reopen.
#[test]
fn index_files_on_real_files_with_direct_io() {
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let dir = tmp.path().join("log");
    run(move || async move {
        let cfg = StorageConfig {
            dir,
            io_mode: ringmq::storage::IoMode::Direct,
            cache_bytes: 0,
            // Retention by age only: by disk usage it would depend on how full the host's
            // filesystem is (above 0.75 it deleted more than this test expects).
            disk_max_used_ratio: 1.0,
            ..config()
        };
        let log = CommitLog::open(cfg.clone()).await.unwrap();
        for t in 0..400u64 {
            let q = if t % 2 == 0 { QA } else { QB };
            log.append(q, &batch(t, 2, 1500)).await.unwrap();
        }
        log.checkpoint_index().await.unwrap();
        let far_future = ringmq::storage::commit_log::now_ms() + 100 * 3_600_000;
        assert!(!log.enforce_retention(far_future).await.unwrap().is_empty());
        let min = log.offsets(QA).min;
        assert!(min > off(0));
        log.close().await.unwrap();
        let files = std::fs::read_dir(&cfg.dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".qidx"))
            .count();
        assert!(files >= 2, "index files on disk: {files}");

        let log = CommitLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets(QA).min, min);
        assert_eq!(log.offsets(QA).next, off(400));
        let mut at = min;
        let mut got = vec![];
        while at < off(400) {
            let r = log.read(QA, at, 1).await.unwrap();
            got.push(batch_tag(&r.batches[0]));
            at = r.next_offset;
        }
        let first = min.get(); // two records per batch, tags 0, 2, 4, ... on QA
        assert_eq!(got, (first..400).step_by(2).collect::<Vec<_>>());
        assert_eq!(log.offset_for_timestamp(QA, 0).await.unwrap(), min);
        log.close().await.unwrap();
    });
}

/// Many small batches with the smallest budget: entries are written back (not only at
/// checkpoints) and appends hit the write-back limit; torn crashes at random moments must keep
/// every flushed batch, in order, and nothing that was not appended.
#[test]
fn crashes_during_write_back_keep_every_flushed_batch() {
    run(|| async {
        const QUEUES: u32 = 50;
        let dir = SimDir::new(11);
        dir.set_torn_crash(true);
        let mut cfg = config();
        cfg.segment_size_bytes = 256 * 1024;
        cfg.flush_bytes = 64 * 1024;
        let mut log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let mut appended: Vec<Vec<u64>> = vec![Vec::new(); QUEUES as usize];
        let mut flushed: Vec<usize> = vec![0; QUEUES as usize];
        let mut tag = 0u64;
        for round in 0..4 {
            for i in 0..3_000u64 {
                tag += 1;
                let q = ((tag * 7919) % u64::from(QUEUES)) as u32;
                log.append(QueueKey::new(TopicId::new(9), QueueId::new(q)), &batch(tag, 1, 8))
                    .await
                    .unwrap();
                appended[q as usize].push(tag);
                if i % 1_000 == 999 {
                    log.flush().await.unwrap();
                    for (f, a) in flushed.iter_mut().zip(&appended) {
                        *f = a.len();
                    }
                }
            }
            let memory = log.index_memory();
            assert!(memory.total_bytes() <= cfg.index_cache_bytes, "{memory:?}");
            dir.crash();
            drop(log);
            log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
            for q in 0..QUEUES {
                let got = tags(&log, QueueKey::new(TopicId::new(9), QueueId::new(q))).await;
                let want = &appended[q as usize];
                assert!(want.starts_with(&got), "round {round} queue {q}: not a prefix");
                assert!(got.len() >= flushed[q as usize], "round {round} queue {q}: lost data");
                appended[q as usize].truncate(got.len());
                flushed[q as usize] = got.len();
            }
        }
        log.close().await.unwrap();
    });
}

/// A lookup by time never answers past what a fetch may read (sync mode: the durable end).
#[test]
fn lookup_by_time_is_bounded_by_the_readable_end() {
    run(|| async {
        let dir = SimDir::new(12);
        let cfg = StorageConfig { flush_mode: FlushMode::Sync, ..config() };
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let a = log.append_committed(QA, &batch(1, 3, 10)).await.unwrap().0;
        // Appended but not durable, so not readable yet.
        let b = log.append(QA, &batch(2, 3, 10)).await.unwrap();
        assert_eq!(log.offsets(QA).next, off(3));
        assert_eq!(log.offset_for_timestamp(QA, a.store_timestamp_ms).await.unwrap(), off(0));
        assert_eq!(log.offset_for_timestamp(QA, b.store_timestamp_ms + 1).await.unwrap(), off(3));
        assert!(log.read(QA, off(3), 100).await.unwrap().batches.is_empty());
        log.flush().await.unwrap();
        assert_eq!(log.offset_for_timestamp(QA, b.store_timestamp_ms + 1).await.unwrap(), off(6));
        log.close().await.unwrap();
    });
}

/// (position, queue, base offset) of every batch a tail scan reports; damage as an error.
async fn scan(
    log: &Rc<CommitLog<SimDir>>,
    max_bytes: u64,
    since_ms: i64,
) -> (Vec<(u64, QueueKey, u64)>, Vec<(u64, Option<QueueKey>)>, TailScan) {
    let (mut batches, mut damaged) = (vec![], vec![]);
    let s = log
        .scan_tail(max_bytes, since_ms, |item| match item {
            Scanned::Batch { position, header } => batches.push((
                position.get(),
                QueueKey::new(
                    TopicId::new(header.stamp.topic_id),
                    QueueId::new(header.stamp.queue_id),
                ),
                header.stamp.base_offset,
            )),
            Scanned::Damaged { position, queue, .. } => damaged.push((position.get(), queue)),
        })
        .await
        .unwrap();
    (batches, damaged, s)
}

/// What `fill(log, 0, n)` stored: batch `t` on QA (even) or QB (odd) at offset `t - t % 2`.
fn filled(from: u64, to: u64) -> Vec<(QueueKey, u64)> {
    (from..to).map(|t| (if t % 2 == 0 { QA } else { QB }, t - t % 2)).collect()
}

#[test]
fn a_tail_scan_reads_the_logs_last_bytes_in_order_from_a_batch_boundary() {
    run(|| async {
        let dir = SimDir::new(41);
        let clock = ringmq::runtime::SimClock::new(1_000_000);
        let log = CommitLog::open_with_clock(dir.clone(), config(), clock.clone()).await.unwrap();
        fill(&log, 0, 150).await;
        clock.advance(std::time::Duration::from_secs(100));
        fill(&log, 150, 150).await; // about 15 segments in all
        log.close().await.unwrap();
        let log = CommitLog::open_with_clock(dir.clone(), config(), clock.clone()).await.unwrap();
        let end = log.visible_end().get();

        // Everything, in log order, each batch once.
        let (all, damaged, s) = scan(&log, u64::MAX, i64::MIN).await;
        let seen: Vec<_> = all.iter().map(|&(_, q, o)| (q, o)).collect();
        assert_eq!(seen, filled(0, 300));
        assert!(damaged.is_empty() && s.stopped_at.is_none());
        assert_eq!((s.start.get(), s.end.get()), (0, end));

        // The last 100 KiB: a suffix starting at a batch boundary at most a segment before.
        let budget = 100 << 10;
        let (tail, _, s) = scan(&log, budget, i64::MIN).await;
        assert!(s.start.get() <= end - budget, "{s:?}");
        assert!(end - budget - s.start.get() < 64 << 10, "starts within a segment: {s:?}");
        assert_eq!(tail[..], all[all.len() - tail.len()..]);
        assert_eq!(tail[0].0, s.start.get(), "the start is a batch's position");

        // Only segments holding batches stored in the time window are read.
        let (recent, _, _) = scan(&log, u64::MAX, 1_000_000 + 100_000).await;
        let first = all.iter().position(|b| b == &recent[0]).unwrap();
        assert!((130..=150).contains(&first), "from the segment holding batch 150: {first}");
        assert_eq!(recent[..], all[first..]);
        let (none, _, _) = scan(&log, u64::MAX, 1_000_000 + 200_000).await;
        assert!(none.is_empty());
        log.close().await.unwrap();
    });
}

/// A batch stored under larger segments and batch limits than today's is scanned as a batch
/// (the idempotence and transaction state rebuilt from the tail sees it): the scan bounded
/// stored batches by half of today's segment size and reported it as damage.
#[test]
fn a_tail_scan_reads_batches_stored_under_larger_segment_and_batch_limits() {
    run(|| async {
        let dir = SimDir::new(43);
        let wide = StorageConfig {
            segment_size_bytes: 256 * 1024,
            max_batch_bytes: 100 * 1024,
            chunk_pool_chunks: 32,
            ..config()
        };
        let log = CommitLog::open_with(dir.clone(), wide).await.unwrap();
        fill(&log, 0, 4).await;
        log.append(QA, &batch(4, 60, 1000)).await.unwrap();
        log.close().await.unwrap();
        let narrow = StorageConfig { max_batch_bytes: 4 * 1024, ..config() };
        let log = CommitLog::open_with(dir.clone(), narrow).await.unwrap();
        let (all, damaged, s) = scan(&log, u64::MAX, i64::MIN).await;
        let seen: Vec<_> = all.iter().map(|&(_, q, o)| (q, o)).collect();
        assert_eq!(seen, [filled(0, 4), vec![(QA, 4)]].concat());
        assert!(damaged.is_empty() && s.stopped_at.is_none(), "{damaged:?} {s:?}");
        log.close().await.unwrap();
    });
}

#[test]
fn a_tail_scan_reports_damage_and_goes_past_it_when_the_queue_is_known() {
    run(|| async {
        let dir = SimDir::new(42);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        fill(&log, 0, 100).await;
        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        let (all, _, _) = scan(&log, u64::MAX, i64::MIN).await;
        let bases: Vec<u64> = log.segment_bases().iter().map(|b| b.get()).collect();
        log.close().await.unwrap();
        let segment_of = |pos: u64| *bases.iter().rev().find(|&&b| b <= pos).unwrap();
        let damage = |i: usize, at: u64| {
            let pos = all[i].0;
            let base = segment_of(pos);
            dir.corrupt(&format!("{base:020}.log"), (pos - base + at) as usize);
        };
        // A record byte of batch 40: its stamp still says whose it is.
        damage(40, 200);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        let (seen, damaged, s) = scan(&log, u64::MAX, i64::MIN).await;
        assert_eq!(damaged, vec![(all[40].0, Some(QA))]);
        assert_eq!(seen.len(), 99, "every other batch, past the damaged one");
        assert!(s.stopped_at.is_none());
        log.close().await.unwrap();

        // The length of batch 70: nothing after it can be framed; the scan stops there.
        damage(70, 1);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        let (seen, damaged, s) = scan(&log, u64::MAX, i64::MIN).await;
        assert_eq!(damaged, vec![(all[40].0, Some(QA)), (all[70].0, None)]);
        assert_eq!(seen.len(), 69);
        assert_eq!(s.stopped_at.map(|p| p.get()), Some(all[70].0));
        log.close().await.unwrap();
    });
}
