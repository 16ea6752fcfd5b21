//! What ends committed offsets on the group handler (`shard/group.rs`): a deleted topic's or
//! group's offsets are forgotten and stay gone after a crash or power cut, a deletion is
//! answered as done only once durable, an empty group's offsets go at their retention; and
//! the log's retention keeps the segment of the last offsets snapshot until a newer one.

use super::group::{
    apply_topics, commit, committed, delete, group_call, join, removed, sync_flush,
};
use super::*;

use crate::broker::shard::group::SYS_OFFSETS;
use crate::protocol::group::GroupRequest;

#[test]
fn a_deleted_topic_s_committed_offsets_are_forgotten_also_after_a_restart() {
    run(|| async {
        let dir = SimDir::new(67);
        let clock = runtime::system_clock();
        let s = shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone()).await;
        s.start_groups().await.unwrap();
        group_call(&s, commit("g", 0, &[(0, 7), (1, 9)])).await.unwrap();
        assert_eq!(committed(&s, "g").await, vec![(0, 7), (1, 9)]);
        let snapshots_before = s.log.offsets(SYS_OFFSETS).next;
        // Shard 0 deletes "t" and broadcasts its table, then creates "t" again: the new
        // topic's queues start at 0, so the group's old offsets would put it past their ends.
        let apply = |table: &TopicTable| apply_topics(&s, table);
        let mut table = s.topics.borrow().clone();
        table.delete("t").unwrap();
        apply(&table).await.unwrap().unwrap();
        assert_eq!(committed(&s, "g").await, vec![], "forgotten before the deletion's answer");
        table.create("t", 2, 16, 16).unwrap();
        apply(&table).await.unwrap().unwrap();
        assert_eq!(committed(&s, "g").await, vec![]);
        // The forgetting was snapshotted before the answer, so a restart does not replay the
        // old commits.
        assert!(s.log.offsets(SYS_OFFSETS).next > snapshots_before, "no snapshot was written");
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone()).await;
        s.start_groups().await.unwrap();
        assert_eq!(committed(&s, "g").await, vec![]);
    });
}

/// A shard on `dir` in async flush mode (the offsets log made durable by the flusher only),
/// its groups started.
async fn async_flush_shard(dir: &SimDir) -> Rc<Shard<SimLog>> {
    let async_flush = |st: &mut crate::storage::StorageConfig| {
        st.flush_mode = crate::storage::FlushMode::Async;
    };
    let s = shard_configured(dir.clone(), async_flush, |_| {}, runtime::system_clock()).await;
    s.start_groups().await.unwrap();
    s
}

/// [`async_flush_shard`], with group "g"'s `offsets` of topic "t" committed and flushed.
async fn async_flush_shard_committed(dir: &SimDir, offsets: &[(u32, u64)]) -> Rc<Shard<SimLog>> {
    let s = async_flush_shard(dir).await;
    group_call(&s, commit("g", 0, offsets)).await.unwrap();
    s.log.flush().await.unwrap();
    s
}

#[test]
fn a_topic_deleted_and_created_again_does_not_get_its_old_offsets_back_after_a_power_cut() {
    // Async flush: topics.json is written durably at once, the offsets log only by the
    // flusher. The deletion's answer must wait for the snapshot without the topic's offsets
    // to be durable, or a topic created again under its name gets the old offsets back after
    // a power cut (past its new queues' ends: its groups would skip to the end).
    run(|| async {
        let dir = SimDir::new(69);
        let s = async_flush_shard_committed(&dir, &[(0, 7), (1, 9)]).await;
        let apply = |table: &TopicTable| apply_topics(&s, table);
        let mut table = s.topics.borrow().clone();
        table.delete("t").unwrap();
        apply(&table).await.unwrap().unwrap();
        table.create("t", 2, 16, 16).unwrap();
        apply(&table).await.unwrap().unwrap();
        // The power goes right after the answers.
        dir.crash();
        drop(s);
        let s = async_flush_shard(&dir).await;
        assert_eq!(committed(&s, "g").await, vec![]);
    });
}

#[test]
fn a_topic_deletion_whose_offsets_snapshot_is_not_durable_is_not_answered_as_done() {
    // The fdatasync under the snapshot that forgets the deleted topic's offsets fails: the
    // deletion's answer says so, instead of claiming what a power cut could undo.
    run(|| async {
        let dir = SimDir::new(70);
        let s = async_flush_shard_committed(&dir, &[(0, 7)]).await;
        dir.fail_syncs(1);
        let mut table = s.topics.borrow().clone();
        table.delete("t").unwrap();
        let e = apply_topics(&s, &table).await.unwrap().unwrap_err();
        assert!(e.contains("snapshot"), "{e}");
        assert_eq!(s.topics.borrow().get("t"), None, "the table is applied all the same");
    });
}

