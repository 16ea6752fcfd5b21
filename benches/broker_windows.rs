//! The broker's per-batch bookkeeping for idempotent produce, without I/O: one
//! `SequenceWindows::check` and `stored` per batch, producers sending to their queues in turn
//! (the many-queues workload's pattern: 2 producers over 10,000 queues, so every batch finds a
//! pair that was used 20,000 batches ago), against 2 producers over 16 queues (batched).
//! Run quickly: `cargo bench --bench broker_windows -- --warm-up-time 1 --measurement-time 3`.
//! Under `cargo test --benches` each runs once.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::broker::idempotence::{SequenceWindows, Stored, Verdict};
use ringmq::storage::{QueueId, QueueKey, TopicId};

fn round_robin(c: &mut Criterion) {
    let mut g = c.benchmark_group("windows_check_stored");
    for queues in [16u32, 10_000] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("2x{queues}_queues"), |b| {
            // The broker's defaults bound the table well above these pairs.
            let mut w = SequenceWindows::new(100_000, 60_000);
            let keys: Vec<(i64, QueueKey)> = (0..2i64)
                .flat_map(|p| {
                    (0..queues).map(move |q| {
                        ((p + 1) << 16, QueueKey::new(TopicId::new(q / 1000), QueueId::new(q)))
                    })
                })
                .collect();
            let mut next_seq = vec![0i32; keys.len()];
            let (mut at, mut now) = (0usize, 0u64);
            b.iter(|| {
                let (pid, queue) = keys[at];
                let seq = next_seq[at];
                let v = w.check(pid, queue, seq, 2, now / 64);
                debug_assert_eq!(v, Verdict::Append);
                w.stored(pid, queue, seq, Stored { base_offset: now, store_timestamp_ms: 0 });
                next_seq[at] = seq + 2;
                at = (at + 1) % keys.len();
                now += 1;
                v
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = round_robin
}
criterion_main!(benches);
