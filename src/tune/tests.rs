//! The checker and `apply` against fake /proc and /sys trees (tempdirs): what a machine looks
//! like in, findings and file writes out. The real root is never written here.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::block_device::{split_dev, tests::fake_disk, BlockDevice};
use super::checks::{check, Finding, Severity};
use super::data_dir::ODirect;
use super::facts::{parse_selection, Facts, Root};
use super::{apply, profiles};
use crate::broker::Config;
use crate::storage::IoMode;

/// A fake machine: 4 CPUs on 2 NUMA nodes, untuned defaults (THP always, swappiness 60,
/// powersave, an 8 MiB memlock limit, 1024 open files), and the data directory's real device
/// number linked to a fake flash disk `sda` running bfq.
struct FakeMachine {
    root_dir: tempfile::TempDir,
    data_dir: tempfile::TempDir,
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{text}\n")).unwrap();
}

impl FakeMachine {
    fn new() -> FakeMachine {
        let root_dir = tempfile::tempdir().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let r = root_dir.path();
        write(
            r,
            "proc/self/limits",
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max open files            1024                 4096                 files\n\
             Max locked memory         8388608              8388608              bytes",
        );
        write(r, "proc/self/status", "Name:\tringmq\nCpus_allowed_list:\t0-3");
        write(r, "proc/meminfo", "MemTotal:       16777216 kB\nSwapTotal:       2097152 kB");
        for (name, value) in [
            ("swappiness", "60"),
            ("dirty_ratio", "20"),
            ("dirty_background_ratio", "10"),
            ("dirty_bytes", "0"),
            ("dirty_background_bytes", "0"),
            ("dirty_expire_centisecs", "3000"),
            ("dirty_writeback_centisecs", "500"),
        ] {
            write(r, &format!("proc/sys/vm/{name}"), value);
        }
        write(r, "proc/sys/kernel/io_uring_disabled", "0");
        write(r, "sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never");
        write(
            r,
            "sys/kernel/mm/transparent_hugepage/defrag",
            "always defer defer+madvise [madvise] never",
        );
        write(r, "sys/devices/system/cpu/online", "0-3");
        for cpu in 0..4 {
            let dir = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
            write(r, &format!("{dir}/scaling_governor"), "powersave");
            write(r, &format!("{dir}/scaling_available_governors"), "performance powersave");
        }
        write(r, "sys/devices/system/node/node0/cpulist", "0-1");
        write(r, "sys/devices/system/node/node1/cpulist", "2-3");
        let (major, minor) = data_dev(data_dir.path());
        if major != 0 {
            fake_disk(r, "pci0", "sda", &format!("{major}:{minor}"), "mq-deadline [bfq] none");
        }
        FakeMachine { root_dir, data_dir }
    }

    fn root(&self) -> Root {
        Root::new(self.root_dir.path())
    }

    fn facts(&self) -> Facts {
        Facts::collect(&self.root(), self.data_dir.path())
    }

    fn config(&self, io_mode: IoMode) -> Config {
        let mut cfg = Config::default();
        cfg.broker.data_dir = self.data_dir.path().to_path_buf();
        cfg.storage.io_mode = io_mode;
        cfg
    }

    /// Every file of the fake tree and its content.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    walk(&e.path(), out);
                } else if t.is_file() {
                    out.insert(e.path(), std::fs::read_to_string(e.path()).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root_dir.path(), &mut out);
        out
    }
}

/// The data directory's real (major, minor): the fake sysfs is keyed by it. Major 0 means the
/// test directory is on tmpfs/overlayfs, which has no disk.
fn data_dev(dir: &Path) -> (u64, u64) {
    split_dev(std::fs::metadata(dir).unwrap().dev())
}

fn find<'a>(findings: &'a [Finding], setting: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.setting.contains(setting))
        .unwrap_or_else(|| panic!("no finding for {setting} in {findings:#?}"))
}

