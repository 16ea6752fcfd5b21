//! The RocketMQ front against a real RocketMQ client: the Python client `rocketmq==0.4.4`
//! (the C++ client inside), run as scripts (`tests/rocketmq/*.py`) against the real binary.
//!
//! The client comes from the virtual environment `.ci/run` builds (`target/rocketmq-venv`),
//! or from `RINGMQ_ROCKETMQ_PYTHON`. Without either, these tests say so and pass, unless
//! `RINGMQ_REQUIRE_ROCKETMQ=1` (set by `.ci/run`), which makes a missing client a failure.
//! The raw-protocol tests, which need no client, are in `rocketmq_raw.rs`.

mod broker_common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_common::{start_front, Front};
use ringmq::client::{Client, Message, ProducerConfig};
use serde_json::Value;

/// Every client script runs under this limit (CI has 2 cores shared by several processes).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("RINGMQ_ROCKETMQ_PYTHON") {
        return Some(p.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rocketmq-venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    if std::env::var("RINGMQ_REQUIRE_ROCKETMQ").as_deref() == Ok("1") {
        panic!("RINGMQ_REQUIRE_ROCKETMQ=1 but no RocketMQ Python client (run .ci/run)");
    }
    eprintln!("skipped: no RocketMQ Python client (run .ci/run or set RINGMQ_ROCKETMQ_PYTHON)");
    None
}

/// `NODE_PATH` holding ali-ons (`.ci/run` installs it into `target/rocketmq-node`).
fn ons_node_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("RINGMQ_ONS_NODE_PATH") {
        return Some(p.into());
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rocketmq-node/node_modules");
    if local.join("ali-ons").exists() {
        return Some(local);
    }
    if std::env::var("RINGMQ_REQUIRE_ROCKETMQ").as_deref() == Ok("1") {
        panic!("RINGMQ_REQUIRE_ROCKETMQ=1 but no ali-ons (run .ci/run)");
    }
    eprintln!("skipped: no ali-ons (run .ci/run or set RINGMQ_ONS_NODE_PATH)");
    None
}

fn start(name: &str) -> Front {
    start_front(name, "")
}

/// Runs a client script to its end (bounded) and returns its JSON lines.
fn script(python: &Path, name: &str, args: &[&str]) -> Vec<Value> {
    run_script(Command::new(python), name, args)
}

fn run_script(mut command: Command, name: &str, args: &[&str]) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rocketmq").join(name);
    let mut child = command
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?} did not finish within {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    assert!(status.success(), "{name} {args:?} failed ({status}); output:\n{out}");
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

fn messages(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v.get("done").is_none()).collect()
}

fn bodies(lines: &[Value]) -> Vec<String> {
    let mut b: Vec<String> =
        messages(lines).iter().map(|m| m["body"].as_str().unwrap().to_owned()).collect();
    b.sort();
    b
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("{prefix}-{i}")).collect();
    v.sort();
    v
}

