//! The callers' side of the producer's accumulator: every queue's open batch, appended to on
//! the calling thread (`send_async` encodes the message into its queue's open batch there),
//! and the sealed batches the worker has not taken yet.
//!
//! Encoding on the caller's thread (as Kafka's `RecordAccumulator` does) keeps the per-message
//! work where the message is: the caller's `Message` is read while it is still in the cache and
//! freed on the thread that allocated it (with the system allocator, buffers freed on another
//! thread made every allocation of the caller take the slow path: about a fifth of the load
//! generator's core in `small-messages`, BENCHMARKS.md 2026-12-02), and the worker thread is
//! not involved per message at all: no hand-off, no wake-up, no lookup.
//!
//! The worker hears about a queue only when something happens that it must act on: a batch
//! opened (its linger starts; an idle queue sends it at once), a batch sealed because it is
//! full or a `send_batch` arrived, or the open batch reached `pipeline_min_batch_bytes` (it may
//! now be pipelined). Such a queue goes on the dirty list; the first one since the worker last
//! looked asks the caller to wake the worker ([`Staging::append`] returns `true`). A queue
//! whose replies the worker awaits is not put there for a batch opened or filled
//! ([`Staging::set_flow`]): the replies make the worker look at it. The worker
//! takes an open batch when its linger and in-flight rules say it may go
//! ([`Staging::take`]); until then callers keep appending to it (natural batching).
//!
//! Bounded: callers wait while `max_messages` messages are staged, or while `max_bytes` bytes
//! are staged or held by the worker (taken and not yet answered: [`Staging::release`]), so the
//! producer's whole buffer, open batches included, stays within `max_buffer_bytes`. Those are
//! bytes written; the room allocated ahead of them in open batches is at most 64 KiB a batch,
//! plus at most `max_bytes` for batches given more at once ([`OpenBatch::new`]).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::accumulator::{BatchDone, Completion};
use super::error::ClientError;
use super::message::Message;
use super::producer::too_large;
use super::send_handle::{CompletionRef, Credits, SendHandle};
use crate::format::{BatchBuilder, FormatError};
use spares::Spares;

/// A queue's batch still open for messages.
pub(crate) struct OpenBatch {
    builder: BatchBuilder,
    /// Shared by the handles of its messages (the `n`th message's handle has index `n`).
    completion: CompletionRef,
    /// References to `completion` paid for in advance, one for each of the next messages'
    /// handles: a handle costs no atomic instruction of its own (one add per
    /// [`HANDLE_CREDITS`] messages, and one subtraction for those left when the batch closes).
    credits: Credits,
    started: Instant,
    /// Its capacity, when counted in [`State::reserved`] (0 if not).
    reserved: usize,
}

/// A batch closed for messages, not yet numbered (the worker numbers it when it takes it).
pub(crate) struct Sealed {
    pub(crate) builder: BatchBuilder,
    pub(crate) completion: Completion,
    /// When its first message was staged: its linger and send timeout count from there.
    pub(crate) started: Instant,
}

/// Handle references an open batch pays for at once ([`OpenBatch::credits`]).
const HANDLE_CREDITS: usize = 256;

/// Room for records a new batch gets at first without counting in [`State::reserved`].
const SMALL_CAPACITY: usize = 64 * 1024;

impl OpenBatch {
    /// With room for `capacity` bytes at first ([`StagedQueue::capacity`]), at most the batch
    /// limit. Room beyond [`SMALL_CAPACITY`] is given only while `reserved` stays within
    /// `reserve_max` (it counts such batches' room, the buffer's bytes written or not); a small
    /// batch is written into a spare buffer if one fits ([`Spares::take`]).
    fn new(
        max_batch_bytes: usize,
        capacity: usize,
        started: Instant,
        spares: &mut Spares,
        (reserved, reserve_max): (&mut usize, usize),
    ) -> OpenBatch {
        let mut capacity = capacity.min(max_batch_bytes);
        let mut counted = 0;
        if capacity > SMALL_CAPACITY {
            if *reserved + capacity <= reserve_max {
                *reserved += capacity;
                counted = capacity;
            } else {
                capacity = SMALL_CAPACITY;
            }
        }
        let spare = if counted == 0 { spares.take(capacity) } else { None };
        let builder = match spare {
            Some(buf) => BatchBuilder::with_buffer(max_batch_bytes, buf),
            None => BatchBuilder::with_capacity(max_batch_bytes, capacity),
        };
        let completion = CompletionRef::pending();
        let credits = completion.credits(0);
        OpenBatch { builder, completion, credits, started, reserved: counted }
    }

