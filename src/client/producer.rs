//! The producer: queue selection, batching with linger, bounded buffering, pipelined
//! idempotent sends, retries with backoff, and sync / async (future) / batch / oneway sends.
//!
//! Three parts: the public API here ([`Producer`], on the caller's threads), the sender loop
//! (`run_worker`, here: the worker thread's blocking wait on commands, replies and timers),
//! and the accumulator it drives ([`super::accumulator`]: batches, linger, in-flight bounds,
//! retries, memory bound; no I/O of its own, time from a `Clock`).
//!
//! `send_async` picks the queue and encodes the message into that queue's open batch, all on
//! the caller's thread (the `staging` area, as Kafka's record accumulator;
//! a full staging area blocks the caller: backpressure). The worker thread is told only when a
//! queue needs it (a batch opened, sealed, or big enough to pipeline), not per message; while
//! the queue has batches in flight, only a batch big enough to pipeline tells it, and the
//! replies do the rest (on a shared core each wake-up preempted the caller). While
//! the queue has `max_in_flight_per_queue` batches unanswered, new messages collect in the
//! open batch (natural batching: the busier the queue, the bigger its batches); otherwise the
//! worker takes the open batch after `linger` (default 0: at once, so a lone synchronous send
//! pays no delay), and a batch that reaches `max_batch_bytes` is sealed immediately. Across
//! queues, while the producer holds `small_batches_in_flight_bytes` of unanswered batches, open
//! batches below `pipeline_min_batch_bytes` keep gathering too and go in turn as replies come
//! (with thousands of queues round-robin, each batch otherwise held one or two messages).
//!
//! `send_batch` (RocketMQ's batch send) encodes a caller's messages into one batch on the
//! caller's thread, for one topic and one queue selected once (by the first message); the
//! queue's open batch is sealed ahead of it and the worker sends it as it is. The broker stores a
//! batch whole or not at all, so the batch gets one result, [`SendBatchResult`], with the
//! offset range its messages got: one completion per batch, no per-message handle, allocation
//! or clock read.
//!
//! Sends are idempotent: the producer gets an id and the broker's window of batches per queue
//! from the broker (INIT_PRODUCER_WINDOW; INIT_PRODUCER and a window of 5 from a broker before
//! round 45) and numbers each queue's batches (epoch, base sequence: docs/protocol.md,
//! "Idempotent produce"). Each queue's order and retries are a
//! [`QueueSequencer`](super::sequencer::QueueSequencer): batches go to the shard that owns the
//! queue, several at once but in sequence order; on a retriable failure (connection loss,
//! NOT_OWNER, SHUTTING_DOWN) or a send unanswered for `request_timeout`, the queue resends from
//! its first unacknowledged batch, in order, after a backoff (`retry_backoff`, doubling up to
//! `retry_backoff_max`, with the route refreshed), until the batch's `send_timeout` (counted
//! from its first message) runs out. The broker answers copies it already stored with their
//! original offsets, so a retry never stores a message twice and never reorders a queue
//! (ordered messages with [`QueueSelector::KeyHash`]).
//!
//! The worker's cost per message does not grow with the number of queues: it looks only at
//! queues something happened to (a dirty queue of indexes) and at due timers (a heap of
//! wake-ups: lingers, request timeouts, backoffs, send deadlines), so a step is O(log queues).
//!
//! Memory is bounded by `max_buffer_bytes` of batches, open ones included (staged by callers,
//! or taken by the worker and not yet answered), and `buffer_messages` messages staged; past
//! that callers wait (and lingering batches go at once) until replies free room. Open batches
//! also hold room not yet written: up to 64 KiB each, and at most `max_buffer_bytes` more in
//! all for queues whose batches fill up (their next batch gets its whole room at once).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{bounded, select, Receiver, Sender, TryRecvError};

