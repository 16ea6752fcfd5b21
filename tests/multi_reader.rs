//! The many-queue reader (`MultiQueueReader`, FETCH_MULTI) against the real `ringmq` binary:
//! every message of many queues on two shards once and in order per queue, while they are
//! written and from a cold log; seeks; a queue's own failure; FETCH_MULTI on the shared port
//! answered for the queues of every shard, and its wait on each shard ended by the first answer.

mod broker_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker_common::{config, poll_until, Broker, Raw};
use ringmq::broker::routing::owner_shard;
use ringmq::client::{Client, Message, MultiQueueReader, ProducerConfig, QueueSelector};
use ringmq::protocol::fetch_multi::{FetchMulti, FetchQueue, FetchTopic};
use ringmq::protocol::{ApiKey, ErrorCode, Request, Response};

const QUEUES: u32 = 48;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-multi").tempdir().unwrap()
}

fn body(i: u64) -> String {
    format!("{i:06}-{}", "y".repeat(200))
}

/// Sends `from..to` round-robin over the topic's queues, a message at a time.
fn produce(addr: &str, topic: &str, from: u64, to: u64) {
    let client = Client::connect(addr).unwrap();
    let config = ProducerConfig { selector: QueueSelector::RoundRobin, ..Default::default() };
    let producer = client.producer(config).unwrap();
    let pending: Vec<_> =
        (from..to).map(|i| producer.send_async(Message::new(topic, body(i))).unwrap()).collect();
    for p in pending {
        p.wait().unwrap();
    }
    producer.close().unwrap();
}

/// Reads until the queues' positions add up to `total` (bounded in time): each queue's
/// (offset, body number) in the order they came.
fn read_to(reader: &mut MultiQueueReader, total: u64) -> BTreeMap<usize, Vec<(u64, u64)>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
    while (0..QUEUES as usize).map(|i| reader.position(i)).sum::<u64>() < total {
        assert!(Instant::now() < deadline, "stuck");
        for (i, view) in reader.next_batches(Duration::from_millis(200)).unwrap() {
            let view = view.unwrap();
            let mine = got.entry(i).or_default();
            for m in view.messages() {
                let n = std::str::from_utf8(&m.body()[..6]).unwrap().parse().unwrap();
                mine.push((m.offset, n));
            }
            assert_eq!(reader.position(i), view.next_offset);
        }
    }
    got
}

/// Each queue's offsets from 0 with no gap or repeat, and every body once.
fn check_complete(got: &BTreeMap<usize, Vec<(u64, u64)>>, total: u64) {
    let mut bodies = Vec::new();
    for (q, msgs) in got {
        let offsets: Vec<u64> = msgs.iter().map(|m| m.0).collect();
        assert_eq!(offsets, (0..msgs.len() as u64).collect::<Vec<_>>(), "queue {q}");
        // One producer: a queue's bodies come in send order.
        assert!(msgs.windows(2).all(|w| w[0].1 < w[1].1), "queue {q} out of order");
        bodies.extend(msgs.iter().map(|m| m.1));
    }
    bodies.sort_unstable();
    assert_eq!(bodies, (0..total).collect::<Vec<_>>());
}

