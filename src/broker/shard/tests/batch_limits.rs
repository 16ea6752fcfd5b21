//! Batch limits: a broker restarted with a lower `storage.max_batch_bytes` than it stored
//! batches under (those batches are data to every reader of the log: recovery, the key
//! index's reader in `key_index.rs`, the rebuild of the idempotence windows; messages accepted
//! under the old limit are still moved to their queues: scheduled ones here, transactions'
//! halves in `transaction.rs`), and a small limit (the scheduled messages' own records fit).

use std::time::Duration;

use super::schedule::{bodies, queue_records, scheduled, sync_flush, T0_MS};
use super::*;
use crate::protocol::message::Delivery;

/// The windows' rebuild took the first batch over the new limit for damage and dropped every
/// window: a retry of a batch stored before the restart was refused as out of order (the
/// producer then renumbers it and it is stored twice) instead of answered with its offsets.
#[test]
fn retries_are_answered_after_a_restart_with_a_lower_batch_limit() {
    run(|| async {
        let dir = SimDir::new(12);
        let s = shard_on(dir.clone(), 8, |_| {}).await;
        let Ok(Response::InitProducer { producer_id: pid }) = call(&s, Request::InitProducer).await
        else {
            panic!()
        };
        // About 2 KiB, then a small one.
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 0, 100)).await), 0);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 100, 1)).await), 100);
        s.log.close().await.unwrap();
        drop(s);

        let s = shard_on(dir, 8, |st| st.max_batch_bytes = 1024).await;
        s.start_idempotence(2).await.unwrap();
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 100, 1)).await), 100, "a retry");
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 101, 1)).await), 101, "the next");
        let e = call(&s, idempotent(0, pid, 102, 100)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::BATCH_TOO_LARGE, "new batches keep to the new limit");
        assert_eq!(s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next, 102);
    });
}

