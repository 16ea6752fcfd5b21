//! Disk full (issue 7.4).

use super::*;

/// A config whose disk-full back-off is short, so tests that wait for a retry stay fast, and
/// whose retention never deletes for disk usage (it runs at every new segment), so the disk
/// does fill.
fn disk_full_config(mode: FlushMode) -> StorageConfig {
    StorageConfig { disk_full_retry_ms: 5, disk_max_used_ratio: 1.0, ..small_config(mode) }
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
