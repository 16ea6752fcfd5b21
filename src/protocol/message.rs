//! Request and response bodies, their encodings, and the decoder for a whole request frame.
//!
//! Payload layouts (after the frame header) are listed in docs/protocol.md; each `encode`
//! below writes exactly that and each `decode` accepts exactly that (trailing bytes are an
//! error). Decoders never trust counts: lists are bounded by [`MAX_LIST_ITEMS`] and by the
//! bytes actually present.

use super::api::ApiKey;
use super::codec::{DecodeError, Reader, Writer};
use super::error_code::ErrorCode;
use super::frame::{self, RequestHeader};
use super::group::{GroupRequest, GroupResponse};
use super::key_query::{KeyHits, KeyQuery};
use super::produce_multi::{self, ProduceEntry, ProduceResult};
use super::replication::{ReplRequest, ReplResponse};
use super::shared_bytes::SharedBytes;
use super::transaction::{TxnRequest, TxnResponse};

/// Upper bound on any list in a payload (topics in a metadata request, shards in stats...).
pub const MAX_LIST_ITEMS: u32 = 100_000;

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
    /// Queue bounds and, when `timestamp_ms >= 0`, the first offset stored at or after it.
    Offsets {
        topic: String,
        queue_id: u32,
        timestamp_ms: i64,
    },
    Stats,
    /// A new idempotent producer id (epoch 0); see [`super::producer_id`].
    InitProducer,
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
            Request::Offsets { .. } => ApiKey::Offsets,
            Request::Stats => ApiKey::Stats,
            Request::InitProducer => ApiKey::InitProducer,
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
            Request::ListTopics | Request::Stats | Request::InitProducer => {}
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
            Request::Fetch { topic, queue_id, offset, max_bytes, max_wait_ms, tags }
        }
        ApiKey::Offsets => Request::Offsets {
            topic: r.string("topic")?,
            queue_id: r.u32("queue_id")?,
            timestamp_ms: r.i64("timestamp_ms")?,
        },
        ApiKey::Stats => Request::Stats,
        ApiKey::InitProducer => Request::InitProducer,
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

/// Whether a produce reached the configured durability (RocketMQ's SendStatus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SendStatus {
    /// Stored, and durable if the broker runs `flush_mode = sync`.
    SendOk = 0,
    /// Stored but the sync flush did not finish within `sync_flush_timeout_ms`; the data stays
    /// and will be flushed, but was not yet durable when the broker replied.
    FlushDiskTimeout = 1,
    /// Sync replication: stored (and durable per the master's flush mode), but not confirmed
    /// by the in-sync set within `sync_replication_timeout_ms`; a failover may lose it.
    FlushSlaveTimeout = 2,
}

impl SendStatus {
    /// The status of wire value `v`.
    pub fn from_u8(v: u8) -> Result<SendStatus, DecodeError> {
        match v {
            0 => Ok(SendStatus::SendOk),
            1 => Ok(SendStatus::FlushDiskTimeout),
            2 => Ok(SendStatus::FlushSlaveTimeout),
            v => Err(DecodeError::BadValue { field: "status", value: v.into() }),
        }
    }
}

/// One topic's route in a metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    pub name: String,
    /// `NONE`, or `UNKNOWN_TOPIC` / `INVALID_TOPIC_NAME` for a requested name (other fields 0).
    pub error_code: u16,
    pub topic_id: u32,
    /// Owner shard of each queue, indexed by queue id.
    pub queue_owners: Vec<u16>,
}

/// One topic in a list response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: u32,
    pub queue_count: u32,
}

/// Counters of one shard since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardStats {
    pub shard: u32,
    pub connections_open: u64,
    pub requests: u64,
    pub produce_batches: u64,
    pub produce_records: u64,
    pub produce_bytes: u64,
    pub fetch_requests: u64,
    pub fetch_bytes: u64,
    pub forwarded_out: u64,
    pub forwarded_in: u64,
    pub long_poll_waiting: u64,
    pub errors: u64,
}

const SHARD_STATS_FIELDS: usize = 12;

