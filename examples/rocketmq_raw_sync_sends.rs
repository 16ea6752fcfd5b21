//! A minimal RocketMQ client in Rust for measuring the front itself: THREADS threads, each
//! on its own connection to the front's broker port, send SEND_MESSAGE_V2 requests (JSON
//! headers, as the C++ client) of SIZE-byte messages one at a time, each waiting for its
//! answer, for SECONDS; prints one JSON object like `bench-harness/rocketmq/python_produce.py`
//! and `native_sync_sends`. With those two it separates the client's cost (Python over C++)
//! from the front's (translation, remoting frames).
//!
//! `cargo run --release --example rocketmq_raw_sync_sends -- 127.0.0.1:10911 BenchRaw 4 100 10`

use std::io::{Read, Write};
use std::net::TcpStream;

use ringmq::compat::rocketmq::codec::{self, RemotingCommand, SerializeType};

mod sync_sends;

fn send(s: &mut TcpStream, topic: &str, queue: u32, opaque: i32, body: &[u8]) {
    let mut r = RemotingCommand::request(310, opaque);
    let props = format!("UNIQ_KEY\u{1}RAW{opaque:012X}{queue:04X}\u{2}WAIT\u{1}true\u{2}");
    let queue = queue.to_string();
    let born = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    for (k, v) in [
        ("a", "PID_BENCH_RAW"),
        ("b", topic),
        ("c", "TBW102"),
        ("d", "4"),
        ("e", queue.as_str()),
        ("f", "0"),
        ("g", born.as_str()),
        ("h", "0"),
        ("i", props.as_str()),
        ("j", "0"),
        ("k", "false"),
        ("m", "false"),
    ] {
        r.set_field(k, v);
    }
    r.body = body.to_vec();
    s.write_all(&codec::encode(&r, SerializeType::Json)).expect("write");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("read");
    let mut frame = len.to_vec();
    frame.resize(4 + u32::from_be_bytes(len) as usize, 0);
    s.read_exact(&mut frame[4..]).expect("read");
    let (answer, _) = codec::decode(&frame).expect("decode");
    assert_eq!(answer.opaque, opaque);
    assert_eq!(answer.code, 0, "send failed: {:?}", answer.remark);
}

fn main() {
    let args = sync_sends::Args::parse("127.0.0.1:10911", "BenchRaw");
    let (front, topic) = (&args.addr, &args.topic);
    let body = vec![b'x'; args.size];
    // Creates the topic (the front's automatic creation) before the clock starts.
    send(&mut TcpStream::connect(front).expect("connect"), topic, 0, 1, &body);
    let client = "raw RocketMQ frames (Rust) SEND_MESSAGE_V2";
    sync_sends::run_and_report(client, &args, |t| {
        let mut conn = TcpStream::connect(front).expect("connect");
        conn.set_nodelay(true).expect("nodelay");
        let (body, mut opaque) = (&body, 1);
        move || {
            opaque += 1;
            let queue = (t as u32 + opaque as u32) % 8;
            send(&mut conn, topic, queue, opaque, body);
        }
    });
}
