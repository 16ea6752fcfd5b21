//! Appends, reads and recovery; failed writes and syncs; retention; the flusher and the
//! log's clock and counters.

use super::*;

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

/// A failed sync of the queue index (its checkpoint's one `syncfs`) stops the log like a
/// failed fdatasync, ENOSPC included: after a failed sync the page cache's state of the
/// index files is unknown, so this is not DISK_FULL (unlike ENOSPC writing them, which
/// `disk_full.rs` covers). Every acknowledged batch is read back after a reopen.
#[test]
fn a_failed_index_sync_stops_the_log_and_a_reopen_keeps_every_acked_batch() {
    for (seed, errno) in [(31, libc::ENOSPC), (32, libc::EIO)] {
        run(move || async move {
            let dir = SimDir::new(seed);
            let cfg = small_config(FlushMode::Sync);
            let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
            let syncs_at_open = dir.fs_sync_count();
            dir.fail_next(SimOp::SyncFs, 1, errno);
            let mut acked = vec![];
            let mut err = None;
            // A checkpoint is due after each 64 KiB segment's worth of durable log: about
            // 16 of these batches. The index writer runs behind the appends.
            for i in 0..1_000 {
                match log.append_committed(Q1, &batch(i, 4, 1000)).await {
                    Ok(_) => acked.push(i),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
                ringmq::runtime::yield_once().await;
            }
            let err = err.expect("appends stop after the failed index sync");
            assert!(dir.fs_sync_count() > syncs_at_open, "the checkpoint's syncfs ran");
            assert!(matches!(err, StorageError::Failed { .. }), "{err}");
            let reason = log.failure().expect("the log is stopped");
            assert!(reason.contains("syncing the queue index"), "{reason}");
            assert!(acked.len() >= 10, "only {} acked", acked.len());
            dir.crash();
            drop(log);
            let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
            let got = read_all(&log, Q1).await;
            assert_eq!(got[..acked.len()], acked[..], "every acked batch, in order");
            // An append in flight when the log stopped may be durable without its ack.
            assert!(got.len() <= acked.len() + 1, "{} read, {} acked", got.len(), acked.len());
            log.close().await.unwrap();
        });
    }
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
        // Retention (at every new segment) would keep the disk from filling.
        cfg.disk_max_used_ratio = 1.0;
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
        // Counted as deleted for disk usage (the segments were minutes old, not expired),
        // with the runs each new segment made.
        let m = log.metrics();
        assert!(m.probe.retention_disk_segments >= deleted.len() as u64, "{m:?}");
        assert_eq!(m.probe.retention_expired_segments, 0);
        assert_eq!(m.segments, log.segment_bases().len() as u64);
        log.close().await.unwrap();
    });
}

/// Retention's timer is minutes; a fast writer fills that much disk between two runs. A
/// new segment (more disk used) runs it too: here the timer never fires (the log's clock
/// stands still), and the disk ratio is still kept.
#[test]
fn a_new_segment_runs_retention_without_waiting_for_its_timer() {
    run(|| async {
        let dir = SimDir::new(12);
        dir.set_capacity(Some(1 << 20));
        let mut cfg = small_config(FlushMode::Sync);
        cfg.disk_max_used_ratio = 0.3;
        cfg.retention_check_interval_ms = 3_600_000;
        let clock = ringmq::runtime::SimClock::new(1_700_000_000_000);
        let log = CommitLog::open_with_clock(dir.clone(), cfg, clock).await.unwrap();
        let segment_files = || dir.names().iter().filter(|n| n.ends_with(".log")).count();
        let mut most = 0;
        // 16 segments of 64 KiB (the disk holds 1 MiB): without retention the disk fills.
        for i in 0..1_600u64 {
            log.append_committed(Q1, &batch(i, 1, 600)).await.unwrap();
            most = most.max(segment_files());
        }
        // 0.3 of 1 MiB is under five segments; a run may come one segment late.
        assert!(most <= 7, "{most} segment files at once");
        let (used, total) = ringmq::storage::file::LogDir::disk_usage(&dir).await.unwrap();
        assert!(used as f64 <= total as f64 * 0.3 + 2.0 * 65536.0, "used {used} of {total}");
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

/// A pin moved up by `pin_retention_once_durable` holds where it was until the log is durable
/// to the position given: the record that made the move possible (a checkpoint, a snapshot, a
/// decision) would be lost to a crash before that, and a restart would need what the old pin
/// kept.
#[test]
fn a_pin_moved_once_durable_holds_until_the_log_is_durable_there() {
    run(|| async {
        let dir = SimDir::new(14);
        let mut cfg = small_config(FlushMode::Async);
        cfg.flush_bytes = 1 << 20; // flushed when asked only: the clock stands still
        let clock = ringmq::runtime::SimClock::new(1_700_000_000_000);
        let log = CommitLog::open_with_clock(dir.clone(), cfg, clock).await.unwrap();
        log.append(Q2, &batch(0, 1, 100)).await.unwrap();
        log.pin_retention(Q2, Some(off(0)));
        for i in 0..300 {
            log.append(Q1, &batch(i, 1, 600)).await.unwrap();
        }
        log.flush().await.unwrap();
        let segments = log.segment_bases().len();
        assert!(segments >= 3, "{segments} segments");
        let next = log.append(Q2, &batch(1, 1, 100)).await.unwrap();
        log.pin_retention_once_durable(Q2, Some(off(1)), next.end);
        let far = ringmq::storage::commit_log::now_ms() + 10_000 * 3_600_000;
        assert_eq!(log.enforce_retention(far).await.unwrap(), vec![], "moved before durable");
        log.flush().await.unwrap();
        assert_eq!(log.enforce_retention(far).await.unwrap().len(), segments - 1);
        log.close().await.unwrap();
    });
}
