//! FETCH_MULTI (api 22): several queues read in one request, their batches chosen in the
//! order they lie in the broker's log.
//!
//! ```text
//! request:  u32 max_bytes, u32 max_wait_ms, list<topic>
//!           topic  = string name, list<bytes> tags, list<queue>
//!           queue  = u32 queue_id, u64 offset
//! response: list<result>
//!           result = u32 index, u16 error_code, bytes payload
//! ```
//!
//! `index` is the queue's place in the request, counting every topic's queues in order. A
//! result's payload is what a FETCH response for that queue would carry: the FETCH success
//! payload (`u64 min_offset, u64 next_offset, u64 scan_end_offset, bytes batches`) when
//! `error_code` is 0, else the error payload (message and detail). Only queues with batches
//! to return or an error have a result; a queue without one has nothing new at its offset.
//! Results come in the order of their indexes. The broker fills `max_bytes` with the queues'
//! batches in log order (at least one batch when any queue has one), and waits up to
//! `max_wait_ms` for one of the queues to receive data when none has any.
//!
//! A topic's `tags` (at most 64; empty: all) filter its queues as FETCH's do: batches whose
//! tag summary cannot contain one of them are left out, and a queue whose batches were all
//! left out has a result with no batches whose `scan_end_offset` is past them.
//!
//! Why: a consumer of thousands of queues sent one FETCH per queue, and a catching-up
//! consumer's fetches each read one queue's batches, which lie far apart in the log (other
//! queues' batches between them): every batch was its own disk read, about 3 KiB each with
//! 10,000 queues (BENCHMARKS.md, round 34). Read together in log order, the batches of many
//! queues come from a few long reads.

use super::codec::{DecodeError, Reader, Writer};
use super::frame;
use super::message::{encode_error_body, ErrorResponse};
use super::ErrorCode;

/// Most queues one FETCH_MULTI may name: the broker holds each queue's lookup while the
/// request runs.
pub const MAX_QUEUES: u32 = 65_536;

/// Smallest encoded topic: an empty name, an empty tag list and an empty queue list.
const MIN_TOPIC_BYTES: usize = 2 + 4 + 4;
/// An encoded queue: its id and offset.
const QUEUE_BYTES: usize = 4 + 8;
/// Smallest encoded result: index, code and an empty payload's length.
const MIN_RESULT_BYTES: usize = 4 + 2 + 4;

/// One queue to read from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchQueue {
    pub queue_id: u32,
    pub offset: u64,
}

/// A topic's queues in a FETCH_MULTI request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    pub topic: String,
    /// Only batches that may hold one of these tags (empty: all).
    pub tags: Vec<Vec<u8>>,
    pub queues: Vec<FetchQueue>,
}

/// A FETCH_MULTI request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchMulti {
    /// Bytes of batches the answer may hold in all (at least one batch when any is readable).
    pub max_bytes: u32,
    /// How long to wait for data when no queue has any.
    pub max_wait_ms: u32,
    pub topics: Vec<FetchTopic>,
}

impl FetchMulti {
    /// The queues in index order: (index, topic, queue).
    pub fn queues(&self) -> impl Iterator<Item = (u32, &str, FetchQueue)> + '_ {
        self.topics
            .iter()
            .flat_map(|t| t.queues.iter().map(move |q| (t.topic.as_str(), *q)))
            .enumerate()
            .map(|(i, (t, q))| (i as u32, t, q))
    }

    /// How many queues the request names.
    pub fn queue_count(&self) -> usize {
        self.topics.iter().map(|t| t.queues.len()).sum()
    }

    pub(super) fn encode_body(&self, w: &mut Writer) {
        w.u32(self.max_bytes).u32(self.max_wait_ms);
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.topic);
            w.count(t.tags.len());
            for tag in &t.tags {
                w.bytes(tag);
            }
            w.count(t.queues.len());
            for q in &t.queues {
                w.u32(q.queue_id).u64(q.offset);
            }
        }
    }

    pub(super) fn decode_body(r: &mut Reader<'_>) -> Result<FetchMulti, DecodeError> {
        let max_bytes = r.u32("max_bytes")?;
        let max_wait_ms = r.u32("max_wait_ms")?;
        let n = r.count("topics", MAX_QUEUES, MIN_TOPIC_BYTES)?;
        let mut topics = Vec::with_capacity(n);
        let mut total = 0u64;
        for _ in 0..n {
            let topic = r.string("topic")?;
            let tags = super::message::decode_tags(r)?;
            let m = r.count("queues", MAX_QUEUES, QUEUE_BYTES)?;
            total += m as u64;
            if total > u64::from(MAX_QUEUES) {
                return Err(DecodeError::TooMany {
                    field: "queues",
                    count: total,
                    max: MAX_QUEUES.into(),
                });
            }
            let mut queues = Vec::with_capacity(m);
            for _ in 0..m {
                queues.push(FetchQueue { queue_id: r.u32("queue_id")?, offset: r.u64("offset")? });
            }
            topics.push(FetchTopic { topic, tags, queues });
        }
        Ok(FetchMulti { max_bytes, max_wait_ms, topics })
    }
}

