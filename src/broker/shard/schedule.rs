//! Scheduled messages on the shard that owns their destination queue: the thin I/O task
//! around the pure [`crate::schedule`] parts (DESIGN.md section 6).
//!
//! Everything lives in this shard's log, under the system topic `%SYS%schedule` (record
//! formats in [`crate::schedule::entry`]), so it gets group commit, recovery and the log's
//! prefix property for free:
//! - **produce** (`Shard::produce_scheduled`): the producer's batch is checked (CRC, records)
//!   and wrapped, unchanged, with its destination and delivery time in one entry record of the
//!   schedule queue ([`SYS_SCHEDULE`]); acknowledged per the flush mode like any produce.
//!   Consumers cannot see it: the system topic is not in the topic table.
//! - **index** (a step of [`Shard::schedule_step`]): new entries are read back from the
//!   schedule queue in order and inserted into the timer wheel; their timer records are
//!   appended to the timer log ([`SYS_TIMER_LOG`], a record's queue offset is its index).
//!   Memory holds only the wheel's slot heads, whatever the number of pending messages.
//! - **deliver** (the same step, `delivery.rs`): due entries' batches are appended to their queues unchanged
//!   (key, tag, properties, producer CRC; the store timestamp is the time of delivery, at or
//!   just after the delivery time), all of a step at once so one flush covers them, then a
//!   delivered record lists their schedule offsets. At most `max_due_per_step` messages and
//!   `max_timer_records_per_step` timer records per step.
//! - **checkpoint**: the wheel's state and how far the schedule queue is indexed
//!   ([`SYS_WHEEL`]), appended after everything it covers, at most every
//!   `checkpoint_interval_ms`. After a restart or SIGKILL, [`Shard::start_schedule`] restores
//!   the last checkpoint; the step re-indexes the entries after it, and entries listed in
//!   delivered records after it are not delivered again. A crash between a delivery and its
//!   delivered record delivers those messages again: at-least-once, never lost.
//!
//! Hazards: delivered batches must not touch the idempotence windows, so scheduled batches
//! must be non-idempotent (`producer_id = -1`; an idempotent one is refused), and the window
//! rebuild at start skips them as it skips every non-idempotent batch.
//!
//! Resends of a scheduled send (same unique id) are answered, not held twice:
//! `schedule_dedup.rs`.
//!
//! Retention: held messages outlive it. The wheel counts its pending entries per range of
//! schedule offsets ([`PendingOffsets`], in the checkpoint); after each checkpoint the
//! schedule queue is pinned from the oldest pending entry (or the first entry not yet
//! indexed), so no segment from there on is deleted, by age or for disk space, until those
//! messages are delivered. Their timer records and the checkpoint come later in the log and
//! are kept with them. A restart pins again before retention runs.
//!
//! Rolling: so that a message held for weeks does not keep weeks of the log, an entry's timer
//! comes due at most `schedule.roll_after_ms` after it is indexed; a timer due before its
//! message is (`delivery.rs`) writes the entry again at the queue's end in a [`ROLLED_KEY`]
//! record naming the offset it replaces, which the next step indexes. That record also
//! tells a restart the old entry is done, as a delivered record does.

use std::collections::HashSet;

use super::*;
use crate::format::batch::{BatchView, FormatError};
use crate::protocol::message::Delivery;
use crate::schedule::dedup::DedupWindow;
use crate::schedule::entry::{
    decode_checkpoint_record, decode_delivered, decode_entry_record, done_capacity,
    encode_checkpoint_record, encode_delivered, encode_rolled, DoneSet, Entry, CHECKPOINT_DONE_KEY,
    DELIVERED_KEY, ENTRY_KEY, ROLLED_KEY,
};
use crate::schedule::levels::Schedule;
use crate::schedule::pending::{PendingOffsets, DEFAULT_MAX_RANGES};
use crate::schedule::wheel::{Checkpoint, Routed, TimerRecord, Wheel};
use crate::storage::StorageError;

use super::super::topics::SYSTEM_TOPIC_SCHEDULE;
use super::schedule_dedup::{dedup_key, Held, Seen};

