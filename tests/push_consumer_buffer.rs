//! The push consumer's buffering against the real broker: what waits for its workers is
//! bounded by `max_buffered_bytes` (in concurrent and orderly mode) without holding the fetch
//! thread back for every queue, and shutdown does not run what waits.

mod broker_common;
mod push_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_common::poll_until;
use push_common::{broker, preload, preload_sized, tempdir};
use ringmq::client::{
    Client, ConsumeFrom, ConsumeMode, ConsumeStatus, ConsumedMessage, PushConsumer,
    PushConsumerConfig,
};

/// A listener that blocks every call until `open` is set, counting the messages it got.
fn gated(
    open: &Arc<std::sync::atomic::AtomicBool>,
    calls: &Arc<std::sync::atomic::AtomicUsize>,
) -> impl Fn(&[ConsumedMessage], &ringmq::client::ConsumeContext<'_>) -> ConsumeStatus {
    let (open, calls) = (open.clone(), calls.clone());
    move |m: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
        while !open.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        calls.fetch_add(m.len(), std::sync::atomic::Ordering::SeqCst);
        ConsumeStatus::Success
    }
}

/// Sets the gate of [`gated`] when dropped: declared after the consumer, a failed assertion
/// opens it before the consumer's drop waits for its workers.
struct Opens(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Opens {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A busy worker does not hold the fetch thread up: with the only worker blocked, the
/// member reads every other queue's message ahead (a batch each). Round 36's channel of
/// `threads * 2` batches stopped it after two, so a member of thousands of queues with a few
/// messages each waited for its workers after every second batch.
#[test]
fn the_fetch_thread_reads_ahead_of_a_busy_worker_across_many_queues() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    preload(&client, "wide", 400, 400);
    let (open, calls) = (Arc::default(), Arc::default());
    let mut config = PushConsumerConfig::new("wide-g").subscribe("wide", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode = ConsumeMode::Concurrent { threads: 1, batch_size: 1 };
    let consumer = PushConsumer::start(&client, config, gated(&open, &calls)).unwrap();
    let _opens = Opens(open.clone());
    // The worker holds one message; the other 399 wait for it.
    poll_until(Duration::from_secs(60), || (consumer.buffered().messages == 399).then_some(()));
    assert!(consumer.buffered().bytes >= 399 * "m0".len());
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    poll_until(Duration::from_secs(60), || consumer.caught_up().then_some(()));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 400);
    assert_eq!(consumer.buffered(), ringmq::client::Buffered::default());
    consumer.shutdown();
}

/// The messages waiting for a worker stay within `max_buffered_bytes` plus one fetch's worth
/// however much the queues hold, and everything is still delivered once the worker goes on:
/// in concurrent mode (batches in the workers' channel) and in orderly mode (queues'
/// backlogs).
#[test]
fn the_messages_waiting_for_a_worker_stay_within_max_buffered_bytes() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    // 3,000 messages of 1 KiB: about three fetches' worth (1 MiB each).
    preload_sized(&client, "deep", 100, 30, 1024);
    let orderly =
        ConsumeMode::Orderly { threads: 1, batch_size: 4, suspend: Duration::from_millis(10) };
    for (group, mode) in
        [("deep-c", ConsumeMode::Concurrent { threads: 1, batch_size: 4 }), ("deep-o", orderly)]
    {
        bounded_by_max_buffered_bytes(&client, group, mode);
    }
}

