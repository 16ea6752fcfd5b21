//! The many-queue reader: the queues of each broker shard read with one FETCH_MULTI at a time,
//! their batches chosen by the broker in log order.
//!
//! A consumer of thousands of queues that keeps one FETCH per queue in flight
//! ([`super::queue_reader`]) sends a request per queue, and the broker reads each queue's
//! batches on their own: with the queues interleaved in the log every batch was its own disk
//! read (3 KiB each with 10,000 queues, BENCHMARKS.md round 34). [`MultiQueueReader`] asks
//! for all of a shard's queues in one request; the broker answers with about `max_bytes` of
//! batches taken in log order from all of them, read from disk in long runs.
//!
//! # Pipelining
//!
//! Two FETCH_MULTIs per shard connection are in flight, each for half of its queues ([`LANES`]);
//! both read the same regions of the log (the queues lie interleaved in it), the second from
//! what the broker kept of the first's reads. When a reply comes, the reader checks
//! each queue's batches (checksums, offsets, the queue they are stamped for), moves each queue
//! to where its batches end, and sends that shard's next request *before* handing the batches
//! to the caller, so the broker reads the next part of the log while the caller works on this
//! one. Requests are sent from the caller's thread, never from the connection's reader thread
//! (see [`super::queue_reader`] on why).
//!
//! At most [`LANES`] requests per shard connection are in flight, plus one for queues just
//! added, sought or resumed (so they need not wait for the answer of a request parked at the
//! broker); the queues a reply frees are asked for again, with every queue waiting, once fewer
//! than [`LANES`] are in flight. Without the bound, queues added one at a time (a push
//! consumer taking its queues as their locks come) each went out in a request of their own,
//! and those requests never merged again: hundreds of small requests in flight, measured 15-30x
//! slower (round 36).
//!
//! # Failures
//!
//! A queue's own failure (its offset out of range, a corrupt batch at its offset, a batch
//! stamped for another queue) is returned for that queue and leaves its position where it
//! was, until the caller [`MultiQueueReader::seek`]s it. A queue whose route cannot be found
//! (its topic deleted, say) is returned with that error and paused until the caller resumes
//! it ([`MultiQueueReader::set_paused`]). A retriable failure (the request's:
//! connection lost, no reply in time; or a queue's: a shard that no longer owns it) is
//! retried after the consumer's `retry_backoff`: the routes are read again where they may
//! have changed and the queues asked for again.
//!
//! # Queues come and go
//!
//! Queues can be added, removed and paused while requests are in flight (a push consumer's
//! queues move with its group's rebalances): a reply for a removed queue is dropped (its slot's
//! generation moved on), a paused queue is left out of the next requests.
//!
//! # Bounds
//!
//! [`LANES`] requests in flight per shard connection, each answered with at most about `max_bytes`
//! of the consumer (the broker's bound, or one stored batch per queue when a batch is
//! larger); replies are copied once out of the connection's read buffer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::connection::{Callback, Connection, FetchReply};
use super::consumer::{broker_corrupt, PullConsumer, PullView};
use super::error::{ClientError, Result};
use super::queue_reader::lock;
use crate::protocol::fetch_multi::{FetchMulti, FetchQueue, FetchTopic, MAX_QUEUES};
use crate::protocol::{ErrorCode, Request, Response};

/// A queue the reader reads, and where.
#[derive(Clone)]
struct Position {
    topic: String,
    queue_id: u32,
    offset: u64,
    /// Seeks since the reader started: a reply for an older position is not applied.
    generation: u64,
    /// A request holding this queue is in flight.
    asked: bool,
    /// The connection to the queue's shard, once looked up (again after a failure).
    conn: Option<Arc<Connection>>,
    /// Not asked for until resumed ([`MultiQueueReader::set_paused`]).
    paused: bool,
    /// Removed ([`MultiQueueReader::remove`]): a free slot.
    removed: bool,
    /// Only messages with one of these tags (empty: all).
    tags: Vec<Vec<u8>>,
    /// The last reply for it found nothing at its position.
    at_end: bool,
    /// Added, sought or resumed since it was last asked for.
    fresh: bool,
    /// On the reader's `ready` list (every queue neither asked for, paused nor removed is).
    listed: bool,
}

