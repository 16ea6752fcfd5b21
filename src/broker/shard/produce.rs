//! Produce on the owning shard: length and batch checks, idempotent windows (answering a retry
//! with its original offsets), the append, and the wake-up of parked fetches. Also rebuilds the
//! idempotence windows from the log before the shard serves.

use super::*;
use crate::protocol::produce_multi::ProduceEntry;
use crate::protocol::ErrorResponse;
use crate::storage::commit_log::Scanned;
use futures::future::join_all;

/// Entries of a PRODUCE_MULTI joined together ([`futures::future::join_all`] polls up to 30
/// futures in place).
const JOIN_GROUP: usize = 30;

impl<L: ShardLog> Shard<L> {
    /// Before serving: hands out producer ids of start `boot` and rebuilds the sequence
    /// windows from the batches the log stored in the last `idempotence_recovery_window_ms`,
    /// reading the last `idempotence_recovery_scan_bytes` of the log in log order (one
    /// sequential read, whatever the number of queues).
    ///
    /// A (producer, queue) whose last batches lie in what was read gets its window back, even
    /// if older batches of it lie before: a retry of one of those is refused as too old
    /// (`DUPLICATE_SEQUENCE`), never stored again. One whose last batch lies before gets no
    /// window: the producer renumbers, and a retry of a batch stored just before the restart
    /// may then be stored again. A damaged batch drops its queue's windows (its sequence is
    /// unknown); damage that hides which queue it was ends the scan there and drops every
    /// window (any pair may have batches after it, and a window missing a pair's last batches
    /// would store their retries again).
    pub async fn start_idempotence(&self, boot: u64) -> Result<(), BrokerError> {
        self.promotion.boot.set(boot);
        *self.producer_ids.borrow_mut() =
            ProducerIdAllocator::new(boot, self.id.get(), self.shard_count);
        let b = &self.config.broker;
        let since_ms = self.clock.unix_ms().saturating_sub(b.idempotence_recovery_window_ms as i64);
        let t = self.clock.now();
        let now_ms = self.now_ms();
        let mut batches = 0u64;
        let scan = self
            .log
            .scan_tail(b.idempotence_recovery_scan_bytes, since_ms, |item| match item {
                Scanned::Batch { header: h, .. } => {
                    // A transaction's batch (its half in `%SYS%half`, its delivered copy in its
                    // queue, committed in any order) never went through the windows.
                    let idempotent =
                        h.producer_id >= 0 && h.base_sequence >= 0 && !h.is_transactional();
                    if idempotent && h.stamp.store_timestamp_ms >= since_ms {
                        let queue = QueueKey::new(
                            TopicId::new(h.stamp.topic_id),
                            QueueId::new(h.stamp.queue_id),
                        );
                        let at = Stored {
                            base_offset: h.stamp.base_offset,
                            store_timestamp_ms: h.stamp.store_timestamp_ms,
                        };
                        self.sequences.borrow_mut().recover(
                            h.producer_id,
                            queue,
                            h.base_sequence,
                            h.record_count,
                            at,
                            now_ms,
                        );
                        batches += 1;
                    }
                }
                Scanned::Damaged { position, queue, reason } => {
                    // Its sequence is unknown, so the queue's windows cannot be trusted; its
                    // producers renumber. The broker still starts and serves everything.
                    tracing::warn!(
                        shard = %self.id,
                        "damaged batch at log position {position} while rebuilding idempotence \
                         windows: {reason}; {}",
                        match queue {
                            Some(q) => format!("the windows of {q} are dropped"),
                            None => "the log after it cannot be read, so no window is rebuilt".into(),
                        }
                    );
                    match queue {
                        Some(q) => self.sequences.borrow_mut().forget_queue(q),
                        None => self.sequences.borrow_mut().forget_all(),
                    }
                }
            })
            .await?;
        tracing::info!(
            shard = %self.id,
            batches,
            windows = self.sequences.borrow().len(),
            from = scan.start.get(),
            to = scan.end.get(),
            bytes_read = scan.bytes_read,
            elapsed_ms = self.clock.now().saturating_duration_since(t).as_millis() as u64,
            "idempotence windows rebuilt from the log tail"
        );
        Ok(())
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now().saturating_duration_since(self.started).as_millis() as u64
    }

