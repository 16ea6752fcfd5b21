//! The facts `ringmq tune` judges: what the kernel says under /proc and /sys, read as text.
//!
//! Every path is read under a [`Root`] so tests hand in a fake tree (a tempdir that holds
//! `proc/...` and `sys/...`); the real command uses `/`. Each fact is a [`Fact`]: the value, or
//! why it is unknown (file missing, unreadable, unparsable). Reading never fails as a whole and
//! never panics: an odd kernel or a container without /sys yields unknown facts, which the
//! checks report as such. Nothing here writes.
//!
//! The data directory's facts (filesystem, O_DIRECT, backing disk) are in
//! [`super::data_dir`] and [`super::block_device`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::data_dir::DataDirFacts;

/// A fact, or the reason it could not be read.
pub type Fact<T> = Result<T, String>;

/// The filesystem root under which /proc and /sys are read (and, by `apply`, written).
/// `/` on a real machine; a tempdir with a fake tree in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root(path.into())
    }

    /// The machine's own `/`.
    pub fn real() -> Root {
        Root(PathBuf::from("/"))
    }

    /// `absolute` (e.g. "/proc/sys/vm/swappiness") under this root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.0.join(absolute.trim_start_matches('/'))
    }
}

/// Reads a small text file, trimmed; the error says which file and why.
pub fn read_text(path: &Path) -> Fact<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Reads a file holding one unsigned integer (a sysctl).
pub fn read_u64(path: &Path) -> Fact<u64> {
    let text = read_text(path)?;
    text.parse().map_err(|_| format!("{} holds {text:?}, not a number", path.display()))
}

/// A number in a file this kernel may not have (a sysctl added later, a module's parameter):
/// `None` when the file does not exist.
pub fn read_u64_if_present(path: &Path) -> Fact<Option<u64>> {
    if path.exists() {
        read_u64(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A resource limit; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl Limit {
    pub fn describe(value: Option<u64>) -> String {
        value.map_or_else(|| "unlimited".into(), |v| v.to_string())
    }
}

/// Finds the limit named `name` ("Max locked memory") in the text of `/proc/<pid>/limits`.
pub fn parse_limit(limits: &str, name: &str) -> Fact<Limit> {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .ok_or_else(|| format!("no {name:?} line in the limits file"))?;
    let mut fields = line[name.len()..].split_whitespace();
    let mut value = |which: &str| -> Fact<Option<u64>> {
        match fields.next() {
            Some("unlimited") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}: {which} limit {v:?} is not a number")),
            None => Err(format!("{name}: no {which} limit")),
        }
    };
    let soft = value("soft")?;
    let hard = value("hard")?;
    Ok(Limit { soft, hard })
}

/// A sysfs choice file such as `always [madvise] never`: the bracketed entry is the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub current: String,
    pub available: Vec<String>,
}

pub fn parse_selection(text: &str) -> Fact<Selection> {
    let mut current = None;
    let mut available = Vec::new();
    for word in text.split_whitespace() {
        match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(w) => {
                current = Some(w.to_string());
                available.push(w.to_string());
            }
            None => available.push(word.to_string()),
        }
    }
    match (current, available.len()) {
        (Some(current), _) => Ok(Selection { current, available }),
        // A file with a single entry and no brackets ("none") has that entry selected.
        (None, 1) => Ok(Selection { current: available[0].clone(), available }),
        _ => Err(format!("no [selected] entry in {text:?}")),
    }
}

/// Parses a kernel CPU list such as "0-3,8,10-11".
pub fn parse_cpu_list(text: &str) -> Fact<Vec<usize>> {
    // Bound the expansion: a corrupt "0-4000000000" must not allocate the world.
    const MAX_CPUS: usize = 1 << 16;
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {text:?}");
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let c = part.parse::<usize>().map_err(|_| bad())?;
                (c, c)
            }
        };
        if lo > hi || hi >= MAX_CPUS {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// One NUMA node and its CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    pub id: usize,
    pub cpus: Vec<usize>,
}

