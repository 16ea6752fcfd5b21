//! The window and the pool without sockets, and the reader against a scripted broker;
//! `tests/queue_reader.rs` reads real queues.

use super::*;

#[test]
fn one_current_fetch_from_the_position_and_the_next_only_after_advancing() {
    let t0 = Instant::now();
    let mut w = FetchWindow::new(10);
    let a = w.to_send(t0).unwrap();
    assert_eq!(a.offset, 10);
    assert_eq!(w.to_send(t0), None, "the next offset is unknown until the reply");
    assert!(w.on_reply(a.id));
    w.advance(25, false, t0);
    let b = w.to_send(t0).unwrap();
    assert_eq!((b.offset, w.outstanding()), (25, 1));
    assert_ne!(a.id, b.id);
    // An empty reply leaves the position where it was: the same offset again.
    assert!(w.on_reply(b.id));
    w.advance(25, false, t0);
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
fn a_following_fetch_becomes_current_where_the_answer_ends_and_is_dropped_elsewhere() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(1);
    let limit = Duration::from_secs(2);
    let mut w = FetchWindow::new(0);
    assert_eq!(w.to_follow(t0), None, "nothing to follow");
    let a = w.to_send(t0).unwrap();
    let b = w.to_follow(t0).expect("one follows the current fetch");
    assert_eq!((w.to_follow(t0), w.to_send(t0), w.outstanding()), (None, None, 2));
    assert_eq!((w.current(), w.following()), (Some(a.id), Some(b)));
    // The answer to a ends where b starts: b is current, its wait counted from now.
    assert!(w.on_reply(a.id));
    w.advance(10, true, later);
    assert_eq!((w.current(), w.following(), w.position()), (Some(b), None, 10));
    assert_eq!(w.deadline(limit), Some(later + limit));
    let c = w.to_follow(later).unwrap();
    // b's answer ends elsewhere than c starts (its headers stop early): c is dropped, its
    // reply stale when it comes, and a fetch from the position goes instead.
    assert!(w.on_reply(b));
    w.advance(15, false, later);
    assert_eq!((w.current(), w.following()), (None, None));
    let d = w.to_send(later).unwrap();
    assert_eq!((d.offset, w.outstanding()), (15, 2));
    assert!(!w.on_reply(c));
    // A seek drops both; so does the current one's timeout, and a failure the following.
    let e = w.to_follow(later).unwrap();
    w.seek(3);
    assert_eq!((w.current(), w.following()), (None, None));
    assert!(!w.on_reply(d.id) && !w.on_reply(e));
    let f = w.to_send(later).unwrap();
    let _g = w.to_follow(later).unwrap();
    assert!(w.abandon_if_late(later + limit, limit));
    assert_eq!((w.current(), w.following()), (None, None));
    let h = w.to_send(later).unwrap();
    let _i = w.to_follow(later).unwrap();
    assert_eq!(w.outstanding(), MAX_OUTSTANDING_FETCHES);
    assert!(w.on_reply(h.id));
    w.drop_following();
    assert_eq!(w.following(), None);
    assert!(!w.on_reply(f.id));
    assert_eq!(w.outstanding(), 2, "the abandoned and dropped ones until their replies");
}

#[test]
fn sent_fetches_stay_bounded_with_a_follower_however_the_answers_go() {
    // Every step takes one reply (in any order) and sends what the window allows.
    let t0 = Instant::now();
    let mut w = FetchWindow::new(0);
    let mut sent: Vec<u64> = Vec::new();
    let mut seed = 7u64;
    for step in 0..10_000u64 {
        if let Some(t) = w.to_send(t0) {
            sent.push(t.id);
        }
        if let Some(id) = w.to_follow(t0) {
            sent.push(id);
        }
        assert!(w.outstanding() <= MAX_OUTSTANDING_FETCHES);
        assert_eq!(w.outstanding(), sent.len());
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // The following fetch's reply is held by the reader until it is current.
        let takeable: Vec<usize> =
            (0..sent.len()).filter(|&i| Some(sent[i]) != w.following()).collect();
        let id = sent.remove(takeable[(seed >> 33) as usize % takeable.len()]);
        if w.on_reply(id) {
            match (seed >> 20) % 4 {
                0 => w.seek(w.position() + 1),
                1 => w.advance(w.position() + 2, false, t0),
                _ => w.advance(w.position() + 3, true, t0),
            }
        } else if step % 5 == 0 {
            w.drop_following();
        }
    }
}

