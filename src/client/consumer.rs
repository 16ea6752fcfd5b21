//! The pull consumer: fetch a queue from an offset, decode and verify the stored batches.
//!
//! The broker returns whole stored batches; the first may start before the requested offset.
//! The consumer checks each batch (producer CRC, the broker's stamp CRC, record framing), skips
//! records below the requested offset and control batches, and reports the offset to fetch next.
//!
//! Decoding allocates nothing per message: a pull first verifies the fetched batches in place
//! ([`scan_batches`]), and [`PullConsumer::pull_view`] hands back the fetch buffer itself
//! ([`PullView`]), whose messages are borrowed views ([`MessageView`]); only what a caller
//! keeps is copied ([`MessageView::to_owned`]). [`PullConsumer::pull`] is that, with every
//! message copied out.
//!
//! A stored batch that does not decode (written before the broker validated record framing on
//! ingest, or damaged) is never skipped silently: the messages before it are delivered and the
//! pull stops there; a pull that starts at it fails with [`ClientError::CorruptData`], naming
//! the queue and the batch's offsets, and the caller may skip it by pulling from its end.
//! The broker verifies what it reads from disk too: a batch damaged there comes back as the
//! broker's CORRUPT_DATA with the batch's offsets, reported as the same `CorruptData`.
//! Fetches go to the owning shard's port (see [`super::router`]); `max_wait` > 0 long-polls
//! at the end of the queue.
//!
//! A retriable failure (connection refused or lost, NOT_OWNER, SHUTTING_DOWN: a broker
//! restarting) is retried with a backoff ([`RetrySchedule`]: `retry_backoff` doubling up to
//! `retry_backoff_max`) for up to `retry_timeout`, reconnecting and refreshing the route, so a
//! restart costs a pause instead of an error.

use std::sync::Arc;
use std::time::Duration;

use super::connection::FetchReply;
use super::error::{ClientError, Result};
use super::message::ConsumedMessage;
use super::queue_reader::{BufferPool, QueueReader};
use super::retry::RetrySchedule;
use super::router::Router;
use crate::format::batch::read_header;
use crate::format::{BatchHeader, BatchView, RecordIter, RecordRef, HEADER_LEN};
use crate::protocol::{ErrorCode, ErrorDetail, MessageId, Request, Response};
use crate::runtime::{system_clock, SharedClock};
use bytes::Bytes;

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

