//! The JSON report of one run (what ran, where, on which revision, the results and the
//! per-second series), the final table, and `compare` of two reports.

use std::path::Path;

use ringmq::tune::block_device::split_dev;
use ringmq::tune::data_dir::ext4_journal;
use ringmq::tune::facts;
use serde::{Deserialize, Serialize};

use crate::runner::{Results, SeriesPoint};
use crate::workload::{ClientKind, Workload};

pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub model: String,
    pub size_bytes: u64,
    pub rotational: bool,
    pub scheduler: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub memory_bytes: u64,
    pub disks: Vec<Disk>,
    /// The filesystem and device holding the broker's data (spawned broker only).
    pub data_mount: String,
    /// The cpuidle governor ("menu", "teo", "haltpoll"; empty when unknown). How fast an idle
    /// CPU answers sets the floor of fixed-rate latency (BENCHMARKS.md, "The latency floor of
    /// this VM").
    #[serde(default)]
    pub cpuidle_governor: String,
    /// KVM guests with the haltpoll governor: how long an idle vCPU polls before it halts
    /// (`/sys/module/haltpoll/parameters/guest_halt_poll_ns`); `None` elsewhere.
    #[serde(default)]
    pub guest_halt_poll_ns: Option<u64>,
    /// Whether the data directory's ext4 filesystem has a journal (`None`: not ext4, unknown,
    /// or no spawned broker). Without one, creating thousands of queues within minutes of
    /// deleting as many is slow (BENCHMARKS.md, 2026-12-05): see [`data_dir_journal`].
    #[serde(default)]
    pub data_ext4_journal: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub address: String,
    pub spawned: bool,
    pub cpus: Vec<usize>,
    /// The config file the harness wrote (spawned broker only).
    pub config: String,
    /// `--replication`: none, async or sync. With replication, `config` is the master's and
    /// this the replica's (same machine, same disk).
    #[serde(default)]
    pub replication: String,
    #[serde(default)]
    pub replica_config: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub report_version: u32,
    pub started_unix_ms: u64,
    pub command: Vec<String>,
    pub git_revision: String,
    pub kernel: String,
    pub hardware: Hardware,
    pub bench_cpus: Vec<usize>,
    pub broker: BrokerInfo,
    pub workload: Workload,
    pub results: Results,
    pub series: Vec<SeriesPoint>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

pub fn hardware(data_dir: Option<&Path>) -> Hardware {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':'])))
        .unwrap_or("unknown")
        .to_owned();
    let logical_cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let mut disks = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "zram", "dm-"].iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let b = format!("/sys/block/{name}");
            disks.push(Disk {
                model: read(&format!("{b}/device/model")),
                size_bytes: read(&format!("{b}/size")).parse::<u64>().unwrap_or(0) * 512,
                rotational: read(&format!("{b}/queue/rotational")) == "1",
                scheduler: read(&format!("{b}/queue/scheduler")),
                name,
            });
        }
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    let data_mount = data_dir.map(mount_of).unwrap_or_default();
    Hardware {
        cpu_model,
        logical_cpus,
        memory_bytes,
        disks,
        data_mount,
        cpuidle_governor: read(facts::CPUIDLE_GOVERNOR),
        guest_halt_poll_ns: facts::read_u64_if_present(Path::new(facts::GUEST_HALT_POLL_NS))
            .ok()
            .flatten(),
        data_ext4_journal: data_dir.and_then(data_dir_journal),
    }
}

/// Whether `dir` lies on an ext4 filesystem with a journal (`ringmq tune check` reads the same);
/// `None` when it is not ext4 or cannot be told.
pub fn data_dir_journal(dir: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    ext4_journal(&facts::Root::real(), split_dev(dev)).ok()
}

