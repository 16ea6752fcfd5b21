//! The push consumer against the real broker: members that join, leave and are SIGKILLed
//! share a topic's queues with every message delivered once (again only after a crash, from
//! the last commit); orderly consumption keeps each queue's order across rebalances;
//! broadcasting delivers everything to every member and resumes from its local offsets.

mod broker_common;
mod push_common;

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_common::poll_until;
use push_common::{broker, member, preload, producer, tempdir};
use ringmq::client::{
    Client, ConsumeFrom, ConsumeMode, ConsumeStatus, ConsumedMessage, Message, MessageModel,
    PushConsumer, PushConsumerConfig, QueueSelector,
};

fn members(client: &Client, group: &str) -> usize {
    client.groups().members(group).map(|(_, m)| m.len()).unwrap_or(0)
}

fn bodies(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit('\t').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn members_joining_leaving_and_killed_share_every_message_once() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 16).unwrap();
    let a = member(&broker, "g");
    let b = member(&broker, "g");
    poll_until(Duration::from_secs(30), || (members(&client, "g") == 2).then_some(()));

    let p = producer(&client, QueueSelector::RoundRobin);
    let total = 3000;
    let send = |from: usize, to: usize| {
        let pending: Vec<_> =
            (from..to).map(|i| p.send_async(Message::new("t", format!("m{i}"))).unwrap()).collect();
        for x in pending {
            x.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    send(0, 500);
    let c = member(&broker, "g"); // joins
    poll_until(Duration::from_secs(30), || (members(&client, "g") == 3).then_some(()));
    send(500, 1000);
    unsafe { libc::kill(b.id() as i32, libc::SIGTERM) }; // leaves cleanly
    send(1000, 1500);
    let mut a = a;
    a.kill().unwrap(); // crashes: its queues move on when its session ends
    send(1500, 2000);
    let d = member(&broker, "g"); // joins
    send(2000, total);
    p.close().unwrap();
    // Everything consumed and committed by the survivors.
    poll_until(Duration::from_secs(90), || {
        let d = client.groups().describe("g").ok()?;
        (d.members.len() == 2 && d.total_lag == 0 && d.queues.iter().all(|q| q.committed.is_some()))
            .then_some(())
    });
    for child in [&c, &d] {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let killed = bodies(a);
    assert!(!killed.is_empty(), "a consumed before it was killed");
    let outputs = [bodies(b), bodies(c), bodies(d)];
    let mut count: HashMap<String, usize> = HashMap::new();
    for body in outputs.iter().flatten().chain(killed.iter()) {
        *count.entry(body.clone()).or_default() += 1;
    }
    for i in 0..total {
        assert!(count.contains_key(&format!("m{i}")), "m{i} was never delivered");
    }
    // Delivered twice only when the crashed member had printed it after its last commit.
    let killed: std::collections::HashSet<&String> = killed.iter().collect();
    for (body, n) in &count {
        assert!(*n == 1 || (*n == 2 && killed.contains(body)), "{body} delivered {n} times");
    }
    // a and b shared the queues from the start (the members that joined later get their
    // share only once the owners let go, which a fast consumer may not leave work for).
    assert!(!outputs[0].is_empty(), "b consumed");
}

/// Per queue, the sequence numbers (from the bodies `k{key}-{seq}`) in processing order.
type Seen = Arc<Mutex<BTreeMap<String, Vec<u64>>>>;

fn orderly(client: &Client, group: &str, seen: &Seen) -> PushConsumer {
    let mut config = PushConsumerConfig::new(group).subscribe("t", "*");
    config.mode =
        ConsumeMode::Orderly { threads: 4, batch_size: 4, suspend: Duration::from_millis(10) };
    config.consume_from = ConsumeFrom::FirstOffset;
    config.heartbeat_interval = Duration::from_millis(200);
    let seen = seen.clone();
    let listener = move |messages: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
        for m in messages {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            let (key, seq) = body.split_once('-').unwrap();
            let mut s = seen.lock().unwrap();
            s.entry(key.to_owned()).or_default().push(seq.parse().unwrap());
        }
        std::thread::sleep(Duration::from_millis(1));
        ConsumeStatus::Success
    };
    PushConsumer::start(client, config, listener).unwrap()
}

#[test]
fn orderly_consumption_keeps_each_keys_order_across_rebalances() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 8).unwrap();
    let seen: Seen = Arc::default();
    let first = orderly(&client, "o", &seen);
    let p = producer(&client, QueueSelector::KeyHash);
    let (keys, per_key) = (20u64, 60u64);
    let send = |seqs: std::ops::Range<u64>| {
        let mut pending = Vec::new();
        for seq in seqs {
            for k in 0..keys {
                let m =
                    Message::new("t", format!("k{k}-{seq}")).with_key(format!("k{k}").as_bytes());
                pending.push(p.send_async(m).unwrap());
            }
        }
        for x in pending {
            x.wait().unwrap();
        }
    };
    send(0..20);
    let second = orderly(&client, "o", &seen); // a rebalance while the first is busy
    send(20..40);
    first.shutdown(); // another one
    send(40..per_key);
    p.close().unwrap();
    poll_until(Duration::from_secs(60), || {
        let s = seen.lock().unwrap();
        (s.values().map(Vec::len).sum::<usize>() as u64 >= keys * per_key).then_some(())
    });
    second.shutdown();
    let s = seen.lock().unwrap();
    for k in 0..keys {
        let got = &s[&format!("k{k}")];
        assert_eq!(got, &(0..per_key).collect::<Vec<_>>(), "key k{k}: in order, each once");
    }
}

