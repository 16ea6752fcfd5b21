//! A push consumer's per-queue bookkeeping (`ProcessQueue`): every message is pulled (its
//! offset recorded as unfinished) and finished once its listener call returns. Batches of 64
//! are pulled while four batches are unfinished, finished in order (one worker) or each
//! batch's messages in reverse (workers finishing out of order); against the `BTreeSet` of
//! unfinished offsets it replaced in round 37, doing the same.
//! Run quickly: `cargo bench --bench process_queue -- --warm-up-time 1 --measurement-time 3`.
//! Under `cargo test --benches` each runs once.

use std::collections::BTreeSet;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::client::process_queue::ProcessQueue;

const BATCH: u64 = 64;
const MESSAGES: u64 = 64 * 1024;

/// Pulls `MESSAGES` in batches, finishing each batch four batches later.
fn run(reverse: bool, mut pulled: impl FnMut(u64, u64), mut finished: impl FnMut(u64)) {
    let mut o = 0;
    while o < MESSAGES {
        pulled(o, o + BATCH);
        if o >= 4 * BATCH {
            let done = o - 4 * BATCH..o - 3 * BATCH;
            if reverse {
                done.rev().for_each(&mut finished);
            } else {
                done.for_each(&mut finished);
            }
        }
        o += BATCH;
    }
}

fn pull_and_finish(c: &mut Criterion) {
    let mut g = c.benchmark_group("process_queue");
    g.throughput(Throughput::Elements(MESSAGES));
    for (name, reverse) in [("in_order", false), ("out_of_order", true)] {
        g.bench_function(format!("deque_{name}"), |b| {
            b.iter(|| {
                let q = std::cell::RefCell::new(ProcessQueue::new(0, usize::MAX));
                run(
                    reverse,
                    |from, to| q.borrow_mut().pulled(from..to, to),
                    |o| q.borrow_mut().finished([o]),
                );
                q.into_inner().committable()
            });
        });
        g.bench_function(format!("btreeset_{name}"), |b| {
            b.iter(|| {
                let s = std::cell::RefCell::new(BTreeSet::new());
                run(
                    reverse,
                    |from, to| s.borrow_mut().extend(from..to),
                    |o| {
                        s.borrow_mut().remove(&o);
                    },
                );
                s.into_inner().first().copied()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, pull_and_finish);
criterion_main!(benches);
