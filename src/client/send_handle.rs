//! Per-message send handles resolved by one completion per batch.
//!
//! `send_async` returns a [`SendHandle`] for each message, but the producer does not allocate,
//! lock or wake anything per message for it: every message of an open batch shares the batch's
//! `BatchCompletion` (one `Arc` allocated when the batch opens), and a handle is that `Arc`
//! plus the message's index in the batch. The batch is resolved once: a reply that says it is
//! stored resolves it on the connection's reader thread that read the reply
//! (`connection::EarlyAck`); a failure, after the producer's worker has
//! given up retrying. The outcome is stored (status, topic, queue and first offset, or the
//! error) and the wakers and blocked threads waiting on any of its handles are woken, under
//! one lock. Each handle then makes its own [`SendResult`] on demand: its offset is the
//! batch's first offset plus its index.
//!
//! Reading a resolved outcome takes no lock ([`OnceLock`]), so a caller that polls handles
//! (`try_take`) pays an atomic load per handle. Only handles that wait register anything: an
//! async poll keeps at most one waker per handle (a map by index, bounded by the batch's
//! message count and emptied at resolution), and a blocking wait counts itself so that
//! resolution notifies the condition variable only when somebody is blocked.
//!
//! Resolution happens exactly once; a second `complete` keeps the first outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::error::{ClientError, Result};
use super::producer::SendResult;
use crate::protocol::SendStatus;

/// Where a batch was stored: what every message's [`SendResult`] is made from.
#[derive(Debug, Clone)]
pub(crate) struct BatchStored {
    pub(crate) status: SendStatus,
    pub(crate) topic: Arc<str>,
    pub(crate) topic_id: u32,
    pub(crate) queue_id: u32,
    pub(crate) base_offset: u64,
}

#[derive(Default)]
struct Waiters {
    /// Wakers of handles polled before resolution, by message index (one per handle).
    wakers: FxHashMap<u32, Waker>,
    /// Threads blocked in `wait`/`wait_timeout` now.
    blocked: usize,
}

/// The one completion of a batch of `send_async` messages, shared by their handles.
pub(crate) struct BatchCompletion {
    outcome: OnceLock<Result<BatchStored>>,
    waiters: Mutex<Waiters>,
    ready: Condvar,
}

fn lock(m: &Mutex<Waiters>) -> MutexGuard<'_, Waiters> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BatchCompletion {
    pub(crate) fn new() -> Arc<BatchCompletion> {
        Arc::new(BatchCompletion {
            outcome: OnceLock::new(),
            waiters: Mutex::new(Waiters::default()),
            ready: Condvar::new(),
        })
    }

    /// A completion already failed with `e` (a message refused before it joined a batch).
    pub(crate) fn failed(e: ClientError) -> Arc<BatchCompletion> {
        let c = BatchCompletion::new();
        c.complete(Err(e));
        c
    }

    /// Resolves every handle of the batch: one lock, then every registered waker is woken
    /// (and blocked threads notified). A second call keeps the first outcome.
    pub(crate) fn complete(&self, outcome: Result<BatchStored>) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        // The outcome is set before the lock is taken: a poller that registered before this
        // point is woken below; one that locks after it sees the outcome under the lock.
        let (wakers, blocked) = {
            let mut w = lock(&self.waiters);
            (std::mem::take(&mut w.wakers), w.blocked > 0)
        };
        if blocked {
            self.ready.notify_all();
        }
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    fn result(&self, index: u32) -> Option<Result<SendResult>> {
        self.outcome.get().map(|o| match o {
            Ok(s) => Ok(SendResult {
                status: s.status,
                topic: s.topic.clone(),
                topic_id: s.topic_id,
                queue_id: s.queue_id,
                queue_offset: s.base_offset + u64::from(index),
            }),
            Err(e) => Err(e.clone()),
        })
    }

    /// Wakers registered and not yet woken (tests of the memory bound).
    #[cfg(test)]
    fn registered(&self) -> usize {
        lock(&self.waiters).wakers.len()
    }
}

/// The result of one `send_async` message, to come: wait for it (blocking), poll it
/// ([`SendHandle::try_take`]) or `.await` it (any executor). Cheap to hold: a shared pointer
/// to its batch's completion and its index in the batch.
pub struct SendHandle {
    batch: Arc<BatchCompletion>,
    index: u32,
}

impl std::fmt::Debug for SendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendHandle")
            .field("index", &self.index)
            .field("resolved", &self.batch.outcome.get().is_some())
            .finish()
    }
}

