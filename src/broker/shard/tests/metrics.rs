//! The answers to the metrics exporter (`shard/metrics.rs`) on one shard over the real log on
//! the simulated directory.

use super::*;

use crate::metrics::SeriesLimits;
use crate::protocol::group::{GroupRequest, QueueCommit};

pub(super) const WIDE_LIMITS: SeriesLimits =
    SeriesLimits { max_queue_series: 1000, max_group_series: 1000 };

#[test]
fn a_snapshot_holds_the_counters_queues_and_committed_offsets_of_the_shard() {
    run(|| async {
        let s = shard(8).await;
        call(&s, produce(0, 3)).await.unwrap();
        call(&s, produce(0, 2)).await.unwrap();
        call(&s, produce(1, 4)).await.unwrap();
        call(&s, fetch(0, 0)).await.unwrap();
        assert!(call(&s, fetch(99, 0)).await.is_err(), "out of range");
        let commit = GroupRequest::CommitOffsets {
            group: "g".into(),
            generation: 0,
            offsets: vec![QueueCommit { topic: "t".into(), queue_id: 0, offset: 1 }],
        };
        call(&s, Request::Group(commit)).await.unwrap();

        let snap = s.metrics_snapshot(WIDE_LIMITS);
        assert_eq!(snap.counters.produce_records, 9);
        assert_eq!(snap.append_ack_latency.count(), 3, "one per appended batch");
        assert_eq!(snap.fetch_read_latency.count(), 1, "the failed fetch read nothing");
        assert_eq!(snap.errors_by_code, [("OFFSET_OUT_OF_RANGE", 1)]);
        let t: Vec<_> = snap
            .queues
            .iter()
            .filter(|q| q.topic == "t")
            .map(|q| (q.queue, q.min_offset, q.next_offset))
            .collect();
        assert_eq!(t, [(0, 0, 5), (1, 0, 4)]);
        assert_eq!(snap.queues_owned, 2 + u64::from(WIDE_QUEUES), "every queue of both topics");
        assert_eq!(snap.group_offsets.len(), 1);
        assert_eq!(snap.group_offsets[0].committed_offset, 1);
        assert_eq!(snap.group_offsets_held, 1);
        assert_eq!(snap.key_index_behind_bytes, None, "no key index opened");
        assert_eq!(snap.key_index_disk_read_bytes, None);
        assert_eq!(snap.key_index_skipped_batches, None);

        let ends = s.queue_ends(&[("t".into(), 0), ("t".into(), 9), ("nope".into(), 0)]);
        assert_eq!(ends, [(("t".to_string(), 0), 5)], "unknown queues and topics are skipped");
    });
}

#[test]
fn a_snapshot_stops_collecting_series_at_the_caps() {
    run(|| async {
        let s = shard(8).await;
        let limits = SeriesLimits { max_queue_series: 3, max_group_series: 0 };
        let commit = GroupRequest::CommitOffsets {
            group: "g".into(),
            generation: 0,
            offsets: vec![QueueCommit { topic: "t".into(), queue_id: 0, offset: 1 }],
        };
        call(&s, Request::Group(commit)).await.unwrap();
        let snap = s.metrics_snapshot(limits);
        let names: Vec<_> = snap.queues.iter().map(|q| (q.topic.as_str(), q.queue)).collect();
        assert_eq!(names, [("t", 0), ("t", 1), ("wide", 0)], "the first by (topic, queue)");
        assert_eq!(snap.queues_owned, 2 + u64::from(WIDE_QUEUES));
        assert!(snap.group_offsets.is_empty());
        assert_eq!(snap.group_offsets_held, 1, "what was left out is still counted");
    });
}

#[test]
fn a_snapshot_holds_the_coordinator_s_group_state() {
    run(|| async {
        use crate::group::membership::{group_bytes, member_bytes, MemberInfo, Subscription};
        use crate::protocol::group::GroupQueue;
        let s = shard(8).await;
        let state = |s: &Rc<Shard<SimLog>>| {
            let snap = s.metrics_snapshot(WIDE_LIMITS);
            (
                snap.group_membership_bytes,
                snap.group_members,
                snap.group_offsets_held,
                snap.group_queue_locks,
                snap.group_retention_groups,
            )
        };
        assert_eq!(state(&s), (0, 0, 0, 0, 0));
        for client_id in ["a", "b"] {
            let join = GroupRequest::Heartbeat {
                group: "g".into(),
                client_id: client_id.into(),
                room: String::new(),
                subscriptions: vec![("t".into(), "*".into())],
            };
            call(&s, Request::Group(join)).await.unwrap();
        }
        let commit = GroupRequest::CommitOffsets {
            group: "g".into(),
            generation: 0,
            offsets: (0..2)
                .map(|q| QueueCommit { topic: "t".into(), queue_id: q, offset: 1 })
                .collect(),
        };
        call(&s, Request::Group(commit)).await.unwrap();
        let lock = GroupRequest::Lock {
            group: "g".into(),
            client_id: "a".into(),
            lease_ms: 60_000,
            queues: vec![GroupQueue { topic: "t".into(), queue_id: 0 }],
        };
        call(&s, Request::Group(lock)).await.unwrap();
        let info = |client_id: &str| MemberInfo {
            client_id: client_id.into(),
            room: None,
            subscriptions: vec![Subscription { topic: "t".into(), expression: "*".into() }],
        };
        let bytes =
            group_bytes("g") + member_bytes("g", &info("a")) + member_bytes("g", &info("b"));
        assert_eq!(state(&s), (bytes as u64, 2, 2, 1, 1));
        // Leaving gives back the member's bytes and locks; the offsets stay, tracked.
        for client_id in ["a", "b"] {
            let leave = GroupRequest::Leave { group: "g".into(), client_id: client_id.into() };
            call(&s, Request::Group(leave)).await.unwrap();
        }
        assert_eq!(state(&s), (0, 0, 2, 0, 1));
    });
}
