//! The config sections of the subsystems: `[key_index]`, `[schedule]`, `[group]` and
//! `[transaction]` (each turned into its subsystem's own settings here).

use serde::{Deserialize, Serialize};

/// The `[key_index]` section: the per-shard index of message keys (`crate::storage::key_index`,
/// `broker/shard/key_index.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyIndexConfig {
    /// Off: no key index (no memory, no second read of the log); QUERY_KEYS answers
    /// INVALID_ARGUMENT saying so. Default true.
    pub enabled: bool,
    /// Hash slots per index file (4 bytes each). Default 131072.
    pub slots_per_file: u32,
    /// Entries per index file (28 bytes each; one per key of a message). The active file is
    /// held in memory: slots x 4 + entries x 28 bytes per shard (about 7.5 MiB by default).
    /// Default 262144.
    pub entries_per_file: u32,
    /// Index files kept per shard at most (older ones are deleted, as are those whose
    /// messages retention removed). Default 64.
    pub max_files: u32,
    /// The index follows the log this often: a key is found about this long after its
    /// message was acknowledged. Default 200.
    pub interval_ms: u64,
    /// Log bytes read per step at most, so indexing yields to produce and fetch. Default
    /// 16 MiB.
    pub max_step_bytes: u64,
    /// The index's progress is made durable this often; a restart re-indexes the log written
    /// since. Default 10000.
    pub checkpoint_interval_ms: u64,
}

impl Default for KeyIndexConfig {
    fn default() -> Self {
        KeyIndexConfig {
            enabled: true,
            slots_per_file: 131_072,
            entries_per_file: 262_144,
            max_files: 64,
            interval_ms: 200,
            max_step_bytes: 16 << 20,
            checkpoint_interval_ms: 10_000,
        }
    }
}

impl KeyIndexConfig {
    pub fn settings(&self) -> crate::storage::key_index::KeyIndexSettings {
        crate::storage::key_index::KeyIndexSettings {
            geometry: crate::storage::key_index::Geometry {
                slot_count: self.slots_per_file,
                max_entries: self.entries_per_file,
            },
            max_files: self.max_files,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.settings().geometry.validate().map_err(|e| format!("key_index: {e}"))?;
        if self.max_files < 2
            || self.interval_ms == 0
            || self.max_step_bytes == 0
            || self.checkpoint_interval_ms == 0
        {
            return Err("key_index.max_files must be at least 2; key_index.interval_ms, \
                        max_step_bytes and checkpoint_interval_ms must be positive"
                .into());
        }
        Ok(())
    }
}

/// The `[schedule]` section: scheduled (delayed) messages, per shard (`broker/shard/schedule.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The delay of each level, level 1 first, in RocketMQ's `messageDelayLevel` form.
    /// Default `"1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"`.
    pub delay_levels: String,
    /// Absolute delivery times (and delay levels) at most this far ahead are accepted.
    /// Default 40 days.
    pub horizon_ms: u64,
    /// A held message keeps retention from deleting its segment and every later one until it
    /// is delivered or rewritten: one still held this long after it was stored (or last
    /// rewritten) is written again at the log's end (RocketMQ 5's timer roll), so retention
    /// keeps at most about this much of the shard's log for held messages, at the cost of
    /// copying each long-held message once per period. Default 3600000 (1 hour).
    pub roll_after_ms: u64,
    /// Timer precision: a message is delivered at most about this late (never early). It is
    /// also how often the schedule task looks for due messages. Default 10.
    pub tick_ms: u64,
    /// Due messages moved to their queues per step of the schedule task. Default 256.
    pub max_due_per_step: usize,
    /// Timer-log records one step reads or writes (cascades of a full slot are spread over
    /// steps). Default 4096.
    pub max_timer_records_per_step: usize,
    /// New schedule entries indexed per step. Default 4096.
    pub max_index_per_step: usize,
    /// Scheduled messages one shard holds (pending or not yet indexed); past it a scheduled
    /// produce gets SCHEDULE_FULL. Default 10000000 (they live on disk; the wheel's memory is
    /// fixed).
    pub max_pending_per_shard: u64,
    /// A scheduled send whose first message has a `UNIQ_KEY` property (the native client sets
    /// one; RocketMQ clients do) is remembered this long by that id: a resend (after a lost
    /// reply or a restart) is answered with the first one's place instead of being held twice.
    /// Default 600000 (10 minutes).
    pub dedup_window_ms: u64,
    /// Unique ids remembered per shard (about 100 bytes each). Default 16384; 0 turns the
    /// de-duplication off.
    pub dedup_capacity: usize,
    /// Take a wheel checkpoint after this long with changes. Default 1000.
    pub checkpoint_interval_ms: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            delay_levels: crate::schedule::levels::ROCKETMQ_DELAY_LEVELS.to_owned(),
            horizon_ms: crate::schedule::levels::DEFAULT_HORIZON_MS,
            roll_after_ms: 3_600_000,
            tick_ms: 10,
            max_due_per_step: 256,
            max_timer_records_per_step: 4096,
            max_index_per_step: 4096,
            max_pending_per_shard: 10_000_000,
            dedup_window_ms: 600_000,
            dedup_capacity: 16_384,
            checkpoint_interval_ms: 1000,
        }
    }
}

impl ScheduleConfig {
    /// The levels and the horizon.
    pub fn schedule(&self) -> Result<crate::schedule::levels::Schedule, String> {
        let levels = crate::schedule::levels::DelayLevels::parse(&self.delay_levels)
            .map_err(|e| format!("schedule.delay_levels: {e}"))?;
        Ok(crate::schedule::levels::Schedule { levels, horizon_ms: self.horizon_ms })
    }
}

