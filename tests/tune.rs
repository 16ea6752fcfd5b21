//! `ringmq tune` through the real binary: `check` on this machine (reads only), and `apply`
//! against fake /proc and /sys trees given with the hidden `--root` flag (the real ones are
//! never written here).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn ringmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringmq")).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

const SETTINGS: [&str; 14] = [
    "kernel.io_uring_disabled",
    "RLIMIT_MEMLOCK",
    "RLIMIT_NOFILE",
    "transparent_hugepage/enabled",
    "transparent_hugepage/defrag",
    "vm.swappiness",
    "vm.dirty_background_ratio",
    "vm.dirty_ratio",
    "vm.dirty_expire_centisecs",
    "vm.dirty_writeback_centisecs",
    "filesystem of",
    "O_DIRECT",
    "CPU frequency governor",
    "shards vs CPUs",
];

#[test]
fn check_reports_every_setting_on_this_machine_and_exits_0() {
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Buffered I/O: nothing on any machine makes that config unusable, so the exit must be 0.
    let config = data.path().join("buffered.toml");
    std::fs::write(&config, "[storage]\nio_mode = \"buffered\"\n").unwrap();
    let dir = data.path().join("data");
    let out = ringmq(&[
        "tune",
        "check",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--shards",
        "1",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for setting in SETTINGS {
        assert!(text.contains(setting), "no {setting} in:\n{text}");
    }
    assert!(text.contains("(recommended: "), "{text}");
    assert!(text.lines().last().unwrap().ends_with(" ERROR"), "{text}");
    assert!(!dir.exists(), "check created the data directory");
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 1, "check left files behind");

    // The default config (direct I/O): exit 0 exactly when no finding is a hard error.
    let out = ringmq(&["tune", "check", "--data-dir", dir.to_str().unwrap(), "--shards", "1"]);
    let text = stdout(&out);
    let errors = text.lines().filter(|l| l.starts_with("ERROR")).count();
    assert_eq!(out.status.success(), errors == 0, "{text}");
    assert!(text.ends_with(&format!("{errors} ERROR\n")), "{text}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = ringmq(&["tune", "check", "--config", "/nonexistent/ringmq.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
    // A config the broker would refuse is a hard error of the check, named.
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("bad.toml");
    std::fs::write(&config, "[storage]\nchunk_pool_chunks = 1\n").unwrap();
    let out = ringmq(&["tune", "check", "--config", config.to_str().unwrap(), "--shards", "1"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ERROR broker config: invalid"), "{text}");
    assert!(text.contains("chunk_pool_chunks must be at least 2"), "{text}");
    let out = ringmq(&["tune", "apply", "--profile", "fastest", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown profile \"fastest\""), "{err}");
    assert!(err.contains("throughput, latency, durability"), "{err}");
}

/// A small fake tree: the sysctls, THP and two CPUs' governors `apply` writes.
fn fake_root(root: &Path) {
    let put = |path: &str, text: &str| {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{text}\n")).unwrap();
    };
    for (name, value) in [
        ("swappiness", "60"),
        ("dirty_ratio", "20"),
        ("dirty_background_ratio", "10"),
        ("dirty_expire_centisecs", "3000"),
        ("dirty_writeback_centisecs", "500"),
    ] {
        put(&format!("proc/sys/vm/{name}"), value);
    }
    put("sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never");
    put("sys/kernel/mm/transparent_hugepage/defrag", "[always] defer madvise never");
    put("sys/devices/system/cpu/online", "0-1");
    for cpu in 0..2 {
        let dir = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
        put(&format!("{dir}/scaling_governor"), "schedutil");
        put(&format!("{dir}/scaling_available_governors"), "performance schedutil powersave");
    }
}

fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let key = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(key, std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn apply_dry_run_changes_nothing_and_prints_the_plan_and_the_unit() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fake_root(&root);
    let before = snapshot(&root);
    let unit = t.path().join("ringmq.service");
    let out = ringmq(&[
        "tune",
        "apply",
        "--profile",
        "latency",
        "--dry-run",
        "--root",
        root.to_str().unwrap(),
        "--data-dir",
        t.path().to_str().unwrap(),
        "--unit-path",
        unit.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot(&root), before, "a dry run changed the tree");
    assert!(!unit.exists(), "a dry run wrote the unit");
    for line in [
        "would set vm.swappiness: 60 -> 1",
        "would set vm.dirty_background_ratio: 10 -> 2",
        "would set transparent_hugepage/enabled: always -> never",
        "would set cpu*/cpufreq/scaling_governor: schedutil -> performance (2 files)",
        "LimitMEMLOCK=infinity\n",
        "ExecStart=/usr/local/bin/ringmq broker --config /etc/ringmq/ringmq.toml\n",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(text.contains(&format!("would write the systemd unit {}", unit.display())), "{text}");
}

#[test]
fn apply_writes_the_settings_and_the_unit() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fake_root(&root);
    let unit = t.path().join("ringmq.service");
    let args = |profile: &'static str| {
        vec![
            "tune".to_string(),
            "apply".into(),
            "--profile".into(),
            profile.into(),
            "--root".into(),
            root.display().to_string(),
            "--data-dir".into(),
            t.path().display().to_string(),
            "--unit-path".into(),
            unit.display().to_string(),
            "--config-path".into(),
            "/etc/ringmq/durable.toml".into(),
        ]
    };
    let run = |profile| {
        let a = args(profile);
        ringmq(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run("durability");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("set vm.swappiness: 60 -> 1 ("), "{text}");
    assert!(text.contains("set transparent_hugepage/defrag: always -> madvise"), "{text}");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("proc/sys/vm/swappiness"), "1\n");
    assert_eq!(read("proc/sys/vm/dirty_expire_centisecs"), "1000\n");
    assert_eq!(read("sys/kernel/mm/transparent_hugepage/enabled"), "madvise\n");
    assert_eq!(read("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"), "performance\n");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("--profile durability"), "{unit_text}");
    assert!(unit_text
        .contains("ExecStart=/usr/local/bin/ringmq broker --config /etc/ringmq/durable.toml\n"));
    assert!(unit_text.contains("LimitNOFILE=1048576\n"), "{unit_text}");
    assert!(text.contains(&format!("wrote the systemd unit {}", unit.display())), "{text}");

    // A second run finds everything set.
    let text = stdout(&run("durability"));
    assert!(text.contains("unchanged vm.swappiness: already 1"), "{text}");
    assert!(text.contains("\n0 changed, 0 failed"), "{text}");
}
