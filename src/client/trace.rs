//! Message trace (RocketMQ's message trace): producers and push consumers, when asked, record
//! what happened to each message into a trace topic, and `ringmq message trace <id>` shows a
//! message's life from it.
//!
//! Enable it with [`super::ProducerConfig::trace`] or [`super::PushConsumerConfig::trace`]. An
//! event ([`TraceEvent`]: a send with its status, latency and where the message was stored; a
//! consumption with its group, consumer, status and latency) is handed to a [`Tracer`]: a
//! bounded queue and one thread that sends the events in batches, as ordinary messages to the
//! trace topic (default [`DEFAULT_TRACE_TOPIC`], created with [`TRACE_TOPIC_QUEUES`] queues
//! when missing), each keyed by the traced message's id so the broker's key index finds them.
//!
//! Recording never blocks the application: when `max_pending` events wait, a new one is dropped
//! and counted ([`Tracer::dropped`]); a trace batch that cannot be sent is dropped and counted
//! too (with a warning), never retried forever. Trace records are JSON (one event per record,
//! tag `send` or `consume`), so other tools can read the topic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::{Deserialize, Serialize};

use super::admin::AdminClient;
use super::error::{ClientError, Result};
use super::message::Message;
use super::producer::{Producer, ProducerConfig};
use super::router::Router;
use crate::protocol::ErrorCode;

/// The trace topic unless configured otherwise (RocketMQ's name).
pub const DEFAULT_TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// Queues of a trace topic the tracer creates.
pub const TRACE_TOPIC_QUEUES: u32 = 4;

/// Where and how trace events are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// Default [`DEFAULT_TRACE_TOPIC`].
    pub topic: String,
    /// Events waiting to be sent at most; past it new events are dropped. Default 10000.
    pub max_pending: usize,
    /// Events per trace batch at most. Default 100.
    pub batch_size: usize,
    /// How long the first event of a batch waits for more. Default 100 ms.
    pub linger: Duration,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            topic: DEFAULT_TRACE_TOPIC.into(),
            max_pending: 10_000,
            batch_size: 100,
            linger: Duration::from_millis(100),
        }
    }
}

/// One thing that happened to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TraceEvent {
    /// A send ended. `time_ms` is when it began (its batch opened), `latency_ms` how long it
    /// took to the broker's reply. Without an id when it failed (nothing was stored).
    Send {
        time_ms: i64,
        host: String,
        client: String,
        /// `SEND_OK`, `FLUSH_DISK_TIMEOUT`, or the error.
        status: String,
        latency_ms: u64,
        msg_id: String,
        topic: String,
        queue_id: u32,
        offset: u64,
        store_time_ms: i64,
    },
    /// A listener call ended for this message. `time_ms` is when the call began.
    Consume {
        time_ms: i64,
        host: String,
        group: String,
        consumer_id: String,
        /// `SUCCESS` or `RECONSUME_LATER`.
        status: String,
        latency_ms: u64,
        msg_id: String,
        topic: String,
        queue_id: u32,
        offset: u64,
        store_time_ms: i64,
        /// Failed deliveries before this one (0: first delivery).
        reconsume_times: u32,
    },
}

impl TraceEvent {
    /// The id the event is keyed by: the traced message's (its original id for a retry).
    pub fn msg_id(&self) -> &str {
        match self {
            TraceEvent::Send { msg_id, .. } | TraceEvent::Consume { msg_id, .. } => msg_id,
        }
    }

    pub fn time_ms(&self) -> i64 {
        match self {
            TraceEvent::Send { time_ms, .. } | TraceEvent::Consume { time_ms, .. } => *time_ms,
        }
    }

    fn tag(&self) -> &'static str {
        match self {
            TraceEvent::Send { .. } => "send",
            TraceEvent::Consume { .. } => "consume",
        }
    }

    /// The trace record for this event.
    pub fn to_message(&self, topic: &str) -> Message {
        let body = serde_json::to_vec(self).expect("a trace event serializes");
        Message::new(topic, body).with_key(self.msg_id()).with_tag(self.tag())
    }

    /// Reads a trace record's body.
    pub fn decode(body: &[u8]) -> std::result::Result<TraceEvent, String> {
        serde_json::from_slice(body).map_err(|e| format!("not a trace event: {e}"))
    }
}

/// The wall clock in Unix ms.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// This machine's host name, for trace events.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The bounded hand-off between the application's threads and the trace thread.
pub struct TraceQueue {
    tx: Sender<TraceEvent>,
    dropped: AtomicU64,
}

impl TraceQueue {
    pub fn new(capacity: usize) -> (TraceQueue, Receiver<TraceEvent>) {
        let (tx, rx) = bounded(capacity.max(1));
        (TraceQueue { tx, dropped: AtomicU64::new(0) }, rx)
    }

