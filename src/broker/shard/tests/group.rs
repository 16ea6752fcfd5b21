//! The consumer-group handler (`shard/group.rs`) on one shard over the real log on the
//! simulated directory: durable commits and replay, watches, locks, resets.

use super::*;

use crate::protocol::group::{GroupQueue, GroupRequest, GroupResponse, QueueCommit, ResetTo};

pub(super) fn group_call(
    s: &Rc<Shard<SimLog>>,
    request: GroupRequest,
) -> impl std::future::Future<Output = Reply> + '_ {
    call(s, Request::Group(request))
}

pub(super) fn join(group: &str, client: &str) -> GroupRequest {
    GroupRequest::Heartbeat {
        group: group.into(),
        client_id: client.into(),
        room: String::new(),
        subscriptions: vec![("t".into(), "*".into())],
    }
}

/// Hands the shard a topic table as shard 0 broadcasts one: answered once it applied it.
pub(super) fn apply_topics(
    s: &Rc<Shard<SimLog>>,
    table: &TopicTable,
) -> futures::channel::oneshot::Receiver<Result<(), String>> {
    let (ack, rx) = oneshot::channel();
    s.apply_control(Control::Topics { table: table.clone(), ack });
    rx
}

pub(super) fn commit(group: &str, generation: u64, offsets: &[(u32, u64)]) -> GroupRequest {
    GroupRequest::CommitOffsets {
        group: group.into(),
        generation,
        offsets: offsets
            .iter()
            .map(|&(queue_id, offset)| QueueCommit { topic: "t".into(), queue_id, offset })
            .collect(),
    }
}

pub(super) async fn committed(s: &Rc<Shard<SimLog>>, group: &str) -> Vec<(u32, i64)> {
    let r = group_call(s, GroupRequest::FetchOffsets { group: group.into(), queues: vec![] }).await;
    let Ok(Response::Group(GroupResponse::FetchOffsets { offsets })) = r else { panic!("{r:?}") };
    offsets.into_iter().map(|(q, o)| (q.queue_id, o)).collect()
}

pub(super) fn version_of(r: &Reply) -> u64 {
    match r {
        Ok(Response::Group(GroupResponse::Heartbeat { version, .. }))
        | Ok(Response::Group(GroupResponse::Leave { version }))
        | Ok(Response::Group(GroupResponse::Watch { version })) => *version,
        other => panic!("{other:?}"),
    }
}

pub(super) fn sync_flush(st: &mut crate::storage::StorageConfig) {
    st.flush_mode = crate::storage::FlushMode::Sync;
}

pub(super) fn delete(group: &str) -> GroupRequest {
    GroupRequest::Delete { group: group.into() }
}

pub(super) fn removed(r: Reply) -> u32 {
    match r {
        Ok(Response::Group(GroupResponse::Delete { removed })) => removed,
        other => panic!("{other:?}"),
    }
}

#[test]
fn acknowledged_commits_survive_a_crash_and_replay_from_the_last_snapshot() {
    run(|| async {
        let dir = SimDir::new(61);
        let clock = runtime::system_clock();
        let few_commits = |c: &mut Config| c.group.snapshot_every_commits = 10;
        let s = shard_configured(dir.clone(), sync_flush, few_commits, clock.clone()).await;
        s.start_groups().await.unwrap();
        for i in 0..25u64 {
            let r = group_call(&s, commit("g", 0, &[(0, i), (1, 100 + i)])).await.unwrap();
            assert!(matches!(
                r,
                Response::Group(GroupResponse::CommitOffsets { status: SendStatus::SendOk })
            ));
            if i % 4 == 3 {
                s.group_tick().await; // takes a snapshot once 10 commit records piled up
            }
        }
        assert_eq!(committed(&s, "g").await, vec![(0, 24), (1, 124)]);
        // Power cut: only what the log made durable remains (sync mode: every ack).
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, few_commits, clock.clone()).await;
        let recovered = s.start_groups().await.unwrap();
        assert_eq!(committed(&s, "g").await, vec![(0, 24), (1, 124)]);
        assert!(recovered.from > 0, "replay starts at a snapshot: {recovered:?}");
        assert!(recovered.records < 20, "not the whole queue: {recovered:?}");
        // Nothing of it is visible as a topic, and unknown queues are refused.
        let e = group_call(&s, commit("g", 0, &[(7, 1)])).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::UNKNOWN_QUEUE);
        assert_eq!(committed(&s, "other").await, vec![]);
    });
}

