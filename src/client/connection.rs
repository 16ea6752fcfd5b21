//! One TCP connection to one broker port, with many requests in flight.
//!
//! Callers on any thread write whole request frames (under a mutex: the client is not the
//! broker's data path); a reader thread matches response frames to requests by correlation id
//! and completes them. At most `max_in_flight` requests wait for replies at once; a sender
//! blocks for room (backpressure). When the connection breaks, every waiting request fails
//! with `Disconnected` and the connection is marked dead (the router makes a new one).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::error::{ClientError, Result};
use super::pending::{pending, Completer, Pending};
use super::send_handle::{BatchStored, CompletionRef};
use crate::protocol::codec::Reader;
use crate::protocol::frame::{check_response, split_response, Check};
use crate::protocol::produce_multi;
use crate::protocol::read_buffer::ReadBuffer;
use crate::protocol::{ApiKey, ErrorCode, ErrorResponse, Request, Response};

/// A reply callback, run on the connection's reader thread; keep it short.
pub type Callback = Box<dyn FnOnce(Result<Response>) + Send>;

/// A FETCH reply decoded into a buffer the caller lent ([`Connection::send_fetch`]).
#[derive(Debug)]
pub struct FetchReply {
    pub min_offset: u64,
    pub next_offset: u64,
    pub scan_end_offset: u64,
    /// The stored batches, in the lent buffer (its capacity reused).
    pub batches: Vec<u8>,
}

/// A FETCH reply callback, run on the connection's reader thread; keep it short.
pub type FetchCallback = Box<dyn FnOnce(Result<FetchReply>) + Send>;

/// A produce request for [`Connection::send_produces`]: its batch is written from its own
/// buffer, or copied with other small frames into one gathered write.
pub(crate) struct ProduceFrame {
    pub(crate) topic: Arc<str>,
    pub(crate) queue_id: u32,
    pub(crate) batch: Arc<Vec<u8>>,
    pub(crate) reply: ProduceReply,
}

/// Which send of which batch a produce reply answers: the producer's own numbering, handed
/// back with the reply untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyTag {
    pub(crate) queue: usize,
    pub(crate) attempt: u64,
    /// The sequencer's epoch (`client::sequencer::generation` and `wire_epoch`).
    pub(crate) epoch: u32,
    pub(crate) base_sequence: i32,
}

/// A producer's end of its produce requests' replies. One per producer, shared by its
/// requests: a reply costs no allocation (a boxed callback per batch was 3% of the load
/// generator's core in many-queues, mostly `malloc` on the worker's thread for memory freed on
/// the reader's).
pub(crate) trait ReplySink: Send + Sync {
    /// Hands over one reply; must not wake anyone.
    fn deliver(&self, tag: ReplyTag, result: Result<Response>);
    /// Tells the producer that replies were delivered.
    fn wake(&self);
}

/// Where a produce request's reply goes: the reader thread delivers every reply it found in
/// one read before it wakes each producer once: woken per reply, a producer's worker on the
/// same core ran once per reply and wrote one request per run (many-queues: one `writev` and
/// two futex calls per batch of two messages).
pub(crate) struct ProduceReply {
    pub(crate) sink: Arc<dyn ReplySink>,
    pub(crate) tag: ReplyTag,
    /// The `send_async` handles of the batch, resolved by whoever reads a "stored" reply,
    /// before the producer's worker hears of it (see [`EarlyAck`]).
    pub(crate) early: Option<EarlyAck>,
}

/// The per-message handles of a batch in flight, with the topic their results name.
///
/// A reply that says the batch is stored resolves them on the thread that read it: the
/// caller's ack then waits for one thread (the connection's reader) instead of two (the
/// reader, then the producer's worker), each of which can wait for the CPU behind the other
/// threads of a busy core. Only "stored" is final here; failures, retries and the memory bound
/// stay with the worker, whose own resolution of the same batch later keeps this first
/// outcome (`BatchCompletion::complete`). A stored reply is the truth about the bytes it
/// answers even when the worker ignores it (a copy renumbered since, and stored again).
pub(crate) struct EarlyAck {
    pub(crate) handles: CompletionRef,
    pub(crate) topic: Arc<str>,
}