#[test]
fn an_untuned_machine_gets_a_finding_for_every_setting_with_reasons() {
    let m = FakeMachine::new();
    let findings = check(&m.facts(), &m.config(IoMode::Direct));
    let sev = |s: &str| find(&findings, s).severity;

    // 4 shards (one per allowed CPU) x (4 MiB default DMA arena + 8 MiB rings) is above 8 MiB.
    let memlock = find(&findings, "RLIMIT_MEMLOCK");
    assert_eq!((memlock.severity, memlock.current.as_str()), (Severity::Warn, "8.0 MiB"));
    assert!(memlock.why.contains("4 shards"), "{memlock:?}");
    assert_eq!(memlock.recommended, "unlimited (at least 48.0 MiB)", "{memlock:?}");
    let nofile = find(&findings, "RLIMIT_NOFILE");
    assert_eq!(nofile.severity, Severity::Warn);
    assert_eq!(nofile.recommended, format!("at least {}", 4 * (4096 + 1024) + 256));

    assert_eq!(sev("transparent_hugepage/enabled"), Severity::Warn);
    assert_eq!(sev("transparent_hugepage/defrag"), Severity::Ok);
    assert_eq!(sev("vm.swappiness"), Severity::Warn);
    assert_eq!(sev("kernel.io_uring_disabled"), Severity::Ok);
    // Direct I/O: the page-cache knobs are reported, and said not to matter.
    for knob in ["dirty_ratio", "dirty_background_ratio", "dirty_expire", "dirty_writeback"] {
        let f = find(&findings, knob);
        assert_eq!(f.severity, Severity::Info, "{f:?}");
        assert!(f.why.contains("io_mode = buffered"), "{f:?}");
    }
    let governor = find(&findings, "governor");
    assert_eq!(
        (governor.severity, governor.current.as_str()),
        (Severity::Warn, "powersave (4 CPUs)")
    );
    let cpus = find(&findings, "shards vs CPUs");
    assert_eq!((cpus.severity, cpus.current.as_str()), (Severity::Ok, "4 shards, 4 CPUs usable"));
    let numa = find(&findings, "NUMA");
    assert_eq!(numa.severity, Severity::Info);
    assert!(numa.current.contains("node0: 2 shards, node1: 2 shards"), "{numa:?}");
    // This data directory is on the test machine's disk: O_DIRECT was tried there.
    assert_ne!(find(&findings, "O_DIRECT").current, "unknown");

    if data_dev(m.data_dir.path()).0 != 0 {
        let sched = find(&findings, "sda queue/scheduler");
        assert_eq!((sched.severity, sched.current.as_str()), (Severity::Warn, "bfq"));
        assert_eq!(sched.recommended, "none");
        assert_eq!(find(&findings, "sda queue/write_cache").current, "write back");
    } else {
        assert!(find(&findings, "data disk").why.contains("anonymous"));
    }
}

#[test]
fn in_buffered_mode_the_dirty_page_settings_are_judged() {
    let m = FakeMachine::new();
    let findings = check(&m.facts(), &m.config(IoMode::Buffered));
    let bg = find(&findings, "vm.dirty_background_ratio");
    assert_eq!(bg.severity, Severity::Warn);
    assert!(bg.why.contains("1.6 GiB here"), "10% of 16 GiB: {bg:?}");
    assert_eq!(find(&findings, "vm.dirty_ratio").severity, Severity::Ok);
    assert_eq!(find(&findings, "vm.dirty_expire_centisecs").severity, Severity::Warn);
    assert_eq!(find(&findings, "vm.dirty_writeback_centisecs").severity, Severity::Warn);

    // A non-zero dirty_background_bytes replaces the ratio: reported as such, not judged.
    write(m.root_dir.path(), "proc/sys/vm/dirty_background_bytes", "268435456");
    let findings = check(&m.facts(), &m.config(IoMode::Buffered));
    let bg = find(&findings, "vm.dirty_background_ratio");
    assert_eq!(bg.severity, Severity::Info);
    assert!(bg.current.contains("overridden"), "{bg:?}");
}

#[test]
fn an_empty_tree_yields_unknown_facts_and_no_crash() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let facts = Facts::collect(&Root::new(root.path()), data.path());
    let mut cfg = Config::default();
    cfg.broker.data_dir = data.path().to_path_buf();
    let findings = check(&facts, &cfg);
    assert!(findings.len() >= 10, "{findings:#?}");
    for f in &findings {
        if f.current == "unknown" {
            assert!(f.severity <= Severity::Warn, "{f:?}");
            assert!(!f.why.is_empty(), "{f:?}");
        }
    }
    let memlock = find(&findings, "RLIMIT_MEMLOCK");
    assert_eq!((memlock.severity, memlock.current.as_str()), (Severity::Info, "unknown"));
    assert!(memlock.why.contains("proc/self/limits"), "{memlock:?}");
    // Without /proc/self/status the shard count is unknown, and said so.
    assert!(find(&findings, "shards vs CPUs").why.contains("proc/self/status"));
    // The filesystem and O_DIRECT come from the real data directory, not the tree.
    assert_ne!(find(&findings, "filesystem of").current, "unknown");
}