use super::accumulator::{BatchSink, Command, Worker};
use super::error::{ClientError, Result};
use super::message::Message;
use super::pending::{pending, Pending};
use super::router::Router;
use super::selector::QueueSelector;
use super::send_handle::SendHandle;
use super::staging::{Staging, Target};
use crate::format::{BatchBuilder, FormatError};
use crate::protocol::message::{Delivery, PRODUCE_FLAG_NO_RESPONSE};
use crate::protocol::producer_id::LEGACY_WINDOW_BATCHES;
use crate::protocol::{message_id, ErrorCode, Request, Response, SendStatus};
use crate::runtime::{system_clock, SharedClock};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Which queue each message goes to. Default [`QueueSelector::RoundRobinPerBatch`]: a
    /// topic's queues in turn, a batch at a time (as RocketMQ's `autoBatch` and Kafka's
    /// sticky partitioner); `RoundRobin` for a message at a time, `KeyHash` for ordered
    /// messages.
    pub selector: QueueSelector,
    /// How long an open batch of an idle queue waits for more messages. Default 0 (batches
    /// still grow while the queue's previous batch is in flight). A producer that sends
    /// steadily in small pieces sends a request for nearly every piece with 0; about 1 ms
    /// cut the requests to a sixth and kept ack p99 near 1.4 ms where 0 gave 15 ms on a
    /// 2-vCPU VM (tuning/README.md, "Producer linger for latency on a virtual machine").
    pub linger: Duration,
    /// Largest batch (header included); at most the broker's `max_batch_bytes`. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Messages callers may stage (in open batches and sealed ones the worker has not taken);
    /// a caller past it waits, and lingering batches go at once. Default 100,000.
    pub buffer_messages: usize,
    /// Bytes of batches the producer may hold: open, sealed, waiting and in flight. Default
    /// 32 MiB.
    pub max_buffer_bytes: usize,
    /// Batches of one queue sent and not yet answered: at most the broker's window (the
    /// batches of each producer and queue it remembers, so any of them can be resent and is
    /// answered with its original offsets; 16, and 5 for brokers before round 45). `None`
    /// (the default): the broker's window, as `Producer::new` learns it. A value above it is
    /// refused there.
    pub max_in_flight_per_queue: Option<usize>,
    /// A partly filled batch (sealed by `linger`) is sent while its queue has another batch in
    /// flight only once it holds this many bytes; smaller ones wait for the queue's replies and
    /// keep gathering messages (natural batching). Full batches (`max_batch_bytes`) are always
    /// pipelined up to `max_in_flight_per_queue`; one filled while its queue has batches in
    /// flight goes when the worker next looks at the queue, with their next reply at the
    /// latest. 0 pipelines every batch. Default 64 KiB.
    pub pipeline_min_batch_bytes: usize,
    /// While the producer holds this many bytes of batches sent or waiting to be sent and
    /// not yet answered, a partly filled batch smaller than `pipeline_min_batch_bytes` is not
    /// taken, whatever its linger: it stays open and keeps gathering messages until replies
    /// bring the bytes below this (full batches and larger ones go as before). With thousands
    /// of queues, each batch otherwise held the one or two messages that came since its
    /// queue's last batch. Best well below `max_buffer_bytes`, whose rest then holds the
    /// gathering batches. 0: off. Default 4 MiB.
    pub small_batches_in_flight_bytes: usize,
    /// Wait before resending after a retriable failure; doubles per failure in a row up to
    /// `retry_backoff_max`. Default 50 ms.
    pub retry_backoff: Duration,
    /// Default 1 s.
    pub retry_backoff_max: Duration,
    /// Total time a message may take, from `send` to the broker's reply, retries included
    /// (RocketMQ's sendMsgTimeout); then it fails with the last retriable refusal
    /// (`ClientError::GaveUp`, e.g. DISK_FULL), or with a timeout when the broker never
    /// answered. Default 3 s, enough to ride
    /// out a broker restart.
    pub send_timeout: Duration,
    /// How long one send of a batch waits for its reply before it is resent (the broker
    /// answers a copy of a stored batch with its offsets). Default 2 s.
    pub request_timeout: Duration,
    /// Record a trace event for every message sent (status, latency, where it was stored)
    /// into a trace topic ([`super::trace`]). Default None (off).
    pub trace: Option<super::trace::TraceConfig>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            selector: QueueSelector::RoundRobinPerBatch,
            linger: Duration::ZERO,
            max_batch_bytes: 1 << 20,
            buffer_messages: 100_000,
            max_buffer_bytes: 32 << 20,
            max_in_flight_per_queue: None,
            pipeline_min_batch_bytes: 64 << 10,
            small_batches_in_flight_bytes: 4 << 20,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            send_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            trace: None,
        }
    }
}

