//! The push consumer: a member of a consumer group that pulls its share of the queues and
//! calls a listener, committing what the listener finished (RocketMQ's
//! `DefaultMQPushConsumer`).
//!
//! ```no_run
//! use ringmq::client::{
//!     Client, ConsumeContext, ConsumeStatus, ConsumedMessage, PushConsumer, PushConsumerConfig,
//! };
//!
//! fn main() -> Result<(), ringmq::client::ClientError> {
//!     let client = Client::connect("127.0.0.1:10911")?;
//!     let config = PushConsumerConfig::new("billing").subscribe("orders", "paid || shipped");
//!     let listener = |messages: &[ConsumedMessage], ctx: &ConsumeContext<'_>| {
//!         for m in messages {
//!             println!("{} {} {}", ctx.queue_id, m.offset, String::from_utf8_lossy(&m.body));
//!         }
//!         ConsumeStatus::Success
//!     };
//!     let consumer = PushConsumer::start(&client, config, listener)?;
//!     // ... until the application stops:
//!     consumer.shutdown(); // commits what was processed and leaves the group
//!     Ok(())
//! }
//! ```
//!
//! # Threads
//! - **control**: heartbeats, rebalances when the group's version moves (told at once by the
//!   watch thread's parked `WATCH_GROUP`, or by a heartbeat), takes and gives up queues,
//!   renews queue locks, commits offsets every `commit_interval`;
//! - **watch**: keeps one `WATCH_GROUP` outstanding and wakes the control thread;
//! - **fetch**: reads every owned queue with one [`MultiQueueReader`](super::MultiQueueReader)
//!   (each broker shard's queues in one long-polled FETCH_MULTI, two in flight per shard, the
//!   broker choosing batches in log order), however many queues the member owns; hands
//!   batches of `batch_size` messages to the workers (concurrent mode) or appends them to
//!   their queue's backlog and schedules the queue (orderly mode);
//! - **workers**: `threads` threads taking tasks from a channel. Concurrent mode: any
//!   batch, in any order; a batch of a queue given up meanwhile is skipped (its next owner
//!   reads it from the commit). Orderly mode: a task is a queue, run by one worker at a time,
//!   which calls the listener on its backlog in queue order, one batch at a time, while it holds
//!   the queue's lock;
//! - **retry**: redelivers `RECONSUME_LATER` batches after their delay (concurrent mode) and
//!   runs suspended or lock-waiting queues again (orderly mode).
//!
//! The thread count does not grow with the queues owned: a member of 10,000 queues runs the
//! same threads as a member of one (the four above, `threads` workers, and one reader thread
//! per broker connection).
//!
//! This file holds the public types, the state the threads share and start/shutdown; the
//! control thread is `control.rs`, the other threads' loops are `threads.rs`.
//!
//! # Ownership of a queue (clustering)
//! Every member computes its share with the same allocation over the member list. A queue is
//! consumed only under the group's lock on it (held at the coordinator, renewed every third of
//! the lease): a member gaining a queue asks for its lock until the previous owner, which stops
//! its fetching, lets running batches finish, commits and unlocks, has let go; only then does it
//! read the committed offset and start. So a queue has at most one consumer at a time and a
//! rebalance redelivers nothing. A member that crashes keeps its locks until its session
//! expires (`group.session_timeout_ms`); its queues then restart from its last commit.
//!
//! # Offsets
//! The offset committed for a queue never passes a message the listener has not finished
//! ([`ProcessQueue`]). Clustering commits to the coordinator with the generation (group
//! version) the member rebalanced on; after an offset reset the coordinator refuses those
//! commits (`STALE_GENERATION`) and the member drops its queues without committing and takes
//! them again from the reset offsets. Broadcasting keeps offsets in a local file instead
//! (every member consumes every queue). Shutdown commits what was finished and leaves the
//! group, so the others take its queues at once.
//!
//! # Bounds
//! Unfinished messages per queue (`max_unfinished_per_queue`; the queue is left out of the
//! fetches above it, so it holds at most that plus one fetch's worth; in concurrent mode also
//! while its oldest unfinished message is more than `max_span_per_queue` offsets behind the
//! fetch position, which bounds what a crash or rebalance redelivers after a stuck one); the
//! messages waiting for a worker, in the channel, in concurrent batches' local redelivery or
//! in orderly queues' backlogs (the fetch thread reads nothing
//! while they hold more than `max_buffered_bytes`, so at most that plus one fetch's worth; a
//! suspended orderly queue's backlog is bounded by the first bound only); the fetches in
//! flight (two per broker shard plus one, each of about `fetch_max_bytes`, 1 MiB).
//!
//! The worker channel is bounded in bytes, not in batches: a fetch answer for thousands of
//! queues holds a few messages of each, a batch each, and a channel of `threads * 2` batches
//! (round 36) made the fetch thread wait for a worker after every second one. With the
//! load generator's core busy producing, each of those waits took a scheduler turn: a member
//! of 10,000 queues consumed 0.5-4 MB/s while they were written (round 37, BENCHMARKS.md).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};