/// "device on mountpoint type fstype (options)" of the longest mount containing `path`.
fn mount_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = read("/proc/mounts");
    let mut best: Option<(usize, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || !path.starts_with(f[1]) {
            continue;
        }
        if best.as_ref().map_or(true, |(n, _)| f[1].len() > *n) {
            best = Some((f[1].len(), format!("{} on {} type {} ({})", f[0], f[1], f[2], f[3])));
        }
    }
    best.map(|b| b.1).unwrap_or_default()
}

pub fn kernel() -> String {
    let release = read("/proc/sys/kernel/osrelease");
    let version = read("/proc/sys/kernel/version");
    format!("Linux {release} {version}")
}

/// `git rev-parse HEAD` of the working directory, `+dirty` when it has changes. The report's
/// `git_revision` is the broker's own (from its ready line); this only describes an external
/// broker's surroundings.
pub fn git_revision() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}+dirty")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

pub fn write(report: &Report, path: &Path) -> Result<(), String> {
    write_json(report, path)
}

/// Any report (one run, a library/raw comparison, a scale table) as pretty JSON at `path`.
pub fn write_json<T: Serialize>(report: &T, path: &Path) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn load(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a report: {e}", path.display()))
}

/// A few of the broker's counters over a run, in words (all of them are in the JSON).
fn counters_line(c: &crate::counters::Counters) -> String {
    let get = |k: &str| c.get(k).copied().unwrap_or(0.0);
    let mb = |k: &str| fmt(get(k) / 1e6);
    format!(
        "fetched {} MB, read ahead {} MB (served {} MB), chunk cache hits {} misses {}, \
         fsyncs {} ({} s), index room waits {} ({} series in the JSON)",
        mb("ringmq_fetch_bytes_total"),
        mb("ringmq_prefetch_bytes_total"),
        mb("ringmq_prefetch_served_bytes_total"),
        get("ringmq_chunk_cache_hits_total"),
        get("ringmq_chunk_cache_misses_total"),
        get("ringmq_fsync_latency_seconds_count"),
        fmt(get("ringmq_fsync_latency_seconds_sum")),
        get("ringmq_index_room_waits_total"),
        c.len()
    )
}

