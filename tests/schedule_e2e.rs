//! Scheduled messages against the real binary: delayed messages arrive no earlier than due,
//! none is lost across a SIGKILL of the broker while timers are pending, and the CLI's
//! `produce --delay` / `--deliver-at`.

mod broker_common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker_common::{config, drain, poll_until, Broker};
use ringmq::client::{Client, ConsumedMessage, Message, ProducerConfig};
use ringmq::protocol::SendStatus;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-schedule").tempdir().unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A sync-flush broker with short delay levels and frequent wheel checkpoints.
fn broker_config(dir: &std::path::Path) -> String {
    let mut c = config(dir, 2, "", "flush_mode = \"sync\"");
    c.push_str("[schedule]\ndelay_levels = \"1s 2s 3s\"\ncheckpoint_interval_ms = 200\n");
    c
}

fn all(client: &Client, topic: &str, queues: u32) -> Vec<ConsumedMessage> {
    (0..queues).flat_map(|q| drain(client, topic, q, 0)).collect()
}

/// Body `name@deliver_at_ms`: each message says when it was due.
fn due_of(m: &ConsumedMessage) -> (String, i64) {
    let body = String::from_utf8(m.body.to_vec()).unwrap();
    let (_, due) = body.rsplit_once('@').unwrap();
    (body.clone(), due.parse().unwrap())
}

#[test]
fn delayed_messages_arrive_when_due_and_survive_a_sigkill() {
    let dir = tempdir();
    let cfg = broker_config(dir.path());
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("later", 4).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();

    let start = now_ms();
    let mut sent = Vec::new();
    // Absolute times from 1 s to 5 s ahead, and delay levels (1 s, 2 s, 3 s).
    for i in 0..40i64 {
        let due = start + 1_000 + i * 100;
        let body = format!("at{i}@{due}");
        let at = UNIX_EPOCH + Duration::from_millis(due as u64);
        let r = producer.send_at(Message::new("later", body.clone()).with_key("k"), at).unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        assert_eq!(&*r.topic, ringmq::client::SCHEDULE_TOPIC);
        sent.push(body);
    }
    for level in 1..=3u32 {
        let due = now_ms() + i64::from(level) * 1_000;
        let body = format!("level{level}@{due}");
        producer.send_delayed(Message::new("later", body.clone()), level).unwrap();
        sent.push(body);
    }
    // Nothing is visible before its time.
    assert!(all(&client, "later", 4).iter().all(|m| due_of(m).1 <= now_ms()));

    // Kill the broker once some have arrived and others are still pending.
    poll_until(Duration::from_secs(30), || (all(&client, "later", 4).len() >= 5).then_some(()));
    broker.kill();
    drop(producer);
    drop(client);
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();

    let got = poll_until(Duration::from_secs(60), || {
        let got = all(&client, "later", 4);
        let names: std::collections::HashSet<String> = got.iter().map(|m| due_of(m).0).collect();
        sent.iter().all(|s| names.contains(s)).then_some(got)
    });
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<Vec<u8>, String> = HashMap::new();
    for m in &got {
        let (body, due) = due_of(m);
        assert!(
            m.store_timestamp_ms >= due,
            "{body} stored at {} before it was due",
            m.store_timestamp_ms
        );
        assert_eq!(m.key, if body.starts_with("at") { b"k".to_vec() } else { vec![] });
        let id = m.property(b"UNIQ_KEY").expect("the client gives each scheduled message an id");
        ids.entry(id.to_vec()).or_insert_with(|| body.clone());
        assert_eq!(ids[id], body, "an id names one message (copies carry the same one)");
        *copies.entry(body).or_default() += 1;
    }
    assert_eq!(copies.len(), sent.len(), "every scheduled message arrived");
    assert_eq!(ids.len(), sent.len());
    // At-least-once across a SIGKILL: a copy more only for a delivery the kill cut short.
    let twice = copies.values().filter(|&&n| n > 1).count();
    assert!(twice <= 10, "{twice} messages delivered more than once");
}

#[test]
fn the_cli_schedules_with_delay_and_deliver_at() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &broker_config(dir.path()));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("cli", 1).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["produce", "--broker", &broker.addr(), "--topic", "cli"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let sent_ms = now_ms();
    let out = run(&["--delay", "1500ms", "delayed"]);
    assert!(out.starts_with("SendOk\tscheduled\tdeliver_at="), "{out}");
    let at = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_millis(500));
    run(&["--deliver-at", &at.to_string(), "at-time"]);
    let got = poll_until(Duration::from_secs(30), || {
        let got = drain(&client, "cli", 0, 0);
        (got.len() == 2).then_some(got)
    });
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, vec![&b"at-time"[..], &b"delayed"[..]]);
    assert!(got[1].store_timestamp_ms >= sent_ms + 1_500);
    // A time past the horizon is refused with the broker's reason.
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["produce", "--broker", &broker.addr(), "--topic", "cli", "--delay", "41d", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_DELIVERY_TIME"));
}

/// The sum of a counter's series in the broker's `/metrics` text.
fn metric_sum(broker: &Broker, name: &str) -> f64 {
    use std::io::{Read, Write};
    let url = broker.metrics_url.as_deref().expect("the ready line names the metrics URL");
    let addr = url.strip_prefix("http://").and_then(|r| r.split_once('/')).unwrap().0;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With `roll_after_ms = 200`, messages held 2-3 s are written again at the log's end several
/// times each while they wait (counted by `ringmq_schedule_rolled_total`), and each still
/// arrives once, not before it is due.
#[test]
fn long_held_messages_are_rewritten_while_they_wait_and_arrive_once() {
    let dir = tempdir();
    let mut cfg = config(dir.path(), 2, "", "flush_mode = \"sync\"");
    cfg.push_str("[schedule]\nroll_after_ms = 200\ncheckpoint_interval_ms = 100\n");
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("held", 2).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let start = now_ms();
    let mut sent = Vec::new();
    for i in 0..10i64 {
        let due = start + 2_000 + i * 100;
        let body = format!("held{i}@{due}");
        let at = UNIX_EPOCH + Duration::from_millis(due as u64);
        producer.send_at(Message::new("held", body.clone()), at).unwrap();
        sent.push(body);
    }
    let got = poll_until(Duration::from_secs(60), || {
        let got = all(&client, "held", 2);
        (got.len() >= sent.len()).then_some(got)
    });
    let mut bodies: Vec<String> = got.iter().map(|m| due_of(m).0).collect();
    bodies.sort();
    sent.sort();
    assert_eq!(bodies, sent, "each once");
    for m in &got {
        let (body, due) = due_of(m);
        assert!(m.store_timestamp_ms >= due, "{body} stored at {}", m.store_timestamp_ms);
    }
    let rolled = metric_sum(&broker, "ringmq_schedule_rolled_total");
    assert!(rolled >= 10.0, "{rolled} rewrites for 10 messages held 2-3 s");
    assert_eq!(metric_sum(&broker, "ringmq_schedule_delivered_total"), 10.0);
}
