//! Per-message send handles resolved by one completion per batch.
//!
//! `send_async` returns a [`SendHandle`] for each message, but the producer does not allocate,
//! lock or wake anything per message for it: every message of an open batch shares the batch's
//! `BatchCompletion` (one counted allocation when the batch opens, a `CompletionRef`), and a
//! handle is a reference to it plus the message's index in the batch. The open batch pays for
//! its handles' references in advance, many with one atomic add (`Credits`), so that handing
//! out a handle is not a locked instruction either. The batch is resolved once: a reply that
//! says it is stored resolves it on the connection's reader thread that read the reply
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
use std::ops::Deref;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
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

/// The references a count may hold, at most (as `Arc`: past it the process aborts rather than
/// let the count wrap and free what is still referenced).
const MAX_REFS: usize = isize::MAX as usize;

/// A batch's completion and the count of references to it ([`CompletionRef`], [`Credits`]).
struct Counted {
    refs: AtomicUsize,
    completion: BatchCompletion,
}

/// A counted reference to a batch's completion, as an `Arc<BatchCompletion>` is, except that
/// references can also be paid for in advance, many with one atomic add ([`Credits`]). The
/// completion is freed when the count, handed-out and prepaid references together, reaches
/// zero. Same orderings as `Arc`: an increment is relaxed (it is made from a reference held),
/// a decrement releases, and the one that reaches zero acquires before freeing.
pub(crate) struct CompletionRef {
    ptr: NonNull<Counted>,
}

// SAFETY: a `CompletionRef` gives shared access to a `BatchCompletion` (Send and Sync: a
// `OnceLock`, a `Mutex` and a `Condvar` of Send values; checked below) from any thread, and the
// last reference frees it on whichever thread drops it, as `Arc<BatchCompletion>` does.
unsafe impl Send for CompletionRef {}
unsafe impl Sync for CompletionRef {}

/// The compiler's check of what the `unsafe impl`s above and below claim.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<BatchCompletion>();
};

impl CompletionRef {
    /// A new batch's completion, not resolved yet: the one reference to it.
    pub(crate) fn pending() -> CompletionRef {
        let completion = BatchCompletion {
            outcome: OnceLock::new(),
            waiters: Mutex::new(Waiters::default()),
            ready: Condvar::new(),
        };
        let counted = Box::new(Counted { refs: AtomicUsize::new(1), completion });
        CompletionRef { ptr: NonNull::from(Box::leak(counted)) }
    }

    /// A completion already failed with `e` (a message refused before it joined a batch).
    pub(crate) fn failed(e: ClientError) -> CompletionRef {
        let c = CompletionRef::pending();
        c.complete(Err(e));
        c
    }

    fn counted(&self) -> &Counted {
        // SAFETY: the count includes this reference, so the allocation is alive.
        unsafe { self.ptr.as_ref() }
    }

    /// `n` references paid for now, with one atomic add, to be handed out one by one.
    pub(crate) fn credits(&self, n: usize) -> Credits {
        if n > 0 && self.counted().refs.fetch_add(n, Ordering::Relaxed) > MAX_REFS - n {
            std::process::abort();
        }
        Credits { ptr: self.ptr, left: n }
    }

    /// References counted now, handed out or prepaid (tests).
    #[cfg(test)]
    pub(crate) fn refs(&self) -> usize {
        self.counted().refs.load(Ordering::Acquire)
    }
}

/// Drops `n` references of `ptr`'s count; frees the completion when they were the last.
///
/// # Safety
/// The caller owns `n` of the references counted (and gives them up).
unsafe fn release(ptr: NonNull<Counted>, n: usize) {
    // SAFETY: the caller's references keep the allocation alive until this decrement.
    if unsafe { ptr.as_ref() }.refs.fetch_sub(n, Ordering::Release) != n {
        return;
    }
    // Every other reference was dropped before its decrement (released); see them all.
    fence(Ordering::Acquire);
    // SAFETY: the count reached zero: nothing references the allocation any more, and it was
    // made by `Box::new` in `CompletionRef::pending`.
    drop(unsafe { Box::from_raw(ptr.as_ptr()) });
}

impl Clone for CompletionRef {
    fn clone(&self) -> CompletionRef {
        if self.counted().refs.fetch_add(1, Ordering::Relaxed) > MAX_REFS - 1 {
            std::process::abort();
        }
        CompletionRef { ptr: self.ptr }
    }
}

impl Drop for CompletionRef {
    fn drop(&mut self) {
        // SAFETY: this reference is counted and given up here.
        unsafe { release(self.ptr, 1) }
    }
}

impl Deref for CompletionRef {
    type Target = BatchCompletion;
    fn deref(&self) -> &BatchCompletion {
        &self.counted().completion
    }
}

/// References to one completion paid for in advance ([`CompletionRef::credits`]), handed out
/// by [`Credits::take`] without touching the count; the ones not taken are given back, with
/// one atomic subtraction, when the credits are dropped.
pub(crate) struct Credits {
    ptr: NonNull<Counted>,
    left: usize,
}

// SAFETY: as for `CompletionRef`: counted references to a Send and Sync completion.
unsafe impl Send for Credits {}
unsafe impl Sync for Credits {}

impl Credits {
    /// One prepaid reference, or None when all were taken.
    pub(crate) fn take(&mut self) -> Option<CompletionRef> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(CompletionRef { ptr: self.ptr })
    }

    /// Prepaid references not taken yet (tests).
    #[cfg(test)]
    pub(crate) fn left(&self) -> usize {
        self.left
    }
}

