//! More faults (issue 9.6).

use super::*;

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
        // Every rename fails (no checkpoint is due meanwhile: that would stop the log; and
        // retention needs none: this one covers the segments it deletes).
        log.checkpoint_index().await.unwrap();
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

/// Retention drops index entries before it writes the floors that count the drop; if that
/// write fails, the index files holding only dropped entries must still be deleted by the
/// next run (the entries are gone, so the next run's search no longer finds them), even a run
/// with no segment to delete.
#[test]
fn index_files_of_a_run_whose_floors_failed_are_deleted_by_the_next_run() {
    run(|| async {
        let dir = SimDir::new(32);
        let (log, tag) = four_segments_indexed(&dir).await;
        let before = index_files(&dir);
        assert!(before.len() >= 3, "{before:?}");
        // The run writes the log start, frees the segments and waits in its drop's read;
        // then the floors' second write fails.
        dir.pause(SimOp::Read);
        let retention = spawn_retention(&log);
        until_removed("the segments were not freed", &dir, segment_name(LogPosition::ZERO)).await;
        dir.fail_next(SimOp::Rename, 1, libc::EIO);
        dir.resume(SimOp::Read);
        let err = bounded("retention", retention).await.expect("task ran").unwrap_err();
        assert!(err.to_string().contains("floors"), "{err}");
        assert_eq!(index_files(&dir), before, "deleted before the floors were durable");
        let later = ringmq::storage::commit_log::now_ms() + 49 * 3_600_000;
        let deleted = log.enforce_retention(later).await.unwrap();
        assert!(deleted.is_empty(), "{deleted:?}");
        let after = index_files(&dir);
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

/// An operator lowers `max_batch_bytes` and restarts after a crash: batches stored under the
/// old limit are acknowledged data, not torn writes. Recovery kept only what lay before the
/// first batch larger than the new limit (the rest of the segment was cut and later segments
/// discarded); the limit is for new appends.
#[test]
fn a_lowered_max_batch_bytes_keeps_the_larger_batches_already_stored() {
    run(|| async {
        let dir = SimDir::new(31);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        let mut acked = Vec::new();
        for tag in 0..24u64 {
            // Every third batch about 12 KiB (the limit is 16 KiB), the others about 1 KiB.
            let records = if tag % 3 == 0 { 12 } else { 1 };
            log.append_committed(Q1, &batch(tag, records, 1000)).await.unwrap();
            acked.push(tag);
        }
        assert!(log.segment_bases().len() >= 2, "spans segments: {:?}", log.segment_bases());
        dir.crash();
        drop(log);
        let lowered = StorageConfig { max_batch_bytes: 4 * 1024, ..small_config(FlushMode::Sync) };
        let log = CommitLog::open_with(dir.clone(), lowered).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, acked, "acknowledged batches lost");
        let err = log.append_committed(Q1, &batch(99, 12, 1000)).await.unwrap_err();
        assert!(err.to_string().contains("4096"), "new appends keep to the new limit: {err}");
        log.append_committed(Q1, &batch(24, 1, 1000)).await.unwrap();
        acked.push(24);
        dir.crash();
        drop(log);
        let log = CommitLog::open_with(dir.clone(), small_config(FlushMode::Sync)).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, acked);
        log.close().await.unwrap();
    });
}

/// A segment written without preallocation is only as long as its batches: a batch stored
/// under larger segments and batch limits than today's is longer than half that file, and
/// recovery dropped it (with everything after it) when it bounded stored batches by half the
/// segment's length.
#[test]
fn recovery_keeps_a_batch_longer_than_half_its_unpreallocated_segment() {
    run(|| async {
        let dir = SimDir::new(32);
        let wide = StorageConfig {
            preallocate: false,
            segment_size_bytes: 256 * 1024,
            max_batch_bytes: 100 * 1024,
            chunk_pool_chunks: 32,
            ..small_config(FlushMode::Sync)
        };
        let log = CommitLog::open_with(dir.clone(), wide).await.unwrap();
        log.append_committed(Q1, &batch(0, 60, 1000)).await.unwrap();
        log.append_committed(Q1, &batch(1, 1, 1000)).await.unwrap();
        let file = segment_name(LogPosition::ZERO);
        assert!(dir.file_len(&file).unwrap() < 2 * 60 * 1000, "{:?}", dir.file_len(&file));
        dir.crash();
        drop(log);
        let narrow = StorageConfig {
            preallocate: false,
            max_batch_bytes: 4 * 1024,
            ..small_config(FlushMode::Sync)
        };
        let log = CommitLog::open_with(dir.clone(), narrow).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, vec![0, 1], "acknowledged batches lost");
        log.close().await.unwrap();
    });
}
