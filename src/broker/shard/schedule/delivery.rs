//! Delivery: due timers routed, their batches moved to their queues in runs of nearby
//! schedule offsets, and the step's failure handling (nothing dropped or moved twice).

use super::*;

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
        let mut found: HashMap<u64, (QueueKey, Vec<u8>)> = HashMap::with_capacity(wanted.len());
        for run in due_runs(&wanted) {
            let (first, last) = (run[0], run[run.len() - 1]);
            self.read_system_records(SYS_SCHEDULE, first, last + 1, |offset, _, key, body| {
                if key == ENTRY_KEY && run.binary_search(&offset).is_ok() {
                    if let Ok(e) = Entry::decode(body) {
                        let queue =
                            QueueKey::new(TopicId::new(e.topic_id), QueueId::new(e.queue_id));
                        found.insert(offset, (queue, e.batch.to_vec()));
                    }
                }
            })
            .await?;
        }
        let mut batches = Vec::with_capacity(wanted.len());
        for offset in wanted {
            match found.remove(&offset) {
                Some((queue, batch)) if self.topic_exists(queue.topic_id.get()) => {
                    batches.push((offset, queue, batch));
                }
                Some((queue, _)) => {
                    tracing::warn!(shard = %self.id, offset, "scheduled message for {queue} dropped: its topic was deleted");
                    report.skipped += 1;
                }
                None => {
                    tracing::error!(shard = %self.id, offset, "scheduled message unreadable at delivery: lost");
                    report.skipped += 1;
                }
            }
        }
        let appends =
            batches.iter().map(|(_, queue, batch)| self.append(*queue, batch.clone().into()));
        let results = futures::future::join_all(appends).await;
        let mut failed = None;
        for ((offset, queue, _), result) in batches.iter().zip(results) {
            match result {
                Ok(_) => delivered.push(*offset),
                Err(e)
                    if e.code == ErrorCode::SHARD_FAILED
                        || e.code == ErrorCode::SHUTTING_DOWN
                        || e.code == ErrorCode::DISK_FULL =>
                {
                    // Not delivered: routed again after the rewind (or after a restart).
                    failed.get_or_insert(e);
                }
                Err(e) => {
                    tracing::error!(shard = %self.id, offset, "scheduled message for {queue} refused at delivery: {}", e.message);
                    report.skipped += 1;
                }
            }
        }
        report.delivered = delivered.len() as u64;
        if !delivered.is_empty() {
            let body = encode_delivered(delivered);
            let mut builder = BatchBuilder::new(self.config.storage.max_batch_bytes);
            let timestamp_ms = self.clock.unix_ms();
            let record =
                Record { key: DELIVERED_KEY, tag: b"", properties: &[], body: &body, timestamp_ms };
            builder.push(&record).map_err(internal)?;
            self.log.append(SYS_SCHEDULE, builder.finish(-1, -1)).await?;
        }
        failed.map_or(Ok(()), Err)
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
