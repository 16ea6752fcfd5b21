//! One bench session: one broker (spawned for the session, or given), any number of workload
//! runs against it, then one description of where they ran for every report.
//!
//! `run` makes one run; `run --compare-raw` two (library, then raw); `scale` one per count (two
//! with `--compare-raw`). Runs of a session share the broker process, its data directory and
//! config, so their numbers compare without a restart or another disk state in between; each
//! run creates its own topics (a run-unique suffix) and deletes them afterwards unless asked.

use std::path::PathBuf;

use crate::broker::{self, SpawnedBroker};
use crate::clock;
use crate::report::{self, BrokerInfo, Report};
use crate::runner::{self, Results, SeriesPoint};
use crate::workload::Workload;

/// Where the broker comes from and where the load runs (the flags `run` and `scale` share).
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// A running broker's shared port, host:port.
    #[arg(long, conflicts_with = "spawn_broker", required_unless_present = "spawn_broker")]
    pub broker: Option<String>,
    /// Start a `ringmq broker` for this session (temp data dir, the workload's broker config).
    #[arg(long)]
    pub spawn_broker: bool,
    /// The ringmq binary (default: next to this executable).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// CPUs for the spawned broker (one shard each unless the workload sets `shards`);
    /// e.g. `0`. Default: not pinned, one shard.
    #[arg(long)]
    pub broker_cpus: Option<String>,
    /// CPUs for the producer and consumer threads, e.g. `1`. Default: not pinned.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Where the spawned broker's temp data dir goes (must support O_DIRECT: not tmpfs).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the spawned broker's data dir.
    #[arg(long)]
    pub keep_data: bool,
    /// Keep the topics on the broker after each run (they are deleted by default).
    #[arg(long)]
    pub keep_topics: bool,
    /// No per-second progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// With --spawn-broker: `none` (one broker), or a master and one replica on this machine
    /// (same CPUs, same disk) replicating `async` or `sync` (min_in_sync_replicas = 2: every
    /// send waits for the replica's disk).
    #[arg(long, value_enum, default_value = "none")]
    pub replication: Replication,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    None,
    Async,
    Sync,
}

impl Replication {
    fn name(self) -> &'static str {
        match self {
            Replication::None => "none",
            Replication::Async => "async",
            Replication::Sync => "sync",
        }
    }
}

/// A port `p` with `p..=p + n` free now (the replica's shared and per-shard ports: the
/// master's config must name the replica before it starts).
fn free_ports(n: u16) -> Result<u16, String> {
    for _ in 0..100 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let base = probe.local_addr().map_err(|e| e.to_string())?.port();
        drop(probe);
        if base.checked_add(n).is_some()
            && (0..=n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return Ok(base);
        }
    }
    Err(format!("no {} consecutive free ports for the replica", n + 1))
}

