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
mod tests {
    use super::*;
    use crate::group::membership::Subscription;

    fn member(id: &str) -> MemberInfo {
        MemberInfo {
            client_id: id.into(),
            room: None,
            subscriptions: vec![Subscription { topic: "t".into(), expression: "*".into() }],
        }
    }

    fn q(id: u32) -> LockedQueue {
        LockedQueue { topic: "t".into(), queue_id: id }
    }

    fn config() -> CoordinatorConfig {
        CoordinatorConfig {
            limits: GroupLimits {
                session_timeout: Duration::from_secs(10),
                ..GroupLimits::default()
            },
            max_offsets: 4,
            snapshot_every_commits: 3,
            snapshot_interval: Duration::from_secs(60),
            offsets_retention: RETENTION,
            ..CoordinatorConfig::default()
        }
    }

    const RETENTION: Duration = Duration::from_secs(3600);

    fn commit(c: &mut Coordinator, group: &str, queue_id: u32, now: Instant) {
        let commits = c.check_commit(group, 0, [("t".into(), queue_id, 1)]).unwrap();
        c.apply_commit(commits, now);
    }

    fn queues(c: &Coordinator, group: &str) -> usize {
        c.committed(group, &[]).len()
    }

    #[test]
    fn an_expired_or_departed_member_loses_its_locks_at_once() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config());
        c.heartbeat("g", member("a"), t0).unwrap();
        c.heartbeat("g", member("b"), t0 + Duration::from_secs(5)).unwrap();
        let lease = Duration::from_secs(60);
        assert_eq!(c.lock("g", "a", &[q(0), q(1)], t0, lease).unwrap().len(), 2);
        assert_eq!(c.lock("g", "b", &[q(1), q(2)], t0, lease).unwrap(), vec![q(2)]);
        assert!(matches!(c.lock("g", "x", &[q(3)], t0, lease), Err(GroupError::NotMember { .. })));
        // a's session ends at t0 + 10 s: its locks go with it, long before their lease.
        let changed = c.expire(t0 + Duration::from_secs(10));
        assert_eq!(changed.len(), 1);
        assert_eq!(c.lock_holder("g", &q(0), t0 + Duration::from_secs(11)), None);
        assert_eq!(
            c.lock("g", "b", &[q(1)], t0 + Duration::from_secs(11), lease).unwrap(),
            vec![q(1)]
        );
        // b leaves: its locks go too.
        let before = c.version("g");
        assert!(c.leave("g", "b", t0) > before);
        assert_eq!(c.lock_holder("g", &q(2), t0 + Duration::from_secs(12)), None);
        assert_eq!(c.version("g"), 0, "no members left");
    }

    #[test]
    fn sessions_are_expired_on_time_though_scanned_only_when_one_can_end() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Coordinator::new(config()); // 10 s sessions
        c.heartbeat("g", member("a"), t0).unwrap();
        assert!(c.expire(t0 + s(1)).is_empty());
        c.heartbeat("g", member("a"), t0 + s(5)).unwrap(); // now ends at t0 + 15 s
        c.heartbeat("g", member("b"), t0 + s(6)).unwrap(); // ends at t0 + 16 s
        assert!(c.expire(t0 + s(11)).is_empty(), "the old bound only triggers a scan");
        assert!(c.expire(t0 + s(14)).is_empty());
        assert_eq!(c.expire(t0 + s(15)).len(), 1, "a, exactly at its end");
        assert_eq!(c.members("g").1.len(), 1);
        assert_eq!(c.expire(t0 + s(16)).len(), 1, "then b");
        assert_eq!(c.version("g"), 0);
        // A member joining an empty coordinator is expired on time too.
        c.heartbeat("h", member("x"), t0 + s(20)).unwrap();
        assert!(c.expire(t0 + s(29)).is_empty());
        assert_eq!(c.expire(t0 + s(30)).len(), 1);
    }

    #[test]
    fn a_reset_fences_commits_from_earlier_generations() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config());
        let v1 = c.heartbeat("g", member("a"), t0).unwrap().version;
        let commits = c.check_commit("g", v1, [("t".into(), 0, 10)]).unwrap();
        c.apply_commit(commits, t0);
        let v2 = c.begin_reset("g").unwrap();
        assert!(v2 > v1);
        let commits = c.check_commit("g", 0, [("t".into(), 0, 0)]).unwrap();
        c.apply_commit(commits, t0);
        // a, still working from before the reset, must not overwrite it.
        let e = c.check_commit("g", v1, [("t".into(), 0, 11)]).unwrap_err();
        assert!(matches!(e, CommitError::Stale { reset_version, .. } if reset_version == v2));
        // After it saw the new version it may commit again.
        assert!(c.check_commit("g", v2, [("t".into(), 0, 1)]).is_ok());
        assert_eq!(c.committed("g", &[]), vec![("t".into(), 0, Some(0))]);
        assert_eq!(c.committed("g", &[("t".into(), 5)]), vec![("t".into(), 5, None)]);
        // A group without members has nothing to fence.
        assert_eq!(c.begin_reset("nobody"), None);
    }

    #[test]
    fn offsets_are_bounded_and_snapshots_come_by_count_and_by_time() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config());
        assert!(!c.snapshot_due(t0), "nothing to snapshot");
        let commits = c.check_commit("g", 0, (0..4).map(|i| ("t".to_string(), i, 1))).unwrap();
        c.apply_commit(commits, t0);
        assert!(matches!(
            c.check_commit("g", 0, [("t".into(), 9, 1)]),
            Err(CommitError::Offsets(OffsetError::TooMany(4)))
        ));
        assert!(c.snapshot_due(t0), "4 commits >= 3, and never snapshotted");
        c.snapshot_taken(t0);
        assert!(!c.snapshot_due(t0 + Duration::from_secs(59)));
        assert!(
            c.snapshot_due(t0 + Duration::from_secs(60)),
            "by time: retention must not drop it"
        );
        c.snapshot_taken(t0 + Duration::from_secs(60));
        let commits = c.check_commit("g", 0, (0..3).map(|i| ("t".to_string(), i, 2))).unwrap();
        c.apply_commit(commits, t0);
        assert!(c.snapshot_due(t0 + Duration::from_secs(61)), "by count");
        let o = c.overview();
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].members, o[0].committed_queues), (0, 4));
    }

    #[test]
    fn an_empty_group_s_offsets_go_at_the_retention_after_its_last_commit() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = Coordinator::new(config());
        commit(&mut c, "g", 0, t0);
        commit(&mut c, "g", 1, t0);
        commit(&mut c, "h", 0, t0 + ms(1));
        assert!(c.expire_offsets(t0 + RETENTION - ms(1)).is_empty());
        assert_eq!(queues(&c, "g"), 2, "kept one millisecond before");
        assert_eq!(c.expire_offsets(t0 + RETENTION), vec![("g".to_string(), 2)]);
        assert_eq!((queues(&c, "g"), queues(&c, "h")), (0, 1));
        // A new commit restarts h's count.
        commit(&mut c, "h", 0, t0 + RETENTION);
        assert!(c.expire_offsets(t0 + ms(1) + RETENTION).is_empty());
        assert!(c.expire_offsets(t0 + RETENTION * 2 - ms(1)).is_empty());
        assert_eq!(c.expire_offsets(t0 + RETENTION * 2), vec![("h".to_string(), 1)]);
        assert_eq!((c.offsets_len(), c.retention_len()), (0, 0), "their room is free");
        commit(&mut c, "k", 0, t0 + RETENTION * 2);
        commit(&mut c, "k", 1, t0 + RETENTION * 2);
    }

    #[test]
    fn a_group_with_members_keeps_its_offsets_and_its_count_starts_when_the_last_one_goes() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Sessions of 10 s; members renew them well past the retention.
        let mut c = Coordinator::new(config());
        c.heartbeat("left", member("a"), t0).unwrap();
        c.heartbeat("expired", member("b"), t0).unwrap();
        commit(&mut c, "left", 0, t0);
        commit(&mut c, "expired", 0, t0);
        let mut now = t0;
        while now < t0 + RETENTION * 3 {
            now += s(5);
            c.heartbeat("left", member("a"), now).unwrap();
            c.heartbeat("expired", member("b"), now).unwrap();
            c.expire(now);
            assert!(c.expire_offsets(now).is_empty(), "members at {:?}", now - t0);
        }
        assert_eq!((queues(&c, "left"), queues(&c, "expired")), (1, 1));
        // Off the retention's multiples, so that nothing else counts from the same instant.
        now += s(7);
        c.heartbeat("left", member("a"), now).unwrap();
        c.heartbeat("expired", member("b"), now).unwrap();
        // "left"'s member leaves now; "expired"'s stops heartbeating and expires 10 s later.
        c.leave("left", "a", now);
        assert_eq!(c.expire(now + s(10)).len(), 1);
        assert!(c.expire_offsets(now + RETENTION - s(1)).is_empty());
        assert_eq!(c.expire_offsets(now + RETENTION), vec![("left".to_string(), 1)]);
        assert!(c.expire_offsets(now + s(10) + RETENTION - s(1)).is_empty());
        assert_eq!(c.expire_offsets(now + s(10) + RETENTION), vec![("expired".to_string(), 1)]);
        assert_eq!(c.retention_len(), 0);
    }

    #[test]
    fn offsets_restored_at_start_count_from_the_start() {
        let t0 = Instant::now();
        let mut old = CommittedOffsets::new(4);
        old.apply(OffsetCommit { group: "g".into(), topic: "t".into(), queue_id: 0, offset: 3 })
            .unwrap();
        let mut c = Coordinator::new(config());
        c.restore(old, t0);
        assert_eq!(c.retention_len(), 1);
        assert!(c.expire_offsets(t0 + RETENTION - Duration::from_millis(1)).is_empty());
        assert_eq!(c.expire_offsets(t0 + RETENTION), vec![("g".to_string(), 1)]);
    }

    #[test]
    fn a_group_is_deleted_only_without_members_with_its_offsets_and_reset_fence() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config());
        let v1 = c.heartbeat("g", member("a"), t0).unwrap().version;
        commit(&mut c, "g", 0, t0);
        commit(&mut c, "g", 1, t0);
        commit(&mut c, "h", 0, t0);
        c.begin_reset("g").unwrap();
        let refused = c.check_delete("g").unwrap_err();
        assert_eq!(refused, DeleteError::NotEmpty { group: "g".into(), members: 1 });
        assert_eq!(queues(&c, "g"), 2, "kept");
        c.leave("g", "a", t0);
        assert_eq!(c.check_delete("g"), Ok(true));
        // The snapshot that deletes it is the one taken after it went.
        let deleting = c.snapshot_parts(1 << 20, Some("g"));
        assert_ne!(deleting, c.snapshot_parts(1 << 20, None));
        assert_eq!(c.forget_group("g"), 2);
        assert_eq!(deleting, c.snapshot_parts(1 << 20, None));
        assert_eq!((c.offsets_len(), c.retention_len(), queues(&c, "g")), (1, 1, 0));
        // The reset fence went too: a commit of the old generation is taken.
        assert!(c.check_commit("g", v1, [("t".into(), 0, 1)]).is_ok());
        assert_eq!(c.check_delete("g"), Ok(false), "nothing left to forget");
        assert_eq!(c.forget_group("g"), 0);
        assert_eq!(c.check_delete("never"), Ok(false));
        assert!(matches!(
            c.check_delete(""),
            Err(DeleteError::Group(GroupError::InvalidName { .. }))
        ));
        // A deleted group's retention entry went with it: only "h" lapses later.
        let lapsed = c.expire_offsets(t0 + RETENTION * 2);
        assert_eq!(lapsed, vec![("h".to_string(), 1)]);
    }

    #[test]
    fn a_deleted_topic_s_groups_leave_no_retention_entry() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(config());
        commit(&mut c, "g", 0, t0);
        let commits = c.check_commit("h", 0, [("u".into(), 0, 1)]).unwrap();
        c.apply_commit(commits, t0);
        assert_eq!(c.retention_len(), 2);
        assert_eq!(c.forget_topics(|t| t != "t"), 1);
        assert_eq!(c.retention_len(), 1, "g has no offsets left: bounded by groups with offsets");
    }
}
