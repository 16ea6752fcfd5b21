//! One queue's send order, sequence numbers and retries in an idempotent producer: pure (no
//! I/O, no clock: every call takes `now`), so it is tested without sockets and can move into
//! a sans-I/O producer as is.
//!
//! The producer worker owns one [`QueueSequencer`] per queue it sends to. Sealed batches are
//! [`pushed`](QueueSequencer::push) in order and numbered (epoch, base sequence, see
//! [`crate::protocol::producer_id`]); [`next_send`](QueueSequencer::next_send) hands out the
//! next batch to send, at most `max_in_flight` at once and always in sequence order; every
//! reply goes to [`on_reply`](QueueSequencer::on_reply) and [`poll`](QueueSequencer::poll)
//! enforces the per-send request timeout and the per-batch send deadline.
//!
//! Promises, with the broker's sequence windows (`broker::idempotence`):
//! - **order**: batches are sent in sequence order; after a retriable failure or a timeout of
//!   any send, every send in flight is abandoned and sending starts again from the first
//!   unacknowledged batch, in the same order, after a backoff (initial, doubling up to max).
//!   The broker answers the copies it already stored with their original offsets, so nothing
//!   is stored twice and a later batch never overtakes an earlier one;
//! - a reply `OUT_OF_ORDER_SEQUENCE` to the first unacknowledged batch means the broker holds
//!   no state for it (expired, evicted, not rebuilt): that batch is not stored, so every
//!   unacknowledged batch is renumbered under the next epoch from sequence 0 and resent. To a
//!   later batch it means an earlier one has not arrived yet: a plain retry;
//! - a batch that fails for good (a non-retriable error: it was not stored) leaves a gap; the
//!   batches after it are renumbered under the next epoch (the broker fences the old one) and
//!   wait until the batches before it are resolved;
//! - at a batch's send deadline it fails with a timeout, and so does every batch sent at least
//!   once (it may or may not be stored; a retry after that could be a duplicate the window no
//!   longer recognises); batches never sent are renumbered and go on;
//! - epochs are counted past the 65,536 a producer id has: the sequencer's epoch is a `u32`
//!   whose low 16 bits go on the wire and whose high bits are the id's *generation*
//!   ([`generation`]). A renumbering past epoch 65,535 moves the queue to the next generation
//!   at wire epoch 0, and the producer numbers that generation's batches under a new producer
//!   id from the broker. A queue renumbers at every batch while the broker's window table is
//!   too small for the producers and queues writing to the shard (each batch finds its window
//!   evicted), and it used to fail every batch after its 65,535th epoch.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::producer_id::{next_sequence, EPOCH_BITS};

/// The producer-id generation of a sequencer epoch: how many times the queue went past the
/// wire's 65,536 epochs. Each generation is numbered under its own producer id.
pub fn generation(epoch: u32) -> u32 {
    epoch >> EPOCH_BITS
}

/// The epoch a batch of sequencer epoch `epoch` carries on the wire (within its generation's
/// producer id).
pub fn wire_epoch(epoch: u32) -> u16 {
    epoch as u16
}

/// Limits of one queue's sequencer.
#[derive(Debug, Clone)]
pub struct SequencerConfig {
    /// Batches sent and not yet answered, at most: the broker's window or less.
    pub max_in_flight: usize,
    /// A send unanswered for this long is a retriable timeout.
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// How a reply turned out, as far as ordering is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Stored,
    /// Connection loss, NOT_OWNER, SHUTTING_DOWN...: send again.
    Retriable,
    OutOfOrderSequence,
    /// Not stored and retrying will not help.
    Fatal,
}

/// Why a batch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The broker's error in the reply.
    Reply,
    /// The send deadline passed.
    Timeout,
    /// The queue needed a new epoch and none is left (after 2^32 renumberings).
    EpochsExhausted,
}

/// A batch whose fate is known.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution<T> {
    Stored(T),
    Failed(T, Failure),
}

