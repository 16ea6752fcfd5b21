//! `ringmq-bench scheduled`: delivery lateness of scheduled messages at a fixed timer rate.
//!
//! Against a running broker (`--broker host:port`) it creates a new topic of `--queues`
//! queues, then `--producers` threads send `--rate` scheduled messages per second in all for
//! `--duration-s` seconds with `Producer::send_at`, each due `--delay-ms` after its *intended*
//! send time (a fixed schedule: a producer that falls behind does not move the due times, so a
//! stall shows up as lateness, not as a lower rate). One consumer thread per queue long-polls
//! its queue and records, for every message, `received - due`: the **delivery lateness** as an
//! application sees it (the broker's timer precision, its delivery step, the append and the
//! consumer's fetch). A message received before it was due is counted as `early` (must be 0).
//! It stops when every message arrived or `--delay-ms` + 30 s after the last send.
//!
//! It writes a JSON report (`--out`: command, revision, kernel, settings, counts, lateness
//! percentiles in ms) and prints one line. Client and broker share the machine when both run
//! here: say so next to the numbers.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq::client::{Client, Message, ProducerConfig};
use serde::Serialize;

use crate::rate::Schedule;
use crate::report;
use crate::stats::{self, LatencySummary};

#[derive(clap::Args)]
pub struct ScheduledArgs {
    /// A running broker's shared port, host:port.
    #[arg(long)]
    broker: String,
    /// Scheduled messages per second, all producers together.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Each message is due this long after its intended send time.
    #[arg(long, default_value_t = 2_000)]
    delay_ms: u64,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    #[arg(long, default_value_t = 4)]
    producers: u32,
    #[arg(long, default_value_t = 8)]
    queues: u32,
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    /// JSON report path.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Serialize)]
struct ScheduledReport {
    command: Vec<String>,
    git_revision: String,
    kernel: String,
    started_unix_ms: u64,
    broker: String,
    rate_per_s: u64,
    delay_ms: u64,
    duration_s: u64,
    producers: u32,
    queues: u32,
    message_size: usize,
    sent: u64,
    send_errors: u64,
    received: u64,
    duplicates: u64,
    early: u64,
    missing: u64,
    /// Received minus due, per message.
    lateness: LatencySummary,
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What the consumers saw.
struct Seen {
    ids: HashSet<u64>,
    duplicates: u64,
    early: u64,
    lateness: hdrhistogram::Histogram<u64>,
}

pub fn run(a: ScheduledArgs) -> Result<ExitCode, String> {
    if a.rate == 0 || a.producers == 0 || a.queues == 0 || a.message_size < 16 {
        return Err(
            "--rate, --producers and --queues must be positive, --message-size >= 16".into()
        );
    }
    let started_unix_ms = unix_ms() as u64;
    let client = Client::connect(&a.broker).map_err(err)?;
    let topic = format!("scheduled-bench-{started_unix_ms}");
    client.admin().create_topic(&topic, a.queues).map_err(err)?;

    let seen = Arc::new(Mutex::new(Seen {
        ids: HashSet::new(),
        duplicates: 0,
        early: 0,
        lateness: stats::new_histogram(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for queue in 0..a.queues {
        let (client, topic, seen, stop) =
            (client.detached(), topic.clone(), seen.clone(), stop.clone());
        consumers.push(std::thread::spawn(move || -> Result<(), String> {
            let consumer = client.consumer();
            let mut offset = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = consumer
                    .pull(&topic, queue, offset, Duration::from_millis(200))
                    .map_err(err)?;
                let now = unix_ms();
                let mut s = seen.lock().unwrap();
                for m in &r.messages {
                    // Body: id u64, due ms i64, then padding.
                    let id = u64::from_le_bytes(m.body[0..8].try_into().unwrap());
                    let due = i64::from_le_bytes(m.body[8..16].try_into().unwrap());
                    if !s.ids.insert(id) {
                        s.duplicates += 1;
                    }
                    if now < due {
                        s.early += 1;
                    } else {
                        stats::record(&mut s.lateness, (now - due) as u64 * 1_000_000);
                    }
                }
                offset = r.next_offset;
            }
            Ok(())
        }));
    }

    let per_producer = a.rate / u64::from(a.producers);
    let total_per_producer = per_producer * a.duration_s;
    let start = Instant::now();
    let start_unix_ms = unix_ms();
    let mut producers = Vec::new();
    for p in 0..u64::from(a.producers) {
        let (client, topic, size, delay) =
            (client.detached(), topic.clone(), a.message_size, a.delay_ms);
        producers.push(std::thread::spawn(move || -> Result<(u64, u64), String> {
            let producer = client.producer(ProducerConfig::default()).map_err(err)?;
            let mut schedule = Schedule::new(0, per_producer.max(1));
            let (mut sent, mut errors) = (0, 0);
            for i in 0..total_per_producer {
                let intended_ns = schedule.next_intended(0);
                let intended = Duration::from_nanos(intended_ns);
                if let Some(wait) = intended.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                let due = start_unix_ms + intended.as_millis() as i64 + delay as i64;
                let mut body = vec![0u8; size];
                body[0..8].copy_from_slice(&(p << 40 | i).to_le_bytes());
                body[8..16].copy_from_slice(&due.to_le_bytes());
                let at = UNIX_EPOCH + Duration::from_millis(due as u64);
                match producer.send_at(Message::new(topic.as_str(), body), at) {
                    Ok(_) => sent += 1,
                    Err(_) => errors += 1,
                }
            }
            producer.close().map_err(err)?;
            Ok((sent, errors))
        }));
    }
    let (mut sent, mut send_errors) = (0, 0);
    for p in producers {
        let (s, e) = p.join().map_err(|_| "a producer thread panicked".to_owned())??;
        sent += s;
        send_errors += e;
    }
    let deadline = Instant::now() + Duration::from_millis(a.delay_ms) + Duration::from_secs(30);
    while Instant::now() < deadline && (seen.lock().unwrap().ids.len() as u64) < sent {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for c in consumers {
        c.join().map_err(|_| "a consumer thread panicked".to_owned())??;
    }
    let _ = client.admin().delete_topic(&topic);

    let s = seen.lock().unwrap();
    let received = s.ids.len() as u64;
    let rep = ScheduledReport {
        command: std::env::args().collect(),
        git_revision: ringmq::broker::server::GIT_REVISION.to_owned(),
        kernel: report::kernel(),
        started_unix_ms,
        broker: a.broker.clone(),
        rate_per_s: per_producer * u64::from(a.producers),
        delay_ms: a.delay_ms,
        duration_s: a.duration_s,
        producers: a.producers,
        queues: a.queues,
        message_size: a.message_size,
        sent,
        send_errors,
        received,
        duplicates: s.duplicates,
        early: s.early,
        missing: sent.saturating_sub(received),
        lateness: LatencySummary::of(&s.lateness),
    };
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    report::write_json(&rep, &a.out)?;
    let l = &rep.lateness;
    println!(
        "scheduled: {} sent ({} errors), {} received, {} missing, {} duplicates, {} early; \
         lateness ms p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
        rep.sent,
        rep.send_errors,
        rep.received,
        rep.missing,
        rep.duplicates,
        rep.early,
        l.p50_us / 1000.0,
        l.p99_us / 1000.0,
        l.p99_9_us / 1000.0,
        l.max_us / 1000.0
    );
    Ok(if rep.missing == 0 && rep.early == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