#[test]
fn a_deleted_group_s_offsets_are_gone_free_their_room_and_stay_gone_after_a_crash() {
    run(|| async {
        let dir = SimDir::new(68);
        let clock = runtime::system_clock();
        let room_for_two = |c: &mut Config| c.group.max_committed_offsets = 2;
        let s = shard_configured(dir.clone(), sync_flush, room_for_two, clock.clone()).await;
        s.start_groups().await.unwrap();
        // A client commits for a made-up group without joining, and fills the shard's room.
        group_call(&s, commit("junk", 0, &[(0, 7), (1, 9)])).await.unwrap();
        let e = group_call(&s, commit("g", 0, &[(0, 1)])).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::GROUP_LIMIT);
        assert_eq!(removed(group_call(&s, delete("junk")).await), 2);
        assert_eq!(committed(&s, "junk").await, vec![]);
        group_call(&s, commit("g", 0, &[(0, 1)])).await.unwrap();
        // Unknown group: nothing to forget. A name no member could join: refused.
        assert_eq!(removed(group_call(&s, delete("never")).await), 0);
        let e = group_call(&s, delete("")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_ARGUMENT);
        // The answer came after a durable snapshot: a power cut right after it does not bring
        // the deleted commits back.
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, room_for_two, clock.clone()).await;
        s.start_groups().await.unwrap();
        assert_eq!(committed(&s, "junk").await, vec![]);
        assert_eq!(committed(&s, "g").await, vec![(0, 1)]);
    });
}

#[test]
fn a_group_with_a_live_member_is_not_deleted_and_keeps_its_offsets() {
    run(|| async {
        let s =
            shard_configured(SimDir::new(69), sync_flush, |_| {}, runtime::system_clock()).await;
        s.start_groups().await.unwrap();
        group_call(&s, join("g", "a")).await.unwrap();
        group_call(&s, commit("g", 0, &[(0, 4)])).await.unwrap();
        let e = group_call(&s, delete("g")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::GROUP_NOT_EMPTY);
        assert!(e.message.contains("1 live member"), "{}", e.message);
        assert_eq!(committed(&s, "g").await, vec![(0, 4)]);
        group_call(&s, GroupRequest::Leave { group: "g".into(), client_id: "a".into() })
            .await
            .unwrap();
        assert_eq!(removed(group_call(&s, delete("g")).await), 1);
        assert_eq!(committed(&s, "g").await, vec![]);
    });
}

#[test]
fn an_empty_group_s_offsets_go_at_the_retention_and_stay_gone_after_a_crash() {
    run(|| async {
        let dir = SimDir::new(70);
        let clock = runtime::SimClock::new(1_700_000_000_000);
        let retention = Duration::from_secs(3600);
        let config = |c: &mut Config| c.group.offsets_retention_ms = 3_600_000;
        let s = shard_configured(dir.clone(), sync_flush, config, clock.clone()).await;
        s.start_groups().await.unwrap();
        group_call(&s, commit("g", 0, &[(0, 3), (1, 4)])).await.unwrap();
        clock.advance(retention - Duration::from_millis(1));
        s.group_tick().await; // the first snapshot (never snapshotted): it holds g's offsets
        assert_eq!(committed(&s, "g").await, vec![(0, 3), (1, 4)], "kept 1 ms before");
        let snapshots_before = s.log.offsets(SYS_OFFSETS).next;
        clock.advance(Duration::from_millis(1));
        s.group_tick().await;
        assert_eq!(committed(&s, "g").await, vec![]);
        // No snapshot is due by count or interval: this one is for the forgotten offsets.
        assert!(s.log.offsets(SYS_OFFSETS).next > snapshots_before, "the tick snapshotted");
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, config, clock.clone()).await;
        s.start_groups().await.unwrap();
        assert_eq!(committed(&s, "g").await, vec![]);
    });
}

#[test]
fn a_deleted_group_does_not_get_its_offsets_back_after_a_power_cut() {
    // Async flush: the offsets log is made durable by the flusher. DELETE_GROUP's answer says
    // the group's offsets are forgotten; a power cut right after it must not bring them back.
    run(|| async {
        let dir = SimDir::new(71);
        let s = async_flush_shard_committed(&dir, &[(0, 7), (1, 9)]).await;
        assert_eq!(removed(group_call(&s, delete("g")).await), 2);
        // The power goes right after the answer.
        dir.crash();
        drop(s);
        let s = async_flush_shard(&dir).await;
        assert_eq!(committed(&s, "g").await, vec![]);
    });
}

