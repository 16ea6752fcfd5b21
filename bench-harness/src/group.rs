//! `ringmq-bench group`: consumption as a consumer group, through the library's push consumer.
//!
//! Against a running broker (`--broker host:port`) it
//! 1. preloads a new topic with `--messages` messages of `--message-size` bytes (library
//!    producer, round robin over `--queues` queues);
//! 2. for each member count of `--members` (e.g. `1,2,4`) starts that many push consumers of a
//!    new group (concurrent listeners, consume from the first offset) in this process and times
//!    how long the group takes to consume every message once: join, rebalance and draining
//!    included;
//! 3. measures the **rebalance pause**: one member consumes a steady stream
//!    (`--rebalance-rate` messages/s), a second member joins after 2 s; for every queue that
//!    moves, the pause is the time between the last message the old owner consumed and the
//!    first one the new owner consumed (the handover: stop, finish, commit, unlock, lock, read
//!    the offset, pull).
//!
//! It writes a JSON report (`--out`) with the command, the checkout's revision, the kernel
//! and the results, and prints a table. The push consumer's threads share the machine with the
//! broker when both run here: say so next to the numbers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmq::client::{
    Client, ConsumeContext, ConsumeFrom, ConsumeMode, ConsumeStatus, ConsumedMessage, Message,
    ProducerConfig, PushConsumer, PushConsumerConfig, QueueSelector,
};
use serde::Serialize;

use crate::report;

#[derive(clap::Args)]
pub struct GroupArgs {
    /// A running broker's shared port, host:port.
    #[arg(long)]
    broker: String,
    /// Member counts to measure, comma-separated.
    #[arg(long, default_value = "1,2,4")]
    members: String,
    #[arg(long, default_value_t = 16)]
    queues: u32,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    /// Listener threads per member.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Messages per listener call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Messages per second produced while a member joins.
    #[arg(long, default_value_t = 20_000)]
    rebalance_rate: u64,
    /// JSON report path.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Serialize)]
struct Throughput {
    members: usize,
    messages: u64,
    elapsed_ms: u64,
    messages_per_s: f64,
    mb_per_s: f64,
}

#[derive(Serialize)]
struct Rebalance {
    rate_per_s: u64,
    messages: u64,
    queues_moved: usize,
    pause_ms_median: u64,
    pause_ms_max: u64,
    pauses_ms: Vec<u64>,
}

#[derive(Serialize)]
struct GroupReport {
    command: Vec<String>,
    git_revision: String,
    kernel: String,
    started_unix_ms: u64,
    broker: String,
    queues: u32,
    message_size: usize,
    threads_per_member: usize,
    batch: usize,
    throughput: Vec<Throughput>,
    rebalance: Rebalance,
}

fn err(e: ringmq::client::ClientError) -> String {
    e.to_string()
}

fn member(
    client: &Client,
    group: &str,
    topic: &str,
    a: &GroupArgs,
    from: ConsumeFrom,
    listener: impl Fn(&[ConsumedMessage], &ConsumeContext<'_>) -> ConsumeStatus + Send + Sync + 'static,
) -> Result<PushConsumer, String> {
    let mut config = PushConsumerConfig::new(group).subscribe(topic, "*");
    config.consume_from = from;
    config.mode = ConsumeMode::Concurrent { threads: a.threads, batch_size: a.batch };
    config.heartbeat_interval = Duration::from_secs(1);
    config.max_unfinished_per_queue = 4096;
    PushConsumer::start(client, config, listener).map_err(err)
}

pub fn run(a: GroupArgs) -> Result<ExitCode, String> {
    let started_unix_ms = crate::broker::unix_ms();
    let client = Client::connect(&a.broker).map_err(err)?;
    let topic = format!("bench-group-{}", std::process::id());
    client.admin().create_topic(&topic, a.queues).map_err(err)?;
    let counts: Vec<usize> = a
        .members
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("--members {:?}: not numbers", a.members)))
        .collect::<Result<_, _>>()?;

