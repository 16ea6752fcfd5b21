//! The rules of `ringmq tune check`: facts and a broker config in, findings out. No I/O.
//!
//! Each rule looks at one setting, says what it is, what ringmq recommends and why, and grades
//! it: OK (as recommended), INFO (worth knowing, nothing to fix, or the fact is unknown),
//! WARN (costs throughput, latency or safety; the broker still works) or ERROR (the broker
//! cannot work as configured: `tune check` then exits 1). The recommendations are the
//! constants below; the profiles in tuning/ apply values that pass them (a test holds them to
//! it).

use std::fmt;

use crate::broker::Config;
use crate::storage::{FlushMode, IoMode};

use super::block_device::BlockDevice;
use super::data_dir::ODirect;
use super::facts::{Fact, Facts, Limit};

mod cpu;
pub use cpu::GUEST_HALT_POLL_NS;
use cpu::{check_cpus, check_governor, check_halt_poll};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Info,
    Warn,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Ok => "OK",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub setting: String,
    pub current: String,
    pub recommended: String,
    pub why: String,
}

fn finding(
    severity: Severity,
    setting: impl Into<String>,
    current: impl Into<String>,
    recommended: impl Into<String>,
    why: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        setting: setting.into(),
        current: current.into(),
        recommended: recommended.into(),
        why: why.into(),
    }
}

/// An unknown fact: reported, never fatal.
fn unknown(setting: &str, recommended: impl Into<String>, reason: &str) -> Finding {
    finding(Severity::Info, setting, "unknown", recommended, format!("could not read it: {reason}"))
}

pub const SWAPPINESS_MAX: u64 = 10;
pub const DIRTY_BACKGROUND_RATIO_MAX: u64 = 5;
pub const DIRTY_RATIO_MAX: u64 = 20;
pub const DIRTY_EXPIRE_CENTISECS_MAX: u64 = 1000;
pub const DIRTY_WRITEBACK_CENTISECS_MAX: u64 = 100;
/// io_uring rings (glommio makes three per executor) count against RLIMIT_MEMLOCK on kernels
/// before 5.12; allowed for on top of each shard's DMA arena.
pub const RING_MEMLOCK_BYTES_PER_SHARD: u64 = 8 << 20;
/// Descriptors a shard needs besides connections: segment and index files, listeners,
/// eventfds of the shard-to-shard channels.
pub const FILES_PER_SHARD: u64 = 1024;
/// Descriptors of the process itself (config, metadata, stdio, logging).
pub const FILES_PER_PROCESS: u64 = 256;

/// The shard count the broker would run with here: the config's, or one per allowed CPU.
pub fn effective_shards(cfg: &Config, facts: &Facts) -> Fact<usize> {
    if cfg.broker.shards > 0 {
        Ok(cfg.broker.shards)
    } else if !cfg.broker.cpus.is_empty() {
        Ok(cfg.broker.cpus.len())
    } else {
        facts.cpus_allowed.as_ref().map(Vec::len).map_err(Clone::clone)
    }
}

/// Locked memory the broker can use: every shard's DMA arena registered with io_uring, plus rings.
pub fn memlock_need_bytes(cfg: &Config, shards: usize) -> u64 {
    shards as u64 * (cfg.shard_io_memory_bytes() as u64 + RING_MEMLOCK_BYTES_PER_SHARD)
}

/// Open files the broker can need: every shard full of connections, plus its files.
pub fn nofile_need(cfg: &Config, shards: usize) -> u64 {
    shards as u64 * (cfg.broker.max_connections_per_shard as u64 + FILES_PER_SHARD)
        + FILES_PER_PROCESS
}

pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

/// All findings for `facts` and the broker config `cfg`, in report order.
pub fn check(facts: &Facts, cfg: &Config) -> Vec<Finding> {
    let shards = effective_shards(cfg, facts);
    let mut out = Vec::new();
    out.push(check_io_uring(facts));
    out.push(check_memlock(facts, cfg, &shards));
    out.push(check_nofile(facts, cfg, &shards));
    out.extend(check_thp(facts));
    out.push(check_swappiness(facts));
    out.extend(check_dirty(facts, cfg));
    out.extend(check_filesystem(facts, cfg));
    out.push(check_disk_usage(facts, cfg));
    out.extend(check_disks(facts, cfg));
    out.push(check_governor(facts));
    out.push(check_halt_poll(facts));
    out.extend(check_cpus(facts, cfg, &shards));
    out
}