fn bounded_by_max_buffered_bytes(client: &Client, group: &str, mode: ConsumeMode) {
    let (open, calls) = (Arc::default(), Arc::default());
    let mut config = PushConsumerConfig::new(group).subscribe("deep", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode = mode;
    config.max_buffered_bytes = 64 << 10;
    let consumer = PushConsumer::start(client, config, gated(&open, &calls)).unwrap();
    let _opens = Opens(open.clone());
    poll_until(Duration::from_secs(60), || (consumer.buffered().messages > 0).then_some(()));
    // A fetch answers at most 1 MiB of batches, each message counted with its fixed size.
    let one_fetch = (1 << 20) + 1100 * std::mem::size_of::<ConsumedMessage>();
    let mut most = ringmq::client::Buffered::default();
    for _ in 0..100 {
        let b = consumer.buffered();
        most = if b.bytes > most.bytes { b } else { most };
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(most.bytes <= (64 << 10) + one_fetch, "{mode:?}: buffered {most:?}");
    assert!(most.messages < 2_000, "{mode:?}: buffered {most:?}");
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    poll_until(Duration::from_secs(60), || consumer.caught_up().then_some(()));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3000);
    assert_eq!(consumer.buffered(), ringmq::client::Buffered::default(), "{mode:?}");
    consumer.shutdown();
}

/// Shutdown does not run what waits for a worker: the batches of queues given up are
/// skipped (not committed), and the next member gets exactly those.
#[test]
fn shutdown_skips_the_waiting_batches_and_the_next_member_gets_them() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    preload(&client, "slow", 8, 800);
    let start = |seen: &Arc<Mutex<Vec<String>>>, pause: Duration| {
        let mut config = PushConsumerConfig::new("slow-g").subscribe("slow", "*");
        config.consume_from = ConsumeFrom::FirstOffset;
        config.mode = ConsumeMode::Concurrent { threads: 1, batch_size: 1 };
        let seen = seen.clone();
        PushConsumer::start(
            &client,
            config,
            move |m: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
                std::thread::sleep(pause);
                seen.lock().unwrap().push(String::from_utf8_lossy(&m[0].body).into_owned());
                ConsumeStatus::Success
            },
        )
        .unwrap()
    };
    // 800 calls of 20 ms: 16 s of work, most of it fetched and waiting.
    let first_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let first = start(&first_seen, Duration::from_millis(20));
    poll_until(Duration::from_secs(60), || (first.buffered().messages >= 500).then_some(()));
    let before = first_seen.lock().unwrap().len();
    first.shutdown();
    let done = first_seen.lock().unwrap().len();
    assert!(done - before < 100, "{} calls after shutdown began", done - before);
    let second_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let second = start(&second_seen, Duration::ZERO);
    poll_until(Duration::from_secs(60), || {
        (first_seen.lock().unwrap().len() + second_seen.lock().unwrap().len() >= 800).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    second.shutdown();
    let mut all = first_seen.lock().unwrap().clone();
    all.extend(second_seen.lock().unwrap().iter().cloned());
    all.sort();
    let mut expected: Vec<String> = (0..800).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(all, expected, "every message once across the two members");
}

/// Orderly mode: a queue whose listener keeps failing holds its backlog, but that backlog does
/// not count against `max_buffered_bytes` while the queue waits, so the other queues go on
/// being fetched and delivered (it held the fetch thread up for every queue before).
#[test]
fn a_failing_orderly_queue_does_not_stop_the_fetches_of_the_others() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    // 2,400 messages of 1 KiB: more than a fetch (1 MiB) takes.
    preload_sized(&client, "poison", 4, 600, 1024);
    let delivered: Arc<Mutex<[usize; 4]>> = Arc::default();
    let mut config = PushConsumerConfig::new("poison-g").subscribe("poison", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode =
        ConsumeMode::Orderly { threads: 1, batch_size: 8, suspend: Duration::from_millis(10) };
    config.max_buffered_bytes = 8 << 10;
    let d = delivered.clone();
    let consumer = PushConsumer::start(
        &client,
        config,
        move |m: &[ConsumedMessage], ctx: &ringmq::client::ConsumeContext<'_>| {
            if ctx.queue_id == 0 {
                return ConsumeStatus::ReconsumeLater;
            }
            d.lock().unwrap()[ctx.queue_id as usize] += m.len();
            ConsumeStatus::Success
        },
    )
    .unwrap();
    poll_until(Duration::from_secs(60), || {
        (delivered.lock().unwrap()[1..] == [600, 600, 600]).then_some(())
    });
    // Only queue 0's parked backlog is held; nothing counts as waiting for a worker.
    poll_until(Duration::from_secs(10), || {
        (consumer.buffered() == ringmq::client::Buffered::default()).then_some(())
    });
    consumer.shutdown();
}

