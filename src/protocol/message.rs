//! Request and response bodies, their encodings, and the decoder for a whole request frame.
//!
//! Payload layouts (after the frame header) are listed in docs/protocol.md; each `encode`
//! below writes exactly that and each `decode` accepts exactly that (trailing bytes are an
//! error). Decoders never trust counts: lists are bounded by [`MAX_LIST_ITEMS`] and by the
//! bytes actually present.

use super::api::ApiKey;
use super::codec::{DecodeError, Reader, Writer};
use super::error_code::ErrorCode;
use super::fetch_multi::{self, FetchMulti, FetchResult};
use super::frame::{self, RequestHeader};
use super::group::{GroupRequest, GroupResponse};
use super::key_query::{KeyHits, KeyQuery};
use super::produce_multi::{self, ProduceEntry, ProduceResult};
use super::replication::{ReplRequest, ReplResponse};
use super::shared_bytes::SharedBytes;
use super::transaction::{TxnRequest, TxnResponse};

mod response;
pub(super) use response::encode_error_body;
pub use response::*;

/// Upper bound on any list in a payload (topics in a metadata request, shards in stats...).
pub const MAX_LIST_ITEMS: u32 = 100_000;

/// A fetch's tag filter: `list<bytes>`, at most [`MAX_FETCH_TAGS`] tags of at most a record
/// key's length each.
pub(super) fn decode_tags(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = r.count("tags", MAX_FETCH_TAGS, 4)?;
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        let t = r.bytes("tag")?;
        if t.len() > crate::format::record::MAX_KEY_LEN {
            return Err(DecodeError::TooMany {
                field: "tag bytes",
                count: t.len() as u64,
                max: crate::format::record::MAX_KEY_LEN as u64,
            });
        }
        tags.push(t.to_vec());
    }
    Ok(tags)
}

/// Most tags one fetch may filter on.
pub const MAX_FETCH_TAGS: u32 = 64;

/// Produce flag: the client does not want a response (oneway send).
pub const PRODUCE_FLAG_NO_RESPONSE: u8 = 1;

/// A decoded request. Owned and `Send`, so a shard can forward it to the owning shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Routes for the named topics; all topics when empty.
    Metadata {
        topics: Vec<String>,
    },
    CreateTopic {
        topic: String,
        queue_count: u32,
    },
    DeleteTopic {
        topic: String,
    },
    ListTopics,
    /// One batch (format v1) for one queue. Decoded by the broker, the batch is the range of
    /// the connection's read buffer the socket put it in ([`decode_request_shared`]).
    Produce {
        topic: String,
        queue_id: u32,
        flags: u8,
        batch: SharedBytes,
    },
    /// Batches for several queues, each stored and answered as its own PRODUCE would be
    /// ([`super::produce_multi`]). The batches are ranges of the read buffer, as a PRODUCE's.
    ProduceMulti {
        entries: Vec<ProduceEntry>,
    },
    /// Stored batches from `offset`, up to about `max_bytes` (at least one whole batch when
    /// any exists). Waits up to `max_wait_ms` when `offset` is the queue's end. With `tags`,
    /// batches whose tag summary cannot hold any of them are skipped by the broker.
    Fetch {
        topic: String,
        queue_id: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
        tags: Vec<Vec<u8>>,
    },
    /// A FETCH of the queue (and tags) that fetch `after` (a correlation id on this connection)
    /// read, from where its answer's scan ended, sent before that answer came. Answered as a
    /// FETCH; FETCH_CHAIN_BROKEN when `after` is unknown here, already continued, forgotten, or
    /// failed.
    FetchNext {
        after: u32,
        max_bytes: u32,
        max_wait_ms: u32,
    },
    /// Several queues' stored batches, chosen in log order ([`super::fetch_multi`]).
    FetchMulti(FetchMulti),
    /// Queue bounds and, when `timestamp_ms >= 0`, the first offset stored at or after it.
    Offsets {
        topic: String,
        queue_id: u32,
        timestamp_ms: i64,
    },
    Stats,
    /// A new idempotent producer id (epoch 0); see [`super::producer_id`].
    InitProducer,
    /// A new idempotent producer id and the broker's sequence window
    /// ([`super::producer_id::WINDOW_BATCHES`] in this build).
    InitProducerWindow,
    /// A consumer-group request ([`super::group`]).
    Group(GroupRequest),
    /// One batch for one queue, held by the broker (invisible to consumers) until `delivery`,
    /// then appended to the queue unchanged. Answered like a produce, with where the broker
    /// holds it (`%SYS%schedule`); see docs/protocol.md.
    ProduceScheduled {
        topic: String,
        queue_id: u32,
        delivery: Delivery,
        batch: SharedBytes,
    },
    /// A transaction request ([`super::transaction`]).
    Transaction(TxnRequest),
    /// Messages by key from one shard's key index ([`super::key_query`]).
    QueryKeys(KeyQuery),
    /// A replica shard's request to its master shard ([`super::replication`]).
    Replication(ReplRequest),
}

