//! The key index task (`shard/key_index.rs`) on one shard over the real log on the simulated
//! directory, with a simulated clock: a log written faster than it is indexed still gets
//! periodic checkpoints, a stop indexes for a bounded time, checkpoints what it indexed and
//! leaves the rest to the next start, and an index past the end of its log is rebuilt.

use std::time::Duration;

use super::super::key_index::ShardKeyIndex;
use super::*;
use crate::broker::shutdown::stop_pair;
use crate::runtime::{Clock, SimClock};
use crate::storage::sim_dir::SimOp;

const T0_MS: i64 = 1_700_000_000_000;

/// A batch of `n` keyed records of 1 KiB each (about `n` KiB).
fn keyed_batch(n: usize) -> Request {
    batch_with(n, b"k1 k2", None)
}

/// A shard whose log is on `sim` and whose key index is in `keys_dir` (a real directory),
/// reading `step` log bytes per step at most, checkpointing every 10 s of `clock`.
async fn keyed_shard(
    sim: &SimDir,
    keys_dir: &std::path::Path,
    step: u64,
    clock: SharedClock,
) -> Rc<Shard<SimLog>> {
    keyed_shard_with(sim, keys_dir, step, clock, |_| {}).await
}

/// [`keyed_shard`] with its storage configuration changed by `tweak`.
async fn keyed_shard_with(
    sim: &SimDir,
    keys_dir: &std::path::Path,
    step: u64,
    clock: SharedClock,
    tweak: impl FnOnce(&mut crate::storage::StorageConfig),
) -> Rc<Shard<SimLog>> {
    let dir = keys_dir.to_owned();
    let s = shard_configured(
        sim.clone(),
        |st| {
            st.flush_mode = crate::storage::FlushMode::Sync;
            st.segment_size_bytes = 64 << 20;
            tweak(st);
        },
        move |c| {
            c.broker.data_dir = dir;
            c.key_index.max_step_bytes = step;
            c.key_index.interval_ms = 200;
            c.key_index.checkpoint_interval_ms = 10_000;
        },
        clock,
    )
    .await;
    s.start_key_index().await.unwrap();
    s
}

fn key_query(key: &str) -> Request {
    Request::QueryKeys(crate::protocol::key_query::KeyQuery {
        shard: 0,
        topic: "t".into(),
        key: key.as_bytes().to_vec(),
        from_ms: 0,
        to_ms: i64::MAX,
        max: 1000,
    })
}

fn index_of(s: &Rc<Shard<SimLog>>) -> ShardKeyIndex {
    s.keys.borrow().clone().expect("the key index is open")
}

/// Simulated time that moves a second each time it is read: the key index task reads it once
/// per step, so its budgets and intervals count steps, whatever the machine's speed. Sleeps
/// end when reads moved the time past them.
struct SteppingClock(Arc<SimClock>);

impl Clock for SteppingClock {
    fn now(&self) -> std::time::Instant {
        self.0.advance(Duration::from_secs(1));
        self.0.now()
    }

    fn unix_ms(&self) -> i64 {
        self.0.unix_ms()
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> runtime::Sleep {
        self.0.sleep_until(deadline)
    }
}

fn stepping_clock() -> SharedClock {
    Arc::new(SteppingClock(SimClock::new(T0_MS)))
}

#[test]
fn a_stop_indexes_for_its_budget_then_checkpoints_and_leaves_the_rest_to_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().to_owned();
    run(move || async move {
        let sim = SimDir::new(7);
        let s = keyed_shard(&sim, &path, 64 << 10, stepping_clock()).await;
        // 40 batches of 150 KiB: one per step of 64 KiB.
        for _ in 0..40 {
            call(&s, keyed_batch(150)).await.unwrap();
        }
        let end = s.log.durable_end();
        assert!(end > 5 << 20, "{end}");
        let behind = |s: &Rc<Shard<SimLog>>| {
            s.metrics_snapshot(super::metrics::WIDE_LIMITS).key_index_behind_bytes
        };
        assert_eq!(behind(&s), Some(end), "the metric shows what is not indexed yet");
        let (mut fire, stop) = stop_pair();
        fire.fire();
        // A budget of 5 s: about five steps.
        s.clone().key_index_loop_with(stop, Duration::from_secs(5)).await;
        let index = index_of(&s);
        let indexed = index.indexed_to().get();
        assert!(indexed > 0, "the stop indexed within its budget");
        assert!(indexed < end / 4, "the stop kept to its budget: {indexed} of {end} bytes");
        assert_eq!(index.checkpointed_to().get(), indexed, "what was indexed is checkpointed");
        assert_eq!(behind(&s), Some(end - indexed));
        drop(index);
        drop(s);

        // The next start indexes the rest before it serves.
        let s = keyed_shard(&sim, &path, 64 << 10, stepping_clock()).await;
        assert_eq!(index_of(&s).indexed_to().get(), s.log.durable_end());
        assert_eq!(behind(&s), Some(0));
    });
}

