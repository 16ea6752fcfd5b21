//! `client = "raw"`: producers and consumers that use the client library's connections and
//! routing but not its `Producer` and `PullConsumer`, to measure what the *broker* can take
//! when the load generator is not the bottleneck.
//!
//! The raw producer fills one batch at a time with `BatchBuilder` (the message body is a
//! reused buffer, only its header changes), sends it as a `Produce` request to the owning
//! shard with a completion callback, and keeps up to `max_in_flight` messages in flight over
//! all queues (several batches per queue). The raw consumer sends `Fetch` requests whose
//! answers land in buffers it lends and reuses (as the library's queue readers do), and walks
//! the returned batches in place (`BatchView`, CRCs checked) instead of copying every record
//! into a `ConsumedMessage`; it keeps one fetch per queue in flight at all times (the next one
//! sent as soon as an answer's headers give its offset), taking answers in the order they
//! arrive (a fetch unanswered past the request timeout is sent again). Everything is measured
//! and verified the same way as in library mode. Only for unkeyed, max-rate workloads (checked
//! by the workload).

use std::collections::HashMap;
use std::sync::atomic::Ordering::*;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use ringmq::client::connection::FetchReply;
use ringmq::client::{Client, ClientError};
use ringmq::format::{BatchBuilder, BatchView, FormatError, Record};
use ringmq::protocol::{ErrorCode, Request, Response, SendStatus};

use crate::clock::{now_ns, pin_current_thread};
use crate::payload::{Prefix, NO_KEY, PREFIX_LEN};
use crate::runner::{lock, record_consumed, ProducerStats, Shared};
use crate::stats::Recorder;
use crate::workload::Workload;

type Completion = (u64, u64, Result<bool, String>);

