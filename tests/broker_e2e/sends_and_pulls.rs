//! Sends (async, oneway, large, batch) and pulls (long poll, tags, damaged batches).

use super::*;

#[test]
fn long_poll_wakes_on_append_and_times_out_empty() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("lp", 2).unwrap();

    // Timeout: an empty queue answers empty after about max_wait.
    let start = Instant::now();
    let r = client.consumer().pull("lp", 0, 0, Duration::from_millis(300)).unwrap();
    assert!(r.messages.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(250), "returned after {:?}", start.elapsed());

    // Wake-up: a waiting pull returns as soon as a message is appended.
    let c2 = client.clone();
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        let r = c2.consumer().pull("lp", 1, 0, Duration::from_secs(20)).unwrap();
        (r, start.elapsed())
    });
    // Produce once the fetch is parked (the broker counts parked waiters).
    poll_until(Duration::from_secs(10), || {
        let parked: u64 = client.admin().stats().unwrap().iter().map(|s| s.long_poll_waiting).sum();
        (parked >= 1).then_some(())
    });
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::Queue(1), ..Default::default() })
        .unwrap();
    producer.send(Message::new("lp", "wake")).unwrap();
    let (r, waited) = waiter.join().unwrap();
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].body, &b"wake"[..]);
    assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
    producer.close().unwrap();
}

#[test]
fn async_and_oneway_sends() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("modes", 2).unwrap();
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::Queue(1), ..Default::default() })
        .unwrap();
    let futures: Vec<_> = (0..20)
        .map(|i| producer.send_async(Message::new("modes", format!("a{i}"))).unwrap())
        .collect();
    let results = block_on(async {
        let mut out = Vec::new();
        for f in futures {
            out.push(f.await.unwrap());
        }
        out
    });
    assert_eq!(
        results.iter().map(|r| r.queue_offset).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    for i in 0..10 {
        producer.send_oneway(Message::new("modes", format!("o{i}"))).unwrap();
    }
    // Oneway sends get no reply; they show up in the queue.
    let all = poll_until(Duration::from_secs(10), || {
        let msgs = drain(&client, "modes", 1, 0);
        (msgs.len() == 30).then_some(msgs)
    });
    let oneway: Vec<_> =
        all.iter().filter(|m| m.body.starts_with(b"o")).map(|m| m.body.clone()).collect();
    assert_eq!(oneway, (0..10).map(|i| format!("o{i}").into_bytes()).collect::<Vec<_>>());
    producer.close().unwrap();
}

#[test]
fn large_batches_round_trip_through_both_write_paths() {
    // Batches over 16 KiB are written from the log's buffers; smaller ones are gathered.
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("big", 2).unwrap();
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::Queue(0), ..Default::default() })
        .unwrap();
    let bodies: Vec<Vec<u8>> = (0..40u32)
        .map(|i| (0..(i as usize * 7919) % 300_000).map(|j| (j as u32 ^ i) as u8).collect())
        .collect();
    let pending: Vec<_> = bodies
        .iter()
        .map(|b| producer.send_async(Message::new("big", b.clone())).unwrap())
        .collect();
    for p in pending {
        p.wait().unwrap();
    }
    let got: Vec<Vec<u8>> =
        drain(&client, "big", 0, 0).into_iter().map(|m| m.body.to_vec()).collect();
    assert_eq!(got.len(), bodies.len());
    assert!(got == bodies, "bodies differ");
    producer.close().unwrap();
}

#[test]
fn tag_filtered_pulls_return_only_matching_messages() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("tags", 1).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    // Synchronous sends: one batch each, so the broker can skip whole batches.
    for i in 0..30 {
        let tag = if i % 3 == 0 { "B" } else { "A" };
        producer.send(Message::new("tags", format!("{tag}{i}")).with_tag(tag)).unwrap();
    }
    // A mixed batch: the broker sends it, the consumer drops the A records.
    let mixed: Vec<_> = ["A", "B", "A"]
        .iter()
        .map(|t| {
            producer.send_async(Message::new("tags", format!("mixed-{t}")).with_tag(*t)).unwrap()
        })
        .collect();
    for p in mixed {
        p.wait().unwrap();
    }
    let mut consumer = client.consumer();
    consumer.tags = vec![b"B".to_vec()];
    consumer.max_bytes = 256; // several pulls, some answered with skips only
    let mut offset = 0;
    let mut got = Vec::new();
    for _ in 0..100 {
        let r = consumer.pull("tags", 0, offset, Duration::ZERO).unwrap();
        got.extend(r.messages.into_iter().map(|m| String::from_utf8(m.body.to_vec()).unwrap()));
        offset = r.next_offset;
        if offset >= r.max_offset {
            break;
        }
    }
    let mut expected: Vec<String> =
        (0..30).filter(|i| i % 3 == 0).map(|i| format!("B{i}")).collect();
    expected.push("mixed-B".into());
    assert_eq!(got, expected);
    let stats = client.admin().stats().unwrap();
    let fetched: u64 = stats.iter().map(|s| s.fetch_bytes).sum();
    let produced: u64 = stats.iter().map(|s| s.produce_bytes).sum();
    assert!(fetched < produced / 2, "skipped batches were not sent: {fetched} of {produced}");
    producer.close().unwrap();
}

