//! The RocketMQ front over raw remoting frames (no client library): refusals of unknown codes
//! and bad frames, name-server routes, VIEW_MESSAGE_BY_ID, and the NOTIFY_CONSUMER_IDS_CHANGED
//! the broker sends, DELETE_SUBSCRIPTIONGROUP. The tests with real RocketMQ clients are in
//! `rocketmq_compat.rs`.

mod broker_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use broker_common::{start_front, Front};
use ringmq::client::{Client, Message, ProducerConfig};
use ringmq::compat::rocketmq::codec::{self, RemotingCommand, SerializeType};
use ringmq::compat::rocketmq::stored;
use serde_json::Value;

/// A broker with the front (and its name server) on free ports.
fn start(name: &str) -> Front {
    start_front(name, "")
}

/// Reads one frame from `s`.
fn read_frame(s: &mut TcpStream) -> RemotingCommand {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut rest).unwrap();
    let mut whole = len.to_vec();
    whole.extend(rest);
    codec::decode(&whole).unwrap().0
}

fn heartbeat(s: &mut TcpStream, client: &str, group: &str, opaque: i32) {
    let mut hb = RemotingCommand::request(34, opaque);
    hb.body = serde_json::to_vec(&serde_json::json!({
        "clientID": client,
        "consumerDataSet": [{"groupName": group, "messageModel": "CLUSTERING",
            "subscriptionDataSet": [{"topic": "Watched", "subString": "*"}]}],
        "producerDataSet": []
    }))
    .unwrap();
    s.write_all(&codec::encode(&hb, SerializeType::Json)).unwrap();
}

#[test]
fn a_member_joining_makes_the_broker_notify_the_others() {
    let f = start("notify");
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", f.front_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    };
    // A member's own joining changes the group too, so a notice to it may come before its
    // heartbeat's answer: the broker sends both, in no fixed order (as RocketMQ's does).
    let read_answer = |s: &mut TcpStream| loop {
        let frame = read_frame(s);
        if !(frame.code == 40 && frame.is_oneway()) {
            break frame;
        }
    };
    let mut a = connect();
    heartbeat(&mut a, "client-a", "CG_WATCH", 1);
    let answer = read_answer(&mut a);
    assert_eq!((answer.code, answer.opaque, answer.is_response()), (0, 1, true));
    let mut b = connect();
    // Each heartbeat or unregister of b changes the group; a must hear of one of them (the
    // first may come before a's watch is parked).
    let deadline = Instant::now() + Duration::from_secs(60);
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut round = 0;
    let notice = loop {
        assert!(Instant::now() < deadline, "no NOTIFY_CONSUMER_IDS_CHANGED within 60 s");
        round += 1;
        if round % 2 == 1 {
            heartbeat(&mut b, "client-b", "CG_WATCH", round);
        } else {
            let mut bye = RemotingCommand::request(35, round);
            bye.set_field("clientID", "client-b");
            bye.set_field("consumerGroup", "CG_WATCH");
            b.write_all(&codec::encode(&bye, SerializeType::Json)).unwrap();
        }
        assert_eq!(read_answer(&mut b).code, 0);
        let mut len = [0u8; 4];
        match a.read_exact(&mut len) {
            Ok(()) => {
                let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
                a.read_exact(&mut rest).unwrap();
                let mut whole = len.to_vec();
                whole.extend(rest);
                break codec::decode(&whole).unwrap().0;
            }
            Err(_) => continue,
        }
    };
    assert_eq!(notice.code, 40, "NOTIFY_CONSUMER_IDS_CHANGED");
    assert!(notice.is_oneway() && !notice.is_response());
    assert_eq!(notice.field("consumerGroup"), Some("CG_WATCH"));
}

/// One request over a raw connection to the front; its answer.
fn exchange(port: u16, frame: &[u8]) -> RemotingCommand {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut rest).unwrap();
    let mut whole = len.to_vec();
    whole.extend(rest);
    codec::decode(&whole).unwrap().0
}

