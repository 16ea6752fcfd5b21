//! The index store against the simulated disk: write-back, sync, retention, lookups.

use super::*;
use crate::storage::sim_dir::{SimDir, SimFileHandle, SimOp};

fn entry(base: u64, position: u64) -> IndexEntry {
    IndexEntry {
        base_offset: QueueOffset::new(base),
        position: LogPosition::new(position),
        length: 100,
        record_count: 2,
        store_timestamp_ms: 5,
    }
}

fn on_executor<Fut: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce() -> Fut + Send + 'static,
) {
    let opts = runtime::ExecutorOptions { name: "t".into(), cpu: None, io_memory_bytes: 1 << 20 };
    runtime::run_on_new_executor(opts, f).expect("executor");
}

/// Regression: retention dropped entries that were never written (no write-back yet);
/// the write-back of the next entries then read the block of the dropped ones from a file
/// that was never created, failed, and stopped the log.
#[test]
fn entries_dropped_before_they_were_written_leave_nothing_to_read() {
    on_executor(|| async {
        let dir = SimDir::new(1);
        let store: IndexStore<SimFileHandle> = IndexStore::new(128, 64 * 1024);
        let q = QueueKey::new(TopicId::new(1), QueueId::new(1));
        for i in 0..10 {
            store.push(q, entry(2 * i, 100 * i));
        }
        let _gate = store.lock().await;
        let doomed = store.drop_before(&dir, LogPosition::new(500)).await.unwrap();
        assert!(doomed.is_empty(), "file 0 still holds retained entries");
        assert_eq!(store.visible_offsets(q, LogPosition::MAX).unwrap().min, QueueOffset::new(10));
        store.push(q, entry(20, 1000));
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        store.sync(&dir).await.unwrap();
        store.clear_cache();
        for (offset, position) in [(10, 500), (19, 900), (21, 1000)] {
            let n = store.find(&dir, q, QueueOffset::new(offset)).await.unwrap().unwrap();
            assert_eq!(store.entry(&dir, q, n).await.unwrap().position, LogPosition::new(position));
        }
        assert!(matches!(store.entry(&dir, q, 4).await, Err(LookupError::Gone)));
    });
}

/// With `op` paused: yields until `n` operations of it are in progress, then checks that no
/// more start (at most 10,000 yields, then 100 more).
async fn settles_at(dir: &SimDir, op: SimOp, n: usize) {
    let mut yields = 0;
    while dir.in_progress(op) != n as u32 {
        assert!(yields < 10_000, "{} {op:?} in progress, expected {n}", dir.in_progress(op));
        runtime::yield_once().await;
        yields += 1;
    }
    for _ in 0..100 {
        runtime::yield_once().await;
    }
    assert_eq!(dir.in_progress(op), n as u32, "more {op:?} started");
}

/// Queues 0..n of `topic`, each with one pending entry (queue i's at position 100 * i).
fn one_entry_each(store: &IndexStore<SimFileHandle>, topic: u32, n: u32) -> Vec<QueueKey> {
    let queues: Vec<QueueKey> =
        (0..n).map(|i| QueueKey::new(TopicId::new(topic), QueueId::new(i))).collect();
    for (i, q) in queues.iter().enumerate() {
        store.push(*q, entry(0, 100 * i as u64));
    }
    queues
}

/// The positions of the first `n` entries in `queue`'s first index file as the (crashed)
/// directory holds them durably.
fn durable_positions(dir: &SimDir, queue: QueueKey, n: usize) -> Vec<LogPosition> {
    let bytes = dir.contents(&index_file_name(queue, 0)).expect("file survived");
    bytes.chunks(ENTRY_BYTES).take(n).map(|e| IndexEntry::decode(e).position).collect()
}

