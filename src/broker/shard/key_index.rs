//! The shard's key index task and QUERY_KEYS handler (`crate::storage::key_index`).
//!
//! The index follows the shard's log off the acknowledgement path: every `interval_ms` the
//! task reads the durable batches past the index's position (at most `max_step_bytes` per
//! step, in the control task queue, so it yields to produce and fetch), adds an entry per key
//! of each message, and about every `checkpoint_interval_ms` makes its progress durable. At
//! start the shard re-indexes the log from the index's checkpoint to the durable end before it
//! serves, so a restart (even after kill -9) loses no key of an acknowledged message. An index
//! that falls behind (a log written faster than one core indexes it while it also serves) still
//! checkpoints on time, and a stop indexes for at most `shutdown_timeout_ms` before its last
//! checkpoint: a broker stopped 30 GB behind used to index all of it first (BENCHMARKS.md).
//!
//! Indexed: user topics only (system queues are internal; a scheduled or transactional
//! message is indexed when it reaches its real queue). Keys: each space-separated word of a
//! record's key (RocketMQ KEYS), the original id a retried or dead-lettered copy carries
//! (`ORIGIN_MESSAGE_ID`) and a client-set unique id (`UNIQ_KEY`), at most
//! [`MAX_KEYS_PER_MESSAGE`] per message.

use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use futures::FutureExt;

use super::Shard;
use crate::broker::error::BrokerError;
use crate::broker::shard_log::ShardLog;
use crate::broker::shutdown::Stop;
use crate::broker::topics::FIRST_SYSTEM_TOPIC_ID;
use crate::format::batch::BatchView;
use crate::protocol::key_query::{KeyHit, KeyHits, KeyQuery, MAX_KEY_HITS};
use crate::protocol::{ErrorCode, Request, Response};
use crate::runtime;
use crate::schedule::retry::PROPERTY_ORIGIN_MESSAGE_ID;
use crate::storage::dma_dir::DmaDir;
use crate::storage::key_index::{key_hash, split_keys, Entry, KeyIndex, Walk, PROPERTY_UNIQ_KEY};
use crate::storage::LogPosition;

/// Keys one message is indexed under at most (a long key of many words indexes its first).
pub const MAX_KEYS_PER_MESSAGE: usize = 32;

/// Batches indexed between preemption points.
const YIELD_EVERY_BATCHES: usize = 64;

/// The shard's key index, once started.
pub type ShardKeyIndex = Rc<KeyIndex<DmaDir>>;

/// The key index entries of one stored batch, parsed and verified by the log's follower
/// (pure: a batch in, entries out). Batches of system topics give none, and a record that does
/// not parse ends its batch's entries.
pub fn batch_entries(view: &BatchView<'_>, out: &mut Vec<Entry>) {
    let stamp = view.header.stamp;
    if stamp.topic_id >= FIRST_SYSTEM_TOPIC_ID {
        return;
    }
    for record in view.records() {
        let Ok(record) = record else { return };
        let offset = stamp.base_offset + u64::from(record.index);
        let origin = record.property(PROPERTY_ORIGIN_MESSAGE_ID.as_bytes());
        let unique = record.property(PROPERTY_UNIQ_KEY.as_bytes());
        let ids = origin.into_iter().chain(unique).filter(|id| !id.is_empty());
        let keys = split_keys(record.key).chain(ids);
        for key in keys.take(MAX_KEYS_PER_MESSAGE) {
            out.push(Entry {
                key_hash: key_hash(stamp.topic_id, key),
                topic_id: stamp.topic_id,
                queue_id: stamp.queue_id,
                offset,
                store_ms: stamp.store_timestamp_ms,
            });
        }
    }
}

impl<L: ShardLog> Shard<L> {
    /// Opens the key index in `<shard dir>/keys` and indexes the log from its checkpoint to the
    /// durable end (what a crash left unindexed), then checkpoints. Before serving.
    pub async fn start_key_index(&self) -> Result<(), String> {
        if !self.config.key_index.enabled {
            return Ok(());
        }
        let dir = self.config.storage_for_shard(self.id.get()).dir.join("keys");
        let dir = DmaDir::open(&dir, self.config.storage.io_mode).await?;
        let log_end = LogPosition::new(self.log.durable_end());
        let index = Rc::new(KeyIndex::open(dir, self.config.key_index.settings(), log_end).await?);
        let (from, end) = (index.indexed_to(), self.log.durable_end());
        let started = std::time::Instant::now();
        while index.indexed_to().get() < self.log.durable_end() {
            if !self.index_keys_step(&index).await? {
                break;
            }
        }
        index.checkpoint().await?;
        if end > from.get() {
            tracing::info!(
                shard = self.id.get(),
                "key index: re-indexed log positions {from}..{} in {:?}",
                index.indexed_to(),
                started.elapsed()
            );
        }
        *self.keys.borrow_mut() = Some(index);
        Ok(())
    }