    /// Encodes `msg` as the batch's next message; its handle on success.
    fn push(&mut self, msg: &Message, timestamp_ms: i64) -> Result<SendHandle, FormatError> {
        let index = self.builder.record_count();
        msg.with_record(timestamp_ms, |r| self.builder.push(r))?;
        let batch = match self.credits.take() {
            Some(prepaid) => prepaid,
            None => {
                self.credits = self.completion.credits(HANDLE_CREDITS);
                self.credits.take().expect("credits were just paid for")
            }
        };
        Ok(SendHandle::new(batch, index))
    }

    #[cfg(test)]
    fn builder_capacity(&self) -> usize {
        self.builder.capacity()
    }

    /// Its room leaves `reserved`; room it did not use is given back if that is most of it (a
    /// batch taken at its linger long before it is full).
    fn seal(mut self, reserved: &mut usize) -> Sealed {
        *reserved -= self.reserved;
        if self.reserved > 0 && self.builder.len_bytes() < self.builder.capacity() / 2 {
            self.builder.shrink_to_fit();
        }
        let count = self.builder.record_count();
        Sealed {
            builder: self.builder,
            completion: Completion::PerMessage { batch: self.completion, count },
            started: self.started,
        }
    }
}

struct StagedQueue {
    key: (Arc<str>, u32),
    open: Option<OpenBatch>,
    /// Oldest first; all older than `open`.
    sealed: VecDeque<Sealed>,
    /// On the dirty list.
    dirty: bool,
    /// Size of the queue's last batch when it was sealed or taken.
    last_batch_bytes: usize,
    /// `State::appends` at the queue's last message.
    last_append: u64,
    /// Set by the worker ([`Staging::set_flow`]): it holds batches of this queue not yet
    /// answered, and looks at the queue when their replies come.
    awaited: bool,
    /// Set by the worker: it holds as many of this queue's batches as may be in flight, so
    /// nothing more of the queue can go before a reply.
    full: bool,
}

impl StagedQueue {
    /// The first allocation of the queue's next batch: about twice its last one, at least
    /// 1 KiB (the buffer grows as messages come, [`OpenBatch::new`] has the upper bounds).
    /// With many queues each batch holds one or a few messages; a 64 KiB buffer for each of
    /// them, cold in the cache, made the first write into a new batch about a tenth of the load
    /// generator's core (many-queues, perf). A queue whose batches fill up gets its whole batch
    /// at once: grown from 64 KiB, a 1 MiB batch's bytes were copied into new memory once
    /// more, 13% of the load generator's core (batched, perf).
    fn capacity(&self) -> usize {
        self.last_batch_bytes.saturating_mul(2).max(1024)
    }

    /// Seals the open batch, full (or too full for the next message), and remembers its size
    /// for the next batch's first allocation ([`StagedQueue::capacity`]).
    fn seal_full(&mut self, reserved: &mut usize) {
        if let Some(open) = self.open.take() {
            self.last_batch_bytes = open.builder.len_bytes();
            self.sealed.push_back(open.seal(reserved));
        }
    }
}

/// Which of its topic's queues a message goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// This queue.
    Queue(u32),
    /// [`super::QueueSelector::RoundRobinPerBatch`] over the topic's `queue_count` queues:
    /// the topic's current queue while its open batch takes the message, else the next one.
    PerBatch { queue_count: u32 },
}

impl From<u32> for Target {
    fn from(queue_id: u32) -> Target {
        Target::Queue(queue_id)
    }
}

/// A topic's queues in the staging area.
#[derive(Default)]
struct TopicQueues {
    /// Index in `State::queues` of each queue by queue id (`NO_QUEUE`: none yet).
    ids: Vec<u32>,
    /// [`Target::PerBatch`]'s current queue: (queue id, index in `State::queues`).
    current: Option<(u32, usize)>,
}

