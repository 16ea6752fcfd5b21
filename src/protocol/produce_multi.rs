//! PRODUCE_MULTI (api 21): batches for several queues in one request, each stored and answered
//! on its own, as if it had come in its own PRODUCE.
//!
//! ```text
//! request:  list<entry>   entry  = string topic, u32 queue_id, bytes batch
//! response: list<result>  result = u16 error_code, bytes payload
//! ```
//!
//! A result's payload is what a PRODUCE response to that batch would carry: the PRODUCE success
//! payload when `error_code` is 0, else the error payload (message and detail, as in an error
//! response frame). Results come in the order of the entries. An error that refuses the whole
//! request (a malformed frame, a replica refusing writes) is an ordinary error response.
//!
//! Why: a producer with thousands of queues has a few messages per queue when its linger runs
//! out, so each PRODUCE carried about 2.4 one-KiB messages, and both ends paid a request
//! (frame, task, response, syscall share) per batch (BENCHMARKS.md).

use super::api::ApiKey;
use super::codec::{DecodeError, Reader, Writer};
use super::frame::{self, RequestHeader};
use super::message::{encode_error_body, ErrorResponse, Response};
use super::shared_bytes::SharedBytes;

/// Most entries one PRODUCE_MULTI may carry: the broker holds a handling task's state per
/// entry while the request runs (and counts it against the connection's in-flight bytes).
pub const MAX_ENTRIES: u32 = 1024;

/// One queue's batch in a PRODUCE_MULTI request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceEntry {
    pub topic: String,
    pub queue_id: u32,
    /// Exactly one batch (format v1), as a PRODUCE's.
    pub batch: SharedBytes,
}

/// One entry's outcome: `Ok` holds a [`Response::Produce`].
pub type ProduceResult = Result<Response, ErrorResponse>;

/// Smallest encoded entry: an empty topic, the queue id and an empty batch's length.
const MIN_ENTRY_BYTES: usize = 2 + 4 + 4;
/// Smallest encoded result: its code and an empty payload's length.
const MIN_RESULT_BYTES: usize = 2 + 4;

/// Bytes an entry adds to a PRODUCE_MULTI frame: its head ([`append_entry_head`]) and batch.
pub fn entry_bytes(topic: &str, batch_len: usize) -> usize {
    2 + topic.len().min(u16::MAX as usize) + 4 + 4 + batch_len
}

/// Appends a PRODUCE_MULTI frame's header and entry count to `out`; `entries_bytes` is the sum
/// of [`entry_bytes`] over the entries, which the caller then appends, each as its
/// [`append_entry_head`] followed by its batch.
pub fn append_head(out: &mut Vec<u8>, correlation_id: u32, count: usize, entries_bytes: usize) {
    let key = ApiKey::ProduceMulti;
    let start = out.len();
    frame::append_request_head(
        out,
        RequestHeader { api_key: key as u16, api_version: key.current_version(), correlation_id },
    );
    out.extend_from_slice(&u32::try_from(count).expect("under 4G entries").to_le_bytes());
    let total = out.len() - start - frame::LEN_PREFIX + entries_bytes;
    let total = u32::try_from(total).expect("frame under 4 GiB");
    out[start..start + frame::LEN_PREFIX].copy_from_slice(&total.to_le_bytes());
}

/// Appends an entry's topic, queue id and batch length; its `batch_len` bytes follow.
pub fn append_entry_head(out: &mut Vec<u8>, topic: &str, queue_id: u32, batch_len: usize) {
    let mut w = Writer::with_buffer(std::mem::take(out));
    w.string(topic).u32(queue_id);
    w.u32(u32::try_from(batch_len).expect("batch under 4 GiB"));
    *out = w.buf;
}

pub(super) fn encode_entries(entries: &[ProduceEntry], w: &mut Writer) {
    w.count(entries.len());
    for e in entries {
        w.string(&e.topic).u32(e.queue_id).bytes(&e.batch);
    }
}

/// `batch` turns a batch's byte range within the payload into the entry's bytes.
pub(super) fn decode_entries(
    r: &mut Reader<'_>,
    payload_len: usize,
    batch: &dyn Fn(std::ops::Range<usize>) -> SharedBytes,
) -> Result<Vec<ProduceEntry>, DecodeError> {
    let n = r.count("entries", MAX_ENTRIES, MIN_ENTRY_BYTES)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = r.string("topic")?;
        let queue_id = r.u32("queue_id")?;
        let len = r.bytes("batch")?.len();
        let end = payload_len - r.remaining();
        entries.push(ProduceEntry { topic, queue_id, batch: batch(end - len..end) });
    }
    Ok(entries)
}

pub(super) fn encode_results(results: &[ProduceResult], w: &mut Writer) {
    w.count(results.len());
    for result in results {
        // `u16 code, u32 length, payload`: the payload is encoded in place and its length
        // filled in after (no buffer of its own per result).
        let code = match result {
            Ok(_) => 0,
            Err(e) => e.code,
        };
        w.u16(code).u32(0);
        let start = w.buf.len();
        match result {
            Ok(r) => {
                debug_assert!(matches!(r, Response::Produce { .. }), "a produce result");
                r.encode_body(w);
            }
            Err(e) => encode_error_body(&e.message, e.detail, w),
        }
        let len = u32::try_from(w.buf.len() - start).expect("a result under 4 GiB");
        w.buf[start - 4..start].copy_from_slice(&len.to_le_bytes());
    }
}

