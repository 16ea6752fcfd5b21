use super::gather::MULTI_COPY_BELOW_BYTES;
use super::*;
use std::io::IoSlice;

/// Takes at most `step` bytes per write (a socket's short writes).
struct Short {
    out: Vec<u8>,
    step: usize,
    writes: usize,
}

impl Write for Short {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        self.writes += 1;
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.step - n);
            self.out.extend_from_slice(&b[..take]);
            n += take;
            if n == self.step {
                break;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn gathered_frames_are_written_whole_and_in_order_small_and_large_batches_alike() {
    let sizes = [10usize, GATHER_BELOW_BYTES + 3, 0, 700, GATHER_BELOW_BYTES * 2, 5];
    let mut g = Gathered::default();
    let mut expected = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let batch: Vec<u8> = (0..n).map(|b| (b * 7 + i) as u8).collect();
        let topic = format!("t{i}");
        let req = Request::Produce {
            topic: topic.clone(),
            queue_id: i as u32,
            flags: 0,
            batch: batch.clone().into(),
        };
        expected.extend_from_slice(&req.encode_frame(100 + i as u32));
        g.push(100 + i as u32, &topic, i as u32, Arc::new(batch));
    }
    assert_eq!(g.frames, sizes.len());
    for step in [1, 13, 4096, usize::MAX / 2] {
        let mut w = Short { out: Vec::new(), step, writes: 0 };
        g.write_to(&mut w).unwrap();
        assert_eq!(w.out, expected, "short writes of {step} bytes");
        if step == usize::MAX / 2 {
            assert_eq!(w.writes, 1, "one writev for the whole gather");
        }
    }
    g.clear();
    assert!(g.is_empty() && !g.is_full());
}

#[test]
fn a_gathered_produce_multi_is_its_encoded_frame_with_copied_and_referenced_batches() {
    let sizes = [10usize, MULTI_COPY_BELOW_BYTES, 0, MULTI_COPY_BELOW_BYTES - 1, 5000];
    let mut heads = Vec::new();
    let mut entries = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let batch: Vec<u8> = (0..n).map(|b| (b * 7 + i) as u8).collect();
        let topic = format!("topic-{i}");
        entries.push(produce_multi::ProduceEntry {
            topic: topic.clone(),
            queue_id: i as u32,
            batch: batch.clone().into(),
        });
        heads.push((Arc::from(topic.as_str()), i as u32, Arc::new(batch)));
    }
    let mut g = Gathered::default();
    g.push(7, "before", 1, Arc::new(vec![3; 20]));
    g.push_multi(8, &heads);
    let mut expected = Request::Produce {
        topic: "before".into(),
        queue_id: 1,
        flags: 0,
        batch: vec![3; 20].into(),
    }
    .encode_frame(7);
    expected.extend_from_slice(&Request::ProduceMulti { entries }.encode_frame(8));
    assert_eq!((g.frames, g.large.len()), (2, 2), "the two batches of 2 KiB and more");
    for step in [1, 13, 4096, usize::MAX / 2] {
        let mut w = Short { out: Vec::new(), step, writes: 0 };
        g.write_to(&mut w).unwrap();
        assert_eq!(w.out, expected, "short writes of {step} bytes");
    }
}

#[test]
fn a_gather_is_sized_once_for_its_frames() {
    let frame = |topic: &str, n: usize| ProduceFrame {
        topic: topic.into(),
        queue_id: 3,
        batch: Arc::new(vec![1; n]),
        reply: ProduceReply { sink: Arc::new(Delivered::default()), tag: tag(0), early: None },
    };
    let frames: Vec<_> = (0..40)
        .map(|i| frame(if i % 2 == 0 { "orders" } else { "a-longer-topic-name" }, 100 * i))
        .chain([frame("big", GATHER_BELOW_BYTES)])
        .collect();
    let mut g = Gathered::with_room_for(&frames);
    let capacity = g.buf.capacity();
    for (i, f) in frames.into_iter().enumerate() {
        g.push(i as u32, &f.topic, f.queue_id, f.batch);
    }
    assert_eq!(g.buf.capacity(), capacity, "no regrowth while gathering");
    assert!(capacity - g.buf.len() < 41 * 32, "and not much more than needed");
}