struct State {
    /// topic -> its queues (their index in `queues` is the worker's queue index too). A
    /// selector picks a queue below the topic's queue count, so ids are dense: one hash lookup
    /// per message (the topic), none for the queue. A map per topic cost a cache miss per
    /// message with 10,000 queues (about 6% of the load generator's core in many-queues,
    /// perf).
    index: FxHashMap<String, TopicQueues>,
    queues: Vec<StagedQueue>,
    dirty: Vec<usize>,
    /// A wake-up is on its way to the worker and the dirty list not taken since.
    wake_sent: bool,
    /// Messages staged (not yet taken by the worker).
    messages: usize,
    /// Bytes staged, plus bytes taken by the worker and not yet released.
    bytes: usize,
    /// Callers waiting for room.
    waiting: usize,
    /// A caller waited for room since the worker last took the dirty list.
    pressed: bool,
    /// Messages appended so far (to any queue).
    appends: u64,
    /// The worker is gone (closed or died): nothing staged will be sent.
    closed: bool,
    spares: Spares,
    /// Capacity of the open batches given more than [`SMALL_CAPACITY`] at first, together:
    /// at most the staging area's `max_bytes`.
    reserved: usize,
    /// The queue id [`Target::PerBatch`] starts a topic at (modulo its queue count): random
    /// per producer, so producers started together do not all begin on queue 0.
    first_queue: u32,
}

/// A queue whose previous message came at most this many messages (to any queue) ago gets
/// the room of its next one fetched ([`crate::format::BatchBuilder::prefetch_room`]): about
/// 256 KiB of 1 KiB messages in between, well within a core's L2 cache.
const HOT_QUEUE: u64 = 256;

/// An id in `State::index` with no queue yet.
const NO_QUEUE: u32 = u32::MAX;

/// Limits and thresholds of the staging area (from the `ProducerConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StagingLimits {
    pub(crate) max_batch_bytes: usize,
    pub(crate) pipeline_min_batch_bytes: usize,
    pub(crate) max_messages: usize,
    pub(crate) max_bytes: usize,
}

/// Shared by the producer's callers and its worker. See the module documentation.
pub(crate) struct Staging {
    limits: StagingLimits,
    state: Mutex<State>,
    room: Condvar,
}

/// What [`Staging::take`] left behind: the open batch's start and size, when there is one.
pub(crate) type OpenLeft = Option<(Instant, usize)>;

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn queue(&mut self, topic: &str, queue_id: u32) -> usize {
        let at = queue_id as usize;
        if let Some(&id) = self.index.get(topic).and_then(|t| t.ids.get(at)) {
            if id != NO_QUEUE {
                return id as usize;
            }
        }
        let id = self.queues.len();
        self.queues.push(StagedQueue {
            key: (Arc::from(topic), queue_id),
            open: None,
            sealed: VecDeque::new(),
            dirty: false,
            last_batch_bytes: 0,
            last_append: 0,
            awaited: false,
            full: false,
        });
        let ids = &mut self.index.entry(topic.to_owned()).or_default().ids;
        if ids.len() <= at {
            ids.resize(at + 1, NO_QUEUE);
        }
        ids[at] = u32::try_from(id).expect("fewer than 2^32 queues");
        id
    }

    /// The queue of `topic` a message of at least `need` bytes goes to under
    /// [`Target::PerBatch`], and whether the worker must be woken. The topic's current queue
    /// while its open batch has room for the message; otherwise the next queue in turn, after
    /// sealing the current one's batch if it is full for the message (it goes at once, as a
    /// batch full in [`Staging::append`] does). So a queue gets a batch, not a message, at a
    /// time: with thousands of queues round-robin per message gave each batch a few messages
    /// (BENCHMARKS.md, many-queues), where this gives each the messages of one linger.
    fn per_batch(
        &mut self,
        topic: &str,
        queue_count: u32,
        need: usize,
        max: usize,
    ) -> (usize, bool) {
        let current = self.index.get(topic).and_then(|t| t.current);
        let mut wake = false;
        if let Some((_, id)) = current.filter(|&(q, _)| q < queue_count) {
            let q = &mut self.queues[id];
            match &q.open {
                Some(o) if o.builder.len_bytes() + need <= max => return (id, false),
                Some(_) => {
                    q.seal_full(&mut self.reserved);
                    wake = !q.awaited && self.mark(id);
                }
                None => {}
            }
        }
        let next = match current {
            Some((q, _)) => q.wrapping_add(1),
            None => self.first_queue,
        } % queue_count.max(1); // the producer refuses a topic without queues
        let id = self.queue(topic, next);
        if let Some(t) = self.index.get_mut(topic) {
            t.current = Some((next, id));
        }
        (id, wake)
    }

    /// Puts `id` on the dirty list; true when the worker must be woken for it.
    fn mark(&mut self, id: usize) -> bool {
        let q = &mut self.queues[id];
        if !q.dirty {
            q.dirty = true;
            self.dirty.push(id);
        }
        !std::mem::replace(&mut self.wake_sent, true)
    }
}

