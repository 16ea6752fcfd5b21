use super::*;
use crate::metrics::snapshot::{GroupLag, QueueSample};
use prometheus_parse::{Scrape, Value};

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is {other:?}"),
        })
}

fn example() -> BrokerSnapshot {
    let mut s1 = ShardSnapshot { shard: 1, ..Default::default() };
    s1.replication = Some(ReplicationSample::Master {
        log_end: 5000,
        confirmed: 4000,
        in_sync_members: 2,
        replicas: vec![
            ReplicaSample {
                replica: "10.0.0.2:10911".into(),
                in_sync: true,
                lag_bytes: Some(1000),
            },
            ReplicaSample { replica: "10.0.0.3:10911".into(), in_sync: false, lag_bytes: None },
        ],
    });
    s1.counters.produce_batches = 3;
    s1.counters.produce_records = 30;
    s1.counters.produce_bytes = 3000;
    s1.counters.connections_open = 2;
    s1.key_index_behind_bytes = Some(4096);
    s1.key_index_disk_read_bytes = Some(8192);
    s1.key_index_skipped_batches = Some(7);
    s1.read_buffer_pool_bytes = 65536;
    s1.read_buffer_allocated_bytes = 131072;
    s1.group_membership_bytes = 900;
    s1.group_members = 3;
    s1.group_offsets_held = 12;
    s1.group_queue_locks = 4;
    s1.group_retention_groups = 2;
    s1.task_queue_busy = vec![("data", std::time::Duration::from_millis(2500))];
    s1.append_ack_latency.record_us(40);
    s1.append_ack_latency.record_us(4_000);
    s1.log.chunk_cache_hits = 3;
    s1.log.chunk_cache_misses = 1;
    s1.log.segments = 9;
    s1.log.probe.retention_expired_segments = 5;
    s1.log.probe.retention_disk_segments = 2;
    s1.log.probe.retention_pinned_segments = 3;
    (s1.schedule_held, s1.schedule_delivered, s1.schedule_rolled) = (6, 40, 11);
    (s1.idempotence_windows, s1.idempotence_windows_evicted) = (20_000, 7);
    s1.errors_by_code = vec![("UNKNOWN_TOPIC", 2)];
    BrokerSnapshot {
        shard_count: 2,
        shards: vec![s1],
        queues: vec![QueueSample {
            topic: "%RETRY%orders|eu-1".into(),
            queue: 1,
            shard: 1,
            min_offset: 5,
            next_offset: 30,
        }],
        queue_series_omitted: 0,
        groups: vec![GroupLag {
            group: "billing".into(),
            topic: "orders".into(),
            queue: 1,
            committed_offset: 12,
            next_offset: Some(30),
        }],
        group_series_omitted: 7,
    }
}