#[test]
fn python_producer_modes_and_a_push_consumer_filtering_tags() {
    let Some(py) = python() else { return };
    let f = start("modes");
    let ns = f.namesrv.as_str();
    let sent = script(
        &py,
        "produce.py",
        &["--namesrv", ns, "--topic", "Orders", "--count", "6", "--prefix", "s", "--tags", "A,B,C"],
    );
    assert_eq!(sent.len(), 6);
    for s in &sent {
        assert_eq!(s["status"], 0, "SEND_OK: {s}");
        assert_eq!(s["msg_id"].as_str().unwrap().len(), 32, "a UNIQ_KEY message id: {s}");
    }
    script(
        &py,
        "produce.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Orders",
            "--mode",
            "oneway",
            "--count",
            "3",
            "--prefix",
            "o",
            "--tags",
            "A",
        ],
    );
    let orderly = script(
        &py,
        "produce.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Orders",
            "--mode",
            "orderly",
            "--count",
            "4",
            "--prefix",
            "r",
            "--tags",
            "B",
        ],
    );
    assert!(orderly.iter().all(|s| s["status"] == 0));
    script(
        &py,
        "produce.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Orders",
            "--mode",
            "batch",
            "--count",
            "3",
            "--prefix",
            "b",
            "--tags",
            "C,A",
        ],
    );

    // A || B: s-0 s-1 s-3 s-4 (A, B), every o (A), every r (B), b-1 (A).
    let want: Vec<String> = {
        let mut w: Vec<String> =
            ["s-0", "s-1", "s-3", "s-4", "o-0", "o-1", "o-2", "r-0", "r-1", "r-2", "r-3", "b-1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        w.sort();
        w
    };
    let got = script(
        &py,
        "push_consume.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Orders",
            "--group",
            "CG_TAGS",
            "--expression",
            "A || B",
            "--expect",
            &want.len().to_string(),
        ],
    );
    assert_eq!(bodies(&got), want, "exactly the A and B messages, once each");
    for m in messages(&got) {
        let body = m["body"].as_str().unwrap();
        assert_eq!(m["keys"], body, "KEYS round-trip");
        assert!(m["tags"] == "A" || m["tags"] == "B");
        assert_eq!(m["topic"], "Orders");
        let idx: usize = body.split('-').nth(1).unwrap().parse().unwrap();
        assert_eq!(m["idx"], idx.to_string(), "a user property round-trips");
    }
    // The message id a consumer sees is the one the sync send returned (UNIQ_KEY).
    let consumed_ids: Vec<&str> =
        messages(&got).iter().map(|m| m["id"].as_str().unwrap()).collect();
    for (i, s) in sent.iter().enumerate() {
        if i % 3 != 2 {
            assert!(consumed_ids.contains(&s["msg_id"].as_str().unwrap()), "id of s-{i}");
        }
    }
    // Orderly sends with the same argument went to the same queue, in order.
    let mut by_queue: std::collections::BTreeMap<u64, Vec<(u64, String)>> = Default::default();
    for m in messages(&got).iter().filter(|m| m["body"].as_str().unwrap().starts_with("r-")) {
        by_queue
            .entry(m["queue_id"].as_u64().unwrap())
            .or_default()
            .push((m["offset"].as_u64().unwrap(), m["body"].as_str().unwrap().to_owned()));
    }
    assert_eq!(by_queue.len(), 2, "orderly: two selector arguments, two queues");
    for list in by_queue.values_mut() {
        list.sort();
        let order: Vec<usize> =
            list.iter().map(|(_, b)| b[2..].parse::<usize>().unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "queue order is send order: {order:?}");
    }
}

#[test]
fn a_restarted_push_consumer_resumes_from_its_committed_offset() {
    let Some(py) = python() else { return };
    let f = start("resume");
    let ns = f.namesrv.as_str();
    script(
        &py,
        "produce.py",
        &["--namesrv", ns, "--topic", "Resume", "--count", "5", "--prefix", "first"],
    );
    let got = script(
        &py,
        "push_consume.py",
        &["--namesrv", ns, "--topic", "Resume", "--group", "CG_RESUME", "--expect", "5"],
    );
    assert_eq!(bodies(&got), names("first", 0..5));
    script(
        &py,
        "produce.py",
        &["--namesrv", ns, "--topic", "Resume", "--count", "4", "--prefix", "second"],
    );
    let got = script(
        &py,
        "push_consume.py",
        &["--namesrv", ns, "--topic", "Resume", "--group", "CG_RESUME", "--expect", "4"],
    );
    assert_eq!(bodies(&got), names("second", 0..4), "only what came after the commit");
}

