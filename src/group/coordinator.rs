//! The consumer-group coordinator's state on one shard: membership, queue locks and committed
//! offsets of the groups whose `crc32c(name) % shards` is this shard, plus when to snapshot the
//! offsets. Pure: no I/O; every call that needs the time takes `now`.
//!
//! The thin task around it (`broker/shard/group.rs`) does the I/O:
//! - a commit is checked here ([`Coordinator::check_commit`]), appended to the shard's
//!   `%SYS%offsets` queue, applied here ([`Coordinator::apply_commit`]) in the same step as its
//!   copy into the log (so the state always equals the log's records in order), and
//!   acknowledged once durable per the flush mode;
//! - a snapshot ([`Coordinator::snapshot_parts`]) is appended the same way, under the same gate,
//!   so it holds exactly the commits before it in the log; replay (`offsets::OffsetsReplay`)
//!   starts at the last complete one. Snapshots come every `snapshot_every_commits` commit
//!   records and at least every `snapshot_interval` while there are offsets, so time retention,
//!   which deletes old segments, never drops the only copy of a live offset;
//! - a timer calls [`Coordinator::expire`] (sessions, then the locks of members gone) and
//!   [`Coordinator::expire_offsets`] (the offsets of groups without members past
//!   `offsets_retention`, see `super::retention`), and snapshots when offsets went;
//! - DELETE_GROUP is checked here ([`Coordinator::check_delete`]: a group without members),
//!   a snapshot without the group's offsets is appended, and the group is forgotten
//!   ([`Coordinator::forget_group`]) as that snapshot is copied into the log, so a restart
//!   does not replay the forgotten commits and a snapshot that cannot be written changes
//!   nothing.
//!
//! Offsets reset fence commits: after a reset the group gets a new version, and a commit that
//! carries an older generation (a member still working from before the reset) is refused, so
//! the reset is not overwritten by an in-flight commit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::locks::{LockedQueue, QueueLocks};
use super::membership::{GroupError, GroupLimits, Groups, Heartbeat, MemberInfo};
use super::offsets::{CommittedOffsets, OffsetCommit, OffsetError};
use super::retention::OffsetsRetention;
use crate::protocol::group::group_summary_bytes;

/// How often lapsed queue locks are swept from memory.
pub const LOCK_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// An optional instant: `None` means "check now".
#[derive(Debug, Clone, Copy)]
struct NextCheck(Option<Instant>);

impl NextCheck {
    fn is_none_or_before(self, t: Instant) -> bool {
        self.0.map_or(true, |at| at <= t)
    }
}

/// Bounds and cadence of one coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    pub limits: GroupLimits,
    pub max_locks: usize,
    pub max_offsets: usize,
    /// Largest FETCH_OFFSETS answer frame one group's committed queues may need (the frame
    /// limit): a commit of a new queue past it is refused.
    pub max_offsets_answer_bytes: usize,
    /// Snapshot after this many commit records.
    pub snapshot_every_commits: u64,
    /// Snapshot at least this often while offsets exist (must be well below retention).
    pub snapshot_interval: Duration,
    /// A group without members and without a commit for this long has its offsets forgotten
    /// (must be positive).
    pub offsets_retention: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            limits: GroupLimits::default(),
            max_locks: 100_000,
            max_offsets: 200_000,
            max_offsets_answer_bytes: crate::protocol::DEFAULT_MAX_FRAME_BYTES,
            snapshot_every_commits: 100_000,
            snapshot_interval: Duration::from_secs(600),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error(
        "group {group}'s offsets were reset at version {reset_version}, after the committer's \
         generation {generation}; fetch the committed offsets again"
    )]
    Stale { group: String, generation: u64, reset_version: u64 },
}

/// Why a group was not deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(
        "group {group} has {members} live member(s): stop its consumers (or wait for their \
         sessions to end) before deleting it"
    )]
    NotEmpty { group: String, members: usize },
}

