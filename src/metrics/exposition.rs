//! Renders a [`BrokerSnapshot`] in the Prometheus text format (0.0.4), through the
//! `prometheus-client` crate's encoder: names, escaping, `_total` suffixes and histogram
//! buckets are the maintained crate's, not ours.
//!
//! The snapshot is rendered by a `Collector` registered in a fresh registry per scrape: the
//! values were already gathered from the shards, so there is no long-lived registry holding
//! shared counters (which would put a lock or an atomic on the shards' data path).
//!
//! Names (prefix `ringmq_`, labels `shard`, `topic`, `queue`, `group`, `code`) are listed in
//! docs/design.md, "Metrics".

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::snapshot::{BrokerSnapshot, ReplicaSample, ReplicationSample, ShardSnapshot};
use super::LatencyHistogram;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

/// The snapshot as Prometheus text.
pub fn render(snapshot: BrokerSnapshot) -> String {
    let mut registry = Registry::with_prefix("ringmq");
    registry.register_collector(Box::new(SnapshotCollector(Arc::new(snapshot))));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct SnapshotCollector(Arc<BrokerSnapshot>);

fn shard_label(s: &ShardSnapshot) -> Labels {
    vec![("shard", s.shard.to_string())]
}

fn counters<V: prometheus_client::encoding::EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, V)>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        family.encode_family(&labels)?.encode_counter::<NoLabelSet, V, u64>(&v, None)?;
    }
    Ok(())
}

fn gauges<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, V)>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        family.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

fn histograms<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, &'a LatencyHistogram)>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            h.sum_us() as f64 / 1e6,
            h.count(),
            &h.buckets_seconds(),
            None,
        )?;
    }
    Ok(())
}

