//! Runs a workload against a broker: producer and consumer threads (each pinned to one of
//! `--cpus`, round-robin; the client's own threads inherit the pin), the per-second reporter on
//! the main thread, and the phase changes (warm-up, measurement, stop, drain). The threads'
//! bodies are per client: `library.rs` and `raw.rs`.
//!
//! Accounting: a producer counts a message *sent* once `send_async` took it, *acked* when its
//! reply said it was stored, *failed* otherwise. Ack latency is reply time minus intended
//! send time (the schedule's, see [`crate::rate`]; at max rate, the time just before
//! `send_async`). Ack times are taken by a waker that the reply wakes, not when the producer
//! gets around to looking, so a busy producer loop does not inflate them. Consumers decode the
//! harness header of every message (end-to-end latency = receive time minus intended send
//! time) and feed the [`Verifier`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use ringmq::client::Client;
use serde::{Deserialize, Serialize};

use crate::clock::now_ns;
use crate::host_cpu::HostCpu;
use crate::payload::{Prefix, NO_KEY};
use crate::stats::{merge, new_histogram, LatencySummary, Recorder};
use crate::verify::{Verifier, VerifySummary};
use crate::workload::{ClientKind, Workload};

const MAX_ERRORS_KEPT: usize = 20;

pub struct RunOptions {
    pub address: String,
    /// CPUs for producer and consumer threads (round-robin); empty = not pinned.
    pub cpus: Vec<usize>,
    /// Print a progress line per second on stderr.
    pub progress: bool,
    /// Suffix that makes topic names unique to this run.
    pub run_id: String,
    /// Delete the topics afterwards.
    pub delete_topics: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub t_s: f64,
    pub sent_per_s: f64,
    pub acked_per_s: f64,
    pub consumed_per_s: f64,
    pub produce_mb_per_s: f64,
    pub consume_mb_per_s: f64,
    pub ack_p99_us: f64,
    pub e2e_p99_us: f64,
    pub publish_delay_p99_us: f64,
    pub measuring: bool,
    /// Steal of all CPUs in this second, and the longest of one CPU within one ~100 ms
    /// sample (ms; [`crate::host_cpu`]).
    #[serde(default)]
    pub host_steal_ms: f64,
    #[serde(default)]
    pub host_steal_longest_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BacklogResult {
    pub bytes: u64,
    pub messages: u64,
    pub build_s: f64,
    pub build_bytes_per_s: f64,
    pub drain_s: f64,
    pub drain_bytes_per_s: f64,
    pub drain_msgs_per_s: f64,
    pub drained_all: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Length of the measured window (after the warm-up).
    pub measured_s: f64,
    pub sent: u64,
    pub acked: u64,
    /// Acked with FLUSH_DISK_TIMEOUT: stored, but not yet durable when acknowledged.
    pub flush_timeouts: u64,
    pub failed: u64,
    /// Messages consumed, duplicates included.
    pub consumed: u64,
    /// Acked messages never consumed.
    pub missing: u64,
    pub verify: VerifySummary,
    /// Acknowledged messages per second in the measured window.
    pub produce_msgs_per_s: f64,
    pub produce_bytes_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_bytes_per_s: f64,
    pub ack_latency: LatencySummary,
    pub e2e_latency: LatencySummary,
    /// Actual minus intended send time (fixed-rate workloads only).
    pub publish_delay: LatencySummary,
    pub backlog: Option<BacklogResult>,
    /// Every count check passed (see `problems`).
    pub counts_ok: bool,
    pub problems: Vec<String>,
    /// The first client errors seen.
    pub errors: Vec<String>,
    /// `--replication async|sync`: how far the replica was behind (`crate::lag`).
    #[serde(default)]
    pub replication_lag: Option<crate::lag::ReplicationLag>,
    /// A spawned broker's counters over the run (`crate::counters`): what it did, by series
    /// (metric name and labels other than `shard`, summed over shards). None against an
    /// external broker, or when its metrics endpoint did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_counters: Option<crate::counters::Counters>,
    /// What the host took from this machine's CPUs in the measured window
    /// ([`crate::host_cpu`]); None where `/proc/stat` could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu: Option<crate::host_cpu::HostCpuSummary>,
}

pub(crate) struct Shared {
    pub(crate) measuring: AtomicBool,
    pub(crate) stop_producers: AtomicBool,
    pub(crate) consumers_go: AtomicBool,
    pub(crate) stop_consumers: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    /// Acked with FLUSH_DISK_TIMEOUT (stored, not yet durable when acknowledged).
    pub(crate) flush_timeouts: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) consumed: AtomicU64,
    pub(crate) unique: AtomicU64,
    /// Backlog workloads: messages producers may still claim.
    pub(crate) backlog_left: AtomicU64,
    pub(crate) producers_done: AtomicUsize,
    pub(crate) errors: Mutex<Vec<String>>,
    pub(crate) error_count: AtomicU64,
    pub(crate) verifier: Mutex<Verifier>,
}