mod delivery;

/// The schedule queue: entries and delivered records.
pub const SYS_SCHEDULE: QueueKey =
    QueueKey::new(TopicId::new(SYSTEM_TOPIC_SCHEDULE), QueueId::new(0));
/// The timer log of the wheel.
pub const SYS_TIMER_LOG: QueueKey =
    QueueKey::new(TopicId::new(SYSTEM_TOPIC_SCHEDULE), QueueId::new(1));
/// Wheel checkpoints.
pub const SYS_WHEEL: QueueKey = QueueKey::new(TopicId::new(SYSTEM_TOPIC_SCHEDULE), QueueId::new(2));

/// Bytes an entry adds around the producer's batch (outer header, record framing, head).
const ENTRY_OVERHEAD_BYTES: usize = 256;
/// Timer records per appended batch.
const TIMER_RECORDS_PER_BATCH: usize = 1024;
/// Most delivered-but-listed-after-the-checkpoint offsets kept after a restart.
const MAX_ALREADY_DELIVERED: usize = 1 << 20;
/// Checkpoint records tried, newest first, before starting from an empty wheel.
const CHECKPOINT_TRIES: u64 = 16;

/// The wheel and its progress through the schedule queue.
pub(super) struct ScheduleState {
    rules: Schedule,
    wheel: Wheel,
    /// Schedule-queue offsets below this are in the wheel.
    indexed_through: u64,
    /// Where the wheel's pending entries are (for the retention pin).
    pending: PendingOffsets,
    /// Recent scheduled sends by unique id: a resend is answered, not held twice.
    pub(super) recent: DedupWindow<Seen>,
    /// After a restart: entries already delivered after the checkpoint; skipped once.
    already_delivered: HashSet<u64>,
    /// Something changed since the last checkpoint.
    dirty: bool,
    /// Since start (metrics): messages delivered, and held ones written again.
    pub(super) delivered_total: u64,
    pub(super) rolled_total: u64,
    last_checkpoint: Instant,
}

impl ScheduleState {
    pub(super) fn new(config: &Config, now: Instant, now_ms: i64) -> Self {
        let rules = config.schedule.schedule().expect("the configuration was validated");
        let tick = config.schedule.tick_ms.max(1);
        ScheduleState {
            rules,
            wheel: Wheel::new(tick, now_ms).expect("tick_ms is positive"),
            indexed_through: 0,
            pending: PendingOffsets::new(DEFAULT_MAX_RANGES),
            recent: DedupWindow::new(
                config.schedule.dedup_capacity,
                config.schedule.dedup_window_ms,
            ),
            already_delivered: HashSet::new(),
            dirty: false,
            delivered_total: 0,
            rolled_total: 0,
            last_checkpoint: now,
        }
    }
}

/// What [`Shard::start_schedule`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleRecovered {
    /// A checkpoint was restored (else the wheel started empty and re-indexes everything).
    pub from_checkpoint: bool,
    pub indexed_through: u64,
    pub pending: u64,
    pub already_delivered: usize,
    /// Unique ids of recent scheduled sends read back into the dedup window.
    pub remembered: usize,
}

/// What one [`Shard::schedule_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepReport {
    pub indexed: u64,
    pub delivered: u64,
    /// Held messages written again at the log's end (`schedule.roll_after_ms`).
    pub rolled: u64,
    /// Due entries skipped: already delivered before a restart, or unreadable.
    pub skipped: u64,
    /// A limit stopped the step with work left: step again without waiting.
    pub more: bool,
}

/// Where the schedule queue is pinned for a checkpoint with these values: what a restart
/// from it reads, its oldest pending entry (their timer records and the checkpoint come after
/// them in the log) or its first entry not yet indexed. That offset may not be stored yet (no
/// entry since): it holds nothing until one is, and from then on keeps that entry, which no
/// checkpoint covers until the next one moves the pin.
fn schedule_pin(indexed_through: u64, pending: &PendingOffsets) -> u64 {
    pending.oldest().map_or(indexed_through, |o| o.min(indexed_through))
}

