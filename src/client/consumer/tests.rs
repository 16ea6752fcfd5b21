use super::*;
use crate::format::batch::stamp;
use crate::format::{BatchBuilder, Record, Stamp};

fn batch(base: u64, n: usize, tag: &[u8]) -> Vec<u8> {
    let mut b = BatchBuilder::new(1 << 16);
    for i in 0..n {
        let body = format!("m{}", base + i as u64);
        b.push(&Record { key: b"", tag, properties: &[], body: body.as_bytes(), timestamp_ms: 1 })
            .unwrap();
    }
    let mut bytes = b.finish(-1, -1);
    stamp_at(&mut bytes, base);
    bytes
}

/// Stamps `bytes` as the broker would for queue 0 of topic 1 at `base`.
fn stamp_at(bytes: &mut [u8], base: u64) {
    let s = Stamp { topic_id: 1, queue_id: 0, base_offset: base, store_timestamp_ms: 2, epoch: 0 };
    stamp(bytes, &s);
}

#[test]
fn a_checksum_valid_batch_stamped_past_the_last_offset_is_corrupt_not_a_panic() {
    // A broker speaking wrongly (or a hand-edited segment it serves): both checksums hold
    // but the records' offsets pass u64::MAX.
    let mut bytes = batch(0, 3, b"A");
    stamp_at(&mut bytes, u64::MAX - 1);
    let d = decode_batches(&bytes, 0, &[]);
    assert!(d.messages.is_empty());
    assert_eq!(d.corrupt.map(|c| c.first_offset), Some(0));
}

#[test]
fn damage_after_a_batch_ending_at_the_last_offset_is_reported_not_a_panic() {
    // Offsets [u64::MAX - 3, u64::MAX) are all valid; the damage after them starts at the
    // last offset, and is reported as covering at most what is left.
    let mut bytes = batch(0, 3, b"A");
    stamp_at(&mut bytes, u64::MAX - 3);
    bytes.extend_from_slice(&[0xff; 100]);
    let scan = scan_batches(&bytes, 0, &[]);
    assert_eq!(scan.next_offset, u64::MAX);
    let corrupt = scan.corrupt.unwrap();
    assert_eq!((corrupt.first_offset, corrupt.next_offset), (u64::MAX, u64::MAX));
}

#[test]
fn records_an_answer_repeats_are_delivered_once_in_offset_order() {
    // Found by the fetch_decode fuzzer: a batch sent twice in one answer (a broker or a
    // proxy gone wrong) was delivered twice, offsets going back. Records at offsets the
    // answer already passed are stepped over, as those below the requested offset are.
    let mut bytes = batch(0, 3, b"A");
    bytes.extend(batch(0, 3, b"A"));
    bytes.extend(batch(2, 3, b"A"));
    for tags in [vec![], vec![b"A".to_vec()]] {
        let d = decode_batches(&bytes, 1, &tags);
        let offsets: Vec<u64> = d.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, vec![1, 2, 3, 4]);
        assert_eq!((d.next_offset, d.corrupt), (5, None));
    }
}

#[test]
fn skips_records_below_the_requested_offset_and_filters_tags() {
    let mut bytes = batch(0, 3, b"A");
    bytes.extend(batch(3, 2, b"B"));
    let d = decode_batches(&bytes, 1, &[]);
    assert_eq!(offsets(&d.messages), vec![1, 2, 3, 4]);
    assert_eq!(d.messages[0].body, &b"m1"[..]);
    assert_eq!((d.next_offset, d.corrupt), (5, None));
    let d = decode_batches(&bytes, 0, &[b"B".to_vec()]);
    assert_eq!(offsets(&d.messages), vec![3, 4]);
    let mut bad = bytes.clone();
    bad[21] ^= 1; // a stamped field: the stamp CRC catches it
    let d = decode_batches(&bad, 0, &[]);
    assert!(d.messages.is_empty());
    let c = d.corrupt.expect("reported");
    // Its offsets are not trusted: one offset at a time.
    assert_eq!((c.first_offset, c.next_offset), (0, 1), "{}", c.reason);
}

#[test]
fn the_output_is_sized_by_the_headers_but_never_past_what_the_bytes_hold() {
    let mut bytes = batch(0, 3, b"A");
    bytes.extend(batch(3, 2, b"B"));
    assert_eq!(records_from(&bytes, 0), 5);
    assert_eq!(records_from(&bytes, 4), 1);
    // A batch the scan does not look into (ruled out by tag) is its sender's word: a
    // count of a million in a few bytes must not size the vector.
    bytes[48..52].copy_from_slice(&(1u32 << 20).to_le_bytes());
    assert_eq!(records_from(&bytes, 0), bytes.len() / 20);
}