/// A successful response body. Errors use [`encode_error`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Metadata {
        shard_count: u32,
        shared_port: u16,
        shard_ports: Vec<u16>,
        topics: Vec<TopicRoute>,
    },
    CreateTopic {
        topic_id: u32,
    },
    DeleteTopic {
        topic_id: u32,
    },
    ListTopics {
        topics: Vec<TopicInfo>,
    },
    Produce {
        status: SendStatus,
        topic_id: u32,
        queue_id: u32,
        base_offset: u64,
        record_count: u32,
        store_timestamp_ms: i64,
    },
    /// One result per entry of the request, in its order.
    ProduceMulti {
        results: Vec<ProduceResult>,
    },
    /// `batches` are stored batches, unmodified, concatenated. `scan_end_offset` is where the
    /// next fetch should start: after the last batch the broker returned or skipped.
    Fetch {
        min_offset: u64,
        next_offset: u64,
        scan_end_offset: u64,
        batches: Vec<u8>,
    },
    Offsets {
        min_offset: u64,
        next_offset: u64,
        timestamp_offset: u64,
    },
    Stats {
        shards: Vec<ShardStats>,
    },
    InitProducer {
        producer_id: i64,
    },
    Group(GroupResponse),
    Transaction(TxnResponse),
    QueryKeys(KeyHits),
    Replication(ReplResponse),
}

impl Response {
    pub fn api_key(&self) -> ApiKey {
        match self {
            Response::Metadata { .. } => ApiKey::Metadata,
            Response::CreateTopic { .. } => ApiKey::CreateTopic,
            Response::DeleteTopic { .. } => ApiKey::DeleteTopic,
            Response::ListTopics { .. } => ApiKey::ListTopics,
            Response::Produce { .. } => ApiKey::Produce,
            Response::ProduceMulti { .. } => ApiKey::ProduceMulti,
            Response::Fetch { .. } => ApiKey::Fetch,
            Response::Offsets { .. } => ApiKey::Offsets,
            Response::Stats { .. } => ApiKey::Stats,
            Response::InitProducer { .. } => ApiKey::InitProducer,
            Response::Group(g) => g.api_key(),
            Response::Transaction(t) => t.api_key(),
            Response::QueryKeys(_) => ApiKey::QueryKeys,
            Response::Replication(r) => r.api_key(),
        }
    }

    /// Encodes a whole success response frame.
    pub fn encode_frame(&self, correlation_id: u32) -> Vec<u8> {
        let mut buf = frame::begin_response(correlation_id, ErrorCode::NONE);
        if let Response::Fetch { batches, .. } = self {
            // One allocation for the biggest responses.
            buf.reserve(batches.len() + 32);
        }
        let mut w = Writer::with_buffer(buf);
        self.encode_body(&mut w);
        let mut buf = w.buf;
        frame::finish_frame(&mut buf);
        buf
    }

    /// Appends the success payload.
    pub fn encode_body(&self, w: &mut Writer) {
        match self {
            Response::Metadata { shard_count, shared_port, shard_ports, topics } => {
                w.u32(*shard_count).u16(*shared_port).count(shard_ports.len());
                for p in shard_ports {
                    w.u16(*p);
                }
                w.count(topics.len());
                for t in topics {
                    w.string(&t.name).u16(t.error_code).u32(t.topic_id).count(t.queue_owners.len());
                    for o in &t.queue_owners {
                        w.u16(*o);
                    }
                }
            }
            Response::CreateTopic { topic_id } | Response::DeleteTopic { topic_id } => {
                w.u32(*topic_id);
            }
            Response::ListTopics { topics } => {
                w.count(topics.len());
                for t in topics {
                    w.string(&t.name).u32(t.topic_id).u32(t.queue_count);
                }
            }
            Response::Produce {
                status,
                topic_id,
                queue_id,
                base_offset,
                record_count,
                store_timestamp_ms,
            } => {
                w.u8(*status as u8)
                    .u32(*topic_id)
                    .u32(*queue_id)
                    .u64(*base_offset)
                    .u32(*record_count)
                    .i64(*store_timestamp_ms);
            }
            Response::ProduceMulti { results } => produce_multi::encode_results(results, w),
            Response::Fetch { min_offset, next_offset, scan_end_offset, batches } => {
                w.u64(*min_offset).u64(*next_offset).u64(*scan_end_offset).bytes(batches);
            }
            Response::Offsets { min_offset, next_offset, timestamp_offset } => {
                w.u64(*min_offset).u64(*next_offset).u64(*timestamp_offset);
            }
            Response::Stats { shards } => {
                w.count(shards.len());
                for s in shards {
                    w.u32(s.shard);
                    for v in [
                        s.connections_open,
                        s.requests,
                        s.produce_batches,
                        s.produce_records,
                        s.produce_bytes,
                        s.fetch_requests,
                        s.fetch_bytes,
                        s.forwarded_out,
                        s.forwarded_in,
                        s.long_poll_waiting,
                        s.errors,
                    ] {
                        w.u64(v);
                    }
                }
            }
            Response::InitProducer { producer_id } => {
                w.i64(*producer_id);
            }
            Response::Group(g) => g.encode_body(w),
            Response::Transaction(t) => t.encode_body(w),
            Response::QueryKeys(h) => h.encode_body(w),
            Response::Replication(r) => r.encode_body(w),
        }
    }