/// The headline numbers, in display order: (name, value).
pub fn metrics(r: &Results) -> Vec<(&'static str, f64)> {
    let mut m = vec![
        ("produce msg/s", r.produce_msgs_per_s),
        ("produce MB/s", r.produce_bytes_per_s / 1e6),
        ("consume msg/s", r.consume_msgs_per_s),
        ("consume MB/s", r.consume_bytes_per_s / 1e6),
    ];
    for (name, l) in
        [("ack", &r.ack_latency), ("e2e", &r.e2e_latency), ("pub delay", &r.publish_delay)]
    {
        if l.count == 0 {
            continue;
        }
        let rows: [(&'static str, f64); 6] = match name {
            "ack" => [
                ("ack p50 us", l.p50_us),
                ("ack p90 us", l.p90_us),
                ("ack p99 us", l.p99_us),
                ("ack p99.9 us", l.p99_9_us),
                ("ack p99.99 us", l.p99_99_us),
                ("ack max us", l.max_us),
            ],
            "e2e" => [
                ("e2e p50 us", l.p50_us),
                ("e2e p90 us", l.p90_us),
                ("e2e p99 us", l.p99_us),
                ("e2e p99.9 us", l.p99_9_us),
                ("e2e p99.99 us", l.p99_99_us),
                ("e2e max us", l.max_us),
            ],
            _ => [
                ("pub delay p50 us", l.p50_us),
                ("pub delay p90 us", l.p90_us),
                ("pub delay p99 us", l.p99_us),
                ("pub delay p99.9 us", l.p99_9_us),
                ("pub delay p99.99 us", l.p99_99_us),
                ("pub delay max us", l.max_us),
            ],
        };
        m.extend(rows);
    }
    if let Some(b) = &r.backlog {
        m.push(("backlog build MB/s", b.build_bytes_per_s / 1e6));
        m.push(("backlog drain MB/s", b.drain_bytes_per_s / 1e6));
        m.push(("backlog drain msg/s", b.drain_msgs_per_s));
    }
    m
}

pub fn table(report: &Report) -> String {
    let r = &report.results;
    let mut out = format!(
        "workload {} ({} s measured), {} sent, {} acked, {} failed, {} consumed ({} distinct, {} \
         duplicates, {} missing, {} order violations)\n",
        report.workload.name,
        fmt(r.measured_s),
        r.sent,
        r.acked,
        r.failed,
        r.consumed,
        r.verify.unique,
        r.verify.duplicates,
        r.missing,
        r.verify.order_violations
    );
    for (name, v) in metrics(r) {
        out.push_str(&format!("  {name:<22} {:>14}\n", fmt(v)));
    }
    if let Some(l) = &r.replication_lag {
        out.push_str(&format!(
            "  replication lag bytes  p50 {} p99 {} max {} mean {} ({} samples every {} ms, {} \
             failed); time behind (est.) p50 {} ms p99 {} ms\n",
            l.lag_bytes_p50,
            l.lag_bytes_p99,
            l.lag_bytes_max,
            fmt(l.lag_bytes_mean),
            l.samples,
            l.interval_ms,
            l.failed_samples,
            fmt(l.est_time_behind_ms_p50),
            fmt(l.est_time_behind_ms_p99)
        ));
    }
    if let Some(c) = &r.broker_counters {
        out.push_str(&format!("  broker counters        {}\n", counters_line(c)));
    }
    if let Some(h) = &r.host_cpu {
        out.push_str(&format!("  host CPUs              {}\n", crate::host_cpu::line(h)));
    }
    if r.counts_ok {
        out.push_str("  counts: OK\n");
    } else {
        for p in &r.problems {
            out.push_str(&format!("  COUNT PROBLEM: {p}\n"));
        }
    }
    for e in &r.errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}

pub fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// How the machine's idle CPUs wake: the cpuidle governor, and haltpoll's polling time
/// ("haltpoll 200us").
fn cpu_idle(h: &Hardware) -> String {
    match (h.cpuidle_governor.as_str(), h.guest_halt_poll_ns) {
        ("", None) => "unknown".into(),
        (g, Some(ns)) => format!("{g} {}us", ns / 1000),
        (g, None) => g.into(),
    }
}

/// Side by side: every metric of `a` and `b` and the change in percent (and the machines'
/// idle settings when they differ).
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = format!(
        "{:<22} {:>14} {:>14} {:>9}\n{:<22} {:>14} {:>14}\n",
        "", "A", "B", "change", "workload", a.workload.name, b.workload.name
    );
    let short = |s: &str| s.chars().take(12).collect::<String>();
    out.push_str(&format!(
        "{:<22} {:>14} {:>14}\n",
        "revision",
        short(&a.git_revision),
        short(&b.git_revision)
    ));
    let (idle_a, idle_b) = (cpu_idle(&a.hardware), cpu_idle(&b.hardware));
    if idle_a != idle_b {
        // Fixed-rate latency depends on it more than on most code changes (BENCHMARKS.md).
        out.push_str(&format!("{:<22} {idle_a:>14} {idle_b:>14}\n", "cpu idle"));
    }
    let mb = metrics(&b.results);
    for (name, va) in metrics(&a.results) {
        let vb = mb.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let (vb_s, change) = match vb {
            Some(vb) if va != 0.0 => (fmt(vb), format!("{:+.1}%", (vb - va) / va * 100.0)),
            Some(vb) => (fmt(vb), String::new()),
            None => ("-".into(), String::new()),
        };
        out.push_str(&format!("{name:<22} {:>14} {vb_s:>14} {change:>9}\n", fmt(va)));
    }
    out.push_str(&format!(
        "{:<22} {:>14} {:>14}\n",
        "counts ok", a.results.counts_ok, b.results.counts_ok
    ));
    out
}

