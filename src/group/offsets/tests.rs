use super::*;
use proptest::prelude::*;

fn commit(g: &str, t: &str, q: u32, o: u64) -> OffsetCommit {
    OffsetCommit { group: g.into(), topic: t.into(), queue_id: q, offset: o }
}

/// Feeds a snapshot of `o` in parts of `part_bytes`.
fn feed_snapshot(r: &mut OffsetsReplay, o: &CommittedOffsets, part_bytes: usize) {
    let parts = o.snapshot_parts(part_bytes, None);
    let n = parts.len() as u32;
    for (i, p) in parts.iter().enumerate() {
        r.record(&snapshot_key(i as u32, n), p);
    }
}

/// Offsets committed under a larger `group.max_committed_offsets` than the broker restarts
/// with are all replayed (the snapshot holding them and the commits after it); only new
/// entries are refused until the count is below the bound. The snapshot failed to restore and
/// was skipped: every group lost its offsets, and consumers started again from their
/// `consume_from` (the end of the queue, for RocketMQ's default: the backlog skipped).
#[test]
fn a_lowered_bound_keeps_every_offset_committed_under_the_old_one() {
    let mut o = CommittedOffsets::new(100);
    for q in 0..10 {
        o.apply(commit("g", "t", q, q as u64 * 10)).unwrap();
    }
    let mut r = OffsetsReplay::new(4);
    feed_snapshot(&mut r, &o, 100);
    r.record(COMMIT_KEY, &commit("g", "t", 3, 99).encode().unwrap());
    r.record(COMMIT_KEY, &commit("g", "t", 11, 5).encode().unwrap());
    assert_eq!(r.skipped, 0);
    let got = r.finish();
    assert_eq!(got.len(), 11);
    assert_eq!(
        (got.get("g", "t", 0), got.get("g", "t", 3), got.get("g", "t", 11)),
        (Some(0), Some(99), Some(5))
    );
    assert!(matches!(got.check(&commit("g", "t", 12, 1)), Err(OffsetError::TooMany(4))));
    got.check(&commit("g", "t", 1, 1)).unwrap();
    // A snapshot of them restores whole under the lower bound too.
    let (restored, _) = CommittedOffsets::restore(&got.snapshot(0), 4).unwrap();
    assert_eq!(restored, got);
}

#[test]
fn replay_applies_commits_and_complete_snapshots_only() {
    let mut o = CommittedOffsets::new(100);
    for q in 0..20 {
        o.apply(commit("g", "t", q, q as u64 * 10)).unwrap();
    }
    let parts = o.snapshot_parts(100, None);
    assert!(parts.len() > 3, "small parts: {}", parts.len());

    // Commits, then a whole snapshot, then commits: the snapshot's state plus what follows.
    let mut r = OffsetsReplay::new(100);
    r.record(COMMIT_KEY, &commit("old", "t", 0, 1).encode().unwrap());
    feed_snapshot(&mut r, &o, 100);
    r.record(COMMIT_KEY, &commit("g", "t", 3, 99).encode().unwrap());
    let got = r.finish();
    assert_eq!(got.get("g", "t", 3), Some(99));
    assert_eq!(got.get("g", "t", 4), Some(40));
    assert_eq!(got.get("old", "t", 0), None, "the snapshot replaced what came before");
    assert_eq!(got.len(), 20);

    // A snapshot cut short (a crash while appending it), then commits: ignored.
    let mut r = OffsetsReplay::new(100);
    r.record(COMMIT_KEY, &commit("old", "t", 0, 1).encode().unwrap());
    let n = parts.len() as u32;
    for (i, p) in parts.iter().enumerate().take(2) {
        r.record(&snapshot_key(i as u32, n), p);
    }
    r.record(COMMIT_KEY, &commit("g", "t", 3, 99).encode().unwrap());
    r.record(&snapshot_key(2, n), &parts[2]);
    let got = r.finish();
    assert_eq!(got.get("old", "t", 0), Some(1));
    assert_eq!(got.len(), 2);

    // Replay starting mid-snapshot (retention dropped its first parts): ignored too.
    let mut r = OffsetsReplay::new(100);
    r.record(&snapshot_key(1, n), &parts[1]);
    assert!(r.finish().is_empty());
    // Garbage is skipped, never a panic.
    let mut r = OffsetsReplay::new(100);
    r.record(b"x", b"");
    r.record(COMMIT_KEY, b"\x01");
    r.record(&snapshot_key(0, 1), b"junk");
    assert_eq!((r.skipped, r.records), (3, 3));
}

