use super::*;
use crate::protocol::frame::{check_request, check_response, split_request, split_response};

fn round_trip_request(req: Request) {
    let f = req.encode_frame(5);
    assert!(matches!(check_request(&f, 1 << 20), Ok(frame::Check::Complete { .. })));
    let (h, p) = split_request(&f);
    assert_eq!(h.correlation_id, 5);
    assert_eq!(decode_request(&h, p).unwrap(), req);
}

fn round_trip_response(resp: Response) {
    let f = resp.encode_frame(6);
    assert!(matches!(check_response(&f, 1 << 20), Ok(frame::Check::Complete { .. })));
    let (h, p) = split_response(&f);
    assert_eq!((h.correlation_id, h.error_code), (6, 0));
    assert_eq!(Response::decode(resp.api_key(), p).unwrap(), resp);
}

#[test]
fn every_request_round_trips() {
    round_trip_request(Request::Metadata { topics: vec!["a".into(), "b".into()] });
    round_trip_request(Request::CreateTopic { topic: "t".into(), queue_count: 8 });
    round_trip_request(Request::DeleteTopic { topic: "t".into() });
    round_trip_request(Request::ListTopics);
    round_trip_request(Request::Produce {
        topic: "t".into(),
        queue_id: 3,
        flags: 1,
        batch: vec![1, 2, 3].into(),
    });
    round_trip_request(Request::Fetch {
        topic: "t".into(),
        queue_id: 1,
        offset: 9,
        max_bytes: 100,
        max_wait_ms: 50,
        tags: vec![b"TagA".to_vec(), Vec::new()],
    });
    round_trip_request(Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: -1 });
    round_trip_request(Request::Stats);
    round_trip_request(Request::InitProducer);
    round_trip_request(Request::InitProducerWindow);
    for delivery in [Delivery::Level(3), Delivery::AtMs(-1), Delivery::AtMs(1 << 50)] {
        round_trip_request(Request::ProduceScheduled {
            topic: "t".into(),
            queue_id: 2,
            delivery,
            batch: vec![4, 5].into(),
        });
    }
    for g in group_requests() {
        round_trip_request(Request::Group(g));
    }
    for t in transaction_requests() {
        round_trip_request(Request::Transaction(t));
    }
    round_trip_request(Request::QueryKeys(KeyQuery {
        shard: 3,
        topic: "t".into(),
        key: b"order-1".to_vec(),
        from_ms: -1,
        to_ms: i64::MAX,
        max: 32,
    }));
}

#[test]
fn key_hits_round_trip() {
    use super::super::key_query::KeyHit;
    round_trip_response(Response::QueryKeys(KeyHits {
        hits: vec![KeyHit { queue_id: 2, offset: 1 << 40, store_timestamp_ms: 17 }],
        truncated: true,
        indexed_to: 4096,
        log_end: 8192,
    }));
    round_trip_response(Response::QueryKeys(KeyHits {
        hits: vec![],
        truncated: false,
        indexed_to: 0,
        log_end: 0,
    }));
}

fn transaction_requests() -> Vec<TxnRequest> {
    use super::super::transaction::*;
    vec![
        TxnRequest::End {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 3,
            transaction_id: 1 << 33,
            action: EndAction::Commit,
        },
        TxnRequest::End {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 0,
            transaction_id: 0,
            action: EndAction::Rollback,
        },
        TxnRequest::Check { group: "g".into(), shard: 2, max_wait_ms: 500, max_checks: 8 },
        TxnRequest::List { shard: 1, max: 100 },
    ]
}

#[test]
fn transaction_responses_round_trip_and_bad_actions_are_refused() {
    use super::super::transaction::*;
    for resp in [
        TxnResponse::End { status: SendStatus::SendOk, base_offset: 9, record_count: 2 },
        TxnResponse::End { status: SendStatus::FlushDiskTimeout, base_offset: 0, record_count: 0 },
        TxnResponse::Check {
            checks: vec![TransactionCheck {
                transaction_id: 4,
                topic: "t".into(),
                queue_id: 1,
                checks: 3,
                batch: vec![1, 2, 3],
            }],
        },
        TxnResponse::Check { checks: vec![] },
        TxnResponse::List {
            halves: vec![HalfInfo {
                transaction_id: 4,
                group: "g".into(),
                topic: "t".into(),
                queue_id: 1,
                age_ms: 60_000,
                checks: 2,
            }],
        },
    ] {
        round_trip_response(Response::Transaction(resp));
    }
    let mut f = Request::Transaction(TxnRequest::End {
        group: "g".into(),
        topic: "t".into(),
        queue_id: 0,
        transaction_id: 0,
        action: EndAction::Commit,
    })
    .encode_frame(1);
    *f.last_mut().unwrap() = 7;
    let (h, p) = crate::protocol::frame::split_request(&f);
    assert!(matches!(
        decode_request(&h, p),
        Err(RequestError::Malformed { api: ApiKey::EndTransaction, .. })
    ));
}