fn internal(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(ErrorCode::INTERNAL, what.to_string())
}

/// Timer-log records read back, by index.
#[derive(Default)]
struct TimerCache {
    base: u64,
    records: Vec<TimerRecord>,
}

impl TimerCache {
    fn get(&self, index: u64) -> Option<TimerRecord> {
        let i = index.checked_sub(self.base)?;
        self.records.get(usize::try_from(i).ok()?).copied()
    }
}

impl<L: ShardLog> Shard<L> {
    /// Holds a batch for `key` until `delivery`.
    pub(super) async fn produce_scheduled(
        &self,
        key: QueueKey,
        delivery: Delivery,
        batch: SharedBytes,
    ) -> Reply {
        let max = self.config.storage.max_batch_bytes.saturating_sub(ENTRY_OVERHEAD_BYTES);
        if batch.len() > max {
            return Err(BrokerError::new(
                ErrorCode::BATCH_TOO_LARGE,
                format!(
                    "a scheduled batch of {} bytes exceeds max_batch_bytes less {} bytes the \
                     broker wraps it in ({max})",
                    batch.len(),
                    ENTRY_OVERHEAD_BYTES
                ),
            ));
        }
        let view =
            BatchView::parse(&batch, max).map_err(|e| BrokerError::from(StorageError::from(e)))?;
        if view.header.length as usize != batch.len() {
            return Err(BrokerError::new(
                ErrorCode::INVALID_BATCH,
                format!(
                    "the payload holds {} bytes but its batch header says {}; send exactly one \
                     batch",
                    batch.len(),
                    view.header.length
                ),
            ));
        }
        view.validate_records().map_err(|e| BrokerError::from(StorageError::from(e)))?;
        let h = view.header;
        if h.is_control() || h.is_transactional() || h.producer_id >= 0 {
            return Err(BrokerError::new(
                ErrorCode::INVALID_BATCH,
                "a scheduled batch must be a plain, non-idempotent batch (no control or \
                 transactional attribute, producer_id = -1): it reaches its queue later, \
                 outside the producer's sequence",
            ));
        }
        let id = dedup_key(key, &batch);
        let _storing = match &id {
            Some(id) => match self.claim_unique_id(id).await {
                Ok(claim) => Some(claim),
                Err(held) => return Ok(held.reply(self.resend_status().await?)),
            },
            None => None,
        };
        let now_ms = self.clock.unix_ms();
        let deliver_at_ms = {
            let st = self.schedule.borrow();
            let at = st
                .rules
                .deliver_at_ms(delivery, now_ms)
                .map_err(|e| BrokerError::new(ErrorCode::INVALID_DELIVERY_TIME, e.to_string()))?;
            let held = self.held_in(&st);
            if held >= self.config.schedule.max_pending_per_shard {
                return Err(BrokerError::new(
                    ErrorCode::SCHEDULE_FULL,
                    format!(
                        "shard {} holds {held} scheduled messages \
                         (schedule.max_pending_per_shard)",
                        self.id
                    ),
                ));
            }
            at
        };
        let entry = Entry {
            topic_id: key.topic_id.get(),
            queue_id: key.queue_id.get(),
            deliver_at_ms,
            batch: &batch,
        };
        let stored = self.schedule_batch(ENTRY_KEY, &entry.encode(), now_ms)?;
        drop(batch);
        let out = self.log.append(SYS_SCHEDULE, stored).await?;
        if let Some(claim) = _storing {
            claim.held(Held {
                offset: out.base_offset,
                record_count: out.record_count,
                store_timestamp_ms: out.store_timestamp_ms,
            });
        }
        self.stats.borrow_mut().produce_batches += 1;
        Ok(Response::Produce {
            status: self.ack_status(&out).await,
            topic_id: SYSTEM_TOPIC_SCHEDULE,
            queue_id: SYS_SCHEDULE.queue_id.get(),
            base_offset: out.base_offset,
            record_count: out.record_count,
            store_timestamp_ms: out.store_timestamp_ms,
        })
    }

