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
use std::time::{Duration, Instant};

use ringmq::compat::rocketmq::codec::{self, RemotingCommand, SerializeType};

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
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let front = arg(1, "127.0.0.1:10911");
    let topic = arg(2, "BenchRaw");
    let threads: usize = arg(3, "4").parse().expect("threads");
    let size: usize = arg(4, "100").parse().expect("size");
    let seconds: f64 = arg(5, "10").parse().expect("seconds");
    let body = vec![b'x'; size];
    // Creates the topic (the front's automatic creation) before the clock starts.
    send(&mut TcpStream::connect(&front).expect("connect"), &topic, 0, 1, &body);
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (front, topic, body) = (&front, &topic, &body);
                s.spawn(move || {
                    let mut conn = TcpStream::connect(front).expect("connect");
                    conn.set_nodelay(true).expect("nodelay");
                    let mut mine = Vec::new();
                    let mut opaque = 1;
                    while Instant::now() < stop {
                        opaque += 1;
                        let queue = (t as u32 + opaque as u32) % 8;
                        let at = Instant::now();
                        send(&mut conn, topic, queue, opaque, body);
                        mine.push(at.elapsed());
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    let took = start.elapsed().as_secs_f64();
    latencies.sort();
    let n = latencies.len();
    let pct = |q: f64| latencies[((q * n as f64) as usize).min(n - 1)].as_secs_f64() * 1000.0;
    println!(
        "{{\"client\": \"raw RocketMQ frames (Rust) SEND_MESSAGE_V2\", \"threads\": {threads}, \
         \"size\": {size}, \"messages\": {n}, \"seconds\": {took:.2}, \"msgs_per_s\": {:.0}, \
         \"ack_ms_p50\": {:.3}, \"ack_ms_p99\": {:.3}, \"ack_ms_max\": {:.3}}}",
        n as f64 / took,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
