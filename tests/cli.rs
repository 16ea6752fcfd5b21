//! The `ringmq` tools against a real broker: topic, produce (args and stdin), consume, stats.

mod broker_common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use broker_common::{config, Broker};

fn ringmq(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn topic_produce_consume_stats() {
    let dir = tempfile::Builder::new().prefix("ringmq-cli").tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let b = broker.addr();
    let out = ok(ringmq(&["topic", "create", "cli", "--queues", "3", "--broker", &b], None));
    assert!(out.contains("created topic cli"), "{out}");
    let out = ok(ringmq(&["topic", "list", "--broker", &b], None));
    assert!(out.contains("cli\tid=1\tqueues=3"), "{out}");

    let out = ok(ringmq(
        &["produce", "--topic", "cli", "--key", "k", "--tag", "T", "--broker", &b, "one", "two"],
        None,
    ));
    assert_eq!(out.lines().filter(|l| l.starts_with("SendOk")).count(), 2, "{out}");
    let out = ok(ringmq(
        &["produce", "--topic", "cli", "--queue", "0", "--broker", &b],
        Some("three\nfour\n"),
    ));
    assert_eq!(out.lines().count(), 2, "{out}");

    let out = ok(ringmq(&["consume", "--topic", "cli", "--broker", &b], None));
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 4, "{out}");
    let keyed: Vec<_> = lines.iter().filter(|l| l[2] == "k").collect();
    assert_eq!(keyed.len(), 2);
    assert_eq!((keyed[0][3], keyed[0][4], keyed[1][4]), ("T", "one", "two"));
    // Key "k" hashes to queue 2 of 3 (crc32c), so queue 0 holds only the stdin lines.
    let out = ok(ringmq(
        &["consume", "--topic", "cli", "--queue", "0", "--from-offset", "1", "--broker", &b],
        None,
    ));
    assert!(out.trim_end().ends_with("four") && !out.contains("three"), "{out}");

    let out = ok(ringmq(&["consume", "--topic", "cli", "--tag", "T", "--broker", &b], None));
    assert_eq!(out.lines().count(), 2, "only the tagged messages: {out}");

    let out = ok(ringmq(&["stats", "--broker", &b], None));
    assert_eq!(out.lines().count(), 3, "header and two shards: {out}");

    let err = ringmq(&["consume", "--topic", "nope", "--broker", &b], None);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("UNKNOWN_TOPIC"));
    let err = ringmq(&["topic", "create", "bad name", "--broker", &b], None);
    assert!(String::from_utf8_lossy(&err.stderr).contains("INVALID_TOPIC_NAME"));
    ok(ringmq(&["topic", "delete", "cli", "--broker", &b], None));
    assert_eq!(ok(ringmq(&["topic", "list", "--broker", &b], None)), "");
}

#[test]
fn broker_flags_and_ready_file() {
    let dir = tempfile::Builder::new().prefix("ringmq-flags").tempdir().unwrap();
    let ready = dir.path().join("ready");
    let data = dir.path().join("d");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["broker", "--port", "0", "--shards", "1", "--log-level", "warn"])
        .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let line = broker_common::poll_until(std::time::Duration::from_secs(60), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("broker exited: {status:?}");
        }
        std::fs::read_to_string(&ready).ok()
    });
    let port = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("shared_port="))
        .expect("shared_port in the ready file");
    let out = ok(ringmq(&["topic", "list", "--broker", &format!("127.0.0.1:{port}")], None));
    assert_eq!(out, "");
    assert!(data.join("shard-0").is_dir(), "--data-dir is used");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status =
        broker_common::poll_until(std::time::Duration::from_secs(30), || child.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_port_in_use_fails_the_start_with_a_clear_message() {
    let dir = tempfile::Builder::new().prefix("ringmq-port").tempdir().unwrap();
    // Held without SO_REUSEPORT, so the broker cannot share it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["broker", "--shards", "1", "--port", &port, "--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on") && err.contains(&port), "{err}");
}

#[test]
fn the_ready_line_is_printed_once_and_names_the_build_revision() {
    let dir = tempfile::Builder::new().prefix("ringmq-ready").tempdir().unwrap();
    let ready = dir.path().join("ready");
    let child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["broker", "--port", "0", "--shards", "1", "--log-level", "info"])
        .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("d"))
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = broker_common::poll_until(std::time::Duration::from_secs(60), || {
        std::fs::read_to_string(&ready).ok()
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let all =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(all.matches("ringmq broker ready").count(), 1, "{all}");
    let revision = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("revision="))
        .expect("revision in the ready line");
    let version = ok(ringmq(&["--version"], None));
    assert!(version.contains(&format!("(revision {revision})")), "{version} vs {line}");
    assert!(all.contains("memory per shard"), "the memory budget is logged: {all}");
}