#[test]
fn a_snapshot_whose_fsync_fails_loses_no_acknowledged_commit() {
    run(|| async {
        let dir = SimDir::new(62);
        let clock = runtime::system_clock();
        let s = shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone()).await;
        s.start_groups().await.unwrap();
        group_call(&s, commit("g", 0, &[(0, 5)])).await.unwrap();
        // The snapshot is appended, its fsync fails: the log stops; nothing acknowledged is lost.
        dir.fail_syncs(1);
        let _ = s.snapshot_offsets().await;
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone()).await;
        s.start_groups().await.unwrap();
        assert_eq!(committed(&s, "g").await, vec![(0, 5)]);
    });
}

#[test]
fn a_watch_returns_when_the_group_changes_and_members_expire() {
    run(|| async {
        let clock = runtime::SimClock::new(1_700_000_000_000);
        let short = |c: &mut Config| c.group.session_timeout_ms = 10_000;
        let s = shard_configured(SimDir::new(63), |_| {}, short, clock.clone()).await;
        let v1 = version_of(&group_call(&s, join("g", "a")).await);
        // Unchanged heartbeat: same version; a watch on it parks.
        assert_eq!(version_of(&group_call(&s, join("g", "a")).await), v1);
        let watch = GroupRequest::Watch { group: "g".into(), version: v1, max_wait_ms: 30_000 };
        let (watched, joined) = futures::join!(group_call(&s, watch.clone()), async {
            runtime::yield_once().await;
            group_call(&s, join("g", "b")).await
        });
        let v2 = version_of(&joined);
        assert!(v2 > v1);
        assert_eq!(version_of(&watched), v2, "woken by the join, not by its deadline");
        // A watch with a stale version answers at once.
        let stale = GroupRequest::Watch { group: "g".into(), version: v1, max_wait_ms: 30_000 };
        assert_eq!(version_of(&group_call(&s, stale).await), v2);
        // b keeps its session, a does not: the tick expires a and wakes the watch.
        clock.advance(Duration::from_secs(6));
        group_call(&s, join("g", "b")).await.unwrap();
        let watch = GroupRequest::Watch { group: "g".into(), version: v2, max_wait_ms: 30_000 };
        let (watched, ()) = futures::join!(group_call(&s, watch), async {
            runtime::yield_once().await;
            clock.advance(Duration::from_secs(5));
            s.group_tick().await;
        });
        assert!(version_of(&watched) > v2);
        let r = group_call(&s, GroupRequest::Members { group: "g".into() }).await;
        let Ok(Response::Group(GroupResponse::Members { members, .. })) = r else { panic!() };
        assert_eq!(members.iter().map(|m| m.client_id.as_str()).collect::<Vec<_>>(), ["b"]);
    });
}

#[test]
fn locks_belong_to_members_and_a_reset_fences_older_commits() {
    run(|| async {
        let clock = runtime::system_clock();
        let s = shard_configured(SimDir::new(64), |_| {}, |_| {}, clock).await;
        s.start_groups().await.unwrap();
        let q = |queue_id| GroupQueue { topic: "t".into(), queue_id };
        let lock = |client: &str, queues: Vec<GroupQueue>| GroupRequest::Lock {
            group: "g".into(),
            client_id: client.into(),
            lease_ms: 0,
            queues,
        };
        let e = group_call(&s, lock("a", vec![q(0)])).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::UNKNOWN_MEMBER, "join first");
        let va = version_of(&group_call(&s, join("g", "a")).await);
        group_call(&s, join("g", "b")).await.unwrap();
        let r = group_call(&s, lock("a", vec![q(0), q(1)])).await.unwrap();
        assert_eq!(r, Response::Group(GroupResponse::Lock { granted: vec![q(0), q(1)] }));
        let r = group_call(&s, lock("b", vec![q(1)])).await.unwrap();
        assert_eq!(r, Response::Group(GroupResponse::Lock { granted: vec![] }));
        // a leaves: its locks go with it.
        group_call(&s, GroupRequest::Leave { group: "g".into(), client_id: "a".into() })
            .await
            .unwrap();
        let r = group_call(&s, lock("b", vec![q(1)])).await.unwrap();
        assert_eq!(r, Response::Group(GroupResponse::Lock { granted: vec![q(1)] }));

        // Offsets: stored data 0..3 on queue 0, a commit at 3, a reset to the earliest.
        for _ in 0..3 {
            call(&s, produce(0, 1)).await.unwrap();
        }
        group_call(&s, commit("g", va, &[(0, 3)])).await.unwrap();
        let reset =
            GroupRequest::Reset { group: "g".into(), topic: "t".into(), to: ResetTo::Earliest };
        let r = group_call(&s, reset).await.unwrap();
        assert_eq!(r, Response::Group(GroupResponse::Reset { offsets: vec![(0, 0), (1, 0)] }));
        assert_eq!(committed(&s, "g").await, vec![(0, 0), (1, 0)]);
        // A commit from before the reset must not undo it.
        let e = group_call(&s, commit("g", va, &[(0, 3)])).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::STALE_GENERATION);
        let reset =
            GroupRequest::Reset { group: "g".into(), topic: "t".into(), to: ResetTo::Offset(99) };
        let r = group_call(&s, reset).await.unwrap();
        assert_eq!(
            r,
            Response::Group(GroupResponse::Reset { offsets: vec![(0, 3), (1, 0)] }),
            "clamped"
        );
        // The request of clients before paging: the first page, without `more`.
        let r = group_call(&s, GroupRequest::ListGroups { after: None }).await.unwrap();
        let Response::Group(GroupResponse::ListGroups { groups, more: None }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].members, groups[0].committed_queues), (1, 2));
    });
}