#[test]
#[should_panic(expected = "moves forward")]
fn the_position_never_moves_back() {
    let mut w = FetchWindow::new(7);
    w.advance(6, false, Instant::now());
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
    let s = Stamp { topic_id: 1, queue_id: 0, base_offset: base, store_timestamp_ms: 2, epoch: 0 };
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

/// A broker from before FETCH_NEXT (key 24), scripted: it answers FETCH from 40 stored
/// batches of 10 messages, and a FETCH_NEXT as such a broker does, UNSUPPORTED_API. The
/// reader reads every message in order, and after the first refusal sends one fetch at a
/// time.
#[test]
fn a_stream_reads_from_a_broker_without_fetch_next_one_fetch_at_a_time() {
    use crate::client::scripted_broker::{one_shard_with, scripted_broker_refusing};
    use crate::client::Client;
    use crate::protocol::{ErrorDetail, Request, Response};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let store: Vec<Vec<u8>> = (0..40).map(|b| stored_batch(b * 10, 10)).collect();
    let refused = Arc::new(AtomicUsize::new(0));
    let seen = refused.clone();
    let addr = scripted_broker_refusing(move |port, request| match request {
        Request::Metadata { .. } => Ok(one_shard_with(port, vec!["old".into()], 1)),
        Request::Fetch { offset, max_bytes, .. } => {
            let (mut batches, mut scan_end) = (Vec::new(), offset);
            for (b, bytes) in store.iter().enumerate().filter(|(b, _)| *b as u64 * 10 + 10 > offset)
            {
                if !batches.is_empty() && batches.len() + bytes.len() > max_bytes as usize {
                    break;
                }
                batches.extend_from_slice(bytes);
                scan_end = b as u64 * 10 + 10;
            }
            Ok(Response::Fetch {
                min_offset: 0,
                next_offset: 400,
                scan_end_offset: scan_end,
                batches,
            })
        }
        Request::FetchNext { .. } => {
            seen.fetch_add(1, Ordering::SeqCst);
            Err((ErrorCode::UNSUPPORTED_API, "unknown api key 24".into(), ErrorDetail::None))
        }
        _ => Err((ErrorCode::UNSUPPORTED_API, "not scripted".into(), ErrorDetail::None)),
    });
    let client = Client::connect(&addr).unwrap();
    let mut consumer = client.consumer();
    consumer.max_bytes = 500;
    let mut reader = consumer.stream("old", 0, 0);
    let (mut offsets, mut fetches) = (Vec::new(), 0);
    while reader.position() < 400 {
        assert!(fetches < 1000, "stuck at {}", reader.position());
        let Some(view) = reader.next_batch(Duration::from_secs(5)).unwrap() else { continue };
        fetches += 1;
        offsets.extend(view.messages().map(|m| m.offset));
    }
    assert_eq!(offsets, (0..400).collect::<Vec<u64>>(), "in order, no gaps, no repeats");
    assert!(fetches >= 10, "{fetches} fetches: the test must cross many");
    // The first refused, and the one sent behind it before the refusal came; then none.
    let tried = refused.load(Ordering::SeqCst);
    assert!((1..=2).contains(&tried), "{tried} FETCH_NEXTs sent");
    assert!(reader.outstanding_fetches() <= 1);
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
        w.advance(t.offset + 10, false, t0);
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