#[test]
fn a_batch_of_commits_is_checked_as_a_whole() {
    let mut o = CommittedOffsets::new(3);
    o.apply(commit("g", "t", 0, 1)).unwrap();
    let batch = [commit("g", "t", 0, 5), commit("g", "t", 1, 5), commit("g", "t", 2, 5)];
    assert_eq!(o.check_all(&batch, usize::MAX), Ok(()));
    let batch = [commit("g", "t", 1, 5), commit("g", "t", 2, 5), commit("g", "t", 3, 5)];
    assert_eq!(o.check_all(&batch, usize::MAX), Err(OffsetError::TooMany(3)));
    assert!(o.check_all(&[commit("", "t", 1, 5)], usize::MAX).is_err());
}

/// `group`'s FETCH_OFFSETS answer for every committed queue, encoded as the broker sends it.
fn encoded_fetch_answer(o: &CommittedOffsets, group: &str) -> Vec<u8> {
    use crate::protocol::group::{GroupQueue, GroupResponse};
    let offsets = o
        .group(group)
        .into_iter()
        .map(|(topic, queue_id, offset)| (GroupQueue { topic, queue_id }, offset as i64))
        .collect();
    crate::protocol::Response::Group(GroupResponse::FetchOffsets { offsets }).encode_frame(7)
}

#[test]
fn the_counted_fetch_answer_is_the_encoded_one() {
    let mut o = CommittedOffsets::new(100);
    assert_eq!(o.fetch_answer_bytes("g"), encoded_fetch_answer(&o, "g").len(), "empty");
    o.apply(commit("g", "t", 0, 1)).unwrap();
    o.apply(commit("g", &"u".repeat(255), 3, 1 << 40)).unwrap();
    o.apply(commit("g", "t", 0, 9)).unwrap(); // an update adds no entry
    o.apply(commit("h", "orders", 1, 5)).unwrap();
    for g in ["g", "h", "none"] {
        assert_eq!(o.fetch_answer_bytes(g), encoded_fetch_answer(&o, g).len(), "{g}");
    }
    // Forgetting a topic gives its entries' bytes back; so does a restore from a snapshot.
    o.retain_topics(|t| t != "t");
    assert_eq!(o.fetch_answer_bytes("g"), encoded_fetch_answer(&o, "g").len());
    let (restored, _) = CommittedOffsets::restore(&o.snapshot(0), 100).unwrap();
    assert_eq!(restored.fetch_answer_bytes("g"), o.fetch_answer_bytes("g"));
    assert_eq!(o.remove_group("g"), 1);
    assert_eq!(o.fetch_answer_bytes("g"), FETCH_ANSWER_FIXED_BYTES);
}