fn broadcaster(
    client: &Client,
    file: &std::path::Path,
    got: &Arc<Mutex<Vec<String>>>,
) -> PushConsumer {
    let mut config = PushConsumerConfig::new("b").subscribe("t", "*");
    config.model = MessageModel::Broadcasting { offset_file: file.to_owned() };
    config.consume_from = ConsumeFrom::FirstOffset;
    config.heartbeat_interval = Duration::from_millis(200);
    let got = got.clone();
    let listener = move |messages: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
        let mut g = got.lock().unwrap();
        g.extend(messages.iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()));
        ConsumeStatus::Success
    };
    PushConsumer::start(client, config, listener).unwrap()
}

#[test]
fn broadcasting_delivers_everything_to_every_member_and_resumes_locally() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 4).unwrap();
    let p = producer(&client, QueueSelector::RoundRobin);
    let pending: Vec<_> =
        (0..200).map(|i| p.send_async(Message::new("t", format!("m{i}"))).unwrap()).collect();
    for x in pending {
        x.wait().unwrap();
    }
    let (got1, got2) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let (f1, f2) = (dir.path().join("one.json"), dir.path().join("two.json"));
    let (c1, c2) = (broadcaster(&client, &f1, &got1), broadcaster(&client, &f2, &got2));
    poll_until(Duration::from_secs(30), || {
        (got1.lock().unwrap().len() >= 200 && got2.lock().unwrap().len() >= 200).then_some(())
    });
    c1.shutdown();
    c2.shutdown();
    for got in [&got1, &got2] {
        let mut g = got.lock().unwrap().clone();
        g.sort();
        let mut want: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
        want.sort();
        assert_eq!(g, want);
    }
    // A restart resumes from the member's own file: only what came after.
    let pending: Vec<_> =
        (200..210).map(|i| p.send_async(Message::new("t", format!("m{i}"))).unwrap()).collect();
    for x in pending {
        x.wait().unwrap();
    }
    let again = Arc::new(Mutex::new(Vec::new()));
    let c1 = broadcaster(&client, &f1, &again);
    poll_until(Duration::from_secs(30), || (again.lock().unwrap().len() >= 10).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    c1.shutdown();
    assert_eq!(again.lock().unwrap().len(), 10);
    p.close().unwrap();
}

#[test]
fn reconsume_later_redelivers_locally_and_the_commit_waits_for_it() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 1).unwrap();
    let p = producer(&client, QueueSelector::RoundRobin);
    for i in 0..10 {
        p.send(Message::new("t", format!("m{i}"))).unwrap();
    }
    p.close().unwrap();
    // m3 fails twice, then succeeds; everything else succeeds at once.
    let attempts: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut config = PushConsumerConfig::new("r").subscribe("t", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode = ConsumeMode::Concurrent { threads: 2, batch_size: 1 };
    config.retry = ringmq::client::process_queue::RetryPolicy {
        delays: vec![Duration::from_millis(100)],
        max_attempts: 16,
    };
    // Local redelivery only (the broker-side retry topic is tests/retry_dlq_e2e.rs).
    config.send_back = None;
    let (seen, gate) = (attempts.clone(), release.clone());
    let consumer = PushConsumer::start(
        &client,
        config,
        move |m: &[ConsumedMessage], ctx: &ringmq::client::ConsumeContext<'_>| {
            let body = String::from_utf8_lossy(&m[0].body).into_owned();
            seen.lock().unwrap().push((body.clone(), ctx.attempt));
            if body == "m3" && (ctx.attempt < 2 || !gate.load(std::sync::atomic::Ordering::Relaxed))
            {
                return ConsumeStatus::ReconsumeLater;
            }
            ConsumeStatus::Success
        },
    )
    .unwrap();
    // While m3 keeps failing, the committed offset stays at it (offset 3).
    poll_until(Duration::from_secs(30), || {
        let a = attempts.lock().unwrap();
        (a.iter().filter(|(b, _)| b == "m3").count() >= 3).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500)); // a few commit intervals
    let committed = client.groups().committed("r", &[("t".into(), 0)]).unwrap();
    assert_eq!(committed[0].2, Some(3), "the commit never passes an unfinished message");
    release.store(true, std::sync::atomic::Ordering::Relaxed);
    poll_until(Duration::from_secs(30), || {
        let c = client.groups().committed("r", &[("t".into(), 0)]).ok()?;
        (c[0].2 == Some(10)).then_some(())
    });
    consumer.shutdown();
    let a = attempts.lock().unwrap();
    let m3: Vec<u32> = a.iter().filter(|(b, _)| b == "m3").map(|(_, n)| *n).collect();
    assert!(m3.len() >= 3 && m3.windows(2).all(|w| w[1] == w[0] + 1), "attempts count up: {m3:?}");
    let others = a.iter().filter(|(b, _)| b != "m3").count();
    assert_eq!(others, 9, "every other message once");
}

