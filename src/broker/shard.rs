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
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use super::config::Config;
use super::error::BrokerError;
use super::long_poll::LongPoll;
use super::mesh::MeshSender;
use super::metadata_store::MetadataStore;
use super::routing::owner_shard;
use super::shard_log::ShardLog;
use super::topics::{validate_topic_name, TopicEntry, TopicTable};
use crate::format::batch::{peek_length, read_header};
use crate::protocol::{
    ErrorCode, ErrorDetail, Request, Response, SendStatus, ShardStats, TopicInfo, TopicRoute,
};
use crate::runtime;
use crate::storage::{QueueKey, ReadBuf};

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
    data_mesh: MeshSender<Forward>,
    control_mesh: MeshSender<Control>,
    /// Shard 0 only: the metadata file and the lock that serializes topic changes.
    metadata: Option<(MetadataStore, crate::runtime::Semaphore)>,
    stats: RefCell<ShardStats>,
    stopping: Cell<bool>,
    /// Low-share task queue for control-plane work (topic changes, stats, control
    /// messages), so it never stalls produce and fetch in the default queue.
    control_queue: runtime::TaskQueue,
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
    ) -> Self {
        let waiters = config.broker.max_long_poll_waiters_per_queue;
        Shard {
            id,
            shard_count,
            config,
            log,
            ports,
            topics: RefCell::new(topics),
            long_poll: RefCell::new(LongPoll::new(waiters)),
            data_mesh,
            control_mesh,
            metadata: metadata.map(|m| (m, crate::runtime::Semaphore::new(1))),
            stats: RefCell::new(ShardStats { shard: id as u32, ..Default::default() }),
            stopping: Cell::new(false),
            control_queue: runtime::TaskQueue::new(&format!("shard-{id}-control"), 100),
        }
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
        let key = QueueKey::new(entry.id, queue_id);
        match request {
            Request::Produce { batch, .. } => self.produce(key, &batch).await.map(Answer::Response),
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

    async fn produce(&self, key: QueueKey, batch: &[u8]) -> Reply {
        let max = self.config.storage.max_batch_bytes;
        if batch.len() > max {
            return Err(BrokerError::new(
                ErrorCode::BATCH_TOO_LARGE,
                format!("batch of {} bytes exceeds max_batch_bytes = {max}", batch.len()),
            ));
        }
        match peek_length(batch) {
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
        let out = self.log.append(key, batch).await?;
        // Visible to reads now: wake fetches parked at the old end.
        self.long_poll.borrow_mut().notify(key);
        {
            let mut s = self.stats.borrow_mut();
            s.produce_batches += 1;
            s.produce_records += u64::from(out.record_count);
            s.produce_bytes += batch.len() as u64;
        }
        Ok(Response::Produce {
            status: if out.flush_timed_out {
                SendStatus::FlushDiskTimeout
            } else {
                SendStatus::SendOk
            },
            topic_id: key.topic_id,
            queue_id: key.queue_id,
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
        let deadline = Instant::now() + Duration::from_millis(wait_ms.into());
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
            let empty = |o: crate::storage::QueueOffsets, at: u64| Answer::Batches {
                min_offset: o.min,
                next_offset: o.next,
                scan_end_offset: at,
                batches: Vec::new(),
            };
            if from == o.next {
                let now = Instant::now();
                if now >= deadline || self.stopping.get() || scanned >= scan_budget {
                    return Ok(empty(o, from));
                }
                let Some(waiter) = self.long_poll.borrow_mut().register(key) else {
                    return Ok(empty(o, from));
                };
                // Woken by an append, shutdown, or the deadline; then look again.
                let _ = runtime::timeout(deadline - now, waiter).await;
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
        let mut b = BatchBuilder::new(1 << 16);
        for i in 0..n {
            let body = format!("r{i}");
            let rec = Record {
                key: b"",
                tag: b"",
                properties: &[],
                body: body.as_bytes(),
                timestamp_ms: 5,
            };
            b.push(&rec).unwrap();
        }
        b.finish(-1, -1)
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
        let mut config = Config::default();
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
        Rc::new(Shard::new(0, 1, Arc::new(config), log, ports, topics, data, control, None))
    }

    async fn call(s: &Rc<Shard<SimLog>>, request: Request) -> Reply {
        s.handle(request).await.map(Answer::into_response)
    }

    fn produce(queue_id: u32, n: usize) -> Request {
        Request::Produce { topic: "t".into(), queue_id, flags: 0, batch: batch(n) }
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
            let e =
                call(&s, Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch: bad })
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

    fn tagged(n: usize, tag: &[u8]) -> Request {
        let mut b = BatchBuilder::new(1 << 16);
        for _ in 0..n {
            b.push(&Record { key: b"", tag, properties: &[], body: b"x", timestamp_ms: 5 })
                .unwrap();
        }
        Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch: b.finish(-1, -1) }
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
}