#[test]
fn a_fetch_reply_decodes_into_the_lent_buffer_as_the_generic_decoder_reads_it() {
    let batches: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let reply = Response::Fetch { min_offset: 3, next_offset: 90, scan_end_offset: 77, batches };
    let frame = reply.encode_frame(7);
    let (_, payload) = split_response(&frame);
    let mut lent = Vec::with_capacity(8192);
    lent.extend_from_slice(b"stale bytes of an earlier fetch");
    let lent_ptr = lent.as_ptr();
    let got = decode_fetch_into(payload, lent).unwrap();
    assert_eq!(got.batches.as_ptr(), lent_ptr, "decoded into the lent buffer");
    let Ok(Response::Fetch { min_offset, next_offset, scan_end_offset, batches }) =
        Response::decode(ApiKey::Fetch, payload)
    else {
        panic!("generic decode")
    };
    assert_eq!(
        (got.min_offset, got.next_offset, got.scan_end_offset, &got.batches),
        (min_offset, next_offset, scan_end_offset, &batches)
    );
    // Trailing or missing bytes are protocol errors, as for the generic decoder.
    let mut long = payload.to_vec();
    long.push(0);
    assert!(matches!(decode_fetch_into(&long, Vec::new()), Err(ClientError::Protocol(_))));
    let short = &payload[..payload.len() - 1];
    assert!(matches!(decode_fetch_into(short, Vec::new()), Err(ClientError::Protocol(_))));
}

/// A peer on loopback that reads produce requests `per_round` at a time and answers each
/// round with one write (as a broker's shard answers what one read brought): a PRODUCE
/// with offset 0, the entries of a PRODUCE_MULTI with offsets 0, 1, ... Returns each
/// request's api key and entry count.
fn answering_peer(
    rounds: usize,
    per_round: usize,
) -> (String, std::thread::JoinHandle<Vec<(ApiKey, usize)>>) {
    answering_peer_with(vec![per_round; rounds], false)
}