#[test]
fn a_batch_send_is_all_or_nothing_at_contiguous_offsets() {
    let dir = tempdir();
    // The broker takes batches of at most 64 KiB; the producer would build up to 1 MiB.
    let cfg = config(dir.path(), 2, "", "max_batch_bytes = 65536");
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("bt", 2).unwrap();
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::Queue(1), ..Default::default() })
        .unwrap();
    let batch = |tag: &str, n: usize, size: usize| -> Vec<Message> {
        (0..n).map(|i| Message::new("bt", format!("{tag}{i}:{}", "x".repeat(size)))).collect()
    };
    let first = producer.send_batch(batch("a", 3, 10)).unwrap();
    assert_eq!((first.queue_id, first.offsets()), (1, 0..3));
    let second = producer.send_batch(batch("b", 50, 100)).unwrap();
    assert_eq!(second.offsets(), 3..53, "one range, right after the first batch");
    assert_eq!(second.message_ids().len(), 50);
    // Over the broker's limit: refused as a whole, nothing of it stored.
    let refused = producer.send_batch(batch("c", 10, 10_000)).unwrap_err();
    assert_eq!(refused.code(), Some(ringmq::protocol::ErrorCode::BATCH_TOO_LARGE), "{refused}");
    // Refused by the client before anything is sent: one message too large for any batch, or
    // messages for two topics.
    let mut too_large = batch("d", 3, 10);
    too_large[2].body = vec![0; 2 << 20];
    assert!(matches!(producer.send_batch(too_large), Err(ringmq::client::ClientError::Invalid(_))));
    let mut mixed = batch("e", 2, 10);
    mixed[1].topic = "other".into();
    assert!(matches!(producer.send_batch(mixed), Err(ringmq::client::ClientError::Invalid(_))));
    assert!(matches!(
        producer.send_batch(Vec::new()),
        Err(ringmq::client::ClientError::Invalid(_))
    ));
    // The queue goes on right after the last stored batch.
    let third = producer.send_batch(batch("f", 5, 10)).unwrap();
    assert_eq!(third.offsets(), 53..58);
    let stored = drain(&client, "bt", 1, 0);
    let expected: Vec<Message> =
        [batch("a", 3, 10), batch("b", 50, 100), batch("f", 5, 10)].concat();
    assert_eq!(stored.len(), expected.len(), "only the stored batches, each whole");
    for (i, (got, want)) in stored.iter().zip(&expected).enumerate() {
        assert_eq!((got.offset, &got.body), (i as u64, &bytes::Bytes::from(want.body.clone())));
        assert_eq!(
            got.message_id,
            [&first, &second, &third]
                .iter()
                .find_map(|r| r
                    .offsets()
                    .contains(&(i as u64))
                    .then(|| r.message_id((i as u64 - r.first_offset) as u32).unwrap()))
                .unwrap()
        );
    }
    assert!(drain(&client, "bt", 0, 0).is_empty(), "the batches went to the selected queue");
    // The same messages read in place from the fetch buffer.
    let view = client.consumer().pull_view("bt", 1, 1, Duration::ZERO).unwrap();
    let in_place: Vec<(u64, &[u8])> = view.messages().map(|m| (m.offset, m.body())).collect();
    let owned: Vec<(u64, &[u8])> =
        stored.iter().skip(1).take(in_place.len()).map(|m| (m.offset, &m.body[..])).collect();
    assert!(!in_place.is_empty());
    assert_eq!(in_place, owned);
    producer.close().unwrap();
}

