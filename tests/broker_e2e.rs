//! End-to-end tests against the real `ringmq` binary: routing across shards, ordering,
//! long-poll, restart and crash durability.

mod broker_common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use broker_common::{config, drain, free_port_block, poll_until, Broker};
use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};
use ringmq::protocol::{Request, Response, SendStatus};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-e2e").tempdir().unwrap()
}

#[test]
fn round_trip_across_two_shards() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    assert_eq!(broker.shard_ports.len(), 2);
    let client = Client::connect(&broker.addr()).unwrap();
    let admin = client.admin();
    assert_eq!(admin.create_topic("orders", 8).unwrap(), 1);
    let route = admin.route("orders").unwrap();
    assert_eq!(route.queue_count(), 8);
    for port in &broker.shard_ports {
        assert!(route.queue_ports.contains(port), "queues spread over both shards");
    }

    let producer = client.producer(ProducerConfig::default()).unwrap();
    let pending: Vec<_> = (0..200)
        .map(|i| {
            producer.send_async(Message::new("orders", format!("m{i}")).with_tag("T")).unwrap()
        })
        .collect();
    let mut sent = BTreeMap::new();
    for p in pending {
        let r = p.wait().unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        sent.insert((r.queue_id, r.queue_offset), r.message_id());
    }
    assert_eq!(sent.len(), 200);
    let mut bodies = Vec::new();
    for q in 0..8 {
        for m in drain(&client, "orders", q, 0) {
            assert_eq!(sent.get(&(q, m.offset)), Some(&m.message_id));
            assert_eq!(m.tag, b"T");
            bodies.push(String::from_utf8(m.body).unwrap());
        }
    }
    bodies.sort_by_key(|b| b[1..].parse::<u32>().unwrap());
    assert_eq!(bodies, (0..200).map(|i| format!("m{i}")).collect::<Vec<_>>());

    // A request sent to the wrong shard's own port is forwarded to the owner.
    let wrong = (0..8u32)
        .find(|&q| route.queue_ports[q as usize] != broker.shard_ports[0])
        .expect("a queue owned by shard 1");
    let conn = client.router().connection(broker.shard_ports[0]).unwrap();
    let r = conn
        .call(
            &Request::Offsets { topic: "orders".into(), queue_id: wrong, timestamp_ms: -1 },
            Duration::from_secs(10),
        )
        .unwrap();
    let Response::Offsets { next_offset, .. } = r else { panic!("{r:?}") };
    assert_eq!(next_offset, sent.keys().filter(|(q, _)| *q == wrong).count() as u64);
    let stats = admin.stats().unwrap();
    assert_eq!(stats.len(), 2);
    assert!(stats.iter().map(|s| s.forwarded_in).sum::<u64>() >= 1);
    producer.close().unwrap();
}

#[test]
fn messages_with_one_key_arrive_in_send_order() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("ordered", 4).unwrap();
    let producer = client
        .producer(ProducerConfig {
            selector: QueueSelector::KeyHash,
            linger: Duration::from_millis(1),
            max_batch_bytes: 2048, // many batches, so ordering across batches is exercised
            ..Default::default()
        })
        .unwrap();
    let keys = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let mut pending = Vec::new();
    for i in 0..300 {
        for k in keys {
            pending.push(
                producer
                    .send_async(Message::new("ordered", format!("{k}:{i}")).with_key(k))
                    .unwrap(),
            );
        }
    }
    for p in pending {
        p.wait().unwrap();
    }
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    let mut key_queue: HashMap<String, u32> = HashMap::new();
    for q in 0..4 {
        for m in drain(&client, "ordered", q, 0) {
            let body = String::from_utf8(m.body).unwrap();
            let (k, i) = body.split_once(':').unwrap();
            assert_eq!(k.as_bytes(), m.key.as_slice());
            assert_eq!(*key_queue.entry(k.to_owned()).or_insert(q), q, "a key stays on one queue");
            per_key.entry(k.to_owned()).or_default().push(i.parse().unwrap());
        }
    }
    for k in keys {
        assert_eq!(per_key[k], (0..300).collect::<Vec<_>>(), "key {k} out of order");
    }
    producer.close().unwrap();
}

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
    assert_eq!(r.messages[0].body, b"wake");
    assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
    producer.close().unwrap();
}

