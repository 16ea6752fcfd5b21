//! The producer's accumulator: when each queue's open batch goes (linger, size, in-flight
//! rules), the numbering, in-flight bound and retries of its batches (through each queue's
//! `QueueSequencer`), the memory bound, and the completion of callers' handles (a stored
//! batch's `send_async` handles are resolved first by the connection that read its reply,
//! `EarlyAck`). The open batches themselves are in the `Staging` area, where callers
//! append to them on their own threads; the worker takes a batch from there when it may go.
//!
//! It runs on the producer's worker thread, driven by [`super::producer`]'s sender loop: a
//! wake-up from a caller (a queue's staging changed), a flush, a reply or a due timer goes in,
//! sends come out through the `BatchSink` seam (the router's connections, or a scripted sink
//! in tests). It reads time only from the
//! [`Clock`](crate::runtime::Clock) it is given and never blocks, so its tests step it by hand
//! on a [`SimClock`](crate::runtime::SimClock).
//!
//! A step costs O(log n) in the number of queues n, not O(n): a queue is looked at only when
//! something happened to it (a message or batch for it, a reply, its own timer), through a
//! queue of dirty queue indexes, and the next wake-up is the top of a timer heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver};

use super::connection::{EarlyAck, ProduceFrame, ProduceReply, ReplyTag};
use super::error::{ClientError, Result};
use super::pending::Completer;
use super::producer::{ProducerConfig, SendBatchResult};
use super::send_handle::CompletionRef;
use super::sequencer::{wire_epoch, QueueSequencer, SequencerConfig};
use super::staging::{OpenLeft, Sealed, Staging, StagingLimits};
use crate::protocol::producer_id::{with_epoch, WINDOW_BATCHES};
use crate::runtime::SharedClock;

pub(crate) type BatchDone = Completer<Result<SendBatchResult>>;

mod sink;
pub(crate) use sink::BatchSink;
use sink::{Replies, Reply};

/// Emptied batch handles a worker keeps for its next batches (`Worker::batch_arcs`).
const KEPT_BATCH_ARCS: usize = 1024;

pub(crate) enum Command {
    /// A caller marked a queue in the staging area: look at the dirty ones.
    Wake,
    Flush(Completer<()>),
}

/// Rewrites a sealed batch's producer id and base sequence and recomputes its CRC
/// (docs/format.md 1.1: both fields are under `crc`, which covers `[44, length)`).
fn renumber(batch: &mut [u8], producer_id: i64, base_sequence: i32) {
    batch[68..76].copy_from_slice(&producer_id.to_le_bytes());
    batch[76..80].copy_from_slice(&base_sequence.to_le_bytes());
    let crc = crate::format::crc::crc32c(&batch[crate::format::batch::CRC_START..]);
    batch[40..44].copy_from_slice(&crc.to_le_bytes());
}

/// Who hears how a batch ended.
pub(crate) enum Completion {
    /// One handle per message (`send_async`), all resolved through the batch's one shared
    /// completion: the `n`th message's handle reads offset `base + n`.
    PerMessage { batch: CompletionRef, count: u32 },
    /// One handle for the whole batch of `count` messages (`send_batch`).
    Batch { done: BatchDone, count: u32 },
}

struct ReadyBatch {
    /// Shared with the sends in flight (a retry resends the same bytes without copying).
    bytes: Arc<Vec<u8>>,
    completion: Completion,
    /// When its first message was handed to the worker (the send latency a trace reports).
    started: Instant,
}