/// A held message that can no longer be written again (`storage.max_batch_bytes` lowered since
/// it was stored, below its copy's size) stays where it is with its timer at its delivery time:
/// its failed copy failed every step, every second, and the shard's other scheduled messages
/// waited behind it for good.
#[test]
fn a_held_message_too_large_to_rewrite_keeps_its_place_and_the_others_go_on() {
    run(|| async {
        const HOUR_MS: u64 = 3_600_000;
        let dir = SimDir::new(83);
        let clock = runtime::SimClock::new(T0_MS);
        let month = T0_MS + 30 * 24 * HOUR_MS as i64;
        let large = scheduled(0, Delivery::AtMs(month), &"x".repeat(8000));
        let Request::ProduceScheduled { batch, .. } = &large else { panic!() };
        // Delivering it fits; its copy (8 bytes and a record more) does not.
        let lowered = batch.len() + 50;
        let mut s = shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        call(&s, large).await.unwrap();
        call(&s, scheduled(1, Delivery::AtMs(T0_MS + 2 * HOUR_MS as i64), "in two hours"))
            .await
            .unwrap();
        s.schedule_step().await.unwrap();
        s.log.close().await.unwrap();
        drop(s);

        let tweak = move |st: &mut crate::storage::StorageConfig| {
            sync_flush(st);
            st.max_batch_bytes = lowered;
        };
        s = shard_configured(dir.clone(), tweak, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        assert_eq!(s.schedule_step().await.unwrap().indexed, 2, "no checkpoint: indexed again");
        clock.advance(Duration::from_millis(HOUR_MS));
        let r = s.schedule_step().await.unwrap();
        assert_eq!((r.rolled, r.delivered), (1, 0), "the small one is rewritten: {r:?}");
        clock.advance(Duration::from_millis(HOUR_MS));
        while s.schedule_step().await.unwrap().more {}
        assert_eq!(bodies(&s, 1).await, vec!["in two hours"], "not held up by the large one");
        s.schedule_step().await.unwrap(); // reads its delivered record
        assert_eq!(s.schedule_held(), 1);

        clock.advance(Duration::from_millis((month - T0_MS) as u64 - 2 * HOUR_MS - 1));
        while s.schedule_step().await.unwrap().more {}
        assert!(bodies(&s, 0).await.is_empty(), "not a millisecond early");
        clock.advance(Duration::from_millis(1));
        while s.schedule_step().await.unwrap().more {}
        assert_eq!(bodies(&s, 0).await.len(), 1, "delivered once, from where it was");
        s.schedule_step().await.unwrap();
        assert_eq!(s.schedule_held(), 0);
    });
}

/// A due message larger than `storage.max_batch_bytes` (lowered since it was stored) is moved
/// to its queue at its time: it was accepted under the old limit (it was refused at delivery
/// and dropped).
#[test]
fn a_due_message_over_a_lowered_batch_limit_is_delivered_at_its_time() {
    run(|| async {
        let dir = SimDir::new(84);
        let clock = runtime::SimClock::new(T0_MS);
        let mut s = shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        call(&s, scheduled(0, Delivery::AtMs(T0_MS + 10_000), &"x".repeat(8000))).await.unwrap();
        s.log.close().await.unwrap();
        drop(s);

        let lowered = |st: &mut crate::storage::StorageConfig| {
            sync_flush(st);
            st.max_batch_bytes = 6000;
        };
        s = shard_configured(dir.clone(), lowered, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        s.schedule_step().await.unwrap();
        clock.advance(Duration::from_secs(10));
        let r = s.schedule_step().await.unwrap();
        assert_eq!((r.delivered, r.skipped), (1, 0), "{r:?}");
        assert_eq!(bodies(&s, 0).await, vec!["x".repeat(8000)]);
    });
}

/// A due message larger than the log can move now (its write pool shrank with
/// `max_batch_bytes`, [`crate::storage::StorageConfig::movable_batch_limit`]) is held and tried
/// again each minute, and delivered once the limit allows it: it was dropped.
#[test]
fn a_due_message_the_log_cannot_move_waits_for_a_larger_limit_instead_of_being_dropped() {
    run(|| async {
        let dir = SimDir::new(86);
        let clock = runtime::SimClock::new(T0_MS);
        let shard = |large: bool| {
            let tweak = move |st: &mut crate::storage::StorageConfig| {
                sync_flush(st);
                if large {
                    st.max_batch_bytes = 1536 << 10;
                    st.chunk_pool_chunks = 64;
                }
            };
            shard_configured(dir.clone(), tweak, |_| {}, clock.clone())
        };
        let mut s = shard(true).await;
        s.start_schedule().await.unwrap();
        // About 1.2 MiB: over what the default test log moves (15 chunks of 64 KiB).
        let mut b = BatchBuilder::new(2 << 20);
        for _ in 0..1200 {
            let body = [7u8; 1024];
            let rec = Record { key: b"", tag: b"", properties: &[], body: &body, timestamp_ms: 5 };
            b.push(&rec).unwrap();
        }
        let batch = b.finish(-1, -1);
        let delivery = Delivery::AtMs(T0_MS + 10_000);
        let req = Request::ProduceScheduled {
            topic: "t".into(),
            queue_id: 0,
            delivery,
            batch: batch.into(),
        };
        call(&s, req).await.unwrap();
        s.log.close().await.unwrap();
        drop(s);

        s = shard(false).await;
        s.start_schedule().await.unwrap();
        s.schedule_step().await.unwrap();
        clock.advance(Duration::from_secs(10));
        let r = s.schedule_step().await.unwrap();
        assert_eq!((r.delivered, r.skipped), (0, 0), "{r:?}");
        clock.advance(Duration::from_secs(60));
        assert_eq!(s.schedule_step().await.unwrap().delivered, 0);
        assert!(queue_records(&s, 0).await.is_empty());
        assert_eq!(s.schedule_held(), 1, "still held");
        s.checkpoint_schedule().await.unwrap();
        s.log.close().await.unwrap();
        drop(s);

        s = shard(true).await;
        s.start_schedule().await.unwrap();
        clock.advance(Duration::from_secs(60));
        while s.schedule_step().await.unwrap().more {}
        assert_eq!(queue_records(&s, 0).await.len(), 1200, "delivered once the limit allows it");
        clock.advance(Duration::from_secs(600));
        while s.schedule_step().await.unwrap().more {}
        assert_eq!(queue_records(&s, 0).await.len(), 1200, "once");
    });
}

/// The largest wheel checkpoint (every pending range, as many done entries as it may list)
/// fits in the least batch the broker's configuration allows its own records
/// (`SYSTEM_BATCH_BYTES`), and the defaults list all 4,096.
#[test]
fn the_largest_wheel_checkpoint_fits_a_system_batch() {
    use crate::schedule::entry::{
        done_capacity, encode_checkpoint_record, DoneSet, MAX_DONE_IN_CHECKPOINT,
    };
    use crate::schedule::pending::{PendingOffsets, DEFAULT_MAX_RANGES};
    let least = crate::broker::config::SYSTEM_BATCH_BYTES;
    let listed = done_capacity(least, DEFAULT_MAX_RANGES);
    assert!(listed >= 256, "{listed}");
    let defaults = Config::default().storage.movable_batch_limit();
    assert_eq!(done_capacity(defaults, DEFAULT_MAX_RANGES), MAX_DONE_IN_CHECKPOINT);
    let done = DoneSet::Listed((0..listed as u64).collect());
    let mut pending = PendingOffsets::new(DEFAULT_MAX_RANGES);
    for i in 0..DEFAULT_MAX_RANGES as u64 {
        pending.insert(i << 10);
    }
    let wheel = crate::schedule::wheel::Wheel::new(1000, T0_MS).unwrap().checkpoint();
    let body = encode_checkpoint_record(&done, u64::MAX, &wheel, &pending);
    let mut b = BatchBuilder::new(least);
    let record = Record { key: b"k", tag: b"", properties: &[], body: &body, timestamp_ms: T0_MS };
    b.push(&record).unwrap();
    assert!(body.len() > least - 512, "the bound is tight: {}", body.len());
}

/// With a small `storage.max_batch_bytes` (4 KiB, valid) the schedule's own records still
/// fit: a step indexing 1,000 messages appended their timer records as one batch of about
/// 28 KiB, failed, and failed again every step (nothing scheduled was ever delivered); and a
/// wheel checkpoint (at least 4,148 bytes) could never be written.
#[test]
fn scheduling_works_with_a_small_batch_limit() {
    run(|| async {
        let small = |st: &mut crate::storage::StorageConfig| {
            sync_flush(st);
            st.max_batch_bytes = 4 << 10;
        };
        let clock = runtime::SimClock::new(T0_MS);
        let s = shard_configured(SimDir::new(87), small, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        for i in 0..1000 {
            let at = T0_MS + 10_000 + i;
            call(&s, scheduled(0, Delivery::AtMs(at), &format!("m{i}"))).await.unwrap();
        }
        while s.schedule_step().await.unwrap().more {}
        s.checkpoint_schedule().await.unwrap();
        clock.advance(Duration::from_secs(20));
        while s.schedule_step().await.unwrap().more {}
        let got = bodies(&s, 0).await;
        assert_eq!(got.len(), 1000);
        assert_eq!(got[999], "m999");
        s.checkpoint_schedule().await.unwrap();
    });
}
