//! One shard: its log, its copy of the topic table, its long-poll waiters, its counters, and
//! the request handling that runs on its executor thread.
//!
//! Every request a connection on this shard decodes goes to [`Shard::handle`]. Queue requests
//! (produce, fetch, offsets) for a queue this shard owns run here; others are forwarded over
//! the data mesh to the owner, which runs [`Shard::handle_forwarded`] and sends the reply back
//! on a oneshot channel. Topic changes run on shard 0 only, serialized, persisted, then
//! broadcast over the control mesh; shard 0 acknowledges a change to the client only after
//! every shard applied it, so a client may use a new topic on any shard right away.
//!
//! Control-plane work (topic changes, control messages, stats) runs in the
//! shard's low-share control task queue; produce and fetch run in the executor's default
//! queue, so admin work and timers cannot stall the data plane (DESIGN.md section 1).
//!
//! Nothing here is shared with other threads: the shard lives in an `Rc` on its executor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{select, Either};

use super::config::Config;
use super::error::BrokerError;
use super::idempotence::{SequenceWindows, Stored, Verdict, WindowKey};
use super::long_poll::LongPoll;
use super::mesh::MeshSender;
use super::metadata_store::MetadataStore;
use super::producer_ids::ProducerIdAllocator;
use super::routing::owner_shard;
use super::shard_log::ShardLog;
use super::topics::{validate_topic_name, TopicEntry, TopicTable};
use crate::format::batch::{peek_length, read_header, BatchHeader};
use crate::protocol::{
    ErrorCode, ErrorDetail, Request, Response, SendStatus, ShardStats, SharedBytes, TopicInfo,
    TopicRoute,
};
use crate::runtime::{self, SharedClock};
use crate::storage::{QueueId, QueueKey, ReadBuf, StorageError, TopicId};

/// A tag-filtered fetch reads at most this many times its `max_bytes` (at least 64 KiB)
/// looking for a matching batch before it answers empty with how far it got.
pub const TAG_SCAN_FACTOR: usize = 8;

/// A request's outcome as it crosses the mesh (`Send`).
pub type Reply = Result<Response, BrokerError>;

/// A request's outcome on the shard whose connection decoded it.
pub type LocalReply = Result<Answer, BrokerError>;

/// A successful outcome. Fetches served by this shard keep the stored batches as the log
/// returned them, so the connection writes them to the socket without copying.
#[derive(Debug)]
pub enum Answer {
    Response(Response),
    Batches { min_offset: u64, next_offset: u64, scan_end_offset: u64, batches: Vec<ReadBuf> },
}

impl Answer {
    /// A `Send` response (copies fetched batches once), for replies crossing shards.
    pub fn into_response(self) -> Response {
        match self {
            Answer::Response(r) => r,
            Answer::Batches { min_offset, next_offset, scan_end_offset, batches } => {
                let total = batches.iter().map(|b| b.len()).sum();
                let mut bytes = Vec::with_capacity(total);
                for b in &batches {
                    bytes.extend_from_slice(b);
                }
                Response::Fetch { min_offset, next_offset, scan_end_offset, batches: bytes }
            }
        }
    }
}

/// A queue request forwarded to its owner shard.
pub struct Forward {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

/// Control-plane messages between shards.
pub enum Control {
    /// A topic change, sent to shard 0.
    Admin { request: Request, reply: oneshot::Sender<Reply> },
    /// Shard 0's new topic table; the receiver applies it and acknowledges.
    Topics { table: TopicTable, ack: oneshot::Sender<()> },
    /// Asks for the receiver's counters.
    Stats { reply: oneshot::Sender<ShardStats> },
}

/// Retries parked until the append of their first copy ends, by window and sequence.
type SequenceWaiters = HashMap<(WindowKey, i32), Vec<oneshot::Sender<()>>>;

/// Ports the broker listens on (learned at startup; reported in metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub shared: u16,
    pub per_shard: Vec<u16>,
}

pub struct Shard<L: ShardLog> {
    pub id: usize,
    pub shard_count: usize,
    pub config: Arc<Config>,
    pub log: L,
    pub ports: Ports,
    topics: RefCell<TopicTable>,
    long_poll: RefCell<LongPoll>,
    /// Sync mode: queues with an acknowledged append (FLUSH_DISK_TIMEOUT) that is not readable
    /// yet, and the log position it becomes readable at. Fetches parked on such a queue also
    /// wait for the log to reach it, since no append will wake them when the flush completes.
    /// At most one entry per queue; entries already readable are dropped when seen.
    late_visible: RefCell<HashMap<QueueKey, u64>>,
    data_mesh: MeshSender<Forward>,
    control_mesh: MeshSender<Control>,
    /// Shard 0 only: the metadata file and the lock that serializes topic changes.
    metadata: Option<(MetadataStore, crate::runtime::Semaphore)>,
    stats: RefCell<ShardStats>,
    stopping: Cell<bool>,
    /// Low-share task queue for control-plane work (topic changes, stats, control
    /// messages), so it never stalls produce and fetch in the default queue.
    control_queue: runtime::TaskQueue,
    /// Idempotent produce (`idempotence` module): the sequence windows, this shard's producer
    /// ids, and retries waiting for a copy of themselves that is being appended.
    sequences: RefCell<SequenceWindows>,
    producer_ids: RefCell<ProducerIdAllocator>,
    sequence_waiters: RefCell<SequenceWaiters>,
    /// Origin of the windows' clock (monotonic ms).
    started: Instant,
    /// Every time this shard's logic reads or waits on (long-poll deadlines, connection
    /// timeouts, idempotence windows); simulated in tests.
    pub clock: SharedClock,
}

fn ok_or_stopped<T>(r: Result<T, oneshot::Canceled>, what: &str) -> Result<T, BrokerError> {
    r.map_err(|_| {
        BrokerError::new(ErrorCode::SHUTTING_DOWN, format!("{what} stopped before replying"))
    })
}

