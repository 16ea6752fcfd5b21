//! `ringmq tune`: checks the machine a broker runs on and applies a tuning profile.
//!
//! ringmq's speed and its latency tail depend on settings outside its config: how much memory
//! it may lock for io_uring buffers, how many files it may open, transparent huge pages, swap,
//! the page-cache writeback knobs (in `io_mode = buffered`), the data disk's I/O scheduler and
//! write cache, the CPU governor, the filesystem and whether O_DIRECT works on it, and how the
//! shards fit the CPUs and NUMA nodes. This module reads them, judges them against a broker
//! config, and can change the ones that can be changed.
//!
//! It runs on the command line, never inside a broker, and is split so that the judgement is
//! testable without a machine:
//! - [`facts`]: reads /proc and /sys under a [`Root`] (`/`, or a fake tree in tests);
//!   [`data_dir`] and [`block_device`]: the data directory's filesystem, O_DIRECT probe and
//!   backing disks.
//! - [`checks`]: pure rules, facts and config in, [`Finding`]s out.
//! - [`apply`]: a pure plan of writes from a profile's OS settings, then its execution.
//! - [`profiles`]: the `throughput`, `latency` and `durability` profiles in tuning/.
//! - [`unit`](mod@unit): the systemd unit with the limits the broker needs.
//!
//! The hidden `--root DIR` flag reads (and, for `apply`, writes) /proc and /sys under DIR
//! instead of `/`. It exists for tests, which must never write the real ones.

pub mod apply;
pub mod block_device;
pub mod checks;
pub mod data_dir;
pub mod facts;
pub mod profiles;
pub mod unit;

use std::path::PathBuf;
use std::process::ExitCode;

pub use checks::{Finding, Severity};
pub use facts::{Facts, Root};

use crate::broker::Config;

#[derive(Debug, clap::Subcommand)]
pub enum TuneCommand {
    /// Reports each OS setting that matters to the broker: current value, recommended value,
    /// why. Exits 1 only if one makes the broker unable to work as configured.
    Check {
        /// The broker's data directory (default: the config's broker.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Broker config to check against (default: the built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Shard count (default: the config's; 0 there means one per usable CPU).
        #[arg(long)]
        shards: Option<usize>,
        /// For tests: read /proc and /sys under this directory.
        #[arg(long, hide = true, default_value = "/")]
        root: PathBuf,
    },
    /// Applies a profile's OS settings (sysctls, transparent huge pages, the data disk's I/O
    /// scheduler, CPU governor), printing each change, and writes a systemd unit.
    Apply {
        /// throughput, latency or durability (`tuning/<name>.toml` and `<name>.os.toml`).
        #[arg(long)]
        profile: String,
        /// Print what would change, and the unit, without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Where to write the systemd unit.
        #[arg(long, default_value = "tuning/ringmq.service")]
        unit_path: PathBuf,
        /// Data directory whose disk gets the I/O scheduler (default: the profile's data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The ringmq binary the unit starts.
        #[arg(long, default_value = "/usr/local/bin/ringmq")]
        exec: PathBuf,
        /// The config path the unit passes to `ringmq broker --config`.
        #[arg(long, default_value = "/etc/ringmq/ringmq.toml")]
        config_path: PathBuf,
        /// For tests: read and write /proc and /sys under this directory.
        #[arg(long, hide = true, default_value = "/")]
        root: PathBuf,
    },
}

/// Runs a `ringmq tune` command; prints to stdout, errors to stderr.
pub fn run(command: TuneCommand) -> ExitCode {
    let result = match command {
        TuneCommand::Check { data_dir, config, shards, root } => {
            run_check(&Root::new(root), config, data_dir, shards)
        }
        TuneCommand::Apply { profile, dry_run, unit_path, data_dir, exec, config_path, root } => {
            let opts = unit::UnitOptions { exec, config_path };
            run_apply(&Root::new(root), &profile, dry_run, &unit_path, data_dir, &opts)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringmq tune: {e}");
            ExitCode::from(2)
        }
    }
}