struct QueueState {
    /// (topic, queue id); the topic is shared with every `SendResult` of the queue.
    key: (Arc<str>, u32),
    /// The open batch the staging area held when the queue was last looked at.
    open: OpenLeft,
    /// Left in the staging area because the worker held `max_buffer_bytes` (on `starved`).
    starved: bool,
    /// Its small open batch left to gather while the worker held
    /// `small_batches_in_flight_bytes` (on `gated`).
    gated: bool,
    /// Its open batch waited for its linger when last looked at.
    lingers: bool,
    /// On the `lingering` list.
    listed: bool,
    sequencer: QueueSequencer<ReadyBatch>,
    /// The producer id the queue numbers its sequencer's current generation of epochs under,
    /// and that generation ([`Worker::follow_generation`]).
    producer_id: i64,
    generation: u32,
    /// The sequencer's epoch when a new producer id was last asked for and none came: asked
    /// again only at the queue's next renumbering.
    asked_at_epoch: Option<u32>,
    /// The earliest wake-up this queue has in the worker's timer heap, if any.
    armed: Option<Instant>,
    /// In the worker's `dirty` queue.
    queued: bool,
    /// Counted in the worker's `busy_queues` (not idle when last looked at).
    busy: bool,
    /// The last retriable refusal since the queue's last stored batch: a batch that reaches
    /// its send timeout fails with it (`ClientError::GaveUp`), so a caller learns why (a full
    /// disk, a refused connection), not only that time ran out.
    last_refusal: Option<Box<ClientError>>,
    /// What the staging area was last told ([`Staging::set_flow`]): (batches held, as many
    /// as may be in flight).
    told: (bool, bool),
}

impl QueueState {
    fn is_idle(&self) -> bool {
        self.open.is_none() && !self.starved && self.sequencer.is_empty()
    }
}

/// The producer's worker: owns every queue's open batch and sequencer.
///
/// A step costs O(log n) in the number of queues n, not O(n): a queue is looked at only when
/// something happened to it (a message or batch for it, a reply, its own timer), through the
/// `dirty` queue, and the next wake-up is the top of the `timers` heap. Only `flush` and
/// `close` walk every queue (they seal every open batch).
pub(crate) struct Worker<S: BatchSink> {
    sink: S,
    /// Every time the worker reads (the system clock; a simulated one in tests).
    clock: SharedClock,
    config: ProducerConfig,
    producer_id: i64,
    /// Batches of a queue unanswered at most: `config.max_in_flight_per_queue`, which
    /// `Producer::new` sets within the broker's window (a worker made without one, in tests,
    /// uses this build's window).
    max_in_flight: usize,
    /// Every queue this producer sent to, by its index in the staging area (`Reply::queue`);
    /// bounded by the topics' queue counts.
    queues: Vec<QueueState>,
    /// The open batches and the batches sealed by callers, shared with them.
    staging: Arc<Staging>,
    /// Queues whose staged batches wait for the worker's memory to drop below the bound,
    /// oldest first: served in turn as room comes (`step`), none going ahead of them.
    starved: VecDeque<usize>,
    /// Queues whose open batch, smaller than `pipeline_min_batch_bytes`, would have gone but
    /// was left to gather messages because the worker held `small_batches_in_flight_bytes`,
    /// each at most once (`QueueState::gated`), oldest first: looked at again in turn once
    /// replies bring the worker's bytes below that.
    gated: VecDeque<usize>,
    /// Queues whose open batch waited for its linger when last looked at, each at most once
    /// (`QueueState::listed`): what a caller waiting for room has the worker send at once.
    /// Taken whole at each such wait; entries whose batch went meanwhile are skipped then.
    lingering: Vec<usize>,
    /// Reused: batches taken from the staging area, dirty queues, new queues' keys.
    taken: Vec<Sealed>,
    /// Reused: answered batches' shared handles, emptied (their buffers go back to the
    /// staging area), for the next batches sent; at most [`KEPT_BATCH_ARCS`]. With many
    /// queues nearly every message makes a batch, and a handle allocated and freed per batch
    /// is one more trip through the allocator.
    batch_arcs: Vec<Arc<Vec<u8>>>,
    marked: Vec<usize>,
    new_keys: Vec<(Arc<str>, u32)>,
    /// The step's sends, handed to the sink together at its end (one gathered write per
    /// connection); empty between steps.
    outbox: Vec<ProduceFrame>,
    /// Queues to look at in the next step, each at most once (`QueueState::queued`).
    dirty: VecDeque<usize>,
    /// (when, queue) wake-ups: lingers, request timeouts, backoffs, send deadlines. Entries a
    /// queue no longer needs fire harmlessly (the queue is looked at, nothing is due); the heap
    /// is rebuilt when such entries pile up, so it holds O(queues) entries.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Queues with an open batch or batches unanswered.
    busy_queues: usize,
    buffered_bytes: usize,
    flushes: Vec<Completer<()>>,
    /// Replies delivered by the sink's callbacks; a send never wakes the worker (it does not
    /// wait on this channel): `reply_wake` does, once for a reader's round of replies.
    replies: Arc<Replies>,
    replies_rx: Receiver<Reply>,
    /// A token when replies were delivered since the worker last looked (at most one held).
    replies_woken: Receiver<()>,
    /// With tracing on: where each resolved message's send event goes ([`super::trace`]).
    tracer: Option<Arc<super::trace::Tracer>>,
    /// Queues looked at so far (the structural test of per-step cost reads it).
    #[cfg(test)]
    touched: u64,
}