#[test]
fn restart_keeps_topics_data_and_never_reuses_ids() {
    let dir = tempdir();
    let cfg = config(dir.path(), 2, "", "flush_mode = \"async\"");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    let admin = client.admin();
    assert_eq!(admin.create_topic("keep", 4).unwrap(), 1);
    assert_eq!(admin.create_topic("gone", 2).unwrap(), 2);
    assert_eq!(admin.delete_topic("gone").unwrap(), 2);
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let mut sent = Vec::new();
    for i in 0..50 {
        let r = producer.send(Message::new("keep", format!("v{i}")).with_key("k")).unwrap();
        sent.push((r.queue_id, r.queue_offset, format!("v{i}")));
    }
    producer.close().unwrap();
    drop(client);
    let status = broker.stop();
    assert!(status.success(), "clean stop exits 0, got {status:?}");

    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    let admin = client.admin();
    let topics = admin.list_topics().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(
        (topics[0].name.as_str(), topics[0].topic_id, topics[0].queue_count),
        ("keep", 1, 4)
    );
    for (q, offset, body) in &sent {
        let r = client.consumer().pull("keep", *q, *offset, Duration::ZERO).unwrap();
        assert_eq!(r.messages[0].body, body.as_bytes());
    }
    assert_eq!(admin.create_topic("gone", 2).unwrap(), 3, "ids are never reused");
}

#[test]
fn sigkill_during_sync_flush_loses_nothing_acknowledged() {
    let dir = tempdir();
    let cfg = config(dir.path(), 2, "", "flush_mode = \"sync\"");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("durable", 4).unwrap();

    // Several producers send synchronously until the broker dies under them.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for t in 0..3 {
        let client = client.clone();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let producer = client
                .producer(ProducerConfig {
                    send_timeout: Duration::from_secs(2),
                    ..Default::default()
                })
                .unwrap();
            for i in 0.. {
                match producer.send(Message::new("durable", format!("{t}-{i}"))) {
                    Ok(r) if r.status == SendStatus::SendOk => {
                        let _ = tx.send((r.queue_id, r.queue_offset, format!("{t}-{i}")));
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    drop(tx);
    let mut acked = Vec::new();
    while acked.len() < 300 {
        acked.push(rx.recv_timeout(Duration::from_secs(30)).expect("acks keep coming"));
    }
    broker.kill();
    acked.extend(rx.iter());
    for t in threads {
        t.join().unwrap();
    }
    drop(client);

    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    let mut stored: HashMap<(u32, u64), String> = HashMap::new();
    for q in 0..4 {
        let msgs = drain(&client, "durable", q, 0);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.offset, i as u64, "offsets are dense");
            stored.insert((q, m.offset), String::from_utf8(m.body.clone()).unwrap());
        }
    }
    let mut bodies: Vec<&String> = stored.values().collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), stored.len(), "no message stored twice");
    for (q, offset, body) in &acked {
        assert_eq!(
            stored.get(&(*q, *offset)),
            Some(body),
            "acknowledged {body} at {q}/{offset} lost"
        );
    }
}

#[test]
fn shared_port_spreads_connections_over_shards() {
    // glommio binds every listener with SO_REUSEPORT; the kernel hashes connections over the
    // shards' listeners on the shared port. 32 connections all landing on one of two shards
    // has probability 2^-31.
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let conns: Vec<_> = (0..32).map(|_| broker_common::Raw::connect(broker.shared_port)).collect();
    let client = Client::connect(&format!("127.0.0.1:{}", broker.shard_ports[0])).unwrap();
    let per_shard = poll_until(Duration::from_secs(10), || {
        let stats = client.admin().stats().unwrap();
        let open: Vec<u64> = stats.iter().map(|s| s.connections_open).collect();
        // Ours: 32 on the shared port plus the admin connection on shard 0's own port.
        (open.iter().sum::<u64>() >= 33).then_some(open)
    });
    assert!(per_shard.iter().all(|&n| n >= 1), "connections per shard: {per_shard:?}");
    drop(conns);
}

#[test]
fn a_different_shard_count_is_refused_with_a_clear_message() {
    let dir = tempdir();
    let mut broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    Client::connect(&broker.addr()).unwrap().admin().create_topic("t", 2).unwrap();
    assert!(broker.stop().success());
    let cfg_path = dir.path().join("one.toml");
    std::fs::write(&cfg_path, config(dir.path(), 1, "", "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["broker", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 shards") && err.contains("shards = 2"), "{err}");
}

