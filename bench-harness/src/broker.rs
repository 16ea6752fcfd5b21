//! `--spawn-broker`: start the `ringmq` binary with a temp data dir, a config built from the
//! workload's `[broker]`/`[storage]` tables, port 0 (the broker prints the ports it bound), and
//! optionally pinned to `--broker-cpus`. Stopped with SIGTERM (bounded wait, then SIGKILL).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SpawnedBroker {
    child: Option<Child>,
    pub dir: PathBuf,
    keep_dir: bool,
    pub shared_port: u16,
    pub config_text: String,
    /// The git revision the broker binary was built from, from its ready line.
    pub revision: String,
    /// Its metrics endpoint (`metrics=` of the ready line), if on.
    pub metrics_url: Option<String>,
}

/// The `ringmq` binary: `explicit`, else next to this executable (`target/<profile>/`), else
/// one directory up (test executables live in `target/<profile>/deps/`).
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(format!("--broker-bin {}: no such file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut dir = exe.parent().map(Path::to_owned);
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("ringmq");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(Path::to_owned);
    }
    Err(format!(
        "no ringmq binary next to {}; build it (`cargo build --release --bin ringmq`) or pass \
         --broker-bin",
        exe.display()
    ))
}

/// What differs between the brokers of one session (`--replication` starts two).
#[derive(Debug, Clone, Default)]
pub struct Role {
    /// Names the data directory (`broker`, `master`, `replica`).
    pub name: String,
    /// The shared port; 0 picks a free one.
    pub port: u16,
    /// The `[replication]` table, if any.
    pub replication: Option<toml::Table>,
}

/// The broker config: the workload's tables, then what the harness must control. An empty
/// `key_index` table is left out (the broker's defaults apply).
pub fn config_text(
    broker: &toml::Table,
    storage: &toml::Table,
    key_index: &toml::Table,
    data_dir: &Path,
    cpus: &[usize],
    role: &Role,
) -> Result<String, String> {
    let mut b = broker.clone();
    b.insert("port".into(), toml::Value::Integer(role.port.into()));
    b.insert("data_dir".into(), toml::Value::String(data_dir.display().to_string()));
    b.remove("ready_file");
    if cpus.is_empty() {
        b.insert("pin".into(), toml::Value::Boolean(false));
        b.entry("shards").or_insert(toml::Value::Integer(1));
    } else {
        let list = cpus.iter().map(|c| toml::Value::Integer(*c as i64)).collect();
        b.insert("cpus".into(), toml::Value::Array(list));
        b.insert("pin".into(), toml::Value::Boolean(true));
        b.entry("shards").or_insert(toml::Value::Integer(cpus.len() as i64));
    }
    let mut root = toml::Table::new();
    root.insert("broker".into(), toml::Value::Table(b));
    root.insert("storage".into(), toml::Value::Table(storage.clone()));
    if !key_index.is_empty() {
        root.insert("key_index".into(), toml::Value::Table(key_index.clone()));
    }
    if let Some(r) = &role.replication {
        root.insert("replication".into(), toml::Value::Table(r.clone()));
    }
    toml::to_string(&root).map_err(|e| format!("cannot write broker config: {e}"))
}

/// The `revision=` field of a broker's ready line; brokers built before it existed say nothing,
/// and the report then says so instead of naming some other revision.
pub fn ready_line_revision(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("revision="))
        .map_or_else(|| "unknown (the broker did not report it)".to_owned(), str::to_owned)
}

