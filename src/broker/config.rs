//! Broker configuration: one TOML file with `[broker]` and `[storage]` sections.
//!
//! Read once at start on the main thread, validated, then shared read-only (an `Arc`) by every
//! shard; nothing in it changes while the broker runs. `[storage]` is
//! [`StorageConfig`]; its `dir` is ignored and replaced per shard by `<data_dir>/shard-<n>`.
//! The subsystems' sections (`[group]`, `[schedule]`, `[transaction]`, `[key_index]`) are in
//! `config/sections.rs`, the memory each bound implies in `config/memory.rs`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::topics::MAX_QUEUES_PER_TOPIC;
use crate::protocol::DEFAULT_MAX_FRAME_BYTES;
use crate::storage::StorageConfig;

mod memory;
mod sections;
pub use memory::{MemoryBudget, AUTO_IO_MEMORY_BYTES, CONNECTION_READ_BUFFER_BYTES};
pub use sections::{
    GroupConfig, KeyIndexConfig, ScheduleConfig, TransactionConfig, MAX_LOCK_LEASE_MS,
    MAX_SESSION_TIMEOUT_MS,
};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub broker: BrokerConfig,
    pub storage: StorageConfig,
    pub group: GroupConfig,
    pub schedule: ScheduleConfig,
    /// The `/metrics` endpoint ([`crate::metrics::MetricsConfig`]).
    pub metrics: crate::metrics::MetricsConfig,
    pub transaction: TransactionConfig,
    pub key_index: KeyIndexConfig,
    /// Master/replica replication; None (no section) for a single broker
    /// ([`crate::replication::config::ReplicationConfig`]).
    pub replication: Option<crate::replication::config::ReplicationConfig>,
    /// The RocketMQ 4.x front (`crate::compat::rocketmq`).
    pub rocketmq: crate::compat::rocketmq::config::RocketMqConfig,
}

