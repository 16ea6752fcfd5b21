//! Request handling on one shard over the real commit log on the simulated directory: no
//! sockets, no disk.

use super::*;
use crate::storage::sim_dir::SimDir;
use crate::storage::CommitLog;
use crate::storage::{QueueId, TopicId};

type SimLog = Rc<CommitLog<SimDir>>;
use crate::broker::mesh;
use crate::format::{BatchBuilder, Record};
use crate::runtime::{run_on_new_executor, ExecutorOptions};

fn batch(n: usize) -> Vec<u8> {
    numbered_batch(n, "r", -1, -1)
}

/// A batch of `n` records with bodies `{prefix}{i}`, numbered for `producer_id`.
fn numbered_batch(n: usize, prefix: &str, producer_id: i64, base_sequence: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new(1 << 16);
    for i in 0..n {
        let body = format!("{prefix}{i}");
        let rec =
            Record { key: b"", tag: b"", properties: &[], body: body.as_bytes(), timestamp_ms: 5 };
        b.push(&rec).unwrap();
    }
    b.finish(producer_id, base_sequence)
}

/// A 200 KiB plain batch for topic "t"'s queue 1: segments are 4 MiB in these tests, so a
/// few dozen of them roll several (for retention).
fn filler(fill: u8) -> Request {
    let mut b = BatchBuilder::new(256 << 10);
    let body = vec![fill; 200 << 10];
    b.push(&Record { key: b"", tag: b"", properties: &[], body: &body, timestamp_ms: 5 }).unwrap();
    Request::Produce { topic: "t".into(), queue_id: 1, flags: 0, batch: b.finish(-1, -1).into() }
}

/// Appends `n` [`filler`] batches and flushes: the log's segment count after (at least 3).
async fn roll_segments(s: &Rc<Shard<SimLog>>, n: u8) -> usize {
    for i in 0..n {
        call(s, filler(i)).await.unwrap();
    }
    s.log.flush().await.unwrap();
    let segments = s.log.segment_bases().len();
    assert!(segments >= 3, "{segments} segments");
    segments
}

/// A time when every segment is long past retention (10,000 hours from now).
fn far_future_ms() -> i64 {
    crate::storage::commit_log::now_ms() + 10_000 * 3_600_000
}

async fn shard(waiters: usize) -> Rc<Shard<SimLog>> {
    shard_on(SimDir::new(7), waiters, |_| {}).await
}

/// A shard whose log runs on `dir`, with `tweak` applied to the storage config.
async fn shard_on(
    dir: SimDir,
    waiters: usize,
    tweak: impl FnOnce(&mut crate::storage::StorageConfig),
) -> Rc<Shard<SimLog>> {
    shard_with(dir, waiters, tweak, |_| {}).await
}

/// `shard_on`, with `broker` applied to the broker config too.
async fn shard_with(
    dir: SimDir,
    waiters: usize,
    tweak: impl FnOnce(&mut crate::storage::StorageConfig),
    broker: impl FnOnce(&mut super::super::config::BrokerConfig),
) -> Rc<Shard<SimLog>> {
    shard_with_clock(dir, waiters, tweak, broker, runtime::system_clock()).await
}

async fn shard_with_clock(
    dir: SimDir,
    waiters: usize,
    tweak: impl FnOnce(&mut crate::storage::StorageConfig),
    broker: impl FnOnce(&mut super::super::config::BrokerConfig),
    clock: SharedClock,
) -> Rc<Shard<SimLog>> {
    let configure = |c: &mut Config| {
        broker(&mut c.broker);
        c.broker.max_long_poll_waiters_per_queue = waiters;
    };
    shard_configured(dir, tweak, configure, clock).await
}

/// A shard with `configure` applied to the whole config (then `tweak` to its storage).
async fn shard_configured(
    dir: SimDir,
    tweak: impl FnOnce(&mut crate::storage::StorageConfig),
    configure: impl FnOnce(&mut Config),
    clock: SharedClock,
) -> Rc<Shard<SimLog>> {
    shard_with_metadata(dir, tweak, configure, clock, None).await
}