    eprintln!("ringmq-bench group: preloading {} messages into {topic}", a.messages);
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::RoundRobin, ..Default::default() })
        .map_err(err)?;
    let body = vec![b'x'; a.message_size];
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..a.messages {
        pending.push_back(producer.send_async(Message::new(&topic, body.clone())).map_err(err)?);
        if pending.len() >= 10_000 {
            pending.pop_front().expect("not empty").wait().map_err(err)?;
        }
    }
    for p in pending {
        p.wait().map_err(err)?;
    }

    let mut throughput = Vec::new();
    for &n in &counts {
        let group = format!("bench-g{n}-{}", std::process::id());
        let consumed = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let mut members = Vec::new();
        for _ in 0..n {
            let c = consumed.clone();
            members.push(member(
                &client,
                &group,
                &topic,
                &a,
                ConsumeFrom::FirstOffset,
                move |m, _| {
                    c.fetch_add(m.len() as u64, Ordering::Relaxed);
                    ConsumeStatus::Success
                },
            )?);
        }
        while consumed.load(Ordering::Relaxed) < a.messages {
            if t.elapsed() > Duration::from_secs(600) {
                return Err(format!("{n} members consumed only {consumed:?} in 10 minutes"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let elapsed = t.elapsed();
        for m in members {
            m.shutdown();
        }
        let secs = elapsed.as_secs_f64();
        let got = consumed.load(Ordering::Relaxed);
        let row = Throughput {
            members: n,
            messages: got,
            elapsed_ms: elapsed.as_millis() as u64,
            messages_per_s: got as f64 / secs,
            mb_per_s: got as f64 * a.message_size as f64 / secs / 1e6,
        };
        eprintln!(
            "ringmq-bench group: {n} member(s): {} messages in {} ms ({:.0} msg/s)",
            row.messages, row.elapsed_ms, row.messages_per_s
        );
        throughput.push(row);
    }

    let rebalance = rebalance_pause(&client, &topic, &a, &producer)?;
    producer.close().map_err(err)?;
    let _ = client.admin().delete_topic(&topic);

    let rep = GroupReport {
        command: std::env::args().collect(),
        // The revision of the client library this bench was built with (the push consumer
        // measured here), not the checkout it runs in.
        git_revision: ringmq::broker::server::GIT_REVISION.to_owned(),
        kernel: report::kernel(),
        started_unix_ms,
        broker: a.broker.clone(),
        queues: a.queues,
        message_size: a.message_size,
        threads_per_member: a.threads,
        batch: a.batch,
        throughput,
        rebalance,
    };
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(&rep).map_err(|e| e.to_string())?;
    std::fs::write(&a.out, json).map_err(|e| format!("{}: {e}", a.out.display()))?;
    println!("members\tmessages\telapsed_ms\tmsg/s\tMB/s");
    for t in &rep.throughput {
        println!(
            "{}\t{}\t{}\t{:.0}\t{:.1}",
            t.members, t.messages, t.elapsed_ms, t.messages_per_s, t.mb_per_s
        );
    }
    let r = &rep.rebalance;
    println!(
        "rebalance: {} queues moved, pause median {} ms, max {} ms",
        r.queues_moved, r.pause_ms_median, r.pause_ms_max
    );
    println!("report: {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Per queue, the runs of consecutive consumption by one member: (member, first, last).
type Runs = Arc<Mutex<HashMap<u32, Vec<(usize, Instant, Instant)>>>>;

fn rebalance_pause(
    client: &Client,
    topic: &str,
    a: &GroupArgs,
    producer: &ringmq::client::Producer,
) -> Result<Rebalance, String> {
    let group = format!("bench-rebalance-{}", std::process::id());
    let runs: Runs = Arc::default();
    let consumed = Arc::new(AtomicU64::new(0));
    let listener = |id: usize| {
        let (runs, consumed) = (runs.clone(), consumed.clone());
        move |m: &[ConsumedMessage], ctx: &ConsumeContext<'_>| {
            let now = Instant::now();
            let mut r = runs.lock().unwrap_or_else(|p| p.into_inner());
            let q = r.entry(ctx.queue_id).or_default();
            match q.last_mut() {
                Some(last) if last.0 == id => last.2 = now,
                _ => q.push((id, now, now)),
            }
            consumed.fetch_add(m.len() as u64, Ordering::Relaxed);
            ConsumeStatus::Success
        }
    };
    let first = member(client, &group, topic, a, ConsumeFrom::LastOffset, listener(0))?;
    // Let it take every queue before the stream starts.
    std::thread::sleep(Duration::from_secs(2));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let body = vec![b'x'; a.message_size];
    let t0 = Instant::now();
    let mut second = None;
    let mut pending = std::collections::VecDeque::new();
    while t0.elapsed() < Duration::from_secs(6) {
        // Paced: the count due by now, sent in small bursts.
        let due = (t0.elapsed().as_secs_f64() * a.rebalance_rate as f64) as u64;
        while sent.load(Ordering::Relaxed) < due {
            pending.push_back(producer.send_async(Message::new(topic, body.clone())).map_err(err)?);
            sent.fetch_add(1, Ordering::Relaxed);
            if pending.len() > 10_000 {
                pending.pop_front().expect("not empty").wait().map_err(err)?;
            }
        }
        if second.is_none() && t0.elapsed() >= Duration::from_secs(2) {
            second = Some(member(client, &group, topic, a, ConsumeFrom::LastOffset, listener(1))?);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    for p in pending {
        p.wait().map_err(err)?;
    }
    let total = sent.load(Ordering::Relaxed);
    let t = Instant::now();
    while consumed.load(Ordering::Relaxed) < total && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    first.shutdown();
    if let Some(s) = second {
        s.shutdown();
    }
    let runs = runs.lock().unwrap_or_else(|p| p.into_inner());
    let mut pauses: Vec<u64> = runs
        .values()
        .flat_map(|r| {
            r.windows(2).map(|w| w[1].1.saturating_duration_since(w[0].2).as_millis() as u64)
        })
        .collect();
    pauses.sort_unstable();
    Ok(Rebalance {
        rate_per_s: a.rebalance_rate,
        messages: total,
        queues_moved: pauses.len(),
        pause_ms_median: pauses.get(pauses.len() / 2).copied().unwrap_or(0),
        pause_ms_max: pauses.last().copied().unwrap_or(0),
        pauses_ms: pauses,
    })
}
