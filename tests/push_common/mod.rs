//! What the push consumer's test binaries share: a broker with short group sessions and
//! preloaded topics.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};

use crate::broker_common::{config, Broker};

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-push").tempdir().unwrap()
}

/// A broker whose group sessions end after 3 s (so a SIGKILLed member's queues move on soon).
pub fn broker(dir: &std::path::Path) -> Broker {
    let cfg = config(dir, 2, "", "") + "[group]\nsession_timeout_ms = 3000\n";
    Broker::start_in(dir, &cfg)
}

pub fn producer(client: &Client, selector: QueueSelector) -> ringmq::client::Producer {
    client.producer(ProducerConfig { selector, ..Default::default() }).unwrap()
}

pub fn member(broker: &Broker, group: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["consume", "--topic", "t", "--group", group, "--follow", "--broker"])
        .arg(broker.addr())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// A new topic of `queues` queues holding `m0`..`m{n-1}` round robin.
pub fn preload(client: &Client, topic: &str, queues: u32, n: usize) {
    client.admin().create_topic(topic, queues).unwrap();
    let p = producer(client, QueueSelector::RoundRobin);
    let pending: Vec<_> =
        (0..n).map(|i| p.send_async(Message::new(topic, format!("m{i}"))).unwrap()).collect();
    for h in pending {
        h.wait().unwrap();
    }
    p.close().unwrap();
}

/// A new topic of `queues` queues holding `per_queue` messages of `size` bytes in each.
pub fn preload_sized(client: &Client, topic: &str, queues: u32, per_queue: usize, size: usize) {
    client.admin().create_topic(topic, queues).unwrap();
    let p = producer(client, QueueSelector::RoundRobin);
    let pending: Vec<_> = (0..queues as usize * per_queue)
        .map(|i| {
            let mut body = format!("m{i}-").into_bytes();
            body.resize(size, b'x');
            p.send_async(Message::new(topic, body)).unwrap()
        })
        .collect();
    for h in pending {
        h.wait().unwrap();
    }
    p.close().unwrap();
}
