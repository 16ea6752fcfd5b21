//! The transaction handler (`shard/transaction.rs`) on one shard over the real log on the
//! simulated directory: halves invisible until committed, exactly-once delivery (repeated
//! ends, restarts, a crash between delivery and op record), check-back with a simulated clock,
//! bounds, and the idempotence windows left alone.

use super::*;

use crate::broker::topics::SYSTEM_TOPIC_HALF;
use crate::format::batch::read_header;
use crate::protocol::transaction::{EndAction, TxnRequest, TxnResponse, PRODUCER_GROUP_PROPERTY};

const START_MS: i64 = 1_700_000_000_000;

/// A transactional batch of `n` records of producer group `group`.
pub(super) fn half_batch(n: usize, group: &str, producer_id: i64, base_sequence: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new(1 << 16);
    let props: &[(&[u8], &[u8])] = &[(PRODUCER_GROUP_PROPERTY, group.as_bytes())];
    for i in 0..n {
        let body = format!("tx{base_sequence}-{i}");
        let rec = Record {
            key: b"",
            tag: b"",
            properties: props,
            body: body.as_bytes(),
            timestamp_ms: 5,
        };
        b.push(&rec).unwrap();
    }
    b.finish_transactional(producer_id, base_sequence)
}

fn send_half(queue_id: u32, batch: Vec<u8>) -> Request {
    Request::Produce { topic: "t".into(), queue_id, flags: 0, batch: batch.into() }
}