fn check_io_uring(facts: &Facts) -> Finding {
    let name = "kernel.io_uring_disabled";
    match &facts.io_uring_disabled {
        Err(e) => unknown(name, "0", e),
        Ok(None) => finding(
            Severity::Ok,
            name,
            "absent",
            "0",
            "io_uring is allowed (no switch on this kernel)",
        ),
        Ok(Some(0)) => finding(Severity::Ok, name, "0", "0", "io_uring is allowed"),
        Ok(Some(1)) => finding(
            Severity::Warn,
            name,
            "1",
            "0",
            "only members of the group in kernel.io_uring_group may create rings: run the broker \
             in that group, or it cannot start a shard",
        ),
        Ok(Some(v)) => finding(
            Severity::Error,
            name,
            v.to_string(),
            "0",
            "io_uring is disabled: every shard is an io_uring executor and cannot start",
        ),
    }
}

fn check_memlock(facts: &Facts, cfg: &Config, shards: &Fact<usize>) -> Finding {
    let name = "RLIMIT_MEMLOCK (ulimit -l)";
    let need = shards.as_ref().ok().map(|&s| memlock_need_bytes(cfg, s));
    let recommended = match need {
        Some(n) => format!("unlimited (at least {})", format_bytes(n)),
        None => "unlimited".into(),
    };
    let limit = match &facts.memlock {
        Err(e) => return unknown(name, recommended, e),
        Ok(Limit { soft, .. }) => *soft,
    };
    let current = limit.map_or_else(|| "unlimited".into(), format_bytes);
    let why_need = match (need, shards) {
        (Some(n), Ok(s)) => format!(
            "{s} shards x ({} DMA arena + {} io_uring rings) = {} of locked memory",
            format_bytes(cfg.shard_io_memory_bytes() as u64),
            format_bytes(RING_MEMLOCK_BYTES_PER_SHARD),
            format_bytes(n)
        ),
        _ => "the shard count is unknown".into(),
    };
    match (limit, need) {
        (None, _) => finding(Severity::Ok, name, current, recommended, why_need),
        (Some(l), Some(n)) if l >= n => finding(Severity::Ok, name, current, recommended, why_need),
        (Some(_), _) => finding(
            Severity::Warn,
            name,
            current,
            recommended,
            format!(
                "each shard registers its DMA buffer arena with io_uring, which locks it: \
                 {why_need}. Below that glommio falls back to unregistered buffers (pages are \
                 pinned per I/O, slower). Set LimitMEMLOCK=infinity in the systemd unit or \
                 `ulimit -l unlimited`"
            ),
        ),
    }
}

fn check_nofile(facts: &Facts, cfg: &Config, shards: &Fact<usize>) -> Finding {
    let name = "RLIMIT_NOFILE (ulimit -n)";
    let need = shards.as_ref().ok().map(|&s| nofile_need(cfg, s));
    let recommended =
        need.map_or_else(|| "unknown shard count".into(), |n| format!("at least {n}"));
    let soft = match &facts.nofile {
        Err(e) => return unknown(name, recommended, e),
        Ok(l) => l.soft,
    };
    let current = Limit::describe(soft);
    let why = match (need, shards) {
        (Some(_), Ok(s)) => format!(
            "{s} shards x (broker.max_connections_per_shard = {} + {FILES_PER_SHARD} segment, \
             index and channel files) + {FILES_PER_PROCESS}",
            cfg.broker.max_connections_per_shard
        ),
        _ => "the shard count is unknown".into(),
    };
    match (soft, need) {
        (None, _) => finding(Severity::Ok, name, current, recommended, why),
        (Some(l), Some(n)) if l >= n => finding(Severity::Ok, name, current, recommended, why),
        (Some(_), None) => finding(Severity::Info, name, current, recommended, why),
        (Some(_), Some(_)) => finding(
            Severity::Warn,
            name,
            current,
            recommended,
            format!(
                "{why}. With fewer, accepting a connection or opening a segment fails with \
                 EMFILE under load; set LimitNOFILE in the systemd unit"
            ),
        ),
    }
}