#[test]
fn sigterm_answers_in_flight_requests_then_exits_zero() {
    let dir = tempdir();
    let mut broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("s", 2).unwrap();
    // A long-poll parked on each shard: stopping must answer them, not drop them.
    let waiters: Vec<_> = (0..2)
        .map(|q| {
            let c = client.clone();
            std::thread::spawn(move || c.consumer().pull("s", q, 0, Duration::from_secs(25)))
        })
        .collect();
    // And one forwarded: sent to the port of the shard that does not own the queue.
    let route = client.admin().route("s").unwrap();
    let (q, port) = (0..2u32)
        .find_map(|q| {
            let owner = route.queue_ports[q as usize];
            broker.shard_ports.iter().find(|&&p| p != owner).map(|&p| (q, p))
        })
        .unwrap();
    let mut raw = broker_common::Raw::connect(port);
    let fetch = Request::Fetch {
        topic: "s".into(),
        queue_id: q,
        offset: 0,
        max_bytes: 1024,
        max_wait_ms: 25_000,
        tags: Vec::new(),
    };
    raw.send(&fetch.encode_frame(9));
    poll_until(Duration::from_secs(10), || {
        let stats = client.admin().stats().unwrap();
        let parked: u64 = stats.iter().map(|s| s.long_poll_waiting).sum();
        let forwarded: u64 = stats.iter().map(|s| s.forwarded_in).sum();
        (parked >= 3 && forwarded >= 1).then_some(())
    });
    let t = Instant::now();
    let status = broker.stop();
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "stop took {:?}", t.elapsed());
    for w in waiters {
        let r = w.join().unwrap().expect("the parked fetch got its (empty) answer");
        assert!(r.messages.is_empty());
    }
    let (h, _) = raw.read_frame().expect("the forwarded fetch was answered before the close");
    assert_eq!((h.correlation_id, h.error_code), (9, 0));
}

/// Runs a future to completion on this thread (the client's futures need no runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "future did not complete");
        std::thread::park_timeout(Duration::from_millis(100));
    }
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

/// Round-robin and sticky selection count per topic (RocketMQ keeps one `sendWhichQueue` per
/// topic): a producer alternating between two topics spreads each over all its queues. With one
/// counter for all topics, topic "rr-a" got only even queues and "rr-b" only odd ones.
#[test]
fn round_robin_spreads_each_topic_over_all_its_queues() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    for t in ["rr-a", "rr-b", "st-a", "st-b"] {
        client.admin().create_topic(t, 4).unwrap();
    }
    for (selector, topics) in [
        (QueueSelector::RoundRobin, ["rr-a", "rr-b"]),
        (QueueSelector::Sticky(2), ["st-a", "st-b"]),
    ] {
        let producer = client
            .producer(ProducerConfig { selector: selector.clone(), ..Default::default() })
            .unwrap();
        let pending: Vec<_> = (0..80)
            .map(|i| {
                let topic = topics[i % 2];
                (topic, producer.send_async(Message::new(topic, format!("m{i}"))).unwrap())
            })
            .collect();
        let mut per_queue: BTreeMap<(&str, u32), usize> = BTreeMap::new();
        let mut order: HashMap<&str, Vec<u32>> = HashMap::new();
        for (topic, p) in pending {
            let r = p.wait().unwrap();
            *per_queue.entry((topic, r.queue_id)).or_default() += 1;
            order.entry(topic).or_default().push(r.queue_id);
        }
        let even: BTreeMap<(&str, u32), usize> =
            topics.iter().flat_map(|&t| (0..4).map(move |q| ((t, q), 10))).collect();
        assert_eq!(per_queue, even, "{selector:?}: every queue of both topics, evenly");
        let expected: Vec<u32> = match selector {
            QueueSelector::Sticky(_) => (0..40).map(|i| i / 2 % 4).collect(),
            _ => (0..40).map(|i| i % 4).collect(),
        };
        for t in topics {
            assert_eq!(order[t], expected, "{selector:?}: {t} in turn");
        }
        producer.close().unwrap();
    }
}