    /// Indexes one step of durable log past the index's position. Returns whether it moved.
    async fn index_keys_step(&self, index: &ShardKeyIndex) -> Result<bool, String> {
        let from = index.indexed_to();
        let mut batches: Vec<(u64, u64, Vec<Entry>)> = Vec::new();
        let followed = self
            .log
            .follow(from.get(), self.config.key_index.max_step_bytes, |position, view| {
                let mut entries = Vec::new();
                batch_entries(view, &mut entries);
                batches.push((position, position + view.as_bytes().len() as u64, entries));
            })
            .await
            .map_err(|e| format!("reading the log for the key index: {e}"))?;
        for (i, (position, end, entries)) in batches.into_iter().enumerate() {
            index.add_batch(LogPosition::new(position), LogPosition::new(end), &entries).await?;
            if i % YIELD_EVERY_BATCHES == YIELD_EVERY_BATCHES - 1 {
                // A preemption point: produce and fetch run between runs of batches.
                runtime::yield_once().await;
            }
        }
        index.skip_to(followed.next);
        Ok(followed.next > from)
    }

    /// Follows the log until `stop`, checkpointing periodically and once more at the end. At
    /// stop it indexes for at most `shutdown_timeout_ms` more; the rest is indexed at the next
    /// start.
    pub async fn key_index_loop(self: Rc<Self>, stop: Stop) {
        let budget = Duration::from_millis(self.config.broker.shutdown_timeout_ms);
        self.key_index_loop_with(stop, budget).await
    }

