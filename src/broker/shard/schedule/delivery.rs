//! Delivery: due timers routed, their batches moved to their queues in runs of nearby
//! schedule offsets, and the step's failure handling (nothing dropped or moved twice). A
//! timer of a message held past `schedule.roll_after_ms` comes due before the message does
//! (`index_entries`): its entry is written again at the schedule queue's end instead, and the
//! old one is listed as done like a delivered one, so retention's pin moves past it.

use super::*;

/// Where a due timer's batch goes.
enum Move {
    /// Due: to its queue.
    Deliver(QueueKey),
    /// Held past `schedule.roll_after_ms` and not due: written again to the schedule queue.
    Roll,
}

/// A due message refused at delivery because it is larger than the log can move now
/// (`StorageConfig::movable_batch_limit`: its write pool shrank since the message was stored)
/// is tried again this much later.
const REFUSED_RETRY_MS: u64 = 60_000;

/// Bytes of a delivered record's batch besides its offsets (header and record framing, with
/// room to spare).
const DELIVERED_RECORD_OVERHEAD: usize = 256;

/// Offsets closer than this are read in one run (the records between them are read and
/// skipped): cheaper than another read.
const DUE_RUN_GAP: u64 = 64;

/// Splits sorted offsets into runs whose neighbours are at most [`DUE_RUN_GAP`] apart.
fn due_runs(sorted: &[u64]) -> impl Iterator<Item = &[u64]> {
    let mut rest = sorted;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end =
            rest.windows(2).position(|w| w[1] - w[0] > DUE_RUN_GAP).map_or(rest.len(), |i| i + 1);
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}

impl<L: ShardLog> Shard<L> {
    /// Routes due timers and moves their batches. On a failure half-way the wheel goes back
    /// to where the step began (its timers are routed again by a later step) and the batches
    /// already moved are remembered as delivered, so nothing is dropped or moved twice.
    pub(super) async fn deliver_due(&self, report: &mut StepReport) -> Result<(), BrokerError> {
        let before = self.schedule.borrow().wheel.checkpoint();
        let mut moved_ok = Vec::new();
        let mut routed_due = Vec::new();
        let result = self.try_deliver_due(report, &mut moved_ok, &mut routed_due).await;
        if result.is_ok() {
            // Delivered, or dropped for good: no longer held.
            let mut st = self.schedule.borrow_mut();
            for offset in routed_due {
                if !st.pending.remove(offset) {
                    tracing::warn!(shard = %self.id, offset, "a due scheduled message was not counted as pending");
                }
            }
        } else {
            self.rewind_wheel(&before);
            let mut st = self.schedule.borrow_mut();
            for offset in moved_ok {
                if st.already_delivered.len() < MAX_ALREADY_DELIVERED {
                    st.already_delivered.insert(offset);
                }
            }
        }
        result
    }

