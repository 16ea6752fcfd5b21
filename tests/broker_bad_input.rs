//! Hostile and mistaken input against the real binary: every case gets a clear error code (or,
//! when framing is broken, only that connection closes) and the broker keeps serving others.

mod broker_common;

use std::io::Write;
use std::time::{Duration, Instant};

use broker_common::{config, Broker, Raw};
use ringmq::format::{BatchBuilder, Record};
use ringmq::protocol::frame::{begin_request, finish_frame, RequestHeader};
use ringmq::protocol::{ApiKey, ErrorCode, ErrorDetail, ErrorResponse, Request, Response};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-bad").tempdir().unwrap()
}

fn batch(n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1 << 20);
    for i in 0..n {
        let body = format!("b{i}");
        b.push(&Record {
            key: b"",
            tag: b"",
            properties: &[],
            body: body.as_bytes(),
            timestamp_ms: 1,
        })
        .unwrap();
    }
    b.finish(-1, -1)
}

fn raw_frame(api_key: u16, api_version: u16, correlation_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = begin_request(RequestHeader { api_key, api_version, correlation_id });
    f.extend_from_slice(payload);
    finish_frame(&mut f);
    f
}

/// Sends `req` and returns the error the broker answered with.
fn expect_error(raw: &mut Raw, req: &Request, id: u32) -> ErrorResponse {
    raw.send(&req.encode_frame(id));
    let (h, p) = raw.read_frame().expect("a reply");
    assert_eq!(h.correlation_id, id);
    assert_ne!(h.error_code, 0, "expected an error for {req:?}");
    ErrorResponse::decode(h.error_code, &p).unwrap()
}

fn expect_ok(raw: &mut Raw, req: &Request, id: u32) -> Response {
    raw.send(&req.encode_frame(id));
    let (h, p) = raw.read_frame().expect("a reply");
    assert_eq!(h.correlation_id, id);
    if h.error_code != 0 {
        panic!("{req:?} failed: {:?}", ErrorResponse::decode(h.error_code, &p));
    }
    Response::decode(req.api_key(), &p).unwrap()
}

fn produce(topic: &str, queue_id: u32, batch: Vec<u8>) -> Request {
    Request::Produce { topic: topic.into(), queue_id, flags: 0, batch: batch.into() }
}

fn fetch(topic: &str, queue_id: u32, offset: u64, max_wait_ms: u32) -> Request {
    Request::Fetch {
        topic: topic.into(),
        queue_id,
        offset,
        max_bytes: 1 << 20,
        max_wait_ms,
        tags: Vec::new(),
    }
}