/// Starts `config` (from the first offset, one worker, batches of up to `n`), keeps every
/// message the listener gets until it has `n`, shuts down; the messages by offset.
fn consume_all(client: &Client, mut config: PushConsumerConfig, n: usize) -> Vec<ConsumedMessage> {
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode = ConsumeMode::Concurrent { threads: 1, batch_size: n };
    let got: Arc<Mutex<Vec<ConsumedMessage>>> = Arc::default();
    let kept = got.clone();
    let consumer = PushConsumer::start(
        client,
        config,
        move |m: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
            kept.lock().unwrap().extend_from_slice(m);
            ConsumeStatus::Success
        },
    )
    .unwrap();
    poll_until(Duration::from_secs(60), || (got.lock().unwrap().len() == n).then_some(()));
    consumer.shutdown();
    let mut got = std::mem::take(&mut *got.lock().unwrap());
    got.sort_by_key(|m| m.offset);
    got
}

/// A listener's messages lie in the buffer their fetch arrived in, not in copies: with no
/// key, tag or properties, each body starts right after the previous one's record (its
/// 20 bytes of framing), or after a batch header too where a batch ends. Copied out, each
/// would be an allocation of its own.
#[test]
fn a_listener_s_messages_share_the_fetch_buffer() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    preload_sized(&client, "flat", 1, 200, 100);
    let config = PushConsumerConfig::new("flat-g").subscribe("flat", "*");
    let got = consume_all(&client, config, 200);
    let framing = 20;
    let mut adjacent = 0;
    for pair in got.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b.offset, a.offset + 1);
        assert_eq!((b.message_id.queue_id, b.message_id.offset), (b.queue_id, b.offset));
        let gap = (b.body.as_ptr() as usize).wrapping_sub(a.body.as_ptr() as usize + a.body.len());
        if gap == framing {
            adjacent += 1;
        } else if gap != framing + ringmq::format::HEADER_LEN {
            // Another fetch (its own buffer): only where a fetch ended.
            assert!(adjacent > 0, "offset {}: body {gap} bytes after the previous one", b.offset);
        }
    }
    assert!(adjacent >= 150, "{adjacent} of 199 bodies follow the previous record");
}

/// A stuck message stops its queue's fetches once the unfinished offsets span more than
/// `max_span_per_queue` (RocketMQ's `consumeConcurrentlyMaxSpan`): the workers finish the
/// messages after it only up to about two fetches past the bound (the reader asks a queue's
/// next fetch before the last answer is looked at), not the whole queue, so a crash
/// would not redeliver all of it. Once it finishes the queue is read to its end.
#[test]
fn a_stuck_message_stops_its_queue_past_the_max_span() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    // 2,000 messages of 4 KiB in one queue: a fetch (1 MiB) holds about 250 of them.
    preload_sized(&client, "span", 1, 2000, 4096);
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut config = PushConsumerConfig::new("span-g").subscribe("span", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode = ConsumeMode::Concurrent { threads: 2, batch_size: 1 };
    config.max_span_per_queue = 50;
    // Not what stops it: the other messages finish, so few are ever unfinished.
    config.max_unfinished_per_queue = 20;
    config.commit_interval = Duration::from_millis(100);
    let (gate, count) = (open.clone(), done.clone());
    let listener = move |m: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
        while m[0].offset == 0 && !gate.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        count.fetch_add(m.len(), std::sync::atomic::Ordering::SeqCst);
        ConsumeStatus::Success
    };
    let consumer = PushConsumer::start(&client, config, listener).unwrap();
    let _opens = Opens(open.clone());
    let consumed = || done.load(std::sync::atomic::Ordering::SeqCst);
    poll_until(Duration::from_secs(60), || (consumed() >= 200).then_some(()));
    // Without the bound the other worker would go through all 1,999 in well under this.
    std::thread::sleep(Duration::from_secs(2));
    let stalled = consumed();
    // A fetch holds about 256 of them: 50 + two fetches, and some room.
    assert!(stalled < 1000, "{stalled} messages consumed past the stuck one (span bound 50)");
    let committed = || {
        let q = [("span".to_string(), 0)];
        client.groups().committed("span-g", &q).unwrap().first().and_then(|c| c.2)
    };
    assert!(committed().unwrap_or(0) == 0, "held at the stuck message: {:?}", committed());
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    poll_until(Duration::from_secs(60), || (consumed() == 2000).then_some(()));
    poll_until(Duration::from_secs(30), || (committed() == Some(2000)).then_some(()));
    consumer.shutdown();
}