/// Hits over lookups since start; 0 before the first lookup.
fn ratio(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let b = &*self.0;
        let shards = &b.shards;
        let per_shard = |f: fn(&ShardSnapshot) -> u64| {
            shards.iter().map(move |s| (shard_label(s), f(s))).collect::<Vec<_>>()
        };
        let e = &mut enc;
        gauges(
            e,
            "shard_up",
            "1 when the shard answered this scrape, 0 when it did not in time",
            (0..b.shard_count).map(|i| {
                let up = shards.iter().any(|s| s.shard as usize == i);
                (vec![("shard", i.to_string())], u64::from(up))
            }),
        )?;
        counters(
            e,
            "requests",
            "Requests decoded on the shard",
            per_shard(|s| s.counters.requests),
        )?;
        counters(
            e,
            "errors",
            "Requests decoded on the shard that failed, by error code",
            shards.iter().flat_map(|s| {
                s.errors_by_code.iter().map(move |(code, n)| {
                    (vec![("shard", s.shard.to_string()), ("code", (*code).to_owned())], *n)
                })
            }),
        )?;
        counters(
            e,
            "append_batches",
            "Batches appended to the shard's log",
            per_shard(|s| s.counters.produce_batches),
        )?;
        counters(
            e,
            "append_records",
            "Records (messages) appended to the shard's log",
            per_shard(|s| s.counters.produce_records),
        )?;
        counters(
            e,
            "append_bytes",
            "Batch bytes appended to the shard's log",
            per_shard(|s| s.counters.produce_bytes),
        )?;
        histograms(
            e,
            "append_ack_latency_seconds",
            "From a produce reaching its owner shard to its acknowledgement (durable in sync flush mode)",
            shards.iter().map(|s| (shard_label(s), &s.append_ack_latency)),
        )?;
        counters(e, "flushes", "Group commits completed", per_shard(|s| s.log.probe.flushes))?;
        histograms(
            e,
            "fsync_latency_seconds",
            "Time of each segment fdatasync",
            shards.iter().map(|s| (shard_label(s), &s.log.probe.fsync_latency)),
        )?;
        counters(
            e,
            "chunk_pool_waits",
            "Appends that waited for a free write chunk (backpressure from the disk)",
            per_shard(|s| s.log.probe.chunk_pool_waits),
        )?;
        counters(
            e,
            "index_room_waits",
            "Appends that waited for the queue index to write entries back (unwritten entries at their bound)",
            per_shard(|s| s.log.probe.index_room_waits),
        )?;
        histograms(
            e,
            "index_checkpoint_latency_seconds",
            "Time of each queue index checkpoint (write-back and fdatasync of the written index files)",
            shards.iter().map(|s| (shard_label(s), &s.log.probe.index_checkpoint_latency)),
        )?;
        counters(
            e,
            "fetch_requests",
            "Fetches served by the shard that owns the queue",
            per_shard(|s| s.counters.fetch_requests),
        )?;
        counters(
            e,
            "fetch_bytes",
            "Batch bytes returned by fetches",
            per_shard(|s| s.counters.fetch_bytes),
        )?;
        histograms(
            e,
            "fetch_read_latency_seconds",
            "Reading a fetch's batches from the log, cache or disk (long-poll waits excluded)",
            shards.iter().map(|s| (shard_label(s), &s.fetch_read_latency)),
        )?;
        counters(
            e,
            "chunk_cache_hits",
            "Fetched batches served from memory: a cached chunk, a copy out of two (a batch \
             straddling chunks) or out of the chunk being filled",
            per_shard(|s| s.log.chunk_cache_hits),
        )?;
        counters(
            e,
            "chunk_cache_misses",
            "Fetched batches memory did not hold: read from disk, now or ahead",
            per_shard(|s| s.log.chunk_cache_misses),
        )?;
        counters(
            e,
            "prefetch_bytes",
            "Bytes read from disk ahead of catching-up queues' next fetches",
            per_shard(|s| s.log.probe.prefetch_bytes),
        )?;
        counters(
            e,
            "prefetch_served_bytes",
            "Batch bytes fetches took from what was read ahead for them",
            per_shard(|s| s.log.probe.prefetch_served_bytes),
        )?;
        counters(
            e,
            "multi_read_bytes",
            "Bytes multi-queue fetches read from disk in blocks of the log",
            per_shard(|s| s.log.probe.multi_read_bytes),
        )?;
        counters(
            e,
            "multi_read_served_bytes",
            "Batch bytes multi-queue fetches served from the blocks they read",
            per_shard(|s| s.log.probe.multi_read_served_bytes),
        )?;
        counters(
            e,
            "retention_expired_segments",
            "Log segments retention deleted for being older than storage.retention_hours",
            per_shard(|s| s.log.probe.retention_expired_segments),
        )?;
        counters(
            e,
            "retention_disk_segments",
            "Log segments retention deleted younger than storage.retention_hours because the filesystem was fuller than storage.disk_max_used_ratio (unread messages in them are lost to their consumers)",
            per_shard(|s| s.log.probe.retention_disk_segments),
        )?;
        gauges(
            e,
            "retention_pinned_segments",
            "At the last retention run, segments it would have deleted that a pin kept (held scheduled messages, undecided transactions, the committed offsets' last snapshot)",
            per_shard(|s| s.log.probe.retention_pinned_segments),
        )?;
        gauges(
            e,
            "idempotence_windows",
            "Idempotent producers' (producer, queue) sequence windows the shard holds, at most \
             broker.idempotence_max_producer_queues",
            per_shard(|s| s.idempotence_windows),
        )?;
        counters(
            e,
            "idempotence_windows_evicted",
            "Sequence windows dropped to make room for others, the table being full (not by \
             expiry): the producer renumbers its next batch on that queue, and a retry of a \
             batch the window covered is no longer recognised",
            per_shard(|s| s.idempotence_windows_evicted),
        )?;
        gauges(
            e,
            "schedule_held",
            "Scheduled messages the shard holds, pending or not yet indexed (each keeps the \
             log from its segment on, for at most schedule.roll_after_ms)",
            per_shard(|s| s.schedule_held),
        )?;
        counters(
            e,
            "schedule_delivered",
            "Scheduled messages moved to their queues",
            per_shard(|s| s.schedule_delivered),
        )?;
        counters(
            e,
            "schedule_rolled",
            "Held scheduled messages written again at the log's end (schedule.roll_after_ms)",
            per_shard(|s| s.schedule_rolled),
        )?;
        gauges(
            e,
            "log_segments",
            "Segment files of the shard's log, the one being written included",
            per_shard(|s| s.log.segments),
        )?;
        counters(
            e,
            "index_cache_hits",
            "Queue index block lookups served from the index cache",
            per_shard(|s| s.log.index_cache_hits),
        )?;
        counters(
            e,
            "index_cache_misses",
            "Queue index block lookups that read the index file",
            per_shard(|s| s.log.index_cache_misses),
        )?;
        gauges(
            e,
            "cache_hit_ratio",
            "Hits over lookups since start, by cache (chunk, index); rate() of the _hits and \
             _misses counters gives the recent ratio",
            shards.iter().flat_map(|s| {
                let l = &s.log;
                [
                    ("chunk", ratio(l.chunk_cache_hits, l.chunk_cache_misses)),
                    ("index", ratio(l.index_cache_hits, l.index_cache_misses)),
                ]
                .map(|(cache, r)| {
                    (vec![("shard", s.shard.to_string()), ("cache", cache.into())], r)
                })
            }),
        )?;
        counters(
            e,
            "forwarded_out",
            "Queue requests this shard forwarded to the owner shard",
            per_shard(|s| s.counters.forwarded_out),
        )?;
        counters(
            e,
            "forwarded_in",
            "Queue requests other shards forwarded to this one",
            per_shard(|s| s.counters.forwarded_in),
        )?;
        gauges(
            e,
            "connections_open",
            "Client connections open on the shard",
            per_shard(|s| s.counters.connections_open),
        )?;
        gauges(
            e,
            "key_index_behind_bytes",
            "Durable log bytes the key index has not indexed yet: keys of their messages are not \
             found by QUERY_KEYS until it has",
            shards.iter().filter_map(|s| s.key_index_behind_bytes.map(|b| (shard_label(s), b))),
        )?;
        counters(
            e,
            "key_index_disk_read_bytes",
            "Log bytes the key index read back from disk: its reader fell behind what the chunk \
             cache holds, or a start re-indexed the log since the last checkpoint",
            shards.iter().filter_map(|s| s.key_index_disk_read_bytes.map(|b| (shard_label(s), b))),
        )?;
        counters(
            e,
            "key_index_skipped_batches",
            "Batches the key index skipped without reading their records back: appended since \
             start with no keys or properties in any record",
            shards.iter().filter_map(|s| s.key_index_skipped_batches.map(|b| (shard_label(s), b))),
        )?;
        gauges(
            e,
            "read_buffer_pool_bytes",
            "Free connection read buffers the shard keeps for reuse (read_buffer_pool_bytes)",
            per_shard(|s| s.read_buffer_pool_bytes),
        )?;
        counters(
            e,
            "read_buffer_allocated_bytes",
            "Connection read buffers allocated new (zero-filled): what neither the connection nor \
             the shard's pool had free; steady growth under steady load means the pool is small",
            per_shard(|s| s.read_buffer_allocated_bytes),
        )?;
        counters(
            e,
            "task_queue_busy_seconds",
            "Time the shard's tasks of each kind ran: data (connections, produce, fetch, the \
             log), control (groups, schedules, transactions, metrics), key_index",
            shards.iter().flat_map(|s| {
                s.task_queue_busy.iter().map(move |(queue, busy)| {
                    let labels = vec![("shard", s.shard.to_string()), ("queue", (*queue).into())];
                    (labels, busy.as_secs_f64())
                })
            }),
        )?;
        gauges(
            e,
            "group_membership_bytes",
            "Bytes of membership state the shard's coordinator holds, as charged against \
             group.max_membership_bytes",
            per_shard(|s| s.group_membership_bytes),
        )?;
        gauges(
            e,
            "group_members",
            "Members of the groups the shard coordinates",
            per_shard(|s| s.group_members),
        )?;
        gauges(
            e,
            "group_offsets_held",
            "Committed offsets (group, topic, queue) the shard's coordinator holds \
             (group.max_committed_offsets)",
            per_shard(|s| s.group_offsets_held),
        )?;
        gauges(
            e,
            "group_queue_locks",
            "Queue locks in the shard's coordinator's table (group.max_queue_locks); lapsed ones \
             until the next sweep",
            per_shard(|s| s.group_queue_locks),
        )?;
        gauges(
            e,
            "group_retention_groups",
            "Groups whose offsets retention the shard's coordinator tracks (every group with \
             committed offsets; group.offsets_retention_ms)",
            per_shard(|s| s.group_retention_groups),
        )?;
        gauges(
            e,
            "long_poll_waiters",
            "Fetches parked at the end of a queue",
            per_shard(|s| s.counters.long_poll_waiting),
        )?;
        gauges(
            e,
            "queue_messages",
            "Messages retained in the queue (next offset minus first)",
            b.queues.iter().map(|q| {
                let labels = vec![
                    ("topic", q.topic.clone()),
                    ("queue", q.queue.to_string()),
                    ("shard", q.shard.to_string()),
                ];
                (labels, q.messages())
            }),
        )?;
        gauges(
            e,
            "queue_next_offset",
            "The queue's next offset (its readable end)",
            b.queues.iter().map(|q| {
                let labels = vec![
                    ("topic", q.topic.clone()),
                    ("queue", q.queue.to_string()),
                    ("shard", q.shard.to_string()),
                ];
                (labels, q.next_offset)
            }),
        )?;
        gauges(
            e,
            "queue_series_omitted",
            "Queues left out of the per-queue series by [metrics] max_queue_series",
            [(Labels::new(), b.queue_series_omitted)],
        )?;
        let group_labels = |g: &super::snapshot::GroupLag| {
            vec![
                ("group", g.group.clone()),
                ("topic", g.topic.clone()),
                ("queue", g.queue.to_string()),
            ]
        };
        gauges(
            e,
            "group_committed_offset",
            "The group's committed offset (the next message it consumes) on the queue",
            b.groups.iter().map(|g| (group_labels(g), g.committed_offset)),
        )?;
        gauges(
            e,
            "group_lag_messages",
            "Messages of the queue the group has not consumed (queue end minus committed offset)",
            b.groups.iter().filter_map(|g| g.lag().map(|lag| (group_labels(g), lag))),
        )?;
        gauges(
            e,
            "group_series_omitted",
            "Committed offsets left out of the per-group series by [metrics] max_group_series",
            [(Labels::new(), b.group_series_omitted)],
        )?;
        let masters: Vec<_> = shards
            .iter()
            .filter_map(|s| match &s.replication {
                Some(ReplicationSample::Master {
                    log_end,
                    confirmed,
                    in_sync_members,
                    replicas,
                }) => Some((s, *log_end, *confirmed, *in_sync_members, replicas)),
                _ => None,
            })
            .collect();
        if !masters.is_empty() {
            gauges(
                e,
                "replication_in_sync_members",
                "Members of the shard's in-sync set, the master included",
                masters.iter().map(|(s, _, _, n, _)| (shard_label(s), *n)),
            )?;
            gauges(
                e,
                "replication_unconfirmed_bytes",
                "Bytes of the master shard's log past the confirmed position (not yet on every \
                 in-sync member's disk; consumers do not see them yet)",
                masters.iter().map(|(s, end, confirmed, _, _)| (shard_label(s), end - confirmed)),
            )?;
            let per_replica = |f: fn(&ReplicaSample) -> Option<u64>| {
                masters
                    .iter()
                    .flat_map(move |(s, _, _, _, replicas)| {
                        replicas.iter().filter_map(move |r| {
                            let labels = vec![
                                ("shard", s.shard.to_string()),
                                ("replica", r.replica.clone()),
                            ];
                            f(r).map(|v| (labels, v))
                        })
                    })
                    .collect::<Vec<_>>()
            };
            gauges(
                e,
                "replica_in_sync",
                "1 when the replica is in the shard's in-sync set",
                per_replica(|r| Some(u64::from(r.in_sync))),
            )?;
            gauges(
                e,
                "replica_lag_bytes",
                "Bytes of the master shard's log the replica has not acknowledged as synced \
                 (connected replicas only)",
                per_replica(|r| r.lag_bytes),
            )?;
        }
        let replicas: Vec<_> = shards
            .iter()
            .filter_map(|s| match &s.replication {
                Some(ReplicationSample::Replica { synced }) => Some((shard_label(s), *synced)),
                _ => None,
            })
            .collect();
        if !replicas.is_empty() {
            gauges(
                e,
                "replication_synced_position",
                "Replica shard: the log position it synced from its master (its consumers see \
                 up to it)",
                replicas,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
