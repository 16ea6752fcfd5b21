//! The producer: queue selection, batching with linger, bounded buffering, pipelined sends,
//! retries, and sync / async (future) / oneway sends.
//!
//! `send_async` picks the queue on the caller's thread and hands the message to the
//! producer's worker thread through a bounded channel (a full channel blocks the caller:
//! backpressure). The worker keeps one open batch per queue. While the queue has a batch in
//! flight, new messages collect in the open batch (natural batching: the busier the queue, the
//! bigger its batches); once the queue is idle the open batch is sealed after `linger`
//! (default 0: at once, so a lone synchronous send pays no delay), and a batch that reaches
//! `max_batch_bytes` is sealed immediately. Sealed batches go to the shard that owns the
//! queue over its connection; many queues are in flight at once, but **one batch per queue**
//! at a time, so a queue's messages are stored in send order even across retries (ordered
//! messages with [`QueueSelector::KeyHash`]). Retriable failures (connection loss, NOT_OWNER,
//! SHUTTING_DOWN) are retried `retries` times after `retry_backoff`, refreshing the route;
//! after a connection loss a retried batch may be stored twice (at-least-once).
//!
//! Memory is bounded by `buffer_messages` queued in the channel plus `max_buffer_bytes` of
//! batches held by the worker; past that the worker stops taking messages until replies come.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};

use super::error::{ClientError, Result};
use super::message::{now_ms, Message};
use super::pending::{pending, Completer, Pending};
use super::router::Router;
use super::selector::QueueSelector;
use crate::format::{BatchBuilder, FormatError};
use crate::protocol::message::PRODUCE_FLAG_NO_RESPONSE;
use crate::protocol::{message_id, ErrorCode, Request, Response, SendStatus};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub selector: QueueSelector,
    /// How long an open batch of an idle queue waits for more messages. Default 0 (batches
    /// still grow while the queue's previous batch is in flight).
    pub linger: Duration,
    /// Largest batch (header included); at most the broker's `max_batch_bytes`. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Messages that may wait in the hand-off channel. Default 10000.
    pub buffer_messages: usize,
    /// Bytes of batches the worker may hold (open, waiting and in flight). Default 32 MiB.
    pub max_buffer_bytes: usize,
    /// Extra attempts for a batch after a retriable failure. Default 2.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// How long `send` waits for its reply. Default 10 s.
    pub send_timeout: Duration,
    /// How long the worker waits for the broker's reply to one batch before treating it as
    /// lost (a retriable timeout: retried, and possibly stored twice). Default 15 s, above
    /// the broker's default sync_flush_timeout_ms.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            selector: QueueSelector::RoundRobin,
            linger: Duration::ZERO,
            max_batch_bytes: 1 << 20,
            buffer_messages: 10_000,
            max_buffer_bytes: 32 << 20,
            retries: 2,
            retry_backoff: Duration::from_millis(100),
            send_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// Where a sent message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    pub status: SendStatus,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub message_id: String,
}

type Done = Completer<Result<SendResult>>;

enum Command {
    Send { msg: Message, queue_id: u32, timestamp_ms: i64, done: Done },
    Flush(Completer<()>),
}

struct Reply {
    key: (String, u32),
    /// Which send of the batch this answers (a late reply to an abandoned send is ignored).
    attempt_id: u64,
    result: Result<Response>,
}

pub struct Producer {
    router: Arc<Router>,
    config: ProducerConfig,
    counter: AtomicU32,
    commands: Option<Sender<Command>>,
    worker: Option<JoinHandle<()>>,
}

impl Producer {
    pub fn new(router: Arc<Router>, config: ProducerConfig) -> Result<Producer> {
        if config.max_batch_bytes < crate::format::HEADER_LEN + 32 {
            return Err(ClientError::Invalid("max_batch_bytes is too small".into()));
        }
        let (tx, rx) = bounded(config.buffer_messages.max(1));
        let worker = Worker::new(router.clone(), config.clone());
        let handle = std::thread::Builder::new()
            .name("ringmq-producer".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| ClientError::Invalid(format!("cannot start producer thread: {e}")))?;
        Ok(Producer {
            router,
            config,
            counter: AtomicU32::new(0),
            commands: Some(tx),
            worker: Some(handle),
        })
    }