    /// A schedule-queue batch of one record.
    fn schedule_batch(&self, key: &[u8], body: &[u8], now_ms: i64) -> Result<Vec<u8>, BrokerError> {
        let mut builder = BatchBuilder::new(self.config.storage.max_batch_bytes);
        let record = Record { key, tag: b"", properties: &[], body, timestamp_ms: now_ms };
        builder.push(&record).map_err(internal)?;
        Ok(builder.finish(-1, -1))
    }

    /// Scheduled messages held: pending in the wheel, or records not indexed yet (counted as
    /// if each were an entry).
    pub(super) fn schedule_held(&self) -> u64 {
        self.held_in(&self.schedule.borrow())
    }

    fn held_in(&self, st: &ScheduleState) -> u64 {
        let unindexed = self.log.offsets(SYS_SCHEDULE).next.saturating_sub(st.indexed_through);
        st.wheel.pending() + unindexed
    }

    /// Before serving: restores the wheel from the last checkpoint and learns which entries
    /// after it were already delivered.
    pub async fn start_schedule(&self) -> Result<ScheduleRecovered, BrokerError> {
        let now_ms = self.clock.unix_ms();
        let timer_next = self.log.offsets(SYS_TIMER_LOG).next;
        let tick_ms = self.config.schedule.tick_ms.max(1);
        let cps = self.log.offsets(SYS_WHEEL);
        let mut restored = None;
        let mut at = cps.next;
        while at > cps.min && cps.next - at < CHECKPOINT_TRIES {
            at -= 1;
            let mut found = None;
            self.read_system_records(SYS_WHEEL, at, at + 1, |_, _, key, body| {
                found = decode_checkpoint_record(key, body, DEFAULT_MAX_RANGES)
            })
            .await?;
            match found {
                Some(Ok((done, indexed_through, cp, pending))) => {
                    match Wheel::restore(&cp, timer_next) {
                        Ok(w) => {
                            restored = Some((w, indexed_through, pending, done));
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(shard = %self.id, at, "wheel checkpoint unusable: {e}")
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(shard = %self.id, at, "wheel checkpoint unreadable: {e}")
                }
                None => {}
            }
        }
        let schedule_range = self.log.offsets(SYS_SCHEDULE);
        let from_checkpoint = restored.is_some();
        let (wheel, indexed_through, pending, done) = match restored {
            Some(r) => r,
            // Rebuilt from the schedule queue's start: every done entry's record is read.
            None => (
                Wheel::starting_at(tick_ms, now_ms, timer_next).map_err(internal)?,
                schedule_range.min,
                PendingOffsets::new(DEFAULT_MAX_RANGES),
                DoneSet::Listed(Vec::new()),
            ),
        };
        // Before retention runs: keep what the checkpoint needs (or, without one, everything
        // the wheel is rebuilt from) until the next checkpoint moves the pin.
        self.pin_schedule(indexed_through, &pending);
        if indexed_through < schedule_range.min {
            tracing::error!(
                shard = %self.id,
                "retention deleted scheduled messages [{indexed_through}, {}) before they were \
                 indexed",
                schedule_range.min
            );
        }
        // Which entries are done (delivered, or replaced by a copy) while the restored wheel
        // or the re-indexing would give them a timer: those the checkpoint lists (done before
        // it, their timers still held), and every one whose record comes after its
        // `indexed_through` (done after it). A checkpoint that could not list them (too many,
        // or from before round 41) has them read from the pin, before every pending entry.
        let (listed, scan_from) = match done {
            DoneSet::Listed(offsets) => (offsets, indexed_through),
            DoneSet::Unknown => (Vec::new(), schedule_pin(indexed_through, &pending)),
        };
        let mut already: HashSet<u64> = listed.into_iter().collect();
        let mut overflow = false;
        self.read_system_records(
            SYS_SCHEDULE,
            scan_from,
            schedule_range.next,
            |_, _, key, body| {
                // Delivered, or written again in a record that replaces it.
                let done = if key == DELIVERED_KEY {
                    decode_delivered(body).unwrap_or_default()
                } else if key == ROLLED_KEY {
                    match decode_entry_record(key, body) {
                        Some(Ok((Some(replaces), _))) => vec![replaces],
                        _ => Vec::new(),
                    }
                } else {
                    Vec::new()
                };
                for o in done {
                    if already.len() < MAX_ALREADY_DELIVERED {
                        already.insert(o);
                    } else {
                        overflow = true;
                    }
                }
            },
        )
        .await?;
        if overflow {
            tracing::warn!(
                shard = %self.id,
                "more than {MAX_ALREADY_DELIVERED} scheduled messages were delivered after the \
                 last checkpoint; some will be delivered again"
            );
        }
        let remembered = self.rebuild_dedup_window(now_ms).await?;
        let recovered = ScheduleRecovered {
            from_checkpoint,
            remembered,
            indexed_through,
            pending: wheel.pending(),
            already_delivered: already.len(),
        };
        let mut st = self.schedule.borrow_mut();
        st.wheel = wheel;
        st.indexed_through = indexed_through.max(schedule_range.min);
        st.pending = pending;
        st.already_delivered = already;
        st.dirty = true;
        drop(st);
        tracing::info!(shard = %self.id, ?recovered, "scheduled messages recovered");
        Ok(recovered)
    }

    /// Indexes new entries, delivers due ones (bounded), checkpoints when due.
    pub async fn schedule_step(&self) -> Result<StepReport, BrokerError> {
        let mut report = StepReport::default();
        self.index_entries(&mut report).await?;
        let delivered = self.deliver_due(&mut report).await;
        {
            let mut st = self.schedule.borrow_mut();
            st.delivered_total += report.delivered;
            st.rolled_total += report.rolled;
        }
        delivered?;
        let interval = Duration::from_millis(self.config.schedule.checkpoint_interval_ms);
        let due = {
            let st = self.schedule.borrow();
            st.dirty && self.clock.now().saturating_duration_since(st.last_checkpoint) >= interval
        };
        if due {
            self.checkpoint_schedule().await?;
        }
        Ok(report)
    }

    /// Appends a wheel checkpoint (after everything it covers, so the log's prefix property
    /// makes it consistent).
    pub async fn checkpoint_schedule(&self) -> Result<(), BrokerError> {
        let result = self.append_checkpoint().await;
        if result.is_err() {
            self.schedule.borrow_mut().dirty = true;
        }
        result
    }

    async fn append_checkpoint(&self) -> Result<(), BrokerError> {
        let (body, from) = {
            let mut st = self.schedule.borrow_mut();
            st.dirty = false;
            st.last_checkpoint = self.clock.now();
            let from = schedule_pin(st.indexed_through, &st.pending);
            // Done entries below the pin have no timer left (every pending one is past it) and
            // are never indexed again: nothing will ask about them.
            st.already_delivered.retain(|&o| o >= from);
            // As many as the batch holds with every pending range (4,096 by default).
            let limit = self.config.storage.movable_batch_limit();
            let done = if st.already_delivered.len() <= done_capacity(limit, DEFAULT_MAX_RANGES) {
                let mut offsets: Vec<u64> = st.already_delivered.iter().copied().collect();
                offsets.sort_unstable();
                DoneSet::Listed(offsets)
            } else {
                DoneSet::Unknown
            };
            let cp = st.wheel.checkpoint();
            (encode_checkpoint_record(&done, st.indexed_through, &cp, &st.pending), from)
        };
        // One record of about 4 KiB to 62 KiB (done list, pending ranges), whatever
        // `max_batch_bytes` is: kept to the log's larger limit for its own records.
        let mut builder = BatchBuilder::new(self.config.storage.movable_batch_limit());
        let timestamp_ms = self.clock.unix_ms();
        let record = Record {
            key: CHECKPOINT_DONE_KEY,
            tag: b"",
            properties: &[],
            body: &body,
            timestamp_ms,
        };
        builder.push(&record).map_err(internal)?;
        let batch = builder.finish(-1, -1);
        let ((), out) = self.log.append_then(SYS_WHEEL, batch, BatchLimit::Moved, |_| ()).await?;
        // Once the checkpoint is durable, what it covers need not be kept any more (until
        // then a restart would start from the one before).
        self.log.pin_retention_once_durable(SYS_SCHEDULE, Some(from), out.end);
        Ok(())
    }

    /// Keeps retention (by age or disk usage) from deleting what a restart from a checkpoint
    /// with these values reads ([`schedule_pin`]).
    fn pin_schedule(&self, indexed_through: u64, pending: &PendingOffsets) {
        self.log.pin_retention(SYS_SCHEDULE, Some(schedule_pin(indexed_through, pending)));
    }

    /// On a replica: the follower wrote a wheel checkpoint ending at log position `end`. The
    /// schedule queue's pin moves to what that checkpoint needs once the log is durable
    /// there, as on the master: a promotion restores the last checkpoint and finds its
    /// pending entries still in the log.
    pub(super) fn replicated_checkpoint(&self, batch: &[u8], end: u64) {
        let Ok(view) = BatchView::parse(batch, batch.len()) else { return };
        let Some(Ok(record)) = view.records().next() else { return };
        match decode_checkpoint_record(record.key, record.body, DEFAULT_MAX_RANGES) {
            Some(Ok((_, indexed_through, _, pending))) => {
                let from = schedule_pin(indexed_through, &pending);
                self.log.pin_retention_once_durable(SYS_SCHEDULE, Some(from), end);
            }
            Some(Err(e)) => tracing::warn!(shard = %self.id, "replicated wheel checkpoint: {e}"),
            None => {}
        }
    }

    async fn index_entries(&self, report: &mut StepReport) -> Result<(), BrokerError> {
        let from = self.schedule.borrow().indexed_through;
        let next = self.log.offsets(SYS_SCHEDULE).next;
        if from >= next {
            return Ok(());
        }
        let limit = self.config.schedule.max_index_per_step as u64;
        let to = next.min(from + limit);
        report.more |= to < next;
        let before = self.schedule.borrow().wheel.checkpoint();
        let mut records = Vec::new();
        let mut inserted = Vec::new();
        let mut first = None;
        let mut reached = from;
        let id = self.id;
        // A message held longer than `roll_after_ms` gets its timer then, and is written again
        // at the log's end (`deliver_due`), so its old copy no longer holds retention back.
        let roll_at =
            self.clock.unix_ms().saturating_add_unsigned(self.config.schedule.roll_after_ms);
        self.read_system_records(SYS_SCHEDULE, from, to, |offset, _, key, body| {
            reached = offset + 1;
            let Some(entry) = decode_entry_record(key, body) else { return };
            let mut st = self.schedule.borrow_mut();
            if st.already_delivered.remove(&offset) {
                // Indexed again after a restart, but delivered or replaced already: no timer.
                return;
            }
            match entry.map(|(_, e)| st.wheel.insert(e.deliver_at_ms.min(roll_at), offset)) {
                Ok(Ok((index, record))) => {
                    first.get_or_insert(index);
                    records.push(record);
                    inserted.push(offset);
                }
                Ok(Err(e)) => {
                    tracing::error!(shard = %id, offset, "scheduled message dropped: {e}")
                }
                Err(e) => tracing::error!(shard = %id, offset, "scheduled message dropped: {e}"),
            }
        })
        .await?;
        report.indexed = records.len() as u64;
        if let Some(first) = first {
            if let Err(e) = self.append_timer_records(first, &records).await {
                self.rewind_wheel(&before);
                return Err(e);
            }
        }
        // A range retention deleted before it was indexed is passed (reported by the read).
        let min = self.log.offsets(SYS_SCHEDULE).min;
        let mut st = self.schedule.borrow_mut();
        for offset in inserted {
            st.pending.insert(offset);
        }
        st.indexed_through = reached.max(from).max(min.min(to));
        st.dirty = true;
        Ok(())
    }

    /// Puts the wheel back to `before` after a step failed half-way (the timer log keeps what
    /// was appended: unreachable records), so no timer it had is dropped.
    fn rewind_wheel(&self, before: &Checkpoint) {
        let timer_next = self.log.offsets(SYS_TIMER_LOG).next;
        match Wheel::restore(before, timer_next) {
            Ok(w) => self.schedule.borrow_mut().wheel = w,
            Err(e) => tracing::error!(shard = %self.id, "the timer wheel cannot be rewound: {e}"),
        }
    }

    /// Appends timer records that the wheel numbered from `first`; they must land there.
    async fn append_timer_records(
        &self,
        first: u64,
        records: &[TimerRecord],
    ) -> Result<(), BrokerError> {
        let timestamp_ms = self.clock.unix_ms();
        let mut expected = first;
        let mut rest = records;
        while !rest.is_empty() {
            // Up to TIMER_RECORDS_PER_BATCH, fewer when `max_batch_bytes` is small (a batch of
            // 1,024 is about 28 KiB).
            let mut builder = BatchBuilder::new(self.config.storage.max_batch_bytes);
            let mut n = 0;
            for r in rest.iter().take(TIMER_RECORDS_PER_BATCH) {
                let body = r.encode();
                let record =
                    Record { key: b"", tag: b"", properties: &[], body: &body, timestamp_ms };
                match builder.push(&record) {
                    Ok(()) => n += 1,
                    Err(FormatError::BatchFull { .. }) if n > 0 => break,
                    Err(e) => return Err(internal(e)),
                }
            }
            let out = self.log.append(SYS_TIMER_LOG, builder.finish(-1, -1)).await?;
            if out.base_offset != expected {
                return Err(internal(format!(
                    "timer log record {expected} landed at offset {}: the wheel and its log \
                     disagree",
                    out.base_offset
                )));
            }
            expected += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    async fn read_timer_record(
        &self,
        index: u64,
        cache: &mut TimerCache,
    ) -> Result<TimerRecord, BrokerError> {
        if let Some(r) = cache.get(index) {
            return Ok(r);
        }
        let batches = self.log.read(SYS_TIMER_LOG, index, 64 << 10).await?;
        let mut fresh = TimerCache::default();
        for buf in &batches {
            let view = BatchView::parse(buf, buf.len()).map_err(internal)?;
            if fresh.records.is_empty() {
                fresh.base = view.header.stamp.base_offset;
            }
            for record in view.records() {
                let record = record.map_err(internal)?;
                let r = TimerRecord::decode(record.body)
                    .ok_or_else(|| internal("a timer-log record is not 24 bytes"))?;
                fresh.records.push(r);
            }
        }
        *cache = fresh;
        cache.get(index).ok_or_else(|| internal(format!("timer-log record {index} is missing")))
    }

    fn topic_exists(&self, topic_id: u32) -> bool {
        self.topics.borrow().iter().any(|(_, e)| e.id == topic_id)
    }

    /// Runs [`Self::schedule_step`] every `schedule.tick_ms` (at once while a limit left work)
    /// until `stop`.
    pub async fn schedule_loop(self: Rc<Self>, stop: super::super::shutdown::Stop) {
        let tick = Duration::from_millis(self.config.schedule.tick_ms.max(1));
        let mut wait = tick;
        loop {
            let sleep = Box::pin(self.clock.sleep_until(self.clock.now() + wait));
            if let Either::Right(_) = select(sleep, stop.clone()).await {
                // A clean stop leaves a checkpoint, so the next start re-reads nothing.
                if self.schedule.borrow().dirty {
                    if let Err(e) = self.checkpoint_schedule().await {
                        tracing::warn!(shard = %self.id, "final wheel checkpoint failed: {}", e.message);
                    }
                }
                return;
            }
            wait = match self.schedule_step().await {
                Ok(r) if r.more => Duration::ZERO,
                Ok(_) => tick,
                Err(e) => {
                    tracing::error!(shard = %self.id, "scheduled delivery failed: {}", e.message);
                    Duration::from_secs(1)
                }
            };
        }
    }
}
