//! The RocketMQ front over raw remoting frames (no client library): refusals of unknown codes
//! and bad frames, name-server routes, VIEW_MESSAGE_BY_ID, and the NOTIFY_CONSUMER_IDS_CHANGED
//! the broker sends. The tests with real RocketMQ clients are in `rocketmq_compat.rs`.

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
    let mut a = connect();
    heartbeat(&mut a, "client-a", "CG_WATCH", 1);
    let answer = read_frame(&mut a);
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
        assert_eq!(read_frame(&mut b).code, 0);
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