#[test]
fn python_and_native_clients_read_each_others_messages() {
    let Some(py) = python() else { return };
    let f = start("interop");
    let ns = f.namesrv.as_str();
    // Native -> Python (the topic is created by the native admin, 4 queues).
    let client = Client::connect(&f.broker.addr()).unwrap();
    client.admin().create_topic("FromNative", 4).unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    for i in 0..6 {
        let m = Message::new("FromNative", format!("n-{i}"))
            .with_key(format!("n-{i}"))
            .with_tag(if i % 2 == 0 { "A" } else { "B" })
            .with_property("idx", i.to_string());
        producer.send(m).unwrap();
    }
    let pulled = script(
        &py,
        "pull_consume.py",
        &["--namesrv", ns, "--topic", "FromNative", "--group", "CG_PULL"],
    );
    assert_eq!(bodies(&pulled), names("n", 0..6), "the pull consumer drains every queue");
    let got = script(
        &py,
        "push_consume.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "FromNative",
            "--group",
            "CG_NATIVE",
            "--expression",
            "A",
            "--expect",
            "3",
        ],
    );
    assert_eq!(bodies(&got), vec!["n-0", "n-2", "n-4"]);
    for m in messages(&got) {
        assert_eq!(m["keys"], m["body"], "the native key reads as KEYS");
        assert_eq!(m["tags"], "A", "the native tag reads as TAGS");
    }

    // Python -> native.
    script(
        &py,
        "produce.py",
        &["--namesrv", ns, "--topic", "FromPython", "--count", "5", "--prefix", "p", "--tags", "X"],
    );
    let route = client.admin().route("FromPython").unwrap();
    let consumer = client.consumer();
    let mut seen = Vec::new();
    for q in 0..route.queue_count() {
        let r = consumer.pull("FromPython", q, 0, Duration::ZERO).unwrap();
        for m in r.messages {
            assert_eq!(m.key, m.body, "KEYS is the native key");
            assert_eq!(m.tag, &b"X"[..], "TAGS is the native tag");
            let idx = String::from_utf8(m.property(b"idx").unwrap().to_vec()).unwrap();
            assert_eq!(format!("p-{idx}").into_bytes(), m.body, "a property round-trips");
            assert!(m.property(b"UNIQ_KEY").is_some(), "the client's UNIQ_KEY is kept");
            seen.push(String::from_utf8(m.body.to_vec()).unwrap());
        }
    }
    seen.sort();
    assert_eq!(seen, names("p", 0..5));

    // Bodies over 4 KiB are compressed by the client: stored as sent, flagged, and inflated
    // again by RocketMQ consumers.
    script(
        &py,
        "produce.py",
        &["--namesrv", ns, "--topic", "Big", "--count", "2", "--prefix", "big", "--pad", "20000"],
    );
    let stored = native_read(&f, "Big");
    assert_eq!(stored.len(), 2);
    for m in &stored {
        assert_eq!(m.property(b"RMQ_COMPRESSED"), Some(&b"1"[..]));
        assert!(m.body.len() < 20000 && m.body[0] == 0x78, "the zlib stream as sent");
    }
    let got =
        script(&py, "pull_consume.py", &["--namesrv", ns, "--topic", "Big", "--group", "CG_BIG"]);
    let want: Vec<String> = (0..2).map(|i| format!("big-{i}{}", "x".repeat(20000))).collect();
    assert_eq!(bodies(&got), want, "inflated by the consumer");
}

/// Eighteen delay levels of `level` each.
fn short_levels(level: &str) -> String {
    format!("[schedule]\ndelay_levels = \"{}\"\n", vec![level; 18].join(" "))
}

/// Every message of `topic` (all queues), read with the native client.
fn native_read(f: &Front, topic: &str) -> Vec<ringmq::client::ConsumedMessage> {
    let client = Client::connect(&f.broker.addr()).unwrap();
    let Ok(route) = client.admin().route(topic) else { return Vec::new() };
    let consumer = client.consumer();
    let mut all = Vec::new();
    for q in 0..route.queue_count() {
        all.extend(consumer.pull(topic, q, 0, Duration::ZERO).unwrap().messages);
    }
    all
}

