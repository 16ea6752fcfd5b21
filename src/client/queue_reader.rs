//! The pipelined queue reader: one queue read in offset order, the next fetch in flight while
//! the caller reads the current batch, fetch buffers reused.
//!
//! [`QueueReader`] (from [`PullConsumer::stream`]) runs on the caller's thread; the reply of
//! its fetch is copied by the connection's reader thread into a buffer lent from the reader's
//! [`BufferPool`] ([`Connection::send_fetch`](super::connection::Connection::send_fetch)), and
//! a [`PullView`] built on that buffer gives it back to the pool when it is dropped. A steady
//! consumer therefore allocates no fetch buffer after its first few batches, and decodes no
//! message into an allocation of its own ([`PullView::messages`] borrows).
//!
//! # Pipelining, and why one fetch per queue
//!
//! A fetch of a queue starts where the previous reply ended (the broker returns whole stored
//! batches and says where its scan stopped), so fetch k+1 cannot be sent before reply k is
//! known. The reader reads where k+1 starts from reply k's batch headers
//! ([`next_offset_from_headers`]) and sends it at once, *before* it verifies k's checksums and
//! before the caller decodes k: the broker reads k+1 from its log and the network carries it
//! while this thread works on k. If verification then stops early (a damaged batch: the view
//! ends before it), the prefetched fetch is dropped and the reader fetches from where the view
//! ends, so nothing is skipped. A consumer of several queues keeps one fetch in flight per
//! queue (one `QueueReader` each, swept with [`QueueReader::try_next`]).
//!
//! The next fetch is sent from the caller's thread, never from the connection's reader thread
//! in the reply callback: a write on the reader thread can block on a full socket send buffer
//! (a producer sharing the connection), and then nothing reads the broker's replies, the
//! broker stops reading the connection, and the write never finishes.
//!
//! # Bounds
//!
//! [`FetchWindow`] (pure: no I/O, time passed in) decides when to send: one current fetch,
//! and at most [`MAX_OUTSTANDING_FETCHES`] unanswered in all (fetches abandoned by
//! [`QueueReader::seek`] or a reply timeout still hold a buffer until their reply comes). The
//! pool keeps at most `pool_buffers` free buffers of at most `max_pooled_buffer_bytes` each.
//! So a reader holds at most `MAX_OUTSTANDING_FETCHES + pool_buffers` buffers, plus the views
//! its caller keeps, each about `max_bytes` of the consumer (the broker's reply holds at most
//! `max_bytes`, or one stored batch when a single batch is larger).
//!
//! # Failures
//!
//! As [`PullConsumer::pull_view`]: a retriable failure of the pipelined fetch (connection
//! lost, NOT_OWNER, SHUTTING_DOWN, no reply within the request timeout) is retried with the
//! pull's backoff on the caller's thread, then pipelining resumes; a corrupt batch at the
//! reader's position is `CorruptData` every time until the caller [`QueueReader::seek`]s past
//! it; batches before a corrupt one are delivered first.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::connection::{FetchCallback, FetchReply};
use super::consumer::{broker_corrupt, PullConsumer, PullView};
use super::error::{ClientError, Result};
use crate::format::batch::read_header;
use crate::format::HEADER_LEN;
use crate::protocol::ErrorCode;

/// Fetches of one reader sent and not yet answered, the current one included.
pub const MAX_OUTSTANDING_FETCHES: usize = 4;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fetch buffers to reuse: taken for a fetch, given back when its view is dropped.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_buffers: usize,
    max_buffer_bytes: usize,
}

impl BufferPool {
    /// Keeps at most `max_buffers` free buffers, none with a capacity above
    /// `max_buffer_bytes` (a rare oversized reply does not pin its memory).
    pub fn new(max_buffers: usize, max_buffer_bytes: usize) -> BufferPool {
        BufferPool { free: Mutex::new(Vec::new()), max_buffers, max_buffer_bytes }
    }

    /// A free buffer (empty, capacity kept), or a new empty one.
    pub fn take(&self) -> Vec<u8> {
        lock(&self.free).pop().unwrap_or_default()
    }

    /// Gives `buffer` back; it is kept if the pool has room and it is not oversized.
    pub fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > self.max_buffer_bytes {
            return;
        }
        buffer.clear();
        let mut free = lock(&self.free);
        if free.len() < self.max_buffers {
            free.push(buffer);
        }
    }

    /// Free buffers held now.
    pub fn free_buffers(&self) -> usize {
        lock(&self.free).len()
    }

    /// Bytes of capacity the free buffers hold.
    pub fn free_bytes(&self) -> usize {
        lock(&self.free).iter().map(Vec::capacity).sum()
    }
}