fn member_lock(client: &str, lease_ms: u32, queues: Vec<GroupQueue>) -> GroupRequest {
    GroupRequest::Lock { group: "g".into(), client_id: client.into(), lease_ms, queues }
}

#[test]
fn locks_are_granted_on_existing_queues_only() {
    run(|| async {
        let s = shard_configured(SimDir::new(65), |_| {}, |_| {}, runtime::system_clock()).await;
        s.start_groups().await.unwrap();
        group_call(&s, join("g", "a")).await.unwrap();
        let q = |topic: &str, queue_id| GroupQueue { topic: topic.into(), queue_id };
        // A topic that does not exist and a queue past the topic's count are never stored as
        // locks (they would fill the shard's lock table for every group): left out.
        let asked = vec![q("t", 0), q("nope", 0), q("t", 2), q("t", u32::MAX), q("wide", 3)];
        let r = group_call(&s, member_lock("a", 0, asked)).await.unwrap();
        assert_eq!(
            r,
            Response::Group(GroupResponse::Lock { granted: vec![q("t", 0), q("wide", 3)] })
        );
        // A name no topic can have is bad input: refused, nothing locked.
        for bad in ["x".repeat(300), "bad name".into(), String::new()] {
            let e =
                group_call(&s, member_lock("a", 0, vec![q("t", 1), q(&bad, 0)])).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_TOPIC_NAME, "{bad:?}");
        }
        group_call(&s, join("g", "b")).await.unwrap();
        let r = group_call(&s, member_lock("b", 0, vec![q("t", 1)])).await.unwrap();
        assert_eq!(r, Response::Group(GroupResponse::Lock { granted: vec![q("t", 1)] }));
    });
}

#[test]
fn a_lease_of_zero_is_cut_to_the_longest_lease_too() {
    run(|| async {
        let clock = runtime::SimClock::new(1_700_000_000_000);
        let short = |c: &mut Config| c.group.max_lock_lease_ms = 10_000;
        let s = shard_configured(SimDir::new(66), |_| {}, short, clock.clone()).await;
        group_call(&s, join("g", "a")).await.unwrap();
        group_call(&s, join("g", "b")).await.unwrap();
        let q0 = || vec![GroupQueue { topic: "t".into(), queue_id: 0 }];
        let r = group_call(&s, member_lock("a", 0, q0())).await.unwrap();
        assert_eq!(r, Response::Group(GroupResponse::Lock { granted: q0() }));
        clock.advance(Duration::from_secs(10));
        let r = group_call(&s, member_lock("b", 0, q0())).await.unwrap();
        assert_eq!(
            r,
            Response::Group(GroupResponse::Lock { granted: q0() }),
            "a's lease (0 = the 60 s default) ended at group.max_lock_lease_ms"
        );
    });
}

#[test]
fn a_watch_names_a_group_a_member_could_join() {
    run(|| async {
        let s = shard_configured(SimDir::new(67), |_| {}, |_| {}, runtime::system_clock()).await;
        for group in [String::new(), "g".repeat(256), "g".repeat(u16::MAX as usize)] {
            let watch = GroupRequest::Watch { group, version: 0, max_wait_ms: 1 };
            let e = group_call(&s, watch).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_ARGUMENT);
        }
        let watch = GroupRequest::Watch { group: "g".repeat(255), version: 0, max_wait_ms: 1 };
        assert_eq!(version_of(&group_call(&s, watch).await), 0);
    });
}