/// The `[broker]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address every listener binds. Default "0.0.0.0".
    pub listen_address: String,
    /// The shared port every shard accepts on (SO_REUSEPORT). Shard `n` also listens on its own
    /// port `port + 1 + n`. 0 picks a free shared port and free per-shard ports (tests).
    /// Default 10911 (RocketMQ's broker port).
    pub port: u16,
    /// Number of shards (executor threads). 0 = one per CPU this process may run on.
    pub shards: usize,
    /// CPUs to run shards on, in shard order. Empty = the CPUs this process may run on.
    pub cpus: Vec<usize>,
    /// Pin each shard to its CPU. Default true.
    pub pin: bool,
    /// Root of all data: `topics.json` and `shard-<n>/` per shard. Default "data".
    pub data_dir: PathBuf,
    /// Largest frame accepted or sent, length prefix included. Default 8 MiB.
    pub max_frame_bytes: usize,
    /// Requests one connection may have in flight; further frames are not read until one
    /// completes (backpressure). Default 256.
    pub max_in_flight_per_connection: usize,
    /// Bytes one connection's requests may hold until their responses are written: a request
    /// counts its frame, and a fetch also its `max_bytes` (at most `max_fetch_bytes`). A
    /// request that would go over waits, the connection unread, until earlier ones are
    /// answered (one larger than this runs alone). With `max_in_flight_per_connection` this
    /// bounds what one connection holds: many small requests pipeline deeply, large ones stop
    /// at this many bytes. Default 64 MiB.
    pub max_in_flight_bytes_per_connection: usize,
    /// Connections one shard serves at once; more are accepted and closed. Default 4096.
    pub max_connections_per_shard: usize,
    /// Free connection read buffers one shard keeps for reuse, in bytes. Produce frames are
    /// released in bursts (appends wait for the write pool, then copy many frames at once),
    /// and a connection keeps one free buffer itself; the rest come here instead of being
    /// freed, so the next frames are read into them rather than into new, zero-filled
    /// memory. 0 keeps none. Default 32 MiB.
    pub read_buffer_pool_bytes: usize,
    /// Connections one client IP address may have open on one shard; more are accepted and
    /// closed, so one client cannot take every slot of a shard. Default 1000.
    pub max_connections_per_ip: usize,
    /// A request frame must arrive whole within this long of its first byte, or the
    /// connection is closed (slow or stalled senders). Default 30000.
    pub frame_read_timeout_ms: u64,
    /// A connection that received nothing and has no request in flight for this long is
    /// closed. Default 600000 (10 minutes).
    pub idle_timeout_ms: u64,
    /// Capacity of each shard-to-shard forwarding channel. Default 256.
    pub forward_channel_capacity: usize,
    /// Forwarded requests one shard works on at once. Default 1024.
    pub max_forwarded_in_flight: usize,
    /// Long-poll fetches that may wait on one queue; more get an immediate empty reply.
    /// Default 1024.
    pub max_long_poll_waiters_per_queue: usize,
    /// Longest long-poll wait honoured (a larger `max_wait_ms` is cut to this). Default 30000.
    pub max_long_poll_wait_ms: u32,
    /// Largest fetch reply payload. Default and bound: `max_frame_bytes` minus 64 bytes.
    pub max_fetch_bytes: usize,
    /// Most topics the broker holds. Default 10000.
    pub max_topics: usize,
    /// Most queues one topic may have. Default 1024.
    pub max_queues_per_topic: u32,
    /// Bytes of glommio's DMA buffer arena per shard executor; 0 (default) means
    /// [`AUTO_IO_MEMORY_BYTES`]. The arena is resident from the start whether used or not
    /// (registering it with io_uring pins it; a registration refused by the locked-memory
    /// limit has faulted it in all the same), so it is kept small: chunks beyond it come from
    /// the heap, grow with use up to their bounds, and are reused (see
    /// `runtime::tune_allocator`).
    pub io_memory_bytes: usize,
    /// How long a stopping broker waits for connections to finish in-flight requests before
    /// closing them, and at most how long its key index goes on indexing the log before its
    /// last checkpoint (what is left is indexed at the next start, before it serves). Default
    /// 10000.
    pub shutdown_timeout_ms: u64,
    /// If set, the broker writes its bound ports here (same text as the startup line) once it
    /// accepts connections.
    pub ready_file: Option<PathBuf>,
    /// Idempotent produce: (producer, queue) sequence windows one shard keeps; past it the
    /// least recently used one is dropped. Each holds 16 batches (about 600 bytes: 12 MB per
    /// shard at the default).
    /// Default 20000.
    pub idempotence_max_producer_queues: usize,
    /// A (producer, queue) window unused this long is dropped; the producer then renumbers
    /// under a new epoch. Must exceed the clients' send timeout. Default 900000 (15 min).
    pub idempotence_expiry_ms: u64,
    /// At startup each shard rebuilds the windows from the batches its log stored in the
    /// last this-many ms (retries of older batches are impossible: clients give up after
    /// their send timeout). Default 60000.
    pub idempotence_recovery_window_ms: u64,
    /// How much of the end of the shard's log that rebuild reads, in log order (one
    /// sequential read); a producer whose last batch on a queue lies before it gets no window
    /// there (it renumbers). Default 128 MiB.
    pub idempotence_recovery_scan_bytes: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen_address: "0.0.0.0".into(),
            port: 10911,
            shards: 0,
            cpus: Vec::new(),
            pin: true,
            data_dir: PathBuf::from("data"),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_in_flight_per_connection: 256,
            max_in_flight_bytes_per_connection: 64 << 20,
            max_connections_per_shard: 4096,
            read_buffer_pool_bytes: 32 << 20,
            max_connections_per_ip: 1000,
            frame_read_timeout_ms: 30_000,
            idle_timeout_ms: 600_000,
            forward_channel_capacity: 256,
            max_forwarded_in_flight: 1024,
            max_long_poll_waiters_per_queue: 1024,
            max_long_poll_wait_ms: 30_000,
            max_fetch_bytes: DEFAULT_MAX_FRAME_BYTES - 64,
            max_topics: 10_000,
            max_queues_per_topic: 1024,
            io_memory_bytes: 0,
            shutdown_timeout_ms: 10_000,
            ready_file: None,
            idempotence_max_producer_queues: 20_000,
            idempotence_expiry_ms: 900_000,
            idempotence_recovery_window_ms: 60_000,
            idempotence_recovery_scan_bytes: 128 << 20,
        }
    }
}

/// Bytes a fetch response frame needs besides the batches.
pub const FETCH_RESPONSE_OVERHEAD: usize = 64;

