//! Transactional messages on the shard that owns the half's destination queue: the thin task
//! around the pure [`crate::transaction::Transactions`].
//!
//! - A PRODUCE of a transactional batch (attribute bit 3) is stored invisibly as a half record
//!   in this shard's `%SYS%half` queue ([`SYS_HALF`]) and answered, per the flush mode, with
//!   the transaction id (the record's offset there) in `base_offset` and `topic_id`
//!   `0xFFFF_FFFC`. The half enters the table as its record is copied into the log, so the
//!   table and the log agree on order. At most `transaction.max_undecided_halves` halves.
//! - END_TRANSACTION commit reads the half, appends its batch unchanged to its queue (it keeps
//!   the producer's CRC, id and sequence; the idempotence windows never see it), then appends
//!   the op record to `%SYS%txn-op` ([`SYS_TXN_OP`]): in the same log after the delivery, so
//!   an op record that survives a crash implies its delivery did. Rollback appends only the op
//!   record. The half leaves the table as its op record is copied: a repeated END gets
//!   TRANSACTION_DECIDED, never a second delivery.
//! - Check-back: a producer keeps a CHECK_TRANSACTIONS parked here (bounded by
//!   `transaction.max_check_waiters`); [`Shard::transaction_tick`] (every [`TXN_TICK`]) hands
//!   due halves to a parked producer of their group and rolls back the ones whose checks are
//!   exhausted, logging each.
//! - At start, [`Shard::start_transactions`] rebuilds the table from the two queues (see
//!   [`crate::transaction::replay`]: only what may be undecided is read), then looks in the log
//!   tail for batches delivered without their op record (a crash between the two appends) and
//!   records those commits instead of delivering again.

use super::super::shutdown::Stop;
use super::super::topics::{FIRST_SYSTEM_TOPIC_ID, SYSTEM_TOPIC_HALF, SYSTEM_TOPIC_TXN_OP};
use super::*;
use crate::format::batch::BatchView;
use crate::protocol::transaction::{
    EndAction, HalfInfo, TransactionCheck, TxnRequest, TxnResponse, PRODUCER_GROUP_PROPERTY,
};
use crate::storage::commit_log::Scanned;
use crate::transaction::record::{HALF_KEY, HALF_OVERHEAD_BYTES, OP_KEY};
use crate::transaction::replay::{decode_half, half_origin, replay_from, TxnReplay};
use crate::transaction::{
    CheckDue, DecidedBy, Decision, Destination, Fingerprint, HalfRecord, NewHalf, OpRecord,
    TxnError,
};

/// Each shard's half messages (`%SYS%half`).
pub const SYS_HALF: QueueKey = QueueKey::new(TopicId::new(SYSTEM_TOPIC_HALF), QueueId::new(0));
/// Each shard's transaction decisions (`%SYS%txn-op`).
pub const SYS_TXN_OP: QueueKey = QueueKey::new(TopicId::new(SYSTEM_TOPIC_TXN_OP), QueueId::new(0));

/// How often due checks are handed out and exhausted halves rolled back.
pub const TXN_TICK: Duration = Duration::from_millis(100);

/// Most checks in one CHECK_TRANSACTIONS answer.
pub const MAX_CHECKS_PER_ANSWER: usize = 64;

/// Most halves in one LIST_TRANSACTIONS answer.
pub const MAX_LISTED_HALVES: usize = 10_000;

/// Bytes a record adds around its body (framing, empty key and tag) in a half batch, at most.
const RECORD_OVERHEAD_BYTES: usize = 64;

/// What [`Shard::start_transactions`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionsRecovered {
    /// The first transaction id replayed.
    pub from: u64,
    pub undecided: usize,
    /// Halves found delivered without their op record, now recorded as committed.
    pub found_delivered: usize,
}

type CheckSender = oneshot::Sender<Vec<CheckDue>>;

/// Parked CHECK_TRANSACTIONS requests, by producer group; at most `max` in all.
pub(super) struct CheckWaiters {
    by_group: HashMap<String, std::collections::VecDeque<(CheckSender, usize)>>,
    count: usize,
    max: usize,
}