    fn select(&self, msg: &Message, selector: &QueueSelector) -> Result<u32> {
        let route = self.router.route(&msg.topic)?;
        selector.select(msg, route.queue_count(), &self.counter)
    }

    /// Queues `msg` with the producer's selector; the handle completes with the result.
    pub fn send_async(&self, msg: Message) -> Result<Pending<Result<SendResult>>> {
        let selector = self.config.selector.clone();
        self.send_async_with(msg, &selector)
    }

    /// Queues `msg` on the queue `selector` picks.
    pub fn send_async_with(
        &self,
        msg: Message,
        selector: &QueueSelector,
    ) -> Result<Pending<Result<SendResult>>> {
        let queue_id = self.select(&msg, selector)?;
        let timestamp_ms = msg.timestamp_ms.unwrap_or_else(now_ms);
        let (done, p) = pending();
        let tx = self.commands.as_ref().ok_or(ClientError::Closed)?;
        tx.send(Command::Send { msg, queue_id, timestamp_ms, done })
            .map_err(|_| ClientError::Closed)?;
        Ok(p)
    }

    /// Sends and waits for the broker's reply (at most `send_timeout`).
    pub fn send(&self, msg: Message) -> Result<SendResult> {
        self.wait(self.send_async(msg)?)
    }

    pub fn send_with(&self, msg: Message, selector: &QueueSelector) -> Result<SendResult> {
        self.wait(self.send_async_with(msg, selector)?)
    }

    fn wait(&self, p: Pending<Result<SendResult>>) -> Result<SendResult> {
        match p.wait_timeout(self.config.send_timeout) {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(self.config.send_timeout.as_millis() as u64)),
        }
    }

    /// Sends `msg` alone, now, without asking for a reply (RocketMQ oneway): no result, no
    /// retry, no batching. Errors only when it could not be written.
    pub fn send_oneway(&self, msg: Message) -> Result<()> {
        let queue_id = self.select(&msg, &self.config.selector)?;
        let ts = msg.timestamp_ms.unwrap_or_else(now_ms);
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
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The worker drains what was queued, then exits when the channel closes.
        self.shutdown();
    }
}

fn too_large(e: FormatError) -> ClientError {
    ClientError::Invalid(format!("message does not fit in one batch: {e}"))
}

/// Where the worker sends sealed batches: the seam between batching logic and the network.
/// `send` must eventually call `on_reply` exactly once (also on failure).
pub(crate) trait BatchSink: Send + 'static {
    fn send(
        &self,
        topic: &str,
        queue_id: u32,
        batch: Arc<Vec<u8>>,
        on_reply: super::connection::Callback,
    );
    /// The route of `topic` may be stale (after NOT_OWNER or a connection failure).
    fn refresh(&self, topic: &str);
}

impl BatchSink for Arc<Router> {
    fn send(
        &self,
        topic: &str,
        queue_id: u32,
        batch: Arc<Vec<u8>>,
        on_reply: super::connection::Callback,
    ) {
        match self.queue_connection(topic, queue_id) {
            Ok(conn) => {
                // Written from the batch's own buffer; on failure the callback already ran
                // with the error.
                let _ = conn.send_produce(topic, queue_id, &batch, on_reply);
            }
            Err(e) => on_reply(Err(e)),
        }
    }
    fn refresh(&self, topic: &str) {
        Router::refresh(self, topic)
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    dones: Vec<Done>,
    started: Instant,
}

struct ReadyBatch {
    /// Shared with the send in flight (a retry resends the same bytes without copying).
    bytes: Arc<Vec<u8>>,
    dones: Vec<Done>,
    attempts: u32,
    not_before: Instant,
    /// Set while in flight: this send's id and when it was sent.
    attempt_id: u64,
    sent_at: Option<Instant>,
}

#[derive(Default)]
struct QueueState {
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    in_flight: Option<ReadyBatch>,
}

impl QueueState {
    fn is_idle(&self) -> bool {
        self.open.is_none() && self.ready.is_empty() && self.in_flight.is_none()
    }
}

struct Worker<S: BatchSink> {
    sink: S,
    config: ProducerConfig,
    queues: HashMap<(String, u32), QueueState>,
    buffered_bytes: usize,
    next_attempt_id: u64,
    flushes: Vec<Completer<()>>,
    replies_tx: Sender<Reply>,
    replies_rx: Receiver<Reply>,
}

impl<S: BatchSink> Worker<S> {
    fn new(sink: S, config: ProducerConfig) -> Self {
        // Unbounded type, bounded in use: at most one reply per queue is outstanding.
        let (replies_tx, replies_rx) = unbounded();
        Worker {
            sink,
            config,
            queues: HashMap::new(),
            buffered_bytes: 0,
            next_attempt_id: 0,
            flushes: Vec::new(),
            replies_tx,
            replies_rx,
        }
    }