fn check_thp(facts: &Facts) -> Vec<Finding> {
    let rule = |name: &str, fact: &Fact<super::facts::Selection>, why_bad: &str| match fact {
        Err(e) => unknown(name, "madvise or never", e),
        Ok(s) if s.current == "always" => {
            finding(Severity::Warn, name, "always", "madvise or never", why_bad)
        }
        Ok(s) => finding(
            Severity::Ok,
            name,
            s.current.clone(),
            "madvise or never",
            "the broker does not ask for huge pages, so it gets none behind its back",
        ),
    };
    vec![
        rule(
            "transparent_hugepage/enabled",
            &facts.thp_enabled,
            "khugepaged collapses the shards' buffers and caches into huge pages in the \
             background and page faults may allocate 2 MiB at a time: latency spikes of \
             milliseconds and memory bloat for no gain (the broker reuses its buffers)",
        ),
        rule(
            "transparent_hugepage/defrag",
            &facts.thp_defrag,
            "a page fault may stall a shard in direct compaction until a huge page is free",
        ),
    ]
}

fn check_swappiness(facts: &Facts) -> Finding {
    let name = "vm.swappiness";
    let recommended = format!("<= {SWAPPINESS_MAX} (1)");
    let value = match &facts.swappiness {
        Err(e) => return unknown(name, recommended, e),
        Ok(v) => *v,
    };
    if matches!(facts.swap_total_bytes, Ok(0)) {
        return finding(
            Severity::Info,
            name,
            value.to_string(),
            recommended,
            "no swap is configured, so it does not matter now",
        );
    }
    let why = "the chunk cache and DMA arenas are anonymous memory; swapping them out stalls a \
               shard on a page-in in the middle of a request, while page cache is cheaper to drop";
    let severity = if value > SWAPPINESS_MAX { Severity::Warn } else { Severity::Ok };
    finding(severity, name, value.to_string(), recommended, why)
}