/// What to send: the batch, its current numbering, and whether its bytes must be renumbered
/// (epoch or sequence changed since they were encoded).
pub struct ToSend<'a, T> {
    pub attempt: u64,
    pub batch: &'a mut T,
    /// The sequencer's epoch: [`generation`] and [`wire_epoch`].
    pub epoch: u32,
    pub base_sequence: i32,
    pub renumber: bool,
}

#[derive(Debug)]
struct Slot<T> {
    /// `None` once stored: an acknowledged batch behind an unacknowledged one keeps its
    /// place, so the batches held (and resent) never span more than the broker's window.
    batch: Option<T>,
    record_count: u32,
    epoch: u32,
    base_sequence: i32,
    deadline: Instant,
    /// The send whose reply counts, while one is outstanding: its id, when it was sent, and
    /// whether every batch before it was acknowledged then (see `on_reply`).
    attempt: Option<(u64, Instant, bool)>,
    ever_sent: bool,
    renumbered: bool,
}

/// One queue's ordering state. See the module documentation.
#[derive(Debug)]
pub struct QueueSequencer<T> {
    config: SequencerConfig,
    epoch: u32,
    next_sequence: i32,
    slots: VecDeque<Slot<T>>,
    next_attempt: u64,
    backoff: Duration,
    not_before: Option<Instant>,
}

impl<T> QueueSequencer<T> {
    pub fn new(config: SequencerConfig) -> Self {
        let backoff = config.backoff_initial;
        QueueSequencer {
            config,
            epoch: 0,
            next_sequence: 0,
            slots: VecDeque::new(),
            next_attempt: 0,
            backoff,
            not_before: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Batches held (sent or waiting, and acknowledged ones behind an unacknowledged one).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether a new batch could be sent at once (the queue is below its in-flight bound).
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.config.max_in_flight
    }

    /// The (epoch, base sequence) the next `push` assigns, to encode the batch with.
    pub fn next_numbering(&self) -> (u32, i32) {
        (self.epoch, self.next_sequence)
    }

    /// Numbers a sealed batch of `record_count` records that must be resolved by `deadline`;
    /// returns its (epoch, base sequence).
    pub fn push(&mut self, batch: T, record_count: u32, deadline: Instant) -> (u32, i32) {
        let base_sequence = self.next_sequence;
        self.next_sequence = next_sequence(base_sequence, record_count);
        self.slots.push_back(Slot {
            batch: Some(batch),
            record_count,
            epoch: self.epoch,
            base_sequence,
            deadline,
            attempt: None,
            ever_sent: false,
            renumbered: false,
        });
        (self.epoch, base_sequence)
    }

    /// The next batch to send now, if any: the first unacknowledged one without a send
    /// outstanding, when every batch before it has one (or is acknowledged), it lies within
    /// `max_in_flight` of the first unacknowledged batch, the backoff passed, and it belongs
    /// to that batch's epoch.
    pub fn next_send(&mut self, now: Instant) -> Option<ToSend<'_, T>> {
        if self.not_before.is_some_and(|t| now < t) {
            return None;
        }
        let i = self.slots.iter().position(|s| s.attempt.is_none() && s.batch.is_some())?;
        let front_epoch = self.slots.front()?.epoch;
        if i >= self.config.max_in_flight || self.slots[i].epoch != front_epoch {
            return None;
        }
        self.next_attempt += 1;
        let attempt = self.next_attempt;
        let slot = &mut self.slots[i];
        slot.attempt = Some((attempt, now, i == 0));
        slot.ever_sent = true;
        let renumber = std::mem::take(&mut slot.renumbered);
        Some(ToSend {
            attempt,
            batch: slot.batch.as_mut().expect("checked unacknowledged"),
            epoch: slot.epoch,
            base_sequence: slot.base_sequence,
            renumber,
        })
    }

