//! The coordinator's state machine on a simulated clock: sessions, locks, commits and their
//! fences, bounds, snapshots and retention of offsets.

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
        limits: GroupLimits { session_timeout: Duration::from_secs(10), ..GroupLimits::default() },
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
    assert_eq!(c.lock("g", "b", &[q(1)], t0 + Duration::from_secs(11), lease).unwrap(), vec![q(1)]);
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
    assert!(c.snapshot_due(t0 + Duration::from_secs(60)), "by time: retention must not drop it");
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
    assert!(matches!(c.check_delete(""), Err(DeleteError::Group(GroupError::InvalidName { .. }))));
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