#[test]
fn a_multi_reader_reads_queues_of_two_shards_while_written_and_from_a_cold_log() {
    let dir = tempdir();
    // A small chunk cache: the second read comes from disk.
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", "cache_bytes = 1048576"));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("m", QUEUES).unwrap();
    let total = 12_000u64;
    let addr = broker.addr();
    let writer = std::thread::spawn(move || produce(&addr, "m", 0, total));
    let mut consumer = client.consumer();
    consumer.max_bytes = 64 << 10;
    let queues: Vec<_> = (0..QUEUES).map(|q| ("m".to_string(), q, 0)).collect();
    let mut reader = MultiQueueReader::new(consumer.clone(), &queues, Duration::from_millis(50));
    let got = read_to(&mut reader, total);
    writer.join().unwrap();
    check_complete(&got, total);

    // Again from the start: a cold log (2.7 MB against a 1 MiB cache).
    let mut cold = MultiQueueReader::new(consumer.clone(), &queues, Duration::from_millis(50));
    check_complete(&read_to(&mut cold, total), total);

    // A seek reads that queue again from there; the others have nothing new.
    let end = reader.position(5);
    reader.seek(5, end - 3);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut again = Vec::new();
    while reader.position(5) < end {
        assert!(Instant::now() < deadline);
        for (i, view) in reader.next_batches(Duration::from_millis(200)).unwrap() {
            assert_eq!(i, 5, "only the queue sought has data");
            again.extend(view.unwrap().messages().map(|m| m.offset));
        }
    }
    assert_eq!(again, (end - 3..end).collect::<Vec<_>>());

    // A queue sought past its end gets its own error, every time, until sought back; the
    // others are read on (a message written to queue 7 arrives).
    reader.seek(9, 1_000_000);
    let producer = client
        .producer(ProducerConfig {
            selector: ringmq::client::QueueSelector::Queue(7),
            ..Default::default()
        })
        .unwrap();
    producer.send(Message::new("m", body(total))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut refusals, mut arrived) = (0, false);
    while refusals < 2 || !arrived {
        assert!(Instant::now() < deadline, "refusals {refusals}, arrived {arrived}");
        for (i, view) in reader.next_batches(Duration::from_millis(200)).unwrap() {
            match (i, view) {
                (9, Err(e)) => {
                    assert_eq!(e.code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE), "{e}");
                    refusals += 1;
                }
                (7, Ok(v)) => arrived |= v.messages().count() == 1,
                (i, v) => panic!("queue {i}: {:?}", v.map(|v| v.next_offset)),
            }
        }
    }
    assert_eq!(reader.position(9), 1_000_000);
}

/// A FETCH_MULTI on the broker's shared port names queues of both shards: the receiving
/// shard asks the other for its queues, and every queue's batches come back by index.
#[test]
fn a_fetch_multi_on_the_shared_port_is_answered_for_the_queues_of_every_shard() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("m", QUEUES).unwrap();
    let total = 2_400u64;
    produce(&broker.addr(), "m", 0, total);
    let port: u16 = broker.addr().rsplit(':').next().unwrap().parse().unwrap();
    let mut raw = Raw::connect(port);
    // Queues in reverse, and one that does not exist: results by index.
    let mut queues: Vec<_> =
        (0..QUEUES).rev().map(|q| FetchQueue { queue_id: q, offset: 0 }).collect();
    queues.push(FetchQueue { queue_id: QUEUES, offset: 0 });
    let request = Request::FetchMulti(FetchMulti {
        max_bytes: 16 << 20,
        max_wait_ms: 0,
        topics: vec![FetchTopic { topic: "m".into(), tags: Vec::new(), queues }],
    });
    raw.send(&request.encode_frame(1));
    let (header, payload) = raw.read_frame().unwrap();
    assert_eq!(header.error_code, 0);
    let Response::FetchMulti { results } = Response::decode(ApiKey::FetchMulti, &payload).unwrap()
    else {
        panic!()
    };
    assert_eq!(results.len(), QUEUES as usize + 1);
    let mut records = 0u64;
    for r in &results[..QUEUES as usize] {
        let f = r.result.as_ref().unwrap();
        let mut rest = &f.batches[..];
        let mut n = 0;
        while !rest.is_empty() {
            let v = ringmq::format::BatchView::parse(rest, 1 << 20).unwrap();
            let stamp = v.header.stamp;
            assert_eq!(stamp.queue_id, QUEUES - 1 - r.index, "index {} is its queue", r.index);
            n += u64::from(v.header.record_count);
            rest = &rest[v.header.length as usize..];
        }
        assert_eq!(f.scan_end_offset, n);
        assert_eq!(f.next_offset, n);
        records += n;
    }
    assert_eq!(records, total);
    let last = results[QUEUES as usize].result.as_ref().unwrap_err();
    assert_eq!(last.code, ErrorCode::UNKNOWN_QUEUE as u16);
}

