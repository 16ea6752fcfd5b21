//! Answers to the metrics exporter (`src/metrics/exporter.rs`): this shard's counters, the
//! queues it owns and the committed offsets of the groups it coordinates, copied into a
//! [`ShardSnapshot`]; and the ends of queues it owns, for group lag.
//!
//! Runs in the shard's control task queue, so a scrape never delays produce and fetch beyond
//! the copy itself; the copy walks only the queues this shard owns (stepping through each
//! topic's queue ids by the shard count) and stops collecting at the series caps.

use futures::StreamExt;

use super::*;
use crate::broker::shutdown::Stop;
use crate::metrics::{
    GroupOffsetSample, Inbox, QueryKind, QueueSample, SeriesLimits, ShardAnswer, ShardSnapshot,
};

impl<L: ShardLog> Shard<L> {
    /// Serves the exporter's queries until the shard stops or the exporter is gone.
    pub async fn serve_metrics(self: Rc<Self>, mut inbox: Inbox, stop: Stop) {
        loop {
            let query = match select(inbox.next(), stop.clone()).await {
                Either::Left((Some(q), _)) => q,
                Either::Left((None, _)) | Either::Right(_) => return,
            };
            let answer = match &query.kind {
                QueryKind::Snapshot(limits) => {
                    ShardAnswer::Snapshot(Box::new(self.metrics_snapshot(*limits)))
                }
                QueryKind::QueueEnds(queues) => ShardAnswer::QueueEnds(self.queue_ends(queues)),
            };
            // Never wait: a full or closed reply channel means that scrape gave up.
            let _ = query.reply.try_send(answer);
        }
    }

    /// A copy of this shard's counters and what it owns, capped by `limits`.
    pub fn metrics_snapshot(&self, limits: SeriesLimits) -> ShardSnapshot {
        let mut queues = Vec::new();
        let mut queues_owned = 0u64;
        for (name, entry) in self.topics.borrow().iter() {
            for q in owned_queue_ids(name, entry.queue_count, self.id, self.shard_count) {
                queues_owned += 1;
                if queues.len() < limits.max_queue_series {
                    let key = QueueKey::new(TopicId::new(entry.id), QueueId::new(q));
                    let o = self.log.offsets(key);
                    queues.push(QueueSample {
                        topic: name.to_owned(),
                        queue: q,
                        shard: self.id.get() as u32,
                        min_offset: o.min,
                        next_offset: o.next,
                    });
                }
            }
        }
        let coordinator = self.coordinator.borrow();
        let offsets = coordinator.committed_offsets();
        let group_offsets = offsets
            .iter()
            .take(limits.max_group_series)
            .map(|(group, topic, queue, at)| GroupOffsetSample {
                group: group.to_owned(),
                topic: topic.to_owned(),
                queue,
                committed_offset: at,
            })
            .collect();
        let probe = self.probe.borrow();
        ShardSnapshot {
            shard: self.id.get() as u32,
            counters: self.stats(),
            append_ack_latency: probe.append_ack_latency,
            fetch_read_latency: probe.fetch_read_latency,
            log: self.log.metrics(),
            errors_by_code: probe.errors_by_code(),
            queues,
            queues_owned,
            group_offsets,
            group_offsets_held: offsets.len() as u64,
            group_membership_bytes: coordinator.membership_bytes() as u64,
            group_members: coordinator.member_count() as u64,
            group_queue_locks: coordinator.locks_len() as u64,
            group_retention_groups: coordinator.retention_len() as u64,
            replication: self.replication_sample(),
            key_index_behind_bytes: self
                .keys
                .borrow()
                .as_ref()
                .map(|index| self.log.durable_end().saturating_sub(index.indexed_to().get())),
            key_index_disk_read_bytes: self
                .keys
                .borrow()
                .as_ref()
                .map(|_| self.keys_reader.disk_bytes()),
            key_index_skipped_batches: self
                .keys
                .borrow()
                .as_ref()
                .map(|_| self.keys_reader.skipped_batches()),
            read_buffer_pool_bytes: self.read_buffers.borrow().bytes() as u64,
            read_buffer_allocated_bytes: self.read_buffers.borrow().allocated_bytes(),
            idempotence_windows: self.sequences.borrow().len() as u64,
            idempotence_windows_evicted: self.sequences.borrow().evicted(),
            schedule_held: self.schedule_held(),
            schedule_delivered: self.schedule.borrow().delivered_total,
            schedule_rolled: self.schedule.borrow().rolled_total,
            task_queue_busy: self.task_queue_busy().to_vec(),
        }
    }

    /// The next offset of each of `queues` that exists and that this shard owns.
    pub fn queue_ends(&self, queues: &[(String, u32)]) -> Vec<((String, u32), u64)> {
        let topics = self.topics.borrow();
        queues
            .iter()
            .filter(|(t, q)| owner_shard(t, *q, self.shard_count) == self.id)
            .filter_map(|(t, q)| {
                let entry = topics.get(t).filter(|e| *q < e.queue_count)?;
                let key = QueueKey::new(TopicId::new(entry.id), QueueId::new(*q));
                Some(((t.clone(), *q), self.log.offsets(key).next))
            })
            .collect()
    }
}

/// The queue ids of `topic` (with `queue_count` queues) that `shard` owns, ascending: owners
/// go round the shards in queue order (`routing::owner_shard`), so they are every
/// `shard_count`-th id from the first one it owns.
fn owned_queue_ids(
    topic: &str,
    queue_count: u32,
    shard: ShardId,
    shard_count: usize,
) -> impl Iterator<Item = u32> {
    let first = (0..queue_count.min(shard_count as u32))
        .find(|&q| owner_shard(topic, q, shard_count) == shard);
    first.into_iter().flat_map(move |q0| (q0..queue_count).step_by(shard_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_queue_ids_are_exactly_the_queues_the_shard_owns() {
        for shards in 1..=5 {
            for topic in ["t", "orders", "%RETRY%g"] {
                for queues in [0, 1, 2, 3, 7, 16] {
                    for shard in ShardId::all(shards) {
                        let want: Vec<u32> = (0..queues)
                            .filter(|&q| owner_shard(topic, q, shards) == shard)
                            .collect();
                        let got: Vec<u32> = owned_queue_ids(topic, queues, shard, shards).collect();
                        assert_eq!(got, want, "{topic} {queues} queues, shard {shard} of {shards}");
                    }
                }
            }
        }
    }
}
