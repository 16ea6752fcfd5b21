//! Retention, executed: applies the pure policy of [`crate::storage::retention`] to the log,
//! every `retention_check_interval_ms` and whenever a segment is created or rolled to (a task
//! on the log's shard), or when called.
//!
//! A run picks sealed, durable segments to delete, records the new log start durably
//! (`queues.floor`, see [`crate::storage::floors`]) and unlinks the segments. Then a task of
//! its own drops their queues' index entries, records every queue's new floor in the same file
//! and deletes the index files that held only dropped entries. The space comes back before the
//! drop, and the next run does not wait for it: the drop reads every queue's first index block,
//! seconds with 20,000 queues on a busy disk, during which the log wrote on to DISK_FULL
//! (BENCHMARKS.md round 30). A fetch that finds an entry below the log start meanwhile does the
//! drop itself (or waits for the one in flight). A crash in between leaves the file saying the
//! drop is not done: recovery does it. Retention runs beside appends, not under the append gate:
//! only the bookkeeping is synchronous.
//!
//! A queue may be pinned from an offset (`pin_retention`): no segment from the one holding
//! that batch on is deleted, whatever its age or the disk usage (the broker pins its
//! undecided transaction halves, its pending scheduled messages and its committed offsets'
//! last snapshot). A run whose policy chose a segment a pin kept says so, once, to that pin's
//! owner (`take_retention_held`); the disk-usage rule deleting segments younger than
//! `retention_hours` is logged as a warning.
//!
//! Promises: offsets never go back, even after a restart and even if a queue loses all its
//! data; a file that could not be unlinked is retried on every later run (its data is already
//! out of the log).

use std::rc::Rc;
use std::time::Duration;

use super::recovery::index_error;
use super::CommitLog;
use crate::runtime;
use crate::storage::error::{Result, StorageError};
use crate::storage::file::LogDir;
use crate::storage::floors::{encode_floors, FLOOR_FILE};
use crate::storage::retention::{segments_to_delete, RetentionPolicy, SegmentFacts};
use crate::storage::segment::segment_name;
use crate::storage::types::{LogPosition, QueueKey, QueueOffset};