/// Where a sent message was stored. Made for every message of a batch when its reply comes,
/// so it allocates nothing: the topic name is shared with the producer's queue state, and the
/// message id is made on demand ([`SendResult::message_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    pub status: SendStatus,
    pub topic: Arc<str>,
    /// The broker's id of the topic (part of the message id).
    pub topic_id: u32,
    pub queue_id: u32,
    pub queue_offset: u64,
}

impl SendResult {
    /// The message id (RocketMQ's msgId: topic id, queue id and offset), made on demand.
    pub fn message_id(&self) -> String {
        message_id(self.topic_id, self.queue_id, self.queue_offset)
    }
}

/// Where a [`Producer::send_batch`] was stored: all of its messages, at consecutive offsets
/// `first_offset..first_offset + count` of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBatchResult {
    pub status: SendStatus,
    pub topic: String,
    /// The broker's id of the topic (part of every message id).
    pub topic_id: u32,
    pub queue_id: u32,
    pub first_offset: u64,
    pub count: u32,
}

impl SendBatchResult {
    /// The offsets the batch's messages got, in the batch's order.
    pub fn offsets(&self) -> std::ops::Range<u64> {
        self.first_offset..self.first_offset + u64::from(self.count)
    }

    /// The message id of the batch's `index`-th message (made on demand: a batch result costs
    /// no allocation per message).
    pub fn message_id(&self, index: u32) -> Option<String> {
        (index < self.count)
            .then(|| message_id(self.topic_id, self.queue_id, self.first_offset + u64::from(index)))
    }

    /// Every message id, in the batch's order.
    pub fn message_ids(&self) -> Vec<String> {
        (0..self.count).filter_map(|i| self.message_id(i)).collect()
    }
}

pub struct Producer {
    router: Arc<Router>,
    clock: SharedClock,
    config: ProducerConfig,
    /// `config.max_in_flight_per_queue` within the broker's window, or the window.
    max_in_flight_per_queue: usize,
    staging: Arc<Staging>,
    commands: Option<Sender<Command>>,
    worker: Option<JoinHandle<()>>,
    /// With [`ProducerConfig::trace`]: where the worker records send events.
    tracer: Option<Arc<super::trace::Tracer>>,
}

/// A new producer id and the broker's window (batches per queue it remembers): asks with
/// INIT_PRODUCER_WINDOW, and with INIT_PRODUCER where the broker is older than that
/// (UNSUPPORTED_API), whose window is [`LEGACY_WINDOW_BATCHES`].
pub(crate) fn init_producer(router: &Router) -> Result<(i64, usize)> {
    let (answer, asked) = match router.call_bootstrap(&Request::InitProducerWindow) {
        Err(e) if e.code() == Some(ErrorCode::UNSUPPORTED_API) => {
            (router.call_bootstrap(&Request::InitProducer)?, "INIT_PRODUCER")
        }
        other => (other?, "INIT_PRODUCER_WINDOW"),
    };
    match answer {
        Response::InitProducerWindow { producer_id, window_batches }
            if producer_id >= 0 && window_batches >= 1 =>
        {
            Ok((producer_id, window_batches as usize))
        }
        Response::InitProducer { producer_id } if producer_id >= 0 => {
            Ok((producer_id, LEGACY_WINDOW_BATCHES))
        }
        other => Err(ClientError::Protocol(format!(
            "{asked} got {other:?} instead of a producer id and window"
        ))),
    }
}