#[test]
fn a_new_queue_past_one_fetch_answer_frame_is_refused_and_known_ones_pass() {
    let topic = "orders";
    // Room for exactly three queues of `topic` in g's answer.
    let limit = FETCH_ANSWER_FIXED_BYTES + 3 * fetch_answer_entry_bytes(topic);
    let mut o = CommittedOffsets::new(100);
    for q in 0..3 {
        let c = [commit("g", topic, q, 1)];
        o.check_all(&c, limit).unwrap();
        o.apply(c[0].clone()).unwrap();
    }
    assert_eq!(o.fetch_answer_bytes("g"), limit);
    assert_eq!(encoded_fetch_answer(&o, "g").len(), limit);
    let e = o.check_all(&[commit("g", topic, 3, 1)], limit).unwrap_err();
    let bytes = limit + fetch_answer_entry_bytes(topic);
    let want = OffsetError::FetchAnswerTooLarge { group: "g".into(), queues: 4, bytes, limit };
    assert_eq!(e, want);
    assert!(e.to_string().contains("broker.max_frame_bytes"), "{e}");
    // All or nothing: a batch with a known queue and a new one is refused whole.
    let batch = [commit("g", topic, 0, 2), commit("g", topic, 9, 2)];
    assert!(matches!(o.check_all(&batch, limit), Err(OffsetError::FetchAnswerTooLarge { .. })));
    // The same new queue twice counts once; known queues always pass; other groups have
    // their own answer.
    let known = [commit("g", topic, 0, 5), commit("g", topic, 2, 5), commit("g", topic, 2, 6)];
    o.check_all(&known, limit).unwrap();
    let h = [commit("h", topic, 0, 1), commit("h", topic, 1, 1), commit("h", topic, 1, 2)];
    o.check_all(&h, limit).unwrap();
    // A longer topic name takes more of the answer.
    let long = "x".repeat(255);
    let mut p = CommittedOffsets::new(100);
    p.apply(commit("g", topic, 0, 1)).unwrap();
    assert!(p.check_all(&[commit("g", &long, 0, 1)], limit).is_err());
    // Replay never refuses what the log holds (a frame limit lowered since the commits).
    assert!(p.apply(commit("g", &long, 0, 1)).is_ok());
}

#[test]
fn a_fetch_answer_holds_at_most_the_entries_a_list_may() {
    let mut o = CommittedOffsets::new(MAX_FETCH_ANSWER_QUEUES + 10);
    for q in 0..MAX_FETCH_ANSWER_QUEUES as u32 {
        o.apply(commit("g", "t", q, 1)).unwrap();
    }
    let e = o.check_all(&[commit("g", "t", u32::MAX, 1)], usize::MAX).unwrap_err();
    assert!(
        matches!(e, OffsetError::FetchAnswerTooLarge { queues, .. } if queues == MAX_FETCH_ANSWER_QUEUES + 1)
    );
    o.check_all(&[commit("g", "t", 0, 2), commit("h", "t", 0, 1)], usize::MAX).unwrap();
}

#[test]
fn records_round_trip_and_bad_ones_are_refused() {
    let c = commit("orders-app", "orders", 7, 1 << 40);
    assert_eq!(OffsetCommit::decode(&c.encode().unwrap()).unwrap(), c);
    let mut b = c.encode().unwrap();
    b.push(0);
    assert!(matches!(OffsetCommit::decode(&b), Err(OffsetError::Malformed(_))));
    assert!(OffsetCommit::decode(&[2]).is_err());
    assert!(OffsetCommit::decode(&[]).is_err());
    assert!(matches!(commit("", "t", 0, 0).encode(), Err(OffsetError::InvalidName(_))));
    assert!(commit("g", &"t".repeat(256), 0, 0).encode().is_err());
}

#[test]
fn commits_are_bounded_and_may_move_back() {
    let mut o = CommittedOffsets::new(2);
    o.apply(commit("g", "t", 0, 10)).unwrap();
    o.apply(commit("g", "t", 1, 10)).unwrap();
    assert_eq!(o.apply(commit("h", "t", 0, 1)), Err(OffsetError::TooMany(2)));
    // Updating a known entry at the limit works, backwards too (a reset).
    o.apply(commit("g", "t", 0, 3)).unwrap();
    assert_eq!(o.get("g", "t", 0), Some(3));
    assert_eq!(o.group("g"), vec![("t".into(), 0, 3), ("t".into(), 1, 10)]);
    assert_eq!(o.remove_group("g"), 2);
    assert!(o.is_empty());
    o.apply(commit("h", "t", 0, 1)).unwrap();
}