#[derive(Clone)]
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
    /// Where the retry schedule reads the time. Default: the system clock.
    pub clock: SharedClock,
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
            clock: system_clock(),
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
        Ok(self.pull_view(topic, queue_id, offset, max_wait)?.into_result())
    }

    /// [`PullConsumer::pull`] without copying: the messages are read in place from the fetch
    /// buffer ([`PullView::messages`]).
    pub fn pull_view(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_wait: Duration,
    ) -> Result<PullView> {
        let request = self.fetch_request(topic, queue_id, offset, max_wait);
        let timeout = self.router.options.request_timeout + max_wait;
        let mut schedule = RetrySchedule::new(
            self.retry_backoff,
            self.retry_backoff_max,
            self.retry_timeout,
            self.clock.now(),
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
                    let Some(wait) = schedule.next_wait(self.clock.now()) else { return Err(e) };
                    tracing::debug!(topic, queue_id, "pull failed ({e}); retrying in {wait:?}");
                    std::thread::sleep(wait);
                }
                Err(e) => return Err(broker_corrupt(topic, queue_id, e)),
                Ok(r) => break r,
            }
        };
        let Response::Fetch { min_offset, next_offset, scan_end_offset, batches } = resp else {
            return Err(ClientError::Protocol("fetch got another reply".into()));
        };
        let reply = FetchReply { min_offset, next_offset, scan_end_offset, batches };
        self.view_of(topic, queue_id, offset, reply, None)
    }

    /// The FETCH request [`Self::pull_view`] sends.
    pub(crate) fn fetch_request(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_wait: Duration,
    ) -> Request {
        Request::Fetch {
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_bytes: self.max_bytes,
            max_wait_ms: max_wait.as_millis().min(u32::MAX as u128) as u32,
            tags: self.tags.clone(),
        }
    }

    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Verifies a fetch reply for a pull from `offset` and makes it a view; `pool` takes its
    /// buffer back when the view is dropped.
    pub(crate) fn view_of(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        reply: FetchReply,
        pool: Option<Arc<BufferPool>>,
    ) -> Result<PullView> {
        self.view_of_tagged(topic, queue_id, offset, reply, pool, &self.tags)
    }

    /// [`Self::view_of`] keeping the messages with one of `tags` (empty: all) instead of the
    /// consumer's own.
    pub(crate) fn view_of_tagged(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        reply: FetchReply,
        pool: Option<Arc<BufferPool>>,
        tags: &[Vec<u8>],
    ) -> Result<PullView> {
        let FetchReply { min_offset, next_offset, scan_end_offset, mut batches } = reply;
        let mut expect = StampedQueue { topic_id: self.router.cached_topic_id(topic), queue_id };
        let mut scan = scan_queue_batches(&batches, offset, tags, expect);
        if scan.misrouted.is_some_and(|m| m.queue_id == queue_id) {
            // Only the topic id differs: the topic may have been deleted and made again under
            // a new id since the route was read. Read it again and look once more.
            self.router.refresh(topic);
            if let Ok(route) = self.router.route(topic) {
                expect.topic_id = Some(route.topic_id);
                scan = scan_queue_batches(&batches, offset, tags, expect);
            }
        }
        if let Some(m) = scan.misrouted {
            if let Some(p) = pool {
                p.give(batches);
            }
            let topic_id = expect.topic_id.map_or("?".to_string(), |id| id.to_string());
            return Err(ClientError::Protocol(format!(
                "a fetch of {topic:?} (topic id {topic_id}) queue {queue_id} from offset {offset} \
                 was answered with a batch stamped for topic id {} queue {} (offsets [{}, {})): \
                 the broker misrouted it; nothing of this answer was delivered",
                m.topic_id, m.queue_id, m.first_offset, m.next_offset
            )));
        }
        let settled =
            settle(topic, queue_id, offset, scan_end_offset, scan.next_offset, scan.corrupt);
        let next = match settled {
            Ok(next) => next,
            Err(e) => {
                if let Some(p) = pool {
                    p.give(batches);
                }
                return Err(e);
            }
        };
        // Only verified batches stay: the views read them without checking again.
        batches.truncate(scan.valid_len);
        Ok(PullView {
            batches,
            from: offset,
            tags: tags.to_vec(),
            next_offset: next,
            min_offset,
            max_offset: next_offset,
            pool,
        })
    }

    /// A pipelined reader of `queue_id` of `topic` from offset `from` (see
    /// [`super::queue_reader`]): batches in offset order, the next fetch in flight while the
    /// caller reads the current one, fetch buffers reused.
    pub fn stream(&self, topic: &str, queue_id: u32, from: u64) -> QueueReader {
        QueueReader::new(self.clone(), topic, queue_id, from)
    }
}

/// A fetch error as the pull reports it: the broker's CORRUPT_DATA (the stored batch at the
/// requested offset is damaged on its disk) becomes the same explicit skip as a batch that
/// fails the client's own checks; other errors are unchanged.
pub(crate) fn broker_corrupt(topic: &str, queue_id: u32, e: ClientError) -> ClientError {
    match e {
        ClientError::Broker {
            detail: ErrorDetail::CorruptRange { first, next }, message, ..
        } => ClientError::CorruptData {
            topic: topic.to_owned(),
            queue_id,
            first_offset: first,
            next_offset: next,
            reason: format!("the broker read it damaged: {message}"),
        },
        e => e,
    }
}

/// A pull's reply kept as the fetch buffer it arrived in: [`PullView::messages`] reads the
/// messages in place, with no allocation per message; [`MessageView::to_owned`] copies the
/// ones a caller keeps. Every batch in it was verified (both CRCs and the record framing).
/// A view from a [`QueueReader`] gives its buffer back to the reader's pool when dropped.
#[derive(Debug)]
pub struct PullView {
    batches: Vec<u8>,
    from: u64,
    tags: Vec<Vec<u8>>,
    /// The offset to pull next (after the last record returned, or the requested one).
    pub next_offset: u64,
    /// The queue's bounds when the broker replied: `[min_offset, max_offset)`.
    pub min_offset: u64,
    pub max_offset: u64,
    pool: Option<Arc<BufferPool>>,
}

impl Drop for PullView {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.batches));
        }
    }
}

impl PullView {
    /// The offset the pull started at (messages below it in the first batch are skipped).
    pub fn from_offset(&self) -> u64 {
        self.from
    }

    /// Bytes of verified batches held.
    pub fn len_bytes(&self) -> usize {
        self.batches.len()
    }

