//! Following the log (`CommitLog::follow`, the key index's reader) on the simulated directory:
//! what memory still holds is followed without disk reads, and what it no longer holds is read
//! from the segment files, with the same batches in the same order either way.

mod common;

use common::{batch, batch_tag, run, small_config};
use ringmq::storage::sim_dir::SimDir;
use ringmq::storage::{CommitLog, FlushMode, LogPosition, QueueId, QueueKey, TopicId};

const Q1: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(0));
const Q2: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(1));

/// Every batch `follow` reports from the start of the log, as (position, tag), in steps of
/// `step` bytes the way the key index calls it.
async fn follow_all(log: &std::rc::Rc<CommitLog<SimDir>>, step: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut from = LogPosition::ZERO;
    loop {
        let f = log
            .follow(from, step, |pos, view| out.push((pos.get(), batch_tag(view.as_bytes()))))
            .await
            .unwrap();
        if f.next == from {
            return out;
        }
        from = f.next;
    }
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
        let from_memory = follow_all(&log, 16 << 10).await;
        assert_eq!(from_memory.iter().map(|(_, t)| *t).collect::<Vec<_>>(), tags);
        assert!(from_memory.windows(2).all(|w| w[0].0 < w[1].0), "in log order");
        assert_eq!(dir.read_count(), reads_before, "followed from memory, no disk read");
        log.close().await.unwrap();

        // Reopened: the cache is empty, the same batches come from the segment files.
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let reads_before = dir.read_count();
        let from_disk = follow_all(&log, 16 << 10).await;
        assert_eq!(from_disk, from_memory);
        assert!(dir.read_count() > reads_before, "a late follower reads the disk");
        log.close().await.unwrap();
    });
}