#[test]
fn unknown_codes_are_refused_with_a_remark_and_garbage_closes_only_its_connection() {
    let f = start("raw");
    for ty in [SerializeType::Json, SerializeType::RocketMq] {
        let resp = exchange(f.front_port, &codec::encode(&RemotingCommand::request(9999, 41), ty));
        assert_eq!(resp.code, codec::sys_code::REQUEST_CODE_NOT_SUPPORTED);
        assert_eq!(resp.opaque, 41);
        assert!(resp.remark.unwrap().contains("9999"));
    }
    // A send without its header fields is an error answer, not a crash.
    let resp = exchange(
        f.front_port,
        &codec::encode(&RemotingCommand::request(310, 5), SerializeType::Json),
    );
    assert_eq!(resp.code, codec::sys_code::SYSTEM_ERROR);
    assert!(resp.remark.unwrap().contains("field"));
    // A frame longer than the limit, then a header that is not JSON: each closes its connection.
    for garbage in [
        &[0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0][..],
        &[0, 0, 0, 8, 0, 0, 0, 4, b'{', b'x', b'}', b'!'],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", f.front_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(garbage).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed without an answer");
    }
    // The name server answers routes with the front's address, creating the topic.
    let ns_port: u16 = f.namesrv.rsplit(':').next().unwrap().parse().unwrap();
    let mut req = RemotingCommand::request(105, 9);
    req.set_field("topic", "Raw");
    let resp = exchange(ns_port, &codec::encode(&req, SerializeType::Json));
    assert_eq!(resp.code, 0);
    let route: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(route["brokerDatas"][0]["brokerAddrs"]["0"], format!("127.0.0.1:{}", f.front_port));
    assert_eq!(route["queueDatas"][0]["writeQueueNums"], 8);
    let client = Client::connect(&f.broker.addr()).unwrap();
    assert!(client.admin().list_topics().unwrap().iter().any(|t| t.name == "Raw"));

    // VIEW_MESSAGE_BY_ID: the offset in an offset message id finds the stored message.
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let sent = producer.send(Message::new("Raw", "viewed").with_key("vk").with_tag("T")).unwrap();
    let packed = stored::pack_position(sent.topic_id, sent.queue_id, sent.queue_offset).unwrap();
    let mut view = RemotingCommand::request(33, 10);
    view.set_field("offset", packed);
    let resp = exchange(f.front_port, &codec::encode(&view, SerializeType::Json));
    assert_eq!(resp.code, 0, "{:?}", resp.remark);
    let body = &resp.body;
    let total = i32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    assert_eq!(total, body.len(), "one stored message");
    assert_eq!(&body[4..8], &stored::MAGIC_V1.to_be_bytes());
    assert_eq!(i64::from_be_bytes(body[20..28].try_into().unwrap()) as u64, sent.queue_offset);
    assert_eq!(i64::from_be_bytes(body[28..36].try_into().unwrap()) as u64, packed);
    assert!(body.windows(6).any(|w| w == b"viewed"));
    assert!(body.windows(8).any(|w| w == b"KEYS\x01vk\x02"));
    view.set_field("offset", packed + 1000);
    let resp = exchange(f.front_port, &codec::encode(&view, SerializeType::Json));
    assert_ne!(resp.code, 0, "no message there");
    assert!(resp.remark.unwrap().contains("no message"));
}

/// One message of a stored-message encoding (what pulls and checks carry), as a test reads it.
#[derive(Debug)]
struct Stored {
    queue_offset: u64,
    physical_offset: u64,
    body: Vec<u8>,
    topic: String,
    properties: String,
}

fn decode_stored(mut bytes: &[u8]) -> Vec<Stored> {
    let int = |b: &[u8], at: usize| i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let long = |b: &[u8], at: usize| i64::from_be_bytes(b[at..at + 8].try_into().unwrap()) as u64;
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let total = int(bytes, 0) as usize;
        let m = &bytes[..total];
        assert_eq!(int(m, 4), stored::MAGIC_V1);
        let body_len = int(m, 84) as usize;
        let body = m[88..88 + body_len].to_vec();
        let t = 88 + body_len;
        let topic_len = m[t] as usize;
        let topic = String::from_utf8(m[t + 1..t + 1 + topic_len].to_vec()).unwrap();
        let p = t + 1 + topic_len;
        let props_len = i16::from_be_bytes([m[p], m[p + 1]]) as usize;
        assert_eq!(p + 2 + props_len, total, "the properties end the message");
        out.push(Stored {
            queue_offset: long(m, 20),
            physical_offset: long(m, 28),
            body,
            topic,
            properties: String::from_utf8(m[p + 2..].to_vec()).unwrap(),
        });
        bytes = &bytes[total..];
    }
    out
}