    /// The messages at or after the requested offset that match the consumer's tags, in
    /// offset order.
    pub fn messages(&self) -> MessageViews<'_> {
        MessageViews::new(&self.batches, self.from, &self.tags)
    }

    /// Copies every message out (one allocation each; the view stays).
    pub fn to_result(&self) -> PullResult {
        PullResult {
            messages: self.messages().map(|m| m.to_owned()).collect(),
            next_offset: self.next_offset,
            min_offset: self.min_offset,
            max_offset: self.max_offset,
        }
    }

    /// Every message, its fields sharing this view's buffer: no allocation or copy per
    /// message (what [`PullConsumer::pull`] returns). A reader's pooled buffer goes back to
    /// its pool when the last message (or field) of it is dropped.
    pub fn into_result(mut self) -> PullResult {
        let batches = std::mem::take(&mut self.batches);
        let buf = match self.pool.take() {
            Some(pool) => Bytes::from_owner(Pooled { buffer: batches, pool }),
            None => Bytes::from(batches),
        };
        let messages = shared_messages(&buf, self.from, &self.tags);
        PullResult {
            messages,
            next_offset: self.next_offset,
            min_offset: self.min_offset,
            max_offset: self.max_offset,
        }
    }
}

/// A pooled fetch buffer shared by the messages read from it; back to its pool when the last
/// of them goes.
struct Pooled {
    buffer: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buffer));
    }
}

/// A message as it lies in a fetch buffer (borrowed; see [`PullView`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    pub topic_id: u32,
    pub queue_id: u32,
    pub offset: u64,
    pub store_timestamp_ms: i64,
    /// The record: key, tag, body, producer timestamp and `properties()`, all borrowed.
    pub record: RecordRef<'a>,
}

impl<'a> MessageView<'a> {
    pub fn body(&self) -> &'a [u8] {
        self.record.body
    }

    /// Where it is stored (no allocation; shown as 32 hex digits).
    pub fn message_id(&self) -> MessageId {
        MessageId::new(self.topic_id, self.queue_id, self.offset)
    }

    /// An owned copy, to keep after the [`PullView`] is gone (one allocation: the record's
    /// bytes; [`PullView::into_result`] shares the fetch buffer instead).
    pub fn to_owned(&self) -> ConsumedMessage {
        ConsumedMessage::copied(&self.record, self.message_id(), self.store_timestamp_ms)
    }
}

/// Iterates the messages of verified batches (see [`scan_batches`]) at or after `from` that
/// match `tags`; batches below `from`, control batches and batches whose tag summary rules
/// the tags out are stepped over by their header. Records at offsets an earlier batch of the
/// answer already covered are stepped over too, as [`scan_batches`] does, so messages come
/// once each, in offset order, whatever a broker sends.
pub struct MessageViews<'a> {
    rest: &'a [u8],
    /// The requested offset, then past the end of every batch seen.
    from: u64,
    tags: &'a [Vec<u8>],
    /// The batch being read, and the offset its records count from (`from` before it).
    batch: Option<(BatchHeader, RecordIter<'a>, u64)>,
}

impl<'a> MessageViews<'a> {
    /// The messages of `batches`, which [`scan_batches`] verified (its `valid_len` prefix):
    /// in unverified bytes a record that does not decode would end its batch silently.
    pub fn new(batches: &'a [u8], from: u64, tags: &'a [Vec<u8>]) -> Self {
        MessageViews { rest: batches, from, tags, batch: None }
    }
}

impl<'a> Iterator for MessageViews<'a> {
    type Item = MessageView<'a>;

    fn next(&mut self) -> Option<MessageView<'a>> {
        loop {
            if let Some((h, records, from)) = &mut self.batch {
                // Verified by the scan: a framing error cannot occur; it would end the batch.
                match records.next() {
                    Some(Ok(record)) => {
                        let offset = h.stamp.base_offset + u64::from(record.index);
                        if offset < *from
                            || (!self.tags.is_empty()
                                && !self.tags.iter().any(|t| t.as_slice() == record.tag))
                        {
                            continue;
                        }
                        return Some(MessageView {
                            topic_id: h.stamp.topic_id,
                            queue_id: h.stamp.queue_id,
                            offset,
                            store_timestamp_ms: h.stamp.store_timestamp_ms,
                            record,
                        });
                    }
                    _ => self.batch = None,
                }
            }
            if self.rest.len() < HEADER_LEN {
                return None;
            }
            let h = read_header(self.rest).ok()?;
            let len = (h.length as usize).clamp(HEADER_LEN, self.rest.len());
            let (batch, rest) = self.rest.split_at(len);
            self.rest = rest;
            let wanted = !h.is_control()
                && h.next_offset() > self.from
                && (self.tags.is_empty()
                    || h.tag_summary.may_contain_any(self.tags.iter().map(Vec::as_slice)));
            let from = self.from;
            self.from = self.from.max(h.next_offset());
            if wanted {
                let records =
                    RecordIter::new(&batch[HEADER_LEN..], h.record_count, h.first_timestamp_ms);
                self.batch = Some((h, records, from));
            }
        }
    }
}