/// A request in flight: its queues (indexes into the reader's positions) at the positions
/// asked for.
struct Asked {
    queues: Vec<(usize, u64, u64)>,
    sent: Instant,
    conn: Arc<Connection>,
}

/// Requests a shard's queues are split into when none of that shard is in flight, and the
/// requests per shard connection in flight (plus one for fresh queues).
pub const LANES: usize = 2;

/// Replies handed over by the connections' reader threads.
#[derive(Default)]
struct Arrivals {
    replies: Mutex<VecDeque<(u64, Result<Response>)>>,
    ready: Condvar,
    /// Set (under `replies`' lock) by a [`ReaderWaker`]: the wait ends without a reply.
    woken: AtomicBool,
}

/// Ends a [`MultiQueueReader::next_batches`] wait from another thread (it returns what it
/// has, perhaps nothing), e.g. so that its owner can add or remove queues at once.
#[derive(Clone)]
pub struct ReaderWaker(Arc<Arrivals>);

impl ReaderWaker {
    pub fn wake(&self) {
        let _replies = lock(&self.0.replies);
        self.0.woken.store(true, Ordering::Relaxed);
        self.0.ready.notify_all();
    }
}

/// Reads many queues, each shard's with one FETCH_MULTI in flight (see the module docs).
pub struct MultiQueueReader {
    consumer: PullConsumer,
    positions: Vec<Position>,
    max_wait: Duration,
    /// Requests in flight by id.
    asked: HashMap<u64, Asked>,
    next_id: u64,
    arrivals: Arc<Arrivals>,
    /// A request failure waits this long before its queues are asked for again.
    retry_after: Option<Instant>,
    /// Removed slots, reused by [`MultiQueueReader::add`].
    free: Vec<usize>,
    /// Queues whose route could not be found: returned with the next batches.
    failed: Vec<(usize, ClientError)>,
    /// Queues being read whose last reply did not find them at their end.
    not_at_end: usize,
    /// The queues that may be asked for: [`Self::send_due`] looks at these, not at every
    /// queue (a consumer of 10,000 queues scanned them all twice a reply).
    ready: Vec<usize>,
}

impl MultiQueueReader {
    /// Reads `queues` (topic, queue id, offset) with `consumer`'s `max_bytes` per request and
    /// shard; a request waits up to `max_wait` at the broker when none of its queues has data.
    /// The consumer's tags are not applied: give each queue its own with [`Self::add`].
    pub fn new(consumer: PullConsumer, queues: &[(String, u32, u64)], max_wait: Duration) -> Self {
        let mut reader = MultiQueueReader {
            consumer,
            positions: Vec::with_capacity(queues.len()),
            max_wait,
            asked: HashMap::new(),
            next_id: 0,
            arrivals: Arc::new(Arrivals::default()),
            retry_after: None,
            free: Vec::new(),
            failed: Vec::new(),
            not_at_end: 0,
            ready: Vec::new(),
        };
        for (topic, queue_id, offset) in queues {
            reader.add(topic, *queue_id, *offset, Vec::new());
        }
        reader
    }

    /// Starts reading another queue from `offset`, keeping only messages with one of `tags`
    /// (empty: all; the broker leaves out batches whose tag summary rules them out, the
    /// reader the other messages of the rest): its index. An index freed by
    /// [`Self::remove`] is reused once no request for its old queue is in flight.
    pub fn add(&mut self, topic: &str, queue_id: u32, offset: u64, tags: Vec<Vec<u8>>) -> usize {
        let reusable = self.free.iter().position(|&i| !self.positions[i].asked);
        // A reused slot may still be on the ready list: it stays there once.
        let fresh = |generation, listed| Position {
            topic: topic.to_owned(),
            queue_id,
            offset,
            generation,
            asked: false,
            conn: None,
            paused: false,
            removed: false,
            tags,
            at_end: false,
            fresh: true,
            listed,
        };
        self.not_at_end += 1;
        let i = match reusable {
            Some(f) => {
                let i = self.free.swap_remove(f);
                // A later generation: nothing asked for the slot's old queue applies to it.
                let old = &self.positions[i];
                self.positions[i] = fresh(old.generation + 1, old.listed);
                i
            }
            None => {
                self.positions.push(fresh(0, false));
                self.positions.len() - 1
            }
        };
        self.list(i);
        i
    }

