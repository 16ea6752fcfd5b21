//! Commit-log throughput on a real disk: O_DIRECT segments in a temp dir, one glommio executor
//! per benchmark group, 1 KiB records.
//!
//! Groups (see `BENCHMARKS.md` for results, targets and how to run them):
//! - `append_async/{64KiB,1MiB}`: `flush_mode = async`, appends back to back, one `flush()` at
//!   the end of the timed loop so every byte counted reached the disk.
//! - `append_sync/{64KiB,1MiB}_x32`: `flush_mode = sync`, 32 `append_committed` in flight at
//!   once (32 tasks, each starting its next append as soon as the previous one is acknowledged),
//!   every acknowledgement after the covering fdatasync.
//! - `append_sync_rolls/64KiB_x32`: as `append_sync`, but with 16 MiB segments so a measurement
//!   crosses many segment rolls; each append's latency is kept and p50/p99/p99.9/max are
//!   printed when the group ends (a roll that stalls appends shows in p99.9 and max).
//! - `read_cache/64KiB`: sequential reads of freshly appended data with a chunk cache larger
//!   than the data (the hot-consumer case).
//! - `read_disk/{64KiB,1MiB}`: data written, the log closed and reopened with `cache_bytes = 0`,
//!   then sequential reads of one queue, one batch per `read`, so every read goes to the disk.
//!
//! How a measurement runs: each group starts one executor thread holding one `CommitLog`
//! (a [`Shard`]). Criterion's `iter_custom` sends the timed loop to that executor over a
//! channel; the executor times the loop alone and sends back the `Duration`. Setup (creating
//! and filling the log, recycling it when it grows) happens outside the timed region.
//!
//! Disk use is bounded: segments are 256 MiB, the append groups start a fresh log whenever the
//! current one passes [`RECYCLE_BYTES`], the read groups write [`READ_DATA_BYTES`] once.
//! Under `cargo test --benches` (no `--bench` argument) criterion runs each benchmark once and
//! the fixtures shrink to a few MiB so the test run stays fast.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use futures::future::LocalBoxFuture;
use rand::{RngCore, SeedableRng};
use ringmq::format::{BatchBuilder, FormatError, Record};
use ringmq::runtime::{self, ExecutorOptions};
use ringmq::storage::{
    AppendStatus, CommitLog, FlushMode, IoMode, QueueKey, QueueOffset, StorageConfig,
};
use ringmq::storage::{QueueId, TopicId};

/// Encoded size of one record: 20 bytes of framing + 16-byte key + 4-byte tag + 984-byte body.
const RECORD_BYTES: usize = 1024;
const KEY_LEN: usize = 16;
const TAG: &[u8] = b"TagA";
const BODY_LEN: usize = RECORD_BYTES - 20 - KEY_LEN - 4;

const SEGMENT_BYTES: u64 = 256 << 20;
/// Append groups start a fresh log (outside the timed loop) once the log holds this much.
const RECYCLE_BYTES: u64 = 512 << 20;
/// Data written once by each read group, per batch size.
const READ_DATA_BYTES: usize = 128 << 20;
/// Fixture size when criterion runs the benchmarks once as tests.
const TEST_DATA_BYTES: usize = 4 << 20;
/// Appends in flight in the sync groups.
const SYNC_IN_FLIGHT: usize = 32;
/// Segment size of the roll group: small, so every measurement crosses many rolls.
const ROLL_SEGMENT_BYTES: u64 = 16 << 20;
/// Per-append latencies the roll group keeps (a bound on its memory); later ones are dropped.
const MAX_LATENCY_SAMPLES: usize = 1 << 21;
/// Bytes of DMA arena per executor: what the largest log configuration here can use (see
/// `StorageConfig::dma_memory_bytes`). Above the locked-memory limit glommio cannot register it
/// with io_uring, but still serves every chunk from it, which avoids page faults per chunk.
fn io_memory_bytes() -> usize {
    bench_config(std::path::Path::new("/"), FlushMode::Async, 512 << 20).dma_memory_bytes()
}

/// True when criterion really measures (`cargo bench`), false under `cargo test --benches`.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Sizes of the batches the benchmarks append, by their label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchSize {
    K64,
    M1,
}