impl<L: ShardLog> Shard<L> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        shard_count: usize,
        config: Arc<Config>,
        log: L,
        ports: Ports,
        topics: TopicTable,
        data_mesh: MeshSender<Forward>,
        control_mesh: MeshSender<Control>,
        metadata: Option<MetadataStore>,
        clock: SharedClock,
    ) -> Self {
        let waiters = config.broker.max_long_poll_waiters_per_queue;
        Shard {
            id,
            shard_count,
            log,
            ports,
            topics: RefCell::new(topics),
            long_poll: RefCell::new(LongPoll::new(waiters)),
            late_visible: RefCell::new(HashMap::new()),
            data_mesh,
            control_mesh,
            metadata: metadata.map(|m| (m, crate::runtime::Semaphore::new(1))),
            stats: RefCell::new(ShardStats { shard: id as u32, ..Default::default() }),
            stopping: Cell::new(false),
            control_queue: runtime::TaskQueue::new(&format!("shard-{id}-control"), 100),
            sequences: RefCell::new(SequenceWindows::new(
                config.broker.idempotence_max_producer_queues,
                config.broker.idempotence_expiry_ms,
            )),
            // Boot 0 until `start_idempotence` sets this run's start count.
            producer_ids: RefCell::new(ProducerIdAllocator::new(0, id, shard_count)),
            sequence_waiters: RefCell::new(HashMap::new()),
            started: clock.now(),
            clock,
            config,
        }
    }

    /// Before serving: hands out producer ids of start `boot` and rebuilds the sequence
    /// windows from the batches the log stored in the last `idempotence_recovery_window_ms`,
    /// reading at most `idempotence_recovery_scan_bytes`. A queue whose recent batches do not
    /// fit in what is left of that budget gets no windows (its producers renumber); retries
    /// of its batches stored just before the restart may then be stored again.
    pub async fn start_idempotence(&self, boot: u64) -> Result<(), BrokerError> {
        *self.producer_ids.borrow_mut() = ProducerIdAllocator::new(boot, self.id, self.shard_count);
        let b = &self.config.broker;
        let since_ms = self.clock.unix_ms().saturating_sub(b.idempotence_recovery_window_ms as i64);
        let mut budget = b.idempotence_recovery_scan_bytes;
        let t = Instant::now();
        let (mut batches, mut skipped) = (0u64, 0usize);
        let now_ms = self.now_ms();
        for queue in self.log.queues() {
            let end = self.log.offsets(queue).next;
            let mut offset = self.log.offset_for_timestamp(queue, since_ms).await?;
            while offset < end {
                if budget == 0 {
                    self.sequences.borrow_mut().forget_queue(queue);
                    skipped += 1;
                    break;
                }
                let read = match self.log.read(queue, offset, 1 << 20).await {
                    Ok(read) => read,
                    // A batch damaged on disk: its sequence is unknown, so the queue's windows
                    // cannot be trusted; its producers renumber (as past the budget). The
                    // broker still starts and serves everything else.
                    Err(e @ StorageError::CorruptBatch { .. }) => {
                        tracing::warn!(
                            shard = self.id,
                            "idempotence windows of {queue} not rebuilt: {e}"
                        );
                        self.sequences.borrow_mut().forget_queue(queue);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let Some(last) = read.last() else { break };
                let next = read_header(last).map_err(|e| {
                    BrokerError::new(ErrorCode::INTERNAL, format!("rebuilding windows: {e}"))
                })?;
                for buf in &read {
                    budget = budget.saturating_sub(buf.len() as u64);
                    let Ok(h) = read_header(buf) else { continue };
                    if h.producer_id >= 0 && !h.is_control() && h.base_sequence >= 0 {
                        let at = Stored {
                            base_offset: h.stamp.base_offset,
                            store_timestamp_ms: h.stamp.store_timestamp_ms,
                        };
                        self.sequences.borrow_mut().recover(
                            h.producer_id,
                            queue,
                            h.base_sequence,
                            h.record_count,
                            at,
                            now_ms,
                        );
                        batches += 1;
                    }
                }
                offset = next.next_offset().max(offset + 1);
            }
        }
        if skipped > 0 {
            tracing::warn!(
                shard = self.id,
                "idempotence windows of {skipped} queues not rebuilt: their recent batches \
                 exceed broker.idempotence_recovery_scan_bytes"
            );
        }
        tracing::info!(
            shard = self.id,
            batches,
            windows = self.sequences.borrow().len(),
            elapsed_ms = t.elapsed().as_millis() as u64,
            "idempotence windows rebuilt from the log"
        );
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().saturating_duration_since(self.started).as_millis() as u64
    }

    /// The task queue for control-plane work on this shard.
    pub fn control_queue(&self) -> runtime::TaskQueue {
        self.control_queue
    }

    pub fn stats_mut(&self) -> std::cell::RefMut<'_, ShardStats> {
        self.stats.borrow_mut()
    }

    pub fn stats(&self) -> ShardStats {
        let mut s = *self.stats.borrow();
        s.long_poll_waiting = self.long_poll.borrow().waiting() as u64;
        s
    }

    /// Starts stopping: long-poll waiters return now, new ones are refused.
    pub fn begin_stop(&self) {
        self.stopping.set(true);
        self.long_poll.borrow_mut().close();
    }

    /// Closes the mesh senders (after this shard's connections finished).
    pub fn close_mesh(&self) {
        self.data_mesh.close();
        self.control_mesh.close();
    }

    /// Handles a request decoded on this shard.
    pub async fn handle(self: &Rc<Self>, request: Request) -> LocalReply {
        self.stats.borrow_mut().requests += 1;
        let reply = self.dispatch(request).await;
        if reply.is_err() {
            self.stats.borrow_mut().errors += 1;
        }
        reply
    }

    async fn dispatch(self: &Rc<Self>, request: Request) -> LocalReply {
        let response = match request {
            Request::Metadata { topics } => Ok(self.metadata_response(&topics)),
            Request::ListTopics => Ok(Response::ListTopics {
                topics: self
                    .topics
                    .borrow()
                    .iter()
                    .map(|(name, e)| TopicInfo {
                        name: name.to_owned(),
                        topic_id: e.id,
                        queue_count: e.queue_count,
                    })
                    .collect(),
            }),
            Request::CreateTopic { .. } | Request::DeleteTopic { .. } => {
                if self.id == 0 {
                    let me = self.clone();
                    self.control_queue
                        .spawn(async move { me.admin(request).await })
                        .await
                        .unwrap_or_else(|| {
                            Err(BrokerError::new(ErrorCode::INTERNAL, "topic change task was lost"))
                        })
                } else {
                    let (reply, rx) = oneshot::channel();
                    if self.control_mesh.send(0, Control::Admin { request, reply }).await.is_err() {
                        return Err(BrokerError::new(ErrorCode::SHUTTING_DOWN, "shard 0 stopped"));
                    }
                    ok_or_stopped(rx.await, "shard 0")?
                }
            }
            Request::Stats => Ok(Response::Stats { shards: self.gather_stats().await }),
            Request::InitProducer => match self.producer_ids.borrow_mut().allocate() {
                Some(producer_id) => Ok(Response::InitProducer { producer_id }),
                None => Err(BrokerError::new(
                    ErrorCode::INTERNAL,
                    format!(
                        "shard {} handed out all producer ids of this broker run; restart the \
                         broker",
                        self.id
                    ),
                )),
            },
            Request::Produce { .. } | Request::Fetch { .. } | Request::Offsets { .. } => {
                let (entry, queue_id) = self.resolve(&request)?;
                let owner = owner_shard(queue_topic(&request), queue_id, self.shard_count);
                if owner == self.id {
                    return self.queue_op(entry, queue_id, request).await;
                } else {
                    self.stats.borrow_mut().forwarded_out += 1;
                    let (reply, rx) = oneshot::channel();
                    if let Err(f) = self.data_mesh.send(owner, Forward { request, reply }).await {
                        drop(f);
                        return Err(BrokerError::new(
                            ErrorCode::SHUTTING_DOWN,
                            format!("shard {owner} stopped"),
                        ));
                    }
                    ok_or_stopped(rx.await, "the owner shard")?
                }
            }
        };
        response.map(Answer::Response)
    }

    /// Handles a queue request forwarded by another shard.
    pub async fn handle_forwarded(&self, request: Request) -> Reply {
        self.stats.borrow_mut().forwarded_in += 1;
        let (entry, queue_id) = self.resolve(&request)?;
        let owner = owner_shard(queue_topic(&request), queue_id, self.shard_count);
        if owner != self.id {
            return Err(BrokerError::new(
                ErrorCode::NOT_OWNER,
                format!("shard {} does not own queue {queue_id}; shard {owner} does", self.id),
            ));
        }
        Ok(self.queue_op(entry, queue_id, request).await?.into_response())
    }

    /// Applies a control message from another shard. Never waits on another shard (except
    /// Admin on shard 0, which is spawned), so control traffic cannot deadlock.
    pub fn apply_control(self: &Rc<Self>, msg: Control) {
        match msg {
            Control::Topics { table, ack } => {
                let mut mine = self.topics.borrow_mut();
                if table.epoch >= mine.epoch {
                    *mine = table;
                }
                let _ = ack.send(());
            }
            Control::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Control::Admin { request, reply } => {
                let me = self.clone();
                let _detached = self.control_queue.spawn(async move {
                    let r = if me.id == 0 {
                        me.admin(request).await
                    } else {
                        Err(BrokerError::new(ErrorCode::INTERNAL, "topic changes run on shard 0"))
                    };
                    let _ = reply.send(r);
                });
            }
        }
    }

    fn resolve(&self, request: &Request) -> Result<(TopicEntry, u32), BrokerError> {
        let (topic, queue_id) = match request {
            Request::Produce { topic, queue_id, .. }
            | Request::Fetch { topic, queue_id, .. }
            | Request::Offsets { topic, queue_id, .. } => (topic, *queue_id),
            _ => unreachable!("resolve is called for queue requests only"),
        };
        validate_topic_name(topic)?;
        let entry = self.topics.borrow().get(topic).ok_or_else(|| {
            BrokerError::new(ErrorCode::UNKNOWN_TOPIC, format!("topic {topic:?} does not exist"))
        })?;
        if queue_id >= entry.queue_count {
            return Err(BrokerError::new(
                ErrorCode::UNKNOWN_QUEUE,
                format!(
                    "topic {topic:?} has queues 0..{}, not queue {queue_id}",
                    entry.queue_count
                ),
            ));
        }
        Ok((entry, queue_id))
    }

    async fn queue_op(&self, entry: TopicEntry, queue_id: u32, request: Request) -> LocalReply {
        let key = QueueKey::new(TopicId::new(entry.id), QueueId::new(queue_id));
        match request {
            Request::Produce { batch, .. } => self.produce(key, batch).await.map(Answer::Response),
            Request::Fetch { offset, max_bytes, max_wait_ms, tags, .. } => {
                self.fetch(key, offset, max_bytes, max_wait_ms, &tags).await
            }
            Request::Offsets { timestamp_ms, .. } => {
                let o = self.log.offsets(key);
                let timestamp_offset = if timestamp_ms >= 0 {
                    self.log.offset_for_timestamp(key, timestamp_ms).await?
                } else {
                    o.next
                };
                Ok(Answer::Response(Response::Offsets {
                    min_offset: o.min,
                    next_offset: o.next,
                    timestamp_offset,
                }))
            }
            _ => unreachable!("queue_op is called for queue requests only"),
        }
    }

    /// Stores one batch. `batch` is usually a range of the connection's read buffer (or, when
    /// forwarded, of another shard's): the log copies it straight into its DMA chunk and
    /// releases it before waiting for durability.
    async fn produce(&self, key: QueueKey, batch: SharedBytes) -> Reply {
        let max = self.config.storage.max_batch_bytes;
        if batch.len() > max {
            return Err(BrokerError::new(
                ErrorCode::BATCH_TOO_LARGE,
                format!("batch of {} bytes exceeds max_batch_bytes = {max}", batch.len()),
            ));
        }
        match peek_length(&batch) {
            Some(len) if len as usize == batch.len() => {}
            Some(len) => {
                return Err(BrokerError::new(
                    ErrorCode::INVALID_BATCH,
                    format!(
                        "the produce payload holds {} bytes but its batch header says {len}; \
                         send exactly one batch per produce",
                        batch.len()
                    ),
                ))
            }
            None => {
                return Err(BrokerError::new(
                    ErrorCode::INVALID_BATCH,
                    format!("the produce payload holds only {} bytes", batch.len()),
                ))
            }
        }
        if read_header(&batch).is_ok_and(|h| h.is_transactional()) {
            return Err(BrokerError::new(
                ErrorCode::UNSUPPORTED_FEATURE,
                "transactional batches (attribute bit 3) are not supported yet: transactional \
                 messages do not exist in this broker; send the batch without that attribute",
            ));
        }
        if let Ok(h) = read_header(&batch) {
            if h.producer_id >= 0 && !h.is_control() {
                return self.produce_idempotent(key, batch, &h).await;
            }
        }
        self.append(key, batch).await
    }

    /// Produce of an idempotent batch: appended when it is next in its (producer, queue)
    /// window, answered with the original offsets when it is a retry of one the window holds.
    async fn produce_idempotent(
        &self,
        key: QueueKey,
        batch: SharedBytes,
        h: &BatchHeader,
    ) -> Reply {
        let (pid, seq, count) = (h.producer_id, h.base_sequence, h.record_count);
        if seq < 0 {
            return Err(BrokerError::new(
                ErrorCode::INVALID_BATCH,
                format!("producer id {pid} with base_sequence {seq}: sequences start at 0"),
            ));
        }
        let window = SequenceWindows::key(pid, key);
        loop {
            let verdict = self.sequences.borrow_mut().check(pid, key, seq, count, self.now_ms());
            let refuse = |code, message: String| Err(BrokerError::new(code, message));
            match verdict {
                Verdict::Append => {
                    let reply = self.append(key, batch).await;
                    match &reply {
                        Ok(Response::Produce { base_offset, store_timestamp_ms, .. }) => {
                            let at = Stored {
                                base_offset: *base_offset,
                                store_timestamp_ms: *store_timestamp_ms,
                            };
                            self.sequences.borrow_mut().stored(pid, key, seq, at);
                        }
                        _ => self.sequences.borrow_mut().abort(pid, key, seq),
                    }
                    for w in self
                        .sequence_waiters
                        .borrow_mut()
                        .remove(&(window, seq))
                        .into_iter()
                        .flatten()
                    {
                        let _ = w.send(());
                    }
                    return reply;
                }
                Verdict::Duplicate(at) => {
                    // In sync mode a batch is visible once durable: a retry is answered SEND_OK
                    // only when the original is.
                    let end = at.base_offset + u64::from(count);
                    let durable = self.config.storage.flush_mode
                        == crate::storage::FlushMode::Async
                        || end <= self.log.offsets(key).next;
                    return Ok(Response::Produce {
                        status: if durable {
                            SendStatus::SendOk
                        } else {
                            SendStatus::FlushDiskTimeout
                        },
                        topic_id: key.topic_id.get(),
                        queue_id: key.queue_id.get(),
                        base_offset: at.base_offset,
                        record_count: count,
                        store_timestamp_ms: at.store_timestamp_ms,
                    });
                }
                Verdict::InProgress => {
                    // Bounded by the requests in flight; woken when the original's append ends.
                    let (tx, rx) = oneshot::channel();
                    self.sequence_waiters.borrow_mut().entry((window, seq)).or_default().push(tx);
                    let _ = rx.await;
                }
                Verdict::TooOld { next_sequence } => {
                    return refuse(
                        ErrorCode::DUPLICATE_SEQUENCE,
                        format!(
                            "producer {pid} sequence {seq} on queue {} is behind the window \
                             (next expected {next_sequence}): it was stored too long ago to \
                             answer with its offsets",
                            key.queue_id
                        ),
                    )
                }
                Verdict::OutOfOrder { expected } => {
                    return refuse(
                        ErrorCode::OUT_OF_ORDER_SEQUENCE,
                        format!(
                            "producer {pid} sent sequence {seq} on queue {} but the next expected \
                             is {expected} (a gap, or no state for the producer here: start again \
                             at 0 under a new epoch)",
                            key.queue_id
                        ),
                    )
                }
                Verdict::Fenced { current_epoch } => {
                    return refuse(
                        ErrorCode::OUT_OF_ORDER_SEQUENCE,
                        format!(
                            "producer {pid} is fenced on queue {}: epoch {} is older than the \
                             current epoch {current_epoch}",
                            key.queue_id,
                            crate::protocol::producer_id::epoch(pid)
                        ),
                    )
                }
                Verdict::Mismatch { record_count } => {
                    return refuse(
                        ErrorCode::DUPLICATE_SEQUENCE,
                        format!(
                            "producer {pid} reused sequence {seq} on queue {} for a batch of \
                             {count} records; the stored one has {record_count}",
                            key.queue_id
                        ),
                    )
                }
            }
        }
    }

    /// Appends a validated-length batch, wakes long-polls and counts it.
    async fn append(&self, key: QueueKey, batch: SharedBytes) -> Reply {
        let batch_len = batch.len();
        let out = self.log.append(key, batch).await?;
        let visible = self.log.visible_end();
        if out.end > visible {
            // Acknowledged with FLUSH_DISK_TIMEOUT: readable only when the flush completes.
            let mut late = self.late_visible.borrow_mut();
            late.retain(|_, end| *end > visible);
            let end = late.entry(key).or_insert(out.end);
            *end = (*end).max(out.end);
        }
        // Wake fetches parked at the old end: the data is readable now, or they learn above
        // when it will be.
        self.long_poll.borrow_mut().notify(key);
        {
            let mut s = self.stats.borrow_mut();
            s.produce_batches += 1;
            s.produce_records += u64::from(out.record_count);
            s.produce_bytes += batch_len as u64;
        }
        Ok(Response::Produce {
            status: if out.flush_timed_out {
                SendStatus::FlushDiskTimeout
            } else {
                SendStatus::SendOk
            },
            topic_id: key.topic_id.get(),
            queue_id: key.queue_id.get(),
            base_offset: out.base_offset,
            record_count: out.record_count,
            store_timestamp_ms: out.store_timestamp_ms,
        })
    }

    /// Serves a fetch: stored batches from the one holding `offset`; long-polls at the end.
    /// With `tags`, batches whose tag summary cannot match are skipped here (DESIGN.md section
    /// 3), scanning at most [`TAG_SCAN_FACTOR`] times `max_bytes` per request; the reply's
    /// scan end tells the client where to go on either way.
    async fn fetch(
        &self,
        key: QueueKey,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
        tags: &[Vec<u8>],
    ) -> LocalReply {
        self.stats.borrow_mut().fetch_requests += 1;
        let max_bytes = (max_bytes as usize).min(self.config.broker.max_fetch_bytes);
        let wait_ms = max_wait_ms.min(self.config.broker.max_long_poll_wait_ms);
        let deadline = self.clock.now() + Duration::from_millis(wait_ms.into());
        let scan_budget = max_bytes.max(64 * 1024).saturating_mul(TAG_SCAN_FACTOR);
        let mut scanned = 0usize;
        let mut from = offset;
        loop {
            let o = self.log.offsets(key);
            if from < o.min || from > o.next {
                return Err(BrokerError {
                    code: ErrorCode::OFFSET_OUT_OF_RANGE,
                    message: format!(
                        "offset {from} is out of range for queue {}: it holds [{}, {})",
                        key.queue_id, o.min, o.next
                    ),
                    detail: ErrorDetail::OffsetRange { min: o.min, next: o.next },
                });
            }
            let empty = |o: super::shard_log::OffsetRange, at: u64| Answer::Batches {
                min_offset: o.min,
                next_offset: o.next,
                scan_end_offset: at,
                batches: Vec::new(),
            };
            if from == o.next {
                let now = self.clock.now();
                if now >= deadline || self.stopping.get() || scanned >= scan_budget {
                    return Ok(empty(o, from));
                }
                let Some(waiter) = self.long_poll.borrow_mut().register(key) else {
                    return Ok(empty(o, from));
                };
                let late = self.late_end(key);
                let flushed = async {
                    match late {
                        Some(end) => self.log.wait_visible(end).await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                // Woken by an append, a late flush, shutdown, or the deadline; look again.
                let flushed = std::pin::pin!(flushed);
                let woken = select(waiter, flushed);
                if let Some(Either::Right((false, _))) =
                    runtime::timeout_at(&*self.clock, deadline, woken).await
                {
                    // The log stopped: that data never becomes readable; stop waiting for it.
                    self.late_visible.borrow_mut().remove(&key);
                }
                continue;
            }
            let mut batches = self.log.read(key, from, max_bytes).await?;
            let total: usize = batches.iter().map(|b| b.len()).sum();
            let scan_end = batches
                .last()
                .and_then(|b| read_header(b).ok())
                .map_or(from, |h| h.next_offset().max(from));
            if !tags.is_empty() {
                // A header that does not decode is kept: the client reports it.
                batches.retain(|b| {
                    read_header(b).map_or(true, |h| {
                        h.tag_summary.may_contain_any(tags.iter().map(Vec::as_slice))
                    })
                });
            }
            let sent: usize = batches.iter().map(|b| b.len()).sum();
            self.stats.borrow_mut().fetch_bytes += sent as u64;
            let o = self.log.offsets(key);
            if batches.is_empty() && scan_end > from {
                // Everything read was filtered out: look further, within the scan budget.
                scanned += total;
                from = scan_end;
                if scanned >= scan_budget {
                    return Ok(empty(o, from));
                }
                continue;
            }
            return Ok(Answer::Batches {
                min_offset: o.min,
                next_offset: o.next,
                scan_end_offset: scan_end,
                batches,
            });
        }
    }

    /// Where the queue's acknowledged but not yet readable data ends, if it has any.
    fn late_end(&self, key: QueueKey) -> Option<u64> {
        let mut late = self.late_visible.borrow_mut();
        let end = *late.get(&key)?;
        if end <= self.log.visible_end() {
            late.remove(&key);
            return None;
        }
        Some(end)
    }

    fn metadata_response(&self, names: &[String]) -> Response {
        let table = self.topics.borrow();
        let route = |name: &str, e: TopicEntry| TopicRoute {
            name: name.to_owned(),
            error_code: ErrorCode::NONE as u16,
            topic_id: e.id,
            queue_owners: (0..e.queue_count)
                .map(|q| owner_shard(name, q, self.shard_count) as u16)
                .collect(),
        };
        let topics = if names.is_empty() {
            table.iter().map(|(n, e)| route(n, e)).collect()
        } else {
            names
                .iter()
                .map(|n| match (validate_topic_name(n), table.get(n)) {
                    (Ok(()), Some(e)) => route(n, e),
                    (Err(_), _) => TopicRoute {
                        name: n.clone(),
                        error_code: ErrorCode::INVALID_TOPIC_NAME as u16,
                        topic_id: 0,
                        queue_owners: Vec::new(),
                    },
                    (Ok(()), None) => TopicRoute {
                        name: n.clone(),
                        error_code: ErrorCode::UNKNOWN_TOPIC as u16,
                        topic_id: 0,
                        queue_owners: Vec::new(),
                    },
                })
                .collect()
        };
        Response::Metadata {
            shard_count: self.shard_count as u32,
            shared_port: self.ports.shared,
            shard_ports: self.ports.per_shard.clone(),
            topics,
        }
    }

    /// Shard 0: applies a topic change, persists it, and broadcasts it to every shard.
    async fn admin(&self, request: Request) -> Reply {
        let Some((store, lock)) = &self.metadata else {
            return Err(BrokerError::new(ErrorCode::INTERNAL, "topic changes run on shard 0"));
        };
        let _serialized = lock.acquire_permit(1).await.map_err(|e| {
            BrokerError::new(ErrorCode::SHUTTING_DOWN, format!("topic lock closed: {e}"))
        })?;
        let b = &self.config.broker;
        let mut table = self.topics.borrow().clone();
        let response = match &request {
            Request::CreateTopic { topic, queue_count } => Response::CreateTopic {
                topic_id: table.create(
                    topic,
                    *queue_count,
                    b.max_queues_per_topic,
                    b.max_topics,
                )?,
            },
            Request::DeleteTopic { topic } => {
                Response::DeleteTopic { topic_id: table.delete(topic)? }
            }
            _ => unreachable!("admin handles topic changes only"),
        };
        store.save(&table).await.map_err(|e| BrokerError::new(ErrorCode::INTERNAL, e))?;
        *self.topics.borrow_mut() = table.clone();
        let mut acks = Vec::with_capacity(self.shard_count);
        for peer in (0..self.shard_count).filter(|&p| p != self.id) {
            let (ack, rx) = oneshot::channel();
            let msg = Control::Topics { table: table.clone(), ack };
            if self.control_mesh.send(peer, msg).await.is_ok() {
                acks.push(rx);
            }
        }
        for rx in acks {
            // A stopped peer no longer serves anything; it loads the file on restart.
            let _ = rx.await;
        }
        tracing::info!(?request, "topic change applied on all shards");
        Ok(response)
    }

    async fn gather_stats(&self) -> Vec<ShardStats> {
        let mut out = vec![self.stats()];
        for peer in (0..self.shard_count).filter(|&p| p != self.id) {
            let (reply, rx) = oneshot::channel();
            if self.control_mesh.send(peer, Control::Stats { reply }).await.is_ok() {
                if let Ok(s) = rx.await {
                    out.push(s);
                }
            }
        }
        out.sort_by_key(|s| s.shard);
        out
    }
}

fn queue_topic(request: &Request) -> &str {
    match request {
        Request::Produce { topic, .. }
        | Request::Fetch { topic, .. }
        | Request::Offsets { topic, .. } => topic,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    //! Request handling on one shard over the real commit log on the simulated directory: no
    //! sockets, no disk.

    use super::*;
    use crate::storage::sim_dir::SimDir;
    use crate::storage::CommitLog;

    type SimLog = Rc<CommitLog<SimDir>>;
    use crate::broker::mesh;
    use crate::format::{BatchBuilder, Record};
    use crate::runtime::{run_on_new_executor, ExecutorOptions};

    fn batch(n: usize) -> Vec<u8> {
        numbered_batch(n, "r", -1, -1)
    }

    /// A batch of `n` records with bodies `{prefix}{i}`, numbered for `producer_id`.
    fn numbered_batch(n: usize, prefix: &str, producer_id: i64, base_sequence: i32) -> Vec<u8> {
        let mut b = BatchBuilder::new(1 << 16);
        for i in 0..n {
            let body = format!("{prefix}{i}");
            let rec = Record {
                key: b"",
                tag: b"",
                properties: &[],
                body: body.as_bytes(),
                timestamp_ms: 5,
            };
            b.push(&rec).unwrap();
        }
        b.finish(producer_id, base_sequence)
    }

    async fn shard(waiters: usize) -> Rc<Shard<SimLog>> {
        shard_on(SimDir::new(7), waiters, |_| {}).await
    }

    /// A shard whose log runs on `dir`, with `tweak` applied to the storage config.
    async fn shard_on(
        dir: SimDir,
        waiters: usize,
        tweak: impl FnOnce(&mut crate::storage::StorageConfig),
    ) -> Rc<Shard<SimLog>> {
        shard_with(dir, waiters, tweak, |_| {}).await
    }

    /// `shard_on`, with `broker` applied to the broker config too.
    async fn shard_with(
        dir: SimDir,
        waiters: usize,
        tweak: impl FnOnce(&mut crate::storage::StorageConfig),
        broker: impl FnOnce(&mut super::super::config::BrokerConfig),
    ) -> Rc<Shard<SimLog>> {
        shard_with_clock(dir, waiters, tweak, broker, runtime::system_clock()).await
    }

    async fn shard_with_clock(
        dir: SimDir,
        waiters: usize,
        tweak: impl FnOnce(&mut crate::storage::StorageConfig),
        broker: impl FnOnce(&mut super::super::config::BrokerConfig),
        clock: SharedClock,
    ) -> Rc<Shard<SimLog>> {
        let mut config = Config::default();
        broker(&mut config.broker);
        config.broker.max_long_poll_waiters_per_queue = waiters;
        let mut topics = TopicTable::new(1);
        topics.create("t", 2, 16, 16).unwrap();
        let data = mesh::build::<Forward>(1, 4).pop().unwrap().connect().await.0;
        let control = mesh::build::<Control>(1, 4).pop().unwrap().connect().await.0;
        let ports = Ports { shared: 1, per_shard: vec![2] };
        let mut storage = config.storage.clone();
        storage.dir = "/sim".into();
        // Small sizes: the simulated directory holds whole segments in memory.
        storage.segment_size_bytes = 4 << 20;
        storage.max_batch_bytes = 256 << 10;
        storage.chunk_size_bytes = 64 << 10;
        storage.chunk_pool_chunks = 16;
        storage.cache_bytes = 1 << 20;
        tweak(&mut storage);
        config.storage = storage.clone();
        let log = CommitLog::open_with(dir, storage).await.unwrap();
        Rc::new(Shard::new(0, 1, Arc::new(config), log, ports, topics, data, control, None, clock))
    }

    async fn call(s: &Rc<Shard<SimLog>>, request: Request) -> Reply {
        s.handle(request).await.map(Answer::into_response)
    }

    fn produce(queue_id: u32, n: usize) -> Request {
        Request::Produce { topic: "t".into(), queue_id, flags: 0, batch: batch(n).into() }
    }

    fn fetch(offset: u64, max_wait_ms: u32) -> Request {
        fetch_with(offset, max_wait_ms, Vec::new())
    }

    fn fetch_with(offset: u64, max_wait_ms: u32, tags: Vec<Vec<u8>>) -> Request {
        Request::Fetch {
            topic: "t".into(),
            queue_id: 0,
            offset,
            max_bytes: 1 << 20,
            max_wait_ms,
            tags,
        }
    }

    fn run<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        run_on_new_executor(ExecutorOptions::default(), f).unwrap()
    }

    #[test]
    fn produce_fetch_offsets_and_errors() {
        run(|| async {
            let s = shard(8).await;
            let r = call(&s, produce(0, 3)).await.unwrap();
            assert!(matches!(r, Response::Produce { base_offset: 0, record_count: 3, .. }));
            let r = call(&s, produce(0, 2)).await.unwrap();
            assert!(matches!(r, Response::Produce { base_offset: 3, .. }));
            let Response::Fetch { batches, next_offset, .. } = call(&s, fetch(4, 0)).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(next_offset, 5);
            // The batch holding offset 4 starts at 3: returned whole, stamped.
            let view = crate::format::BatchView::parse(&batches, 1 << 20).unwrap();
            assert_eq!(view.header.stamp.base_offset, 3);
            let e = call(&s, fetch(6, 0)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::OFFSET_OUT_OF_RANGE);
            assert_eq!(e.detail, ErrorDetail::OffsetRange { min: 0, next: 5 });
            let e = call(&s, produce(2, 1)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::UNKNOWN_QUEUE);
            let mut bad = batch(1);
            bad[100] ^= 1;
            let e = call(
                &s,
                Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch: bad.into() },
            )
            .await
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::CORRUPT_BATCH);
            let r = call(&s, Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: 0 })
                .await
                .unwrap();
            assert_eq!(r, Response::Offsets { min_offset: 0, next_offset: 5, timestamp_offset: 0 });
            let e = s.handle_forwarded(fetch(0, 0)).await.map(|_| ());
            assert_eq!(e, Ok(()), "a forwarded request for an owned queue is served");
        });
    }

    fn idempotent(queue_id: u32, producer_id: i64, base_sequence: i32, n: usize) -> Request {
        let prefix = format!("s{base_sequence}-");
        let batch = numbered_batch(n, &prefix, producer_id, base_sequence);
        Request::Produce { topic: "t".into(), queue_id, flags: 0, batch: batch.into() }
    }

    fn base_offset(r: &Reply) -> u64 {
        match r {
            Ok(Response::Produce { base_offset, .. }) => *base_offset,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retried_idempotent_batches_are_answered_not_stored_and_gaps_are_refused() {
        run(|| async {
            let dir = SimDir::new(11);
            let s = shard_on(dir.clone(), 8, |_| {}).await;
            let Ok(Response::InitProducer { producer_id: pid }) =
                call(&s, Request::InitProducer).await
            else {
                panic!()
            };
            let Ok(Response::InitProducer { producer_id: other }) =
                call(&s, Request::InitProducer).await
            else {
                panic!()
            };
            assert_ne!(pid, other);
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, 0, 3)).await), 0);
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, 3, 2)).await), 3);
            // Retries of either batch: their original offsets, nothing stored.
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, 0, 3)).await), 0);
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, 3, 2)).await), 3);
            assert_eq!(s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next, 5);
            let e = call(&s, idempotent(0, pid, 7, 1)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE, "{e:?}");
            let e = call(&s, idempotent(1, pid, 4, 1)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE, "a new queue starts at 0");
            // Two copies at once: the second waits for the first and gets its offsets.
            let (a, b) = futures::join!(
                call(&s, idempotent(0, pid, 5, 1)),
                call(&s, idempotent(0, pid, 5, 1))
            );
            assert_eq!((base_offset(&a), base_offset(&b)), (5, 5));
            // A batch that fails validation is not remembered: the sequence is expected again.
            let Request::Produce { batch, .. } = idempotent(0, pid, 6, 1) else { panic!() };
            let mut batch = batch.to_vec();
            batch[100] ^= 1;
            let batch = batch.into();
            let e = call(&s, Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch })
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::CORRUPT_BATCH);
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, 6, 1)).await), 6);

            // After a restart the windows are rebuilt from the log.
            s.log.close().await.unwrap();
            drop(s);
            let s = shard_on(dir.clone(), 8, |_| {}).await;
            s.start_idempotence(2).await.unwrap();
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, 3, 2)).await), 3);
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, 6, 1)).await), 6);
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, 7, 1)).await), 7);
            assert_eq!(s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next, 8);
            let Ok(Response::InitProducer { producer_id }) = call(&s, Request::InitProducer).await
            else {
                panic!()
            };
            assert!(producer_id != pid && producer_id != other, "a new run, new ids");

            // A rebuild that may read nothing leaves no window: the retry is refused (the
            // producer renumbers) rather than answered from a partial window.
            s.log.close().await.unwrap();
            drop(s);
            let s = shard_with(dir, 8, |_| {}, |b| b.idempotence_recovery_scan_bytes = 0).await;
            s.start_idempotence(3).await.unwrap();
            let e = call(&s, idempotent(0, pid, 7, 1)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE);
            assert_eq!(
                s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next,
                8,
                "nothing stored twice"
            );
        });
    }

    #[test]
    fn slow_and_failed_storage_map_to_flush_disk_timeout_and_shard_failed() {
        run(|| async {
            let dir = SimDir::new(21);
            let s = shard_on(dir.clone(), 8, |st| {
                st.flush_mode = crate::storage::FlushMode::Sync;
                st.sync_flush_timeout_ms = 20;
            })
            .await;
            let r = call(&s, produce(0, 1)).await.unwrap();
            assert!(matches!(r, Response::Produce { status: SendStatus::SendOk, .. }), "{r:?}");
            dir.set_sync_delay(Duration::from_millis(150));
            let r = call(&s, produce(0, 1)).await.unwrap();
            assert!(
                matches!(
                    r,
                    Response::Produce { status: SendStatus::FlushDiskTimeout, base_offset: 1, .. }
                ),
                "{r:?}"
            );
            dir.set_sync_delay(Duration::ZERO);
            // Wait (bounded) until the slow flush finished: in sync mode the batch becomes
            // visible once durable.
            let offsets = Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: 0 };
            let t = Instant::now();
            while !matches!(
                call(&s, offsets.clone()).await.unwrap(),
                Response::Offsets { next_offset: 2, .. }
            ) {
                assert!(t.elapsed() < Duration::from_secs(5), "slow flush never completed");
                runtime::sleep(Duration::from_millis(5)).await;
            }
            dir.fail_syncs(1);
            let e = call(&s, produce(0, 1)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::SHARD_FAILED, "{e:?}");
            // The shard keeps answering, and keeps refusing writes it cannot make durable.
            let e = call(&s, produce(0, 1)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::SHARD_FAILED);
        });
    }

    #[test]
    fn a_full_disk_answers_disk_full_and_the_shard_keeps_serving() {
        run(|| async {
            let dir = SimDir::new(22);
            let s = shard_on(dir.clone(), 8, |st| {
                st.segment_size_bytes = 256 << 10;
                st.max_batch_bytes = 64 << 10;
                st.disk_full_retry_ms = 5;
            })
            .await;
            // Room for the first segment, not for the next one.
            dir.set_capacity(Some(300 << 10));
            let mut acked = 0u64;
            let e = loop {
                match call(&s, produce(0, 50)).await {
                    Ok(_) => acked += 50,
                    Err(e) => break e,
                }
                assert!(acked < 1_000_000, "the disk never filled");
            };
            assert_eq!(e.code, ErrorCode::DISK_FULL, "{e:?}");
            assert!(e.message.contains("free space"), "{e:?}");
            let Response::Fetch { next_offset, .. } = call(&s, fetch(0, 0)).await.unwrap() else {
                panic!("fetch")
            };
            assert!(next_offset > 0, "reads go on while the disk is full");
            // Space is freed: produces succeed again without a restart.
            dir.set_capacity(None);
            let t = Instant::now();
            while let Err(e) = call(&s, produce(0, 50)).await {
                assert_eq!(e.code, ErrorCode::DISK_FULL, "{e:?}");
                assert!(t.elapsed() < Duration::from_secs(5), "produces never resumed");
                runtime::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    /// Polls (bounded) until `n` fetches are parked on the shard.
    async fn until_parked(s: &Rc<Shard<SimLog>>, n: u64) {
        let t = Instant::now();
        while s.stats().long_poll_waiting != n {
            assert!(t.elapsed() < Duration::from_secs(5), "fetches never parked");
            runtime::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A sync-mode shard whose next flush takes `delay`, far past its 20 ms flush timeout.
    async fn slow_sync_shard(delay: Duration) -> (Rc<Shard<SimLog>>, SimDir) {
        let dir = SimDir::new(33);
        let s = shard_on(dir.clone(), 8, |st| {
            st.flush_mode = crate::storage::FlushMode::Sync;
            st.sync_flush_timeout_ms = 20;
        })
        .await;
        dir.set_sync_delay(delay);
        (s, dir)
    }

    #[test]
    fn parked_fetches_wake_when_a_late_sync_flush_completes() {
        run(|| async {
            let (s, dir) = slow_sync_shard(Duration::from_millis(300)).await;
            // One fetch parks before the produce, one after its reply (FLUSH_DISK_TIMEOUT).
            let s2 = s.clone();
            let before = runtime::spawn(async move { call(&s2, fetch(0, 20_000)).await });
            until_parked(&s, 1).await;
            let t = Instant::now();
            let r = call(&s, produce(0, 2)).await.unwrap();
            assert!(
                matches!(r, Response::Produce { status: SendStatus::FlushDiskTimeout, .. }),
                "{r:?}"
            );
            dir.set_sync_delay(Duration::ZERO);
            let s2 = s.clone();
            let after = runtime::spawn(async move { call(&s2, fetch(0, 20_000)).await });
            for parked in [before, after] {
                let r = parked.await.unwrap().unwrap();
                assert!(
                    matches!(r, Response::Fetch { next_offset: 2, ref batches, .. } if !batches.is_empty()),
                    "{r:?}"
                );
            }
            // Woken by the flush (about 300 ms), not by the 20 s deadline.
            assert!(t.elapsed() < Duration::from_secs(10), "woken after {:?}", t.elapsed());
        });
    }

    /// Batch bytes that record when they are dropped.
    struct DropProbe(Vec<u8>, Rc<Cell<bool>>);
    impl AsRef<[u8]> for DropProbe {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for DropProbe {
        fn drop(&mut self) {
            self.1.set(true);
        }
    }

    #[test]
    fn the_log_releases_a_batch_before_waiting_for_its_fsync() {
        run(|| async {
            let dir = SimDir::new(41);
            let s = shard_on(dir.clone(), 8, |st| {
                st.flush_mode = crate::storage::FlushMode::Sync;
                st.sync_flush_timeout_ms = 10_000;
            })
            .await;
            dir.set_sync_delay(Duration::from_millis(300));
            let (dropped, acked) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
            let probe = DropProbe(batch(3), dropped.clone());
            let (s2, acked2) = (s.clone(), acked.clone());
            let append = runtime::spawn(async move {
                let out = ShardLog::append(
                    &s2.log,
                    QueueKey::new(TopicId::new(1), QueueId::new(0)),
                    probe,
                )
                .await
                .unwrap();
                acked2.set(true);
                out
            });
            let t = Instant::now();
            while !dropped.get() {
                assert!(t.elapsed() < Duration::from_secs(5), "the batch was never released");
                runtime::sleep(Duration::from_millis(1)).await;
            }
            // Released while the fsync is still running: the connection can reuse its buffer.
            assert!(!acked.get(), "released only after the durability wait");
            let out = append.await.unwrap();
            assert!(!out.flush_timed_out && out.end <= ShardLog::visible_end(&s.log));
        });
    }

    #[test]
    fn timestamp_lookup_never_points_past_what_a_fetch_can_read() {
        run(|| async {
            let (s, dir) = slow_sync_shard(Duration::from_millis(300)).await;
            dir.set_sync_delay(Duration::ZERO);
            call(&s, produce(0, 1)).await.unwrap(); // offset 0, durable
            dir.set_sync_delay(Duration::from_millis(300));
            let r = call(&s, produce(0, 2)).await.unwrap(); // 1..3, not yet durable
            assert!(matches!(r, Response::Produce { status: SendStatus::FlushDiskTimeout, .. }));
            for ts in [0, i64::MAX] {
                let req = Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: ts };
                let Response::Offsets { next_offset, timestamp_offset, .. } =
                    call(&s, req).await.unwrap()
                else {
                    panic!()
                };
                assert!(timestamp_offset <= next_offset, "{timestamp_offset} > {next_offset}");
                call(&s, fetch(timestamp_offset, 0)).await.expect("a fetch at the answer works");
            }
        });
    }

    #[test]
    fn transactional_batches_are_refused_until_transactions_exist() {
        run(|| async {
            let s = shard(8).await;
            let mut b = batch(1);
            b[44] |= crate::format::batch::ATTR_TRANSACTIONAL as u8;
            let crc = crc32c::crc32c(&b[crate::format::CRC_START..]);
            b[40..44].copy_from_slice(&crc.to_le_bytes());
            let req =
                Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch: b.into() };
            let e = call(&s, req).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::UNSUPPORTED_FEATURE, "{e:?}");
            assert!(e.message.contains("transactional"), "{}", e.message);
            let o = Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: -1 };
            let r = call(&s, o).await.unwrap();
            assert!(matches!(r, Response::Offsets { next_offset: 0, .. }), "nothing stored");
        });
    }

    fn tagged(n: usize, tag: &[u8]) -> Request {
        let mut b = BatchBuilder::new(1 << 16);
        for _ in 0..n {
            b.push(&Record { key: b"", tag, properties: &[], body: b"x", timestamp_ms: 5 })
                .unwrap();
        }
        Request::Produce {
            topic: "t".into(),
            queue_id: 0,
            flags: 0,
            batch: b.finish(-1, -1).into(),
        }
    }

    fn fetch_tags(offset: u64, max_wait_ms: u32, tag: &[u8]) -> Request {
        fetch_with(offset, max_wait_ms, vec![tag.to_vec()])
    }

    fn batch_bases(r: &Response) -> (Vec<u64>, u64) {
        let Response::Fetch { batches, scan_end_offset, .. } = r else { panic!("{r:?}") };
        let mut rest = batches.as_slice();
        let mut bases = Vec::new();
        while !rest.is_empty() {
            let h = crate::format::batch::read_header(rest).unwrap();
            bases.push(h.stamp.base_offset);
            rest = &rest[h.length as usize..];
        }
        (bases, *scan_end_offset)
    }

    #[test]
    fn tag_filtered_fetches_skip_batches_on_the_broker() {
        run(|| async {
            let s = shard(8).await;
            call(&s, tagged(2, b"A")).await.unwrap(); // offsets 0..2
            call(&s, tagged(1, b"B")).await.unwrap(); // 2
            call(&s, tagged(2, b"A")).await.unwrap(); // 3..5
            let r = call(&s, fetch_tags(0, 0, b"B")).await.unwrap();
            assert_eq!(batch_bases(&r), (vec![2], 5), "only the B batch; scanned to the end");
            let r = call(&s, fetch_tags(3, 0, b"B")).await.unwrap();
            assert_eq!(batch_bases(&r), (vec![], 5));
            let r = call(&s, fetch(0, 0)).await.unwrap();
            assert_eq!(batch_bases(&r), (vec![0, 2, 3], 5), "no tags: everything");
            // A parked filtered fetch skips non-matching appends and keeps waiting.
            let s2 = s.clone();
            let parked =
                runtime::spawn(async move { call(&s2, fetch_tags(5, 10_000, b"B")).await });
            runtime::sleep(Duration::from_millis(20)).await;
            call(&s, tagged(1, b"A")).await.unwrap(); // 5
            runtime::sleep(Duration::from_millis(20)).await;
            assert_eq!(s.stats().long_poll_waiting, 1, "still waiting after a non-matching append");
            call(&s, tagged(1, b"B")).await.unwrap(); // 6
            let r = parked.await.unwrap().unwrap();
            assert_eq!(batch_bases(&r), (vec![6], 7));
        });
    }

    #[test]
    fn long_poll_wakes_times_out_is_bounded_and_released_on_stop() {
        run(|| async {
            let s = shard(1).await;
            // Times out empty.
            let t = Instant::now();
            let r = call(&s, fetch(0, 50)).await.unwrap();
            assert!(t.elapsed() >= Duration::from_millis(45));
            assert!(matches!(r, Response::Fetch { ref batches, .. } if batches.is_empty()));
            // Woken by an append.
            let s2 = s.clone();
            let parked = runtime::spawn(async move { call(&s2, fetch(0, 10_000)).await });
            runtime::sleep(Duration::from_millis(20)).await;
            assert_eq!(s.stats().long_poll_waiting, 1);
            // The per-queue bound (1) is reached: another waiter is answered at once.
            let t = Instant::now();
            call(&s, fetch(0, 10_000)).await.unwrap();
            assert!(t.elapsed() < Duration::from_secs(5));
            let t = Instant::now();
            call(&s, produce(0, 1)).await.unwrap();
            let r = parked.await.unwrap().unwrap();
            assert!(t.elapsed() < Duration::from_secs(5));
            assert!(
                matches!(r, Response::Fetch { next_offset: 1, ref batches, .. } if !batches.is_empty())
            );
            // Stopping releases parked fetches at once.
            let s2 = s.clone();
            let parked = runtime::spawn(async move { call(&s2, fetch(1, 10_000)).await });
            runtime::sleep(Duration::from_millis(20)).await;
            let t = Instant::now();
            s.begin_stop();
            parked.await.unwrap().unwrap();
            assert!(t.elapsed() < Duration::from_secs(5));
        });
    }

    #[test]
    fn a_long_poll_ends_when_the_clock_passes_its_deadline_not_before() {
        run(|| async {
            let clock = runtime::SimClock::new(1_700_000_000_000);
            let s = shard_with_clock(SimDir::new(51), 8, |_| {}, |_| {}, clock.clone()).await;
            let s2 = s.clone();
            let real = Instant::now();
            let parked = runtime::spawn(async move { call(&s2, fetch(0, 30_000)).await });
            until_parked(&s, 1).await;
            clock.advance(Duration::from_millis(29_999));
            // Let the woken fetch look again: still before its deadline, it parks again.
            for _ in 0..10 {
                runtime::yield_once().await;
            }
            until_parked(&s, 1).await;
            clock.advance(Duration::from_millis(1));
            let r = parked.await.unwrap().unwrap();
            assert!(
                matches!(r, Response::Fetch { next_offset: 0, ref batches, .. } if batches.is_empty()),
                "{r:?}"
            );
            assert_eq!(s.stats().long_poll_waiting, 0);
            // Ended by the simulated clock, not by 30 s of real time.
            assert!(real.elapsed() < Duration::from_secs(20), "{:?}", real.elapsed());
        });
    }
}
