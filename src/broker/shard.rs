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
//!
//! This file is the router: it owns the shard's components and hands each request to its
//! handler, one file per request family under `shard/`: `produce` (with the idempotence
//! windows), `fetch` (tag scan, long-poll), `topic_admin` (metadata and topic changes),
//! `group` (consumer-group coordinator: membership, offsets, locks), `schedule` (scheduled
//! messages: held in `%SYS%schedule`, delivered by a timer wheel), `transaction` (half
//! messages, their end and check-back), `key_index` (the key index task, QUERY_KEYS),
//! `stats` and `metrics` (answers to the metrics exporter). A new feature adds a handler file
//! and a dispatch arm, not logic here.
//! messages, their end and check-back), `replication` (a master's stream and sync-produce
//! gate, a replica's refusals), `follower` (a replica's stream from its master), `promote`
//! (a replica broker made master live, `ringmq cluster promote`), `stats` and
//! `metrics` (answers to the metrics exporter). A new feature adds a handler file and a dispatch arm, not logic here.

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
use super::routing::{owner_shard, ShardId};
use super::shard_log::ShardLog;
use super::topics::{validate_topic_name, TopicEntry, TopicTable};
use crate::format::batch::{peek_length, read_header, BatchHeader};
use crate::format::{BatchBuilder, Record};
use crate::protocol::{
    ErrorCode, ErrorDetail, Request, Response, SendStatus, ShardStats, SharedBytes, TopicInfo,
    TopicRoute,
};
use crate::runtime::{self, SharedClock};
use crate::storage::{BatchLimit, QueueId, QueueKey, ReadBuf, TopicId};

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
    Batches {
        min_offset: u64,
        next_offset: u64,
        scan_end_offset: u64,
        batches: Vec<ReadBuf>,
    },
    /// A FETCH_MULTI's parts, in index order.
    Multi(Vec<fetch_multi::MultiPart>),
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
            Answer::Multi(parts) => fetch_multi::multi_response(parts),
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
    /// Shard 0's new topic table; the receiver applies it and acknowledges, with why the
    /// snapshot that forgets a deleted topic's offsets could not be made durable, if so.
    Topics { table: TopicTable, ack: oneshot::Sender<Result<(), String>> },
    /// Asks for the receiver's counters.
    Stats { reply: oneshot::Sender<ShardStats> },
    /// Asks for a page of the groups the receiver coordinates: its first after `after` that
    /// fit `max_bytes` of a LIST_GROUPS answer.
    Groups { after: String, max_bytes: usize, reply: oneshot::Sender<group::GroupPage> },
    /// Promotes the receiver (a replica shard) to master with this `[replication]` section.
    Promote {
        config: crate::replication::config::ReplicationConfig,
        reply: oneshot::Sender<Result<crate::protocol::replication::PromotedShard, BrokerError>>,
    },
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
    pub id: ShardId,
    pub shard_count: usize,
    pub config: Arc<Config>,
    pub log: L,
    pub ports: Ports,
    topics: RefCell<TopicTable>,
    /// Notified when shard 0 sends this shard a table (`Control::Topics`): a replica shard's
    /// follower waits on it for the table its fetched batches came with (`follower.rs`).
    topics_applied: crate::runtime::Signal,
    /// A replica: this shard's table is one shard 0 adopted from the master since this
    /// process started. Until then its epoch says nothing about the master's: a former master
    /// restarted as a replica may hold changes its master never got, under epochs as high as
    /// the master's or higher (`follower.rs` adopts, or waits, before writing anything).
    topics_adopted: Cell<bool>,
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
    /// Latency histograms and errors by code for the metrics endpoint (`shard/metrics.rs`).
    probe: RefCell<crate::metrics::ShardProbe>,
    stopping: Cell<bool>,
    /// Low-share task queue for control-plane work (topic changes, stats, control
    /// messages), so it never stalls produce and fetch in the default queue.
    control_queue: runtime::TaskQueue,
    /// The key index's reader and writer (`key_index_loop`), in a queue of their own with the
    /// control queue's shares, so their CPU time is measured apart.
    key_index_queue: runtime::TaskQueue,
    /// The queue the shard was made in: connections, produce, fetch, the log's own tasks.
    data_queue: runtime::TaskQueue,
    /// Time each queue's tasks ran since start, as [`TASK_QUEUES`] names them (glommio's
    /// counters restart when read, so the metrics snapshot adds them up here).
    queue_busy: RefCell<[Duration; 3]>,
    /// Idempotent produce (`idempotence` module): the sequence windows, this shard's producer
    /// ids, and retries waiting for a copy of themselves that is being appended.
    sequences: RefCell<SequenceWindows>,
    producer_ids: RefCell<ProducerIdAllocator>,
    sequence_waiters: RefCell<SequenceWaiters>,
    /// Origin of the windows' clock (monotonic ms).
    started: Instant,
    /// Consumer groups this shard coordinates (`group` handler): the pure state, the gate
    /// that keeps an offsets commit's check, copy into the log and apply together, and the
    /// parked members-changed watches.
    coordinator: RefCell<crate::group::coordinator::Coordinator>,
    /// Offset commits, deletions and snapshots one at a time, appended in the order they
    /// asked (a later commit of a queue never lands before an earlier one).
    group_gate: crate::runtime::FairGate,
    /// On a replica: the offsets snapshot whose parts the follower is writing (its first
    /// part's offset, parts written, parts).
    replicated_snapshot: std::cell::Cell<Option<(u64, u32, u32)>>,
    watchers: RefCell<group::Watchers>,
    /// Scheduled messages (`schedule` handler): the timer wheel and its progress.
    schedule: RefCell<schedule::ScheduleState>,
    /// Transactional messages (`transaction` handler): the undecided halves of the queues
    /// this shard owns and the parked check-back requests.
    transactions: RefCell<crate::transaction::Transactions>,
    /// Log position past the last decision (op record) appended: the half queue's pin moves
    /// up past a decided half only once the log is durable there.
    decided_to: std::cell::Cell<u64>,
    check_waiters: RefCell<transaction::CheckWaiters>,
    /// The key index (`key_index` handler), once `start_key_index` opened it.
    keys: RefCell<Option<key_index::ShardKeyIndex>>,
    /// What the produce path shares with the key index's reader (`key_index::KeyReader`).
    keys_reader: key_index::KeyReader,
    /// Free connection read buffers, shared by this shard's connections
    /// (`read_buffer_pool_bytes`).
    pub(super) read_buffers: RefCell<crate::protocol::read_buffer::BufferPool>,
    /// Master or replica (`replication` handler); unset for a single broker.
    replication: std::cell::OnceCell<replication::ShardRole>,
    /// A live promotion of a replica shard (`promote` handler).
    promotion: promote::Promotion,
    /// Every time this shard's logic reads or waits on (long-poll deadlines, connection
    /// timeouts, idempotence windows, group sessions); simulated in tests.
    pub clock: SharedClock,
}

