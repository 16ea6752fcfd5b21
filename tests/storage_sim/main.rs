//! Commit log behaviour on the simulated, fault-injecting directory.
//!
//! `basics`: appends, reads, recovery, failed writes and syncs, retention, the flusher;
//! `reads`: disk reads of fetches, read-ahead and prefetch; `disk_full`; `stalls`: appends
//! that must not wait behind segment creation or retention; `faults`: failed removes,
//! renames and reads.

#[path = "../common/mod.rs"]
mod common;

mod basics;
mod disk_full;
mod faults;
mod read_many;
mod reads;
mod stalls;

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

/// A sync-flush log whose index files hold 128 entries.
fn small_index_config() -> StorageConfig {
    StorageConfig { index_file_entries: 128, ..small_config(FlushMode::Sync) }
}

/// A [`small_index_config`] log on `dir` filled with one-record batches of `Q1` (tags from 0)
/// until it has four segments, its index checkpointed; the next tag.
async fn four_segments_indexed(dir: &SimDir) -> (Rc<CommitLog<SimDir>>, u64) {
    let log = CommitLog::open_with(dir.clone(), small_index_config()).await.unwrap();
    let mut tag = 0u64;
    while log.segment_bases().len() < 4 {
        log.append_committed(Q1, &batch(tag, 1, 100)).await.unwrap();
        tag += 1;
    }
    log.checkpoint_index().await.unwrap();
    (log, tag)
}

/// Closes `log` and opens the [`small_index_config`] log on `dir` again.
async fn reopen(log: Rc<CommitLog<SimDir>>, dir: &SimDir) -> Rc<CommitLog<SimDir>> {
    log.close().await.unwrap();
    CommitLog::open_with(dir.clone(), small_index_config()).await.unwrap()
}

/// Names of the queue index files in `dir`.
fn index_files(dir: &SimDir) -> Vec<String> {
    dir.names().into_iter().filter(|n| n.ends_with(".qidx")).collect()
}

/// Retention at 49 hours from now (every sealed, durable segment is old enough), on a task of
/// its own.
fn spawn_retention(
    log: &Rc<CommitLog<SimDir>>,
) -> ringmq::runtime::JoinHandle<Result<Vec<LogPosition>, StorageError>> {
    let log = log.clone();
    let later = ringmq::storage::commit_log::now_ms() + 49 * 3_600_000;
    ringmq::runtime::spawn(async move { log.enforce_retention(later).await })
}

/// Yields until the file `name` is gone from `dir` (see [`until`]).
async fn until_removed(what: &str, dir: &SimDir, name: String) {
    let d = dir.clone();
    until(what, move || d.file_len(&name).is_none()).await;
}

/// Yields until `done` holds, at most 5,000 times; fails the test with `what` otherwise.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..5000 {
        if done() {
            return;
        }
        ringmq::runtime::yield_once().await;
    }
    panic!("{what}");
}

/// Awaits `fut` for at most 5 s; a stall fails the test instead of hanging it.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match ringmq::runtime::timeout(Duration::from_secs(5), fut).await {
        Some(v) => v,
        None => panic!("{what} stalled"),
    }
}