impl BatchSize {
    fn max_bytes(self) -> usize {
        match self {
            BatchSize::K64 => 64 << 10,
            BatchSize::M1 => 1 << 20,
        }
    }
    fn label(self) -> &'static str {
        match self {
            BatchSize::K64 => "64KiB",
            BatchSize::M1 => "1MiB",
        }
    }
    /// Each batch size writes to its own queue so read groups can hold both.
    fn queue(self) -> QueueKey {
        match self {
            BatchSize::K64 => QueueKey::new(TopicId::new(1), QueueId::new(0)),
            BatchSize::M1 => QueueKey::new(TopicId::new(1), QueueId::new(1)),
        }
    }
}

/// A batch filled with as many 1 KiB records as fit in `max_bytes`, random bodies.
fn make_batch(max_bytes: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut body = vec![0u8; BODY_LEN];
    let mut builder = BatchBuilder::new(max_bytes);
    for i in 0u64.. {
        rng.fill_bytes(&mut body);
        let key = format!("key-{i:012}");
        let record = Record {
            key: key.as_bytes(),
            tag: TAG,
            properties: &[],
            body: &body,
            timestamp_ms: 1_700_000_000_000 + i as i64,
        };
        debug_assert_eq!(ringmq::format::record::encoded_len(&record).unwrap(), RECORD_BYTES);
        match builder.push(&record) {
            Ok(()) => {}
            Err(FormatError::BatchFull { .. }) => break,
            Err(e) => panic!("building a benchmark batch: {e}"),
        }
    }
    builder.finish(-1, -1)
}

/// Everything one group's executor owns.
struct Fixture {
    /// Keeps the directory alive; removed when the fixture drops.
    _tmp: tempfile::TempDir,
    config: StorageConfig,
    log: RefCell<Rc<CommitLog>>,
    batch_64k: Vec<u8>,
    batch_1m: Vec<u8>,
    /// Next offset to read, per batch size (read groups wrap around at the end).
    cursor: [Cell<u64>; 2],
    /// Append latencies in microseconds, when the group records them.
    latencies_us: RefCell<Vec<u32>>,
}

impl Fixture {
    fn log(&self) -> Rc<CommitLog> {
        self.log.borrow().clone()
    }
    fn batch(&self, size: BatchSize) -> &[u8] {
        match size {
            BatchSize::K64 => &self.batch_64k,
            BatchSize::M1 => &self.batch_1m,
        }
    }
    fn cursor(&self, size: BatchSize) -> &Cell<u64> {
        &self.cursor[size as usize]
    }
}

fn bench_config(dir: &std::path::Path, flush_mode: FlushMode, cache_bytes: usize) -> StorageConfig {
    segment_config(dir, flush_mode, cache_bytes, SEGMENT_BYTES)
}

fn segment_config(
    dir: &std::path::Path,
    flush_mode: FlushMode,
    cache_bytes: usize,
    segment_size_bytes: u64,
) -> StorageConfig {
    StorageConfig {
        dir: dir.to_path_buf(),
        segment_size_bytes,
        flush_mode,
        io_mode: IoMode::Direct,
        cache_bytes,
        ..StorageConfig::default()
    }
}

/// Creates a temp dir under `/work` (a real ext4 disk here; `/tmp` may be tmpfs elsewhere,
/// which has no O_DIRECT) and opens a log in it.
async fn new_fixture(flush_mode: FlushMode, cache_bytes: usize) -> Fixture {
    new_fixture_with(flush_mode, cache_bytes, SEGMENT_BYTES).await
}

async fn new_fixture_with(
    flush_mode: FlushMode,
    cache_bytes: usize,
    segment_bytes: u64,
) -> Fixture {
    let base = std::env::var_os("RINGMQ_BENCH_DIR").unwrap_or_else(|| "/work".into());
    let tmp = tempfile::Builder::new()
        .prefix("ringmq-bench-")
        .tempdir_in(&base)
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir for the benchmark log");
    let config = segment_config(&tmp.path().join("log"), flush_mode, cache_bytes, segment_bytes);
    let log = CommitLog::open(config.clone()).await.expect("open benchmark log");
    Fixture {
        _tmp: tmp,
        config,
        log: RefCell::new(log),
        batch_64k: make_batch(BatchSize::K64.max_bytes(), 1),
        batch_1m: make_batch(BatchSize::M1.max_bytes(), 2),
        cursor: [Cell::new(0), Cell::new(0)],
        latencies_us: RefCell::new(Vec::new()),
    }
}