/// [`shard_configured`], with `metadata` as its topic table's file (topic changes need one).
async fn shard_with_metadata(
    dir: SimDir,
    tweak: impl FnOnce(&mut crate::storage::StorageConfig),
    configure: impl FnOnce(&mut Config),
    clock: SharedClock,
    metadata: Option<MetadataStore>,
) -> Rc<Shard<SimLog>> {
    let mut config = Config::default();
    configure(&mut config);
    let mut topics = TopicTable::new(1);
    topics.create("t", 2, 16, 16).unwrap();
    topics.create("wide", WIDE_QUEUES, WIDE_QUEUES, 16).unwrap();
    let data = mesh::build::<Forward>(1, 4).pop().unwrap().connect().await.0;
    let control = mesh::build::<Control>(1, 4).pop().unwrap().connect().await.0;
    let ports = Ports { shared: 1, per_shard: vec![2] };
    let mut storage = config.storage.clone();
    storage.dir = "/sim".into();
    // Small sizes: the simulated directory holds whole segments in memory.
    storage.segment_size_bytes = 4 << 20;
    storage.max_batch_bytes = 256 << 10;
    storage.chunk_size_bytes = 64 << 10;
    storage.chunk_pool_chunks = 16;
    storage.cache_bytes = 1 << 20;
    tweak(&mut storage);
    config.storage = storage.clone();
    let log = CommitLog::open_with(dir, storage).await.unwrap();
    Rc::new(Shard::new(
        ShardId::new(0),
        1,
        Arc::new(config),
        log,
        ports,
        topics,
        data,
        control,
        metadata,
        clock,
    ))
}

async fn call(s: &Rc<Shard<SimLog>>, request: Request) -> Reply {
    s.handle(request).await.map(Answer::into_response)
}

fn produce(queue_id: u32, n: usize) -> Request {
    Request::Produce { topic: "t".into(), queue_id, flags: 0, batch: batch(n).into() }
}

fn fetch(offset: u64, max_wait_ms: u32) -> Request {
    fetch_with(offset, max_wait_ms, Vec::new())
}

fn fetch_with(offset: u64, max_wait_ms: u32, tags: Vec<Vec<u8>>) -> Request {
    Request::Fetch { topic: "t".into(), queue_id: 0, offset, max_bytes: 1 << 20, max_wait_ms, tags }
}

fn run<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    run_on_new_executor(ExecutorOptions::default(), f).unwrap()
}

#[test]
fn produce_fetch_offsets_and_errors() {
    run(|| async {
        let s = shard(8).await;
        let r = call(&s, produce(0, 3)).await.unwrap();
        assert!(matches!(r, Response::Produce { base_offset: 0, record_count: 3, .. }));
        let r = call(&s, produce(0, 2)).await.unwrap();
        assert!(matches!(r, Response::Produce { base_offset: 3, .. }));
        let Response::Fetch { batches, next_offset, .. } = call(&s, fetch(4, 0)).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(next_offset, 5);
        // The batch holding offset 4 starts at 3: returned whole, stamped.
        let view = crate::format::BatchView::parse(&batches, 1 << 20).unwrap();
        assert_eq!(view.header.stamp.base_offset, 3);
        let e = call(&s, fetch(6, 0)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OFFSET_OUT_OF_RANGE);
        assert_eq!(e.detail, ErrorDetail::OffsetRange { min: 0, next: 5 });
        let e = call(&s, produce(2, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::UNKNOWN_QUEUE);
        let mut bad = batch(1);
        bad[100] ^= 1;
        let e = call(
            &s,
            Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch: bad.into() },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::CORRUPT_BATCH);
        let r = call(&s, Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: 0 })
            .await
            .unwrap();
        assert_eq!(r, Response::Offsets { min_offset: 0, next_offset: 5, timestamp_offset: 0 });
        let e = s.handle_forwarded(fetch(0, 0)).await.map(|_| ());
        assert_eq!(e, Ok(()), "a forwarded request for an owned queue is served");
    });
}

fn idempotent(queue_id: u32, producer_id: i64, base_sequence: i32, n: usize) -> Request {
    let prefix = format!("s{base_sequence}-");
    let batch = numbered_batch(n, &prefix, producer_id, base_sequence);
    Request::Produce { topic: "t".into(), queue_id, flags: 0, batch: batch.into() }
}

/// Queues of topic "wide".
const WIDE_QUEUES: u32 = 16;

/// `idempotent` on queue `queue_id` of topic "wide".
fn wide(queue_id: u32, producer_id: i64, base_sequence: i32, n: usize) -> Request {
    let batch = numbered_batch(n, "w", producer_id, base_sequence);
    Request::Produce { topic: "wide".into(), queue_id, flags: 0, batch: batch.into() }
}