/// A raw client connection: requests in, answers matched by opaque; requests the broker
/// sends meanwhile are kept in `inbox`.
struct Raw {
    s: TcpStream,
    opaque: i32,
    inbox: Vec<RemotingCommand>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Raw { s, opaque: 100, inbox: Vec::new() }
    }

    fn send(&mut self, mut req: RemotingCommand) -> i32 {
        self.opaque += 1;
        req.opaque = self.opaque;
        self.s.write_all(&codec::encode(&req, SerializeType::Json)).unwrap();
        self.opaque
    }

    fn call(&mut self, req: RemotingCommand) -> RemotingCommand {
        let opaque = self.send(req);
        loop {
            let f = read_frame(&mut self.s);
            if f.is_response() && f.opaque == opaque {
                return f;
            }
            if !f.is_response() {
                self.inbox.push(f);
            }
        }
    }

    /// The next request the broker sends (within the read timeout).
    fn next_request(&mut self) -> RemotingCommand {
        if !self.inbox.is_empty() {
            return self.inbox.remove(0);
        }
        loop {
            let f = read_frame(&mut self.s);
            if !f.is_response() {
                return f;
            }
        }
    }
}

/// SEND_MESSAGE_V2 of one message, as the Java and C++ clients send a transaction's half.
fn half_send(topic: &str, group: &str, uniq: &str, body: &str) -> RemotingCommand {
    let mut r = RemotingCommand::request(310, 0);
    let props = format!("TRAN_MSG\u{1}true\u{2}PGROUP\u{1}{group}\u{2}UNIQ_KEY\u{1}{uniq}\u{2}KEYS\u{1}{uniq}\u{2}WAIT\u{1}true\u{2}");
    for (k, v) in [
        ("a", group),
        ("b", topic),
        ("c", "TBW102"),
        ("d", "4"),
        ("e", "0"),
        ("f", "4"), // TRANSACTION_PREPARED_TYPE
        ("g", "1700000000000"),
        ("h", "0"),
        ("i", props.as_str()),
        ("j", "0"),
        ("k", "false"),
        ("m", "false"),
    ] {
        r.set_field(k, v);
    }
    r.body = body.as_bytes().to_vec();
    r
}

/// END_TRANSACTION as clients send it: oneway.
fn end_transaction(
    group: &str,
    commit_log_offset: &str,
    table_offset: &str,
    action: i32,
    from_check: bool,
) -> RemotingCommand {
    let mut r = RemotingCommand::request(37, 0);
    r.flag = codec::FLAG_ONEWAY;
    r.set_field("producerGroup", group);
    r.set_field("commitLogOffset", commit_log_offset);
    r.set_field("tranStateTableOffset", table_offset);
    r.set_field("commitOrRollback", action);
    r.set_field("fromTransactionCheck", from_check);
    r.set_field("msgId", "ignored");
    r.set_field("transactionId", "ignored");
    r
}

fn pull(topic: &str, queue_offset: u64) -> RemotingCommand {
    let mut r = RemotingCommand::request(11, 0);
    for (k, v) in [
        ("consumerGroup", "CG_TX".to_string()),
        ("topic", topic.to_string()),
        ("queueId", "0".to_string()),
        ("queueOffset", queue_offset.to_string()),
        ("maxMsgNums", "32".to_string()),
        ("sysFlag", "0".to_string()),
        ("commitOffset", "0".to_string()),
        ("suspendTimeoutMillis", "0".to_string()),
        ("subscription", "*".to_string()),
        ("subVersion", "0".to_string()),
    ] {
        r.set_field(k, v);
    }
    r
}

