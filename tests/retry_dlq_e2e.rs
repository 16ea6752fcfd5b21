//! Broker-side retries and dead letters against the real binary: RECONSUME_LATER sends a
//! message back through `%RETRY%<group>` with a growing reconsume count, after
//! `max_reconsume_times` it lands in `%DLQ%<group>`, a retry outlives the member that failed,
//! and `ringmq dlq list|resend` shows and resends dead letters.

mod broker_common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_common::{config, drain, poll_until, Broker};
use ringmq::client::{
    Client, ConsumeContext, ConsumeFrom, ConsumeStatus, ConsumedMessage, Message, ProducerConfig,
    PushConsumer, PushConsumerConfig,
};
use ringmq::schedule::retry::{SendBackPolicy, PROPERTY_ORIGIN_MESSAGE_ID, PROPERTY_RETRY_TOPIC};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-retry").tempdir().unwrap()
}

/// Eighteen delay levels of `level` each, so retries come back soon.
fn broker(dir: &std::path::Path, level: &str) -> Broker {
    let levels = vec![level; 18].join(" ");
    let cfg = config(dir, 2, "", "")
        + "[group]\nsession_timeout_ms = 3000\n"
        + &format!("[schedule]\ndelay_levels = \"{levels}\"\n");
    Broker::start_in(dir, &cfg)
}

/// (body, reconsume count, topic it came from) of every delivery.
type Deliveries = Arc<Mutex<Vec<(String, u32, String)>>>;

fn consumer(
    broker: &Broker,
    group: &str,
    max_reconsume_times: u32,
    fail: impl Fn(&ConsumedMessage) -> bool + Send + Sync + 'static,
) -> (PushConsumer, Deliveries) {
    let client = Client::connect(&broker.addr()).unwrap();
    let mut cfg = PushConsumerConfig::new(group).subscribe("orders", "*");
    cfg.consume_from = ConsumeFrom::FirstOffset;
    cfg.pull_wait = Duration::from_millis(200);
    cfg.commit_interval = Duration::from_millis(100);
    cfg.send_back = Some(SendBackPolicy { max_reconsume_times, ..SendBackPolicy::default() });
    let seen: Deliveries = Arc::default();
    let log = seen.clone();
    let listener = move |msgs: &[ConsumedMessage], ctx: &ConsumeContext<'_>| {
        let mut failed = false;
        for m in msgs {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            log.lock().unwrap().push((body, m.reconsume_times(), ctx.topic.to_string()));
            failed |= fail(m);
        }
        if failed {
            ConsumeStatus::ReconsumeLater
        } else {
            ConsumeStatus::Success
        }
    };
    (PushConsumer::start(&client, cfg, listener).unwrap(), seen)
}

fn send(broker: &Broker, bodies: &[&str]) {
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("orders", 2).unwrap();
    let p = client.producer(ProducerConfig::default()).unwrap();
    for b in bodies {
        p.send(Message::new("orders", b.to_string()).with_key(format!("key-{b}"))).unwrap();
    }
}

#[test]
fn a_message_that_always_fails_is_retried_with_growing_counts_then_dead_lettered() {
    let dir = tempdir();
    let broker = broker(dir.path(), "100ms");
    send(&broker, &["a", "b", "c"]);
    let (consumer, seen) = consumer(&broker, "billing", 3, |_| true);
    let client = Client::connect(&broker.addr()).unwrap();
    let dead = poll_until(Duration::from_secs(60), || {
        let d = drain(&client, "%DLQ%billing", 0, 0);
        (d.len() >= 3).then_some(d)
    });
    consumer.shutdown();
    assert_eq!(dead.len(), 3, "each message dead-lettered once");
    let mut per_body: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
    for (body, times, topic) in seen.lock().unwrap().iter() {
        per_body.entry(body.clone()).or_default().push((*times, topic.clone()));
    }
    for body in ["a", "b", "c"] {
        let d = &per_body[body];
        // First from its topic, then three retries with counts 1, 2, 3 from the retry topic.
        assert_eq!(
            d,
            &vec![
                (0, "orders".to_string()),
                (1, "%RETRY%billing".to_string()),
                (2, "%RETRY%billing".to_string()),
                (3, "%RETRY%billing".to_string()),
            ],
            "deliveries of {body}"
        );
    }
    for m in &dead {
        assert_eq!(m.reconsume_times(), 4);
        assert_eq!(m.origin_topic(), Some("orders"));
        assert!(m.key.starts_with(b"key-"), "key kept");
        assert!(m.property(PROPERTY_ORIGIN_MESSAGE_ID.as_bytes()).is_some());
    }
    // The CLI lists them and resends them to their topic.
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["dlq", "list", "--group", "billing", "--broker"])
        .arg(broker.addr())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for body in ["a", "b", "c"] {
        assert!(text.contains(&format!("\t{body}")), "{text}");
    }
    assert!(text.contains("orders"), "{text}");
    let before: usize = (0..2).map(|q| drain(&client, "orders", q, 0).len()).sum();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["dlq", "resend", "--group", "billing", "--broker"])
        .arg(broker.addr())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after: Vec<ConsumedMessage> = (0..2).flat_map(|q| drain(&client, "orders", q, 0)).collect();
    assert_eq!(after.len(), before + 3);
    let plain = after.iter().filter(|m| m.property(PROPERTY_RETRY_TOPIC.as_bytes()).is_none());
    assert_eq!(plain.count(), 6, "resent copies are plain messages of their topic again");
}