    fn run(mut self, commands: Receiver<Command>) {
        let mut commands_open = true;
        loop {
            self.dispatch();
            self.finish_flushes();
            if !commands_open && self.queues.values().all(QueueState::is_idle) {
                return;
            }
            let timeout = self.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
            let timeout = timeout.unwrap_or(Duration::from_secs(3600));
            let full = self.buffered_bytes >= self.config.max_buffer_bytes;
            if commands_open && !full {
                select! {
                    recv(commands) -> c => match c {
                        Ok(c) => self.command(c),
                        Err(_) => { commands_open = false; self.seal_all(); }
                    },
                    recv(self.replies_rx) -> r => if let Ok(r) = r { self.reply(r) },
                    default(timeout) => {},
                }
            } else if let Ok(r) = self.replies_rx.recv_timeout(timeout) {
                self.reply(r);
            }
            self.expire_overdue();
            self.seal_lingered();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        for q in self.queues.values() {
            let mut consider = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
            if let Some(o) = &q.open {
                // A busy queue's open batch waits for the reply, not for a timer.
                if q.in_flight.is_none() && q.ready.is_empty() {
                    consider(o.started + self.config.linger);
                }
            }
            if q.in_flight.is_none() {
                if let Some(r) = q.ready.front() {
                    consider(r.not_before);
                }
            }
            if let Some(sent) = q.in_flight.as_ref().and_then(|b| b.sent_at) {
                consider(sent + self.config.request_timeout);
            }
        }
        d
    }

    /// Gives up on sends whose reply is overdue: they fail as retriable timeouts.
    fn expire_overdue(&mut self) {
        let now = Instant::now();
        let limit = self.config.request_timeout;
        let overdue: Vec<((String, u32), u64)> = self
            .queues
            .iter()
            .filter_map(|(k, q)| {
                let b = q.in_flight.as_ref()?;
                (now >= b.sent_at? + limit).then(|| (k.clone(), b.attempt_id))
            })
            .collect();
        for (key, attempt_id) in overdue {
            let result = Err(ClientError::Timeout(limit.as_millis() as u64));
            self.reply(Reply { key, attempt_id, result });
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Flush(done) => {
                self.seal_all();
                self.flushes.push(done);
            }
            Command::Send { msg, queue_id, timestamp_ms, done } => {
                let key = (msg.topic.clone(), queue_id);
                let max = self.config.max_batch_bytes;
                let q = self.queues.entry(key).or_default();
                if q.open.is_none() {
                    self.buffered_bytes += crate::format::HEADER_LEN;
                }
                let open = q.open.get_or_insert_with(|| OpenBatch {
                    builder: BatchBuilder::new(max),
                    dones: Vec::new(),
                    started: Instant::now(),
                });
                let before = open.builder.len_bytes();
                match msg.with_record(timestamp_ms, |r| open.builder.push(r)) {
                    Ok(()) => {
                        open.dones.push(done);
                        self.buffered_bytes += open.builder.len_bytes() - before;
                    }
                    Err(FormatError::BatchFull { .. }) if !open.builder.is_empty() => {
                        // Seal the full batch and start a new one with this message.
                        Self::seal(q);
                        let mut builder = BatchBuilder::new(max);
                        match msg.with_record(timestamp_ms, |r| builder.push(r)) {
                            Ok(()) => {
                                self.buffered_bytes += builder.len_bytes();
                                q.open = Some(OpenBatch {
                                    builder,
                                    dones: vec![done],
                                    started: Instant::now(),
                                });
                            }
                            Err(e) => done.complete(Err(too_large(e))),
                        }
                    }
                    Err(e) => {
                        if open.builder.is_empty() {
                            q.open = None;
                            self.buffered_bytes =
                                self.buffered_bytes.saturating_sub(crate::format::HEADER_LEN);
                        }
                        done.complete(Err(too_large(e)));
                    }
                }
                if let Some(o) = &q.open {
                    if o.builder.len_bytes() >= max {
                        Self::seal(q);
                    }
                }
            }
        }
    }

    fn seal(q: &mut QueueState) {
        if let Some(o) = q.open.take() {
            let bytes = Arc::new(o.builder.finish(-1, -1));
            q.ready.push_back(ReadyBatch {
                bytes,
                dones: o.dones,
                attempts: 0,
                not_before: Instant::now(),
                attempt_id: 0,
                sent_at: None,
            });
        }
    }

    fn seal_all(&mut self) {
        for q in self.queues.values_mut() {
            Self::seal(q);
        }
    }

    fn seal_lingered(&mut self) {
        let now = Instant::now();
        for q in self.queues.values_mut() {
            let idle = q.in_flight.is_none() && q.ready.is_empty();
            if idle && q.open.as_ref().is_some_and(|o| now >= o.started + self.config.linger) {
                Self::seal(q);
            }
        }
    }

    /// Sends the next batch of every queue that has none in flight.
    fn dispatch(&mut self) {
        let now = Instant::now();
        let keys: Vec<(String, u32)> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                q.in_flight.is_none() && q.ready.front().is_some_and(|r| r.not_before <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let q = self.queues.get_mut(&key).expect("key from the map");
            let mut batch = q.ready.pop_front().expect("checked non-empty");
            batch.attempts += 1;
            self.next_attempt_id += 1;
            let attempt_id = self.next_attempt_id;
            batch.attempt_id = attempt_id;
            batch.sent_at = Some(now);
            let bytes = batch.bytes.clone();
            q.in_flight = Some(batch);
            let tx = self.replies_tx.clone();
            let reply_key = key.clone();
            self.sink.send(
                &key.0,
                key.1,
                bytes,
                Box::new(move |result| {
                    let _ = tx.send(Reply { key: reply_key, attempt_id, result });
                }),
            );
        }
    }

    fn reply(&mut self, r: Reply) {
        let Some(q) = self.queues.get_mut(&r.key) else { return };
        if q.in_flight.as_ref().map(|b| b.attempt_id) != Some(r.attempt_id) {
            return; // a late reply to a send already given up on
        }
        let Some(batch) = q.in_flight.take() else { return };
        match r.result {
            Ok(Response::Produce { status, topic_id, queue_id, base_offset, .. }) => {
                self.buffered_bytes = self.buffered_bytes.saturating_sub(batch.bytes.len());
                for (i, done) in batch.dones.into_iter().enumerate() {
                    let offset = base_offset + i as u64;
                    done.complete(Ok(SendResult {
                        status,
                        topic: r.key.0.clone(),
                        queue_id,
                        queue_offset: offset,
                        message_id: message_id(topic_id, queue_id, offset),
                    }));
                }
            }
            Ok(other) => {
                self.buffered_bytes = self.buffered_bytes.saturating_sub(batch.bytes.len());
                let e = ClientError::Protocol(format!("produce got a {:?} reply", other.api_key()));
                for done in batch.dones {
                    done.complete(Err(e.clone()));
                }
            }
            Err(e) if e.is_retriable() && batch.attempts <= self.config.retries => {
                tracing::debug!(topic = %r.key.0, queue = r.key.1, "retrying batch: {e}");
                if matches!(e.code(), Some(ErrorCode::NOT_OWNER)) || e.code().is_none() {
                    self.sink.refresh(&r.key.0);
                }
                let mut batch = batch;
                batch.not_before = Instant::now() + self.config.retry_backoff;
                q.ready.push_front(batch);
            }
            Err(e) => {
                self.buffered_bytes = self.buffered_bytes.saturating_sub(batch.bytes.len());
                for done in batch.dones {
                    done.complete(Err(e.clone()));
                }
            }
        }
    }

    fn finish_flushes(&mut self) {
        if !self.flushes.is_empty() && self.queues.values().all(QueueState::is_idle) {
            for f in self.flushes.drain(..) {
                f.complete(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The worker's batching, ordering and retry logic against a scripted sink (no sockets).

    use super::*;
    use crate::client::connection::Callback;
    use crate::format::BatchView;
    use std::sync::Mutex;

    type Sent = (String, u32, Vec<u8>, Callback);

    #[derive(Clone, Default)]
    struct ScriptedSink {
        sent: Arc<Mutex<Vec<Sent>>>,
        refreshed: Arc<Mutex<Vec<String>>>,
    }

    impl BatchSink for ScriptedSink {
        fn send(&self, topic: &str, queue_id: u32, batch: Arc<Vec<u8>>, on_reply: Callback) {
            let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
            self.sent.lock().unwrap().push((topic.to_owned(), queue_id, batch, on_reply));
        }
        fn refresh(&self, topic: &str) {
            self.refreshed.lock().unwrap().push(topic.to_owned());
        }
    }

    impl ScriptedSink {
        /// Waits (bounded) until `n` batches were sent in total and takes the unanswered ones.
        fn take(&self, n: usize, seen: &mut usize) -> Vec<Sent> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                {
                    let mut sent = self.sent.lock().unwrap();
                    if *seen + sent.len() >= n {
                        *seen += sent.len();
                        return sent.drain(..).collect();
                    }
                }
                assert!(Instant::now() < deadline, "only {seen} batches sent, expected {n}");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        fn pending(&self) -> usize {
            self.sent.lock().unwrap().len()
        }
    }

    fn ok_reply(base_offset: u64, batch: &[u8]) -> Result<Response> {
        let h = BatchView::parse(batch, 1 << 20).unwrap().header;
        Ok(Response::Produce {
            status: SendStatus::SendOk,
            topic_id: 1,
            queue_id: 0,
            base_offset,
            record_count: h.record_count,
            store_timestamp_ms: 0,
        })
    }

    fn bodies(batch: &[u8]) -> Vec<String> {
        let v = BatchView::parse(batch, 1 << 20).unwrap();
        v.records().map(|r| String::from_utf8(r.unwrap().body.to_vec()).unwrap()).collect()
    }

    fn start(config: ProducerConfig) -> (ScriptedSink, Sender<Command>, JoinHandle<()>) {
        let sink = ScriptedSink::default();
        let worker = Worker::new(sink.clone(), config);
        let (tx, rx) = bounded(100);
        (sink, tx, std::thread::spawn(move || worker.run(rx)))
    }

    fn send(tx: &Sender<Command>, queue_id: u32, body: &str) -> Pending<Result<SendResult>> {
        let (done, p) = pending();
        let msg = Message::new("t", body);
        tx.send(Command::Send { msg, queue_id, timestamp_ms: 1, done }).unwrap();
        p
    }

    #[test]
    fn one_batch_in_flight_per_queue_and_messages_batch_behind_it() {
        let (sink, tx, worker) = start(ProducerConfig::default());
        let mut seen = 0;
        let p: Vec<_> = (0..5).map(|i| send(&tx, 0, &format!("m{i}"))).collect();
        let other = send(&tx, 1, "q1");
        let mut first = sink.take(2, &mut seen);
        // Queue 0 has one batch in flight; the rest wait behind it, queue 1 goes in parallel.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(sink.pending(), 0, "no second batch for a queue with one in flight");
        let q1 = first.iter().position(|s| s.1 == 1).unwrap();
        let (_, _, b1, cb1) = first.remove(q1);
        cb1(ok_reply(0, &b1));
        assert_eq!(other.wait().unwrap().queue_offset, 0);
        let (_, _, b0, cb0) = first.remove(0);
        let n0 = bodies(&b0).len();
        cb0(ok_reply(0, &b0));
        let mut rest = sink.take(2 + 1, &mut seen);
        let (_, q, b, cb) = rest.remove(0);
        assert_eq!(q, 0);
        let mut all = bodies(&b0);
        all.extend(bodies(&b));
        assert_eq!(all, (0..5).map(|i| format!("m{i}")).collect::<Vec<_>>(), "send order kept");
        cb(ok_reply(n0 as u64, &b));
        let offsets: Vec<u64> = p.into_iter().map(|p| p.wait().unwrap().queue_offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
        drop(tx);
        worker.join().unwrap();
    }

    #[test]
    fn retriable_failures_are_retried_then_reported() {
        let config = ProducerConfig {
            retries: 1,
            retry_backoff: Duration::from_millis(5),
            ..Default::default()
        };
        let (sink, tx, worker) = start(config);
        let mut seen = 0;
        let p = send(&tx, 0, "x");
        let (_, _, b, cb) = sink.take(1, &mut seen).remove(0);
        cb(Err(ClientError::Disconnected("test".into())));
        let (_, _, again, cb) = sink.take(2, &mut seen).remove(0);
        assert_eq!(again, b, "the same batch is sent again");
        assert_eq!(sink.refreshed.lock().unwrap().as_slice(), ["t"]);
        cb(Err(ClientError::Disconnected("test".into())));
        assert!(matches!(p.wait(), Err(ClientError::Disconnected(_))), "retries are bounded");

        let p = send(&tx, 0, "y");
        let (_, _, _, cb) = sink.take(3, &mut seen).remove(0);
        cb(Err(ClientError::Broker {
            code: ErrorCode::CORRUPT_BATCH as u16,
            name: "CORRUPT_BATCH".into(),
            message: "bad".into(),
            detail: crate::protocol::ErrorDetail::None,
        }));
        assert_eq!(p.wait().unwrap_err().code(), Some(ErrorCode::CORRUPT_BATCH), "not retried");
        drop(tx);
        worker.join().unwrap();
    }

    #[test]
    fn an_unanswered_send_times_out_is_retried_and_a_late_reply_is_ignored() {
        let config = ProducerConfig {
            retries: 1,
            retry_backoff: Duration::from_millis(1),
            request_timeout: Duration::from_millis(50),
            ..Default::default()
        };
        let (sink, tx, worker) = start(config);
        let mut seen = 0;
        let p = send(&tx, 0, "slow");
        let (_, _, b, late) = sink.take(1, &mut seen).remove(0);
        // No reply: after request_timeout the batch is sent again.
        let (_, _, again, cb) = sink.take(2, &mut seen).remove(0);
        assert_eq!(again, b);
        late(ok_reply(99, &b)); // the first send's reply arrives too late: ignored
        cb(ok_reply(4, &again));
        assert_eq!(p.wait().unwrap().queue_offset, 4);
        drop(tx);
        worker.join().unwrap();
    }

    #[test]
    fn flush_waits_for_every_reply() {
        let (sink, tx, worker) = start(ProducerConfig::default());
        let mut seen = 0;
        let p = send(&tx, 3, "z");
        let (flushed, flush) = pending();
        tx.send(Command::Flush(flushed)).unwrap();
        let (_, _, b, cb) = sink.take(1, &mut seen).remove(0);
        std::thread::sleep(Duration::from_millis(20));
        let flush = flush.wait_timeout(Duration::ZERO).expect_err("flush waits for the reply");
        cb(ok_reply(7, &b));
        flush.wait();
        assert_eq!(p.wait().unwrap().queue_offset, 7);
        drop(tx);
        worker.join().unwrap();
    }
}
