//! `format::crc::crc32c_combine`, which joins a batch's header CRC to its records' running CRC
//! when `BatchBuilder` finishes a batch whose records were checksummed as they were pushed
//! (every batch past 16 KiB, and every batch of a cold queue: with 10,000 queues nearly all,
//! at 4-5 KiB). Lengths vary over 4,000-4,999 bytes, so that the set bits of the length and
//! the CRC values are not the same on every call.
//!
//! Also the CRC itself, `format::crc::crc32c` (the `crc-fast` crate) against the `crc32c`
//! crate it replaced, at a batch stamp's 28 bytes, a 1 KiB record (the running CRC a record at
//! a time), 16 KiB (`BatchBuilder`'s step) and 1 MiB; and a 1 MiB batch of 1 KiB records built
//! and finished. Run:
//! `cargo bench --bench crc_combine -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::Duration;

use criterion::Throughput;
use criterion::{criterion_group, criterion_main, Criterion};
use ringmq::format::crc::{crc32c, crc32c_append, crc32c_combine};
use ringmq::format::{BatchBuilder, Record};

fn combine(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c_combine");
    g.bench_function("4-5KiB", |b| {
        let mut x = 0x1234_5678u32;
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            x = crc32c_combine(
                black_box(x),
                black_box(i.wrapping_mul(0x9E37_79B9)),
                4000 + (i % 1000) as usize,
            );
            x
        });
    });
    g.finish();
}

fn crc(c: &mut Criterion) {
    let data: Vec<u8> =
        (0..(1u32 << 20) + 64).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let mut g = c.benchmark_group("crc32c");
    for len in [28usize, 1050, 16 * 1024, 1 << 20] {
        g.throughput(Throughput::Bytes(len as u64));
        // Starts 0-2 bytes in, as records in a batch are not aligned.
        g.bench_function(format!("crc32c-crate/{len}"), |b| {
            let mut i = 0usize;
            let mut x = 0u32;
            b.iter(|| {
                i += 1;
                x = crc32c::crc32c_append(x, black_box(&data[i % 3..i % 3 + len]));
                x
            });
        });
        g.bench_function(format!("ringmq/{len}"), |b| {
            let mut i = 0usize;
            let mut x = 0u32;
            b.iter(|| {
                i += 1;
                x = crc32c_append(x, black_box(&data[i % 3..i % 3 + len]));
                x
            });
        });
    }
    // Independent calls (the ones above each wait for the previous CRC).
    g.throughput(Throughput::Bytes(1050));
    g.bench_function("ringmq-whole/1050", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i += 1;
            crc32c(black_box(&data[i % 3..i % 3 + 1050]))
        });
    });
    g.finish();
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("1MiB-of-1KiB-records", |b| {
        let body = &data[..1000];
        b.iter(|| {
            let mut builder = BatchBuilder::new(1 << 20);
            let r = Record { key: b"", tag: b"", properties: &[], body, timestamp_ms: 1 };
            while builder.push(&r).is_ok() {}
            builder.finish(-1, -1)
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = combine, crc
}
criterion_main!(benches);
