//! The pipelined queue reader (`PullConsumer::stream`) against the real `ringmq` binary:
//! order and completeness across many fetches, from the middle of a stored batch, after a
//! seek, and while the queue is being written.

mod broker_common;

use std::time::{Duration, Instant};

use broker_common::{config, free_port_block, Broker};
use ringmq::client::{Client, Message, ProducerConfig, QueueReader, QueueSelector};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-reader").tempdir().unwrap()
}

/// Reads until the reader's position reaches `end` (bounded in time); (offset, body) of
/// every message, and the number of batches handed out.
fn read_to(reader: &mut QueueReader, end: u64) -> (Vec<(u64, String)>, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: Vec<(u64, String)> = Vec::new();
    let mut batches = 0;
    while reader.position() < end {
        assert!(Instant::now() < deadline, "stuck at {} of {end}", reader.position());
        let Some(view) = reader.next_batch(Duration::from_millis(200)).unwrap() else { continue };
        batches += 1;
        assert_eq!(
            view.from_offset(),
            got.last().map_or(view.from_offset(), |l: &(u64, String)| l.0 + 1)
        );
        for m in view.messages() {
            got.push((m.offset, String::from_utf8(m.body().to_vec()).unwrap()));
        }
        assert_eq!(reader.position(), view.next_offset);
    }
    (got, batches)
}

#[test]
fn a_stream_reads_a_queue_in_order_across_many_fetches() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("s", 2).unwrap();
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::Queue(1), ..Default::default() })
        .unwrap();
    // Batches of 1..=37 messages, so fetch boundaries fall inside and between batches.
    let total = 3000u64;
    let mut n = 0u64;
    let mut size = 1u64;
    while n < total {
        let k = size.min(total - n);
        let msgs = (n..n + k).map(|i| Message::new("s", format!("m{i:05}-{}", "x".repeat(50))));
        let r = producer.send_batch(msgs.collect()).unwrap();
        assert_eq!(r.offsets(), n..n + k);
        n += k;
        size = size % 37 + 1;
    }
    let expected = |from: u64| -> Vec<(u64, String)> {
        (from..total).map(|i| (i, format!("m{i:05}-{}", "x".repeat(50)))).collect()
    };
    let mut consumer = client.consumer();
    consumer.max_bytes = 4096;

    let mut reader = consumer.stream("s", 1, 0);
    let (got, batches) = read_to(&mut reader, total);
    assert_eq!(got, expected(0), "in order, no gaps, no duplicates");
    assert!(batches >= 40, "only {batches} fetches: the test must cross many");
    // The fetch buffers were reused: a bounded set, not one per fetch.
    assert!(reader.pool().free_buffers() <= 3);
    assert!(reader.outstanding_fetches() <= 2);

    // One fetch at a time (no FETCH_NEXT behind it): the same messages.
    let mut reader = consumer.stream("s", 1, 0).with_fetch_next(false);
    let (got, _) = read_to(&mut reader, total);
    assert_eq!(got, expected(0));
    assert!(reader.outstanding_fetches() <= 1);

    // From inside a stored batch (the broker returns it whole; the reader skips the head).
    let mut reader = consumer.stream("s", 1, 1234).with_prefetch(false);
    let first = reader.next_batch(Duration::from_secs(5)).unwrap().expect("a batch");
    assert_eq!(reader.outstanding_fetches(), 0, "prefetch is off");
    let mut got: Vec<(u64, String)> = first
        .messages()
        .map(|m| (m.offset, String::from_utf8(m.body().to_vec()).unwrap()))
        .collect();
    drop(first);
    got.extend(read_to(&mut reader, total).0);
    assert_eq!(got, expected(1234));

    // A seek drops what was fetched ahead and reads from the new offset.
    let mut reader = consumer.stream("s", 1, 0);
    let first = reader.next_batch(Duration::from_secs(5)).unwrap().expect("a batch");
    // The next fetch, and a FETCH_NEXT behind it, went out before the caller looked at this
    // batch.
    assert_eq!(reader.outstanding_fetches(), 2, "no prefetch");
    assert_eq!(first.messages().next().unwrap().offset, 0);
    drop(first);
    reader.seek(2500);
    assert_eq!(read_to(&mut reader, total).0, expected(2500));

    // The other queue is empty: a long poll that ends with nothing leaves the position.
    let mut empty = consumer.stream("s", 0, 0).with_max_wait(Duration::from_millis(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        if let Some(v) = empty.next_batch(Duration::from_millis(200)).unwrap() {
            break v;
        }
        assert!(Instant::now() < deadline);
    };
    assert_eq!((view.messages().count(), empty.position()), (0, 0));
    // At the end of the queue the next fetch is a long poll, with no FETCH_NEXT behind it.
    assert_eq!(empty.outstanding_fetches(), 1);
}

#[test]
fn a_stream_follows_a_queue_while_it_is_written() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("live", 1).unwrap();
    let total = 2000u64;
    let addr = broker.addr();
    let writer = std::thread::spawn(move || {
        let client = Client::connect(&addr).unwrap();
        let producer = client.producer(ProducerConfig::default()).unwrap();
        let pending: Vec<_> = (0..total)
            .map(|i| producer.send_async(Message::new("live", format!("{i}"))).unwrap())
            .collect();
        for p in pending {
            p.wait().unwrap();
        }
        producer.close().unwrap();
    });
    let mut reader =
        client.consumer().stream("live", 0, 0).with_max_wait(Duration::from_millis(50));
    let (got, _) = read_to(&mut reader, total);
    writer.join().unwrap();
    let offsets: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(offsets, (0..total).collect::<Vec<_>>());
    // One producer, one queue: bodies in send order.
    let bodies: Vec<u64> = got.iter().map(|g| g.1.parse().unwrap()).collect();
    assert_eq!(bodies, (0..total).collect::<Vec<_>>());
}

#[test]
fn a_stream_rides_out_a_broker_restart_without_gaps_or_duplicates() {
    let dir = tempdir();
    let port = free_port_block(3);
    let cfg = config(dir.path(), 2, &format!("port = {port}"), "");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("rr", 1).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let total = 600u64;
    for b in 0..6 {
        let msgs = (b * 100..(b + 1) * 100).map(|i| Message::new("rr", format!("{i}"))).collect();
        producer.send_batch(msgs).unwrap();
    }
    producer.close().unwrap();
    let mut consumer = client.consumer();
    consumer.max_bytes = 2048;
    consumer.retry_timeout = Duration::from_secs(60);
    let mut reader = consumer.stream("rr", 0, 0);
    let first = reader.next_batch(Duration::from_secs(5)).unwrap().expect("a batch");
    let mut got: Vec<(u64, String)> = first
        .messages()
        .map(|m| (m.offset, String::from_utf8(m.body().to_vec()).unwrap()))
        .collect();
    drop(first);
    assert!(!got.is_empty() && reader.position() < total);
    // The prefetched fetch fails with the connection (or was answered before the stop); the
    // reader retries as a pull, with backoff, until the broker is back.
    assert!(broker.stop().success());
    let reading = std::thread::spawn(move || read_to(&mut reader, total).0);
    let broker = Broker::start_in(dir.path(), &cfg);
    got.extend(reading.join().unwrap());
    let expected: Vec<(u64, String)> = (0..total).map(|i| (i, format!("{i}"))).collect();
    assert_eq!(got, expected);
    drop(broker);
}