#[test]
fn a_deleted_topic_s_offsets_go_for_every_group_and_free_their_room() {
    let mut o = CommittedOffsets::new(3);
    o.apply(commit("g", "t", 0, 10)).unwrap();
    o.apply(commit("g", "u", 0, 5)).unwrap();
    o.apply(commit("h", "t", 1, 7)).unwrap();
    assert_eq!(o.retain_topics(|t| t != "t"), 2);
    assert_eq!((o.get("g", "t", 0), o.get("h", "t", 1), o.get("g", "u", 0)), (None, None, Some(5)));
    assert_eq!(o.len(), 1);
    assert!(o.group("h").is_empty());
    // Their room is free again.
    o.apply(commit("h", "t", 0, 1)).unwrap();
    o.apply(commit("k", "t", 0, 1)).unwrap();
    assert_eq!(o.retain_topics(|_| true), 0);
    assert_eq!(o.len(), 3);
}

proptest! {
    /// A snapshot at any point plus a replay of the records after it gives the offsets of
    /// a full replay.
    #[test]
    fn snapshot_plus_replay_equals_full_replay(
        commits in proptest::collection::vec((0u8..3, 0u8..2, 0u32..4, any::<u64>()), 0..60),
        cut in any::<prop::sample::Index>(),
    ) {
        let records: Vec<Vec<u8>> = commits
            .iter()
            .map(|(g, t, q, o)| commit(&format!("g{g}"), &format!("t{t}"), *q, *o).encode().unwrap())
            .collect();
        let mut full = CommittedOffsets::new(1000);
        for r in &records {
            full.apply(OffsetCommit::decode(r).unwrap()).unwrap();
        }
        let k = if records.is_empty() { 0 } else { cut.index(records.len() + 1) };
        let mut early = CommittedOffsets::new(1000);
        for r in &records[..k] {
            early.apply(OffsetCommit::decode(r).unwrap()).unwrap();
        }
        let (mut restored, covered) = CommittedOffsets::restore(&early.snapshot(k as u64), 1000).unwrap();
        prop_assert_eq!(covered, k as u64);
        for r in &records[covered as usize..] {
            restored.apply(OffsetCommit::decode(r).unwrap()).unwrap();
        }
        prop_assert_eq!(restored, full);
    }

    /// The log as the coordinator writes it (commits, a snapshot in parts at any point,
    /// more commits) replays to the offsets of the commits alone, whether replay starts at
    /// the first record or at the snapshot's first part.
    #[test]
    fn replay_from_the_start_or_the_snapshot_equals_the_commits(
        commits in proptest::collection::vec((0u8..3, 0u8..2, 0u32..4, any::<u64>()), 0..60),
        cut in any::<prop::sample::Index>(),
        part_bytes in 1usize..200,
    ) {
        let all: Vec<OffsetCommit> = commits
            .iter()
            .map(|(g, t, q, o)| commit(&format!("g{g}"), &format!("t{t}"), *q, *o))
            .collect();
        let k = cut.index(all.len() + 1);
        let mut full = CommittedOffsets::new(1000);
        let mut log: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut snapshot_at = 0;
        for (i, c) in all.iter().enumerate() {
            if i == k {
                snapshot_at = log.len();
                let parts = full.snapshot_parts(part_bytes, None);
                for (j, p) in parts.iter().enumerate() {
                    log.push((snapshot_key(j as u32, parts.len() as u32), p.clone()));
                }
            }
            log.push((COMMIT_KEY.to_vec(), c.encode().unwrap()));
            full.apply(c.clone()).unwrap();
        }
        for start in [0, snapshot_at] {
            let mut r = OffsetsReplay::new(1000);
            for (key, body) in &log[start..] {
                r.record(key, body);
            }
            prop_assert_eq!(r.skipped, 0);
            prop_assert_eq!(&r.finish(), &full);
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = OffsetCommit::decode(&bytes);
        let _ = CommittedOffsets::restore(&bytes, 100);
    }
}
