//! A broker restarted with a lower `storage.max_batch_bytes` than it stored batches under:
//! those batches are data to every reader of the log (recovery, the key index's reader in
//! `key_index.rs`, the rebuild of the idempotence windows here), and new appends keep to the
//! new limit.

use super::*;

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