impl CheckWaiters {
    pub(super) fn new(max: usize) -> Self {
        CheckWaiters { by_group: HashMap::new(), count: 0, max }
    }

    fn add(&mut self, group: &str, tx: CheckSender, max_checks: usize) -> Result<(), CheckSender> {
        if self.count >= self.max {
            // Requests that timed out leave their sender behind: drop those first.
            for v in self.by_group.values_mut() {
                v.retain(|(t, _)| !t.is_canceled());
            }
            self.by_group.retain(|_, v| !v.is_empty());
            self.count = self.by_group.values().map(|v| v.len()).sum();
            if self.count >= self.max {
                return Err(tx);
            }
        }
        self.by_group.entry(group.to_owned()).or_default().push_back((tx, max_checks));
        self.count += 1;
        Ok(())
    }

    /// The longest-waiting live request of `group`.
    fn pop(&mut self, group: &str) -> Option<(CheckSender, usize)> {
        let waiting = self.by_group.get_mut(group)?;
        let mut found = None;
        while let Some((tx, max)) = waiting.pop_front() {
            self.count -= 1;
            if !tx.is_canceled() {
                found = Some((tx, max));
                break;
            }
        }
        if waiting.is_empty() {
            self.by_group.remove(group);
        }
        found
    }

    /// The broker is stopping: every parked request returns now (empty).
    pub(super) fn close_all(&mut self) {
        self.by_group.clear();
        self.count = 0;
    }
}

fn txn_error(e: TxnError) -> BrokerError {
    let code = match e {
        TxnError::TooMany(_) => ErrorCode::TRANSACTION_LIMIT,
        TxnError::Unknown(_) | TxnError::WrongQueue { .. } | TxnError::WrongGroup { .. } => {
            ErrorCode::UNKNOWN_TRANSACTION
        }
        TxnError::Deciding(_) | TxnError::Decided { .. } => ErrorCode::TRANSACTION_DECIDED,
    };
    BrokerError::new(code, e.to_string())
}

fn internal(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(ErrorCode::INTERNAL, what.to_string())
}

fn status(flush_timed_out: bool) -> SendStatus {
    if flush_timed_out {
        SendStatus::FlushDiskTimeout
    } else {
        SendStatus::SendOk
    }
}

impl<L: ShardLog> Shard<L> {
    /// A transaction request decoded on this shard: served here when this shard owns it (the
    /// END's queue, the CHECK's or LIST's shard), else forwarded to the shard that does.
    pub(super) async fn transaction_request(self: &Rc<Self>, request: TxnRequest) -> Reply {
        let target = self.transaction_target(&request)?;
        if target == self.id {
            return self.serve_transaction(request).await.map(Response::Transaction);
        }
        self.forward(target, Request::Transaction(request), "the owner shard").await
    }

    /// A transaction request forwarded by another shard.
    pub(super) async fn transaction_forwarded(self: &Rc<Self>, request: TxnRequest) -> Reply {
        let target = self.transaction_target(&request)?;
        if target != self.id {
            return Err(BrokerError::new(
                ErrorCode::NOT_OWNER,
                format!(
                    "shard {} does not serve this transaction request; shard {target} does",
                    self.id
                ),
            ));
        }
        self.serve_transaction(request).await.map(Response::Transaction)
    }

    fn transaction_target(&self, request: &TxnRequest) -> Result<ShardId, BrokerError> {
        let shard = match request {
            TxnRequest::End { topic, queue_id, .. } => {
                self.queue_entry(topic, *queue_id)?;
                return Ok(owner_shard(topic, *queue_id, self.shard_count));
            }
            TxnRequest::Check { shard, .. } | TxnRequest::List { shard, .. } => *shard,
        };
        if usize::from(shard) >= self.shard_count {
            return Err(BrokerError::new(
                ErrorCode::INVALID_ARGUMENT,
                format!(
                    "shard {shard} does not exist: this broker has {} shards",
                    self.shard_count
                ),
            ));
        }
        Ok(ShardId::new(shard.into()))
    }

