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
//! # Pipelining: the next fetch, and one more behind it
//!
//! A fetch of a queue starts where the previous reply ended (the broker returns whole stored
//! batches and says where its scan stopped), so a fetch that names its offset cannot be sent
//! before reply k is known. The reader reads where k+1 starts from reply k's batch headers
//! ([`next_offset_from_headers`]) and sends it at once, *before* it verifies k's checksums and
//! before the caller decodes k: the broker reads k+1 from its log and the network carries it
//! while this thread works on k. If verification then stops early (a damaged batch: the view
//! ends before it), the prefetched fetch is dropped and the reader fetches from where the view
//! ends, so nothing is skipped.
//!
//! While it is catching up (the last reply ended before the queue's end), the reader keeps a
//! FETCH_NEXT behind the current fetch (docs/protocol.md, "Fetch continued"): the broker
//! serves it from where the current fetch's answer ends, so two fetches of the queue are in
//! flight and the broker reads and sends k+1 while the client takes k. At the end of the queue
//! it does not: the next fetch is a long poll, and a second one behind it would only hold a
//! waiter slot and a buffer on the broker to wait for the same append. When reply k comes,
//! the FETCH_NEXT goes on as the current fetch if k's headers end where the broker's scan did
//! (the reader's next offset is the broker's); otherwise it is dropped, as are fetches ahead
//! of a seek, a failure or a timeout. A broker from before
//! FETCH_NEXT answers it UNSUPPORTED_API, and the reader then sends one fetch at a time
//! ([`QueueReader::with_fetch_next`] turns it off). A consumer of several queues keeps these
//! fetches per queue (one `QueueReader` each, swept with [`QueueReader::try_next`]).
//!
//! The next fetch is sent from the caller's thread, never from the connection's reader thread
//! in the reply callback: a write on the reader thread can block on a full socket send buffer
//! (a producer sharing the connection), and then nothing reads the broker's replies, the
//! broker stops reading the connection, and the write never finishes.
//!
//! # Bounds
//!
//! [`FetchWindow`] (pure: no I/O, time passed in) decides when to send: one current fetch,
//! one following it, and at most [`MAX_OUTSTANDING_FETCHES`] unanswered in all (fetches
//! abandoned by [`QueueReader::seek`] or a reply timeout still hold a buffer until their reply
//! comes). The
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

use super::connection::{Connection, FetchCallback, FetchReply};
use super::consumer::{broker_corrupt, PullConsumer, PullView};
use super::error::{ClientError, Result};
use crate::format::batch::read_header;
use crate::format::HEADER_LEN;
use crate::protocol::{ErrorCode, Request};

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
/// One fetch is *current*: the one for the reader's position. One more may *follow* it: a
/// FETCH_NEXT, which the broker serves from where the current one's answer ends, sent before
/// that answer comes. When the current answer is taken and the reader's next position is
/// where the broker's continuation starts, the following fetch becomes current; otherwise
/// (a batch failed verification, the caller seeks, the answer failed or came late) it is
/// dropped. A reply to any other fetch (abandoned or dropped) is stale. Sent fetches are
/// counted until their reply comes, so abandoned ones still bound how many more may be sent.
#[derive(Debug, Clone)]
pub struct FetchWindow {
    position: u64,
    next_id: u64,
    /// (id, sent at) of the current fetch.
    current: Option<(u64, Instant)>,
    /// (id, sent at) of the fetch continuing the current one.
    following: Option<(u64, Instant)>,
    outstanding: usize,
}

impl FetchWindow {
    pub fn new(position: u64) -> FetchWindow {
        FetchWindow { position, next_id: 0, current: None, following: None, outstanding: 0 }
    }

    /// Where the next batch handed to the caller starts.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Fetches sent and not yet answered (current, following and abandoned).
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    pub fn has_current(&self) -> bool {
        self.current.is_some()
    }

    /// The current fetch's id.
    pub fn current(&self) -> Option<u64> {
        self.current.map(|(id, _)| id)
    }

    /// The following fetch's id: its reply waits until it becomes current.
    pub fn following(&self) -> Option<u64> {
        self.following.map(|(id, _)| id)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding += 1;
        id
    }

