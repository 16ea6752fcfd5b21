//! The `/metrics` endpoint of the real binary: a produce/consume/commit run scraped and read
//! by a Prometheus text-format parser, with counts that match what was sent; bad HTTP input
//! answered with an error or a close, never a hang; the endpoint turned off.

mod broker_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use broker_common::{config, Broker};
use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};
use ringmq::protocol::SendStatus;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-metrics").tempdir().unwrap()
}

/// `host:port` of the broker's metrics URL.
fn metrics_addr(broker: &Broker) -> String {
    let url = broker.metrics_url.as_deref().expect("the ready line names the metrics URL");
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest.split_once('/').expect("a path");
    assert_eq!(path, "metrics", "{url}");
    addr.to_owned()
}

/// Sends `request` and reads the whole answer; the read is bounded by a timeout.
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The sum of `metric` over the series whose labels include `labels`.
fn sum(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{metric}: {other:?}"),
        })
        .sum()
}

#[test]
fn a_scrape_after_produce_consume_and_commit_counts_what_was_sent() {
    const MESSAGES: usize = 200;
    let dir = tempdir();
    // Sync flush, so every acknowledgement waited for an fsync the histograms must show.
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", "flush_mode = \"sync\""));
    let addr = metrics_addr(&broker);
    assert!(addr.starts_with("127.0.0.1:"), "bound to this host only: {addr}");

    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("m", 4).unwrap();
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::RoundRobin, ..Default::default() })
        .unwrap();
    let pending: Vec<_> = (0..MESSAGES)
        .map(|i| producer.send_async(Message::new("m", format!("body-{i}"))).unwrap())
        .collect();
    let mut sent_per_queue = BTreeMap::<u32, u64>::new();
    for p in pending {
        let r = p.wait().unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        *sent_per_queue.entry(r.queue_id).or_default() += 1;
    }
    producer.close().unwrap();

    // Consume every queue to its end.
    let consumer = client.consumer();
    let mut consumed = 0;
    for q in 0..4 {
        let mut at = 0;
        loop {
            let r = consumer.pull("m", q, at, Duration::ZERO).unwrap();
            if r.messages.is_empty() {
                break;
            }
            consumed += r.messages.len();
            at = r.next_offset;
        }
    }
    assert_eq!(consumed, MESSAGES);
    // One failed request, with a code the scrape must show.
    assert!(consumer.pull("m", 0, 1_000_000, Duration::ZERO).is_err());
    // A group half way through queue 0 and at the end of queue 1.
    let half = sent_per_queue[&0] / 2;
    let commits = [("m".to_string(), 0, half), ("m".to_string(), 1, sent_per_queue[&1])];
    assert_eq!(client.groups().commit("billing", 0, &commits).unwrap(), SendStatus::SendOk);

    let s = scrape(&addr);
    for shard in ["0", "1"] {
        assert_eq!(sum(&s, "ringmq_shard_up", &[("shard", shard)]), 1.0);
    }
    assert_eq!(sum(&s, "ringmq_append_records_total", &[]), MESSAGES as f64);
    let batches = sum(&s, "ringmq_append_batches_total", &[]);
    assert!(batches >= 1.0 && batches <= MESSAGES as f64, "{batches}");
    assert_eq!(sum(&s, "ringmq_append_ack_latency_seconds_count", &[]), batches);
    let appended = sum(&s, "ringmq_append_bytes_total", &[]);
    assert!(appended > (MESSAGES * "body-0".len()) as f64, "{appended}");
    // Each batch was fetched exactly once, whole.
    assert_eq!(sum(&s, "ringmq_fetch_bytes_total", &[]), appended);
    let fetches = sum(&s, "ringmq_fetch_requests_total", &[]);
    assert!(fetches >= 4.0 + 4.0, "a pull with data and an empty one per queue: {fetches}");
    assert!(sum(&s, "ringmq_fetch_read_latency_seconds_count", &[]) >= 4.0);
    assert!(sum(&s, "ringmq_flushes_total", &[]) >= 1.0);
    assert!(sum(&s, "ringmq_fsync_latency_seconds_count", &[]) >= 1.0);
    assert_eq!(sum(&s, "ringmq_errors_total", &[("code", "OFFSET_OUT_OF_RANGE")]), 1.0);
    assert!(sum(&s, "ringmq_connections_open", &[]) >= 1.0);
    for (q, sent) in &sent_per_queue {
        let queue = q.to_string();
        let labels = [("topic", "m"), ("queue", queue.as_str())];
        assert_eq!(sum(&s, "ringmq_queue_messages", &labels), *sent as f64, "queue {q}");
    }
    assert_eq!(sum(&s, "ringmq_queue_messages", &[("topic", "m")]), MESSAGES as f64);
    let lag = |q: &str| sum(&s, "ringmq_group_lag_messages", &[("group", "billing"), ("queue", q)]);
    assert_eq!(lag("0"), (sent_per_queue[&0] - half) as f64);
    assert_eq!(lag("1"), 0.0);
    assert_eq!(sum(&s, "ringmq_group_committed_offset", &[("queue", "0")]), half as f64);
    assert_eq!(sum(&s, "ringmq_queue_series_omitted", &[]), 0.0);

    // Where each shard's time went: every kind of work ran, and the counters only grow.
    let busy = |s: &prometheus_parse::Scrape, labels: &[(&str, &str)]| {
        sum(s, "ringmq_task_queue_busy_seconds_total", labels)
    };
    for shard in ["0", "1"] {
        for queue in ["data", "control"] {
            let b = busy(&s, &[("shard", shard), ("queue", queue)]);
            assert!(b > 0.0, "shard {shard}, {queue}: {b}");
        }
    }
    assert!(busy(&s, &[("queue", "key_index")]) > 0.0, "the key index's reader ran");
    let again = scrape(&addr);
    for queue in ["data", "control", "key_index"] {
        assert!(busy(&again, &[("queue", queue)]) >= busy(&s, &[("queue", queue)]), "{queue}");
    }
}

