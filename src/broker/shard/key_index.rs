//! The shard's key index task and QUERY_KEYS handler (`crate::storage::key_index`).
//!
//! The index follows the shard's log off the acknowledgement path, in two parts of one task in
//! a task queue of its own (the control queue's shares), so they yield to produce and fetch
//! and their CPU time is counted apart (`ringmq_task_queue_busy_seconds_total`):
//! - the **reader**, every `interval_ms` or as soon as the written log ran `max_step_bytes`
//!   past it, reads the *written* batches past its position (at most `max_step_bytes` per
//!   step) while the chunk cache still holds them, and stages each message's keys
//!   (`staged::Staged`, bounded by `entries_per_file` keys plus one step);
//! - the **writer** adds the staged batches to the index once the log's *durable* end has
//!   passed them (the index never names a message a crash can take back), and every
//!   `checkpoint_interval_ms` makes its progress durable. While it waits for a checkpoint's or
//!   a seal's I/O, the reader goes on reading from memory.
//!
//! Both used to be one loop that read only durable batches: an fdatasync of 100-400 ms under a
//! 1.7 GB/s write load, or the index's own checkpoint, let the log run past what the cache
//! holds, and from then on the index read everything back from a disk busy with writes and
//! fell tens of GB behind (BENCHMARKS.md, 2026-12-04).
//!
//! At start the shard re-indexes the log from the index's checkpoint to the durable end before
//! it serves, so a restart (even after kill -9) loses no key of an acknowledged message. A
//! stop indexes what the reader staged and the durable log past it for at most
//! `shutdown_timeout_ms` before its last checkpoint; the rest is indexed at the next start.
//!
//! Indexed: user topics only (system queues are internal; a scheduled or transactional
//! message is indexed when it reaches its real queue). Keys: each space-separated word of a
//! record's key (RocketMQ KEYS), the original id a retried or dead-lettered copy carries
//! (`ORIGIN_MESSAGE_ID`) and a client-set unique id (`UNIQ_KEY`), at most
//! [`MAX_KEYS_PER_MESSAGE`] per message.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use futures::FutureExt;

use super::Shard;
use crate::broker::error::BrokerError;
use crate::broker::shard_log::ShardLog;
use crate::broker::shutdown::Stop;
use crate::broker::topics::FIRST_SYSTEM_TOPIC_ID;
use crate::protocol::key_query::{KeyHit, KeyHits, KeyQuery, MAX_KEY_HITS};
use crate::protocol::{ErrorCode, Request, Response};
use crate::runtime;
use crate::schedule::retry::PROPERTY_ORIGIN_MESSAGE_ID;
use crate::storage::commit_log::FollowedBatch;
use crate::storage::dma_dir::DmaDir;
use crate::storage::key_index::staged::Staged;
use crate::storage::key_index::{key_hash, split_keys, Entry, KeyIndex, Walk, PROPERTY_UNIQ_KEY};
use crate::storage::LogPosition;

/// Keys one message is indexed under at most (a long key of many words indexes its first).
pub const MAX_KEYS_PER_MESSAGE: usize = 32;

/// Batches indexed between preemption points.
const YIELD_EVERY_BATCHES: usize = 64;

/// The shard's key index, once started.
pub type ShardKeyIndex = Rc<KeyIndex<DmaDir>>;

/// What the key index's reader and writer share while the task runs.
struct Pipeline {
    index: ShardKeyIndex,
    /// The keys the reader took and the writer has not indexed yet.
    staged: RefCell<Staged>,
    /// Reader to writer: keys were taken.
    taken: runtime::Signal,
    /// Writer to reader: the staged keys have room again.
    room: runtime::Signal,
}

