//! The key index store on the simulated directory: crashes (torn, unsynced writes lost) at
//! random points, reopen, re-index the "log" from the checkpoint as the shard does, and every
//! query answers exactly what a model of the indexed batches says. Plus retention.

mod common;

use ringmq::storage::key_index::{Entry, Geometry, KeyIndex, KeyIndexSettings, Walk};
use ringmq::storage::sim_dir::{SimDir, SimOp};
use ringmq::storage::LogPosition;

/// One "batch" of the log: where it is, where it ends, its entries.
#[derive(Clone)]
struct Batch {
    position: u64,
    end: u64,
    entries: Vec<Entry>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: u32 = 6;

fn settings(max_files: u32) -> KeyIndexSettings {
    KeyIndexSettings { geometry: Geometry { slot_count: 4, max_entries: 16 }, max_files }
}

fn make_log(rng: &mut Rng, batches: usize) -> Vec<Batch> {
    let (mut pos, mut time, mut offset) = (0u64, 1_000i64, 0u64);
    (0..batches)
        .map(|_| {
            let len = 100 + rng.below(400);
            time += rng.below(3) as i64;
            let n = rng.below(4);
            let entries = (0..n)
                .map(|_| {
                    offset += 1;
                    Entry {
                        key_hash: rng.below(u64::from(KEYS)) as u32,
                        topic_id: 1 + rng.below(2) as u32,
                        queue_id: 0,
                        offset,
                        store_ms: time,
                    }
                })
                .collect();
            let b = Batch { position: pos, end: pos + len, entries };
            pos += len;
            b
        })
        .collect()
}

/// What a query must answer once batches `..upto` are indexed: newest first, each message once.
fn model(log: &[Batch], upto: usize, walk: &Walk, max: usize) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::new();
    for b in log[..upto].iter().rev() {
        for e in b.entries.iter().rev() {
            let hit = e.key_hash == walk.hash
                && e.topic_id == walk.topic_id
                && e.store_ms >= walk.from_ms
                && e.store_ms <= walk.to_ms;
            if hit && !out.contains(&(e.queue_id, e.offset)) {
                out.push((e.queue_id, e.offset));
            }
        }
    }
    out.truncate(max);
    out
}

/// Adds the batches from the index's position on (as the shard's follower does), up to `to`.
async fn follow(index: &KeyIndex<SimDir>, log: &[Batch], to: usize) -> usize {
    let from = index.indexed_to().get();
    let first = log.iter().position(|b| b.position >= from).unwrap_or(log.len());
    for b in &log[first..to.max(first)] {
        index
            .add_batch(LogPosition::new(b.position), LogPosition::new(b.end), &b.entries)
            .await
            .unwrap();
    }
    to.max(first)
}

async fn check_all(index: &KeyIndex<SimDir>, log: &[Batch], upto: usize, seed: u64) {
    for topic_id in 1..=2 {
        for hash in 0..KEYS {
            for (from_ms, to_ms) in [(i64::MIN, i64::MAX), (1_010, 1_030)] {
                let walk = Walk { hash, topic_id, from_ms, to_ms };
                let found = index.query(&walk, 1000).await.unwrap();
                let got: Vec<(u32, u64)> =
                    found.entries.iter().map(|e| (e.queue_id, e.offset)).collect();
                assert_eq!(got, model(log, upto, &walk, 1000), "seed {seed} hash {hash}");
            }
        }
    }
}

#[test]
fn crashes_lose_nothing_the_log_can_not_give_back() {
    for seed in 1..=25u64 {
        common::run(move || async move {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let log = make_log(&mut rng, 120);
            let sim = SimDir::new(seed);
            sim.set_torn_crash(true);
            let mut index =
                KeyIndex::open(sim.clone(), settings(1000), LogPosition::MAX).await.unwrap();
            let mut done = 0usize;
            while done < log.len() {
                let to = (done + 1 + rng.below(15) as usize).min(log.len());
                done = follow(&index, &log, to).await;
                match rng.below(4) {
                    0 => index.checkpoint().await.unwrap(),
                    1 => {
                        let checkpointed = index.checkpointed_to();
                        sim.crash();
                        drop(index);
                        index = KeyIndex::open(sim.clone(), settings(1000), LogPosition::MAX)
                            .await
                            .unwrap();
                        // Nothing past the checkpoint is trusted, nothing before it lost.
                        assert_eq!(index.indexed_to(), checkpointed, "seed {seed}");
                        done = log
                            .iter()
                            .position(|b| b.end > checkpointed.get())
                            .unwrap_or(log.len());
                        check_all(&index, &log, done, seed).await;
                        done = follow(&index, &log, to).await;
                    }
                    _ => {}
                }
                check_all(&index, &log, done, seed).await;
            }
            assert!(index.file_count() > 3, "small files were sealed and rolled");
        });
    }
}

#[test]
fn retention_and_the_file_bound_delete_the_oldest_files() {
    common::run(|| async {
        let mut rng = Rng(77);
        let log = make_log(&mut rng, 200);
        let sim = SimDir::new(3);
        let index = KeyIndex::open(sim.clone(), settings(4), LogPosition::MAX).await.unwrap();
        follow(&index, &log, log.len()).await;
        index.checkpoint().await.unwrap();
        // At most 4 files: 3 sealed + the active one.
        assert!(index.file_count() <= 4, "{}", index.file_count());
        let files = || sim.names().into_iter().filter(|n| n.ends_with(".kidx")).count();
        assert!(files() <= 4);
        // Retention removed the log before the last batch: every sealed file goes.
        let removed = index.retain(LogPosition::new(log[log.len() - 1].position)).await.unwrap();
        assert!(removed >= 1);
        assert_eq!(index.file_count(), 1);
        assert_eq!(files(), 1);
        // What is left answers for the newest batches only.
        let walk = Walk { hash: 0, topic_id: 1, from_ms: i64::MIN, to_ms: i64::MAX };
        let found = index.query(&walk, 1000).await.unwrap();
        let got: Vec<(u32, u64)> = found.entries.iter().map(|e| (e.queue_id, e.offset)).collect();
        let want = model(&log, log.len(), &walk, 1000);
        assert!(got.len() < want.len(), "older entries went with their files");
        assert_eq!(got, want[..got.len()], "the newest entries remain");
    });
}

