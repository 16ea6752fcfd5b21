//! The group coordinator's lock table, without I/O: one LOCK_QUEUES request naming n distinct
//! queues (a member of an orderly group locking its share; at most `MAX_LIST_ITEMS` = 100,000
//! in one request). The time per queue stays flat as n grows: the request is linear in n.
//! And one member of n / 100 groups of 100 locked queues each leaving (or expiring) and
//! locking its queues again: it visits its group's locks only, so the time stays flat as n
//! grows.
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

const QUEUES_PER_GROUP: u32 = 100;

fn one_member_leaves(c: &mut Criterion) {
    let mut g = c.benchmark_group("member_leaves");
    for n in [1_000u32, 10_000, 100_000] {
        let groups = n / QUEUES_PER_GROUP;
        let queues: Vec<LockedQueue> = (0..QUEUES_PER_GROUP)
            .map(|i| LockedQueue { topic: "orders".into(), queue_id: i })
            .collect();
        let now = Instant::now();
        let mut locks = QueueLocks::new(n as usize);
        for group in 0..groups {
            locks.lock(&format!("group-{group}"), "a", &queues, now, DEFAULT_LOCK_LEASE);
        }
        let mut next = 0;
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{n}_locks"), |b| {
            b.iter(|| {
                let group = format!("group-{}", next % groups);
                next += 1;
                assert_eq!(locks.release_member(&group, "a"), queues.len());
                locks.lock(&group, "a", &queues, now, DEFAULT_LOCK_LEASE);
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = one_request, one_member_leaves
}
criterion_main!(benches);