#[allow(clippy::too_many_arguments)]
pub(crate) fn producer_main(
    id: u32,
    w: &Workload,
    topics: &[String],
    address: &str,
    cpu: Option<usize>,
    shared: &Shared,
    recorder: &Mutex<Recorder>,
) -> Result<ProducerStats, String> {
    if let Some(c) = cpu {
        pin_current_thread(c)?;
    }
    let client = Client::connect(address).map_err(|e| format!("producer {id}: {e}"))?;
    let router = client.router().clone();
    let queues: Vec<(&String, u32)> =
        topics.iter().flat_map(|t| (0..w.queues_per_topic).map(move |q| (t, q))).collect();
    let mut next_queue = id as usize * 7919 % queues.len();
    let mut body = vec![0u8; w.message_size_bytes];
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ ((id as u64 + 1) << 32);
    for b in body.iter_mut() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        *b = rng as u8;
    }
    let (tx, rx) = mpsc::channel::<Completion>();
    let mut waiting: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut in_flight = 0usize;
    let mut batch_no = 0u64;
    let mut seq = 0u64;
    let backlog = w.backlog_bytes > 0;
    let complete = |c: Completion, waiting: &mut HashMap<u64, Vec<u64>>, n: &mut usize| {
        let (batch, at, result) = c;
        let intended = waiting.remove(&batch).expect("a completion per batch");
        *n -= intended.len();
        match result {
            Ok(timed_out) => {
                shared.acked.fetch_add(intended.len() as u64, Relaxed);
                if timed_out {
                    shared.flush_timeouts.fetch_add(intended.len() as u64, Relaxed);
                }
                let mut r = lock(recorder);
                for i in intended {
                    r.latency(at.saturating_sub(i));
                }
            }
            Err(e) => {
                shared.failed.fetch_add(intended.len() as u64, Relaxed);
                shared.error(format!("producer {id}: batch failed: {e}"));
            }
        }
    };
    let mut exhausted = false;
    while !exhausted && !shared.stop_producers.load(Relaxed) {
        let (topic, queue) = queues[next_queue];
        next_queue = (next_queue + 1) % queues.len();
        let mut b = BatchBuilder::new(w.batch_max_bytes);
        let mut intended = Vec::new();
        loop {
            if backlog
                && shared.backlog_left.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_err()
            {
                exhausted = true;
                break;
            }
            let now = now_ns();
            Prefix { intended_ns: now, producer: id, key: NO_KEY, seq, key_seq: 0 }
                .write(&mut body[..PREFIX_LEN]);
            let r = b.push(&Record {
                key: b"",
                tag: b"",
                properties: &[],
                body: &body,
                timestamp_ms: unix_ms(),
            });
            match r {
                Ok(()) => {}
                Err(FormatError::BatchFull { .. }) if !b.is_empty() => {
                    if backlog {
                        // Give the claimed message back; it goes into the next batch.
                        shared.backlog_left.fetch_add(1, Relaxed);
                    }
                    break;
                }
                Err(e) => return Err(format!("producer {id}: cannot build a batch: {e}")),
            }
            intended.push(now);
            seq += 1;
            if intended.len() >= w.max_in_flight {
                break;
            }
        }
        if intended.is_empty() {
            break;
        }
        let bytes = b.finish(-1, -1);
        batch_no += 1;
        in_flight += intended.len();
        shared.sent.fetch_add(intended.len() as u64, Relaxed);
        waiting.insert(batch_no, intended);
        let tx = tx.clone();
        let this = batch_no;
        let callback = Box::new(move |r: Result<Response, ClientError>| {
            let result = match r {
                Ok(Response::Produce { status, .. }) => Ok(status == SendStatus::FlushDiskTimeout),
                Ok(other) => Err(format!("produce got a {:?} reply", other.api_key())),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send((this, now_ns(), result));
        });
        let request = Request::Produce {
            topic: topic.clone(),
            queue_id: queue,
            flags: 0,
            batch: bytes.into(),
        };
        match router.queue_connection(topic, queue) {
            // On a send failure the callback already ran with the error.
            Ok(conn) => {
                let _ = conn.send_with_callback(&request, callback);
            }
            Err(e) => callback(Err(e)),
        }
        while let Ok(c) = rx.try_recv() {
            complete(c, &mut waiting, &mut in_flight);
        }
        while in_flight >= w.max_in_flight {
            match rx.recv() {
                Ok(c) => complete(c, &mut waiting, &mut in_flight),
                Err(_) => break,
            }
        }
    }
    drop(tx);
    while !waiting.is_empty() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(c) => complete(c, &mut waiting, &mut in_flight),
            Err(_) => return Err(format!("producer {id}: no reply for {} batches", waiting.len())),
        }
    }
    Ok(ProducerStats { id, sent: seq })
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn consumer_main(
    id: u32,
    w: &Workload,
    queues: &[(String, u32)],
    address: &str,
    cpu: Option<usize>,
    shared: &Shared,
    recorder: &Mutex<Recorder>,
) -> Result<(), String> {
    if let Some(c) = cpu {
        pin_current_thread(c)?;
    }
    let client = Client::connect(address).map_err(|e| format!("consumer {id}: {e}"))?;
    let router = client.router().clone();
    let mut offsets = vec![0u64; queues.len()];
    if !shared.wait_for_consumers_go() {
        return Ok(());
    }
    let wait_ms = if queues.len() == 1 { 100 } else { 0 };
    let timeout = router.options.request_timeout + Duration::from_millis(wait_ms as u64);
    // One fetch per queue always in flight (as the library's queue readers keep theirs). The
    // answers are taken as they arrive: each queue's next fetch goes out as soon as its
    // answer's batch headers give the next offset, before its records are walked, and a queue
    // whose answer is late holds up no other (taken in queue order, answers ready behind a
    // slow one waited, and so did their queues' next fetches). Each answer's batches land in
    // a buffer lent with its fetch and taken back once walked, so the reader thread copies
    // them into memory already faulted in (a new 4 MiB vector per answer cost the load
    // generator's core page faults and page clearing).
    let (tx, rx) = mpsc::channel::<(usize, u64, Result<FetchReply, ClientError>)>();
    let send = |i: usize, offset: u64, buffer: Vec<u8>, generation: u64| {
        let (topic, queue) = &queues[i];
        let request = Request::Fetch {
            topic: topic.clone(),
            queue_id: *queue,
            offset,
            max_bytes: w.fetch_max_bytes,
            max_wait_ms: wait_ms,
            tags: Vec::new(),
        };
        let tx = tx.clone();
        match router.queue_connection(topic, *queue) {
            // The callback runs exactly once, also when the request could not be sent.
            Ok(conn) => {
                let done = Box::new(move |r| drop(tx.send((i, generation, r))));
                let _ = conn.send_fetch(&request, buffer, done);
            }
            Err(e) => drop(tx.send((i, generation, Err(e)))),
        }
    };
    // Buffers of answers walked, for the next fetches: one per queue and one more at most.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let keep = |spare: &mut Vec<Vec<u8>>, b: Vec<u8>| {
        if spare.len() <= queues.len() {
            spare.push(b);
        }
    };
    // A queue's fetch in flight: its generation (an answer of an earlier one, given up after
    // the request timeout, is dropped) and when it was sent.
    let mut generation = vec![0u64; queues.len()];
    let mut sent_at = vec![Instant::now(); queues.len()];
    for i in 0..queues.len() {
        send(i, 0, Vec::new(), 0);
    }
    let mut prefixes = Vec::new();
    let mut empty_in_a_row = 0usize;
    let mut swept = Instant::now();
    while !shared.stop_consumers.load(Relaxed) {
        let answer = rx.recv_timeout(Duration::from_millis(50));
        // Every 50 ms, answers flowing or not: give up the fetches unanswered past the request
        // timeout (one lost answer would otherwise stall its queue while the others go on).
        let now = Instant::now();
        if now.duration_since(swept) >= Duration::from_millis(50) {
            swept = now;
            for i in 0..queues.len() {
                if now.duration_since(sent_at[i]) > timeout {
                    let (topic, queue) = &queues[i];
                    let e = ClientError::Timeout(timeout.as_millis() as u64);
                    shared.error(format!("consumer {id}: {topic}/{queue}: {e}"));
                    generation[i] += 1;
                    sent_at[i] = now;
                    send(i, offsets[i], spare.pop().unwrap_or_default(), generation[i]);
                }
            }
        }
        let Ok((i, g, r)) = answer else { continue };
        if g != generation[i] {
            if let Ok(stale) = r {
                keep(&mut spare, stale.batches);
            }
            continue;
        }
        let (topic, queue) = &queues[i];
        let batches = match r {
            Ok(reply) => reply.batches,
            Err(e) => {
                if matches!(e.code(), Some(ErrorCode::NOT_OWNER)) || e.code().is_none() {
                    router.refresh(topic);
                }
                shared.error(format!("consumer {id}: {topic}/{queue}: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                generation[i] += 1;
                sent_at[i] = Instant::now();
                send(i, offsets[i], spare.pop().unwrap_or_default(), generation[i]);
                continue;
            }
        };
        // The next offset from the batch headers (lengths checked by BatchView::parse below).
        let from = offsets[i];
        let mut next = from;
        let mut rest: &[u8] = &batches;
        while rest.len() >= ringmq::format::batch::HEADER_LEN {
            let Ok(view) = BatchView::parse(rest, rest.len()) else { break };
            next = next.max(view.header.next_offset());
            rest = &rest[view.header.length as usize..];
        }
        generation[i] += 1;
        sent_at[i] = Instant::now();
        send(i, next, spare.pop().unwrap_or_default(), generation[i]);
        prefixes.clear();
        let mut foreign = 0u64;
        let mut rest: &[u8] = &batches;
        while !rest.is_empty() {
            let view = BatchView::parse(rest, rest.len())
                .and_then(|v| v.verify_stamp().map(|()| v))
                .map_err(|e| format!("consumer {id}: fetched batch is invalid: {e}"))?;
            let h = view.header;
            rest = &rest[h.length as usize..];
            if h.is_control() || h.next_offset() <= from {
                continue;
            }
            for rec in view.records() {
                let rec = rec.map_err(|e| format!("consumer {id}: fetched record: {e}"))?;
                if h.stamp.base_offset + u64::from(rec.index) < from {
                    continue;
                }
                match Prefix::read(rec.body) {
                    Some(p) => prefixes.push(p),
                    None => foreign += 1,
                }
            }
        }
        keep(&mut spare, batches);
        offsets[i] = next;
        let got = prefixes.len() + foreign as usize;
        record_consumed(w, shared, recorder, &prefixes, foreign);
        // Caught up (answers come back empty at once): nap once every queue has answered
        // empty in a row, as the library's consumer naps after a sweep that found nothing.
        empty_in_a_row = if got == 0 { empty_in_a_row + 1 } else { 0 };
        if empty_in_a_row >= queues.len() && wait_ms == 0 {
            std::thread::sleep(Duration::from_micros(200));
            empty_in_a_row = 0;
        }
    }
    Ok(())
}
