//! Property tests: the frame checker and every decoder accept or refuse any bytes without
//! panicking, and never report a frame larger than the bound (the CI-run sibling of the
//! cargo-fuzz target in fuzz/).

use proptest::prelude::*;
use ringmq::protocol::fetch_multi::{FetchMulti, FetchQueue, FetchTopic};
use ringmq::protocol::frame::{
    check_request, check_response, split_request, split_response, Check,
};
use ringmq::protocol::group::GroupRequest;
use ringmq::protocol::{
    decode_request, decode_request_shared, ApiKey, ErrorResponse, Request, Response, SharedBytes,
};

fn drive_request_decoder(bytes: &[u8], max: usize) {
    let mut rest = bytes;
    while let Ok(Check::Complete { frame_bytes }) = check_request(rest, max) {
        assert!(frame_bytes <= max && frame_bytes <= rest.len());
        let (h, p) = split_request(&rest[..frame_bytes]);
        // The broker's zero-copy decode agrees with the copying one on any bytes.
        let shared = SharedBytes::from(p.to_vec());
        assert_eq!(decode_request_shared(&h, &shared), decode_request(&h, p));
        if let Ok(req) = decode_request(&h, p) {
            // Whatever decodes re-encodes to a frame that decodes to the same request.
            let again = req.encode_frame(h.correlation_id);
            let (h2, p2) = split_request(&again);
            assert_eq!(decode_request(&h2, p2).unwrap(), req);
        }
        rest = &rest[frame_bytes..];
    }
}

fn drive_response_decoders(bytes: &[u8]) {
    if let Ok(Check::Complete { frame_bytes }) = check_response(bytes, 1 << 20) {
        let (h, p) = split_response(&bytes[..frame_bytes]);
        for api in ApiKey::ALL {
            let _ = Response::decode(*api, p);
        }
        let _ = ErrorResponse::decode(h.error_code, p);
    }
}

fn valid_frames() -> Vec<Vec<u8>> {
    vec![
        Request::Metadata { topics: vec!["a".into(), "bb".into()] }.encode_frame(1),
        Request::CreateTopic { topic: "t".into(), queue_count: 4 }.encode_frame(2),
        Request::Produce { topic: "t".into(), queue_id: 1, flags: 0, batch: vec![9; 40].into() }
            .encode_frame(3),
        Request::Fetch {
            topic: "t".into(),
            queue_id: 1,
            offset: 5,
            max_bytes: 100,
            max_wait_ms: 10,
            tags: vec![b"A".to_vec()],
        }
        .encode_frame(4),
        Request::Offsets { topic: "t".into(), queue_id: 0, timestamp_ms: 7 }.encode_frame(5),
        Request::Stats.encode_frame(6),
        Request::Group(GroupRequest::Delete { group: "g".into() }).encode_frame(7),
        Request::FetchMulti(FetchMulti {
            max_bytes: 100,
            max_wait_ms: 5,
            topics: vec![
                FetchTopic {
                    topic: "t".into(),
                    tags: vec![b"A".to_vec()],
                    queues: vec![FetchQueue { queue_id: 1, offset: 2 }],
                },
                FetchTopic { topic: "u".into(), tags: vec![], queues: vec![] },
            ],
        })
        .encode_frame(8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 12usize..1024) {
        drive_request_decoder(&bytes, max);
        drive_response_decoders(&bytes);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..7,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut f = valid_frames()[which].clone();
        for (at, v) in flips {
            let i = at % f.len();
            f[i] = v;
        }
        let cut = cut % (f.len() + 1);
        drive_request_decoder(&f[..cut], 1 << 16);
        drive_request_decoder(&f, 1 << 16);
        drive_response_decoders(&f);
    }
}