/// A fetch the window allowed: send it with this id, from this offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchTicket {
    pub id: u64,
    pub offset: u64,
}

/// When a reader sends its fetches (pure state: no I/O, time passed in).
///
/// One fetch is *current*: the one for the reader's position. A reply to any other fetch
/// (abandoned by a seek or a timeout) is stale and dropped. Sent fetches are counted until
/// their reply comes, so abandoned ones still bound how many more may be sent.
#[derive(Debug, Clone)]
pub struct FetchWindow {
    position: u64,
    next_id: u64,
    /// (id, sent at) of the current fetch.
    current: Option<(u64, Instant)>,
    outstanding: usize,
}

impl FetchWindow {
    pub fn new(position: u64) -> FetchWindow {
        FetchWindow { position, next_id: 0, current: None, outstanding: 0 }
    }

    /// Where the next batch handed to the caller starts.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Fetches sent and not yet answered (current and abandoned).
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    pub fn has_current(&self) -> bool {
        self.current.is_some()
    }

    /// The fetch to send now, if any: none while the current one is unanswered, or while
    /// [`MAX_OUTSTANDING_FETCHES`] abandoned ones are.
    pub fn to_send(&mut self, now: Instant) -> Option<FetchTicket> {
        if self.current.is_some() || self.outstanding >= MAX_OUTSTANDING_FETCHES {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.current = Some((id, now));
        self.outstanding += 1;
        Some(FetchTicket { id, offset: self.position })
    }

    /// The reply to fetch `id` came: whether it is the current one's (to deliver, from
    /// [`Self::position`]); a stale one is to be dropped.
    pub fn on_reply(&mut self, id: u64) -> bool {
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.current.is_some_and(|(c, _)| c == id) {
            self.current = None;
            true
        } else {
            false
        }
    }

    /// The caller got everything before `next_offset`: the next fetch starts there.
    pub fn advance(&mut self, next_offset: u64) {
        assert!(
            next_offset >= self.position,
            "a queue reader moves forward: {next_offset} < {}",
            self.position
        );
        assert!(self.current.is_none(), "advance with a fetch in flight for the old position");
        self.position = next_offset;
    }

    /// Reads from `offset` next; the current fetch (if any) becomes stale.
    pub fn seek(&mut self, offset: u64) {
        self.current = None;
        self.position = offset;
    }

    /// Whether the current fetch has waited `limit` for its reply; it is then abandoned.
    pub fn abandon_if_late(&mut self, now: Instant, limit: Duration) -> bool {
        match self.current {
            Some((_, sent)) if now.saturating_duration_since(sent) >= limit => {
                self.current = None;
                true
            }
            _ => false,
        }
    }

    /// When the current fetch times out, if one is unanswered.
    pub fn deadline(&self, limit: Duration) -> Option<Instant> {
        self.current.map(|(_, sent)| sent + limit)
    }
}

/// Replies handed from the connection's reader thread to the reader: at most one per sent
/// fetch, so at most [`MAX_OUTSTANDING_FETCHES`].
struct Arrivals {
    replies: Mutex<VecDeque<(u64, Result<FetchReply>)>>,
    ready: Condvar,
}

/// Reads one queue in offset order with the next fetch pipelined (see the module docs).
/// Made by [`PullConsumer::stream`].
pub struct QueueReader {
    consumer: PullConsumer,
    topic: String,
    queue_id: u32,
    max_wait: Duration,
    prefetch: bool,
    window: FetchWindow,
    pool: Arc<BufferPool>,
    arrivals: Arc<Arrivals>,
}

impl QueueReader {
    pub(crate) fn new(consumer: PullConsumer, topic: &str, queue_id: u32, from: u64) -> Self {
        // Free buffers beyond the current fetch's: the views a caller typically holds while
        // the next fetch is in flight.
        let pool = BufferPool::new(2, (consumer.max_bytes as usize).saturating_mul(2).max(1 << 16));
        QueueReader {
            consumer,
            topic: topic.to_owned(),
            queue_id,
            max_wait: Duration::from_millis(100),
            prefetch: true,
            window: FetchWindow::new(from),
            pool: Arc::new(pool),
            arrivals: Arc::new(Arrivals {
                replies: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
            }),
        }
    }