    /// Puts queue `i` on the ready list if it may be asked for and is not on it yet.
    fn list(&mut self, i: usize) {
        let p = &mut self.positions[i];
        if !p.listed && !p.asked && !p.paused && !p.removed {
            p.listed = true;
            self.ready.push(i);
        }
    }

    /// Stops reading queue `i`: a reply in flight for it is dropped, and its index may be
    /// given to a queue added later.
    pub fn remove(&mut self, i: usize) {
        let p = &mut self.positions[i];
        if p.removed {
            return;
        }
        p.removed = true;
        p.generation += 1;
        if !p.at_end {
            self.not_at_end -= 1;
        }
        p.conn = None;
        p.topic = String::new();
        p.tags = Vec::new();
        self.failed.retain(|(f, _)| *f != i);
        self.free.push(i);
    }

    /// Stops asking for queue `i` while `paused` (a reply already in flight still comes), or
    /// asks for it again.
    pub fn set_paused(&mut self, i: usize, paused: bool) {
        let p = &mut self.positions[i];
        p.fresh |= p.paused && !paused;
        p.paused = paused;
        self.list(i);
    }

    /// FETCH_MULTI requests in flight.
    pub fn in_flight(&self) -> usize {
        self.asked.len()
    }

    /// Queues being read (added and not removed).
    pub fn len(&self) -> usize {
        self.positions.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes this reader's [`Self::next_batches`] from another thread.
    pub fn waker(&self) -> ReaderWaker {
        ReaderWaker(self.arrivals.clone())
    }

    /// The offset queue `i` (its place in the list given to [`Self::new`]) is read from next.
    pub fn position(&self, i: usize) -> u64 {
        self.positions[i].offset
    }

    /// The topic and queue id of queue `i`.
    pub fn queue(&self, i: usize) -> (&str, u32) {
        (&self.positions[i].topic, self.positions[i].queue_id)
    }

    /// Reads queue `i` from `offset` on (a reply in flight for its old position is dropped).
    pub fn seek(&mut self, i: usize, offset: u64) {
        let p = &mut self.positions[i];
        p.offset = offset;
        p.generation += 1;
        p.fresh = true;
        self.set_at_end(i, false);
    }

    /// Whether every queue's last reply found nothing more at its position (a reply with no
    /// batches for any of its queues, after its wait): the reader has caught up with what the
    /// queues hold. A queue added, sought, or left out of a reply that had batches of others
    /// counts as not at its end.
    pub fn caught_up(&self) -> bool {
        self.not_at_end == 0
    }

    fn set_at_end(&mut self, i: usize, at_end: bool) {
        let p = &mut self.positions[i];
        if p.removed || p.at_end == at_end {
            return;
        }
        p.at_end = at_end;
        if at_end {
            self.not_at_end -= 1;
        } else {
            self.not_at_end += 1;
        }
    }

    /// The batches of the next reply that has any, waiting up to `timeout`: (queue index,
    /// its batches or its own failure). Empty when nothing came in time or a [`ReaderWaker`]
    /// woke it.
    pub fn next_batches(&mut self, timeout: Duration) -> Result<Vec<(usize, Result<PullView>)>> {
        let until = Instant::now() + timeout;
        loop {
            self.send_due()?;
            if !self.failed.is_empty() {
                return Ok(self.failed.drain(..).map(|(i, e)| (i, Err(e))).collect());
            }
            let Some((id, reply)) = self.wait_arrival(until) else { return Ok(Vec::new()) };
            let Some(asked) = self.asked.remove(&id) else { continue };
            for &(i, _, _) in &asked.queues {
                self.positions[i].asked = false;
                self.list(i);
            }
            let out = self.settle(asked, reply)?;
            // The shard's next request goes out before the caller reads this one.
            self.send_due()?;
            if !out.is_empty() {
                return Ok(out);
            }
            if Instant::now() >= until {
                return Ok(out);
            }
        }
    }

    /// Sends a request for every shard's queues that have none in flight: at first (no request
    /// of that shard in flight) in [`LANES`] requests, so that one shard's requests follow each
    /// other without a gap (the broker reads the next while the last is being taken); then
    /// within the bound of requests in flight (module docs).
    fn send_due(&mut self) -> Result<()> {
        if self.retry_after.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        self.retry_after = None;
        let router = self.consumer.router().clone();
        // The queues not asked for, grouped by the connection of their shard; those not sent
        // now stay on the list.
        let mut groups: Vec<(Arc<Connection>, Vec<usize>)> = Vec::new();
        let mut keep = Vec::new();
        for i in std::mem::take(&mut self.ready) {
            let p = &mut self.positions[i];
            if !p.listed {
                continue; // a duplicate entry
            }
            if p.asked || p.paused || p.removed {
                p.listed = false;
                continue;
            }
            let conn = match &p.conn {
                Some(c) if c.is_alive() => c.clone(),
                _ => match router.queue_connection(&p.topic, p.queue_id) {
                    Ok(c) => {
                        p.conn = Some(c.clone());
                        c
                    }
                    Err(e) if e.is_retriable() => {
                        self.retry_after = Some(Instant::now() + self.consumer.retry_backoff);
                        keep.push(i);
                        continue;
                    }
                    Err(e) => {
                        // This queue's own failure (its topic is gone, say): paused and
                        // returned for it; the others go on.
                        p.paused = true;
                        p.listed = false;
                        self.failed.push((i, e));
                        continue;
                    }
                },
            };
            match groups.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &conn)) {
                Some((_, members)) => members.push(i),
                None => groups.push((conn, vec![i])),
            }
        }
        for (conn, mut members) in groups {
            let in_flight = self.asked.values().filter(|a| Arc::ptr_eq(&a.conn, &conn)).count();
            if in_flight >= LANES {
                // Only queues just added, sought or resumed, in one extra request: they need
                // not wait for a parked request's answer, and requests do not multiply.
                if in_flight > LANES {
                    keep.extend(members);
                    continue;
                }
                let positions = &self.positions;
                let (fresh, wait): (Vec<usize>, Vec<usize>) =
                    members.into_iter().partition(|&i| positions[i].fresh);
                keep.extend(wait);
                members = fresh;
                if members.is_empty() {
                    continue;
                }
            }
            // In the order they were added (a topic's queues together in the request).
            members.sort_unstable();
            let lanes = if in_flight == 0 { LANES } else { 1 };
            let per = members.len().div_ceil(lanes).clamp(1, MAX_QUEUES as usize);
            for chunk in members.chunks(per) {
                self.send(&conn, chunk);
            }
        }
        self.ready.extend(keep);
        Ok(())
    }

    fn send(&mut self, conn: &Arc<Connection>, members: &[usize]) {
        let mut topics: Vec<FetchTopic> = Vec::new();
        let mut queues = Vec::with_capacity(members.len());
        for &i in members {
            let p = &mut self.positions[i];
            p.asked = true;
            p.fresh = false;
            p.listed = false;
            queues.push((i, p.offset, p.generation));
            let q = FetchQueue { queue_id: p.queue_id, offset: p.offset };
            match topics.last_mut() {
                Some(t) if t.topic == p.topic && t.tags == broker_tags(&p.tags) => t.queues.push(q),
                _ => topics.push(FetchTopic {
                    topic: p.topic.clone(),
                    tags: broker_tags(&p.tags).to_vec(),
                    queues: vec![q],
                }),
            }
        }
        let request = Request::FetchMulti(FetchMulti {
            max_bytes: self.consumer.max_bytes,
            max_wait_ms: self.max_wait.as_millis().min(u32::MAX as u128) as u32,
            topics,
        });
        let id = self.next_id;
        self.next_id += 1;
        self.asked.insert(id, Asked { queues, sent: Instant::now(), conn: conn.clone() });
        let arrivals = self.arrivals.clone();
        let callback: Callback = Box::new(move |reply| {
            lock(&arrivals.replies).push_back((id, reply));
            arrivals.ready.notify_one();
        });
        // On a failed send the callback already ran with the error.
        let _ = conn.send_with_callback(&request, callback);
    }

    /// The next reply, waiting until `until` at most; a request unanswered for the request
    /// timeout plus its wait is given up as a timeout.
    fn wait_arrival(&self, until: Instant) -> Option<(u64, Result<Response>)> {
        let limit = self.consumer.router().options.request_timeout + self.max_wait;
        let mut replies = lock(&self.arrivals.replies);
        loop {
            if let Some(r) = replies.pop_front() {
                return Some(r);
            }
            if self.arrivals.woken.swap(false, Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            if let Some((&id, _)) = self.asked.iter().find(|(_, a)| now >= a.sent + limit) {
                return Some((id, Err(ClientError::Timeout(limit.as_millis() as u64))));
            }
            if now >= until {
                return None;
            }
            let oldest = self.asked.values().map(|a| a.sent + limit).min();
            let wake = oldest.map_or(until, |o| o.min(until));
            let (guard, _) = self
                .arrivals
                .ready
                .wait_timeout(replies, wake.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner());
            replies = guard;
        }
    }

    /// Applies a reply: each queue's batches checked and its position moved past them.
    fn settle(
        &mut self,
        asked: Asked,
        reply: Result<Response>,
    ) -> Result<Vec<(usize, Result<PullView>)>> {
        let results = match reply {
            Ok(Response::FetchMulti { results }) => {
                tracing::trace!(
                    queues = asked.queues.len(),
                    parts = results.len(),
                    took_us = asked.sent.elapsed().as_micros() as u64,
                    "FETCH_MULTI answered"
                );
                results
            }
            Ok(_) => return Err(ClientError::Protocol("FETCH_MULTI got another reply".into())),
            Err(e) if e.is_retriable() => {
                if matches!(e.code(), Some(ErrorCode::NOT_OWNER)) || e.code().is_none() {
                    for (i, _, _) in &asked.queues {
                        self.consumer.router().refresh(&self.positions[*i].topic);
                        self.positions[*i].conn = None;
                    }
                }
                tracing::debug!("a FETCH_MULTI failed ({e}); asking again");
                self.retry_after = Some(Instant::now() + self.consumer.retry_backoff);
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        // No batches for any of the queues (after the wait): each is at its end. With batches
        // for some, the others may only not have fit.
        let nothing = results.is_empty();
        for &(i, _, generation) in &asked.queues {
            if self.positions[i].generation == generation {
                self.set_at_end(i, nothing);
            }
        }
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            let Some(&(i, offset, generation)) = asked.queues.get(r.index as usize) else {
                return Err(ClientError::Protocol(format!(
                    "a FETCH_MULTI of {} queues was answered for queue {}",
                    asked.queues.len(),
                    r.index
                )));
            };
            if self.positions[i].generation != generation {
                continue; // sought elsewhere since: this reply is for the old position
            }
            let (topic, queue_id) = (self.positions[i].topic.clone(), self.positions[i].queue_id);
            let result = match r.result {
                Ok(f) => {
                    let reply = FetchReply {
                        min_offset: f.min_offset,
                        next_offset: f.next_offset,
                        scan_end_offset: f.scan_end_offset,
                        batches: f.batches,
                    };
                    let tags = &self.positions[i].tags;
                    self.consumer.view_of_tagged(&topic, queue_id, offset, reply, None, tags)
                }
                Err(e) => {
                    let e = ClientError::from_response(e);
                    if e.is_retriable() {
                        // Asked again after the backoff (a shard that no longer owns the
                        // queue: after the routes are read again).
                        if matches!(e.code(), Some(ErrorCode::NOT_OWNER)) {
                            self.consumer.router().refresh(&topic);
                            self.positions[i].conn = None;
                        }
                        self.retry_after = Some(Instant::now() + self.consumer.retry_backoff);
                        continue;
                    }
                    Err(broker_corrupt(&topic, queue_id, e))
                }
            };
            if let Ok(v) = &result {
                self.positions[i].offset = v.next_offset;
                self.set_at_end(i, v.next_offset >= v.max_offset);
            }
            out.push((i, result));
        }
        Ok(out)
    }
}

/// The tags the broker filters a queue's batches by: none when they are more or longer than
/// a request may carry (the reader still keeps only the queue's tags).
fn broker_tags(tags: &[Vec<u8>]) -> &[Vec<u8>] {
    let fits = tags.len() <= crate::protocol::message::MAX_FETCH_TAGS as usize
        && tags.iter().all(|t| t.len() <= crate::format::record::MAX_KEY_LEN);
    if fits {
        tags
    } else {
        &[]
    }
}
