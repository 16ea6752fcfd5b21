//! The commit log on real files (glommio DmaFile / BufferedFile) in a temp directory.

mod common;

use common::{batch, batch_tag, run};
use ringmq::storage::{
    AppendStatus, CommitLog, FlushMode, IoMode, QueueKey, StorageConfig, StorageError,
};
use ringmq::storage::{QueueId, TopicId};
use std::path::{Path, PathBuf};

const Q: QueueKey = QueueKey::new(TopicId::new(3), QueueId::new(1));

fn config(dir: &Path, mode: FlushMode, io: IoMode) -> StorageConfig {
    StorageConfig {
        dir: dir.to_path_buf(),
        segment_size_bytes: 256 * 1024,
        max_batch_bytes: 64 * 1024,
        chunk_size_bytes: 64 * 1024,
        chunk_pool_chunks: 8,
        cache_bytes: 0,
        flush_mode: mode,
        io_mode: io,
        preallocate: true,
        // Retention by disk usage would depend on how full the host filesystem is (see
        // storage_crash.rs).
        disk_max_used_ratio: 1.0,
        ..StorageConfig::default()
    }
}

async fn read_tags(log: &std::rc::Rc<CommitLog>, q: QueueKey) -> Vec<u64> {
    let mut out = vec![];
    let mut off = log.offsets(q).min;
    loop {
        let r = log.read(q, off, 256 * 1024).await.unwrap();
        if r.batches.is_empty() {
            return out;
        }
        out.extend(r.batches.iter().map(|b| batch_tag(b)));
        off = r.next_offset;
    }
}

fn round_trip(dir: PathBuf, io: IoMode) {
    run(move || async move {
        let cfg = config(&dir, FlushMode::Sync, io);
        let log = CommitLog::open(cfg.clone()).await.unwrap();
        let mut tasks = vec![];
        for i in 0..120u64 {
            let log = log.clone();
            tasks.push(ringmq::runtime::spawn(async move {
                log.append_committed(Q, &batch(i, 4, 1000)).await.unwrap()
            }));
        }
        for t in tasks {
            let (_, status) = t.await.expect("task");
            assert_eq!(status, AppendStatus::Ok);
        }
        assert!(log.segment_bases().len() >= 2, "rolled into several segments");
        let mut tags = read_tags(&log, Q).await; // cache_bytes = 0: from disk, CRC-checked
        tags.sort_unstable();
        assert_eq!(tags, (0..120).collect::<Vec<_>>());
        log.close().await.unwrap();
        // The queue's index file holds exactly its 120 entries of 32 bytes: written through
        // the page cache at their own offsets, not as whole 4 KiB blocks.
        let index = dir.join(ringmq::storage::index_store::index_file_name(Q, 0));
        assert_eq!(std::fs::metadata(&index).unwrap().len(), 120 * 32);

        let log = CommitLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets(Q).next.get(), 480);
        let mut again = read_tags(&log, Q).await;
        again.sort_unstable();
        assert_eq!(again, (0..120).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

#[test]
fn direct_io_round_trip_and_reopen() {
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    round_trip(tmp.path().join("log"), IoMode::Direct);
}

#[test]
fn buffered_io_round_trip_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    round_trip(tmp.path().join("log"), IoMode::Buffered);
}

/// A freshly mounted ramfs (which has no O_DIRECT support), unmounted on drop.
struct Ramfs(tempfile::TempDir);

impl Ramfs {
    fn mount() -> Option<Ramfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "ramfs", "ramfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Ramfs(dir))
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn filesystem_without_o_direct_says_use_buffered() {
    let Some(fs) = Ramfs::mount() else {
        eprintln!("cannot mount a ramfs here (needs root); skipping");
        return;
    };
    let dir = fs.0.path().join("log");
    let d2 = dir.clone();
    let err = run(move || async move {
        CommitLog::open(config(&d2, FlushMode::Async, IoMode::Direct))
            .await
            .err()
            .map(|e| e.to_string())
    });
    let err = err.expect("direct I/O on ramfs must fail");
    assert!(err.contains("O_DIRECT") && err.contains("buffered"), "{err}");
    // And buffered mode works there.
    round_trip(dir, IoMode::Buffered);
}

#[test]
fn unusable_data_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let dir = file.join("data");
    let err = run(move || async move {
        match CommitLog::open(config(&dir, FlushMode::Async, IoMode::Direct)).await {
            Err(StorageError::Setup(msg)) => msg,
            Err(e) => panic!("wrong error kind: {e}"),
            Ok(_) => panic!("opened a log under a regular file"),
        }
    });
    assert!(err.contains("cannot create data directory"), "{err}");
}

#[test]
fn invalid_config_names_the_knob() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), FlushMode::Async, IoMode::Direct);
    cfg.segment_size_bytes = 1000;
    let err = run(move || async move { CommitLog::open(cfg).await.err().unwrap().to_string() });
    assert!(err.contains("segment_size_bytes"), "{err}");
}