/// What the produce path shares with the key index's reader: the written end that wakes it
/// before its interval ends (once the log's written end ran `max_step_bytes` past it, so at
/// max rate it reads each step while the chunk cache still holds it: at 1.7 GB/s an interval
/// of 200 ms is 340 MB, more than the cache's 256 MiB), and the bytes it had to read back from
/// disk. The written end, not the appended one: the reader can take only written bytes, and a
/// wake-up for bytes still in flight would find nothing to read.
///
/// Also the log positions of batches appended since the start whose records have neither keys
/// nor properties (found by the log's validation of a produced batch's records,
/// [`crate::format::BatchView::validate_records_bare`]), oldest first: the reader skips them without reading their records
/// back. Reading every record back to find none was about 8% of the shard's core in `batched`
/// and `many-queues`, whose messages have no keys (BENCHMARKS.md, round 28). Bounded by
/// [`BARE_HINTS`]; a batch without a hint is read as before. Positions are never reused while
/// the broker runs (a replica truncates its log only at start), so a hint cannot name another
/// batch.
pub struct KeyReader {
    wake_at: Cell<u64>,
    woken: runtime::Signal,
    disk_bytes: Cell<u64>,
    bare: RefCell<VecDeque<u64>>,
    skipped: Cell<u64>,
}

/// Positions of keyless batches kept for the reader, at most (8 bytes each).
pub const BARE_HINTS: usize = 1 << 16;

impl Default for KeyReader {
    fn default() -> Self {
        KeyReader {
            wake_at: Cell::new(u64::MAX),
            woken: runtime::Signal::default(),
            disk_bytes: Cell::new(0),
            bare: RefCell::new(VecDeque::new()),
            skipped: Cell::new(0),
        }
    }
}

impl KeyReader {
    /// The batch just copied into the log at `position` has no keys or properties (called in
    /// the log's order). Dropped when [`BARE_HINTS`] are waiting: that batch is read back.
    pub fn appended_bare(&self, position: u64) {
        let mut bare = self.bare.borrow_mut();
        if bare.len() < BARE_HINTS {
            bare.push_back(position);
        }
    }

    /// Whether the batch at `position`, the next one the reader takes, was appended bare; drops
    /// the hints of batches before it (the reader passed them).
    fn take_bare(&self, position: u64) -> bool {
        let mut bare = self.bare.borrow_mut();
        while bare.front().is_some_and(|&p| p < position) {
            bare.pop_front();
        }
        let hit = bare.front() == Some(&position);
        if hit {
            bare.pop_front();
            self.skipped.set(self.skipped.get() + 1);
        }
        hit
    }

    /// Batches the reader skipped on a hint: a counter for the metrics endpoint.
    pub fn skipped_batches(&self) -> u64 {
        self.skipped.get()
    }

    /// The log is written up to `end` (checked after each append): wakes the reader if that
    /// passes its mark.
    pub fn written(&self, end: u64) {
        if end >= self.wake_at.get() {
            self.wake_at.set(u64::MAX);
            self.woken.notify();
        }
    }

    /// Log bytes the key index read back from disk (its reader fell behind the chunk cache, or
    /// a start re-indexed): a counter for the metrics endpoint.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.get()
    }

    fn note_disk_bytes(&self, n: u64) {
        self.disk_bytes.set(self.disk_bytes.get() + n);
    }

    fn arm(&self, at: u64) {
        self.wake_at.set(at);
    }

    fn disarm(&self) {
        self.wake_at.set(u64::MAX);
    }

    fn woken(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.woken.wait()
    }
}

