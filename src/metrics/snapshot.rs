//! What a scrape gathers: one [`ShardSnapshot`] per shard, joined into a [`BrokerSnapshot`].
//!
//! Pure data and pure joining (no I/O, no clock): each shard fills its snapshot from what it
//! owns, on its own thread; the exporter merges them, applies the series caps and computes
//! each group's lag from the coordinators' committed offsets and the owners' queue ends.
//!
//! # Series bounds
//! Per-shard series are bounded by the shard count (and, for errors, by the number of error
//! codes). Per-queue and per-group series are not bounded by anything the broker controls
//! (up to `max_topics` x `max_queues_per_topic` queues), so each is capped:
//! `[metrics] max_queue_series` (default 1000) queue series, the first by (topic, queue), and
//! `max_group_series` (default 1000) group series, the first by (group, topic, queue). What a
//! cap leaves out is counted in `ringmq_queue_series_omitted` / `ringmq_group_series_omitted`,
//! so a truncated view is never mistaken for a complete one. Each shard sends at most the cap
//! of each (its own first entries in the same order), so a scrape's memory is bounded too.

use std::collections::HashMap;

use super::LatencyHistogram;
use crate::protocol::ShardStats;
use crate::storage::probe::LogMetrics;

/// The readable range of one queue, from its owner shard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueSample {
    pub topic: String,
    pub queue: u32,
    pub shard: u32,
    pub min_offset: u64,
    pub next_offset: u64,
}

impl QueueSample {
    /// Messages retained in the queue: next offset minus first.
    pub fn messages(&self) -> u64 {
        self.next_offset.saturating_sub(self.min_offset)
    }
}

/// A committed offset, from the group's coordinator shard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupOffsetSample {
    pub group: String,
    pub topic: String,
    pub queue: u32,
    pub committed_offset: u64,
}

/// The caps on per-queue and per-group series (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    pub max_queue_series: usize,
    pub max_group_series: usize,
}

/// One shard's counters and what it owns, copied on the shard's thread.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShardSnapshot {
    pub shard: u32,
    /// Requests, produce/fetch counts and bytes, connections, long-poll waiters (the same
    /// counters the `Stats` request reports).
    pub counters: ShardStats,
    /// From receiving a produce on the owner shard to its acknowledgement (durable in sync
    /// flush mode).
    pub append_ack_latency: LatencyHistogram,
    /// Reading a fetch's batches from the log (cache or disk); long-poll waits excluded.
    pub fetch_read_latency: LatencyHistogram,
    pub log: LogMetrics,
    /// Failed requests by error code name, codes with no failure left out.
    pub errors_by_code: Vec<(&'static str, u64)>,
    /// The shard's queues, the first `max_queue_series` by (topic, queue).
    pub queues: Vec<QueueSample>,
    /// How many queues the shard owns (more than `queues` holds when capped).
    pub queues_owned: u64,
    /// Offsets of the groups this shard coordinates, the first `max_group_series`.
    pub group_offsets: Vec<GroupOffsetSample>,
    /// How many committed offsets the shard holds.
    pub group_offsets_held: u64,
    /// The shard's coordinator: bytes of membership charged against
    /// `group.max_membership_bytes`.
    pub group_membership_bytes: u64,
    /// Members of the groups the shard coordinates.
    pub group_members: u64,
    /// Queue locks in the coordinator's table (`group.max_queue_locks`), lapsed ones until the
    /// next sweep.
    pub group_queue_locks: u64,
    /// Groups whose offsets retention the coordinator tracks (every group with offsets).
    pub group_retention_groups: u64,
    /// Replication state; None on a broker without replication.
    pub replication: Option<ReplicationSample>,
    /// Durable log bytes past the key index's position (keys QUERY_KEYS does not find yet);
    /// None without a key index.
    pub key_index_behind_bytes: Option<u64>,
    /// Log bytes the key index read back from disk since start (it fell behind the chunk
    /// cache, or the start re-indexed); None without a key index.
    pub key_index_disk_read_bytes: Option<u64>,
    /// Batches the key index skipped without reading their records: appended since start
    /// with no keys or properties. None without a key index.
    pub key_index_skipped_batches: Option<u64>,
    /// Free connection read buffers the shard holds for reuse (`read_buffer_pool_bytes`).
    pub read_buffer_pool_bytes: u64,
    /// New connection read buffers allocated (zero-filled) since start: what the pool could
    /// not serve.
    pub read_buffer_allocated_bytes: u64,
    /// Idempotent producers' (producer, queue) sequence windows the shard holds.
    pub idempotence_windows: u64,
    /// Windows dropped since start to make room for others (`SequenceWindows::evicted`).
    pub idempotence_windows_evicted: u64,
    /// Scheduled messages the shard holds (pending in its wheel or not indexed yet).
    pub schedule_held: u64,
    /// Scheduled messages moved to their queues since start.
    pub schedule_delivered: u64,
    /// Held scheduled messages written again at the log's end since start
    /// (`schedule.roll_after_ms`).
    pub schedule_rolled: u64,
    /// Time each of the shard's task queues ran since start (`data`, `control`, `key_index`):
    /// its CPU time by kind of work, host preemption while a task ran included.
    pub task_queue_busy: Vec<(&'static str, std::time::Duration)>,
}

/// A shard's replication state (`broker/shard/replication.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationSample {
    Master {
        /// Where the log ends (appended).
        log_end: u64,
        /// The confirmed position (what consumers see).
        confirmed: u64,
        /// Members of the in-sync set, the master included.
        in_sync_members: u64,
        replicas: Vec<ReplicaSample>,
    },
    Replica {
        /// What this replica synced (what its consumers see).
        synced: u64,
    },
}