#[test]
fn a_pooled_buffer_shared_by_messages_goes_back_when_the_last_one_goes() {
    let bytes = batch(0, 3, b"A");
    let pool = Arc::new(BufferPool::new(4, 1 << 20));
    let view = PullView {
        batches: bytes,
        from: 0,
        tags: Vec::new(),
        next_offset: 3,
        min_offset: 0,
        max_offset: 3,
        pool: Some(pool.clone()),
    };
    let mut messages = view.into_result().messages;
    assert_eq!(messages.len(), 3);
    assert_eq!(pool.free_buffers(), 0, "the messages hold the buffer");
    let body = messages[1].body.clone();
    messages.clear();
    assert_eq!(pool.free_buffers(), 0, "a field kept holds it too");
    assert_eq!(body, &b"m1"[..]);
    drop(body);
    assert_eq!(pool.free_buffers(), 1, "back in the pool with the last field");
}

#[test]
fn views_read_the_messages_in_place_and_copy_only_on_request() {
    let mut bytes = batch(0, 3, b"A");
    bytes.extend(batch(3, 2, b"B"));
    bytes.extend(poison(5, 2));
    let tags = vec![b"B".to_vec()];
    let scan = scan_batches(&bytes, 1, &[]);
    assert_eq!((scan.next_offset, scan.corrupt.as_ref().map(|c| c.first_offset)), (5, Some(5)));
    let mut buffer = bytes.clone();
    buffer.truncate(scan.valid_len);
    let view_with = |batches: Vec<u8>, tags: Vec<Vec<u8>>| PullView {
        batches,
        from: 1,
        tags,
        next_offset: 5,
        min_offset: 0,
        max_offset: 7,
        pool: None,
    };
    let view = view_with(buffer.clone(), Vec::new());
    let range = view.batches.as_ptr_range();
    let msgs: Vec<MessageView<'_>> = view.messages().collect();
    assert_eq!(msgs.iter().map(|m| m.offset).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for m in &msgs {
        // Borrowed from the fetch buffer: no copy was made.
        assert!(range.contains(&m.body().as_ptr()), "offset {} was copied", m.offset);
    }
    assert_eq!(msgs[0].body(), b"m1");
    assert_eq!(msgs[2].record.tag, b"B");
    // The owned copies are what decode_batches returns.
    let owned: Vec<ConsumedMessage> = msgs.iter().map(MessageView::to_owned).collect();
    assert_eq!(owned, decode_batches(&bytes, 1, &[]).messages);
    assert_eq!(view.to_result().messages, owned);
    // Each copy is one allocation: its record's bytes, which its fields share.
    let raw = msgs[0].record.raw().len();
    assert!(owned[0].body.len() < raw);
    // into_result shares the view's buffer: the same messages, not copied.
    let shared = view_with(buffer.clone(), Vec::new());
    let range = shared.batches.as_ptr_range();
    let result = shared.into_result();
    assert_eq!(result.messages, owned);
    assert_eq!((result.next_offset, result.min_offset, result.max_offset), (5, 0, 7));
    for m in &result.messages {
        assert!(range.contains(&m.body.as_ptr()), "offset {} was copied", m.offset);
    }
    assert_eq!(result.messages[2].message_id, MessageId::new(1, 0, 3));
    // Tag filtering on views matches the owned decode.
    let tagged = view_with(buffer, tags.clone());
    let t: Vec<u64> = tagged.messages().map(|m| m.offset).collect();
    assert_eq!(t, offsets(&decode_batches(&bytes, 0, &tags).messages));
    assert_eq!(t, [3, 4]);
}

/// A broker with topic "t" (id 7, two queues) that answers every fetch with one batch of
/// two messages from offset 0, stamped for topic `stamped.0` queue `stamped.1`; counts the
/// METADATA requests.
fn broker_stamping(stamped: (u32, u32)) -> (PullConsumer, Arc<std::sync::atomic::AtomicU64>) {
    broker_stamping_as(stamped, &[7])
}

/// [`broker_stamping`] whose METADATA answer n gives topic "t" id `topic_ids[n]` (the
/// last one from then on).
fn broker_stamping_as(
    stamped: (u32, u32),
    topic_ids: &[u32],
) -> (PullConsumer, Arc<std::sync::atomic::AtomicU64>) {
    let topic_ids = topic_ids.to_vec();
    use crate::client::router::{ClientOptions, Router};
    use crate::client::scripted_broker::scripted_broker;
    use crate::protocol::TopicRoute;
    use std::sync::atomic::{AtomicU64, Ordering};
    let metadata = Arc::new(AtomicU64::new(0));
    let asked = metadata.clone();
    let addr = scripted_broker(move |port, request| match request {
        Request::Metadata { .. } => {
            let n = asked.fetch_add(1, Ordering::Relaxed) as usize;
            let topic_id = topic_ids[n.min(topic_ids.len() - 1)];
            Response::Metadata {
                shard_count: 1,
                shared_port: port,
                shard_ports: vec![port],
                topics: vec![TopicRoute {
                    name: "t".into(),
                    error_code: 0,
                    topic_id,
                    queue_owners: vec![0, 0],
                }],
            }
        }
        Request::Fetch { .. } => {
            let mut bytes = batch(0, 2, b"");
            let s = Stamp {
                topic_id: stamped.0,
                queue_id: stamped.1,
                base_offset: 0,
                store_timestamp_ms: 2,
                epoch: 0,
            };
            stamp(&mut bytes, &s);
            Response::Fetch { min_offset: 0, next_offset: 2, scan_end_offset: 2, batches: bytes }
        }
        other => panic!("unexpected {other:?}"),
    });
    let router = Router::new(&addr, ClientOptions::default()).unwrap();
    (PullConsumer::new(router), metadata)
}

#[test]
fn a_batch_stamped_for_another_queue_fails_the_fetch_and_delivers_nothing() {
    use std::sync::atomic::Ordering;
    // The queue asked for: delivered.
    let (consumer, _) = broker_stamping((7, 1));
    let got = consumer.pull("t", 1, 0, Duration::ZERO).unwrap();
    assert_eq!((got.messages.len(), got.next_offset), (2, 2));
    // Queue 0's batch answered to a fetch of queue 1, by a pull and by a queue reader.
    let (consumer, _) = broker_stamping((7, 0));
    let e = consumer.pull("t", 1, 0, Duration::ZERO).unwrap_err();
    let ClientError::Protocol(text) = &e else { panic!("{e:?}") };
    assert!(text.contains("queue 1") && text.contains("topic id 7 queue 0"), "{text}");
    assert!(text.contains("misrouted"), "{text}");
    let mut reader = consumer.stream("t", 1, 0);
    let e = reader.next_batch(Duration::from_secs(30)).unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    assert_eq!(reader.position(), 0, "nothing was delivered, no offset moved");
    // Another topic's batch for the same queue number: the route is read again (the topic
    // may have been made again under a new id), then the fetch fails all the same.
    let (consumer, metadata) = broker_stamping((9, 1));
    let e = consumer.pull("t", 1, 0, Duration::ZERO).unwrap_err();
    let ClientError::Protocol(text) = &e else { panic!("{e:?}") };
    assert!(text.contains("topic id 9 queue 1"), "{text}");
    assert_eq!(metadata.load(Ordering::Relaxed), 2, "the route was read again once");
}

#[test]
fn a_topic_made_again_under_a_new_id_is_read_again_not_refused() {
    use std::sync::atomic::Ordering;
    // The route read first says id 7; the topic was deleted and made again (id 8), which
    // the broker's batches are stamped with.
    let (consumer, metadata) = broker_stamping_as((8, 1), &[7, 8]);
    let got = consumer.pull("t", 1, 0, Duration::ZERO).unwrap();
    assert_eq!((got.messages.len(), got.next_offset), (2, 2));
    assert_eq!(metadata.load(Ordering::Relaxed), 2);
    // From then on the route holds the new id: no more METADATA.
    consumer.pull("t", 1, 0, Duration::ZERO).unwrap();
    assert_eq!(metadata.load(Ordering::Relaxed), 2);
}

fn offsets(msgs: &[ConsumedMessage]) -> Vec<u64> {
    msgs.iter().map(|m| m.offset).collect()
}

/// A stored batch with valid checksums whose record 1 is malformed (what a broker that did
/// not validate record framing on ingest could store).
fn poison(base: u64, n: usize) -> Vec<u8> {
    let mut b = batch(base, n, b"");
    let first_len = u32::from_le_bytes(b[88..92].try_into().unwrap()) as usize;
    let second = 88 + 4 + first_len;
    b[second + 8..second + 10].copy_from_slice(&u16::MAX.to_le_bytes());
    let crc = crate::format::crc::crc32c(&b[crate::format::CRC_START..]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn a_corrupt_batch_is_reported_with_its_offsets_and_skipped_only_on_request() {
    let mut bytes = batch(0, 3, b"");
    bytes.extend(poison(3, 2));
    bytes.extend(batch(5, 1, b""));
    // The good messages before it are delivered; the pull stops at it.
    let d = decode_batches(&bytes, 1, &[]);
    assert_eq!(offsets(&d.messages), vec![1, 2]);
    let c = d.corrupt.clone().expect("reported");
    assert_eq!((c.first_offset, c.next_offset), (3, 5));
    assert!(c.reason.contains("record 1 is malformed"), "{}", c.reason);
    let next = settle("t", 4, 1, 6, d.next_offset, d.corrupt).unwrap();
    assert_eq!((offsets(&d.messages), next), (vec![1, 2], 3));
    // A pull starting at it fails, naming the queue and the range, every time.
    let at_poison = &bytes[batch(0, 3, b"").len()..];
    for from in [3, 4] {
        let d = decode_batches(at_poison, from, &[]);
        let e = settle("t", 4, from, 6, d.next_offset, d.corrupt).unwrap_err();
        let ClientError::CorruptData { ref topic, queue_id, first_offset, next_offset, .. } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!((topic.as_str(), queue_id, first_offset, next_offset), ("t", 4, 3, 5));
        let text = e.to_string();
        assert!(text.contains("queue 4") && text.contains("[3, 5)"), "{text}");
    }
    // Skipping is explicit: pulling from its end goes on.
    let after = &at_poison[poison(3, 2).len()..];
    let d = decode_batches(after, 5, &[]);
    let next = settle("t", 4, 5, 6, d.next_offset, d.corrupt).unwrap();
    assert_eq!((offsets(&d.messages), next), (vec![5], 6));
}

proptest::proptest! {
    /// A fetch answer's bytes come from a broker (or whatever answers on its port): any
    /// bytes, and valid batches cut or with a byte changed, decode without a panic into
    /// messages within the scanned offsets, in order.
    #[test]
    fn any_fetched_bytes_decode_without_a_panic(
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        counts in proptest::collection::vec(1usize..5, 0..4),
        base in proptest::prop_oneof![0u64..100, (u64::MAX - 20)..=u64::MAX],
        from in proptest::prop_oneof![0u64..120, (u64::MAX - 20)..=u64::MAX],
        cut in proptest::prelude::any::<proptest::sample::Index>(),
        flip in proptest::prelude::any::<(proptest::sample::Index, u8)>(),
        mode in 0u8..4,
    ) {
        let mut bytes = Vec::new();
        let mut next = base;
        for n in counts {
            bytes.extend(batch(0, n, b"A"));
            let at = bytes.len() - batch(0, n, b"A").len();
            stamp_at(&mut bytes[at..], next);
            next = next.saturating_add(n as u64);
        }
        match mode {
            0 => bytes = raw,
            1 if !bytes.is_empty() => bytes.truncate(cut.index(bytes.len())),
            2 if !bytes.is_empty() => {
                let i = flip.0.index(bytes.len());
                bytes[i] ^= flip.1.max(1);
            }
            _ => bytes.extend_from_slice(&raw),
        }
        let tags = [b"A".to_vec()];
        for tags in [&[][..], &tags[..]] {
            let scan = scan_batches(&bytes, from, tags);
            proptest::prop_assert!(scan.valid_len <= bytes.len());
            proptest::prop_assert!(scan.next_offset >= from);
            let d = decode_batches(&bytes, from, tags);
            proptest::prop_assert_eq!(d.next_offset, scan.next_offset);
            let offsets: Vec<u64> = d.messages.iter().map(|m| m.offset).collect();
            proptest::prop_assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{:?}", offsets);
            proptest::prop_assert!(offsets.iter().all(|&o| o >= from && o < d.next_offset));
            // Shared with the buffer or copied out, the same messages.
            let shared = decode_batches_shared(&Bytes::from(bytes.clone()), from, tags);
            proptest::prop_assert_eq!(&shared, &d);
            let queue = StampedQueue { topic_id: Some(1), queue_id: 0 };
            let stamped = scan_queue_batches(&bytes, from, tags, queue);
            proptest::prop_assert!(stamped.valid_len <= scan.valid_len);
        }
    }
}
