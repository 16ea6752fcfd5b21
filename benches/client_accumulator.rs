//! The producer's own cost per message, without a broker: `send_async` through the worker
//! thread and the accumulator to a sink that answers every batch at once
//! (`ringmq::client::accumulator::bench`), every handle waited for.
//!
//! Groups: `send_async/{100B,1KiB}`: one queue, `linger` 1 ms, so batches fill (up to 1 MiB or
//! the linger) and the per-batch cost is spread thin: what remains is the cost per message. The
//! sink answers at once, so with the default `linger` of 0 every message would go alone in its
//! own batch (the producer pipelines batches while replies are outstanding), which measures the
//! cost per batch instead. `send_async/10000q-1KiB`: the same, round-robin over 10,000 queues
//! (each queue's open batch is cold when its next message comes; the batches stay small). Run
//! quickly:
//! `cargo bench --bench client_accumulator -- --warm-up-time 1 --measurement-time 3`.
//! Under `cargo test --benches` each runs once.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::client::accumulator::bench::LoopbackProducer;
use ringmq::client::{Message, ProducerConfig};

fn send_async(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_async");
    for (name, size, queues) in
        [("100B", 100usize, 1u32), ("1KiB", 1024, 1), ("10000q-1KiB", 1024, 10_000)]
    {
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            let producer = LoopbackProducer::start(ProducerConfig {
                linger: Duration::from_millis(1),
                ..Default::default()
            });
            let body = vec![7u8; size];
            b.iter_custom(|iters| {
                // Messages and the handle list are made outside the timed region.
                let msgs: Vec<Message> =
                    (0..iters).map(|_| Message::new("bench", body.clone())).collect();
                let mut handles = Vec::with_capacity(iters as usize);
                let t = Instant::now();
                for (i, m) in msgs.into_iter().enumerate() {
                    let queue = i as u32 % queues;
                    handles.push(producer.send_async(m, queue).expect("worker running"));
                }
                for h in handles {
                    h.wait().expect("loopback stores everything");
                }
                t.elapsed()
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = send_async
}
criterion_main!(benches);