#[test]
fn bad_http_input_gets_an_error_or_a_close_and_the_broker_keeps_serving() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let addr = metrics_addr(&broker);
    let status = |answer: &str| answer.split(' ').nth(1).map(str::to_owned);

    let garbage = exchange(&addr, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n");
    assert!(garbage.is_empty() || status(&garbage).as_deref() == Some("400"), "{garbage}");
    let oversize = format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "x".repeat(64 * 1024));
    let answer = exchange(&addr, oversize.as_bytes());
    assert!(answer.is_empty() || status(&answer).as_deref() == Some("431"), "{answer}");
    assert_eq!(status(&exchange(&addr, b"GET /other HTTP/1.1\r\n\r\n")).as_deref(), Some("404"));
    assert_eq!(
        status(&exchange(&addr, b"DELETE /metrics HTTP/1.1\r\n\r\n")).as_deref(),
        Some("405")
    );

    // Slowloris: a head that never ends is cut off at the request timeout (5 s), and does not
    // keep a scraper out meanwhile.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: a").unwrap();
    let started = Instant::now();
    let s = scrape(&addr);
    assert_eq!(sum(&s, "ringmq_shard_up", &[("shard", "0")]), 1.0);
    let mut out = String::new();
    let _ = slow.read_to_string(&mut out);
    assert!(out.is_empty() || status(&out).as_deref() == Some("408"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    // The broker still serves its clients and the endpoint.
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("after", 1).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    producer.send(Message::new("after", "still here")).unwrap();
    producer.close().unwrap();
    assert_eq!(sum(&scrape(&addr), "ringmq_append_records_total", &[]), 1.0);
}

#[test]
fn the_endpoint_can_be_turned_off() {
    let dir = tempdir();
    let cfg = config(dir.path(), 1, "", "").replace("[metrics]\n", "[metrics]\nenabled = false\n");
    let broker = Broker::start_in(dir.path(), &cfg);
    assert_eq!(broker.metrics_url, None, "the ready line says metrics=off");
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 1).unwrap();
}