    /// Hands `event` over without waiting; counts it as dropped when the queue is full or the
    /// trace thread is gone.
    pub fn record(&self, event: TraceEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Sends recorded events to the trace topic from its own thread. See the module docs.
pub struct Tracer {
    queue: Mutex<Option<TraceQueue>>,
    dropped_on_close: AtomicU64,
    /// Events the trace thread could not send (their batch failed).
    failed: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub host: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tracer {
    /// Creates the trace topic when it does not exist, and starts the trace thread.
    pub fn start(router: Arc<Router>, config: TraceConfig) -> Result<Arc<Tracer>> {
        if config.batch_size == 0 {
            return Err(ClientError::Invalid("trace batch_size must be at least 1".into()));
        }
        let admin = AdminClient::new(router.clone());
        match admin.route(&config.topic) {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC) => {
                match admin.create_topic(&config.topic, TRACE_TOPIC_QUEUES) {
                    Ok(_) => {}
                    // Another client created it meanwhile.
                    Err(e) if e.code() == Some(ErrorCode::TOPIC_EXISTS) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        let producer = Producer::new(router, ProducerConfig::default())?;
        let (queue, rx) = TraceQueue::new(config.max_pending);
        let (failed, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (f, s) = (failed.clone(), sent.clone());
        let thread = std::thread::Builder::new()
            .name("ringmq-trace".into())
            .spawn(move || trace_loop(producer, config, rx, f, s))
            .map_err(|e| ClientError::Invalid(format!("cannot start the trace thread: {e}")))?;
        Ok(Arc::new(Tracer {
            queue: Mutex::new(Some(queue)),
            dropped_on_close: AtomicU64::new(0),
            failed,
            sent,
            thread: Mutex::new(Some(thread)),
            host: host_name(),
        }))
    }

    /// Records `event` without waiting (dropped and counted when the queue is full).
    pub fn record(&self, event: TraceEvent) {
        match &*lock(&self.queue) {
            Some(q) => q.record(event),
            None => {
                self.dropped_on_close.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped: the queue was full, the tracer closed, or their batch failed to send.
    pub fn dropped(&self) -> u64 {
        let queued = lock(&self.queue).as_ref().map_or(0, TraceQueue::dropped);
        queued + self.dropped_on_close.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// Events sent to the trace topic.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sends what is queued and stops the trace thread (later events are dropped).
    pub fn close(&self) {
        if let Some(q) = lock(&self.queue).take() {
            self.dropped_on_close.fetch_add(q.dropped(), Ordering::Relaxed);
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.close();
    }
}

/// The trace thread: batches of up to `batch_size` events, each waiting at most `linger` for
/// more, sent as one batch to one queue of the trace topic.
fn trace_loop(
    producer: Producer,
    config: TraceConfig,
    rx: Receiver<TraceEvent>,
    failed: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
) {
    let mut open = true;
    while open {
        let first = match rx.recv() {
            Ok(e) => e,
            Err(_) => break,
        };
        let mut batch = vec![first.to_message(&config.topic)];
        let deadline = Instant::now() + config.linger;
        while batch.len() < config.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(e) => batch.push(e.to_message(&config.topic)),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let n = batch.len() as u64;
        match producer.send_batch(batch) {
            Ok(_) => {
                sent.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                failed.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(topic = %config.topic, "{n} trace events were not sent: {e}");
            }
        }
    }
    if let Err(e) = producer.close() {
        tracing::warn!("closing the trace producer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_event(i: u64) -> TraceEvent {
        TraceEvent::Send {
            time_ms: 1,
            host: "h".into(),
            client: "c".into(),
            status: "SEND_OK".into(),
            latency_ms: 2,
            msg_id: format!("{i:032X}"),
            topic: "t".into(),
            queue_id: 0,
            offset: i,
            store_time_ms: 3,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (q, rx) = TraceQueue::new(3);
        for i in 0..10 {
            q.record(send_event(i));
        }
        assert_eq!(q.dropped(), 7);
        assert_eq!(rx.try_iter().count(), 3);
        q.record(send_event(11));
        assert_eq!(q.dropped(), 7);
        drop(rx);
        q.record(send_event(12));
        assert_eq!(q.dropped(), 8, "a gone trace thread drops too");
    }

    #[test]
    fn events_round_trip_as_keyed_records() {
        let e = send_event(5);
        let m = e.to_message("RMQ_SYS_TRACE_TOPIC");
        assert_eq!(m.key, format!("{:032X}", 5).into_bytes());
        assert_eq!(m.tag, b"send");
        assert_eq!(TraceEvent::decode(&m.body), Ok(e));
        let c = TraceEvent::Consume {
            time_ms: 9,
            host: "h".into(),
            group: "g".into(),
            consumer_id: "c1".into(),
            status: "SUCCESS".into(),
            latency_ms: 4,
            msg_id: "X".into(),
            topic: "t".into(),
            queue_id: 1,
            offset: 2,
            store_time_ms: 3,
            reconsume_times: 1,
        };
        assert_eq!(TraceEvent::decode(&c.to_message("T").body), Ok(c));
        assert!(TraceEvent::decode(b"{}").unwrap_err().contains("not a trace event"));
        assert!(!host_name().is_empty());
    }
}
