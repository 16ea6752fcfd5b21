//! One client connection, served on the shard that accepted it.
//!
//! Frames are decoded where the socket read them: each complete frame is lent out of the
//! connection's [`ReadBuffer`], and a produce request carries its batch as a range of it, so
//! the batch is copied once, by the log into its DMA chunk. A produce for another shard's
//! queue carries the same range across the mesh (the bytes are `Send`, shared by reference
//! count): still one copy, made by the owner's log.
//!
//! The reader decodes frames (checked complete and bounded first) and starts one task per
//! request; at most `max_in_flight_per_connection` requests and
//! `max_in_flight_bytes_per_connection` bytes run at once (a request larger than the byte
//! bound runs alone), and the reader stops reading while a frame waits for room
//! (backpressure through TCP). A request counts its frame, plus for a fetch the batches its
//! answer may carry (its `max_bytes`, at most `max_fetch_bytes`), until the writer has taken
//! its response (large batches written to the socket, the rest copied into the writer's
//! bounded buffer): a peer that reads slowly holds no more than that. Tasks finish in any
//! order and hand their response frames, tagged with the request's correlation id, to the
//! writer task.
//!
//! A FETCH_NEXT becomes, in its task, the FETCH continuing the fetch it names once that one is
//! answered ([`super::fetch_chain`]); every FETCH and FETCH_NEXT is remembered for that.
//!
//! Errors: a request that decodes badly gets an error response and the connection goes on
//! (framing is intact). A frame that is too large or too short for a header breaks framing:
//! the broker answers FRAME_TOO_LARGE / MALFORMED_REQUEST (with the correlation id when it
//! could read one), finishes in-flight requests and closes the connection. A response that
//! would exceed `max_frame_bytes` is replaced by a FRAME_TOO_LARGE error (the connection
//! stays). A client that
//! disconnects mid-frame or mid-request only ends its own connection.
//!
//! Timeouts ([`ReadDeadline`]): a frame must arrive whole within `frame_read_timeout_ms` of
//! its first byte, and a connection with nothing received and nothing in flight for
//! `idle_timeout_ms` is closed; in-flight requests are still answered.
//!
//! On stop the reader stops taking new frames, in-flight requests complete and are answered,
//! then the connection closes. When the reader ends for any reason (the peer closed, even
//! only its sending side), long polls still parked are answered at once ([`super::hangup`]):
//! they hold no waiter slot for a client that is gone.

use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use crate::protocol::replication::ReplRequest;
use crate::protocol::Request;
use crate::runtime::{Semaphore, StaticPermit};
use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use super::error::BrokerError;
use super::fetch_chain::{self, EndSender, FetchChains, Link};
use super::hangup;
use super::read_deadline::{Expiry, ReadDeadline};
use super::shard::fetch_multi::MultiPart;
use super::shard::{Answer, Shard};
use super::shard_log::ShardLog;
use super::shutdown::Stop;
use crate::protocol::fetch_multi;
use crate::protocol::frame::{check_request, split_request, Check};
use crate::protocol::message::encode_fetch_head;
use crate::protocol::read_buffer::ReadBuffer;
use crate::protocol::{decode_request_shared, encode_error, ErrorCode, ErrorDetail};
use crate::runtime;
use crate::storage::ReadBuf;

use super::config::CONNECTION_READ_BUFFER_BYTES as READ_CHUNK_BYTES;