    /// [`Self::key_index_loop`] with the stop's indexing budget given. Every `interval_ms` it
    /// catches up in steps of at most `max_step_bytes`, yielding between them and watching
    /// `stop`; retention and checkpoints run when it caught up and every
    /// `checkpoint_interval_ms` while it did not, so an index that a log written faster than it
    /// is indexed keeps behind still checkpoints (a restart re-indexes only since then).
    pub(super) async fn key_index_loop_with(self: Rc<Self>, stop: Stop, stop_budget: Duration) {
        let Some(index) = self.keys.borrow().clone() else { return };
        let c = &self.config.key_index;
        let interval = Duration::from_millis(c.interval_ms);
        let checkpoint_every = Duration::from_millis(c.checkpoint_interval_ms);
        let mut last_checkpoint = self.clock.now();
        let mut behind = false;
        loop {
            if behind {
                if stop.clone().now_or_never().is_some() {
                    break;
                }
                runtime::yield_once().await;
            } else {
                let tick = Box::pin(self.clock.sleep_until(self.clock.now() + interval));
                if let Either::Right(_) = select(tick, stop.clone()).await {
                    break;
                }
            }
            behind = false;
            if index.failure().is_some() {
                // Stopped after an I/O failure (logged): queries answer the error.
                continue;
            }
            match self.index_keys_step(&index).await {
                Ok(moved) => behind = moved && index.indexed_to().get() < self.log.durable_end(),
                Err(e) => tracing::error!(shard = self.id.get(), "key index: {e}"),
            }
            let now = self.clock.now();
            let due = now.duration_since(last_checkpoint) >= checkpoint_every;
            if behind && !due {
                continue;
            }
            if let Err(e) = index.retain(LogPosition::new(self.log.oldest_position())).await {
                tracing::warn!(shard = self.id.get(), "key index retention: {e}");
            }
            if due {
                last_checkpoint = now;
                if index.checkpointed_to() < index.indexed_to() {
                    if let Err(e) = index.checkpoint().await {
                        tracing::error!(shard = self.id.get(), "key index checkpoint: {e}");
                    }
                }
            }
        }
        if index.failure().is_some() {
            return;
        }
        let deadline = self.clock.now() + stop_budget;
        while index.indexed_to().get() < self.log.durable_end() && self.clock.now() < deadline {
            match self.index_keys_step(&index).await {
                Ok(true) => runtime::yield_once().await,
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(shard = self.id.get(), "key index: {e}");
                    break;
                }
            }
        }
        let left = self.log.durable_end().saturating_sub(index.indexed_to().get());
        if left > 0 {
            tracing::info!(
                shard = self.id.get(),
                "key index: stopping {left} log bytes behind after {stop_budget:?}; the next \
                 start indexes them before it serves"
            );
        }
        if let Err(e) = index.checkpoint().await {
            tracing::error!(shard = self.id.get(), "key index final checkpoint: {e}");
        }
    }

    /// QUERY_KEYS decoded on this shard: served here or forwarded to the shard it names.
    pub(super) async fn key_query_request(&self, q: KeyQuery) -> Result<Response, BrokerError> {
        let target = self.key_query_target(&q)?;
        if target == self.id {
            return self.serve_key_query(q).await;
        }
        self.forward(target, Request::QueryKeys(q), "the queried shard").await
    }

    /// QUERY_KEYS forwarded by another shard.
    pub(super) async fn key_query_forwarded(&self, q: KeyQuery) -> Result<Response, BrokerError> {
        let target = self.key_query_target(&q)?;
        if target != self.id {
            return Err(BrokerError::new(
                ErrorCode::NOT_OWNER,
                format!("shard {} was asked for shard {target}'s keys", self.id),
            ));
        }
        self.serve_key_query(q).await
    }

    fn key_query_target(
        &self,
        q: &KeyQuery,
    ) -> Result<crate::broker::routing::ShardId, BrokerError> {
        if usize::from(q.shard) >= self.shard_count {
            return Err(BrokerError::new(
                ErrorCode::INVALID_ARGUMENT,
                format!(
                    "shard {} does not exist: this broker has {} shards",
                    q.shard, self.shard_count
                ),
            ));
        }
        Ok(crate::broker::routing::ShardId::new(usize::from(q.shard)))
    }

    async fn serve_key_query(&self, q: KeyQuery) -> Result<Response, BrokerError> {
        crate::broker::topics::validate_topic_name(&q.topic)?;
        let topic_id = self.topics.borrow().get(&q.topic).map(|e| e.id).ok_or_else(|| {
            BrokerError::new(
                ErrorCode::UNKNOWN_TOPIC,
                format!("topic {:?} does not exist", q.topic),
            )
        })?;
        if q.key.is_empty() || q.key.contains(&b' ') {
            return Err(BrokerError::new(
                ErrorCode::INVALID_ARGUMENT,
                "a key query names one key: not empty, without spaces (a message's key is \
                 indexed under each of its space-separated words)",
            ));
        }
        if q.from_ms > q.to_ms {
            return Err(BrokerError::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("the time range is empty: from {} is after to {}", q.from_ms, q.to_ms),
            ));
        }
        let index = self.keys.borrow().clone().ok_or_else(|| {
            BrokerError::new(
                ErrorCode::INVALID_ARGUMENT,
                "this broker runs without a key index (key_index.enabled = false)",
            )
        })?;
        let walk =
            Walk { hash: key_hash(topic_id, &q.key), topic_id, from_ms: q.from_ms, to_ms: q.to_ms };
        let max = q.max.clamp(1, MAX_KEY_HITS) as usize;
        let found = index
            .query(&walk, max)
            .await
            .map_err(|e| BrokerError::new(ErrorCode::INTERNAL, format!("key index: {e}")))?;
        Ok(Response::QueryKeys(KeyHits {
            hits: found
                .entries
                .iter()
                .map(|e| KeyHit {
                    queue_id: e.queue_id,
                    offset: e.offset,
                    store_timestamp_ms: e.store_ms,
                })
                .collect(),
            truncated: found.truncated,
            indexed_to: index.indexed_to().get(),
            log_end: self.log.durable_end(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::{stamp, Stamp};
    use crate::format::{BatchBuilder, Record};

    type Properties<'a> = &'a [(&'a [u8], &'a [u8])];

    fn view(bytes: &[u8]) -> BatchView<'_> {
        BatchView::parse(bytes, 1 << 20).unwrap()
    }

    fn stamped(records: &[(&[u8], Properties<'_>)], topic_id: u32) -> Vec<u8> {
        let mut b = BatchBuilder::new(1 << 20);
        for (key, props) in records {
            b.push(&Record { key, tag: b"", properties: props, body: b"x", timestamp_ms: 5 })
                .unwrap();
        }
        let mut bytes = b.finish(-1, -1);
        let s = Stamp { topic_id, queue_id: 2, base_offset: 100, store_timestamp_ms: 77, epoch: 0 };
        stamp(&mut bytes, &s);
        bytes
    }

    #[test]
    fn each_key_word_and_the_origin_id_are_indexed() {
        let origin: &[(&[u8], &[u8])] = &[(b"ORIGIN_MESSAGE_ID", b"ABC")];
        let unique: &[(&[u8], &[u8])] = &[(b"UNIQ_KEY", b"U1")];
        let bytes = stamped(&[(b"k1 k2", &[]), (b"", origin), (b"", &[]), (b"k3", unique)], 9);
        let mut out = Vec::new();
        batch_entries(&view(&bytes), &mut out);
        let got: Vec<(u32, u64)> = out.iter().map(|e| (e.key_hash, e.offset)).collect();
        assert_eq!(
            got,
            vec![
                (key_hash(9, b"k1"), 100),
                (key_hash(9, b"k2"), 100),
                (key_hash(9, b"ABC"), 101),
                (key_hash(9, b"k3"), 103),
                (key_hash(9, b"U1"), 103),
            ]
        );
        assert!(out.iter().all(|e| e.queue_id == 2 && e.store_ms == 77 && e.topic_id == 9));
    }

    #[test]
    fn system_topics_give_nothing() {
        let bytes = stamped(&[(b"k", &[])], FIRST_SYSTEM_TOPIC_ID);
        let mut out = Vec::new();
        batch_entries(&view(&bytes), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_message_has_a_bounded_number_of_keys() {
        let key = (0..100).map(|i| format!("k{i}")).collect::<Vec<_>>().join(" ");
        let bytes = stamped(&[(key.as_bytes(), &[])], 1);
        let mut out = Vec::new();
        batch_entries(&view(&bytes), &mut out);
        assert_eq!(out.len(), MAX_KEYS_PER_MESSAGE);
    }
}
