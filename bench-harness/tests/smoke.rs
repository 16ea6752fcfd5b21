//! One short run of every shipped workload against a spawned broker: a second of traffic at a
//! low fixed rate and tiny sizes, checking counts (sent = acked = consumed, no duplicates, key
//! order), never speed. Plus the errors a user sees for a bad file and an unreachable broker.
//!
//! The harness has no build dependency on the `ringmq` binary (Cargo gives
//! `CARGO_BIN_EXE_ringmq` only to tests of the `ringmq` package). It looks for
//! `target/<profile>/ringmq` next to its own executable; `cargo test --workspace` builds it,
//! and these tests build it with `cargo build --bin ringmq` when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn bench_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ringmq-bench"))
}

fn broker_exe() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = bench_exe().parent().expect("target/<profile>");
        let bin = dir.join("ringmq");
        if !bin.is_file() {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "--bin", "ringmq"])
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build --bin ringmq failed");
        }
        assert!(bin.is_file(), "no broker binary at {}", bin.display());
        bin
    })
}

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads").join(format!("{name}.toml"))
}

fn run(name: &str, extra: &[&str]) -> (Output, Option<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let mut cmd = Command::new(bench_exe());
    cmd.arg("run").arg(workload(name)).arg("--spawn-broker").arg("--broker-bin");
    cmd.arg(broker_exe()).arg("--data-dir").arg(dir.path()).arg("--out").arg(&out);
    cmd.arg("--quiet");
    for s in [
        "warmup_s=0",
        "duration_s=1",
        "target_rate=3000",
        "drain_timeout_s=30",
        "storage.segment_size_bytes=16777216",
        "storage.cache_bytes=4194304",
        "storage.chunk_pool_chunks=16",
    ] {
        cmd.args(["--set", s]);
    }
    for s in extra {
        cmd.args(["--set", s]);
    }
    let output = cmd.output().expect("run ringmq-bench");
    let report = std::fs::read_to_string(&out).ok().map(|t| serde_json::from_str(&t).unwrap());
    (output, report)
}

fn smoke(name: &str, extra: &[&str]) -> serde_json::Value {
    let (output, report) = run(name, extra);
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{name} failed:\n{text}");
    let report = report.unwrap_or_else(|| panic!("{name}: no report\n{text}"));
    let r = &report["results"];
    assert_eq!(r["counts_ok"], true, "{name}: {}", r["problems"]);
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0, "{name}: nothing sent");
    assert_eq!(r["acked"].as_u64(), Some(sent), "{name}");
    if report["workload"]["consumers"].as_u64() > Some(0) {
        assert_eq!(r["verify"]["unique"].as_u64(), Some(sent), "{name}");
        assert_eq!(r["verify"]["duplicates"].as_u64(), Some(0), "{name}");
    }
    assert!(report["hardware"]["cpu_model"].is_string());
    // The revision is the broker binary's own, not the working directory's.
    let version = Command::new(broker_exe()).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    let revision = report["git_revision"].as_str().expect("git_revision");
    assert!(version.contains(&format!("(revision {revision})")), "{revision} vs {version}");
    report
}

#[test]
fn batched() {
    smoke("batched", &["consumers=1"]);
}

#[test]
fn batched_raw_client() {
    smoke("batched", &["consumers=1", "client=raw", "target_rate=0", "max_in_flight=2000"]);
}

#[test]
fn backlog_drain_raw_client() {
    let r = smoke(
        "backlog-drain",
        &["backlog_bytes=4194304", "target_rate=0", "client=raw", "max_in_flight=1000"],
    );
    assert_eq!(r["results"]["backlog"]["messages"].as_u64(), Some(4096));
}

#[test]
fn sync_flush() {
    let r = smoke("sync-flush", &["consumers=1"]);
    assert!(r["broker"]["config"].as_str().unwrap().contains("flush_mode = \"sync\""));
}

#[test]
fn small_messages() {
    smoke("small-messages", &["consumers=1"]);
}

#[test]
fn ordered() {
    let r = smoke("ordered", &["key_count=100"]);
    assert_eq!(r["results"]["verify"]["order_violations"].as_u64(), Some(0));
}

#[test]
fn latency() {
    let r = smoke("latency", &[]);
    let results = &r["results"];
    assert!(results["ack_latency"]["count"].as_u64() > Some(0));
    assert!(results["e2e_latency"]["count"].as_u64() > Some(0));
    assert!(results["publish_delay"]["count"].as_u64() > Some(0), "fixed rate: delay measured");
    assert!(!r["series"].as_array().unwrap().is_empty());
}

#[test]
fn backlog_drain() {
    let r = smoke("backlog-drain", &["backlog_bytes=4194304", "target_rate=0"]);
    let b = &r["results"]["backlog"];
    assert_eq!(b["drained_all"], true);
    assert_eq!(b["messages"].as_u64(), Some(4096));
}

#[test]
fn many_queues() {
    smoke("many-queues", &["topics=2", "queues_per_topic=100", "consumers=1"]);
}

#[test]
fn many_queues_keyed() {
    let r = smoke(
        "many-queues-keyed",
        &["topics=2", "queues_per_topic=100", "consumers=1", "key_count=1000"],
    );
    assert_eq!(r["results"]["verify"]["order_violations"].as_u64(), Some(0));
}

#[test]
fn bad_workload_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\ntopics = 1\ncolour = 2\n").unwrap();
    let out = Command::new(bench_exe())
        .arg("run")
        .arg(&bad)
        .args(["--broker", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("colour"), "{err}");
}

#[test]
fn unreachable_broker_is_a_clear_error() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(bench_exe())
        .arg("run")
        .arg(workload("batched"))
        .args(["--broker", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the broker"), "{err}");
}