impl Config {
    /// Reads and parses a config file; unknown keys are errors that name the key.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks the knobs against each other; messages name the knob to fix.
    pub fn validate(&self) -> Result<(), String> {
        self.metrics.validate()?;
        self.key_index.validate()?;
        let b = &self.broker;
        self.rocketmq.validate(b.port, &b.listen_address, b.max_frame_bytes)?;
        let g = &self.group;
        if g.session_timeout_ms == 0
            || g.snapshot_interval_ms == 0
            || g.snapshot_every_commits == 0
            || g.max_lock_lease_ms == 0
        {
            return Err(
                "group.session_timeout_ms, group.snapshot_interval_ms, \
                        group.snapshot_every_commits and group.max_lock_lease_ms must be positive"
                    .into(),
            );
        }
        if g.offsets_retention_ms == 0 {
            return Err(
                "group.offsets_retention_ms must be positive: at 0 every group would lose \
                        its committed offsets the moment its last member left"
                    .into(),
            );
        }
        if g.session_timeout_ms > MAX_SESSION_TIMEOUT_MS {
            return Err(format!(
                "group.session_timeout_ms = {} is over the maximum {MAX_SESSION_TIMEOUT_MS} \
                 (30 min): a member gone without leaving would keep its queues that long",
                g.session_timeout_ms
            ));
        }
        if g.max_lock_lease_ms > MAX_LOCK_LEASE_MS {
            return Err(format!(
                "group.max_lock_lease_ms = {} is over the maximum {MAX_LOCK_LEASE_MS} (1 hour)",
                g.max_lock_lease_ms
            ));
        }
        let limits = g.coordinator(b.max_frame_bytes).limits;
        if g.max_membership_bytes < limits.largest_member_bytes() {
            return Err(format!(
                "group.max_membership_bytes = {} is below the {} bytes one member may take with \
                 group.max_subscriptions_per_member = {}",
                g.max_membership_bytes,
                limits.largest_member_bytes(),
                g.max_subscriptions_per_member
            ));
        }
        // No check of the largest member's GROUP_MEMBERS answer against the frame: a small
        // frame (16 KiB) with the default subscription limit ran before, and a heartbeat whose
        // member would not fit its group's answer is refused with GROUP_LIMIT at run time.
        let retention_ms = self.storage.retention_hours.saturating_mul(3_600_000);
        if g.snapshot_interval_ms >= retention_ms / 2 {
            return Err(format!(
                "group.snapshot_interval_ms = {} must be below half of storage.retention_hours \
                 ({retention_ms} ms), or retention could delete the only copy of a committed offset",
                g.snapshot_interval_ms
            ));
        }
        let sc = &self.schedule;
        sc.schedule()?;
        if sc.tick_ms == 0
            || sc.max_due_per_step == 0
            || sc.max_timer_records_per_step == 0
            || sc.max_index_per_step == 0
            || sc.checkpoint_interval_ms == 0
            || sc.roll_after_ms == 0
        {
            return Err("schedule.tick_ms, max_due_per_step, max_timer_records_per_step, \
                        max_index_per_step, checkpoint_interval_ms and roll_after_ms must be \
                        positive"
                .into());
        }
        if sc.dedup_capacity > 10_000_000 {
            return Err(format!(
                "schedule.dedup_capacity = {} is above 10000000 (about 100 bytes each per shard)",
                sc.dedup_capacity
            ));
        }
        let t = &self.transaction;
        if t.check_interval_ms == 0 || t.max_undecided_halves == 0 || t.max_check_waiters == 0 {
            return Err("transaction.check_interval_ms, transaction.max_undecided_halves and \
                        transaction.max_check_waiters must be positive"
                .into());
        }
        let life_ms = t.check_interval_ms.saturating_mul(u64::from(t.check_max) + 2);
        if life_ms >= retention_ms / 2 {
            return Err(format!(
                "transaction.check_interval_ms x (transaction.check_max + 2) = {life_ms} ms must \
                 be below half of storage.retention_hours ({retention_ms} ms): an undecided half \
                 lives that long"
            ));
        }
        let b = &self.broker;
        b.listen_address
            .parse::<IpAddr>()
            .map_err(|e| format!("broker.listen_address = {:?}: {e}", b.listen_address))?;
        if b.max_frame_bytes < 1024 {
            return Err("broker.max_frame_bytes must be at least 1024".into());
        }
        if b.max_frame_bytes > (1 << 30) {
            return Err("broker.max_frame_bytes must be at most 1 GiB".into());
        }
        if self.storage.movable_batch_limit() < SYSTEM_BATCH_BYTES {
            return Err(format!(
                "storage.chunk_size_bytes * (storage.chunk_pool_chunks - 1) and \
                 storage.segment_size_bytes / 2 must each be at least {SYSTEM_BATCH_BYTES}: the \
                 broker writes its scheduled messages' checkpoints in batches that large"
            ));
        }
        // A produce frame carries one whole batch plus the topic name and a few fields.
        let produce_overhead = crate::protocol::PRODUCE_FRAME_OVERHEAD;
        if self.storage.max_batch_bytes + produce_overhead > b.max_frame_bytes {
            return Err(format!(
                "storage.max_batch_bytes = {} does not fit in broker.max_frame_bytes = {} \
                 (a produce frame needs the batch plus {produce_overhead} bytes)",
                self.storage.max_batch_bytes, b.max_frame_bytes
            ));
        }
        if b.max_fetch_bytes + FETCH_RESPONSE_OVERHEAD > b.max_frame_bytes {
            return Err(format!(
                "broker.max_fetch_bytes = {} must leave {FETCH_RESPONSE_OVERHEAD} bytes of \
                 broker.max_frame_bytes = {}",
                b.max_fetch_bytes, b.max_frame_bytes
            ));
        }
        if b.max_fetch_bytes < self.storage.max_batch_bytes {
            return Err(format!(
                "broker.max_fetch_bytes = {} must be at least storage.max_batch_bytes = {} \
                 (a fetch returns at least one whole batch)",
                b.max_fetch_bytes, self.storage.max_batch_bytes
            ));
        }
        for (name, v) in [
            ("max_in_flight_per_connection", b.max_in_flight_per_connection),
            ("max_in_flight_bytes_per_connection", b.max_in_flight_bytes_per_connection),
            ("max_connections_per_shard", b.max_connections_per_shard),
            ("max_connections_per_ip", b.max_connections_per_ip),
            ("frame_read_timeout_ms", b.frame_read_timeout_ms as usize),
            ("idle_timeout_ms", b.idle_timeout_ms as usize),
            ("forward_channel_capacity", b.forward_channel_capacity),
            ("max_forwarded_in_flight", b.max_forwarded_in_flight),
            ("max_long_poll_waiters_per_queue", b.max_long_poll_waiters_per_queue),
            ("max_topics", b.max_topics),
            ("idempotence_max_producer_queues", b.idempotence_max_producer_queues),
        ] {
            if v == 0 {
                return Err(format!("broker.{name} must be at least 1"));
            }
        }
        if b.max_queues_per_topic == 0 || b.max_queues_per_topic > MAX_QUEUES_PER_TOPIC {
            return Err(format!(
                "broker.max_queues_per_topic must be in 1..={MAX_QUEUES_PER_TOPIC}"
            ));
        }
        if b.shards > 1024 {
            return Err(format!("broker.shards = {} is more than 1024", b.shards));
        }
        if b.port != 0 && usize::from(b.port) + b.shards > usize::from(u16::MAX) {
            return Err(format!(
                "broker.port = {} leaves no room for per-shard ports port+1..port+{}",
                b.port, b.shards
            ));
        }
        if let Some(r) = &self.replication {
            r.validate(self.storage.max_batch_bytes, b.max_fetch_bytes)?;
        }
        let mut storage = self.storage.clone();
        storage.dir = b.data_dir.join("shard-0");
        storage.validate().map_err(|e| format!("[storage]: {e}"))
    }