/// As [`answering_peer`]; with `no_multi` it answers a PRODUCE_MULTI as a broker from
/// before it does (UNSUPPORTED_API).
fn answering_peer_with(
    rounds: Vec<usize>,
    no_multi: bool,
) -> (String, std::thread::JoinHandle<Vec<(ApiKey, usize)>>) {
    use crate::protocol::frame::{check_request, split_request};
    use crate::protocol::{decode_request, encode_error, ErrorDetail, Request, SendStatus};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut seen = Vec::new();
        for per_round in rounds {
            let mut requests = Vec::new();
            while requests.len() < per_round {
                match check_request(&buf, 1 << 20).unwrap() {
                    Check::Complete { frame_bytes } => {
                        let (h, payload) = split_request(&buf[..frame_bytes]);
                        requests.push((h.correlation_id, decode_request(&h, payload).unwrap()));
                        buf.drain(..frame_bytes);
                    }
                    Check::Incomplete { .. } => {
                        let n = s.read(&mut chunk).unwrap();
                        assert!(n > 0, "the client closed early");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
            let stored = |i: usize| Response::Produce {
                status: SendStatus::SendOk,
                topic_id: 1,
                queue_id: 0,
                base_offset: i as u64,
                record_count: 1,
                store_timestamp_ms: 0,
            };
            let mut out = Vec::new();
            for (id, request) in requests {
                let reply = match request {
                    Request::ProduceMulti { entries } if no_multi => {
                        seen.push((ApiKey::ProduceMulti, entries.len()));
                        encode_error(id, ErrorCode::UNSUPPORTED_API, "21", ErrorDetail::None)
                    }
                    Request::ProduceMulti { entries } => {
                        seen.push((ApiKey::ProduceMulti, entries.len()));
                        let results = (0..entries.len()).map(|i| Ok(stored(i))).collect();
                        Response::ProduceMulti { results }.encode_frame(id)
                    }
                    other => {
                        seen.push((other.api_key(), 1));
                        stored(0).encode_frame(id)
                    }
                };
                out.extend_from_slice(&reply);
            }
            s.write_all(&out).unwrap();
        }
        seen
    });
    (addr, peer)
}

/// Replies delivered so far, and at each wake how many had been.
#[derive(Default)]
struct Delivered {
    replies: Mutex<Vec<Result<Response>>>,
    /// The tag each reply came with, in delivery order.
    tags: Mutex<Vec<ReplyTag>>,
    wakes: Mutex<Vec<usize>>,
}

fn tag(i: usize) -> ReplyTag {
    ReplyTag { queue: i, attempt: 0, epoch: 0, base_sequence: 0 }
}

impl ReplySink for Delivered {
    fn deliver(&self, tag: ReplyTag, result: Result<Response>) {
        self.tags.lock().unwrap().push(tag);
        self.replies.lock().unwrap().push(result);
    }
    fn wake(&self) {
        let n = self.replies.lock().unwrap().len();
        self.wakes.lock().unwrap().push(n);
    }
}

impl Delivered {
    /// `n` frames of one producer (one wake shared by all, as a worker's frames share it).
    fn frames(self: &Arc<Self>, n: usize) -> Vec<ProduceFrame> {
        self.sized_frames(&vec![100; n])
    }

    /// A frame per size, each with a batch of that many bytes, tagged with its index.
    fn sized_frames(self: &Arc<Self>, sizes: &[usize]) -> Vec<ProduceFrame> {
        let frame = |i: usize, size: usize| ProduceFrame {
            topic: "t".into(),
            queue_id: 0,
            batch: Arc::new(vec![0; size]),
            reply: ProduceReply { sink: self.clone(), tag: tag(i), early: None },
        };
        sizes.iter().enumerate().map(|(i, &size)| frame(i, size)).collect()
    }

    /// Waits (bounded) until `n` replies were delivered and woken for.
    fn wait_for(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.wakes.lock().unwrap().last() != Some(&n) {
            assert!(std::time::Instant::now() < deadline, "{n} replies never delivered");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn the_replies_of_one_read_are_all_delivered_before_their_producer_is_woken_once() {
    // Large batches: one PRODUCE each, 32 replies in the peer's one write.
    let (addr, peer) = answering_peer(1, 32);
    let conn = Connection::connect(&addr, &ConnectionOptions::default()).unwrap();
    let delivered = Arc::new(Delivered::default());
    conn.send_produces(delivered.sized_frames(&[MULTI_BELOW_BYTES; 32]), 1 << 20);
    delivered.wait_for(32);
    assert_eq!(peer.join().unwrap(), vec![(ApiKey::Produce, 1); 32]);
    // Woken per reply, the producer's worker ran (and wrote a request) once per reply.
    assert_eq!(*delivered.wakes.lock().unwrap(), [32], "one wake, after all 32");
    assert!(delivered.replies.lock().unwrap().iter().all(|r| r.is_ok()));
}

/// The offsets the delivered replies carry, in delivery order.
fn offsets(delivered: &Delivered) -> Vec<u64> {
    let replies = delivered.replies.lock().unwrap();
    replies
        .iter()
        .map(|r| match r {
            Ok(Response::Produce { base_offset, .. }) => *base_offset,
            other => panic!("not a stored reply: {other:?}"),
        })
        .collect()
}

#[test]
fn small_batches_go_together_in_one_produce_multi_and_each_gets_its_own_result() {
    let (addr, peer) = answering_peer(1, 1);
    let conn = Connection::connect(&addr, &ConnectionOptions::default()).unwrap();
    let delivered = Arc::new(Delivered::default());
    conn.send_produces(delivered.frames(40), 1 << 20);
    delivered.wait_for(40);
    assert_eq!(peer.join().unwrap(), vec![(ApiKey::ProduceMulti, 40)]);
    assert_eq!(offsets(&delivered), (0..40).collect::<Vec<u64>>(), "results in entry order");
    let tags = delivered.tags.lock().unwrap();
    assert_eq!(tags.iter().map(|t| t.queue).collect::<Vec<_>>(), (0..40).collect::<Vec<_>>());
}

#[test]
fn requests_keep_the_order_of_the_batches_a_lone_small_one_and_large_ones_as_produce() {
    let (big, small) = (MULTI_BELOW_BYTES, MULTI_BELOW_BYTES - 1);
    let (addr, peer) = answering_peer(1, 5);
    let conn = Connection::connect(&addr, &ConnectionOptions::default()).unwrap();
    let delivered = Arc::new(Delivered::default());
    conn.send_produces(
        delivered.sized_frames(&[small, small, big, small, big, small, small]),
        1 << 20,
    );
    delivered.wait_for(7);
    let multi = ApiKey::ProduceMulti;
    assert_eq!(
        peer.join().unwrap(),
        [(multi, 2), (ApiKey::Produce, 1), (ApiKey::Produce, 1), (ApiKey::Produce, 1), (multi, 2)]
    );
}

#[test]
fn a_produce_multi_is_bounded_in_bytes_and_the_rest_goes_in_the_next() {
    let size = MULTI_BELOW_BYTES - 1;
    let per_multi = MULTI_MAX_BYTES / produce_multi::entry_bytes("t", size);
    let (addr, peer) = answering_peer(1, 2);
    let conn = Connection::connect(&addr, &ConnectionOptions::default()).unwrap();
    let delivered = Arc::new(Delivered::default());
    conn.send_produces(delivered.sized_frames(&vec![size; per_multi + 3]), 1 << 20);
    delivered.wait_for(per_multi + 3);
    let multi = ApiKey::ProduceMulti;
    assert_eq!(peer.join().unwrap(), [(multi, per_multi), (multi, 3)]);
}

#[test]
fn a_produce_multi_holds_no_more_than_the_producer_s_batch_bound() {
    // A producer whose batches are at most 3 KiB (for a broker with a small frame bound):
    // two 1 KiB batches (and their heads) fit a request, a third does not; the fifth,
    // alone, goes as a PRODUCE.
    let (addr, peer) = answering_peer(1, 3);
    let conn = Connection::connect(&addr, &ConnectionOptions::default()).unwrap();
    let delivered = Arc::new(Delivered::default());
    conn.send_produces(delivered.sized_frames(&[1024, 1024, 1024, 1024, 1024]), 3 * 1024);
    delivered.wait_for(5);
    let multi = ApiKey::ProduceMulti;
    assert_eq!(peer.join().unwrap(), [(multi, 2), (multi, 2), (ApiKey::Produce, 1)]);
}

#[test]
fn a_broker_without_produce_multi_gets_single_produces_after_one_retriable_refusal() {
    let (addr, peer) = answering_peer_with(vec![1, 2], true);
    let conn = Connection::connect(&addr, &ConnectionOptions::default()).unwrap();
    let delivered = Arc::new(Delivered::default());
    conn.send_produces(delivered.frames(3), 1 << 20);
    delivered.wait_for(3);
    {
        let replies = delivered.replies.lock().unwrap();
        // The producer's accumulator resends these batches (idempotently).
        assert!(replies.iter().all(|r| r.as_ref().is_err_and(|e| e.is_retriable())));
    }
    let again = Arc::new(Delivered::default());
    conn.send_produces(again.frames(2), 1 << 20);
    again.wait_for(2);
    assert_eq!(offsets(&again), [0, 0]);
    let produce = (ApiKey::Produce, 1);
    assert_eq!(peer.join().unwrap(), [(ApiKey::ProduceMulti, 3), produce, produce]);
}

#[test]
fn a_sender_at_the_in_flight_bound_goes_on_when_a_reply_makes_room() {
    // One request in flight at most: the second waits for the first's reply, which the
    // reader's one wake-up per read must still deliver to it.
    let (addr, peer) = answering_peer(3, 1);
    let opts = ConnectionOptions { max_in_flight: 1, ..ConnectionOptions::default() };
    let conn = Connection::connect(&addr, &opts).unwrap();
    let delivered = Arc::new(Delivered::default());
    let frames = delivered.sized_frames(&[MULTI_BELOW_BYTES; 3]);
    // On a thread of its own: left waiting, it must not hang the test.
    std::thread::spawn(move || conn.send_produces(frames, 1 << 20));
    delivered.wait_for(3);
    peer.join().unwrap();
    assert_eq!(*delivered.wakes.lock().unwrap(), [1, 2, 3]);
}
