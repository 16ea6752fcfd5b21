//! FETCH_NEXT against the real `ringmq` binary, spoken frame by frame: a chain of fetches sent
//! at once reads a queue in order without gaps or repeats (served where the connection landed
//! or forwarded to the owner shard), keeps the first fetch's tags, waits behind a long poll,
//! and is refused FETCH_CHAIN_BROKEN when there is nothing to continue.

mod broker_common;

use std::time::Duration;

use broker_common::{config, Broker, Raw};
use ringmq::broker::routing::owner_shard;
use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};
use ringmq::format::batch::read_header;
use ringmq::protocol::{ApiKey, ErrorCode, Request, Response};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-fetch-next").tempdir().unwrap()
}

fn port(broker: &Broker) -> u16 {
    broker.addr().rsplit(':').next().unwrap().parse().unwrap()
}

fn fetch(topic: &str, queue_id: u32, offset: u64, max_bytes: u32, tags: Vec<Vec<u8>>) -> Request {
    Request::Fetch { topic: topic.into(), queue_id, offset, max_bytes, max_wait_ms: 0, tags }
}

fn next(after: u32, max_bytes: u32, max_wait_ms: u32) -> Request {
    Request::FetchNext { after, max_bytes, max_wait_ms }
}

/// A fetch answer: (scan end, [(base offset, record count)] of its batches).
type Fetched = (u64, Vec<(u64, u32)>);

/// Reads answers until every id in `ids` has one; each as a fetch answer, or its error code.
fn answers(raw: &mut Raw, ids: &[u32]) -> Vec<Result<Fetched, u16>> {
    let mut got: Vec<Option<Result<Fetched, u16>>> = vec![None; ids.len()];
    while got.iter().any(Option::is_none) {
        let (header, payload) = raw.read_frame().expect("an answer");
        let at = ids.iter().position(|&i| i == header.correlation_id).expect("an id sent");
        got[at] = Some(if header.error_code != 0 {
            Err(header.error_code)
        } else {
            let Response::Fetch { scan_end_offset, batches, .. } =
                Response::decode(ApiKey::FetchNext, &payload).unwrap()
            else {
                panic!("not a fetch answer")
            };
            let mut list = Vec::new();
            let mut rest = &batches[..];
            while !rest.is_empty() {
                let h = read_header(rest).unwrap();
                list.push((h.stamp.base_offset, h.record_count));
                rest = &rest[h.length as usize..];
            }
            Ok((scan_end_offset, list))
        });
    }
    got.into_iter().map(Option::unwrap).collect()
}

/// Stores batches of 1..=9 messages (tag "a" for even batches, "b" for odd) on `queue_id`,
/// `total` messages in all.
fn fill(client: &Client, topic: &str, queue_id: u32, total: u64) {
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::Queue(queue_id), ..Default::default() })
        .unwrap();
    let (mut n, mut size, mut batch) = (0u64, 1u64, 0u64);
    while n < total {
        let k = size.min(total - n);
        let tag = if batch % 2 == 0 { "a" } else { "b" };
        let msgs = (n..n + k).map(|i| Message::new(topic, format!("m{i}")).with_tag(tag));
        assert_eq!(producer.send_batch(msgs.collect()).unwrap().offsets(), n..n + k);
        n += k;
        size = size % 9 + 1;
        batch += 1;
    }
}

/// A fetch and 30 FETCH_NEXTs behind it, all sent before any answer: on a queue owned by the
/// shard the connection landed on and on one owned by the other shard, the answers cover the
/// queue in order, each starting where the one before it ended.
#[test]
fn a_chain_sent_at_once_reads_the_queue_in_order_on_either_shard() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("c", 8).unwrap();
    let queues: Vec<u32> = [0, 1]
        .iter()
        .map(|&s| (0..8).find(|&q| owner_shard("c", q, 2).get() == s).unwrap())
        .collect();
    for &q in &queues {
        fill(&client, "c", q, 400);
    }
    for &q in &queues {
        let mut raw = Raw::connect(port(&broker));
        raw.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // About two batches per answer.
        raw.send(&fetch("c", q, 0, 400, Vec::new()).encode_frame(100));
        let ids: Vec<u32> = (100..131).collect();
        for &id in &ids[1..] {
            raw.send(&next(id - 1, 400, 0).encode_frame(id));
        }
        let mut at = 0;
        for (i, a) in answers(&mut raw, &ids).into_iter().enumerate() {
            let (scan_end, batches) = a.unwrap_or_else(|c| panic!("answer {i} refused: {c}"));
            for (base, count) in batches {
                assert_eq!(base, at, "queue {q}, answer {i}: a gap or a repeat");
                at = base + u64::from(count);
            }
            assert_eq!(scan_end, at, "queue {q}, answer {i}");
        }
        assert!(at > 100 && at <= 400, "queue {q}: the chain read {at} messages");
        // The chain goes on from its last answer.
        raw.send(&next(130, 1 << 20, 0).encode_frame(131));
        let (_, rest) = answers(&mut raw, &[131]).remove(0).unwrap();
        assert_eq!(rest.first().map(|b| b.0), Some(at));
        assert_eq!(rest.iter().map(|b| u64::from(b.1)).sum::<u64>(), 400 - at);
    }
}