impl Drop for Credits {
    fn drop(&mut self) {
        if self.left > 0 {
            // SAFETY: the `left` references not taken are counted and owned by the credits.
            unsafe { release(self.ptr, self.left) }
        }
    }
}

/// The result of one `send_async` message, to come: wait for it (blocking), poll it
/// ([`SendHandle::try_take`]) or `.await` it (any executor). Cheap to hold: a shared pointer
/// to its batch's completion and its index in the batch.
pub struct SendHandle {
    batch: CompletionRef,
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
    pub(crate) fn new(batch: CompletionRef, index: u32) -> SendHandle {
        SendHandle { batch, index }
    }

    /// A handle already failed with `e`.
    pub(crate) fn failed(e: ClientError) -> SendHandle {
        SendHandle::new(CompletionRef::failed(e), 0)
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

    fn handles(batch: &CompletionRef, n: u32) -> Vec<SendHandle> {
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
            let batch = CompletionRef::pending();
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
        let batch = CompletionRef::pending();
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
        let batch = CompletionRef::pending();
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
        let failed = CompletionRef::pending();
        let h = handles(&failed, 1).remove(0);
        failed.complete(Err(ClientError::Closed));
        assert!(matches!(h.try_status(), Some(Err(ClientError::Closed))));
    }

    #[test]
    fn an_error_reaches_every_handle_including_blocked_and_async_ones() {
        let batch = CompletionRef::pending();
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
        let batch = CompletionRef::pending();
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

    /// A completion resolved with a result naming `topic`: it holds one count of the topic
    /// for as long as it lives, which shows when it is freed.
    fn resolved_with(topic: &Arc<str>) -> CompletionRef {
        let c = CompletionRef::pending();
        c.complete(Ok(BatchStored { topic: topic.clone(), ..stored(0) }));
        c
    }

    #[test]
    fn prepaid_references_are_counted_once_and_the_unused_given_back() {
        let c = CompletionRef::pending();
        assert_eq!(c.refs(), 1);
        let mut credits = c.credits(5);
        assert_eq!(c.refs(), 6, "five references paid for with one add");
        let a = SendHandle::new(credits.take().unwrap(), 0);
        let b = SendHandle::new(credits.take().unwrap(), 1);
        assert_eq!(c.refs(), 6, "taking a prepaid reference does not count again");
        assert_eq!(credits.left(), 3);
        drop(credits);
        assert_eq!(c.refs(), 3, "the three not taken are given back");
        drop(a);
        assert_eq!(c.refs(), 2);
        drop(b);
        assert_eq!(c.refs(), 1);
        let mut none = c.credits(0);
        assert!(none.take().is_none());
        drop(none);
        assert_eq!(c.refs(), 1);
    }

    #[test]
    fn a_completion_is_freed_by_its_last_reference_whichever_kind() {
        let topic: Arc<str> = Arc::from("freed");
        let held = Arc::strong_count(&topic);
        // The credits last.
        let c = resolved_with(&topic);
        let mut credits = c.credits(4);
        let h = SendHandle::new(credits.take().unwrap(), 0);
        drop(c);
        drop(h);
        assert_eq!(Arc::strong_count(&topic), held + 1, "unused credits keep it");
        drop(credits);
        assert_eq!(Arc::strong_count(&topic), held, "freed with the credits");
        // A handle lasts.
        let c = resolved_with(&topic);
        let mut credits = c.credits(2);
        let h = SendHandle::new(credits.take().unwrap(), 0);
        drop(credits);
        drop(c);
        assert!(matches!(h.try_status(), Some(Ok(SendStatus::SendOk))));
        assert_eq!(Arc::strong_count(&topic), held + 1);
        drop(h);
        assert_eq!(Arc::strong_count(&topic), held, "freed with the last handle");
        // A clone lasts.
        let c = resolved_with(&topic);
        let d = c.clone();
        drop(c);
        assert_eq!(Arc::strong_count(&topic), held + 1);
        drop(d);
        assert_eq!(Arc::strong_count(&topic), held);
    }

    #[test]
    fn references_dropped_on_many_threads_free_the_completion_once() {
        let topic: Arc<str> = Arc::from("threads");
        let held = Arc::strong_count(&topic);
        for round in 0..200 {
            let c = resolved_with(&topic);
            let mut credits = c.credits(64);
            let mut per_thread: Vec<Vec<SendHandle>> = (0..4).map(|_| Vec::new()).collect();
            for i in 0..48u32 {
                per_thread[i as usize % 4].push(SendHandle::new(credits.take().unwrap(), i));
            }
            let clones: Vec<CompletionRef> = (0..4).map(|_| c.clone()).collect();
            std::thread::scope(|s| {
                for (handles, clone) in per_thread.into_iter().zip(clones) {
                    s.spawn(move || {
                        for h in &handles {
                            assert!(h.is_done());
                        }
                        drop(handles);
                        drop(clone);
                    });
                }
                // The owner's reference and the unused credits go while the threads run,
                // in either order.
                if round % 2 == 0 {
                    drop(credits);
                    drop(c);
                } else {
                    drop(c);
                    drop(credits);
                }
            });
            assert_eq!(Arc::strong_count(&topic), held, "round {round}: freed once, at the end");
        }
    }
}