impl Producer {
    pub fn new(router: Arc<Router>, config: ProducerConfig) -> Result<Producer> {
        if config.max_batch_bytes < crate::format::HEADER_LEN + 32 {
            return Err(ClientError::Invalid("max_batch_bytes is too small".into()));
        }
        let (producer_id, window) = init_producer(&router)?;
        let mut config = config;
        let max_in_flight_per_queue = match config.max_in_flight_per_queue {
            None => window,
            Some(n) if (1..=window).contains(&n) => n,
            Some(n) => {
                return Err(ClientError::Invalid(format!(
                    "max_in_flight_per_queue {n} is not in 1..={window}: the broker remembers \
                     the last {window} batches of a producer and queue (its window)"
                )))
            }
        };
        config.max_in_flight_per_queue = Some(max_in_flight_per_queue);
        let tracer = match &config.trace {
            Some(t) => Some(super::trace::Tracer::start(router.clone(), t.clone())?),
            None => None,
        };
        // Wake-ups and flushes only: messages go through the staging area.
        let (tx, rx) = bounded(COMMANDS_CAPACITY);
        let clock = system_clock();
        let mut worker = Worker::new(router.clone(), config.clone(), producer_id, clock.clone());
        worker.set_tracer(tracer.clone());
        let staging = worker.staging().clone();
        let handle = std::thread::Builder::new()
            .name("ringmq-producer".into())
            .spawn(move || run_worker(worker, rx))
            .map_err(|e| ClientError::Invalid(format!("cannot start producer thread: {e}")))?;
        Ok(Producer {
            router,
            clock,
            config,
            max_in_flight_per_queue,
            staging,
            commands: Some(tx),
            worker: Some(handle),
            tracer,
        })
    }

    fn select(&self, msg: &Message, selector: &QueueSelector) -> Result<u32> {
        self.router.select_queue(msg, selector)
    }

    /// Queues `msg` with the producer's selector (encoded into its queue's open batch on this
    /// thread); the handle resolves with the result when the batch is answered.
    pub fn send_async(&self, msg: Message) -> Result<SendHandle> {
        self.send_async_ref(&msg)
    }

    /// [`Producer::send_async`] from a borrowed message: it is encoded into its queue's open
    /// batch here and the caller keeps it, so a caller sending many messages can reuse one
    /// `Message` (its topic and body buffers) instead of allocating each.
    pub fn send_async_ref(&self, msg: &Message) -> Result<SendHandle> {
        self.send_async_ref_with(msg, &self.config.selector)
    }

    /// Queues `msg` on the queue `selector` picks.
    pub fn send_async_with(&self, msg: Message, selector: &QueueSelector) -> Result<SendHandle> {
        self.send_async_ref_with(&msg, selector)
    }

    /// [`Producer::send_async_ref`] on the queue `selector` picks.
    pub fn send_async_ref_with(
        &self,
        msg: &Message,
        selector: &QueueSelector,
    ) -> Result<SendHandle> {
        let target = match selector {
            // The queue is picked as the message is staged: the topic's current batch's.
            QueueSelector::RoundRobinPerBatch => {
                Target::PerBatch { queue_count: self.router.queue_count(&msg.topic)? }
            }
            _ => Target::Queue(self.select(msg, selector)?),
        };
        let tx = self.commands.as_ref().ok_or(ClientError::Closed)?;
        enqueue(&self.clock, &self.staging, tx, msg, target)
    }

    /// Sends and waits for the broker's reply (at most `send_timeout`).
    pub fn send(&self, msg: Message) -> Result<SendResult> {
        self.wait_send(self.send_async(msg)?)
    }

    /// Sends `msgs` as one batch (RocketMQ's batch send) and waits for the broker's reply: all
    /// of them are stored, at consecutive offsets of one queue, or none is.
    pub fn send_batch(&self, msgs: Vec<Message>) -> Result<SendBatchResult> {
        self.wait(self.send_batch_async(msgs)?)
    }