/// Everything `tune check` judges.
#[derive(Debug, Clone)]
pub struct Facts {
    /// RLIMIT_MEMLOCK of this process (what a broker started the same way gets).
    pub memlock: Fact<Limit>,
    /// RLIMIT_NOFILE of this process.
    pub nofile: Fact<Limit>,
    /// kernel.io_uring_disabled: 0 allowed, 1 only for io_uring_group, 2 disabled. Absent on
    /// kernels before 6.6 (then io_uring is allowed).
    pub io_uring_disabled: Fact<Option<u64>>,
    pub thp_enabled: Fact<Selection>,
    pub thp_defrag: Fact<Selection>,
    pub swappiness: Fact<u64>,
    pub dirty_ratio: Fact<u64>,
    pub dirty_background_ratio: Fact<u64>,
    /// Non-zero dirty_bytes / dirty_background_bytes replace the ratios.
    pub dirty_bytes: Fact<u64>,
    pub dirty_background_bytes: Fact<u64>,
    pub dirty_expire_centisecs: Fact<u64>,
    pub dirty_writeback_centisecs: Fact<u64>,
    pub mem_total_bytes: Fact<u64>,
    pub swap_total_bytes: Fact<u64>,
    pub cpus_online: Fact<Vec<usize>>,
    /// The CPUs this process may run on (Cpus_allowed_list); the broker's default shard count.
    pub cpus_allowed: Fact<Vec<usize>>,
    /// Governor name -> CPUs using it. Unknown when no CPU has cpufreq (VMs, some drivers).
    pub governors: Fact<BTreeMap<String, Vec<usize>>>,
    /// scaling_available_governors of the first online CPU with cpufreq.
    pub governors_available: Fact<Vec<String>>,
    pub numa_nodes: Fact<Vec<NumaNode>>,
    /// The cpuidle governor in use ("menu", "teo", "haltpoll", ...).
    pub cpuidle_governor: Fact<String>,
    /// The haltpoll cpuidle governor's guest_halt_poll_ns: how long an idle vCPU of a KVM guest
    /// polls before it halts. `None` when this kernel has no haltpoll governor (not a KVM
    /// guest, or one built without it).
    pub guest_halt_poll_ns: Fact<Option<u64>>,
    pub data: DataDirFacts,
}

pub const SYSCTL_SWAPPINESS: &str = "/proc/sys/vm/swappiness";
pub const SYSCTL_DIRTY_RATIO: &str = "/proc/sys/vm/dirty_ratio";
pub const SYSCTL_DIRTY_BACKGROUND_RATIO: &str = "/proc/sys/vm/dirty_background_ratio";
pub const SYSCTL_DIRTY_BYTES: &str = "/proc/sys/vm/dirty_bytes";
pub const SYSCTL_DIRTY_BACKGROUND_BYTES: &str = "/proc/sys/vm/dirty_background_bytes";
pub const SYSCTL_DIRTY_EXPIRE: &str = "/proc/sys/vm/dirty_expire_centisecs";
pub const SYSCTL_DIRTY_WRITEBACK: &str = "/proc/sys/vm/dirty_writeback_centisecs";
pub const SYSCTL_IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";
pub const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
pub const THP_DEFRAG: &str = "/sys/kernel/mm/transparent_hugepage/defrag";
pub const CPU_DIR: &str = "/sys/devices/system/cpu";
pub const CPUIDLE_GOVERNOR: &str = "/sys/devices/system/cpu/cpuidle/current_governor";
pub const GUEST_HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
pub const NODE_DIR: &str = "/sys/devices/system/node";

/// The path of CPU `cpu`'s scaling governor.
pub fn governor_path(cpu: usize) -> String {
    format!("{CPU_DIR}/cpu{cpu}/cpufreq/scaling_governor")
}

impl Facts {
    /// Reads every fact under `root`; `data_dir` is the broker's data directory (a real path).
    pub fn collect(root: &Root, data_dir: &Path) -> Facts {
        let limits = read_text(&root.path("/proc/self/limits"));
        let limit = |name: &str| limits.clone().and_then(|text| parse_limit(&text, name));
        let sysctl = |p: &str| read_u64(&root.path(p));
        let meminfo = read_text(&root.path("/proc/meminfo"));
        let mem = |name: &str| meminfo.clone().and_then(|text| parse_meminfo_bytes(&text, name));
        let cpus_online =
            read_text(&root.path(&format!("{CPU_DIR}/online"))).and_then(|t| parse_cpu_list(&t));
        let cpus_allowed = read_text(&root.path("/proc/self/status")).and_then(|text| {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .ok_or("no Cpus_allowed_list in /proc/self/status")?;
            parse_cpu_list(line)
        });
        let governors = read_governors(root, &cpus_online);
        Facts {
            memlock: limit("Max locked memory"),
            nofile: limit("Max open files"),
            io_uring_disabled: read_u64_if_present(&root.path(SYSCTL_IO_URING_DISABLED)),
            thp_enabled: read_text(&root.path(THP_ENABLED)).and_then(|t| parse_selection(&t)),
            thp_defrag: read_text(&root.path(THP_DEFRAG)).and_then(|t| parse_selection(&t)),
            swappiness: sysctl(SYSCTL_SWAPPINESS),
            dirty_ratio: sysctl(SYSCTL_DIRTY_RATIO),
            dirty_background_ratio: sysctl(SYSCTL_DIRTY_BACKGROUND_RATIO),
            dirty_bytes: sysctl(SYSCTL_DIRTY_BYTES),
            dirty_background_bytes: sysctl(SYSCTL_DIRTY_BACKGROUND_BYTES),
            dirty_expire_centisecs: sysctl(SYSCTL_DIRTY_EXPIRE),
            dirty_writeback_centisecs: sysctl(SYSCTL_DIRTY_WRITEBACK),
            mem_total_bytes: mem("MemTotal"),
            swap_total_bytes: mem("SwapTotal"),
            cpus_online,
            cpus_allowed,
            governors_available: read_available_governors(root, &governors),
            governors,
            numa_nodes: read_numa_nodes(root),
            cpuidle_governor: read_text(&root.path(CPUIDLE_GOVERNOR)),
            guest_halt_poll_ns: read_u64_if_present(&root.path(GUEST_HALT_POLL_NS)),
            data: DataDirFacts::collect(root, data_dir),
        }
    }
}