#[test]
fn membership_past_its_byte_budget_is_refused_and_leaving_gives_bytes_back() {
    run(|| async {
        // Room for one group of two members with one subscription and 255-byte client ids.
        let id = |c: char| c.to_string().repeat(255);
        let member = |c: char| crate::group::membership::MemberInfo {
            client_id: id(c),
            room: None,
            subscriptions: vec![crate::group::membership::Subscription {
                topic: "t".into(),
                expression: "*".into(),
            }],
        };
        use crate::group::membership::{group_bytes, member_bytes};
        let budget = group_bytes("g") + member_bytes("g", &member('a')) * 2;
        let small = |c: &mut Config| c.group.max_membership_bytes = budget;
        let s = shard_configured(SimDir::new(91), |_| {}, small, runtime::system_clock()).await;
        group_call(&s, join("g", &id('a'))).await.unwrap();
        group_call(&s, join("g", &id('b'))).await.unwrap();
        let e = group_call(&s, join("g", &id('c'))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::GROUP_LIMIT);
        assert!(e.message.contains("group.max_membership_bytes"), "{}", e.message);
        group_call(&s, GroupRequest::Leave { group: "g".into(), client_id: id('b') })
            .await
            .unwrap();
        group_call(&s, join("g", &id('c'))).await.unwrap();
    });
}