#[test]
fn messages_up_to_the_brokers_batch_limit_go_through_the_cli() {
    let dir = tempfile::Builder::new().prefix("ringmq-big").tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let b = broker.addr();
    ok(ringmq(&["topic", "create", "big", "--queues", "1", "--broker", &b], None));
    // 3 MiB: over the client library's 1 MiB default batch, under the broker's 4 MiB.
    let body = "x".repeat(3 << 20);
    let out =
        ok(ringmq(&["produce", "--topic", "big", "--broker", &b], Some(&format!("{body}\n"))));
    assert!(out.starts_with("SendOk"), "{out}");
    let out =
        ok(ringmq(&["consume", "--topic", "big", "--max-messages", "1", "--broker", &b], None));
    let fields: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(fields[4].len(), body.len());
}

#[test]
fn produce_without_messages_on_a_terminal_says_it_reads_stdin() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::io::FromRawFd;
    let dir = tempfile::Builder::new().prefix("ringmq-tty").tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 1, "", ""));
    let b = broker.addr();
    ok(ringmq(&["topic", "create", "tty", "--queues", "1", "--broker", &b], None));
    let (mut master, slave) = {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two descriptors we then own.
        let rc = unsafe {
            libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s)) }
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["produce", "--topic", "tty", "--broker", &b])
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stderr).read_line(&mut first);
        let _ = tx.send(first);
    });
    // Bounded: without the hint the tool waits on the terminal and says nothing.
    let Ok(first) = rx.recv_timeout(std::time::Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!("produce printed nothing while waiting on the terminal");
    };
    assert!(first.contains("reading one message per line from stdin"), "{first}");
    // A line, then Ctrl-D at the start of a line: end of input on a terminal.
    master.write_all(b"typed\n\x04").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("SendOk"));
}

#[test]
fn topic_offsets_at_a_time_finds_the_first_message_stored_at_or_after_it() {
    use ringmq::client::Client;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let dir = tempfile::Builder::new().prefix("ringmq-offsets").tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let b = broker.addr();
    ok(ringmq(&["topic", "create", "at", "--queues", "2", "--broker", &b], None));
    ok(ringmq(&["produce", "--topic", "at", "--queue", "0", "--broker", &b, "a", "b", "c"], None));
    // The boundary: 1 ms after the last store time of the first round, once the clock passed it.
    let client = Client::connect(&b).unwrap();
    let first = client.consumer().pull("at", 0, 0, Duration::ZERO).unwrap();
    assert_eq!(first.messages.len(), 3);
    let boundary_ms = first.messages.iter().map(|m| m.store_timestamp_ms).max().unwrap() + 1;
    let now_ms = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    broker_common::poll_until(Duration::from_secs(5), || (now_ms() > boundary_ms).then_some(()));
    ok(ringmq(&["produce", "--topic", "at", "--queue", "0", "--broker", &b, "d", "e"], None));
    ok(ringmq(&["produce", "--topic", "at", "--queue", "1", "--broker", &b, "f"], None));

    let rfc3339 = |ms: i64| {
        let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
        humantime::format_rfc3339_millis(t).to_string()
    };
    let offsets =
        |at: &str| ok(ringmq(&["topic", "offsets", "at", "--at", at, "--broker", &b], None));
    assert_eq!(
        offsets(&rfc3339(boundary_ms)),
        "queue=0\tmin=0\tnext=5\tat=3\nqueue=1\tmin=0\tnext=1\tat=0\n",
        "queue 0's second round starts at offset 3; queue 1 has only messages after the boundary"
    );
    assert_eq!(
        offsets("2000-01-01T00:00:00Z"),
        "queue=0\tmin=0\tnext=5\tat=0\nqueue=1\tmin=0\tnext=1\tat=0\n",
        "before everything: the first offset"
    );
    assert_eq!(
        offsets(&rfc3339(now_ms() + 3_600_000)),
        "queue=0\tmin=0\tnext=5\tat=5\nqueue=1\tmin=0\tnext=1\tat=1\n",
        "after everything: the end"
    );
    let plain = ok(ringmq(&["topic", "offsets", "at", "--broker", &b], None));
    assert_eq!(plain, "queue=0\tmin=0\tnext=5\nqueue=1\tmin=0\tnext=1\n");
    let bad = ringmq(&["topic", "offsets", "at", "--at", "yesterday", "--broker", &b], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--at \"yesterday\""), "{bad:?}");
}