/// Sends a half; returns its transaction id.
pub(super) async fn half(s: &Rc<Shard<SimLog>>, queue_id: u32, batch: Vec<u8>) -> u64 {
    let r = call(s, send_half(queue_id, batch)).await.unwrap();
    let Response::Produce { topic_id, queue_id: q, base_offset, status, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!((topic_id, q, status), (SYSTEM_TOPIC_HALF, queue_id, SendStatus::SendOk));
    base_offset
}

pub(super) fn end(queue_id: u32, id: u64, action: EndAction) -> Request {
    end_as("tx", queue_id, id, action)
}

fn end_as(group: &str, queue_id: u32, id: u64, action: EndAction) -> Request {
    Request::Transaction(TxnRequest::End {
        group: group.into(),
        topic: "t".into(),
        queue_id,
        transaction_id: id,
        action,
    })
}

async fn next_offset(s: &Rc<Shard<SimLog>>, queue_id: u32) -> u64 {
    let o = Request::Offsets { topic: "t".into(), queue_id, timestamp_ms: -1 };
    let Response::Offsets { next_offset, .. } = call(s, o).await.unwrap() else { panic!() };
    next_offset
}

/// The stored batches of queue `queue_id` of "t".
async fn stored(s: &Rc<Shard<SimLog>>, queue_id: u32) -> Vec<Vec<u8>> {
    let req = Request::Fetch {
        topic: "t".into(),
        queue_id,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        tags: vec![],
    };
    let Response::Fetch { batches, .. } = call(s, req).await.unwrap() else { panic!() };
    let mut out = Vec::new();
    let mut rest = &batches[..];
    while !rest.is_empty() {
        let len = crate::format::batch::peek_length(rest).unwrap() as usize;
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    out
}

fn txn_config(c: &mut Config) {
    c.transaction.check_interval_ms = 1_000;
    c.transaction.check_max = 2;
    c.transaction.max_undecided_halves = 3;
}

fn sync_flush(st: &mut crate::storage::StorageConfig) {
    st.flush_mode = crate::storage::FlushMode::Sync;
}

#[test]
fn a_committed_half_is_delivered_once_with_the_producers_bytes() {
    run(|| async {
        let s = shard(8).await;
        let sent = half_batch(3, "tx", 42, 7);
        let id = half(&s, 1, sent.clone()).await;
        // Invisible: nothing in the queue until the commit.
        assert_eq!(next_offset(&s, 1).await, 0);
        let r = call(&s, end(1, id, EndAction::Commit)).await.unwrap();
        assert_eq!(
            r,
            Response::Transaction(TxnResponse::End {
                status: SendStatus::SendOk,
                base_offset: 0,
                record_count: 3
            })
        );
        let got = stored(&s, 1).await;
        assert_eq!(got.len(), 1);
        // Everything the producer wrote (CRC, id, sequence, records) is unchanged.
        assert_eq!(got[0][40..], sent[40..]);
        let h = read_header(&got[0]).unwrap();
        assert_eq!((h.producer_id, h.base_sequence, h.stamp.queue_id), (42, 7, 1));
        // A repeated commit, or a rollback after it: refused, never delivered again.
        for action in [EndAction::Commit, EndAction::Rollback] {
            let e = call(&s, end(1, id, action)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::TRANSACTION_DECIDED, "{e:?}");
            assert!(e.message.contains("already committed"), "{}", e.message);
        }
        assert_eq!(next_offset(&s, 1).await, 3);
    });
}

#[test]
fn a_rolled_back_half_is_never_delivered_and_bad_ends_are_named() {
    run(|| async {
        let s = shard(8).await;
        let id = half(&s, 0, half_batch(1, "tx", -1, -1)).await;
        let other = half(&s, 0, half_batch(1, "tx", -1, -1)).await;
        assert_ne!(id, other);
        // Wrong queue, wrong group, unknown id: UNKNOWN_TRANSACTION, the half untouched.
        for (req, what) in [
            (end(1, id, EndAction::Commit), "queue"),
            (end_as("intruder", 0, id, EndAction::Commit), "group"),
            (end(0, 999, EndAction::Commit), "no undecided"),
        ] {
            let e = call(&s, req).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::UNKNOWN_TRANSACTION, "{e:?}");
            assert!(e.message.contains(what), "{}", e.message);
        }
        let r = call(&s, end(0, id, EndAction::Rollback)).await.unwrap();
        assert!(matches!(r, Response::Transaction(TxnResponse::End { record_count: 0, .. })));
        let e = call(&s, end(0, id, EndAction::Commit)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::TRANSACTION_DECIDED);
        assert!(e.message.contains("rolled back"), "{}", e.message);
        assert_eq!(next_offset(&s, 0).await, 0);
        call(&s, end(0, other, EndAction::Commit)).await.unwrap();
        assert_eq!(next_offset(&s, 0).await, 1);
        // Unknown topics and queues are refused as for any queue request.
        let mut req = end(0, other, EndAction::Commit);
        if let Request::Transaction(TxnRequest::End { topic, .. }) = &mut req {
            *topic = "nope".into();
        }
        assert_eq!(call(&s, req).await.unwrap_err().code, ErrorCode::UNKNOWN_TOPIC);
    });
}

#[test]
fn halves_without_a_group_and_past_the_cap_are_refused() {
    run(|| async {
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(SimDir::new(81), |_| {}, txn_config, clock.clone()).await;
        // No PGROUP property.
        let mut b = BatchBuilder::new(1 << 16);
        b.push(&Record { key: b"", tag: b"", properties: &[], body: b"x", timestamp_ms: 5 })
            .unwrap();
        let e = call(&s, send_half(0, b.finish_transactional(-1, -1))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_BATCH);
        assert!(e.message.contains("PGROUP"), "{}", e.message);
        // The cap is 3 undecided halves.
        for _ in 0..3 {
            half(&s, 0, half_batch(1, "tx", -1, -1)).await;
        }
        let e = call(&s, send_half(0, half_batch(1, "tx", -1, -1))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::TRANSACTION_LIMIT, "{e:?}");
        assert!(e.message.contains("max_undecided_halves"), "{}", e.message);
        call(&s, end(0, 0, EndAction::Rollback)).await.unwrap();
        half(&s, 0, half_batch(1, "tx", -1, -1)).await;
        // Nothing of it reached the queue.
        assert_eq!(next_offset(&s, 0).await, 0);
    });
}

fn check(group: &str) -> Request {
    Request::Transaction(TxnRequest::Check {
        group: group.into(),
        shard: 0,
        max_wait_ms: 60_000,
        max_checks: 8,
    })
}

fn list() -> Request {
    Request::Transaction(TxnRequest::List { shard: 0, max: 100 })
}

#[test]
fn check_back_asks_a_parked_producer_then_rolls_back_after_check_max() {
    run(|| async {
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(SimDir::new(82), |_| {}, txn_config, clock.clone()).await;
        let sent = half_batch(2, "tx", 9, 0);
        let id = half(&s, 0, sent.clone()).await;
        // A producer parks; one interval later the tick hands it the half.
        let (asked, ()) = futures::join!(call(&s, check("tx")), async {
            runtime::yield_once().await;
            clock.advance(Duration::from_millis(999));
            s.transaction_tick().await;
            clock.advance(Duration::from_millis(1));
            s.transaction_tick().await;
        });
        let Ok(Response::Transaction(TxnResponse::Check { checks })) = asked else {
            panic!("{asked:?}")
        };
        assert_eq!(checks.len(), 1);
        assert_eq!((checks[0].transaction_id, checks[0].checks), (id, 1));
        assert_eq!((checks[0].topic.as_str(), checks[0].queue_id), ("t", 0));
        assert_eq!(checks[0].batch, sent);
        // The list shows its age and checks.
        let Ok(Response::Transaction(TxnResponse::List { halves })) = call(&s, list()).await else {
            panic!()
        };
        assert_eq!(halves.len(), 1);
        assert_eq!(
            (halves[0].age_ms, halves[0].checks, halves[0].group.as_str()),
            (1_000, 1, "tx")
        );
        // The producer answered "unknown" (nothing). A second check one interval later, asked
        // at once because it is already due when the producer parks again.
        clock.advance(Duration::from_millis(1_000));
        let r = call(&s, check("tx")).await.unwrap();
        let Response::Transaction(TxnResponse::Check { checks }) = r else { panic!() };
        assert_eq!(checks[0].checks, 2);
        // Another group's producer is never asked.
        let r = call(
            &s,
            Request::Transaction(TxnRequest::Check {
                group: "other".into(),
                shard: 0,
                max_wait_ms: 0,
                max_checks: 8,
            }),
        )
        .await
        .unwrap();
        assert_eq!(r, Response::Transaction(TxnResponse::Check { checks: vec![] }));
        // check_max = 2 used: rolled back when the next slot opens, not before.
        clock.advance(Duration::from_millis(999));
        s.transaction_tick().await;
        assert!(s.transactions.borrow().contains(id));
        clock.advance(Duration::from_millis(1));
        s.transaction_tick().await;
        assert!(!s.transactions.borrow().contains(id));
        let e = call(&s, end(0, id, EndAction::Commit)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::TRANSACTION_DECIDED);
        assert_eq!(next_offset(&s, 0).await, 0);
    });
}

#[test]
fn with_no_producer_alive_a_half_is_rolled_back_after_check_max_intervals() {
    run(|| async {
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(SimDir::new(83), |_| {}, txn_config, clock.clone()).await;
        let id = half(&s, 1, half_batch(1, "tx", -1, -1)).await;
        // Slots at 1 s and 2 s go unanswered; rolled back at 3 s.
        for _ in 0..29 {
            clock.advance(Duration::from_millis(100));
            s.transaction_tick().await;
        }
        assert!(s.transactions.borrow().contains(id));
        clock.advance(Duration::from_millis(100));
        s.transaction_tick().await;
        assert!(!s.transactions.borrow().contains(id));
        assert_eq!(next_offset(&s, 1).await, 0);
    });
}

#[test]
fn decisions_and_undecided_halves_survive_a_crash() {
    run(|| async {
        let dir = SimDir::new(84);
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        s.start_transactions().await.unwrap();
        let committed = half(&s, 0, half_batch(1, "tx", -1, -1)).await;
        let rolled_back = half(&s, 0, half_batch(1, "tx", -1, -1)).await;
        let open = half(&s, 0, half_batch(2, "tx", -1, -1)).await;
        call(&s, end(0, committed, EndAction::Commit)).await.unwrap();
        call(&s, end(0, rolled_back, EndAction::Rollback)).await.unwrap();
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        let r = s.start_transactions().await.unwrap();
        assert_eq!((r.undecided, r.found_delivered), (1, 0), "{r:?}");
        assert!(r.from >= committed, "replay starts past decided halves: {r:?}");
        for id in [committed, rolled_back] {
            let e = call(&s, end(0, id, EndAction::Commit)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::TRANSACTION_DECIDED, "{id}: {e:?}");
        }
        assert_eq!(next_offset(&s, 0).await, 1);
        call(&s, end(0, open, EndAction::Commit)).await.unwrap();
        assert_eq!(next_offset(&s, 0).await, 3);
        // And once more: nothing undecided, the queue as it was.
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        let r = s.start_transactions().await.unwrap();
        assert_eq!(r.undecided, 0);
        assert_eq!(next_offset(&s, 0).await, 3);
    });
}

#[test]
fn a_delivery_whose_op_record_was_lost_is_not_delivered_again() {
    run(|| async {
        let dir = SimDir::new(85);
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        s.start_transactions().await.unwrap();
        let sent = half_batch(2, "tx", 5, 0);
        let id = half(&s, 0, sent.clone()).await;
        let untouched = half(&s, 0, half_batch(1, "tx", 5, 1)).await;
        // The crash hits between the delivery and its op record: the batch is in the queue,
        // the decision is not in %SYS%txn-op.
        let key = QueueKey::new(TopicId::new(1), QueueId::new(0));
        let delivered = ShardLog::append(&s.log, key, &sent[..]).await.unwrap();
        assert!(!delivered.flush_timed_out, "durable before the crash");
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        let r = s.start_transactions().await.unwrap();
        assert_eq!((r.undecided, r.found_delivered), (1, 1), "{r:?}");
        // The producer (or a check-back answer) commits again: refused, delivered once.
        let e = call(&s, end(0, id, EndAction::Commit)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::TRANSACTION_DECIDED, "{e:?}");
        assert_eq!(stored(&s, 0).await.len(), 1);
        call(&s, end(0, untouched, EndAction::Commit)).await.unwrap();
        assert_eq!(next_offset(&s, 0).await, 3);
    });
}

#[test]
fn a_replica_leaves_a_delivery_without_its_op_record_to_its_master() {
    run(|| async {
        let dir = SimDir::new(87);
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        s.start_transactions().await.unwrap();
        let sent = half_batch(1, "tx", 5, 0);
        half(&s, 0, sent.clone()).await;
        // As replicated up to a delivery whose op record the master had not sent yet.
        let key = QueueKey::new(TopicId::new(1), QueueId::new(0));
        ShardLog::append(&s.log, key, &sent[..]).await.unwrap();
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        s.set_role(crate::broker::shard::replication::ShardRole::Replica(
            crate::broker::shard::replication::ReplicaSide {
                master: "10.0.0.1:10911".parse().unwrap(),
                advertise: None,
                fetch_bytes: 1 << 20,
                history: RefCell::new(crate::replication::epochs::EpochHistory::new()),
            },
        ));
        let end = s.log.append_end();
        let r = s.start_transactions().await.unwrap();
        assert_eq!((r.undecided, r.found_delivered), (1, 0), "{r:?}");
        assert_eq!(s.log.append_end(), end, "a replica's log holds only its master's records");
    });
}

#[test]
fn delivered_transactional_batches_leave_the_idempotence_windows_alone() {
    run(|| async {
        let dir = SimDir::new(86);
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        s.start_idempotence(1).await.unwrap();
        s.start_transactions().await.unwrap();
        let Response::InitProducer { producer_id: pid } =
            call(&s, Request::InitProducer).await.unwrap()
        else {
            panic!()
        };
        let plain = |seq| Request::Produce {
            topic: "t".into(),
            queue_id: 0,
            flags: 0,
            batch: numbered_batch(1, "p", pid, seq).into(),
        };
        let first = call(&s, plain(0)).await.unwrap();
        // Two transactions of the same producer on the same queue, committed out of order.
        let a = half(&s, 0, half_batch(1, "tx", pid, 1)).await;
        let b = half(&s, 0, half_batch(1, "tx", pid, 2)).await;
        call(&s, end(0, b, EndAction::Commit)).await.unwrap();
        call(&s, end(0, a, EndAction::Commit)).await.unwrap();
        dir.crash();
        drop(s);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        s.start_idempotence(2).await.unwrap();
        s.start_transactions().await.unwrap();
        // A retry of the plain batch is still recognised (answered with its offsets), and the
        // producer's plain sequence goes on where it left off.
        assert_eq!(call(&s, plain(0)).await.unwrap(), first);
        let r = call(&s, plain(1)).await;
        assert!(matches!(r, Ok(Response::Produce { base_offset: 3, .. })), "{r:?}");
    });
}

#[test]
fn retention_keeps_the_segments_of_undecided_halves() {
    run(|| async {
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(SimDir::new(87), |_| {}, |_| {}, clock.clone()).await;
        for i in 0..25 {
            call(&s, filler(i)).await.unwrap();
        }
        let old = half(&s, 0, half_batch(1, "tx", -1, -1)).await;
        let decided = half(&s, 0, half_batch(1, "tx", -1, -1)).await;
        call(&s, end(0, decided, EndAction::Rollback)).await.unwrap();
        // Segments of 4 MiB: the half sits in the second; ~15 MiB more roll past it.
        let segments = roll_segments(&s, 75).await;
        let far = far_future_ms();
        let deleted = s.log.enforce_retention(far).await.unwrap();
        // The first segment went (nothing undecided in it); the half's segment and all after
        // it stayed, and the half commits.
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        call(&s, end(0, old, EndAction::Commit)).await.unwrap();
        // Decided, but not durable yet (async flush, the clock stands still): a crash would
        // leave the half undecided, so its segment stays.
        assert_eq!(s.log.enforce_retention(far).await.unwrap(), vec![]);
        // Durable: nothing is pinned any more.
        s.log.flush().await.unwrap();
        let deleted = s.log.enforce_retention(far).await.unwrap();
        assert_eq!(deleted.len(), segments - 2);
        assert_eq!(next_offset(&s, 0).await, 1);
    });
}

/// A half sent under a larger `storage.max_batch_bytes` than the broker restarted with is
/// committed whole: its delivery was refused as too large (BATCH_TOO_LARGE), and check-backs
/// then rolled the committed transaction back after `check_max`.
#[test]
fn a_half_over_a_lowered_batch_limit_still_commits() {
    run(|| async {
        let dir = SimDir::new(85);
        let clock = runtime::SimClock::new(START_MS);
        let s = shard_configured(dir.clone(), sync_flush, txn_config, clock.clone()).await;
        s.start_transactions().await.unwrap();
        let sent = half_batch(300, "tx", -1, -1);
        assert!(sent.len() > 4096, "{}", sent.len());
        let id = half(&s, 0, sent.clone()).await;
        s.log.close().await.unwrap();
        drop(s);

        let lowered = |st: &mut crate::storage::StorageConfig| {
            sync_flush(st);
            st.max_batch_bytes = 4096;
        };
        let s = shard_configured(dir.clone(), lowered, txn_config, clock.clone()).await;
        assert_eq!(s.start_transactions().await.unwrap().undecided, 1);
        call(&s, end(0, id, EndAction::Commit)).await.unwrap();
        let got = stored(&s, 0).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0][40..], sent[40..], "the producer's batch, whole");
        assert_eq!(next_offset(&s, 0).await, 300);
    });
}