#[test]
fn async_mode_flushes_on_interval_and_reads_unflushed_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(move || async move {
        let mut cfg = config(&dir, FlushMode::Async, IoMode::Direct);
        cfg.flush_interval_ms = 20;
        cfg.cache_bytes = 1 << 20;
        let log = CommitLog::open(cfg).await.unwrap();
        log.append(Q, &batch(7, 2, 100)).await.unwrap();
        // Visible at once in async mode, before any flush.
        assert_eq!(read_tags(&log, Q).await, vec![7]);
        // The interval flush makes it durable without anyone asking.
        let mut waited = 0;
        while log.positions().2 < log.positions().0 {
            assert!(waited < 2000, "interval flush did not happen");
            ringmq::runtime::sleep(std::time::Duration::from_millis(5)).await;
            waited += 5;
        }
        log.close().await.unwrap();
    });
}

/// Child half of `too_little_locked_memory_is_explained`: starts an executor and prints the
/// error it gets.
#[test]
fn memlock_child_entry_point() {
    if std::env::var_os("RINGMQ_MEMLOCK_CHILD").is_none() {
        return; // only does something when re-executed under a low `ulimit -l`
    }
    let opts = ringmq::runtime::ExecutorOptions::default();
    match ringmq::runtime::run_on_new_executor(opts, || async {}) {
        Ok(()) => println!("CHILD-RESULT ok"),
        Err(e) => println!("CHILD-RESULT {e}"),
    }
}

