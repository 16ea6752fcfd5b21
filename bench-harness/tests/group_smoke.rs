//! `ringmq-bench group` end to end against a real broker, with tiny sizes: the report has a
//! row per member count with every preloaded message consumed once, and a rebalance in which
//! queues moved. Never speed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn broker_exe() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_ringmq-bench"));
    let dir = bench.parent().expect("target/<profile>");
    let bin = dir.join("ringmq");
    if !bin.is_file() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--bin", "ringmq"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("run cargo build").success());
    }
    bin
}

#[test]
fn group_reports_throughput_per_member_count_and_the_rebalance_pause() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Command::new(broker_exe())
        .args(["broker", "--port", "0", "--shards", "2", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = broker.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("ringmq broker ready"))
        .expect("ready line");
    let port = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("shared_port="))
        .expect("shared_port")
        .to_owned();
    let out = dir.path().join("group.json");
    let run = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(["group", "--broker", &format!("127.0.0.1:{port}"), "--members", "1,2"])
        .args(["--queues", "4", "--messages", "2000", "--rebalance-rate", "500", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let _ = broker.kill();
    let _ = broker.wait();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let rows = rep["throughput"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, members) in rows.iter().zip([1, 2]) {
        assert_eq!(row["members"], members);
        assert_eq!(row["messages"], 2000, "every message consumed once: {row}");
    }
    let r = &rep["rebalance"];
    assert!(r["messages"].as_u64().unwrap() > 0);
    assert!(r["queues_moved"].as_u64().unwrap() >= 1, "the joining member took queues: {r}");
    assert!(rep["git_revision"].as_str().is_some() && rep["command"].is_array());
}
