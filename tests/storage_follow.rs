//! Following the log (`CommitLog::follow`, the key index's reader) on the simulated directory:
//! what memory still holds is followed without disk reads, and what it no longer holds is read
//! from the segment files, with the same batches in the same order either way.

mod common;

use common::{batch, batch_tag, run, small_config};
use ringmq::storage::commit_log::FollowedBatch;
use ringmq::storage::sim_dir::SimDir;
use ringmq::storage::{CommitLog, FlushMode, LogPosition, QueueId, QueueKey, TopicId};

thread_local! {
    /// Batches the follower reported in pieces (held in memory across two chunks) on this
    /// test's thread.
    static IN_PIECES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

const Q1: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(0));
const Q2: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(1));

/// Every batch `follow` reports from the start of the log up to `up_to`, as (position, tag),
/// in steps of `step` bytes the way the key index calls it, and the bytes it read from disk.
async fn follow_to(
    log: &std::rc::Rc<CommitLog<SimDir>>,
    step: u64,
    up_to: LogPosition,
) -> (Vec<(u64, u64)>, u64) {
    let (out, disk, _) = follow_from(log, LogPosition::ZERO, step, up_to).await;
    (out, disk)
}

/// [`follow_to`] from `from`; also where the follower would continue.
async fn follow_from(
    log: &std::rc::Rc<CommitLog<SimDir>>,
    mut from: LogPosition,
    step: u64,
    up_to: LogPosition,
) -> (Vec<(u64, u64)>, u64, LogPosition) {
    let mut out = Vec::new();
    let mut disk = 0;
    loop {
        let f = log
            .follow(from, step, up_to, |pos, batch| {
                // Every record walks, where it lies, whole or in pieces.
                let mut records = 0;
                assert_eq!(batch.for_each_record(|_| records += 1), Ok(()));
                assert_eq!(records, batch.header().record_count);
                if let FollowedBatch::Pieces { .. } = batch {
                    IN_PIECES.set(IN_PIECES.get() + 1);
                }
                out.push((pos.get(), batch_tag(&batch.to_vec())))
            })
            .await
            .unwrap();
        disk += f.disk_bytes;
        if f.next == from {
            return (out, disk, from);
        }
        from = f.next;
    }
}

/// [`follow_to`] the durable end.
async fn follow_all(log: &std::rc::Rc<CommitLog<SimDir>>, step: u64) -> (Vec<(u64, u64)>, u64) {
    follow_to(log, step, log.durable_end()).await
}

#[test]
fn a_follower_close_behind_the_log_reads_memory_and_a_late_one_the_disk() {
    run(|| async {
        let dir = SimDir::new(31);
        let mut cfg = small_config(FlushMode::Async);
        // Chunks of 8 KiB and batches of about 3 KiB: some batches continue into the next
        // chunk. The cache holds everything appended here.
        cfg.cache_bytes = 4 << 20;
        cfg.segment_size_bytes = 1 << 20;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let mut tags = Vec::new();
        for t in 0..60u64 {
            let q = if t % 3 == 0 { Q2 } else { Q1 };
            log.append(q, &batch(t, 1 + (t % 4) as usize, 700)).await.unwrap();
            tags.push(t);
        }
        log.flush().await.unwrap();
        let reads_before = dir.read_count();
        let (from_memory, disk) = follow_all(&log, 16 << 10).await;
        assert!(IN_PIECES.get() > 0, "batches across two chunks came in their pieces");
        assert_eq!(from_memory.iter().map(|(_, t)| *t).collect::<Vec<_>>(), tags);
        assert!(from_memory.windows(2).all(|w| w[0].0 < w[1].0), "in log order");
        assert_eq!(dir.read_count(), reads_before, "followed from memory, no disk read");
        assert_eq!(disk, 0, "and counted so");
        log.close().await.unwrap();

        // Reopened: the cache is empty, the same batches come from the segment files.
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let reads_before = dir.read_count();
        let (from_disk, disk) = follow_all(&log, 16 << 10).await;
        assert_eq!(from_disk, from_memory);
        assert!(dir.read_count() > reads_before, "a late follower reads the disk");
        assert!(disk > 0, "and counted so");
        log.close().await.unwrap();
    });
}

#[test]
fn a_follower_reads_written_batches_before_they_are_synced_only_when_asked() {
    run(|| async {
        let dir = SimDir::new(32);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 4 << 20;
        cfg.segment_size_bytes = 1 << 20;
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        log.append(Q1, &batch(0, 2, 700)).await.unwrap();
        log.flush().await.unwrap();
        let synced = log.durable_end();
        // Syncs held: what is appended now is written to its file but not durable.
        dir.pause(ringmq::storage::sim_dir::SimOp::Sync);
        for t in 1..20u64 {
            log.append(Q1, &batch(t, 2, 700)).await.unwrap();
        }
        let flush = ringmq::runtime::spawn({
            let log = log.clone();
            async move { log.flush().await.map(|_| ()) }
        });
        while log.written_end() < log.positions().0 {
            ringmq::runtime::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(log.durable_end(), synced, "the sync is held");
        let (durable_only, _) = follow_all(&log, 16 << 10).await;
        assert_eq!(durable_only.iter().map(|(_, t)| *t).collect::<Vec<_>>(), vec![0]);
        let (written, disk) = follow_to(&log, 16 << 10, log.written_end()).await;
        let tags: Vec<u64> = written.iter().map(|(_, t)| *t).collect();
        assert_eq!(tags, (0..20).collect::<Vec<_>>());
        assert_eq!(disk, 0, "from memory");
        let (capped, _) = follow_to(&log, 16 << 10, LogPosition::new(u64::MAX)).await;
        assert_eq!(capped, written, "never past the written end");
        dir.resume(ringmq::storage::sim_dir::SimOp::Sync);
        flush.await.unwrap().unwrap();
        log.close().await.unwrap();
    });
}

#[test]
fn a_bound_inside_a_batch_stops_before_it_and_the_follower_goes_on_from_there() {
    run(|| async {
        let dir = SimDir::new(33);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 4 << 20;
        cfg.segment_size_bytes = 1 << 20;
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        for t in 0..20u64 {
            log.append(Q1, &batch(t, 2, 700)).await.unwrap();
        }
        log.flush().await.unwrap();
        let (all, _) = follow_all(&log, 16 << 10).await;
        // The written end moves by chunks, so it can fall inside a batch, past its header:
        // that batch is taken once written whole, not skipped as damage.
        let cut = LogPosition::new(all[10].0 + 200);
        let (partial, _, next) = follow_from(&log, LogPosition::ZERO, 16 << 10, cut).await;
        assert_eq!(partial[..], all[..10]);
        assert_eq!(next.get(), all[10].0, "it stops at the cut batch");
        let (rest, _, _) = follow_from(&log, next, 16 << 10, log.durable_end()).await;
        assert_eq!([partial, rest].concat(), all, "and goes on from there");
        log.close().await.unwrap();
    });
}
