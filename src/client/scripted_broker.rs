//! A broker for client tests that answers every request with a function of it: a hostile or
//! inconsistent broker is a few lines. Plain threads and sockets on 127.0.0.1, one thread per
//! connection; it lives until the test process ends.

use std::io::{Read, Write};
use std::sync::Arc;

use crate::protocol::frame::{check_request, split_request};
use crate::protocol::replication::ReplResponse;
use crate::protocol::{
    decode_request, encode_error, Check, ErrorCode, ErrorDetail, Request, Response,
};
use crate::replication::epochs::EpochHistory;

/// METADATA's answer for a broker of one shard on `port`, with no topics.
pub(crate) fn one_shard(port: u16) -> Response {
    Response::Metadata {
        shard_count: 1,
        shared_port: port,
        shard_ports: vec![port],
        topics: Vec::new(),
    }
}

/// [`one_shard`]'s METADATA answer naming `topics`, each with `queues` queues (topic id 1).
pub(crate) fn one_shard_with(port: u16, topics: Vec<String>, queues: usize) -> Response {
    Response::Metadata {
        shard_count: 1,
        shared_port: port,
        shard_ports: vec![port],
        topics: topics
            .into_iter()
            .map(|name| crate::protocol::TopicRoute {
                name,
                error_code: 0,
                topic_id: 1,
                queue_owners: vec![0; queues],
            })
            .collect(),
    }
}

/// A master's REPLICA_JOIN answer that keeps the replica's whole log (`end`), session 1.
pub(crate) fn join_keeping(end: u64, history: EpochHistory) -> Response {
    Response::Replication(ReplResponse::Join {
        session: 1,
        truncate_to: end,
        master_end: end,
        history,
    })
}

/// Starts the broker; returns its address. `answer` gets the broker's port (for METADATA)
/// and the request.
pub(crate) fn scripted_broker(
    answer: impl Fn(u16, Request) -> Response + Send + Sync + 'static,
) -> String {
    scripted_broker_refusing(move |port, request| Ok(answer(port, request)))
}

/// An error answer of a scripted broker: code, message, detail.
pub(crate) type Refusal = (ErrorCode, String, ErrorDetail);

/// [`scripted_broker`] whose `answer` may also refuse a request with an error response.
pub(crate) fn scripted_broker_refusing(
    answer: impl Fn(u16, Request) -> Result<Response, Refusal> + Send + Sync + 'static,
) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
                loop {
                    let frame_bytes = match check_request(&buf, 1 << 20).unwrap() {
                        Check::Complete { frame_bytes } => frame_bytes,
                        Check::Incomplete { .. } => match s.read(&mut chunk) {
                            Ok(n) if n > 0 => {
                                buf.extend_from_slice(&chunk[..n]);
                                continue;
                            }
                            _ => return,
                        },
                    };
                    let (h, payload) = split_request(&buf[..frame_bytes]);
                    let frame = match answer(port, decode_request(&h, payload).unwrap()) {
                        Ok(reply) => reply.encode_frame(h.correlation_id),
                        Err((code, message, detail)) => {
                            encode_error(h.correlation_id, code, &message, detail)
                        }
                    };
                    if s.write_all(&frame).is_err() {
                        return;
                    }
                    buf.drain(..frame_bytes);
                }
            });
        }
    });
    format!("127.0.0.1:{port}")
}