#[test]
fn hard_errors_are_the_ones_that_stop_the_broker() {
    let m = FakeMachine::new();
    let mut facts = m.facts();
    facts.data.o_direct = Ok(ODirect::Unsupported("open(O_DIRECT) failed: EINVAL".into()));
    let direct = check(&facts, &m.config(IoMode::Direct));
    let od = find(&direct, "O_DIRECT");
    assert_eq!(od.severity, Severity::Error);
    assert!(od.why.contains("storage.io_mode = buffered"), "{od:?}");
    let buffered = check(&facts, &m.config(IoMode::Buffered));
    assert_eq!(find(&buffered, "O_DIRECT").severity, Severity::Info);
    assert!(buffered.iter().all(|f| f.severity != Severity::Error), "{buffered:#?}");

    let mut cfg = m.config(IoMode::Direct);
    cfg.broker.shards = 8;
    let f = check(&m.facts(), &cfg);
    assert_eq!(find(&f, "shards vs CPUs").severity, Severity::Error);
    cfg.broker.pin = false;
    assert_eq!(find(&check(&m.facts(), &cfg), "shards vs CPUs").severity, Severity::Warn);

    let mut cfg = m.config(IoMode::Direct);
    cfg.broker.cpus = vec![2, 7];
    assert_eq!(find(&check(&m.facts(), &cfg), "broker.cpus").severity, Severity::Error);

    write(m.root_dir.path(), "proc/sys/kernel/io_uring_disabled", "2");
    let f = check(&m.facts(), &m.config(IoMode::Direct));
    assert_eq!(find(&f, "io_uring_disabled").severity, Severity::Error);
}

fn device(scheduler: &str, rotational: bool) -> BlockDevice {
    BlockDevice {
        name: "sdx".into(),
        sys_dir: PathBuf::from("/nonexistent"),
        via: vec!["partition sdx1".into()],
        scheduler: parse_selection(scheduler),
        write_cache: Ok("write through".into()),
        rotational: Ok(rotational),
        backing_file: None,
    }
}

#[test]
fn the_scheduler_recommendation_depends_on_the_kind_of_disk() {
    let m = FakeMachine::new();
    let cfg = m.config(IoMode::Direct);
    let judge = |d: BlockDevice| {
        let mut facts = m.facts();
        facts.data.devices = Ok(vec![d]);
        let f = find(&check(&facts, &cfg), "queue/scheduler").clone();
        assert!(f.setting.contains("sdx (via partition sdx1)"), "{f:?}");
        (f.severity, f.recommended)
    };
    assert_eq!(judge(device("[none] mq-deadline", false)), (Severity::Ok, "none".into()));
    assert_eq!(judge(device("[mq-deadline] none", false)).0, Severity::Info);
    assert_eq!(judge(device("mq-deadline [bfq] none", false)).0, Severity::Warn);
    assert_eq!(judge(device("[none] mq-deadline", true)), (Severity::Warn, "mq-deadline".into()));
    assert_eq!(judge(device("[mq-deadline] none", true)).0, Severity::Ok);
    // A device that offers no choice is fine as it is.
    assert_eq!(judge(device("none", true)).0, Severity::Ok);
}

#[test]
fn a_dry_run_changes_nothing_and_plans_every_change() {
    let m = FakeMachine::new();
    let before = m.snapshot();
    let os = profiles::load("throughput").unwrap().os;
    let steps = apply::plan(&m.root(), &m.facts(), &os);
    let outcomes = apply::execute(steps, true);
    assert_eq!(m.snapshot(), before, "a dry run wrote to the tree");
    let lines: Vec<String> = outcomes.iter().map(|o| o.describe(true)).collect();
    let has = |s: &str| lines.iter().any(|l| l.starts_with(s));
    assert!(has("would set vm.swappiness: 60 -> 1 ("), "{lines:#?}");
    assert!(has("would set transparent_hugepage/enabled: always -> madvise"), "{lines:#?}");
    assert!(has("unchanged transparent_hugepage/defrag: already madvise"), "{lines:#?}");
    assert!(has("would set cpu*/cpufreq/scaling_governor: powersave -> performance (4 files)"));
    assert!(has("unchanged vm.dirty_ratio: already 20"), "{lines:#?}");
    if data_dev(m.data_dir.path()).0 != 0 {
        assert!(has("would set sda queue/scheduler: bfq -> none"), "{lines:#?}");
    } else {
        assert!(has("cannot set data disk queue/scheduler"), "{lines:#?}");
    }
}