fn check_dirty(facts: &Facts, cfg: &Config) -> Vec<Finding> {
    let buffered = cfg.storage.io_mode == IoMode::Buffered;
    let mem = facts.mem_total_bytes.as_ref().ok().copied();
    let of_memory = |ratio: u64| {
        mem.map_or(String::new(), |m| format!(" ({} here)", format_bytes(m / 100 * ratio)))
    };
    let mut out = Vec::new();
    let mut rule = |name: &str,
                    fact: &Fact<u64>,
                    bytes_override: Option<&Fact<u64>>,
                    max: u64,
                    why: String| {
        let recommended = format!("<= {max}");
        let value = match fact {
            Err(e) => return out.push(unknown(name, recommended, e)),
            Ok(v) => *v,
        };
        if let Some(Ok(bytes)) = bytes_override {
            if *bytes > 0 {
                let current = format!("{value}, overridden by the _bytes sysctl = {bytes}");
                return out.push(finding(
                    Severity::Info,
                    name,
                    current,
                    recommended,
                    "a non-zero *_bytes sysctl replaces the ratio; judge that value against \
                     the data the broker writes between flushes",
                ));
            }
        }
        if !buffered {
            return out.push(finding(
                Severity::Info,
                name,
                value.to_string(),
                recommended,
                "matters only in storage.io_mode = buffered: O_DIRECT writes bypass the page cache",
            ));
        }
        let zero_writeback = name.ends_with("dirty_writeback_centisecs") && value == 0;
        let severity = if value > max || zero_writeback { Severity::Warn } else { Severity::Ok };
        out.push(finding(severity, name, value.to_string(), recommended, why));
    };
    let flush = match cfg.storage.flush_mode {
        FlushMode::Sync => "every produce's fdatasync".to_string(),
        FlushMode::Async => format!(
            "the flush every {} ms or {}",
            cfg.storage.flush_interval_ms,
            format_bytes(cfg.storage.flush_bytes)
        ),
    };
    let bg = facts.dirty_background_ratio.as_ref().ok().copied().unwrap_or(0);
    rule(
        "vm.dirty_background_ratio",
        &facts.dirty_background_ratio,
        Some(&facts.dirty_background_bytes),
        DIRTY_BACKGROUND_RATIO_MAX,
        format!(
            "in buffered mode appends land in the page cache; writeback starts only when this \
             share of memory{} is dirty, so {flush} then writes a large burst and its latency \
             spikes. Start writeback early",
            of_memory(bg)
        ),
    );
    let hard = facts.dirty_ratio.as_ref().ok().copied().unwrap_or(0);
    rule(
        "vm.dirty_ratio",
        &facts.dirty_ratio,
        Some(&facts.dirty_bytes),
        DIRTY_RATIO_MAX,
        format!(
            "at this share of memory{} dirty, every writer (a shard appending) is throttled \
             until writeback catches up; a high value lets a backlog grow that later stalls \
             shards for seconds",
            of_memory(hard)
        ),
    );
    rule(
        "vm.dirty_expire_centisecs",
        &facts.dirty_expire_centisecs,
        None,
        DIRTY_EXPIRE_CENTISECS_MAX,
        format!(
            "dirty pages older than this are written by the kernel's flusher threads; shorter \
             spreads the writes out so {flush} finds less left to write"
        ),
    );
    rule(
        "vm.dirty_writeback_centisecs",
        &facts.dirty_writeback_centisecs,
        None,
        DIRTY_WRITEBACK_CENTISECS_MAX,
        "how often the flusher threads wake to write expired pages; 0 turns periodic \
         writeback off and leaves everything to the broker's flushes"
            .to_string(),
    );
    out
}

/// How full the data filesystem is against `disk_max_used_ratio`: past it, retention deletes
/// the oldest segments whatever their age, so consumers behind lose messages.
fn check_disk_usage(facts: &Facts, cfg: &Config) -> Finding {
    let ratio = cfg.storage.disk_max_used_ratio;
    let name = "disk usage of the data filesystem";
    let recommended = format!("below storage.disk_max_used_ratio ({ratio})");
    let (used, total) = match &facts.data.disk_usage {
        Err(e) => return unknown(name, &recommended, e),
        Ok(u) => *u,
    };
    let fill = used as f64 / total.max(1) as f64;
    let current =
        format!("{:.1}% ({} of {})", fill * 100.0, format_bytes(used), format_bytes(total));
    let segment = cfg.storage.segment_size_bytes;
    let short = crate::storage::next_segment::ratio_short_of_a_segment(total, segment, ratio);
    let (severity, why) = if fill > ratio {
        (
            Severity::Warn,
            "over the ratio: retention deletes the oldest segments as soon as the broker runs,              younger than retention_hours too, and consumers that have not read them lose              those messages; free space, give the data directory its own filesystem, or raise              the ratio if other data fills this one"
                .to_owned(),
        )
    } else if let Some(fits) = short {
        (
            Severity::Warn,
            format!(
                "the ratio leaves {} free, less than one segment (segment_size_bytes, {}): the \
                 log can reach DISK_FULL for its next segment while retention, under the \
                 ratio, deletes nothing; set disk_max_used_ratio to at most {fits:.2} or lower \
                 segment_size_bytes",
                format_bytes((total as f64 * (1.0 - ratio)) as u64),
                format_bytes(segment)
            ),
        )
    } else if fill > ratio - 0.1 {
        (
            Severity::Info,
            format!(
                "within 10 points of the ratio: {} more and retention deletes segments younger                  than retention_hours",
                format_bytes(((ratio * total as f64) as u64).saturating_sub(used))
            ),
        )
    } else {
        (Severity::Ok, "retention deletes by age only".to_owned())
    };
    finding(severity, name, current, recommended, why)
}