/// A FETCH_MULTI with nothing to read waits on both shards (the one that received it, and the
/// other for its queues); an append to one shard's queue answers it, and the other shard stops
/// waiting at once. Left waiting, that shard held a forwarded-request permit and a long-poll
/// slot until the request's deadline (15 s here), and read what came meanwhile for nobody.
/// One round appends to a queue of each shard, so in one of them the answer comes from the
/// shard that received the request while the other's wait was forwarded.
#[test]
fn a_fetch_multi_answered_by_one_shard_stops_waiting_on_the_other() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("w", 8).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let port: u16 = broker.addr().rsplit(':').next().unwrap().parse().unwrap();
    let mut raw = Raw::connect(port);
    let waiting =
        || client.admin().stats().unwrap().iter().map(|s| s.long_poll_waiting).sum::<u64>();
    let mut ends = [0u64; 8];
    for (round, shard) in [0usize, 1].into_iter().enumerate() {
        let queues = (0..8u32).map(|q| FetchQueue { queue_id: q, offset: ends[q as usize] });
        let request = Request::FetchMulti(FetchMulti {
            max_bytes: 1 << 20,
            max_wait_ms: 15_000,
            topics: vec![FetchTopic {
                topic: "w".into(),
                tags: Vec::new(),
                queues: queues.collect(),
            }],
        });
        raw.send(&request.encode_frame(round as u32 + 1));
        poll_until(Duration::from_secs(10), || (waiting() == 2).then_some(()));
        let q = (0..8u32).find(|&q| owner_shard("w", q, 2).get() == shard).unwrap();
        producer.send_with(Message::new("w", "x"), &QueueSelector::Queue(q)).unwrap();
        ends[q as usize] += 1;
        let (header, payload) = raw.read_frame().unwrap();
        assert_eq!(header.error_code, 0);
        let Response::FetchMulti { results } =
            Response::decode(ApiKey::FetchMulti, &payload).unwrap()
        else {
            panic!()
        };
        let part = results.iter().find(|r| r.index == q).expect("the appended queue's part");
        assert_eq!(part.result.as_ref().unwrap().next_offset, ends[q as usize]);
        poll_until(Duration::from_secs(5), || (waiting() == 0).then_some(()));
    }
}

/// Queues added, removed and paused while requests are in flight (a push consumer's queues
/// move with rebalances): a removed queue's batches are never returned once it is removed, its
/// index goes to the next queue added, a paused queue is not read until resumed, and
/// `caught_up` says when every queue was read to its end.
#[test]
fn queues_come_and_go_and_pause_while_read() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("c", 4).unwrap();
    produce(&broker.addr(), "c", 0, 400); // 100 per queue
    let consumer = client.consumer();
    let mut reader = MultiQueueReader::new(consumer, &[], Duration::from_millis(50));
    assert!(reader.is_empty() && reader.caught_up(), "nothing to read is caught up");
    let q0 = reader.add("c", 0, 0, Vec::new());
    let q1 = reader.add("c", 1, 0, Vec::new());
    reader.set_paused(q1, true);
    assert!(!reader.caught_up(), "added queues are not read yet");
    // Only queue 0 is read while queue 1 is paused.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counts = [0u64; 2];
    while counts[0] < 100 {
        assert!(Instant::now() < deadline, "stuck: {counts:?}");
        for (i, view) in reader.next_batches(Duration::from_millis(100)).unwrap() {
            assert_eq!(i, q0, "a paused queue is not read");
            counts[0] += view.unwrap().messages().count() as u64;
        }
    }
    // Queue 0 read to its end, queue 1 never: the reader is not caught up because of it.
    let _ = reader.next_batches(Duration::from_millis(200)).unwrap();
    assert_eq!((reader.position(q0), reader.position(q1)), (100, 0));
    assert!(!reader.caught_up());
    // Resumed, it is read to its end, and then the reader is caught up.
    reader.set_paused(q1, false);
    while !reader.caught_up() {
        assert!(Instant::now() < deadline, "stuck: {counts:?}");
        for (i, view) in reader.next_batches(Duration::from_millis(100)).unwrap() {
            counts[if i == q0 { 0 } else { 1 }] += view.unwrap().messages().count() as u64;
        }
    }
    assert_eq!(counts, [100, 100]);
    // Queue 0 removed while a request for it waits at the broker; a message for it is never
    // returned, and its index is reused by the next queue once that request is answered.
    let _ = reader.next_batches(Duration::from_millis(10)).unwrap(); // requests out again
    reader.remove(q0);
    assert_eq!(reader.len(), 1);
    produce(&broker.addr(), "c", 400, 404); // one more per queue
    let q3 = reader.add("c", 3, 0, Vec::new());
    let mut got3 = 0;
    while got3 < 101 || reader.position(q1) < 101 {
        assert!(Instant::now() < deadline, "stuck: {got3}");
        for (i, view) in reader.next_batches(Duration::from_millis(100)).unwrap() {
            let view = view.unwrap();
            let (topic, queue) = reader.queue(i);
            assert_eq!(topic, "c");
            assert!(queue == 1 || queue == 3, "queue {queue} was removed");
            if queue == 3 {
                got3 += view.messages().count();
            }
        }
    }
    assert_eq!(reader.len(), 2);
    assert!(q3 == q0 || q3 == 2, "index {q3}: a removed index is reused, or the next one");
    // Queues removed and added back to back, before the reader turns: each read once.
    let q2 = reader.add("c", 2, 0, Vec::new());
    reader.remove(q2);
    let q2 = reader.add("c", 2, 0, Vec::new());
    reader.remove(q3);
    let q3 = reader.add("c", 3, 50, Vec::new());
    let mut got = [0usize; 4];
    while got[2] < 101 || got[3] < 51 {
        assert!(Instant::now() < deadline, "stuck: {got:?}");
        for (i, view) in reader.next_batches(Duration::from_millis(100)).unwrap() {
            let n = view.unwrap().messages().count();
            got[reader.queue(i).1 as usize] += n;
        }
    }
    let _ = reader.next_batches(Duration::from_millis(200)).unwrap();
    assert_eq!((got[2], got[3]), (101, 51), "every message once");
    assert_eq!((reader.position(q2), reader.position(q3)), (101, 101));
}