/// A "Name:   123 kB" line of /proc/meminfo, in bytes.
pub fn parse_meminfo_bytes(meminfo: &str, name: &str) -> Fact<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .ok_or_else(|| format!("no {name} in /proc/meminfo"))?;
    let mut words = line.split_whitespace();
    let value: u64 = words
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("bad {name} line in /proc/meminfo"))?;
    match words.next() {
        Some("kB") => Ok(value.saturating_mul(1024)),
        None => Ok(value),
        Some(unit) => Err(format!("unknown unit {unit:?} for {name} in /proc/meminfo")),
    }
}

fn read_governors(root: &Root, cpus: &Fact<Vec<usize>>) -> Fact<BTreeMap<String, Vec<usize>>> {
    let cpus = cpus.as_ref().map_err(|e| format!("CPUs unknown: {e}"))?;
    let mut by_governor: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut unreadable = None;
    for &cpu in cpus {
        let path = root.path(&governor_path(cpu));
        if !path.exists() {
            continue;
        }
        match read_text(&path) {
            Ok(g) => by_governor.entry(g).or_default().push(cpu),
            Err(e) => unreadable = Some(e),
        }
    }
    if by_governor.is_empty() {
        return Err(unreadable.unwrap_or_else(|| {
            "no CPU has cpufreq (a virtual machine or a fixed-frequency CPU: nothing to tune)"
                .into()
        }));
    }
    Ok(by_governor)
}

fn read_available_governors(
    root: &Root,
    governors: &Fact<BTreeMap<String, Vec<usize>>>,
) -> Fact<Vec<String>> {
    let governors = governors.as_ref().map_err(Clone::clone)?;
    let cpu = governors.values().flatten().min().ok_or("no CPU has cpufreq")?;
    let path = root.path(&format!("{CPU_DIR}/cpu{cpu}/cpufreq/scaling_available_governors"));
    Ok(read_text(&path)?.split_whitespace().map(String::from).collect())
}

fn read_numa_nodes(root: &Root) -> Fact<Vec<NumaNode>> {
    let dir = root.path(NODE_DIR);
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut nodes = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix("node")?.parse::<usize>().ok())
        else {
            continue;
        };
        let cpus = read_text(&entry.path().join("cpulist")).and_then(|t| parse_cpu_list(&t))?;
        nodes.push(NumaNode { id, cpus });
    }
    if nodes.is_empty() {
        return Err(format!("no node<N> directories in {}", dir.display()));
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_numbers_and_unlimited() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            20000                1048576              files\n\
                    Max locked memory         8388608              unlimited            bytes\n";
        assert_eq!(
            parse_limit(text, "Max locked memory").unwrap(),
            Limit { soft: Some(8 << 20), hard: None }
        );
        assert_eq!(
            parse_limit(text, "Max open files").unwrap(),
            Limit { soft: Some(20000), hard: Some(1 << 20) }
        );
        assert!(parse_limit(text, "Max processes").is_err());
        assert!(parse_limit("Max open files  lots  1  files", "Max open files").is_err());
    }

    #[test]
    fn selections_cpu_lists_and_meminfo() {
        let s = parse_selection("always [madvise] never").unwrap();
        assert_eq!(s.current, "madvise");
        assert_eq!(s.available, ["always", "madvise", "never"]);
        assert_eq!(parse_selection("none").unwrap().current, "none");
        assert!(parse_selection("a b").is_err());
        assert!(parse_selection("").is_err());

        assert_eq!(parse_cpu_list("0-3,8,10-11\n").unwrap(), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<usize>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("0-4000000000").is_err());
        assert!(parse_cpu_list("x").is_err());

        let meminfo = "MemTotal:       16318412 kB\nSwapTotal:             0 kB\n";
        assert_eq!(parse_meminfo_bytes(meminfo, "MemTotal").unwrap(), 16318412 * 1024);
        assert_eq!(parse_meminfo_bytes(meminfo, "SwapTotal").unwrap(), 0);
        assert!(parse_meminfo_bytes(meminfo, "Mem").is_err());
    }
}