    /// A reply to send `attempt` of the batch numbered (`epoch`, `base_sequence`). A stored
    /// reply counts from any send of the batch; a failure only from its current send.
    pub fn on_reply(
        &mut self,
        attempt: u64,
        epoch: u32,
        base_sequence: i32,
        kind: ReplyKind,
        now: Instant,
    ) -> Vec<Resolution<T>> {
        let Some(i) =
            self.slots.iter().position(|s| s.epoch == epoch && s.base_sequence == base_sequence)
        else {
            return Vec::new(); // already resolved, or renumbered since
        };
        if kind == ReplyKind::Stored {
            let Some(batch) = self.slots[i].batch.take() else {
                return Vec::new(); // acknowledged already
            };
            self.slots[i].attempt = None;
            self.pop_acknowledged();
            self.backoff = self.config.backoff_initial;
            return vec![Resolution::Stored(batch)];
        }
        if self.slots[i].batch.is_none() {
            return Vec::new();
        }
        let Some((current, _, sent_first)) = self.slots[i].attempt else {
            return Vec::new(); // a send already abandoned
        };
        if current != attempt {
            return Vec::new();
        }
        match kind {
            ReplyKind::Stored => unreachable!("handled above"),
            // Sent when every batch before it was acknowledged, hence stored: the broker has no
            // state for the producer. (Sent earlier, the gap may just have been a batch before
            // it that had not arrived yet: a plain retry.)
            ReplyKind::OutOfOrderSequence if i == 0 && sent_first => self.renumber_from(0),
            ReplyKind::Retriable | ReplyKind::OutOfOrderSequence => {
                self.retry_all(now);
                Vec::new()
            }
            ReplyKind::Fatal => {
                let slot = self.slots.remove(i).expect("index from position");
                let batch = slot.batch.expect("checked unacknowledged");
                let mut out = vec![Resolution::Failed(batch, Failure::Reply)];
                out.extend(self.renumber_from(i));
                self.pop_acknowledged();
                out
            }
        }
    }

    /// Enforces request timeouts (a retriable failure) and send deadlines.
    pub fn poll(&mut self, now: Instant) -> Vec<Resolution<T>> {
        let timeout = self.config.request_timeout;
        if self.slots.iter().any(|s| s.attempt.is_some_and(|(_, at, _)| now >= at + timeout)) {
            self.retry_all(now);
        }
        let mut out = Vec::new();
        if self.slots.front().is_some_and(|s| now >= s.deadline) {
            while let Some(s) = self.slots.front() {
                if !(s.ever_sent || now >= s.deadline || s.batch.is_none()) {
                    break;
                }
                let slot = self.slots.pop_front().expect("checked");
                if let Some(batch) = slot.batch {
                    out.push(Resolution::Failed(batch, Failure::Timeout));
                }
            }
            out.extend(self.renumber_from(0));
        }
        out
    }

