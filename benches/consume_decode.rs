//! A consumer's cost per message for one fetch's worth of stored batches (1 MiB of 100 B or
//! 1 KiB messages, 64 records a batch): verifying them (`scan_batches`), reading them in place
//! (`MessageViews`, what a `QueueReader` hands out), decoding them into messages that share the
//! fetch buffer (`decode_batches_shared`, what `PullConsumer::pull` and the push consumer
//! deliver since round 38) and into messages copied out one by one (`decode_batches`, what
//! they delivered before).
//! Run quickly: `cargo bench --bench consume_decode -- --warm-up-time 1 --measurement-time 3`.
//! Under `cargo test --benches` each runs once.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::client::consumer::{decode_batches, decode_batches_shared, scan_batches, MessageViews};
use ringmq::format::batch::stamp;
use ringmq::format::{BatchBuilder, Record, Stamp};

const FETCH_BYTES: usize = 1 << 20;
const PER_BATCH: u64 = 64;

/// Stored batches of `size`-byte messages, about `FETCH_BYTES` of them; and their count.
fn fetch(size: usize) -> (Vec<u8>, u64) {
    let body = vec![b'x'; size];
    let mut out = Vec::with_capacity(FETCH_BYTES + (1 << 16));
    let mut offset = 0;
    while out.len() < FETCH_BYTES {
        let mut b = BatchBuilder::new(1 << 20);
        for _ in 0..PER_BATCH {
            let r = Record { key: b"", tag: b"", properties: &[], body: &body, timestamp_ms: 1 };
            b.push(&r).expect("fits");
        }
        let mut bytes = b.finish(-1, -1);
        let s = Stamp {
            topic_id: 1,
            queue_id: 0,
            base_offset: offset,
            store_timestamp_ms: 2,
            epoch: 0,
        };
        stamp(&mut bytes, &s);
        out.extend_from_slice(&bytes);
        offset += PER_BATCH;
    }
    (out, offset)
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("consume_decode");
    for size in [100, 1024] {
        let (bytes, count) = fetch(size);
        let shared = Bytes::from(bytes.clone());
        g.throughput(Throughput::Elements(count));
        g.bench_function(format!("scan/{size}B"), |b| {
            b.iter(|| scan_batches(&bytes, 0, &[]).next_offset);
        });
        g.bench_function(format!("views/{size}B"), |b| {
            b.iter(|| MessageViews::new(&bytes, 0, &[]).map(|m| m.body().len()).sum::<usize>());
        });
        g.bench_function(format!("shared/{size}B"), |b| {
            b.iter(|| decode_batches_shared(&shared, 0, &[]).messages.len());
        });
        g.bench_function(format!("copied/{size}B"), |b| {
            b.iter(|| decode_batches(&bytes, 0, &[]).messages.len());
        });
    }
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
