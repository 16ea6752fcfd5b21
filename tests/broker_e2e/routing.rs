//! Routing across shards and ports: keyed order, round robin, produce requests for several
//! shards, a small frame bound.

use super::*;

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
            assert_eq!(sent.get(&(q, m.offset)), Some(&m.message_id.to_string()));
            assert_eq!(m.tag, &b"T"[..]);
            bodies.push(String::from_utf8(m.body.to_vec()).unwrap());
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
            let body = String::from_utf8(m.body.to_vec()).unwrap();
            let (k, i) = body.split_once(':').unwrap();
            assert_eq!(k.as_bytes(), &m.key[..]);
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

/// The default selector goes round a topic's queues a batch at a time: messages fill the
/// current queue's batch, and once it is full (or sent) the next message goes to the next
/// queue. A thread's `send`s, each waiting for its reply, go round one message at a time.
#[test]
fn the_default_selector_goes_round_the_queues_a_batch_at_a_time() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("pb", 4).unwrap();
    // Batches go only when full (or flushed): a linger far longer than the test.
    let producer = client
        .producer(ProducerConfig {
            max_batch_bytes: 4096,
            linger: Duration::from_secs(600),
            ..Default::default()
        })
        .unwrap();
    let pending: Vec<_> = (0..40)
        .map(|i| producer.send_async(Message::new("pb", format!("{i:0>1000}"))).unwrap())
        .collect();
    producer.flush().unwrap();
    let mut runs: Vec<(u32, Vec<u64>)> = Vec::new();
    for p in pending {
        let r = p.wait().unwrap();
        match runs.last_mut() {
            Some((q, offsets)) if *q == r.queue_id => offsets.push(r.queue_offset),
            _ => runs.push((r.queue_id, vec![r.queue_offset])),
        }
    }
    // Each full batch on the queue after the previous one's, at consecutive offsets; every
    // batch but the last as many messages as fit in 4 KiB.
    let per_batch = runs[0].1.len();
    assert!((2..=4).contains(&per_batch), "{runs:?}");
    for (i, (q, offsets)) in runs.iter().enumerate() {
        assert_eq!(*q, (runs[0].0 + i as u32) % 4, "{runs:?}");
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{runs:?}");
        if i + 1 < runs.len() {
            assert_eq!(offsets.len(), per_batch, "{runs:?}");
        }
    }
    assert!(runs.len() >= 10, "{runs:?}");
    producer.close().unwrap();
    // One message at a time, each waiting for its reply (no linger): the next queue each
    // time.
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let first = producer.send(Message::new("pb", "s0")).unwrap().queue_id;
    for i in 1..=8u32 {
        let r = producer.send(Message::new("pb", format!("s{i}"))).unwrap();
        assert_eq!(r.queue_id, (first + i) % 4);
    }
    producer.close().unwrap();
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
        drain(&client, "pm", q, 0).into_iter().map(|m| m.body.to_vec()).collect()
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
