//! Using the client library from a plain `fn main` (no async runtime needed).
//!
//! ```sh
//! ringmq broker --data-dir /tmp/ringmq --port 10911 &
//! cargo run --release --example client_quickstart -- 127.0.0.1:10911 100000
//! ```
//! Creates topic `quickstart` (if missing), sends N small messages asynchronously (batched by
//! the producer), reads them all back, and prints the rates.

use std::time::{Duration, Instant};

use ringmq::client::{Client, ClientError, Message, ProducerConfig};
use ringmq::protocol::ErrorCode;

fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:10911".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);

    let client = Client::connect(&addr)?;
    match client.admin().create_topic("quickstart", 8) {
        Ok(_) => {}
        Err(e) if e.code() == Some(ErrorCode::TOPIC_EXISTS) => {}
        Err(e) => return Err(e),
    }
    let before: Vec<u64> = (0..8)
        .map(|q| client.admin().queue_offsets("quickstart", q).map(|o| o.next))
        .collect::<Result<_, _>>()?;

    let producer = client.producer(ProducerConfig::default())?;
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..count {
        pending.push_back(producer.send_async(Message::new("quickstart", format!("message {i}")))?);
        // Keep a bounded number of results outstanding.
        if pending.len() >= 50_000 {
            pending.pop_front().expect("non-empty").wait()?;
        }
    }
    for p in pending {
        p.wait()?;
    }
    let sent = start.elapsed();
    println!("sent {count} messages in {sent:?} ({:.0} msg/s)", count as f64 / sent.as_secs_f64());

    let consumer = client.consumer();
    let start = Instant::now();
    let mut received = 0u64;
    for (q, from) in before.into_iter().enumerate() {
        let mut offset = from;
        loop {
            let r = consumer.pull("quickstart", q as u32, offset, Duration::ZERO)?;
            received += r.messages.len() as u64;
            if r.next_offset >= r.max_offset {
                break;
            }
            offset = r.next_offset;
        }
    }
    let read = start.elapsed();
    println!(
        "read {received} messages in {read:?} ({:.0} msg/s)",
        received as f64 / read.as_secs_f64()
    );
    producer.close()
}