    async fn serve_transaction(&self, request: TxnRequest) -> Result<TxnResponse, BrokerError> {
        match request {
            TxnRequest::End { group, topic, queue_id, transaction_id, action } => {
                let entry = self.queue_entry(&topic, queue_id)?;
                let key = QueueKey::new(TopicId::new(entry.id), QueueId::new(queue_id));
                self.end_transaction(key, &group, transaction_id, action).await
            }
            TxnRequest::Check { group, max_wait_ms, max_checks, .. } => {
                let max = (max_checks as usize).clamp(1, MAX_CHECKS_PER_ANSWER);
                let checks = self.park_check(&group, max_wait_ms, max).await?;
                Ok(TxnResponse::Check { checks })
            }
            TxnRequest::List { max, .. } => {
                let now = self.clock.unix_ms();
                let listed =
                    self.transactions.borrow().list(now, (max as usize).min(MAX_LISTED_HALVES));
                let halves = listed
                    .into_iter()
                    .map(|h| HalfInfo {
                        transaction_id: h.transaction_id,
                        group: h.group,
                        topic: self.topic_name(h.destination.topic_id).unwrap_or_default(),
                        queue_id: h.destination.queue_id,
                        age_ms: h.age_ms,
                        checks: h.checks,
                    })
                    .collect();
                Ok(TxnResponse::List { halves })
            }
        }
    }

    /// The name of topic `topic_id` in this shard's copy of the topic table.
    pub fn topic_name(&self, topic_id: u32) -> Option<String> {
        self.topics.borrow().iter().find(|(_, e)| e.id == topic_id).map(|(n, _)| n.to_owned())
    }