#[test]
fn a_failed_sync_stops_the_index_and_the_next_open_recovers() {
    common::run(|| async {
        let mut rng = Rng(5);
        let log = make_log(&mut rng, 40);
        let sim = SimDir::new(9);
        let index = KeyIndex::open(sim.clone(), settings(1000), LogPosition::MAX).await.unwrap();
        follow(&index, &log, 20).await;
        index.checkpoint().await.unwrap();
        follow(&index, &log, 40).await;
        sim.fail_next(SimOp::Sync, 1, libc::EIO);
        let e = index.checkpoint().await.unwrap_err();
        // (Seals while following wrote checkpoints of their own.)
        let checkpointed = index.checkpointed_to();
        assert!(e.contains("sync"), "{e}");
        let walk = Walk { hash: 0, topic_id: 1, from_ms: i64::MIN, to_ms: i64::MAX };
        assert!(index.query(&walk, 10).await.unwrap_err().contains("stopped"));
        sim.crash();
        drop(index);
        let index = KeyIndex::open(sim.clone(), settings(1000), LogPosition::MAX).await.unwrap();
        assert_eq!(index.indexed_to(), checkpointed);
        follow(&index, &log, 40).await;
        check_all(&index, &log, 40, 5).await;
    });
}

#[test]
fn a_missing_active_file_is_indexed_again_from_the_log() {
    common::run(|| async {
        let mut rng = Rng(11);
        let mut log = make_log(&mut rng, 30);
        // The last batch has keys, so the active file holds entries when it is checkpointed.
        let last = log[29].clone();
        let entry =
            Entry { key_hash: 1, topic_id: 1, queue_id: 0, offset: 10_000, store_ms: 2_000 };
        log.push(Batch { position: last.end, end: last.end + 100, entries: vec![entry] });
        let sim = SimDir::new(4);
        let index = KeyIndex::open(sim.clone(), settings(1000), LogPosition::MAX).await.unwrap();
        follow(&index, &log, 31).await;
        index.checkpoint().await.unwrap();
        let checkpointed = index.checkpointed_to();
        drop(index);
        let active = sim.names().into_iter().filter(|n| n.ends_with(".kidx")).max().unwrap();
        sim.remove_now(&active);
        let index = KeyIndex::open(sim.clone(), settings(1000), LogPosition::MAX).await.unwrap();
        assert!(index.indexed_to() < checkpointed, "the lost file's range is indexed again");
        follow(&index, &log, 31).await;
        check_all(&index, &log, 31, 11).await;
    });
}

/// The last run's files were made with `old`; this run opens with [`settings`], and every
/// key is found once the log is followed again. Returns the bytes the second open read, the
/// position it indexes from and the position the last run's checkpoint covered.
async fn reopen_with_other_geometry(old: Geometry, seed: u64) -> (u64, LogPosition, LogPosition) {
    const BATCHES: usize = 60;
    let mut rng = Rng(seed);
    let log = make_log(&mut rng, BATCHES);
    let sim = SimDir::new(seed);
    let before = KeyIndexSettings { geometry: old, max_files: 1000 };
    let index = KeyIndex::open(sim.clone(), before, LogPosition::MAX).await.unwrap();
    follow(&index, &log, BATCHES).await;
    index.checkpoint().await.unwrap();
    let checkpointed = index.checkpointed_to();
    drop(index);
    let read_before = sim.read_bytes();
    let index = KeyIndex::open(sim.clone(), settings(1000), LogPosition::MAX).await.unwrap();
    let read = sim.read_bytes() - read_before;
    let reopened_at = index.indexed_to();
    follow(&index, &log, BATCHES).await;
    check_all(&index, &log, BATCHES, seed).await;
    (read, reopened_at, checkpointed)
}

#[test]
fn an_active_file_of_a_smaller_geometry_is_kept_and_sealed() {
    common::run(|| async {
        let old = Geometry { slot_count: 2, max_entries: 128 };
        assert!(old.file_bytes() <= settings(1).geometry.file_bytes());
        let (_, reopened_at, checkpointed) = reopen_with_other_geometry(old, 21).await;
        assert_eq!(reopened_at, checkpointed, "nothing is indexed again");
    });
}

#[test]
fn an_active_file_of_a_larger_geometry_is_not_read_into_memory_but_indexed_again() {
    common::run(|| async {
        // A checkpoint may name any geometry `Geometry::validate` allows (up to about
        // 1.9 GB a file); loading it would take that much memory beyond the configured
        // budget. Its range of the log is indexed again into a file of this run's size.
        let old = Geometry { slot_count: 1024, max_entries: 4096 };
        let configured = settings(1).geometry.file_bytes() as u64;
        assert!(old.file_bytes() as u64 > 8 * configured);
        let (read, reopened_at, checkpointed) = reopen_with_other_geometry(old, 22).await;
        assert!(
            read <= configured,
            "opening read {read} bytes, more than one file of {configured}"
        );
        assert!(reopened_at < checkpointed, "the dropped file's range is indexed again");
    });
}
