//! The worker on its own thread, as the producer runs it: batching, pipelining, retries,
//! flushes, batch sends and callers waiting for room.

use super::*;

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
        max_in_flight_per_queue: Some(2),
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

#[test]
fn a_batch_goes_as_one_after_the_queues_open_messages_with_one_result() {
    let config = ProducerConfig { max_in_flight_per_queue: Some(1), ..Default::default() };
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

/// Callers on several threads, replies from another, batches that open, fill and pipeline
/// while replies come: every message is answered (no wake-up an append left to a reply is
/// lost), in order per queue.
#[test]
fn every_message_is_answered_while_appends_race_the_replies() {
    for in_flight in [1, 2, 5] {
        let config = ProducerConfig {
            linger: Duration::ZERO,
            max_batch_bytes: 600,
            pipeline_min_batch_bytes: 300,
            max_in_flight_per_queue: Some(in_flight),
            ..Default::default()
        };
        let (sink, tx, worker) = start(config);
        let tx = Arc::new(tx);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let responder = {
            let (sink, stop) = (sink.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next = [0u64; 3];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent: Vec<Sent> = sink.sent.lock().unwrap().drain(..).collect();
                    for (_, q, b, cb) in sent {
                        let n = BatchView::parse(&b, 1 << 20).unwrap().header.record_count;
                        cb.complete(ok_reply(next[q as usize], &b));
                        next[q as usize] += u64::from(n);
                    }
                    std::thread::yield_now();
                }
            })
        };
        let senders: Vec<_> = (0..3u32)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let handles: Vec<_> = (0..3000)
                        .map(|i| ((t + i) % 3, send(&tx, (t + i) % 3, "message")))
                        .collect();
                    let mut last = [None::<u64>; 3];
                    for (q, h) in handles {
                        let r = h
                            .wait_timeout(Duration::from_secs(30))
                            .unwrap_or_else(|_| panic!("a message was never answered"))
                            .unwrap();
                        let q = q as usize;
                        assert!(last[q].map_or(true, |l| r.queue_offset > l), "in order");
                        last[q] = Some(r.queue_offset);
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        responder.join().unwrap();
        drop(tx);
        worker.join().unwrap();
    }
}