#[test]
fn a_long_catch_up_checkpoints_on_the_way() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().to_owned();
    run(move || async move {
        // One batch (150 KiB) per step, a second per step: 100 steps behind is ten checkpoint
        // intervals, the state of an index that a log written faster than it is indexed keeps
        // behind.
        let clock = stepping_clock();
        let s = keyed_shard(&SimDir::new(8), &path, 4 << 10, clock.clone()).await;
        for _ in 0..100 {
            call(&s, keyed_batch(150)).await.unwrap();
        }
        let end = s.log.durable_end();
        let (mut fire, stop) = stop_pair();
        let task = runtime::spawn(s.clone().key_index_loop_with(stop, Duration::from_secs(5)));
        let index = index_of(&s);
        let mut checkpointed_while_behind = false;
        while index.indexed_to().get() < end {
            // Moves the time (for the index's first tick) and lets a step run; while the index
            // waits for its checkpoint's I/O, a real sleep lets the executor poll for it.
            let at = index.indexed_to();
            clock.now();
            runtime::yield_once().await;
            if index.indexed_to() == at {
                runtime::sleep(Duration::from_millis(1)).await;
            }
            // A checkpoint short of the end was taken while behind (the writer may catch up
            // in the same turn as it completes: its position tells, not the moment).
            let c = index.checkpointed_to().get();
            checkpointed_while_behind |= c > 0 && c < end;
        }
        let c = index.checkpointed_to().get();
        checkpointed_while_behind |= c > 0 && c < end;
        assert!(checkpointed_while_behind, "no checkpoint in 100 simulated seconds");
        fire.fire();
        task.await;
        assert_eq!(index.checkpointed_to().get(), end);
    });
}

#[test]
fn an_index_past_the_end_of_its_log_is_rebuilt_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().to_owned();
    run(move || async move {
        // An index that covers 10 batches, over a log that holds 2 (the log restored from an
        // older copy, or its tail lost with the index's checkpoint kept).
        let s = keyed_shard(&SimDir::new(9), &path, 64 << 10, stepping_clock()).await;
        for _ in 0..10 {
            call(&s, keyed_batch(10)).await.unwrap();
        }
        let (mut fire, stop) = stop_pair();
        fire.fire();
        s.clone().key_index_loop_with(stop, Duration::from_secs(3600)).await;
        assert_eq!(index_of(&s).checkpointed_to().get(), s.log.durable_end());
        drop(s);
        let sim = SimDir::new(10);
        let s = keyed_shard(&sim, &path, 64 << 10, stepping_clock()).await;
        for _ in 0..2 {
            call(&s, keyed_batch(10)).await.unwrap();
        }
        drop(s);

        let s = keyed_shard(&sim, &path, 64 << 10, stepping_clock()).await;
        let end = s.log.durable_end();
        assert_eq!(index_of(&s).indexed_to().get(), end, "rebuilt from the log it has");
        // Messages written now are indexed, and only the log's own keys are found.
        call(&s, keyed_batch(10)).await.unwrap();
        let (mut fire, stop) = stop_pair();
        fire.fire();
        s.clone().key_index_loop_with(stop, Duration::from_secs(3600)).await;
        assert_eq!(index_of(&s).indexed_to().get(), s.log.durable_end());
        let Response::QueryKeys(hits) = call(&s, key_query("k1")).await.unwrap() else { panic!() };
        assert_eq!(hits.hits.len(), 30, "{hits:?}");
    });
}

#[test]
fn the_reader_takes_written_batches_from_memory_while_the_log_is_not_yet_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    run(move || async move {
        // Async flush; the log's syncs held, as a slow fdatasync holds them under a heavy
        // write load: 2.5 MB is written to its files but not durable, more than the chunk
        // cache's 1 MiB.
        let sim = SimDir::new(11);
        let clock = SimClock::new(T0_MS);
        let s = shard_configured(
            sim.clone(),
            |st| st.flush_mode = crate::storage::FlushMode::Async,
            move |c| {
                c.broker.data_dir = dir;
                c.key_index.max_step_bytes = 64 << 10;
                c.key_index.interval_ms = 200;
            },
            clock.clone(),
        )
        .await;
        s.start_key_index().await.unwrap();
        let index = index_of(&s);
        let start = s.log.durable_end();
        let (mut fire, stop) = stop_pair();
        let task = runtime::spawn(s.clone().key_index_loop_with(stop, Duration::from_secs(5)));
        sim.pause(SimOp::Sync);
        let reads = sim.read_bytes();
        for _ in 0..80 {
            call(&s, keyed_batch(30)).await.unwrap();
            // The appends woke the reader (no simulated time passes): it runs now.
            for _ in 0..4 {
                runtime::yield_once().await;
            }
        }
        assert_eq!(s.log.durable_end(), start, "nothing new is durable");
        assert_eq!(index.indexed_to().get(), start, "nor indexed");

        sim.resume(SimOp::Sync);
        s.log.flush().await.unwrap();
        let end = s.log.durable_end();
        assert!(end - start > 2 << 20, "{start}..{end}");
        while index.indexed_to().get() < end {
            clock.advance(Duration::from_millis(200));
            runtime::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(sim.read_bytes(), reads, "every batch was read from memory, none from disk");
        assert_eq!(s.keys_reader.disk_bytes(), 0);
        let mut query = key_query("k2");
        if let Request::QueryKeys(q) = &mut query {
            q.max = 5000;
        }
        let Response::QueryKeys(hits) = call(&s, query).await.unwrap() else { panic!() };
        assert_eq!(hits.hits.len(), 80 * 30, "every message of every batch is found");
        fire.fire();
        task.await;
        assert_eq!(index.checkpointed_to().get(), end);
    });
}