impl<D: LogDir + 'static> CommitLog<D> {
    /// Keeps retention from deleting the segment holding `queue`'s batch at offset `from` and
    /// every later segment, whatever their age or the disk usage; `None` lifts the pin. For
    /// data that must outlive retention until something decides it (undecided transaction
    /// halves). Not persisted: the owner sets it again after a restart, before retention runs.
    pub fn pin_retention(&self, queue: QueueKey, from: Option<QueueOffset>) {
        self.retention_pins_staged.borrow_mut().remove(&queue);
        let mut pins = self.retention_pins.borrow_mut();
        match from {
            Some(offset) => pins.insert(queue, offset),
            None => pins.remove(&queue),
        };
    }

    /// Pins `queue` from `from` unless a pin of it holds or waits to move (offsets only grow,
    /// so such a pin is at or below `from`): for data written with nothing pinned before it.
    pub fn pin_retention_if_unpinned(&self, queue: QueueKey, from: QueueOffset) {
        let pinned = self.retention_pins.borrow().contains_key(&queue)
            || self.retention_pins_staged.borrow().contains_key(&queue);
        if !pinned {
            self.pin_retention(queue, Some(from));
        }
    }

    /// [`Self::pin_retention`] once the log is durable to `durable_at`; the pin as it is holds
    /// until then. For a pin that moves up because of a record just appended (a checkpoint, a
    /// snapshot, a decision): a crash before that record is durable restarts from the older
    /// one, which still needs what the old pin kept. A later call replaces a pin not yet
    /// moved (its position is durable no sooner).
    pub fn pin_retention_once_durable(
        &self,
        queue: QueueKey,
        from: Option<QueueOffset>,
        durable_at: LogPosition,
    ) {
        if self.st.borrow().durable >= durable_at {
            self.pin_retention(queue, from);
        } else {
            self.retention_pins_staged.borrow_mut().insert(queue, (from, durable_at));
        }
    }

    /// True once after a retention run wanted to delete a segment that `queue`'s pin kept (by
    /// age or disk usage): the pin's owner may move it up (the group coordinator takes a
    /// snapshot of the committed offsets).
    pub fn take_retention_held(&self, queue: QueueKey) -> bool {
        let held = self.retention_held.get() == Some(queue);
        if held {
            self.retention_held.set(None);
        }
        held
    }

    /// The lowest log position a pin keeps and the queue pinned there (`None`: no pin holds
    /// anything still stored). A pin whose batch cannot be looked up keeps everything this run.
    async fn pinned_position(&self) -> Option<(LogPosition, QueueKey)> {
        let durable = self.st.borrow().durable;
        let ready: Vec<(QueueKey, Option<QueueOffset>)> = self
            .retention_pins_staged
            .borrow()
            .iter()
            .filter(|(_, (_, at))| *at <= durable)
            .map(|(q, (from, _))| (*q, *from))
            .collect();
        for (queue, from) in ready {
            self.pin_retention(queue, from);
        }
        let pins: Vec<(QueueKey, QueueOffset)> =
            self.retention_pins.borrow().iter().map(|(q, o)| (*q, *o)).collect();
        let mut lowest: Option<(LogPosition, QueueKey)> = None;
        for (queue, offset) in pins {
            let position = match self.index.find(&self.dir, queue, offset).await {
                Ok(None) => continue,
                Ok(Some(n)) => match self.index.entry(&self.dir, queue, n).await {
                    Ok(e) => e.position,
                    Err(e) => {
                        tracing::warn!(%queue, "retention keeps everything: a pinned batch cannot be looked up: {e:?}");
                        LogPosition::new(0)
                    }
                },
                Err(e) => {
                    tracing::warn!(%queue, "retention keeps everything: a pinned batch cannot be looked up: {e:?}");
                    LogPosition::new(0)
                }
            };
            if lowest.map_or(true, |(l, _)| position < l) {
                lowest = Some((position, queue));
            }
        }
        lowest
    }

    /// Applies the retention policy at time `now_ms`, then drops the deleted batches' entries
    /// from the queue index (`drop_index`); returns the bases of deleted segments.
    /// The retention task does the two apart: its next run does not wait for this one's drop.
    pub async fn enforce_retention(self: &Rc<Self>, now_ms: i64) -> Result<Vec<LogPosition>> {
        let deleted = self.delete_segments(now_ms).await;
        let dropped = self.drop_index().await;
        match (deleted, dropped) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(bases), Ok(())) => Ok(bases),
        }
    }

    /// Applies the retention policy at time `now_ms`: records the new log start, then unlinks
    /// the segments below it; returns their bases. Their queues' index entries are dropped
    /// by [`Self::drop_index`], after.
    ///
    /// Runs beside appends, not under the append gate: only the bookkeeping is synchronous;
    /// writing the floors and unlinking files (slow for a 1 GiB file) await without blocking
    /// appends. A file that cannot be unlinked is reported (Err) and retried on every later
    /// run: its data is already gone from the log (the log start is durable), only its space
    /// is not yet back; recovery deletes it if the broker restarts meanwhile.
    async fn delete_segments(self: &Rc<Self>, now_ms: i64) -> Result<Vec<LogPosition>> {
        let _running =
            self.retention_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        self.check_writable()?;
        let mut first_error = None;
        let pending = std::mem::take(&mut self.st.borrow_mut().pending_deletes);
        let retried = !pending.is_empty();
        if let Err(e) = self.delete_files(pending).await {
            first_error = Some(e);
        }
        let (used, total) =
            self.dir.disk_usage().await.map_err(|e| StorageError::io("reading disk usage", e))?;
        let pin = self.pinned_position().await;
        let pinned = pin.map_or(LogPosition::MAX, |(p, _)| p);
        let doomed = {
            let st = self.st.borrow();
            let active = st.active().base;
            let facts: Vec<SegmentFacts> = st
                .segments
                .values()
                .filter(|s| s.base != active)
                // Only segments whose every byte is durable may go (and indexed by a
                // checkpoint: below).
                .take_while(|s| s.sealed_end.get().is_some_and(|e| e <= st.durable))
                .map(|s| SegmentFacts {
                    base: s.base,
                    size_bytes: self.config.segment_size_bytes,
                    max_store_timestamp_ms: s.max_store_timestamp_ms.get(),
                })
                .collect();
            let policy = RetentionPolicy {
                retention_ms: self.config.retention_hours as i64 * 3_600_000,
                disk_max_used_ratio: self.config.disk_max_used_ratio,
            };
            let mut doomed = segments_to_delete(&policy, &facts, now_ms, used, total);
            // A pinned batch starts at `pinned`: segments ending after it are kept.
            let unpinned = facts
                .iter()
                .take_while(|f| st.segments[&f.base].sealed_end.get().is_some_and(|e| e <= pinned))
                .count();
            let pinned_segments = doomed.len().saturating_sub(unpinned);
            self.probe.borrow_mut().retention_pinned_segments = pinned_segments as u64;
            if pinned_segments > 0 {
                doomed.truncate(unpinned);
                let (_, queue) = pin.expect("only a pin keeps a segment the policy chose");
                self.retention_held.set(Some(queue));
                tracing::debug!(%queue, "retention: a pin keeps segments the policy would delete");
            }
            // Segments not yet expired that go because the filesystem is too full.
            let cutoff = now_ms.saturating_sub(policy.retention_ms);
            let early =
                facts[..doomed.len()].iter().filter(|f| f.max_store_timestamp_ms >= cutoff).count();
            (doomed, early)
        };
        let (doomed, early) = doomed;
        let Some(&last) = doomed.last() else {
            if retried {
                self.space_freed();
            }
            return first_error.map_or(Ok(vec![]), Err);
        };
        let (new_start, doomed_end) = {
            let st = self.st.borrow();
            let end = st.segments[&last].sealed_end.get().expect("a doomed segment is sealed");
            (*st.segments.range(last + 1..).next().expect("the active segment remains").0, end)
        };
        // Every entry of the doomed batches must be in a durable index checkpoint: the log
        // start is recorded before the drop writes the new floors, and after a crash in
        // between, recovery finds those entries in the checkpointed index only (it rebuilds
        // the entries past the checkpoint by scanning the log, which no longer holds these
        // batches: their queues' offsets would have a hole, taken for a torn end). Usually
        // the checkpoint is far ahead of the oldest segments; when it is not, one is taken now.
        if doomed_end > self.index.checkpoint_position() {
            self.checkpoint_index().await?;
            if doomed_end > self.index.checkpoint_position() {
                return first_error.map_or(Ok(vec![]), Err);
            }
        }
        // Record the new log start before deleting, with the queue floors as they are: from
        // here on the doomed segments are out of the log, even after a crash (recovery
        // deletes any left and drops their index entries if `drop_index` does not get to).
        let started = self.clock.now();
        let names = {
            let _floors =
                self.floors_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
            let floors = self.floors_bytes(new_start, false);
            self.dir
                .write_atomic(FLOOR_FILE, &floors)
                .await
                .map_err(|e| StorageError::io("writing the log start to the queue floors", e))?;
            // No await from the write to here: a floors write of `drop_index` (waiting for
            // the gate) finds the file's start and the segments moved together.
            let mut st = self.st.borrow_mut();
            st.floors_start = new_start;
            st.floors_dropped = false;
            let mut names = Vec::with_capacity(doomed.len());
            for base in &doomed {
                st.segments.remove(base);
                names.push(segment_name(*base));
            }
            st.cache.retain_range(new_start, LogPosition::MAX);
            st.read_ahead.drop_before(new_start);
            st.prefetched.drop_before(new_start);
            names
        };
        {
            let mut probe = self.probe.borrow_mut();
            probe.retention_disk_segments += early as u64;
            probe.retention_expired_segments += (doomed.len() - early) as u64;
        }
        let deleted = self.delete_files(names).await;
        self.space_freed();
        self.drop_kick.notify();
        let freed_ms = self.clock.now().saturating_duration_since(started).as_millis() as u64;
        tracing::info!(
            deleted = doomed.len(),
            disk_used = used,
            disk_total = total,
            segments_freed_ms = freed_ms,
            "retention deleted segments"
        );
        if early > 0 {
            tracing::warn!(
                segments = early,
                disk_used = used,
                disk_total = total,
                "the filesystem was {:.1}% full, over storage.disk_max_used_ratio ({}): \
                 deleted segments younger than storage.retention_hours; consumers that had not \
                 read them lost those messages",
                used as f64 * 100.0 / total.max(1) as f64,
                self.config.disk_max_used_ratio
            );
        }
        match first_error.map_or(deleted, Err) {
            Ok(()) => Ok(doomed),
            Err(e) => Err(e),
        }
    }

    /// Drops the queue index's entries below the log start (their segments are deleted),
    /// records the queues' new floors, then deletes the index files holding only dropped
    /// entries (and those an earlier drop could not), until the index is clean up to the log
    /// start (a retention run meanwhile moves it on). One drop at a time; it reads every
    /// queue's first index block, seconds with 20,000 queues on a busy disk, which is why
    /// the space does not wait for it. On a failure the entries or files stay for the next
    /// call (the next retention run kicks one).
    pub(super) async fn drop_index(&self) -> Result<()> {
        let _dropping = self.drop_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        self.check_writable()?;
        loop {
            let target = self.oldest_position();
            let (behind, clean) = {
                let st = self.st.borrow();
                (
                    st.index_dropped_to < target,
                    st.floors_dropped && st.pending_index_deletes.is_empty(),
                )
            };
            if !behind && clean {
                return Ok(());
            }
            if behind {
                // The index is read without its gate (seconds with many queues), so
                // write-back and checkpoints go on meanwhile; only the change, without I/O,
                // waits for the gate.
                let reading = self.clock.now();
                let plan = self
                    .index
                    .plan_drop(&self.dir, target)
                    .await
                    .map_err(|e| index_error("dropping index entries", e))?;
                let waiting = self.clock.now();
                let index_gate = self.index.lock().await;
                let locked = self.clock.now();
                let files = self.index.apply_drop(&plan);
                // The gate is not held across the floors write either; write-back and
                // checkpoints never touch those files, which hold only entries below every
                // queue's first.
                drop(index_gate);
                let mut st = self.st.borrow_mut();
                // From here the entries are gone from the index: their files must be deleted
                // by this drop or a later one, whatever fails below.
                st.pending_index_deletes.extend(files);
                st.index_dropped_to = target;
                let ms = |from: std::time::Instant, to: std::time::Instant| {
                    to.saturating_duration_since(from).as_millis() as u64
                };
                tracing::info!(
                    log_start = target.get(),
                    queues = plan.len(),
                    index_read_ms = ms(reading, waiting),
                    index_wait_ms = ms(waiting, locked),
                    "retention dropped index entries"
                );
            }
            {
                let _floors =
                    self.floors_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
                let (start, dropped) = {
                    let st = self.st.borrow();
                    (st.floors_start, st.index_dropped_to >= st.floors_start)
                };
                let floors = self.floors_bytes(start, dropped);
                self.dir
                    .write_atomic(FLOOR_FILE, &floors)
                    .await
                    .map_err(|e| StorageError::io("writing queue floors", e))?;
                self.st.borrow_mut().floors_dropped = dropped;
            }
            // The floors count every drop so far: their files may go.
            let index_gate = self.index.lock().await;
            let index_files = std::mem::take(&mut self.st.borrow_mut().pending_index_deletes);
            let removed = self.index.remove_files(&self.dir, &index_files).await;
            drop(index_gate);
            if let Err(e) = removed {
                // Retried by the next drop (deleting a file twice is fine); recovery deletes
                // such stale files too.
                tracing::warn!("retention could not delete index files, will retry: {e}");
                self.st.borrow_mut().pending_index_deletes.extend(index_files);
                return Err(StorageError::io("deleting index files", e));
            }
        }
    }

    /// The floors file's bytes: the queues' floors, the log start and whether the index's
    /// entries below it are dropped. Until they are, also each queue's next offset counting
    /// its durable batches: if recovery must rebuild the index from the log before the drop
    /// is recorded, a queue whose every batch was deleted starts there, not at its old floor
    /// (below offsets it had given out). Durable batches are never lost, so a queue the
    /// rebuild finds empty had all of them below the log start, whenever this was written.
    fn floors_bytes(&self, log_start: LogPosition, index_dropped: bool) -> Vec<u8> {
        let nexts = match index_dropped {
            true => Vec::new(),
            false => self.index.durable_nexts(self.st.borrow().durable),
        };
        encode_floors(&self.index.floors(), log_start, index_dropped, &nexts)
    }

    /// Unlinks files the log no longer refers to, then syncs the directory. Names that could
    /// not be unlinked go to `pending_deletes` (retried by the next retention run); the first
    /// error is returned.
    pub(super) async fn delete_files(&self, names: Vec<String>) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let mut first_error = None;
        for name in names {
            match self.dir.remove(&name).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %name, "retention could not delete a file, will retry: {e}");
                    first_error.get_or_insert(StorageError::io(format!("deleting {name}"), e));
                    self.st.borrow_mut().pending_deletes.push(name);
                }
            }
        }
        if let Err(e) = self.dir.sync_dir().await {
            first_error.get_or_insert(StorageError::io("syncing data directory", e));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Retention freed space: an append waiting out a disk-full back-off may try at once.
    pub(super) fn space_freed(&self) {
        self.st.borrow_mut().next.space_freed(self.clock.now());
    }

    /// Files retention dropped from the log but could not unlink yet.
    pub fn pending_deletes(&self) -> Vec<String> {
        self.st.borrow().pending_deletes.clone()
    }
}

