//! Resends of scheduled sends recognised by unique id (see `crate::schedule::dedup`): the
//! claim a send takes while it is stored, the answer a resend gets, and the window read back
//! from the schedule queue after a restart.

use super::schedule::SYS_SCHEDULE;
use super::*;
use crate::format::batch::BatchView;
use crate::schedule::dedup::PROPERTY_UNIQ_KEY;
use crate::schedule::entry::{Entry, ENTRY_KEY};
use crate::schedule::retry::PROPERTY_RECONSUME_TIME;

use super::super::topics::SYSTEM_TOPIC_SCHEDULE;

/// Where a scheduled send with a unique id was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) offset: u64,
    pub(super) record_count: u32,
    pub(super) store_timestamp_ms: i64,
}

/// A unique id in the dedup window: held, or being stored by an earlier request (a resend
/// waits for it; if it fails, the resend stores the batch itself).
#[derive(Clone)]
pub(super) enum Seen {
    Held(Held),
    Storing(futures::future::Shared<futures::channel::oneshot::Receiver<Held>>),
}

impl Held {
    /// The answer to a resend of the send held here, with `status` (the promise it can make
    /// now: [`Shard::resend_status`]).
    pub(super) fn reply(self, status: SendStatus) -> Response {
        Response::Produce {
            status,
            topic_id: SYSTEM_TOPIC_SCHEDULE,
            queue_id: SYS_SCHEDULE.queue_id.get(),
            base_offset: self.offset,
            record_count: self.record_count,
            store_timestamp_ms: self.store_timestamp_ms,
        }
    }
}

/// What identifies a scheduled send for de-duplication: its first record's `UNIQ_KEY`
/// property, with the destination queue and the `RECONSUME_TIME` property. A message keeps
/// its id when a consumer sends it back for a retry, so each retry (a new count) and each
/// group's retry topic (a new queue) is a send of its own; only a resend of the same one
/// is recognised.
pub(super) fn dedup_key(queue: QueueKey, batch: &[u8]) -> Option<Vec<u8>> {
    let view = BatchView::parse(batch, batch.len()).ok()?;
    let first = view.records().next()?.ok()?;
    let id = first.property(PROPERTY_UNIQ_KEY.as_bytes()).filter(|id| !id.is_empty())?;
    let retry = first.property(PROPERTY_RECONSUME_TIME.as_bytes()).unwrap_or_default();
    let mut k = Vec::with_capacity(9 + retry.len() + id.len());
    k.extend_from_slice(&queue.topic_id.get().to_le_bytes());
    k.extend_from_slice(&queue.queue_id.get().to_le_bytes());
    k.extend_from_slice(retry);
    k.push(0);
    k.extend_from_slice(id);
    Some(k)
}

/// A unique id being stored by one request: `held` records where; dropped without it (the
/// send failed), the id is forgotten and requests waiting on it store the batch themselves.
pub(super) struct Claim<'a, L: ShardLog> {
    shard: &'a Shard<L>,
    id: Vec<u8>,
    tx: Option<futures::channel::oneshot::Sender<Held>>,
}

impl<L: ShardLog> Claim<'_, L> {
    pub(super) fn held(mut self, held: Held) {
        let now_ms = self.shard.clock.unix_ms();
        self.shard.schedule.borrow_mut().recent.insert(&self.id, Seen::Held(held), now_ms);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(held);
        }
    }
}

impl<L: ShardLog> Drop for Claim<'_, L> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.shard.schedule.borrow_mut().recent.remove(&self.id);
        }
    }
}

impl<L: ShardLog> Shard<L> {
    /// Claims `id` for a scheduled send, or returns where a send with that id is held (after
    /// waiting for one being stored).
    pub(super) async fn claim_unique_id(&self, id: &[u8]) -> Result<Claim<'_, L>, Held> {
        loop {
            let now_ms = self.clock.unix_ms();
            let seen = self.schedule.borrow_mut().recent.get(id, now_ms).cloned();
            match seen {
                Some(Seen::Held(held)) => return Err(held),
                Some(Seen::Storing(first)) => {
                    if let Ok(held) = first.await {
                        return Err(held);
                    }
                    // The first send failed and forgot the id: try again.
                }
                None => {
                    let (tx, rx) = futures::channel::oneshot::channel();
                    let storing = Seen::Storing(futures::FutureExt::shared(rx));
                    self.schedule.borrow_mut().recent.insert(id, storing, now_ms);
                    return Ok(Claim { shard: self, id: id.to_vec(), tx: Some(tx) });
                }
            }
        }
    }

    /// Reads the unique ids of the scheduled sends of the last `dedup_window_ms` (at most
    /// `dedup_capacity` entries) back into the dedup window, so a resend after a restart is
    /// not held twice.
    pub(super) async fn rebuild_dedup_window(&self, now_ms: i64) -> Result<usize, BrokerError> {
        let sc = &self.config.schedule;
        if sc.dedup_capacity == 0 {
            return Ok(0);
        }
        let range = self.log.offsets(SYS_SCHEDULE);
        let since = now_ms.saturating_sub(i64::try_from(sc.dedup_window_ms).unwrap_or(i64::MAX));
        let from = self
            .log
            .offset_for_timestamp(SYS_SCHEDULE, since)
            .await?
            .max(range.next.saturating_sub(sc.dedup_capacity as u64))
            .max(range.min);
        let mut ids = Vec::new();
        self.read_system_records(SYS_SCHEDULE, from, range.next, |offset, stored_ms, key, body| {
            if key != ENTRY_KEY {
                return;
            }
            let Ok(e) = Entry::decode(body) else { return };
            let queue = QueueKey::new(TopicId::new(e.topic_id), QueueId::new(e.queue_id));
            if let Some(id) = dedup_key(queue, e.batch) {
                ids.push((id, Held { offset, record_count: 1, store_timestamp_ms: stored_ms }));
            }
        })
        .await?;
        let n = ids.len();
        let mut st = self.schedule.borrow_mut();
        // Remembered from now (a resend waits at most one more window after a restart).
        for (id, held) in ids {
            st.recent.insert(&id, Seen::Held(held), now_ms);
        }
        Ok(n)
    }
}
