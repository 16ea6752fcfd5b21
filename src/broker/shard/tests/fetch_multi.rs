//! FETCH_MULTI on one shard: each queue's batches or its own error, by index; queues with
//! nothing new left out; a wait for data on any of the queues when none has any.

use super::*;
use crate::protocol::fetch_multi::{FetchMulti, FetchQueue, FetchResult, FetchTopic};

fn multi(max_wait_ms: u32, topics: &[(&str, &[(u32, u64)])]) -> Request {
    Request::FetchMulti(FetchMulti {
        max_bytes: 1 << 20,
        max_wait_ms,
        topics: topics
            .iter()
            .map(|(t, qs)| FetchTopic {
                topic: t.to_string(),
                tags: Vec::new(),
                queues: qs
                    .iter()
                    .map(|&(queue_id, offset)| FetchQueue { queue_id, offset })
                    .collect(),
            })
            .collect(),
    })
}

/// A result in short: Ok(record count fetched, scan end) or Err(code).
type Summary = Result<(usize, u64), u16>;

/// (index, summary) of each result.
fn summary(r: Reply) -> Vec<(u32, Summary)> {
    let Ok(Response::FetchMulti { results }) = r else { panic!("{r:?}") };
    results
        .into_iter()
        .map(|FetchResult { index, result }| {
            let r = result.map(|f| {
                let mut records = 0;
                let mut rest = &f.batches[..];
                while !rest.is_empty() {
                    let v = crate::format::BatchView::parse(rest, 1 << 20).unwrap();
                    records += v.header.record_count as usize;
                    rest = &rest[v.header.length as usize..];
                }
                (records, f.scan_end_offset)
            });
            (index, r.map_err(|e| e.code))
        })
        .collect()
}

#[test]
fn each_queue_gets_its_batches_or_its_own_error_by_index_and_idle_queues_are_left_out() {
    run(|| async {
        let s = shard(8).await;
        call(&s, produce(0, 3)).await.unwrap();
        call(&s, produce(1, 2)).await.unwrap();
        call(&s, produce(1, 4)).await.unwrap();
        let wide = Request::Produce {
            topic: "wide".into(),
            queue_id: 7,
            flags: 0,
            batch: batch(5).into(),
        };
        call(&s, wide).await.unwrap();
        let request = multi(
            0,
            &[
                // 0: three records; 1: from offset 2, four; 2: past its end; 3: no such queue
                ("t", &[(0, 0), (1, 2), (0, 9), (2, 0)]),
                // 4: no such topic (its queues each get the error)
                ("nope", &[(0, 0)]),
                // 5: at its end (nothing new: no result); 6: five records
                ("wide", &[(3, 0), (7, 0)]),
                // 7: a name no topic may have
                ("bad name!", &[(0, 0)]),
            ],
        );
        let code = |c: ErrorCode| Err(c as u16);
        assert_eq!(
            summary(call(&s, request).await),
            vec![
                (0, Ok((3, 3))),
                (1, Ok((4, 6))),
                (2, code(ErrorCode::OFFSET_OUT_OF_RANGE)),
                (3, code(ErrorCode::UNKNOWN_QUEUE)),
                (4, code(ErrorCode::UNKNOWN_TOPIC)),
                (6, Ok((5, 5))),
                (7, code(ErrorCode::INVALID_TOPIC_NAME)),
            ]
        );
        // The out-of-range error says where the queue's data is.
        let Ok(Response::FetchMulti { results }) = call(&s, multi(0, &[("t", &[(0, 9)])])).await
        else {
            panic!()
        };
        let Err(e) = &results[0].result else { panic!() };
        assert_eq!(e.detail, ErrorDetail::OffsetRange { min: 0, next: 3 });
    });
}