    /// The fetch to send now, if any: none while the current one is unanswered, or while
    /// [`MAX_OUTSTANDING_FETCHES`] sent ones are.
    pub fn to_send(&mut self, now: Instant) -> Option<FetchTicket> {
        if self.current.is_some() || self.outstanding >= MAX_OUTSTANDING_FETCHES {
            return None;
        }
        let id = self.take_id();
        self.current = Some((id, now));
        Some(FetchTicket { id, offset: self.position })
    }

    /// The id of a fetch to send now continuing the current one, if any: none without a
    /// current fetch, while one follows it already, or while [`MAX_OUTSTANDING_FETCHES`] sent
    /// ones are unanswered.
    pub fn to_follow(&mut self, now: Instant) -> Option<u64> {
        if self.current.is_none()
            || self.following.is_some()
            || self.outstanding >= MAX_OUTSTANDING_FETCHES
        {
            return None;
        }
        let id = self.take_id();
        self.following = Some((id, now));
        Some(id)
    }

    /// The reply to fetch `id` came: whether it is the current one's (to deliver, from
    /// [`Self::position`]); a stale one is to be dropped. (A reply to the following fetch is
    /// held by the caller until that fetch is current.)
    pub fn on_reply(&mut self, id: u64) -> bool {
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.current.is_some_and(|(c, _)| c == id) {
            self.current = None;
            true
        } else {
            if self.following.is_some_and(|(f, _)| f == id) {
                self.following = None;
            }
            false
        }
    }

    /// The caller got everything before `next_offset`: the next fetch starts there. The
    /// following fetch becomes current if it `continues` there (it reads from where the
    /// broker's answer ended, and the reader goes on from that same offset), its wait counted
    /// from `now` (it waited for the answer before it on the broker); else it is dropped.
    pub fn advance(&mut self, next_offset: u64, continues: bool, now: Instant) {
        assert!(
            next_offset >= self.position,
            "a queue reader moves forward: {next_offset} < {}",
            self.position
        );
        assert!(self.current.is_none(), "advance with a fetch in flight for the old position");
        self.position = next_offset;
        if let Some((id, _)) = self.following.take() {
            if continues {
                self.current = Some((id, now));
            }
        }
    }

    /// Drops the following fetch (what it continues failed or was abandoned).
    pub fn drop_following(&mut self) {
        self.following = None;
    }

    /// Reads from `offset` next; the current and following fetches (if any) become stale.
    pub fn seek(&mut self, offset: u64) {
        self.current = None;
        self.following = None;
        self.position = offset;
    }