/// The run's label: the `--set` overrides (and `--producers`/`--consumers`) of the command that
/// produced `r`, joined; for a run of a multi-run session (`--compare-raw`, `scale`) also the
/// client and thread counts that tell its runs apart.
pub fn overrides(r: &Report) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut args = r.command.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--set" => out.extend(args.next().cloned()),
            "--producers" | "--consumers" => {
                if let Some(v) = args.next() {
                    out.push(format!("{}={v}", &a[2..]));
                }
            }
            _ => out.extend(a.strip_prefix("--set=").map(str::to_owned)),
        }
    }
    let multi = r.command.iter().any(|a| a == "--compare-raw")
        || r.command.get(1).is_some_and(|a| a == "scale");
    if multi {
        let client = match r.workload.client {
            ClientKind::Library => "library",
            ClientKind::Raw => "raw",
        };
        for part in [
            format!("client={client}"),
            format!("producers={}", r.workload.producers),
            format!("consumers={}", r.workload.consumers),
        ] {
            let key = part.split('=').next().unwrap_or_default();
            if !out.iter().any(|o| o.split('=').next() == Some(key)) {
                out.push(part);
            }
        }
    }
    out.join(" ")
}

/// Every single run's report in the file at `path`: a run's report, both runs of a
/// `--compare-raw` report, or every run of a `scale` report.
pub fn load_runs(path: &Path) -> Result<Vec<Report>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |e: serde_json::Error| format!("{} is not a report: {e}", path.display());
    let v: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    match v.get("kind").and_then(|k| k.as_str()) {
        Some(crate::comparison::KIND) => {
            let c: crate::comparison::RawComparison = serde_json::from_value(v).map_err(bad)?;
            Ok(vec![c.library, c.raw])
        }
        Some(crate::scale::KIND) => {
            let s: crate::scale::ScaleReport = serde_json::from_value(v).map_err(bad)?;
            Ok(s.runs)
        }
        _ => Ok(vec![serde_json::from_value(v).map_err(bad)?]),
    }
}

