//! The push consumer's threads do not grow with the queues it owns: a member of 1,000 queues
//! consumes them all with the threads of a member of one. Alone in its test binary, so that
//! no other test's threads are counted.

mod broker_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_common::{config, poll_until, Broker};
use ringmq::client::{
    Client, ConsumeFrom, ConsumeMode, ConsumeStatus, ConsumedMessage, Message, ProducerConfig,
    PushConsumer, PushConsumerConfig, QueueSelector,
};

/// Live threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// A member of 1,000 queues consumes every message once with as many threads as a member of
/// one queue: the queues are read by one fetch thread with FETCH_MULTI, not one thread each.
#[test]
fn a_member_of_a_thousand_queues_consumes_them_all_with_a_fixed_number_of_threads() {
    let dir = tempfile::Builder::new().prefix("ringmq-push-threads").tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("many", 1000).unwrap();
    let config_p = ProducerConfig { selector: QueueSelector::RoundRobin, ..Default::default() };
    let p = client.producer(config_p).unwrap();
    let pending: Vec<_> =
        (0..3000).map(|i| p.send_async(Message::new("many", format!("m{i}"))).unwrap()).collect();
    for h in pending {
        h.wait().unwrap();
    }
    p.close().unwrap();
    let before = threads();
    let seen: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let mut config = PushConsumerConfig::new("many-g").subscribe("many", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode = ConsumeMode::Concurrent { threads: 2, batch_size: 16 };
    let s = seen.clone();
    let consumer = PushConsumer::start(
        &client,
        config,
        move |m: &[ConsumedMessage], ctx: &ringmq::client::ConsumeContext<'_>| {
            s.lock().unwrap().extend(m.iter().map(|m| (ctx.queue_id, m.offset)));
            ConsumeStatus::Success
        },
    )
    .unwrap();
    let mut most = 0;
    poll_until(Duration::from_secs(60), || {
        most = most.max(threads());
        (consumer.caught_up() && seen.lock().unwrap().len() >= 3000).then_some(())
    });
    consumer.shutdown();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..1000).flat_map(|q| (0..3).map(move |o| (q, o))).collect();
    assert_eq!(seen, expected, "every message of every queue once");
    // Control, watch, fetch, retry, two workers, the trace-less connections' readers and the
    // send-back producer's: a few dozen at most, not a thousand.
    assert!(most - before < 40, "{} threads for 1,000 queues", most - before);
}