impl SendHandle {
    pub(crate) fn new(batch: Arc<BatchCompletion>, index: u32) -> SendHandle {
        SendHandle { batch, index }
    }

    /// A handle already failed with `e`.
    pub(crate) fn failed(e: ClientError) -> SendHandle {
        SendHandle::new(BatchCompletion::failed(e), 0)
    }

    /// The result if it already arrived (the same result every time it is asked).
    pub fn try_take(&self) -> Option<Result<SendResult>> {
        self.batch.result(self.index)
    }

    /// The send's status if its result already arrived, without making a [`SendResult`]:
    /// for a caller that only checks that its sends were stored. `try_take` shares the
    /// batch's topic name with each result (a reference count taken and later dropped, two
    /// locked instructions per message); this reads the batch's outcome in place.
    pub fn try_status(&self) -> Option<Result<SendStatus>> {
        self.batch.outcome.get().map(|o| match o {
            Ok(s) => Ok(s.status),
            Err(e) => Err(e.clone()),
        })
    }

    /// Whether the result arrived.
    pub fn is_done(&self) -> bool {
        self.batch.outcome.get().is_some()
    }

    /// Blocks until the result arrives.
    pub fn wait(self) -> Result<SendResult> {
        let mut handle = self;
        loop {
            match handle.wait_timeout(Duration::from_secs(3600)) {
                Ok(r) => return r,
                Err(back) => handle = back,
            }
        }
    }