/// Sends one message to a probe topic until the master acknowledges it SEND_OK: the replica
/// joined its in-sync set (sync sends are refused SLAVE_NOT_AVAILABLE before).
fn wait_replicated(address: &str) -> Result<(), String> {
    use ringmq::client::{Client, Message, ProducerConfig};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let client = Client::connect(address).map_err(|e| e.to_string())?;
    let topic = "ringmq-bench-replication-probe";
    match client.admin().create_topic(topic, 1) {
        Ok(_) => {}
        Err(e) if e.code() == Some(ringmq::protocol::ErrorCode::TOPIC_EXISTS) => {}
        Err(e) => return Err(format!("creating {topic}: {e}")),
    }
    let producer = client.producer(ProducerConfig::default()).map_err(|e| e.to_string())?;
    loop {
        match producer.send(Message::new(topic, "probe")) {
            Ok(r) if r.status == ringmq::protocol::SendStatus::SendOk => return Ok(()),
            other if std::time::Instant::now() >= deadline => {
                return Err(format!("the replica did not join within 60 s: {other:?}"))
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

pub struct Session {
    pub started_unix_ms: u64,
    command: Vec<String>,
    address: String,
    spawned: Option<SpawnedBroker>,
    /// `--replication async|sync`: the replica (the master is `spawned`).
    replica: Option<SpawnedBroker>,
    replication: Replication,
    spawn_flag: bool,
    broker_cpus: Option<Vec<usize>>,
    bench_cpus: Vec<usize>,
    keep_topics: bool,
    quiet: bool,
    runs: usize,
}

/// What every report of a finished session says about where it ran.
pub struct Finished {
    started_unix_ms: u64,
    command: Vec<String>,
    git_revision: String,
    kernel: String,
    hardware: report::Hardware,
    bench_cpus: Vec<usize>,
    broker: BrokerInfo,
    /// Stopping the spawned broker failed (it did not exit cleanly).
    pub stop_error: Option<String>,
}

impl Session {
    /// Starts the broker (with `--spawn-broker`, configured from `w`'s tables) and pins this
    /// thread to the first bench CPU.
    pub fn start(a: &BrokerArgs, w: &Workload) -> Result<Session, String> {
        let started_unix_ms = broker::unix_ms();
        let broker_cpus = a.broker_cpus.as_deref().map(clock::parse_cpus).transpose()?;
        let bench_cpus = a.cpus.as_deref().map(clock::parse_cpus).transpose()?.unwrap_or_default();
        let mut spawned = None;
        let mut replica = None;
        if a.replication != Replication::None && a.broker.is_some() {
            return Err(
                "--replication starts its own master and replica: use --spawn-broker".into()
            );
        }
        let address = match &a.broker {
            Some(addr) => addr.clone(),
            None => {
                let bin = broker::find_binary(a.broker_bin.as_deref())?;
                let base = a.data_dir.clone().unwrap_or_else(std::env::temp_dir);
                let cpus = broker_cpus.as_deref().unwrap_or(&[]);
                let start = |role: &broker::Role| {
                    SpawnedBroker::start(
                        &bin,
                        &base,
                        a.keep_data,
                        &w.broker,
                        &w.storage,
                        &w.key_index,
                        cpus,
                        role,
                    )
                };
                let b = if a.replication == Replication::None {
                    start(&broker::Role::default())?
                } else {
                    let shards = w
                        .broker
                        .get("shards")
                        .and_then(toml::Value::as_integer)
                        .unwrap_or(if cpus.is_empty() { 1 } else { cpus.len() as i64 });
                    let port = free_ports(u16::try_from(shards).map_err(|e| e.to_string())?)?;
                    let mut m = toml::Table::new();
                    m.insert("role".into(), "master".into());
                    m.insert("replication".into(), a.replication.name().into());
                    m.insert(
                        "replicas".into(),
                        toml::Value::Array(vec![format!("127.0.0.1:{port}").into()]),
                    );
                    m.insert("min_in_sync_replicas".into(), 2.into());
                    let role =
                        broker::Role { name: "master".into(), port: 0, replication: Some(m) };
                    let master = start(&role)?;
                    let mut r = toml::Table::new();
                    r.insert("role".into(), "replica".into());
                    r.insert("master".into(), master.address().into());
                    let role = broker::Role { name: "replica".into(), port, replication: Some(r) };
                    let rep = start(&role)?;
                    eprintln!(
                        "ringmq-bench: replica pid {} at {} (data {}), replication {}",
                        rep.pid().unwrap_or(0),
                        rep.address(),
                        rep.dir.display(),
                        a.replication.name()
                    );
                    wait_replicated(&master.address())?;
                    replica = Some(rep);
                    master
                };
                eprintln!(
                    "ringmq-bench: broker pid {} at {} (data {})",
                    b.pid().unwrap_or(0),
                    b.address(),
                    b.dir.display()
                );
                if report::data_dir_journal(&b.dir) == Some(false) {
                    eprintln!(
                        "ringmq-bench: note: {} is on ext4 without a journal: a run that creates \
                         thousands of queues within 5 minutes of deleting as many (the run \
                         before it) pays ext4's inode reuse delay, about a quarter of the \
                         broker's core (BENCHMARKS.md, 2026-12-05; `ringmq tune check`)",
                        b.dir.display()
                    );
                }
                let addr = b.address();
                spawned = Some(b);
                addr
            }
        };
        // Pin the harness's own threads after the broker started (it must not inherit this).
        if let Some(&c) = bench_cpus.first() {
            clock::pin_current_thread(c)?;
        }
        Ok(Session {
            started_unix_ms,
            command: std::env::args().collect(),
            address,
            spawned,
            replica,
            replication: a.replication,
            spawn_flag: a.spawn_broker,
            broker_cpus,
            bench_cpus,
            keep_topics: a.keep_topics,
            quiet: a.quiet,
            runs: 0,
        })
    }

    /// Runs `w` once against the session's broker.
    pub fn run(&mut self, w: &Workload) -> Result<(Results, Vec<SeriesPoint>), String> {
        self.runs += 1;
        let opts = runner::RunOptions {
            address: self.address.clone(),
            cpus: self.bench_cpus.clone(),
            progress: !self.quiet,
            run_id: format!(
                "{}-{}-{}",
                std::process::id(),
                self.started_unix_ms % 1_000_000,
                self.runs
            ),
            delete_topics: !self.keep_topics,
        };
        let sampler = match (&self.replica, &self.spawned) {
            (Some(_), Some(m)) => m.metrics_url.clone().map(crate::lag::Sampler::start),
            _ => None,
        };
        let metrics_url = self.spawned.as_ref().and_then(|b| b.metrics_url.clone());
        let before = metrics_url.as_deref().and_then(crate::counters::read);
        let (mut results, series) = runner::run(w, &opts)?;
        if let Some(s) = sampler {
            results.replication_lag = Some(s.finish(results.produce_bytes_per_s));
        }
        let after = metrics_url.as_deref().and_then(crate::counters::read);
        if let (Some(before), Some(after)) = (before, after) {
            results.broker_counters = Some(crate::counters::delta(&before, &after));
        }
        Ok((results, series))
    }

    /// Stops the spawned broker and describes the session.
    pub fn finish(mut self) -> Finished {
        let data_dir = self.spawned.as_ref().map(|b| b.dir.clone());
        // The revision of the broker measured: the one it reports when the bench started it;
        // an external broker's is unknown here (the working directory may hold other code).
        let git_revision = match &self.spawned {
            Some(b) => b.revision.clone(),
            None => format!(
                "unknown (external broker; the bench ran in a checkout at {})",
                report::git_revision()
            ),
        };
        let config = self.spawned.as_ref().map(|b| b.config_text.clone()).unwrap_or_default();
        let replica_config =
            self.replica.as_ref().map(|b| b.config_text.clone()).unwrap_or_default();
        // The replica last: the master's stop must not wait on a replica that is gone.
        let stopped = self.spawned.as_mut().map(|b| b.stop()).unwrap_or(Ok(()));
        let stopped = stopped.and(self.replica.as_mut().map(|b| b.stop()).unwrap_or(Ok(())));
        drop(self.replica.take());
        let hardware = report::hardware(data_dir.as_deref());
        drop(self.spawned.take());
        Finished {
            started_unix_ms: self.started_unix_ms,
            command: self.command,
            git_revision,
            kernel: report::kernel(),
            hardware,
            bench_cpus: self.bench_cpus,
            broker: BrokerInfo {
                address: self.address,
                spawned: self.spawn_flag,
                cpus: self.broker_cpus.unwrap_or_default(),
                config,
                replication: self.replication.name().into(),
                replica_config,
            },
            stop_error: stopped.err(),
        }
    }
}

impl Finished {
    /// The report of one run of the session.
    pub fn report(&self, workload: Workload, results: Results, series: Vec<SeriesPoint>) -> Report {
        Report {
            report_version: report::REPORT_VERSION,
            started_unix_ms: self.started_unix_ms,
            command: self.command.clone(),
            git_revision: self.git_revision.clone(),
            kernel: self.kernel.clone(),
            hardware: self.hardware.clone(),
            bench_cpus: self.bench_cpus.clone(),
            broker: self.broker.clone(),
            workload,
            results,
            series,
        }
    }
}