/// A write-back of many queues keeps [`INDEX_WRITE_CONCURRENCY`] writes in flight (one at a
/// time, 10,000 queues took seconds), and the sync after it is one filesystem sync.
#[test]
fn many_queues_are_written_back_concurrently_and_synced_with_one_call() {
    on_executor(|| async {
        let dir = SimDir::new(3);
        let store: Rc<IndexStore<SimFileHandle>> = Rc::new(IndexStore::new(128, 1 << 20));
        let queues = one_entry_each(&store, 1, 100);
        dir.pause(SimOp::Write);
        let (s, d) = (store.clone(), dir.clone());
        let writing = runtime::spawn(async move {
            let _gate = s.lock().await;
            s.writeback(&d, LogPosition::MAX).await
        });
        settles_at(&dir, SimOp::Write, INDEX_WRITE_CONCURRENCY).await;
        dir.resume(SimOp::Write);
        writing.await.unwrap().unwrap();

        {
            let _gate = store.lock().await;
            store.sync(&dir).await.unwrap();
            // Nothing written since: nothing to sync.
            store.sync(&dir).await.unwrap();
        }
        assert_eq!(dir.fs_sync_count(), 1);
        assert_eq!(dir.op_counts(), (100, 0), "a write per file, no fdatasync");

        // Durable: every queue's file and entry survive a crash.
        dir.crash();
        for (i, q) in queues.iter().enumerate() {
            let at = durable_positions(&dir, *q, 1);
            assert_eq!(at, [LogPosition::new(100 * i as u64)], "queue {i}");
        }
    });
}

/// `queues` queues of `topic` with `per_queue` entries each, written back and synced, the
/// cache emptied: queue i's entry j is at position 100 * (j * queues + i) (log order).
async fn written_queues(
    dir: &SimDir,
    store: &IndexStore<SimFileHandle>,
    topic: u32,
    queues: u32,
    per_queue: u64,
) -> Vec<QueueKey> {
    let keys: Vec<QueueKey> =
        (0..queues).map(|i| QueueKey::new(TopicId::new(topic), QueueId::new(i))).collect();
    for j in 0..per_queue {
        for (i, q) in keys.iter().enumerate() {
            store.push(*q, entry(2 * j, 100 * (j * queues as u64 + i as u64)));
        }
    }
    let _gate = store.lock().await;
    store.writeback(dir, LogPosition::MAX).await.unwrap();
    store.sync(dir).await.unwrap();
    store.clear_cache();
    keys
}

/// Retention drops the oldest entries of every queue: the boundary is near each queue's first
/// entry, and looking for it from there reads that entry's block only. A binary search over
/// all of a queue's entries read about four blocks of each, and with 10,000 queues behind a
/// busy disk the first drop took 7 s, while the disk filled past `disk_max_used_ratio` to
/// DISK_FULL (BENCHMARKS.md, round 29).
#[test]
fn a_drop_of_the_oldest_entries_reads_one_block_a_queue() {
    on_executor(|| async {
        let dir = SimDir::new(5);
        let store: IndexStore<SimFileHandle> = IndexStore::new(4096, 1 << 20);
        let queues = written_queues(&dir, &store, 1, 10, 1000).await;
        let reads = dir.read_count();
        let _gate = store.lock().await;
        // Entries 0..20 of every queue are before position 100 * 200.
        let doomed = store.drop_before(&dir, LogPosition::new(100 * 200)).await.unwrap();
        assert!(doomed.is_empty(), "file 0 still holds retained entries");
        assert_eq!(dir.read_count() - reads, queues.len() as u64, "one block read a queue");
        for q in &queues {
            assert_eq!(
                store.visible_offsets(*q, LogPosition::MAX).unwrap().min,
                QueueOffset::new(40)
            );
            let n = store.find(&dir, *q, QueueOffset::new(40)).await.unwrap().unwrap();
            assert_eq!(n, 20);
        }
        // Further on, across blocks and files: still right.
        let doomed = store.drop_before(&dir, LogPosition::new(100 * 10 * 900 + 100)).await.unwrap();
        assert_eq!(doomed.len(), 0, "file 0 (4096 entries) holds the rest");
        for (i, q) in queues.iter().enumerate() {
            let min = store.visible_offsets(*q, LogPosition::MAX).unwrap().min;
            assert_eq!(min, QueueOffset::new(if i == 0 { 1802 } else { 1800 }), "queue {i}");
        }
    });
}

