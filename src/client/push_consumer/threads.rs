//! The push consumer's worker, retry, watch and puller threads (see the parent module).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{lock, ConsumeMode, ConsumeStatus, QueueState, Shared, Task};
use crate::client::error::ClientError;
use crate::protocol::{ErrorCode, ErrorDetail};

pub(super) fn worker(s: &Shared, rx: &Receiver<Task>) {
    while let Ok(task) = rx.recv() {
        let status = s.call_listener(&task.queue, &task.messages, task.attempt);
        let offsets = task.messages.iter().map(|m| m.offset);
        match status {
            ConsumeStatus::Success => lock(&task.queue.progress).finished(offsets),
            ConsumeStatus::ReconsumeLater => {
                if let Some((producer, policy)) = &s.send_back {
                    match send_back(s, producer, policy, &task) {
                        Ok(()) => {
                            // The copies carry the messages on: the queue's offset moves past.
                            lock(&task.queue.progress).finished(offsets);
                            task.queue.running.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => tracing::warn!(
                            topic = %task.queue.topic,
                            queue = task.queue.queue_id,
                            "cannot send failed messages back to the retry topic ({e}); \
                             redelivering them locally"
                        ),
                    }
                }
                let failures = task.attempt + 1;
                match s.config.retry.delay(failures) {
                    Some(d) => {
                        let retry = Task {
                            queue: task.queue.clone(),
                            messages: task.messages,
                            attempt: failures,
                        };
                        lock(&s.retries).push((Instant::now() + d, retry));
                    }
                    None => {
                        tracing::error!(
                            topic = %task.queue.topic,
                            queue = task.queue.queue_id,
                            "giving up a batch after {failures} failed deliveries"
                        );
                        lock(&task.queue.progress).finished(offsets);
                    }
                }
            }
        }
        task.queue.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends every message of a failed batch to the group's retry topic (delayed) or, past its
/// last retry, to its dead-letter topic, with the original topic, reconsume count and
/// original id as properties ([`crate::schedule::retry`]).
fn send_back(
    s: &Shared,
    producer: &crate::client::Producer,
    policy: &crate::schedule::retry::SendBackPolicy,
    task: &Task,
) -> Result<(), ClientError> {
    use crate::schedule::retry::{self, SendBack};
    for m in &task.messages {
        let origin_topic = m.origin_topic().unwrap_or(&task.queue.topic).to_string();
        let origin_id = m
            .property(retry::PROPERTY_ORIGIN_MESSAGE_ID.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| m.message_id.clone());
        let decision = policy.decide(m.reconsume_times());
        let times = match decision {
            SendBack::Retry { reconsume_times, .. } | SendBack::DeadLetter { reconsume_times } => {
                reconsume_times
            }
        };
        let ours = [
            retry::PROPERTY_RETRY_TOPIC,
            retry::PROPERTY_RECONSUME_TIME,
            retry::PROPERTY_ORIGIN_MESSAGE_ID,
        ];
        let mut properties: Vec<(Vec<u8>, Vec<u8>)> = m
            .properties
            .iter()
            .filter(|(k, _)| !ours.iter().any(|o| o.as_bytes() == k.as_slice()))
            .cloned()
            .collect();
        properties.push((retry::PROPERTY_RETRY_TOPIC.into(), origin_topic.into_bytes()));
        properties.push((retry::PROPERTY_RECONSUME_TIME.into(), times.to_string().into_bytes()));
        properties.push((retry::PROPERTY_ORIGIN_MESSAGE_ID.into(), origin_id.into_bytes()));
        let mut copy = crate::client::Message::new(String::new(), m.body.clone())
            .with_key(m.key.clone())
            .with_tag(m.tag.clone());
        copy.properties = properties;
        copy.timestamp_ms = Some(m.timestamp_ms);
        match decision {
            SendBack::Retry { delay_level, .. } => {
                let topic = retry::retry_topic(&s.config.group);
                copy.topic = topic.clone();
                producer.send_scheduled_batch(
                    &topic,
                    0,
                    &[copy],
                    crate::client::Delivery::Level(delay_level),
                )?;
            }
            SendBack::DeadLetter { .. } => {
                copy.topic = retry::dlq_topic(&s.config.group);
                producer.send(copy)?;
                tracing::warn!(
                    group = %s.config.group,
                    message = %m.message_id,
                    "message failed {times} times: moved to the dead-letter topic"
                );
            }
        }
    }
    Ok(())
}

pub(super) fn retry_loop(s: &Shared) {
    while !s.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due: Vec<Task> = {
            let mut r = lock(&s.retries);
            let (due, wait): (Vec<_>, Vec<_>) = r.drain(..).partition(|(at, _)| *at <= now);
            *r = wait;
            due.into_iter().map(|(_, t)| t).collect()
        };
        for t in due {
            // A queue given up meanwhile: its batch stays unfinished (the next owner gets it).
            if t.queue.stop.load(Ordering::Relaxed) {
                continue;
            }
            t.queue.running.fetch_add(1, Ordering::Relaxed);
            let q = t.queue.clone();
            let sender = lock(&s.tasks).clone();
            if sender.map_or(true, |tx| tx.send(t).is_err()) {
                q.running.fetch_sub(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn watch_loop(s: &Shared) {
    let groups = s.client.groups();
    while !s.stop.load(Ordering::Relaxed) {
        let known = s.version.load(Ordering::Relaxed);
        match groups.watch(&s.config.group, known, Duration::from_secs(5)) {
            Ok(v) if v != known && known != 0 => {
                s.changed.store(true, Ordering::Relaxed);
                s.wake();
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
        if known == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(super) fn puller(s: Arc<Shared>, q: Arc<QueueState>, tags: Vec<Vec<u8>>) {
    let mut consumer = s.client.consumer();
    consumer.tags = tags;
    let mut logged = false;
    while !q.stop.load(Ordering::Relaxed) && !q.lost.load(Ordering::Relaxed) {
        if Instant::now() >= *lock(&s.session_until) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let (offset, room) = {
            let p = lock(&q.progress);
            (p.next_pull(), p.has_room())
        };
        if !room {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let r = match consumer.pull(&q.topic, q.queue_id, offset, s.config.pull_wait) {
            Ok(r) => r,
            Err(ClientError::Broker {
                code,
                detail: ErrorDetail::OffsetRange { min, next },
                ..
            }) if code == ErrorCode::OFFSET_OUT_OF_RANGE as u16 => {
                lock(&q.progress).jump_to(if offset < min { min } else { next });
                continue;
            }
            Err(ClientError::CorruptData { first_offset, next_offset, reason, .. }) => {
                tracing::error!(
                    topic = %q.topic, queue = q.queue_id,
                    "skipping the damaged batch at offsets [{first_offset}, {next_offset}): {reason}"
                );
                lock(&q.progress).jump_to(next_offset);
                continue;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(topic = %q.topic, queue = q.queue_id, "pull failed, retrying: {e}");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        logged = false;
        q.caught_up
            .store(r.messages.is_empty() && r.next_offset >= r.max_offset, Ordering::Relaxed);
        lock(&q.progress).pulled(r.messages.iter().map(|m| m.offset), r.next_offset);
        if r.messages.is_empty() {
            continue;
        }
        match s.config.mode {
            ConsumeMode::Concurrent { batch_size, .. } => {
                let mut rest = r.messages;
                while !rest.is_empty() {
                    let tail = rest.split_off(batch_size.max(1).min(rest.len()));
                    let batch = std::mem::replace(&mut rest, tail);
                    q.running.fetch_add(1, Ordering::Relaxed);
                    let task = Task { queue: q.clone(), messages: batch, attempt: 0 };
                    let sender = lock(&s.tasks).clone();
                    if sender.map_or(true, |tx| tx.send(task).is_err()) {
                        q.running.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            ConsumeMode::Orderly { batch_size, suspend } => {
                for batch in r.messages.chunks(batch_size.max(1)) {
                    let mut attempt = 0;
                    loop {
                        if q.stop.load(Ordering::Relaxed) || q.lost.load(Ordering::Relaxed) {
                            return;
                        }
                        let valid = (*lock(&q.lock_until)).min(*lock(&s.session_until));
                        if Instant::now() >= valid {
                            // The lease or the session may have run out: wait for the control
                            // thread's renewal.
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        match s.call_listener(&q, batch, attempt) {
                            ConsumeStatus::Success => {
                                lock(&q.progress).finished(batch.iter().map(|m| m.offset));
                                break;
                            }
                            ConsumeStatus::ReconsumeLater => {
                                attempt += 1;
                                std::thread::sleep(suspend);
                            }
                        }
                    }
                }
            }
        }
    }
}
