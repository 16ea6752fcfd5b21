//! Transactional messages against the real binary (short check interval configured): commit,
//! rollback, unknown -> check-back -> commit, unknown x check_max -> rollback, `ringmq txn
//! list`, and a SIGKILL between half and end (then a commit delivers exactly once, and
//! check-back resolves a half nobody ended).

mod broker_common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker_common::{config, poll_until, Broker};
use ringmq::client::{Client, Message, QueueSelector, TransactionProducerConfig, TransactionState};
use ringmq::protocol::ErrorCode;

const CHECK_INTERVAL_MS: u64 = 300;
const CHECK_MAX: u32 = 3;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-txn").tempdir().unwrap()
}

fn broker_config(dir: &std::path::Path) -> String {
    config(dir, 2, "", "flush_mode = \"sync\"")
        + &format!(
            "[transaction]\ncheck_interval_ms = {CHECK_INTERVAL_MS}\ncheck_max = {CHECK_MAX}\n"
        )
}

fn producer_config(group: &str, queue_id: u32) -> TransactionProducerConfig {
    TransactionProducerConfig {
        selector: QueueSelector::Queue(queue_id),
        check_wait: Duration::from_millis(200),
        ..TransactionProducerConfig::new(group)
    }
}

/// Bodies stored in `queue_id` of `topic`, in order.
fn bodies(client: &Client, topic: &str, queue_id: u32) -> Vec<String> {
    let next = client.admin().queue_offsets(topic, queue_id).unwrap().next;
    if next == 0 {
        return Vec::new();
    }
    let got = client.consumer().pull(topic, queue_id, 0, Duration::from_millis(100)).unwrap();
    got.messages.iter().map(|m| String::from_utf8(m.body.to_vec()).unwrap()).collect()
}

fn txn_list(broker: &Broker) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["txn", "list", "--broker", &broker.addr()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn commit_rollback_and_check_back_end_transactions() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &broker_config(dir.path()));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("orders", 4).unwrap();

    // Commit and rollback by the local transaction.
    let p = client
        .transaction_producer(producer_config("tx", 0), |_| TransactionState::Unknown)
        .unwrap();
    let r = p.send_in_transaction(Message::new("orders", "paid"), |half| {
        assert_eq!(half.message.body, b"paid");
        TransactionState::Commit
    });
    let r = r.unwrap();
    assert_eq!((r.state, r.queue_offset, r.queue_id), (TransactionState::Commit, Some(0), 0));
    let r = p
        .send_in_transaction(Message::new("orders", "cancelled"), |_| TransactionState::Rollback)
        .unwrap();
    assert_eq!((r.state, r.queue_offset), (TransactionState::Rollback, None));
    assert_eq!(bodies(&client, "orders", 0), vec!["paid"]);
    // Ending it again is refused and delivers nothing.
    let e = p.end("orders", 0, r.transaction_id, TransactionState::Commit).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TRANSACTION_DECIDED), "{e}");
    p.close();

    // Unknown, then the check-back commits it.
    let asked = Arc::new(AtomicU32::new(0));
    let seen = asked.clone();
    let p = client
        .transaction_producer(producer_config("tx-check", 1), move |c| {
            seen.fetch_add(1, Ordering::SeqCst);
            assert_eq!(c.messages[0].body, b"later", "the check carries the half's message");
            TransactionState::Commit
        })
        .unwrap();
    let r = p
        .send_in_transaction(Message::new("orders", "later"), |_| TransactionState::Unknown)
        .unwrap();
    assert_eq!((r.state, r.queue_id), (TransactionState::Unknown, 1));
    poll_until(Duration::from_secs(20), || {
        (bodies(&client, "orders", 1) == ["later"]).then_some(())
    });
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    p.close();

    // Unknown forever: checked check_max times, then rolled back; `txn list` shows it meanwhile.
    let asked = Arc::new(AtomicU32::new(0));
    let seen = asked.clone();
    let p = client
        .transaction_producer(producer_config("tx-unsure", 2), move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            TransactionState::Unknown
        })
        .unwrap();
    let r = p
        .send_in_transaction(Message::new("orders", "never"), |_| TransactionState::Unknown)
        .unwrap();
    let listed = txn_list(&broker);
    let line =
        listed.lines().find(|l| l.contains("tx-unsure")).unwrap_or_else(|| panic!("{listed}"));
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[1], r.transaction_id.to_string(), "{line}");
    assert_eq!((fields[3], fields[4]), ("orders", "2"), "{line}");
    poll_until(Duration::from_secs(20), || {
        (!txn_list(&broker).contains("tx-unsure")).then_some(())
    });
    // Asked at most check_max times (exactly that many unless this machine stalled the
    // producer past a whole interval; the shard tests pin the count with a simulated clock).
    let asked = asked.load(Ordering::SeqCst);
    assert!((1..=CHECK_MAX).contains(&asked), "asked {asked} times");
    assert!(bodies(&client, "orders", 2).is_empty(), "a rolled back half is never delivered");
    let e = p.end("orders", 2, r.transaction_id, TransactionState::Commit).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TRANSACTION_DECIDED), "{e}");
    p.close();
}