use self::control::Control;
use self::threads::{fetch_loop, retry_loop, watch_loop, worker};

mod control;
mod threads;

use super::error::{ClientError, Result};
use super::message::ConsumedMessage;
use super::process_queue::{ProcessQueue, RetryPolicy};
use super::Client;
use crate::group::allocate::Strategy;
use crate::group::membership::TagFilter;
use crate::schedule::retry::{dlq_topic, retry_topic, SendBackPolicy};

/// What the listener did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeStatus {
    /// Processed: its offsets may be committed.
    Success,
    /// Deliver again later (concurrent: after the retry policy's delay; orderly: the queue is
    /// suspended for `suspend` and the same batch is retried).
    ReconsumeLater,
}

/// Where a batch comes from.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeContext<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    /// Earlier failed deliveries of this batch (0 on the first).
    pub attempt: u32,
}

/// The application's callback, called from the worker threads (in orderly mode never for two
/// batches of one queue at once); a panic counts as `ReconsumeLater`.
pub trait MessageListener: Send + Sync + 'static {
    fn consume(&self, messages: &[ConsumedMessage], ctx: &ConsumeContext<'_>) -> ConsumeStatus;
}

impl<F> MessageListener for F
where
    F: Fn(&[ConsumedMessage], &ConsumeContext<'_>) -> ConsumeStatus + Send + Sync + 'static,
{
    fn consume(&self, messages: &[ConsumedMessage], ctx: &ConsumeContext<'_>) -> ConsumeStatus {
        self(messages, ctx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeMode {
    /// Batches of a queue may be processed in parallel and out of order.
    Concurrent { threads: usize, batch_size: usize },
    /// Each queue's messages strictly in order, one batch at a time, only while holding the
    /// queue's lock; `threads` workers run different queues at once.
    Orderly { threads: usize, batch_size: usize, suspend: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageModel {
    /// The group's members share the queues; offsets are committed to the coordinator.
    Clustering,
    /// Every member consumes every queue; offsets are kept in this local file.
    Broadcasting { offset_file: PathBuf },
}

/// Where a queue without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The queue's end: only messages stored from now on (RocketMQ's default).
    LastOffset,
    FirstOffset,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct PushConsumerConfig {
    pub group: String,
    /// Unique per member; default `<pid>-<random>`.
    pub client_id: String,
    /// (topic, tag expression: `*` or `A || B`).
    pub subscriptions: Vec<(String, String)>,
    pub model: MessageModel,
    pub consume_from: ConsumeFrom,
    pub strategy: Strategy,
    /// Machine room label for [`Strategy::MachineRoom`]; empty for none.
    pub room: String,
    pub mode: ConsumeMode,
    /// Must stay well below the broker's `group.session_timeout_ms`. Default 10 s.
    pub heartbeat_interval: Duration,
    /// Default 1 s.
    pub commit_interval: Duration,
    /// Queue lock lease (renewed every third of it). Default 60 s.
    pub lock_lease: Duration,
    /// Long-poll wait of each fetch at the broker. Default 1 s.
    pub pull_wait: Duration,
    /// Bytes each fetch asks for: the broker answers about this much (at least one batch)
    /// from the queues this member owns on one of its shards. Two fetches per shard are in
    /// flight (plus one for queues just added). Larger fetches read a backlog with fewer
    /// requests; smaller ones hold less memory each. Default 1 MiB.
    pub fetch_max_bytes: u32,
    pub max_unfinished_per_queue: usize,
    /// Concurrent mode: a queue is fetched no more while its oldest unfinished message is
    /// more than this many offsets behind the next one to fetch (after RocketMQ's
    /// `consumeConcurrentlyMaxSpan`, which measures to the newest unfinished message and so
    /// does not stop a queue whose other messages finish as they come). A slow or stuck
    /// message holds the queue's commit back while the workers finish the ones after it;
    /// this bounds what a crash or a rebalance would redeliver to about this plus two
    /// fetches. Never below `max_unfinished_per_queue` (a smaller span would bind first on
    /// every queue consumed in order). Default 2,000.
    pub max_span_per_queue: u64,
    /// The fetch thread reads no more while the messages fetched and not yet taken by a
    /// worker (in batches for the workers or waiting for their local redelivery; orderly: in
    /// their queues' backlogs) hold more than
    /// this many bytes (bodies, keys, tags and properties, plus their fixed size).
    /// Default 32 MiB.
    pub max_buffered_bytes: usize,
    /// Local redelivery: orderly and broadcasting consumers, and a clustering consumer whose
    /// send-back to the retry topic failed.
    pub retry: RetryPolicy,
    /// Clustering, concurrent mode: RECONSUME_LATER sends each message back to the group's
    /// retry topic `%RETRY%<group>` (subscribed automatically), delayed by level
    /// `first_delay_level + reconsume_times`; after `max_reconsume_times` failures it goes to
    /// `%DLQ%<group>` ([`crate::schedule::retry`]). A copy may be as large as a produce
    /// frame of the client's `max_frame_bytes` allows, whatever the application's producers
    /// use; one the broker refuses (a message within about 600 bytes of its
    /// `storage.max_batch_bytes`: the copy's properties and the scheduled wrapping do not fit)
    /// is redelivered locally, per `retry`. `None`: local redelivery only.
    pub send_back: Option<SendBackPolicy>,
    /// Record a trace event for every message the listener handled (group, consumer,
    /// status, latency) into a trace topic ([`super::trace`]). Default None (off).
    pub trace: Option<super::trace::TraceConfig>,
}

impl PushConsumerConfig {
    pub fn new(group: impl Into<String>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        PushConsumerConfig {
            group: group.into(),
            client_id: format!("{}-{nanos:08x}", std::process::id()),
            subscriptions: Vec::new(),
            model: MessageModel::Clustering,
            consume_from: ConsumeFrom::LastOffset,
            strategy: Strategy::Averagely,
            room: String::new(),
            mode: ConsumeMode::Concurrent { threads: 4, batch_size: 1 },
            heartbeat_interval: Duration::from_secs(10),
            commit_interval: Duration::from_secs(1),
            lock_lease: Duration::from_secs(60),
            pull_wait: Duration::from_secs(1),
            fetch_max_bytes: 1 << 20,
            max_unfinished_per_queue: 1000,
            max_span_per_queue: 2000,
            max_buffered_bytes: 32 << 20,
            retry: RetryPolicy::default(),
            send_back: Some(SendBackPolicy::default()),
            trace: None,
        }
    }

    pub fn subscribe(mut self, topic: impl Into<String>, expression: impl Into<String>) -> Self {
        self.subscriptions.push((topic.into(), expression.into()));
        self
    }
}

type QueueKey = (String, u32);

/// One owned queue, shared by the fetch thread, the workers and the control thread.
struct QueueState {
    topic: String,
    queue_id: u32,
    progress: Mutex<ProcessQueue>,
    stop: AtomicBool,
    /// The lock was lost (orderly and clustering): stop without committing.
    lost: AtomicBool,
    /// Batches in the worker channel or being processed.
    running: AtomicUsize,
    /// Orderly: process only before this (the lock's lease as last granted).
    lock_until: Mutex<Instant>,
    /// The fetch thread let go of it (after `stop`): it hands over nothing more.
    detached: AtomicBool,
    /// Its index in the fetch thread's reader (set by the fetch thread).
    slot: AtomicUsize,
    /// Orderly: fetched messages not yet given to the listener.
    orderly: Mutex<OrderlyBacklog>,
}

/// An orderly queue's messages waiting for the listener, in queue order (bounded by
/// `max_unfinished_per_queue` plus one fetch: they count as unfinished).
#[derive(Default)]
struct OrderlyBacklog {
    messages: std::collections::VecDeque<ConsumedMessage>,
    /// A task runs the queue (in the worker channel, in a worker, or waiting to be rerun).
    scheduled: bool,
    /// Failed deliveries of the batch at the head.
    attempt: u32,
    /// Waiting to run again (suspended after `RECONSUME_LATER`, or for its lock): its
    /// messages do not count as buffered, so a stuck queue does not stop the fetches of the
    /// others.
    parked: bool,
    /// What of `messages` counts as buffered (all of them unless parked).
    counted: Buffered,
}

/// What the control thread tells the fetch thread.
enum FetchCommand {
    /// Read this queue (from its progress's next offset), keeping these tags (empty: all).
    Add(Arc<QueueState>, Vec<Vec<u8>>),
    /// Stop reading it (its `stop` is set) and mark it `detached`.
    Remove(Arc<QueueState>),
}

struct Task {
    queue: Arc<QueueState>,
    messages: Vec<ConsumedMessage>,
    attempt: u32,
    /// What its messages count for against `max_buffered_bytes` (counted once, when made).
    bytes: usize,
}

impl Task {
    fn new(queue: Arc<QueueState>, messages: Vec<ConsumedMessage>, attempt: u32) -> Task {
        let bytes = messages.iter().map(message_bytes).sum();
        Task { queue, messages, attempt, bytes }
    }
}

/// A message's bytes as counted against `max_buffered_bytes`.
fn message_bytes(m: &ConsumedMessage) -> usize {
    std::mem::size_of::<ConsumedMessage>()
        + m.body.len()
        + m.key.len()
        + m.tag.len()
        + m.properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

/// The messages fetched and not yet taken by a worker (concurrent mode: in batches for the
/// workers, or waiting for their local redelivery; orderly: in the backlogs of queues not
/// waiting to run again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buffered {
    /// Messages waiting for a worker (or for their redelivery's time).
    pub messages: usize,
    /// Their bytes as counted against [`PushConsumerConfig::max_buffered_bytes`].
    pub bytes: usize,
}

struct Shared {
    config: PushConsumerConfig,
    client: Client,
    listener: Arc<dyn MessageListener>,
    stop: AtomicBool,
    /// The watch thread saw the group change.
    changed: AtomicBool,
    wake: (Mutex<()>, Condvar),
    version: AtomicU64,
    tasks: Mutex<Option<Sender<Task>>>,
    /// What the tasks in the channel hold; `taken` is notified when a worker takes one.
    buffered: Mutex<Buffered>,
    taken: Condvar,
    retries: Mutex<Vec<(Instant, Task)>>,
    /// Every owned queue has been drained (for tools that stop at the end).
    caught_up: AtomicBool,
    /// Clustering, concurrent mode: sends failed messages to the retry or dead-letter topic.
    send_back: Option<(super::Producer, SendBackPolicy)>,
    /// Until when this member's session surely lasts (the last acknowledged heartbeat's send
    /// time plus two thirds of the session timeout). Past it the coordinator may have expired
    /// the member and given its queues to another: fetching pauses, so a member that stalls
    /// (or loses the broker) cannot consume a queue someone else now owns.
    session_until: Mutex<Instant>,
    /// With [`PushConsumerConfig::trace`]: where consume events go.
    tracer: Option<Arc<super::trace::Tracer>>,
    /// Queues to start and stop reading, taken by the fetch thread.
    fetch: Mutex<Vec<FetchCommand>>,
    /// Wakes the fetch thread's wait for replies (set by the fetch thread when it starts).
    fetch_waker: Mutex<Option<super::ReaderWaker>>,
    /// The control thread has given every queue up: the fetch thread ends.
    fetch_done: AtomicBool,
    /// The fetch thread has every queue it was told to read, and read each to its end
    /// ([`super::MultiQueueReader::caught_up`]). Written under the `fetch` lock.
    fetched_all: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Tells the fetch thread (add or remove queues).
    fn tell_fetch(&self, commands: impl IntoIterator<Item = FetchCommand>) {
        let mut fetch = lock(&self.fetch);
        let before = fetch.len();
        fetch.extend(commands);
        if fetch[before..].iter().any(|c| matches!(c, FetchCommand::Add(..))) {
            // Under the lock the fetch thread publishes it with: never true for a queue it
            // was told to read and has not read yet.
            self.fetched_all.store(false, Ordering::SeqCst);
        }
        drop(fetch);
        if let Some(w) = lock(&self.fetch_waker).as_ref() {
            w.wake();
        }
    }

    /// Hands a task to the workers, counting its messages as buffered until a worker takes
    /// it ([`Self::took`]). False when the consumer is shutting down.
    fn submit(&self, task: Task) -> bool {
        let (messages, bytes) = (task.messages.len(), task.bytes);
        self.buffer(messages, bytes);
        let sender = lock(&self.tasks).clone();
        if sender.map_or(true, |tx| tx.send(task).is_err()) {
            self.took(messages, bytes);
            return false;
        }
        true
    }

    /// `messages` holding `bytes` wait for a worker (in a task, or an orderly queue's backlog).
    fn buffer(&self, messages: usize, bytes: usize) {
        let mut b = lock(&self.buffered);
        b.messages += messages;
        b.bytes += bytes;
    }

    /// A worker took `messages` holding `bytes` (or they were dropped with their queue).
    fn took(&self, messages: usize, bytes: usize) {
        let mut b = lock(&self.buffered);
        b.messages -= messages;
        b.bytes -= bytes;
        self.taken.notify_all();
    }

    /// Whether the buffered batches leave room for another fetch; waits up to `wait` for a
    /// worker to take some when they do not.
    fn room_to_fetch(&self, wait: Duration) -> bool {
        let max = self.config.max_buffered_bytes;
        let b = lock(&self.buffered);
        if b.bytes <= max {
            return true;
        }
        let (b, _) = self.taken.wait_timeout(b, wait).unwrap_or_else(|p| p.into_inner());
        b.bytes <= max
    }

    fn wake(&self) {
        let _g = lock(&self.wake.0);
        self.wake.1.notify_all();
    }

    fn sleep(&self, d: Duration) {
        let g = lock(&self.wake.0);
        if !self.stop.load(Ordering::Relaxed) {
            let _ = self.wake.1.wait_timeout(g, d);
        }
    }

    fn call_listener(
        &self,
        q: &QueueState,
        messages: &[ConsumedMessage],
        attempt: u32,
    ) -> ConsumeStatus {
        let ctx = ConsumeContext { topic: &q.topic, queue_id: q.queue_id, attempt };
        // The clocks are read only for the trace (a listener call can be a message).
        let began = self.tracer.as_ref().map(|_| (Instant::now(), super::trace::unix_now_ms()));
        let status =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.listener.consume(messages, &ctx)))
                .unwrap_or_else(|_| {
                    tracing::error!(topic = %q.topic, queue = q.queue_id, "the listener panicked; reconsuming later");
                    ConsumeStatus::ReconsumeLater
                });
        if let (Some(t), Some((began, began_ms))) = (&self.tracer, began) {
            let latency_ms = began.elapsed().as_millis() as u64;
            for m in messages {
                t.record(self.consume_event(q, m, status, began_ms, latency_ms, &t.host));
            }
        }
        status
    }

    /// The trace of one message's listener call, keyed by its original id (a retried copy's
    /// `ORIGIN_MESSAGE_ID`), so a message's consumptions and retries trace together.
    fn consume_event(
        &self,
        q: &QueueState,
        m: &ConsumedMessage,
        status: ConsumeStatus,
        time_ms: i64,
        latency_ms: u64,
        host: &str,
    ) -> super::trace::TraceEvent {
        let origin = m.property(crate::schedule::retry::PROPERTY_ORIGIN_MESSAGE_ID.as_bytes());
        super::trace::TraceEvent::Consume {
            time_ms,
            host: host.to_string(),
            group: self.config.group.clone(),
            consumer_id: self.config.client_id.clone(),
            status: match status {
                ConsumeStatus::Success => "SUCCESS",
                ConsumeStatus::ReconsumeLater => "RECONSUME_LATER",
            }
            .to_string(),
            latency_ms,
            msg_id: origin
                .map(|o| String::from_utf8_lossy(o).into_owned())
                .unwrap_or_else(|| m.message_id.to_string()),
            topic: m.origin_topic().unwrap_or(&q.topic).to_string(),
            queue_id: m.queue_id,
            offset: m.offset,
            store_time_ms: m.store_timestamp_ms,
            reconsume_times: m.reconsume_times(),
        }
    }
}

/// A running push consumer; [`PushConsumer::shutdown`] stops it (dropping it does too).
pub struct PushConsumer {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
}

impl PushConsumer {
    /// Joins the group and starts consuming.
    pub fn start(
        client: &Client,
        config: PushConsumerConfig,
        listener: impl MessageListener,
    ) -> Result<PushConsumer> {
        if config.subscriptions.is_empty() {
            return Err(ClientError::Invalid(
                "a push consumer needs at least one subscription".into(),
            ));
        }
        let mut config = config;
        let sends_back = config.send_back.is_some()
            && config.model == MessageModel::Clustering
            && matches!(config.mode, ConsumeMode::Concurrent { .. });
        if sends_back {
            // The group's retry and dead-letter topics exist before the first failure, and the
            // group consumes its retries like any subscription.
            let retry = retry_topic(&config.group);
            for topic in [retry.clone(), dlq_topic(&config.group)] {
                match client.admin().create_topic(&topic, 1) {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(crate::protocol::ErrorCode::TOPIC_EXISTS) => {}
                    Err(e) => return Err(e),
                }
            }
            if !config.subscriptions.iter().any(|(t, _)| *t == retry) {
                config.subscriptions.push((retry, "*".into()));
            }
        }
        for (topic, expression) in &config.subscriptions {
            TagFilter::parse(expression).map_err(|e| ClientError::Invalid(e.to_string()))?;
            client.admin().route(topic)?;
        }
        let send_back = match config.send_back {
            Some(policy) if sends_back => {
                // Any message the consumer can fetch goes back whole: its copy may be as large
                // as a produce frame allows, not only the default batch (the broker refuses
                // what its own limit does not take). Each copy is a batch of its own.
                let frame = client.router().options.connection.max_frame_bytes;
                let config = super::ProducerConfig {
                    max_batch_bytes: frame.saturating_sub(crate::protocol::PRODUCE_FRAME_OVERHEAD),
                    ..super::ProducerConfig::default()
                };
                Some((client.producer(config)?, policy))
            }
            _ => None,
        };
        let threads_wanted = match config.mode {
            ConsumeMode::Concurrent { threads, .. } | ConsumeMode::Orderly { threads, .. } => {
                threads.max(1)
            }
        };
        // Bounded by what it holds (`max_buffered_bytes`), not by its batches (module docs).
        let (tx, rx) = unbounded::<Task>();
        let tracer = match &config.trace {
            Some(t) => Some(super::trace::Tracer::start(client.router().clone(), t.clone())?),
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            // Its own connections: heartbeats and pulls never wait behind the application's
            // other traffic (a producer's pipelined sends fill a shared connection's slots).
            client: client.detached(),
            listener: Arc::new(listener),
            stop: AtomicBool::new(false),
            changed: AtomicBool::new(true),
            wake: (Mutex::new(()), Condvar::new()),
            version: AtomicU64::new(0),
            tasks: Mutex::new(Some(tx)),
            buffered: Mutex::new(Buffered::default()),
            taken: Condvar::new(),
            retries: Mutex::new(Vec::new()),
            caught_up: AtomicBool::new(false),
            session_until: Mutex::new(Instant::now()),
            send_back,
            tracer,
            fetch: Mutex::new(Vec::new()),
            fetch_waker: Mutex::new(None),
            fetch_done: AtomicBool::new(false),
            fetched_all: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| ClientError::Invalid(format!("cannot start a consumer thread: {e}")))
        };
        for i in 0..threads_wanted {
            let (s, rx) = (shared.clone(), rx.clone());
            threads.push(spawn(format!("ringmq-consume-{i}"), Box::new(move || worker(&s, &rx)))?);
        }
        drop(rx);
        let s = shared.clone();
        threads.push(spawn("ringmq-retry".into(), Box::new(move || retry_loop(&s)))?);
        let s = shared.clone();
        threads.push(spawn("ringmq-watch".into(), Box::new(move || watch_loop(&s)))?);
        let s = shared.clone();
        threads.push(spawn("ringmq-fetch".into(), Box::new(move || fetch_loop(&s)))?);
        let s = shared.clone();
        let control = spawn("ringmq-rebalance".into(), Box::new(move || Control::new(s).run()))?;
        Ok(PushConsumer { shared, threads, control: Some(control) })
    }

    /// The group version this member last rebalanced on.
    pub fn generation(&self) -> u64 {
        self.shared.version.load(Ordering::Relaxed)
    }

    /// Whether every queue this member owns was read to its end (and finished) at least
    /// once since it was taken, and no queue is waiting for its lock.
    pub fn caught_up(&self) -> bool {
        self.shared.caught_up.load(Ordering::Relaxed)
    }

    /// The messages fetched and waiting for a worker.
    pub fn buffered(&self) -> Buffered {
        *lock(&self.shared.buffered)
    }

    /// Stops pulling, lets running batches finish, commits, leaves the group.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake();
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
        // Set by the control thread after its last give-up; here too if it panicked.
        self.shared.fetch_done.store(true, Ordering::SeqCst);
        lock(&self.shared.tasks).take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // After the last listener call: its events are sent too.
        if let Some(t) = &self.shared.tracer {
            t.close();
        }
    }

    /// Trace events dropped so far (the trace queue was full or a trace batch failed); 0
    /// without tracing.
    pub fn trace_dropped(&self) -> u64 {
        self.shared.tracer.as_ref().map_or(0, |t| t.dropped())
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        if self.control.is_some() {
            self.stop();
        }
    }
}