    /// Blocks at most `timeout`; gives the handle back on timeout.
    pub fn wait_timeout(
        self,
        timeout: Duration,
    ) -> std::result::Result<Result<SendResult>, SendHandle> {
        if let Some(r) = self.try_take() {
            return Ok(r);
        }
        let deadline = Instant::now() + timeout;
        let mut w = lock(&self.batch.waiters);
        w.blocked += 1;
        let r = loop {
            if let Some(r) = self.try_take() {
                break Some(r);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            w = self
                .batch
                .ready
                .wait_timeout(w, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        w.blocked -= 1;
        drop(w);
        r.ok_or(self)
    }
}

impl Future for SendHandle {
    type Output = Result<SendResult>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.try_take() {
            return Poll::Ready(r);
        }
        let mut w = lock(&self.batch.waiters);
        // Resolution sets the outcome before it takes the lock: checked again under it.
        if let Some(r) = self.try_take() {
            return Poll::Ready(r);
        }
        match w.wakers.get_mut(&self.index) {
            Some(old) if old.will_wake(cx.waker()) => {}
            Some(old) => old.clone_from(cx.waker()),
            None => {
                w.wakers.insert(self.index, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    fn stored(base_offset: u64) -> BatchStored {
        BatchStored {
            status: SendStatus::SendOk,
            topic: Arc::from("t"),
            topic_id: 3,
            queue_id: 2,
            base_offset,
        }
    }

    fn handles(batch: &Arc<BatchCompletion>, n: u32) -> Vec<SendHandle> {
        (0..n).map(|i| SendHandle::new(batch.clone(), i)).collect()
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_produce_reply_whose_offsets_pass_the_last_one_is_refused_not_a_panic() {
        use crate::protocol::codec::Writer;
        use crate::protocol::{ApiKey, Response};
        // A broker speaking wrongly: three records stored from offset u64::MAX - 1. The reply
        // is decoded, then each message's handle adds its index to the base offset.
        let reply = Response::Produce {
            status: SendStatus::SendOk,
            topic_id: 3,
            queue_id: 2,
            base_offset: u64::MAX - 1,
            record_count: 3,
            store_timestamp_ms: 1,
        };
        let mut w = Writer::new();
        reply.encode_body(&mut w);
        let decoded = Response::decode(ApiKey::Produce, &w.buf);
        if let Ok(Response::Produce { base_offset, .. }) = &decoded {
            let batch = BatchCompletion::new();
            let hs = handles(&batch, 3);
            batch.complete(Ok(stored(*base_offset)));
            for h in hs {
                let _ = h.try_take();
            }
        }
        assert!(decoded.is_err(), "{decoded:?}");
    }

    #[test]
    fn every_handle_resolves_once_with_its_own_offset() {
        let batch = BatchCompletion::new();
        let hs = handles(&batch, 5);
        assert!(hs.iter().all(|h| h.try_take().is_none() && !h.is_done()));
        batch.complete(Ok(stored(100)));
        // A second resolution (a late duplicate answer) changes nothing.
        batch.complete(Ok(stored(900)));
        batch.complete(Err(ClientError::Closed));
        for (i, h) in hs.into_iter().enumerate() {
            let r = h.try_take().unwrap().unwrap();
            assert_eq!((r.queue_offset, r.queue_id, r.topic_id), (100 + i as u64, 2, 3));
            assert_eq!(&*r.topic, "t");
            assert_eq!(h.try_take().unwrap().unwrap(), r, "the same result when asked again");
            assert_eq!(h.wait().unwrap(), r);
        }
    }

    #[test]
    fn the_status_alone_comes_with_the_result_and_shares_nothing() {
        let batch = BatchCompletion::new();
        let hs = handles(&batch, 3);
        assert!(hs.iter().all(|h| h.try_status().is_none()));
        let mut s = stored(7);
        s.status = SendStatus::FlushDiskTimeout;
        let topic = s.topic.clone();
        batch.complete(Ok(s));
        let held = Arc::strong_count(&topic);
        for h in &hs {
            assert_eq!(h.try_status().unwrap().unwrap(), SendStatus::FlushDiskTimeout);
        }
        assert_eq!(Arc::strong_count(&topic), held, "no result made, the topic not shared");
        let r = hs[2].try_take().unwrap().unwrap();
        assert_eq!(Arc::strong_count(&topic), held + 1, "a whole result shares the topic");
        assert_eq!(r.queue_offset, 9);
        let failed = BatchCompletion::new();
        let h = handles(&failed, 1).remove(0);
        failed.complete(Err(ClientError::Closed));
        assert!(matches!(h.try_status(), Some(Err(ClientError::Closed))));
    }

    #[test]
    fn an_error_reaches_every_handle_including_blocked_and_async_ones() {
        let batch = BatchCompletion::new();
        let mut hs = handles(&batch, 4);
        // Handle 0 waits in another thread, handle 1 is polled by a task, 2 and 3 look later.
        let blocked = {
            let h = hs.remove(0);
            std::thread::spawn(move || h.wait())
        };
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        let mut polled = hs.remove(0);
        assert!(Pin::new(&mut polled).poll(&mut Context::from_waker(&waker)).is_pending());
        let timed_out = hs.remove(0).wait_timeout(Duration::from_millis(5)).unwrap_err();
        // The blocked thread counted itself before the error arrives.
        while lock(&batch.waiters).blocked == 0 {
            std::thread::yield_now();
        }
        batch.complete(Err(ClientError::Timeout(3000)));
        assert!(matches!(blocked.join().unwrap(), Err(ClientError::Timeout(3000))));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the polled handle woken once");
        match Pin::new(&mut polled).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Err(ClientError::Timeout(3000))) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(timed_out.wait(), Err(ClientError::Timeout(3000))));
        assert!(matches!(hs.remove(0).try_take(), Some(Err(ClientError::Timeout(3000)))));
    }

    #[test]
    fn polling_keeps_one_waker_per_handle_and_resolution_frees_them() {
        let batch = BatchCompletion::new();
        let mut hs = handles(&batch, 100);
        let counters: Vec<Arc<CountingWaker>> = (0..3).map(|_| Arc::default()).collect();
        // Every handle polled many times, with changing wakers: the map holds one per handle.
        for round in 0..30 {
            let waker = Waker::from(counters[round % 3].clone());
            for h in hs.iter_mut() {
                assert!(Pin::new(h).poll(&mut Context::from_waker(&waker)).is_pending());
            }
            assert_eq!(batch.registered(), 100);
        }
        batch.complete(Ok(stored(0)));
        assert_eq!(batch.registered(), 0, "wakers are dropped at resolution");
        // Each handle woke its latest waker once: round 29 used counter 29 % 3 = 2.
        assert_eq!(counters[2].0.load(Ordering::SeqCst), 100);
        assert_eq!(counters[0].0.load(Ordering::SeqCst) + counters[1].0.load(Ordering::SeqCst), 0);
        // Polling a resolved handle registers nothing.
        let waker = Waker::from(counters[0].clone());
        for (i, h) in hs.iter_mut().enumerate() {
            match Pin::new(h).poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(Ok(r)) => assert_eq!(r.queue_offset, i as u64),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(batch.registered(), 0);
    }

    #[test]
    fn a_failed_handle_is_resolved_at_once() {
        let h = SendHandle::failed(ClientError::Closed);
        assert!(h.is_done());
        assert!(matches!(h.wait_timeout(Duration::ZERO), Ok(Err(ClientError::Closed))));
    }
}