/// The key index entries of one stored batch, parsed and verified by the log's follower
/// (pure: a batch in, entries out). Batches of system topics give none, and a record that does
/// not parse ends its batch's entries.
pub fn batch_entries(batch: &FollowedBatch<'_>, out: &mut Vec<Entry>) {
    let stamp = batch.header().stamp;
    if stamp.topic_id >= FIRST_SYSTEM_TOPIC_ID {
        return;
    }
    // A record that does not parse ends the entries (those before it are kept).
    let _ = batch.for_each_record(|record| {
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
    });
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

    /// Indexes one step of durable log past the index's position, reading it as it goes (the
    /// start's and the stop's catch-up). Returns whether it moved.
    async fn index_keys_step(&self, index: &ShardKeyIndex) -> Result<bool, String> {
        let staged = RefCell::new(Staged::new(index.indexed_to(), usize::MAX));
        let moved = self.read_keys_step(&staged, self.log.durable_end()).await?;
        // All of it is durable: the writer's step indexes it all.
        self.add_durable(index, &staged, &runtime::Signal::default()).await?;
        Ok(moved)
    }

    /// Follows the log until `stop`, checkpointing periodically and once more at the end. At
    /// stop it indexes for at most `shutdown_timeout_ms` more; the rest is indexed at the next
    /// start.
    pub async fn key_index_loop(self: Rc<Self>, stop: Stop) {
        let budget = Duration::from_millis(self.config.broker.shutdown_timeout_ms);
        self.key_index_loop_with(stop, budget).await
    }

    /// [`Self::key_index_loop`] with the stop's indexing budget given: the reader and the
    /// writer (see the module documentation) until `stop`, then what the reader took and is
    /// durable is indexed, then the durable log past it for at most `stop_budget`, then the
    /// last checkpoint.
    pub(super) async fn key_index_loop_with(self: Rc<Self>, stop: Stop, stop_budget: Duration) {
        let Some(index) = self.keys.borrow().clone() else { return };
        let max_entries = self.config.key_index.entries_per_file as usize;
        let p = Pipeline {
            staged: RefCell::new(Staged::new(index.indexed_to(), max_entries)),
            index: index.clone(),
            taken: runtime::Signal::default(),
            room: runtime::Signal::default(),
        };
        futures::future::join(self.key_reader(&p, stop.clone()), self.key_writer(&p, stop)).await;
        self.keys_reader.disarm();
        if index.failure().is_some() {
            return;
        }
        if let Err(e) = self.add_durable(&p.index, &p.staged, &p.room).await {
            tracing::error!(shard = self.id.get(), "key index: {e}");
            return;
        }
        drop(p);
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

    /// The reader: every `interval_ms`, or as soon as the written log ran `max_step_bytes` past
    /// it, takes the keys of the written log past where it is in steps of at most
    /// `max_step_bytes` (yielding between them), while the staged keys leave room.
    async fn key_reader(&self, p: &Pipeline, stop: Stop) {
        let Pipeline { index, staged, taken, room } = p;
        let c = &self.config.key_index;
        let interval = Duration::from_millis(c.interval_ms);
        let mut behind = false;
        loop {
            if !staged.borrow().has_room() {
                // The writer makes room as the log's durable end passes the staged keys.
                if let Either::Right(_) = select(Box::pin(room.wait()), stop.clone()).await {
                    return;
                }
                continue;
            }
            if behind {
                if stop.clone().now_or_never().is_some() {
                    return;
                }
                runtime::yield_once().await;
            } else {
                self.keys_reader
                    .arm(staged.borrow().read_to().get().saturating_add(c.max_step_bytes));
                let tick = Box::pin(self.clock.sleep_until(self.clock.now() + interval));
                let woken = Box::pin(self.keys_reader.woken());
                if let Either::Right(_) = select(select(tick, woken), stop.clone()).await {
                    return;
                }
                self.keys_reader.disarm();
            }
            behind = false;
            if index.failure().is_some() {
                // Stopped after an I/O failure (logged): queries answer the error.
                continue;
            }
            match self.read_keys_step(staged, self.log.written_end()).await {
                Ok(moved) => {
                    if moved {
                        taken.notify();
                    }
                    behind = moved && staged.borrow().read_to().get() < self.log.written_end();
                }
                Err(e) => tracing::error!(shard = self.id.get(), "key index: {e}"),
            }
        }
    }

    /// Takes the keys of one step of log below `up_to` (the written end for the reader, the
    /// durable end for the start's and stop's catch-up) past the staging's position. Returns
    /// whether it moved.
    async fn read_keys_step(&self, staged: &RefCell<Staged>, up_to: u64) -> Result<bool, String> {
        let from = staged.borrow().read_to();
        let followed = self
            .log
            .follow(from.get(), self.config.key_index.max_step_bytes, up_to, |position, view| {
                let mut entries = Vec::new();
                if !self.keys_reader.take_bare(position) {
                    batch_entries(view, &mut entries);
                }
                let end = position + view.length() as u64;
                let (position, end) = (LogPosition::new(position), LogPosition::new(end));
                staged.borrow_mut().push(position, end, entries);
            })
            .await
            .map_err(|e| format!("reading the log for the key index: {e}"))?;
        self.keys_reader.note_disk_bytes(followed.disk_bytes);
        staged.borrow_mut().skip_to(followed.next);
        Ok(followed.next > from)
    }

    /// The writer: when the reader took keys, and every `interval_ms`, indexes the staged
    /// batches the durable end has passed; retains when it caught up and checkpoints every
    /// `checkpoint_interval_ms` (caught up or not), while the reader goes on.
    async fn key_writer(&self, p: &Pipeline, stop: Stop) {
        let Pipeline { index, taken, .. } = p;
        let c = &self.config.key_index;
        let interval = Duration::from_millis(c.interval_ms);
        let checkpoint_every = Duration::from_millis(c.checkpoint_interval_ms);
        let mut last_checkpoint = self.clock.now();
        loop {
            let tick = Box::pin(self.clock.sleep_until(self.clock.now() + interval));
            if let Either::Right(_) =
                select(select(tick, Box::pin(taken.wait())), stop.clone()).await
            {
                return;
            }
            if index.failure().is_some() {
                continue;
            }
            if let Err(e) = self.add_durable(index, &p.staged, &p.room).await {
                tracing::error!(shard = self.id.get(), "key index: {e}");
                continue;
            }
            let caught_up = index.indexed_to().get() >= self.log.durable_end();
            let now = self.clock.now();
            let due = now.duration_since(last_checkpoint) >= checkpoint_every;
            if !caught_up && !due {
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
    }

    /// Adds the staged batches below the log's durable end to `index`, in log order, telling
    /// `room` as they leave.
    async fn add_durable(
        &self,
        index: &ShardKeyIndex,
        staged: &RefCell<Staged>,
        room: &runtime::Signal,
    ) -> Result<(), String> {
        let durable = LogPosition::new(self.log.durable_end());
        let mut added = 0usize;
        loop {
            let Some(span) = staged.borrow_mut().pop_durable(durable) else { break };
            index.add_batch(span.position, span.end, &span.entries).await?;
            room.notify();
            added += 1;
            if added % YIELD_EVERY_BATCHES == 0 {
                // A preemption point: produce and fetch run between runs of batches.
                runtime::yield_once().await;
            }
        }
        let s = staged.borrow();
        if s.is_empty() {
            // Every batch before the reader's position is indexed; between the last one and
            // it the log holds none (a segment's end, a range retention removed).
            index.skip_to(s.read_to().min(durable));
        }
        Ok(())
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
    use crate::format::batch::{stamp, BatchView, Stamp};
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
        batch_entries(&FollowedBatch::Whole(view(&bytes)), &mut out);
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
    fn a_batch_in_pieces_gives_the_entries_it_gives_whole() {
        let origin: &[(&[u8], &[u8])] = &[(b"ORIGIN_MESSAGE_ID", b"ABC")];
        let bytes = stamped(&[(b"k1 k2", &[]), (b"", origin), (b"k3 k4 k5", &[]), (b"k6", &[])], 9);
        let mut whole = Vec::new();
        batch_entries(&FollowedBatch::Whole(view(&bytes)), &mut whole);
        assert_eq!(whole.len(), 7);
        // Cut everywhere: inside the header, inside records, at their edges.
        for a in 1..bytes.len() {
            for b in [a, (a + 13).min(bytes.len()), (a + 60).min(bytes.len())] {
                let pieces = [&bytes[..a], &bytes[a..b], &bytes[b..]];
                let header = view(&bytes).header;
                let mut got = Vec::new();
                batch_entries(&FollowedBatch::Pieces { header, pieces: &pieces }, &mut got);
                assert_eq!(got, whole, "cut at {a} and {b}");
            }
        }
    }

    #[test]
    fn system_topics_give_nothing() {
        let bytes = stamped(&[(b"k", &[])], FIRST_SYSTEM_TOPIC_ID);
        let mut out = Vec::new();
        batch_entries(&FollowedBatch::Whole(view(&bytes)), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_message_has_a_bounded_number_of_keys() {
        let key = (0..100).map(|i| format!("k{i}")).collect::<Vec<_>>().join(" ");
        let bytes = stamped(&[(key.as_bytes(), &[])], 1);
        let mut out = Vec::new();
        batch_entries(&FollowedBatch::Whole(view(&bytes)), &mut out);
        assert_eq!(out.len(), MAX_KEYS_PER_MESSAGE);
    }
}