pub async fn serve<L: ShardLog>(shard: Rc<Shard<L>>, stream: TcpStream, stop: Stop) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
    }
    let max_in_flight = shard.config.broker.max_in_flight_per_connection;
    let max_frame = shard.config.broker.max_frame_bytes;
    let (mut reader, writer) = stream.split();
    // Room for every in-flight response plus the one refusal sent when framing breaks.
    let (tx, rx) = local_channel::new_bounded::<Outgoing>(max_in_flight + 2);
    let tx = Rc::new(tx);
    let write_task = runtime::spawn(write_loop(writer, rx, peer.clone()));
    let permits = Rc::new(Semaphore::new(max_in_flight as u64));
    let max_in_flight_bytes = shard.config.broker.max_in_flight_bytes_per_connection;
    let max_fetch = shard.config.broker.max_fetch_bytes;
    let byte_permits = Rc::new(Semaphore::new(max_in_flight_bytes as u64));

    let mut rb = ReadBuffer::new(READ_CHUNK_BYTES);
    let b = &shard.config.broker;
    let clock = shard.clock.clone();
    let mut deadline = ReadDeadline::new(
        clock.now(),
        Duration::from_millis(b.frame_read_timeout_ms),
        Duration::from_millis(b.idle_timeout_ms),
    );
    let (mut got_bytes, mut completed) = (false, false);
    // Fired when the reader ends: long polls still parked are answered then (`hangup`).
    let (hangup, hung_up) = hangup::pair();
    // This connection's recent fetches, for the FETCH_NEXTs that continue them.
    let mut chains = FetchChains::default();
    'conn: loop {
        let needed;
        loop {
            match check_request(rb.filled(), max_frame) {
                Ok(Check::Incomplete { needed: n }) => {
                    needed = n;
                    break;
                }
                Ok(Check::Complete { frame_bytes }) => {
                    completed = true;
                    // Lent, not copied: a produce's batch stays in the read buffer until the
                    // log copies it into its DMA chunk (the one copy on ingest).
                    let frame = rb.lend(frame_bytes);
                    let (header, payload) = split_request(&frame);
                    let payload = frame.slice(frame_bytes - payload.len()..frame_bytes);
                    let decoded = decode_request_shared(&header, &payload);
                    match decoded {
                        Err(e) => {
                            tracing::debug!(%peer, "refused request: {e}");
                            shard.stats_mut().errors += 1;
                            let f = encode_error(
                                header.correlation_id,
                                e.code(),
                                &e.to_string(),
                                ErrorDetail::None,
                            );
                            if tx.send(Outgoing::frame(f)).await.is_err() {
                                break 'conn;
                            }
                        }
                        Ok(request) => {
                            let permit = match permits.acquire_static_permit(1).await {
                                Ok(p) => p,
                                Err(_) => break 'conn,
                            };
                            // A request over the whole bound waits for every byte of it.
                            let charge = in_flight_charge(&request, frame_bytes, max_fetch)
                                .min(max_in_flight_bytes)
                                as u64;
                            let bytes_permit =
                                match byte_permits.acquire_static_permit(charge).await {
                                    Ok(p) => p,
                                    Err(_) => break 'conn,
                                };
                            let (shard, tx) = (shard.clone(), tx.clone());
                            let hung_up = hung_up.clone();
                            let id = header.correlation_id;
                            let wants_response = request.wants_response();
                            let (work, chain) = chain_work(&mut chains, id, request);
                            runtime::spawn_detached(async move {
                                let reply = match work {
                                    Work::Now(request) => {
                                        hangup::handle(&shard, request, &hung_up).await
                                    }
                                    Work::After(link, max_bytes, max_wait_ms) => {
                                        match link.continued(max_bytes, max_wait_ms).await {
                                            Ok(request) => {
                                                hangup::handle(&shard, request, &hung_up).await
                                            }
                                            Err(e) => {
                                                shard.count_refused(e.code);
                                                Err(e)
                                            }
                                        }
                                    }
                                    Work::Refused(e) => {
                                        shard.count_refused(e.code);
                                        Err(e)
                                    }
                                };
                                if let Some(end) = chain {
                                    end.finish(&reply);
                                }
                                let frame = match reply {
                                    Ok(Answer::Response(resp)) => {
                                        Outgoing::frame(resp.encode_frame(id))
                                    }
                                    Ok(Answer::Batches {
                                        min_offset,
                                        next_offset,
                                        scan_end_offset,
                                        batches,
                                    }) => {
                                        let len = batches.iter().map(|b| b.len()).sum();
                                        let head = encode_fetch_head(
                                            id,
                                            min_offset,
                                            next_offset,
                                            scan_end_offset,
                                            len,
                                        );
                                        Outgoing { head, batches, held: None }
                                    }
                                    Ok(Answer::Multi(parts)) => multi_outgoing(id, parts),
                                    Err(e) => Outgoing::frame(encode_error(
                                        id, e.code, &e.message, e.detail,
                                    )),
                                };
                                let mut frame = refuse_oversized(frame, id, max_frame);
                                // Held until the writer has taken the response.
                                frame.held = Some((permit, bytes_permit));
                                if wants_response {
                                    // Fails only when the writer is gone (peer closed).
                                    let _ = tx.send(frame).await;
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(%peer, "closing connection: {e}");
                    shard.stats_mut().errors += 1;
                    let f = encode_error(
                        e.correlation_id().unwrap_or(0),
                        e.code(),
                        &format!("{e}; closing the connection"),
                        ErrorDetail::None,
                    );
                    let _ = tx.send(Outgoing::frame(f)).await;
                    break 'conn;
                }
            }
        }
        if got_bytes {
            // Every pass after the first follows a read that brought bytes.
            deadline.received(clock.now(), rb.filled().len(), completed);
            completed = false;
        }
        // `needed` is bounded by max_frame_bytes: check_request refused anything larger.
        let mut read =
            reader.read(rb.space_for_pooled(needed, &mut shard.read_buffers.borrow_mut()));
        // Most reads find bytes waiting; arm a timer only for a read that has to wait.
        let result = match futures::poll!(&mut read) {
            Poll::Ready(r) => r,
            Poll::Pending => loop {
                let (at, _) = deadline.deadline();
                let timer = clock.sleep_until(at);
                match select(&mut read, select(stop.clone(), timer)).await {
                    Either::Left((r, _)) => break r,
                    Either::Right((Either::Left(_), _)) => break 'conn,
                    Either::Right((Either::Right(_), _)) => {
                        let in_flight = max_in_flight - permits.available() as usize;
                        if let Some(why) = deadline.expired(clock.now(), in_flight) {
                            tracing::debug!(
                                %peer,
                                "closing connection: {}",
                                match why {
                                    Expiry::SlowFrame => "a frame took longer than frame_read_timeout_ms",
                                    Expiry::Idle => "idle for idle_timeout_ms",
                                }
                            );
                            break 'conn;
                        }
                    }
                }
            },
        };
        match result {
            Ok(0) => {
                if !rb.filled().is_empty() {
                    tracing::debug!(
                        %peer,
                        "peer closed mid-frame ({} bytes buffered)",
                        rb.filled().len()
                    );
                }
                break;
            }
            Ok(n) => {
                rb.advance(n);
                got_bytes = true;
            }
            Err(e) => {
                tracing::debug!(%peer, "read failed: {e}");
                break;
            }
        }
    }
    drop(hangup);
    // In-flight tasks hold clones of `tx`; the writer ends once they all answered.
    drop(tx);
    write_task.await;
}

/// What a request's task does.
enum Work {
    Now(Request),
    /// A FETCH_NEXT: the fetch continuing `Link`'s with this `max_bytes` and `max_wait_ms`.
    After(Link, u32, u32),
    /// A FETCH_NEXT with nothing to continue.
    Refused(BrokerError),
}

/// A request's work, and for a fetch (FETCH or FETCH_NEXT) the end it reports to the
/// FETCH_NEXT that may continue it (`fetch_chain`).
fn chain_work(chains: &mut FetchChains, id: u32, request: Request) -> (Work, Option<EndSender>) {
    match request {
        Request::Fetch { ref topic, queue_id, ref tags, .. } => {
            let end = chains.register(id, topic.clone(), queue_id, tags.clone());
            (Work::Now(request), Some(end))
        }
        Request::FetchNext { after, max_bytes, max_wait_ms } => match chains.take(after) {
            Some(link) => {
                let end = chains.register(
                    id,
                    link.topic().to_owned(),
                    link.queue_id(),
                    link.tags().to_vec(),
                );
                (Work::After(link, max_bytes, max_wait_ms), Some(end))
            }
            None => (
                Work::Refused(fetch_chain::broken(&format!(
                    "no fetch with correlation id {after} to continue on this connection \
                     (unknown, already continued, or one of more than {} since); \
                     fetch from an offset",
                    fetch_chain::MAX_LINKS
                ))),
                None,
            ),
        },
        other => (Work::Now(other), None),
    }
}

/// One response: an encoded frame, or a fetch's frame head followed by the stored batches
/// it announces (written from the log's buffers, not copied into the frame).
struct Outgoing {
    head: Vec<u8>,
    batches: Vec<ReadBuf>,
    /// The request's places in the connection's in-flight bounds (count, bytes), released
    /// when the writer is done with the response.
    held: Option<(StaticPermit, StaticPermit)>,
}

impl Outgoing {
    fn frame(head: Vec<u8>) -> Self {
        Outgoing { head, batches: Vec::new(), held: None }
    }
}

/// A FETCH_MULTI's answer: the frame head, then each part's head (bytes of their own) and
/// its batches from where the log holds them.
fn multi_outgoing(id: u32, parts: Vec<MultiPart>) -> Outgoing {
    let mut batches = Vec::with_capacity(parts.len() * 2);
    let mut heads = Vec::new();
    let mut len = 0;
    let count = parts.len();
    for p in parts {
        match p.result {
            Ok(f) => {
                let n = f.batches.iter().map(|b| b.len()).sum();
                let at = heads.len();
                fetch_multi::append_result_head(
                    &mut heads,
                    p.index,
                    f.min_offset,
                    f.next_offset,
                    f.scan_end_offset,
                    n,
                );
                len += heads.len() - at + n;
                batches.push(ReadBuf::from_vec(std::mem::take(&mut heads)));
                batches.extend(f.batches);
            }
            Err(e) => {
                let at = heads.len();
                fetch_multi::append_error_result(&mut heads, p.index, e.code, &e.message, e.detail);
                len += heads.len() - at;
            }
        }
    }
    if !heads.is_empty() {
        batches.push(ReadBuf::from_vec(heads));
    }
    Outgoing { head: fetch_multi::response_head(id, count, len), batches, held: None }
}

/// What a request counts against `max_in_flight_bytes_per_connection`: its frame, plus for a
/// fetch the batches its answer may carry (read from disk into buffers of its own), and for a
/// PRODUCE_MULTI the state of each entry's handling while the request runs.
fn in_flight_charge(request: &Request, frame_bytes: usize, max_fetch_bytes: usize) -> usize {
    let answer = match request {
        Request::Fetch { max_bytes, .. }
        | Request::FetchNext { max_bytes, .. }
        | Request::Replication(ReplRequest::Fetch { max_bytes, .. }) => {
            (*max_bytes as usize).min(max_fetch_bytes)
        }
        // Its batches, and what the broker holds per queue while it looks them up.
        Request::FetchMulti(f) => {
            (f.max_bytes as usize).min(max_fetch_bytes) + f.queue_count() * MULTI_QUEUE_BYTES
        }
        Request::ProduceMulti { entries } => entries.len() * ENTRY_TASK_BYTES,
        _ => 0,
    };
    frame_bytes + answer
}

/// What the broker holds per FETCH_MULTI queue while the request runs (its lookup, its
/// place in the read's order and its part of the answer), rounded up.
const MULTI_QUEUE_BYTES: usize = 128;

/// What the broker holds per PRODUCE_MULTI entry while the request runs: its handling future
/// (about 3 KiB, as a PRODUCE's), rounded up.
const ENTRY_TASK_BYTES: usize = 4096;

/// Small fetched batches are gathered into the write buffer to save syscalls; larger ones are
/// written from where the log holds them.
const GATHER_BELOW_BYTES: usize = 16 * 1024;

/// Responses already waiting when the writer wakes are gathered into one write up to this many
/// bytes: a read of many small requests (a producer's step of one-message batches for many
/// queues) is answered with one `send`, not one per request.
const GATHER_MAX_BYTES: usize = 256 * 1024;

async fn write_loop<W: futures::AsyncWrite + Unpin>(
    mut writer: W,
    rx: local_channel::LocalReceiver<Outgoing>,
    peer: String,
) {
    let mut healthy = true;
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        if !healthy {
            continue; // keep draining so request tasks never wait on a dead peer
        }
        let mut next = Some(first);
        let written = async {
            while let Some(out) = next.take() {
                gather(&mut writer, &mut buf, out).await?;
                if buf.len() < GATHER_MAX_BYTES {
                    // Only what is there already: never wait with bytes unwritten.
                    next = rx.recv().now_or_never().flatten();
                }
            }
            let r = writer.write_all(&buf).await;
            buf.clear();
            r
        };
        if let Err(e) = written.await {
            tracing::debug!(%peer, "write failed: {e}");
            healthy = false;
            buf = Vec::new();
        }
        if buf.capacity() > 4 * GATHER_MAX_BYTES {
            buf = Vec::new(); // after one huge fetch head, keep the buffer's memory bounded
        }
    }
    if healthy {
        let _ = writer.flush().await;
        let _ = writer.close().await;
    }
}

/// Appends `out` to `buf`: its head and small batches copied, and before each large batch the
/// buffer so far written, then the batch from the log's buffer.
async fn gather<W: futures::AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &mut Vec<u8>,
    out: Outgoing,
) -> std::io::Result<()> {
    buf.extend_from_slice(&out.head);
    for b in &out.batches {
        if b.len() < GATHER_BELOW_BYTES {
            buf.extend_from_slice(b);
        } else {
            writer.write_all(buf).await?;
            buf.clear();
            writer.write_all(b).await?;
        }
    }
    Ok(())
}

/// A response larger than `max_frame_bytes` would be refused by the client's framing (and
/// break its connection); answer with an error that says how to ask for less instead. A fetch
/// returns at least one whole batch, so when one batch alone does not fit (stored under larger
/// limits than today's: tuning/README.md, "Changing limits on a broker that holds data"),
/// asking for less cannot help: the error says which limits to raise, and how far.
fn refuse_oversized(out: Outgoing, correlation_id: u32, max_frame: usize) -> Outgoing {
    let size = out.head.len() + out.batches.iter().map(|b| b.len()).sum::<usize>();
    if size <= max_frame {
        return out;
    }
    let largest = out.batches.iter().map(|b| b.len()).max().unwrap_or(0);
    let message = if largest > 0 && out.head.len() + largest > max_frame {
        format!(
            "a stored batch of {largest} bytes does not fit in a response under \
             max_frame_bytes = {max_frame} (it was stored under larger limits); raise the \
             broker's and the client's max_frame_bytes to at least {}, or seek past it",
            out.head.len() + largest
        )
    } else {
        format!(
            "the response would be {size} bytes, over max_frame_bytes = {max_frame}; \
             ask for less (fewer topics, smaller max_bytes)"
        )
    };
    Outgoing::frame(encode_error(
        correlation_id,
        ErrorCode::FRAME_TOO_LARGE,
        &message,
        ErrorDetail::None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `AsyncWrite` that records each write call's bytes.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl futures::AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_produce_multi_counts_its_frame_and_each_entry_s_handling_against_the_byte_bound() {
        use crate::protocol::produce_multi::ProduceEntry;
        let entry = ProduceEntry { topic: "t".into(), queue_id: 0, batch: vec![0; 100].into() };
        let multi = Request::ProduceMulti { entries: vec![entry; 50] };
        assert_eq!(in_flight_charge(&multi, 6_000, 1 << 20), 6_000 + 50 * ENTRY_TASK_BYTES);
        let produce = Request::Produce {
            topic: "t".into(),
            queue_id: 0,
            flags: 0,
            batch: vec![0; 100].into(),
        };
        assert_eq!(in_flight_charge(&produce, 140, 1 << 20), 140);
    }

    #[test]
    fn a_fetch_multi_counts_its_answer_and_each_queue_s_lookup_against_the_byte_bound() {
        use crate::protocol::fetch_multi::{FetchMulti, FetchQueue, FetchTopic};
        let queues = vec![FetchQueue { queue_id: 0, offset: 0 }; 300];
        let multi = Request::FetchMulti(FetchMulti {
            max_bytes: 4 << 20,
            max_wait_ms: 0,
            topics: vec![FetchTopic { topic: "t".into(), tags: Vec::new(), queues }],
        });
        // `max_bytes` bounded by the broker's `max_fetch_bytes`, as a FETCH's.
        assert_eq!(
            in_flight_charge(&multi, 4_000, 1 << 20),
            4_000 + (1 << 20) + 300 * MULTI_QUEUE_BYTES
        );
    }

    /// The answer written from the log's buffers is, byte for byte, the FETCH_MULTI response
    /// the client decodes (the one a forwarding shard would encode).
    #[test]
    fn a_fetch_multi_answer_from_the_log_s_buffers_is_the_encoded_response() {
        use crate::broker::error::BrokerError;
        use crate::broker::shard::fetch_multi::{multi_response, Fetched};
        let parts = || {
            vec![
                MultiPart {
                    index: 0,
                    result: Err(BrokerError::new(ErrorCode::UNKNOWN_QUEUE, "no queue 9")),
                },
                MultiPart {
                    index: 2,
                    result: Ok(Fetched {
                        min_offset: 1,
                        next_offset: 9,
                        scan_end_offset: 7,
                        batches: vec![
                            ReadBuf::from_vec(vec![5; 30]),
                            ReadBuf::from_vec(vec![6; 3]),
                        ],
                    }),
                },
                MultiPart {
                    index: 3,
                    result: Err(BrokerError {
                        code: ErrorCode::OFFSET_OUT_OF_RANGE,
                        message: "gone".into(),
                        detail: ErrorDetail::OffsetRange { min: 4, next: 8 },
                    }),
                },
                MultiPart {
                    index: 5,
                    result: Ok(Fetched {
                        min_offset: 0,
                        next_offset: 2,
                        scan_end_offset: 2,
                        batches: vec![ReadBuf::from_vec(vec![1; 12])],
                    }),
                },
            ]
        };
        let out = multi_outgoing(11, parts());
        let mut wire = out.head.clone();
        for b in &out.batches {
            wire.extend_from_slice(b);
        }
        assert_eq!(wire, multi_response(parts()).encode_frame(11));
        assert_eq!(
            multi_outgoing(12, Vec::new()).head,
            multi_response(Vec::new()).encode_frame(12)
        );
    }

    #[test]
    fn responses_waiting_together_go_out_in_one_write_in_order_large_batches_from_their_buffers() {
        let large = vec![9u8; GATHER_BELOW_BYTES];
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let (tx, rx) = local_channel::new_bounded::<Outgoing>(8);
                for i in 0..3u8 {
                    tx.send(Outgoing::frame(vec![i; 5])).await.unwrap();
                }
                let fetch = Outgoing {
                    head: vec![7; 3],
                    batches: vec![ReadBuf::from_vec(vec![8; 10]), ReadBuf::from_vec(large.clone())],
                    held: None,
                };
                tx.send(fetch).await.unwrap();
                tx.send(Outgoing::frame(vec![3; 2])).await.unwrap();
                drop(tx);
                let mut w = Writes::default();
                write_loop(&mut w, rx, "test".into()).await;
                let mut first = [vec![0u8; 5], vec![1; 5], vec![2; 5], vec![7; 3]].concat();
                first.extend_from_slice(&[8; 10]);
                // Everything already queued, in order; the large batch written on its own.
                assert_eq!(w.0, vec![first, large, vec![3; 2]]);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