    /// Queues `msgs` as one batch on the queue the producer's selector picks for the first
    /// message. The batch is encoded here, on the caller's thread; the worker sends it as it
    /// is, in its queue's order after messages queued before it, and completes one handle for
    /// the whole batch (no per-message handle, allocation or clock read). Every message must
    /// be for the same topic, and the batch must fit in `max_batch_bytes`; messages without a
    /// timestamp share the time of this call.
    pub fn send_batch_async(&self, msgs: Vec<Message>) -> Result<Pending<Result<SendBatchResult>>> {
        let selector = self.config.selector.clone();
        self.send_batch_async_with(msgs, &selector)
    }

    /// [`Producer::send_batch_async`] on the queue `selector` picks for the first message.
    pub fn send_batch_async_with(
        &self,
        msgs: Vec<Message>,
        selector: &QueueSelector,
    ) -> Result<Pending<Result<SendBatchResult>>> {
        let Some(first) = msgs.first() else {
            return Err(ClientError::Invalid("a batch needs at least one message".into()));
        };
        if let Some(other) = msgs.iter().find(|m| m.topic != first.topic) {
            return Err(ClientError::Invalid(format!(
                "a batch goes to one topic: {:?} and {:?} are mixed",
                first.topic, other.topic
            )));
        }
        let queue_id = self.select(first, selector)?;
        let started = self.clock.now();
        let now = self.clock.unix_ms();
        let mut builder = BatchBuilder::new(self.config.max_batch_bytes);
        for (i, msg) in msgs.iter().enumerate() {
            msg.with_record(msg.timestamp_ms.unwrap_or(now), |r| builder.push(r)).map_err(|e| {
                ClientError::Invalid(format!(
                    "message {i} of {} does not fit in one batch of max_batch_bytes = {}: {e}",
                    msgs.len(),
                    self.config.max_batch_bytes
                ))
            })?;
        }
        let (done, p) = pending();
        let tx = self.commands.as_ref().ok_or(ClientError::Closed)?;
        let wake = || drop(tx.send(Command::Wake));
        if self.staging.push_batch(&first.topic, queue_id, builder, started, done, &wake) {
            tx.send(Command::Wake).map_err(|_| ClientError::Closed)?;
        }
        Ok(p)
    }

    pub fn send_with(&self, msg: Message, selector: &QueueSelector) -> Result<SendResult> {
        self.wait_send(self.send_async_with(msg, selector)?)
    }

    /// How long a blocking send waits: the worker resolves every message by its send
    /// timeout; the margin covers the wait in the hand-off channel.
    fn wait_bound(&self) -> Duration {
        self.config.send_timeout + self.config.request_timeout
    }