    /// The storage config of shard `shard`.
    pub fn storage_for_shard(&self, shard: usize) -> StorageConfig {
        let mut s = self.storage.clone();
        s.dir = shard_dir(&self.broker.data_dir, shard);
        s
    }
}

/// `<data_dir>/shard-<n>`.
pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

/// CPUs this process may run on (its affinity mask), in ascending order.
pub fn usable_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// The CPU each shard runs on (None: not pinned) and the shard count, from the config.
pub fn shard_placement(b: &BrokerConfig) -> Result<Vec<Option<usize>>, String> {
    let cpus = if b.cpus.is_empty() { usable_cpus() } else { b.cpus.clone() };
    if cpus.is_empty() {
        return Err("no usable CPUs found; set broker.cpus".into());
    }
    let shards = if b.shards == 0 { cpus.len() } else { b.shards };
    if b.pin && shards > cpus.len() {
        return Err(format!(
            "broker.shards = {shards} with pin = true needs {shards} CPUs but only {} are \
             available ({cpus:?}); lower shards, list more broker.cpus, or set pin = false",
            cpus.len()
        ));
    }
    Ok((0..shards).map(|i| b.pin.then(|| cpus[i])).collect())
}

/// The least room the broker needs for a batch it writes whole into its own queues, whatever
/// `storage.max_batch_bytes` is (kept to `StorageConfig::movable_batch_limit`): a scheduled
/// messages' wheel checkpoint, one record of about 28 KiB with every pending range, plus 8
/// bytes for each done entry it lists (up to 4,096 as room allows; the defaults allow all).
pub const SYSTEM_BATCH_BYTES: usize = 32 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_unknown_keys_are_named() {
        Config::default().validate().unwrap();
        let err = Config::parse("[broker]\nportt = 1\n").unwrap_err();
        assert!(err.contains("portt"), "{err}");
        let c = Config::parse("[broker]\nport = 0\nshards = 2\n[storage]\nflush_mode = \"sync\"\n")
            .unwrap();
        assert_eq!(c.broker.shards, 2);
        assert_eq!(c.storage.flush_mode, crate::storage::FlushMode::Sync);
        assert_eq!(c.storage_for_shard(1).dir, PathBuf::from("data/shard-1"));
    }

    #[test]
    fn schedule_settings_are_checked_against_retention() {
        let parse = |text: &str| Config::parse(text).and_then(|c| c.validate());
        parse("[schedule]\ndelay_levels = \"1s 90s\"\n").unwrap();
        let err = parse("[schedule]\ndelay_levels = \"1s 2x\"\n").unwrap_err();
        assert!(err.contains("schedule.delay_levels") && err.contains("2x"), "{err}");
        // A short retention is fine: held messages pin their segments.
        parse("[storage]\nretention_hours = 1\n").unwrap();
        assert!(parse("[schedule]\ntick_ms = 0\n").unwrap_err().contains("tick_ms"));
        let c = Config::parse("[storage]\nretention_hours = 2\n").unwrap();
        assert_eq!(c.schedule.schedule().unwrap().horizon_ms, 40 * 24 * 3_600_000);
    }

    #[test]
    fn a_write_pool_too_small_for_the_brokers_own_records_is_refused() {
        let parse = |text: &str| Config::parse(text).and_then(|c| c.validate());
        let small = "[storage]\nchunk_size_bytes = 8192\nchunk_pool_chunks = 4\n\
                     max_batch_bytes = 4096\n";
        let err = parse(small).unwrap_err();
        assert!(err.contains("chunk_pool_chunks") && err.contains("32768"), "{err}");
        parse(
            "[storage]\nchunk_size_bytes = 16384\nchunk_pool_chunks = 3\nmax_batch_bytes = 4096\n",
        )
        .unwrap();
    }

    #[test]
    fn a_lock_lease_of_zero_is_refused() {
        // Every lock would expire the moment it is granted: orderly consumers would never
        // hold a queue.
        let parse = |text: &str| Config::parse(text).and_then(|c| c.validate());
        let err = parse("[group]\nmax_lock_lease_ms = 0\n").unwrap_err();
        assert!(err.contains("group.max_lock_lease_ms"), "{err}");
        parse("[group]\nmax_lock_lease_ms = 1\n").unwrap();
    }

    #[test]
    fn a_small_frame_with_the_default_group_limits_is_accepted() {
        // A 16 KiB frame ran before GROUP_MEMBERS answers were bounded by it: the bound is
        // enforced per heartbeat (GROUP_LIMIT), not by refusing the broker's start.
        let text = "[broker]\nmax_frame_bytes = 16384\nmax_fetch_bytes = 16000\n\
                    [storage]\nmax_batch_bytes = 8192\n";
        Config::parse(text).unwrap().validate().unwrap();
    }

    #[test]
    fn an_offsets_retention_of_zero_is_refused() {
        let parse = |text: &str| Config::parse(text).and_then(|c| c.validate());
        let err = parse("[group]\noffsets_retention_ms = 0\n").unwrap_err();
        assert!(err.contains("group.offsets_retention_ms"), "{err}");
        let c = Config::parse("[group]\noffsets_retention_ms = 1\n").unwrap();
        c.validate().unwrap();
        let retention = c.group.coordinator(c.broker.max_frame_bytes).offsets_retention;
        assert_eq!(retention, std::time::Duration::from_millis(1));
        assert_eq!(Config::default().group.offsets_retention_ms, 7 * 24 * 3_600_000);
    }

    #[test]
    fn sessions_and_lock_leases_have_maxima() {
        // Any value used to validate: a member gone without leaving could hold its queues
        // for centuries.
        let parse = |text: &str| Config::parse(text).and_then(|c| c.validate());
        for text in [
            "[group]\nsession_timeout_ms = 1800001\n",
            "[group]\nsession_timeout_ms = 9223372036854775807\n",
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("group.session_timeout_ms") && err.contains("30 min"), "{err}");
        }
        parse("[group]\nsession_timeout_ms = 1800000\n").unwrap();
        let err = parse("[group]\nmax_lock_lease_ms = 3600001\n").unwrap_err();
        assert!(err.contains("group.max_lock_lease_ms") && err.contains("1 hour"), "{err}");
        parse("[group]\nmax_lock_lease_ms = 3600000\n").unwrap();
        let d = GroupConfig::default();
        assert!(d.session_timeout_ms <= MAX_SESSION_TIMEOUT_MS);
        assert!(d.max_lock_lease_ms <= MAX_LOCK_LEASE_MS);
    }

    #[test]
    fn the_membership_budget_holds_the_largest_member() {
        let parse = |text: &str| Config::parse(text).and_then(|c| c.validate());
        let c = Config::default();
        let limits = c.group.coordinator(c.broker.max_frame_bytes).limits;
        assert_eq!(limits.max_membership_bytes, 64 << 20);
        assert_eq!(limits.max_members_answer_bytes, c.broker.max_frame_bytes);
        let largest = limits.largest_member_bytes();
        let err = parse(&format!("[group]\nmax_membership_bytes = {}\n", largest - 1)).unwrap_err();
        assert!(err.contains("group.max_membership_bytes"), "{err}");
        parse(&format!("[group]\nmax_membership_bytes = {largest}\n")).unwrap();
        assert!(parse("[group]\nmax_membership_bytes = 0\n").is_err());
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let text = include_str!("../../tuning/broker.example.toml");
        let c = Config::parse(text).unwrap();
        c.validate().unwrap();
        let mut expected = Config::default();
        expected.storage.dir = c.storage.dir.clone();
        assert_eq!(c, expected, "tuning/broker.example.toml must list the defaults");
    }

    #[test]
    fn the_default_memory_budget_is_small_at_rest_and_bounded_in_use() {
        let budget = Config::default().shard_memory_budget();
        assert_eq!(budget.io_arena_bytes, AUTO_IO_MEMORY_BYTES);
        assert_eq!(budget.cache_bytes, 256 << 20);
        let text = budget.to_string();
        assert!(text.contains("io arena 4 MiB") && text.contains("256 MiB chunk cache"), "{text}");
        assert!(text.contains("32 MiB of free read buffers"), "{text}");
        assert!(
            text.contains(&format!("at most {} MiB", budget.bound_bytes().div_ceil(1 << 20))),
            "{text}"
        );
    }

    #[test]
    fn inconsistent_bounds_are_refused() {
        let mut c = Config::default();
        c.broker.max_frame_bytes = 1 << 20;
        assert!(c.validate().unwrap_err().contains("max_batch_bytes"));
        let mut c = Config::default();
        c.broker.pin = true;
        c.broker.cpus = vec![0];
        c.broker.shards = 2;
        assert!(shard_placement(&c.broker).is_err());
        c.broker.pin = false;
        assert_eq!(shard_placement(&c.broker).unwrap(), vec![None, None]);
    }
}