impl Staging {
    pub(crate) fn new(limits: StagingLimits) -> Staging {
        Staging {
            limits,
            state: Mutex::new(State {
                index: FxHashMap::default(),
                queues: Vec::new(),
                dirty: Vec::new(),
                wake_sent: false,
                messages: 0,
                bytes: 0,
                waiting: 0,
                pressed: false,
                appends: 0,
                closed: false,
                spares: Spares::new(limits.max_bytes / 16),
                reserved: 0,
                first_queue: {
                    use std::hash::BuildHasher;
                    std::collections::hash_map::RandomState::new().hash_one(0u8) as u32
                },
            }),
            room: Condvar::new(),
        }
    }

    /// Waits while the staging area is full. Before each wait it tells the worker that callers
    /// wait (waking it through `wake` if needed): the worker then sends the open batches
    /// waiting for their linger at once (as Kafka's accumulator does when its buffer is
    /// exhausted). Only the worker knows which batches those are; putting every queue with an
    /// open batch on the dirty list made each wait cost the worker a look at every queue
    /// (many-queues: 10,000 queues looked at per wait, 28 MB/s and send timeouts).
    /// `None` once the worker is gone (a waiting caller is woken then, never left blocked).
    fn room<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        wake: &dyn Fn(),
    ) -> Option<MutexGuard<'a, State>> {
        loop {
            if st.closed {
                return None;
            }
            if st.messages < self.limits.max_messages && st.bytes < self.limits.max_bytes {
                return Some(st);
            }
            st.pressed = true;
            let need_wake = !std::mem::replace(&mut st.wake_sent, true);
            st.waiting += 1;
            if need_wake {
                drop(st);
                wake();
                st = lock(&self.state);
                st.waiting -= 1;
                continue; // room may have come meanwhile
            }
            st = self.room.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting -= 1;
        }
    }

    /// Encodes `msg` (stamped `timestamp_ms`) into the open batch of the `topic` queue
    /// `target` names, opening one at `now()` if needed. Returns the message's handle
    /// (resolved with its batch: no allocation of its own) and whether the caller must wake
    /// the worker. A message that fits in no batch gets a handle already failed. Waits while
    /// the staging area is full (calling `wake` to wake the worker).
    pub(crate) fn append(
        &self,
        topic: &str,
        target: impl Into<Target>,
        msg: &Message,
        timestamp_ms: i64,
        now: impl Fn() -> Instant,
        wake: &dyn Fn(),
    ) -> (SendHandle, bool) {
        let StagingLimits { max_batch_bytes: max, pipeline_min_batch_bytes: min, .. } = self.limits;
        let Some(mut guard) = self.room(lock(&self.state), wake) else {
            return (SendHandle::failed(ClientError::Closed), false);
        };
        let (id, woke) = match target.into() {
            Target::Queue(queue_id) => (guard.queue(topic, queue_id), false),
            Target::PerBatch { queue_count } => {
                // At least the record's fields; a record that turns out not to fit after all
                // opens the queue's next batch below instead.
                let need = msg.body.len() + msg.key.len() + msg.tag.len();
                guard.per_batch(topic, queue_count, need, max)
            }
        };
        let st = &mut *guard;
        let q = &mut st.queues[id];
        let was_open = q.open.is_some();
        let open_before = q.open.as_ref().map_or(0, |o| o.builder.len_bytes());
        let sealed_before = q.sealed.len();
        let capacity = q.capacity();
        let spares = &mut st.spares;
        let reserve = (&mut st.reserved, self.limits.max_bytes);
        let open =
            q.open.get_or_insert_with(|| OpenBatch::new(max, capacity, now(), spares, reserve));
        let len_before = open.builder.len_bytes();
        let handle = match open.push(msg, timestamp_ms) {
            Ok(h) => {
                st.messages += 1;
                st.appends += 1;
                // A queue written to often gets its next message soon: fetch that message's
                // room for writing now, while the caller goes on (the batch's buffer was last
                // touched as an earlier batch, long out of the cache). With many queues a
                // queue's next message comes too late for the fetched lines to stay, and the
                // batch is finished long after its messages left the cache: their CRC is
                // computed now instead (10,000 queues: 1.13 and 1.06 times the MB/s; every
                // batch doing so cost 16 queues 0.90 and 0.95, BENCHMARKS.md).
                if st.appends - std::mem::replace(&mut q.last_append, st.appends) <= HOT_QUEUE {
                    open.builder.prefetch_room(open.builder.len_bytes() - len_before);
                } else {
                    open.builder.checksum_now();
                }
                h
            }
            Err(FormatError::BatchFull { .. }) if !open.builder.is_empty() => {
                // Seal the full batch and open a new one with this message.
                q.last_batch_bytes = open.builder.len_bytes();
                let reserve = (&mut st.reserved, self.limits.max_bytes);
                let mut next = OpenBatch::new(max, q.capacity(), now(), &mut st.spares, reserve);
                match next.push(msg, timestamp_ms) {
                    Ok(h) => {
                        let full = q.open.replace(next);
                        q.sealed.extend(full.map(|o| o.seal(&mut st.reserved)));
                        st.messages += 1;
                        h
                    }
                    Err(e) => {
                        next.seal(&mut st.reserved);
                        SendHandle::failed(too_large(e))
                    }
                }
            }
            Err(e) => SendHandle::failed(too_large(e)),
        };
        if q.open.as_ref().is_some_and(|o| o.builder.is_empty()) {
            if let Some(unused) = q.open.take() {
                unused.seal(&mut st.reserved); // opened for a message that fits in no batch
            }
        } else if q.open.as_ref().is_some_and(|o| o.builder.len_bytes() >= max) {
            q.seal_full(&mut st.reserved);
        }
        let open_after = q.open.as_ref().map_or(0, |o| o.builder.len_bytes());
        let sealed_new: usize =
            q.sealed.iter().skip(sealed_before).map(|s| s.builder.len_bytes()).sum();
        st.bytes = st.bytes + open_after + sealed_new - open_before;
        // The worker acts on a new batch (its linger starts, or it goes at once), a sealed one,
        // and an open one that became big enough to be pipelined; not on other appends. Nor on
        // a new or sealed batch behind batches in flight: their replies make the worker look
        // at the queue and take what gathered meanwhile. One big enough to be pipelined still
        // asks for it, unless the queue has all it may have in flight. Waking the worker for
        // each batch preempted the caller on a shared core (small-messages: about 66,000
        // context switches a second, against 15,000-17,000 for the raw client; BENCHMARKS.md,
        // round 27).
        let q = &st.queues[id];
        let pipelineable = open_after >= min && !q.full;
        let event = (!was_open && q.open.is_some() && (!q.awaited || pipelineable))
            || (sealed_new > 0 && !q.awaited)
            || (open_before < min && open_after >= min && !q.full);
        let wake = (event && st.mark(id)) || woke;
        drop(guard);
        (handle, wake)
    }

    /// Stages a whole batch built by the caller (`send_batch`) behind what its queue already
    /// holds (the open batch is sealed ahead of it). Returns whether to wake the worker.
    pub(crate) fn push_batch(
        &self,
        topic: &str,
        queue_id: u32,
        builder: BatchBuilder,
        started: Instant,
        done: BatchDone,
        wake: &dyn Fn(),
    ) -> bool {
        let Some(mut st) = self.room(lock(&self.state), wake) else {
            done.complete(Err(ClientError::Closed));
            return false;
        };
        let id = st.queue(topic, queue_id);
        let st = &mut *st;
        let q = &mut st.queues[id];
        q.sealed.extend(q.open.take().map(|o| o.seal(&mut st.reserved)));
        st.messages += builder.record_count() as usize;
        st.bytes += builder.len_bytes();
        let completion = Completion::Batch { done, count: builder.record_count() };
        q.sealed.push_back(Sealed { builder, completion, started });
        st.mark(id)
    }

    /// The worker is gone (it finished, or its thread panicked): every staged message fails
    /// with [`ClientError::Closed`], callers waiting for room are woken, and later sends fail
    /// at once instead of waiting for a worker that will never take them.
    pub(crate) fn close(&self) {
        let staged: Vec<Sealed> = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.messages = 0;
            st.dirty.clear();
            let mut out = Vec::new();
            let st = &mut *st;
            for q in &mut st.queues {
                out.extend(q.sealed.drain(..));
                out.extend(q.open.take().map(|o| o.seal(&mut st.reserved)));
            }
            out
        };
        self.room.notify_all();
        for s in staged {
            match s.completion {
                Completion::PerMessage { batch, .. } => batch.complete(Err(ClientError::Closed)),
                Completion::Batch { done, .. } => done.complete(Err(ClientError::Closed)),
            }
        }
    }

    /// The worker's side: the queues marked since the last call (their flags cleared, and a
    /// new wake-up will be asked for), and the keys of queues created since the worker knew
    /// `known` of them. Returns whether a caller waited for room since the last call.
    pub(crate) fn take_dirty(
        &self,
        known: usize,
        dirty: &mut Vec<usize>,
        new_keys: &mut Vec<(Arc<str>, u32)>,
    ) -> bool {
        let mut st = lock(&self.state);
        let st = &mut *st;
        std::mem::swap(dirty, &mut st.dirty);
        for &id in dirty.iter() {
            st.queues[id].dirty = false;
        }
        st.wake_sent = false;
        new_keys.extend(st.queues[known.min(st.queues.len())..].iter().map(|q| q.key.clone()));
        std::mem::take(&mut st.pressed)
    }

    /// The worker's side: takes queue `id`'s sealed batches (oldest first) into `out`, then its
    /// open batch too when `take_open(sealed taken, open started, open bytes, callers wait)`
    /// says so. Returns the open batch left behind, if any.
    pub(crate) fn take(
        &self,
        id: usize,
        out: &mut Vec<Sealed>,
        take_open: impl FnOnce(usize, Instant, usize, bool) -> bool,
    ) -> OpenLeft {
        let mut st = lock(&self.state);
        let st = &mut *st;
        let q = st.queues.get_mut(id)?;
        let before = out.len();
        out.extend(q.sealed.drain(..));
        let open = q.open.as_ref().map(|o| (o.started, o.builder.len_bytes()));
        let left = match open {
            Some((started, len)) if take_open(out.len() - before, started, len, st.waiting > 0) => {
                q.last_batch_bytes = len;
                out.extend(q.open.take().map(|o| o.seal(&mut st.reserved)));
                None
            }
            other => other,
        };
        let taken = &out[before..];
        if !taken.is_empty() {
            st.messages -= taken.iter().map(|s| s.builder.record_count() as usize).sum::<usize>();
            if st.waiting > 0 {
                self.room.notify_all();
            }
        }
        left
    }

    /// The worker's side: whether it awaits replies for queue `id` and whether it holds all
    /// the queue may have in flight (see [`Staging::append`]: appends then do not wake it).
    /// Returns true when a flag is cleared and the queue has a batch staged: an append may
    /// have left it to a reply that is no longer coming, so the worker looks at it now.
    pub(crate) fn set_flow(&self, id: usize, awaited: bool, full: bool) -> bool {
        let mut st = lock(&self.state);
        let Some(q) = st.queues.get_mut(id) else { return false };
        let cleared = (q.awaited && !awaited) || (q.full && !full);
        (q.awaited, q.full) = (awaited, full);
        cleared && (q.open.is_some() || !q.sealed.is_empty())
    }

    /// The worker's side: whether queue `id` has a batch staged (open or sealed).
    pub(crate) fn has_staged(&self, id: usize) -> bool {
        let st = lock(&self.state);
        st.queues.get(id).is_some_and(|q| q.open.is_some() || !q.sealed.is_empty())
    }

    /// The worker's side: `bytes` of batches it took are answered (or failed) and freed.
    /// With an answered batch's buffer (`buf`, when no one else held it), kept for a later
    /// batch ([`Spares`]).
    pub(crate) fn release(&self, bytes: usize, buf: Option<Vec<u8>>) {
        let mut st = lock(&self.state);
        st.bytes = st.bytes.saturating_sub(bytes);
        if let Some(buf) = buf {
            st.spares.put(buf);
        }
        if st.waiting > 0 {
            self.room.notify_all();
        }
    }

    /// Callers waiting for room.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        lock(&self.state).waiting
    }

    /// Spare buffers kept.
    #[cfg(test)]
    pub(crate) fn spare_count(&self) -> usize {
        lock(&self.state).spares.bufs.len()
    }

    /// (messages staged, bytes staged or held by the worker).
    #[cfg(test)]
    pub(crate) fn staged(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.messages, st.bytes)
    }
}

mod spares;
#[cfg(test)]
mod tests;