    fn wait<T>(&self, p: Pending<Result<T>>) -> Result<T> {
        let bound = self.wait_bound();
        match p.wait_timeout(bound) {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(bound.as_millis() as u64)),
        }
    }

    fn wait_send(&self, h: SendHandle) -> Result<SendResult> {
        let bound = self.wait_bound();
        match h.wait_timeout(bound) {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(bound.as_millis() as u64)),
        }
    }

    /// Sends `msg` to be delivered after delay level `level` (1-based; by default 1s 5s 10s
    /// 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h, the broker's `schedule.delay_levels`).
    /// The result says where the broker holds it until then ([`super::scheduled`]).
    pub fn send_delayed(&self, msg: Message, level: u32) -> Result<SendResult> {
        let queue_id = self.select(&msg, &self.config.selector)?;
        let topic = msg.topic.clone();
        self.send_scheduled_batch(&topic, queue_id, &[msg], Delivery::Level(level))
    }

    /// Sends `msg` to be delivered at `at` (at once if it is past; refused beyond the
    /// broker's horizon). The result says where the broker holds it until then.
    pub fn send_at(&self, msg: Message, at: SystemTime) -> Result<SendResult> {
        let queue_id = self.select(&msg, &self.config.selector)?;
        let topic = msg.topic.clone();
        let delivery = Delivery::AtMs(super::scheduled::unix_ms(at));
        self.send_scheduled_batch(&topic, queue_id, &[msg], delivery)
    }

    /// Sends `msgs` as one batch to `topic` queue `queue_id`, delivered per `delivery`
    /// (a delay level or a Unix time in ms); their own `topic` fields are ignored.
    pub fn send_scheduled_batch(
        &self,
        topic: &str,
        queue_id: u32,
        msgs: &[Message],
        delivery: Delivery,
    ) -> Result<SendResult> {
        super::scheduled::send(
            &self.router,
            topic,
            queue_id,
            msgs,
            delivery,
            self.config.max_batch_bytes,
            self.clock.unix_ms(),
            self.config.send_timeout,
        )
    }

    /// Sends `msg` alone, now, without asking for a reply (RocketMQ oneway): no result, no
    /// retry, no batching. Errors only when it could not be written.
    pub fn send_oneway(&self, msg: Message) -> Result<()> {
        let queue_id = self.select(&msg, &self.config.selector)?;
        let ts = msg.timestamp_ms.unwrap_or_else(|| self.clock.unix_ms());
        let mut b = BatchBuilder::new(self.config.max_batch_bytes);
        msg.with_record(ts, |r| b.push(r)).map_err(too_large)?;
        let request = Request::Produce {
            topic: msg.topic.clone(),
            queue_id,
            flags: PRODUCE_FLAG_NO_RESPONSE,
            batch: b.finish(-1, -1).into(),
        };
        self.router.queue_connection(&msg.topic, queue_id)?.send_oneway(&request)
    }

    /// Seals every open batch and waits until everything queued so far got its reply.
    pub fn flush(&self) -> Result<()> {
        let (c, p) = pending();
        let tx = self.commands.as_ref().ok_or(ClientError::Closed)?;
        tx.send(Command::Flush(c)).map_err(|_| ClientError::Closed)?;
        p.wait();
        Ok(())
    }

    /// Flushes and stops the worker.
    pub fn close(mut self) -> Result<()> {
        let r = self.flush();
        self.shutdown();
        r
    }

    fn shutdown(&mut self) {
        self.commands.take();
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
        // After the worker recorded its last sends: they are sent to the trace topic too.
        if let Some(t) = self.tracer.take() {
            t.close();
        }
    }

    /// Trace events dropped so far (the trace queue was full or a trace batch failed); 0
    /// without tracing.
    pub fn trace_dropped(&self) -> u64 {
        self.tracer.as_ref().map_or(0, |t| t.dropped())
    }

    /// Batches of a queue this producer keeps unanswered at most: the configured
    /// `max_in_flight_per_queue`, or the broker's window when that was `None`.
    pub fn max_in_flight_per_queue(&self) -> usize {
        self.max_in_flight_per_queue
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The worker drains what was queued, then exits when the channel closes.
        self.shutdown();
    }
}

/// The caller's side of `send_async` after the queue is chosen: the message's timestamp, its
/// encoding into the queue's open batch in the staging area (waits while that is full), its
/// handle (shared with the batch: no allocation), and a wake-up for the worker when the queue
/// needs it to act (not per message).
pub(crate) fn enqueue(
    clock: &SharedClock,
    staging: &Staging,
    tx: &Sender<Command>,
    msg: &Message,
    target: impl Into<Target>,
) -> Result<SendHandle> {
    let timestamp_ms = msg.timestamp_ms.unwrap_or_else(|| clock.unix_ms());
    let wake = || drop(tx.send(Command::Wake));
    let (handle, woke) =
        staging.append(&msg.topic, target, msg, timestamp_ms, || clock.now(), &wake);
    if woke {
        tx.send(Command::Wake).map_err(|_| ClientError::Closed)?;
    }
    Ok(handle)
}

pub(crate) fn too_large(e: FormatError) -> ClientError {
    ClientError::Invalid(format!("message does not fit in one batch: {e}"))
}

