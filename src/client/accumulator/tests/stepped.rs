//! The worker stepped by hand on a simulated clock: what a step looks at with 10,000 queues,
//! the memory bound, linger, back-off, renumbering, and where replies resolve handles.

use super::*;

#[test]
fn a_step_looks_only_at_the_queues_something_happened_to_with_10000_queues_open() {
    const QUEUES: u32 = 10_000;
    let linger = Duration::from_secs(3600);
    // Send and request timeouts beyond the simulated time: only lingers and replies act.
    let config = ProducerConfig {
        linger,
        buffer_messages: 2 * QUEUES as usize,
        max_in_flight_per_queue: Some(1),
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
        max_in_flight_per_queue: Some(1),
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
        max_in_flight_per_queue: Some(1),
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
    let b = crate::format::batch::one_record_builder(1 << 16);
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
    let config = ProducerConfig { max_in_flight_per_queue: Some(1), ..Default::default() };
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

/// With 10,000 queues round-robin, each queue's batch went with the one or two messages that
/// came since its last one, and per-batch work took most of the client's core (many-queues,
/// BENCHMARKS.md round 24). While the worker holds `small_batches_in_flight_bytes`, small open
/// batches gather instead, and go in turn, oldest first, as replies free bytes; a new queue's
/// one message waits behind them; a batch that reached `pipeline_min_batch_bytes` goes anyway.
/// The bytes other queues hold are played by `buffered_bytes`.
#[test]
fn small_batches_gather_while_the_in_flight_bytes_are_held_and_go_in_turn() {
    const QUEUES: u32 = 50;
    let cap = 1 << 20;
    let config = ProducerConfig {
        small_batches_in_flight_bytes: cap,
        pipeline_min_batch_bytes: 4096,
        ..Default::default()
    };
    let (mut worker, sink, clock) = sim_worker(config);
    // A batch in flight on queue QUEUES; the rest of the bytes held elsewhere.
    send_to(&mut worker, QUEUES);
    worker.step(clock.now());
    let mut replies: Vec<Sent> = drain_sent(&sink);
    assert_eq!(replies.len(), 1);
    let one = worker.buffered_bytes;
    worker.buffered_bytes = cap;
    // Each queue's batch (no linger) would go at once: it gathers, with no timer.
    let mut handles = Vec::new();
    for q in 0..QUEUES {
        handles.push(send_to(&mut worker, q));
    }
    worker.step(clock.now());
    assert_eq!(sink.pending(), 0);
    assert_eq!(worker.gated.len(), QUEUES as usize);
    let (in_flight, gathering): (Vec<_>, Vec<_>) =
        worker.queues.iter().partition(|q| q.key.1 == QUEUES);
    assert!(gathering.iter().all(|q| q.armed.is_none()), "no timers");
    assert_eq!(worker.next_wakeup(), in_flight[0].armed, "the request timeout alone");
    // Two more messages each gather in the open batches; a new queue's waits behind them.
    for q in (0..QUEUES).chain(0..QUEUES) {
        handles.push(send_to(&mut worker, q));
    }
    handles.push(send_to(&mut worker, QUEUES + 1));
    worker.step(clock.now());
    assert_eq!(sink.pending(), 0);
    // Each reply frees the bytes of one batch: the oldest gathering queue's goes, whole.
    let mut order = Vec::new();
    let mut steps = 0;
    while let Some((_, queue, b, cb)) = replies.pop() {
        cb.complete(ok_reply(0, &b));
        worker.reply(worker.replies_rx.try_recv().unwrap());
        worker.step(clock.now());
        let sent = drain_sent(&sink);
        assert!(sent.len() <= 1, "room for one batch at {queue}, {} went", sent.len());
        order.extend(sent.iter().map(|s| (s.1, bodies(&s.2).len())));
        replies.extend(sent);
        steps += 1;
        assert!(steps < 10 * QUEUES, "the gathering queues never went");
    }
    let expected: Vec<(u32, usize)> =
        (0..QUEUES).map(|q| (q, 3)).chain([(QUEUES + 1, 1)]).collect();
    assert_eq!(order, expected, "in turn, each batch with its three messages");
    assert!(handles.iter().all(|h| h.try_take().is_some()), "every message answered");
    assert_eq!(worker.buffered_bytes, cap - one, "only the bytes held elsewhere");
    // A batch that reached pipeline_min_batch_bytes does not wait for the gate.
    worker.buffered_bytes = cap;
    send_to(&mut worker, 0);
    worker.step(clock.now());
    assert_eq!(sink.pending(), 0);
    while worker.staging().staged().1 < 4096 {
        send_to(&mut worker, 0);
    }
    worker.step(clock.now());
    let sent = drain_sent(&sink);
    assert_eq!(sent.len(), 1, "the large batch went with the gate closed");
    worker.buffered_bytes -= cap;
}

#[test]
fn without_the_in_flight_bytes_for_small_batches_every_batch_goes_at_once() {
    // 16 MiB held, below the buffer's 32 MiB: by default (4 MiB) small batches gather; at 0
    // (off) they go as before.
    for (cap, sent) in [(0, 10), (ProducerConfig::default().small_batches_in_flight_bytes, 0)] {
        let config = ProducerConfig { small_batches_in_flight_bytes: cap, ..Default::default() };
        let (mut worker, sink, clock) = sim_worker(config);
        worker.buffered_bytes = 16 << 20;
        for q in 0..10 {
            send_to(&mut worker, q);
        }
        worker.step(clock.now());
        assert_eq!(drain_sent(&sink).len(), sent, "cap {cap}");
        assert_eq!(worker.gated.len(), 10 - sent, "cap {cap}");
    }
}

/// A caller's new or filled batch behind one in flight does not make the worker look at the
/// queue: the reply does, and sends it.
#[test]
fn a_batch_behind_one_in_flight_is_looked_at_when_the_reply_comes_not_when_it_opens() {
    let config = ProducerConfig {
        linger: Duration::ZERO,
        max_in_flight_per_queue: Some(1),
        send_timeout: Duration::from_secs(3600),
        request_timeout: Duration::from_secs(3600),
        ..Default::default()
    };
    let (mut worker, sink, clock) = sim_worker(config);
    let first = send_to(&mut worker, 0);
    worker.step(clock.now());
    let mut sent = drain_sent(&sink);
    assert_eq!(sent.len(), 1, "an idle queue's batch goes at once");
    let before = worker.touched;
    let later: Vec<_> = (0..3).map(|_| send_to(&mut worker, 0)).collect();
    worker.step(clock.now());
    assert_eq!(worker.touched, before, "the new batch did not make the worker look");
    let (_, _, b, cb) = sent.remove(0);
    cb.complete(ok_reply(0, &b));
    let reply = worker.replies_rx.try_recv().unwrap();
    worker.reply(reply);
    worker.step(clock.now());
    let sent = drain_sent(&sink);
    assert_eq!(sent.len(), 1, "the reply sent the gathered batch");
    assert_eq!(bodies(&sent[0].2), ["m", "m", "m"]);
    assert_eq!(first.try_take().unwrap().unwrap().queue_offset, 0);
    let (_, _, b, cb) = sent.into_iter().next().unwrap();
    cb.complete(ok_reply(1, &b));
    let reply = worker.replies_rx.try_recv().unwrap();
    worker.reply(reply);
    worker.step(clock.now());
    for (i, h) in later.into_iter().enumerate() {
        assert_eq!(h.try_take().unwrap().unwrap().queue_offset, 1 + i as u64);
    }
    assert_eq!(worker.busy_queues, 0);
}

/// The window between the worker's look at a queue and its telling the staging area that
/// the queue's replies all came: an append in it counted on a reply, and the worker looks at
/// the queue when it clears the flags instead of leaving the batch unsent.
#[test]
fn an_append_that_counted_on_a_reply_already_come_is_looked_at_when_the_flags_clear() {
    let config = ProducerConfig { linger: Duration::ZERO, ..Default::default() };
    let (mut worker, sink, clock) = sim_worker(config);
    let first = send_to(&mut worker, 0);
    worker.step(clock.now());
    let (_, _, b, cb) = drain_sent(&sink).remove(0);
    cb.complete(ok_reply(0, &b));
    let reply = worker.replies_rx.try_recv().unwrap();
    worker.reply(reply);
    worker.step(clock.now());
    assert_eq!(first.try_take().unwrap().unwrap().queue_offset, 0);
    // Nothing held now; the staging area still believes a reply is awaited, as it does until
    // the worker tells it otherwise.
    worker.staging().set_flow(0, true, false);
    worker.queues[0].told = (true, false);
    let second = send_to(&mut worker, 0);
    worker.step(clock.now());
    assert_eq!(sink.pending(), 0, "the append did not ask for the worker");
    worker.tell_flow(0);
    worker.step(clock.now());
    let (_, _, b, cb) = drain_sent(&sink).remove(0);
    cb.complete(ok_reply(1, &b));
    let reply = worker.replies_rx.try_recv().unwrap();
    worker.reply(reply);
    worker.step(clock.now());
    assert_eq!(second.try_take().unwrap().unwrap().queue_offset, 1);
}

/// A queue that used every epoch of its producer id goes on under a new id from the broker,
/// from wire epoch 0 and sequence 0. (A queue renumbers at every batch while the broker's
/// window table is too small for the producers and queues writing to the shard, and got
/// there in hours; from then on it failed every batch.)
#[test]
fn a_queue_past_the_last_epoch_of_its_producer_id_goes_on_under_a_new_one() {
    let config = ProducerConfig { max_in_flight_per_queue: Some(1), ..Default::default() };
    let (mut worker, sink, clock) = sim_worker(config);
    let first = send_to(&mut worker, 0);
    worker.step(clock.now());
    let mut sent = drain_sent(&sink);
    assert_eq!(numbering(&sent[0].2), (PID, 0));
    // Its next renumbering goes past the id's last epoch.
    let last = u32::from(crate::protocol::producer_id::MAX_EPOCH);
    worker.queues[0].sequencer.set_epoch(last);
    // The broker lost the queue's window: the batch is renumbered.
    let (_, _, _, cb) = sent.pop().unwrap();
    cb.complete(broker_error(ErrorCode::OUT_OF_ORDER_SEQUENCE));
    let reply = worker.replies_rx.try_recv().unwrap();
    worker.reply(reply);
    assert_eq!(*sink.new_ids.lock().unwrap(), [100 << 16], "a new id, asked once");
    worker.step(clock.now());
    let sent = drain_sent(&sink);
    assert_eq!(sent.len(), 1);
    assert_eq!(numbering(&sent[0].2), (100 << 16, 0), "the new id at epoch 0, from sequence 0");
    let (_, _, b, cb) = sent.into_iter().next().unwrap();
    cb.complete(ok_reply(7, &b));
    let reply = worker.replies_rx.try_recv().unwrap();
    worker.reply(reply);
    worker.step(clock.now());
    assert_eq!(first.try_take().unwrap().unwrap().queue_offset, 7);
    // The queue's next batches follow under the new id.
    let second = send_to(&mut worker, 0);
    worker.step(clock.now());
    let sent = drain_sent(&sink);
    assert_eq!(numbering(&sent[0].2), (100 << 16, 1));
    let (_, _, b, cb) = sent.into_iter().next().unwrap();
    cb.complete(ok_reply(8, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    worker.step(clock.now());
    assert_eq!(second.try_take().unwrap().unwrap().queue_offset, 8);
    assert_eq!(sink.new_ids.lock().unwrap().len(), 1);
}

/// Without a new producer id from the broker the queue keeps its id (the broker fences the
/// batches numbered from epoch 0 again under it) and asks again at its next renumbering, not
/// at every step or reply.
#[test]
fn a_queue_without_a_new_producer_id_asks_again_at_its_next_renumbering() {
    use std::sync::atomic::Ordering::SeqCst;
    let config = ProducerConfig { max_in_flight_per_queue: Some(1), ..Default::default() };
    let (mut worker, sink, clock) = sim_worker(config);
    let first = send_to(&mut worker, 0);
    worker.step(clock.now());
    let mut sent = drain_sent(&sink);
    worker.queues[0].sequencer.set_epoch(u32::from(crate::protocol::producer_id::MAX_EPOCH));
    sink.refuse_ids.store(true, SeqCst);
    let (_, _, _, cb) = sent.pop().unwrap();
    cb.complete(broker_error(ErrorCode::OUT_OF_ORDER_SEQUENCE));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    assert_eq!(sink.id_asks.load(SeqCst), 1);
    for _ in 0..3 {
        worker.step(clock.now());
    }
    let mut sent = drain_sent(&sink);
    assert_eq!(sent.len(), 1);
    assert_eq!(numbering(&sent[0].2), (PID, 0), "the old id, at wire epoch 0");
    assert_eq!(sink.id_asks.load(SeqCst), 1, "not asked again at every step");
    // The broker fences it (an older epoch than the id's last): renumbered, asked again.
    sink.refuse_ids.store(false, SeqCst);
    let (_, _, _, cb) = sent.pop().unwrap();
    cb.complete(broker_error(ErrorCode::OUT_OF_ORDER_SEQUENCE));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    assert_eq!(sink.id_asks.load(SeqCst), 2);
    worker.step(clock.now());
    let sent = drain_sent(&sink);
    assert_eq!(numbering(&sent[0].2), ((100 << 16) | 1, 0), "the new id, wire epoch 1");
    let (_, _, b, cb) = sent.into_iter().next().unwrap();
    cb.complete(ok_reply(3, &b));
    worker.reply(worker.replies_rx.try_recv().unwrap());
    worker.step(clock.now());
    assert_eq!(first.try_take().unwrap().unwrap().queue_offset, 3);
}