/// The findings for the broker config `cfg` on the machine under `root`.
pub fn check_machine(root: &Root, cfg: &Config) -> Vec<Finding> {
    let facts = Facts::collect(root, &cfg.broker.data_dir);
    let mut findings = Vec::new();
    if let Err(e) = cfg.validate() {
        findings.push(Finding {
            severity: Severity::Error,
            setting: "broker config".into(),
            current: "invalid".into(),
            recommended: "valid".into(),
            why: e,
        });
    }
    findings.extend(checks::check(&facts, cfg));
    findings
}

/// The report `tune check` prints.
pub fn format_report(cfg: &Config, findings: &[Finding]) -> String {
    let mut out = format!(
        "ringmq tune check: data_dir {}, shards {}, io_mode {:?}, flush_mode {:?}\n\n",
        cfg.broker.data_dir.display(),
        match cfg.broker.shards {
            0 => "one per CPU".to_string(),
            n => n.to_string(),
        },
        cfg.storage.io_mode,
        cfg.storage.flush_mode
    )
    .to_lowercase();
    for f in findings {
        out.push_str(&format!(
            "{:<5} {}: {} (recommended: {})\n      {}\n",
            f.severity.to_string(),
            f.setting,
            f.current,
            f.recommended,
            f.why
        ));
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    out.push_str(&format!(
        "\n{} OK, {} INFO, {} WARN, {} ERROR\n",
        count(Severity::Ok),
        count(Severity::Info),
        count(Severity::Warn),
        count(Severity::Error)
    ));
    out
}

fn run_check(
    root: &Root,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    shards: Option<usize>,
) -> Result<ExitCode, String> {
    let mut cfg = match config {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        cfg.broker.data_dir = d;
    }
    if let Some(n) = shards {
        cfg.broker.shards = n;
    }
    let findings = check_machine(root, &cfg);
    print!("{}", format_report(&cfg, &findings));
    let hard_error = findings.iter().any(|f| f.severity == Severity::Error);
    Ok(if hard_error { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn run_apply(
    root: &Root,
    profile: &str,
    dry_run: bool,
    unit_path: &std::path::Path,
    data_dir: Option<PathBuf>,
    opts: &unit::UnitOptions,
) -> Result<ExitCode, String> {
    let profile = profiles::load(profile)?;
    let data_dir = data_dir.unwrap_or_else(|| profile.config.broker.data_dir.clone());
    let facts = Facts::collect(root, &data_dir);
    let steps = apply::plan(root, &facts, &profile.os);
    let mode = if dry_run { " (dry run: nothing is changed)" } else { "" };
    println!("ringmq tune apply: profile {}, data_dir {}{mode}", profile.name, data_dir.display());
    let outcomes = apply::execute(steps, dry_run);
    for o in &outcomes {
        println!("  {}", o.describe(dry_run));
    }
    println!(
        "  limits: LimitMEMLOCK=infinity, LimitNOFILE={} take effect through the systemd unit",
        unit::limit_nofile(&profile)
    );
    let text = unit::unit_text(&profile, opts);
    if dry_run {
        println!("would write the systemd unit {}:\n{text}", unit_path.display());
    } else {
        std::fs::write(unit_path, &text).map_err(|e| {
            format!(
                "cannot write the systemd unit {}: {e} (choose --unit-path)",
                unit_path.display()
            )
        })?;
        println!("wrote the systemd unit {}", unit_path.display());
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let cannot =
        outcomes.iter().filter(|o| matches!(o.step.action, apply::Action::Cannot(_))).count();
    let written = outcomes
        .iter()
        .filter(|o| o.step.action == apply::Action::Write && o.result.is_ok())
        .count();
    let verb = if dry_run { "to change" } else { "changed" };
    println!("{written} {verb}, {failed} failed, {cannot} not applicable here");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;