/// A drop over many queues whose entries are not cached keeps
/// [`INDEX_WRITE_CONCURRENCY`] reads in flight, not one at a time.
#[test]
fn a_drop_over_many_queues_reads_them_concurrently() {
    on_executor(|| async {
        let dir = SimDir::new(6);
        let store: Rc<IndexStore<SimFileHandle>> = Rc::new(IndexStore::new(128, 1 << 20));
        let queues = written_queues(&dir, &store, 2, 100, 3).await;
        dir.pause(SimOp::Read);
        let (s, d) = (store.clone(), dir.clone());
        let dropping = runtime::spawn(async move {
            let _gate = s.lock().await;
            s.drop_before(&d, LogPosition::new(100 * 100)).await
        });
        settles_at(&dir, SimOp::Read, INDEX_WRITE_CONCURRENCY).await;
        dir.resume(SimOp::Read);
        assert!(dropping.await.unwrap().unwrap().is_empty());
        for q in &queues {
            assert_eq!(
                store.visible_offsets(*q, LogPosition::MAX).unwrap().min,
                QueueOffset::new(2)
            );
        }
    });
}

/// A failed write among many: the write-back reports it, starts no further queue, and
/// every entry not written stays pending and is written by the next write-back.
#[test]
fn a_failed_write_in_a_concurrent_write_back_loses_no_pending_entry() {
    on_executor(|| async {
        let dir = SimDir::new(4);
        let store: IndexStore<SimFileHandle> = IndexStore::new(128, 1 << 20);
        let queues = one_entry_each(&store, 2, 100);
        let _gate = store.lock().await;
        dir.fail_next(SimOp::Write, 1, libc::ENOSPC);
        let failed = store.writeback(&dir, LogPosition::MAX).await;
        assert!(matches!(failed, Err(WritebackError::Write(_))), "{failed:?}");
        assert!(store.pending_bytes() > 0, "entries not written stay pending");
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        assert_eq!(store.pending_bytes(), 0);
        store.sync(&dir).await.unwrap();
        store.clear_cache();
        for (i, q) in queues.iter().enumerate() {
            let e = store.entry(&dir, *q, 0).await.unwrap();
            assert_eq!(e.position, LogPosition::new(100 * i as u64), "queue {i}");
        }
    });
}

/// A checkpoint of more files than may stay open: each file opened once (to write it), no
/// file fdatasynced one by one, one filesystem sync; entries written by an earlier write-back
/// are made durable by it too. A failed filesystem sync is reported.
#[test]
fn a_checkpoint_opens_each_file_once_and_syncs_the_filesystem_once() {
    on_executor(|| async {
        let dir = SimDir::new(5);
        let store: IndexStore<SimFileHandle> = IndexStore::new(128, 1 << 20);
        let queues = one_entry_each(&store, 3, 200);
        let _gate = store.lock().await;
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        store.sync(&dir).await.unwrap();
        assert_eq!(dir.open_count(), 200, "each file opened once");
        assert_eq!(dir.op_counts(), (200, 0), "a write per file, no fdatasync");
        assert_eq!(dir.fs_sync_count(), 1);

        // Second entries: queues 0..100 by a write-back before the checkpoint's, 100..200 by
        // the checkpoint's; both are durable after its one sync.
        for (i, q) in queues.iter().enumerate() {
            store.push(*q, entry(2, 100_000 + 100 * i as u64));
            if i == 99 {
                store.writeback(&dir, LogPosition::MAX).await.unwrap();
            }
        }
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        store.sync(&dir).await.unwrap();
        assert_eq!(dir.fs_sync_count(), 2);
        assert_eq!(dir.op_counts().1, 0, "no file synced one by one");

        // A third entry each, and the sync fails: reported, not retried.
        for (i, q) in queues.iter().enumerate() {
            store.push(*q, entry(4, 200_000 + 100 * i as u64));
        }
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        dir.fail_next(SimOp::SyncFs, 1, libc::EIO);
        assert!(store.sync(&dir).await.is_err());

        dir.crash();
        for (i, q) in queues.iter().enumerate() {
            let want = [100 * i as u64, 100_000 + 100 * i as u64].map(LogPosition::new);
            assert_eq!(durable_positions(&dir, *q, 2), want, "queue {i}");
        }
    });
}

#[test]
fn file_names_round_trip() {
    let q = QueueKey::new(TopicId::new(7), QueueId::new(4_000_000_000));
    let name = index_file_name(q, 12);
    assert_eq!(name, "0000000007-4000000000-00000000000000000012.qidx");
    assert_eq!(parse_index_file_name(&name), Some((q, 12)));
    assert_eq!(parse_index_file_name("0000000007-0000000001-12.qidx"), None);
    assert_eq!(parse_index_file_name("00000000000000000000.log"), None);
    assert_eq!(parse_index_file_name("9999999999-0000000001-00000000000000000012.qidx"), None);
}