    /// How long a fetch at the end of the queue waits for new messages (long poll). Default
    /// 100 ms; zero answers at once.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Whether to send the next fetch as soon as a batch is handed out (default true); off,
    /// a fetch is sent only when the caller asks for the next batch.
    pub fn with_prefetch(mut self, prefetch: bool) -> Self {
        self.prefetch = prefetch;
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Where the next batch starts: after everything handed out so far.
    pub fn position(&self) -> u64 {
        self.window.position()
    }

    /// The pool the reader's fetch buffers return to.
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Fetches sent and not yet answered (see [`FetchWindow`]).
    pub fn outstanding_fetches(&self) -> usize {
        self.window.outstanding()
    }

    /// Reads from `offset` next (e.g. past a corrupt batch); what was fetched ahead is
    /// dropped.
    pub fn seek(&mut self, offset: u64) {
        self.window.seek(offset);
    }

    /// The next batch, if its reply came within `timeout`: in offset order, starting at
    /// [`Self::position`]. Its messages may be none (nothing new within the long poll, or
    /// everything filtered out by tags); [`PullView::next_offset`] is the new position.
    /// `Ok(None)`: no reply yet (the fetch stays in flight for the next call).
    pub fn next_batch(&mut self, timeout: Duration) -> Result<Option<PullView>> {
        let deadline = Instant::now() + timeout;
        let reply_limit = self.consumer.router().options.request_timeout + self.max_wait;
        loop {
            self.send_due();
            let wait_until = match self.window.deadline(reply_limit) {
                Some(late) => late.min(deadline),
                None => deadline,
            };
            match self.wait_arrival(wait_until) {
                Some((id, reply)) => {
                    if self.window.on_reply(id) {
                        return self.deliver(reply).map(Some);
                    }
                    // Stale (after a seek or a timeout): only its buffer is of use.
                    if let Ok(r) = reply {
                        self.pool.give(r.batches);
                    }
                }
                None => {
                    let now = Instant::now();
                    if self.window.abandon_if_late(now, reply_limit) {
                        let late = ClientError::Timeout(reply_limit.as_millis() as u64);
                        return self.deliver(Err(late)).map(Some);
                    }
                    if now >= deadline {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// [`Self::next_batch`] without waiting: a batch whose reply already came, else `None`
    /// (sending the fetch for the position if none is in flight).
    pub fn try_next(&mut self) -> Result<Option<PullView>> {
        self.next_batch(Duration::ZERO)
    }

    /// Sends the fetch for the position if the window allows it.
    fn send_due(&mut self) {
        let Some(ticket) = self.window.to_send(Instant::now()) else { return };
        let request =
            self.consumer.fetch_request(&self.topic, self.queue_id, ticket.offset, self.max_wait);
        let arrivals = self.arrivals.clone();
        let callback: FetchCallback = Box::new(move |reply| {
            lock(&arrivals.replies).push_back((ticket.id, reply));
            arrivals.ready.notify_one();
        });
        match self.consumer.router().queue_connection(&self.topic, self.queue_id) {
            // On a failed send the callback already ran with the error.
            Ok(conn) => {
                let _ = conn.send_fetch(&request, self.pool.take(), callback);
            }
            Err(e) => callback(Err(e)),
        }
    }

    /// The next reply, waiting until `until` at most.
    fn wait_arrival(&self, until: Instant) -> Option<(u64, Result<FetchReply>)> {
        let mut replies = lock(&self.arrivals.replies);
        loop {
            if let Some(r) = replies.pop_front() {
                return Some(r);
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            replies = self
                .arrivals
                .ready
                .wait_timeout(replies, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Sends the next fetch (from the reply's batch headers), then verifies the reply into a
    /// view and moves the position past it. A view that ends elsewhere than the headers said
    /// (a batch failed verification: the view stops before it) drops the prefetched fetch and
    /// fetches from where the view ends; a failure leaves the position where it was.
    fn deliver(&mut self, reply: Result<FetchReply>) -> Result<PullView> {
        let from = self.window.position();
        let view = match reply {
            Ok(r) => {
                if self.prefetch {
                    // Before the checksums and the caller's decoding: the broker reads the
                    // next batches meanwhile.
                    let next = next_offset_from_headers(&r.batches, from, r.scan_end_offset);
                    self.window.advance(next);
                    self.send_due();
                }
                self.consumer.view_of(&self.topic, self.queue_id, from, r, Some(self.pool.clone()))
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!(
                    topic = %self.topic,
                    queue = self.queue_id,
                    "pipelined fetch failed ({e}); retrying as a pull"
                );
                if matches!(e.code(), Some(ErrorCode::NOT_OWNER)) || e.code().is_none() {
                    self.consumer.router().refresh(&self.topic);
                }
                // The pull's backoff, reconnects and route refreshes, on this thread.
                self.consumer.pull_view(&self.topic, self.queue_id, from, self.max_wait)
            }
            Err(e) => Err(broker_corrupt(&self.topic, self.queue_id, e)),
        };
        match view {
            Ok(view) => {
                if self.window.position() != view.next_offset {
                    self.window.seek(view.next_offset);
                }
                if self.prefetch {
                    self.send_due();
                }
                Ok(view)
            }
            Err(e) => {
                self.window.seek(from);
                Err(e)
            }
        }
    }
}

/// Where the fetch after `batches` (a reply to a fetch from `from`) starts if every batch
/// verifies, read from the batch headers alone, without checksums: after the last batch, or
/// where the broker's scan ended when that is further (as the pull settles it). A header that
/// does not parse ends the walk there (verification will stop there too).
pub fn next_offset_from_headers(mut batches: &[u8], from: u64, scan_end_offset: u64) -> u64 {
    let mut next = from;
    while !batches.is_empty() {
        let Ok(h) = read_header(batches) else { return next };
        let len = h.length as usize;
        let end = h.stamp.base_offset.checked_add(u64::from(h.record_count));
        let Some(end) = end.filter(|_| (HEADER_LEN..=batches.len()).contains(&len)) else {
            return next;
        };
        next = next.max(end);
        batches = &batches[len..];
    }
    next.max(scan_end_offset)
}

#[cfg(test)]
mod tests {
    //! The window and the pool without sockets; `tests/broker_e2e/` reads real queues.

    use super::*;

    #[test]
    fn one_current_fetch_from_the_position_and_the_next_only_after_advancing() {
        let t0 = Instant::now();
        let mut w = FetchWindow::new(10);
        let a = w.to_send(t0).unwrap();
        assert_eq!(a.offset, 10);
        assert_eq!(w.to_send(t0), None, "the next offset is unknown until the reply");
        assert!(w.on_reply(a.id));
        w.advance(25);
        let b = w.to_send(t0).unwrap();
        assert_eq!((b.offset, w.outstanding()), (25, 1));
        assert_ne!(a.id, b.id);
        // An empty reply leaves the position where it was: the same offset again.
        assert!(w.on_reply(b.id));
        w.advance(25);
        assert_eq!(w.to_send(t0).unwrap().offset, 25);
    }

    #[test]
    fn replies_to_abandoned_fetches_are_stale_and_outstanding_fetches_are_bounded() {
        let t0 = Instant::now();
        let mut w = FetchWindow::new(0);
        let mut abandoned = Vec::new();
        for i in 0..MAX_OUTSTANDING_FETCHES as u64 {
            let f = w.to_send(t0).expect("room");
            assert_eq!(f.offset, i * 100);
            abandoned.push(f.id);
            w.seek((i + 1) * 100);
        }
        // Every seek left one fetch unanswered: no more may be sent.
        assert_eq!(w.outstanding(), MAX_OUTSTANDING_FETCHES);
        assert_eq!(w.to_send(t0), None);
        assert!(!w.on_reply(abandoned[0]), "stale reply delivered");
        let f = w.to_send(t0).expect("a stale reply freed room");
        assert_eq!(f.offset, MAX_OUTSTANDING_FETCHES as u64 * 100);
        for id in &abandoned[1..] {
            assert!(!w.on_reply(*id));
        }
        assert!(w.on_reply(f.id));
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn a_late_reply_abandons_the_fetch() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(2);
        let mut w = FetchWindow::new(5);
        let f = w.to_send(t0).unwrap();
        assert_eq!(w.deadline(limit), Some(t0 + limit));
        assert!(!w.abandon_if_late(t0 + limit - Duration::from_millis(1), limit));
        assert!(w.abandon_if_late(t0 + limit, limit));
        assert_eq!(w.deadline(limit), None);
        // The position stays; a new fetch may go while the late one is still counted.
        let g = w.to_send(t0 + limit).unwrap();
        assert_eq!((g.offset, w.outstanding()), (5, 2));
        assert!(!w.on_reply(f.id));
        assert!(w.on_reply(g.id));
    }

    #[test]
    #[should_panic(expected = "moves forward")]
    fn the_position_never_moves_back() {
        let mut w = FetchWindow::new(7);
        w.advance(6);
    }

    fn stored_batch(base: u64, n: usize) -> Vec<u8> {
        use crate::format::batch::stamp;
        use crate::format::{BatchBuilder, Record, Stamp};
        let mut b = BatchBuilder::new(1 << 16);
        for _ in 0..n {
            let r = Record { key: b"", tag: b"", properties: &[], body: b"x", timestamp_ms: 1 };
            b.push(&r).unwrap();
        }
        let mut bytes = b.finish(-1, -1);
        let s =
            Stamp { topic_id: 1, queue_id: 0, base_offset: base, store_timestamp_ms: 2, epoch: 0 };
        stamp(&mut bytes, &s);
        bytes
    }

    #[test]
    fn the_next_fetch_offset_from_headers_is_where_the_verified_pull_ends() {
        use crate::client::consumer::scan_batches;
        let mut bytes = stored_batch(3, 4);
        bytes.extend(stored_batch(7, 2));
        // What the pull settles for clean batches: after the last one, or the scan's end.
        let scan = scan_batches(&bytes, 5, &[]);
        assert_eq!((scan.next_offset, scan.corrupt), (9, None));
        assert_eq!(next_offset_from_headers(&bytes, 5, 0), 9);
        assert_eq!(next_offset_from_headers(&bytes, 5, 12), 12, "the broker skipped past them");
        assert_eq!(next_offset_from_headers(&[], 5, 5), 5, "nothing new");
        // A header that does not parse, a length past the end, an offset that overflows: the
        // walk stops before it (and verification stops there too).
        let mut torn = bytes.clone();
        torn.extend_from_slice(&[0xAB; 100]);
        assert_eq!(next_offset_from_headers(&torn, 5, 50), 9);
        let first_len = stored_batch(3, 4).len();
        let mut short = bytes.clone();
        short.truncate(first_len + 10);
        assert_eq!(next_offset_from_headers(&short, 5, 50), 7);
        let mut huge = stored_batch(u64::MAX - 1, 4);
        huge.extend(stored_batch(9, 1));
        assert_eq!(next_offset_from_headers(&huge, 0, 0), 0);
    }

    #[test]
    fn the_pool_reuses_buffers_and_holds_a_bounded_number_of_bounded_size() {
        let pool = BufferPool::new(2, 1 << 20);
        let mut a = pool.take();
        a.extend_from_slice(&[1; 4096]);
        let a_ptr = a.as_ptr();
        pool.give(a);
        let again = pool.take();
        assert_eq!(again.as_ptr(), a_ptr, "the same allocation comes back");
        assert!(again.is_empty() && again.capacity() >= 4096);
        // Never more than max_buffers kept.
        for _ in 0..5 {
            pool.give(vec![0u8; 1024]);
        }
        assert_eq!(pool.free_buffers(), 2);
        assert!(pool.free_bytes() <= 2 * 1024 * 2);
        // An oversized buffer is let go, and an empty one is not worth keeping.
        let _ = pool.take();
        let _ = pool.take();
        pool.give(Vec::with_capacity(2 << 20));
        pool.give(Vec::new());
        assert_eq!(pool.free_buffers(), 0);
    }

    #[test]
    fn a_steady_reader_cycles_a_bounded_set_of_buffers() {
        // The reader's cycle without sockets: take a buffer per fetch, hand a view out,
        // the caller drops it before asking for the next one (as a streaming loop does).
        let pool = Arc::new(BufferPool::new(2, 1 << 20));
        let mut w = FetchWindow::new(0);
        let t0 = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let mut held: Option<Vec<u8>> = None;
        let mut in_flight: Option<(FetchTicket, Vec<u8>)> = None;
        for step in 0..1000u64 {
            if in_flight.is_none() {
                let t = w.to_send(t0).expect("a fetch per step");
                in_flight = Some((t, pool.take()));
            }
            let (t, mut buf) = in_flight.take().unwrap();
            buf.clear();
            buf.extend_from_slice(&step.to_le_bytes().repeat(512));
            seen.insert(buf.as_ptr() as usize);
            assert!(w.on_reply(t.id));
            assert_eq!(t.offset, step * 10, "in order, no gap, no repeat");
            w.advance(t.offset + 10);
            // Prefetch before the caller reads the batch.
            let next = w.to_send(t0).unwrap();
            in_flight = Some((next, pool.take()));
            if let Some(old) = held.replace(buf) {
                pool.give(old);
            }
            assert!(w.outstanding() <= 1);
            assert!(pool.free_buffers() <= 2);
        }
        assert!(seen.len() <= 3, "{} distinct buffers for 1000 fetches", seen.len());
    }
}