    /// When `poll` next has something to do, or a send may start.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(front) = self.slots.front() {
            consider(front.deadline);
        }
        for s in &self.slots {
            if let Some((_, at, _)) = s.attempt {
                consider(at + self.config.request_timeout);
            }
        }
        if let Some(nb) = self.not_before {
            if self.slots.iter().any(|s| s.attempt.is_none()) {
                consider(nb);
            }
        }
        t
    }

    /// Drops acknowledged batches from the front.
    fn pop_acknowledged(&mut self) {
        while self.slots.front().is_some_and(|s| s.batch.is_none()) {
            self.slots.pop_front();
        }
    }

    /// Abandons every outstanding send and starts again from the first batch after a backoff.
    fn retry_all(&mut self, now: Instant) {
        for s in &mut self.slots {
            s.attempt = None;
        }
        self.not_before = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
    }

    /// The epoch the next pushed batch gets; its [`generation`] is the producer id to number
    /// it under.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Moves the next numbering to `epoch` (tests: a queue about to run out of epochs).
    #[cfg(test)]
    pub(crate) fn set_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
    }

    /// Moves the batches from index `from` on (and the next ones pushed) to the next epoch,
    /// numbered from 0, to be sent again; past a generation's last wire epoch, to the next
    /// generation. Without an epoch left they fail.
    fn renumber_from(&mut self, from: usize) -> Vec<Resolution<T>> {
        let Some(epoch) = self.epoch.checked_add(1) else {
            let failed: Vec<_> = self.slots.drain(from..).collect();
            return failed
                .into_iter()
                .filter_map(|s| s.batch)
                .map(|b| Resolution::Failed(b, Failure::EpochsExhausted))
                .collect();
        };
        self.epoch = epoch;
        self.next_sequence = 0;
        // Only unacknowledged batches follow a gap (one stored behind it would contradict it).
        for s in self.slots.iter_mut().skip(from).filter(|s| s.batch.is_some()) {
            s.epoch = self.epoch;
            s.base_sequence = self.next_sequence;
            self.next_sequence = next_sequence(self.next_sequence, s.record_count);
            s.attempt = None;
            s.ever_sent = false;
            s.renumbered = true;
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SequencerConfig {
        SequencerConfig {
            max_in_flight: 3,
            request_timeout: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
        }
    }

    /// (batch, attempt, epoch, seq, renumber) of every send `next_send` allows now.
    /// A sequencer at `t0` holding `batches` (name, records) in order, each due at `far`
    /// (10 s later).
    fn queued(batches: &[(&'static str, u32)]) -> (Instant, Instant, QueueSequencer<&'static str>) {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(10);
        let mut s = QueueSequencer::new(config());
        for (name, records) in batches {
            s.push(*name, *records, far);
        }
        (t0, far, s)
    }

    fn sends(
        s: &mut QueueSequencer<&'static str>,
        now: Instant,
    ) -> Vec<(&'static str, u64, u32, i32, bool)> {
        let mut out = Vec::new();
        while let Some(t) = s.next_send(now) {
            out.push((*t.batch, t.attempt, t.epoch, t.base_sequence, t.renumber));
        }
        out
    }

    #[test]
    fn sends_in_order_up_to_the_bound_and_numbers_by_records() {
        let t0 = Instant::now();
        let mut s = QueueSequencer::new(config());
        let far = t0 + Duration::from_secs(10);
        assert_eq!(s.push("a", 2, far), (0, 0));
        assert_eq!(s.push("b", 3, far), (0, 2));
        assert_eq!(s.push("c", 1, far), (0, 5));
        assert_eq!(s.push("d", 1, far), (0, 6));
        let sent = sends(&mut s, t0);
        assert_eq!(sent.iter().map(|x| x.0).collect::<Vec<_>>(), ["a", "b", "c"], "bound of 3");
        // b's reply first: stored, but d stays behind: a batch more than 3 past the first
        // unacknowledged one (a) could not be resent within the broker's window.
        let r = s.on_reply(sent[1].1, 0, 2, ReplyKind::Stored, t0);
        assert_eq!(r, vec![Resolution::Stored("b")]);
        assert!(sends(&mut s, t0).is_empty());
        assert_eq!(
            s.on_reply(sent[0].1, 0, 0, ReplyKind::Stored, t0),
            vec![Resolution::Stored("a")]
        );
        assert_eq!(s.len(), 2, "a and b dropped once acknowledged from the front: c, d left");
        assert_eq!(sends(&mut s, t0).iter().map(|x| x.0).collect::<Vec<_>>(), ["d"]);
        assert!(s.on_reply(sent[1].1, 0, 2, ReplyKind::Stored, t0).is_empty(), "b again: no-op");
    }

    #[test]
    fn a_retriable_failure_resends_everything_unacknowledged_in_order_after_backoff() {
        let (t0, _, mut s) = queued(&[("a", 1), ("b", 1), ("c", 1)]);
        let sent = sends(&mut s, t0);
        // b fails (e.g. its connection broke): a and c are abandoned too.
        assert!(s.on_reply(sent[1].1, 0, 1, ReplyKind::Retriable, t0).is_empty());
        assert!(sends(&mut s, t0).is_empty(), "backoff");
        let t1 = t0 + Duration::from_millis(10);
        let again = sends(&mut s, t1);
        assert_eq!(
            again.iter().map(|x| (x.0, x.3)).collect::<Vec<_>>(),
            [("a", 0), ("b", 1), ("c", 2)]
        );
        // Backoff doubles: a second failure waits 20 ms.
        assert!(s.on_reply(again[1].1, 0, 1, ReplyKind::Retriable, t1).is_empty());
        assert!(
            sends(&mut s, t1 + Duration::from_millis(10)).is_empty(),
            "10 ms is not enough now"
        );
        assert_eq!(sends(&mut s, t1 + Duration::from_millis(20)).len(), 3);
        // A late failure of an abandoned send changes nothing; a late success counts.
        assert!(s.on_reply(sent[0].1, 0, 0, ReplyKind::Retriable, t1).is_empty());
        assert_eq!(
            s.on_reply(sent[0].1, 0, 0, ReplyKind::Stored, t1),
            vec![Resolution::Stored("a")]
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn an_unanswered_send_times_out_and_everything_is_resent() {
        let (t0, _, mut s) = queued(&[("a", 1), ("b", 1)]);
        let sent = sends(&mut s, t0);
        assert_eq!(s.next_wakeup(), Some(t0 + Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(100);
        assert!(s.poll(t1).is_empty());
        let again = sends(&mut s, t1 + Duration::from_millis(10));
        assert_eq!(
            again.iter().map(|x| (x.0, x.2, x.3)).collect::<Vec<_>>(),
            [("a", 0, 0), ("b", 0, 1)]
        );
        // The first copy's success arrives late: accepted; the resend's reply is then moot.
        assert_eq!(
            s.on_reply(sent[0].1, 0, 0, ReplyKind::Stored, t1),
            vec![Resolution::Stored("a")]
        );
        assert!(s.on_reply(again[0].1, 0, 0, ReplyKind::Stored, t1).is_empty());
    }

    #[test]
    fn out_of_order_on_the_first_batch_renumbers_under_a_new_epoch() {
        let (t0, far, mut s) = queued(&[("a", 2), ("b", 1)]);
        let sent = sends(&mut s, t0);
        s.on_reply(sent[0].1, 0, 0, ReplyKind::Stored, t0);
        s.push("c", 1, far);
        sends(&mut s, t0);
        // b was sent while a was unacknowledged: OUT_OF_ORDER may mean a had not arrived yet
        // (and a stale copy of b may still be on its way), so it is a plain retry.
        let b_attempt = 2;
        assert!(s.on_reply(b_attempt, 0, 2, ReplyKind::OutOfOrderSequence, t0).is_empty());
        let t1 = t0 + Duration::from_millis(10);
        let retry = sends(&mut s, t1);
        assert_eq!(
            retry.iter().map(|x| (x.0, x.2, x.3, x.4)).collect::<Vec<_>>(),
            [("b", 0, 2, false), ("c", 0, 3, false)]
        );
        // Sent as the first unacknowledged batch, it still gets OUT_OF_ORDER: the broker lost
        // the producer's state, and b, c are renumbered under epoch 1.
        assert!(s.on_reply(retry[0].1, 0, 2, ReplyKind::OutOfOrderSequence, t1).is_empty());
        let again = sends(&mut s, t1);
        assert_eq!(
            again.iter().map(|x| (x.0, x.2, x.3, x.4)).collect::<Vec<_>>(),
            [("b", 1, 0, true), ("c", 1, 1, true)]
        );
        assert_eq!(s.push("d", 1, far), (1, 2), "new batches continue the new epoch");
    }

    #[test]
    fn out_of_order_on_a_later_batch_is_a_retry() {
        let (t0, _, mut s) = queued(&[("a", 1), ("b", 1)]);
        let sent = sends(&mut s, t0);
        assert!(s.on_reply(sent[1].1, 0, 1, ReplyKind::OutOfOrderSequence, t0).is_empty());
        let again = sends(&mut s, t0 + Duration::from_millis(10));
        assert_eq!(
            again.iter().map(|x| (x.0, x.2, x.3)).collect::<Vec<_>>(),
            [("a", 0, 0), ("b", 0, 1)]
        );
    }

    #[test]
    fn a_fatal_failure_renumbers_the_batches_behind_it_which_wait_for_those_before() {
        let (t0, _, mut s) = queued(&[("a", 1), ("b", 1), ("c", 1)]);
        let sent = sends(&mut s, t0);
        let r = s.on_reply(sent[1].1, 0, 1, ReplyKind::Fatal, t0);
        assert_eq!(r, vec![Resolution::Failed("b", Failure::Reply)]);
        // c is now epoch 1, seq 0, but a (epoch 0) is still unresolved: c waits.
        assert!(sends(&mut s, t0).is_empty());
        assert_eq!(
            s.on_reply(sent[0].1, 0, 0, ReplyKind::Stored, t0),
            vec![Resolution::Stored("a")]
        );
        assert_eq!(
            sends(&mut s, t0).iter().map(|x| (x.0, x.2, x.3, x.4)).collect::<Vec<_>>(),
            [("c", 1, 0, true)]
        );
    }

    #[test]
    fn at_the_deadline_sent_batches_fail_and_unsent_ones_go_on_renumbered() {
        let t0 = Instant::now();
        let mut s = QueueSequencer::new(SequencerConfig { max_in_flight: 1, ..config() });
        s.push("a", 1, t0 + Duration::from_millis(50));
        s.push("b", 1, t0 + Duration::from_secs(10));
        sends(&mut s, t0);
        assert_eq!(s.next_wakeup(), Some(t0 + Duration::from_millis(50)));
        let r = s.poll(t0 + Duration::from_millis(50));
        assert_eq!(r, vec![Resolution::Failed("a", Failure::Timeout)]);
        let next = sends(&mut s, t0 + Duration::from_millis(50));
        assert_eq!(next.iter().map(|x| (x.0, x.2, x.3)).collect::<Vec<_>>(), [("b", 1, 0)]);
    }

    /// Past the 65,535th epoch of its producer id a queue goes on in the next generation, from
    /// wire epoch 0 (the producer numbers it under a new id); it used to fail every batch.
    #[test]
    fn past_the_last_epoch_of_an_id_batches_go_on_in_the_next_generation() {
        let t0 = Instant::now();
        let mut s = QueueSequencer::new(config());
        let last = u32::from(crate::protocol::producer_id::MAX_EPOCH);
        s.epoch = last;
        let far = t0 + Duration::from_secs(10);
        s.push("a", 1, far);
        s.push("b", 2, far);
        let sent = sends(&mut s, t0);
        assert_eq!((generation(sent[0].2), wire_epoch(sent[0].2)), (0, u16::MAX));
        let r = s.on_reply(sent[0].1, last, 0, ReplyKind::OutOfOrderSequence, t0);
        assert!(r.is_empty(), "renumbered, not failed: {r:?}");
        assert_eq!(generation(s.epoch()), 1);
        let again = sends(&mut s, t0);
        assert_eq!(
            again.iter().map(|x| (x.0, wire_epoch(x.2), x.3, x.4)).collect::<Vec<_>>(),
            [("a", 0, 0, true), ("b", 0, 1, true)]
        );
        assert!(again.iter().all(|x| generation(x.2) == 1));
        assert_eq!(
            s.on_reply(again[0].1, again[0].2, 0, ReplyKind::Stored, t0),
            [Resolution::Stored("a")]
        );
        // Only after 2^32 epochs in all is there none left.
        let mut s = QueueSequencer::new(config());
        s.epoch = u32::MAX;
        s.push("c", 1, far);
        let c = sends(&mut s, t0);
        let r = s.on_reply(c[0].1, u32::MAX, 0, ReplyKind::OutOfOrderSequence, t0);
        assert_eq!(r, [Resolution::Failed("c", Failure::EpochsExhausted)]);
    }
}