impl Shared {
    /// Consumers wait here for the go (after a backlog was produced); false if the run
    /// stopped first.
    pub(crate) fn wait_for_consumers_go(&self) -> bool {
        while !self.consumers_go.load(Acquire) {
            if self.stop_consumers.load(Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    pub(crate) fn error(&self, e: String) {
        self.error_count.fetch_add(1, Relaxed);
        let mut v = lock(&self.errors);
        if v.len() < MAX_ERRORS_KEPT {
            v.push(e);
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct ProducerStats {
    pub(crate) id: u32,
    pub(crate) sent: u64,
}

/// Feeds what one pull returned to the verifier and the end-to-end histogram.
pub(crate) fn record_consumed(
    w: &Workload,
    shared: &Shared,
    recorder: &Mutex<Recorder>,
    prefixes: &[Prefix],
    foreign: u64,
) {
    if prefixes.is_empty() && foreign == 0 {
        return;
    }
    let now = now_ns();
    let mut unique = 0;
    {
        let mut rec = lock(recorder);
        let mut v = lock(&shared.verifier);
        for _ in 0..foreign {
            v.foreign();
        }
        for p in prefixes {
            if v.observe(p.producer, p.seq) == crate::verify::Seen::First {
                unique += 1;
            }
            if w.verify_order && p.key != NO_KEY {
                v.observe_key(p.producer, p.key, p.key_seq);
            }
            rec.latency(now.saturating_sub(p.intended_ns));
        }
    }
    shared.consumed.fetch_add(prefixes.len() as u64 + foreign, Relaxed);
    shared.unique.fetch_add(unique, Relaxed);
}

#[derive(Clone, Copy, Default)]
struct Counts {
    t_ns: u64,
    sent: u64,
    acked: u64,
    consumed: u64,
}

impl Counts {
    fn now(s: &Shared) -> Counts {
        Counts {
            t_ns: now_ns(),
            sent: s.sent.load(Relaxed),
            acked: s.acked.load(Relaxed),
            consumed: s.consumed.load(Relaxed),
        }
    }
}

/// The per-second reporter: merges interval histograms, prints, keeps the series.
struct Reporter<'a> {
    w: &'a Workload,
    shared: &'a Shared,
    producer_recs: &'a [Arc<Mutex<Recorder>>],
    consumer_recs: &'a [Arc<Mutex<Recorder>>],
    start_ns: u64,
    last: Counts,
    series: Vec<SeriesPoint>,
    progress: bool,
    /// What the recorders held since the last point: ack, end-to-end and publish-delay
    /// latencies (a cut when measuring starts or stops adds to them between points).
    ack: Histogram<u64>,
    e2e: Histogram<u64>,
    publish_delay: Histogram<u64>,
    host: HostCpu,
}

impl Reporter<'_> {
    /// Emits a point if a second passed since the last one.
    fn tick(&mut self) {
        let now = Counts::now(self.shared);
        self.host.poll(now.t_ns);
        if now.t_ns < self.last.t_ns + 1_000_000_000 {
            return;
        }
        let dt = (now.t_ns - self.last.t_ns) as f64 / 1e9;
        self.cut();
        let size = self.w.message_size_bytes as f64;
        let (host_steal_ms, host_steal_longest_ms) = self.host.take_point();
        let p = SeriesPoint {
            t_s: (now.t_ns - self.start_ns) as f64 / 1e9,
            sent_per_s: (now.sent - self.last.sent) as f64 / dt,
            acked_per_s: (now.acked - self.last.acked) as f64 / dt,
            consumed_per_s: (now.consumed - self.last.consumed) as f64 / dt,
            produce_mb_per_s: (now.acked - self.last.acked) as f64 * size / dt / 1e6,
            consume_mb_per_s: (now.consumed - self.last.consumed) as f64 * size / dt / 1e6,
            ack_p99_us: LatencySummary::of(&self.ack).p99_us,
            e2e_p99_us: LatencySummary::of(&self.e2e).p99_us,
            publish_delay_p99_us: LatencySummary::of(&self.publish_delay).p99_us,
            measuring: self.shared.measuring.load(Relaxed),
            host_steal_ms,
            host_steal_longest_ms,
        };
        if self.progress {
            eprintln!(
                "[{:>6.1}s]{} produce {:>9.0} msg/s {:>8.1} MB/s ack p99 {:>9.1} us | consume \
                 {:>9.0} msg/s {:>8.1} MB/s e2e p99 {:>10.1} us | errors {}",
                p.t_s,
                if p.measuring { " " } else { "*" },
                p.acked_per_s,
                p.produce_mb_per_s,
                p.ack_p99_us,
                p.consumed_per_s,
                p.consume_mb_per_s,
                p.e2e_p99_us,
                self.shared.error_count.load(Relaxed),
            );
        }
        self.series.push(p);
        self.last = now;
        for h in [&mut self.ack, &mut self.e2e, &mut self.publish_delay] {
            h.reset();
        }
    }

    /// Takes what every recorder holds into this point's histograms, and into the recorders'
    /// totals if the run is measuring. Called at every point and right before measuring
    /// starts or stops, so each cut lies wholly inside or outside the measured window.
    fn cut(&mut self) {
        let measured = self.shared.measuring.load(Relaxed);
        for r in self.producer_recs {
            lock(r).cut(measured, &mut self.ack, &mut self.publish_delay);
        }
        for r in self.consumer_recs {
            // Consumers record no publish delays: theirs are empty.
            lock(r).cut(measured, &mut self.e2e, &mut self.publish_delay);
        }
    }

    /// Sets whether the run is measuring, cutting first what was recorded before.
    fn set_measuring(&mut self, on: bool) {
        self.cut();
        self.host.sample_now(now_ns());
        self.host.set_measuring(on);
        self.shared.measuring.store(on, Relaxed);
    }

    /// Ticks every 10 ms until `done` (true) or `limit_ns` passes (false).
    fn run_until(&mut self, limit_ns: u64, mut done: impl FnMut() -> bool) -> bool {
        loop {
            self.tick();
            if done() {
                return true;
            }
            if now_ns() >= limit_ns {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Creates the topics, runs the workload, deletes the topics (if asked), returns the results
/// and the per-second series.
pub fn run(w: &Workload, opts: &RunOptions) -> Result<(Results, Vec<SeriesPoint>), String> {
    let client = Client::connect(&opts.address)
        .map_err(|e| format!("cannot reach the broker at {}: {e}", opts.address))?;
    let admin = client.admin();
    let topics: Vec<String> =
        (0..w.topics).map(|t| format!("bench-{}-{t}-{}", w.name, opts.run_id)).collect();
    for t in &topics {
        admin
            .create_topic(t, w.queues_per_topic)
            .map_err(|e| format!("cannot create topic {t}: {e}"))?;
    }
    let result = run_on_topics(w, opts, &topics);
    if opts.delete_topics {
        for t in &topics {
            if let Err(e) = admin.delete_topic(t) {
                eprintln!("ringmq-bench: cannot delete topic {t}: {e}");
            }
        }
    }
    result
}

fn run_on_topics(
    w: &Workload,
    opts: &RunOptions,
    topics: &[String],
) -> Result<(Results, Vec<SeriesPoint>), String> {
    let backlog_messages = w.backlog_bytes / w.message_size_bytes as u64;
    let shared = Shared {
        measuring: AtomicBool::new(false),
        stop_producers: AtomicBool::new(false),
        consumers_go: AtomicBool::new(w.backlog_bytes == 0),
        stop_consumers: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        flush_timeouts: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        unique: AtomicU64::new(0),
        backlog_left: AtomicU64::new(backlog_messages),
        producers_done: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
        error_count: AtomicU64::new(0),
        verifier: Mutex::new(Verifier::default()),
    };
    let producer_recs: Vec<_> =
        (0..w.producers).map(|_| Arc::new(Mutex::new(Recorder::default()))).collect();
    let consumer_recs: Vec<_> =
        (0..w.consumers).map(|_| Arc::new(Mutex::new(Recorder::default()))).collect();
    // Queues to consumers: round-robin over (topic, queue).
    let mut assignments: Vec<Vec<(String, u32)>> = vec![Vec::new(); w.consumers as usize];
    if w.consumers > 0 {
        let mut i = 0usize;
        for t in topics {
            for q in 0..w.queues_per_topic {
                assignments[i % w.consumers as usize].push((t.clone(), q));
                i += 1;
            }
        }
    }
    let cpu_for = |i: usize| (!opts.cpus.is_empty()).then(|| opts.cpus[i % opts.cpus.len()]);
    let rate_of = |p: u32| {
        let base = w.target_rate / w.producers as u64;
        base + if (p as u64) < w.target_rate % w.producers as u64 { 1 } else { 0 }
    };
    let start_ns = now_ns();
    let mut reporter = Reporter {
        w,
        shared: &shared,
        producer_recs: &producer_recs,
        consumer_recs: &consumer_recs,
        start_ns,
        last: Counts::now(&shared),
        series: Vec::new(),
        progress: opts.progress,
        ack: new_histogram(),
        e2e: new_histogram(),
        publish_delay: new_histogram(),
        host: HostCpu::for_this_machine(),
    };
    let mut window = (Counts::default(), Counts::default());
    let mut backlog_result = None;
    let mut thread_errors = Vec::new();
    let mut producer_stats = Vec::new();
    std::thread::scope(|s| {
        let mut consumers = Vec::new();
        for (c, queues) in assignments.iter().enumerate() {
            let (shared, rec, addr) = (&shared, &consumer_recs[c], opts.address.as_str());
            let cpu = cpu_for(w.producers as usize + c);
            consumers.push(
                std::thread::Builder::new()
                    .name(format!("bench-consumer-{c}"))
                    .spawn_scoped(s, move || match w.client {
                        ClientKind::Library if w.consumer_group => {
                            let group = format!("bench-{}", opts.run_id);
                            crate::library::group_consumer_main(
                                c as u32, w, topics, &group, addr, cpu, shared, rec,
                            )
                        }
                        ClientKind::Library => crate::library::consumer_main(
                            c as u32, w, queues, addr, cpu, shared, rec,
                        ),
                        ClientKind::Raw => {
                            crate::raw::consumer_main(c as u32, w, queues, addr, cpu, shared, rec)
                        }
                    })
                    .expect("spawn consumer"),
            );
        }
        let mut producers = Vec::new();
        for p in 0..w.producers {
            let (shared, rec, addr) = (&shared, &producer_recs[p as usize], opts.address.as_str());
            let cpu = cpu_for(p as usize);
            let rate = rate_of(p);
            producers.push(
                std::thread::Builder::new()
                    .name(format!("bench-producer-{p}"))
                    .spawn_scoped(s, move || {
                        let r = match w.client {
                            ClientKind::Library if w.transactional => {
                                crate::library::transactional_producer_main(
                                    p, w, topics, addr, cpu, shared, rec,
                                )
                            }
                            ClientKind::Library if w.send_batch_messages > 0 => {
                                crate::library::batch_producer_main(
                                    p, w, topics, addr, cpu, shared, rec,
                                )
                            }
                            ClientKind::Library => crate::library::producer_main(
                                p, w, topics, addr, cpu, rate, shared, rec,
                            ),
                            ClientKind::Raw => {
                                crate::raw::producer_main(p, w, topics, addr, cpu, shared, rec)
                            }
                        };
                        shared.producers_done.fetch_add(1, Release);
                        r
                    })
                    .expect("spawn producer"),
            );
        }
        let all_produced = || shared.producers_done.load(Acquire) == w.producers as usize;
        if w.backlog_bytes > 0 {
            // Build the backlog (measured: ack latency, build rate), then drain it.
            reporter.set_measuring(true);
            let built_start = Counts::now(&shared);
            reporter.run_until(u64::MAX, all_produced);
            let built = Counts::now(&shared);
            shared.consumers_go.store(true, Release);
            let acked = built.acked;
            let limit = now_ns() + w.drain_timeout_s * 1_000_000_000;
            let drained_all = reporter.run_until(limit, || shared.unique.load(Relaxed) >= acked);
            let drained = Counts::now(&shared);
            let build_s = (built.t_ns - built_start.t_ns) as f64 / 1e9;
            let drain_s = (drained.t_ns - built.t_ns) as f64 / 1e9;
            let bytes = acked * w.message_size_bytes as u64;
            let drained_bytes = drained.consumed * w.message_size_bytes as u64;
            backlog_result = Some(BacklogResult {
                bytes,
                messages: acked,
                build_s,
                build_bytes_per_s: bytes as f64 / build_s,
                drain_s,
                drain_bytes_per_s: drained_bytes as f64 / drain_s,
                drain_msgs_per_s: drained.consumed as f64 / drain_s,
                drained_all,
            });
            window = (built_start, built);
        } else {
            let warm_end = start_ns + w.warmup_s * 1_000_000_000;
            reporter.run_until(warm_end, || false);
            window.0 = Counts::now(&shared);
            reporter.set_measuring(true);
            reporter.run_until(warm_end + w.duration_s * 1_000_000_000, || false);
            window.1 = Counts::now(&shared);
            reporter.set_measuring(false);
            shared.stop_producers.store(true, Relaxed);
            reporter.run_until(u64::MAX, all_produced);
            if w.consumers > 0 {
                let acked = shared.acked.load(Relaxed);
                let limit = now_ns() + w.drain_timeout_s * 1_000_000_000;
                reporter.run_until(limit, || shared.unique.load(Relaxed) >= acked);
            }
        }
        shared.stop_consumers.store(true, Relaxed);
        for h in producers {
            match h.join() {
                Ok(Ok(st)) => producer_stats.push(st),
                Ok(Err(e)) => thread_errors.push(e),
                Err(_) => thread_errors.push("a producer thread panicked".into()),
            }
        }
        for h in consumers {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => thread_errors.push(e),
                Err(_) => thread_errors.push("a consumer thread panicked".into()),
            }
        }
    });
    if !thread_errors.is_empty() {
        return Err(thread_errors.join("; "));
    }
    // What was recorded since the last cut (a backlog run measures to its end).
    reporter.cut();
    let series = std::mem::take(&mut reporter.series);
    let total = |recs: &[Arc<Mutex<Recorder>>], delay: bool| {
        let mut h = new_histogram();
        for r in recs {
            let r = lock(r);
            merge(&mut h, if delay { &r.total_delay } else { &r.total });
        }
        LatencySummary::of(&h)
    };
    let (a, b) = window;
    let measured_s = (b.t_ns.saturating_sub(a.t_ns)) as f64 / 1e9;
    let per_s = |n: u64| if measured_s > 0.0 { n as f64 / measured_s } else { 0.0 };
    let size = w.message_size_bytes as f64;
    let verifier = lock(&shared.verifier);
    let mut results = Results {
        measured_s,
        sent: shared.sent.load(Relaxed),
        acked: shared.acked.load(Relaxed),
        failed: shared.failed.load(Relaxed),
        flush_timeouts: shared.flush_timeouts.load(Relaxed),
        consumed: shared.consumed.load(Relaxed),
        missing: 0,
        verify: verifier.summary.clone(),
        produce_msgs_per_s: per_s(b.acked - a.acked),
        produce_bytes_per_s: per_s(b.acked - a.acked) * size,
        consume_msgs_per_s: per_s(b.consumed - a.consumed),
        consume_bytes_per_s: per_s(b.consumed - a.consumed) * size,
        ack_latency: total(&producer_recs, false),
        e2e_latency: total(&consumer_recs, false),
        publish_delay: total(&producer_recs, true),
        backlog: backlog_result,
        counts_ok: false,
        problems: Vec::new(),
        errors: lock(&shared.errors).clone(),
        replication_lag: None,
        broker_counters: None,
        host_cpu: reporter.host.summary(),
    };
    if w.consumers > 0 {
        results.missing = producer_stats.iter().map(|p| verifier.missing(p.id, p.sent)).sum();
    }
    results.problems = check_counts(w, &results);
    results.counts_ok = results.problems.is_empty();
    Ok((results, series))
}

/// The promises every workload makes: nothing failed, and with consumers, every sent message
/// consumed exactly once (in key order where verified).
pub fn check_counts(w: &Workload, r: &Results) -> Vec<String> {
    let mut p = Vec::new();
    if r.sent == 0 {
        p.push("no message was sent".into());
    }
    if r.failed > 0 {
        p.push(format!("{} sends failed", r.failed));
    }
    if r.acked + r.failed != r.sent {
        p.push(format!("sent {} but acked {} + failed {}", r.sent, r.acked, r.failed));
    }
    if w.consumers > 0 {
        if r.verify.unique != r.acked {
            p.push(format!("acked {} but consumed {} distinct", r.acked, r.verify.unique));
        }
        if r.missing > 0 {
            p.push(format!("{} sent messages were never consumed", r.missing));
        }
        if r.verify.duplicates > 0 {
            p.push(format!("{} duplicates consumed", r.verify.duplicates));
        }
        if r.verify.foreign > 0 {
            p.push(format!("{} messages without the harness header", r.verify.foreign));
        }
        if w.verify_order && (r.verify.order_violations > 0 || r.verify.key_gaps > 0) {
            p.push(format!(
                "per-key order broken: {} backwards, {} gaps",
                r.verify.order_violations, r.verify.key_gaps
            ));
        }
    }
    if r.backlog.as_ref().is_some_and(|b| !b.drained_all) {
        p.push("consumers did not drain the backlog within drain_timeout_s".into());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(consumers: u32, verify_order: bool) -> Workload {
        let mut text = String::from(
            "name = \"t\"\ntopics = 1\nqueues_per_topic = 1\nmessage_size_bytes = 64\n\
             producers = 1\nduration_s = 1\nkey_distribution = \"round-robin\"\nkey_count = 2\n",
        );
        text.push_str(&format!("consumers = {consumers}\nverify_order = {verify_order}\n"));
        Workload::parse(&text, &[]).unwrap()
    }

    #[test]
    fn count_checks() {
        let w = workload(1, true);
        let mut r = Results { sent: 10, acked: 10, ..Default::default() };
        r.verify.unique = 10;
        assert!(check_counts(&w, &r).is_empty());
        r.verify.duplicates = 1;
        r.verify.order_violations = 2;
        let p = check_counts(&w, &r);
        assert_eq!(p.len(), 2, "{p:?}");
        let r = Results { sent: 10, acked: 9, failed: 1, ..Default::default() };
        assert!(check_counts(&workload(0, false), &r)[0].contains("failed"));
    }
}