#[test]
fn a_busy_metrics_port_fails_the_start_and_says_what_to_change() {
    let dir = tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cfg = config(dir.path(), 1, "", "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
    let path = dir.path().join("busy.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["broker", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen for metrics on") && err.contains(&addr), "{err}");
    assert!(err.contains("[metrics] listen") && err.contains("enabled = false"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"), "never ready");
}

#[test]
fn a_scrape_shows_each_coordinator_s_group_state() {
    use ringmq::group::membership::{group_bytes, member_bytes, MemberInfo, Subscription};
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let addr = metrics_addr(&broker);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("m", 4).unwrap();
    let groups = client.groups();
    let subscriptions = [("m".to_string(), "*".to_string())];
    groups.heartbeat("billing", "c1", "", &subscriptions).unwrap();
    let commits = [("m".to_string(), 0, 5), ("m".to_string(), 1, 7)];
    assert_eq!(groups.commit("billing", 0, &commits).unwrap(), SendStatus::SendOk);
    let locked =
        groups.lock("billing", "c1", Duration::from_secs(60), &[("m".to_string(), 2)]).unwrap();
    assert_eq!(locked.len(), 1);

    let member = MemberInfo {
        client_id: "c1".into(),
        room: None,
        subscriptions: vec![Subscription { topic: "m".into(), expression: "*".into() }],
    };
    let bytes = (group_bytes("billing") + member_bytes("billing", &member)) as f64;
    let s = scrape(&addr);
    for shard in ["0", "1"] {
        // Every shard has each series, its coordinator's state or 0.
        for metric in [
            "ringmq_group_membership_bytes",
            "ringmq_group_members",
            "ringmq_group_offsets_held",
            "ringmq_group_queue_locks",
            "ringmq_group_retention_groups",
        ] {
            let present = s
                .samples
                .iter()
                .any(|x| x.metric == metric && x.labels.get("shard") == Some(shard));
            assert!(present, "{metric} of shard {shard}");
        }
    }
    assert_eq!(sum(&s, "ringmq_group_membership_bytes", &[]), bytes);
    assert_eq!(sum(&s, "ringmq_group_members", &[]), 1.0);
    assert_eq!(sum(&s, "ringmq_group_offsets_held", &[]), 2.0);
    assert_eq!(sum(&s, "ringmq_group_queue_locks", &[]), 1.0);
    assert_eq!(sum(&s, "ringmq_group_retention_groups", &[]), 1.0);

    // The member leaves: its bytes and lock go; the offsets stay, their retention tracked.
    groups.leave("billing", "c1").unwrap();
    let s = scrape(&addr);
    assert_eq!(sum(&s, "ringmq_group_membership_bytes", &[]), 0.0);
    assert_eq!(sum(&s, "ringmq_group_members", &[]), 0.0);
    assert_eq!(sum(&s, "ringmq_group_queue_locks", &[]), 0.0);
    assert_eq!(sum(&s, "ringmq_group_offsets_held", &[]), 2.0);
    assert_eq!(sum(&s, "ringmq_group_retention_groups", &[]), 1.0);
}

/// Retention by disk usage shows in the metrics: with a ratio every filesystem exceeds and
/// 64 KiB segments, sealed segments go on the next check, counted as deleted for disk usage
/// (they were seconds old), none by age.
#[test]
fn retention_by_disk_usage_is_counted() {
    let dir = tempdir();
    let storage = "retention_check_interval_ms = 100\nsegment_size_bytes = 65536\n\
                   max_batch_bytes = 8192\ndisk_max_used_ratio = 0.000001\npreallocate = false\n\
                   chunk_size_bytes = 16384\nchunk_pool_chunks = 8\ncache_bytes = 1048576";
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", storage));
    let addr = metrics_addr(&broker);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("d", 1).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    for i in 0..300 {
        producer.send(Message::new("d", format!("{i:01000}"))).unwrap();
    }
    let s = broker_common::poll_until(Duration::from_secs(30), || {
        let s = scrape(&addr);
        (sum(&s, "ringmq_retention_disk_segments_total", &[]) >= 1.0).then_some(s)
    });
    assert_eq!(sum(&s, "ringmq_retention_expired_segments_total", &[]), 0.0);
    assert_eq!(sum(&s, "ringmq_retention_pinned_segments", &[]), 0.0);
    assert!(sum(&s, "ringmq_log_segments", &[("shard", "0")]) >= 1.0);
}

/// More (producer, queue) pairs than the shard's window table holds: a producer going round
/// its queues finds its window evicted at nearly every batch, is refused
/// OUT_OF_ORDER_SEQUENCE and renumbers. Slower, but every message is stored once and in order,
/// and the evictions show in `ringmq_idempotence_windows_evicted_total`.
#[test]
fn producers_outnumbering_the_window_table_are_stored_once_and_show_in_the_evictions() {
    let dir = tempdir();
    let cfg = config(dir.path(), 1, "idempotence_max_producer_queues = 2", "");
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("few", 4).unwrap();
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::RoundRobin, ..Default::default() })
        .unwrap();
    let mut sent: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    for i in 0..40 {
        let body = format!("m{i}");
        let r = producer.send(Message::new("few", body.clone())).unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        sent.entry(r.queue_id).or_default().push((r.queue_offset, body));
    }
    assert_eq!(sent.len(), 4, "round the 4 queues");
    for (q, expected) in &sent {
        let stored: Vec<(u64, String)> = broker_common::drain(&client, "few", *q, 0)
            .into_iter()
            .map(|m| (m.offset, String::from_utf8(m.body.to_vec()).unwrap()))
            .collect();
        assert_eq!(&stored, expected, "queue {q}: each message once, in send order");
    }
    let s = scrape(&metrics_addr(&broker));
    assert!(sum(&s, "ringmq_idempotence_windows", &[]) <= 2.0);
    let evicted = sum(&s, "ringmq_idempotence_windows_evicted_total", &[]);
    assert!(evicted >= 30.0, "about one eviction a batch: {evicted}");
}