#[test]
fn producer_retries_across_a_broker_restart() {
    let dir = tempdir();
    let port = free_port_block(3);
    let cfg = config(dir.path(), 2, &format!("port = {port}"), "");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("rt", 2).unwrap();
    // The default backoff (50 ms doubling to 1 s); a send timeout long enough for a restart
    // on a loaded test machine.
    let producer = client
        .producer(ProducerConfig { send_timeout: Duration::from_secs(60), ..Default::default() })
        .unwrap();
    let mut sent: Vec<(u32, String)> = Vec::new();
    for i in 0..10 {
        let body = format!("before{i}");
        let r = producer.send(Message::new("rt", body.clone())).unwrap();
        sent.push((r.queue_id, body));
    }
    assert!(broker.stop().success());
    // Sent while the broker is down: retried with backoff until it is back.
    let pending: Vec<_> = (0..10)
        .map(|i| {
            let body = format!("during{i}");
            (body.clone(), producer.send_async(Message::new("rt", body)).unwrap())
        })
        .collect();
    let broker = Broker::start_in(dir.path(), &cfg);
    for (body, p) in pending {
        let r = p.wait().unwrap();
        sent.push((r.queue_id, body));
    }
    // Every message exactly once, each queue in send order.
    for q in 0..2 {
        let stored: Vec<String> = drain(&client, "rt", q, 0)
            .into_iter()
            .map(|m| String::from_utf8(m.body).unwrap())
            .collect();
        let expected: Vec<String> =
            sent.iter().filter(|(queue, _)| *queue == q).map(|(_, b)| b.clone()).collect();
        assert_eq!(stored, expected, "queue {q}");
    }
    drop(broker);
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
    let got: Vec<Vec<u8>> = drain(&client, "big", 0, 0).into_iter().map(|m| m.body).collect();
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
        got.extend(r.messages.into_iter().map(|m| String::from_utf8(m.body).unwrap()));
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
fn pull_consumer_rides_out_a_broker_restart() {
    let dir = tempdir();
    let port = free_port_block(3);
    let cfg = config(dir.path(), 2, &format!("port = {port}"), "");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("pr", 1).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    for i in 0..5 {
        producer.send(Message::new("pr", format!("m{i}"))).unwrap();
    }
    assert!(broker.stop().success());
    // Pulled while the broker is down: retried with backoff until it is back.
    let pulling = {
        let client = client.clone();
        std::thread::spawn(move || {
            let mut consumer = client.consumer();
            consumer.retry_timeout = Duration::from_secs(60);
            consumer.pull("pr", 0, 0, Duration::ZERO)
        })
    };
    let broker = Broker::start_in(dir.path(), &cfg);
    let r = pulling.join().unwrap().expect("the pull reconnects");
    let bodies: Vec<_> = r.messages.into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, (0..5).map(|i| format!("m{i}").into_bytes()).collect::<Vec<_>>());
    drop(broker);
    producer.close().unwrap();
}