    /// Decodes the payload of a success response to a request of type `api`.
    pub fn decode(api: ApiKey, payload: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(payload);
        let resp = match api {
            ApiKey::Metadata => {
                let shard_count = r.u32("shard_count")?;
                let shared_port = r.u16("shared_port")?;
                let n = r.count("shard_ports", MAX_LIST_ITEMS, 2)?;
                let mut shard_ports = Vec::with_capacity(n);
                for _ in 0..n {
                    shard_ports.push(r.u16("shard_port")?);
                }
                let n = r.count("topics", MAX_LIST_ITEMS, 12)?;
                let mut topics = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.string("topic")?;
                    let error_code = r.u16("error_code")?;
                    let topic_id = r.u32("topic_id")?;
                    let q = r.count("queue_owners", MAX_LIST_ITEMS, 2)?;
                    let mut queue_owners = Vec::with_capacity(q);
                    for _ in 0..q {
                        queue_owners.push(r.u16("owner")?);
                    }
                    topics.push(TopicRoute { name, error_code, topic_id, queue_owners });
                }
                Response::Metadata { shard_count, shared_port, shard_ports, topics }
            }
            ApiKey::CreateTopic => Response::CreateTopic { topic_id: r.u32("topic_id")? },
            ApiKey::DeleteTopic => Response::DeleteTopic { topic_id: r.u32("topic_id")? },
            ApiKey::ListTopics => {
                let n = r.count("topics", MAX_LIST_ITEMS, 10)?;
                let mut topics = Vec::with_capacity(n);
                for _ in 0..n {
                    topics.push(TopicInfo {
                        name: r.string("topic")?,
                        topic_id: r.u32("topic_id")?,
                        queue_count: r.u32("queue_count")?,
                    });
                }
                Response::ListTopics { topics }
            }
            ApiKey::Produce | ApiKey::ProduceScheduled => {
                let status = SendStatus::from_u8(r.u8("status")?)?;
                Response::Produce {
                    status,
                    topic_id: r.u32("topic_id")?,
                    queue_id: r.u32("queue_id")?,
                    base_offset: r.u64("base_offset")?,
                    record_count: r.u32("record_count")?,
                    store_timestamp_ms: r.i64("store_timestamp_ms")?,
                }
            }
            ApiKey::ProduceMulti => {
                Response::ProduceMulti { results: produce_multi::decode_results(&mut r)? }
            }
            ApiKey::Fetch => Response::Fetch {
                min_offset: r.u64("min_offset")?,
                next_offset: r.u64("next_offset")?,
                scan_end_offset: r.u64("scan_end_offset")?,
                batches: r.bytes("batches")?.to_vec(),
            },
            ApiKey::Offsets => Response::Offsets {
                min_offset: r.u64("min_offset")?,
                next_offset: r.u64("next_offset")?,
                timestamp_offset: r.u64("timestamp_offset")?,
            },
            ApiKey::Stats => {
                let n = r.count("shards", MAX_LIST_ITEMS, 4 + 8 * (SHARD_STATS_FIELDS - 1))?;
                let mut shards = Vec::with_capacity(n);
                for _ in 0..n {
                    shards.push(ShardStats {
                        shard: r.u32("shard")?,
                        connections_open: r.u64("connections_open")?,
                        requests: r.u64("requests")?,
                        produce_batches: r.u64("produce_batches")?,
                        produce_records: r.u64("produce_records")?,
                        produce_bytes: r.u64("produce_bytes")?,
                        fetch_requests: r.u64("fetch_requests")?,
                        fetch_bytes: r.u64("fetch_bytes")?,
                        forwarded_out: r.u64("forwarded_out")?,
                        forwarded_in: r.u64("forwarded_in")?,
                        long_poll_waiting: r.u64("long_poll_waiting")?,
                        errors: r.u64("errors")?,
                    });
                }
                Response::Stats { shards }
            }
            ApiKey::InitProducer => Response::InitProducer { producer_id: r.i64("producer_id")? },
            txn if txn.is_transaction() => {
                Response::Transaction(TxnResponse::decode_body(txn, &mut r)?)
            }
            ApiKey::QueryKeys => Response::QueryKeys(KeyHits::decode_body(&mut r)?),
            repl if repl.is_replication() => {
                Response::Replication(ReplResponse::decode_body(repl, &mut r)?)
            }
            group => Response::Group(GroupResponse::decode_body(group, &mut r)?),
        };
        r.finish()?;
        Ok(resp)
    }
}