/// One group as `ListGroups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOverview {
    pub group: String,
    pub members: usize,
    pub version: u64,
    pub committed_queues: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    groups: Groups,
    locks: QueueLocks,
    offsets: CommittedOffsets,
    /// Last activity of each group with offsets, for `offsets_retention`.
    retention: OffsetsRetention,
    /// Group -> the version its offsets were last reset at (at most `max_groups` kept; the
    /// oldest fence is dropped first).
    resets: BTreeMap<String, u64>,
    commits_since_snapshot: u64,
    last_snapshot: Option<Instant>,
    locks_swept_at: NextCheck,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        Coordinator {
            groups: Groups::new(config.limits),
            locks: QueueLocks::new(config.max_locks),
            offsets: CommittedOffsets::new(config.max_offsets),
            retention: OffsetsRetention::new(config.offsets_retention),
            resets: BTreeMap::new(),
            commits_since_snapshot: 0,
            last_snapshot: None,
            locks_swept_at: NextCheck(None),
            config,
        }
    }

    /// Installs the offsets replayed from the log at startup, `now`: their groups' retention
    /// counts from it (the log does not say when a group was last active).
    pub fn restore(&mut self, offsets: CommittedOffsets, now: Instant) {
        self.offsets = offsets;
        self.retention = OffsetsRetention::new(self.config.offsets_retention);
        for group in self.offsets.group_names() {
            self.retention.touch(&group, now);
        }
    }

    /// Forgets every group's committed offsets of the topics `exists` says are gone (deleted:
    /// a topic created again under a name starts its queues at 0). Returns how many went.
    pub fn forget_topics(&mut self, exists: impl Fn(&str) -> bool) -> usize {
        let gone = self.offsets.retain_topics(exists);
        if gone > 0 {
            let offsets = &self.offsets;
            self.retention.retain(|g| offsets.has_group(g));
        }
        gone
    }

    /// DELETE_GROUP in two steps, as a commit: checked here (refused while the group has
    /// members); true when it has offsets to forget. Then the snapshot without them
    /// ([`Self::snapshot_parts`]) is appended, and [`Self::forget_group`] applies the deletion
    /// as its last part is copied into the log, so the state always equals the log's.
    pub fn check_delete(&self, group: &str) -> Result<bool, DeleteError> {
        self.groups.check_group_name(group)?;
        if let Some((_, members)) = self.groups.members(group) {
            return Err(DeleteError::NotEmpty { group: group.to_owned(), members: members.len() });
        }
        Ok(self.offsets.has_group(group))
    }

    /// Forgets `group`'s committed offsets and reset fence; how many queues' offsets went.
    pub fn forget_group(&mut self, group: &str) -> usize {
        self.retention.forget(group);
        self.resets.remove(group);
        self.offsets.remove_group(group)
    }

    /// Forgets the offsets of every group without members whose last activity (commit, or
    /// last member leaving or expiring) is `offsets_retention` or more before `now`. The
    /// groups that lost offsets, with how many queues each.
    pub fn expire_offsets(&mut self, now: Instant) -> Vec<(String, usize)> {
        let groups = &self.groups;
        let lapsed = self.retention.lapsed(now, |g| groups.has_members(g));
        lapsed
            .into_iter()
            .map(|g| {
                let n = self.forget_group(&g);
                (g, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The last member of `group` left or expired: its retention counts from `now`.
    fn emptied(&mut self, group: &str, now: Instant) {
        if !self.groups.has_members(group) && self.offsets.has_group(group) {
            self.retention.touch(group, now);
        }
    }

    pub fn heartbeat(
        &mut self,
        group: &str,
        member: MemberInfo,
        now: Instant,
    ) -> Result<Heartbeat, GroupError> {
        self.groups.heartbeat(group, member, now)
    }

    /// Whether `group` is a name a member could join (empty or too long is refused).
    pub fn check_group_name(&self, group: &str) -> Result<(), GroupError> {
        self.groups.check_group_name(group)
    }

    /// A member leaves: its locks go at once. The group's version after, or 0 if it was not a
    /// member.
    pub fn leave(&mut self, group: &str, client_id: &str, now: Instant) -> u64 {
        self.locks.release_member(group, client_id);
        let version = self.groups.leave(group, client_id).unwrap_or(0);
        if version != 0 {
            self.emptied(group, now);
        }
        version
    }

    /// The group's version (0 for a group without members) and members.
    pub fn members(&self, group: &str) -> (u64, Vec<MemberInfo>) {
        self.groups.members(group).unwrap_or_default()
    }

    pub fn version(&self, group: &str) -> u64 {
        self.members(group).0
    }

    /// Expires members whose session ended and the locks they held, and locks whose lease
    /// ended. The groups whose member list changed, with their new versions.
    ///
    /// Called on every tick: the membership's deadline index visits only the sessions that
    /// ended (O(expired · log n)). Lapsed locks are dropped at most once per [`LOCK_SWEEP_INTERVAL`] (a lapsed lock is
    /// already free for the next member asking; the sweep only returns its memory).
    pub fn expire(&mut self, now: Instant) -> Vec<(String, u64)> {
        let changed = self.groups.expire(now);
        for (group, _) in &changed {
            let groups = &self.groups;
            self.locks.release_absent(group, |client| groups.is_member(group, client));
            self.emptied(group, now);
        }
        if self
            .locks_swept_at
            .is_none_or_before(now.checked_sub(LOCK_SWEEP_INTERVAL).unwrap_or(now))
        {
            self.locks.expire(now);
            self.locks_swept_at = NextCheck(Some(now));
        }
        changed
    }

    /// The commits a `CommitOffsets` request would make, if it may: `generation` 0 (a tool)
    /// or one not older than the group's last reset, room for the new entries, and room for
    /// them in the group's FETCH_OFFSETS answer (one frame).
    pub fn check_commit(
        &self,
        group: &str,
        generation: u64,
        offsets: impl IntoIterator<Item = (String, u32, u64)>,
    ) -> Result<Vec<OffsetCommit>, CommitError> {
        if let Some(&reset_version) = self.resets.get(group) {
            if generation != 0 && generation < reset_version {
                return Err(CommitError::Stale {
                    group: group.to_owned(),
                    generation,
                    reset_version,
                });
            }
        }
        let commits: Vec<OffsetCommit> = offsets
            .into_iter()
            .map(|(topic, queue_id, offset)| OffsetCommit {
                group: group.to_owned(),
                topic,
                queue_id,
                offset,
            })
            .collect();
        self.offsets.check_all(&commits, self.config.max_offsets_answer_bytes)?;
        Ok(commits)
    }

    /// Applies commits checked by [`Self::check_commit`], as their record is copied into the
    /// log (nothing else may be appended to the system queue between the check and this).
    /// A commit is its group's activity: its retention counts from `now`.
    pub fn apply_commit(&mut self, commits: Vec<OffsetCommit>, now: Instant) {
        self.commits_since_snapshot += commits.len() as u64;
        for c in commits {
            self.retention.touch(&c.group, now);
            self.offsets.apply(c).expect("checked under the same gate");
        }
    }

    /// Fences commits of generations before now for `group` (its offsets are being reset) and
    /// gives the group a new version so its members fetch their offsets again. The new version
    /// if the group has members.
    pub fn begin_reset(&mut self, group: &str) -> Option<u64> {
        let version = self.groups.bump(group)?;
        if !self.resets.contains_key(group) && self.resets.len() >= self.config.limits.max_groups {
            let oldest = self.resets.iter().min_by_key(|(_, v)| **v).map(|(g, _)| g.clone());
            if let Some(g) = oldest {
                self.resets.remove(&g);
            }
        }
        self.resets.insert(group.to_owned(), version);
        Some(version)
    }

    /// The committed offset of each queue; every committed queue of the group when `queues` is
    /// empty.
    pub fn committed(
        &self,
        group: &str,
        queues: &[(String, u32)],
    ) -> Vec<(String, u32, Option<u64>)> {
        if queues.is_empty() {
            return self
                .offsets
                .group(group)
                .into_iter()
                .map(|(t, q, o)| (t, q, Some(o)))
                .collect();
        }
        queues.iter().map(|(t, q)| (t.clone(), *q, self.offsets.get(group, t, *q))).collect()
    }

    /// Locks queues for a member of `group` (only members may: a consumer whose session
    /// expired must join again before it processes anything in order).
    pub fn lock(
        &mut self,
        group: &str,
        client_id: &str,
        queues: &[LockedQueue],
        now: Instant,
        lease: Duration,
    ) -> Result<Vec<LockedQueue>, GroupError> {
        if !self.groups.is_member(group, client_id) {
            return Err(GroupError::NotMember {
                group: group.to_owned(),
                client_id: client_id.to_owned(),
            });
        }
        Ok(self.locks.lock(group, client_id, queues, now, lease))
    }

    pub fn unlock(&mut self, group: &str, client_id: &str, queues: &[LockedQueue]) -> usize {
        self.locks.unlock(group, client_id, queues)
    }

    pub fn lock_holder(&self, group: &str, queue: &LockedQueue, now: Instant) -> Option<&str> {
        self.locks.holder(group, queue, now)
    }

    /// Whether the offsets should be snapshotted now.
    pub fn snapshot_due(&self, now: Instant) -> bool {
        if self.offsets.is_empty() {
            return false;
        }
        self.commits_since_snapshot >= self.config.snapshot_every_commits
            || self
                .last_snapshot
                .map_or(true, |t| now.saturating_duration_since(t) >= self.config.snapshot_interval)
    }

    /// The snapshot to append, in parts of about `max_part_bytes`; without group `without`'s
    /// offsets when given (the snapshot that deletes it, [`Self::check_delete`]).
    pub fn snapshot_parts(&self, max_part_bytes: usize, without: Option<&str>) -> Vec<Vec<u8>> {
        self.offsets.snapshot_parts(max_part_bytes, without)
    }

    /// The snapshot was appended (or its append failed and the next try waits an interval).
    pub fn snapshot_taken(&mut self, now: Instant) {
        self.commits_since_snapshot = 0;
        self.last_snapshot = Some(now);
    }

    /// Groups with members or committed offsets, sorted by name.
    pub fn overview(&self) -> Vec<GroupOverview> {
        self.overview_page("", usize::MAX, usize::MAX).0
    }

    /// A page of LIST_GROUPS: the groups with members or committed offsets whose names sort
    /// after `after`, in name order, as many as fit `max_bytes` of answer
    /// ([`group_summary_bytes`] each) and `max_items` (at least one, whatever their size);
    /// and whether groups after the last one returned remain.
    pub fn overview_page(
        &self,
        after: &str,
        max_bytes: usize,
        max_items: usize,
    ) -> (Vec<GroupOverview>, bool) {
        // Only the names after `after` are sorted, and none is copied until it is listed.
        let mut with_members: Vec<&str> = self.groups.names().filter(|g| *g > after).collect();
        with_members.sort_unstable();
        let mut with_members = with_members.into_iter().peekable();
        let mut with_offsets = self.offsets.group_names_after(after).peekable();
        let mut page = Vec::new();
        let mut bytes = 0usize;
        loop {
            // The next name of either sorted list (a group in both, once).
            let name = match (with_members.peek(), with_offsets.peek()) {
                (None, None) => return (page, false),
                (Some(m), Some(o)) if m == o => {
                    with_offsets.next();
                    with_members.next()
                }
                (Some(m), Some(o)) if m < o => with_members.next(),
                (Some(_), None) => with_members.next(),
                _ => with_offsets.next(),
            }
            .expect("peeked")
            .to_owned();
            let b = group_summary_bytes(&name);
            if !page.is_empty() && (page.len() >= max_items || bytes + b > max_bytes) {
                return (page, true);
            }
            bytes += b;
            let (version, members) = self.groups.version_and_size(&name).unwrap_or_default();
            page.push(GroupOverview {
                members,
                version,
                committed_queues: self.offsets.group_len(&name),
                group: name,
            });
        }
    }

    /// Every committed offset this coordinator holds (for the metrics endpoint).
    pub fn committed_offsets(&self) -> &CommittedOffsets {
        &self.offsets
    }

    pub fn offsets_len(&self) -> usize {
        self.offsets.len()
    }

    /// Groups whose retention is tracked (every group with offsets, no other).
    pub fn retention_len(&self) -> usize {
        self.retention.len()
    }

    /// Bytes of membership charged against the byte budget.
    pub fn membership_bytes(&self) -> usize {
        self.groups.membership_bytes()
    }

    /// Members of every group.
    pub fn member_count(&self) -> usize {
        self.groups.member_count()
    }

    /// Queue locks held in the table (lapsed ones until the next sweep).
    pub fn locks_len(&self) -> usize {
        self.locks.len()
    }
}

#[cfg(test)]
mod tests;