fn check_filesystem(facts: &Facts, cfg: &Config) -> Vec<Finding> {
    let data = &facts.data;
    let place = match &data.probed {
        Ok(p) if *p == data.dir => format!("{}", p.display()),
        Ok(p) => format!("{} (nearest existing: {})", data.dir.display(), p.display()),
        Err(_) => data.dir.display().to_string(),
    };
    let direct = cfg.storage.io_mode == IoMode::Direct;
    let mut out = Vec::new();
    let fs_name = format!("filesystem of {place}");
    out.push(match &data.filesystem {
        Err(e) => unknown(&fs_name, "xfs or ext4", e),
        Ok(fs) => {
            let (severity, why) = match fs.name() {
                Some("xfs") | Some("ext4") => (
                    Severity::Ok,
                    "extent-based, O_DIRECT and fallocate work, concurrent direct writes",
                ),
                Some("btrfs") => (
                    Severity::Warn,
                    "copy-on-write: every overwrite of a preallocated segment goes elsewhere, \
                     fragmenting it and adding checksum work; use xfs or ext4, or `chattr +C` \
                     the empty data directory",
                ),
                Some("tmpfs") | Some("ramfs") => (
                    Severity::Warn,
                    "memory, not disk: nothing survives a reboot, so flush_mode promises nothing",
                ),
                Some("overlayfs") | Some("anonymous") => (
                    Severity::Warn,
                    "a container's layered filesystem: mount a volume on the data directory",
                ),
                Some("nfs") | Some("cifs") | Some("fuse") | Some("9p") | Some("ceph") => (
                    Severity::Warn,
                    "a network or userspace filesystem: fdatasync semantics and latency vary; \
                     use a local disk",
                ),
                _ => (Severity::Info, "not a filesystem ringmq is tested on (xfs, ext4)"),
            };
            finding(severity, fs_name, fs.describe(), "xfs or ext4", why)
        }
    });
    if matches!(&data.filesystem, Ok(fs) if fs.name() == Some("ext4")) {
        out.push(check_ext4_journal(&data.ext4_journal, &place));
    }
    let od_name = "O_DIRECT in the data directory";
    let io_mode = if direct { "direct" } else { "buffered" };
    out.push(match (&data.o_direct, direct) {
        (Ok(ODirect::Works), _) => {
            finding(Severity::Ok, od_name, "works", "works", format!("storage.io_mode = {io_mode}"))
        }
        (Ok(ODirect::Unsupported(e)), true) => finding(
            Severity::Error,
            od_name,
            "unsupported",
            "works",
            format!(
                "{e}: with storage.io_mode = direct every shard fails to open its log. Set \
                 storage.io_mode = buffered or put the data directory on xfs or ext4"
            ),
        ),
        (Ok(ODirect::Unsupported(e)), false) => finding(
            Severity::Info,
            od_name,
            "unsupported",
            "works",
            format!("{e}; storage.io_mode = buffered does not need it"),
        ),
        (Err(e), true) => finding(
            Severity::Warn,
            od_name,
            "unknown",
            "works",
            format!("could not test it ({e}); storage.io_mode = direct needs it"),
        ),
        (Err(e), false) => unknown(od_name, "works", e),
    });
    out
}

/// An ext4 data directory without a journal. Besides the fsck a crash then needs, ext4 will not
/// reuse a deleted inode for a while and scans past each one it finds: creating thousands of
/// index files soon after deleting thousands (a topic of 10,000 queues deleted, another
/// created) took a quarter of a core throughout 15 s benchmark runs (BENCHMARKS.md,
/// 2026-12-05).
fn check_ext4_journal(journal: &Fact<bool>, place: &str) -> Finding {
    let name = format!("ext4 journal of {place}");
    match journal {
        Ok(true) => finding(
            Severity::Ok,
            name,
            "present",
            "present",
            "file creations and deletions are journaled; a crash needs no fsck",
        ),
        Ok(false) => finding(
            Severity::Warn,
            name,
            "none",
            "present",
            "without a journal, ext4 does not reuse an inode for 60 s after its deletion (300 s \
             while its inode table block is unwritten) and scans past each such inode to create \
             a file: a topic of 10,000 queues created soon after another was deleted (10,000 \
             index files each) took a quarter of a core throughout 15 s benchmark runs, and \
             after a crash only fsck makes the filesystem consistent again. Add one with \
             `tune2fs -O has_journal <device>` on the unmounted filesystem",
        ),
        Err(e) => unknown(&name, "present", e),
    }
}