#[test]
fn apply_writes_the_tree_and_each_profile_then_passes_the_check() {
    for name in profiles::names() {
        let m = FakeMachine::new();
        let profile = profiles::load(name).unwrap();
        let outcomes = apply::execute(apply::plan(&m.root(), &m.facts(), &profile.os), false);
        for o in &outcomes {
            assert!(o.result.is_ok(), "{name}: {}", o.describe(false));
        }
        let vm = |f: &str| std::fs::read_to_string(m.root_dir.path().join("proc/sys/vm").join(f));
        assert_eq!(vm("swappiness").unwrap(), "1\n");
        let gov = "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor";
        assert_eq!(std::fs::read_to_string(m.root_dir.path().join(gov)).unwrap(), "performance\n");

        // What the profile set now passes the checker, in buffered mode where all of it counts.
        let findings = check(&m.facts(), &m.config(IoMode::Buffered));
        for setting in [
            "vm.swappiness",
            "vm.dirty_background_ratio",
            "vm.dirty_ratio",
            "vm.dirty_expire_centisecs",
            "vm.dirty_writeback_centisecs",
            "transparent_hugepage/enabled",
            "transparent_hugepage/defrag",
            "governor",
        ] {
            assert_eq!(find(&findings, setting).severity, Severity::Ok, "{name}: {setting}");
        }
        if data_dev(m.data_dir.path()).0 != 0 {
            assert_eq!(find(&findings, "sda queue/scheduler").severity, Severity::Ok, "{name}");
        }
        // Applying again changes nothing.
        let again = apply::plan(&m.root(), &m.facts(), &profile.os);
        let writes: Vec<_> = again.iter().filter(|s| s.action == apply::Action::Write).collect();
        assert!(writes.is_empty(), "{name}: {writes:#?}");
    }
}

#[test]
fn settings_the_kernel_lacks_or_refuses_are_reported_not_fatal() {
    let m = FakeMachine::new();
    let r = m.root_dir.path();
    std::fs::remove_file(r.join("proc/sys/vm/dirty_expire_centisecs")).unwrap();
    write(r, "sys/kernel/mm/transparent_hugepage/enabled", "[always] never");
    let os = profiles::load("throughput").unwrap().os;
    let outcomes = apply::execute(apply::plan(&m.root(), &m.facts(), &os), false);
    let line = |s: &str| {
        outcomes
            .iter()
            .map(|o| o.describe(false))
            .find(|l| l.contains(s))
            .unwrap_or_else(|| panic!("no step for {s}"))
    };
    assert!(line("dirty_expire").starts_with("cannot set vm.dirty_expire_centisecs to 1000"));
    assert!(line("hugepage/enabled").contains("this kernel offers only always, never"));
    // The rest was applied, and nothing was created for the missing sysctl.
    assert!(line("vm.swappiness").starts_with("set vm.swappiness: 60 -> 1"));
    assert!(!r.join("proc/sys/vm/dirty_expire_centisecs").exists());

    // A write that fails (the file became a directory) or does not stick (a sink that reads
    // back empty, as when the kernel ignores a value) fails that step only.
    write(r, "proc/sys/vm/swappiness", "60");
    write(r, "proc/sys/vm/dirty_ratio", "30");
    let facts = m.facts();
    let swappiness = r.join("proc/sys/vm/swappiness");
    std::fs::remove_file(&swappiness).unwrap();
    std::fs::create_dir(&swappiness).unwrap();
    let dirty_ratio = r.join("proc/sys/vm/dirty_ratio");
    std::fs::remove_file(&dirty_ratio).unwrap();
    std::os::unix::fs::symlink("/dev/null", &dirty_ratio).unwrap();
    let outcomes = apply::execute(apply::plan(&m.root(), &facts, &os), false);
    let failed: Vec<String> =
        outcomes.iter().filter(|o| o.result.is_err()).map(|o| o.describe(false)).collect();
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(failed[0].starts_with("FAILED vm.swappiness: 60 -> 1: cannot open"), "{failed:#?}");
    assert!(failed[1].starts_with("FAILED vm.dirty_ratio: 30 -> 20:"), "{failed:#?}");
    assert!(failed[1].contains("reads back \"\""), "{failed:#?}");
    let governor = outcomes.iter().find(|o| o.step.setting.contains("governor")).unwrap();
    assert!(governor.result.is_ok());
}

