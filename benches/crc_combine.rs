//! `format::crc::crc32c_combine`, which joins a batch's header CRC to its records' running CRC
//! when `BatchBuilder` finishes a batch whose records were checksummed as they were pushed
//! (every batch past 16 KiB, and every batch of a cold queue: with 10,000 queues nearly all,
//! at 4-5 KiB). Lengths vary over 4,000-4,999 bytes, so that the set bits of the length and
//! the CRC values are not the same on every call. Run:
//! `cargo bench --bench crc_combine -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ringmq::format::crc::crc32c_combine;

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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = combine
}
criterion_main!(benches);