#[test]
fn transactions_commit_roll_back_and_are_checked_back_over_the_front() {
    let f = start_front("txn", "[transaction]\ncheck_interval_ms = 1000\n");
    let (topic, group) = ("TxTopic", "PG_TX");
    let producer_heartbeat = |client: &str, group: &str| {
        let mut hb = RemotingCommand::request(34, 0);
        hb.body = serde_json::to_vec(&serde_json::json!({
            "clientID": client,
            "consumerDataSet": [],
            "producerDataSet": [{"groupName": group}, {"groupName": "CLIENT_INNER_PRODUCER"}]
        }))
        .unwrap();
        hb
    };
    let mut c = Raw::connect(f.front_port);
    assert_eq!(c.call(producer_heartbeat("tx-client", group)).code, 0);
    // A producer of another group: never asked about this group's halves.
    let mut other = Raw::connect(f.front_port);
    assert_eq!(other.call(producer_heartbeat("other-client", "PG_OTHER")).code, 0);

    // Three halves: each answered SEND_OK with an offset id and the transaction id.
    let mut halves = Vec::new();
    for name in ["A", "B", "C"] {
        let answer = c.call(half_send(topic, group, &format!("U-{name}"), &format!("body-{name}")));
        assert_eq!(answer.code, 0, "{:?}", answer.remark);
        assert_eq!(answer.field("queueId"), Some("0"));
        let msg_id = answer.field("msgId").unwrap().to_owned();
        assert_eq!(msg_id.len(), 32);
        let offset = u64::from_str_radix(&msg_id[16..], 16).unwrap();
        let table = answer.field("queueOffset").unwrap().to_owned();
        assert_eq!(stored::unpack_position(offset).2.to_string(), table, "the transaction id");
        halves.push((offset.to_string(), table));
    }
    // Nothing is visible before a decision.
    let answer = c.call(pull(topic, 0));
    assert_eq!(answer.code, 19, "PULL_NOT_FOUND: {:?}", answer.remark);

    // A commits, B rolls back, C's local transaction is unknown (0: nothing decided).
    c.send(end_transaction(group, &halves[0].0, &halves[0].1, 8, false));
    c.send(end_transaction(group, &halves[1].0, &halves[1].1, 12, false));
    c.send(end_transaction(group, &halves[2].0, &halves[2].1, 0, false));

    // The broker asks about C (and only C) on this producer's connection.
    let check = c.next_request();
    assert_eq!(check.code, 39, "CHECK_TRANSACTION_STATE");
    assert!(check.is_oneway());
    assert_eq!(check.field("commitLogOffset"), Some(halves[2].0.as_str()));
    assert_eq!(check.field("tranStateTableOffset"), Some(halves[2].1.as_str()));
    assert_eq!(check.field("msgId"), Some("U-C"));
    assert_eq!(check.field("transactionId"), Some("U-C"));
    let checked = decode_stored(&check.body);
    assert_eq!(checked.len(), 1);
    assert_eq!(checked[0].body, b"body-C");
    assert_eq!(checked[0].topic, topic);
    assert!(checked[0].properties.contains("TRAN_MSG\u{1}true\u{2}"), "{:?}", checked[0]);
    assert!(checked[0].properties.contains("PGROUP\u{1}PG_TX\u{2}"), "{:?}", checked[0]);
    other.s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut byte = [0u8; 1];
    assert!(other.s.read(&mut byte).is_err(), "another group's producer got a request");
    // The check's answer decides: commit.
    let (clo, tso) =
        (check.field("commitLogOffset").unwrap(), check.field("tranStateTableOffset").unwrap());
    c.send(end_transaction(group, clo, tso, 8, true));

    // A consumer sees A and C, committed, in that order, never B, and no TRAN_MSG.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let answer = c.call(pull(topic, 0));
        let got = if answer.code == 0 { decode_stored(&answer.body) } else { Vec::new() };
        if got.len() >= 2 {
            break got;
        }
        assert!(Instant::now() < deadline, "the committed messages never arrived: {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let bodies: Vec<&[u8]> = seen.iter().map(|m| m.body.as_slice()).collect();
    assert_eq!(bodies, [&b"body-A"[..], b"body-C"]);
    for (i, m) in seen.iter().enumerate() {
        assert_eq!(m.queue_offset, i as u64);
        assert_eq!(stored::unpack_position(m.physical_offset).2, i as u64, "an offset id");
        assert!(!m.properties.contains("TRAN_MSG"), "{m:?}");
        assert!(m.properties.contains("UNIQ_KEY"), "{m:?}");
    }
    // A repeated end changes nothing; a bad one is refused (answered when not oneway).
    c.send(end_transaction(group, &halves[1].0, &halves[1].1, 8, false));
    let mut bad = end_transaction(group, &halves[0].0, "999", 8, false);
    bad.flag = 0;
    let answer = c.call(bad);
    assert_ne!(answer.code, 0);
    assert!(answer.remark.unwrap().contains("tranStateTableOffset"));
    std::thread::sleep(Duration::from_millis(500));
    let answer = c.call(pull(topic, 0));
    assert_eq!(decode_stored(&answer.body).len(), 2, "B stays rolled back");
    // A half END_TRANSACTION could not name (queue id past 10 bits) is refused, not stored.
    let mut far = half_send(topic, group, "U-far", "body-far");
    far.set_field("e", "1500");
    let answer = c.call(far);
    assert_eq!(answer.code, 13, "MESSAGE_ILLEGAL");
    assert!(answer.remark.unwrap().contains("below 1024"));
    // A native consumer reads the same two.
    let client = Client::connect(&f.broker.addr()).unwrap();
    let got = client.consumer().pull(topic, 0, 0, Duration::from_secs(5)).unwrap();
    let bodies: Vec<&[u8]> = got.messages.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"body-A"[..], b"body-C"]);
}