#[test]
fn the_filesystem_is_judged_for_durability_and_direct_io() {
    use super::data_dir::Filesystem;
    let m = FakeMachine::new();
    let cfg = m.config(IoMode::Direct);
    let judge = |magic: u32| {
        let mut facts = m.facts();
        facts.data.filesystem = Ok(Filesystem { magic });
        let f = find(&check(&facts, &cfg), "filesystem of").clone();
        (f.severity, f.current)
    };
    assert_eq!(judge(0x5846_5342), (Severity::Ok, "xfs".into()));
    assert_eq!(judge(0xEF53), (Severity::Ok, "ext4".into()));
    assert_eq!(judge(0x9123_683E), (Severity::Warn, "btrfs".into()));
    assert_eq!(judge(0x0102_1994), (Severity::Warn, "tmpfs".into()));
    assert_eq!(judge(0x8584_58F6), (Severity::Warn, "ramfs".into()));
    assert_eq!(judge(0x794C_7630), (Severity::Warn, "overlayfs".into()));
    assert_eq!(judge(0x6969), (Severity::Warn, "nfs".into()));
    assert_eq!(judge(0x1234), (Severity::Info, "unknown (statfs magic 0x1234)".into()));
}

#[test]
fn an_ext4_data_directory_without_a_journal_is_warned_about() {
    use super::data_dir::{ext4_journal, Filesystem};
    let m = FakeMachine::new();
    let r = m.root_dir.path();
    // Read from the sysfs directory ext4 names after the device, found through its number.
    fake_disk(r, "pci1", "nvme0n1", "259:0", "[none] mq-deadline");
    let journal = || ext4_journal(&m.root(), (259, 0));
    let missing = journal().unwrap_err();
    assert!(missing.contains("sys/fs/ext4/nvme0n1/journal_task"), "{missing}");
    write(r, "sys/fs/ext4/nvme0n1/journal_task", "<none>");
    assert_eq!(journal(), Ok(false));
    write(r, "sys/fs/ext4/nvme0n1/journal_task", "1489");
    assert_eq!(journal(), Ok(true));
    assert!(ext4_journal(&m.root(), (259, 7)).unwrap_err().contains("259:7"));

    let cfg = m.config(IoMode::Direct);
    let judge = |magic: u32, journal: Result<bool, String>| {
        let mut facts = m.facts();
        facts.data.filesystem = Ok(Filesystem { magic });
        facts.data.ext4_journal = journal;
        check(&facts, &cfg).into_iter().find(|f| f.setting.starts_with("ext4 journal of"))
    };
    let f = judge(0xEF53, Ok(false)).expect("ext4 gets a journal finding");
    assert_eq!((f.severity, f.current.as_str()), (Severity::Warn, "none"), "{f:?}");
    assert!(f.why.contains("tune2fs -O has_journal"), "{f:?}");
    let f = judge(0xEF53, Ok(true)).unwrap();
    assert_eq!((f.severity, f.current.as_str()), (Severity::Ok, "present"), "{f:?}");
    let f = judge(0xEF53, Err("cannot read it".into())).unwrap();
    assert_eq!((f.severity, f.current.as_str()), (Severity::Info, "unknown"), "{f:?}");
    // Other filesystems have no ext4 journal to judge.
    assert!(judge(0x5846_5342, Ok(false)).is_none());
}