#[test]
fn a_group_deletion_whose_snapshot_is_not_durable_is_not_answered_as_done() {
    run(|| async {
        let dir = SimDir::new(72);
        let s = async_flush_shard_committed(&dir, &[(0, 7)]).await;
        dir.fail_syncs(1);
        let e = group_call(&s, delete("g")).await.unwrap_err();
        assert!(e.message.contains("snapshot"), "{e:?}");
    });
}

#[test]
fn a_group_deletion_refused_for_a_full_disk_changes_nothing_and_is_done_once_space_is_back() {
    // The snapshot that forgets the group cannot be written: the group keeps its offsets
    // here as in the log. Deleting it again once there is room writes that snapshot, so the
    // offsets do not come back after a restart.
    run(|| async {
        let dir = SimDir::new(73);
        let small = |st: &mut crate::storage::StorageConfig| {
            sync_flush(st);
            st.segment_size_bytes = 256 << 10;
            st.max_batch_bytes = 64 << 10;
            st.disk_full_retry_ms = 5;
        };
        let shard = || shard_configured(dir.clone(), small, |_| {}, runtime::system_clock());
        let s = shard().await;
        s.start_groups().await.unwrap();
        group_call(&s, commit("g", 0, &[(0, 7)])).await.unwrap();
        // Room for the first segment, not for the next one: fill it.
        dir.set_capacity(Some(300 << 10));
        while call(&s, produce(0, 50)).await.is_ok() {}
        // To the last bytes: a commit is smaller than the snapshot of "g" and "x".
        while group_call(&s, commit("x", 0, &[(0, 1)])).await.is_ok() {}
        let e = group_call(&s, delete("g")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::DISK_FULL, "{e:?}");
        assert_eq!(committed(&s, "g").await, vec![(0, 7)], "forgotten here, not in the log");
        dir.set_capacity(None);
        let t = Instant::now();
        let removed = loop {
            match group_call(&s, delete("g")).await {
                Ok(r) => break removed(Ok(r)),
                Err(e) => assert_eq!(e.code, ErrorCode::DISK_FULL, "{e:?}"),
            }
            assert!(t.elapsed() < Duration::from_secs(5), "the deletion never went through");
            runtime::sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(removed, 1);
        dir.crash();
        drop(s);
        let s = shard().await;
        s.start_groups().await.unwrap();
        assert_eq!(committed(&s, "g").await, vec![], "the deleted group's offsets came back");
    });
}

/// Retention by age or disk usage (`disk_max_used_ratio` deletes segments of any age) never
/// deletes the committed offsets' last complete snapshot, nor the commits after it: the
/// offsets queue is pinned there. A run the pin holds back makes the coordinator take a
/// snapshot at its next tick, which moves the pin up, and the next run deletes the rest.
#[test]
fn retention_keeps_the_committed_offsets_and_a_snapshot_lets_it_go_on() {
    run(|| async {
        let dir = SimDir::new(88);
        let clock = runtime::system_clock();
        let s = shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone()).await;
        s.start_groups().await.unwrap();
        group_call(&s, commit("g", 0, &[(0, 7), (1, 9)])).await.unwrap();
        let segments = roll_segments(&s, 75).await;
        let far = far_future_ms();
        // The commits sit in the first segment: nothing may go.
        assert_eq!(s.log.enforce_retention(far).await.unwrap(), vec![]);
        let probe = s.log.metrics().probe;
        assert_eq!(probe.retention_pinned_segments, segments as u64 - 1);
        assert_eq!(probe.retention_expired_segments, 0);
        // Held back by the offsets: the next tick snapshots them (neither the commit count
        // nor the interval asks for one yet), and the run after deletes up to the snapshot.
        s.group_tick().await;
        s.group_tick().await;
        let deleted = s.log.enforce_retention(far).await.unwrap();
        assert_eq!(deleted.len(), segments - 1, "{deleted:?}");
        let probe = s.log.metrics().probe;
        assert_eq!(probe.retention_pinned_segments, 0);
        assert_eq!(probe.retention_expired_segments, segments as u64 - 1);
        assert_eq!(probe.retention_disk_segments, 0);
        // A commit after the snapshot; then a restart after a power cut.
        group_call(&s, commit("g", 0, &[(1, 10)])).await.unwrap();
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone()).await;
        s.start_groups().await.unwrap();
        assert_eq!(committed(&s, "g").await, vec![(0, 7), (1, 10)]);
        // The restarted shard pins the snapshot it replayed from.
        roll_segments(&s, 40).await;
        assert_eq!(s.log.enforce_retention(far).await.unwrap(), vec![]);
    });
}