impl<S: BatchSink> Worker<S> {
    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Records a send event per message resolved from now on.
    pub(crate) fn set_tracer(&mut self, tracer: Option<Arc<super::trace::Tracer>>) {
        self.tracer = tracer;
    }

    /// Every queue is idle: nothing open, nothing unanswered.
    pub(crate) fn is_drained(&self) -> bool {
        self.busy_queues == 0
    }

    /// The earliest timer wake-up.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Where the worker waits for replies: a token each time some were delivered (then
    /// [`Worker::take_replies`]).
    pub(crate) fn replies_woken(&self) -> &Receiver<()> {
        &self.replies_woken
    }

    /// Acts on every reply delivered so far; false when there was none.
    pub(crate) fn take_replies(&mut self) -> bool {
        let mut any = false;
        while let Ok(r) = self.replies_rx.try_recv() {
            self.reply(r);
            any = true;
        }
        any
    }

    /// Replies are waiting (delivered on the worker's own thread, by a send that failed,
    /// they come with no wake-up).
    pub(crate) fn has_replies(&self) -> bool {
        !self.replies_rx.is_empty()
    }

    pub(crate) fn new(
        sink: S,
        config: ProducerConfig,
        producer_id: i64,
        clock: SharedClock,
    ) -> Self {
        // Unbounded type, bounded in use: every reply answers a send, and sends are bounded by
        // the batches held (max_buffer_bytes) times the resends within a send timeout.
        let (replies_tx, replies_rx) = unbounded();
        let (woken, replies_woken) = bounded(1);
        let staging = Arc::new(Staging::new(StagingLimits {
            max_batch_bytes: config.max_batch_bytes,
            pipeline_min_batch_bytes: config.pipeline_min_batch_bytes,
            max_messages: config.buffer_messages.max(1),
            max_bytes: config.max_buffer_bytes.max(1),
        }));
        let max_in_flight = config.max_in_flight_per_queue.unwrap_or(WINDOW_BATCHES).max(1);
        Worker {
            sink,
            clock,
            config,
            producer_id,
            max_in_flight,
            queues: Vec::new(),
            staging,
            starved: VecDeque::new(),
            gated: VecDeque::new(),
            lingering: Vec::new(),
            taken: Vec::new(),
            batch_arcs: Vec::new(),
            marked: Vec::new(),
            new_keys: Vec::new(),
            outbox: Vec::new(),
            dirty: VecDeque::new(),
            timers: BinaryHeap::new(),
            busy_queues: 0,
            buffered_bytes: 0,
            flushes: Vec::new(),
            replies: Arc::new(Replies { tx: replies_tx, woken }),
            replies_rx,
            replies_woken,
            tracer: None,
            #[cfg(test)]
            touched: 0,
        }
    }

    fn sequencer_config(&self) -> SequencerConfig {
        SequencerConfig {
            max_in_flight: self.max_in_flight,
            request_timeout: self.config.request_timeout,
            backoff_initial: self.config.retry_backoff,
            backoff_max: self.config.retry_backoff_max.max(self.config.retry_backoff),
        }
    }

    /// The staging area callers append to.
    pub(crate) fn staging(&self) -> &Arc<Staging> {
        &self.staging
    }