/// When a scheduled produce is delivered: wire kind 1 (a delay level) or 2 (Unix ms).
pub use crate::schedule::levels::DeliveryRequest as Delivery;

fn encode_delivery(delivery: &Delivery, w: &mut Writer) {
    match *delivery {
        Delivery::Level(level) => w.u8(1).i64(level.into()),
        Delivery::AtMs(at) => w.u8(2).i64(at),
    };
}

fn decode_delivery(r: &mut Reader<'_>) -> Result<Delivery, DecodeError> {
    let kind = r.u8("delivery_kind")?;
    let value = r.i64("delivery")?;
    match kind {
        1 => u32::try_from(value)
            .map(Delivery::Level)
            .map_err(|_| DecodeError::BadValue { field: "delay level", value: value as u64 }),
        2 => Ok(Delivery::AtMs(value)),
        k => Err(DecodeError::BadValue { field: "delivery_kind", value: k.into() }),
    }
}

impl Request {
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::Metadata { .. } => ApiKey::Metadata,
            Request::CreateTopic { .. } => ApiKey::CreateTopic,
            Request::DeleteTopic { .. } => ApiKey::DeleteTopic,
            Request::ListTopics => ApiKey::ListTopics,
            Request::Produce { .. } => ApiKey::Produce,
            Request::ProduceMulti { .. } => ApiKey::ProduceMulti,
            Request::Fetch { .. } => ApiKey::Fetch,
            Request::FetchNext { .. } => ApiKey::FetchNext,
            Request::FetchMulti(_) => ApiKey::FetchMulti,
            Request::Offsets { .. } => ApiKey::Offsets,
            Request::Stats => ApiKey::Stats,
            Request::InitProducer => ApiKey::InitProducer,
            Request::InitProducerWindow => ApiKey::InitProducerWindow,
            Request::Group(g) => g.api_key(),
            Request::ProduceScheduled { .. } => ApiKey::ProduceScheduled,
            Request::Transaction(t) => t.api_key(),
            Request::QueryKeys(q) => q.api_key(),
            Request::Replication(r) => r.api_key(),
        }
    }

    /// Whether the sender expects a response frame.
    pub fn wants_response(&self) -> bool {
        !matches!(self, Request::Produce { flags, .. } if flags & PRODUCE_FLAG_NO_RESPONSE != 0)
    }

    /// A long poll's wait: FETCH, FETCH_MULTI, WATCH_GROUP and CHECK_TRANSACTIONS may park for
    /// this many milliseconds, and stopping them early only answers them sooner (what a wait
    /// that ended would answer). None for every other request, replication's fetch too (it
    /// also acknowledges the replica's position).
    pub fn long_poll_wait_ms(&self) -> Option<u32> {
        match self {
            Request::Fetch { max_wait_ms, .. }
            | Request::FetchMulti(FetchMulti { max_wait_ms, .. })
            | Request::Group(GroupRequest::Watch { max_wait_ms, .. })
            | Request::Transaction(TxnRequest::Check { max_wait_ms, .. }) => Some(*max_wait_ms),
            _ => None,
        }
    }

    /// This request without its wait, if it is a long poll that waits (see
    /// [`Request::long_poll_wait_ms`]): answered at once with what there is.
    pub fn without_wait(&self) -> Option<Request> {
        if self.long_poll_wait_ms()? == 0 {
            return None;
        }
        let mut quick = self.clone();
        match &mut quick {
            Request::Fetch { max_wait_ms, .. }
            | Request::FetchMulti(FetchMulti { max_wait_ms, .. })
            | Request::Group(GroupRequest::Watch { max_wait_ms, .. })
            | Request::Transaction(TxnRequest::Check { max_wait_ms, .. }) => *max_wait_ms = 0,
            _ => unreachable!("a long poll"),
        }
        Some(quick)
    }

    /// Encodes a whole request frame.
    /// Appends everything of a produce request's frame except the batch bytes to `out`; the
    /// batch follows it on the wire unchanged: lets a sender write the head then the batch from
    /// its own buffer (or gather several requests' heads into one write) instead of copying the
    /// batch into a frame. Head + batch equals the `encode_frame` of the same `Request::Produce`.
    pub fn append_produce_head(
        out: &mut Vec<u8>,
        correlation_id: u32,
        topic: &str,
        queue_id: u32,
        flags: u8,
        batch_len: usize,
    ) {
        let key = ApiKey::Produce;
        let start = out.len();
        let header = RequestHeader {
            api_key: key as u16,
            api_version: key.current_version(),
            correlation_id,
        };
        frame::append_request_head(out, header);
        let mut w = Writer::with_buffer(std::mem::take(out));
        let n = u32::try_from(batch_len).expect("batch under 4 GiB (frames are bounded)");
        w.string(topic).u32(queue_id).u8(flags).u32(n);
        *out = w.buf;
        let total = out.len() - start + batch_len - frame::LEN_PREFIX;
        let total = u32::try_from(total).expect("frame under 4 GiB");
        out[start..start + frame::LEN_PREFIX].copy_from_slice(&total.to_le_bytes());
    }

    pub fn encode_frame(&self, correlation_id: u32) -> Vec<u8> {
        let key = self.api_key();
        let mut buf = frame::begin_request(RequestHeader {
            api_key: key as u16,
            api_version: key.current_version(),
            correlation_id,
        });
        if let Request::Produce { batch, topic, .. } = self {
            buf.reserve(batch.len() + topic.len() + 16);
        }
        let mut w = Writer::with_buffer(buf);
        match self {
            Request::Metadata { topics } => {
                w.count(topics.len());
                for t in topics {
                    w.string(t);
                }
            }
            Request::CreateTopic { topic, queue_count } => {
                w.string(topic).u32(*queue_count);
            }
            Request::DeleteTopic { topic } => {
                w.string(topic);
            }
            Request::ListTopics
            | Request::Stats
            | Request::InitProducer
            | Request::InitProducerWindow => {}
            Request::Produce { topic, queue_id, flags, batch } => {
                w.string(topic).u32(*queue_id).u8(*flags).bytes(batch);
            }
            Request::ProduceMulti { entries } => produce_multi::encode_entries(entries, &mut w),
            Request::Fetch { topic, queue_id, offset, max_bytes, max_wait_ms, tags } => {
                w.string(topic).u32(*queue_id).u64(*offset).u32(*max_bytes).u32(*max_wait_ms);
                w.count(tags.len());
                for t in tags {
                    w.bytes(t);
                }
            }
            Request::FetchNext { after, max_bytes, max_wait_ms } => {
                w.u32(*after).u32(*max_bytes).u32(*max_wait_ms);
            }
            Request::FetchMulti(f) => f.encode_body(&mut w),
            Request::Offsets { topic, queue_id, timestamp_ms } => {
                w.string(topic).u32(*queue_id).i64(*timestamp_ms);
            }
            Request::Group(g) => g.encode_body(&mut w),
            Request::ProduceScheduled { topic, queue_id, delivery, batch } => {
                w.string(topic).u32(*queue_id);
                encode_delivery(delivery, &mut w);
                w.bytes(batch);
            }
            Request::Transaction(t) => t.encode_body(&mut w),
            Request::QueryKeys(q) => q.encode_body(&mut w),
            Request::Replication(r) => r.encode_body(&mut w),
        }
        let mut buf = w.buf;
        frame::finish_frame(&mut buf);
        buf
    }
}