    /// Whether the current fetch has waited `limit` for its reply; it is then abandoned, and
    /// the one following it with it.
    pub fn abandon_if_late(&mut self, now: Instant, limit: Duration) -> bool {
        match self.current {
            Some((_, sent)) if now.saturating_duration_since(sent) >= limit => {
                self.current = None;
                self.following = None;
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
    /// Whether to send FETCH_NEXTs (off once the broker answered one UNSUPPORTED_API).
    follow: bool,
    /// Whether the last reply left the queue's end ahead of where it ended (the reader is
    /// catching up): only then does a FETCH_NEXT go behind the current fetch. At the end of
    /// the queue the next fetch is a long poll, and a second one behind it only waits too.
    behind: bool,
    /// The connection and correlation id of the current and the following fetch, by window
    /// id: a FETCH_NEXT names the current fetch on the connection that carries it.
    wire: [Option<(u64, Arc<Connection>, u32)>; 2],
    pool: Arc<BufferPool>,
    arrivals: Arc<Arrivals>,
}

impl QueueReader {
    pub(crate) fn new(consumer: PullConsumer, topic: &str, queue_id: u32, from: u64) -> Self {
        // Free buffers beyond the two fetches': the views a caller typically holds while the
        // next fetches are in flight.
        let pool = BufferPool::new(3, (consumer.max_bytes as usize).saturating_mul(2).max(1 << 16));
        QueueReader {
            consumer,
            topic: topic.to_owned(),
            queue_id,
            max_wait: Duration::from_millis(100),
            prefetch: true,
            window: FetchWindow::new(from),
            follow: true,
            behind: false,
            wire: [None, None],
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

    /// Whether to send the next fetch as soon as a batch is handed out, and one more behind
    /// it (default true); off, a fetch is sent only when the caller asks for the next batch.
    pub fn with_prefetch(mut self, prefetch: bool) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Whether to keep a second fetch in flight behind the current one while catching up
    /// (FETCH_NEXT; default true, with prefetch). Off, or against a broker from before
    /// FETCH_NEXT, one fetch is in flight at a time.
    pub fn with_fetch_next(mut self, follow: bool) -> Self {
        self.follow = follow;
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
            match self.wait_arrival(wait_until, self.window.following()) {
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

    /// Sends the fetch for the position if the window allows it, and (with prefetch) a
    /// FETCH_NEXT behind the current one.
    fn send_due(&mut self) {
        let now = Instant::now();
        if let Some(ticket) = self.window.to_send(now) {
            let request = self.consumer.fetch_request(
                &self.topic,
                self.queue_id,
                ticket.offset,
                self.max_wait,
            );
            self.wire[0] = self.send(ticket.id, &request, None);
        }
        if !(self.prefetch && self.follow && self.behind) {
            return;
        }
        let Some((at, conn, after)) = self.wire[0].clone() else { return };
        if self.window.current() != Some(at) {
            return;
        }
        let Some(id) = self.window.to_follow(now) else { return };
        let request = Request::FetchNext {
            after,
            max_bytes: self.consumer.max_bytes,
            max_wait_ms: self.max_wait.as_millis().min(u32::MAX as u128) as u32,
        };
        self.wire[1] = self.send(id, &request, Some(conn));
    }

    /// Sends fetch `id` (on `conn`, or the queue's connection); its reply goes to the
    /// arrivals. The connection and correlation id it went with, if it went.
    fn send(
        &self,
        id: u64,
        request: &Request,
        conn: Option<Arc<Connection>>,
    ) -> Option<(u64, Arc<Connection>, u32)> {
        let arrivals = self.arrivals.clone();
        let callback: FetchCallback = Box::new(move |reply| {
            lock(&arrivals.replies).push_back((id, reply));
            arrivals.ready.notify_one();
        });
        let conn = match conn {
            Some(c) => c,
            None => match self.consumer.router().queue_connection(&self.topic, self.queue_id) {
                Ok(c) => c,
                Err(e) => {
                    callback(Err(e));
                    return None;
                }
            },
        };
        // On a failed send the callback already ran with the error.
        let correlation = conn.send_fetch(request, self.pool.take(), callback).ok()?;
        Some((id, conn, correlation))
    }

    /// The next reply, waiting until `until` at most; the reply to fetch `hold` (the
    /// following one) stays queued until that fetch is current.
    fn wait_arrival(&self, until: Instant, hold: Option<u64>) -> Option<(u64, Result<FetchReply>)> {
        let mut replies = lock(&self.arrivals.replies);
        loop {
            if let Some(at) = replies.iter().position(|(id, _)| Some(*id) != hold) {
                return replies.remove(at);
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

    /// Sends the next fetch (from the reply's batch headers) unless one follows already,
    /// then verifies the reply into a view and moves the position past it. A view that ends
    /// elsewhere than the headers said (a batch failed verification: the view stops before
    /// it) drops the fetches sent ahead and fetches from where the view ends; a failure leaves
    /// the position where it was.
    fn deliver(&mut self, reply: Result<FetchReply>) -> Result<PullView> {
        let from = self.window.position();
        let view = match reply {
            Ok(r) => {
                if self.prefetch {
                    // Before the checksums and the caller's decoding: the broker reads the
                    // next batches meanwhile. The FETCH_NEXT sent behind this fetch reads
                    // from the answer's scan end: it goes on if the headers end there too.
                    let next = next_offset_from_headers(&r.batches, from, r.scan_end_offset);
                    let continues = next == r.scan_end_offset;
                    self.behind = r.scan_end_offset < r.next_offset;
                    self.window.advance(next, continues, Instant::now());
                    self.wire = [self.wire[1].take(), None];
                    self.send_due();
                }
                self.consumer.view_of(&self.topic, self.queue_id, from, r, Some(self.pool.clone()))
            }
            Err(e) => {
                // What followed this fetch cannot go on from it.
                self.window.drop_following();
                self.wire[1] = None;
                let chain = matches!(
                    e.code(),
                    Some(ErrorCode::FETCH_CHAIN_BROKEN | ErrorCode::UNSUPPORTED_API)
                );
                if e.code() == Some(ErrorCode::UNSUPPORTED_API) {
                    // A broker from before FETCH_NEXT: one fetch at a time from now on.
                    self.follow = false;
                }
                if chain || e.is_retriable() {
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
                } else {
                    Err(broker_corrupt(&self.topic, self.queue_id, e))
                }
            }
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
mod tests;