/// One queue's batches in a FETCH_MULTI answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedQueue {
    pub min_offset: u64,
    pub next_offset: u64,
    /// Where this queue's next fetch starts.
    pub scan_end_offset: u64,
    /// Stored batches, unmodified, concatenated.
    pub batches: Vec<u8>,
}

/// One queue's result: its index in the request and its batches or error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    pub index: u32,
    pub result: Result<FetchedQueue, ErrorResponse>,
}

/// The head of one queue's success result, whose `batches_len` bytes of batches follow it.
pub fn append_result_head(
    out: &mut Vec<u8>,
    index: u32,
    min_offset: u64,
    next_offset: u64,
    scan_end_offset: u64,
    batches_len: usize,
) {
    let mut w = Writer::with_buffer(std::mem::take(out));
    let batches_len = u32::try_from(batches_len).expect("bounded fetch");
    w.u32(index).u16(0).u32(8 * 3 + 4 + batches_len);
    w.u64(min_offset).u64(next_offset).u64(scan_end_offset).u32(batches_len);
    *out = w.buf;
}

/// Appends one queue's error result.
pub fn append_error_result(
    out: &mut Vec<u8>,
    index: u32,
    code: ErrorCode,
    message: &str,
    detail: super::ErrorDetail,
) {
    let mut w = Writer::with_buffer(std::mem::take(out));
    w.u32(index).u16(code as u16).u32(0);
    let start = w.buf.len();
    encode_error_body(message, detail, &mut w);
    let len = u32::try_from(w.buf.len() - start).expect("a result under 4 GiB");
    w.buf[start - 4..start].copy_from_slice(&len.to_le_bytes());
    *out = w.buf;
}

/// The head of a FETCH_MULTI success frame: `count` results whose encoded bytes
/// (`results_len`, heads and batches) the caller writes right after it.
pub fn response_head(correlation_id: u32, count: usize, results_len: usize) -> Vec<u8> {
    let mut w = Writer::with_buffer(frame::begin_response(correlation_id, ErrorCode::NONE));
    w.count(count);
    let mut head = w.buf;
    let frame_len = head.len() - frame::LEN_PREFIX + results_len;
    head[..4].copy_from_slice(&u32::try_from(frame_len).expect("bounded frame").to_le_bytes());
    head
}

pub(super) fn encode_results(results: &[FetchResult], w: &mut Writer) {
    w.count(results.len());
    for r in results {
        match &r.result {
            Ok(q) => {
                append_result_head(
                    &mut w.buf,
                    r.index,
                    q.min_offset,
                    q.next_offset,
                    q.scan_end_offset,
                    q.batches.len(),
                );
                w.buf.extend_from_slice(&q.batches);
            }
            Err(e) => {
                let code = ErrorCode::from_u16(e.code).unwrap_or(ErrorCode::INTERNAL);
                append_error_result(&mut w.buf, r.index, code, &e.message, e.detail);
            }
        }
    }
}

