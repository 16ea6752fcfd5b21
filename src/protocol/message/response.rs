//! Response bodies and their encodings (errors included): what the broker answers to each
//! request of [`super`].

use super::*;

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
    /// Results of the queues with batches or an error, in index order
    /// ([`super::super::fetch_multi`]).
    FetchMulti {
        results: Vec<FetchResult>,
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
    /// `window_batches`: the batches per (producer, queue) the broker remembers, so any of
    /// that many unanswered batches can be resent and answered with its original offsets.
    InitProducerWindow {
        producer_id: i64,
        window_batches: u32,
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
            Response::FetchMulti { .. } => ApiKey::FetchMulti,
            Response::Offsets { .. } => ApiKey::Offsets,
            Response::Stats { .. } => ApiKey::Stats,
            Response::InitProducer { .. } => ApiKey::InitProducer,
            Response::InitProducerWindow { .. } => ApiKey::InitProducerWindow,
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
            Response::FetchMulti { results } => fetch_multi::encode_results(results, w),
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
            Response::InitProducerWindow { producer_id, window_batches } => {
                w.i64(*producer_id).u32(*window_batches);
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
                let (topic_id, queue_id) = (r.u32("topic_id")?, r.u32("queue_id")?);
                let (base_offset, record_count) = (r.u64("base_offset")?, r.u32("record_count")?);
                // The client numbers each message from the base offset: records past the last
                // offset are a broker speaking wrongly.
                if base_offset.checked_add(u64::from(record_count)).is_none() {
                    return Err(DecodeError::BadValue { field: "base_offset", value: base_offset });
                }
                Response::Produce {
                    status,
                    topic_id,
                    queue_id,
                    base_offset,
                    record_count,
                    store_timestamp_ms: r.i64("store_timestamp_ms")?,
                }
            }
            ApiKey::ProduceMulti => {
                Response::ProduceMulti { results: produce_multi::decode_results(&mut r)? }
            }
            // A FETCH_NEXT is answered as the FETCH it is.
            ApiKey::Fetch | ApiKey::FetchNext => Response::Fetch {
                min_offset: r.u64("min_offset")?,
                next_offset: r.u64("next_offset")?,
                scan_end_offset: r.u64("scan_end_offset")?,
                batches: r.bytes("batches")?.to_vec(),
            },
            ApiKey::FetchMulti => {
                Response::FetchMulti { results: fetch_multi::decode_results(&mut r)? }
            }
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
            ApiKey::InitProducerWindow => Response::InitProducerWindow {
                producer_id: r.i64("producer_id")?,
                window_batches: r.u32("window_batches")?,
            },
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
pub(in crate::protocol) fn encode_error_body(message: &str, detail: ErrorDetail, w: &mut Writer) {
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
/// digits of `(topic_id, queue_id, offset)` ([`MessageId`]'s text).
pub fn message_id(topic_id: u32, queue_id: u32, offset: u64) -> String {
    MessageId { topic_id, queue_id, offset }.to_string()
}

/// A message's id: where it is stored. Ids are unique per broker because topic ids are never
/// reused (and start at 1: the all-zero id names no message). Shown (`Display`) and parsed
/// (`FromStr`) as 32 hex digits, the topic id (8), the queue id (8) and the queue offset (16),
/// as `ringmq produce` prints them and `ringmq message get` takes them. RocketMQ calls this
/// kind of id `offsetMsgId`. Held as numbers, so a consumer makes no string per message; the
/// text is made when shown.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    pub topic_id: u32,
    pub queue_id: u32,
    pub offset: u64,
}

impl MessageId {
    pub fn new(topic_id: u32, queue_id: u32, offset: u64) -> Self {
        MessageId { topic_id, queue_id, offset }
    }

    /// The 32 hex digits (upper case), without an allocation.
    pub fn to_hex(&self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [0u8; 32];
        let mut put = |at: usize, digits: usize, v: u64| {
            for i in 0..digits {
                out[at + i] = HEX[((v >> ((digits - 1 - i) * 4)) & 0xF) as usize];
            }
        };
        put(0, 8, u64::from(self.topic_id));
        put(8, 8, u64::from(self.queue_id));
        put(16, 16, self.offset);
        out
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = self.to_hex();
        f.pad(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl std::str::FromStr for MessageId {
    type Err = String;

    /// 32 hex digits, either case.
    fn from_str(id: &str) -> Result<Self, String> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{id:?} is not a message id: an id is 32 hex digits (topic id 8, queue id 8, \
                 offset 16), as `ringmq produce` prints it"
            ));
        }
        let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&id[r], 16).expect("hex digits");
        Ok(MessageId {
            topic_id: hex(0..8) as u32,
            queue_id: hex(8..16) as u32,
            offset: hex(16..32),
        })
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        other.len() == 32 && self.to_hex().eq_ignore_ascii_case(other.as_bytes())
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for MessageId {
    fn eq(&self, other: &String) -> bool {
        *self == **other
    }
}