#[test]
fn guest_halt_polling_is_judged_on_kvm_guests_and_set_by_the_latency_profile() {
    let m = FakeMachine::new();
    let r = m.root_dir.path();
    let judge =
        || find(&check(&m.facts(), &m.config(IoMode::Direct)), "guest_halt_poll_ns").clone();
    let latency = profiles::load("latency").unwrap().os;
    let apply_latency = || {
        let outcomes = apply::execute(apply::plan(&m.root(), &m.facts(), &latency), false);
        outcomes
            .iter()
            .map(|o| o.describe(false))
            .find(|l| l.contains("guest_halt_poll_ns"))
            .expect("the latency profile has a halt-polling step")
    };

    // Bare metal (no haltpoll governor): nothing to judge, nothing created.
    let hp = judge();
    assert_eq!((hp.severity, hp.current.as_str()), (Severity::Ok, "absent"), "{hp:?}");
    let line = apply_latency();
    assert!(
        line.starts_with("cannot set haltpoll guest_halt_poll_ns to 200000: this kernel has no"),
        "{line}"
    );
    assert!(!r.join("sys/module/haltpoll").exists());

    // A KVM guest whose host turned polling off on the kernel command line.
    write(r, "sys/devices/system/cpu/cpuidle/current_governor", "haltpoll");
    write(r, "sys/module/haltpoll/parameters/guest_halt_poll_ns", "0");
    let hp = judge();
    assert_eq!(
        (hp.severity, hp.current.as_str(), hp.recommended.as_str()),
        (Severity::Warn, "0", "200000"),
        "{hp:?}"
    );
    // Only the latency profile sets it.
    for name in ["throughput", "durability"] {
        let os = profiles::load(name).unwrap().os;
        let steps = apply::plan(&m.root(), &m.facts(), &os);
        assert!(steps.iter().all(|s| !s.setting.contains("halt")), "{name}: {steps:#?}");
    }
    assert!(apply_latency().starts_with("set haltpoll guest_halt_poll_ns: 0 -> 200000"));
    let param = r.join("sys/module/haltpoll/parameters/guest_halt_poll_ns");
    assert_eq!(std::fs::read_to_string(&param).unwrap(), "200000\n");
    assert_eq!(judge().severity, Severity::Ok);
    assert!(apply_latency().starts_with("unchanged haltpoll guest_halt_poll_ns: already 200000"));

    // Another cpuidle governor ignores the value: said so, not judged.
    write(r, "sys/devices/system/cpu/cpuidle/current_governor", "menu");
    let hp = judge();
    assert_eq!(hp.severity, Severity::Info, "{hp:?}");
    assert!(hp.why.contains("menu, not haltpoll"), "{hp:?}");
    // An unreadable value is unknown, never fatal.
    write(r, "sys/module/haltpoll/parameters/guest_halt_poll_ns", "lots");
    let hp = judge();
    assert_eq!((hp.severity, hp.current.as_str()), (Severity::Info, "unknown"), "{hp:?}");
    let line = apply_latency();
    assert!(line.starts_with("cannot set haltpoll guest_halt_poll_ns to 200000:"), "{line}");
    assert!(line.contains("not a number"), "{line}");
}

#[test]
fn a_data_filesystem_over_the_retention_ratio_is_a_warning() {
    let m = FakeMachine::new();
    let cfg = m.config(IoMode::Direct); // disk_max_used_ratio 0.85
    let judge = |usage: Result<(u64, u64), String>| {
        let mut facts = m.facts();
        facts.data.disk_usage = usage;
        find(&check(&facts, &cfg), "disk usage of the data filesystem").clone()
    };
    let f = judge(Ok((86, 100)));
    assert_eq!(f.severity, Severity::Warn, "{f:?}");
    assert!(f.current.starts_with("86.0%"), "{f:?}");
    assert!(f.why.contains("younger than retention_hours"), "{f:?}");
    // Round 39's CI machine (76% full) was over the old default, within ten points of this one.
    let f = judge(Ok((76 << 30, 100 << 30)));
    assert_eq!(f.severity, Severity::Info, "{f:?}");
    assert!(f.why.contains("9.0 GiB more"), "{f:?}");
    assert_eq!(judge(Ok((30 << 30, 100 << 30))).severity, Severity::Ok);
    // A 6 GiB filesystem at 0.85 keeps less than one 1 GiB segment free above the ratio.
    let f = judge(Ok((1 << 30, 6 << 30)));
    assert_eq!(f.severity, Severity::Warn, "{f:?}");
    assert!(f.why.contains("disk_max_used_ratio to at most 0.83"), "{f:?}");
    assert_eq!(judge(Err("statvfs failed".into())).severity, Severity::Info);
    // Collected from the real directory: some usage, at most all of it.
    let (used, total) = m.facts().data.disk_usage.unwrap();
    assert!(used <= total && total > 0);
}