#[test]
fn bad_requests_get_clear_errors_and_the_connection_goes_on() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let mut raw = Raw::connect(broker.shared_port);
    let code = |e: &ErrorResponse| e.known_code().unwrap();

    let e = expect_error(
        &mut raw,
        &Request::CreateTopic { topic: "bad name".into(), queue_count: 2 },
        1,
    );
    assert_eq!(code(&e), ErrorCode::INVALID_TOPIC_NAME);
    assert!(e.message.contains("bad name"), "{}", e.message);
    let e =
        expect_error(&mut raw, &Request::CreateTopic { topic: "x".repeat(128), queue_count: 2 }, 2);
    assert_eq!(code(&e), ErrorCode::INVALID_TOPIC_NAME);
    let e = expect_error(&mut raw, &Request::CreateTopic { topic: "t".into(), queue_count: 0 }, 3);
    assert_eq!(code(&e), ErrorCode::INVALID_ARGUMENT);
    expect_ok(&mut raw, &Request::CreateTopic { topic: "t".into(), queue_count: 2 }, 4);
    let e = expect_error(&mut raw, &Request::CreateTopic { topic: "t".into(), queue_count: 2 }, 5);
    assert_eq!(code(&e), ErrorCode::TOPIC_EXISTS);
    let e = expect_error(&mut raw, &Request::DeleteTopic { topic: "nope".into() }, 6);
    assert_eq!(code(&e), ErrorCode::UNKNOWN_TOPIC);

    let e = expect_error(&mut raw, &produce("nope", 0, batch(1)), 7);
    assert_eq!(code(&e), ErrorCode::UNKNOWN_TOPIC);
    let e = expect_error(&mut raw, &produce("t", 2, batch(1)), 8);
    assert_eq!(code(&e), ErrorCode::UNKNOWN_QUEUE);
    let e = expect_error(&mut raw, &produce("bad/name", 0, batch(1)), 9);
    assert_eq!(code(&e), ErrorCode::INVALID_TOPIC_NAME);

    let mut corrupt = batch(2);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let e = expect_error(&mut raw, &produce("t", 0, corrupt), 10);
    assert_eq!(code(&e), ErrorCode::CORRUPT_BATCH, "{}", e.message);
    let e = expect_error(&mut raw, &produce("t", 0, vec![7; 200]), 11);
    assert_eq!(code(&e), ErrorCode::INVALID_BATCH, "{}", e.message);
    let e = expect_error(&mut raw, &produce("t", 0, vec![1, 2]), 12);
    assert_eq!(code(&e), ErrorCode::INVALID_BATCH);
    let mut two = batch(1);
    two.extend(batch(1));
    let e = expect_error(&mut raw, &produce("t", 0, two), 13);
    assert_eq!(code(&e), ErrorCode::INVALID_BATCH, "{}", e.message);
    // Over storage.max_batch_bytes (4 MiB) but under the 8 MiB frame bound.
    let e = expect_error(&mut raw, &produce("t", 0, vec![0; 5 << 20]), 14);
    assert_eq!(code(&e), ErrorCode::BATCH_TOO_LARGE);

    // Unknown api key and version, malformed payload, trailing bytes.
    raw.send(&raw_frame(999, 1, 15, &[]));
    let (h, p) = raw.read_frame().unwrap();
    assert_eq!((h.correlation_id, h.error_code), (15, ErrorCode::UNSUPPORTED_API as u16));
    assert!(ErrorResponse::decode(h.error_code, &p).unwrap().message.contains("999"));
    raw.send(&raw_frame(ApiKey::Fetch as u16, 42, 16, &[]));
    let (h, _) = raw.read_frame().unwrap();
    assert_eq!((h.correlation_id, h.error_code), (16, ErrorCode::UNSUPPORTED_VERSION as u16));
    raw.send(&raw_frame(ApiKey::Fetch as u16, 1, 17, &[5, 0, b'a']));
    let (h, _) = raw.read_frame().unwrap();
    assert_eq!((h.correlation_id, h.error_code), (17, ErrorCode::MALFORMED_REQUEST as u16));
    raw.send(&raw_frame(ApiKey::ListTopics as u16, 1, 18, &[0]));
    let (h, _) = raw.read_frame().unwrap();
    assert_eq!((h.correlation_id, h.error_code), (18, ErrorCode::MALFORMED_REQUEST as u16));

    // Offsets: beyond the end is an error with the bounds; at the end long-polls then empty.
    expect_ok(&mut raw, &produce("t", 0, batch(3)), 19);
    let e = expect_error(&mut raw, &fetch("t", 0, 10, 0), 20);
    assert_eq!(code(&e), ErrorCode::OFFSET_OUT_OF_RANGE);
    assert_eq!(e.detail, ErrorDetail::OffsetRange { min: 0, next: 3 });
    let start = Instant::now();
    let r = expect_ok(&mut raw, &fetch("t", 0, 3, 200), 21);
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(
        r,
        Response::Fetch { min_offset: 0, next_offset: 3, scan_end_offset: 3, batches: Vec::new() }
    );
    // Fetching from the middle of a batch returns the whole stored batch.
    let Response::Fetch { batches, .. } = expect_ok(&mut raw, &fetch("t", 0, 1, 0), 22) else {
        panic!()
    };
    assert_eq!(ringmq::format::batch::peek_length(&batches).unwrap() as usize, batches.len());

    // The same connection still serves good requests, pipelined and answered by id.
    for id in 100..110 {
        raw.send(&Request::Metadata { topics: vec!["t".into()] }.encode_frame(id));
    }
    let mut ids: Vec<u32> = (0..10).map(|_| raw.read_frame().unwrap().0.correlation_id).collect();
    ids.sort();
    assert_eq!(ids, (100..110).collect::<Vec<_>>());
}