#[test]
fn a_group_s_members_answer_always_fits_a_frame() {
    run(|| async {
        let max_frame = 4096;
        let small = |c: &mut Config| c.broker.max_frame_bytes = max_frame;
        let s = shard_configured(SimDir::new(92), |_| {}, small, runtime::system_clock()).await;
        let mut joined = 0;
        let refused = loop {
            let client = format!("{joined:0>255}");
            match group_call(&s, join("g", &client)).await {
                Ok(_) => joined += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(refused.code, ErrorCode::GROUP_LIMIT);
        assert!(refused.message.contains("broker.max_frame_bytes"), "{}", refused.message);
        assert!(joined > 1, "{joined}");
        let r = group_call(&s, GroupRequest::Members { group: "g".into() }).await.unwrap();
        let frame = r.encode_frame(1);
        let Response::Group(GroupResponse::Members { members, .. }) = r else { panic!("{r:?}") };
        assert_eq!(members.len(), joined);
        assert!(frame.len() <= max_frame, "{} bytes", frame.len());
        // One more member's bytes would not have fitted.
        assert!(frame.len() + 2 + 255 + 2 + 4 + 4 + 1 + 1 > max_frame);
    });
}

#[test]
fn a_group_s_committed_queues_always_fit_one_fetch_offsets_answer() {
    run(|| async {
        use crate::group::offsets::{fetch_answer_entry_bytes, FETCH_ANSWER_FIXED_BYTES};
        // Room for 5 queues of "wide" in one answer frame.
        let max_frame = FETCH_ANSWER_FIXED_BYTES + 5 * fetch_answer_entry_bytes("wide");
        let small = |c: &mut Config| c.broker.max_frame_bytes = max_frame;
        let s = shard_configured(SimDir::new(93), |_| {}, small, runtime::system_clock()).await;
        s.start_groups().await.unwrap();
        let wide = |queues: std::ops::Range<u32>, offset: u64| GroupRequest::CommitOffsets {
            group: "g".into(),
            generation: 0,
            offsets: queues
                .map(|queue_id| QueueCommit { topic: "wide".into(), queue_id, offset })
                .collect(),
        };
        group_call(&s, wide(0..3, 1)).await.unwrap();
        // Two known queues and three new ones: one too many, refused whole.
        let e = group_call(&s, wide(1..6, 2)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::GROUP_LIMIT);
        assert!(e.message.contains("broker.max_frame_bytes"), "{}", e.message);
        assert_eq!(committed(&s, "g").await, vec![(0, 1), (1, 1), (2, 1)], "all or nothing");
        group_call(&s, wide(3..5, 1)).await.unwrap();
        let e = group_call(&s, wide(5..6, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::GROUP_LIMIT);
        // Queues already committed always pass; another group has its own answer.
        group_call(&s, wide(0..5, 7)).await.unwrap();
        group_call(&s, commit("h", 0, &[(0, 1)])).await.unwrap();
        // A reset of every queue of the topic would add the eleven others: refused too.
        let reset =
            GroupRequest::Reset { group: "g".into(), topic: "wide".into(), to: ResetTo::Earliest };
        assert_eq!(group_call(&s, reset).await.unwrap_err().code, ErrorCode::GROUP_LIMIT);
        // The answer for every committed queue holds all five and fits the frame exactly.
        let fetch = GroupRequest::FetchOffsets { group: "g".into(), queues: vec![] };
        let r = group_call(&s, fetch).await.unwrap();
        assert_eq!(r.encode_frame(1).len(), max_frame);
        let Response::Group(GroupResponse::FetchOffsets { offsets }) = r else { panic!("{r:?}") };
        assert_eq!(
            offsets.iter().map(|(q, o)| (q.queue_id, *o)).collect::<Vec<_>>(),
            [(0, 7), (1, 7), (2, 7), (3, 7), (4, 7)]
        );
        // Deleting the group frees its answer's room.
        assert_eq!(removed(group_call(&s, delete("g")).await), 5);
        group_call(&s, wide(5..10, 1)).await.unwrap();
    });
}

#[test]
fn list_groups_pages_through_every_group_once_in_name_order_within_the_frame() {
    run(|| async {
        use crate::protocol::group::GroupSummary;
        let max_frame = 4096;
        let small = |c: &mut Config| c.broker.max_frame_bytes = max_frame;
        let s = shard_configured(SimDir::new(94), |_| {}, small, runtime::system_clock()).await;
        s.start_groups().await.unwrap();
        // Groups with offsets and groups with members (some both), names of every length.
        let name = |i: usize| format!("g{i:04}{}", "n".repeat(i * 7 % 250));
        let mut want = Vec::new();
        // i % 3: 0 a member only, 1 offsets only, 2 both.
        for i in 0..120 {
            if i % 3 != 0 {
                group_call(&s, commit(&name(i), 0, &[(0, i as u64)])).await.unwrap();
            }
            if i % 3 != 1 {
                group_call(&s, join(&name(i), "c")).await.unwrap();
            }
            want.push(name(i));
        }
        let mut listed: Vec<GroupSummary> = Vec::new();
        let mut after = String::new();
        let mut pages = 0;
        loop {
            let request = GroupRequest::ListGroups { after: Some(after.clone()) };
            let r = group_call(&s, request).await.unwrap();
            assert!(r.encode_frame(1).len() <= max_frame);
            let Response::Group(GroupResponse::ListGroups { groups, more: Some(more) }) = r else {
                panic!("{r:?}")
            };
            pages += 1;
            listed.extend(groups);
            if !more {
                break;
            }
            after = listed.last().unwrap().group.clone();
            assert!(pages < 1000, "paging did not end");
        }
        assert!(pages > 3, "{pages} pages");
        let names: Vec<String> = listed.iter().map(|g| g.group.clone()).collect();
        assert!(names == want, "{} listed, {} groups", names.len(), want.len());
        for (i, g) in listed.iter().enumerate() {
            assert_eq!(g.members, u32::from(i % 3 != 1), "{}", g.group);
            assert_eq!(g.committed_queues, u32::from(i % 3 != 0), "{}", g.group);
        }
        // A request without `after` (clients before paging) gets the first page, within the
        // frame too.
        let r = group_call(&s, GroupRequest::ListGroups { after: None }).await.unwrap();
        assert!(r.encode_frame(1).len() <= max_frame);
        let Response::Group(GroupResponse::ListGroups { groups, more: None }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(groups[0].group, want[0]);
        // After the last group: an empty page.
        let request = GroupRequest::ListGroups { after: Some(want.last().unwrap().clone()) };
        let r = group_call(&s, request).await.unwrap();
        let empty =
            Response::Group(GroupResponse::ListGroups { groups: vec![], more: Some(false) });
        assert_eq!(r, empty);
    });
}

#[test]
fn a_commit_fetch_offsets_could_not_answer_is_refused() {
    run(|| async {
        let s = shard_configured(SimDir::new(68), |_| {}, |_| {}, runtime::system_clock()).await;
        s.start_groups().await.unwrap();
        let too_far = i64::MAX as u64 + 1;
        for offset in [too_far, u64::MAX] {
            let e = group_call(&s, commit("g", 0, &[(0, 5), (1, offset)])).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_ARGUMENT, "{offset}");
        }
        assert_eq!(committed(&s, "g").await, vec![], "all or nothing");
        group_call(&s, commit("g", 0, &[(0, i64::MAX as u64)])).await.unwrap();
        assert_eq!(committed(&s, "g").await, vec![(0, i64::MAX)]);
    });
}