/// The sender loop on the producer's worker thread: takes commands (bounded by the
/// accumulator's memory), replies and timer wake-ups, and lets the accumulator act on each.
/// It exits once the commands channel is closed and every batch is answered.
pub(crate) fn run_worker<S: BatchSink>(mut worker: Worker<S>, commands: Receiver<Command>) {
    /// Closes the staging area when the worker ends, also by a panic: callers waiting for
    /// room are woken with an error instead of blocking forever.
    struct CloseOnExit(Arc<Staging>);
    impl Drop for CloseOnExit {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = CloseOnExit(worker.staging().clone());
    let mut commands_open = true;
    // The same channel for the worker's life; cloned once, not per turn.
    let replies_woken = worker.replies_woken().clone();
    loop {
        worker.take_replies();
        worker.step(worker.now());
        worker.finish_flushes();
        if !commands_open && worker.is_drained() {
            return;
        }
        if worker.has_replies() {
            continue;
        }
        let timeout = match worker.next_wakeup() {
            Some(t) => t.saturating_duration_since(worker.now()),
            None => Duration::from_secs(3600),
        };
        if commands_open && worker.accepts_commands() {
            select! {
                recv(commands) -> c => match c {
                    Ok(c) => {
                        worker.command(c);
                        commands_open = take_queued(&mut worker, &commands);
                    }
                    Err(_) => { commands_open = false; worker.seal_all(); }
                },
                recv(replies_woken) -> _ => {},
                default(timeout) => {},
            }
        } else {
            let _ = replies_woken.recv_timeout(timeout);
        }
    }
}

/// The hand-off channel's capacity: wake-ups (at most about one outstanding) and flushes.
const COMMANDS_CAPACITY: usize = 64;

/// Commands the worker takes in one turn before it steps: a busy producer's messages are
/// appended back to back, and the turn's fixed costs (clock reads, the dirty queues' step, the
/// channel select) are paid once per up to this many messages instead of once per message.
const COMMANDS_PER_TURN: usize = 1024;

/// Takes the commands already queued (at most [`COMMANDS_PER_TURN`], and only while the worker
/// accepts them); false once the channel is closed (then every open batch is sealed).
fn take_queued<S: BatchSink>(worker: &mut Worker<S>, commands: &Receiver<Command>) -> bool {
    for _ in 1..COMMANDS_PER_TURN {
        if !worker.accepts_commands() {
            break;
        }
        match commands.try_recv() {
            Ok(c) => worker.command(c),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                worker.seal_all();
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::scripted_broker::{one_shard_with, scripted_broker_refusing};
    use crate::client::Client;
    use crate::protocol::ErrorDetail;

    /// A broker from before round 45 refuses INIT_PRODUCER_WINDOW (UNSUPPORTED_API) and keeps 5
    /// batches a queue: the producer asks INIT_PRODUCER instead and keeps at most 5.
    #[test]
    fn a_producer_keeps_a_window_of_5_with_a_broker_before_init_producer_window() {
        let addr = scripted_broker_refusing(|port, request| match request {
            Request::InitProducerWindow => {
                Err((ErrorCode::UNSUPPORTED_API, "unknown api key 23".into(), ErrorDetail::None))
            }
            Request::InitProducer => Ok(Response::InitProducer { producer_id: 3 << 16 }),
            Request::Metadata { .. } => Ok(one_shard_with(port, vec!["t".into()], 1)),
            Request::Produce { queue_id, batch, .. } => Ok(Response::Produce {
                status: SendStatus::SendOk,
                topic_id: 1,
                queue_id,
                base_offset: 0,
                record_count: crate::format::BatchView::parse(&batch, usize::MAX)
                    .unwrap()
                    .header
                    .record_count,
                store_timestamp_ms: 1,
            }),
            other => panic!("{other:?}"),
        });
        let client = Client::connect(&addr).unwrap();
        let producer = client.producer(ProducerConfig::default()).unwrap();
        assert_eq!(producer.max_in_flight_per_queue(), LEGACY_WINDOW_BATCHES);
        assert_eq!(producer.send(Message::new("t", "m")).unwrap().queue_offset, 0);
        let over = ProducerConfig { max_in_flight_per_queue: Some(6), ..Default::default() };
        let e = client.producer(over).err().expect("6 is over that broker's window");
        assert!(matches!(e, ClientError::Invalid(_)) && e.to_string().contains("1..=5"), "{e}");
        let within = ProducerConfig { max_in_flight_per_queue: Some(5), ..Default::default() };
        assert_eq!(client.producer(within).unwrap().max_in_flight_per_queue(), 5);
    }
}
