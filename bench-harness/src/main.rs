//! `ringmq-bench`: the load generator of ringmq.
//!
//! `ringmq-bench run WORKLOAD.toml --spawn-broker --broker-cpus 0 --cpus 1` starts a broker on
//! core 0, runs the workload's producers and consumers on core 1, prints a progress line per
//! second and a final table, and writes a JSON report (hardware, kernel, git revision, exact
//! command, workload, broker config, results, per-second series).
//! `ringmq-bench compare A.json B.json` prints two reports side by side; `ringmq-bench summary
//! *.json` prints a Markdown table (medians of runs with the same workload and overrides).
//!
//! The harness depends on the `ringmq` library (client) but not on its binary: with
//! `--spawn-broker` it runs the `ringmq` executable found next to its own (`target/<profile>/`),
//! or the one given by `--broker-bin`. Build both with `cargo build --release --bins`.

mod broker;
mod clock;
mod group;
mod payload;
mod rate;
mod raw;
mod report;
mod runner;
mod stats;
mod verify;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ringmq-bench", version, about = "Load generator for the ringmq broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a workload file.
    Run(RunArgs),
    /// Prints two JSON reports side by side with the change in percent.
    Compare { a: PathBuf, b: PathBuf },
    /// Prints a Markdown table of reports: one row per workload and overrides, medians.
    Summary { reports: Vec<PathBuf> },
    /// Consumer-group consumption through the push consumer: throughput per member count and
    /// the rebalance pause when a member joins (see `group.rs`).
    Group(group::GroupArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Compare { a, b } => {
            report::load(&a).and_then(|a| Ok((a, report::load(&b)?))).map(|(a, b)| {
                print!("{}", report::compare(&a, &b));
                ExitCode::SUCCESS
            })
        }
        Command::Summary { reports } => {
            reports.iter().map(|p| report::load(p)).collect::<Result<Vec<_>, _>>().map(|rs| {
                print!("{}", report::summary(&rs));
                ExitCode::SUCCESS
            })
        }
        Command::Run(args) => run(args),
        Command::Group(args) => group::run(args),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringmq-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    workload: PathBuf,
    /// A running broker's shared port, host:port.
    #[arg(long, conflicts_with = "spawn_broker", required_unless_present = "spawn_broker")]
    broker: Option<String>,
    /// Start a `ringmq broker` for this run (temp data dir, the workload's broker config).
    #[arg(long)]
    spawn_broker: bool,
    /// The ringmq binary (default: next to this executable).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// CPUs for the spawned broker (one shard each unless the workload sets `shards`);
    /// e.g. `0`. Default: not pinned, one shard.
    #[arg(long)]
    broker_cpus: Option<String>,
    /// CPUs for the producer and consumer threads, e.g. `1`. Default: not pinned.
    #[arg(long)]
    cpus: Option<String>,
    /// Where the spawned broker's temp data dir goes (must support O_DIRECT: not tmpfs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the spawned broker's data dir.
    #[arg(long)]
    keep_data: bool,
    /// Keep the topics on the broker after the run (they are deleted by default).
    #[arg(long)]
    keep_topics: bool,
    /// Override a workload field: `duration_s=2`, `storage.flush_mode=sync`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// JSON report path. Default: target/ringmq-bench/<workload>-<unix ms>.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
}

fn run(a: RunArgs) -> Result<ExitCode, String> {
    let started_unix_ms = broker::unix_ms();
    let command: Vec<String> = std::env::args().collect();
    let w = workload::Workload::load(&a.workload, &a.overrides)?;
    let broker_cpus = a.broker_cpus.as_deref().map(clock::parse_cpus).transpose()?;
    let bench_cpus = a.cpus.as_deref().map(clock::parse_cpus).transpose()?.unwrap_or_default();
    let mut spawned = None;
    let address = match a.broker {
        Some(addr) => addr,
        None => {
            let bin = broker::find_binary(a.broker_bin.as_deref())?;
            let base = a.data_dir.clone().unwrap_or_else(std::env::temp_dir);
            let b = broker::SpawnedBroker::start(
                &bin,
                &base,
                a.keep_data,
                &w.broker,
                &w.storage,
                broker_cpus.as_deref().unwrap_or(&[]),
            )?;
            eprintln!(
                "ringmq-bench: broker pid {} at {} (data {})",
                b.pid().unwrap_or(0),
                b.address(),
                b.dir.display()
            );
            let addr = b.address();
            spawned = Some(b);
            addr
        }
    };
    // Pin the harness's own threads after the broker started (it must not inherit this).
    if let Some(&c) = bench_cpus.first() {
        clock::pin_current_thread(c)?;
    }
    let opts = runner::RunOptions {
        address: address.clone(),
        cpus: bench_cpus.clone(),
        progress: !a.quiet,
        run_id: format!("{}-{}", std::process::id(), started_unix_ms % 1_000_000),
        delete_topics: !a.keep_topics,
    };
    let outcome = runner::run(&w, &opts);
    let data_dir = spawned.as_ref().map(|b| b.dir.clone());
    // The revision of the broker measured: the one it reports when the bench started it; an
    // external broker's is unknown here (the working directory may hold other code).
    let git_revision = match &spawned {
        Some(b) => b.revision.clone(),
        None => format!(
            "unknown (external broker; the bench ran in a checkout at {})",
            report::git_revision()
        ),
    };
    let config = spawned.as_ref().map(|b| b.config_text.clone()).unwrap_or_default();
    let stopped = spawned.as_mut().map(|b| b.stop()).unwrap_or(Ok(()));
    let hardware = report::hardware(data_dir.as_deref());
    drop(spawned);
    let (results, series) = outcome?;
    let rep = report::Report {
        report_version: report::REPORT_VERSION,
        started_unix_ms,
        command,
        git_revision,
        kernel: report::kernel(),
        hardware,
        bench_cpus,
        broker: report::BrokerInfo {
            address,
            spawned: a.spawn_broker,
            cpus: broker_cpus.unwrap_or_default(),
            config,
        },
        workload: w,
        results,
        series,
    };
    let out = a.out.unwrap_or_else(|| {
        PathBuf::from(format!("target/ringmq-bench/{}-{}.json", rep.workload.name, started_unix_ms))
    });
    report::write(&rep, &out)?;
    print!("{}", report::table(&rep));
    println!("report: {}", out.display());
    if let Err(e) = stopped {
        eprintln!("ringmq-bench: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if rep.results.counts_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
