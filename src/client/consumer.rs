//! The pull consumer: fetch a queue from an offset, decode and verify the stored batches.
//!
//! The broker returns whole stored batches; the first may start before the requested offset.
//! The consumer checks each batch (producer CRC and the broker's stamp CRC), skips records
//! below the requested offset and control batches, and reports the offset to fetch next.
//! Fetches go to the owning shard's port (see [`super::router`]); `max_wait` > 0 long-polls
//! at the end of the queue.
//!
//! A retriable failure (connection refused or lost, NOT_OWNER, SHUTTING_DOWN: a broker
//! restarting) is retried with a backoff ([`RetrySchedule`]: `retry_backoff` doubling up to
//! `retry_backoff_max`) for up to `retry_timeout`, reconnecting and refreshing the route, so a
//! restart costs a pause instead of an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{ClientError, Result};
use super::message::ConsumedMessage;
use super::retry::RetrySchedule;
use super::router::Router;
use crate::format::BatchView;
use crate::protocol::{message_id, ErrorCode, Request, Response};

/// What one pull returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    pub messages: Vec<ConsumedMessage>,
    /// The offset to pull next (after the last record returned, or the requested one).
    pub next_offset: u64,
    /// The queue's bounds when the broker replied: `[min_offset, max_offset)`.
    pub min_offset: u64,
    pub max_offset: u64,
}

pub struct PullConsumer {
    router: Arc<Router>,
    /// Bytes asked for per pull. Default 1 MiB.
    pub max_bytes: u32,
    /// Only messages with one of these tags (empty: all). The broker skips batches whose tag
    /// summary cannot match; the consumer drops the other records of batches that may.
    pub tags: Vec<Vec<u8>>,
    /// How long a pull keeps retrying a retriable failure. Default 3 s.
    pub retry_timeout: Duration,
    /// First wait between retries; doubles up to `retry_backoff_max`. Default 50 ms.
    pub retry_backoff: Duration,
    /// Default 1 s.
    pub retry_backoff_max: Duration,
}

impl PullConsumer {
    pub fn new(router: Arc<Router>) -> Self {
        PullConsumer {
            router,
            max_bytes: 1 << 20,
            tags: Vec::new(),
            retry_timeout: Duration::from_secs(3),
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
        }
    }

    /// Pulls from `queue_id` of `topic` starting at `offset`, waiting up to `max_wait` for
    /// data when there is none yet.
    pub fn pull(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_wait: Duration,
    ) -> Result<PullResult> {
        let request = Request::Fetch {
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_bytes: self.max_bytes,
            max_wait_ms: max_wait.as_millis().min(u32::MAX as u128) as u32,
            tags: self.tags.clone(),
        };
        let timeout = self.router.options.request_timeout + max_wait;
        let mut schedule = RetrySchedule::new(
            self.retry_backoff,
            self.retry_backoff_max,
            self.retry_timeout,
            Instant::now(),
        );
        let resp = loop {
            let r = self
                .router
                .queue_connection(topic, queue_id)
                .and_then(|c| c.call(&request, timeout));
            match r {
                Err(e) if e.is_retriable() => {
                    if matches!(e.code(), Some(ErrorCode::NOT_OWNER)) || e.code().is_none() {
                        self.router.refresh(topic);
                    }
                    let Some(wait) = schedule.next_wait(Instant::now()) else { return Err(e) };
                    tracing::debug!(topic, queue_id, "pull failed ({e}); retrying in {wait:?}");
                    std::thread::sleep(wait);
                }
                other => break other?,
            }
        };
        let Response::Fetch { min_offset, next_offset, scan_end_offset, batches } = resp else {
            return Err(ClientError::Protocol("fetch got another reply".into()));
        };
        let (messages, next) = decode_batches(&batches, offset, &self.tags)?;
        Ok(PullResult {
            messages,
            // The broker may have skipped batches past the last one it returned (tag filter).
            next_offset: next.max(scan_end_offset).max(offset),
            min_offset,
            max_offset: next_offset,
        })
    }
}

/// Decodes concatenated stored batches; returns the records at or after `from` and the
/// offset after the last batch.
pub fn decode_batches(
    mut bytes: &[u8],
    from: u64,
    tags: &[Vec<u8>],
) -> Result<(Vec<ConsumedMessage>, u64)> {
    let mut out = Vec::new();
    let mut next = from;
    while !bytes.is_empty() {
        let view = BatchView::parse(bytes, bytes.len())
            .map_err(|e| ClientError::Protocol(format!("fetched batch is invalid: {e}")))?;
        view.verify_stamp().map_err(|e| ClientError::Protocol(format!("fetched batch: {e}")))?;
        let h = view.header;
        bytes = &bytes[h.length as usize..];
        next = next.max(h.next_offset());
        if h.is_control() || h.next_offset() <= from {
            continue;
        }
        if !tags.is_empty() && !h.tag_summary.may_contain_any(tags.iter().map(Vec::as_slice)) {
            continue;
        }
        for rec in view.records() {
            let rec = rec.map_err(|e| ClientError::Protocol(format!("fetched record: {e}")))?;
            let offset = h.stamp.base_offset + u64::from(rec.index);
            if offset < from {
                continue;
            }
            if !tags.is_empty() && !tags.iter().any(|t| t.as_slice() == rec.tag) {
                continue;
            }
            let properties = rec
                .properties()
                .filter_map(|p| p.ok())
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            out.push(ConsumedMessage {
                queue_id: h.stamp.queue_id,
                offset,
                message_id: message_id(h.stamp.topic_id, h.stamp.queue_id, offset),
                timestamp_ms: rec.timestamp_ms,
                store_timestamp_ms: h.stamp.store_timestamp_ms,
                key: rec.key.to_vec(),
                tag: rec.tag.to_vec(),
                properties,
                body: rec.body.to_vec(),
            });
        }
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::stamp;
    use crate::format::{BatchBuilder, Record, Stamp};

    fn batch(base: u64, n: usize, tag: &[u8]) -> Vec<u8> {
        let mut b = BatchBuilder::new(1 << 16);
        for i in 0..n {
            let body = format!("m{}", base + i as u64);
            b.push(&Record {
                key: b"",
                tag,
                properties: &[],
                body: body.as_bytes(),
                timestamp_ms: 1,
            })
            .unwrap();
        }
        let mut bytes = b.finish(-1, -1);
        stamp(
            &mut bytes,
            &Stamp { topic_id: 1, queue_id: 0, base_offset: base, store_timestamp_ms: 2 },
        );
        bytes
    }

    #[test]
    fn skips_records_below_the_requested_offset_and_filters_tags() {
        let mut bytes = batch(0, 3, b"A");
        bytes.extend(batch(3, 2, b"B"));
        let (msgs, next) = decode_batches(&bytes, 1, &[]).unwrap();
        assert_eq!(msgs.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(msgs[0].body, b"m1");
        assert_eq!(next, 5);
        let (msgs, _) = decode_batches(&bytes, 0, &[b"B".to_vec()]).unwrap();
        assert_eq!(msgs.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![3, 4]);
        let mut bad = bytes.clone();
        bad[21] ^= 1; // a stamped field: the stamp CRC catches it
        assert!(decode_batches(&bad, 0, &[]).is_err());
    }
}