/// SEND_MESSAGE_V2 of one plain message to queue 0.
fn plain_send(topic: &str, keys: &str, uniq: &str, body: &str) -> RemotingCommand {
    let mut r = half_send(topic, "PG_PLAIN", uniq, body);
    let props = format!("KEYS\u{1}{keys}\u{2}UNIQ_KEY\u{1}{uniq}\u{2}WAIT\u{1}true\u{2}");
    r.set_field("i", props);
    r.set_field("f", "0");
    r
}

fn query(topic: &str, key: &str, max: u32, begin: i64, end: i64) -> RemotingCommand {
    let mut r = RemotingCommand::request(12, 0);
    r.set_field("topic", topic);
    r.set_field("key", key);
    r.set_field("maxNum", max);
    r.set_field("beginTimestamp", begin);
    r.set_field("endTimestamp", end);
    r
}

#[test]
fn query_message_finds_by_key_and_view_finds_the_ids_the_front_hands_out() {
    let f = start_front("query", "[key_index]\ninterval_ms = 50\n");
    let topic = "QueryTopic";
    let mut c = Raw::connect(f.front_port);
    let mut ids = Vec::new();
    for i in 0..5 {
        let answer = c.call(plain_send(
            topic,
            &format!("order-{i} shared"),
            &format!("U-{i}"),
            &format!("body-{i}"),
        ));
        assert_eq!(answer.code, 0, "{:?}", answer.remark);
        ids.push(answer.field("msgId").unwrap().to_owned());
    }
    // VIEW_MESSAGE_BY_ID with the offset of each id a send answered.
    for (i, id) in ids.iter().enumerate() {
        let mut view = RemotingCommand::request(33, 0);
        view.set_field("offset", u64::from_str_radix(&id[16..], 16).unwrap());
        let answer = c.call(view);
        assert_eq!(answer.code, 0, "{:?}", answer.remark);
        let m = decode_stored(&answer.body);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].body, format!("body-{i}").as_bytes());
        assert_eq!(format!("{:016X}", m[0].physical_offset), id[16..]);
    }
    // The index follows the log: wait until the last message is found.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = c.call(query(topic, "order-4", 32, 0, i64::MAX));
        if answer.code == 0 {
            let m = decode_stored(&answer.body);
            assert_eq!(m.len(), 1, "{m:?}");
            assert_eq!(m[0].body, b"body-4");
            assert!(m[0].properties.contains("KEYS\u{1}order-4 shared\u{2}"), "{:?}", m[0]);
            assert!(answer.field("indexLastUpdatePhyoffset").is_some());
            assert!(answer.field("indexLastUpdateTimestamp").is_some());
            break;
        }
        assert_eq!(answer.code, 22, "QUERY_NOT_FOUND while not indexed: {:?}", answer.remark);
        assert!(Instant::now() < deadline, "order-4 never found");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every word of KEYS is a key; maxNum bounds the answer.
    let m = decode_stored(&c.call(query(topic, "shared", 32, 0, i64::MAX)).body);
    let mut bodies: Vec<Vec<u8>> = m.iter().map(|m| m.body.clone()).collect();
    bodies.sort();
    let want: Vec<Vec<u8>> = (0..5).map(|i| format!("body-{i}").into_bytes()).collect();
    assert_eq!(bodies, want);
    assert_eq!(decode_stored(&c.call(query(topic, "shared", 2, 0, i64::MAX)).body).len(), 2);
    // UNIQ_KEY is a key (the Java client's viewMessage by message id queries it).
    let m = decode_stored(&c.call(query(topic, "U-2", 32, 0, i64::MAX)).body);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].body, b"body-2");
    // Nothing under another key, or outside the time range: QUERY_NOT_FOUND with a remark.
    let answer = c.call(query(topic, "order-9", 32, 0, i64::MAX));
    assert_eq!(answer.code, 22);
    assert!(answer.remark.unwrap().contains("order-9"));
    assert_eq!(c.call(query(topic, "order-1", 32, 0, 1000)).code, 22);
    // Bad headers are errors, not hangs.
    let answer = c.call(query(topic, "order-1", 32, 10, 5));
    assert_eq!(answer.code, 1);
    assert!(answer.remark.unwrap().contains("after"));
    assert_eq!(c.call(query("NoSuchTopic", "k", 32, 0, i64::MAX)).code, 17, "TOPIC_NOT_EXIST");
}

