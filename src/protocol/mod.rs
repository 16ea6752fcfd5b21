//! The native wire protocol: frames, requests, responses and error codes.
//!
//! Owns the byte layout only; no I/O and no shard state, so both the broker (one connection
//! task per client on the shard that accepted it) and the client library (std threads) use it,
//! and the decoders are fuzzed (`fuzz/`) and property-tested without sockets.
//!
//! Promises:
//! - a frame is checked complete and bounded ([`frame::check_request`]) before any payload is
//!   decoded, so a peer can make the broker buffer at most `max_frame_bytes` per frame;
//! - decoding never panics and never allocates more than the bytes present justify;
//! - every refusal has an explicit [`ErrorCode`] and a message that says what to fix.
//!
//! docs/protocol.md is the normative description of the layouts.

pub mod api;
pub mod codec;
pub mod error_code;
pub mod fetch_multi;
pub mod frame;
pub mod group;
pub mod key_query;
pub mod message;
pub mod produce_multi;
pub mod producer_id;
pub mod read_buffer;
pub mod replication;
pub mod shared_bytes;
pub mod transaction;

pub use api::ApiKey;
pub use codec::DecodeError;
pub use error_code::{ErrorCode, Retriable};
pub use frame::{
    Check, FrameError, RequestHeader, ResponseHeader, DEFAULT_MAX_FRAME_BYTES,
    PRODUCE_FRAME_OVERHEAD,
};
pub use message::{
    decode_request, decode_request_shared, encode_error, message_id, ErrorDetail, ErrorResponse,
    MessageId, Request, RequestError, Response, SendStatus, ShardStats, TopicInfo, TopicRoute,
};
pub use shared_bytes::SharedBytes;
