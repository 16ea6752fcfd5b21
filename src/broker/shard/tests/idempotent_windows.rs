//! Idempotent produce on one shard: the window INIT_PRODUCER_WINDOW promises, retries
//! answered and gaps refused, and the windows rebuilt from the log at start.

use super::*;

/// INIT_PRODUCER_WINDOW's window is a promise: a retry of any of the last `window_batches`
/// batches of a producer and queue is answered with its offsets; one older is refused.
#[test]
fn every_batch_of_the_window_init_producer_window_names_is_answered_on_a_retry() {
    run(|| async {
        let s = shard_on(SimDir::new(12), 8, |_| {}).await;
        let Ok(Response::InitProducerWindow { producer_id: pid, window_batches }) =
            call(&s, Request::InitProducerWindow).await
        else {
            panic!()
        };
        assert_eq!(window_batches as usize, crate::protocol::producer_id::WINDOW_BATCHES);
        let Ok(Response::InitProducer { producer_id: other }) =
            call(&s, Request::InitProducer).await
        else {
            panic!()
        };
        assert_ne!(pid, other, "one range of ids for both requests");
        let window = window_batches as i32;
        for seq in 0..=window {
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, seq, 1)).await), seq as u64);
        }
        // The last `window` batches (sequences 1..=window), in any order: their offsets.
        for seq in (1..=window).rev() {
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, seq, 1)).await), seq as u64);
        }
        let e = call(&s, idempotent(0, pid, 0, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::DUPLICATE_SEQUENCE, "behind the window: {e:?}");
        let next = s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next;
        assert_eq!(next, window as u64 + 1, "nothing stored twice");
        let snap = s.metrics_snapshot(metrics::WIDE_LIMITS);
        assert_eq!((snap.idempotence_windows, snap.idempotence_windows_evicted), (1, 0));
    });
}

#[test]
fn retried_idempotent_batches_are_answered_not_stored_and_gaps_are_refused() {
    run(|| async {
        let dir = SimDir::new(11);
        let s = shard_on(dir.clone(), 8, |_| {}).await;
        let Ok(Response::InitProducer { producer_id: pid }) = call(&s, Request::InitProducer).await
        else {
            panic!()
        };
        let Ok(Response::InitProducer { producer_id: other }) =
            call(&s, Request::InitProducer).await
        else {
            panic!()
        };
        assert_ne!(pid, other);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 0, 3)).await), 0);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 3, 2)).await), 3);
        // Retries of either batch: their original offsets, nothing stored.
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 0, 3)).await), 0);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 3, 2)).await), 3);
        assert_eq!(s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next, 5);
        let e = call(&s, idempotent(0, pid, 7, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE, "{e:?}");
        let e = call(&s, idempotent(1, pid, 4, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE, "a new queue starts at 0");
        // Two copies at once: the second waits for the first and gets its offsets.
        let (a, b) =
            futures::join!(call(&s, idempotent(0, pid, 5, 1)), call(&s, idempotent(0, pid, 5, 1)));
        assert_eq!((base_offset(&a), base_offset(&b)), (5, 5));
        // A batch that fails validation is not remembered: the sequence is expected again.
        let Request::Produce { batch, .. } = idempotent(0, pid, 6, 1) else { panic!() };
        let mut batch = batch.to_vec();
        batch[100] ^= 1;
        let batch = batch.into();
        let e = call(&s, Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch })
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::CORRUPT_BATCH);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 6, 1)).await), 6);

        // After a restart the windows are rebuilt from the log.
        s.log.close().await.unwrap();
        drop(s);
        let s = shard_on(dir.clone(), 8, |_| {}).await;
        s.start_idempotence(2).await.unwrap();
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 3, 2)).await), 3);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 6, 1)).await), 6);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 7, 1)).await), 7);
        assert_eq!(s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next, 8);
        let Ok(Response::InitProducer { producer_id }) = call(&s, Request::InitProducer).await
        else {
            panic!()
        };
        assert!(producer_id != pid && producer_id != other, "a new run, new ids");

        // A rebuild that may read nothing leaves no window: the retry is refused (the
        // producer renumbers) rather than answered from a partial window.
        s.log.close().await.unwrap();
        drop(s);
        let s = shard_with(dir, 8, |_| {}, |b| b.idempotence_recovery_scan_bytes = 0).await;
        s.start_idempotence(3).await.unwrap();
        let e = call(&s, idempotent(0, pid, 7, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE);
        assert_eq!(
            s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next,
            8,
            "nothing stored twice"
        );
    });
}

async fn new_producer(s: &Rc<Shard<SimLog>>) -> i64 {
    let Ok(Response::InitProducer { producer_id }) = call(s, Request::InitProducer).await else {
        panic!()
    };
    producer_id
}

