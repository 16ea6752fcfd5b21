//! The worker's reply half: a batch's reply goes to its queue's sequencer, which says what
//! is resolved (stored, failed for good) and what goes again; a resolved batch's buffer
//! returns to the staging area and its callers' handles complete. Also where a queue past
//! its producer id's last epoch takes a new id, and where flushes finish.

use std::sync::Arc;

use super::trace_events::trace_sends;
use super::{BatchSink, Completion, ReadyBatch, Reply, Worker, KEPT_BATCH_ARCS};
use crate::client::error::{ClientError, Result};
use crate::client::producer::SendBatchResult;
use crate::client::send_handle::BatchStored;
use crate::client::sequencer::{generation, Failure, ReplyKind, Resolution};
use crate::protocol::{ErrorCode, Response};

impl<S: BatchSink> Worker<S> {
    pub(crate) fn reply(&mut self, r: Reply) {
        let id = r.tag.queue;
        let Some(q) = self.queues.get_mut(id) else { return };
        let kind = match &r.result {
            Ok(Response::Produce { .. }) => {
                q.last_refusal = None;
                ReplyKind::Stored
            }
            Ok(_) => ReplyKind::Fatal,
            Err(e) if e.code() == Some(ErrorCode::OUT_OF_ORDER_SEQUENCE) => {
                ReplyKind::OutOfOrderSequence
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!(topic = %q.key.0, queue = q.key.1, "resending: {e}");
                if matches!(e.code(), Some(ErrorCode::NOT_OWNER)) || e.code().is_none() {
                    self.sink.refresh(&q.key.0);
                }
                q.last_refusal = Some(Box::new(e.clone()));
                ReplyKind::Retriable
            }
            Err(_) => ReplyKind::Fatal,
        };
        let t = r.tag;
        let resolved =
            q.sequencer.on_reply(t.attempt, t.epoch, t.base_sequence, kind, self.clock.now());
        for res in resolved {
            self.resolve(id, res, Some(&r.result));
        }
        self.follow_generation(id);
        self.mark(id);
    }

    /// A queue whose sequencer went past the 65,536 epochs of a producer id (a renumbering at
    /// every batch, while the broker's window table is too small for the pairs writing to the
    /// shard, gets there in hours) numbers its next generation under a new producer id from
    /// the broker. Asked on the worker's thread, which waits for the answer: once per 65,536
    /// renumberings of a queue. Without an answer the queue keeps its id: the broker fences
    /// the batches numbered from epoch 0 again under it (an older epoch), they are renumbered,
    /// and the next renumbering asks again.
    pub(super) fn follow_generation(&mut self, id: usize) {
        let q = &mut self.queues[id];
        let epoch = q.sequencer.epoch();
        if generation(epoch) == q.generation || q.asked_at_epoch == Some(epoch) {
            return;
        }
        match self.sink.new_producer_id() {
            Ok(pid) => (q.producer_id, q.generation) = (pid, generation(epoch)),
            Err(e) => {
                q.asked_at_epoch = Some(epoch);
                tracing::warn!(
                    topic = %q.key.0,
                    queue = q.key.1,
                    "queue used every epoch of its producer id and no new id came (asked again \
                     at its next renumbering): {e}"
                );
            }
        }
    }

    /// Completes a resolved batch's messages: with their offsets from `reply` when stored,
    /// else with the failure.
    pub(super) fn resolve(
        &mut self,
        id: usize,
        r: Resolution<ReadyBatch>,
        reply: Option<&Result<Response>>,
    ) {
        let (batch, outcome) = match r {
            Resolution::Stored(b) => (b, Ok(())),
            Resolution::Failed(b, why) => (b, Err(why)),
        };
        let ReadyBatch { mut bytes, completion, started } = batch;
        let len = bytes.len();
        self.buffered_bytes = self.buffered_bytes.saturating_sub(len);
        // Unshared once the connection wrote it: its buffer and its handle are used again.
        let buf = Arc::get_mut(&mut bytes).map(std::mem::take);
        let unshared = buf.is_some();
        self.staging.release(len, buf);
        if unshared && self.batch_arcs.len() < KEPT_BATCH_ARCS {
            self.batch_arcs.push(bytes);
        }
        let key = &self.queues[id].key;
        let last_refusal = &self.queues[id].last_refusal;
        let error = |why: Failure| match (why, reply) {
            (Failure::Reply, Some(Err(e))) => e.clone(),
            (Failure::Reply, Some(Ok(other))) => {
                ClientError::Protocol(format!("produce got a {:?} reply", other.api_key()))
            }
            (Failure::Timeout, _) | (Failure::Reply, None) => {
                let after_ms = self.config.send_timeout.as_millis() as u64;
                match last_refusal {
                    Some(last) => ClientError::GaveUp { after_ms, last: last.clone() },
                    None => ClientError::Timeout(after_ms),
                }
            }
            (Failure::EpochsExhausted, _) => ClientError::Invalid(format!(
                "queue {} of {} renumbered its batches 2^32 times; create a new producer",
                key.1, key.0
            )),
        };
        let stored = match (outcome, reply) {
            (
                Ok(()),
                Some(Ok(Response::Produce {
                    status,
                    topic_id,
                    queue_id,
                    base_offset,
                    store_timestamp_ms,
                    ..
                })),
            ) => Ok((*status, *topic_id, *queue_id, *base_offset, *store_timestamp_ms)),
            (Ok(()), _) => Err(ClientError::Protocol("a stored batch without its reply".into())),
            (Err(why), _) => Err(error(why)),
        };
        if let Some(t) = &self.tracer {
            let count = match &completion {
                Completion::PerMessage { count, .. } | Completion::Batch { count, .. } => *count,
            };
            let latency = self.clock.now().saturating_duration_since(started);
            trace_sends(t, &key.0, key.1, count, latency, self.clock.unix_ms(), &stored);
        }
        let stored = stored.map(|(status, topic_id, queue_id, base_offset, _)| {
            (status, topic_id, queue_id, base_offset)
        });
        match (completion, stored) {
            (
                Completion::PerMessage { batch, .. },
                Ok((status, topic_id, queue_id, base_offset)),
            ) => {
                // One reply resolves every message's handle with one store and one lock: each
                // handle makes its result (its offset, the shared topic name) when asked.
                batch.complete(Ok(BatchStored {
                    status,
                    topic: key.0.clone(),
                    topic_id,
                    queue_id,
                    base_offset,
                }));
            }
            (Completion::PerMessage { batch, .. }, Err(e)) => batch.complete(Err(e)),
            (Completion::Batch { done, count }, Ok((status, topic_id, queue_id, first_offset))) => {
                done.complete(Ok(SendBatchResult {
                    status,
                    topic: key.0.to_string(),
                    topic_id,
                    queue_id,
                    first_offset,
                    count,
                }));
            }
            (Completion::Batch { done, .. }, Err(e)) => done.complete(Err(e)),
        }
    }

    pub(crate) fn finish_flushes(&mut self) {
        if !self.flushes.is_empty() && self.busy_queues == 0 {
            for f in self.flushes.drain(..) {
                f.complete(());
            }
        }
    }
}
