//! Message trace against the real binary: a traced producer and a traced push consumer record
//! their events into `RMQ_SYS_TRACE_TOPIC`; `ringmq message trace <id>` shows the message sent,
//! stored and consumed by which group and consumer, before and after a SIGKILL and restart.

mod broker_common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker_common::{config, poll_until, Broker};
use ringmq::client::trace::TraceConfig;
use ringmq::client::{
    Client, ConsumeContext, ConsumeFrom, ConsumeStatus, ConsumedMessage, Message, ProducerConfig,
    PushConsumer, PushConsumerConfig,
};

const WAIT: Duration = Duration::from_secs(60);

fn ringmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringmq")).args(args).output().unwrap()
}

/// The trace lines of `id` once they hold a send and a consumption.
fn traced(b: &str, id: &str) -> String {
    poll_until(WAIT, || {
        let out = ringmq(&["message", "trace", id, "--broker", b]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains("\tsent\t") && text.contains("\tconsumed\t"))
            .then_some(text)
    })
}

#[test]
fn a_traced_message_shows_its_life_across_a_restart() {
    let dir = tempfile::Builder::new().prefix("ringmq-mtrace").tempdir().unwrap();
    let mut cfg = config(dir.path(), 2, "", "flush_mode = \"sync\"");
    cfg.push_str("[key_index]\ninterval_ms = 50\ncheckpoint_interval_ms = 3600000\n");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let b = broker.addr();
    let client = Client::connect(&b).unwrap();
    client.admin().create_topic("orders", 2).unwrap();

    let trace = TraceConfig { linger: Duration::from_millis(20), ..TraceConfig::default() };
    let producer = client
        .producer(ProducerConfig { trace: Some(trace.clone()), ..ProducerConfig::default() })
        .unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let m = Message::new("orders", format!("order {i}")).with_key(format!("o-{i}"));
            producer.send(m).unwrap().message_id()
        })
        .collect();

    let consumed = Arc::new(AtomicUsize::new(0));
    let mut config = PushConsumerConfig::new("billing").subscribe("orders", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.heartbeat_interval = Duration::from_millis(200);
    config.trace = Some(trace);
    let consumer_id = config.client_id.clone();
    let seen = consumed.clone();
    let listener = move |messages: &[ConsumedMessage], _: &ConsumeContext<'_>| {
        seen.fetch_add(messages.len(), Ordering::SeqCst);
        ConsumeStatus::Success
    };
    let consumer = PushConsumer::start(&client, config, listener).unwrap();
    poll_until(WAIT, || (consumed.load(Ordering::SeqCst) >= 3).then_some(()));
    assert_eq!(consumer.trace_dropped(), 0);
    assert_eq!(producer.trace_dropped(), 0);
    consumer.shutdown();
    producer.close().unwrap();

    let id = &ids[1];
    let text = traced(&b, id);
    let queue = u32::from_str_radix(&id[8..16], 16).unwrap();
    let offset = u64::from_str_radix(&id[16..], 16).unwrap();
    let where_ = format!("topic=orders\tqueue={queue}\toffset={offset}");
    let line = |kind: &str| {
        text.lines()
            .find(|l| l.split('\t').nth(1) == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} line in {text}"))
            .to_string()
    };
    let stored = line("stored");
    assert!(stored.contains(&where_) && stored.contains("key=o-1"), "{stored}");
    let sent = line("sent");
    assert!(sent.contains("status=SEND_OK") && sent.contains(&where_), "{sent}");
    let consumed_line = line("consumed");
    assert!(consumed_line.contains("group=billing"), "{consumed_line}");
    assert!(consumed_line.contains(&format!("consumer={consumer_id}")), "{consumed_line}");
    assert!(consumed_line.contains("status=SUCCESS"), "{consumed_line}");
    assert!(consumed_line.contains(&where_), "{consumed_line}");
    // Oldest first: sent before consumed.
    assert!(text.find("\tsent\t") < text.find("\tconsumed\t"), "{text}");

    // Another message's trace is its own.
    let other = traced(&b, &ids[2]);
    assert!(other.contains("key=o-2") && !other.contains("key=o-1"), "{other}");

    // Errors: not an id; an id nothing traced.
    let out = ringmq(&["message", "trace", "nope", "--broker", &b]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 hex digits"));
    let untraced = format!("{}{:016X}", &id[..16], 1u64 << 40);
    let out = ringmq(&["message", "trace", &untraced, "--broker", &b]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no trace of message"));

    // SIGKILL: the trace topic's keys were never checkpointed; the restart re-indexes them.
    drop(client);
    broker.kill();
    let broker = Broker::start_in(dir.path(), &cfg);
    let b = broker.addr();
    let after = ringmq(&["message", "trace", id, "--broker", &b]);
    assert!(after.status.success(), "{}", String::from_utf8_lossy(&after.stderr));
    assert_eq!(String::from_utf8(after.stdout).unwrap(), text, "the same life after a restart");
}
