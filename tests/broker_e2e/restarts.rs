//! Restarts, SIGKILL and SIGTERM: durability, ids, and clients that ride them out.

use super::*;

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
            stored.insert((q, m.offset), String::from_utf8(m.body.to_vec()).unwrap());
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
            .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
            .collect();
        let expected: Vec<String> =
            sent.iter().filter(|(queue, _)| *queue == q).map(|(_, b)| b.clone()).collect();
        assert_eq!(stored, expected, "queue {q}");
    }
    drop(broker);
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