/// The producer keeps the broker's window of batches per queue unanswered (INIT_PRODUCER_WINDOW)
/// and refuses a setting over it; a burst of small batches over one queue, many in flight at
/// once, is stored once each, in order.
#[test]
fn a_producer_pipelines_up_to_the_broker_s_window_per_queue() {
    use ringmq::protocol::producer_id::WINDOW_BATCHES;
    let dir = tempdir();
    let cfg = config(dir.path(), 1, "", "flush_mode = \"sync\"");
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("win", 1).unwrap();
    let producer = client
        .producer(ProducerConfig {
            // About 10 messages a batch: the burst is ~200 batches on one queue.
            max_batch_bytes: 2048,
            pipeline_min_batch_bytes: 0,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(producer.max_in_flight_per_queue(), WINDOW_BATCHES);
    let over =
        ProducerConfig { max_in_flight_per_queue: Some(WINDOW_BATCHES + 1), ..Default::default() };
    let e = client.producer(over).err().expect("over the broker's window");
    assert!(matches!(e, ringmq::client::ClientError::Invalid(_)), "{e}");
    let zero = ProducerConfig { max_in_flight_per_queue: Some(0), ..Default::default() };
    assert!(client.producer(zero).is_err());
    let handles: Vec<_> = (0..2000)
        .map(|i| {
            producer.send_async(Message::new("win", format!("m{i:04}{}", "x".repeat(120)))).unwrap()
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait().unwrap().queue_offset, i as u64, "in send order, once each");
    }
    let stored = drain(&client, "win", 0, 0);
    assert_eq!(stored.len(), 2000);
    assert!(stored
        .iter()
        .enumerate()
        .all(|(i, m)| m.body.starts_with(format!("m{i:04}").as_bytes())));
    producer.close().unwrap();
}

/// Flips one byte of the first `.log` file under `dir` that holds `needle`, inside `needle`.
fn damage_stored(dir: &std::path::Path, needle: &[u8]) {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                let mut bytes = std::fs::read(&p).unwrap();
                if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                    bytes[at + needle.len() - 1] ^= 0x20;
                    std::fs::write(&p, bytes).unwrap();
                    return;
                }
            }
        }
    }
    panic!("no log file holds {:?}", String::from_utf8_lossy(needle));
}

#[test]
fn a_batch_damaged_on_disk_is_reported_with_its_offsets_and_can_be_skipped() {
    let dir = tempdir();
    let cfg = config(dir.path(), 1, "", "flush_mode = \"sync\"\npreallocate = false");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("d", 1).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    for i in 0..10 {
        producer.send(Message::new("d", format!("damage-me-{i:02}"))).unwrap();
    }
    producer.close().unwrap();
    drop(client);
    assert!(broker.stop().success());
    damage_stored(&dir.path().join("data"), b"damage-me-05");

    // After a restart the batch is read from disk, where its checksum no longer matches.
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    let consumer = client.consumer();
    let bodies = |r: &ringmq::client::PullResult| -> Vec<String> {
        r.messages.iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect()
    };
    // A pull across it delivers what precedes it and stops there.
    let r = consumer.pull("d", 0, 0, Duration::ZERO).unwrap();
    let before: Vec<String> = (0..r.next_offset).map(|i| format!("damage-me-{i:02}")).collect();
    assert_eq!(bodies(&r), before);
    assert!(r.next_offset <= 5);
    // A pull that starts at it names the damaged batch's offsets instead of a bare failure.
    let (first, next) = match consumer.pull("d", 0, r.next_offset, Duration::ZERO) {
        Err(ringmq::client::ClientError::CorruptData {
            first_offset, next_offset, reason, ..
        }) => {
            assert!(reason.contains("broker"), "{reason}");
            (first_offset, next_offset)
        }
        other => panic!("expected CorruptData, got {other:?}"),
    };
    assert_eq!(first, r.next_offset);
    assert!(first <= 5 && 5 < next, "[{first}, {next}) holds message 5");
    // Skipping it explicitly: the rest of the queue is intact.
    let rest = consumer.pull("d", 0, next, Duration::ZERO).unwrap();
    let after: Vec<String> = (next..10).map(|i| format!("damage-me-{i:02}")).collect();
    assert_eq!(bodies(&rest), after);

    // The CLI stops there and says how to skip, or skips with --skip-corrupt and says so.
    let cli = |extra: &[&str]| {
        let mut args = vec!["consume", "--topic", "d", "--broker"];
        let addr = broker.addr();
        args.push(&addr);
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_ringmq")).args(&args).output().unwrap()
    };
    let out = cli(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("pull from offset {next} to skip it")), "{err}");
    let out = cli(&["--skip-corrupt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("skipped the damaged batch at offsets [{first}, {next})")),
        "{err}"
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.lines().count() as u64, 10 - (next - first), "{printed}");
    assert!(!printed.contains("damage-me-05"));
}