pub(super) fn decode_results(r: &mut Reader<'_>) -> Result<Vec<ProduceResult>, DecodeError> {
    let n = r.count("results", MAX_ENTRIES, MIN_RESULT_BYTES)?;
    let mut results = Vec::with_capacity(n);
    for _ in 0..n {
        let code = r.u16("error_code")?;
        let payload = r.bytes("result")?;
        results.push(if code == 0 {
            Ok(Response::decode(ApiKey::Produce, payload)?)
        } else {
            Err(ErrorResponse::decode(code, payload)?)
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{check_request, check_response, split_request, split_response};
    use crate::protocol::message::{decode_request, Request, SendStatus};
    use crate::protocol::{ErrorCode, ErrorDetail};

    fn entries() -> Vec<ProduceEntry> {
        (0..3u32)
            .map(|i| ProduceEntry {
                topic: format!("t{i}"),
                queue_id: 10 + i,
                batch: vec![i as u8; 100 * i as usize].into(),
            })
            .collect()
    }

    #[test]
    fn a_request_round_trips_and_its_gathered_head_plus_batches_is_the_encoded_frame() {
        let req = Request::ProduceMulti { entries: entries() };
        let whole = req.encode_frame(9);
        let (h, payload) = split_request(&whole);
        assert_eq!(decode_request(&h, payload).unwrap(), req);
        let Request::ProduceMulti { entries } = &req else { unreachable!() };
        let bytes = entries.iter().map(|e| entry_bytes(&e.topic, e.batch.len())).sum();
        let mut out = b"before".to_vec();
        append_head(&mut out, 9, entries.len(), bytes);
        for e in entries {
            append_entry_head(&mut out, &e.topic, e.queue_id, e.batch.len());
            out.extend_from_slice(&e.batch);
        }
        assert_eq!(&out[6..], &whole[..]);
        assert!(matches!(check_request(&whole, 1 << 20), Ok(frame::Check::Complete { .. })));
    }

    #[test]
    fn a_response_round_trips_stored_and_refused_entries_with_their_details() {
        let stored = Response::Produce {
            status: SendStatus::FlushDiskTimeout,
            topic_id: 3,
            queue_id: 4,
            base_offset: 1 << 40,
            record_count: 7,
            store_timestamp_ms: -1,
        };
        let results = vec![
            Ok(stored),
            Err(ErrorResponse {
                code: ErrorCode::UNKNOWN_TOPIC as u16,
                message: "topic \"x\" does not exist".into(),
                detail: ErrorDetail::None,
            }),
            Err(ErrorResponse {
                code: ErrorCode::NOT_MASTER as u16,
                message: "a replica".into(),
                detail: ErrorDetail::NotMaster { master: "127.0.0.1:9876".parse().unwrap() },
            }),
        ];
        let resp = Response::ProduceMulti { results };
        let f = resp.encode_frame(77);
        assert!(matches!(check_response(&f, 1 << 20), Ok(frame::Check::Complete { .. })));
        let (h, payload) = split_response(&f);
        assert_eq!(h.correlation_id, 77);
        assert_eq!(Response::decode(ApiKey::ProduceMulti, payload).unwrap(), resp);
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused_without_allocating() {
        let header = RequestHeader {
            api_key: ApiKey::ProduceMulti as u16,
            api_version: 1,
            correlation_id: 1,
        };
        // A count the bytes cannot hold.
        let mut p = u32::MAX.to_le_bytes().to_vec();
        p.extend_from_slice(&[0; 20]);
        assert!(decode_request(&header, &p).is_err());
        // A batch length past the end.
        let mut w = Writer::new();
        w.count(1).string("t").u32(0).u32(1000);
        assert!(decode_request(&header, &w.buf).is_err());
        // More entries than a request may carry, though the bytes could hold them.
        let mut w = Writer::new();
        w.count(MAX_ENTRIES as usize + 1);
        for _ in 0..=MAX_ENTRIES {
            w.string("").u32(0).u32(0);
        }
        let e = decode_request(&header, &w.buf).unwrap_err();
        assert!(e.to_string().contains("entries count 1025 exceeds the limit 1024"), "{e}");
        // Trailing bytes.
        let mut w = Writer::new();
        w.count(0).u8(1);
        assert!(decode_request(&header, &w.buf).is_err());
        // A result whose success payload is not a produce's.
        let mut w = Writer::new();
        w.count(1).u16(0).bytes(&[1, 2, 3]);
        assert!(Response::decode(ApiKey::ProduceMulti, &w.buf).is_err());
        let mut w = Writer::new();
        w.count(u32::MAX as usize);
        assert!(Response::decode(ApiKey::ProduceMulti, &w.buf).is_err());
    }
}
