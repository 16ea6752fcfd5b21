//! `ringmq consume --group G`: the CLI as a member of a consumer group (clustering), through
//! the library's [`PushConsumer`].
//!
//! It subscribes to the topic (the `--tag`s as a tag expression), takes its share of the
//! queues (averagely, under the group's queue locks), starts each at the group's committed
//! offset, else at the queue's first offset (RocketMQ's client default is the last offset; a
//! tool shows what is stored), prints each message, and commits what it printed. Without
//! `--follow` it stops once its queues are drained; with it, on SIGINT/SIGTERM. Either way it
//! commits and leaves the group, so the others take its queues at once.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmq::client::{
    Client, ConsumeFrom, ConsumeMode, ConsumeStatus, ConsumedMessage, PushConsumer,
    PushConsumerConfig,
};

use super::consume_cli::{print_message, ConsumeOptions};
use super::err;

pub fn run(broker: &str, topic: &str, group: &str, opts: ConsumeOptions) -> Result<(), String> {
    let ConsumeOptions { from_offset, follow, max_messages, tags, skip_corrupt: _ } = opts;
    if from_offset != 0 {
        return Err("--from-offset does not apply to --group: the group's committed offsets \
                    decide (see ringmq group reset)"
            .into());
    }
    let client = Client::connect(broker).map_err(err)?;
    let stop = Arc::new(AtomicBool::new(false));
    if follow {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, stop.clone())
                .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        }
    }
    let expression = if tags.is_empty() { "*".to_owned() } else { tags.join(" || ") };
    let mut config = PushConsumerConfig::new(group).subscribe(topic, expression);
    config.consume_from = ConsumeFrom::FirstOffset;
    // One printing thread: lines of a batch stay together.
    config.mode = ConsumeMode::Concurrent { threads: 1, batch_size: 64 };
    config.heartbeat_interval = Duration::from_secs(1);
    // Past --max-messages the listener declines messages: they stay for the next member, not
    // sent to the group's retry topic as failures.
    config.send_back = None;
    let printed = Arc::new(AtomicU64::new(0));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let (count, full, sink) = (printed.clone(), stop.clone(), out.clone());
    let listener = move |messages: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
        // Past --max-messages nothing more is printed (nor committed).
        let room =
            max_messages.map_or(u64::MAX, |n| n.saturating_sub(count.load(Ordering::Relaxed)));
        if room < messages.len() as u64 {
            full.store(true, Ordering::Relaxed);
            return ConsumeStatus::ReconsumeLater;
        }
        let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
        for m in messages {
            print_message(&mut *out, m);
        }
        let _ = out.flush();
        count.fetch_add(messages.len() as u64, Ordering::Relaxed);
        if max_messages.is_some_and(|n| count.load(Ordering::Relaxed) >= n) {
            full.store(true, Ordering::Relaxed);
        }
        ConsumeStatus::Success
    };
    let consumer = PushConsumer::start(&client, config, listener).map_err(err)?;
    // Without --follow: stop once the member's queues are drained (after its first share).
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if !follow && consumer.caught_up() && started.elapsed() > Duration::from_millis(200) {
            break;
        }
    }
    consumer.shutdown();
    let _ = out.lock().map(|mut o| o.flush());
    Ok(())
}
