//! Choosing the queue a message goes to (RocketMQ's MessageQueueSelector).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::error::{ClientError, Result};
use super::message::Message;

/// A user function: `(message, queue_count) -> queue_id` (must be below `queue_count`).
pub type SelectFn = Arc<dyn Fn(&Message, u32) -> u32 + Send + Sync>;

#[derive(Clone, Default)]
pub enum QueueSelector {
    /// Spread messages over all queues in turn, one message at a time (see
    /// `SelectorTurn::next` for threads that send through one client at once). With many
    /// queues each batch then holds a few messages; see [`QueueSelector::RoundRobinPerBatch`].
    RoundRobin,
    /// Spread messages over all queues in turn, one batch at a time (the default): a topic's
    /// messages go to one queue while its open batch takes them; once that batch has gone
    /// (the producer's linger or in-flight rules sent it) or is full, the next message goes
    /// to the next queue. This is what RocketMQ's producer does with `autoBatch` (a batch's
    /// queue is chosen when it is sent) and Kafka's producer for records without a key
    /// (sticky partitioning, KIP-480): as even over time as [`QueueSelector::RoundRobin`], and
    /// each batch holds the messages of one linger instead of one message per queue in
    /// turn, which with thousands of queues cost about half the throughput (BENCHMARKS.md,
    /// many-queues). A message sent with `send` (waiting for its reply) opens a batch of its
    /// own, so one thread's `send`s still go round the queues one by one. Where no batch is
    /// being filled (`send_batch`, scheduled, oneway and transactional sends), it picks as
    /// [`QueueSelector::RoundRobin`] does.
    #[default]
    RoundRobinPerBatch,
    /// Spread messages over all queues in turn, `n` consecutive messages to each: a fixed
    /// run where [`QueueSelector::RoundRobinPerBatch`] follows the batches themselves. With
    /// many queues, round-robin per message puts about one message in each queue's batch;
    /// sticking to a queue for a batch's worth of messages fills the batch instead
    /// (BENCHMARKS.md, many-queues). The distribution over queues is as even, in runs of `n`.
    /// A `send_batch` counts as one send, as for `RoundRobin`. `n = 0` counts as 1.
    Sticky(u32),
    /// `crc32c(key) % queue_count`: every message with the same key goes to the same queue,
    /// so a key's messages are delivered in the order they were sent (ordered messages).
    KeyHash,
    /// Always this queue.
    Queue(u32),
    Custom(SelectFn),
}

impl std::fmt::Debug for QueueSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueSelector::RoundRobin => f.write_str("RoundRobin"),
            QueueSelector::RoundRobinPerBatch => f.write_str("RoundRobinPerBatch"),
            QueueSelector::Sticky(n) => write!(f, "Sticky({n})"),
            QueueSelector::KeyHash => f.write_str("KeyHash"),
            QueueSelector::Queue(q) => write!(f, "Queue({q})"),
            QueueSelector::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// A topic's position for the round-robin and sticky selectors: one per topic, as RocketMQ's
/// `sendWhichQueue`. (One position shared by all topics spread a producer that alternates
/// between two topics over half the queues of each.) A clone starts where the original is.
#[derive(Default)]
pub struct SelectorTurn(AtomicU32);

impl SelectorTurn {
    /// The next turn: a load and a store, not an atomic add. Spreading needs no exact count,
    /// and the add was a locked instruction per message on the sending thread (for the same
    /// reason the bench's per-send count cost small-messages 5-20%, BENCHMARKS.md round 32).
    /// One thread goes round in order; threads sending through one client at the same moment
    /// may now and then take the same turn (two messages to one queue), as RocketMQ's
    /// per-thread index (`ThreadLocalIndex`) does not keep them apart either.
    fn next(&self) -> u32 {
        let t = self.0.load(Ordering::Relaxed);
        self.0.store(t.wrapping_add(1), Ordering::Relaxed);
        t
    }
}

impl Clone for SelectorTurn {
    fn clone(&self) -> Self {
        SelectorTurn(AtomicU32::new(self.0.load(Ordering::Relaxed)))
    }
}