#[test]
fn a_scheduled_produce_with_an_unknown_delivery_kind_is_refused() {
    let req = Request::ProduceScheduled {
        topic: "t".into(),
        queue_id: 0,
        delivery: Delivery::Level(1),
        batch: vec![1].into(),
    };
    let f = req.encode_frame(1);
    for (at, value) in [(0usize, 3u8), (1, 0xFF)] {
        let mut bad = f.clone();
        // After the header, topic (u16 len + 1 byte) and queue id: kind, then i64 value.
        let kind_at = f.len() - 4 - 1 - 8 - 1;
        bad[kind_at + at * 8] = value;
        let (header, payload) = split_request(&bad);
        assert!(decode_request(&header, payload).is_err(), "byte {at} = {value}");
    }
}

fn group_requests() -> Vec<GroupRequest> {
    use super::super::group::*;
    let q = |id| GroupQueue { topic: "t".into(), queue_id: id };
    vec![
        GroupRequest::Heartbeat {
            group: "g".into(),
            client_id: "c".into(),
            room: "r1".into(),
            subscriptions: vec![("t".into(), "A || B".into()), ("u".into(), "*".into())],
        },
        GroupRequest::Leave { group: "g".into(), client_id: "c".into() },
        GroupRequest::Members { group: "g".into() },
        GroupRequest::Watch { group: "g".into(), version: 7, max_wait_ms: 100 },
        GroupRequest::CommitOffsets {
            group: "g".into(),
            generation: 3,
            offsets: vec![QueueCommit { topic: "t".into(), queue_id: 2, offset: 1 << 40 }],
        },
        GroupRequest::FetchOffsets { group: "g".into(), queues: vec![q(0), q(9)] },
        GroupRequest::Lock {
            group: "g".into(),
            client_id: "c".into(),
            lease_ms: 1,
            queues: vec![q(1)],
        },
        GroupRequest::Unlock { group: "g".into(), client_id: "c".into(), queues: vec![] },
        GroupRequest::Reset { group: "g".into(), topic: "t".into(), to: ResetTo::Earliest },
        GroupRequest::Reset { group: "g".into(), topic: "t".into(), to: ResetTo::Latest },
        GroupRequest::Reset { group: "g".into(), topic: "t".into(), to: ResetTo::Timestamp(-5) },
        GroupRequest::Reset { group: "g".into(), topic: "t".into(), to: ResetTo::Offset(9) },
        GroupRequest::ListGroups { after: None },
        GroupRequest::ListGroups { after: Some(String::new()) },
        GroupRequest::ListGroups { after: Some("g-0042".into()) },
        GroupRequest::Delete { group: "g".into() },
    ]
}