    /// PRODUCE_MULTI: each entry as its own PRODUCE would be (resolved, forwarded to its owner
    /// shard, stored, refused), all at once. The appends start in the entries' order, so two
    /// batches of one queue keep it, as two pipelined PRODUCEs do.
    pub(super) async fn produce_multi(self: &Rc<Self>, entries: Vec<ProduceEntry>) -> Response {
        // Joined in groups: `join_all` of up to 30 futures keeps them in one allocation and
        // polls them all on a wake-up, where a longer one allocates a task per future (each
        // about 3 KiB: the broker's malloc was 12% of its core with one task per entry).
        let mut entries = entries.into_iter();
        let mut groups = Vec::with_capacity(entries.len().div_ceil(JOIN_GROUP));
        while entries.len() > 0 {
            let group: Vec<_> = entries.by_ref().take(JOIN_GROUP).collect();
            groups.push(join_all(group.into_iter().map(|e| self.produce_entry(e))));
        }
        let results = join_all(groups)
            .await
            .into_iter()
            .flatten()
            .map(|r| {
                r.map_err(|e| {
                    self.stats.borrow_mut().errors += 1;
                    self.probe.borrow_mut().record_error(e.code);
                    ErrorResponse { code: e.code as u16, message: e.message, detail: e.detail }
                })
            })
            .collect();
        Response::ProduceMulti { results }
    }

    /// One entry, exactly as the PRODUCE of its batch.
    async fn produce_entry(&self, e: ProduceEntry) -> Reply {
        let ProduceEntry { topic, queue_id, batch } = e;
        let request = Request::Produce { topic, queue_id, flags: 0, batch };
        self.queue_request(request).await.map(Answer::into_response)
    }

    /// Stores one batch. `batch` is usually a range of the connection's read buffer (or, when
    /// forwarded, of another shard's): the log copies it straight into its DMA chunk and
    /// releases it before waiting for durability.
    pub(super) async fn produce(&self, key: QueueKey, batch: SharedBytes) -> Reply {
        let max = self.config.storage.max_batch_bytes;
        if batch.len() > max {
            return Err(BrokerError::new(
                ErrorCode::BATCH_TOO_LARGE,
                format!("batch of {} bytes exceeds max_batch_bytes = {max}", batch.len()),
            ));
        }
        match peek_length(&batch) {
            Some(len) if len as usize == batch.len() => {}
            Some(len) => {
                return Err(BrokerError::new(
                    ErrorCode::INVALID_BATCH,
                    format!(
                        "the produce payload holds {} bytes but its batch header says {len}; \
                         send exactly one batch per produce",
                        batch.len()
                    ),
                ))
            }
            None => {
                return Err(BrokerError::new(
                    ErrorCode::INVALID_BATCH,
                    format!("the produce payload holds only {} bytes", batch.len()),
                ))
            }
        }
        if let Ok(h) = read_header(&batch) {
            if h.is_transactional() && !h.is_control() {
                // A half message: held invisibly until its transaction ends (`transaction`).
                return self.produce_half(key, batch, &h).await;
            }
            if h.producer_id >= 0 && !h.is_control() {
                return self.produce_idempotent(key, batch, &h).await;
            }
        }
        self.append(key, batch, BatchLimit::Produced).await
    }