/// One replica as its master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSample {
    pub replica: String,
    pub in_sync: bool,
    /// Bytes of the master's log the replica has not acknowledged; None while not connected.
    pub lag_bytes: Option<u64>,
}

/// A group's position on one queue and how far behind the queue's end it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub queue: u32,
    pub committed_offset: u64,
    /// The queue's next offset; None when its owner did not answer or the topic is gone.
    pub next_offset: Option<u64>,
}

impl GroupLag {
    /// Messages not yet consumed: next offset minus committed (0 when the committed offset is
    /// ahead, e.g. right after a reset to the end).
    pub fn lag(&self) -> Option<u64> {
        self.next_offset.map(|next| next.saturating_sub(self.committed_offset))
    }
}

/// What one scrape gathered from every shard that answered.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BrokerSnapshot {
    pub shard_count: usize,
    /// Snapshots of the shards that answered, by shard number.
    pub shards: Vec<ShardSnapshot>,
    /// At most `max_queue_series`, sorted by (topic, queue).
    pub queues: Vec<QueueSample>,
    pub queue_series_omitted: u64,
    /// At most `max_group_series`, sorted by (group, topic, queue).
    pub groups: Vec<GroupLag>,
    pub group_series_omitted: u64,
}

/// The group offsets a scrape shows, merged from every coordinator and capped.
pub fn capped_group_offsets(
    shards: &[ShardSnapshot],
    limits: SeriesLimits,
) -> Vec<GroupOffsetSample> {
    let mut all: Vec<GroupOffsetSample> =
        shards.iter().flat_map(|s| s.group_offsets.iter().cloned()).collect();
    all.sort();
    all.truncate(limits.max_group_series);
    all
}

/// The queues whose ends the lag of `offsets` needs, each once.
pub fn queues_for_lag(offsets: &[GroupOffsetSample]) -> Vec<(String, u32)> {
    let mut q: Vec<(String, u32)> = offsets.iter().map(|o| (o.topic.clone(), o.queue)).collect();
    q.sort();
    q.dedup();
    q
}