impl ProduceReply {
    /// Delivers `result` and wakes the producer.
    pub(crate) fn complete(self, result: Result<Response>) {
        self.ack_early(&result);
        self.sink.deliver(self.tag, result);
        self.sink.wake();
    }

    /// Delivers `result`; its producer goes on `wakes`.
    fn deliver(self, result: Result<Response>, wakes: &mut Wakes) {
        self.ack_early(&result);
        self.sink.deliver(self.tag, result);
        wakes.add(self.sink);
    }

    fn ack_early(&self, result: &Result<Response>) {
        let (Some(early), Ok(Response::Produce { status, topic_id, queue_id, base_offset, .. })) =
            (&self.early, result)
        else {
            return;
        };
        early.handles.complete(Ok(BatchStored {
            status: *status,
            topic: early.topic.clone(),
            topic_id: *topic_id,
            queue_id: *queue_id,
            base_offset: *base_offset,
        }));
    }
}

/// The producers to wake once the replies at hand are delivered, each once.
#[derive(Default)]
struct Wakes(Vec<Arc<dyn ReplySink>>);

impl Wakes {
    fn add(&mut self, sink: Arc<dyn ReplySink>) {
        if !self.0.iter().any(|w| Arc::ptr_eq(w, &sink)) {
            self.0.push(sink);
        }
    }

    fn run(&mut self) {
        for sink in self.0.drain(..) {
            sink.wake();
        }
    }
}

/// Batches smaller than this, two or more in one call, go together in PRODUCE_MULTI requests
/// (a request per batch cost both ends more than the batch when batches hold a few messages:
/// many queues, short linger); larger ones each in a PRODUCE of their own.
const MULTI_BELOW_BYTES: usize = GATHER_BELOW_BYTES;
/// A PRODUCE_MULTI carries at most this many bytes of entries (well under any sane
/// `max_frame_bytes`) and this many entries.
const MULTI_MAX_BYTES: usize = 256 * 1024;
const MULTI_MAX_ENTRIES: usize = 1024;

enum Waiter {
    Pending(ApiKey, Completer<Result<Response>>),
    Callback(ApiKey, Callback),
    /// A produce request's reply, its producer woken by whoever completes it.
    Produce(ProduceReply),
    /// A PRODUCE_MULTI's replies, one per entry in its order.
    ProduceMulti(Vec<ProduceReply>),
    /// A fetch whose batches are copied into `buffer` instead of a new allocation.
    Fetch(Vec<u8>, FetchCallback),
}

impl Waiter {
    fn complete_err(self, e: ClientError) {
        match self {
            Waiter::Pending(_, c) => c.complete(Err(e)),
            Waiter::Callback(_, f) => f(Err(e)),
            Waiter::Produce(reply) => reply.complete(Err(e)),
            Waiter::ProduceMulti(replies) => {
                let mut wakes = Wakes::default();
                for r in replies {
                    r.deliver(Err(e.clone()), &mut wakes);
                }
                wakes.run();
            }
            Waiter::Fetch(_, f) => f(Err(e)),
        }
    }

