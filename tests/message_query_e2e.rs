//! `ringmq message query|get` against the real binary: keyed messages found by key and time
//! range on every shard, by id, clear errors for bad ids and unknown keys; then SIGKILL and
//! restart (the key index rebuilt from the log past its checkpoint), a clean stop and restart
//! (the index from its files), and messages written after the last checkpoint still found.

mod broker_common;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker_common::{config, poll_until, Broker};
use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};

const WAIT: Duration = Duration::from_secs(60);

fn ringmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringmq")).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn failure(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// Message ids a query prints (first column), in order.
fn query(b: &str, key: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["message", "query", "--topic", "orders", "--key", key, "--broker", b];
    args.extend_from_slice(extra);
    ok(ringmq(&args)).lines().map(|l| l.split('\t').next().unwrap().to_string()).collect()
}

/// Polls until the query by `key` finds exactly `want` (the index follows the log).
fn query_finds(b: &str, key: &str, want: &BTreeSet<String>) -> Vec<String> {
    poll_until(WAIT, || {
        let got = query(b, key, &["--max", "1000"]);
        (got.iter().cloned().collect::<BTreeSet<_>>() == *want).then_some(got)
    })
}

/// Sends `n` messages keyed `"<prefix>-<i % 5> all-<prefix>"`; returns their ids by key word.
fn send(client: &Client, prefix: &str, n: usize) -> Vec<(String, String)> {
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::RoundRobin, ..Default::default() })
        .unwrap();
    let out = (0..n)
        .map(|i| {
            let key = format!("{prefix}-{} all-{prefix}", i % 5);
            let m = Message::new("orders", format!("body {prefix} {i}")).with_key(key);
            let r = producer.send(m).unwrap();
            (format!("{prefix}-{}", i % 5), r.message_id())
        })
        .collect();
    producer.close().unwrap();
    out
}

fn ids_of(sent: &[(String, String)], key: &str) -> BTreeSet<String> {
    sent.iter().filter(|(k, _)| k == key).map(|(_, id)| id.clone()).collect()
}

fn all_ids(sent: &[(String, String)]) -> BTreeSet<String> {
    sent.iter().map(|(_, id)| id.clone()).collect()
}