#[test]
fn too_little_locked_memory_is_explained() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -l 256 && exec \"$0\" --exact memlock_child_entry_point --nocapture")
        .arg(&exe)
        .env("RINGMQ_MEMLOCK_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.split("CHILD-RESULT ").nth(1)).unwrap_or_else(|| {
        panic!("child printed no result: {stdout} {}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(line.contains("256 KiB") && line.contains("ulimit -l"), "{line}");
    assert!(line.contains("LimitMEMLOCK"), "{line}");
}

/// The directory operations that now run off the shard thread (glommio's blocking pool and
/// io_uring) keep their contract on a real filesystem.
#[test]
fn directory_operations_off_the_shard_thread_keep_their_contract() {
    use ringmq::storage::dma_dir::DmaDir;
    use ringmq::storage::file::LogDir;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("log");
    run(move || async move {
        let dir = DmaDir::open(&path, IoMode::Buffered).await.unwrap();
        assert_eq!(dir.read_all("floors").await.unwrap(), None);
        dir.write_atomic("floors", b"one").await.unwrap();
        dir.write_atomic("floors", b"two!").await.unwrap();
        assert_eq!(dir.read_all("floors").await.unwrap(), Some(b"two!".to_vec()));
        let names = dir.list().await.unwrap();
        assert!(names.contains(&"floors".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        dir.remove("floors").await.unwrap();
        let err = dir.remove("floors").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
        assert!(!dir.list().await.unwrap().contains(&"floors".to_string()));
        dir.sync_dir().await.unwrap();
        let (used, total) = dir.disk_usage().await.unwrap();
        assert!(total > 0 && used <= total);
    });
}

/// Retention on real files: segments are unlinked (through glommio's blocking pool) while the
/// log goes on, and a restart continues the offsets.
#[test]
fn retention_unlinks_real_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    run(move || async move {
        let cfg = config(&dir, FlushMode::Sync, IoMode::Buffered);
        let log = CommitLog::open(cfg.clone()).await.unwrap();
        let mut tag = 0u64;
        while log.segment_bases().len() < 3 {
            log.append_committed(Q, &batch(tag, 4, 1000)).await.unwrap();
            tag += 1;
        }
        let later = ringmq::storage::commit_log::now_ms() + 49 * 3_600_000;
        let deleted = log.enforce_retention(later).await.unwrap();
        assert_eq!(deleted.len(), 2);
        for base in deleted {
            let name = ringmq::storage::segment::segment_name(base);
            assert!(!dir.join(&name).exists(), "{name} still on disk");
        }
        let next = log.offsets(Q).next;
        log.close().await.unwrap();
        let log = CommitLog::open(cfg).await.unwrap();
        assert_eq!(log.offsets(Q).next, next);
        log.close().await.unwrap();
    });
}

/// A freshly mounted tmpfs of `size`, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A real full disk (a 1 MiB tmpfs, real ENOSPC from fallocate): DISK_FULL, no partial file,
/// reads go on, retention frees space and appends resume, and a restart on the full disk works.
#[test]
fn a_real_full_disk_reports_disk_full_and_recovers_without_a_restart() {
    let Some(fs) = Tmpfs::mount("1m") else {
        eprintln!("cannot mount a tmpfs here (needs root); skipping");
        return;
    };
    let dir = fs.0.path().join("log");
    run(move || async move {
        let cfg = StorageConfig {
            disk_full_retry_ms: 5,
            // Retention at every new segment would keep the disk from filling.
            disk_max_used_ratio: 1.0,
            ..config(&dir, FlushMode::Sync, IoMode::Buffered)
        };
        let log = CommitLog::open(cfg.clone()).await.unwrap();
        let mut acked = vec![];
        let err = loop {
            let tag = acked.len() as u64;
            match log.append_committed(Q, &batch(tag, 4, 1000)).await {
                Ok(_) => acked.push(tag),
                Err(e) => break e,
            }
            assert!(acked.len() < 10_000, "a 1 MiB filesystem never filled");
        };
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        assert!(err.to_string().contains("free space"), "{err}");
        assert!(log.failure().is_none());
        let on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        assert_eq!(on_disk.len(), log.segment_bases().len(), "a partial segment was left");
        assert_eq!(read_tags(&log, Q).await, acked);
        let later = ringmq::storage::commit_log::now_ms() + 49 * 3_600_000;
        assert!(!log.enforce_retention(later).await.unwrap().is_empty());
        let tag = 100_000;
        log.append_committed(Q, &batch(tag, 4, 1000)).await.unwrap();
        assert_eq!(read_tags(&log, Q).await.last(), Some(&tag));
        log.close().await.unwrap();
        let log = CommitLog::open(cfg).await.unwrap();
        assert_eq!(read_tags(&log, Q).await.last(), Some(&tag));
        log.close().await.unwrap();
    });
}

/// CPUs the calling thread may run on.
fn allowed_cpus() -> usize {
    // SAFETY: sched_getaffinity fills a zeroed cpu_set_t of the size we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 0;
        }
        libc::CPU_COUNT(&set) as usize
    }
}

/// The helper thread that runs unlink/rename/listing for a pinned shard is not pinned to the
/// shard's core (glommio's default), so a slow unlink does not take that core's time.
#[test]
fn the_blocking_helper_of_a_pinned_shard_is_not_pinned() {
    if allowed_cpus() < 2 {
        eprintln!("one CPU available; skipping");
        return;
    }
    let opts = ringmq::runtime::ExecutorOptions {
        name: "pinned".into(),
        cpu: Some(0),
        io_memory_bytes: 1 << 20,
    };
    let Ok((shard, helper)) = ringmq::runtime::run_on_new_executor(opts, || async {
        let shard = allowed_cpus();
        let helper = glommio::executor().spawn_blocking(allowed_cpus).await;
        (shard, helper)
    }) else {
        eprintln!("cannot pin an executor to CPU 0 here; skipping");
        return;
    };
    assert_eq!(shard, 1, "the shard thread is pinned");
    assert!(helper > 1, "the blocking helper is pinned to the shard's CPU");
}

