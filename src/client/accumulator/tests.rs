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
use crate::protocol::SendStatus;
use crate::runtime::system_clock;
use crate::runtime::{Clock, SimClock};
use crossbeam_channel::{bounded, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

type Sent = (String, u32, Vec<u8>, ProduceReply);

#[derive(Clone, Default)]
struct ScriptedSink {
    sent: Arc<Mutex<Vec<Sent>>>,
    refreshed: Arc<Mutex<Vec<String>>>,
    /// Where each sent batch's shared handle points, in send order.
    handles: Arc<Mutex<Vec<usize>>>,
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

#[test]
fn queued_messages_are_taken_in_one_turn_into_one_batch_without_a_clock_read_each() {
    let sink = ScriptedSink::default();
    let clock = Arc::new(CountingClock::default());
    let worker = Worker::new(sink.clone(), ProducerConfig::default(), PID, clock.clone());
    let (tx, rx) = bounded(2000);
    let tx = Tx::of(&worker, tx);
    // Everything is queued before the worker starts: what a busy caller leaves behind
    // while the worker works.
    let n = 1000;
    let handles: Vec<_> = (0..n).map(|i| send(&tx, 0, &format!("m{i}"))).collect();
    let worker = std::thread::spawn(move || run_worker(worker, rx));
    let mut seen = 0;
    let (_, _, batch, cb) = sink.take(1, &mut seen).remove(0);
    // One batch: the worker took the queued messages before stepping, instead of sending
    // the first alone.
    assert_eq!(bodies(&batch).len(), n, "the first batch holds every queued message");
    let reads = clock.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(reads < 50, "{reads} clock reads for {n} messages");
    cb.complete(ok_reply(100, &batch));
    let results: Vec<SendResult> = handles.into_iter().map(|p| p.wait().unwrap()).collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.queue_offset, 100 + i as u64);
        assert_eq!(r.message_id(), message_id(1, 0, 100 + i as u64));
        // The topic name is shared, not copied per message.
        assert!(Arc::ptr_eq(&r.topic, &results[0].topic));
    }
    assert_eq!(&*results[0].topic, "t");
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn small_batches_gather_while_their_queue_has_one_in_flight() {
    let (sink, tx, worker) = start(ProducerConfig::default());
    let mut seen = 0;
    let a = send(&tx, 0, "a");
    let (_, _, first, cb) = sink.take(1, &mut seen).remove(0);
    assert_eq!(bodies(&first), ["a"]);
    // While "a" is in flight, later messages gather in one open batch instead of going
    // one per batch.
    let later: Vec<_> = ["b", "c", "d"].iter().map(|m| send(&tx, 0, m)).collect();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(sink.pending(), 0, "a small batch was pipelined behind one in flight");
    cb.complete(ok_reply(0, &first));
    assert_eq!(a.wait().unwrap().queue_offset, 0);
    let (_, _, second, cb) = sink.take(2, &mut seen).remove(0);
    assert_eq!(bodies(&second), ["b", "c", "d"], "gathered during the round trip");
    cb.complete(ok_reply(1, &second));
    for (i, p) in later.into_iter().enumerate() {
        assert_eq!(p.wait().unwrap().queue_offset, 1 + i as u64);
    }
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn a_queue_pipelines_numbered_batches_up_to_its_bound_in_send_order() {
    // Every batch pipelined, however small (the default keeps small ones back).
    let config = ProducerConfig {
        max_in_flight_per_queue: 2,
        pipeline_min_batch_bytes: 0,
        ..Default::default()
    };
    let (sink, tx, worker) = start(config);
    let mut seen = 0;
    let first = send(&tx, 0, "m0");
    let mut sent = sink.take(1, &mut seen);
    let second = send(&tx, 0, "m1");
    sent.extend(sink.take(2, &mut seen));
    // Two batches in flight: the bound. Later messages collect in the open batch.
    let rest: Vec<_> = (2..5).map(|i| send(&tx, 0, &format!("m{i}"))).collect();
    let other = send(&tx, 1, "q1");
    let q1 = sink.take(3, &mut seen).remove(0);
    assert_eq!(q1.1, 1, "another queue is not held back");
    assert_eq!(numbering(&q1.2), (PID, 0), "each queue numbers from 0");
    assert_eq!(sink.pending(), 0, "no third batch for queue 0 while two are in flight");
    assert_eq!(numbering(&sent[0].2), (PID, 0));
    assert_eq!(numbering(&sent[1].2), (PID, 1), "sequences count records");
    let (_, _, b1, cb1) = sent.pop().unwrap();
    let (_, _, b0, cb0) = sent.pop().unwrap();
    cb1.complete(ok_reply(1, &b1));
    cb0.complete(ok_reply(0, &b0));
    let (_, _, b2, cb2) = sink.take(4, &mut seen).remove(0);
    assert_eq!(bodies(&b2), ["m2", "m3", "m4"], "send order kept");
    assert_eq!(numbering(&b2), (PID, 2));
    cb2.complete(ok_reply(2, &b2));
    q1.3.complete(ok_reply(0, &q1.2));
    assert_eq!(first.wait().unwrap().queue_offset, 0);
    assert_eq!(second.wait().unwrap().queue_offset, 1);
    let offsets: Vec<u64> = rest.into_iter().map(|p| p.wait().unwrap().queue_offset).collect();
    assert_eq!(offsets, vec![2, 3, 4]);
    assert_eq!(other.wait().unwrap().queue_offset, 0);
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn retriable_failures_resend_in_order_until_the_send_timeout() {
    let config = ProducerConfig {
        pipeline_min_batch_bytes: 0,
        retry_backoff: Duration::from_millis(2),
        retry_backoff_max: Duration::from_millis(8),
        send_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (sink, tx, worker) = start(config);
    let mut seen = 0;
    let a = send(&tx, 0, "a");
    let (_, _, ba, cba) = sink.take(1, &mut seen).remove(0);
    let b = send(&tx, 0, "b");
    let (_, _, bb, cbb) = sink.take(2, &mut seen).remove(0);
    // b's connection broke: both are resent, a first, with the same numbering.
    cbb.complete(Err(ClientError::Disconnected("test".into())));
    let again = sink.take(4, &mut seen);
    assert_eq!(again[0].2, ba, "the first unacknowledged batch is resent first");
    assert_eq!(again[1].2, bb);
    assert_eq!(sink.refreshed.lock().unwrap().as_slice(), ["t"]);
    // a's first copy was stored after all: its late reply counts.
    cba.complete(ok_reply(7, &ba));
    assert_eq!(a.wait().unwrap().queue_offset, 7);
    // b keeps failing: resent with backoff until its send timeout, then reported.
    let t = Instant::now();
    let mut failing = again;
    // a's resend needs no answer: a is resolved.
    let _a_resend = failing.remove(0);
    loop {
        for (_, _, _, cb) in failing.drain(..) {
            cb.complete(Err(ClientError::Disconnected("test".into())));
        }
        if let Some(r) = b.try_take() {
            // Reported with the last refusal, not as an unanswered send.
            let Err(ClientError::GaveUp { after_ms: 300, last }) = &r else { panic!("{r:?}") };
            assert_eq!(**last, ClientError::Disconnected("test".into()));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "b never timed out");
        let deadline = Instant::now() + Duration::from_millis(50);
        while sink.pending() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        failing = sink.sent.lock().unwrap().drain(..).collect();
    }
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn a_send_refused_until_its_timeout_fails_with_the_broker_s_last_refusal() {
    // A broker whose disk is full answers DISK_FULL (retriable) at once, every time: the
    // caller learns that at the send timeout, not that the broker did not answer.
    let config = ProducerConfig {
        pipeline_min_batch_bytes: 0,
        retry_backoff: Duration::from_millis(2),
        retry_backoff_max: Duration::from_millis(8),
        send_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (sink, tx, worker) = start(config);
    let h = send(&tx, 0, "a");
    let t = Instant::now();
    let r = loop {
        for (_, _, _, cb) in sink.sent.lock().unwrap().drain(..) {
            cb.complete(broker_error(ErrorCode::DISK_FULL));
        }
        if let Some(r) = h.try_take() {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the send never ended");
        std::thread::sleep(Duration::from_millis(1));
    };
    let e = r.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::DISK_FULL), "{e}");
    assert!(e.is_retriable(), "the disk may have room later");
    let text = e.to_string();
    assert!(text.contains("300 ms") && text.contains("DISK_FULL"), "{text}");
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn a_non_retriable_error_fails_the_batch_and_renumbers_the_next_under_a_new_epoch() {
    let (sink, tx, worker) =
        start(ProducerConfig { pipeline_min_batch_bytes: 0, ..Default::default() });
    let mut seen = 0;
    let bad = send(&tx, 0, "bad");
    let (_, _, _, cb) = sink.take(1, &mut seen).remove(0);
    let next = send(&tx, 0, "next");
    let (_, _, b_next, _late) = sink.take(2, &mut seen).remove(0);
    assert_eq!(numbering(&b_next), (PID, 1));
    cb.complete(broker_error(ErrorCode::CORRUPT_BATCH));
    assert_eq!(bad.wait().unwrap_err().code(), Some(ErrorCode::CORRUPT_BATCH), "not retried");
    // The broker expects sequence 0 again, so "next" moves to epoch 1, sequence 0.
    let (_, _, again, cb) = sink.take(3, &mut seen).remove(0);
    assert_eq!(numbering(&again), (PID | 1, 0));
    assert_eq!(bodies(&again), ["next"]);
    cb.complete(ok_reply(0, &again));
    assert_eq!(next.wait().unwrap().queue_offset, 0);
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn out_of_order_on_the_first_batch_renumbers_it_and_resends() {
    let (sink, tx, worker) = start(ProducerConfig::default());
    let mut seen = 0;
    let p = send(&tx, 0, "x");
    let (_, _, b, cb) = sink.take(1, &mut seen).remove(0);
    cb.complete(ok_reply(0, &b));
    p.wait().unwrap();
    let p = send(&tx, 0, "y");
    let (_, _, b, cb) = sink.take(2, &mut seen).remove(0);
    assert_eq!(numbering(&b), (PID, 1));
    // The broker lost the producer's state (e.g. it expired): y is renumbered from 0.
    cb.complete(broker_error(ErrorCode::OUT_OF_ORDER_SEQUENCE));
    let (_, _, again, cb) = sink.take(3, &mut seen).remove(0);
    assert_eq!(numbering(&again), (PID | 1, 0), "CRC recomputed (parse checks it)");
    cb.complete(ok_reply(1, &again));
    assert_eq!(p.wait().unwrap().queue_offset, 1);
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn an_unanswered_send_times_out_and_is_resent_with_the_same_numbering() {
    let config = ProducerConfig {
        retry_backoff: Duration::from_millis(1),
        request_timeout: Duration::from_millis(50),
        ..Default::default()
    };
    let (sink, tx, worker) = start(config);
    let mut seen = 0;
    let p = send(&tx, 0, "slow");
    let (_, _, b, late) = sink.take(1, &mut seen).remove(0);
    // No reply: after request_timeout the batch is sent again, same bytes.
    let (_, _, again, cb) = sink.take(2, &mut seen).remove(0);
    assert_eq!(again, b);
    cb.complete(ok_reply(4, &again));
    assert_eq!(p.wait().unwrap().queue_offset, 4);
    late.complete(ok_reply(4, &b)); // the first copy's reply, after the batch was resolved: ignored
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
    cb.complete(ok_reply(7, &b));
    flush.wait();
    assert_eq!(p.wait().unwrap().queue_offset, 7);
    drop(tx);
    worker.join().unwrap();
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

#[test]
fn a_batch_goes_as_one_after_the_queues_open_messages_with_one_result() {
    let config = ProducerConfig { max_in_flight_per_queue: 1, ..Default::default() };
    let (sink, tx, worker) = start(config);
    let mut seen = 0;
    let first = send(&tx, 0, "m0");
    let (_, _, b0, cb0) = sink.take(1, &mut seen).remove(0);
    // m1 waits in the open batch (one batch in flight); the batch must not overtake it.
    let second = send(&tx, 0, "m1");
    let batch = send_batch(&tx, 0, &["b0", "b1", "b2"]);
    cb0.complete(ok_reply(0, &b0));
    let (_, _, b1, cb1) = sink.take(2, &mut seen).remove(0);
    assert_eq!(bodies(&b1), ["m1"], "the open batch was sealed before the batch");
    cb1.complete(ok_reply(1, &b1));
    let (_, _, b2, cb2) = sink.take(3, &mut seen).remove(0);
    assert_eq!(bodies(&b2), ["b0", "b1", "b2"], "one batch, in order");
    assert_eq!(numbering(&b2), (PID, 2));
    cb2.complete(ok_reply(2, &b2));
    assert_eq!(first.wait().unwrap().queue_offset, 0);
    assert_eq!(second.wait().unwrap().queue_offset, 1);
    let r = batch.wait().unwrap();
    assert_eq!((r.first_offset, r.count, r.offsets()), (2, 3, 2..5));
    assert_eq!(r.message_ids(), (2..5).map(|o| message_id(1, 0, o)).collect::<Vec<_>>());
    assert_eq!(r.message_id(3), None);
    // A refused batch fails as a whole, with one error.
    let refused = send_batch(&tx, 0, &["x", "y"]);
    let (_, _, _, cb) = sink.take(4, &mut seen).remove(0);
    cb.complete(broker_error(ErrorCode::BATCH_TOO_LARGE));
    assert_eq!(refused.wait().unwrap_err().code(), Some(ErrorCode::BATCH_TOO_LARGE));
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn a_caller_waiting_for_room_gets_lingering_batches_sent_at_once() {
    // Two messages fill the staging area; their batch lingers for an hour.
    let config = ProducerConfig {
        linger: Duration::from_secs(3600),
        buffer_messages: 2,
        ..Default::default()
    };
    let (sink, tx, worker) = start(config);
    let mut seen = 0;
    let a = send(&tx, 0, "a");
    let b = send(&tx, 0, "b");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(sink.pending(), 0, "lingering");
    // A third caller has to wait: the worker sends the lingering batch, which makes room.
    let tx = Arc::new(tx);
    let caller = {
        let tx = tx.clone();
        std::thread::spawn(move || send(&tx, 0, "c"))
    };
    let (_, _, batch, cb) = sink.take(1, &mut seen).remove(0);
    assert_eq!(bodies(&batch), ["a", "b"]);
    let c = caller.join().unwrap();
    cb.complete(ok_reply(0, &batch));
    assert_eq!(a.wait().unwrap().queue_offset, 0);
    assert_eq!(b.wait().unwrap().queue_offset, 1);
    assert_eq!(tx.staging.staged().0, 1, "c waits in its own open batch");
    // Closing sends what is staged (c) before the worker exits.
    let Ok(tx) = Arc::try_unwrap(tx) else { panic!("one owner left") };
    drop(tx);
    let (_, _, last, cb) = sink.take(2, &mut seen).remove(0);
    assert_eq!(bodies(&last), ["c"]);
    cb.complete(ok_reply(2, &last));
    assert_eq!(c.wait().unwrap().queue_offset, 2);
    worker.join().unwrap();
}

/// `send_async` of "m" to queue `queue_id` of topic "t" on a worker driven by hand (its
/// next `step` takes what the staging area asks it to look at).
fn send_to(worker: &mut Worker<ScriptedSink>, queue_id: u32) -> SendHandle {
    let msg = Message::new("t", "m");
    let now = worker.now();
    worker.staging().append("t", queue_id, &msg, 1, || now, &|| {}).0
}

#[test]
fn a_step_looks_only_at_the_queues_something_happened_to_with_10000_queues_open() {
    const QUEUES: u32 = 10_000;
    let linger = Duration::from_secs(3600);
    // Send and request timeouts beyond the simulated time: only lingers and replies act.
    let config = ProducerConfig {
        linger,
        buffer_messages: 2 * QUEUES as usize,
        max_in_flight_per_queue: 1,
        send_timeout: 3 * linger,
        request_timeout: 3 * linger,
        ..Default::default()
    };
    let sink = ScriptedSink::default();
    let clock = crate::runtime::SimClock::new(0);
    let mut worker = Worker::new(sink.clone(), config, PID, clock.clone());
    let t0 = clock.now();
    // Every queue gets an open batch that lingers (a timer each).
    let mut pending: Vec<_> = (0..QUEUES).map(|q| send_to(&mut worker, q)).collect();
    worker.step(t0);
    assert_eq!(worker.touched, u64::from(QUEUES));
    assert_eq!(sink.pending(), 0, "all lingering");
    // One more message, into queue 7's open batch: the caller appended it, the worker looks
    // at no queue for it (none of the 10,000).
    let before = worker.touched;
    pending.push(send_to(&mut worker, 7));
    worker.step(t0);
    assert_eq!(worker.touched - before, 0);
    // Nothing happened and nothing is due: no queue looked at.
    let before = worker.touched;
    clock.advance(Duration::from_secs(1));
    worker.step(clock.now());
    assert_eq!(worker.touched - before, 0);
    // The lingers run out: every queue seals and sends its batch, each looked at once.
    let before = worker.touched;
    clock.advance(linger);
    worker.step(clock.now());
    assert_eq!(worker.touched - before, u64::from(QUEUES));
    let mut sent: Vec<Sent> = sink.sent.lock().unwrap().drain(..).collect();
    assert_eq!(sent.len(), QUEUES as usize);
    assert!(worker.timers.len() <= 4 * worker.queues.len() + 64, "bounded timer heap");
    // A reply for one queue (10,000 batches in flight): that queue alone is looked at.
    let i = sent.iter().position(|s| s.1 == 7).unwrap();
    let (_, _, b, cb) = sent.swap_remove(i);
    cb.complete(ok_reply(0, &b));
    let reply = worker.replies_rx.try_recv().unwrap();
    let before = worker.touched;
    worker.reply(reply);
    worker.step(clock.now());
    assert_eq!(worker.touched - before, 1);
    assert_eq!(bodies(&b), ["m", "m"]);
    assert_eq!(pending.remove(7).try_take().unwrap().unwrap().queue_offset, 0);
    assert_eq!(pending.pop().unwrap().try_take().unwrap().unwrap().queue_offset, 1);
    assert_eq!(worker.busy_queues, QUEUES as usize - 1, "queue 7 is idle again");
}

/// A caller waiting for room used to put every queue with an open batch on the dirty list, so
/// with thousands of queues each wait cost the worker a look at all of them (many-queues with
/// the producer's buffer full: 28 MB/s and send timeouts). Only the queues whose open batch
/// waits for its linger can act on the press; the others wait for their replies.
#[test]
fn a_caller_waiting_for_room_costs_the_worker_only_the_lingering_queues() {
    const QUEUES: u32 = 1_000;
    let linger = Duration::from_secs(3600);
    let bound = 200 * QUEUES as usize;
    let config = ProducerConfig {
        linger,
        max_buffer_bytes: bound,
        max_in_flight_per_queue: 1,
        send_timeout: 3 * linger,
        request_timeout: 3 * linger,
        ..Default::default()
    };
    let (mut worker, sink, clock) = sim_worker(config);
    // Every queue has a batch in flight, then an open batch behind it that waits for the
    // reply (no linger of its own), until the buffer is full.
    for q in 0..QUEUES {
        send_to(&mut worker, q);
    }
    worker.step(clock.now());
    clock.advance(linger);
    worker.step(clock.now());
    let mut in_flight = drain_sent(&sink);
    assert_eq!(in_flight.len(), QUEUES as usize);
    // One more queue, idle, with a lingering batch: the one a waiting caller's press sends.
    let lingering = send_to(&mut worker, QUEUES);
    let mut next = 0;
    while worker.staging().staged().1 < bound {
        send_to(&mut worker, next % QUEUES);
        next += 1;
    }
    worker.step(clock.now());
    assert_eq!(sink.pending(), 0);
    let (staging, t) = (worker.staging().clone(), worker.now());
    // A caller finds no room and waits.
    let caller = std::thread::spawn(move || {
        let msg = Message::new("t", "m");
        staging.append("t", 0, &msg, 1, || t, &|| {}).0
    });
    while worker.staging().waiting() == 0 {
        std::thread::yield_now();
    }
    let before = worker.touched;
    worker.step(clock.now());
    assert_eq!(worker.touched - before, 1, "the lingering queue alone, not every open one");
    let (_, queue, b, cb) = drain_sent(&sink).remove(0);
    assert_eq!(queue, QUEUES);
    cb.complete(ok_reply(0, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    worker.step(clock.now());
    assert_eq!(lingering.try_take().unwrap().unwrap().queue_offset, 0);
    // A reply frees room: the caller goes on, into queue 0's open batch.
    let i = in_flight.iter().position(|s| s.1 == 5).unwrap();
    let (_, _, b, cb) = in_flight.swap_remove(i);
    cb.complete(ok_reply(0, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    worker.step(clock.now());
    let waited = caller.join().unwrap();
    assert!(waited.try_take().is_none(), "staged behind queue 0's batch in flight");
}

/// Queues left behind at the memory bound get room in turn as replies free it, each looked at
/// once: a reply that made room used to have the worker look at every such queue (most only to
/// leave them behind again), and a queue with a reply went ahead of them (many-queues: send
/// timeouts). The bytes other queues hold are played by `buffered_bytes`.
#[test]
fn queues_left_at_the_memory_bound_get_room_in_turn_each_looked_at_once() {
    const QUEUES: u32 = 100;
    let max = 1 << 20;
    let config = ProducerConfig { max_buffer_bytes: max, ..Default::default() };
    let (mut worker, sink, clock) = sim_worker(config);
    // A batch in flight on queue QUEUES; the rest of the bound held elsewhere.
    send_to(&mut worker, QUEUES);
    worker.step(clock.now());
    let mut replies: Vec<Sent> = drain_sent(&sink);
    let one = worker.buffered_bytes;
    worker.buffered_bytes = max;
    // A message for each other queue: each is looked at, and left behind.
    for q in 0..QUEUES {
        send_to(&mut worker, q);
    }
    worker.step(clock.now());
    assert_eq!(sink.pending(), 0);
    assert_eq!(worker.starved.len(), QUEUES as usize);
    // Each reply makes room for one batch: the oldest queue left behind goes. Queue 0 gets a
    // second message before its reply: it does not go ahead of the others.
    let mut order = Vec::new();
    let mut steps = 0;
    while let Some((_, queue, b, cb)) = replies.pop() {
        if queue == 0 && order.len() == 1 {
            send_to(&mut worker, 0);
        }
        cb.complete(ok_reply(0, &b));
        worker.reply(worker.replies_rx.try_recv().unwrap());
        let before = worker.touched;
        worker.step(clock.now());
        let sent = drain_sent(&sink);
        assert!(sent.len() <= 1, "room for one batch, {} went", sent.len());
        assert!(
            worker.touched - before <= 2,
            "looked at {} queues at {queue}, {order:?}",
            worker.touched - before
        );
        order.extend(sent.iter().map(|s| s.1));
        replies.extend(sent);
        steps += 1;
        assert!(steps < 10 * QUEUES, "the queues left behind never got room");
    }
    let expected: Vec<u32> = (0..QUEUES).chain([0]).collect();
    assert_eq!(order, expected, "every queue's batch in turn, queue 0's second last");
    assert_eq!(worker.buffered_bytes, max - one, "only the bytes held elsewhere");
    worker.buffered_bytes = 0;
    assert_eq!(worker.busy_queues, 0);
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

#[test]
fn an_idle_queues_batch_waits_for_the_linger_on_the_simulated_clock() {
    let config = ProducerConfig { linger: Duration::from_millis(5), ..Default::default() };
    let (mut worker, sink, clock) = sim_worker(config);
    let p: Vec<_> = (0..3).map(|_| send_to(&mut worker, 0)).collect();
    worker.step(clock.now());
    clock.advance(Duration::from_millis(4));
    worker.step(clock.now());
    assert_eq!(sink.pending(), 0, "still lingering");
    clock.advance(Duration::from_millis(1));
    worker.step(clock.now());
    let (_, _, b, cb) = drain_sent(&sink).remove(0);
    assert_eq!(bodies(&b).len(), 3, "one batch of the three messages");
    cb.complete(ok_reply(0, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    worker.step(clock.now());
    let offsets: Vec<u64> = p.into_iter().map(|p| p.wait().unwrap().queue_offset).collect();
    assert_eq!(offsets, [0, 1, 2]);
    assert_eq!((worker.busy_queues, worker.buffered_bytes), (0, 0));
}

#[test]
fn a_full_batch_is_sealed_at_once_and_memory_stays_under_its_bound() {
    let config = ProducerConfig {
        linger: Duration::from_secs(3600),
        max_batch_bytes: 256,
        max_buffer_bytes: 1024,
        max_in_flight_per_queue: 1,
        ..Default::default()
    };
    let (mut worker, sink, clock) = sim_worker(config);
    let mut sent = 0;
    // Callers may add messages while less than max_buffer_bytes is staged or held.
    while worker.staging().staged().1 < 1024 {
        send_to(&mut worker, 0);
        sent += 1;
        worker.step(clock.now());
        assert!(sent < 1000, "the bound never stopped the callers");
    }
    // Full batches were sealed without waiting for the linger; one is in flight.
    let in_flight = drain_sent(&sink);
    assert_eq!(in_flight.len(), 1);
    assert!(in_flight[0].2.len() <= 256);
    let held = worker.staging().staged().1;
    assert!((1024..1024 + 256).contains(&held), "{held}");
    assert!(worker.buffered_bytes <= held);
    // Its reply frees room: callers may add messages again.
    let (_, _, b, cb) = in_flight.into_iter().next().unwrap();
    cb.complete(ok_reply(0, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    worker.step(clock.now());
    assert!(worker.staging().staged().1 < 1024);
    let next = drain_sent(&sink);
    assert_eq!(numbering(&next[0].2).1, bodies(&b).len() as i32, "the next batch in order");
}

#[test]
fn a_retriable_failure_is_resent_after_the_backoff_until_the_send_timeout() {
    let config = ProducerConfig {
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_millis(50),
        send_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (mut worker, sink, clock) = sim_worker(config);
    let p = send_to(&mut worker, 0);
    worker.step(clock.now());
    let mut sends = 0;
    loop {
        let sent = drain_sent(&sink);
        if sent.is_empty() {
            break;
        }
        sends += 1;
        let (_, _, _, cb) = sent.into_iter().next().unwrap();
        cb.complete(Err(ClientError::Disconnected("test".into())));
        worker.reply(worker.replies_rx.try_recv().unwrap());
        clock.advance(Duration::from_millis(49));
        worker.step(clock.now());
        assert_eq!(sink.pending(), 0, "no resend before the backoff");
        clock.advance(Duration::from_millis(1));
        worker.step(clock.now());
    }
    // 500 ms of send timeout at one try per 50 ms.
    assert_eq!(sends, 10);
    let last = Box::new(ClientError::Disconnected("test".into()));
    assert_eq!(p.try_take(), Some(Err(ClientError::GaveUp { after_ms: 500, last })));
    assert_eq!(worker.busy_queues, 0);
}

#[test]
fn renumbering_rewrites_the_fields_and_the_crc() {
    let mut b = BatchBuilder::new(1 << 16);
    b.push(&crate::format::Record {
        key: b"",
        tag: b"",
        properties: &[],
        body: b"x",
        timestamp_ms: 1,
    })
    .unwrap();
    let mut bytes = b.finish(5 << 16, 3);
    renumber(&mut bytes, (5 << 16) | 2, 0);
    assert_eq!(numbering(&bytes), ((5 << 16) | 2, 0));
}

#[test]
fn a_send_never_answered_fails_as_a_timeout_and_a_stored_batch_clears_the_last_refusal() {
    let config = ProducerConfig {
        retry_backoff: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(10),
        request_timeout: Duration::from_millis(100),
        send_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (mut worker, sink, clock) = sim_worker(config);
    // Refused once, then stored: the refusal is forgotten.
    let first = send_to(&mut worker, 0);
    worker.step(clock.now());
    let (_, _, _, cb) = drain_sent(&sink).remove(0);
    cb.complete(broker_error(ErrorCode::DISK_FULL));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    clock.advance(Duration::from_millis(10));
    worker.step(clock.now());
    let (_, _, b, cb) = drain_sent(&sink).remove(0);
    cb.complete(ok_reply(0, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    assert_eq!(first.try_take().unwrap().unwrap().queue_offset, 0);
    // The next batch's sends are never answered: a plain timeout.
    let second = send_to(&mut worker, 0);
    worker.step(clock.now());
    for _ in 0..60 {
        clock.advance(Duration::from_millis(10));
        worker.step(clock.now());
    }
    assert_eq!(second.try_take(), Some(Err(ClientError::Timeout(500))));
    assert!(drain_sent(&sink).len() > 1, "resent after each request timeout");
}

/// An answered batch's buffer and shared handle are used again for the next batches, so a
/// producer whose batches hold a message or two does not allocate two blocks per batch.
#[test]
fn an_answered_batch_s_buffer_and_handle_carry_the_next_batch() {
    let config = ProducerConfig { max_in_flight_per_queue: 1, ..Default::default() };
    let sink = ScriptedSink::default();
    let clock = crate::runtime::SimClock::new(0);
    let mut worker = Worker::new(sink.clone(), config, PID, clock.clone());
    let first = send_to(&mut worker, 0);
    worker.step(clock.now());
    let (_, _, b, cb) = sink.sent.lock().unwrap().pop().unwrap();
    cb.complete(ok_reply(0, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    assert_eq!(first.try_take().unwrap().unwrap().queue_offset, 0);
    assert_eq!(worker.batch_arcs.len(), 1, "the emptied handle is kept");
    // The next batch (another queue's) is written into the buffer and sent in the handle.
    let second = send_to(&mut worker, 1);
    assert_eq!(worker.staging().spare_count(), 0, "the buffer opened the new batch");
    worker.step(clock.now());
    let handles = sink.handles.lock().unwrap().clone();
    assert_eq!(handles.len(), 2);
    assert_eq!(handles[0], handles[1], "the second batch went in the first one's handle");
    assert!(worker.batch_arcs.is_empty());
    let (_, q, b, cb) = sink.sent.lock().unwrap().pop().unwrap();
    assert_eq!((q, bodies(&b)), (1, vec!["m".to_string()]));
    cb.complete(ok_reply(0, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    assert_eq!(second.try_take().unwrap().unwrap().queue_offset, 0);
}

/// A "stored" reply resolves the batch's `send_async` handles on the thread that reads it,
/// before the worker takes the reply: the caller's ack does not wait for the worker to run.
/// Failures are the worker's to judge (it retries them), and its own resolution of a stored
/// batch changes nothing a caller already saw.
#[test]
fn a_stored_reply_resolves_the_handles_where_it_is_read_and_a_failure_waits_for_the_worker() {
    let config = ProducerConfig { linger: Duration::ZERO, ..Default::default() };
    let (mut worker, sink, clock) = sim_worker(config);
    let handles: Vec<_> = (0..3).map(|_| send_to(&mut worker, 0)).collect();
    worker.step(clock.now());
    let (_, _, b, cb) = drain_sent(&sink).remove(0);
    assert_eq!(bodies(&b).len(), 3);
    cb.complete(ok_reply(7, &b));
    // The worker has not run since: the reply waits in its channel.
    assert!(worker.has_replies());
    let results: Vec<SendResult> = handles.iter().map(|h| h.try_take().unwrap().unwrap()).collect();
    let offsets: Vec<u64> = results.iter().map(|r| r.queue_offset).collect();
    assert_eq!(offsets, [7, 8, 9]);
    assert_eq!((&*results[0].topic, results[0].status), ("t", SendStatus::SendOk));
    // The worker's turn keeps that outcome and frees the batch's memory.
    worker.reply(worker.replies_rx.try_recv().unwrap());
    worker.step(clock.now());
    assert_eq!(handles[2].try_take().unwrap().unwrap().queue_offset, 9);
    assert_eq!((worker.busy_queues, worker.buffered_bytes), (0, 0));

    // A retriable failure resolves nothing: the worker resends, and the resend's reply counts.
    let h = send_to(&mut worker, 0);
    worker.step(clock.now());
    let (_, _, _, cb) = drain_sent(&sink).remove(0);
    cb.complete(broker_error(ErrorCode::DISK_FULL));
    assert!(h.try_take().is_none(), "a refusal is not final");
    worker.reply(worker.replies_rx.try_recv().unwrap());
    clock.advance(Duration::from_secs(1));
    worker.step(clock.now());
    assert!(h.try_take().is_none());
    let (_, _, b, cb) = drain_sent(&sink).remove(0);
    cb.complete(ok_reply(10, &b));
    assert_eq!(h.try_take().unwrap().unwrap().queue_offset, 10);
}
