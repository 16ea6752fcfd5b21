//! The per-queue index stays within `index_cache_bytes` however much the log holds: a log with
//! a 1 MiB index budget stores 1,000,000 small batches over 1,000 queues (32 MB of index
//! entries), and random reads by offset and by time still find the right batches, before and
//! after a close and reopen (which recovers from the index checkpoint, not a full scan).

mod common;

use common::{batch, off, run};
use ringmq::format::BatchView;
use ringmq::storage::sim_dir::SimDir;
use ringmq::storage::{CommitLog, FlushMode, QueueKey, StorageConfig};
use ringmq::storage::{QueueId, TopicId};
use std::rc::Rc;

const QUEUES: u32 = 1_000;
const BATCHES: u32 = 1_000_000;
const INDEX_BUDGET_BYTES: usize = 1 << 20;
const SAMPLES: usize = 3_000;

fn config() -> StorageConfig {
    StorageConfig {
        dir: "/sim".into(),
        segment_size_bytes: 8 << 20,
        chunk_size_bytes: 256 << 10,
        chunk_pool_chunks: 8,
        max_batch_bytes: 64 << 10,
        cache_bytes: 1 << 20,
        flush_mode: FlushMode::Async,
        flush_bytes: 1 << 20,
        index_cache_bytes: INDEX_BUDGET_BYTES,
        // Two files per queue: exercises file switching and the open-file bound.
        index_file_entries: 512,
        ..StorageConfig::default()
    }
}

/// What the test remembers of each queue: per batch (base offset, store time).
type Expected = Vec<Vec<(u64, i64)>>;

fn key(q: u32) -> QueueKey {
    QueueKey::new(TopicId::new(7), QueueId::new(q))
}

/// Small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn check_reads(log: &Rc<CommitLog<SimDir>>, expected: &Expected, seed: u64) {
    let mut rng = Rng(seed | 1);
    for _ in 0..SAMPLES {
        let q = rng.below(u64::from(QUEUES)) as u32;
        let batches = &expected[q as usize];
        let i = rng.below(batches.len() as u64) as usize;
        let (base, ts) = batches[i];
        let next = batches.get(i + 1).map_or(log.offsets(key(q)).next.get(), |b| b.0);
        // By offset: any offset inside the batch finds it.
        let offset = base + rng.below(next - base);
        let r = log.read(key(q), off(offset), 1).await.expect("read");
        assert_eq!(r.batches.len(), 1, "queue {q} offset {offset}");
        let h = BatchView::parse(&r.batches[0], usize::MAX).expect("parses").header;
        assert_eq!(
            (h.stamp.queue_id, h.stamp.base_offset, h.stamp.store_timestamp_ms),
            (q, base, ts),
            "queue {q} offset {offset} returned the wrong batch"
        );
        assert_eq!(r.next_offset, off(next));
        // By time: the first batch stored at or after `ts`.
        let first_at = batches.partition_point(|b| b.1 < ts);
        let found = log.offset_for_timestamp(key(q), ts).await.expect("by time");
        assert_eq!(found, off(batches[first_at].0), "queue {q} time {ts}");
    }
}

fn assert_in_budget(log: &Rc<CommitLog<SimDir>>) {
    let m = log.index_memory();
    assert!(
        m.total_bytes() <= INDEX_BUDGET_BYTES,
        "index memory {} exceeds its budget {INDEX_BUDGET_BYTES}: {m:?}",
        m.total_bytes()
    );
}

#[test]
fn a_million_batches_over_a_thousand_queues_stay_within_the_index_budget() {
    run(|| async {
        let dir = SimDir::new(42);
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        // Batches of 1..=3 records, so offsets and entry numbers differ.
        let templates: Vec<Vec<u8>> = (1..=3).map(|n| batch(0, n, 8)).collect();
        let mut expected: Expected = vec![Vec::new(); QUEUES as usize];
        let mut rng = Rng(7);
        let mut peak = 0usize;
        for i in 0..BATCHES {
            let q = rng.below(u64::from(QUEUES)) as u32;
            let a = log.append(key(q), &templates[(i % 3) as usize]).await.unwrap();
            expected[q as usize].push((a.base_offset.get(), a.store_timestamp_ms));
            if i % 1_000 == 0 {
                assert_in_budget(&log);
                peak = peak.max(log.index_memory().total_bytes());
            }
        }
        log.flush().await.unwrap();
        let entries_bytes = BATCHES as usize * 32;
        assert!(entries_bytes > 30 * INDEX_BUDGET_BYTES, "the test must outgrow the budget");
        assert!(peak > 0);
        check_reads(&log, &expected, 1).await;
        assert_in_budget(&log);
        let m = log.index_memory();
        assert!(m.cache_misses > 0, "the index was read from its files: {m:?}");

        log.close().await.unwrap();
        let log = CommitLog::open_with(dir.clone(), config()).await.unwrap();
        assert_in_budget(&log);
        for (q, batches) in expected.iter().enumerate() {
            let o = log.offsets(key(q as u32));
            assert_eq!(o.min, off(0));
            let last = batches.last().expect("every queue got batches");
            assert!(o.next > off(last.0), "queue {q} lost its tail after reopen");
        }
        check_reads(&log, &expected, 2).await;
        assert_in_budget(&log);
        log.close().await.unwrap();
    });
}
