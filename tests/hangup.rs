//! Long polls of a client that goes away, against the real `ringmq` binary: a parked FETCH,
//! FETCH_MULTI, WATCH_GROUP or CHECK_TRANSACTIONS of a connection whose peer closed ends
//! then, not at its deadline, so it holds no waiter slot or forwarded-request permit for a
//! client that is gone; a peer that closed only its sending side still reads the answer.

mod broker_common;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use broker_common::{config, poll_until, Broker, Raw};
use ringmq::broker::routing::owner_shard;
use ringmq::client::Client;
use ringmq::protocol::fetch_multi::{FetchMulti, FetchQueue, FetchTopic};
use ringmq::protocol::group::GroupRequest;
use ringmq::protocol::transaction::TxnRequest;
use ringmq::protocol::{ApiKey, ErrorCode, Request, Response};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-hangup").tempdir().unwrap()
}

fn port(broker: &Broker) -> u16 {
    broker.addr().rsplit(':').next().unwrap().parse().unwrap()
}

fn fetch(topic: &str, queue_id: u32, max_wait_ms: u32) -> Request {
    Request::Fetch {
        topic: topic.into(),
        queue_id,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms,
        tags: Vec::new(),
    }
}

/// Parked fetches on both shards (one served where the connection landed or forwarded to the
/// owner, whichever the shared port chose) and a FETCH_MULTI waiting on both shards: when the
/// client disconnects, every waiter is gone within seconds, not at the 30 s deadline.
#[test]
fn a_disconnected_client_s_long_polls_stop_waiting_on_every_shard() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("h", 8).unwrap();
    let waiting =
        || client.admin().stats().unwrap().iter().map(|s| s.long_poll_waiting).sum::<u64>();
    let on = |shard: usize| (0..8u32).find(|&q| owner_shard("h", q, 2).get() == shard).unwrap();
    let mut raw = Raw::connect(port(&broker));
    raw.send(&fetch("h", on(0), 30_000).encode_frame(1));
    raw.send(&fetch("h", on(1), 30_000).encode_frame(2));
    let multi = Request::FetchMulti(FetchMulti {
        max_bytes: 1 << 20,
        max_wait_ms: 30_000,
        topics: vec![FetchTopic {
            topic: "h".into(),
            tags: Vec::new(),
            queues: (0..8).map(|q| FetchQueue { queue_id: q, offset: 0 }).collect(),
        }],
    });
    raw.send(&multi.encode_frame(3));
    // Two fetches, and the FETCH_MULTI's wait for any queue on each shard.
    poll_until(Duration::from_secs(10), || (waiting() == 4).then_some(()));
    drop(raw);
    let gone = Instant::now();
    poll_until(Duration::from_secs(5), || (waiting() == 0).then_some(()));
    assert!(gone.elapsed() < Duration::from_secs(5));
}

/// A client that sends a long poll and then closes only its sending side (shutdown(SHUT_WR))
/// gets the answer at once, as when the wait ends: what the queue holds then (nothing here).
#[test]
fn a_long_poll_of_a_client_that_stopped_sending_is_answered_at_once() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("h", 1).unwrap();
    let waiting =
        || client.admin().stats().unwrap().iter().map(|s| s.long_poll_waiting).sum::<u64>();
    let mut raw = Raw::connect(port(&broker));
    raw.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.send(&fetch("h", 0, 30_000).encode_frame(7));
    poll_until(Duration::from_secs(10), || (waiting() == 1).then_some(()));
    raw.stream.shutdown(Shutdown::Write).unwrap();
    let (header, payload) = raw.read_frame().expect("the fetch's answer");
    assert_eq!((header.correlation_id, header.error_code), (7, 0));
    let Response::Fetch { next_offset, batches, .. } =
        Response::decode(ApiKey::Fetch, &payload).unwrap()
    else {
        panic!("not a fetch answer")
    };
    assert_eq!((next_offset, batches.len()), (0, 0));
    assert!(raw.read_frame().is_none(), "then the broker closes the connection");
    assert_eq!(waiting(), 0);
}

/// The error code of `request`'s answer on `raw` (0: answered).
fn code_of(raw: &mut Raw, request: &Request, id: u32) -> u16 {
    raw.send(&request.encode_frame(id));
    let (header, _) = raw.read_frame().expect("an answer");
    assert_eq!(header.correlation_id, id);
    header.error_code
}

/// With room for one parked WATCH_GROUP and one parked CHECK_TRANSACTIONS, a client holding
/// both and disconnecting frees them for the next client within seconds (they waited out
/// their 30 s before, and every other client's were refused meanwhile).
#[test]
fn a_disconnected_client_s_parked_watch_and_check_free_their_slots() {
    let dir = tempdir();
    let mut text = config(dir.path(), 1, "", "");
    text.push_str("[group]\nmax_watchers = 1\n[transaction]\nmax_check_waiters = 1\n");
    let broker = Broker::start_in(dir.path(), &text);
    let watch = |version: u64, max_wait_ms: u32| {
        Request::Group(GroupRequest::Watch { group: "g".into(), version, max_wait_ms })
    };
    let check = |max_wait_ms: u32| {
        Request::Transaction(TxnRequest::Check {
            group: "pg".into(),
            shard: 0,
            max_wait_ms,
            max_checks: 8,
        })
    };
    let mut first = Raw::connect(port(&broker));
    first.send(&watch(u64::MAX, 0).encode_frame(1));
    let (header, payload) = first.read_frame().unwrap();
    assert_eq!(header.error_code, 0);
    let Response::Group(ringmq::protocol::group::GroupResponse::Watch { version }) =
        Response::decode(ApiKey::WatchGroup, &payload).unwrap()
    else {
        panic!("not a watch answer")
    };
    first.send(&watch(version, 30_000).encode_frame(2));
    first.send(&check(30_000).encode_frame(3));
    // Answered after the two parked (the connection's tasks run in the order sent): neither
    // was refused or answered.
    first.send(&Request::ListTopics.encode_frame(4));
    assert_eq!(first.read_frame().unwrap().0.correlation_id, 4);
    // Both slots are taken.
    let mut second = Raw::connect(port(&broker));
    assert_eq!(code_of(&mut second, &check(10), 11), ErrorCode::TRANSACTION_LIMIT as u16);
    assert_eq!(code_of(&mut second, &watch(version, 10), 12), ErrorCode::GROUP_LIMIT as u16);
    let mut id = 20;
    drop(first);
    let gone = Instant::now();
    poll_until(Duration::from_secs(5), || {
        id += 1;
        (code_of(&mut second, &watch(version, 10), id) == 0).then_some(())
    });
    poll_until(Duration::from_secs(5), || {
        id += 1;
        (code_of(&mut second, &check(10), id) == 0).then_some(())
    });
    assert!(gone.elapsed() < Duration::from_secs(5));
}