fn delete_subscription_group(group: &str, clean_offset: Option<&str>) -> RemotingCommand {
    let mut req = RemotingCommand::request(207, 77);
    req.set_field("groupName", group);
    if let Some(clean) = clean_offset {
        req.set_field("cleanOffset", clean);
    }
    req
}

#[test]
fn delete_subscription_group_with_clean_offset_forgets_an_empty_group_s_offsets() {
    let f = start("delgroup");
    let client = Client::connect(&f.broker.addr()).unwrap();
    client.admin().create_topic("Del", 2).unwrap();
    let groups = client.groups();
    let offsets = [("Del".to_string(), 0, 5), ("Del".to_string(), 1, 6)];
    groups.commit("CG_GONE", 0, &offsets).unwrap();
    groups.commit("CG_LIVE", 0, &offsets).unwrap();
    let send =
        |req: &RemotingCommand| exchange(f.front_port, &codec::encode(req, SerializeType::Json));
    // Without cleanOffset there is nothing ringmq keeps to delete: the offsets stay.
    let resp = send(&delete_subscription_group("CG_GONE", None));
    assert_eq!(resp.code, 0, "{:?}", resp.remark);
    assert_eq!(groups.committed("CG_GONE", &[]).unwrap().len(), 2);
    let resp = send(&delete_subscription_group("CG_GONE", Some("true")));
    assert_eq!((resp.code, resp.opaque), (0, 77), "{:?}", resp.remark);
    assert_eq!(groups.committed("CG_GONE", &[]).unwrap(), vec![]);
    // A group with a live member keeps its offsets.
    groups.heartbeat("CG_LIVE", "member", "", &[("Del".into(), "*".into())]).unwrap();
    let resp = send(&delete_subscription_group("CG_LIVE", Some("true")));
    assert_eq!(resp.code, codec::sys_code::SYSTEM_ERROR);
    assert!(resp.remark.unwrap().contains("GROUP_NOT_EMPTY"));
    assert_eq!(groups.committed("CG_LIVE", &[]).unwrap().len(), 2);
    // Without its group name: an error naming the field.
    let resp = send(&RemotingCommand::request(207, 78));
    assert_eq!(resp.code, codec::sys_code::SYSTEM_ERROR);
    assert!(resp.remark.unwrap().contains("groupName"));
}