/// A subscription with tags gets only those tags, and its committed offsets move past the
/// messages it does not want.
#[test]
fn a_tag_subscription_gets_only_its_tags_and_commits_past_the_others() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("tagged", 2).unwrap();
    let p = producer(&client, QueueSelector::RoundRobin);
    for i in 0..60 {
        let tag = ["paid", "shipped", "cancelled"][i % 3];
        p.send(Message::new("tagged", format!("{tag}-{i}")).with_tag(tag)).unwrap();
    }
    p.close().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut config = PushConsumerConfig::new("tags-g").subscribe("tagged", "paid || cancelled");
    config.consume_from = ConsumeFrom::FirstOffset;
    let s = seen.clone();
    let consumer = PushConsumer::start(
        &client,
        config,
        move |m: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
            s.lock().unwrap().extend(m.iter().map(|m| String::from_utf8_lossy(&m.body).into()));
            ConsumeStatus::Success
        },
    )
    .unwrap();
    poll_until(Duration::from_secs(30), || consumer.caught_up().then_some(()));
    consumer.shutdown();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|b| b.rsplit('-').next().unwrap().parse::<u32>().unwrap());
    let expected: Vec<String> = (0..60)
        .filter(|i| i % 3 != 1)
        .map(|i| format!("{}-{i}", ["paid", "shipped", "cancelled"][i % 3]))
        .collect();
    assert_eq!(seen, expected);
    let committed =
        client.groups().committed("tags-g", &[("tagged".into(), 0), ("tagged".into(), 1)]);
    let ends: Vec<Option<u64>> = committed.unwrap().into_iter().map(|c| c.2).collect();
    assert_eq!(ends, vec![Some(30), Some(30)], "committed past the filtered messages");
}

/// Orderly mode with fewer workers than queues: a queue's batches never run at once, each
/// queue's messages arrive in offset order, and a batch that asks to be reconsumed is
/// delivered again (counting its attempts) before anything after it.
#[test]
fn orderly_workers_run_one_batch_of_a_queue_at_a_time_and_retry_a_failed_one_first() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    preload(&client, "o", 8, 800);
    let busy: Arc<Vec<std::sync::atomic::AtomicBool>> =
        Arc::new((0..8).map(|_| std::sync::atomic::AtomicBool::new(false)).collect());
    let overlaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Per queue, in delivery order: (first offset, messages, attempt) of each batch.
    let log: Arc<Mutex<BTreeMap<u32, Vec<Delivery>>>> = Arc::default();
    let mut config = PushConsumerConfig::new("o-g").subscribe("o", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode =
        ConsumeMode::Orderly { threads: 3, batch_size: 10, suspend: Duration::from_millis(10) };
    let (b, o, l) = (busy.clone(), overlaps.clone(), log.clone());
    let consumer = PushConsumer::start(
        &client,
        config,
        move |m: &[ConsumedMessage], ctx: &ringmq::client::ConsumeContext<'_>| {
            use std::sync::atomic::Ordering::SeqCst;
            let q = ctx.queue_id as usize;
            if b[q].swap(true, SeqCst) {
                o.fetch_add(1, SeqCst);
            }
            std::thread::sleep(Duration::from_millis(1));
            let (first, n) = (m[0].offset, m.len() as u64);
            assert!(m.windows(2).all(|w| w[1].offset == w[0].offset + 1), "a batch in order");
            l.lock().unwrap().entry(ctx.queue_id).or_default().push((first, n, ctx.attempt));
            b[q].store(false, SeqCst);
            // Queue 2's batch holding offset 40 fails twice.
            if failing(ctx.queue_id, first, n) && ctx.attempt < 2 {
                return ConsumeStatus::ReconsumeLater;
            }
            ConsumeStatus::Success
        },
    )
    .unwrap();
    poll_until(Duration::from_secs(60), || consumer.caught_up().then_some(()));
    consumer.shutdown();
    assert_eq!(
        overlaps.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "two batches of a queue at once"
    );
    let log = log.lock().unwrap();
    for q in 0..8u32 {
        // The batches that succeeded cover the queue in order; a failed batch is followed by
        // itself again, one attempt later.
        let (mut next, mut retried) = (0, 0);
        for (i, &(first, n, attempt)) in log[&q].iter().enumerate() {
            assert_eq!(first, next, "queue {q}: {:?}", log[&q]);
            if failing(q, first, n) && attempt < 2 {
                assert_eq!(log[&q][i + 1], (first, n, attempt + 1), "queue {q}");
                retried += 1;
                continue;
            }
            assert!(n <= 10);
            next = first + n;
        }
        assert_eq!(next, 100, "queue {q}");
        assert_eq!(retried, if q == 2 { 2 } else { 0 });
    }
}