impl SpawnedBroker {
    pub fn start(
        binary: &Path,
        base_dir: &Path,
        keep_dir: bool,
        broker: &toml::Table,
        storage: &toml::Table,
        key_index: &toml::Table,
        cpus: &[usize],
        role: &Role,
    ) -> Result<SpawnedBroker, String> {
        let name = if role.name.is_empty() { "broker" } else { &role.name };
        let dir =
            base_dir.join(format!("ringmq-bench-{}-{}-{name}", std::process::id(), unix_ms()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let text = config_text(broker, storage, key_index, &dir.join("data"), cpus, role)?;
        let cfg = dir.join("broker.toml");
        std::fs::write(&cfg, &text).map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
        let mut command = Command::new(binary);
        if !cpus.is_empty() {
            let cpus = cpus.to_vec();
            // The whole broker process (its main thread and the kernel's io_uring workers
            // included) stays on its CPUs, off the load generator's.
            // SAFETY: only async-signal-safe calls (sched_setaffinity) between fork and exec.
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for &c in &cpus {
                        if c < libc::CPU_SETSIZE as usize {
                            libc::CPU_SET(c, &mut set);
                        }
                    }
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .args(["broker", "--config"])
            .arg(&cfg)
            .args(["--log-level", "warn"])
            // A free port for the metrics endpoint: another broker may serve the default one.
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut me = SpawnedBroker {
            child: None,
            dir,
            keep_dir,
            shared_port: 0,
            config_text: text,
            revision: String::new(),
            metrics_url: None,
        };
        let stdout = child.stdout.take().expect("piped");
        me.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("ringmq broker ready") => {
                    let port = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("shared_port="))
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| format!("no shared_port in the ready line {line:?}"))?;
                    me.shared_port = port;
                    me.revision = ready_line_revision(&line);
                    me.metrics_url = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("metrics="))
                        .filter(|u| *u != "off")
                        .map(str::to_owned);
                    return Ok(me);
                }
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = me.child.as_mut().and_then(|c| c.wait().ok());
                    return Err(format!(
                        "the broker exited before it was ready ({status:?}); config:\n{}",
                        me.config_text
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("the broker was not ready within {START_TIMEOUT:?}"))
                }
            }
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.shared_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and a bounded wait; Err if it had to be killed or exited with an error.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("the broker exited with {s}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the broker did not stop within {STOP_TIMEOUT:?}"));
                }
            }
        }
    }
}

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_overrides_what_the_harness_controls() {
        let mut b = toml::Table::new();
        b.insert("port".into(), toml::Value::Integer(10911));
        b.insert("max_queues_per_topic".into(), toml::Value::Integer(2000));
        let mut s = toml::Table::new();
        s.insert("flush_mode".into(), toml::Value::String("sync".into()));
        let text =
            config_text(&b, &s, &toml::Table::new(), Path::new("/d"), &[0], &Role::default())
                .unwrap();
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["broker"]["port"].as_integer(), Some(0));
        assert_eq!(t["broker"]["shards"].as_integer(), Some(1));
        assert_eq!(t["broker"]["pin"].as_bool(), Some(true));
        assert_eq!(t["broker"]["max_queues_per_topic"].as_integer(), Some(2000));
        assert_eq!(t["storage"]["flush_mode"].as_str(), Some("sync"));
        let text = config_text(&b, &s, &toml::Table::new(), Path::new("/d"), &[], &Role::default())
            .unwrap();
        assert!(text.contains("pin = false"), "{text}");
        let mut r = toml::Table::new();
        r.insert("role".into(), toml::Value::String("replica".into()));
        let role = Role { name: "replica".into(), port: 20911, replication: Some(r) };
        let t: toml::Table = config_text(&b, &s, &toml::Table::new(), Path::new("/d"), &[], &role)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(t["broker"]["port"].as_integer(), Some(20911));
        assert_eq!(t["replication"]["role"].as_str(), Some("replica"));
        assert!(t.get("key_index").is_none(), "an empty key_index table is left out");
        let mut k = toml::Table::new();
        k.insert("enabled".into(), toml::Value::Boolean(false));
        let t: toml::Table =
            config_text(&b, &s, &k, Path::new("/d"), &[], &role).unwrap().parse().unwrap();
        assert_eq!(t["key_index"]["enabled"].as_bool(), Some(false));
    }
}