/// Appends to one queue are stored in the order they asked for the log, while earlier ones
/// wait inside it (for a chunk of the pool of 3, for a new 256 KiB segment) and more keep
/// asking. (The race that broke this under load, a release and a later asker coming before the
/// woken waiter, is reproduced step by step in `ringmq::runtime::fair_gate`'s tests.)
#[test]
fn appends_are_stored_in_the_order_they_asked_while_earlier_ones_wait_for_a_chunk() {
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let dir = tmp.path().join("log");
    run(move || async move {
        let cfg = StorageConfig {
            chunk_pool_chunks: 3,
            ..config(&dir, FlushMode::Async, IoMode::Direct)
        };
        let log = CommitLog::open(cfg).await.unwrap();
        let mut tasks = vec![];
        for i in 0..600u64 {
            let log = log.clone();
            tasks.push(ringmq::runtime::spawn(async move {
                log.append(Q, &batch(i, 4, 5000)).await.unwrap()
            }));
            // New appends keep asking while earlier ones wait and finish.
            let clock = ringmq::runtime::system_clock();
            clock
                .sleep_until(std::time::Instant::now() + std::time::Duration::from_micros(100))
                .await;
        }
        for t in tasks {
            t.await.expect("task");
        }
        let tags = read_tags(&log, Q).await;
        assert_eq!(tags, (0..600).collect::<Vec<_>>(), "stored in the order asked");
        log.close().await.unwrap();
    });
}

/// Collects what a `tracing_subscriber::fmt` subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The file-read trace (`ringmq::storage::dma_dir=trace`, to see whether the disk or the
/// broker leaves gaps between reads): each read names its reads in flight when it started
/// and ended, two reads at once count each other, and every read gives its count back.
#[test]
fn traced_file_reads_count_the_reads_in_flight() {
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let dir = tmp.path().join("log");
    let captured = Captured::default();
    let sink = captured.clone();
    run(move || async move {
        let cfg = config(&dir, FlushMode::Sync, IoMode::Direct);
        let log = CommitLog::open(cfg.clone()).await.unwrap();
        let q2 = QueueKey::new(TopicId::new(3), QueueId::new(2));
        for i in 0..8u64 {
            let q = if i % 2 == 0 { Q } else { q2 };
            log.append_committed(q, &batch(i, 4, 1000)).await.unwrap();
        }
        log.close().await.unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("ringmq::storage::dma_dir=trace")
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let _traced = tracing::subscriber::set_default(subscriber);
        // Reopened: nothing cached, so the reads go to the file (cache_bytes = 0).
        let log = CommitLog::open(cfg.clone()).await.unwrap();
        let before = captured.0.lock().unwrap().len();
        let (a, b) = futures::join!(read_tags(&log, Q), read_tags(&log, q2));
        assert_eq!((a, b), (vec![0, 2, 4, 6], vec![1, 3, 5, 7]));
        log.close().await.unwrap();
        // Reopened once more: its recovery's and one queue's reads, one at a time.
        let during = captured.0.lock().unwrap().len();
        let log = CommitLog::open(cfg).await.unwrap();
        assert_eq!(read_tags(&log, Q).await, vec![0, 2, 4, 6]);
        log.close().await.unwrap();
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let counts = |part: &str| -> Vec<(u32, u32)> {
            part.lines()
                .filter(|l| l.contains("file read"))
                .map(|l| {
                    let field = |name: &str| -> u32 {
                        let at = l.find(&format!(" {name}=")).expect(name) + name.len() + 2;
                        l[at..].split(' ').next().unwrap().parse().unwrap()
                    };
                    (field("in_flight_at_start"), field("in_flight"))
                })
                .collect()
        };
        let together = counts(&text[before..during]);
        assert!(!together.is_empty(), "the concurrent reads were traced:\n{text}");
        assert!(together.iter().all(|&(s, e)| s >= 1 && e >= 1), "{together:?}");
        assert!(together.iter().any(|&(s, _)| s >= 2), "two reads at once: {together:?}");
        let alone = counts(&text[during..]);
        assert!(!alone.is_empty(), "the later reads were traced:\n{text}");
        assert!(alone.iter().all(|&c| c == (1, 1)), "every count given back: {alone:?}");
    });
}
