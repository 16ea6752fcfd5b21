//! The native client's counterpart of `bench-harness/rocketmq/python_produce.py`: THREADS
//! threads each send messages of SIZE bytes one at a time, waiting for each acknowledgement
//! (`Producer::send`), for SECONDS; prints one JSON object like the Python script.
//!
//! `cargo run --release --example native_sync_sends -- 127.0.0.1:10811 BenchNative 4 100 10`

use ringmq::client::{Client, Message, ProducerConfig};

mod sync_sends;

fn main() {
    let args = sync_sends::Args::parse("127.0.0.1:10811", "BenchNative");
    let (topic, size) = (&args.topic, args.size);
    let client = Client::connect(&args.addr).expect("connect");
    if client.admin().route(topic).is_err() {
        client.admin().create_topic(topic, 8).expect("create topic");
    }
    let producer = client.producer(ProducerConfig::default()).expect("producer");
    producer.send(Message::new(topic.clone(), vec![b'x'; size])).expect("warm-up send");
    sync_sends::run_and_report("native Producer::send", &args, |_| {
        let producer = &producer;
        move || {
            producer.send(Message::new(topic.clone(), vec![b'x'; size])).expect("send");
        }
    });
}
