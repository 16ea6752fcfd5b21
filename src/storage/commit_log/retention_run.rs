//! Retention, executed: applies the pure policy of [`crate::storage::retention`] to the log,
//! every `retention_check_interval_ms` and whenever a segment is created or rolled to (a task
//! on the log's shard), or when called.
//!
//! A run picks sealed, durable segments to delete, records the new log start durably
//! (`queues.floor`, see [`crate::storage::floors`]), unlinks the segments, and only then drops
//! their queues' index entries, records every queue's new floor in the same file and deletes
//! the index files that held only dropped entries. The space comes back before the drop,
//! which reads every queue's first index block (seconds with 20,000 queues on a busy disk,
//! BENCHMARKS.md round 30); a fetch that finds an entry below the log start meanwhile waits
//! for the run. A crash in between leaves the file saying the drop is not done: recovery does
//! it. It runs beside appends, not under the append gate: only the bookkeeping is synchronous.
//!
//! A queue may be pinned from an offset (`pin_retention`): no segment from the one holding
//! that batch on is deleted, whatever its age or the disk usage (the broker pins its
//! undecided transaction halves).
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
        let mut pins = self.retention_pins.borrow_mut();
        match from {
            Some(offset) => pins.insert(queue, offset),
            None => pins.remove(&queue),
        };
    }

    /// The lowest log position a pin keeps (`None`: no pin holds anything still stored). A
    /// pin whose batch cannot be looked up keeps everything this run.
    async fn pinned_position(&self) -> Option<LogPosition> {
        let pins: Vec<(QueueKey, QueueOffset)> =
            self.retention_pins.borrow().iter().map(|(q, o)| (*q, *o)).collect();
        let mut lowest: Option<LogPosition> = None;
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
            lowest = Some(lowest.map_or(position, |l| l.min(position)));
        }
        lowest
    }

    /// Applies the retention policy at time `now_ms`; returns the bases of deleted segments.
    ///
    /// Runs beside appends, not under the append gate: only the bookkeeping is synchronous;
    /// writing the floors and unlinking files (slow for a 1 GiB file) await without blocking
    /// appends. A file that cannot be unlinked is reported (Err) and retried on every later
    /// run: its data is already gone from the log (floors written), only its space is not yet
    /// back; recovery skips its batches by the floors if the broker restarts meanwhile.
    pub async fn enforce_retention(self: &Rc<Self>, now_ms: i64) -> Result<Vec<LogPosition>> {
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
        let pinned = self.pinned_position().await.unwrap_or(LogPosition::MAX);
        let doomed = {
            let st = self.st.borrow();
            let active = st.active().base;
            let facts: Vec<SegmentFacts> = st
                .segments
                .values()
                .filter(|s| s.base != active)
                // Only segments whose every byte is durable and indexed may go.
                .take_while(|s| s.sealed_end.get().is_some_and(|e| e <= st.durable))
                // A pinned batch starts at `pinned`: segments ending after it are kept.
                .take_while(|s| s.sealed_end.get().is_some_and(|e| e <= pinned))
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
            segments_to_delete(&policy, &facts, now_ms, used, total)
        };
        // A previous run's drop of index entries failed (or a file of it could not be deleted):
        // finish it, even if no segment goes this time.
        let unfinished = {
            let st = self.st.borrow();
            let start = *st.segments.keys().next().expect("the active segment remains");
            (st.index_dropped_to < start || !st.pending_index_deletes.is_empty()).then_some(start)
        };
        let Some(&last) = doomed.last() else {
            if retried {
                self.space_freed();
            }
            if let Some(start) = unfinished {
                if let Err(e) = self.drop_index_before(start).await {
                    first_error.get_or_insert(e);
                }
            }
            return first_error.map_or(Ok(vec![]), Err);
        };
        let new_start = {
            let st = self.st.borrow();
            *st.segments.range(last + 1..).next().expect("the active segment remains").0
        };
        // Record the new log start before deleting, with the queue floors as they are: from
        // here on the doomed segments are out of the log, even after a crash (recovery
        // deletes any left and drops their index entries if this run does not get to).
        // Timed for the log line below: with thousands of queues the drop of their index
        // entries reads every queue's first index block, and the space must not wait for it.
        let started = self.clock.now();
        let floors = encode_floors(&self.index.floors(), new_start, false);
        self.dir
            .write_atomic(FLOOR_FILE, &floors)
            .await
            .map_err(|e| StorageError::io("writing the log start to the queue floors", e))?;
        let mut names = Vec::with_capacity(doomed.len());
        {
            let mut st = self.st.borrow_mut();
            for base in &doomed {
                st.segments.remove(base);
                names.push(segment_name(*base));
            }
            st.cache.retain_range(new_start, LogPosition::MAX);
            st.read_ahead.drop_before(new_start);
            st.prefetched.drop_before(new_start);
        }
        let deleted = self.delete_files(names).await;
        self.space_freed();
        let freed = self.clock.now();
        // Then the queue index: its entries of the deleted batches (a fetch that finds one
        // waits for this run, see `reader.rs`), the new floors, and the index files holding
        // only dropped entries.
        let drop = self.drop_index_before(new_start).await;
        let ms = |from: std::time::Instant, to: std::time::Instant| {
            to.saturating_duration_since(from).as_millis() as u64
        };
        match &drop {
            Ok(timing) => tracing::info!(
                deleted = doomed.len(),
                disk_used = used,
                disk_total = total,
                segments_freed_ms = ms(started, freed),
                index_wait_ms = timing.wait_ms,
                index_drop_ms = timing.drop_ms,
                total_ms = ms(started, self.clock.now()),
                "retention deleted segments"
            ),
            Err(e) => tracing::warn!(
                deleted = doomed.len(),
                segments_freed_ms = ms(started, freed),
                "retention deleted segments but not yet their index entries, will retry: {e}"
            ),
        }
        if let Err(e) = drop {
            first_error.get_or_insert(e);
        }
        match first_error.map_or(deleted, Err) {
            Ok(()) => Ok(doomed),
            Err(e) => Err(e),
        }
    }

    /// Drops the queue index's entries below `start` (the log start: their segments are
    /// deleted), records the queues' new floors, then deletes the index files holding only
    /// dropped entries (and those an earlier run could not). On a failure the entries or
    /// files stay for the next run, which calls this again.
    async fn drop_index_before(&self, start: LogPosition) -> Result<DropTiming> {
        let waiting = self.clock.now();
        let index_gate = self.index.lock().await;
        let locked = self.clock.now();
        if self.st.borrow().index_dropped_to < start {
            let dropped_files = self
                .index
                .drop_before(&self.dir, start)
                .await
                .map_err(|e| index_error("dropping index entries", e))?;
            // From here the entries are gone from the index: their files must be deleted by
            // this run or a later one, whatever fails below.
            self.st.borrow_mut().pending_index_deletes.extend(dropped_files);
        }
        // The index gate is not held across the floors write, so write-back and checkpoints
        // go on meanwhile; they never touch those files, which hold only entries below every
        // queue's first.
        drop(index_gate);
        let dropped = self.clock.now();
        let floors = encode_floors(&self.index.floors(), start, true);
        self.dir
            .write_atomic(FLOOR_FILE, &floors)
            .await
            .map_err(|e| StorageError::io("writing queue floors", e))?;
        self.st.borrow_mut().index_dropped_to = start;
        let index_gate = self.index.lock().await;
        let index_files = std::mem::take(&mut self.st.borrow_mut().pending_index_deletes);
        let removed = self.index.remove_files(&self.dir, &index_files).await;
        drop(index_gate);
        if let Err(e) = removed {
            // Retried by the next run (deleting a file twice is fine); recovery deletes such
            // stale files too.
            tracing::warn!("retention could not delete index files, will retry: {e}");
            self.st.borrow_mut().pending_index_deletes.extend(index_files);
            return Err(StorageError::io("deleting index files", e));
        }
        let ms = |from: std::time::Instant, to: std::time::Instant| {
            to.saturating_duration_since(from).as_millis() as u64
        };
        Ok(DropTiming { wait_ms: ms(waiting, locked), drop_ms: ms(locked, dropped) })
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

/// How long a run's drop of index entries waited for the index and took.
struct DropTiming {
    wait_ms: u64,
    drop_ms: u64,
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
        if let Err(e) = log.enforce_retention(log.clock.unix_ms()).await {
            tracing::warn!("retention failed: {e}");
        }
    }
}
