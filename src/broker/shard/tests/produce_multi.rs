//! PRODUCE_MULTI on one shard: each entry stored, refused or answered as a retry on its own,
//! in the entries' order, as separate PRODUCEs would be.

use super::*;
use crate::protocol::produce_multi::ProduceEntry;

fn entry(topic: &str, queue_id: u32, batch: Vec<u8>) -> ProduceEntry {
    ProduceEntry { topic: topic.into(), queue_id, batch: batch.into() }
}

/// The batch of an `idempotent` / `wide` request.
fn batch_of(r: Request) -> Vec<u8> {
    let Request::Produce { batch, .. } = r else { panic!() };
    batch.to_vec()
}

/// The record bodies of fetched batches, in order.
fn bodies(batches: &[u8]) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut rest = batches;
    while !rest.is_empty() {
        let view = crate::format::BatchView::parse(rest, 1 << 20).unwrap();
        for r in view.records() {
            bodies.push(String::from_utf8(r.unwrap().body.to_vec()).unwrap());
        }
        rest = &rest[view.header.length as usize..];
    }
    bodies
}

fn fetch_queue(queue_id: u32) -> Request {
    Request::Fetch {
        topic: "t".into(),
        queue_id,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        tags: Vec::new(),
    }
}

#[test]
fn each_entry_is_stored_or_refused_on_its_own_in_order_and_retries_get_their_offsets() {
    run(|| async {
        let s = shard(8).await;
        let Ok(Response::InitProducer { producer_id: pid }) = call(&s, Request::InitProducer).await
        else {
            panic!()
        };
        let mut corrupt = batch(1);
        corrupt[100] ^= 1;
        let entries = vec![
            entry("t", 0, batch_of(idempotent(0, pid, 0, 3))),
            entry("t", 1, batch(2)),
            entry("nope", 0, batch(1)),
            entry("t", 0, corrupt),
            // The same queue again: after the first entry, as a second PRODUCE would be.
            entry("t", 0, batch_of(idempotent(0, pid, 3, 4))),
            entry("wide", 5, batch_of(wide(5, pid, 0, 1))),
            entry("t", 9, batch(1)),
            // A retry of the first entry: its offsets, not stored again.
            entry("t", 0, batch_of(idempotent(0, pid, 0, 3))),
        ];
        let errors_before = s.stats().errors;
        let Ok(Response::ProduceMulti { results }) =
            call(&s, Request::ProduceMulti { entries }).await
        else {
            panic!()
        };
        let got: Vec<Result<(u32, u32, u64, u32), u16>> = results
            .iter()
            .map(|r| match r {
                Ok(Response::Produce { topic_id, queue_id, base_offset, record_count, .. }) => {
                    Ok((*topic_id, *queue_id, *base_offset, *record_count))
                }
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.code),
            })
            .collect();
        let code = |c: ErrorCode| Err(c as u16);
        assert_eq!(
            got,
            vec![
                Ok((1, 0, 0, 3)),
                Ok((1, 1, 0, 2)),
                code(ErrorCode::UNKNOWN_TOPIC),
                code(ErrorCode::CORRUPT_BATCH),
                Ok((1, 0, 3, 4)),
                Ok((2, 5, 0, 1)),
                code(ErrorCode::UNKNOWN_QUEUE),
                Ok((1, 0, 0, 3)),
            ]
        );
        let Err(e) = &results[2] else { panic!() };
        assert!(e.message.contains("\"nope\" does not exist"), "{}", e.message);
        assert_eq!(s.stats().errors - errors_before, 3, "each refused entry counts");
        assert_eq!(s.log.offsets(QueueKey::new(TopicId::new(1), QueueId::new(0))).next, 7);
        // Stored in order: the queue's records read back as the two batches sent.
        let Response::Fetch { batches, .. } = call(&s, fetch_queue(0)).await.unwrap() else {
            panic!()
        };
        assert_eq!(bodies(&batches), ["s0-0", "s0-1", "s0-2", "s3-0", "s3-1", "s3-2", "s3-3"]);
        // An empty request gets an empty answer.
        let r = call(&s, Request::ProduceMulti { entries: Vec::new() }).await.unwrap();
        assert_eq!(r, Response::ProduceMulti { results: Vec::new() });
    });
}

#[test]
fn a_long_multi_of_one_queue_stores_its_batches_in_entry_order() {
    run(|| async {
        let s = shard(8).await;
        // Entries are joined 30 at a time: 70 span three groups.
        let entries: Vec<_> =
            (0..70).map(|i| entry("t", 1, numbered_batch(1, &format!("m{i}-"), -1, -1))).collect();
        let Ok(Response::ProduceMulti { results }) =
            call(&s, Request::ProduceMulti { entries }).await
        else {
            panic!()
        };
        let offsets: Vec<u64> = results
            .iter()
            .map(|r| match r {
                Ok(Response::Produce { base_offset, .. }) => *base_offset,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, (0..70).collect::<Vec<u64>>());
        let Response::Fetch { batches, .. } = call(&s, fetch_queue(1)).await.unwrap() else {
            panic!()
        };
        assert_eq!(bodies(&batches), (0..70).map(|i| format!("m{i}-0")).collect::<Vec<_>>());
    });
}
