//! The send events a traced producer records for each message of a resolved batch
//! ([`crate::client::trace`]).

use std::time::Duration;

use crate::client::error::Result;
use crate::protocol::SendStatus;

/// A send event per message of a resolved batch: where each was stored, or the failure.
pub(super) fn trace_sends(
    tracer: &crate::client::trace::Tracer,
    topic: &str,
    queue_id: u32,
    count: u32,
    latency: Duration,
    now_ms: i64,
    stored: &Result<(SendStatus, u32, u32, u64, i64)>,
) {
    use crate::client::trace::TraceEvent;
    let latency_ms = latency.as_millis() as u64;
    let time_ms = now_ms - latency_ms as i64;
    for i in 0..count {
        let event = match stored {
            Ok((status, topic_id, queue, base_offset, store_time_ms)) => TraceEvent::Send {
                time_ms,
                host: tracer.host.clone(),
                client: std::process::id().to_string(),
                status: match status {
                    SendStatus::SendOk => "SEND_OK",
                    SendStatus::FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
                    SendStatus::FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
                }
                .to_string(),
                latency_ms,
                msg_id: crate::protocol::message_id(*topic_id, *queue, base_offset + u64::from(i)),
                topic: topic.to_string(),
                queue_id: *queue,
                offset: base_offset + u64::from(i),
                store_time_ms: *store_time_ms,
            },
            Err(e) => TraceEvent::Send {
                time_ms,
                host: tracer.host.clone(),
                client: std::process::id().to_string(),
                status: e.to_string(),
                latency_ms,
                msg_id: String::new(),
                topic: topic.to_string(),
                queue_id,
                offset: 0,
                store_time_ms: 0,
            },
        };
        tracer.record(event);
    }
}
