//! `ringmq-bench`: the load generator of ringmq.
//!
//! `ringmq-bench run WORKLOAD.toml --spawn-broker --broker-cpus 0 --cpus 1` starts a broker on
//! core 0, runs the workload's producers and consumers on core 1, prints a progress line per
//! second and a final table, and writes a JSON report (hardware, kernel, git revision, exact
//! command, workload, broker config, results, per-second series).
//! `ringmq-bench run WORKLOAD.toml --compare-raw …` runs the workload through the client library
//! and then raw against the same broker and writes one JSON with both and the library/raw ratios
//! ([`comparison`]). `ringmq-bench scale WORKLOAD.toml --counts 1,2,4,8 …` runs it once per
//! producer/consumer thread count and writes one JSON with a table ([`scale`](mod@scale)). `--producers N`
//! and `--consumers N` set the thread counts of any run.
//! `ringmq-bench compare A.json B.json` prints two reports side by side; `ringmq-bench summary
//! *.json` prints a Markdown table (medians of runs with the same workload and overrides).
//!
//! The harness depends on the `ringmq` library (client) but not on its binary: with
//! `--spawn-broker` it runs the `ringmq` executable found next to its own (`target/<profile>/`),
//! or the one given by `--broker-bin`. Build both with `cargo build --release --bins`.

mod broker;
mod clock;
mod comparison;
mod counters;
mod group;
mod host_cpu;
mod lag;
mod library;
mod payload;
mod rate;
mod raw;
mod report;
mod runner;
mod scale;
mod scheduled;
mod session;
mod stats;
mod verify;
mod workload;

use std::path::{Path, PathBuf};
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
    /// Runs a workload file (with --compare-raw: through the library, then raw).
    Run(RunArgs),
    /// Runs a workload file once per thread count (--counts 1,2,4,8): one JSON with a table.
    Scale(ScaleArgs),
    /// Prints two JSON reports side by side with the change in percent.
    Compare { a: PathBuf, b: PathBuf },
    /// Prints a Markdown table of reports (the runs of --compare-raw and scale reports too):
    /// one row per workload and overrides, medians.
    Summary { reports: Vec<PathBuf> },
    /// Consumer-group consumption through the push consumer: throughput per member count and
    /// the rebalance pause when a member joins (see `group.rs`).
    Group(group::GroupArgs),
    /// Scheduled messages at a fixed timer rate: delivery lateness percentiles (see
    /// `scheduled.rs`).
    Scheduled(scheduled::ScheduledArgs),
}

fn main() -> ExitCode {
    // The library's logs (a consumer's retries, rebalances), only when asked for.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Compare { a, b } => {
            report::load(&a).and_then(|a| Ok((a, report::load(&b)?))).map(|(a, b)| {
                print!("{}", report::compare(&a, &b));
                ExitCode::SUCCESS
            })
        }
        Command::Summary { reports } => {
            let runs: Result<Vec<Vec<report::Report>>, String> =
                reports.iter().map(|p| report::load_runs(p)).collect();
            runs.map(|rs| {
                print!("{}", report::summary(&rs.into_iter().flatten().collect::<Vec<_>>()));
                ExitCode::SUCCESS
            })
        }
        Command::Run(args) => run(args),
        Command::Group(args) => group::run(args),
        Command::Scheduled(args) => scheduled::run(args),
        Command::Scale(args) => scale(args),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringmq-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Workload changes on the command line (shared by `run` and `scale`).
#[derive(clap::Args)]
struct LoadArgs {
    /// Override a workload field: `duration_s=2`, `storage.flush_mode=sync`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Producer threads (each its own client); the workload's `producers` otherwise.
    #[arg(long)]
    producers: Option<u32>,
    /// Consumer threads (each its own client); the workload's `consumers` otherwise.
    #[arg(long)]
    consumers: Option<u32>,
}

impl LoadArgs {
    fn workload(&self, path: &Path) -> Result<workload::Workload, String> {
        let mut overrides = self.overrides.clone();
        overrides.extend(self.producers.map(|n| format!("producers={n}")));
        overrides.extend(self.consumers.map(|n| format!("consumers={n}")));
        workload::Workload::load(path, &overrides)
    }
}