fn wide_key(queue_id: u32) -> QueueKey {
    // "t" got topic id 1, "wide" 2.
    QueueKey::new(TopicId::new(2), QueueId::new(queue_id))
}

fn base_offset(r: &Reply) -> u64 {
    match r {
        Ok(Response::Produce { base_offset, .. }) => *base_offset,
        other => panic!("{other:?}"),
    }
}

#[test]
fn slow_and_failed_storage_map_to_flush_disk_timeout_and_shard_failed() {
    run(|| async {
        let dir = SimDir::new(21);
        let s = shard_on(dir.clone(), 8, |st| {
            st.flush_mode = crate::storage::FlushMode::Sync;
            st.sync_flush_timeout_ms = 20;
        })
        .await;
        let r = call(&s, produce(0, 1)).await.unwrap();
        assert!(matches!(r, Response::Produce { status: SendStatus::SendOk, .. }), "{r:?}");
        dir.set_sync_delay(Duration::from_millis(150));
        let r = call(&s, produce(0, 1)).await.unwrap();
        assert!(
            matches!(
                r,
                Response::Produce { status: SendStatus::FlushDiskTimeout, base_offset: 1, .. }
            ),
            "{r:?}"
        );
        dir.set_sync_delay(Duration::ZERO);
        // Wait (bounded) until the slow flush finished: in sync mode the batch becomes
        // visible once durable.
        let offsets = Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: 0 };
        let t = Instant::now();
        while !matches!(
            call(&s, offsets.clone()).await.unwrap(),
            Response::Offsets { next_offset: 2, .. }
        ) {
            assert!(t.elapsed() < Duration::from_secs(5), "slow flush never completed");
            runtime::sleep(Duration::from_millis(5)).await;
        }
        dir.fail_syncs(1);
        let e = call(&s, produce(0, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::SHARD_FAILED, "{e:?}");
        // The shard keeps answering, and keeps refusing writes it cannot make durable.
        let e = call(&s, produce(0, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::SHARD_FAILED);
    });
}

#[test]
fn a_full_disk_answers_disk_full_and_the_shard_keeps_serving() {
    run(|| async {
        let dir = SimDir::new(22);
        let s = shard_on(dir.clone(), 8, |st| {
            st.segment_size_bytes = 256 << 10;
            st.max_batch_bytes = 64 << 10;
            st.disk_full_retry_ms = 5;
        })
        .await;
        // Room for the first segment, not for the next one.
        dir.set_capacity(Some(300 << 10));
        let mut acked = 0u64;
        let e = loop {
            match call(&s, produce(0, 50)).await {
                Ok(_) => acked += 50,
                Err(e) => break e,
            }
            assert!(acked < 1_000_000, "the disk never filled");
        };
        assert_eq!(e.code, ErrorCode::DISK_FULL, "{e:?}");
        assert!(e.message.contains("free space"), "{e:?}");
        let Response::Fetch { next_offset, .. } = call(&s, fetch(0, 0)).await.unwrap() else {
            panic!("fetch")
        };
        assert!(next_offset > 0, "reads go on while the disk is full");
        // Space is freed: produces succeed again without a restart.
        dir.set_capacity(None);
        let t = Instant::now();
        while let Err(e) = call(&s, produce(0, 50)).await {
            assert_eq!(e.code, ErrorCode::DISK_FULL, "{e:?}");
            assert!(t.elapsed() < Duration::from_secs(5), "produces never resumed");
            runtime::sleep(Duration::from_millis(2)).await;
        }
    });
}

/// Polls (bounded) until `n` fetches are parked on the shard.
async fn until_parked(s: &Rc<Shard<SimLog>>, n: u64) {
    let t = Instant::now();
    while s.stats().long_poll_waiting != n {
        assert!(t.elapsed() < Duration::from_secs(5), "fetches never parked");
        runtime::sleep(Duration::from_millis(1)).await;
    }
}

/// A sync-mode shard whose next flush takes `delay`, far past its 20 ms flush timeout.
async fn slow_sync_shard(delay: Duration) -> (Rc<Shard<SimLog>>, SimDir) {
    let dir = SimDir::new(33);
    let s = shard_on(dir.clone(), 8, |st| {
        st.flush_mode = crate::storage::FlushMode::Sync;
        st.sync_flush_timeout_ms = 20;
    })
    .await;
    dir.set_sync_delay(delay);
    (s, dir)
}

#[test]
fn parked_fetches_wake_when_a_late_sync_flush_completes() {
    run(|| async {
        let (s, dir) = slow_sync_shard(Duration::from_millis(300)).await;
        // One fetch parks before the produce, one after its reply (FLUSH_DISK_TIMEOUT).
        let s2 = s.clone();
        let before = runtime::spawn(async move { call(&s2, fetch(0, 20_000)).await });
        until_parked(&s, 1).await;
        let t = Instant::now();
        let r = call(&s, produce(0, 2)).await.unwrap();
        assert!(
            matches!(r, Response::Produce { status: SendStatus::FlushDiskTimeout, .. }),
            "{r:?}"
        );
        dir.set_sync_delay(Duration::ZERO);
        let s2 = s.clone();
        let after = runtime::spawn(async move { call(&s2, fetch(0, 20_000)).await });
        for parked in [before, after] {
            let r = parked.await.unwrap().unwrap();
            assert!(
                matches!(r, Response::Fetch { next_offset: 2, ref batches, .. } if !batches.is_empty()),
                "{r:?}"
            );
        }
        // Woken by the flush (about 300 ms), not by the 20 s deadline.
        assert!(t.elapsed() < Duration::from_secs(10), "woken after {:?}", t.elapsed());
    });
}

/// Batch bytes that record when they are dropped.
struct DropProbe(Vec<u8>, Rc<Cell<bool>>);
impl AsRef<[u8]> for DropProbe {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
impl Drop for DropProbe {
    fn drop(&mut self) {
        self.1.set(true);
    }
}

#[test]
fn the_log_releases_a_batch_before_waiting_for_its_fsync() {
    run(|| async {
        let dir = SimDir::new(41);
        let s = shard_on(dir.clone(), 8, |st| {
            st.flush_mode = crate::storage::FlushMode::Sync;
            st.sync_flush_timeout_ms = 10_000;
        })
        .await;
        dir.set_sync_delay(Duration::from_millis(300));
        let (dropped, acked) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
        let probe = DropProbe(batch(3), dropped.clone());
        let (s2, acked2) = (s.clone(), acked.clone());
        let append = runtime::spawn(async move {
            let out =
                ShardLog::append(&s2.log, QueueKey::new(TopicId::new(1), QueueId::new(0)), probe)
                    .await
                    .unwrap();
            acked2.set(true);
            out
        });
        let t = Instant::now();
        while !dropped.get() {
            assert!(t.elapsed() < Duration::from_secs(5), "the batch was never released");
            runtime::sleep(Duration::from_millis(1)).await;
        }
        // Released while the fsync is still running: the connection can reuse its buffer.
        assert!(!acked.get(), "released only after the durability wait");
        let out = append.await.unwrap();
        assert!(!out.flush_timed_out && out.end <= ShardLog::visible_end(&s.log));
    });
}

#[test]
fn timestamp_lookup_never_points_past_what_a_fetch_can_read() {
    run(|| async {
        let (s, dir) = slow_sync_shard(Duration::from_millis(300)).await;
        dir.set_sync_delay(Duration::ZERO);
        call(&s, produce(0, 1)).await.unwrap(); // offset 0, durable
        dir.set_sync_delay(Duration::from_millis(300));
        let r = call(&s, produce(0, 2)).await.unwrap(); // 1..3, not yet durable
        assert!(matches!(r, Response::Produce { status: SendStatus::FlushDiskTimeout, .. }));
        for ts in [0, i64::MAX] {
            let req = Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: ts };
            let Response::Offsets { next_offset, timestamp_offset, .. } =
                call(&s, req).await.unwrap()
            else {
                panic!()
            };
            assert!(timestamp_offset <= next_offset, "{timestamp_offset} > {next_offset}");
            call(&s, fetch(timestamp_offset, 0)).await.expect("a fetch at the answer works");
        }
    });
}

fn tagged(n: usize, tag: &[u8]) -> Request {
    let mut b = BatchBuilder::new(1 << 16);
    for _ in 0..n {
        b.push(&Record { key: b"", tag, properties: &[], body: b"x", timestamp_ms: 5 }).unwrap();
    }
    Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch: b.finish(-1, -1).into() }
}