/// The continued fetch keeps the first one's tags: only batches that may hold tag "a" come.
#[test]
fn a_continued_fetch_keeps_the_tags() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 1).unwrap();
    fill(&client, "t", 0, 200);
    let mut raw = Raw::connect(port(&broker));
    raw.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.send(&fetch("t", 0, 0, 200, vec![b"a".to_vec()]).encode_frame(1));
    for id in 2..=10 {
        raw.send(&next(id - 1, 200, 0).encode_frame(id));
    }
    let ids: Vec<u32> = (1..=10).collect();
    // Batch k (from 0) holds (k % 9) + 1 messages; even batches are tagged "a".
    let mut tagged_a = Vec::new();
    let (mut base, mut k) = (0u64, 0u64);
    while base < 200 {
        let n = (k % 9 + 1).min(200 - base);
        if k % 2 == 0 {
            tagged_a.push(base);
        }
        base += n;
        k += 1;
    }
    let mut seen = Vec::new();
    let mut end = 0;
    for a in answers(&mut raw, &ids) {
        let (scan_end, batches) = a.unwrap();
        assert!(scan_end >= end);
        end = scan_end;
        seen.extend(batches.iter().map(|b| b.0));
    }
    assert!(!seen.is_empty());
    assert_eq!(seen, tagged_a[..seen.len()], "only tag a's batches, in order");
}

/// Behind a long poll at the end of the queue, a FETCH_NEXT waits for it to be answered, then
/// long-polls from there: two appends come as two answers, one each.
#[test]
fn a_fetch_next_behind_a_long_poll_waits_for_it_and_then_for_the_next_append() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("l", 1).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let mut raw = Raw::connect(port(&broker));
    raw.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut first = fetch("l", 0, 0, 1 << 20, Vec::new());
    if let Request::Fetch { max_wait_ms, .. } = &mut first {
        *max_wait_ms = 15_000;
    }
    raw.send(&first.encode_frame(1));
    raw.send(&next(1, 1 << 20, 15_000).encode_frame(2));
    // Both are parked (the second behind the first); then two appends, a while apart.
    std::thread::sleep(Duration::from_millis(300));
    producer.send(Message::new("l", "one")).unwrap();
    let (scan_end, batches) = answers(&mut raw, &[1]).remove(0).unwrap();
    assert_eq!((scan_end, batches), (1, vec![(0, 1)]));
    std::thread::sleep(Duration::from_millis(300));
    producer.send(Message::new("l", "two")).unwrap();
    let (scan_end, batches) = answers(&mut raw, &[2]).remove(0).unwrap();
    assert_eq!((scan_end, batches), (2, vec![(1, 1)]));
}

/// Nothing to continue: an id never sent, a fetch already continued, a fetch that failed, and
/// a FETCH_NEXT of a failed FETCH_NEXT. Each is refused with FETCH_CHAIN_BROKEN (counted in
/// the broker's errors) and the connection goes on.
#[test]
fn a_fetch_next_with_nothing_to_continue_is_refused_and_the_connection_goes_on() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("e", 1).unwrap();
    fill(&client, "e", 0, 20);
    let broken = Err(ErrorCode::FETCH_CHAIN_BROKEN as u16);
    let errors = || client.admin().stats().unwrap().iter().map(|s| s.errors).sum::<u64>();
    let errors_before = errors();
    let mut raw = Raw::connect(port(&broker));
    raw.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.send(&next(77, 1 << 20, 0).encode_frame(1));
    assert_eq!(answers(&mut raw, &[1]).remove(0), broken, "unknown id");
    raw.send(&fetch("e", 0, 0, 1 << 20, Vec::new()).encode_frame(2));
    raw.send(&next(2, 1 << 20, 0).encode_frame(3));
    raw.send(&next(2, 1 << 20, 0).encode_frame(4));
    let got = answers(&mut raw, &[2, 3, 4]);
    assert_eq!(got[0].as_ref().unwrap().0, 20);
    assert_eq!(got[1], Ok((20, Vec::new())), "the end of the queue: nothing new");
    assert_eq!(got[2], broken, "fetch 2 was already continued");
    // An offset past the end fails, and so does what continues it, and what continues that.
    raw.send(&fetch("e", 0, 999, 1 << 20, Vec::new()).encode_frame(5));
    raw.send(&next(5, 1 << 20, 0).encode_frame(6));
    raw.send(&next(6, 1 << 20, 0).encode_frame(7));
    let got = answers(&mut raw, &[5, 6, 7]);
    assert_eq!(got[0], Err(ErrorCode::OFFSET_OUT_OF_RANGE as u16));
    assert_eq!(&got[1..], &[broken.clone(), broken]);
    // Every refusal is counted as the broker's errors are: four broken chains and the offset.
    assert_eq!(errors() - errors_before, 5);
    // The connection still serves fetches, and chains from them.
    raw.send(&fetch("e", 0, 10, 1 << 20, Vec::new()).encode_frame(8));
    raw.send(&next(8, 1 << 20, 0).encode_frame(9));
    let got = answers(&mut raw, &[8, 9]);
    assert_eq!(got[0].as_ref().unwrap().0, 20);
    assert_eq!(got[1], Ok((20, Vec::new())));
}