/// The head of a FETCH success frame whose `batches_len` bytes of batches the caller writes
/// right after it (from where they are stored, without copying them into the frame). The
/// bytes on the wire are identical to `Response::Fetch { .. }.encode_frame(..)`.
pub fn encode_fetch_head(
    correlation_id: u32,
    min_offset: u64,
    next_offset: u64,
    scan_end_offset: u64,
    batches_len: usize,
) -> Vec<u8> {
    let mut w = Writer::with_buffer(frame::begin_response(correlation_id, ErrorCode::NONE));
    w.u64(min_offset).u64(next_offset).u64(scan_end_offset);
    w.u32(u32::try_from(batches_len).expect("bounded fetch"));
    let mut head = w.buf;
    let frame_len = head.len() - frame::LEN_PREFIX + batches_len;
    head[..4].copy_from_slice(&u32::try_from(frame_len).expect("bounded frame").to_le_bytes());
    head
}

/// Extra data some errors carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDetail {
    None,
    /// OFFSET_OUT_OF_RANGE: the queue holds `[min, next)`.
    OffsetRange {
        min: u64,
        next: u64,
    },
    /// CORRUPT_DATA: the stored batch at the requested offset covers `[first, next)` and
    /// fails verification; fetching from `next` skips it.
    CorruptRange {
        first: u64,
        next: u64,
    },
    /// NOT_MASTER: the master of this replica; writes go there.
    NotMaster {
        master: std::net::SocketAddr,
    },
}

/// A decoded error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Raw code (may be one this build does not know).
    pub code: u16,
    pub message: String,
    pub detail: ErrorDetail,
}

impl ErrorResponse {
    pub fn known_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }

    pub fn decode(code: u16, payload: &[u8]) -> Result<ErrorResponse, DecodeError> {
        let mut r = Reader::new(payload);
        let message = r.string("message")?;
        let detail = if code == ErrorCode::OFFSET_OUT_OF_RANGE as u16 {
            ErrorDetail::OffsetRange { min: r.u64("min")?, next: r.u64("next")? }
        } else if code == ErrorCode::CORRUPT_DATA as u16 {
            ErrorDetail::CorruptRange { first: r.u64("first")?, next: r.u64("next")? }
        } else if code == ErrorCode::NOT_MASTER as u16 {
            let master = r.string("master")?;
            let master = master
                .parse()
                .map_err(|_| DecodeError::BadValue { field: "master address", value: 0 })?;
            ErrorDetail::NotMaster { master }
        } else {
            ErrorDetail::None
        };
        r.finish()?;
        Ok(ErrorResponse { code, message, detail })
    }
}

/// An error payload (what follows the header of an error frame, and a refused PRODUCE_MULTI
/// entry's result): the message, then the detail its code carries ([`ErrorResponse::decode`]
/// reads it).
pub(super) fn encode_error_body(message: &str, detail: ErrorDetail, w: &mut Writer) {
    w.string(message);
    match detail {
        ErrorDetail::OffsetRange { min: a, next: b }
        | ErrorDetail::CorruptRange { first: a, next: b } => {
            w.u64(a).u64(b);
        }
        ErrorDetail::NotMaster { master } => {
            w.string(&master.to_string());
        }
        ErrorDetail::None => {}
    }
}

/// Encodes a whole error response frame.
pub fn encode_error(
    correlation_id: u32,
    code: ErrorCode,
    message: &str,
    detail: ErrorDetail,
) -> Vec<u8> {
    debug_assert!(code != ErrorCode::NONE, "an error response needs an error code");
    let mut w = Writer::with_buffer(frame::begin_response(correlation_id, code));
    encode_error_body(message, detail, &mut w);
    let mut buf = w.buf;
    frame::finish_frame(&mut buf);
    buf
}

/// The message id of the record at `offset` of queue `queue_id` of topic `topic_id`: 32 hex
/// digits of `(topic_id, queue_id, offset)`. Ids are unique per broker because topic ids are
/// never reused.
pub fn message_id(topic_id: u32, queue_id: u32, offset: u64) -> String {
    format!("{topic_id:08X}{queue_id:08X}{offset:016X}")
}

#[cfg(test)]
mod tests;