/// A listener call: the batch's first offset, its messages, the attempt.
type Delivery = (u64, u64, u32);

fn failing(queue: u32, first: u64, n: u64) -> bool {
    queue == 2 && (first..first + n).contains(&40)
}

/// Orderly mode with one worker and two busy queues: neither waits for the other's whole
/// backlog (a queue gives the worker up after a time slice when other queues wait).
#[test]
fn an_orderly_queue_with_a_long_backlog_does_not_starve_the_others() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    preload(&client, "busy", 2, 1600);
    let order: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut config = PushConsumerConfig::new("busy-g").subscribe("busy", "*");
    config.consume_from = ConsumeFrom::FirstOffset;
    config.mode =
        ConsumeMode::Orderly { threads: 1, batch_size: 1, suspend: Duration::from_millis(10) };
    let o = order.clone();
    let consumer = PushConsumer::start(
        &client,
        config,
        move |_: &[ConsumedMessage], ctx: &ringmq::client::ConsumeContext<'_>| {
            std::thread::sleep(Duration::from_millis(1)); // 800 calls a queue: ~1 s each
            o.lock().unwrap().push(ctx.queue_id);
            ConsumeStatus::Success
        },
    )
    .unwrap();
    poll_until(Duration::from_secs(60), || consumer.caught_up().then_some(()));
    consumer.shutdown();
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 1600);
    // Whichever queue ran first, the other started long before the first's 800 were done.
    let first = order[0];
    let other_starts = order.iter().position(|&q| q != first).unwrap();
    assert!(other_starts < 400, "the second queue started after {other_starts} calls");
}

/// Without a committed offset, `LastOffset` (the default) delivers only what is stored after
/// the member placed itself, and `FirstOffset` everything; both placed by their first fetch.
#[test]
fn consume_from_last_or_first_offset_places_a_new_group_at_the_queues_end_or_start() {
    let dir = tempdir();
    let broker = broker(dir.path());
    let client = Client::connect(&broker.addr()).unwrap();
    preload(&client, "ends", 2, 10);
    let start = |group: &str, from: ConsumeFrom, seen: &Arc<Mutex<Vec<String>>>| {
        let mut config = PushConsumerConfig::new(group).subscribe("ends", "*");
        config.consume_from = from;
        let s = seen.clone();
        PushConsumer::start(
            &client,
            config,
            move |m: &[ConsumedMessage], _: &ringmq::client::ConsumeContext<'_>| {
                s.lock().unwrap().extend(m.iter().map(|m| String::from_utf8_lossy(&m.body).into()));
                ConsumeStatus::Success
            },
        )
        .unwrap()
    };
    let last_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let first_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let last = start("from-last", ConsumeFrom::LastOffset, &last_seen);
    let first = start("from-first", ConsumeFrom::FirstOffset, &first_seen);
    poll_until(Duration::from_secs(30), || (last.caught_up() && first.caught_up()).then_some(()));
    assert!(last_seen.lock().unwrap().is_empty(), "nothing stored before it placed itself");
    let p = producer(&client, QueueSelector::RoundRobin);
    for i in 10..14 {
        p.send(Message::new("ends", format!("m{i}"))).unwrap();
    }
    p.close().unwrap();
    poll_until(Duration::from_secs(30), || {
        (last_seen.lock().unwrap().len() == 4 && first_seen.lock().unwrap().len() == 14)
            .then_some(())
    });
    last.shutdown();
    first.shutdown();
    let mut l = last_seen.lock().unwrap().clone();
    l.sort();
    assert_eq!(l, ["m10", "m11", "m12", "m13"]);
    let q = [("ends".to_string(), 0), ("ends".to_string(), 1)];
    for g in ["from-last", "from-first"] {
        let c: Vec<Option<u64>> =
            client.groups().committed(g, &q).unwrap().into_iter().map(|c| c.2).collect();
        assert_eq!(c, vec![Some(7), Some(7)], "{g} committed each queue's end");
    }
}