    /// Decodes the reply frame's payload for this waiter and completes it; a produce reply's
    /// producer goes on `wakes` instead of being woken here.
    fn finish(self, error_code: u16, payload: &[u8], wakes: &mut Wakes, inner: &Inner) {
        let ok = error_code == ErrorCode::NONE as u16;
        let refused = || match ErrorResponse::decode(error_code, payload) {
            Ok(e) => ClientError::from_response(e),
            Err(e) => ClientError::Protocol(e.to_string()),
        };
        let decode = |api| {
            if !ok {
                return Err(refused());
            }
            Response::decode(api, payload).map_err(|e| ClientError::Protocol(e.to_string()))
        };
        match self {
            Waiter::Pending(api, c) => c.complete(decode(api)),
            Waiter::Callback(api, f) => f(decode(api)),
            Waiter::Produce(reply) => reply.deliver(decode(ApiKey::Produce), wakes),
            Waiter::ProduceMulti(replies) => {
                let results = match decode(ApiKey::ProduceMulti) {
                    Ok(Response::ProduceMulti { results }) if results.len() == replies.len() => {
                        Ok(results)
                    }
                    Ok(Response::ProduceMulti { results }) => Err(ClientError::Protocol(format!(
                        "PRODUCE_MULTI of {} batches answered with {} results",
                        replies.len(),
                        results.len()
                    ))),
                    Ok(other) => Err(ClientError::Protocol(format!(
                        "PRODUCE_MULTI got a {:?} reply",
                        other.api_key()
                    ))),
                    Err(e) if e.code() == Some(ErrorCode::UNSUPPORTED_API) => {
                        // A broker from before PRODUCE_MULTI: this connection sends PRODUCEs
                        // from now on, and the batches are resent (retriable, idempotent).
                        inner.no_multi.store(true, Ordering::Relaxed);
                        Err(ClientError::Io {
                            addr: inner.addr.clone(),
                            reason: format!("{e}; resending as single PRODUCE requests"),
                        })
                    }
                    Err(e) => Err(e),
                };
                match results {
                    Ok(results) => {
                        for (r, result) in replies.into_iter().zip(results) {
                            r.deliver(result.map_err(ClientError::from_response), wakes);
                        }
                    }
                    Err(e) => {
                        for r in replies {
                            r.deliver(Err(e.clone()), wakes);
                        }
                    }
                }
            }
            Waiter::Fetch(buffer, f) if ok => f(decode_fetch_into(payload, buffer)),
            Waiter::Fetch(_, f) => f(Err(refused())),
        }
    }
}

