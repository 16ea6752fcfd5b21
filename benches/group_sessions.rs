//! The group coordinator's session expiry, without I/O: n members with staggered sessions (as
//! heartbeats spread over time leave them) and one due at each tick, which expires it and
//! lets it join again. The time per tick stays flat as n grows: only due sessions are
//! visited (the deadline index), not every member.
//! Run quickly: `cargo bench --bench group_sessions -- --warm-up-time 1 --measurement-time 3`.
//! Under `cargo test --benches` each runs once.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::group::membership::{GroupLimits, Groups, MemberInfo, Subscription};

const MEMBERS_PER_GROUP: usize = 100;

fn member(i: usize) -> (String, MemberInfo) {
    let info = MemberInfo {
        client_id: format!("10.0.{}.{}@{i}", i / 250 % 250, i % 250),
        room: None,
        subscriptions: vec![Subscription { topic: "orders".into(), expression: "*".into() }],
    };
    (format!("group-{}", i / MEMBERS_PER_GROUP), info)
}

fn expire_one_of_n(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_tick");
    for n in [1_000usize, 10_000, 100_000] {
        let limits = GroupLimits::default();
        let session = limits.session_timeout;
        let mut groups = Groups::new(limits);
        let t0 = Instant::now();
        // Member i's session ends at t0 + session + i ms.
        for i in 0..n {
            let (group, info) = member(i);
            groups.heartbeat(&group, info, t0 + Duration::from_millis(i as u64)).unwrap();
        }
        let mut tick = 0usize;
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{n}_members"), |b| {
            b.iter(|| {
                // Member `tick % n`, whose session ends at t0 + session + tick ms, is due; it
                // joins again at once, its session now ending behind every other's.
                let now = t0 + session + Duration::from_millis(tick as u64);
                let changed = groups.expire(now);
                assert_eq!(changed.len(), 1);
                let (group, info) = member(tick % n);
                let renewed = t0 + Duration::from_millis((tick + n) as u64);
                groups.heartbeat(&group, info, renewed).unwrap();
                tick += 1;
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = expire_one_of_n
}
criterion_main!(benches);