/// A write-back of a few entries into blocks that already hold earlier ones reads nothing: it
/// writes exactly the new entries' bytes (it used to read each block's earlier entries back
/// when the cache no longer held the block, then write the whole 4 KiB). Cached blocks get the
/// new entries, and every entry reads back the same from the cache and from the files.
#[test]
fn a_write_back_writes_only_the_new_entries_and_reads_nothing() {
    on_executor(|| async {
        let dir = SimDir::new(3);
        let store: IndexStore<SimFileHandle> = IndexStore::new(256, 1 << 20);
        let queues: Vec<QueueKey> =
            (0..50).map(|i| QueueKey::new(TopicId::new(1), QueueId::new(i))).collect();
        // (queue, entry number) -> (base offset, position)
        let mut expected: HashMap<(QueueKey, u64), (u64, u64)> = HashMap::new();
        let mut position = 0;
        // Passes of 3, 5, 130 and 130 entries a queue: the third crosses a block (128
        // entries), the fourth the first file's end (256).
        for (pass, k) in [3u64, 5, 130, 130].into_iter().enumerate() {
            for &q in &queues {
                for _ in 0..k {
                    // Each entry holds 2 records: entry n has base offset 2n.
                    let base = store.next_offset(q).get();
                    store.push(q, entry(base, position));
                    expected.insert((q, base / 2), (base, position));
                    position += 100;
                }
            }
            // The cache holds none of the blocks, or (second pass) half the queues' first.
            store.clear_cache();
            if pass == 1 {
                for &q in queues.iter().step_by(2) {
                    store.entry(&dir, q, 0).await.unwrap();
                }
            }
            let reads = dir.read_count();
            let _gate = store.lock().await;
            store.writeback(&dir, LogPosition::MAX).await.unwrap();
            assert_eq!(dir.read_count(), reads, "pass {pass} read blocks back");
        }
        store.sync(&dir).await.unwrap();
        for from_files in [false, true] {
            if from_files {
                store.clear_cache();
            }
            for (&(q, n), &want) in &expected {
                let e = store.entry(&dir, q, n).await.unwrap();
                assert_eq!((e.base_offset.get(), e.position.get()), want, "{q:?} {n}");
            }
        }
        for &q in &queues {
            assert_eq!(dir.file_len(&index_file_name(q, 0)), Some(256 * ENTRY_BYTES));
            assert_eq!(dir.file_len(&index_file_name(q, 1)), Some(12 * ENTRY_BYTES));
        }
    });
}

/// One queue's long run of pending entries goes in writes of at most 2,048 entries (64 KiB
/// buffers), each entry where it belongs.
#[test]
fn a_long_run_of_entries_is_written_in_bounded_writes() {
    on_executor(|| async {
        let dir = SimDir::new(4);
        let store: IndexStore<SimFileHandle> = IndexStore::new(8192, 4 << 20);
        let q = QueueKey::new(TopicId::new(2), QueueId::new(0));
        for i in 0..5000u64 {
            store.push(q, entry(2 * i, 100 * i));
        }
        let (writes, _) = dir.op_counts();
        let _gate = store.lock().await;
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        assert_eq!(dir.op_counts().0 - writes, 3, "2,048 + 2,048 + 904 entries");
        store.clear_cache();
        for n in [0, 2047, 2048, 4095, 4096, 4999] {
            assert_eq!(store.entry(&dir, q, n).await.unwrap().position.get(), 100 * n);
        }
        assert_eq!(dir.file_len(&index_file_name(q, 0)), Some(5000 * ENTRY_BYTES));
    });
}

/// A scanned batch is checksummed, but its stamped base offset plus its record count can still
/// pass the last offset (an older version's bug, a hand-edited segment): not our data.
#[test]
fn a_scanned_batch_whose_offsets_pass_the_last_offset_is_refused() {
    on_executor(|| async {
        let store: IndexStore<SimFileHandle> = IndexStore::new(128, 64 * 1024);
        let q = QueueKey::new(TopicId::new(1), QueueId::new(1));
        let e = IndexEntry { base_offset: QueueOffset::new(u64::MAX - 1), ..entry(0, 0) };
        assert!(!store.push_scanned(q, e, QueueOffset::ZERO, false));
        assert!(store.queue_keys().is_empty());
    });
}