/// Closes a log (flushes it and writes its index checkpoint).
async fn close_log(log: &Rc<CommitLog>) {
    log.close().await.expect("close benchmark log");
}

/// Starts a fresh, empty log when the current one has grown past [`RECYCLE_BYTES`].
async fn recycle_if_large(fx: &Fixture) {
    let (appended, _, _) = fx.log().positions();
    if appended.get() < RECYCLE_BYTES {
        return;
    }
    close_log(&fx.log()).await;
    std::fs::remove_dir_all(&fx.config.dir).expect("remove old benchmark log");
    *fx.log.borrow_mut() = CommitLog::open(fx.config.clone()).await.expect("reopen benchmark log");
}

/// Appends `bytes` worth of `size` batches, flushes, closes and reopens the log with
/// `cache_bytes`, so reads start from a known cache state.
async fn fill_and_reopen(fx: &mut Fixture, sizes: &[BatchSize], bytes: usize, cache_bytes: usize) {
    let log = fx.log();
    for &size in sizes {
        let batch = fx.batch(size);
        for _ in 0..bytes.div_ceil(batch.len()) {
            log.append(size.queue(), batch).await.expect("fill append");
        }
    }
    log.flush().await.expect("fill flush");
    close_log(&log).await;
    drop(log);
    fx.config.cache_bytes = cache_bytes;
    *fx.log.borrow_mut() = CommitLog::open(fx.config.clone()).await.expect("reopen after fill");
}

type Job = Box<dyn FnOnce(Rc<Fixture>) -> LocalBoxFuture<'static, Duration> + Send>;

/// One executor thread owning one fixture; runs timed jobs sent from criterion's thread.
struct Shard {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Duration>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shard {
    fn start<S, SFut>(name: &str, setup: S) -> Shard
    where
        S: FnOnce() -> SFut + Send + 'static,
        SFut: Future<Output = Fixture> + 'static,
    {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel();
        let name = name.to_string();
        let opts =
            ExecutorOptions { name: name.clone(), cpu: None, io_memory_bytes: io_memory_bytes() };
        let thread = std::thread::spawn(move || {
            runtime::run_on_new_executor(opts, move || async move {
                let fx = Rc::new(setup().await);
                // Blocking here between jobs is fine: nothing runs between measurements.
                while let Ok(job) = jobs_rx.recv() {
                    let took = job(fx.clone()).await;
                    if done_tx.send(took).is_err() {
                        break;
                    }
                }
                let (_, hits, misses) = fx.log().cache_stats();
                if hits + misses > 0 {
                    eprintln!("  [{name}] chunk cache: {hits} hits, {misses} misses");
                }
                if let Some(line) = latency_summary(&mut fx.latencies_us.borrow_mut()) {
                    eprintln!("  [{name}] append latency: {line}");
                }
                close_log(&fx.log()).await;
            })
            .expect("benchmark executor");
        });
        Shard { jobs: Some(jobs_tx), done: done_rx, thread: Some(thread) }
    }

    /// Runs `job` on the executor and returns the time it measured.
    fn run<J, JFut>(&self, job: J) -> Duration
    where
        J: FnOnce(Rc<Fixture>) -> JFut + Send + 'static,
        JFut: Future<Output = Duration> + 'static,
    {
        let job: Job = Box::new(move |fx| Box::pin(job(fx)));
        self.jobs.as_ref().expect("shard running").send(job).expect("executor alive");
        self.done.recv().expect("executor answered")
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() && !std::thread::panicking() {
                panic!("benchmark executor panicked");
            }
        }
    }
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(1));
}