    async fn try_deliver_due(
        &self,
        report: &mut StepReport,
        delivered: &mut Vec<u64>,
        routed_due: &mut Vec<u64>,
    ) -> Result<(), BrokerError> {
        let now_ms = self.clock.unix_ms();
        let max_due = self.config.schedule.max_due_per_step;
        let max_routed = self.config.schedule.max_timer_records_per_step;
        let moved_base = self.schedule.borrow().wheel.records();
        let mut moved: Vec<TimerRecord> = Vec::new();
        let mut due: Vec<u64> = Vec::new();
        let mut cache = TimerCache::default();
        let mut routed = 0;
        loop {
            if due.len() >= max_due || routed >= max_routed {
                report.more = true;
                break;
            }
            let Some(index) = self.schedule.borrow_mut().wheel.poll(now_ms) else { break };
            let record = match index.checked_sub(moved_base) {
                Some(i) => moved[i as usize],
                None => self.read_timer_record(index, &mut cache).await?,
            };
            routed += 1;
            match self.schedule.borrow_mut().wheel.route(&record) {
                Routed::Due { entry, .. } => due.push(entry),
                Routed::Moved { index, record } => {
                    debug_assert_eq!(index, moved_base + moved.len() as u64);
                    moved.push(record);
                }
            }
        }
        if routed > 0 {
            self.schedule.borrow_mut().dirty = true;
        }
        if !moved.is_empty() {
            self.append_timer_records(moved_base, &moved).await?;
        }
        routed_due.extend_from_slice(&due);
        if due.is_empty() {
            return Ok(());
        }
        // Read every due entry, then append them all at once: one flush covers them. Due
        // entries were mostly scheduled together, so they are read in runs of nearby offsets
        // (one read per run, not one read of up to a MiB per entry).
        let mut wanted: Vec<u64> = Vec::with_capacity(due.len());
        for offset in due {
            if self.schedule.borrow_mut().already_delivered.remove(&offset) {
                report.skipped += 1;
            } else {
                wanted.push(offset);
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut found: HashMap<u64, (QueueKey, i64, Vec<u8>)> =
            HashMap::with_capacity(wanted.len());
        for run in due_runs(&wanted) {
            let (first, last) = (run[0], run[run.len() - 1]);
            self.read_system_records(SYS_SCHEDULE, first, last + 1, |offset, _, key, body| {
                if run.binary_search(&offset).is_ok() {
                    if let Some(Ok((_, e))) = decode_entry_record(key, body) {
                        let queue =
                            QueueKey::new(TopicId::new(e.topic_id), QueueId::new(e.queue_id));
                        found.insert(offset, (queue, e.deliver_at_ms, e.batch.to_vec()));
                    }
                }
            })
            .await?;
        }
        let mut moves = Vec::with_capacity(wanted.len());
        let mut kept = Vec::new();
        for offset in wanted {
            match found.remove(&offset) {
                Some((queue, _, _)) if !self.topic_exists(queue.topic_id.get()) => {
                    tracing::warn!(shard = %self.id, offset, "scheduled message for {queue} dropped: its topic was deleted");
                    report.skipped += 1;
                }
                // Held past `roll_after_ms`, not due yet: written again at the log's end, the
                // same entry (indexed by the next step) in a record naming the one it replaces.
                Some((queue, deliver_at_ms, batch)) if deliver_at_ms > now_ms => {
                    let entry = Entry {
                        topic_id: queue.topic_id.get(),
                        queue_id: queue.queue_id.get(),
                        deliver_at_ms,
                        batch: &batch,
                    };
                    let body = encode_rolled(offset, &entry);
                    match self.schedule_batch(ROLLED_KEY, &body, now_ms) {
                        Ok(batch) => moves.push((offset, Move::Roll, batch)),
                        // Its copy no longer fits `storage.max_batch_bytes` (lowered since it
                        // was stored): it stays, timed for its delivery (failing the step
                        // instead failed every later one, and every other message waited).
                        Err(e) => {
                            tracing::warn!(shard = %self.id, offset, "a held scheduled message cannot be written again ({}); it keeps its place, and the log its segment, until due", e.message);
                            kept.push((deliver_at_ms, offset));
                        }
                    }
                }
                Some((queue, _, batch)) => moves.push((offset, Move::Deliver(queue), batch)),
                None => {
                    tracing::error!(shard = %self.id, offset, "scheduled message unreadable at delivery: lost");
                    report.skipped += 1;
                }
            }
        }
        // Each batch moves into its append (no copy); started in order, so the copies precede
        // the delivered record in the schedule queue.
        let (moves, batches): (Vec<(u64, Move)>, Vec<Vec<u8>>) =
            moves.into_iter().map(|(offset, to, batch)| ((offset, to), batch)).unzip();
        let appends = moves.iter().zip(batches).map(|((_, to), batch)| async move {
            match to {
                Move::Deliver(queue) => {
                    self.append(*queue, batch.into(), BatchLimit::Moved).await.map(drop)
                }
                Move::Roll => {
                    self.log.append(SYS_SCHEDULE, batch).await.map(drop).map_err(Into::into)
                }
            }
        });
        let results = futures::future::join_all(appends).await;
        let mut failed = None;
        // Listed in the delivered record; a rewritten entry's record names the one it replaced.
        let mut listed = Vec::with_capacity(moves.len());
        for ((offset, to), result) in moves.iter().zip(results) {
            match (result, to) {
                (Ok(()), Move::Deliver(_)) => {
                    delivered.push(*offset);
                    listed.push(*offset);
                    report.delivered += 1;
                }
                (Ok(()), Move::Roll) => {
                    delivered.push(*offset);
                    report.rolled += 1;
                }
                // A copy not written: the message stays where it is, routed again after the
                // rewind (never dropped for it).
                (Err(e), Move::Roll) => {
                    failed.get_or_insert(e);
                }
                (Err(e), Move::Deliver(_))
                    if e.code == ErrorCode::SHARD_FAILED
                        || e.code == ErrorCode::SHUTTING_DOWN
                        || e.code == ErrorCode::DISK_FULL =>
                {
                    // Not delivered: routed again after the rewind (or after a restart).
                    failed.get_or_insert(e);
                }
                (Err(e), Move::Deliver(queue)) if e.code == ErrorCode::BATCH_TOO_LARGE => {
                    // Larger than the log can move now: held, and tried again every
                    // REFUSED_RETRY_MS until the limit allows it (before round 42, dropped).
                    tracing::error!(shard = %self.id, offset, "scheduled message for {queue} refused at delivery, held and tried again in {} s: {}", REFUSED_RETRY_MS / 1000, e.message);
                    kept.push((now_ms.saturating_add_unsigned(REFUSED_RETRY_MS), *offset));
                }
                (Err(e), Move::Deliver(queue)) => {
                    tracing::error!(shard = %self.id, offset, "scheduled message for {queue} refused at delivery: {}", e.message);
                    report.skipped += 1;
                }
            }
        }
        if !kept.is_empty() {
            // Still pending: their timers are set again.
            self.keep_held(&kept).await?;
            routed_due.retain(|o| !kept.iter().any(|&(_, k)| k == *o));
        }
        // As many records as `max_batch_bytes` needs (one with the defaults).
        let max = self.config.storage.max_batch_bytes;
        let per_record = (max.saturating_sub(DELIVERED_RECORD_OVERHEAD) / 8).max(1);
        for chunk in listed.chunks(per_record) {
            let body = encode_delivered(chunk);
            let mut builder = BatchBuilder::new(max);
            let timestamp_ms = self.clock.unix_ms();
            let record =
                Record { key: DELIVERED_KEY, tag: b"", properties: &[], body: &body, timestamp_ms };
            builder.push(&record).map_err(internal)?;
            self.log.append(SYS_SCHEDULE, builder.finish(-1, -1)).await?;
        }
        failed.map_or(Ok(()), Err)
    }

    /// Timers at their delivery times, no roll, for held entries `(deliver_at_ms, offset)`
    /// that stay where they are (still pending).
    async fn keep_held(&self, kept: &[(i64, u64)]) -> Result<(), BrokerError> {
        let mut first = None;
        let mut records = Vec::with_capacity(kept.len());
        for &(deliver_at_ms, offset) in kept {
            let (index, record) =
                self.schedule.borrow_mut().wheel.insert(deliver_at_ms, offset).map_err(internal)?;
            first.get_or_insert(index);
            records.push(record);
        }
        match first {
            Some(first) => self.append_timer_records(first, &records).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{due_runs, DUE_RUN_GAP};

    #[test]
    fn nearby_offsets_share_a_run_and_gaps_split_runs() {
        let g = DUE_RUN_GAP;
        let offsets = [1, 2, 5, 5 + g, 5 + 2 * g + 1, 900, 901];
        let runs: Vec<&[u64]> = due_runs(&offsets).collect();
        assert_eq!(runs, vec![&[1, 2, 5, 5 + g][..], &[5 + 2 * g + 1], &[900, 901]]);
        assert_eq!(due_runs(&[]).count(), 0);
        let all: Vec<u64> = due_runs(&offsets).flatten().copied().collect();
        assert_eq!(all, offsets, "every offset once, in order");
    }
}
