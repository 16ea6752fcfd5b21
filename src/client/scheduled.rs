//! Scheduled sends: one batch held by the broker until a delay level or a time has come, then
//! appended to its queue unchanged (docs/protocol.md, "Scheduled produce").
//!
//! Used by [`super::Producer::send_delayed`], [`super::Producer::send_at`] and
//! [`super::Producer::send_scheduled_batch`] (the building block of broker-side retries: one
//! batch to a given topic and queue with a delay level). A scheduled send is synchronous. It
//! is not sent as an idempotent batch (the broker refuses those: they reach their queue
//! outside the producer's sequence); instead every message gets a `UNIQ_KEY` property (unless
//! it has one), and the broker remembers the first one's id for `schedule.dedup_window_ms`:
//! a resend is answered with the place of the first, not held twice. So the send is retried
//! until its timeout after any retriable failure, a lost reply included.
//!
//! The result names where the broker holds the batch until delivery: topic `%SYS%schedule`
//! (id `0xFFFF_FFFE`), queue 0 of the owner shard of the destination queue, and the entry's
//! offset there; not the offset the messages get in their queue, which is known only once
//! they are delivered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::error::{ClientError, Result};
use super::message::Message;
use super::producer::{too_large, SendResult};
use super::router::Router;
use crate::format::BatchBuilder;
use crate::protocol::message::Delivery;
use crate::protocol::{ErrorCode, Request, Response};

/// The name results give the queue that holds scheduled messages.
pub const SCHEDULE_TOPIC: &str = "%SYS%schedule";

/// The property of a message's unique id (RocketMQ's name for it).
pub use crate::schedule::dedup::PROPERTY_UNIQ_KEY;

/// A new unique message id: 32 hex digits of process id, time and a process-wide counter
/// (the shape of RocketMQ's client-set ids: unique per process and time, no coordination).
pub fn new_unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08X}{:012X}{:012X}",
        std::process::id(),
        nanos & 0xFFFF_FFFF_FFFF,
        n & 0xFFFF_FFFF_FFFF
    )
}

/// Unix milliseconds of `at` (times before 1970 are 0: deliver at once).
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// Sends `msgs` as one batch to `topic` queue `queue_id`, held until `delivery`.
pub(crate) fn send(
    router: &Arc<Router>,
    topic: &str,
    queue_id: u32,
    msgs: &[Message],
    delivery: Delivery,
    max_batch_bytes: usize,
    now_ms: i64,
    timeout: Duration,
) -> Result<SendResult> {
    if msgs.is_empty() {
        return Err(ClientError::Invalid("a scheduled batch needs at least one message".into()));
    }
    let mut b = BatchBuilder::new(max_batch_bytes);
    for m in msgs {
        let ts = m.timestamp_ms.unwrap_or(now_ms);
        if m.properties.iter().any(|(k, _)| k.as_slice() == PROPERTY_UNIQ_KEY.as_bytes()) {
            m.with_record(ts, |r| b.push(r)).map_err(too_large)?;
        } else {
            let mut with_id = m.clone();
            with_id.properties.push((PROPERTY_UNIQ_KEY.into(), new_unique_id().into_bytes()));
            with_id.with_record(ts, |r| b.push(r)).map_err(too_large)?;
        }
    }
    let request = Request::ProduceScheduled {
        topic: topic.to_owned(),
        queue_id,
        delivery,
        batch: b.finish(-1, -1).into(),
    };
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        let attempt = router
            .queue_connection(topic, queue_id)
            .and_then(|c| c.call(&request, deadline.saturating_duration_since(Instant::now())));
        // Safe to resend: refused before storing, or the broker recognises the first copy by
        // its unique id.
        let resend = |e: &ClientError| {
            e.is_retriable() || matches!(e.code(), Some(ErrorCode::SCHEDULE_FULL))
        };
        match attempt {
            Ok(Response::Produce { status, topic_id, queue_id, base_offset, .. }) => {
                return Ok(SendResult {
                    status,
                    topic: Arc::from(SCHEDULE_TOPIC),
                    topic_id,
                    queue_id,
                    queue_offset: base_offset,
                })
            }
            Ok(other) => {
                return Err(ClientError::Protocol(format!(
                    "scheduled produce got a {:?} reply",
                    other.api_key()
                )))
            }
            Err(e) if resend(&e) && Instant::now() + backoff < deadline => {
                router.refresh(topic);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}