/// A front connection that goes away takes its long polls with it: a suspended
/// PULL_MESSAGE, the members-changed watch its consumer heartbeat parked and the check-backs
/// its producer heartbeat parked all stop within seconds, not after their 30 s, and so stop
/// holding the shard's waiter slots (one watch and one check a shard here) that every other
/// client's long polls need.
#[test]
fn a_front_client_that_disconnects_leaves_no_long_poll_behind() {
    use broker_common::poll_until;
    use ringmq::protocol::group::{GroupRequest, GroupResponse};
    use ringmq::protocol::transaction::TxnRequest;
    use ringmq::protocol::{ApiKey, ErrorCode, Request, Response};
    let f =
        start_front("hangup", "[group]\nmax_watchers = 1\n[transaction]\nmax_check_waiters = 1\n");
    let client = Client::connect(&f.broker.addr()).unwrap();
    client.admin().create_topic("Hang", 1).unwrap();
    let waiting =
        || client.admin().stats().unwrap().iter().map(|s| s.long_poll_waiting).sum::<u64>();
    let mut front = Raw::connect(f.front_port);
    let mut hb = RemotingCommand::request(34, 0);
    hb.body = serde_json::to_vec(&serde_json::json!({
        "clientID": "gone-client",
        "consumerDataSet": [{"groupName": "CG_HANG", "messageModel": "CLUSTERING",
            "subscriptionDataSet": [{"topic": "Hang", "subString": "*"}]}],
        "producerDataSet": [{"groupName": "PG_HANG"}]
    }))
    .unwrap();
    assert_eq!(front.call(hb).code, 0);
    let mut suspended = pull("Hang", 0);
    suspended.set_field("sysFlag", "2"); // SUSPEND
    suspended.set_field("suspendTimeoutMillis", "30000");
    front.send(suspended);
    poll_until(Duration::from_secs(10), || (waiting() == 1).then_some(()));

    let port: u16 = f.broker.addr().rsplit(':').next().unwrap().parse().unwrap();
    let mut native = broker_common::Raw::connect(port);
    let mut id = 0;
    let mut code_of = |request: Request| {
        id += 1;
        native.send(&request.encode_frame(id));
        let (header, payload) = native.read_frame().expect("an answer");
        (header.error_code, payload)
    };
    let mut version = || {
        let (code, payload) = code_of(Request::Group(GroupRequest::Watch {
            group: "CG_HANG".into(),
            version: u64::MAX,
            max_wait_ms: 0,
        }));
        assert_eq!(code, 0);
        match Response::decode(ApiKey::WatchGroup, &payload).unwrap() {
            Response::Group(GroupResponse::Watch { version }) => version,
            other => panic!("{other:?}"),
        }
    };
    let watch_code = |code_of: &mut dyn FnMut(Request) -> (u16, Vec<u8>), version: u64| {
        code_of(Request::Group(GroupRequest::Watch {
            group: "CG_HANG".into(),
            version,
            max_wait_ms: 10,
        }))
        .0
    };
    let check = || {
        Request::Transaction(TxnRequest::Check {
            group: "PG_HANG".into(),
            shard: 0,
            max_wait_ms: 10,
            max_checks: 8,
        })
    };
    // The front's watch and check are parked (a probe that finds a slot free waits 10 ms).
    std::thread::sleep(Duration::from_millis(200));
    let v = version();
    poll_until(Duration::from_secs(10), || {
        (watch_code(&mut code_of, v) == ErrorCode::GROUP_LIMIT as u16).then_some(())
    });
    poll_until(Duration::from_secs(10), || {
        (code_of(check()).0 == ErrorCode::TRANSACTION_LIMIT as u16).then_some(())
    });
    drop(front);
    let gone = Instant::now();
    poll_until(Duration::from_secs(5), || (waiting() == 0).then_some(()));
    poll_until(Duration::from_secs(5), || (watch_code(&mut code_of, v) == 0).then_some(()));
    poll_until(Duration::from_secs(5), || (code_of(check()).0 == 0).then_some(()));
    assert!(gone.elapsed() < Duration::from_secs(5));
}