/// Longest `group.session_timeout_ms` (30 min, Kafka's `group.max.session.timeout.ms`): a
/// member gone without leaving keeps its queues, unconsumed, for a session.
pub const MAX_SESSION_TIMEOUT_MS: u64 = 30 * 60_000;
/// Longest `group.max_lock_lease_ms` (1 hour): a crashed orderly consumer's queues wait for
/// its lease to end (unless its session ends first).
pub const MAX_LOCK_LEASE_MS: u64 = 60 * 60_000;

/// The `[group]` section: consumer groups, per coordinator shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// A member not heard from for this long leaves its group (its queues are rebalanced and
    /// its locks released). Default 120000 (RocketMQ's), at most [`MAX_SESSION_TIMEOUT_MS`].
    pub session_timeout_ms: u64,
    /// Groups one shard coordinates. Default 10000.
    pub max_groups: usize,
    /// Default 1000.
    pub max_members_per_group: usize,
    /// Default 100.
    pub max_subscriptions_per_member: usize,
    /// (group, topic, queue) committed offsets one shard keeps, about 100 bytes each in
    /// memory. Default 200000.
    pub max_committed_offsets: usize,
    /// Queue locks one shard grants. Default 100000.
    pub max_queue_locks: usize,
    /// Longest lock lease granted (a longer one asked for is cut to this). Default 600000, at
    /// most [`MAX_LOCK_LEASE_MS`].
    pub max_lock_lease_ms: u64,
    /// Bytes of membership state one shard keeps: each member's client id, room and
    /// subscriptions (topic and expression) plus a fixed overhead per member, subscription
    /// and group (`crate::group::membership::member_bytes`). A heartbeat past it is refused
    /// with GROUP_LIMIT. Default 67108864 (64 MiB: about 150,000 members of one subscription
    /// with 20-byte names).
    pub max_membership_bytes: usize,
    /// Parked WATCH_GROUP requests (members-changed notices) one shard holds. Default 10000.
    pub max_watchers: usize,
    /// Snapshot the committed offsets into `%SYS%offsets` after this many commit records.
    /// Default 100000.
    pub snapshot_every_commits: u64,
    /// ... and at least this often while offsets exist: it must stay well below
    /// `storage.retention_ms`, or retention could delete the only copy of a live offset.
    /// Default 600000.
    pub snapshot_interval_ms: u64,
    /// A group without members whose last commit (or last member leaving or expiring) is this
    /// long ago has its committed offsets forgotten (Kafka's `offsets.retention.minutes`).
    /// Offsets restored at start count from the broker's start. Default 604800000 (7 days).
    pub offsets_retention_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms: 120_000,
            max_groups: 10_000,
            max_members_per_group: 1_000,
            max_subscriptions_per_member: 100,
            max_committed_offsets: 200_000,
            max_queue_locks: 100_000,
            max_lock_lease_ms: 600_000,
            max_membership_bytes: 64 << 20,
            max_watchers: 10_000,
            snapshot_every_commits: 100_000,
            snapshot_interval_ms: 600_000,
            offsets_retention_ms: 604_800_000,
        }
    }
}

impl GroupConfig {
    /// The coordinator's bounds and cadence; `max_frame_bytes` bounds a group's GROUP_MEMBERS
    /// and FETCH_OFFSETS answers.
    pub fn coordinator(
        &self,
        max_frame_bytes: usize,
    ) -> crate::group::coordinator::CoordinatorConfig {
        use crate::group::membership::GroupLimits;
        use std::time::Duration;
        crate::group::coordinator::CoordinatorConfig {
            limits: GroupLimits {
                max_groups: self.max_groups,
                max_members_per_group: self.max_members_per_group,
                max_subscriptions_per_member: self.max_subscriptions_per_member,
                max_name_bytes: 255,
                session_timeout: Duration::from_millis(self.session_timeout_ms),
                max_membership_bytes: self.max_membership_bytes,
                max_members_answer_bytes: max_frame_bytes,
            },
            max_locks: self.max_queue_locks,
            max_offsets: self.max_committed_offsets,
            max_offsets_answer_bytes: max_frame_bytes,
            snapshot_every_commits: self.snapshot_every_commits,
            snapshot_interval: Duration::from_millis(self.snapshot_interval_ms),
            offsets_retention: Duration::from_millis(self.offsets_retention_ms),
        }
    }
}

/// The `[transaction]` section: transactional messages, per shard (`crate::transaction`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionConfig {
    /// An undecided half is checked back with a live producer of its group this often (its
    /// first check this long after it was stored). Default 60000 (RocketMQ's
    /// `transactionCheckInterval`).
    pub check_interval_ms: u64,
    /// Checks of one half before it is rolled back (and logged). Default 15 (RocketMQ's
    /// `transactionCheckMax`).
    pub check_max: u32,
    /// Undecided halves one shard holds, about 150 bytes each in memory; past it a half is
    /// refused with TRANSACTION_LIMIT. Default 100000.
    pub max_undecided_halves: usize,
    /// Parked CHECK_TRANSACTIONS requests one shard holds. Default 10000.
    pub max_check_waiters: usize,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            check_interval_ms: 60_000,
            check_max: 15,
            max_undecided_halves: 100_000,
            max_check_waiters: 10_000,
        }
    }
}

impl TransactionConfig {
    /// The pure table's schedule and bounds.
    pub fn limits(&self) -> crate::transaction::Limits {
        crate::transaction::Limits {
            check_interval_ms: self.check_interval_ms,
            check_max: self.check_max,
            max_undecided: self.max_undecided_halves,
        }
    }
}