/// A pull's next offset from what it decoded, or the corrupt batch the pull starts at.
fn settle(
    topic: &str,
    queue_id: u32,
    offset: u64,
    scan_end_offset: u64,
    decoded_next_offset: u64,
    corrupt: Option<CorruptBatch>,
) -> Result<u64> {
    Ok(match corrupt {
        // Nothing before it: the caller decides whether to skip it.
        Some(c) if decoded_next_offset <= offset => {
            return Err(ClientError::CorruptData {
                topic: topic.to_owned(),
                queue_id,
                first_offset: c.first_offset,
                next_offset: c.next_offset,
                reason: c.reason,
            })
        }
        // Deliver what precedes it; the next pull starts at it and reports it.
        Some(_) => decoded_next_offset,
        // The broker may have skipped batches past the last one it returned (tag filter).
        None => decoded_next_offset.max(scan_end_offset).max(offset),
    })
}

/// A fetched batch that does not decode, covering queue offsets `[first_offset, next_offset)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptBatch {
    pub first_offset: u64,
    pub next_offset: u64,
    pub reason: String,
}

/// What [`decode_batches`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatches {
    /// The records at or after the requested offset, up to the first corrupt batch.
    pub messages: Vec<ConsumedMessage>,
    /// The offset after the last batch decoded (the requested one if none was).
    pub next_offset: u64,
    /// The first batch that did not decode; decoding stopped there.
    pub corrupt: Option<CorruptBatch>,
}

/// What [`scan_batches`] found: how far the fetched bytes verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The verified prefix of the bytes, up to the first corrupt batch.
    pub valid_len: usize,
    /// The offset after the last batch verified (the requested one if none was).
    pub next_offset: u64,
    /// The first batch that did not verify; the scan stopped there.
    pub corrupt: Option<CorruptBatch>,
    /// The first verified batch stamped for another queue than the one expected
    /// ([`scan_queue_batches`]); the scan stopped there.
    pub misrouted: Option<Misrouted>,
}

/// The queue a fetch asked for, as the broker stamps it into each batch it stores (the topic's
/// id as METADATA reported it; `None` when unknown: the queue id alone is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampedQueue {
    pub topic_id: Option<u32>,
    pub queue_id: u32,
}

/// A verified batch stamped for another queue than the fetch asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Misrouted {
    pub topic_id: u32,
    pub queue_id: u32,
    pub first_offset: u64,
    pub next_offset: u64,
}

/// Verifies concatenated stored batches without decoding into anything (no allocation per
/// message): both CRCs of every batch and the record framing of those with records at or
/// after `from` for `tags` (a batch is delivered whole or not at all; batches below `from` or
/// ruled out by their tag summary are not looked into).
pub fn scan_batches(bytes: &[u8], from: u64, tags: &[Vec<u8>]) -> Scan {
    scan_batches_stamped(bytes, from, tags, None)
}

/// [`scan_batches`] for a fetch of one queue: each verified batch's stamped topic and queue
/// (header fields the scan reads anyway, once per batch) must be `queue`'s. A batch of
/// another queue stops the scan, like a corrupt one, and is reported in
/// [`Scan::misrouted`]: a broker (or a proxy) that misroutes must not have another queue's
/// messages delivered, and their offsets committed, as this queue's.
pub fn scan_queue_batches(bytes: &[u8], from: u64, tags: &[Vec<u8>], queue: StampedQueue) -> Scan {
    scan_batches_stamped(bytes, from, tags, Some(queue))
}