/// A batch whose header and CRC are valid but whose record `bad` has a key length running
/// past its record: it passes every header check and would fail every consumer.
fn poison_batch(records: usize, bad: usize) -> Vec<u8> {
    let mut b = batch(records);
    let mut at = ringmq::format::HEADER_LEN;
    for _ in 0..bad {
        at += 4 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    }
    b[at + 8..at + 10].copy_from_slice(&u16::MAX.to_le_bytes());
    let crc = crc32c(&b[ringmq::format::CRC_START..]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

/// CRC-32C, written out so the test does not trust the code under test.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn a_poison_batch_is_refused_on_ingest_and_the_queue_keeps_serving() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let mut raw = Raw::connect(broker.shared_port);
    expect_ok(&mut raw, &Request::CreateTopic { topic: "p".into(), queue_count: 1 }, 1);
    expect_ok(&mut raw, &produce("p", 0, batch(2)), 2);
    let e = expect_error(&mut raw, &produce("p", 0, poison_batch(3, 1)), 3);
    assert_eq!(e.known_code(), Some(ErrorCode::INVALID_BATCH), "{}", e.message);
    assert!(e.message.contains("record 1 is malformed"), "{}", e.message);
    // Count and records disagree: also refused.
    let mut short = batch(2);
    short[48..52].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c(&short[ringmq::format::CRC_START..]);
    short[40..44].copy_from_slice(&crc.to_le_bytes());
    let e = expect_error(&mut raw, &produce("p", 0, short), 4);
    assert_eq!(e.known_code(), Some(ErrorCode::INVALID_BATCH), "{}", e.message);
    expect_ok(&mut raw, &produce("p", 0, batch(1)), 5);
    // Nothing of the refused batches was stored: every stored record decodes.
    let Response::Fetch { batches, next_offset, .. } = expect_ok(&mut raw, &fetch("p", 0, 0, 0), 6)
    else {
        panic!()
    };
    assert_eq!(next_offset, 3);
    let got = ringmq::client::consumer::decode_batches(&batches, 0, &[]);
    assert_eq!(got.corrupt, None);
    assert_eq!(got.messages.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn fetch_below_the_start_reports_the_minimum() {
    let dir = tempdir();
    // Tiny segments and a disk ratio every filesystem exceeds: retention deletes every sealed
    // segment on its next check, so the queue's start moves past 0.
    let broker_cfg = "max_fetch_bytes = 65536";
    let storage_cfg = "retention_check_interval_ms = 100\nsegment_size_bytes = 65536\nmax_batch_bytes = 8192\ndisk_max_used_ratio = 0.000001\npreallocate = false\nchunk_size_bytes = 16384\nchunk_pool_chunks = 8\ncache_bytes = 1048576";
    let text = config(dir.path(), 1, broker_cfg, storage_cfg);
    let broker = Broker::start_in(dir.path(), &text);
    let mut raw = Raw::connect(broker.shared_port);
    expect_ok(&mut raw, &Request::CreateTopic { topic: "r".into(), queue_count: 1 }, 1);
    let mut b = BatchBuilder::new(8000);
    while b
        .push(&Record { key: b"", tag: b"", properties: &[], body: &[7; 100], timestamp_ms: 1 })
        .is_ok()
    {}
    let big = b.finish(-1, -1);
    for i in 0..40 {
        expect_ok(&mut raw, &produce("r", 0, big.clone()), 10 + i);
    }
    let min = broker_common::poll_until(Duration::from_secs(20), || {
        let r = expect_ok(
            &mut raw,
            &Request::Offsets { topic: "r".into(), queue_id: 0, timestamp_ms: -1 },
            99,
        );
        let Response::Offsets { min_offset, .. } = r else { panic!() };
        (min_offset > 0).then_some(min_offset)
    });
    let e = expect_error(&mut raw, &fetch("r", 0, 0, 0), 100);
    assert_eq!(e.known_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
    let ErrorDetail::OffsetRange { min: reported, .. } = e.detail else { panic!("{e:?}") };
    assert!(reported >= min);
    // Retention keeps running: between the answer and the next fetch it may delete the segment
    // that held `reported` (with every sealed segment over the ratio, even the whole queue). A
    // fetch at the reported minimum then gets the newer minimum, which only ever moves forward,
    // and at most once per segment produced above.
    let mut at = reported;
    for id in 101..200 {
        let req = fetch("r", 0, at, 0);
        raw.send(&req.encode_frame(id));
        let (h, p) = raw.read_frame().expect("a reply");
        assert_eq!(h.correlation_id, id);
        if h.error_code == 0 {
            let Response::Fetch { .. } = Response::decode(req.api_key(), &p).unwrap() else {
                panic!("not a fetch reply")
            };
            return;
        }
        let e = ErrorResponse::decode(h.error_code, &p).unwrap();
        assert_eq!(e.known_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE), "{e:?}");
        let ErrorDetail::OffsetRange { min: newer, .. } = e.detail else { panic!("{e:?}") };
        assert!(newer > at, "a fetch at the minimum {at} was refused with minimum {newer}");
        at = newer;
    }
    panic!("the minimum kept moving after producing stopped");
}

#[test]
fn broken_framing_closes_only_that_connection() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let mut good = Raw::connect(broker.shared_port);
    expect_ok(&mut good, &Request::CreateTopic { topic: "f".into(), queue_count: 2 }, 1);

    // Oversized frame: refused from its header alone, with the correlation id, then closed.
    let mut big = Raw::connect(broker.shared_port);
    let mut header = raw_frame(ApiKey::Produce as u16, 1, 77, &[]);
    header[0..4].copy_from_slice(&(64u32 << 20).to_le_bytes());
    big.send(&header);
    let (h, p) = big.read_frame().unwrap();
    assert_eq!((h.correlation_id, h.error_code), (77, ErrorCode::FRAME_TOO_LARGE as u16));
    assert!(ErrorResponse::decode(h.error_code, &p).unwrap().message.contains("max_frame_bytes"));
    assert!(big.read_frame().is_none(), "connection closed after broken framing");

    // A length too short to hold a request header.
    let mut short = Raw::connect(broker.shared_port);
    short.send(&[3, 0, 0, 0, 1, 2, 3]);
    let (h, _) = short.read_frame().unwrap();
    assert_eq!(h.error_code, ErrorCode::MALFORMED_REQUEST as u16);
    assert!(short.read_frame().is_none());

    // Truncated frame, then the client goes away.
    let mut trunc = Raw::connect(broker.shared_port);
    let f = Request::Metadata { topics: vec![] }.encode_frame(5);
    trunc.send(&f[..f.len() - 2]);
    drop(trunc);

    // Disconnecting mid-request: a parked long-poll and a produce whose reply nobody reads.
    for port in [broker.shared_port, broker.shard_ports[1]] {
        let mut gone = Raw::connect(port);
        gone.send(&fetch("f", 0, 0, 5_000).encode_frame(1));
        gone.send(&produce("f", 1, batch(1)).encode_frame(2));
        gone.stream.flush().unwrap();
        drop(gone);
    }
    // Garbage bytes.
    let mut junk = Raw::connect(broker.shard_ports[0]);
    junk.send(&[0xff; 64]);
    let (h, _) = junk.read_frame().unwrap();
    assert_eq!(h.error_code, ErrorCode::FRAME_TOO_LARGE as u16);

    // The broker still serves the first connection and new ones.
    expect_ok(&mut good, &produce("f", 0, batch(2)), 2);
    let mut fresh = Raw::connect(broker.shared_port);
    let r = expect_ok(
        &mut fresh,
        &Request::Offsets { topic: "f".into(), queue_id: 0, timestamp_ms: -1 },
        3,
    );
    assert!(matches!(r, Response::Offsets { next_offset: 2, .. }), "{r:?}");
}

/// A batch stored under larger limits than today's cannot be fetched by asking for less (a
/// fetch returns at least one whole batch): the refusal names the batch's size and the limits
/// to raise, and the batches after it are served.
#[test]
fn a_stored_batch_over_a_lowered_frame_bound_is_refused_with_what_to_raise() {
    let dir = tempdir();
    let wide = config(
        dir.path(),
        1,
        "max_frame_bytes = 262144\nmax_fetch_bytes = 131072",
        "max_batch_bytes = 131072",
    );
    let mut broker = Broker::start_in(dir.path(), &wide);
    let mut raw = Raw::connect(broker.shared_port);
    expect_ok(&mut raw, &Request::CreateTopic { topic: "big".into(), queue_count: 1 }, 1);
    let mut b = BatchBuilder::new(1 << 20);
    let body = vec![b'x'; 100_000];
    b.push(&Record { key: b"", tag: b"", properties: &[], body: &body, timestamp_ms: 1 }).unwrap();
    expect_ok(&mut raw, &produce("big", 0, b.finish(-1, -1)), 2);
    expect_ok(&mut raw, &produce("big", 0, batch(1)), 3);
    drop(raw);
    assert!(broker.stop().success());
    let narrow = config(
        dir.path(),
        1,
        "max_frame_bytes = 65536\nmax_fetch_bytes = 32768",
        "max_batch_bytes = 16384",
    );
    let broker = Broker::start_in(dir.path(), &narrow);
    let mut raw = Raw::connect(broker.shared_port);
    let e = expect_error(&mut raw, &fetch("big", 0, 0, 0), 4);
    assert_eq!(e.known_code(), Some(ErrorCode::FRAME_TOO_LARGE));
    assert!(!e.message.contains("ask for less"), "{}", e.message);
    assert!(e.message.contains("a stored batch of 100"), "{}", e.message);
    assert!(e.message.contains("max_frame_bytes to at least"), "{}", e.message);
    // The connection goes on, and so does the queue past that batch.
    let r = expect_ok(&mut raw, &fetch("big", 0, 1, 0), 5);
    assert!(matches!(r, Response::Fetch { ref batches, .. } if !batches.is_empty()), "{r:?}");
}

#[test]
fn a_response_over_the_frame_bound_is_refused_not_sent() {
    let dir = tempdir();
    let text = config(
        dir.path(),
        1,
        "max_frame_bytes = 65536\nmax_fetch_bytes = 32768",
        "max_batch_bytes = 16384",
    );
    let broker = Broker::start_in(dir.path(), &text);
    let mut raw = Raw::connect(broker.shared_port);
    for i in 0..40 {
        let topic = format!("wide-{i}");
        expect_ok(&mut raw, &Request::CreateTopic { topic, queue_count: 1024 }, i);
    }
    // 40 routes of 1024 queue owners each: about 82 KB, over the 64 KiB bound.
    let e = expect_error(&mut raw, &Request::Metadata { topics: vec![] }, 100);
    assert_eq!(e.known_code(), Some(ErrorCode::FRAME_TOO_LARGE));
    assert!(e.message.contains("fewer topics"), "{}", e.message);
    // The connection goes on; a narrower request works.
    let r = expect_ok(&mut raw, &Request::Metadata { topics: vec!["wide-3".into()] }, 101);
    assert!(
        matches!(r, Response::Metadata { ref topics, .. } if topics[0].queue_owners.len() == 1024)
    );
}

#[test]
fn connections_over_the_shard_limit_are_closed_and_the_rest_keep_working() {
    let dir = tempdir();
    let broker =
        Broker::start_in(dir.path(), &config(dir.path(), 1, "max_connections_per_shard = 2", ""));
    let mut a = Raw::connect(broker.shard_ports[0]);
    let mut b = Raw::connect(broker.shared_port);
    expect_ok(&mut a, &Request::ListTopics, 1);
    expect_ok(&mut b, &Request::ListTopics, 1);
    let mut c = Raw::connect(broker.shared_port);
    c.send(&Request::ListTopics.encode_frame(1));
    assert!(c.read_frame().is_none(), "the third connection is closed");
    expect_ok(&mut a, &Request::ListTopics, 2);
    drop(b);
    // The freed slot is usable again (the broker notices the close asynchronously).
    broker_common::poll_until(Duration::from_secs(10), || {
        let mut d = Raw::connect(broker.shared_port);
        d.send(&Request::ListTopics.encode_frame(1));
        d.read_frame().map(|_| ())
    });
}