#[test]
fn query_by_key_and_id_survive_kill_and_restart() {
    let dir = tempfile::Builder::new().prefix("ringmq-mquery").tempdir().unwrap();
    // Small index files (several seal while the test runs), no periodic checkpoint: after a
    // SIGKILL everything since the start is rebuilt from the log.
    let mut cfg = config(dir.path(), 2, "", "flush_mode = \"sync\"");
    cfg.push_str(
        "[key_index]\nslots_per_file = 16\nentries_per_file = 64\ninterval_ms = 50\n\
         checkpoint_interval_ms = 3600000\n",
    );
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let b = broker.addr();
    ok(ringmq(&["topic", "create", "orders", "--queues", "4", "--broker", &b]));

    let client = Client::connect(&b).unwrap();
    let early = send(&client, "a", 60);
    let mid_ms = now_ms();
    poll_until(WAIT, || (now_ms() > mid_ms).then_some(()));
    let late = send(&client, "b", 40);

    // By key: every shard's messages with the key word, newest first.
    let found = query_finds(&b, "a-3", &ids_of(&early, "a-3"));
    assert_eq!(found.len(), 12);
    query_finds(&b, "all-b", &all_ids(&late));
    let top = query(&b, "all-a", &["--max", "5"]);
    assert_eq!(top.len(), 5, "--max bounds the answer");

    // By time range: store times split at mid_ms.
    let all_a: BTreeSet<String> = all_ids(&early);
    let before = query(&b, "all-a", &["--max", "1000", "--to", &rfc3339(mid_ms)]);
    assert_eq!(before.iter().cloned().collect::<BTreeSet<_>>(), all_a);
    let after = query(&b, "all-a", &["--max", "1000", "--from", &rfc3339(mid_ms + 1)]);
    assert!(after.is_empty(), "{after:?}");
    let after = query(&b, "all-b", &["--max", "1000", "--from", &rfc3339(mid_ms + 1)]);
    assert_eq!(after.len(), 40);

    // A query line: id, queue, offset, store time, key, body.
    let line = ok(ringmq(&[
        "message", "query", "--topic", "orders", "--key", "b-0", "--max", "1", "--broker", &b,
    ]));
    let fields: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(fields[4], "b-0 all-b");
    assert_eq!(fields[5], "body b 35", "the newest b-0 message");

    // By id.
    let (_, id) = &late[35];
    let got = ok(ringmq(&["message", "get", id, "--broker", &b]));
    assert!(got.contains(&format!("id\t{id}")), "{got}");
    assert!(got.contains("topic\torders") && got.contains("body\tbody b 35"), "{got}");
    assert!(got.contains("key\tb-0 all-b"), "{got}");

    // Clear errors.
    let e = failure(ringmq(&["message", "get", "xyz", "--broker", &b]));
    assert!(e.contains("32 hex digits"), "{e}");
    let e = failure(ringmq(&["message", "get", &format!("000000FF{}", &id[8..]), "--broker", &b]));
    assert!(e.contains("no topic has id 255"), "{e}");
    let past = format!("{}{:016X}", &id[..16], 1u64 << 40);
    let e = failure(ringmq(&["message", "get", &past, "--broker", &b]));
    assert!(e.contains("never written"), "{e}");
    let none = ringmq(&["message", "query", "--topic", "orders", "--key", "nope", "--broker", &b]);
    assert!(none.status.success() && none.stdout.is_empty());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no message"));
    let e = failure(ringmq(&["message", "query", "--topic", "nope", "--key", "k", "--broker", &b]));
    assert!(e.contains("UNKNOWN_TOPIC"), "{e}");
    let e =
        failure(ringmq(&["message", "query", "--topic", "orders", "--key", "a b", "--broker", &b]));
    assert!(e.contains("without spaces"), "{e}");

    // SIGKILL: nothing was checkpointed since the start; the restart re-indexes the log.
    drop(client);
    broker.kill();
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let b = broker.addr();
    assert_eq!(query(&b, "a-3", &["--max", "1000"]), found, "rebuilt before serving");
    assert_eq!(query(&b, "all-b", &["--max", "1000"]).len(), 40);

    // A clean stop checkpoints; messages after the restart are past that checkpoint.
    let client = Client::connect(&b).unwrap();
    let c1 = send(&client, "c", 30);
    query_finds(&b, "all-c", &all_ids(&c1));
    drop(client);
    assert!(broker.stop().success());
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let b = broker.addr();
    let client = Client::connect(&b).unwrap();
    let c2 = send(&client, "c", 30);
    let mut c_all = all_ids(&c1);
    c_all.extend(all_ids(&c2));
    query_finds(&b, "all-c", &c_all);
    drop(client);
    broker.kill();
    let broker = Broker::start_in(dir.path(), &cfg);
    let b = broker.addr();
    let got: BTreeSet<String> = query(&b, "all-c", &["--max", "1000"]).into_iter().collect();
    assert_eq!(got, c_all, "checkpointed and re-indexed messages both found");
    assert_eq!(query(&b, "a-3", &["--max", "1000"]), found);
    let got = ok(ringmq(&["message", "get", &c2[7].1, "--broker", &b]));
    assert!(got.contains("body\tbody c 7"), "{got}");
}

#[test]
fn without_a_key_index_queries_say_so_and_get_by_id_works() {
    let dir = tempfile::Builder::new().prefix("ringmq-mquery-off").tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, "", "");
    cfg.push_str("[key_index]\nenabled = false\n");
    let broker = Broker::start_in(dir.path(), &cfg);
    let b = broker.addr();
    ok(ringmq(&["topic", "create", "orders", "--queues", "1", "--broker", &b]));
    let client = Client::connect(&b).unwrap();
    let sent = send(&client, "x", 1);
    let e =
        failure(ringmq(&["message", "query", "--topic", "orders", "--key", "x-0", "--broker", &b]));
    assert!(e.contains("without a key index"), "{e}");
    let got = ok(ringmq(&["message", "get", &sent[0].1, "--broker", &b]));
    assert!(got.contains("body\tbody x 0"), "{got}");
    assert!(!dir.path().join("data/shard-0/keys").exists(), "no key index files");
}