#[test]
fn a_failing_callback_is_redelivered_and_one_that_always_fails_reaches_the_dlq() {
    let Some(py) = python() else { return };
    let f = start_front("retry", &short_levels("200ms"));
    let ns = f.namesrv.as_str();
    script(
        &py,
        "produce.py",
        &["--namesrv", ns, "--topic", "Retry", "--count", "2", "--prefix", "r"],
    );
    let got = script(
        &py,
        "push_consume.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Retry",
            "--group",
            "CG_RETRY",
            "--fail",
            "first",
            "--expect",
            "4",
        ],
    );
    let mut deliveries: Vec<(String, u64)> = messages(&got)
        .iter()
        .map(|m| (m["body"].as_str().unwrap().to_owned(), m["reconsume_times"].as_u64().unwrap()))
        .collect();
    deliveries.sort();
    let want = [("r-0", 0), ("r-0", 1), ("r-1", 0), ("r-1", 1)];
    assert_eq!(deliveries, want.map(|(b, n)| (b.to_owned(), n)), "each once more, count 1");
    for m in messages(&got) {
        assert_eq!(m["topic"], "Retry", "a retried message reads with its original topic");
    }
    let retried = native_read(&f, "%RETRY%CG_RETRY");
    assert_eq!(retried.len(), 2, "the copies went through the group's retry topic");
    for m in &retried {
        assert_eq!(m.property(b"RETRY_TOPIC"), Some(&b"Retry"[..]));
        assert_eq!(m.property(b"RECONSUME_TIME"), Some(&b"1"[..]));
    }

    // RocketMQ's default of 16 retries: 17 deliveries, then the dead-letter topic.
    script(
        &py,
        "produce.py",
        &["--namesrv", ns, "--topic", "Dead", "--count", "1", "--prefix", "d"],
    );
    let got = script(
        &py,
        "push_consume.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Dead",
            "--group",
            "CG_DEAD",
            "--fail",
            "always",
            "--expect",
            "17",
            "--timeout",
            "100",
            "--settle",
            "3",
        ],
    );
    let counts: Vec<u64> =
        messages(&got).iter().map(|m| m["reconsume_times"].as_u64().unwrap()).collect();
    assert_eq!(counts, (0..17).collect::<Vec<u64>>(), "delivered with counts 0..=16, once each");
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = native_read(&f, "%DLQ%CG_DEAD");
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dead.len(), 1, "the message is in the dead-letter topic once");
    assert_eq!(dead[0].body, &b"d-0"[..]);
    assert_eq!(dead[0].property(b"RECONSUME_TIME"), Some(&b"17"[..]));
    assert_eq!(dead[0].property(b"RETRY_TOPIC"), Some(&b"Dead"[..]));
}

#[test]
fn an_orderly_consumer_keeps_queue_order_and_a_delayed_message_waits_for_its_level() {
    let Some(py) = python() else { return };
    let levels =
        "[schedule]\ndelay_levels = \"1s 3s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s\"\n";
    let f = start_front("orderly", levels);
    let ns = f.namesrv.as_str();
    script(
        &py,
        "produce.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Ordered",
            "--mode",
            "orderly",
            "--count",
            "20",
            "--prefix",
            "o",
        ],
    );
    let got = script(
        &py,
        "push_consume.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Ordered",
            "--group",
            "CG_ORDER",
            "--orderly",
            "--expect",
            "20",
        ],
    );
    assert_eq!(bodies(&got), names("o", 0..20));
    for parity in 0..2 {
        // Selector argument i % 2: each parity is one queue, consumed in send order.
        let seen: Vec<usize> = messages(&got)
            .iter()
            .map(|m| m["body"].as_str().unwrap()[2..].parse::<usize>().unwrap())
            .filter(|i| i % 2 == parity)
            .collect();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "parity {parity} out of order: {seen:?}");
    }

    // DELAY level 2 is 3 s here.
    let sent = script(
        &py,
        "produce.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Later",
            "--count",
            "1",
            "--prefix",
            "l",
            "--delay-level",
            "2",
        ],
    );
    let got = script(
        &py,
        "push_consume.py",
        &[
            "--namesrv",
            ns,
            "--topic",
            "Later",
            "--group",
            "CG_LATER",
            "--expect",
            "1",
            "--settle",
            "0",
        ],
    );
    let m = messages(&got)[0];
    assert_eq!(m["body"], "l-0");
    let waited = m["at_ms"].as_i64().unwrap() - sent[0]["sent_ms"].as_i64().unwrap();
    assert!(waited >= 3000, "delivered {waited} ms after the send, before its 3 s level");
}