/// The shard's task queues, as the `queue` label of `ringmq_task_queue_busy_seconds_total`
/// names them.
pub const TASK_QUEUES: [&str; 3] = ["data", "control", "key_index"];

fn ok_or_stopped<T>(r: Result<T, oneshot::Canceled>, what: &str) -> Result<T, BrokerError> {
    r.map_err(|_| {
        BrokerError::new(ErrorCode::SHUTTING_DOWN, format!("{what} stopped before replying"))
    })
}

impl<L: ShardLog> Shard<L> {
    /// Sends `request` to shard `target` over the data mesh and waits for its reply (`what`
    /// names the target in the error when it stops first).
    pub(super) async fn forward(&self, target: ShardId, request: Request, what: &str) -> Reply {
        self.stats.borrow_mut().forwarded_out += 1;
        let (reply, rx) = oneshot::channel();
        if self.data_mesh.send(target, Forward { request, reply }).await.is_err() {
            return Err(BrokerError::new(
                ErrorCode::SHUTTING_DOWN,
                format!("shard {target} stopped"),
            ));
        }
        ok_or_stopped(rx.await, what)?
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ShardId,
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
            topics_applied: crate::runtime::Signal::default(),
            topics_adopted: Cell::new(false),
            long_poll: RefCell::new(LongPoll::new(waiters)),
            late_visible: RefCell::new(HashMap::new()),
            data_mesh,
            control_mesh,
            metadata: metadata.map(|m| (m, crate::runtime::Semaphore::new(1))),
            stats: RefCell::new(ShardStats { shard: id.get() as u32, ..Default::default() }),
            probe: RefCell::new(crate::metrics::ShardProbe::default()),
            stopping: Cell::new(false),
            control_queue: runtime::TaskQueue::new(&format!("shard-{id}-control"), 100),
            // Its reader and writer yield between steps while they catch up.
            key_index_queue: runtime::TaskQueue::yielding(&format!("shard-{id}-key-index"), 100),
            data_queue: runtime::TaskQueue::current(),
            queue_busy: RefCell::new([Duration::ZERO; 3]),
            sequences: RefCell::new(SequenceWindows::new(
                config.broker.idempotence_max_producer_queues,
                config.broker.idempotence_expiry_ms,
            )),
            // Boot 0 until `start_idempotence` sets this run's start count.
            producer_ids: RefCell::new(ProducerIdAllocator::new(0, id.get(), shard_count)),
            sequence_waiters: RefCell::new(HashMap::new()),
            coordinator: RefCell::new(crate::group::coordinator::Coordinator::new(
                config.group.coordinator(config.broker.max_frame_bytes),
            )),
            group_gate: crate::runtime::FairGate::new(),
            replicated_snapshot: std::cell::Cell::new(None),
            watchers: RefCell::new(group::Watchers::new(config.group.max_watchers)),
            transactions: RefCell::new(crate::transaction::Transactions::new(
                config.transaction.limits(),
            )),
            decided_to: std::cell::Cell::new(0),
            check_waiters: RefCell::new(transaction::CheckWaiters::new(
                config.transaction.max_check_waiters,
            )),
            keys: RefCell::new(None),
            keys_reader: key_index::KeyReader::default(),
            read_buffers: RefCell::new(crate::protocol::read_buffer::BufferPool::new(
                config.broker.read_buffer_pool_bytes,
            )),
            started: clock.now(),
            schedule: RefCell::new(schedule::ScheduleState::new(
                &config,
                clock.now(),
                clock.unix_ms(),
            )),
            replication: std::cell::OnceCell::new(),
            promotion: promote::Promotion::new(),
            clock,
            config,
        }
    }

    /// The task queue for control-plane work on this shard.
    pub fn control_queue(&self) -> runtime::TaskQueue {
        self.control_queue
    }

    /// The task queue the key index's loop runs in.
    pub fn key_index_queue(&self) -> runtime::TaskQueue {
        self.key_index_queue
    }

    /// How long each of the shard's task queues ran since start, by [`TASK_QUEUES`] name.
    pub fn task_queue_busy(&self) -> [(&'static str, Duration); 3] {
        let mut busy = self.queue_busy.borrow_mut();
        let queues = [self.data_queue, self.control_queue, self.key_index_queue];
        for (total, queue) in busy.iter_mut().zip(queues) {
            *total += queue.take_runtime();
        }
        std::array::from_fn(|i| (TASK_QUEUES[i], busy[i]))
    }

    /// Counts a request refused before it reached [`Self::handle`] (a FETCH_NEXT with nothing
    /// to continue), as `handle` counts its errors.
    pub fn count_refused(&self, code: ErrorCode) {
        self.stats.borrow_mut().errors += 1;
        self.probe.borrow_mut().record_error(code);
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
        self.watchers.borrow_mut().close_all();
        self.check_waiters.borrow_mut().close_all();
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
        if let Err(e) = &reply {
            self.stats.borrow_mut().errors += 1;
            self.probe.borrow_mut().record_error(e.code);
        }
        reply
    }

    async fn dispatch(self: &Rc<Self>, request: Request) -> LocalReply {
        self.refuse_on_replica(&request)?;
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
                if self.id == ShardId::FIRST {
                    let me = self.clone();
                    self.control_queue
                        .spawn(async move { me.admin(request).await })
                        .await
                        .unwrap_or_else(|| {
                            Err(BrokerError::new(ErrorCode::INTERNAL, "topic change task was lost"))
                        })
                } else {
                    let (reply, rx) = oneshot::channel();
                    if self
                        .control_mesh
                        .send(ShardId::FIRST, Control::Admin { request, reply })
                        .await
                        .is_err()
                    {
                        return Err(BrokerError::new(ErrorCode::SHUTTING_DOWN, "shard 0 stopped"));
                    }
                    ok_or_stopped(rx.await, "shard 0")?
                }
            }
            Request::Stats => Ok(Response::Stats { shards: self.gather_stats().await }),
            Request::InitProducer => self
                .allocate_producer_id()
                .map(|producer_id| Response::InitProducer { producer_id }),
            Request::InitProducerWindow => {
                self.allocate_producer_id().map(|producer_id| Response::InitProducerWindow {
                    producer_id,
                    window_batches: crate::protocol::producer_id::WINDOW_BATCHES as u32,
                })
            }
            Request::Group(g) => self.group_request(g).await,
            Request::Transaction(t) => self.transaction_request(t).await,
            Request::QueryKeys(q) => self.key_query_request(q).await,
            Request::Replication(r) => self.replication_request(r).await,
            Request::ProduceMulti { entries } => Ok(self.produce_multi(entries).await),
            Request::FetchMulti(f) => return self.fetch_multi(f).await,
            // The connection that received it turns it into the FETCH it continues.
            Request::FetchNext { .. } => Err(BrokerError::new(
                ErrorCode::FETCH_CHAIN_BROKEN,
                "a FETCH_NEXT is served only by the connection that received its fetch",
            )),
            Request::Produce { .. }
            | Request::Fetch { .. }
            | Request::Offsets { .. }
            | Request::ProduceScheduled { .. } => return self.queue_request(request).await,
        };
        response.map(Answer::Response)
    }

    /// A queue request (produce, fetch, offsets, scheduled produce): served here when this
    /// shard owns the queue, else forwarded to the owner.
    pub(super) async fn queue_request(&self, request: Request) -> LocalReply {
        let (entry, queue_id) = self.resolve(&request)?;
        let owner = owner_shard(queue_topic(&request), queue_id, self.shard_count);
        if owner == self.id {
            self.queue_op(entry, queue_id, request).await
        } else {
            self.forward(owner, request, "the owner shard").await.map(Answer::Response)
        }
    }

    /// Handles a queue request forwarded by another shard.
    pub async fn handle_forwarded(self: &Rc<Self>, request: Request) -> Reply {
        self.stats.borrow_mut().forwarded_in += 1;
        if let Request::Group(g) = request {
            return self.group_forwarded(g).await;
        }
        if let Request::Transaction(t) = request {
            return self.transaction_forwarded(t).await;
        }
        if let Request::QueryKeys(q) = request {
            return self.key_query_forwarded(q).await;
        }
        if let Request::FetchMulti(f) = request {
            // Its queues are this shard's: read here, never forwarded again.
            return Ok(self.fetch_multi(f).await?.into_response());
        }
        if let Request::ProduceMulti { .. } = request {
            // A shard forwards a multi's entries one by one (`produce_multi`), never the whole.
            return Err(BrokerError::new(ErrorCode::INTERNAL, "PRODUCE_MULTI is not forwarded"));
        }
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
                // Shard 0 is the table's only source here, and sends one change at a time
                // (under its topic lock, each acknowledged by every shard before the next):
                // its table replaces this one whatever the epochs. A replica's shard 0 adopts
                // its master's, whose epoch may be lower than this broker's own (a former
                // master whose last changes the new master never got).
                *self.topics.borrow_mut() = table;
                // On a replica, shard 0 sends only the tables it adopted from the master:
                // topic changes are refused there (`refuse_on_replica`).
                self.topics_adopted.set(true);
                self.topics_applied.notify();
                // Before the ack: once DELETE_TOPIC is answered, no group has an offset of
                // the topic left (a topic created again under its name starts at 0), not
                // even after a power cut.
                if self.forget_deleted_topics() {
                    let me = self.clone();
                    runtime::spawn_detached(async move {
                        let _ = ack.send(me.snapshot_offsets_durably().await);
                    });
                } else {
                    let _ = ack.send(Ok(()));
                }
            }
            Control::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Control::Groups { after, max_bytes, reply } => {
                let _ = reply.send(self.group_page(&after, max_bytes));
            }
            Control::Promote { config, reply } => {
                let me = self.clone();
                let _detached = self.control_queue.spawn(async move {
                    let _ = reply.send(me.promote_shard(&config).await);
                });
            }
            Control::Admin { request, reply } => {
                let me = self.clone();
                let _detached = self.control_queue.spawn(async move {
                    let r = if me.id == ShardId::FIRST {
                        me.admin(request).await
                    } else {
                        Err(BrokerError::new(ErrorCode::INTERNAL, "topic changes run on shard 0"))
                    };
                    let _ = reply.send(r);
                });
            }
        }
    }

    /// A new idempotent producer id from this shard's range (INIT_PRODUCER and
    /// INIT_PRODUCER_WINDOW).
    fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        self.producer_ids.borrow_mut().allocate().ok_or_else(|| {
            BrokerError::new(
                ErrorCode::INTERNAL,
                format!(
                    "shard {} handed out all producer ids of this broker run; restart the broker",
                    self.id
                ),
            )
        })
    }

    fn resolve(&self, request: &Request) -> Result<(TopicEntry, u32), BrokerError> {
        let (topic, queue_id) = match request {
            Request::Produce { topic, queue_id, .. }
            | Request::Fetch { topic, queue_id, .. }
            | Request::Offsets { topic, queue_id, .. }
            | Request::ProduceScheduled { topic, queue_id, .. } => (topic, *queue_id),
            _ => unreachable!("resolve is called for queue requests only"),
        };
        Ok((self.queue_entry(topic, queue_id)?, queue_id))
    }

    /// The id of `topic` in this shard's copy of the topic table (`None`: not known here).
    pub fn topic_id(&self, topic: &str) -> Option<u32> {
        self.topics.borrow().get(topic).map(|e| e.id)
    }

    /// The entry of `topic` if it exists and has queue `queue_id`.
    fn queue_entry(&self, topic: &str, queue_id: u32) -> Result<TopicEntry, BrokerError> {
        let entry = self.topic_entry(topic)?;
        has_queue(topic, &entry, queue_id)?;
        Ok(entry)
    }

    /// The entry of `topic` if its name is valid and it exists.
    fn topic_entry(&self, topic: &str) -> Result<TopicEntry, BrokerError> {
        validate_topic_name(topic)?;
        self.topics.borrow().get(topic).ok_or_else(|| {
            BrokerError::new(ErrorCode::UNKNOWN_TOPIC, format!("topic {topic:?} does not exist"))
        })
    }

    async fn queue_op(&self, entry: TopicEntry, queue_id: u32, request: Request) -> LocalReply {
        let key = QueueKey::new(TopicId::new(entry.id), QueueId::new(queue_id));
        if matches!(request, Request::Produce { .. } | Request::ProduceScheduled { .. }) {
            self.admit_produce()?;
        }
        match request {
            Request::Produce { batch, .. } => self.produce(key, batch).await.map(Answer::Response),
            Request::ProduceScheduled { delivery, batch, .. } => {
                self.produce_scheduled(key, delivery, batch).await.map(Answer::Response)
            }
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
}

/// UNKNOWN_QUEUE unless `topic` (its `entry`) has queue `queue_id`.
fn has_queue(topic: &str, entry: &TopicEntry, queue_id: u32) -> Result<(), BrokerError> {
    if queue_id >= entry.queue_count {
        return Err(BrokerError::new(
            ErrorCode::UNKNOWN_QUEUE,
            format!("topic {topic:?} has queues 0..{}, not queue {queue_id}", entry.queue_count),
        ));
    }
    Ok(())
}

/// OFFSET_OUT_OF_RANGE for a read of `key` from `from`, with the queue's bounds.
fn out_of_range(key: QueueKey, from: u64, o: super::shard_log::OffsetRange) -> BrokerError {
    BrokerError {
        code: ErrorCode::OFFSET_OUT_OF_RANGE,
        message: format!(
            "offset {from} is out of range for queue {}: it holds [{}, {})",
            key.queue_id, o.min, o.next
        ),
        detail: ErrorDetail::OffsetRange { min: o.min, next: o.next },
    }
}

fn queue_topic(request: &Request) -> &str {
    match request {
        Request::Produce { topic, .. }
        | Request::Fetch { topic, .. }
        | Request::Offsets { topic, .. }
        | Request::ProduceScheduled { topic, .. } => topic,
        _ => "",
    }
}

mod fetch;
pub mod fetch_multi;
mod follower;
mod group;
pub mod key_index;
mod metrics;
mod produce;
mod promote;
pub mod replication;
pub mod schedule;
mod schedule_dedup;
mod stats;
mod system_queue;
mod topic_admin;
pub mod transaction;

#[cfg(test)]
mod tests;