/// Applies the retention policy every `retention_check_interval_ms`, and whenever a segment
/// is created or rolled to (the disk holds one more: at 2 GB/s a minute's timer would let
/// 120 GB in between), until the log goes away.
pub(super) async fn retention_loop<D: LogDir + 'static>(weak: std::rc::Weak<CommitLog<D>>) {
    loop {
        let (kick, sleep) = match weak.upgrade() {
            Some(log) => {
                let interval = Duration::from_millis(log.config.retention_check_interval_ms.max(1));
                (log.retention_kick.clone(), log.clock.sleep_until(log.clock.now() + interval))
            }
            None => return,
        };
        // Wait holding only the signal, so a log dropped meanwhile is freed (its Drop
        // notifies the signal, and the next upgrade fails).
        runtime::first_or_timeout(kick.wait(), sleep).await;
        let Some(log) = weak.upgrade() else { return };
        {
            let st = log.st.borrow();
            if !st.life.is_open() {
                return;
            }
        }
        // The drop of the deleted batches' index entries is the drop task's: this loop's
        // next run must not wait for it (BENCHMARKS.md, round 30).
        if let Err(e) = log.delete_segments(log.clock.unix_ms()).await {
            tracing::warn!("retention failed: {e}");
        }
        // Also after a run that deleted nothing: a drop that failed is tried again (one
        // with nothing to do returns at once).
        log.drop_kick.notify();
    }
}

/// Drops the index entries below the log start whenever a retention run moved it
/// ([`CommitLog::drop_index`]), until the log goes away.
pub(super) async fn index_drop_loop<D: LogDir + 'static>(weak: std::rc::Weak<CommitLog<D>>) {
    loop {
        let Some(kick) = weak.upgrade().map(|log| log.drop_kick.clone()) else { return };
        // Wait holding only the signal (as the retention loop does).
        kick.wait().await;
        let Some(log) = weak.upgrade() else { return };
        if !log.st.borrow().life.is_open() {
            return;
        }
        if let Err(e) = log.drop_index().await {
            tracing::warn!("retention could not drop index entries, will retry: {e}");
        }
    }
}