#[derive(clap::Args)]
struct RunArgs {
    workload: PathBuf,
    #[command(flatten)]
    broker: session::BrokerArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Run the workload through the library, then raw, against the same broker; one JSON
    /// with both runs and the library/raw ratios.
    #[arg(long)]
    compare_raw: bool,
    /// JSON report path. Default: `target/ringmq-bench/<workload>[-compare-raw]-<unix ms>.json`.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ScaleArgs {
    workload: PathBuf,
    #[command(flatten)]
    broker: session::BrokerArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Thread counts to run, comma-separated.
    #[arg(long, default_value = "1,2,4,8")]
    counts: String,
    /// Which threads the counts set.
    #[arg(long, value_enum, default_value = "both")]
    vary: scale::Vary,
    /// At each count, run through the library and then raw.
    #[arg(long)]
    compare_raw: bool,
    /// JSON report path. Default: `target/ringmq-bench/<workload>-scale-<unix ms>.json`.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn default_out(name: &str, suffix: &str, started_unix_ms: u64) -> PathBuf {
    PathBuf::from(format!("target/ringmq-bench/{name}{suffix}-{started_unix_ms}.json"))
}

/// The exit code of a session: failure when a count check failed or the broker did not stop
/// cleanly.
fn exit_code(all_counts_ok: bool, finished: &session::Finished) -> ExitCode {
    if let Some(e) = &finished.stop_error {
        eprintln!("ringmq-bench: {e}");
        return ExitCode::FAILURE;
    }
    if all_counts_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(a: RunArgs) -> Result<ExitCode, String> {
    let w = a.load.workload(&a.workload)?;
    let plan = if a.compare_raw {
        let (library, raw) = comparison::variants(&w)?;
        vec![library, raw]
    } else {
        vec![w.clone()]
    };
    let mut s = session::Session::start(&a.broker, &w)?;
    let mut outcomes = Vec::new();
    for v in &plan {
        match s.run(v) {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                s.finish();
                return Err(e);
            }
        }
    }
    let finished = s.finish();
    let mut reports: Vec<report::Report> = plan
        .into_iter()
        .zip(outcomes)
        .map(|(v, (results, series))| finished.report(v, results, series))
        .collect();
    let ok = reports.iter().all(|r| r.results.counts_ok);
    if a.compare_raw {
        let raw = reports.pop().expect("two runs");
        let library = reports.pop().expect("two runs");
        let started = library.started_unix_ms;
        let c = comparison::compare(library, raw);
        let out = a.out.unwrap_or_else(|| default_out(&w.name, "-compare-raw", started));
        comparison::write(&c, &out)?;
        print!("{}", report::table(&c.library));
        print!("{}", report::table(&c.raw));
        print!("{}", comparison::table(&c));
        println!("report: {}", out.display());
    } else {
        let rep = reports.pop().expect("one run");
        let out = a.out.unwrap_or_else(|| default_out(&w.name, "", rep.started_unix_ms));
        report::write(&rep, &out)?;
        print!("{}", report::table(&rep));
        println!("report: {}", out.display());
    }
    Ok(exit_code(ok, &finished))
}

fn scale(a: ScaleArgs) -> Result<ExitCode, String> {
    let w = a.load.workload(&a.workload)?;
    let counts = scale::parse_counts(&a.counts)?;
    let mut plan = Vec::new();
    for &c in &counts {
        let v = scale::at_count(&w, a.vary, c)?;
        if a.compare_raw {
            let (library, raw) = comparison::variants(&v)?;
            plan.push((c, library));
            plan.push((c, raw));
        } else {
            plan.push((c, v));
        }
    }
    let mut s = session::Session::start(&a.broker, &w)?;
    let mut outcomes = Vec::new();
    for (c, v) in &plan {
        eprintln!(
            "ringmq-bench: scale {} count {c}: {} producers, {} consumers, {:?}",
            w.name, v.producers, v.consumers, v.client
        );
        match s.run(v) {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                s.finish();
                return Err(e);
            }
        }
    }
    let finished = s.finish();
    let runs: Vec<(u32, report::Report)> = plan
        .into_iter()
        .zip(outcomes)
        .map(|((c, v), (results, series))| (c, finished.report(v, results, series)))
        .collect();
    let ok = runs.iter().all(|(_, r)| r.results.counts_ok);
    let started = runs.first().map_or(0, |(_, r)| r.started_unix_ms);
    let rep = scale::report(&w, a.vary, counts, runs);
    let out = a.out.unwrap_or_else(|| default_out(&w.name, "-scale", started));
    report::write_json(&rep, &out)?;
    print!("{}", scale::table(&rep));
    for (row, run) in rep.rows.iter().zip(&rep.runs) {
        for p in &run.results.problems {
            println!("  count {} ({:?}): COUNT PROBLEM: {p}", row.count, row.client);
        }
        for e in &run.results.errors {
            println!("  count {} ({:?}): error: {e}", row.count, row.client);
        }
    }
    println!("report: {}", out.display());
    Ok(exit_code(ok, &finished))
}