#[test]
fn consume_follow_reconnects_after_a_broker_restart() {
    use std::io::BufRead;
    let dir = tempdir();
    let port = free_port_block(3);
    let cfg = config(dir.path(), 2, &format!("port = {port}"), "");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("follow", 1).unwrap();
    let producer = client
        .producer(ProducerConfig { send_timeout: Duration::from_secs(60), ..Default::default() })
        .unwrap();
    producer.send(Message::new("follow", "one")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["consume", "--follow", "--topic", "follow", "--max-messages", "2"])
        .args(["--broker", &broker.addr()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |out: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let rx = lines(Box::new(child.stdout.take().unwrap()));
    let notices = lines(Box::new(child.stderr.take().unwrap()));
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("the first message");
    assert!(first.ends_with("\tone"), "{first}");
    assert!(broker.stop().success());
    // The broker stays down until the consumer's pulls gave up and it said so.
    let notice = notices.recv_timeout(Duration::from_secs(30)).expect("a notice");
    assert!(notice.contains("reconnecting"), "{notice}");
    let broker = Broker::start_in(dir.path(), &cfg);
    producer.send(Message::new("follow", "two")).unwrap();
    let second = rx.recv_timeout(Duration::from_secs(60)).expect("consume --follow went on");
    assert!(second.ends_with("\ttwo"), "{second}");
    let status = poll_until(Duration::from_secs(30), || child.try_wait().unwrap());
    assert!(status.success(), "stops after --max-messages: {status:?}");
    drop(broker);
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
        assert_eq!((got.offset, &got.body), (i as u64, &want.body));
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
        stored.iter().skip(1).take(in_place.len()).map(|m| (m.offset, m.body.as_slice())).collect();
    assert!(!in_place.is_empty());
    assert_eq!(in_place, owned);
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

#[test]
fn a_produce_multi_to_one_port_stores_each_batch_on_its_owner_shard() {
    use ringmq::format::{BatchBuilder, Record};
    use ringmq::protocol::produce_multi::ProduceEntry;
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("pm", 4).unwrap();
    let route = client.admin().route("pm").unwrap();
    let batch = |body: &str| {
        let mut b = BatchBuilder::new(1 << 16);
        let rec =
            Record { key: b"", tag: b"", properties: &[], body: body.as_bytes(), timestamp_ms: 1 };
        b.push(&rec).unwrap();
        b.finish(-1, -1).into()
    };
    let entry = |topic: &str, queue_id: u32, body: &str| ProduceEntry {
        topic: topic.into(),
        queue_id,
        batch: batch(body),
    };
    // Every queue, two of them twice, and a topic that does not exist, all to shard 0's port:
    // the queues of shard 1 are forwarded there.
    let entries = vec![
        entry("pm", 0, "a"),
        entry("pm", 1, "b"),
        entry("pm", 2, "c"),
        entry("missing", 0, "x"),
        entry("pm", 3, "d"),
        entry("pm", 1, "e"),
        entry("pm", 2, "f"),
    ];
    let conn = client.router().connection(broker.shard_ports[0]).unwrap();
    let r = conn.call(&Request::ProduceMulti { entries }, Duration::from_secs(20)).unwrap();
    let Response::ProduceMulti { results } = r else { panic!("{r:?}") };
    let got: Vec<Result<(u32, u64), u16>> = results
        .iter()
        .map(|r| match r {
            Ok(Response::Produce { queue_id, base_offset, status: SendStatus::SendOk, .. }) => {
                Ok((*queue_id, *base_offset))
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.code),
        })
        .collect();
    let unknown = Err(ringmq::protocol::ErrorCode::UNKNOWN_TOPIC as u16);
    assert_eq!(
        got,
        [Ok((0, 0)), Ok((1, 0)), Ok((2, 0)), unknown, Ok((3, 0)), Ok((1, 1)), Ok((2, 1))]
    );
    let bodies = |q: u32| -> Vec<Vec<u8>> {
        drain(&client, "pm", q, 0).into_iter().map(|m| m.body).collect()
    };
    assert_eq!(bodies(0), [b"a"]);
    assert_eq!(bodies(1), [b"b", b"e"]);
    assert_eq!(bodies(2), [b"c", b"f"]);
    assert_eq!(bodies(3), [b"d"]);
    assert!(
        route.queue_ports.iter().any(|p| *p != broker.shard_ports[0]),
        "some queues are shard 1's"
    );
    let stats = client.admin().stats().unwrap();
    assert!(stats.iter().map(|s| s.forwarded_in).sum::<u64>() >= 1, "{stats:?}");
}

#[test]
fn many_small_batches_fit_a_broker_with_a_small_frame_bound() {
    // Batches of at most 8 KiB, frames of at most 16 KiB: the producer's PRODUCE_MULTIs hold
    // no more than one batch's worth, so none is refused as too large (which would close the
    // connection and fail every send in flight on it).
    let dir = tempdir();
    let small = "max_frame_bytes = 16384\nmax_fetch_bytes = 16000";
    let cfg = config(dir.path(), 1, small, "max_batch_bytes = 8192");
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("small-frames", 64).unwrap();
    let producer = client
        .producer(ProducerConfig {
            max_batch_bytes: 8192,
            linger: Duration::from_millis(5),
            ..Default::default()
        })
        .unwrap();
    let pending: Vec<_> = (0..3000)
        .map(|i| producer.send_async(Message::new("small-frames", format!("{i:0>500}"))).unwrap())
        .collect();
    let mut per_queue: HashMap<u32, u64> = HashMap::new();
    for p in pending {
        let r = p.wait().unwrap();
        *per_queue.entry(r.queue_id).or_default() += 1;
    }
    assert_eq!(per_queue.len(), 64, "round-robin over every queue");
    assert_eq!(per_queue.values().sum::<u64>(), 3000);
    let stats = client.admin().stats().unwrap();
    assert_eq!(stats.iter().map(|s| s.errors).sum::<u64>(), 0, "{stats:?}");
    producer.close().unwrap();
}
