//! Feeds arbitrary bytes to the request frame checker and decoder, and to every response
//! decoder. Any panic is a bug; add the crashing input as a regression case in
//! tests/protocol_decoder.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::protocol::frame::{
    check_request, check_response, split_request, split_response, Check,
};
use ringmq::protocol::{
    decode_request, decode_request_shared, ApiKey, ErrorResponse, Response, SharedBytes,
};

fuzz_target!(|data: &[u8]| {
    let max = 1 << 20;
    let mut rest = data;
    while let Ok(Check::Complete { frame_bytes }) = check_request(rest, max) {
        assert!(frame_bytes <= max && frame_bytes <= rest.len());
        let (h, p) = split_request(&rest[..frame_bytes]);
        // The broker's zero-copy decode agrees with the copying one on any bytes.
        let shared = SharedBytes::from(p.to_vec());
        assert_eq!(decode_request_shared(&h, &shared), decode_request(&h, p));
        if let Ok(req) = decode_request(&h, p) {
            let again = req.encode_frame(h.correlation_id);
            let (h2, p2) = split_request(&again);
            assert_eq!(decode_request(&h2, p2).unwrap(), req);
        }
        rest = &rest[frame_bytes..];
    }
    if let Ok(Check::Complete { frame_bytes }) = check_response(data, max) {
        let (h, p) = split_response(&data[..frame_bytes]);
        for api in ApiKey::ALL {
            let _ = Response::decode(*api, p);
        }
        let _ = ErrorResponse::decode(h.error_code, p);
    }
});
