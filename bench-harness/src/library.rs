//! The library client's producer and consumer threads: what applications get (the raw
//! client's are in `raw.rs`). Per-message `send_async` with each ack timed, batch sends
//! (`send_batch_messages`), transactions (`transactional`: half + commit per message),
//! pipelined queue readers over fixed queues, and consumer-group members (`consumer_group`;
//! the consumers are in `library/consumer.rs`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use ringmq::client::{
    Client, ClientError, Message, Pending, ProducerConfig, QueueSelector, SendHandle,
    TransactionProducerConfig, TransactionState,
};
use ringmq::protocol::SendStatus;

use crate::clock::{now_ns, pin_current_thread, precise_sleeps, wait_until};
use crate::payload::{Prefix, NO_KEY, PREFIX_LEN};
use crate::rate::Schedule;
use crate::runner::{lock, ProducerStats, Shared};
use crate::stats::Recorder;
use crate::workload::{KeyDistribution, Workload};

mod consumer;
pub(crate) use consumer::{consumer_main, group_consumer_main};

/// Records the time a reply arrived: the producer's reply path wakes it. Fixed-rate runs only
/// (see `producer_main`).
struct AckSlot(AtomicU64);

impl Wake for AckSlot {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(now_ns().max(1), Release);
    }
}

struct InFlight {
    pending: SendHandle,
    /// Fixed-rate runs: the reply's exact arrival time. Max-rate runs have none: a reply is
    /// timed when the producer collects it.
    slot: Option<Arc<AckSlot>>,
    intended_ns: u64,
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Sends a producer counts before it adds them to the shared `sent` count.
const SENT_PUBLISH_EVERY: u64 = 64;

/// A library producer on this thread (pinned to `cpu`) with the workload's batching: keyed
/// workloads hash keys to queues, others go round robin (per batch, the library's default,
/// unless the workload says otherwise).
fn library_producer(
    id: u32,
    w: &Workload,
    address: &str,
    cpu: Option<usize>,
) -> Result<ringmq::client::Producer, String> {
    if let Some(c) = cpu {
        pin_current_thread(c)?;
    }
    let client = Client::connect(address).map_err(|e| format!("producer {id}: {e}"))?;
    client.producer(producer_config(w)).map_err(|e| format!("producer {id}: {e}"))
}

/// The library producers' settings for `w`: its selector, batching and buffer bounds, the
/// library's defaults for the rest.
fn producer_config(w: &Workload) -> ProducerConfig {
    let keyed = w.key_distribution != KeyDistribution::None;
    let default = ProducerConfig::default();
    ProducerConfig {
        selector: match (keyed, w.sticky_messages, w.round_robin_per_message) {
            (true, ..) => QueueSelector::KeyHash,
            (false, 0, false) => QueueSelector::RoundRobinPerBatch,
            (false, 0, true) => QueueSelector::RoundRobin,
            (false, n, _) => QueueSelector::Sticky(n),
        },
        linger: Duration::from_millis(w.linger_ms),
        max_batch_bytes: w.batch_max_bytes,
        max_buffer_bytes: match w.producer_buffer_bytes {
            0 => default.max_buffer_bytes,
            n => n,
        },
        buffer_messages: match w.producer_buffer_messages {
            0 => default.buffer_messages,
            n => n,
        },
        max_in_flight_per_queue: match w.producer_max_in_flight_per_queue {
            0 => default.max_in_flight_per_queue,
            n => Some(n),
        },
        small_batches_in_flight_bytes: w
            .producer_small_batches_in_flight_bytes
            .unwrap_or(default.small_batches_in_flight_bytes),
        send_timeout: match w.producer_send_timeout_ms {
            0 => default.send_timeout,
            ms => Duration::from_millis(ms),
        },
        ..default
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn producer_main(
    id: u32,
    w: &Workload,
    topics: &[String],
    address: &str,
    cpu: Option<usize>,
    rate: u64,
    shared: &Shared,
    recorder: &Mutex<Recorder>,
) -> Result<ProducerStats, String> {
    precise_sleeps();
    let keyed = w.key_distribution != KeyDistribution::None;
    let producer = library_producer(id, w, address, cpu)?;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((id as u64 + 1) << 32);
    // Incompressible filler after the header.
    let template: Vec<u8> = (0..w.message_size_bytes).map(|_| xorshift(&mut rng) as u8).collect();
    let keys: Vec<Vec<u8>> = (0..w.key_count).map(|k| format!("k{k}").into_bytes()).collect();
    // One message per topic, refilled for every send (unless `send_owned_messages`).
    let mut reused: Vec<Message> =
        topics.iter().map(|t| Message::new(t.as_str(), template.clone())).collect();
    let mut key_seqs = vec![0u64; w.key_count as usize];
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut schedule = Schedule::new(now_ns(), rate);
    let backlog = w.backlog_bytes > 0;
    let mut seq = 0u64;
    let mut unpublished = 0u64;
    // Collects the answered sends at the front (oldest first); with `block`, first waits for
    // the front one (an earlier version waited for every send in flight, so the pipeline
    // drained to empty whenever it reached `max_in_flight`). A send with an `AckSlot` (fixed
    // rate) counts from when its reply arrived; one without (max rate) from when it is
    // collected here, which is every loop turn (one send later, microseconds) or at once when
    // the producer waits for room, but only in send order: a reply behind an unanswered older
    // send waits for it. The histogram lock and the clock read are taken once per call.
    let reap = |in_flight: &mut VecDeque<InFlight>, block: bool| {
        let mut now = 0u64;
        let mut acked = 0u64;
        let mut flush_timeouts = 0u64;
        let mut rec: Option<std::sync::MutexGuard<'_, Recorder>> = None;
        let mut must_wait = block;
        while let Some(f) = in_flight.front() {
            let arrived = f.slot.as_ref().map(|s| s.0.load(Acquire));
            if arrived == Some(0) && !must_wait {
                break;
            }
            // The status only (`try_status`): this producer checks that each send was stored
            // and counts flush timeouts; a whole `SendResult` per message shares the topic's
            // name with it, a reference count taken and dropped for nothing here.
            let taken = f.pending.try_status();
            if taken.is_none() && !must_wait {
                break;
            }
            must_wait = false;
            let f = in_flight.pop_front().expect("front exists");
            let (result, at) = match taken {
                Some(r) => {
                    let at = match arrived {
                        Some(at) => at.max(1),
                        None => {
                            if now == 0 {
                                now = now_ns();
                            }
                            now
                        }
                    };
                    (r, at)
                }
                None => {
                    let r = f.pending.wait().map(|r| r.status);
                    now = now_ns();
                    let at = f.slot.as_ref().map_or(0, |s| s.0.load(Acquire));
                    (r, if at == 0 { now } else { at })
                }
            };
            match result {
                Ok(status) => {
                    acked += 1;
                    if status == SendStatus::FlushDiskTimeout {
                        flush_timeouts += 1;
                    }
                    rec.get_or_insert_with(|| lock(recorder))
                        .latency(at.saturating_sub(f.intended_ns));
                }
                Err(e) => {
                    shared.failed.fetch_add(1, Relaxed);
                    shared.error(format!("producer {id}: send failed: {e}"));
                }
            }
        }
        if acked > 0 {
            shared.acked.fetch_add(acked, Relaxed);
        }
        if flush_timeouts > 0 {
            shared.flush_timeouts.fetch_add(flush_timeouts, Relaxed);
        }
    };
    loop {
        if shared.stop_producers.load(Relaxed) {
            break;
        }
        if backlog
            && shared.backlog_left.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_err()
        {
            break;
        }
        let intended = schedule.next_intended(now_ns());
        if schedule.is_fixed_rate() {
            // Reap replies while waiting for the next slot.
            while now_ns() + 200_000 < intended {
                reap(&mut in_flight, false);
                wait_until(intended.min(now_ns() + 1_000_000));
            }
            wait_until(crate::rate::send_time(intended, now_ns()));
        }
        let actual = if schedule.is_fixed_rate() { now_ns() } else { intended };
        let (key, key_seq) = if keyed {
            let k = match w.key_distribution {
                KeyDistribution::Random => (xorshift(&mut rng) % w.key_count as u64) as usize,
                _ => (seq % w.key_count as u64) as usize,
            };
            let s = key_seqs[k];
            key_seqs[k] += 1;
            (k as u32, s)
        } else {
            (NO_KEY, 0)
        };
        // A key stays on one topic (and, through the hash selector, on one queue): per-key
        // order holds within a queue, so a key spread over topics would have none to verify.
        let topic_index =
            if keyed { key as usize % topics.len() } else { (seq % topics.len() as u64) as usize };
        let prefix = Prefix { intended_ns: intended, producer: id, key, seq, key_seq };
        let sent = if w.send_owned_messages {
            let mut body = template.clone();
            prefix.write(&mut body[..PREFIX_LEN]);
            let mut msg = Message::new(topics[topic_index].as_str(), body);
            if keyed {
                msg.key = keys[key as usize].clone();
            }
            producer.send_async(msg)
        } else {
            let msg = &mut reused[topic_index];
            prefix.write(&mut msg.body[..PREFIX_LEN]);
            if keyed {
                msg.key.clear();
                msg.key.extend_from_slice(&keys[key as usize]);
            }
            producer.send_async_ref(msg)
        };
        let pending = match sent {
            Ok(p) => p,
            Err(e) => {
                shared.error(format!("producer {id}: {e}"));
                break;
            }
        };
        seq += 1;
        // Counted for the reporter every SENT_PUBLISH_EVERY sends (and at the end): a shared
        // atomic add per message was a locked instruction on the load generator's core that
        // the raw client, which counts per batch, does not pay.
        unpublished += 1;
        if unpublished == SENT_PUBLISH_EVERY {
            shared.sent.fetch_add(unpublished, Relaxed);
            unpublished = 0;
        }
        if schedule.is_fixed_rate() {
            lock(recorder).delay(actual.saturating_sub(intended));
        }
        if schedule.is_fixed_rate() {
            // Time the reply exactly when it arrives (the producer sleeps between sends, so
            // collecting it would time it up to a sleep late).
            let slot = Arc::new(AckSlot(AtomicU64::new(0)));
            let waker = Waker::from(slot.clone());
            let mut cx = Context::from_waker(&waker);
            let mut pending = pending;
            if Pin::new(&mut pending).poll(&mut cx).is_ready() {
                // Already answered: the reaper times it from now (a handle's result can be
                // taken again).
                slot.0.store(now_ns().max(1), Release);
            }
            in_flight.push_back(InFlight { pending, slot: Some(slot), intended_ns: intended });
        } else {
            in_flight.push_back(InFlight { pending, slot: None, intended_ns: intended });
        }
        reap(&mut in_flight, false);
        while in_flight.len() >= w.max_in_flight {
            reap(&mut in_flight, true);
        }
    }
    shared.sent.fetch_add(unpublished, Relaxed);
    while !in_flight.is_empty() {
        reap(&mut in_flight, true);
    }
    if let Err(e) = producer.close() {
        shared.error(format!("producer {id}: close: {e}"));
    }
    Ok(ProducerStats { id, sent: seq })
}

/// A transactional producer: each message is a half then its commit, one transaction at a
/// time on this thread, as fast as they complete. Latency is from the half's send to the
/// commit's answer (the message is visible then).
pub(crate) fn transactional_producer_main(
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
    let config = TransactionProducerConfig {
        selector: QueueSelector::RoundRobin,
        max_batch_bytes: w.batch_max_bytes,
        ..TransactionProducerConfig::new("ringmq-bench-tx")
    };
    // Every local transaction commits, so no half is ever checked back.
    let producer = client
        .transaction_producer(config, |_| TransactionState::Commit)
        .map_err(|e| format!("producer {id}: {e}"))?;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((id as u64 + 1) << 32);
    let template: Vec<u8> = (0..w.message_size_bytes).map(|_| xorshift(&mut rng) as u8).collect();
    let mut seq = 0u64;
    while !shared.stop_producers.load(Relaxed) {
        let intended = now_ns();
        let mut body = template.clone();
        Prefix { intended_ns: intended, producer: id, key: NO_KEY, seq, key_seq: 0 }
            .write(&mut body[..PREFIX_LEN]);
        let topic = &topics[(seq % topics.len() as u64) as usize];
        shared.sent.fetch_add(1, Relaxed);
        seq += 1;
        match producer
            .send_in_transaction(Message::new(topic.as_str(), body), |_| TransactionState::Commit)
        {
            Ok(r) if r.queue_offset.is_some() => {
                shared.acked.fetch_add(1, Relaxed);
                if r.status == SendStatus::FlushDiskTimeout {
                    shared.flush_timeouts.fetch_add(1, Relaxed);
                }
                lock(recorder).latency(now_ns().saturating_sub(intended));
            }
            Ok(r) => {
                shared.failed.fetch_add(1, Relaxed);
                shared.error(format!("producer {id}: transaction not committed: {r:?}"));
            }
            Err(e) => {
                shared.failed.fetch_add(1, Relaxed);
                shared.error(format!("producer {id}: transaction failed: {e}"));
                break;
            }
        }
    }
    producer.close();
    Ok(ProducerStats { id, sent: seq })
}

/// A library producer sending `send_batch_messages` messages per `send_batch_async` call (one
/// completion handle per batch), as fast as `max_in_flight` allows. Ack latency is taken when
/// the batch's answer is collected (at most one loop turn late), for every message in it.
pub(crate) fn batch_producer_main(
    id: u32,
    w: &Workload,
    topics: &[String],
    address: &str,
    cpu: Option<usize>,
    shared: &Shared,
    recorder: &Mutex<Recorder>,
) -> Result<ProducerStats, String> {
    let producer = library_producer(id, w, address, cpu)?;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((id as u64 + 1) << 32);
    let template: Vec<u8> = (0..w.message_size_bytes).map(|_| xorshift(&mut rng) as u8).collect();
    let per_batch = w.send_batch_messages as usize;
    type Batch = (Pending<Result<ringmq::client::SendBatchResult, ClientError>>, u64, usize);
    let mut in_flight: VecDeque<Batch> = VecDeque::new();
    let mut in_flight_messages = 0usize;
    let backlog = w.backlog_bytes > 0;
    let mut seq = 0u64;
    // Collects answered batches; with `block`, waits for the oldest one if none is answered.
    let reap = |in_flight: &mut VecDeque<Batch>, block: bool| -> usize {
        let mut done = 0;
        loop {
            let answered = match in_flight.front_mut() {
                None => break,
                Some((p, _, _)) => p.try_take(),
            };
            let (result, intended, count) = match answered {
                Some(r) => {
                    let (_, intended, count) = in_flight.pop_front().expect("front exists");
                    (r, intended, count)
                }
                None if block && done == 0 => {
                    let (p, intended, count) = in_flight.pop_front().expect("front exists");
                    (p.wait(), intended, count)
                }
                None => break,
            };
            done += count;
            match result {
                Ok(r) => {
                    shared.acked.fetch_add(count as u64, Relaxed);
                    if r.status == SendStatus::FlushDiskTimeout {
                        shared.flush_timeouts.fetch_add(count as u64, Relaxed);
                    }
                    let at = now_ns();
                    let mut rec = lock(recorder);
                    for _ in 0..count {
                        rec.latency(at.saturating_sub(intended));
                    }
                }
                Err(e) => {
                    shared.failed.fetch_add(count as u64, Relaxed);
                    shared.error(format!("producer {id}: batch send failed: {e}"));
                }
            }
        }
        done
    };
    'send: loop {
        if shared.stop_producers.load(Relaxed) {
            break;
        }
        let intended = now_ns();
        let topic = &topics[(seq / per_batch as u64 % topics.len() as u64) as usize];
        let mut batch = Vec::with_capacity(per_batch);
        for _ in 0..per_batch {
            if backlog
                && shared.backlog_left.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_err()
            {
                break;
            }
            let mut body = template.clone();
            Prefix { intended_ns: intended, producer: id, key: NO_KEY, seq, key_seq: 0 }
                .write(&mut body[..PREFIX_LEN]);
            batch.push(Message::new(topic.as_str(), body));
            seq += 1;
        }
        let count = batch.len();
        if count == 0 {
            break 'send;
        }
        match producer.send_batch_async(batch) {
            Ok(p) => in_flight.push_back((p, intended, count)),
            Err(e) => {
                shared.error(format!("producer {id}: {e}"));
                break;
            }
        }
        shared.sent.fetch_add(count as u64, Relaxed);
        in_flight_messages += count;
        in_flight_messages -= reap(&mut in_flight, false);
        while in_flight_messages >= w.max_in_flight {
            in_flight_messages -= reap(&mut in_flight, true);
        }
        if count < per_batch {
            break; // the backlog is produced
        }
    }
    while !in_flight.is_empty() {
        reap(&mut in_flight, true);
    }
    if let Err(e) = producer.close() {
        shared.error(format!("producer {id}: close: {e}"));
    }
    Ok(ProducerStats { id, sent: seq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::tests::MIN;

    #[test]
    fn the_producer_buffer_and_timeout_settings_reach_the_producer_or_default_to_the_library_s() {
        let d = ProducerConfig::default();
        let c = producer_config(&Workload::parse(MIN, &[]).unwrap());
        assert_eq!(
            (c.max_buffer_bytes, c.buffer_messages, c.small_batches_in_flight_bytes),
            (d.max_buffer_bytes, d.buffer_messages, d.small_batches_in_flight_bytes)
        );
        assert_eq!(c.send_timeout, d.send_timeout);
        let set = [
            "producer_buffer_bytes = 1048576".into(),
            "producer_buffer_messages = 500000".into(),
            "producer_small_batches_in_flight_bytes = 0".into(),
            "producer_send_timeout_ms = 30000".into(),
        ];
        let c = producer_config(&Workload::parse(MIN, &set).unwrap());
        assert_eq!(c.max_buffer_bytes, 1 << 20);
        assert_eq!(c.buffer_messages, 500_000);
        assert_eq!(c.small_batches_in_flight_bytes, 0);
        assert_eq!(c.send_timeout, Duration::from_secs(30));
    }
}