impl BrokerSnapshot {
    /// Joins the shards' snapshots: queues merged and capped, each capped group offset with
    /// its queue's end from `queue_ends` ((topic, queue) -> next offset, from the owners).
    pub fn assemble(
        shard_count: usize,
        mut shards: Vec<ShardSnapshot>,
        queue_ends: &HashMap<(String, u32), u64>,
        limits: SeriesLimits,
    ) -> BrokerSnapshot {
        shards.sort_by_key(|s| s.shard);
        let mut queues: Vec<QueueSample> =
            shards.iter().flat_map(|s| s.queues.iter().cloned()).collect();
        queues.sort();
        queues.truncate(limits.max_queue_series);
        let owned: u64 = shards.iter().map(|s| s.queues_owned).sum();
        let held: u64 = shards.iter().map(|s| s.group_offsets_held).sum();
        let groups: Vec<GroupLag> = capped_group_offsets(&shards, limits)
            .into_iter()
            .map(|o| GroupLag {
                next_offset: queue_ends.get(&(o.topic.clone(), o.queue)).copied(),
                group: o.group,
                topic: o.topic,
                queue: o.queue,
                committed_offset: o.committed_offset,
            })
            .collect();
        BrokerSnapshot {
            shard_count,
            queue_series_omitted: owned.saturating_sub(queues.len() as u64),
            group_series_omitted: held.saturating_sub(groups.len() as u64),
            shards,
            queues,
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(topic: &str, queue: u32, shard: u32, min: u64, next: u64) -> QueueSample {
        QueueSample { topic: topic.into(), queue, shard, min_offset: min, next_offset: next }
    }

    fn offset(group: &str, topic: &str, queue: u32, at: u64) -> GroupOffsetSample {
        GroupOffsetSample { group: group.into(), topic: topic.into(), queue, committed_offset: at }
    }

    fn shard(id: u32, queues: Vec<QueueSample>, owned: u64) -> ShardSnapshot {
        ShardSnapshot { shard: id, queues, queues_owned: owned, ..Default::default() }
    }

    const WIDE: SeriesLimits = SeriesLimits { max_queue_series: 100, max_group_series: 100 };

    #[test]
    fn queues_merge_in_order_and_count_messages_retained() {
        let s0 = shard(0, vec![queue("b", 0, 0, 0, 5), queue("a", 1, 0, 3, 10)], 2);
        let s1 = shard(1, vec![queue("a", 0, 1, 0, 0)], 1);
        let b = BrokerSnapshot::assemble(2, vec![s1, s0], &HashMap::new(), WIDE);
        let got: Vec<_> =
            b.queues.iter().map(|q| (q.topic.as_str(), q.queue, q.messages())).collect();
        assert_eq!(got, [("a", 0, 0), ("a", 1, 7), ("b", 0, 5)]);
        assert_eq!(b.shards.iter().map(|s| s.shard).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(b.queue_series_omitted, 0);
    }

    #[test]
    fn the_queue_cap_keeps_the_first_series_and_counts_the_rest() {
        let limits = SeriesLimits { max_queue_series: 2, max_group_series: 100 };
        // Each shard sent its own first two; it owns more than it sent.
        let s0 = shard(0, vec![queue("a", 0, 0, 0, 1), queue("a", 2, 0, 0, 1)], 50);
        let s1 = shard(1, vec![queue("a", 1, 1, 0, 1), queue("a", 3, 1, 0, 1)], 50);
        let b = BrokerSnapshot::assemble(2, vec![s0, s1], &HashMap::new(), limits);
        assert_eq!(b.queues.iter().map(|q| q.queue).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(b.queue_series_omitted, 98);
    }

    #[test]
    fn lag_is_the_queue_end_minus_the_committed_offset() {
        let mut s0 = shard(0, vec![], 0);
        s0.group_offsets = vec![offset("g", "t", 0, 4), offset("g", "t", 1, 9)];
        s0.group_offsets_held = 2;
        let mut s1 = shard(1, vec![], 0);
        s1.group_offsets = vec![offset("f", "t", 0, 0), offset("f", "gone", 0, 3)];
        s1.group_offsets_held = 2;
        let offsets = capped_group_offsets(&[s0.clone(), s1.clone()], WIDE);
        assert_eq!(
            queues_for_lag(&offsets),
            [("gone".to_string(), 0), ("t".into(), 0), ("t".into(), 1)]
        );
        let ends = HashMap::from([(("t".to_string(), 0), 10), (("t".to_string(), 1), 7)]);
        let b = BrokerSnapshot::assemble(2, vec![s0, s1], &ends, WIDE);
        let got: Vec<_> = b
            .groups
            .iter()
            .map(|g| (g.group.as_str(), g.topic.as_str(), g.queue, g.lag()))
            .collect();
        assert_eq!(
            got,
            [
                ("f", "gone", 0, None),
                ("f", "t", 0, Some(10)),
                ("g", "t", 0, Some(6)),
                ("g", "t", 1, Some(0)), // committed past the end (a reset): no negative lag
            ]
        );
        assert_eq!(b.group_series_omitted, 0);
    }

    #[test]
    fn the_group_cap_keeps_the_first_series_and_counts_the_rest() {
        let limits = SeriesLimits { max_queue_series: 100, max_group_series: 1 };
        let mut s0 = shard(0, vec![], 0);
        s0.group_offsets = vec![offset("z", "t", 0, 1)];
        s0.group_offsets_held = 30;
        let mut s1 = shard(1, vec![], 0);
        s1.group_offsets = vec![offset("a", "t", 0, 1)];
        s1.group_offsets_held = 5;
        let offsets = capped_group_offsets(&[s0.clone(), s1.clone()], limits);
        assert_eq!(offsets, [offset("a", "t", 0, 1)]);
        let b = BrokerSnapshot::assemble(2, vec![s0, s1], &HashMap::new(), limits);
        assert_eq!(b.groups.len(), 1);
        assert_eq!(b.group_series_omitted, 34);
    }
}