/// Batches waiting for their local redelivery (send-back off) count against
/// `max_buffered_bytes` like those waiting in the channel: a listener failing everything
/// does not have the whole topic fetched into the retry list. Each is delivered again once
/// its delay passes.
#[test]
fn batches_waiting_for_local_redelivery_count_against_max_buffered_bytes() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    // 3,000 messages of 1 KiB: about three fetches' worth.
    preload_sized(&client, "redo", 100, 30, 1024);
    let first_tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut config = PushConsumerConfig::new("redo-g").subscribe("redo", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode = ConsumeMode::Concurrent { threads: 1, batch_size: 4 };
    config.max_buffered_bytes = 64 << 10;
    config.send_back = None;
    config.retry = ringmq::client::process_queue::RetryPolicy {
        delays: vec![Duration::from_secs(3)],
        max_attempts: 2,
    };
    let (first, ok) = (first_tries.clone(), done.clone());
    let listener = move |m: &[ConsumedMessage], ctx: &ringmq::client::ConsumeContext<'_>| {
        if ctx.attempt == 0 {
            first.fetch_add(m.len(), std::sync::atomic::Ordering::SeqCst);
            return ConsumeStatus::ReconsumeLater;
        }
        ok.fetch_add(m.len(), std::sync::atomic::Ordering::SeqCst);
        ConsumeStatus::Success
    };
    let consumer = PushConsumer::start(&client, config, listener).unwrap();
    let tried = || first_tries.load(std::sync::atomic::Ordering::SeqCst);
    poll_until(Duration::from_secs(60), || (tried() > 0).then_some(()));
    // Before the first redelivery is due: 64 KiB plus about one fetch (1 MiB) was read.
    std::thread::sleep(Duration::from_millis(1500));
    let early = tried();
    assert!(early < 2_000, "{early} messages fetched into the retry list (bound 64 KiB)");
    assert!(consumer.buffered().bytes >= 64 << 10, "{:?}", consumer.buffered());
    poll_until(Duration::from_secs(120), || {
        (done.load(std::sync::atomic::Ordering::SeqCst) == 3000).then_some(())
    });
    assert_eq!(tried(), 3000, "each failed once");
    poll_until(Duration::from_secs(10), || {
        (consumer.buffered() == ringmq::client::Buffered::default()).then_some(())
    });
    consumer.shutdown();
}

/// `fetch_max_bytes` is what each fetch asks for: 100 batches of one 1,000-byte message each,
/// read with 4 KiB fetches, arrive in many fetches (each a buffer of its own), where the
/// default 1 MiB reads them in a few.
#[test]
fn fetch_max_bytes_sizes_each_fetch() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("small", 1).unwrap();
    let p = push_common::producer(&client, ringmq::client::QueueSelector::RoundRobin);
    for i in 0..100 {
        let mut body = format!("m{i}-").into_bytes();
        body.resize(1000, b'x');
        p.send(ringmq::client::Message::new("small", body)).unwrap(); // a batch each
    }
    p.close().unwrap();
    // Fetches seen by the listener: a body that does not follow the previous record in the
    // same buffer (20 bytes of framing, plus a batch header where a batch ends) came in
    // another one.
    let fetches = |fetch_max_bytes: Option<u32>, group: &str| {
        let mut config = PushConsumerConfig::new(group).subscribe("small", "*");
        if let Some(b) = fetch_max_bytes {
            config.fetch_max_bytes = b;
        }
        let got = consume_all(&client, config, 100);
        assert!(got.iter().enumerate().all(|(i, m)| m.offset == i as u64));
        let same_buffer = [20, 20 + ringmq::format::HEADER_LEN];
        1 + got
            .windows(2)
            .filter(|w| {
                let end = w[0].body.as_ptr() as usize + w[0].body.len();
                !same_buffer.contains(&(w[1].body.as_ptr() as usize).wrapping_sub(end))
            })
            .count()
    };
    let small = fetches(Some(4096), "small-fetches");
    let default = fetches(None, "default-fetches");
    assert!(small >= 20, "{small} fetches of 4 KiB for 100 KB");
    assert!(default <= 5, "{default} fetches of 1 MiB for 100 KB");
}