#[test]
fn a_retry_outlives_the_member_that_failed_and_succeeds_once() {
    let dir = tempdir();
    // Retries wait 2 s: long enough for the first member to leave before its retry is due.
    let broker = broker(dir.path(), "2s");
    send(&broker, &["x", "y"]);
    // The first member fails "x" and leaves right after; the retry is on the broker.
    let (first, first_seen) = consumer(&broker, "shipping", 16, |m| m.body == b"x"[..]);
    poll_until(Duration::from_secs(30), || {
        let s = first_seen.lock().unwrap();
        (s.iter().any(|(b, ..)| b == "x") && s.iter().any(|(b, ..)| b == "y")).then_some(())
    });
    // "x" was sent back once its queue's offset moved past it (committed at shutdown).
    first.shutdown();
    let client = Client::connect(&broker.addr()).unwrap();
    let committed: u64 = client
        .groups()
        .describe("shipping")
        .unwrap()
        .queues
        .iter()
        .filter(|q| q.topic == "orders")
        .map(|q| q.committed.unwrap_or(0))
        .sum();
    assert_eq!(committed, 2, "both original messages are consumed or sent back");
    let (second, second_seen) = consumer(&broker, "shipping", 16, |_| false);
    let got = poll_until(Duration::from_secs(30), || {
        let s = second_seen.lock().unwrap();
        s.iter().find(|(b, ..)| b == "x").cloned()
    });
    assert_eq!(got, ("x".to_string(), 1, "%RETRY%shipping".to_string()));
    // Nothing else comes: "y" succeeded the first time and the retry was committed.
    std::thread::sleep(Duration::from_millis(800));
    second.shutdown();
    let all: Vec<_> = first_seen
        .lock()
        .unwrap()
        .iter()
        .chain(second_seen.lock().unwrap().iter())
        .cloned()
        .collect();
    assert_eq!(all.iter().filter(|(b, ..)| b == "x").count(), 2, "{all:?}");
    assert_eq!(all.iter().filter(|(b, ..)| b == "y").count(), 1, "{all:?}");
    assert!(drain(&client, "%DLQ%shipping", 0, 0).is_empty());
}

/// A message larger than the library's default batch (1 MiB), which the broker took (4 MiB by
/// default) from a producer allowed larger batches, is retried and dead-lettered like any
/// other: the consumer's send-back is not limited to the default batch size.
#[test]
fn a_message_larger_than_the_default_batch_is_retried_then_dead_lettered() {
    let dir = tempdir();
    let broker = broker(dir.path(), "100ms");
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("orders", 2).unwrap();
    let big = ProducerConfig { max_batch_bytes: 3 << 20, ..ProducerConfig::default() };
    let p = client.producer(big).unwrap();
    let body: Vec<u8> = (0..(2 << 20)).map(|i| (i % 251) as u8).collect();
    p.send(Message::new("orders", body.clone()).with_key("big")).unwrap();
    let (consumer, seen) = consumer(&broker, "bulk", 1, |_| true);
    let dead = poll_until(Duration::from_secs(60), || {
        let d = drain(&client, "%DLQ%bulk", 0, 0);
        (!d.is_empty()).then_some(d)
    });
    consumer.shutdown();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, body, "the whole message, unchanged");
    assert_eq!(dead[0].reconsume_times(), 2);
    assert_eq!(dead[0].origin_topic(), Some("orders"));
    let topics: Vec<(u32, String)> =
        seen.lock().unwrap().iter().map(|(_, times, topic)| (*times, topic.clone())).collect();
    assert_eq!(topics, [(0, "orders".to_string()), (1, "%RETRY%bulk".to_string())]);
}