/// A checkpoint (128 entries per file, no segments) of queue `q` alone.
fn one_queue_checkpoint(
    q: QueueKey,
    entries: std::ops::Range<u64>,
    offsets: std::ops::Range<QueueOffset>,
) -> IndexCheckpoint {
    IndexCheckpoint {
        position: LogPosition::ZERO,
        file_entries: 128,
        segments: vec![],
        queues: vec![QueueCheckpoint {
            queue: q,
            first_entry: entries.start,
            next_entry: entries.end,
            min_offset: offsets.start,
            next_offset: offsets.end,
        }],
    }
}

/// A checksum-valid checkpoint counting a huge number of entries for a queue the floors say
/// is all dropped: recovery must not look for each of its files one by one.
#[test]
fn a_checkpoint_counting_huge_dropped_queues_does_not_hang_recovery() {
    on_executor(|| async {
        let dir = SimDir::new(1);
        let store: IndexStore<SimFileHandle> = IndexStore::new(128, 64 * 1024);
        let q = QueueKey::new(TopicId::new(1), QueueId::new(1));
        let ckpt = one_queue_checkpoint(q, 0..u64::MAX, QueueOffset::ZERO..QueueOffset::new(10));
        let floors = HashMap::from([(q, QueueOffset::new(10))]);
        store.recover(&dir, &[], Some(&ckpt), &floors).await.unwrap();
        assert_eq!(store.visible_offsets(q, LogPosition::MAX).unwrap().min, QueueOffset::new(10));
    });
}

/// Index file names come from the directory: a stray file numbered past every entry the
/// checkpoint counts (or so far that its first entry number overflows) is stale, not a panic.
#[test]
fn index_files_numbered_past_the_queues_entries_are_stale() {
    for file in [1000, u64::MAX] {
        on_executor(move || async move {
            let dir = SimDir::new(1);
            let store: IndexStore<SimFileHandle> = IndexStore::new(128, 64 * 1024);
            let q = QueueKey::new(TopicId::new(1), QueueId::new(1));
            let ckpt = one_queue_checkpoint(q, 0..10, QueueOffset::ZERO..QueueOffset::new(20));
            let names = vec![index_file_name(q, file)];
            let floors = HashMap::from([(q, QueueOffset::new(5))]);
            store.recover(&dir, &names, Some(&ckpt), &floors).await.unwrap();
            assert_eq!(store.next_offset(q), QueueOffset::new(20));
        });
    }
}

/// Index files carry no checksum: an entry read back whose offsets or position pass the last
/// one (a flipped high bit) is corruption, reported, not an overflow.
#[test]
fn an_entry_read_back_past_the_last_offset_is_corrupt() {
    on_executor(|| async {
        let dir = SimDir::new(1);
        let store: IndexStore<SimFileHandle> = IndexStore::new(128, 64 * 1024);
        let q = QueueKey::new(TopicId::new(1), QueueId::new(1));
        let mut bytes = vec![0u8; ENTRY_BYTES];
        IndexEntry { base_offset: QueueOffset::new(u64::MAX), ..entry(0, 0) }.encode(&mut bytes);
        dir.write_atomic(&index_file_name(q, 0), &bytes).await.unwrap();
        let ckpt = one_queue_checkpoint(q, 0..1, QueueOffset::ZERO..QueueOffset::new(2));
        store.recover(&dir, &[index_file_name(q, 0)], Some(&ckpt), &HashMap::new()).await.unwrap();
        let found = store.find(&dir, q, QueueOffset::new(1)).await;
        assert!(matches!(found, Err(LookupError::Corrupt { .. })), "{found:?}");
    });
}

/// A checksum-valid checkpoint counting more entries than a queue has offsets (each entry
/// holds at least one record, numbered from 0): the entry numbers it starts from overflow as
/// soon as a batch is added.
#[test]
fn a_checkpoint_counting_more_entries_than_offsets_is_refused() {
    on_executor(|| async {
        let dir = SimDir::new(1);
        let q = QueueKey::new(TopicId::new(1), QueueId::new(1));
        let written =
            one_queue_checkpoint(q, u64::MAX..u64::MAX, QueueOffset::new(5)..QueueOffset::new(5));
        let decoded = IndexCheckpoint::decode(&written.encode());
        if let Ok(ckpt) = &decoded {
            let store: IndexStore<SimFileHandle> = IndexStore::new(128, 64 * 1024);
            let floors = HashMap::from([(q, QueueOffset::new(5))]);
            store.recover(&dir, &[], Some(ckpt), &floors).await.unwrap();
            assert!(store.push_scanned(q, entry(5, 0), QueueOffset::new(5), false));
            let _ = store.find(&dir, q, QueueOffset::new(6)).await;
        }
        assert!(decoded.is_err(), "{decoded:?}");
    });
}