    /// Whether the worker takes more batches from the staging area now: not while it holds
    /// `max_buffer_bytes` of batches (callers then wait once the staging area is full too).
    pub(crate) fn accepts_commands(&self) -> bool {
        self.buffered_bytes < self.config.max_buffer_bytes
    }

    /// Whether a small partly filled batch may go now (see [`Self::gathers`]).
    fn gate_open(&self) -> bool {
        let cap = self.config.small_batches_in_flight_bytes;
        cap == 0 || self.buffered_bytes < cap
    }

    /// Whether an open batch of `bytes`, which its linger and in-flight rules would let go,
    /// stays open instead to gather more messages: it is smaller than
    /// `pipeline_min_batch_bytes` while the worker holds `small_batches_in_flight_bytes` of
    /// batches (taken and not yet answered). With thousands of queues each batch would
    /// otherwise go with the one or two messages that came since its queue's last one, and
    /// per-batch work made most of the client's: the pipeline is full anyway, and the
    /// messages wait in their open batch instead of behind it (BENCHMARKS.md, round 24).
    ///
    /// While queues gather, the gate is theirs, oldest first: another queue's small batch
    /// waits behind them (`turn`: this queue was served from the front of `gated`), or a
    /// batch of one new message would take the room a reply freed ahead of one that gathered.
    fn gathers(&self, bytes: usize, turn: bool) -> bool {
        bytes < self.config.pipeline_min_batch_bytes
            && (!self.gate_open() || (!turn && !self.gated.is_empty()))
    }

    /// Takes the staging area's dirty queues (and learns its new ones) to look at them.
    fn sync(&mut self) {
        let mut marked = std::mem::take(&mut self.marked);
        let mut new_keys = std::mem::take(&mut self.new_keys);
        let pressed = self.staging.take_dirty(self.queues.len(), &mut marked, &mut new_keys);
        let config = self.sequencer_config();
        for key in new_keys.drain(..) {
            self.queues.push(QueueState {
                key,
                open: None,
                starved: false,
                gated: false,
                lingers: false,
                listed: false,
                sequencer: QueueSequencer::new(config.clone()),
                producer_id: self.producer_id,
                generation: 0,
                asked_at_epoch: None,
                armed: None,
                queued: false,
                busy: false,
                last_refusal: None,
                told: (false, false),
            });
        }
        for id in marked.drain(..) {
            self.mark(id);
        }
        if pressed {
            // Callers wait for room: the lingering batches go at once (`process` takes an open
            // batch without its linger while callers wait).
            for id in std::mem::take(&mut self.lingering) {
                self.queues[id].listed = false;
                if self.queues[id].lingers {
                    self.mark(id);
                }
            }
        }
        (self.marked, self.new_keys) = (marked, new_keys);
    }

    /// Queues `id` to be looked at in the next step.
    fn mark(&mut self, id: usize) {
        let q = &mut self.queues[id];
        if !q.queued {
            q.queued = true;
            self.dirty.push_back(id);
        }
    }

