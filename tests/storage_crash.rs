//! Crash test: a child process appends with `flush_mode = sync` on real files and prints every
//! acknowledged batch; the parent SIGKILLs it at random moments, reopens the log, and checks
//! that every acknowledged batch is present, intact, at its acknowledged offset and in order,
//! and that nothing in the log is corrupt.
//!
//! The child is this same test binary re-executed with `RINGMQ_CRASH_CHILD_DIR` set.

mod common;

use common::{batch, batch_tag, off, run};
use rand::{Rng, SeedableRng};
use ringmq::storage::{AppendStatus, CommitLog, FlushMode, IoMode, QueueKey, StorageConfig};
use ringmq::storage::{QueueId, TopicId};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const QUEUES: u32 = 4;
const WRITERS: u64 = 16;

fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        dir: dir.to_path_buf(),
        segment_size_bytes: 512 * 1024,
        max_batch_bytes: 64 * 1024,
        chunk_size_bytes: 64 * 1024,
        chunk_pool_chunks: 8,
        cache_bytes: 256 * 1024,
        flush_mode: FlushMode::Sync,
        io_mode: IoMode::Direct,
        // Durability is tested here, not retention: with the default 0.75 a host filesystem
        // fuller than that (a CI machine's, or this one's with a benchmark image on it) had
        // retention delete the first segments, and the check from offset 0 failed.
        disk_max_used_ratio: 1.0,
        ..StorageConfig::default()
    }
}

fn queue(i: u64) -> QueueKey {
    QueueKey::new(TopicId::new(9), QueueId::new((i % QUEUES as u64) as u32))
}

/// The child: append forever from several tasks, print "ACK queue offset tag" per durable ack.
#[test]
fn crash_child_entry_point() {
    let Ok(dir) = std::env::var("RINGMQ_CRASH_CHILD_DIR") else {
        return; // Only does something when the crash test re-executes this binary.
    };
    let round: u64 = std::env::var("RINGMQ_CRASH_ROUND").unwrap().parse().unwrap();
    let dir = PathBuf::from(dir);
    run(move || async move {
        let log = CommitLog::open(config(&dir)).await.expect("child opens log");
        println!("READY");
        std::io::stdout().flush().unwrap();
        let mut tasks = vec![];
        for w in 0..WRITERS {
            let log = log.clone();
            tasks.push(ringmq::runtime::spawn(async move {
                for n in 0u64.. {
                    let tag = round * 1_000_000_000 + w * 1_000_000 + n;
                    let q = queue(w);
                    let records = 1 + (n % 8) as usize;
                    let (a, status) =
                        log.append_committed(q, &batch(tag, records, 900)).await.expect("append");
                    if status == AppendStatus::Ok {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {} {} {}", q.queue_id, a.base_offset, tag).unwrap();
                        out.flush().unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

/// Kills the child if the parent panics, so a failing test never leaves a writer behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_never_loses_acknowledged_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFEE);
    // queue -> offset -> tag, for every acknowledged batch over all rounds.
    let mut acked: BTreeMap<u32, BTreeMap<u64, u64>> = BTreeMap::new();
    let rounds = 6;
    for round in 1..=rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_entry_point", "--nocapture", "--test-threads=1"])
            .env("RINGMQ_CRASH_CHILD_DIR", &dir)
            .env("RINGMQ_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(tmp.path().join("child.err")).unwrap()))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut child = KillOnDrop(child);
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait (bounded) until the child is appending, then kill it at a random moment.
        let start = Instant::now();
        let mut lines = vec![];
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    // libtest prints "test name ... " without a newline before our output.
                    let ready = l.ends_with("READY");
                    lines.push(l);
                    if ready {
                        break;
                    }
                }
                Err(e) => {
                    let err =
                        std::fs::read_to_string(tmp.path().join("child.err")).unwrap_or_default();
                    let dead = matches!(e, std::sync::mpsc::RecvTimeoutError::Disconnected);
                    assert!(
                        !dead && start.elapsed() < Duration::from_secs(30),
                        "round {round}: child did not start; its stderr:\n{err}"
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let mut n = 0;
        for l in &lines {
            let Some(rest) = l.strip_prefix("ACK ") else { continue };
            let v: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
            let prev = acked.entry(v[0] as u32).or_default().insert(v[1], v[2]);
            assert!(prev.is_none(), "offset {} of queue {} acknowledged twice", v[1], v[0]);
            n += 1;
        }
        assert!(n > 0 || round > 1, "round {round}: the child acknowledged nothing");
    }

    // Reopen in-process and check everything.
    let acked2 = acked.clone();
    let dir2 = dir.clone();
    let total = run(move || async move {
        let log = CommitLog::open(config(&dir2)).await.expect("reopen after crashes");
        let mut total = 0;
        for q in 0..QUEUES {
            let key = QueueKey::new(TopicId::new(9), QueueId::new(q));
            let mut stored: BTreeMap<u64, u64> = BTreeMap::new();
            let mut seen = HashSet::new();
            let mut next = 0;
            loop {
                // Reads verify CRCs of everything that comes from disk.
                let r = log.read(key, off(next), 1 << 20).await.expect("read");
                if r.batches.is_empty() {
                    break;
                }
                for b in &r.batches {
                    let v = ringmq::format::BatchView::parse(b, usize::MAX).expect("intact");
                    v.verify_stamp().expect("stamp intact");
                    assert_eq!(v.header.stamp.base_offset, next, "offsets contiguous");
                    let tag = batch_tag(b);
                    assert!(seen.insert(tag), "batch {tag} stored twice");
                    for r in v.records() {
                        let r = r.expect("records decode");
                        assert!(r.body.starts_with(format!("{tag}:").as_bytes()));
                    }
                    stored.insert(next, tag);
                    next = v.header.next_offset();
                }
            }
            if let Some(want) = acked2.get(&q) {
                for (o, t) in want {
                    assert_eq!(stored.get(o), Some(t), "acked batch {t} at {q}/{o} missing");
                    total += 1;
                }
            }
        }
        log.close().await.unwrap();
        total
    });
    assert!(total > 0);
    eprintln!("verified {total} acknowledged batches over {rounds} SIGKILLs");
}
