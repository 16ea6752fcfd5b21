//! The push consumer's worker, retry, watch and fetch threads (see the parent module).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{
    lock, message_bytes, Buffered, ConsumeMode, ConsumeStatus, FetchCommand, QueueState, Shared,
    Task,
};
use crate::client::error::ClientError;
use crate::client::{ConsumedMessage, MultiQueueReader};
use crate::protocol::{ErrorCode, ErrorDetail};

pub(super) fn worker(s: &Shared, rx: &Receiver<Task>) {
    while let Ok(task) = rx.recv() {
        s.took(task.messages.len(), task.bytes);
        if let ConsumeMode::Orderly { batch_size, suspend, .. } = s.config.mode {
            run_orderly(s, &task.queue, batch_size, suspend);
            task.queue.running.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        if task.queue.stop.load(Ordering::SeqCst) {
            // Given up since it was fetched: unfinished, so not committed; its next owner reads
            // it (a rebalance or shutdown does not wait for what the channel holds).
            task.queue.running.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
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
                            task.queue.running.fetch_sub(1, Ordering::SeqCst);
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
                        let retry = Task::new(task.queue.clone(), task.messages, failures);
                        // Counted while it waits, as in the channel (uncounted by retry_loop).
                        s.buffer(retry.messages.len(), retry.bytes);
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
        task.queue.running.fetch_sub(1, Ordering::SeqCst);
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
            .unwrap_or_else(|| m.message_id.to_string());
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
            .filter(|(k, _)| !ours.iter().any(|o| o.as_bytes() == k.as_ref()))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        properties.push((retry::PROPERTY_RETRY_TOPIC.into(), origin_topic.into_bytes()));
        properties.push((retry::PROPERTY_RECONSUME_TIME.into(), times.to_string().into_bytes()));
        properties.push((retry::PROPERTY_ORIGIN_MESSAGE_ID.into(), origin_id.into_bytes()));
        let mut copy = crate::client::Message::new(String::new(), m.body.to_vec())
            .with_key(m.key.to_vec())
            .with_tag(m.tag.to_vec());
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
                // A batch of its own: the send-back producer's batches may be larger than
                // the broker takes, so copies are not gathered into one.
                producer.send_batch(vec![copy])?;
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
            // Counted while waiting here (concurrent batches; an orderly queue's turn holds
            // none); submit counts it again.
            s.took(t.messages.len(), t.bytes);
            // A queue given up meanwhile: its batch stays unfinished (the next owner gets it).
            if t.queue.stop.load(Ordering::SeqCst) {
                drop_backlog(s, &t.queue);
                continue;
            }
            t.queue.running.fetch_add(1, Ordering::SeqCst);
            let q = t.queue.clone();
            if !s.submit(t) {
                q.running.fetch_sub(1, Ordering::SeqCst);
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

/// Where the fetch thread keeps an owned queue: its reader index and state.
struct Fetched {
    state: Arc<QueueState>,
    /// Left out of the fetches: its unfinished messages are at the bound, or it failed and
    /// waits until this time.
    paused: Option<Instant>,
}

/// The fetch thread: reads every owned queue with one [`MultiQueueReader`] and hands what it
/// reads to the workers (see the parent module).
pub(super) fn fetch_loop(s: &Shared) {
    let mut consumer = s.client.consumer();
    consumer.max_bytes = s.config.fetch_max_bytes;
    let mut reader = MultiQueueReader::new(consumer, &[], s.config.pull_wait);
    *lock(&s.fetch_waker) = Some(reader.waker());
    let mut queues: HashMap<usize, Fetched> = HashMap::new();
    // Indexes of paused queues (few; checked every turn).
    let mut paused: Vec<usize> = Vec::new();
    let mut logged = false;
    while !s.fetch_done.load(Ordering::SeqCst) {
        let commands = {
            let mut fetch = lock(&s.fetch);
            if fetch.is_empty() {
                // Under the lock the control thread adds queues with: never true for a queue
                // added and not read yet.
                s.fetched_all.store(reader.caught_up(), Ordering::SeqCst);
            }
            std::mem::take(&mut *fetch)
        };
        if !commands.is_empty() {
            tracing::debug!(group = %s.config.group, commands = commands.len(), reading = reader.len(), "queues to read change");
        }
        for c in commands {
            match c {
                FetchCommand::Add(q, tags) => {
                    let from = lock(&q.progress).next_pull();
                    let i = reader.add(&q.topic, q.queue_id, from, tags);
                    q.slot.store(i, Ordering::Relaxed);
                    queues.insert(i, Fetched { state: q, paused: None });
                }
                FetchCommand::Remove(q) => {
                    let i = q.slot.load(Ordering::Relaxed);
                    if queues.get(&i).is_some_and(|f| Arc::ptr_eq(&f.state, &q)) {
                        reader.remove(i);
                        queues.remove(&i);
                        paused.retain(|&p| p != i);
                    }
                    q.detached.store(true, Ordering::SeqCst);
                }
            }
        }
        let now = Instant::now();
        paused.retain(|&i| {
            let Some(f) = queues.get_mut(&i) else { return false };
            let waited = f.paused.map_or(true, |until| now >= until);
            if waited && lock(&f.state.progress).has_room() {
                f.paused = None;
                reader.set_paused(i, false);
                return false;
            }
            true
        });
        if now >= *lock(&s.session_until) {
            // This member's session may have expired (another member may own its queues
            // now): wait for the control thread's next heartbeat.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // Woken at once when the control thread adds or removes queues (also with none to
        // read yet); paused queues are looked at again every few ms (their workers finishing
        // messages makes room).
        let wait = Duration::from_millis(if paused.is_empty() { 200 } else { 5 });
        // The workers are behind by `max_buffered_bytes`: wait for them (woken when they take
        // a task), looking at the control thread's commands every 20 ms meanwhile (a queue
        // given up is let go of without waiting for the workers to catch up).
        if !s.room_to_fetch(wait.min(Duration::from_millis(20))) {
            continue;
        }
        let got = match reader.next_batches(wait) {
            Ok(got) => {
                logged = false;
                got
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(group = %s.config.group, "fetching failed, retrying: {e}");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        for (i, result) in got {
            let Some(f) = queues.get_mut(&i) else { continue };
            let q = f.state.clone();
            if q.stop.load(Ordering::SeqCst) {
                continue;
            }
            let view = match result {
                Ok(v) => v,
                Err(e) => {
                    if let Some(to) = moved_past(&q, &e) {
                        lock(&q.progress).jump_to(to);
                        reader.seek(i, to);
                    } else {
                        tracing::warn!(topic = %q.topic, queue = q.queue_id, "fetch failed, retrying: {e}");
                        f.paused = Some(Instant::now() + Duration::from_millis(200));
                        reader.set_paused(i, true);
                        paused.push(i);
                    }
                    continue;
                }
            };
            let r = view.into_result();
            let room = {
                let mut p = lock(&q.progress);
                p.pulled(r.messages.iter().map(|m| m.offset), r.next_offset);
                p.has_room()
            };
            if !room && f.paused.is_none() {
                f.paused = Some(Instant::now());
                reader.set_paused(i, true);
                paused.push(i);
            }
            if !r.messages.is_empty() && !hand_over(s, &q, r.messages) {
                return;
            }
        }
    }
}

/// Where a queue's failed fetch moves it: the nearest end of its range when its offset is out
/// of it, past a damaged batch. None: retry at the same offset.
fn moved_past(q: &QueueState, e: &ClientError) -> Option<u64> {
    match e {
        ClientError::Broker { code, detail: ErrorDetail::OffsetRange { min, next }, .. }
            if *code == ErrorCode::OFFSET_OUT_OF_RANGE as u16 =>
        {
            let offset = lock(&q.progress).next_pull();
            Some(if offset < *min { *min } else { *next })
        }
        ClientError::CorruptData { first_offset, next_offset, reason, .. } => {
            tracing::error!(
                topic = %q.topic, queue = q.queue_id,
                "skipping the damaged batch at offsets [{first_offset}, {next_offset}): {reason}"
            );
            Some(*next_offset)
        }
        _ => None,
    }
}

/// Gives fetched messages to the workers: batches of `batch_size` (concurrent), or the
/// queue's backlog, scheduling the queue if no task runs it (orderly). False when the
/// consumer is shutting down.
fn hand_over(s: &Shared, q: &Arc<QueueState>, messages: Vec<ConsumedMessage>) -> bool {
    let send = |task: Task| {
        q.running.fetch_add(1, Ordering::SeqCst);
        if !s.submit(task) {
            q.running.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    };
    match s.config.mode {
        ConsumeMode::Concurrent { batch_size, .. } => {
            let mut rest = messages;
            while !rest.is_empty() {
                let tail = rest.split_off(batch_size.max(1).min(rest.len()));
                let batch = std::mem::replace(&mut rest, tail);
                if !send(Task::new(q.clone(), batch, 0)) {
                    return false;
                }
            }
            true
        }
        ConsumeMode::Orderly { .. } => {
            let schedule = {
                let mut backlog = lock(&q.orderly);
                if !backlog.parked {
                    let bytes = messages.iter().map(message_bytes).sum();
                    s.buffer(messages.len(), bytes);
                    backlog.counted.messages += messages.len();
                    backlog.counted.bytes += bytes;
                }
                backlog.messages.extend(messages);
                !std::mem::replace(&mut backlog.scheduled, true)
            };
            !schedule || send(Task::new(q.clone(), Vec::new(), 0))
        }
    }
}

/// How long an orderly queue keeps a worker while other tasks wait.
const ORDERLY_SLICE: Duration = Duration::from_millis(100);

/// Orderly mode: runs queue `q`'s backlog through the listener in order, one batch at a time,
/// until it is empty, the queue stops, the queue must wait (its lock or the session not
/// surely held, or the listener asked to reconsume later: then the retry thread runs it again
/// later), or it has had the worker for [`ORDERLY_SLICE`] while other tasks wait (then it goes
/// behind them, so a busy queue does not starve the others).
fn run_orderly(s: &Shared, q: &Arc<QueueState>, batch_size: usize, suspend: Duration) {
    // Parked while it waits: its backlog stops counting as buffered until it runs again.
    let later = |delay: Duration| {
        {
            let mut backlog = lock(&q.orderly);
            let counted = std::mem::take(&mut backlog.counted);
            s.took(counted.messages, counted.bytes);
            backlog.parked = true;
        }
        let task = Task::new(q.clone(), Vec::new(), 0);
        lock(&s.retries).push((Instant::now() + delay, task));
    };
    {
        let mut backlog = lock(&q.orderly);
        if std::mem::take(&mut backlog.parked) {
            let bytes = backlog.messages.iter().map(message_bytes).sum();
            s.buffer(backlog.messages.len(), bytes);
            backlog.counted = Buffered { messages: backlog.messages.len(), bytes };
        }
    }
    let started = Instant::now();
    loop {
        if q.stop.load(Ordering::SeqCst) || q.lost.load(Ordering::SeqCst) {
            // Given up: the backlog is never delivered here (the next owner reads it).
            drop_backlog(s, q);
            return;
        }
        let valid = (*lock(&q.lock_until)).min(*lock(&s.session_until));
        if Instant::now() >= valid {
            // The lease or the session may have run out: wait for the control thread's renewal.
            later(Duration::from_millis(20));
            return;
        }
        let (batch, attempt) = {
            let mut backlog = lock(&q.orderly);
            if backlog.messages.is_empty() {
                backlog.scheduled = false;
                return;
            }
            let n = batch_size.max(1).min(backlog.messages.len());
            let batch = backlog.messages.drain(..n).collect::<Vec<_>>();
            let bytes = batch.iter().map(message_bytes).sum();
            s.took(batch.len(), bytes);
            backlog.counted.messages -= batch.len();
            backlog.counted.bytes -= bytes;
            (batch, backlog.attempt)
        };
        match s.call_listener(q, &batch, attempt) {
            ConsumeStatus::Success => {
                lock(&q.orderly).attempt = 0;
                lock(&q.progress).finished(batch.iter().map(|m| m.offset));
                let waiting = lock(&s.tasks).as_ref().is_some_and(|tx| !tx.is_empty());
                if waiting && started.elapsed() >= ORDERLY_SLICE {
                    // Behind the waiting tasks (the channel is not bounded in tasks).
                    q.running.fetch_add(1, Ordering::SeqCst);
                    if !s.submit(Task::new(q.clone(), Vec::new(), 0)) {
                        q.running.fetch_sub(1, Ordering::SeqCst);
                    }
                    return;
                }
            }
            ConsumeStatus::ReconsumeLater => {
                // Back at the head, uncounted: the queue parks at once.
                let mut backlog = lock(&q.orderly);
                backlog.attempt += 1;
                for m in batch.into_iter().rev() {
                    backlog.messages.push_front(m);
                }
                drop(backlog);
                later(suspend);
                return;
            }
        }
    }
}

/// Orderly mode: drops the backlog of a queue given up (its next owner reads those messages),
/// so they no longer count as buffered.
fn drop_backlog(s: &Shared, q: &QueueState) {
    let mut backlog = lock(&q.orderly);
    backlog.messages.clear();
    let counted = std::mem::take(&mut backlog.counted);
    s.took(counted.messages, counted.bytes);
}