/// Why a checked frame is not a request this broker can serve. Each maps to an error code;
/// the connection answers it and keeps going (framing is intact).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("unknown api key {0}")]
    UnsupportedApi(u16),
    #[error("api {api:?} does not support version {version} (supported {lo}..={hi})")]
    UnsupportedVersion { api: ApiKey, version: u16, lo: u16, hi: u16 },
    #[error("malformed {api:?} request: {source}")]
    Malformed { api: ApiKey, source: DecodeError },
}

impl RequestError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::UnsupportedApi(_) => ErrorCode::UNSUPPORTED_API,
            RequestError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
            RequestError::Malformed { .. } => ErrorCode::MALFORMED_REQUEST,
        }
    }
}

/// Decodes the payload of a complete, checked request frame. A produce's batch is copied out
/// of `payload`; the broker uses [`decode_request_shared`] instead.
pub fn decode_request(header: &RequestHeader, payload: &[u8]) -> Result<Request, RequestError> {
    decode_checked(header, payload, &|range| SharedBytes::from(payload[range].to_vec()))
}

/// Like [`decode_request`], but a produce's batch is a slice of `payload` itself (no copy):
/// the request keeps those bytes alive until it is dropped.
pub fn decode_request_shared(
    header: &RequestHeader,
    payload: &SharedBytes,
) -> Result<Request, RequestError> {
    decode_checked(header, payload, &|range| payload.slice(range))
}

