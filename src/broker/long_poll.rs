//! Long-poll waiters: fetches parked at the end of a queue until an append makes data visible.
//!
//! One per shard, used only on that shard's thread (no locks). A fetch at `offset == next`
//! registers a waiter and waits for [`LongPoll::notify`] (called right after an append returns,
//! which is when the data is visible to reads) or its deadline, then reads again. In sync flush
//! mode an append acknowledged with FLUSH_DISK_TIMEOUT becomes readable only when its flush
//! completes; the shard remembers such queues and their parked fetches also wait for the log's
//! readable end to pass that data (`Shard::fetch`), so nobody sleeps until the deadline.
//! Waiters per queue are bounded: when a queue's list is full, cancelled waiters are pruned
//! and, if it is still full, the fetch is answered at once (empty) instead of waiting.
//! A FETCH_MULTI at the end of all its queues waits for an append to any queue of the shard
//! ([`LongPoll::register_any`], bounded the same way) and then looks at its queues again.

use std::collections::HashMap;

use futures::channel::oneshot;

use crate::storage::QueueKey;

/// A registered waiter; resolves when its queue gets data (or the broker stops).
pub type Waiter = oneshot::Receiver<()>;

pub struct LongPoll {
    max_per_queue: usize,
    waiters: HashMap<QueueKey, Vec<oneshot::Sender<()>>>,
    /// Woken by an append to any queue.
    any: Vec<oneshot::Sender<()>>,
    closed: bool,
}

impl LongPoll {
    pub fn new(max_per_queue: usize) -> Self {
        LongPoll { max_per_queue, waiters: HashMap::new(), any: Vec::new(), closed: false }
    }

    /// Registers a waiter on `queue`; None when the queue's waiter list is full or the
    /// broker is stopping (the caller replies without waiting).
    pub fn register(&mut self, queue: QueueKey) -> Option<Waiter> {
        if self.closed {
            return None;
        }
        push_bounded(self.waiters.entry(queue).or_default(), self.max_per_queue)
    }

    /// Registers a waiter woken by an append to any queue; None when that list is full (of
    /// `max_per_queue` waiters not cancelled) or the broker is stopping.
    pub fn register_any(&mut self) -> Option<Waiter> {
        if self.closed {
            return None;
        }
        push_bounded(&mut self.any, self.max_per_queue)
    }

    /// Wakes every waiter of `queue`, and those waiting for any queue.
    pub fn notify(&mut self, queue: QueueKey) {
        if let Some(list) = self.waiters.remove(&queue) {
            for w in list {
                let _ = w.send(());
            }
        }
        self.wake_any();
    }

    fn wake_any(&mut self) {
        for w in self.any.drain(..) {
            let _ = w.send(());
        }
    }

    /// Wakes every waiter of every queue (replication: the confirmed position moved, which
    /// may make data of any queue readable).
    pub fn notify_all(&mut self) {
        for (_, list) in self.waiters.drain() {
            for w in list {
                let _ = w.send(());
            }
        }
        self.wake_any();
    }

    /// Wakes everyone and refuses new waiters (shutdown).
    pub fn close(&mut self) {
        self.closed = true;
        self.notify_all();
    }

    /// Waiters currently registered and not cancelled.
    pub fn waiting(&self) -> usize {
        self.waiters.values().flatten().chain(&self.any).filter(|s| !s.is_canceled()).count()
    }
}

/// A new waiter in `list` unless it holds `max` waiters not cancelled.
fn push_bounded(list: &mut Vec<oneshot::Sender<()>>, max: usize) -> Option<Waiter> {
    if list.len() >= max {
        list.retain(|s| !s.is_canceled());
    }
    if list.len() >= max {
        return None;
    }
    let (tx, rx) = oneshot::channel();
    list.push(tx);
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{QueueId, TopicId};

    #[test]
    fn bounded_notified_and_closed() {
        let q = QueueKey::new(TopicId::new(1), QueueId::new(0));
        let mut lp = LongPoll::new(2);
        let mut a = lp.register(q).unwrap();
        let b = lp.register(q).unwrap();
        assert!(lp.register(q).is_none(), "third waiter exceeds the bound");
        drop(b);
        let mut c = lp.register(q).expect("cancelled waiter was pruned");
        assert_eq!(lp.waiting(), 2);
        lp.notify(QueueKey::new(TopicId::new(1), QueueId::new(1)));
        assert_eq!(a.try_recv(), Ok(None));
        lp.notify(q);
        assert_eq!(a.try_recv(), Ok(Some(())));
        assert_eq!(c.try_recv(), Ok(Some(())));
        let mut d = lp.register(q).unwrap();
        lp.close();
        assert_eq!(d.try_recv(), Ok(Some(())));
        assert!(lp.register(q).is_none());
    }

    #[test]
    fn waiters_for_any_queue_are_bounded_and_woken_by_every_queue_s_append() {
        let (q, r) = (
            QueueKey::new(TopicId::new(1), QueueId::new(0)),
            QueueKey::new(TopicId::new(2), QueueId::new(5)),
        );
        let mut lp = LongPoll::new(2);
        let mut a = lp.register_any().unwrap();
        let b = lp.register_any().unwrap();
        assert!(lp.register_any().is_none(), "third waiter exceeds the bound");
        drop(b);
        let mut c = lp.register_any().expect("cancelled waiter was pruned");
        assert_eq!(lp.waiting(), 2);
        lp.notify(r);
        assert_eq!(a.try_recv(), Ok(Some(())));
        assert_eq!(c.try_recv(), Ok(Some(())));
        let mut d = lp.register_any().unwrap();
        let mut e = lp.register(q).unwrap();
        lp.notify_all();
        assert_eq!(d.try_recv(), Ok(Some(())));
        assert_eq!(e.try_recv(), Ok(Some(())));
        let mut f = lp.register_any().unwrap();
        lp.close();
        assert_eq!(f.try_recv(), Ok(Some(())));
        assert!(lp.register_any().is_none());
    }
}