/// A drop is planned without the index gate and applied later: entries added and written
/// back in between (past the drop's log position) stay, and a queue whose every entry was
/// below it starts at the offset its next entry then got.
#[test]
fn a_drop_applied_after_writes_keeps_the_entries_added_since_its_plan() {
    on_executor(|| async {
        let dir = SimDir::new(2);
        let store: IndexStore<SimFileHandle> = IndexStore::new(128, 64 * 1024);
        let (q1, q2) = (
            QueueKey::new(TopicId::new(1), QueueId::new(1)),
            QueueKey::new(TopicId::new(1), QueueId::new(2)),
        );
        // q1: 300 entries at positions 0, 100, ...; q2: 3 entries below 500.
        for i in 0..300 {
            store.push(q1, entry(2 * i, 100 * i));
        }
        for i in 0..3 {
            store.push(q2, entry(2 * i, 100 * i + 50));
        }
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        store.clear_cache();
        let plan = store.plan_drop(&dir, LogPosition::new(20_000)).await.unwrap();
        assert_eq!(plan.len(), 2, "both queues have entries below the start");
        // Nothing is dropped by the plan alone.
        assert_eq!(store.visible_offsets(q1, LogPosition::MAX).unwrap().min, QueueOffset::ZERO);
        store.push(q1, entry(600, 30_000));
        store.push(q2, entry(6, 30_100));
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        let doomed = store.apply_drop(&plan);
        assert_eq!(doomed, vec![(q1, 0)], "q1's first file holds only dropped entries");
        assert_eq!(store.visible_offsets(q1, LogPosition::MAX).unwrap().min, QueueOffset::new(400));
        assert_eq!(store.visible_offsets(q2, LogPosition::MAX).unwrap().min, QueueOffset::new(6));
        store.clear_cache();
        for (q, offset, position) in [(q1, 400, 20_000), (q1, 600, 30_000), (q2, 6, 30_100)] {
            let n = store.find(&dir, q, QueueOffset::new(offset)).await.unwrap().unwrap();
            assert_eq!(store.entry(&dir, q, n).await.unwrap().position, LogPosition::new(position));
        }
        assert_eq!(store.floors().len(), 2);
    });
}

/// A block read while a write-back of its queue is in flight may miss the write's entries
/// (the read completed first) and must not be cached: it was, when the write had begun before
/// the read did (the write counter moved only at the write's start and end), and once the
/// write completed every lookup of those entries found the stale copy and failed as "missing"
/// until the block left the cache. Found by `storage_model` (round 31, 6,000 cases).
#[test]
fn a_block_read_during_a_write_of_its_queue_is_not_cached() {
    on_executor(|| async {
        let dir = SimDir::new(4);
        let store: Rc<IndexStore<SimFileHandle>> = Rc::new(IndexStore::new(128, 1 << 20));
        let q = QueueKey::new(TopicId::new(1), QueueId::new(1));
        store.push(q, entry(0, 0));
        store.writeback(&dir, LogPosition::MAX).await.unwrap();
        store.clear_cache();
        for i in 1..7 {
            store.push(q, entry(2 * i, 100 * i));
        }
        // The write of entries 1..7 begins and waits; a read of their block starts after it
        // and completes first, with entry 0 only.
        dir.pause(SimOp::Write);
        let (s, d) = (store.clone(), dir.clone());
        let writing = runtime::spawn(async move { s.writeback(&d, LogPosition::MAX).await });
        settles_at(&dir, SimOp::Write, 1).await;
        assert_eq!(store.entry(&dir, q, 0).await.unwrap().position, LogPosition::ZERO);
        dir.resume(SimOp::Write);
        writing.await.unwrap().unwrap();
        for i in 1..7u64 {
            let e = store.entry(&dir, q, i).await.unwrap();
            assert_eq!(e.position, LogPosition::new(100 * i), "entry {i}");
        }
    });
}