/// One Markdown table row per report, reports with the same workload and overrides grouped,
/// each metric as the median over the group (the runs are listed in the last column).
pub fn summary(reports: &[Report]) -> String {
    let mut groups: Vec<(String, String, Vec<&Report>)> = Vec::new();
    for r in reports {
        let label = overrides(r);
        match groups.iter_mut().find(|(n, l, _)| *n == r.workload.name && *l == label) {
            Some(g) => g.2.push(r),
            None => groups.push((r.workload.name.clone(), label, vec![r])),
        }
    }
    let mut out = String::from(
        "| workload | overrides | runs | produce MB/s | produce msg/s | consume MB/s | ack p50 / p99 / \
         p99.9 / max (ms) | e2e p99 (ms) | publish delay p99 (ms) | host steal % / blocks | \
         counts |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, label, rs) in groups {
        let med = |f: &dyn Fn(&Results) -> f64| {
            let mut v: Vec<f64> = rs.iter().map(|r| f(&r.results)).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        let backlog = rs[0].results.backlog.is_some();
        let (produce, consume) = if backlog {
            (
                med(&|r| r.backlog.as_ref().map_or(0.0, |b| b.build_bytes_per_s)),
                med(&|r| r.backlog.as_ref().map_or(0.0, |b| b.drain_bytes_per_s)),
            )
        } else {
            (med(&|r| r.produce_bytes_per_s), med(&|r| r.consume_bytes_per_s))
        };
        let msgs = if backlog {
            med(&|r| r.backlog.as_ref().map_or(0.0, |b| b.messages as f64 / b.build_s))
        } else {
            med(&|r| r.produce_msgs_per_s)
        };
        let ms = |v: f64| format!("{:.2}", v / 1000.0);
        let per_run: Vec<String> = rs
            .iter()
            .map(|r| {
                let b = r.results.backlog.as_ref();
                format!(
                    "{:.0}",
                    b.map_or(r.results.produce_bytes_per_s, |b| b.drain_bytes_per_s) / 1e6
                )
            })
            .collect();
        // Per run: the most any CPU lost to the host (percent of the window) and the steal
        // blocks (crate::host_cpu).
        let steal: Vec<String> = rs
            .iter()
            .map(|r| match &r.results.host_cpu {
                Some(h) => format!(
                    "{:.0} / {}",
                    h.cpus.iter().map(|c| c.steal_pct).fold(0.0, f64::max),
                    h.steal_blocks
                ),
                None => "-".into(),
            })
            .collect();
        out.push_str(&format!(
            "| {name} | {label} | {} ({} MB/s) | {:.0} | {:.0} | {:.0} | {} / {} / {} / {} | {} | {} | {} | {} |\n",
            rs.len(),
            per_run.join(", "),
            produce / 1e6,
            msgs,
            consume / 1e6,
            ms(med(&|r| r.ack_latency.p50_us)),
            ms(med(&|r| r.ack_latency.p99_us)),
            ms(med(&|r| r.ack_latency.p99_9_us)),
            ms(med(&|r| r.ack_latency.max_us)),
            ms(med(&|r| r.e2e_latency.p99_us)),
            ms(med(&|r| r.publish_delay.p99_us)),
            steal.join(", "),
            if rs.iter().all(|r| r.results.counts_ok) { "OK" } else { "**FAILED**" },
        ));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::LatencySummary;

    pub(crate) fn report(rate: f64) -> Report {
        let w = Workload::parse(
            "name = \"t\"\ntopics = 1\nqueues_per_topic = 1\nmessage_size_bytes = 64\n\
             producers = 1\nconsumers = 0\nduration_s = 1\n",
            &[],
        )
        .unwrap();
        Report {
            report_version: REPORT_VERSION,
            started_unix_ms: 1,
            command: vec!["ringmq-bench".into(), "run".into()],
            git_revision: "abc".into(),
            kernel: kernel(),
            hardware: hardware(Some(Path::new("/"))),
            bench_cpus: vec![1],
            broker: BrokerInfo {
                address: "127.0.0.1:1".into(),
                spawned: true,
                cpus: vec![0],
                config: String::new(),
                replication: "none".into(),
                replica_config: String::new(),
            },
            workload: w,
            results: Results {
                produce_msgs_per_s: rate,
                ack_latency: LatencySummary { count: 5, p99_us: 100.0, ..Default::default() },
                counts_ok: true,
                ..Default::default()
            },
            series: vec![SeriesPoint { t_s: 1.0, acked_per_s: rate, ..Default::default() }],
        }
    }

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/r.json");
        write(&report(1000.0), &path).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.results.produce_msgs_per_s, 1000.0);
        assert_eq!(back.series.len(), 1);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for k in ["hardware", "kernel", "git_revision", "command", "workload", "results", "series"]
        {
            assert!(v.get(k).is_some(), "no {k}");
        }
        assert!(v["hardware"]["logical_cpus"].as_u64().unwrap() >= 1);
        assert!(load(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn compare_shows_the_change() {
        let c = compare(&report(1000.0), &report(1500.0));
        let line = c.lines().find(|l| l.starts_with("produce msg/s")).unwrap();
        assert!(line.contains("+50.0%"), "{c}");
        assert!(c.contains("ack p99 us"), "{c}");
        assert!(!c.contains("cpu idle"), "same machine: {c}");
        assert!(table(&report(1.0)).contains("counts: OK"));

        // Runs on differently idling machines say so.
        let (mut a, mut b) = (report(1000.0), report(1000.0));
        a.hardware.cpuidle_governor = "haltpoll".into();
        a.hardware.guest_halt_poll_ns = Some(0);
        b.hardware.cpuidle_governor = "haltpoll".into();
        b.hardware.guest_halt_poll_ns = Some(200_000);
        let c = compare(&a, &b);
        let line = c.lines().find(|l| l.starts_with("cpu idle")).expect("an idle line");
        assert!(line.contains("haltpoll 0us") && line.contains("haltpoll 200us"), "{c}");
    }

    #[test]
    fn reports_from_before_the_idle_fields_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        let mut v = serde_json::to_value(report(1.0)).unwrap();
        let hw = v["hardware"].as_object_mut().unwrap();
        hw.remove("cpuidle_governor");
        hw.remove("guest_halt_poll_ns");
        std::fs::write(&path, v.to_string()).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(cpu_idle(&back.hardware), "unknown");
    }

    #[test]
    fn summary_reads_compare_raw_and_scale_files_as_their_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut lib = report(700.0);
        lib.command = ["ringmq-bench", "run", "w.toml", "--compare-raw", "--producers", "2"]
            .map(String::from)
            .to_vec();
        lib.workload.producers = 2;
        let mut raw = lib.clone();
        raw.workload.client = ClientKind::Raw;
        raw.results.produce_msgs_per_s = 1000.0;
        let pair = dir.path().join("pair.json");
        crate::comparison::write(&crate::comparison::compare(lib.clone(), raw), &pair).unwrap();
        let mut one = report(5.0);
        one.command = ["ringmq-bench", "scale", "w.toml"].map(String::from).to_vec();
        let w = one.workload.clone();
        let s = crate::scale::report(&w, crate::scale::Vary::Both, vec![1], vec![(1, one)]);
        let scaled = dir.path().join("scale.json");
        write_json(&s, &scaled).unwrap();
        let single = dir.path().join("single.json");
        write(&report(9.0), &single).unwrap();
        let runs: Vec<Report> =
            [&pair, &scaled, &single].iter().flat_map(|p| load_runs(p).unwrap()).collect();
        assert_eq!(runs.len(), 4);
        // The two runs of a comparison are told apart by their client.
        assert_eq!(overrides(&runs[0]), "producers=2 client=library consumers=0");
        assert_eq!(overrides(&runs[1]), "producers=2 client=raw consumers=0");
        let table = summary(&runs);
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| t ")).collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(rows[1].contains("client=raw") && rows[1].contains("| 1000 |"), "{table}");
        assert!(load_runs(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn summary_groups_runs_and_takes_medians() {
        let mut a = report(1000.0);
        a.results.produce_bytes_per_s = 1e9;
        a.command.extend(["--set".into(), "client=raw".into()]);
        let mut b = a.clone();
        b.results.produce_bytes_per_s = 3e9;
        let c = report(5.0);
        let s = summary(&[a, b, c]);
        let rows: Vec<&str> = s.lines().filter(|l| l.starts_with("| t ")).collect();
        assert_eq!(rows.len(), 2, "{s}");
        assert!(rows[0].contains("client=raw") && rows[0].contains("| 2000 |"), "{s}");
    }

    #[test]
    fn the_host_s_steal_shows_per_run_in_the_table_and_the_summary() {
        use crate::host_cpu::{CpuShare, HostCpuSummary};
        let mut a = report(1000.0);
        a.results.host_cpu = Some(HostCpuSummary {
            cpus: vec![
                CpuShare { cpu: 0, busy_pct: 80.0, steal_pct: 9.4 },
                CpuShare { cpu: 1, busy_pct: 70.0, steal_pct: 11.2 },
            ],
            steal_blocks: 2,
            longest_steal_ms: 100.0,
        });
        let b = report(1000.0);
        let s = summary(&[a.clone(), b]);
        let row = s.lines().find(|l| l.starts_with("| t ")).expect("a row");
        assert!(row.contains("| 11 / 2, - |"), "{s}");
        let t = table(&a);
        assert!(
            t.contains("host CPUs              cpu0 busy 80% steal 9%, cpu1 busy 70% steal 11%; 2 steal blocks"),
            "{t}"
        );
    }
}
