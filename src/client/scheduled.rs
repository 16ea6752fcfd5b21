//! Scheduled sends: one batch held by the broker until a delay level or a time has come, then
//! appended to its queue unchanged (docs/protocol.md, "Scheduled produce").
//!
//! Used by [`super::Producer::send_delayed`], [`super::Producer::send_at`] and
//! [`super::Producer::send_scheduled_batch`] (the building block of broker-side retries: one
//! batch to a given topic and queue with a delay level). A scheduled send is synchronous and
//! not idempotent (the broker refuses idempotent scheduled batches: they reach their queue
//! outside the producer's sequence). It is retried only when the broker refused it before
//! storing anything (NOT_OWNER, SHUTTING_DOWN, SCHEDULE_FULL) or the connection could not be
//! written; a lost reply is an error, since a resend could hold the batch twice.
//!
//! The result names where the broker holds the batch until delivery: topic `%SYS%schedule`
//! (id `0xFFFF_FFFE`), queue 0 of the owner shard of the destination queue, and the entry's
//! offset there; not the offset the messages get in their queue, which is known only once
//! they are delivered.

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
        m.with_record(ts, |r| b.push(r)).map_err(too_large)?;
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
        let refused_before_storing = |e: &ClientError| {
            matches!(e, ClientError::Io { .. })
                || matches!(
                    e.code(),
                    Some(
                        ErrorCode::NOT_OWNER | ErrorCode::SHUTTING_DOWN | ErrorCode::SCHEDULE_FULL
                    )
                )
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
            Err(e) if refused_before_storing(&e) && Instant::now() + backoff < deadline => {
                router.refresh(topic);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}