impl std::fmt::Debug for SelectorTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SelectorTurn({})", self.0.load(Ordering::Relaxed))
    }
}

impl QueueSelector {
    /// The queue for `msg` among `queue_count`; `turn` is the topic's round-robin position.
    pub fn select(&self, msg: &Message, queue_count: u32, turn: &SelectorTurn) -> Result<u32> {
        if queue_count == 0 {
            return Err(ClientError::Invalid(format!("topic {:?} has no queues", msg.topic)));
        }
        let q = match self {
            QueueSelector::RoundRobin | QueueSelector::RoundRobinPerBatch => {
                turn.next() % queue_count
            }
            QueueSelector::Sticky(n) => turn.next() / (*n).max(1) % queue_count,
            QueueSelector::KeyHash => crate::format::crc::crc32c(&msg.key) % queue_count,
            QueueSelector::Queue(q) => *q,
            QueueSelector::Custom(f) => f(msg, queue_count),
        };
        if q >= queue_count {
            return Err(ClientError::Invalid(format!(
                "selector chose queue {q} but topic {:?} has {queue_count} queues",
                msg.topic
            )));
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let c = SelectorTurn::default();
        let m = Message::new("t", "b").with_key("order-1");
        let rr: Vec<_> =
            (0..4).map(|_| QueueSelector::RoundRobin.select(&m, 3, &c).unwrap()).collect();
        assert_eq!(rr, vec![0, 1, 2, 0]);
        let a = QueueSelector::KeyHash.select(&m, 8, &c).unwrap();
        assert_eq!(a, QueueSelector::KeyHash.select(&m, 8, &c).unwrap());
        assert!(QueueSelector::Queue(9).select(&m, 8, &c).is_err());
        let c = SelectorTurn::default();
        let sticky: Vec<_> =
            (0..9).map(|_| QueueSelector::Sticky(2).select(&m, 3, &c).unwrap()).collect();
        assert_eq!(sticky, vec![0, 0, 1, 1, 2, 2, 0, 0, 1]);
        let c = SelectorTurn::default();
        assert_eq!(QueueSelector::Sticky(0).select(&m, 3, &c).unwrap(), 0);
        assert_eq!(QueueSelector::Sticky(0).select(&m, 3, &c).unwrap(), 1, "0 counts as 1");
        // Where no batch is being filled, per batch picks as per message does.
        let c = SelectorTurn::default();
        let pb: Vec<_> =
            (0..4).map(|_| QueueSelector::RoundRobinPerBatch.select(&m, 3, &c).unwrap()).collect();
        assert_eq!(pb, vec![0, 1, 2, 0]);
        assert!(matches!(QueueSelector::default(), QueueSelector::RoundRobinPerBatch));
        let f = QueueSelector::Custom(Arc::new(|_, n| n - 1));
        assert_eq!(f.select(&m, 5, &c).unwrap(), 4);
    }

    #[test]
    fn threads_sharing_a_turn_still_spread_over_every_queue() {
        // The turn is a load and a store: threads at once may repeat a turn, never leave a
        // queue out or pick one outside the topic.
        let turn = Arc::new(SelectorTurn::default());
        let (threads, picks, queues) = (4, 20_000, 8u32);
        let counts: Vec<Vec<u32>> = (0..threads)
            .map(|_| {
                let turn = turn.clone();
                std::thread::spawn(move || {
                    let m = Message::new("t", "b");
                    let mut counts = vec![0u32; queues as usize];
                    for _ in 0..picks {
                        counts[QueueSelector::RoundRobin.select(&m, queues, &turn).unwrap()
                            as usize] += 1;
                    }
                    counts
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let total: Vec<u32> =
            (0..queues as usize).map(|q| counts.iter().map(|c| c[q]).sum()).collect();
        let even = threads * picks / queues;
        for (q, n) in total.iter().enumerate() {
            assert!(*n > even / 2 && *n < even * 2, "queue {q}: {n} picks, {even} even");
        }
    }
}