/// `batch` turns the batch's byte range within `payload` into the request's bytes.
fn decode_checked(
    header: &RequestHeader,
    payload: &[u8],
    batch: &dyn Fn(std::ops::Range<usize>) -> SharedBytes,
) -> Result<Request, RequestError> {
    let api =
        ApiKey::from_u16(header.api_key).ok_or(RequestError::UnsupportedApi(header.api_key))?;
    if !api.supports(header.api_version) {
        let (lo, hi) = api.supported_versions();
        return Err(RequestError::UnsupportedVersion { api, version: header.api_version, lo, hi });
    }
    decode_body(api, payload, batch).map_err(|source| RequestError::Malformed { api, source })
}

fn decode_body(
    api: ApiKey,
    payload: &[u8],
    batch: &dyn Fn(std::ops::Range<usize>) -> SharedBytes,
) -> Result<Request, DecodeError> {
    let mut r = Reader::new(payload);
    let req = match api {
        ApiKey::Metadata => {
            let n = r.count("topics", MAX_LIST_ITEMS, 2)?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                topics.push(r.string("topic")?);
            }
            Request::Metadata { topics }
        }
        ApiKey::CreateTopic => {
            Request::CreateTopic { topic: r.string("topic")?, queue_count: r.u32("queue_count")? }
        }
        ApiKey::DeleteTopic => Request::DeleteTopic { topic: r.string("topic")? },
        ApiKey::ListTopics => Request::ListTopics,
        ApiKey::Produce => {
            let topic = r.string("topic")?;
            let queue_id = r.u32("queue_id")?;
            let flags = r.u8("flags")?;
            let len = r.bytes("batch")?.len();
            let end = payload.len() - r.remaining();
            Request::Produce { topic, queue_id, flags, batch: batch(end - len..end) }
        }
        ApiKey::ProduceMulti => Request::ProduceMulti {
            entries: produce_multi::decode_entries(&mut r, payload.len(), batch)?,
        },
        ApiKey::Fetch => {
            let topic = r.string("topic")?;
            let queue_id = r.u32("queue_id")?;
            let offset = r.u64("offset")?;
            let max_bytes = r.u32("max_bytes")?;
            let max_wait_ms = r.u32("max_wait_ms")?;
            let tags = decode_tags(&mut r)?;
            Request::Fetch { topic, queue_id, offset, max_bytes, max_wait_ms, tags }
        }
        ApiKey::FetchNext => Request::FetchNext {
            after: r.u32("after")?,
            max_bytes: r.u32("max_bytes")?,
            max_wait_ms: r.u32("max_wait_ms")?,
        },
        ApiKey::FetchMulti => Request::FetchMulti(FetchMulti::decode_body(&mut r)?),
        ApiKey::Offsets => Request::Offsets {
            topic: r.string("topic")?,
            queue_id: r.u32("queue_id")?,
            timestamp_ms: r.i64("timestamp_ms")?,
        },
        ApiKey::Stats => Request::Stats,
        ApiKey::InitProducer => Request::InitProducer,
        ApiKey::InitProducerWindow => Request::InitProducerWindow,
        ApiKey::ProduceScheduled => {
            let topic = r.string("topic")?;
            let queue_id = r.u32("queue_id")?;
            let delivery = decode_delivery(&mut r)?;
            let len = r.bytes("batch")?.len();
            let end = payload.len() - r.remaining();
            Request::ProduceScheduled { topic, queue_id, delivery, batch: batch(end - len..end) }
        }
        txn if txn.is_transaction() => Request::Transaction(TxnRequest::decode_body(txn, &mut r)?),
        ApiKey::QueryKeys => Request::QueryKeys(KeyQuery::decode_body(&mut r)?),
        repl if repl.is_replication() => {
            Request::Replication(ReplRequest::decode_body(repl, &mut r)?)
        }
        group => Request::Group(GroupRequest::decode_body(group, &mut r)?),
    };
    r.finish()?;
    Ok(req)
}

#[cfg(test)]
mod tests;