fn fetch_tags(offset: u64, max_wait_ms: u32, tag: &[u8]) -> Request {
    fetch_with(offset, max_wait_ms, vec![tag.to_vec()])
}

fn batch_bases(r: &Response) -> (Vec<u64>, u64) {
    let Response::Fetch { batches, scan_end_offset, .. } = r else { panic!("{r:?}") };
    let mut rest = batches.as_slice();
    let mut bases = Vec::new();
    while !rest.is_empty() {
        let h = crate::format::batch::read_header(rest).unwrap();
        bases.push(h.stamp.base_offset);
        rest = &rest[h.length as usize..];
    }
    (bases, *scan_end_offset)
}

#[test]
fn tag_filtered_fetches_skip_batches_on_the_broker() {
    run(|| async {
        let s = shard(8).await;
        call(&s, tagged(2, b"A")).await.unwrap(); // offsets 0..2
        call(&s, tagged(1, b"B")).await.unwrap(); // 2
        call(&s, tagged(2, b"A")).await.unwrap(); // 3..5
        let r = call(&s, fetch_tags(0, 0, b"B")).await.unwrap();
        assert_eq!(batch_bases(&r), (vec![2], 5), "only the B batch; scanned to the end");
        let r = call(&s, fetch_tags(3, 0, b"B")).await.unwrap();
        assert_eq!(batch_bases(&r), (vec![], 5));
        let r = call(&s, fetch(0, 0)).await.unwrap();
        assert_eq!(batch_bases(&r), (vec![0, 2, 3], 5), "no tags: everything");
        // A parked filtered fetch skips non-matching appends and keeps waiting.
        let s2 = s.clone();
        let parked = runtime::spawn(async move { call(&s2, fetch_tags(5, 10_000, b"B")).await });
        runtime::sleep(Duration::from_millis(20)).await;
        call(&s, tagged(1, b"A")).await.unwrap(); // 5
        runtime::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.stats().long_poll_waiting, 1, "still waiting after a non-matching append");
        call(&s, tagged(1, b"B")).await.unwrap(); // 6
        let r = parked.await.unwrap().unwrap();
        assert_eq!(batch_bases(&r), (vec![6], 7));
    });
}