#[test]
fn every_response_round_trips() {
    round_trip_response(Response::Metadata {
        shard_count: 2,
        shared_port: 9876,
        shard_ports: vec![9877, 9878],
        topics: vec![TopicRoute {
            name: "t".into(),
            error_code: 0,
            topic_id: 1,
            queue_owners: vec![0, 1, 0],
        }],
    });
    round_trip_response(Response::CreateTopic { topic_id: 4 });
    round_trip_response(Response::DeleteTopic { topic_id: 4 });
    round_trip_response(Response::ListTopics {
        topics: vec![TopicInfo { name: "x".into(), topic_id: 2, queue_count: 4 }],
    });
    round_trip_response(Response::Produce {
        status: SendStatus::FlushDiskTimeout,
        topic_id: 1,
        queue_id: 2,
        base_offset: 3,
        record_count: 4,
        store_timestamp_ms: 5,
    });
    round_trip_response(Response::Fetch {
        min_offset: 1,
        next_offset: 2,
        scan_end_offset: 2,
        batches: vec![7; 9],
    });
    round_trip_response(Response::Offsets { min_offset: 1, next_offset: 2, timestamp_offset: 2 });
    round_trip_response(Response::Stats {
        shards: vec![ShardStats { shard: 1, errors: 3, ..Default::default() }],
    });
    round_trip_response(Response::InitProducer { producer_id: 7 << 16 });
    round_trip_response(Response::InitProducerWindow { producer_id: 7 << 16, window_batches: 16 });
    use super::super::group::*;
    let q = |id| GroupQueue { topic: "t".into(), queue_id: id };
    for g in [
        GroupResponse::Heartbeat { version: 9, changed: true, session_timeout_ms: 3000 },
        GroupResponse::Leave { version: 0 },
        GroupResponse::Members {
            version: 4,
            members: vec![GroupMember {
                client_id: "c".into(),
                room: String::new(),
                subscriptions: vec![("t".into(), "*".into())],
            }],
        },
        GroupResponse::Watch { version: 5 },
        GroupResponse::CommitOffsets { status: SendStatus::FlushDiskTimeout },
        GroupResponse::FetchOffsets { offsets: vec![(q(0), -1), (q(1), 12)] },
        GroupResponse::Lock { granted: vec![q(3)] },
        GroupResponse::Unlock { released: 2 },
        GroupResponse::Delete { removed: 3 },
        GroupResponse::Reset { offsets: vec![(0, 1), (1, 2)] },
        GroupResponse::ListGroups {
            groups: vec![GroupSummary {
                group: "g".into(),
                members: 2,
                version: 3,
                committed_queues: 4,
            }],
            more: None,
        },
        GroupResponse::ListGroups { groups: vec![], more: Some(false) },
        GroupResponse::ListGroups {
            groups: vec![GroupSummary {
                group: "h".into(),
                members: 0,
                version: 0,
                committed_queues: 1,
            }],
            more: Some(true),
        },
    ] {
        round_trip_response(Response::Group(g));
    }
}

#[test]
fn truncated_group_requests_are_refused_not_panics() {
    for g in group_requests() {
        let f = Request::Group(g).encode_frame(1);
        let (h, p) = split_request(&f);
        for cut in 0..p.len() {
            // LIST_GROUPS's `after` is optional: without it, the request of older clients.
            if cut == 0 && h.api_key == ApiKey::ListGroups as u16 {
                let old = Request::Group(GroupRequest::ListGroups { after: None });
                assert_eq!(decode_request(&h, &p[..cut]), Ok(old));
                continue;
            }
            assert!(decode_request(&h, &p[..cut]).is_err(), "{h:?} cut at {cut}");
        }
    }
}

