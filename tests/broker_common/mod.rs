//! Starting the real `ringmq` binary for integration tests: temp data dir, port 0 (the broker
//! prints the ports it bound), bounded waits everywhere.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringmq::protocol::frame::{check_response, split_response, Check, ResponseHeader};

pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Broker {
    child: Option<Child>,
    pub dir: PathBuf,
    pub shared_port: u16,
    pub shard_ports: Vec<u16>,
    /// The `/metrics` URL from the ready line; None when the endpoint is off.
    pub metrics_url: Option<String>,
    /// The whole ready line (fields are read by name).
    pub ready_line: String,
}

/// Config for a test broker: ephemeral ports, unpinned shards, small segments. Keys in the
/// `extra_*` texts replace the defaults here.
pub fn config(dir: &Path, shards: usize, extra_broker: &str, extra_storage: &str) -> String {
    let data_dir = format!("{:?}", dir.join("data"));
    let shards = shards.to_string();
    let broker_defaults = [
        ("port", "0"),
        ("shards", shards.as_str()),
        ("pin", "false"),
        ("data_dir", data_dir.as_str()),
        ("shutdown_timeout_ms", "5000"),
    ];
    let storage_defaults = [
        ("segment_size_bytes", "16777216"),
        ("chunk_pool_chunks", "16"),
        ("cache_bytes", "16777216"),
        // Not the default 0.85: on a machine whose filesystem is fuller than that, retention
        // deleted what tests had just written (a test of disk usage sets its own).
        ("disk_max_used_ratio", "0.99"),
    ];
    let section = |defaults: &[(&str, &str)], extra: &str| {
        let overridden =
            |k: &str| extra.lines().any(|l| l.split('=').next().map(str::trim) == Some(k));
        let mut out = String::new();
        for (k, v) in defaults.iter().filter(|(k, _)| !overridden(k)) {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push_str(extra);
        out.push('\n');
        out
    };
    // The metrics endpoint on a free port: tests run brokers in parallel.
    format!(
        "[broker]\n{}[storage]\n{}[metrics]\nlisten = \"127.0.0.1:0\"\n",
        section(&broker_defaults, extra_broker),
        section(&storage_defaults, extra_storage)
    )
}

impl Broker {
    /// Starts a broker with `config_text` in `dir` and waits for its ready line.
    pub fn start_in(dir: &Path, config_text: &str) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("broker.toml");
        std::fs::write(&cfg, config_text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["broker", "--config"])
            .arg(&cfg)
            // RINGMQ_TEST_BROKER_LOG=debug (e.g.) to see more of a failing test's brokers.
            .args([
                "--log-level",
                &std::env::var("RINGMQ_TEST_BROKER_LOG").unwrap_or("warn".into()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ringmq");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("ringmq broker ready") => {
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                            .to_owned()
                    };
                    let shared_port = field("shared_port=").parse().unwrap();
                    let shard_ports =
                        field("shard_ports=").split(',').map(|p| p.parse().unwrap()).collect();
                    let metrics_url = Some(field("metrics=")).filter(|u| u != "off");
                    return Broker {
                        child: Some(child),
                        dir: dir.to_owned(),
                        shared_port,
                        shard_ports,
                        metrics_url,
                        ready_line: line.clone(),
                    };
                }
                Ok(_) => continue,
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    panic!(
                        "broker did not become ready within {START_TIMEOUT:?} (exit: {status:?})"
                    );
                }
            }
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.shared_port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_exit(&mut child, Duration::from_secs(30))
    }

    /// SIGKILL: no clean stop at all.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = wait_exit(&mut child, Duration::from_secs(30));
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("broker did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it returns Some, at most `limit`.
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A raw protocol connection for malformed-input tests.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next response frame; None if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<(ResponseHeader, Vec<u8>)> {
        self.read_frame_or_timeout(false)
    }

    /// The next response frame; None if the broker closed the connection or none arrived
    /// within the stream's read timeout.
    #[allow(dead_code)] // not every test binary waits for an answer that may not come
    pub fn try_read_frame(&mut self) -> Option<(ResponseHeader, Vec<u8>)> {
        self.read_frame_or_timeout(true)
    }

    fn read_frame_or_timeout(
        &mut self,
        timeout_is_none: bool,
    ) -> Option<(ResponseHeader, Vec<u8>)> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Ok(Check::Complete { frame_bytes }) = check_response(&self.buf, 64 << 20) {
                let frame: Vec<u8> = self.buf.drain(..frame_bytes).collect();
                let (h, p) = split_response(&frame);
                return Some((h, p.to_vec()));
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e)
                    if timeout_is_none
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    return None
                }
                Err(e) => panic!("read failed (timed out?): {e}"),
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A base port `p` such that `p..=p + n` are free now, for a test that must know its broker's
/// port before starting it (a restart on the same port). The ports come from below the
/// kernel's ephemeral range (32768-60999 by default), so no client connection of a parallel
/// test takes one as its local port while the broker is down, and from a per-process counter,
/// so two tests of one binary never get the same block. The pid spreads test binaries apart.
#[allow(dead_code)] // not every test binary restarts a broker on a fixed port
pub fn free_port_block(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const BLOCKS: u16 = 1_200;
    const BLOCK: u16 = 10;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    assert!(n < BLOCK, "a port block holds {BLOCK} ports");
    let start = (std::process::id() % u32::from(BLOCKS)) as u16;
    for _ in 0..BLOCKS {
        let k = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCKS;
        let base = FIRST + k * BLOCK;
        if (0..=n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of {} ports below the ephemeral range", n + 1);
}

/// Every message of `queue` from `from` to the end, pulled through the client library.
pub fn drain(
    client: &ringmq::client::Client,
    topic: &str,
    queue: u32,
    from: u64,
) -> Vec<ringmq::client::ConsumedMessage> {
    let consumer = client.consumer();
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let r = consumer.pull(topic, queue, offset, Duration::ZERO).unwrap();
        out.extend(r.messages);
        if r.next_offset >= r.max_offset {
            return out;
        }
        offset = r.next_offset;
    }
}

/// A broker with the RocketMQ front (`[rocketmq]`) and its name server on free ports, two
/// shards; `extra` is appended to its config.
pub struct Front {
    pub broker: Broker,
    /// `127.0.0.1:<port>` of the in-process name server.
    pub namesrv: String,
    /// The RocketMQ broker port.
    pub front_port: u16,
    _dir: tempfile::TempDir,
}

pub fn start_front(name: &str, extra: &str) -> Front {
    let dir =
        tempfile::Builder::new().prefix(&format!("ringmq-rocketmq-{name}")).tempdir().unwrap();
    let mut text = config(dir.path(), 2, "", "");
    text.push_str("[rocketmq]\nenabled = true\nbroker_port = 0\nnamesrv_port = 0\n");
    text.push_str(extra);
    let broker = Broker::start_in(dir.path(), &text);
    let field = |name: &str| -> u16 {
        broker
            .ready_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", broker.ready_line))
            .parse()
            .unwrap()
    };
    let namesrv = format!("127.0.0.1:{}", field("rocketmq_namesrv="));
    let front_port = field("rocketmq_broker=");
    Front { broker, namesrv, front_port, _dir: dir }
}