fn scan_batches_stamped(
    mut bytes: &[u8],
    from: u64,
    tags: &[Vec<u8>],
    queue: Option<StampedQueue>,
) -> Scan {
    let total = bytes.len();
    let mut next = from;
    while !bytes.is_empty() {
        let valid_len = total - bytes.len();
        let checked = BatchView::parse(bytes, bytes.len()).and_then(|v| {
            v.verify_stamp()?;
            Ok(v)
        });
        let view = match checked {
            Ok(v) => v,
            Err(e) => {
                // Its offsets are unverified: report (and let the caller skip) one offset
                // only, so a skip never passes data it did not see.
                let corrupt = CorruptBatch {
                    first_offset: next,
                    // Saturating: the batches before may end at the last offset.
                    next_offset: next.saturating_add(1),
                    reason: format!("batch fails verification: {e}"),
                };
                return Scan {
                    valid_len,
                    next_offset: next,
                    corrupt: Some(corrupt),
                    misrouted: None,
                };
            }
        };
        let h = view.header;
        if let Some(q) = queue {
            let stamped = (h.stamp.topic_id, h.stamp.queue_id);
            if stamped != (q.topic_id.unwrap_or(h.stamp.topic_id), q.queue_id) {
                let misrouted = Misrouted {
                    topic_id: h.stamp.topic_id,
                    queue_id: h.stamp.queue_id,
                    first_offset: h.stamp.base_offset,
                    next_offset: h.next_offset(),
                };
                return Scan {
                    valid_len,
                    next_offset: next,
                    corrupt: None,
                    misrouted: Some(misrouted),
                };
            }
        }
        // Past `next`, not only `from`: records an earlier batch of this answer covered are
        // not delivered again (a broker or proxy that repeats a batch), as MessageViews skips.
        let wanted = !h.is_control()
            && h.next_offset() > next
            && (tags.is_empty() || h.tag_summary.may_contain_any(tags.iter().map(Vec::as_slice)));
        if wanted {
            if let Err(e) = view.validate_records() {
                // Both checksums hold, so its offsets are the broker's: the whole batch.
                let corrupt = CorruptBatch {
                    first_offset: h.stamp.base_offset,
                    next_offset: h.next_offset(),
                    reason: e.to_string(),
                };
                return Scan {
                    valid_len,
                    next_offset: next,
                    corrupt: Some(corrupt),
                    misrouted: None,
                };
            }
        }
        bytes = &bytes[h.length as usize..];
        next = next.max(h.next_offset());
    }
    Scan { valid_len: total, next_offset: next, corrupt: None, misrouted: None }
}

/// Decodes concatenated stored batches into owned messages: the records at or after `from`
/// that match `tags`, the offset after the last batch, and the first batch that does not
/// decode ([`scan_batches`], then [`MessageView::to_owned`] per message).
pub fn decode_batches(bytes: &[u8], from: u64, tags: &[Vec<u8>]) -> DecodedBatches {
    let scan = scan_batches(bytes, from, tags);
    let messages =
        MessageViews::new(&bytes[..scan.valid_len], from, tags).map(|m| m.to_owned()).collect();
    DecodedBatches { messages, next_offset: scan.next_offset, corrupt: scan.corrupt }
}

/// [`decode_batches`] without a copy: the messages' fields share `bytes`.
pub fn decode_batches_shared(bytes: &Bytes, from: u64, tags: &[Vec<u8>]) -> DecodedBatches {
    let scan = scan_batches(bytes, from, tags);
    let messages = shared_messages(&bytes.slice(..scan.valid_len), from, tags);
    DecodedBatches { messages, next_offset: scan.next_offset, corrupt: scan.corrupt }
}

/// The messages of verified batches at or after `from` that match `tags`, their fields
/// sharing `buf`.
fn shared_messages(buf: &Bytes, from: u64, tags: &[Vec<u8>]) -> Vec<ConsumedMessage> {
    let base = buf.as_ptr() as usize;
    // Sized once from the batch headers (the messages are large to move when a vector grows).
    let mut out = Vec::with_capacity(records_from(buf, from));
    out.extend(MessageViews::new(buf, from, tags).map(|m| {
        ConsumedMessage::in_buffer(&m.record, buf, base, m.message_id(), m.store_timestamp_ms)
    }));
    out
}

/// The records of verified batches at or after `from` (before filtering by tag), read from
/// the batch headers; at most what the bytes can hold (a batch the scan did not look into,
/// below `from` or ruled out by tag, is checked by its CRCs only: its count is the sender's
/// word).
fn records_from(mut batches: &[u8], from: u64) -> usize {
    const MIN_RECORD_BYTES: usize = 20;
    let most = batches.len() / MIN_RECORD_BYTES;
    let mut n = 0u64;
    while let Ok(h) = read_header(batches) {
        if !h.is_control() {
            n += h.next_offset().saturating_sub(h.stamp.base_offset.max(from));
        }
        let len = (h.length as usize).clamp(HEADER_LEN, batches.len());
        batches = &batches[len..];
    }
    usize::try_from(n).unwrap_or(usize::MAX).min(most)
}

#[cfg(test)]
mod tests;