#[test]
fn errors_carry_messages_and_offset_ranges() {
    let f = encode_error(
        8,
        ErrorCode::OFFSET_OUT_OF_RANGE,
        "below start",
        ErrorDetail::OffsetRange { min: 10, next: 20 },
    );
    let (h, p) = split_response(&f);
    let e = ErrorResponse::decode(h.error_code, p).unwrap();
    assert_eq!(e.known_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
    assert_eq!(e.detail, ErrorDetail::OffsetRange { min: 10, next: 20 });
    assert_eq!(e.message, "below start");
}

#[test]
fn corrupt_data_carries_the_batch_offsets() {
    let frame = encode_error(
        9,
        ErrorCode::CORRUPT_DATA,
        "bad crc",
        ErrorDetail::CorruptRange { first: 40, next: 50 },
    );
    let (h, p) = split_response(&frame);
    let e = ErrorResponse::decode(h.error_code, p).unwrap();
    assert_eq!(e.known_code(), Some(ErrorCode::CORRUPT_DATA));
    assert_eq!(e.detail, ErrorDetail::CorruptRange { first: 40, next: 50 });
    assert_eq!(e.message, "bad crc");
    // The detail is required: a CORRUPT_DATA without it does not decode.
    let bare = encode_error(9, ErrorCode::CORRUPT_DATA, "bad crc", ErrorDetail::None);
    let (h, p) = split_response(&bare);
    assert!(ErrorResponse::decode(h.error_code, p).is_err());
}

#[test]
fn unknown_api_version_and_trailing_bytes_are_refused() {
    let h = RequestHeader { api_key: 99, api_version: 1, correlation_id: 1 };
    assert_eq!(decode_request(&h, &[]), Err(RequestError::UnsupportedApi(99)));
    let h = RequestHeader { api_key: ApiKey::Stats as u16, api_version: 7, correlation_id: 1 };
    assert!(matches!(decode_request(&h, &[]), Err(RequestError::UnsupportedVersion { .. })));
    let h = RequestHeader { api_key: ApiKey::Stats as u16, api_version: 1, correlation_id: 1 };
    assert!(matches!(decode_request(&h, &[0]), Err(RequestError::Malformed { .. })));
}

#[test]
fn a_shared_decode_borrows_the_produce_batch_from_the_frame() {
    let batch: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let req = Request::Produce {
        topic: "orders".into(),
        queue_id: 2,
        flags: 0,
        batch: batch.clone().into(),
    };
    let frame = SharedBytes::from(req.encode_frame(9));
    let (h, p) = split_request(&frame);
    let at = frame.len() - p.len();
    let payload = frame.slice(at..frame.len());
    let decoded = decode_request_shared(&h, &payload).unwrap();
    assert_eq!(decoded, req);
    let Request::Produce { batch: got, .. } = &decoded else { unreachable!() };
    // The batch is the frame's own bytes (its last 300), not a copy.
    assert!(std::ptr::eq(&got[0], &frame[frame.len() - batch.len()]));
    // Every other request decodes the same either way.
    for req in [Request::Stats, Request::Metadata { topics: vec!["a".into()] }] {
        let frame = SharedBytes::from(req.encode_frame(1));
        let (h, p) = split_request(&frame);
        let payload = frame.slice(frame.len() - p.len()..frame.len());
        assert_eq!(decode_request_shared(&h, &payload).unwrap(), req);
    }
    // A truncated produce is refused, not sliced out of bounds.
    let mut short = req.encode_frame(9);
    short.truncate(short.len() - 1);
    frame::finish_frame(&mut short);
    let short = SharedBytes::from(short);
    let (h, p) = split_request(&short);
    let payload = short.slice(short.len() - p.len()..short.len());
    assert!(matches!(decode_request_shared(&h, &payload), Err(RequestError::Malformed { .. })));
}

#[test]
fn fetch_head_plus_batches_equals_the_fetch_frame() {
    let batches = vec![3u8; 77];
    let whole = Response::Fetch {
        min_offset: 4,
        next_offset: 9,
        scan_end_offset: 8,
        batches: batches.clone(),
    }
    .encode_frame(12);
    let mut split = encode_fetch_head(12, 4, 9, 8, batches.len());
    split.extend_from_slice(&batches);
    assert_eq!(split, whole);
}

#[test]
fn message_ids_are_fixed_width_hex() {
    assert_eq!(message_id(7, 3, 1 << 40), "00000007000000030000010000000000");
    for (t, q, o) in
        [(0, 0, 0), (u32::MAX, u32::MAX, u64::MAX), (0xABCD, 0x1234_5678, 0xFEDC_BA98_7654_3210)]
    {
        assert_eq!(message_id(t, q, o), format!("{t:08X}{q:08X}{o:016X}"));
        let id = MessageId::new(t, q, o);
        let text = format!("{t:08X}{q:08X}{o:016X}");
        assert_eq!(id.to_string(), text);
        assert_eq!(text.parse::<MessageId>(), Ok(id));
        assert_eq!(text.to_lowercase().parse::<MessageId>(), Ok(id));
        assert!(id == text.as_str() && id == text.to_lowercase());
        assert!(id != format!("{text}0") && id != text[1..]);
        assert_eq!(format!("{id:>34}"), format!("  {text}"), "width and fill honoured");
    }
    for bad in ["", "123", &"0".repeat(33), &"g".repeat(32), &"é".repeat(16)] {
        assert!(bad.parse::<MessageId>().unwrap_err().contains("32 hex digits"), "{bad}");
    }
}

#[test]
fn produce_head_plus_batch_is_the_encoded_frame() {
    let batch: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let req =
        Request::Produce { topic: "orders".into(), queue_id: 7, flags: 1, batch: batch.into() };
    let whole = req.encode_frame(42);
    let Request::Produce { batch, .. } = &req else { unreachable!() };
    // After bytes already in the buffer (a gathered write), as at its start.
    let mut parts = b"earlier frames".to_vec();
    Request::append_produce_head(&mut parts, 42, "orders", 7, 1, batch.len());
    parts.extend_from_slice(batch);
    assert_eq!(&parts[14..], &whole[..]);
    assert_eq!(&parts[..14], b"earlier frames");
}

#[test]
fn a_list_groups_answer_takes_the_bytes_counted_for_it() {
    use super::super::group::*;
    let long = "c".repeat(255);
    let groups: Vec<GroupSummary> = ["a", "bb", long.as_str()]
        .iter()
        .map(|g| GroupSummary { group: (*g).into(), members: 1, version: 2, committed_queues: 3 })
        .collect();
    for more in [None, Some(false), Some(true)] {
        let counted = LIST_GROUPS_ANSWER_FIXED_BYTES
            + usize::from(more.is_some())
            + groups.iter().map(|g| group_summary_bytes(&g.group)).sum::<usize>();
        let answer = GroupResponse::ListGroups { groups: groups.clone(), more };
        assert_eq!(Response::Group(answer).encode_frame(1).len(), counted, "{more:?}");
    }
}

#[test]
fn a_list_groups_request_without_after_is_the_first_page_of_older_clients() {
    use super::super::group::*;
    // What clients before paging send: an empty payload.
    let h = RequestHeader { api_key: ApiKey::ListGroups as u16, api_version: 1, correlation_id: 3 };
    let want = Request::Group(GroupRequest::ListGroups { after: None });
    assert_eq!(decode_request(&h, &[]), Ok(want));
    // Their answer has no `more` byte: the layout they decode.
    let old = GroupResponse::ListGroups { groups: vec![], more: None };
    let f = Response::Group(old).encode_frame(3);
    let (_, p) = split_response(&f);
    assert_eq!(p, [0, 0, 0, 0]);
    // A `more` byte other than 0 or 1 is refused.
    assert!(Response::decode(ApiKey::ListGroups, &[0, 0, 0, 0, 2]).is_err());
}

#[test]
fn long_polls_lose_only_their_wait_and_nothing_else_is_one() {
    let fetch = |max_wait_ms| Request::Fetch {
        topic: "t".into(),
        queue_id: 1,
        offset: 9,
        max_bytes: 100,
        max_wait_ms,
        tags: vec![b"TagA".to_vec()],
    };
    let multi = |max_wait_ms| {
        Request::FetchMulti(FetchMulti {
            max_bytes: 7,
            max_wait_ms,
            topics: vec![fetch_multi::FetchTopic {
                topic: "t".into(),
                tags: Vec::new(),
                queues: vec![fetch_multi::FetchQueue { queue_id: 2, offset: 5 }],
            }],
        })
    };
    let watch = |max_wait_ms| {
        Request::Group(GroupRequest::Watch { group: "g".into(), version: 4, max_wait_ms })
    };
    let check = |max_wait_ms| {
        Request::Transaction(TxnRequest::Check {
            group: "p".into(),
            shard: 1,
            max_wait_ms,
            max_checks: 3,
        })
    };
    for make in [&fetch as &dyn Fn(u32) -> Request, &multi, &watch, &check] {
        assert_eq!(make(30_000).long_poll_wait_ms(), Some(30_000));
        assert_eq!(make(30_000).without_wait(), Some(make(0)));
        assert_eq!(make(0).long_poll_wait_ms(), Some(0));
        assert_eq!(make(0).without_wait(), None, "nothing to take away");
    }
    let repl = Request::Replication(ReplRequest::Fetch {
        session: 1,
        from: 2,
        synced: 2,
        max_bytes: 10,
        max_wait_ms: 500,
    });
    let others = [
        repl,
        Request::Stats,
        Request::Group(GroupRequest::Members { group: "g".into() }),
        Request::Produce { topic: "t".into(), queue_id: 0, flags: 0, batch: vec![1].into() },
    ];
    for r in others {
        assert_eq!((r.long_poll_wait_ms(), r.without_wait()), (None, None), "{r:?}");
    }
}