    /// Produce of an idempotent batch: appended when it is next in its (producer, queue)
    /// window, answered with the original offsets when it is a retry of one the window holds.
    pub(super) async fn produce_idempotent(
        &self,
        key: QueueKey,
        batch: SharedBytes,
        h: &BatchHeader,
    ) -> Reply {
        let (pid, seq, count) = (h.producer_id, h.base_sequence, h.record_count);
        if seq < 0 {
            return Err(BrokerError::new(
                ErrorCode::INVALID_BATCH,
                format!("producer id {pid} with base_sequence {seq}: sequences start at 0"),
            ));
        }
        let window = SequenceWindows::key(pid, key);
        loop {
            let verdict = self.sequences.borrow_mut().check(pid, key, seq, count, self.now_ms());
            let refuse = |code, message: String| Err(BrokerError::new(code, message));
            match verdict {
                Verdict::Append => {
                    let reply = self.append(key, batch, BatchLimit::Produced).await;
                    match &reply {
                        Ok(Response::Produce { base_offset, store_timestamp_ms, .. }) => {
                            let at = Stored {
                                base_offset: *base_offset,
                                store_timestamp_ms: *store_timestamp_ms,
                            };
                            self.sequences.borrow_mut().stored(pid, key, seq, at);
                        }
                        _ => self.sequences.borrow_mut().abort(pid, key, seq),
                    }
                    for w in self
                        .sequence_waiters
                        .borrow_mut()
                        .remove(&(window, seq))
                        .into_iter()
                        .flatten()
                    {
                        let _ = w.send(());
                    }
                    return reply;
                }
                Verdict::Duplicate(at) => {
                    // Answered SEND_OK only when the original is durable (and confirmed).
                    return Ok(Response::Produce {
                        status: self.resend_status().await?,
                        topic_id: key.topic_id.get(),
                        queue_id: key.queue_id.get(),
                        base_offset: at.base_offset,
                        record_count: count,
                        store_timestamp_ms: at.store_timestamp_ms,
                    });
                }
                Verdict::InProgress => {
                    // Bounded by the requests in flight; woken when the original's append ends.
                    let (tx, rx) = oneshot::channel();
                    self.sequence_waiters.borrow_mut().entry((window, seq)).or_default().push(tx);
                    let _ = rx.await;
                }
                Verdict::TooOld { next_sequence } => {
                    return refuse(
                        ErrorCode::DUPLICATE_SEQUENCE,
                        format!(
                            "producer {pid} sequence {seq} on queue {} is behind the window \
                             (next expected {next_sequence}): it was stored too long ago to \
                             answer with its offsets",
                            key.queue_id
                        ),
                    )
                }
                Verdict::OutOfOrder { expected } => {
                    return refuse(
                        ErrorCode::OUT_OF_ORDER_SEQUENCE,
                        format!(
                            "producer {pid} sent sequence {seq} on queue {} but the next expected \
                             is {expected} (a gap, or no state for the producer here: start again \
                             at 0 under a new epoch)",
                            key.queue_id
                        ),
                    )
                }
                Verdict::Fenced { current_epoch } => {
                    return refuse(
                        ErrorCode::OUT_OF_ORDER_SEQUENCE,
                        format!(
                            "producer {pid} is fenced on queue {}: epoch {} is older than the \
                             current epoch {current_epoch}",
                            key.queue_id,
                            crate::protocol::producer_id::epoch(pid)
                        ),
                    )
                }
                Verdict::Mismatch { record_count } => {
                    return refuse(
                        ErrorCode::DUPLICATE_SEQUENCE,
                        format!(
                            "producer {pid} reused sequence {seq} on queue {} for a batch of \
                             {count} records; the stored one has {record_count}",
                            key.queue_id
                        ),
                    )
                }
            }
        }
    }

    /// Appends a validated-length batch kept to `limit` (a producer's, or a message accepted
    /// earlier and moved now: [`BatchLimit::Moved`]), wakes long-polls and counts it.
    pub(super) async fn append(
        &self,
        key: QueueKey,
        batch: SharedBytes,
        limit: BatchLimit,
    ) -> Reply {
        let batch_len = batch.len();
        let received = self.clock.now();
        // The log's validation of the records tells whether any has a key or properties; the
        // key index's reader would otherwise read every record back to find none.
        let ((), out) = self
            .log
            .append_then(key, batch, limit, |copied| {
                if copied.bare && self.config.key_index.enabled {
                    self.keys_reader.appended_bare(copied.position);
                }
            })
            .await?;
        let took = self.clock.now().saturating_duration_since(received);
        self.probe.borrow_mut().record_append_ack(took);
        let visible = self.log.visible_end();
        if out.end > visible {
            // Acknowledged with FLUSH_DISK_TIMEOUT: readable only when the flush completes.
            let mut late = self.late_visible.borrow_mut();
            late.retain(|_, end| *end > visible);
            let end = late.entry(key).or_insert(out.end);
            *end = (*end).max(out.end);
        }
        // Wake fetches parked at the old end: the data is readable now, or they learn above
        // when it will be.
        self.long_poll.borrow_mut().notify(key);
        self.keys_reader.written(self.log.written_end());
        {
            let mut s = self.stats.borrow_mut();
            s.produce_batches += 1;
            s.produce_records += u64::from(out.record_count);
            s.produce_bytes += batch_len as u64;
        }
        let status = self.ack_status(&out).await;
        Ok(Response::Produce {
            status,
            topic_id: key.topic_id.get(),
            queue_id: key.queue_id.get(),
            base_offset: out.base_offset,
            record_count: out.record_count,
            store_timestamp_ms: out.store_timestamp_ms,
        })
    }
}