#[test]
fn a_snapshot_renders_as_text_a_prometheus_parser_reads_back() {
    let text = render(example());
    let s = parse(&text);
    let shard1 = [("shard", "1")];
    assert_eq!(value(&s, "ringmq_append_records_total", &shard1), Some(30.0), "{text}");
    assert_eq!(value(&s, "ringmq_append_bytes_total", &shard1), Some(3000.0));
    assert_eq!(value(&s, "ringmq_connections_open", &shard1), Some(2.0));
    assert_eq!(value(&s, "ringmq_key_index_behind_bytes", &shard1), Some(4096.0));
    assert_eq!(value(&s, "ringmq_key_index_disk_read_bytes_total", &shard1), Some(8192.0));
    assert_eq!(value(&s, "ringmq_key_index_skipped_batches_total", &shard1), Some(7.0));
    assert_eq!(value(&s, "ringmq_read_buffer_pool_bytes", &shard1), Some(65536.0));
    assert_eq!(value(&s, "ringmq_read_buffer_allocated_bytes_total", &shard1), Some(131072.0));
    for (metric, want) in [
        ("ringmq_group_membership_bytes", 900.0),
        ("ringmq_group_members", 3.0),
        ("ringmq_group_offsets_held", 12.0),
        ("ringmq_group_queue_locks", 4.0),
        ("ringmq_group_retention_groups", 2.0),
        ("ringmq_log_segments", 9.0),
        ("ringmq_retention_expired_segments_total", 5.0),
        ("ringmq_retention_disk_segments_total", 2.0),
        ("ringmq_retention_pinned_segments", 3.0),
        ("ringmq_schedule_held", 6.0),
        ("ringmq_idempotence_windows", 20_000.0),
        ("ringmq_idempotence_windows_evicted_total", 7.0),
        ("ringmq_schedule_delivered_total", 40.0),
        ("ringmq_schedule_rolled_total", 11.0),
    ] {
        assert_eq!(value(&s, metric, &shard1), Some(want), "{metric}");
    }
    assert_eq!(
        value(&s, "ringmq_task_queue_busy_seconds_total", &[("shard", "1"), ("queue", "data")]),
        Some(2.5)
    );
    assert_eq!(value(&s, "ringmq_shard_up", &[("shard", "0")]), Some(0.0), "shard 0 was silent");
    assert_eq!(value(&s, "ringmq_shard_up", &shard1), Some(1.0));
    assert_eq!(
        value(&s, "ringmq_errors_total", &[("shard", "1"), ("code", "UNKNOWN_TOPIC")]),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "ringmq_cache_hit_ratio", &[("shard", "1"), ("cache", "chunk")]),
        Some(0.75)
    );
    // Every character a topic name may hold survives as a label value.
    assert_eq!(
        value(&s, "ringmq_queue_messages", &[("topic", "%RETRY%orders|eu-1"), ("queue", "1")]),
        Some(25.0)
    );
    let g = [("group", "billing"), ("topic", "orders"), ("queue", "1")];
    assert_eq!(value(&s, "ringmq_group_lag_messages", &g), Some(18.0));
    assert_eq!(value(&s, "ringmq_group_committed_offset", &g), Some(12.0));
    assert_eq!(value(&s, "ringmq_group_series_omitted", &[]), Some(7.0));
    assert_eq!(value(&s, "ringmq_append_ack_latency_seconds_count", &shard1), Some(2.0));
    let sum = value(&s, "ringmq_append_ack_latency_seconds_sum", &shard1).unwrap();
    assert!((sum - 0.004_04).abs() < 1e-9, "{sum}");
    let buckets = s
        .samples
        .iter()
        .find_map(|x| match &x.value {
            Value::Histogram(b) if x.metric == "ringmq_append_ack_latency_seconds" => Some(b),
            _ => None,
        })
        .expect("the histogram");
    let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
    assert_eq!((at(0.000_025), at(0.000_05), at(0.005), at(f64::INFINITY)), (0.0, 1.0, 2.0, 2.0));
    assert!(text.contains("# TYPE ringmq_fsync_latency_seconds histogram"), "{text}");
    assert_eq!(value(&s, "ringmq_replication_in_sync_members", &shard1), Some(2.0));
    assert_eq!(value(&s, "ringmq_replication_unconfirmed_bytes", &shard1), Some(1000.0));
    let r2 = [("shard", "1"), ("replica", "10.0.0.2:10911")];
    assert_eq!(value(&s, "ringmq_replica_lag_bytes", &r2), Some(1000.0));
    assert_eq!(value(&s, "ringmq_replica_in_sync", &r2), Some(1.0));
    let r3 = [("shard", "1"), ("replica", "10.0.0.3:10911")];
    assert_eq!(value(&s, "ringmq_replica_in_sync", &r3), Some(0.0));
    assert_eq!(value(&s, "ringmq_replica_lag_bytes", &r3), None, "not connected");
}

#[test]
fn a_group_whose_queue_end_is_unknown_has_an_offset_but_no_lag() {
    let mut b = example();
    b.groups[0].next_offset = None;
    let s = parse(&render(b));
    let g = [("group", "billing")];
    assert_eq!(value(&s, "ringmq_group_committed_offset", &g), Some(12.0));
    assert_eq!(value(&s, "ringmq_group_lag_messages", &g), None);
}