fn check_disks(facts: &Facts, cfg: &Config) -> Vec<Finding> {
    let devices = match &facts.data.devices {
        Err(e) => return vec![unknown("data disk", "a local NVMe or SSD", e)],
        Ok(d) => d,
    };
    let mut out = Vec::new();
    for d in devices {
        out.push(check_scheduler(d));
        out.push(check_write_cache(d, cfg));
        if let Some(file) = &d.backing_file {
            out.push(finding(
                Severity::Warn,
                format!("{} backing", d.name),
                format!("loop device over {file}"),
                "a real disk",
                "a file on another filesystem: two layers of caching and flushing",
            ));
        }
    }
    out
}

fn device_label(d: &BlockDevice) -> String {
    if d.via.is_empty() {
        d.name.clone()
    } else {
        format!("{} (via {})", d.name, d.via.join(", "))
    }
}

/// The scheduler ringmq recommends for a disk of this kind.
pub fn recommended_scheduler(rotational: bool) -> &'static str {
    if rotational {
        "mq-deadline"
    } else {
        "none"
    }
}

fn check_scheduler(d: &BlockDevice) -> Finding {
    let name = format!("{} queue/scheduler", device_label(d));
    let rotational = matches!(d.rotational, Ok(true));
    let recommended = recommended_scheduler(rotational);
    let s = match &d.scheduler {
        Err(e) => return unknown(&name, recommended, e),
        Ok(s) => s,
    };
    let current = s.current.clone();
    let (severity, why) = match (rotational, current.as_str()) {
        (_, c) if c == recommended => (
            Severity::Ok,
            if rotational {
                "a spinning disk: sorting writes by sector saves seeks"
            } else {
                "flash needs no reordering; none costs no CPU per I/O"
            },
        ),
        (false, "mq-deadline") | (false, "kyber") => (
            Severity::Info,
            "small CPU cost per I/O for no gain on flash; the commit log writes sequentially",
        ),
        (false, "bfq") => (
            Severity::Warn,
            "bfq's per-process fairness costs much CPU per I/O and throttles a busy writer",
        ),
        (true, "none") => {
            (Severity::Warn, "unsorted writes on a spinning disk: reads and flushes wait on seeks")
        }
        _ => (Severity::Info, "not a scheduler ringmq recommends for this kind of disk"),
    };
    let why = if s.available.len() <= 1 {
        "the device offers no choice".to_string()
    } else {
        why.to_string()
    };
    let severity = if s.available.len() <= 1 { Severity::Ok } else { severity };
    finding(severity, name, current, recommended, why)
}

fn check_write_cache(d: &BlockDevice, cfg: &Config) -> Finding {
    let name = format!("{} queue/write_cache", device_label(d));
    let sync = cfg.storage.flush_mode == FlushMode::Sync;
    match d.write_cache.as_deref() {
        Err(e) => unknown(&name, "as the hardware reports", e),
        Ok("write back") => finding(
            Severity::Info,
            name,
            "write back",
            "as the hardware reports",
            format!(
                "the drive has a volatile cache: each fdatasync also sends a cache flush, which \
                 makes it durable and adds the flush's latency to {}. Drives with power-loss \
                 protection can be set to write through to skip it; never do that to a drive \
                 without",
                if sync { "every SYNC_FLUSH produce" } else { "each periodic flush" }
            ),
        ),
        Ok("write through") => finding(
            Severity::Info,
            name,
            "write through",
            "as the hardware reports",
            "no cache flush is sent with fdatasync: right for drives without a volatile cache or \
             with power-loss protection; if it was set by hand on a drive with a volatile cache, \
             acknowledged data can be lost on power failure",
        ),
        Ok(other) => {
            finding(Severity::Info, name, other, "as the hardware reports", "unrecognised value")
        }
    }
}
