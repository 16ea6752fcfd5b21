//! The group coordinator's lock table, without I/O: one LOCK_QUEUES request naming n distinct
//! queues (a member of an orderly group locking its share; at most `MAX_LIST_ITEMS` = 100,000
//! in one request). The time per queue stays flat as n grows: the request is linear in n.
//! Run quickly: `cargo bench --bench group_locks -- --warm-up-time 1 --measurement-time 3`.
//! Under `cargo test --benches` each runs once.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmq::group::locks::{LockedQueue, QueueLocks, DEFAULT_LOCK_LEASE};

fn one_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_request");
    for n in [1_000u32, 10_000, 100_000] {
        let queues: Vec<LockedQueue> =
            (0..n).map(|i| LockedQueue { topic: format!("t{}", i / 1000), queue_id: i }).collect();
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function(format!("{n}_queues"), |b| {
            b.iter_batched(
                || QueueLocks::new(n as usize),
                |mut locks| locks.lock("g", "a", &queues, Instant::now(), DEFAULT_LOCK_LEASE),
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = one_request
}
criterion_main!(benches);