    /// Looks at the queues whose timers are due and those something happened to.
    pub(crate) fn step(&mut self, now: Instant) {
        self.sync();
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.queues[id].armed == Some(t) {
                self.queues[id].armed = None;
            }
            self.mark(id);
        }
        // A queue looked at may put itself on the dirty list again ([`Self::tell_flow`]).
        while !self.dirty.is_empty() {
            while let Some(id) = self.dirty.pop_front() {
                self.queues[id].queued = false;
                self.process(id, now, false, false);
            }
            // Room: the queues left at the memory bound, oldest first, while it lasts (each
            // is looked at once, not all of them whenever a reply frees a little).
            while self.accepts_commands() {
                let Some(id) = self.starved.pop_front() else { break };
                self.queues[id].starved = false;
                self.process(id, now, true, false);
            }
            // Below the in-flight bytes for small batches: the gathering queues, oldest
            // first, while it lasts (one taken may close the gate again; the rest keep
            // gathering).
            while self.gate_open() {
                let Some(id) = self.gated.pop_front() else { break };
                self.queues[id].gated = false;
                self.process(id, now, false, true);
            }
        }
        if !self.outbox.is_empty() {
            self.sink.send_all(&mut self.outbox, self.config.max_batch_bytes);
        }
    }

    /// Whether the queue's open batch may be sealed by its linger now. A partly filled batch
    /// goes while the queue has nothing in flight, or once it holds `min_bytes`: under load,
    /// messages then gather in the open batch during the round trip (natural batching) instead
    /// of each going alone. Sending every lingered batch as soon as the in-flight bound allowed
    /// turned a 20k msg/s load into about 20k requests/s (one message per batch) and saturated
    /// the load generator's core and the broker's (ack p99 27-341 ms instead of about 1 ms;
    /// BENCHMARKS.md, 2026-12-01).
    ///
    /// `held`: the queue's batches in its sequencer (sent or waiting); `open_bytes`: the open
    /// batch's size.
    fn may_send_partial(&self, held: usize, open_bytes: usize) -> bool {
        held == 0
            || (held < self.max_in_flight && open_bytes >= self.config.pipeline_min_batch_bytes)
    }

    /// One queue's step: request timeouts (resend) and send deadlines (fail), seal a lingered
    /// batch, send what the sequencer allows, and arm the queue's next wake-up. Staged batches
    /// are taken only below the memory bound and, while queues wait for room (`starved`), only
    /// by the one `served` from the front of that line; small open batches, while queues
    /// gather, only by the one whose `turn` it is ([`Self::gathers`]).
    fn process(&mut self, id: usize, now: Instant, served: bool, turn: bool) {
        #[cfg(test)]
        {
            self.touched += 1;
        }
        for r in self.queues[id].sequencer.poll(now) {
            self.resolve(id, r, None);
        }
        self.follow_generation(id);
        let pid = self.queues[id].producer_id;
        let (send_timeout, linger) = (self.config.send_timeout, self.config.linger);
        if self.accepts_commands() && (served || self.starved.is_empty()) {
            // Batches sealed by callers go now; the open one when its linger ran out and the
            // in-flight rules let a partly filled batch go.
            let held = self.queues[id].sequencer.len();
            let mut taken = std::mem::take(&mut self.taken);
            let open = self.staging.take(id, &mut taken, |sealed, started, bytes, pressed| {
                (pressed || now >= started + linger)
                    && self.may_send_partial(held + sealed, bytes)
                    && !self.gathers(bytes, turn)
            });
            let q = &mut self.queues[id];
            q.open = open;
            q.starved = false;
            for batch in taken.drain(..) {
                self.buffered_bytes += batch.builder.len_bytes();
                Self::push_sealed(q, pid, send_timeout, batch, &mut self.batch_arcs);
            }
            self.taken = taken;
        } else if !self.queues[id].starved && self.staging.has_staged(id) {
            self.queues[id].starved = true;
            self.starved.push_back(id);
        }
        let q = &mut self.queues[id];
        while let Some(send) = q.sequencer.next_send(now) {
            if send.renumber {
                let bytes = Arc::make_mut(&mut send.batch.bytes);
                renumber(bytes, with_epoch(pid, wire_epoch(send.epoch)), send.base_sequence);
            }
            let tag = ReplyTag {
                queue: id,
                attempt: send.attempt,
                epoch: send.epoch,
                base_sequence: send.base_sequence,
            };
            let early = match &send.batch.completion {
                Completion::PerMessage { batch, .. } => {
                    Some(EarlyAck { handles: batch.clone(), topic: q.key.0.clone() })
                }
                Completion::Batch { .. } => None,
            };
            self.outbox.push(ProduceFrame {
                topic: q.key.0.clone(),
                queue_id: q.key.1,
                batch: send.batch.bytes.clone(),
                reply: ProduceReply { sink: self.replies.clone(), tag, early },
            });
        }
        // A busy queue's open batch waits for a reply (or its callers' next event), not for
        // a timer.
        let (held, open, starved) = (q.sequencer.len(), q.open, q.starved);
        let (linger_at, gathers) = match open {
            Some((started, bytes)) if !starved && self.may_send_partial(held, bytes) => {
                if self.gathers(bytes, turn) {
                    // No timer: replies that open the gate look at it again.
                    (None, true)
                } else {
                    (Some(started + linger), false)
                }
            }
            _ => (None, false),
        };
        let q = &mut self.queues[id];
        if gathers && !q.gated {
            q.gated = true;
            self.gated.push_back(id);
        }
        let wake = match (linger_at, q.sequencer.next_wakeup()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        q.lingers = linger_at.is_some();
        if q.lingers && !q.listed {
            q.listed = true;
            self.lingering.push(id);
        }
        if let Some(t) = wake {
            if q.armed.map_or(true, |armed| t < armed) {
                q.armed = Some(t);
                self.timers.push(Reverse((t, id)));
            }
        }
        self.tell_flow(id);
        let q = &mut self.queues[id];
        let busy = !q.is_idle();
        if busy != q.busy {
            q.busy = busy;
            if busy {
                self.busy_queues += 1;
            } else {
                self.busy_queues -= 1;
            }
        }
        // Superseded wake-ups pile up only when a queue's wake-up keeps moving earlier; keep
        // the heap O(queues) by rebuilding it from the armed ones.
        if self.timers.len() > 4 * self.queues.len() + 64 {
            self.timers = self
                .queues
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.armed.map(|t| Reverse((t, i))))
                .collect();
        }
    }

    /// Tells the staging area whether queue `id` has batches held and whether it holds all it
    /// may have in flight, when that changed: its callers then need not wake the worker for it
    /// ([`Staging::append`]). Cleared with a batch staged, the queue is looked at again (an
    /// append may have counted on a reply that has come since), unless it waits for room or
    /// for the gate already: it is looked at then.
    fn tell_flow(&mut self, id: usize) {
        let q = &mut self.queues[id];
        let held = q.sequencer.len();
        let flow = (held > 0, held >= self.max_in_flight);
        if flow != q.told {
            q.told = flow;
            if self.staging.set_flow(id, flow.0, flow.1) && !q.starved && !q.gated {
                self.mark(id);
            }
        }
    }

    pub(crate) fn command(&mut self, c: Command) {
        match c {
            Command::Flush(done) => {
                self.seal_all();
                self.flushes.push(done);
            }
            // The next step takes the dirty queues.
            Command::Wake => self.sync(),
        }
    }

    /// Numbers a sealed batch for its place in the queue's sequence and hands it to the
    /// sequencer; it must be answered within `send_timeout` of its first message.
    fn push_sealed(
        q: &mut QueueState,
        producer_id: i64,
        send_timeout: Duration,
        batch: Sealed,
        arcs: &mut Vec<Arc<Vec<u8>>>,
    ) {
        let Sealed { builder, completion, started } = batch;
        let count = builder.record_count();
        let (epoch, base_sequence) = q.sequencer.next_numbering();
        let finished = builder.finish(with_epoch(producer_id, wire_epoch(epoch)), base_sequence);
        let bytes = match arcs.pop() {
            Some(mut arc) => {
                *Arc::get_mut(&mut arc).expect("only unshared handles are kept") = finished;
                arc
            }
            None => Arc::new(finished),
        };
        let numbered = q.sequencer.push(
            ReadyBatch { bytes, completion, started },
            count,
            started + send_timeout,
        );
        debug_assert_eq!(numbered, (epoch, base_sequence));
    }

    /// Takes every staged batch, open ones included (flush, close), whatever the memory
    /// bound.
    pub(crate) fn seal_all(&mut self) {
        self.sync();
        let mut taken = std::mem::take(&mut self.taken);
        for id in 0..self.queues.len() {
            self.staging.take(id, &mut taken, |_, _, _, _| true);
            let q = &mut self.queues[id];
            q.open = None;
            for batch in taken.drain(..) {
                self.buffered_bytes += batch.builder.len_bytes();
                let (pid, timeout) = (q.producer_id, self.config.send_timeout);
                Self::push_sealed(q, pid, timeout, batch, &mut self.batch_arcs);
            }
            self.mark(id);
        }
        self.taken = taken;
    }
}

/// Support for `benches/client_accumulator.rs` (a loopback producer, no sockets).
#[doc(hidden)]
pub mod bench;

mod replies;
mod trace_events;

#[cfg(test)]
mod tests;