    /// Stores a transactional batch for `key` as a half (see the module docs).
    pub(super) async fn produce_half(
        &self,
        key: QueueKey,
        batch: SharedBytes,
        h: &BatchHeader,
    ) -> Reply {
        let max = self.config.storage.max_batch_bytes;
        let room = max.saturating_sub(
            HALF_OVERHEAD_BYTES + RECORD_OVERHEAD_BYTES + crate::format::batch::HEADER_LEN,
        );
        if batch.len() > room {
            return Err(BrokerError::new(
                ErrorCode::BATCH_TOO_LARGE,
                format!(
                    "a transactional batch of {} bytes exceeds {room} bytes (storage.max_batch_bytes \
                     less what the broker adds to hold it)",
                    batch.len()
                ),
            ));
        }
        let view = BatchView::parse(&batch, max)
            .map_err(|e| BrokerError::new(ErrorCode::INVALID_BATCH, e.to_string()))?;
        let group = view
            .records()
            .next()
            .and_then(Result::ok)
            .and_then(|r| r.property(PRODUCER_GROUP_PROPERTY))
            .and_then(|g| std::str::from_utf8(g).ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                BrokerError::new(
                    ErrorCode::INVALID_BATCH,
                    "a transactional batch names its producer group in its first record's \
                     property PGROUP (UTF-8); this one does not",
                )
            })?;
        crate::transaction::record::check_group(&group)
            .map_err(|e| BrokerError::new(ErrorCode::INVALID_BATCH, e.to_string()))?;
        let destination =
            Destination { topic_id: key.topic_id.get(), queue_id: key.queue_id.get() };
        let timestamp_ms = self.clock.unix_ms();
        let record = HalfRecord {
            group: group.clone(),
            destination,
            op_from: self.log.offsets(SYS_TXN_OP).next,
            batch: &batch,
        };
        let body = record.encode().map_err(internal)?;
        let mut builder = BatchBuilder::new(max);
        let wrapped =
            Record { key: HALF_KEY, tag: b"", properties: &[], body: &body, timestamp_ms };
        builder.push(&wrapped).map_err(internal)?;
        let half_batch = builder.finish(-1, -1);
        drop(body);
        self.transactions.borrow_mut().admit().map_err(txn_error)?;
        let fingerprint = Fingerprint::of(h);
        let inserted = std::cell::Cell::new(false);
        let appended = self
            .log
            .append_then(SYS_HALF, &half_batch, BatchLimit::Produced, |copied| {
                let transaction_id = copied.base_offset;
                let half = NewHalf {
                    transaction_id,
                    group,
                    destination,
                    stored_ms: timestamp_ms,
                    fingerprint,
                };
                self.transactions.borrow_mut().insert(half, timestamp_ms);
                inserted.set(true);
                self.pin_undecided();
            })
            .await;
        let ((), out) = match appended {
            Ok(a) => a,
            Err(e) => {
                // Not copied: the reservation goes back. (Copied but not durable: the half
                // stays, undecided; the log has stopped.)
                if !inserted.get() {
                    self.transactions.borrow_mut().cancel_admit();
                }
                return Err(e.into());
            }
        };
        {
            let mut s = self.stats.borrow_mut();
            s.produce_batches += 1;
            s.produce_records += u64::from(h.record_count);
            s.produce_bytes += batch.len() as u64;
        }
        Ok(Response::Produce {
            status: self.ack_status(&out).await,
            topic_id: SYSTEM_TOPIC_HALF,
            queue_id: key.queue_id.get(),
            base_offset: out.base_offset,
            record_count: h.record_count,
            store_timestamp_ms: out.store_timestamp_ms,
        })
    }

    async fn end_transaction(
        &self,
        key: QueueKey,
        group: &str,
        id: u64,
        action: EndAction,
    ) -> Result<TxnResponse, BrokerError> {
        let destination =
            Destination { topic_id: key.topic_id.get(), queue_id: key.queue_id.get() };
        self.transactions.borrow_mut().begin_decision(id, destination, group).map_err(txn_error)?;
        let decided = match action {
            EndAction::Commit => self.commit_half(key, id, DecidedBy::Producer).await,
            EndAction::Rollback => self
                .record_decision(id, Decision::Rollback, DecidedBy::Producer)
                .await
                .map(|flush_timed_out| TxnResponse::End {
                    status: status(flush_timed_out),
                    base_offset: 0,
                    record_count: 0,
                }),
        };
        if decided.is_err() {
            self.transactions.borrow_mut().abort_decision(id);
        }
        decided
    }

    /// Delivers half `id` (already deciding) to `key`, then records the commit after it.
    async fn commit_half(
        &self,
        key: QueueKey,
        id: u64,
        by: DecidedBy,
    ) -> Result<TxnResponse, BrokerError> {
        let batch = self.read_half(id).await?.1;
        // Accepted under the limit of its time: a lowered `max_batch_bytes` does not strand it.
        let delivered = self.append(key, SharedBytes::from(batch), BatchLimit::Moved).await?;
        let Response::Produce { status: s, base_offset, record_count, .. } = delivered else {
            return Err(internal("an append answered something else"));
        };
        let flush_timed_out = self.record_decision(id, Decision::Commit, by).await?;
        let status = if flush_timed_out { SendStatus::FlushDiskTimeout } else { s };
        Ok(TxnResponse::End { status, base_offset, record_count })
    }

    /// Appends the op record deciding `id`; the half leaves the table as it is copied.
    /// Returns whether the sync flush timed out. On error the caller aborts the decision.
    async fn record_decision(
        &self,
        id: u64,
        decision: Decision,
        by: DecidedBy,
    ) -> Result<bool, BrokerError> {
        // Every half below the queue's appended end is in the table or decided; the readable
        // end (a replication master's confirmed one) may lag behind the half decided here.
        let half_next = self.log.offsets(SYS_HALF).next.max(id + 1);
        let op = OpRecord {
            decision,
            by,
            transaction_id: id,
            low_watermark: self.transactions.borrow().low_watermark_after(id, half_next),
        };
        let body = op.encode();
        let timestamp_ms = self.clock.unix_ms();
        let mut builder = BatchBuilder::new(self.config.storage.max_batch_bytes);
        builder
            .push(&Record { key: OP_KEY, tag: b"", properties: &[], body: &body, timestamp_ms })
            .map_err(internal)?;
        let batch = builder.finish(-1, -1);
        let len = batch.len() as u64;
        let ((), out) = self
            .log
            .append_then(SYS_TXN_OP, &batch, BatchLimit::Produced, |copied| {
                self.transactions.borrow_mut().finish(id, decision);
                self.decided_to.set(copied.position + len);
                self.pin_undecided();
            })
            .await?;
        Ok(out.flush_timed_out)
    }

    /// On a replica: the follower wrote a batch of the half queue (a half) or of the op queue
    /// (a decision, ending at log position `end`), and pins the
    /// half queue as the master does: from a half written while nothing was pinned, and from
    /// each decision's low watermark once it is durable. A promotion replays the halves from
    /// the last decision's watermark, which retention then kept.
    pub(super) fn replicated_transaction_batch(&self, queue: QueueKey, batch: &[u8], end: u64) {
        let Ok(view) = crate::format::BatchView::parse(batch, batch.len()) else { return };
        if queue == SYS_HALF {
            self.log.pin_retention_if_unpinned(SYS_HALF, view.header.stamp.base_offset);
            return;
        }
        let Some(Ok(record)) = view.records().next() else { return };
        match OpRecord::decode(record.body) {
            Ok(op) => self.log.pin_retention_once_durable(SYS_HALF, Some(op.low_watermark), end),
            Err(e) => tracing::warn!(shard = %self.id, "replicated op record: {e}"),
        }
    }

    /// Keeps retention from deleting the oldest undecided half and what follows it. A half
    /// decided by an op record not yet durable still counts (a crash would leave it
    /// undecided): the pin moves past it once the log is durable past the last decision.
    fn pin_undecided(&self) {
        let t = self.transactions.borrow();
        let oldest = (!t.is_empty()).then(|| t.low_watermark(u64::MAX));
        self.log.pin_retention_once_durable(SYS_HALF, oldest, self.decided_to.get());
    }

    /// The half record at `id`: (its entry, the producer's batch).
    async fn read_half(&self, id: u64) -> Result<(NewHalf, Vec<u8>), BrokerError> {
        let bufs = self.log.read(SYS_HALF, id, 1).await?;
        let buf = bufs.first().ok_or_else(|| internal(format!("half {id} is not in the log")))?;
        let view = BatchView::parse(buf, buf.len()).map_err(internal)?;
        let base = view.header.stamp.base_offset;
        let record = view
            .records()
            .nth(id.saturating_sub(base) as usize)
            .ok_or_else(|| internal(format!("half {id} is not in the batch read for it")))?
            .map_err(internal)?;
        let new = decode_half(id, view.header.stamp.store_timestamp_ms, record.body)
            .ok_or_else(|| internal(format!("half record {id} does not decode")))?;
        let half = HalfRecord::decode(record.body).map_err(internal)?;
        Ok((new, half.batch.to_vec()))
    }

    /// A parked CHECK_TRANSACTIONS: due halves of `group` now, or when the tick finds some,
    /// or none after `max_wait_ms`.
    async fn park_check(
        &self,
        group: &str,
        max_wait_ms: u32,
        max: usize,
    ) -> Result<Vec<TransactionCheck>, BrokerError> {
        let now_ms = self.clock.unix_ms();
        let due = self.take_checks(group, now_ms, max);
        if !due.is_empty() {
            return Ok(self.check_answers(due).await);
        }
        if self.stopping.get() {
            return Err(BrokerError::new(ErrorCode::SHUTTING_DOWN, "the broker is stopping"));
        }
        let (tx, rx) = oneshot::channel();
        if self.check_waiters.borrow_mut().add(group, tx, max).is_err() {
            return Err(BrokerError::new(
                ErrorCode::TRANSACTION_LIMIT,
                format!(
                    "shard {} holds its limit of {} parked check requests \
                     (transaction.max_check_waiters)",
                    self.id, self.config.transaction.max_check_waiters
                ),
            ));
        }
        let wait = max_wait_ms.min(self.config.broker.max_long_poll_wait_ms);
        let deadline = self.clock.now() + Duration::from_millis(wait.into());
        match runtime::timeout_at(&*self.clock, deadline, rx).await {
            Some(Ok(due)) => Ok(self.check_answers(due).await),
            _ => Ok(Vec::new()),
        }
    }

    /// Takes up to `max` due checks of `group`, fewer if their batches might not fit in one
    /// answer (`broker.max_fetch_bytes`).
    fn take_checks(&self, group: &str, now_ms: i64, max: usize) -> Vec<CheckDue> {
        let fit = (self.config.broker.max_fetch_bytes / self.config.storage.max_batch_bytes.max(1))
            .max(1);
        self.transactions.borrow_mut().take_checks(group, now_ms, max.min(fit))
    }

    /// The checks with their batches (a half that cannot be read is left out and logged: it
    /// stays on its schedule and is rolled back if never decided).
    async fn check_answers(&self, due: Vec<CheckDue>) -> Vec<TransactionCheck> {
        let mut out = Vec::with_capacity(due.len());
        for c in due {
            match self.read_half(c.transaction_id).await {
                Ok((_, batch)) => out.push(TransactionCheck {
                    transaction_id: c.transaction_id,
                    topic: self.topic_name(c.destination.topic_id).unwrap_or_default(),
                    queue_id: c.destination.queue_id,
                    checks: c.checks,
                    batch,
                }),
                Err(e) => tracing::warn!(
                    shard = %self.id,
                    transaction = c.transaction_id,
                    "a half due for a check cannot be read: {}",
                    e.message
                ),
            }
        }
        out
    }

    /// Hands due checks to parked producers and rolls back halves whose checks are exhausted.
    /// Called every [`TXN_TICK`].
    pub async fn transaction_tick(&self) {
        let now_ms = self.clock.unix_ms();
        let groups = self.transactions.borrow().due_groups(now_ms);
        for group in groups {
            loop {
                let Some((tx, max)) = self.check_waiters.borrow_mut().pop(&group) else { break };
                let due = self.take_checks(&group, now_ms, max);
                if due.is_empty() {
                    let _ = self.check_waiters.borrow_mut().add(&group, tx, max);
                    break;
                }
                // A producer that left meanwhile: those checks went unanswered.
                let _ = tx.send(due);
            }
        }
        let rollbacks = self.transactions.borrow_mut().tick(now_ms);
        for half in rollbacks {
            let id = half.transaction_id;
            let checks = self.config.transaction.check_max;
            tracing::warn!(
                shard = %self.id,
                transaction = id,
                group = %half.group,
                topic_id = half.destination.topic_id,
                queue_id = half.destination.queue_id,
                age_ms = now_ms.saturating_sub(half.stored_ms),
                "transaction rolled back: {checks} check-backs were not answered with commit or \
                 rollback (transaction.check_max)"
            );
            if let Err(e) =
                self.record_decision(id, Decision::Rollback, DecidedBy::CheckExhausted).await
            {
                tracing::error!(shard = %self.id, transaction = id, "recording a roll back failed: {}", e.message);
                self.transactions.borrow_mut().abort_decision(id);
            }
        }
    }

    /// Runs [`Self::transaction_tick`] every [`TXN_TICK`] until `stop`.
    pub async fn transaction_loop(self: Rc<Self>, stop: Stop) {
        loop {
            let tick = Box::pin(self.clock.sleep_until(self.clock.now() + TXN_TICK));
            if let Either::Right(_) = select(tick, stop.clone()).await {
                return;
            }
            self.transaction_tick().await;
        }
    }

    /// Before serving: rebuilds the undecided halves and records commits whose delivery
    /// survived a crash without their op record (see the module docs).
    pub async fn start_transactions(&self) -> Result<TransactionsRecovered, BrokerError> {
        let t = self.clock.now();
        let now_ms = self.clock.unix_ms();
        let halves = self.log.offsets(SYS_HALF);
        let ops = self.log.offsets(SYS_TXN_OP);
        let mut last_op = None;
        if ops.next > ops.min {
            self.read_system_records(SYS_TXN_OP, ops.next - 1, ops.next, |_, _, _, body| {
                last_op = Some(body.to_vec())
            })
            .await?;
        }
        let from = replay_from(last_op.as_deref(), halves.min, halves.next);
        // Before anything new is stored: when the broker was last seen running.
        let alive_until_ms = self.log.last_store_timestamp_ms();
        let mut replay =
            TxnReplay::new(self.config.transaction.limits(), from, now_ms, alive_until_ms);
        if from < halves.next {
            let mut op_from = ops.min;
            self.read_system_records(SYS_HALF, from, from + 1, |_, _, _, body| {
                if let Some((_, o)) = half_origin(body) {
                    op_from = o.max(ops.min);
                }
            })
            .await?;
            self.read_system_records(SYS_TXN_OP, op_from, ops.next, |_, _, _, body| {
                replay.op(body)
            })
            .await?;
            self.read_system_records(SYS_HALF, from, halves.next, |id, stored_ms, _, body| {
                replay.half(id, stored_ms, body)
            })
            .await?;
        }
        let (records, skipped) = (replay.ops + replay.halves, replay.skipped);
        *self.transactions.borrow_mut() = replay.finish();
        if skipped > 0 {
            tracing::warn!(shard = %self.id, skipped, "transaction records that could not be used");
        }
        self.pin_undecided();
        let found_delivered = self.find_delivered().await?;
        let undecided = self.transactions.borrow().len();
        tracing::info!(
            shard = %self.id,
            from,
            records,
            undecided,
            found_delivered,
            elapsed_ms = self.clock.now().saturating_duration_since(t).as_millis() as u64,
            "undecided transactions rebuilt"
        );
        Ok(TransactionsRecovered { from, undecided, found_delivered })
    }

    /// Undecided halves whose batch is in the log tail (the last
    /// `idempotence_recovery_scan_bytes`, where a crash between a delivery and its op record
    /// leaves it): their commit is recorded, so it is never delivered twice.
    ///
    /// Not on a replica (unless it is being promoted): its log holds the master's records at
    /// the master's positions, and the master's op record for such a commit follows.
    async fn find_delivered(&self) -> Result<usize, BrokerError> {
        if self.transactions.borrow().is_empty() || self.is_following_replica() {
            return Ok(0);
        }
        let mut delivered = Vec::new();
        self.log
            .scan_tail(self.config.broker.idempotence_recovery_scan_bytes, i64::MIN, |item| {
                if let Scanned::Batch { header: h, .. } = item {
                    if h.is_transactional() && h.stamp.topic_id < FIRST_SYSTEM_TOPIC_ID {
                        let d =
                            Destination { topic_id: h.stamp.topic_id, queue_id: h.stamp.queue_id };
                        delivered.push((d, Fingerprint::of(h)));
                    }
                }
            })
            .await?;
        let mut found = 0;
        for (destination, fingerprint) in delivered {
            let half = self.transactions.borrow().find_delivered(destination, fingerprint);
            let Some(half) = half else { continue };
            let id = half.transaction_id;
            let begun = self.transactions.borrow_mut().begin_decision(id, destination, &half.group);
            if begun.is_err() {
                continue;
            }
            tracing::warn!(
                shard = %self.id,
                transaction = id,
                "a committed transaction was delivered but its op record was lost in a crash; \
                 recording the commit (not delivering again)"
            );
            if let Err(e) =
                self.record_decision(id, Decision::Commit, DecidedBy::FoundDelivered).await
            {
                self.transactions.borrow_mut().abort_decision(id);
                return Err(e);
            }
            found += 1;
        }
        Ok(found)
    }
}