#[test]
fn long_poll_wakes_times_out_is_bounded_and_released_on_stop() {
    run(|| async {
        let s = shard(1).await;
        // Times out empty.
        let t = Instant::now();
        let r = call(&s, fetch(0, 50)).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(45));
        assert!(matches!(r, Response::Fetch { ref batches, .. } if batches.is_empty()));
        // Woken by an append.
        let s2 = s.clone();
        let parked = runtime::spawn(async move { call(&s2, fetch(0, 10_000)).await });
        runtime::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.stats().long_poll_waiting, 1);
        // The per-queue bound (1) is reached: another waiter is answered at once.
        let t = Instant::now();
        call(&s, fetch(0, 10_000)).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        let t = Instant::now();
        call(&s, produce(0, 1)).await.unwrap();
        let r = parked.await.unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(r, Response::Fetch { next_offset: 1, ref batches, .. } if !batches.is_empty())
        );
        // Stopping releases parked fetches at once.
        let s2 = s.clone();
        let parked = runtime::spawn(async move { call(&s2, fetch(1, 10_000)).await });
        runtime::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        s.begin_stop();
        parked.await.unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn a_long_poll_ends_when_the_clock_passes_its_deadline_not_before() {
    run(|| async {
        let clock = runtime::SimClock::new(1_700_000_000_000);
        let s = shard_with_clock(SimDir::new(51), 8, |_| {}, |_| {}, clock.clone()).await;
        let s2 = s.clone();
        let real = Instant::now();
        let parked = runtime::spawn(async move { call(&s2, fetch(0, 30_000)).await });
        until_parked(&s, 1).await;
        clock.advance(Duration::from_millis(29_999));
        // Let the woken fetch look again: still before its deadline, it parks again.
        for _ in 0..10 {
            runtime::yield_once().await;
        }
        until_parked(&s, 1).await;
        clock.advance(Duration::from_millis(1));
        let r = parked.await.unwrap().unwrap();
        assert!(
            matches!(r, Response::Fetch { next_offset: 0, ref batches, .. } if batches.is_empty()),
            "{r:?}"
        );
        assert_eq!(s.stats().long_poll_waiting, 0);
        // Ended by the simulated clock, not by 30 s of real time.
        assert!(real.elapsed() < Duration::from_secs(20), "{:?}", real.elapsed());
    });
}

mod batch_limits;
mod fetch_multi;
mod group;
mod group_deletion;
mod idempotent_windows;
mod key_index;
mod metrics;
mod produce_multi;
mod replica_retention;
mod replication;
mod replication_tables;
mod resend_promise;
mod schedule;
mod transaction;