/// Appends and flushes enough data (untimed) to touch the executor's DMA arena and allocate
/// the first segments. Without it the first warm-up iterations pay page faults and fallocate,
/// criterion estimates a huge time per iteration, and then measures one append plus one
/// fdatasync per sample instead of throughput (seen: 64 KiB appends "at" 170 MiB/s).
async fn prewarm(fx: &Fixture, size: BatchSize) {
    let log = fx.log();
    let batch = fx.batch(size);
    let bytes = if measuring() { 320 << 20 } else { TEST_DATA_BYTES };
    for _ in 0..bytes / batch.len() {
        log.append(size.queue(), batch).await.expect("prewarm append");
    }
    log.flush().await.expect("prewarm flush");
}

/// `iters` appends back to back, then one flush: the time until the bytes are on disk.
async fn timed_appends(fx: Rc<Fixture>, size: BatchSize, iters: u64) -> Duration {
    recycle_if_large(&fx).await;
    let log = fx.log();
    let batch = fx.batch(size);
    let start = Instant::now();
    for _ in 0..iters {
        log.append(size.queue(), batch).await.expect("append");
    }
    log.flush().await.expect("flush");
    start.elapsed()
}

/// p50/p99/p99.9/max of the recorded latencies, if any.
fn latency_summary(us: &mut [u32]) -> Option<String> {
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    Some(format!(
        "{} appends: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        us.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        us[us.len() - 1]
    ))
}

/// `iters` sync-mode appends with [`SYNC_IN_FLIGHT`] outstanding at any time.
async fn timed_sync_appends(fx: Rc<Fixture>, size: BatchSize, iters: u64) -> Duration {
    sync_appends(fx, size, iters, false).await
}

/// As [`timed_sync_appends`], keeping each append's latency in the fixture.
async fn timed_sync_appends_recorded(fx: Rc<Fixture>, size: BatchSize, iters: u64) -> Duration {
    sync_appends(fx, size, iters, true).await
}