/// A batch of `n` records of 1 KiB, each with `key` and, if given, the unique id `id`.
fn batch_with(n: usize, key: &[u8], id: Option<&[u8]>) -> Request {
    let mut b = BatchBuilder::new(1 << 18);
    let body = [7u8; 1024];
    let uniq = crate::storage::key_index::PROPERTY_UNIQ_KEY.as_bytes();
    let props: Vec<(&[u8], &[u8])> = id.into_iter().map(|id| (uniq, id)).collect();
    for _ in 0..n {
        let rec = Record { key, tag: b"", properties: &props, body: &body, timestamp_ms: 5 };
        b.push(&rec).unwrap();
    }
    Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch: b.finish(-1, -1).into() }
}

#[test]
fn batches_without_keys_or_properties_are_skipped_and_the_others_still_found() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().to_owned();
    run(move || async move {
        let s = keyed_shard(&SimDir::new(11), &path, 64 << 10, stepping_clock()).await;
        for i in 0..12 {
            call(&s, batch_with(3, b"", None)).await.unwrap();
            match i % 3 {
                0 => call(&s, batch_with(2, b"k1", None)).await.unwrap(),
                1 => call(&s, batch_with(1, b"", Some(b"ID1"))).await.unwrap(),
                _ => call(&s, batch_with(1, b"", None)).await.unwrap(),
            };
        }
        let (mut fire, stop) = stop_pair();
        fire.fire();
        s.clone().key_index_loop_with(stop, Duration::from_secs(3600)).await;
        assert_eq!(index_of(&s).indexed_to().get(), s.log.durable_end());
        let skipped = s.metrics_snapshot(super::metrics::WIDE_LIMITS).key_index_skipped_batches;
        assert_eq!(skipped, Some(12 + 4), "the bare batches, and only those");
        let Response::QueryKeys(hits) = call(&s, key_query("k1")).await.unwrap() else { panic!() };
        assert_eq!(hits.hits.len(), 8, "keys among skipped batches are found: {hits:?}");
        let Response::QueryKeys(hits) = call(&s, key_query("ID1")).await.unwrap() else { panic!() };
        assert_eq!(hits.hits.len(), 4, "a batch with only a message id is read: {hits:?}");
    });
}

/// A broker restarted with a lower `max_batch_bytes` still indexes the larger batches it
/// stored before: the key index's reader took the first of them for damage and skipped the
/// rest of the segment (their keys were never found).
#[test]
fn batches_over_a_lowered_max_batch_bytes_are_still_indexed_after_a_restart() {
    larger_stored_batches_are_indexed_after_a_restart_with(13, |st| st.max_batch_bytes = 16 << 10);
}

/// With the segment size lowered too, half of it is under the stored batches: the index's
/// reader bounded them by that and skipped them as damaged.
#[test]
fn batches_over_lowered_segment_and_batch_limits_are_still_indexed_after_a_restart() {
    larger_stored_batches_are_indexed_after_a_restart_with(14, |st| {
        st.max_batch_bytes = 16 << 10;
        st.segment_size_bytes = 128 << 10;
    });
}

/// Stores 8 keyed batches of 100 KiB (the limit is 256 KiB, segments 64 MiB), most of them
/// left to the next start, which runs with `lowered`: every key is found, no batch skipped.
fn larger_stored_batches_are_indexed_after_a_restart_with(
    seed: u64,
    lowered: fn(&mut crate::storage::StorageConfig),
) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().to_owned();
    run(move || async move {
        let sim = SimDir::new(seed);
        let s = keyed_shard(&sim, &path, 64 << 10, stepping_clock()).await;
        for _ in 0..8 {
            call(&s, keyed_batch(100)).await.unwrap();
        }
        let (mut fire, stop) = stop_pair();
        fire.fire();
        s.clone().key_index_loop_with(stop, Duration::from_secs(2)).await;
        let indexed = index_of(&s).indexed_to().get();
        assert!(indexed < s.log.durable_end() / 2, "most is left to the start: {indexed}");
        drop(s);

        let s = keyed_shard_with(&sim, &path, 64 << 10, stepping_clock(), lowered).await;
        assert_eq!(index_of(&s).indexed_to().get(), s.log.durable_end());
        let Response::QueryKeys(hits) = call(&s, key_query("k1")).await.unwrap() else { panic!() };
        assert_eq!(hits.hits.len(), 800, "every stored record's key is found");
        assert_eq!(
            s.metrics_snapshot(super::metrics::WIDE_LIMITS).key_index_skipped_batches,
            Some(0)
        );
    });
}
