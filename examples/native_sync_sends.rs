//! The native client's counterpart of `bench-harness/rocketmq/python_produce.py`: THREADS
//! threads each send messages of SIZE bytes one at a time, waiting for each acknowledgement
//! (`Producer::send`), for SECONDS; prints one JSON object like the Python script.
//!
//! `cargo run --release --example native_sync_sends -- 127.0.0.1:10811 BenchNative 4 100 10`

use std::time::{Duration, Instant};

use ringmq::client::{Client, Message, ProducerConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let broker = arg(1, "127.0.0.1:10811");
    let topic = arg(2, "BenchNative");
    let threads: usize = arg(3, "4").parse().expect("threads");
    let size: usize = arg(4, "100").parse().expect("size");
    let seconds: f64 = arg(5, "10").parse().expect("seconds");
    let client = Client::connect(&broker).expect("connect");
    if client.admin().route(&topic).is_err() {
        client.admin().create_topic(&topic, 8).expect("create topic");
    }
    let producer = client.producer(ProducerConfig::default()).expect("producer");
    producer.send(Message::new(topic.clone(), vec![b'x'; size])).expect("warm-up send");
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (producer, topic) = (&producer, &topic);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while Instant::now() < stop {
                        let t = Instant::now();
                        producer.send(Message::new(topic.clone(), vec![b'x'; size])).expect("send");
                        mine.push(t.elapsed());
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
        "{{\"client\": \"native Producer::send\", \"threads\": {threads}, \"size\": {size}, \
         \"messages\": {n}, \"seconds\": {took:.2}, \"msgs_per_s\": {:.0}, \"ack_ms_p50\": {:.3}, \
         \"ack_ms_p99\": {:.3}, \"ack_ms_max\": {:.3}}}",
        n as f64 / took,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