pub(super) fn decode_results(r: &mut Reader<'_>) -> Result<Vec<FetchResult>, DecodeError> {
    let n = r.count("results", MAX_QUEUES, MIN_RESULT_BYTES)?;
    let mut results: Vec<FetchResult> = Vec::with_capacity(n);
    for _ in 0..n {
        let index = r.u32("index")?;
        if results.last().is_some_and(|p| p.index >= index) {
            return Err(DecodeError::BadValue { field: "result index order", value: index.into() });
        }
        let code = r.u16("error_code")?;
        let payload = r.bytes("result")?;
        let result = if code == 0 {
            let mut p = Reader::new(payload);
            let q = FetchedQueue {
                min_offset: p.u64("min_offset")?,
                next_offset: p.u64("next_offset")?,
                scan_end_offset: p.u64("scan_end_offset")?,
                batches: p.bytes("batches")?.to_vec(),
            };
            p.finish()?;
            Ok(q)
        } else {
            Err(ErrorResponse::decode(code, payload)?)
        };
        results.push(FetchResult { index, result });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{split_request, split_response};
    use crate::protocol::message::{decode_request, Request, Response};
    use crate::protocol::ApiKey;
    use crate::protocol::ErrorDetail;

    fn request() -> FetchMulti {
        FetchMulti {
            max_bytes: 1 << 20,
            max_wait_ms: 50,
            topics: vec![
                FetchTopic {
                    topic: "a".into(),
                    tags: vec![b"paid".to_vec(), b"shipped".to_vec()],
                    queues: vec![
                        FetchQueue { queue_id: 0, offset: 5 },
                        FetchQueue { queue_id: 7, offset: 0 },
                    ],
                },
                FetchTopic {
                    topic: "b".into(),
                    tags: vec![],
                    queues: vec![FetchQueue { queue_id: 3, offset: 9 }],
                },
            ],
        }
    }

    #[test]
    fn a_request_round_trips_and_numbers_its_queues_across_topics() {
        let req = Request::FetchMulti(request());
        let whole = req.encode_frame(4);
        let (h, payload) = split_request(&whole);
        assert_eq!(decode_request(&h, payload).unwrap(), req);
        let Request::FetchMulti(f) = &req else { unreachable!() };
        let named: Vec<_> = f.queues().map(|(i, t, q)| (i, t.to_string(), q.queue_id)).collect();
        assert_eq!(named, vec![(0, "a".into(), 0), (1, "a".into(), 7), (2, "b".into(), 3)]);
        assert_eq!(f.queue_count(), 3);
    }

    fn results() -> Vec<FetchResult> {
        vec![
            FetchResult {
                index: 0,
                result: Ok(FetchedQueue {
                    min_offset: 0,
                    next_offset: 10,
                    scan_end_offset: 8,
                    batches: vec![1, 2, 3],
                }),
            },
            FetchResult {
                index: 2,
                result: Err(ErrorResponse {
                    code: ErrorCode::OFFSET_OUT_OF_RANGE as u16,
                    message: "gone".into(),
                    detail: ErrorDetail::OffsetRange { min: 10, next: 12 },
                }),
            },
        ]
    }

    #[test]
    fn a_response_round_trips_and_its_gathered_head_plus_results_is_the_encoded_frame() {
        let resp = Response::FetchMulti { results: results() };
        let whole = resp.encode_frame(6);
        let (_, payload) = split_response(&whole);
        assert_eq!(Response::decode(ApiKey::FetchMulti, payload).unwrap(), resp);
        // The broker writes a head, then each result's head and its batches from the log.
        let mut rest = Vec::new();
        append_result_head(&mut rest, 0, 0, 10, 8, 3);
        rest.extend_from_slice(&[1, 2, 3]);
        append_error_result(
            &mut rest,
            2,
            ErrorCode::OFFSET_OUT_OF_RANGE,
            "gone",
            ErrorDetail::OffsetRange { min: 10, next: 12 },
        );
        let mut gathered = response_head(6, 2, rest.len());
        gathered.extend_from_slice(&rest);
        assert_eq!(gathered, whole);
    }

    #[test]
    fn a_topic_with_too_many_or_too_long_tags_is_refused() {
        for tags in
            [vec![b"t".to_vec(); 65], vec![vec![b'x'; crate::format::record::MAX_KEY_LEN + 1]]]
        {
            let mut f = request();
            f.topics[1].tags = tags;
            let whole = Request::FetchMulti(f).encode_frame(1);
            let (h, payload) = split_request(&whole);
            let e = decode_request(&h, payload).unwrap_err();
            assert!(e.to_string().contains("tag"), "{e}");
        }
    }

    #[test]
    fn results_out_of_index_order_or_a_payload_with_trailing_bytes_are_refused() {
        let mut w = Writer::new();
        let mut r = results();
        r.swap(0, 1);
        encode_results(&r, &mut w);
        assert!(Response::decode(ApiKey::FetchMulti, &w.buf).is_err());
        let mut w = Writer::new();
        w.count(1).u32(0).u16(0).u32(8 * 3 + 4 + 1);
        w.u64(0).u64(0).u64(0).u32(0).u8(9);
        assert!(Response::decode(ApiKey::FetchMulti, &w.buf).is_err());
    }

    #[test]
    fn a_request_naming_more_queues_than_allowed_is_refused_before_allocating_them() {
        let mut w = Writer::new();
        w.u32(1).u32(0).count(2);
        // Two topics whose counts together pass the limit, with too few bytes for either.
        w.string("a").count(0).u32(MAX_QUEUES);
        let r = FetchMulti::decode_body(&mut Reader::new(&w.buf));
        assert!(r.is_err());
        let mut w = Writer::new();
        w.u32(1).u32(0).count(2).string("a").count(0).count(1).u32(0).u64(0);
        w.string("b").count(0).u32(MAX_QUEUES);
        w.buf.extend(std::iter::repeat(0).take(QUEUE_BYTES * MAX_QUEUES as usize));
        let e = FetchMulti::decode_body(&mut Reader::new(&w.buf)).unwrap_err();
        assert!(matches!(e, DecodeError::TooMany { field: "queues", .. }), "{e}");
    }
}