/// A queue with tags keeps only its tags' messages and moves past the others.
#[test]
fn a_queue_added_with_tags_gets_only_those_tags() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("g", 1).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    for i in 0..60u64 {
        let tag = ["A", "B", "C"][i as usize % 3];
        producer.send(Message::new("g", body(i)).with_tag(tag)).unwrap();
    }
    producer.close().unwrap();
    let mut reader = MultiQueueReader::new(client.consumer(), &[], Duration::from_millis(50));
    let q = reader.add("g", 0, 0, vec![b"B".to_vec()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !reader.caught_up() {
        assert!(Instant::now() < deadline, "stuck");
        for (_, view) in reader.next_batches(Duration::from_millis(100)).unwrap() {
            seen.extend(view.unwrap().messages().map(|m| (m.offset, m.record.tag.to_vec())));
        }
    }
    assert_eq!(reader.position(q), 60);
    let offsets: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(offsets, (0..60).filter(|i| i % 3 == 1).collect::<Vec<_>>());
    assert!(seen.iter().all(|s| s.1 == b"B"));
}

/// Queues added one at a time while the first requests wait at the broker (a push consumer
/// taking queues as their locks come) go out in one extra request, not one each: the requests
/// in flight stay within two per shard connection plus one (`LANES` + 1).
#[test]
fn queues_added_one_at_a_time_do_not_multiply_the_requests_in_flight() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("idle", 64).unwrap();
    let mut reader = MultiQueueReader::new(client.consumer(), &[], Duration::from_millis(2_000));
    let mut most = 0;
    for q in 0..64 {
        reader.add("idle", q, 0, Vec::new());
        assert!(reader.next_batches(Duration::from_millis(2)).unwrap().is_empty());
        most = most.max(reader.in_flight());
    }
    assert_eq!(most, ringmq::client::multi_reader::LANES + 1, "requests in flight");
    // A message for the last queue added still comes at once (its request is parked at the
    // broker, which answers it on the append).
    produce(&broker.addr(), "idle", 0, 64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < 64 {
        assert!(Instant::now() < deadline, "stuck at {got}");
        for (_, view) in reader.next_batches(Duration::from_millis(100)).unwrap() {
            got += view.unwrap().messages().count();
        }
    }
}