async fn sync_appends(fx: Rc<Fixture>, size: BatchSize, iters: u64, record: bool) -> Duration {
    recycle_if_large(&fx).await;
    let remaining = Rc::new(Cell::new(iters));
    let start = Instant::now();
    let workers: Vec<_> = (0..SYNC_IN_FLIGHT)
        .map(|_| {
            let fx = fx.clone();
            let remaining = remaining.clone();
            runtime::spawn(async move {
                let log = fx.log();
                while remaining.get() > 0 {
                    remaining.set(remaining.get() - 1);
                    let sent = record.then(Instant::now);
                    let (_, status) =
                        log.append_committed(size.queue(), fx.batch(size)).await.expect("append");
                    assert_eq!(status, AppendStatus::Ok, "sync append timed out");
                    if let Some(sent) = sent {
                        let mut kept = fx.latencies_us.borrow_mut();
                        if kept.len() < MAX_LATENCY_SAMPLES {
                            kept.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("append worker finished");
    }
    start.elapsed()
}

/// `iters` sequential reads of one batch each, wrapping to the start of the queue at its end.
async fn timed_reads(fx: Rc<Fixture>, size: BatchSize, iters: u64) -> Duration {
    let log = fx.log();
    let queue = size.queue();
    let batch_len = fx.batch(size).len();
    let offsets = log.offsets(queue);
    let cursor = fx.cursor(size);
    let start = Instant::now();
    for _ in 0..iters {
        let mut at = cursor.get();
        if at >= offsets.next.get() {
            at = offsets.min.get();
        }
        let got = log.read(queue, QueueOffset::new(at), batch_len).await.expect("read");
        assert_eq!(got.batches.len(), 1, "one batch per read");
        assert_eq!(got.batches[0].len(), batch_len);
        std::hint::black_box(&got.batches);
        cursor.set(got.next_offset.get());
    }
    start.elapsed()
}

fn append_async(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_async");
    configure(&mut group);
    let mut shard = None;
    for size in [BatchSize::K64, BatchSize::M1] {
        let batch_len = make_batch(size.max_bytes(), 0).len() as u64;
        group.throughput(Throughput::Bytes(batch_len));
        group.bench_function(size.label(), |b| {
            let shard = shard.get_or_insert_with(|| {
                Shard::start("bench-append-async", move || async move {
                    let fx = new_fixture(FlushMode::Async, 256 << 20).await;
                    prewarm(&fx, size).await;
                    fx
                })
            });
            b.iter_custom(|iters| shard.run(move |fx| timed_appends(fx, size, iters)))
        });
    }
    group.finish();
}

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_sync");
    configure(&mut group);
    let mut shard = None;
    for size in [BatchSize::K64, BatchSize::M1] {
        let batch_len = make_batch(size.max_bytes(), 0).len() as u64;
        group.throughput(Throughput::Bytes(batch_len));
        group.bench_function(format!("{}_x{SYNC_IN_FLIGHT}", size.label()), |b| {
            let shard = shard.get_or_insert_with(|| {
                Shard::start("bench-append-sync", move || async move {
                    let fx = new_fixture(FlushMode::Sync, 256 << 20).await;
                    prewarm(&fx, size).await;
                    fx
                })
            });
            b.iter_custom(|iters| shard.run(move |fx| timed_sync_appends(fx, size, iters)))
        });
    }
    group.finish();
}

fn append_sync_rolls(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_sync_rolls");
    configure(&mut group);
    let size = BatchSize::K64;
    let mut shard = None;
    group.throughput(Throughput::Bytes(make_batch(size.max_bytes(), 0).len() as u64));
    group.bench_function(format!("{}_x{SYNC_IN_FLIGHT}", size.label()), |b| {
        let shard = shard.get_or_insert_with(|| {
            Shard::start("bench-append-sync-rolls", move || async move {
                let fx = new_fixture_with(FlushMode::Sync, 256 << 20, ROLL_SEGMENT_BYTES).await;
                prewarm(&fx, size).await;
                fx
            })
        });
        b.iter_custom(|iters| shard.run(move |fx| timed_sync_appends_recorded(fx, size, iters)))
    });
    group.finish();
}

fn read_cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_cache");
    configure(&mut group);
    let data = if measuring() { READ_DATA_BYTES } else { TEST_DATA_BYTES };
    let size = BatchSize::K64;
    let mut shard = None;
    group.throughput(Throughput::Bytes(make_batch(size.max_bytes(), 0).len() as u64));
    group.bench_function(size.label(), |b| {
        let shard = shard.get_or_insert_with(|| {
            Shard::start("bench-read-cache", move || async move {
                // The cache holds everything appended: reads never need the disk (except
                // batches that straddle two chunks, see BENCHMARKS.md).
                let cache = 2 * data;
                let fx = new_fixture(FlushMode::Async, cache).await;
                let log = fx.log();
                for _ in 0..data.div_ceil(fx.batch(size).len()) {
                    log.append(size.queue(), fx.batch(size)).await.expect("fill append");
                }
                log.flush().await.expect("fill flush");
                fx
            })
        });
        b.iter_custom(|iters| shard.run(move |fx| timed_reads(fx, size, iters)))
    });
    group.finish();
}

fn read_disk(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_disk");
    configure(&mut group);
    let data = if measuring() { READ_DATA_BYTES } else { TEST_DATA_BYTES };
    let mut shard = None;
    for size in [BatchSize::K64, BatchSize::M1] {
        group.throughput(Throughput::Bytes(make_batch(size.max_bytes(), 0).len() as u64));
        group.bench_function(size.label(), |b| {
            let shard = shard.get_or_insert_with(|| {
                Shard::start("bench-read-disk", move || async move {
                    let mut fx = new_fixture(FlushMode::Async, 256 << 20).await;
                    fill_and_reopen(&mut fx, &[BatchSize::K64, BatchSize::M1], data, 0).await;
                    // The first disk read after opening can be much slower than the rest (once
                    // 300 ms here); do it untimed so criterion's warm-up estimate is not skewed.
                    let start = Instant::now();
                    fx.log()
                        .read(BatchSize::K64.queue(), QueueOffset::ZERO, 1)
                        .await
                        .expect("first read");
                    eprintln!("  [bench-read-disk] first read after reopen: {:?}", start.elapsed());
                    fx
                })
            });
            b.iter_custom(|iters| shard.run(move |fx| timed_reads(fx, size, iters)))
        });
    }
    group.finish();
}

criterion_group!(benches, append_async, append_sync, append_sync_rolls, read_cache, read_disk);
criterion_main!(benches);