/// Rounds of one 2-record batch on every queue of "wide", interleaved in the log as
/// producers of many queues write them.
async fn interleaved_rounds(s: &Rc<Shard<SimLog>>, pid: i64, rounds: std::ops::Range<i32>) {
    for r in rounds {
        for q in 0..WIDE_QUEUES {
            assert_eq!(base_offset(&call(s, wide(q, pid, 2 * r, 2)).await), 2 * r as u64);
        }
    }
}

#[test]
fn windows_of_many_interleaved_queues_are_rebuilt_by_one_sequential_read() {
    run(|| async {
        let dir = SimDir::new(31);
        let s = shard_on(dir.clone(), 8, |_| {}).await;
        let pid = new_producer(&s).await;
        interleaved_rounds(&s, pid, 0..20).await;
        s.log.close().await.unwrap();
        drop(s);

        let s = shard_on(dir.clone(), 8, |_| {}).await;
        let before = dir.read_count();
        s.start_idempotence(2).await.unwrap();
        // Reading queue by queue costs at least one random read per queue (10,000 queues:
        // minutes after a crash); the log tail is one sequential read here (it is < 4 MiB).
        let reads = dir.read_count() - before;
        assert!(reads <= 2, "{reads} reads to rebuild the windows of {WIDE_QUEUES} queues");
        for q in 0..WIDE_QUEUES {
            // Retries of the last batches: their original offsets, nothing stored.
            assert_eq!(base_offset(&call(&s, wide(q, pid, 38, 2)).await), 38);
            assert_eq!(base_offset(&call(&s, wide(q, pid, 36, 2)).await), 36);
            assert_eq!(base_offset(&call(&s, wide(q, pid, 40, 2)).await), 40, "continues");
            assert_eq!(s.log.offsets(wide_key(q)).next, 42);
        }
    });
}

#[test]
fn a_scan_budget_shorter_than_the_log_rebuilds_the_windows_written_within_it() {
    run(|| async {
        let dir = SimDir::new(32);
        let s = shard_on(dir.clone(), 8, |_| {}).await;
        let pid = new_producer(&s).await;
        // Another producer writes only at the start.
        let early = new_producer(&s).await;
        assert_eq!(base_offset(&call(&s, idempotent(1, early, 0, 2)).await), 0);
        interleaved_rounds(&s, pid, 0..200).await;
        let (end, _, _) = s.log.positions();
        s.log.close().await.unwrap();
        drop(s);

        // Budget: about the last 10 of 200 rounds.
        let budget = end.get() / 20;
        let s = shard_with(dir.clone(), 8, |_| {}, |b| b.idempotence_recovery_scan_bytes = budget)
            .await;
        let before = dir.read_count();
        s.start_idempotence(2).await.unwrap();
        let reads = dir.read_count() - before;
        // Finding where to start costs a few index lookups, not one per queue.
        assert!(reads <= 4, "{reads} reads");
        for q in 0..WIDE_QUEUES {
            // Inside the budget: answered with the original offsets.
            assert_eq!(base_offset(&call(&s, wide(q, pid, 398, 2)).await), 398);
            // Before the budget: refused as too old to answer, never stored again.
            let e = call(&s, wide(q, pid, 0, 2)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::DUPLICATE_SEQUENCE, "{e:?}");
        }
        // A producer whose last batch lies before the budget has no window: it renumbers.
        let e = call(&s, idempotent(1, early, 2, 2)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE, "{e:?}");
        for q in 0..WIDE_QUEUES {
            assert_eq!(s.log.offsets(wide_key(q)).next, 400, "nothing stored twice");
        }
        assert_eq!(s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(1))).next, 2);
    });
}

#[test]
fn damage_that_ends_the_rebuild_leaves_no_partial_windows() {
    run(|| async {
        let dir = SimDir::new(33);
        let s = shard_on(dir.clone(), 8, |_| {}).await;
        let pid = new_producer(&s).await;
        for seq in 0..5 {
            assert_eq!(base_offset(&call(&s, idempotent(0, pid, seq, 1)).await), seq as u64);
        }
        // Another queue's batch, then the producer's last one behind it.
        let (damaged_at, _, _) = s.log.positions();
        assert_eq!(base_offset(&call(&s, produce(1, 1)).await), 0);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 5, 1)).await), 5);
        s.log.close().await.unwrap();
        drop(s);
        // Its length field damaged: nothing after it can be read, so the rebuild stops there.
        dir.corrupt(&format!("{:020}.log", 0), damaged_at.get() as usize + 1);

        let s = shard_on(dir.clone(), 8, |_| {}).await;
        s.start_idempotence(2).await.unwrap();
        // A window built from the batches before the damage would expect sequence 5 next and
        // store this retry again; with no window the producer renumbers instead.
        let e = call(&s, idempotent(0, pid, 5, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OUT_OF_ORDER_SEQUENCE, "{e:?}");
        assert_eq!(s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next, 6);
    });
}