/// `ringmq namesrv` alone, in front of a broker whose front runs without its own name server.
#[test]
fn a_standalone_name_server_routes_clients_to_the_broker_front() {
    let Some(py) = python() else { return };
    let f = start_front("standalone", "namesrv = false\n");
    assert!(f.broker.ready_line.contains("rocketmq_namesrv=0"), "{}", f.broker.ready_line);
    let mut ns = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["namesrv", "--listen", "127.0.0.1:0", "--queues", "3", "--broker"])
        .arg(format!("{}={}", f.broker.addr(), format_args!("127.0.0.1:{}", f.front_port)))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ringmq namesrv");
    let mut out = ns.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let addr = line.strip_prefix("ringmq namesrv ready listen=").unwrap_or_else(|| {
        let _ = ns.kill();
        panic!("no ready line: {line:?}")
    });
    let addr = addr.trim().to_owned();
    script(
        &py,
        "produce.py",
        &["--namesrv", &addr, "--topic", "Alone", "--count", "3", "--prefix", "a"],
    );
    let got = script(
        &py,
        "push_consume.py",
        &["--namesrv", &addr, "--topic", "Alone", "--group", "CG_ALONE", "--expect", "3"],
    );
    assert_eq!(bodies(&got), names("a", 0..3));
    let client = Client::connect(&f.broker.addr()).unwrap();
    assert_eq!(client.admin().route("Alone").unwrap().queue_count(), 3, "created with --queues");
    unsafe { libc::kill(ns.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = ns.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ringmq namesrv did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// ali-ons: a Node client with its own codec, sending with SEND_MESSAGE_V2.
#[test]
fn the_ali_ons_producer_and_consumer_work_and_interoperate() {
    let Some(node_path) = ons_node_path() else { return };
    let f = start("ons");
    let mut node = Command::new("node");
    node.env("NODE_PATH", &node_path);
    let out = run_script(node, "ons.js", &[&f.namesrv, "JsTopic", "CG_JS", "6"]);
    let sends: Vec<&Value> = out.iter().filter(|v| v.get("status").is_some()).collect();
    assert_eq!(sends.len(), 6);
    assert!(sends.iter().all(|s| s["status"] == "SEND_OK"), "{sends:?}");
    let got: Vec<&Value> = out.iter().filter(|v| v.get("body").is_some()).collect();
    let mut seen: Vec<String> =
        got.iter().map(|m| m["body"].as_str().unwrap().to_owned()).collect();
    seen.sort();
    assert_eq!(seen, names("js", 0..6));
    for m in &got {
        assert_eq!(m["keys"], m["body"]);
        let i: usize = m["body"].as_str().unwrap()[3..].parse().unwrap();
        assert_eq!(m["tags"], if i % 2 == 0 { "A" } else { "B" });
        assert_eq!(m["idx"], i.to_string());
    }
    // What ali-ons sent reads with the native client, and with the Python client if present.
    let native = native_read(&f, "JsTopic");
    assert_eq!(native.len(), 6);
    assert!(native.iter().all(|m| m.key == m.body && m.property(b"idx").is_some()));
    if let Some(py) = python() {
        let pulled = script(
            &py,
            "pull_consume.py",
            &["--namesrv", &f.namesrv, "--topic", "JsTopic", "--group", "CG_PY"],
        );
        assert_eq!(bodies(&pulled), names("js", 0..6));
    }
}