/// The FETCH success payload (as `Response::decode` reads it), its batches copied into
/// `buffer`.
fn decode_fetch_into(payload: &[u8], mut buffer: Vec<u8>) -> Result<FetchReply> {
    let mut r = Reader::new(payload);
    let head = (|| {
        let min_offset = r.u64("min_offset")?;
        let next_offset = r.u64("next_offset")?;
        let scan_end_offset = r.u64("scan_end_offset")?;
        let batches = r.bytes("batches")?;
        Ok::<_, crate::protocol::DecodeError>((min_offset, next_offset, scan_end_offset, batches))
    })();
    let (min_offset, next_offset, scan_end_offset, batches) =
        head.map_err(|e| ClientError::Protocol(e.to_string()))?;
    r.finish().map_err(|e| ClientError::Protocol(e.to_string()))?;
    buffer.clear();
    buffer.extend_from_slice(batches);
    Ok(FetchReply { min_offset, next_offset, scan_end_offset, batches: buffer })
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Requests one connection keeps waiting for replies; a sender waits for room beyond it.
    /// Default 256, the broker's default `max_in_flight_per_connection` (the broker bounds
    /// the bytes of what is in flight too, so small requests pipeline deeply while large
    /// ones stop at its byte bound). A producer's bytes are bounded by its own buffer.
    pub max_in_flight: usize,
    pub max_frame_bytes: usize,
    pub connect_timeout: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            max_in_flight: 256,
            max_frame_bytes: crate::protocol::DEFAULT_MAX_FRAME_BYTES,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

struct State {
    waiters: HashMap<u32, Waiter>,
    /// Senders waiting on `room`: a reply notifies only when there are some (a notify is a
    /// futex call even with no one waiting, and replies come by the tens of thousands a second).
    waiting_for_room: usize,
    dead: bool,
}

struct Inner {
    addr: String,
    writer: Mutex<TcpStream>,
    state: Mutex<State>,
    room: Condvar,
    next_id: AtomicU32,
    alive: AtomicBool,
    max_in_flight: usize,
    /// The broker answered PRODUCE_MULTI with UNSUPPORTED_API: send single PRODUCEs.
    no_multi: AtomicBool,
}

pub struct Connection {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    /// Connects to `addr` ("host:port") and starts the reader thread.
    pub fn connect(addr: &str, opts: &ConnectionOptions) -> Result<Connection> {
        use std::net::ToSocketAddrs;
        let io = |reason: String| ClientError::Io { addr: addr.to_owned(), reason };
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| io(e.to_string()))?
            .next()
            .ok_or_else(|| io("address resolves to nothing".into()))?;
        let stream = TcpStream::connect_timeout(&sock, opts.connect_timeout)
            .map_err(|e| io(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| io(e.to_string()))?;
        let reader = stream.try_clone().map_err(|e| io(e.to_string()))?;
        let inner = Arc::new(Inner {
            addr: addr.to_owned(),
            writer: Mutex::new(stream),
            state: Mutex::new(State { waiters: HashMap::new(), waiting_for_room: 0, dead: false }),
            room: Condvar::new(),
            next_id: AtomicU32::new(1),
            alive: AtomicBool::new(true),
            max_in_flight: opts.max_in_flight.max(1),
            no_multi: AtomicBool::new(false),
        });
        let for_reader = inner.clone();
        let max_frame = opts.max_frame_bytes;
        std::thread::Builder::new()
            .name(format!("ringmq-conn-{addr}"))
            .spawn(move || read_loop(for_reader, reader, max_frame))
            .map_err(|e| io(format!("cannot start reader thread: {e}")))?;
        Ok(Connection { inner })
    }

    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    pub fn is_alive(&self) -> bool {
        self.inner.alive.load(Ordering::Acquire)
    }

    fn register(&self, waiter: Option<Waiter>) -> Result<u32> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut st = lock(&self.inner.state);
        if let Some(w) = waiter {
            while !st.dead && st.waiters.len() >= self.inner.max_in_flight {
                st.waiting_for_room += 1;
                st = self.inner.room.wait(st).unwrap_or_else(|p| p.into_inner());
                st.waiting_for_room -= 1;
            }
            if st.dead {
                drop(st);
                // Every waiter is completed exactly once, also when it was never sent.
                let e = ClientError::Disconnected(self.inner.addr.clone());
                w.complete_err(e.clone());
                return Err(e);
            }
            st.waiters.insert(id, w);
        } else if st.dead {
            return Err(ClientError::Disconnected(self.inner.addr.clone()));
        }
        Ok(id)
    }

    fn write(&self, id: u32, frame: &[u8]) -> Result<()> {
        let r = lock(&self.inner.writer).write_all(frame);
        if let Err(e) = r {
            // Fails every waiter, request `id`'s included: a partly written frame breaks
            // the connection's framing.
            fail_all(&self.inner, &format!("write of request {id} failed: {e}"));
            return Err(ClientError::Io { addr: self.inner.addr.clone(), reason: e.to_string() });
        }
        Ok(())
    }

    /// Sends a request; the returned handle completes with the reply.
    pub fn send(&self, request: &Request) -> Result<Pending<Result<Response>>> {
        Ok(self.send_tracked(request)?.1)
    }

    fn send_tracked(&self, request: &Request) -> Result<(u32, Pending<Result<Response>>)> {
        let (c, p) = pending();
        let id = self.register(Some(Waiter::Pending(request.api_key(), c)))?;
        let frame = request.encode_frame(id);
        // On a write error the waiter was already completed with the error.
        let _ = self.write(id, &frame);
        Ok((id, p))
    }

    /// Sends a request; `callback` runs with the reply, exactly once: on the reader thread, or
    /// on this thread when the request could not be sent (then the error is also returned).
    pub fn send_with_callback(&self, request: &Request, callback: Callback) -> Result<()> {
        let id = self.register(Some(Waiter::Callback(request.api_key(), callback)))?;
        let frame = request.encode_frame(id);
        let _ = self.write(id, &frame);
        Ok(())
    }

    /// Sends a FETCH (or FETCH_NEXT) request; its reply's batches are copied into `buffer`
    /// (cleared first, its capacity reused) and `callback` runs with it, exactly once, as for
    /// [`Self::send_with_callback`]. On an error the buffer is dropped. Returns the request's
    /// correlation id, which a FETCH_NEXT on this connection names to continue it.
    pub fn send_fetch(
        &self,
        request: &Request,
        buffer: Vec<u8>,
        callback: FetchCallback,
    ) -> Result<u32> {
        debug_assert!(matches!(request.api_key(), ApiKey::Fetch | ApiKey::FetchNext));
        let id = self.register(Some(Waiter::Fetch(buffer, callback)))?;
        let frame = request.encode_frame(id);
        self.write(id, &frame)?;
        Ok(id)
    }

    /// Sends produce requests, each batch without copying it into a frame of its own: the
    /// frames' heads, and batches under [`GATHER_BELOW_BYTES`], are gathered into one buffer,
    /// and everything goes out in as few `writev` calls as the bounds allow (one for the usual
    /// step of a producer's worker), instead of two writes per frame. Small batches, two or
    /// more, go together in PRODUCE_MULTI requests of at most `max_request_bytes` (the
    /// producer's `max_batch_bytes`: what fits the broker's frame bound as one batch does) and
    /// [`MULTI_MAX_BYTES`]; the requests keep the order of `frames`, so each queue's batches
    /// keep theirs.
    /// Each `callback` runs exactly once, as for [`Self::send_with_callback`]; when the
    /// connection is full, what is gathered is written before waiting for room.
    pub(crate) fn send_produces(&self, frames: Vec<ProduceFrame>, max_request_bytes: usize) {
        let max_multi = max_request_bytes.min(MULTI_MAX_BYTES);
        let mut out = Gathered::with_room_for(&frames);
        let small = |f: &ProduceFrame| f.batch.len() < MULTI_BELOW_BYTES;
        let multi = !self.inner.no_multi.load(Ordering::Relaxed)
            && frames.iter().filter(|f| small(f)).nth(1).is_some();
        let mut entries: Vec<ProduceFrame> = Vec::new();
        let mut entries_bytes = 0;
        for f in frames {
            if multi && small(&f) {
                let bytes = produce_multi::entry_bytes(&f.topic, f.batch.len());
                if entries_bytes + bytes > max_multi || entries.len() == MULTI_MAX_ENTRIES {
                    self.push_entries(&mut out, &mut entries);
                    entries_bytes = 0;
                }
                entries_bytes += bytes;
                entries.push(f);
                continue;
            }
            // Whatever was gathered before it goes first: each queue's batches keep their order.
            self.push_entries(&mut out, &mut entries);
            entries_bytes = 0;
            self.push_request(&mut out, Waiter::Produce(f.reply), |out, id| {
                out.push(id, &f.topic, f.queue_id, f.batch)
            });
        }
        self.push_entries(&mut out, &mut entries);
        self.write_gathered(&mut out);
    }

    /// Gathers `entries` (emptied) as one PRODUCE_MULTI, or a lone one as a PRODUCE.
    fn push_entries(&self, out: &mut Gathered, entries: &mut Vec<ProduceFrame>) {
        match entries.len() {
            0 => {}
            1 => {
                let f = entries.pop().expect("one entry");
                self.push_request(out, Waiter::Produce(f.reply), |out, id| {
                    out.push(id, &f.topic, f.queue_id, f.batch)
                });
            }
            _ => {
                let mut replies = Vec::with_capacity(entries.len());
                let mut heads = Vec::with_capacity(entries.len());
                for f in entries.drain(..) {
                    replies.push(f.reply);
                    heads.push((f.topic, f.queue_id, f.batch));
                }
                self.push_request(out, Waiter::ProduceMulti(replies), |out, id| {
                    out.push_multi(id, &heads)
                });
            }
        }
    }

    /// Registers `waiter` (writing what is gathered first when the connection is full) and
    /// gathers its request with `push`; on a dead connection the waiter completes with the
    /// error instead.
    fn push_request(
        &self,
        out: &mut Gathered,
        waiter: Waiter,
        push: impl FnOnce(&mut Gathered, u32),
    ) {
        let id = match self.try_register(waiter) {
            Ok(id) => id,
            Err(Some(waiter)) => {
                // Replies make room only for requests already written.
                self.write_gathered(out);
                match self.register(Some(waiter)) {
                    Ok(id) => id,
                    Err(_) => return, // its callback ran with the error
                }
            }
            Err(None) => return, // dead: its callback ran with the error
        };
        push(out, id);
        if out.is_full() {
            self.write_gathered(out);
        }
    }

    /// [`Self::register`] without waiting: `Err(Some(waiter))` back when the connection has
    /// `max_in_flight` requests waiting, `Err(None)` when it is dead (the waiter then completed
    /// with the error).
    fn try_register(&self, waiter: Waiter) -> std::result::Result<u32, Option<Waiter>> {
        let mut st = lock(&self.inner.state);
        if st.dead {
            drop(st);
            waiter.complete_err(ClientError::Disconnected(self.inner.addr.clone()));
            return Err(None);
        }
        if st.waiters.len() >= self.inner.max_in_flight {
            return Err(Some(waiter));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        st.waiters.insert(id, waiter);
        Ok(id)
    }

    /// Writes and empties `out`; on failure every waiting request fails (framing is lost).
    fn write_gathered(&self, out: &mut Gathered) {
        if out.is_empty() {
            return;
        }
        let r = {
            let mut w = lock(&self.inner.writer);
            out.write_to(&mut *w)
        };
        if let Err(e) = r {
            fail_all(&self.inner, &format!("write of {} produce requests failed: {e}", out.frames));
        }
        out.clear();
    }

    /// Sends a request that has no reply (a produce with the no-response flag).
    pub fn send_oneway(&self, request: &Request) -> Result<()> {
        debug_assert!(!request.wants_response());
        let id = self.register(None)?;
        self.write(id, &request.encode_frame(id))
    }

    /// Sends and waits for the reply, at most `timeout`.
    pub fn call(&self, request: &Request, timeout: Duration) -> Result<Response> {
        let (id, p) = self.send_tracked(request)?;
        match p.wait_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                // Free the in-flight slot; a late reply is then dropped by the reader.
                self.inner.remove_waiter(id);
                Err(ClientError::Timeout(timeout.as_millis() as u64))
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = lock(&self.inner.writer).shutdown(Shutdown::Both);
    }
}

fn fail_all(inner: &Inner, why: &str) {
    inner.alive.store(false, Ordering::Release);
    let waiters: Vec<Waiter> = {
        let mut st = lock(&inner.state);
        st.dead = true;
        st.waiters.drain().map(|(_, w)| w).collect()
    };
    inner.room.notify_all();
    if !waiters.is_empty() {
        tracing::debug!(addr = %inner.addr, "{why}; failing {} requests", waiters.len());
    }
    for w in waiters {
        w.complete_err(ClientError::Disconnected(inner.addr.clone()));
    }
}

impl Inner {
    /// Takes request `id`'s waiter out, making room for a sender waiting for it.
    fn remove_waiter(&self, id: u32) -> Option<Waiter> {
        let waiter = lock(&self.state).waiters.remove(&id);
        self.made_room();
        waiter
    }

    /// Wakes the senders waiting for room, if any. The reader calls it once for all the
    /// replies of a read: per reply, a producer's worker waiting at the in-flight bound ran
    /// and wrote one request per reply.
    fn made_room(&self) {
        if lock(&self.state).waiting_for_room > 0 {
            self.room.notify_all();
        }
    }
}

fn read_loop(inner: Arc<Inner>, mut stream: TcpStream, max_frame: usize) {
    let mut rb = ReadBuffer::new(64 * 1024);
    let mut wakes = Wakes::default();
    let mut freed = false;
    let why = 'read: loop {
        let needed;
        loop {
            match check_response(rb.filled(), max_frame) {
                Ok(Check::Incomplete { needed: n }) => {
                    needed = n;
                    // Every reply read so far is delivered: wake the senders waiting for the
                    // room they made, and their producers, once each.
                    if std::mem::take(&mut freed) {
                        inner.made_room();
                    }
                    wakes.run();
                    break;
                }
                Ok(Check::Complete { frame_bytes }) => {
                    let frame = &rb.filled()[..frame_bytes];
                    let (h, payload) = split_response(frame);
                    let waiter = lock(&inner.state).waiters.remove(&h.correlation_id);
                    freed = true;
                    let Some(w) = waiter else {
                        // Error replies to oneway sends, or replies after a timeout.
                        if h.error_code != 0 {
                            let e = ErrorResponse::decode(h.error_code, payload);
                            tracing::warn!(addr = %inner.addr, "unsolicited error reply: {e:?}");
                        }
                        rb.consume(frame_bytes);
                        continue;
                    };
                    w.finish(h.error_code, payload, &mut wakes, &inner);
                    rb.consume(frame_bytes);
                }
                Err(e) => {
                    wakes.run();
                    break 'read format!("bad response frame: {e}");
                }
            }
        }
        match stream.read(rb.space_for(needed)) {
            Ok(0) => break "closed by the broker".to_owned(),
            Ok(n) => rb.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    fail_all(&inner, &why);
}

mod gather;
use gather::{Gathered, GATHER_BELOW_BYTES};

#[cfg(test)]
mod tests;