#[test]
fn a_request_with_nothing_new_waits_for_an_append_to_any_of_its_queues_or_its_deadline() {
    run(|| async {
        let s = shard(8).await;
        call(&s, produce(0, 1)).await.unwrap();
        // Nothing new on either queue: answered empty after the wait.
        let t = Instant::now();
        let r = call(&s, multi(50, &[("t", &[(0, 1), (1, 0)])])).await;
        assert!(t.elapsed() >= Duration::from_millis(45));
        assert_eq!(summary(r), vec![]);
        // Parked; an append to another queue of the shard wakes it, but it has nothing for it
        // and waits on; an append to one of its queues answers it.
        let s2 = s.clone();
        let parked =
            runtime::spawn(
                async move { call(&s2, multi(10_000, &[("t", &[(0, 1), (1, 0)])])).await },
            );
        until_parked(&s, 1).await;
        let wide = Request::Produce {
            topic: "wide".into(),
            queue_id: 3,
            flags: 0,
            batch: batch(1).into(),
        };
        call(&s, wide).await.unwrap();
        until_parked(&s, 1).await;
        let t = Instant::now();
        call(&s, produce(1, 2)).await.unwrap();
        let r = parked.await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(summary(r), vec![(1, Ok((2, 2)))]);
        // With data on one queue, no wait at all.
        let t = Instant::now();
        let r = call(&s, multi(10_000, &[("t", &[(0, 0), (1, 2)])])).await;
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(summary(r), vec![(0, Ok((1, 1)))]);
        // Stopping releases a parked request at once.
        let s2 = s.clone();
        let parked =
            runtime::spawn(async move { call(&s2, multi(10_000, &[("t", &[(0, 1)])])).await });
        until_parked(&s, 1).await;
        let t = Instant::now();
        s.begin_stop();
        assert_eq!(summary(parked.await.unwrap()), vec![]);
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn waiting_requests_are_bounded_and_answered_at_once_past_the_bound() {
    run(|| async {
        let s = shard(1).await;
        let s2 = s.clone();
        let parked =
            runtime::spawn(async move { call(&s2, multi(10_000, &[("t", &[(0, 0)])])).await });
        until_parked(&s, 1).await;
        // The bound (1) is reached: the next one is answered empty without waiting.
        let t = Instant::now();
        assert_eq!(summary(call(&s, multi(10_000, &[("t", &[(1, 0)])])).await), vec![]);
        assert!(t.elapsed() < Duration::from_secs(5));
        call(&s, produce(0, 1)).await.unwrap();
        assert_eq!(summary(parked.await.unwrap()), vec![(0, Ok((1, 1)))]);
    });
}

#[test]
fn a_topic_s_tags_leave_out_batches_that_cannot_match_and_move_the_scan_end_past_them() {
    run(|| async {
        let s = shard(8).await;
        call(&s, tagged(2, b"A")).await.unwrap(); // queue 0: offsets 0..2
        call(&s, tagged(1, b"B")).await.unwrap(); // 2
        call(&s, tagged(2, b"A")).await.unwrap(); // 3..5
        call(&s, produce(1, 3)).await.unwrap(); // queue 1: three untagged records
        let with_tags = |tags: Vec<Vec<u8>>| {
            Request::FetchMulti(FetchMulti {
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                topics: vec![FetchTopic {
                    topic: "t".into(),
                    tags,
                    queues: vec![
                        FetchQueue { queue_id: 0, offset: 0 },
                        FetchQueue { queue_id: 1, offset: 0 },
                    ],
                }],
            })
        };
        // Queue 0: only the B batch, scanned to its end; queue 1: nothing can match, but a
        // result says where its next fetch starts (past its batches).
        assert_eq!(
            summary(call(&s, with_tags(vec![b"B".to_vec()])).await),
            vec![(0, Ok((1, 5))), (1, Ok((0, 3)))]
        );
        assert_eq!(
            summary(call(&s, with_tags(Vec::new())).await),
            vec![(0, Ok((5, 5))), (1, Ok((3, 3)))],
            "no tags: everything"
        );
    });
}
