//! The worker's batching, ordering and retry logic against a scripted sink (no sockets).

use super::*;
use crate::client::connection::ProduceReply;
use crate::client::message::Message;
use crate::client::pending::{pending, Pending};
use crate::client::producer::{enqueue, run_worker, SendResult};
use crate::client::send_handle::SendHandle;
use crate::client::staging::Staging;
use crate::format::BatchBuilder;
use crate::format::BatchView;
use crate::protocol::message_id;
use crate::protocol::{ErrorCode, Response, SendStatus};
use crate::runtime::system_clock;
use crate::runtime::{Clock, SimClock};
use crossbeam_channel::{bounded, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

mod stepped;
mod threaded;

type Sent = (String, u32, Vec<u8>, ProduceReply);

#[derive(Clone, Default)]
struct ScriptedSink {
    sent: Arc<Mutex<Vec<Sent>>>,
    refreshed: Arc<Mutex<Vec<String>>>,
    /// Where each sent batch's shared handle points, in send order.
    handles: Arc<Mutex<Vec<usize>>>,
    /// The producer ids handed out by `new_producer_id`, in order.
    new_ids: Arc<Mutex<Vec<i64>>>,
    /// `new_producer_id` fails while set; counts its calls.
    refuse_ids: Arc<std::sync::atomic::AtomicBool>,
    id_asks: Arc<std::sync::atomic::AtomicUsize>,
}

impl BatchSink for ScriptedSink {
    fn send_all(&self, frames: &mut Vec<ProduceFrame>, _max_request_bytes: usize) {
        for f in frames.drain(..) {
            self.handles.lock().unwrap().push(Arc::as_ptr(&f.batch) as usize);
            let batch = Arc::try_unwrap(f.batch).unwrap_or_else(|shared| (*shared).clone());
            self.sent.lock().unwrap().push((f.topic.to_string(), f.queue_id, batch, f.reply));
        }
    }
    fn refresh(&self, topic: &str) {
        self.refreshed.lock().unwrap().push(topic.to_owned());
    }
    fn new_producer_id(&self) -> Result<i64> {
        use std::sync::atomic::Ordering::SeqCst;
        self.id_asks.fetch_add(1, SeqCst);
        if self.refuse_ids.load(SeqCst) {
            return Err(ClientError::Protocol("no id today".into()));
        }
        let mut ids = self.new_ids.lock().unwrap();
        let id = (100 + ids.len() as i64) << 16;
        ids.push(id);
        Ok(id)
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

/// A producer's caller side, as `Producer` holds it: the staging area and the channel.
struct Tx {
    staging: Arc<Staging>,
    commands: Sender<Command>,
    clock: SharedClock,
}

impl Tx {
    fn of<S: BatchSink>(worker: &Worker<S>, commands: Sender<Command>) -> Tx {
        Tx { staging: worker.staging().clone(), commands, clock: worker.clock.clone() }
    }
    fn send(&self, c: Command) -> std::result::Result<(), crossbeam_channel::SendError<Command>> {
        self.commands.send(c)
    }
}

fn start(config: ProducerConfig) -> (ScriptedSink, Tx, JoinHandle<()>) {
    let sink = ScriptedSink::default();
    let worker = Worker::new(sink.clone(), config, PID, system_clock());
    let (tx, rx) = bounded(100);
    let tx = Tx::of(&worker, tx);
    (sink, tx, std::thread::spawn(move || run_worker(worker, rx)))
}

const PID: i64 = 9 << 16;

/// `send_async` of `body` to queue `queue_id` of topic "t" (timestamp 1).
fn send(tx: &Tx, queue_id: u32, body: &str) -> SendHandle {
    let msg = Message { timestamp_ms: Some(1), ..Message::new("t", body) };
    enqueue(&tx.clock, &tx.staging, &tx.commands, &msg, queue_id).unwrap()
}

/// (producer id, base sequence) of a sent batch; parsing also checks its CRC.
fn numbering(batch: &[u8]) -> (i64, i32) {
    let h = BatchView::parse(batch, 1 << 20).unwrap().header;
    (h.producer_id, h.base_sequence)
}

fn broker_error(code: ErrorCode) -> Result<Response> {
    Err(ClientError::Broker {
        code: code as u16,
        name: code.name().into(),
        message: "test".into(),
        detail: crate::protocol::ErrorDetail::None,
    })
}

/// The system clock, counting how often the worker reads it.
#[derive(Default)]
struct CountingClock {
    reads: std::sync::atomic::AtomicU64,
}

impl Clock for CountingClock {
    fn now(&self) -> Instant {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Instant::now()
    }
    fn unix_ms(&self) -> i64 {
        crate::runtime::SystemClock.unix_ms()
    }
    fn sleep_until(&self, deadline: Instant) -> crate::runtime::Sleep {
        crate::runtime::SystemClock.sleep_until(deadline)
    }
}

fn send_batch(tx: &Tx, queue_id: u32, bodies: &[&str]) -> Pending<Result<SendBatchResult>> {
    let mut builder = BatchBuilder::new(1 << 20);
    for b in bodies {
        Message::new("t", *b).with_record(1, |r| builder.push(r)).unwrap();
    }
    let (done, p) = pending();
    let started = Instant::now();
    let wake = || drop(tx.send(Command::Wake));
    if tx.staging.push_batch("t", queue_id, builder, started, done, &wake) {
        tx.send(Command::Wake).unwrap();
    }
    p
}

/// `send_async` of "m" to queue `queue_id` of topic "t" on a worker driven by hand (its
/// next `step` takes what the staging area asks it to look at).
fn send_to(worker: &mut Worker<ScriptedSink>, queue_id: u32) -> SendHandle {
    let msg = Message::new("t", "m");
    let now = worker.now();
    worker.staging().append("t", queue_id, &msg, 1, || now, &|| {}).0
}

/// A worker driven by hand on a simulated clock: no thread, no sleep.
fn sim_worker(config: ProducerConfig) -> (Worker<ScriptedSink>, ScriptedSink, Arc<SimClock>) {
    let sink = ScriptedSink::default();
    let clock = SimClock::new(0);
    (Worker::new(sink.clone(), config, PID, clock.clone()), sink, clock)
}

fn drain_sent(sink: &ScriptedSink) -> Vec<Sent> {
    sink.sent.lock().unwrap().drain(..).collect()
}