#[test]
fn a_sigkill_between_half_and_end_loses_and_duplicates_nothing() {
    let dir = tempdir();
    let cfg = broker_config(dir.path());
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("orders", 4).unwrap();
    // Two halves acknowledged (sync flush), never ended, then the broker dies.
    let p = client
        .transaction_producer(producer_config("tx", 3), |_| TransactionState::Unknown)
        .unwrap();
    let ended = p
        .send_in_transaction(Message::new("orders", "ended"), |_| TransactionState::Unknown)
        .unwrap();
    let checked = p
        .send_in_transaction(Message::new("orders", "checked"), |_| TransactionState::Unknown)
        .unwrap();
    drop(p);
    broker.kill();

    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    assert!(bodies(&client, "orders", 3).is_empty(), "nothing visible before a commit");
    // The producer commits the first after the restart: delivered once, a repeat refused.
    // Its check callback commits the second.
    let p = client
        .transaction_producer(producer_config("tx", 3), |c| {
            if c.messages[0].body == b"checked" {
                TransactionState::Commit
            } else {
                TransactionState::Unknown
            }
        })
        .unwrap();
    assert_ne!(ended.transaction_id, checked.transaction_id);
    let delivered = p.end("orders", 3, ended.transaction_id, TransactionState::Commit).unwrap();
    assert!(delivered.is_some());
    let e = p.end("orders", 3, ended.transaction_id, TransactionState::Commit).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TRANSACTION_DECIDED), "{e}");
    poll_until(Duration::from_secs(20), || (bodies(&client, "orders", 3).len() == 2).then_some(()));
    // Each exactly once (the check-back may commit its half before or after the explicit end).
    let mut got = bodies(&client, "orders", 3);
    got.sort();
    assert_eq!(got, vec!["checked", "ended"]);
    assert!(!txn_list(&broker).contains("\ttx\t"), "nothing undecided is left");
    p.close();
}

#[test]
fn requests_sent_to_another_shard_are_forwarded_to_the_owner() {
    use ringmq::broker::routing::owner_shard;
    use ringmq::client::connection::{Connection, ConnectionOptions};
    use ringmq::protocol::transaction::{EndAction, TxnRequest, TxnResponse};
    use ringmq::protocol::{Request, Response};

    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &broker_config(dir.path()));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("orders", 4).unwrap();
    let p = client
        .transaction_producer(producer_config("tx", 1), |_| TransactionState::Unknown)
        .unwrap();
    let r = p
        .send_in_transaction(Message::new("orders", "via"), |_| TransactionState::Unknown)
        .unwrap();
    let owner = owner_shard("orders", 1, 2).get();
    let other = Connection::connect(
        &format!("127.0.0.1:{}", broker.shard_ports[1 - owner]),
        &ConnectionOptions::default(),
    )
    .unwrap();
    // A list of the owner's halves, asked of the other shard.
    let list = Request::Transaction(TxnRequest::List { shard: owner as u16, max: 10 });
    let Response::Transaction(TxnResponse::List { halves }) =
        other.call(&list, Duration::from_secs(10)).unwrap()
    else {
        panic!()
    };
    assert_eq!(halves.len(), 1);
    assert_eq!(halves[0].transaction_id, r.transaction_id);
    // The commit, sent to the shard that does not own the queue.
    let end = Request::Transaction(TxnRequest::End {
        group: "tx".into(),
        topic: "orders".into(),
        queue_id: 1,
        transaction_id: r.transaction_id,
        action: EndAction::Commit,
    });
    let reply = other.call(&end, Duration::from_secs(10)).unwrap();
    assert!(matches!(reply, Response::Transaction(TxnResponse::End { record_count: 1, .. })));
    assert_eq!(bodies(&client, "orders", 1), vec!["via"]);
    // A shard that does not exist is named.
    let bad = Request::Transaction(TxnRequest::List { shard: 9, max: 10 });
    let e = other.call(&bad, Duration::from_secs(10)).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::INVALID_ARGUMENT), "{e}");
    p.close();
}
