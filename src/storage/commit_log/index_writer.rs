//! The index writer: writes each durable batch's index entry to the per-queue index files
//! behind the log, and checkpoints the index. A task on the log's shard, kicked by the flusher
//! so index I/O never delays a group commit.
//!
//! About once per `segment_size_bytes` of durable log, and on open and close, a checkpoint
//! makes the index files durable and records `index.checkpoint`: where recovery may start
//! scanning. When the index's unwritten entries reach their bound, appends wait while this
//! task writes them back, each going on as soon as they are below it again.
//!
//! Promises: an index entry is written only for a durable batch; a failed index write or sync
//! stops the log like a failed log write, except for a write that lacked space (a failed sync
//! stops it whatever the error): then the entries stay in memory, appends get DiskFull until a
//! retry succeeds, reads go on, and the previous checkpoint stays valid.

use std::rc::Rc;

use super::CommitLog;
use crate::storage::error::{is_disk_full, Result, StorageError};
use crate::storage::file::LogDir;
use crate::storage::index::{IndexCheckpoint, SegmentCheckpoint};
use crate::storage::index_store::{WritebackError, CHECKPOINT_FILE};
use crate::storage::next_segment::IndexStep;

impl<D: LogDir + 'static> CommitLog<D> {
    /// Writes the index entries of every durable batch to the index files.
    pub(super) async fn index_writeback(&self) -> Result<()> {
        let _gate = self.index.lock().await;
        let written = self.index.writeback_live(&self.dir, || self.st.borrow().durable).await;
        match written {
            Ok(()) => Ok(()),
            Err(e) => Err(self.index_write_failed("writing the queue index", e).await),
        }
    }

    /// Waits while the index's unwritten entries are at their bound (half of
    /// `index_cache_bytes`): makes them durable, has the index writer write them back, and
    /// goes on as soon as enough are written. It used to write back every queue itself first:
    /// when that meant creating thousands of index files (a new set of 10,000 queues on a
    /// filesystem that had just deleted as many), appends stopped for 5-10 s and producers'
    /// sends timed out (BENCHMARKS.md, many-queues on 10,000 queues). Now appends go on at the
    /// pace the writer frees entries. Callers hold the append gate: one waiter at a time, as
    /// the `progress` signal wakes one.
    pub(super) async fn wait_index_room(self: &Rc<Self>) -> Result<()> {
        if !self.index.must_writeback() {
            return Ok(());
        }
        self.probe.borrow_mut().index_room_waits += 1;
        // Entries are written only for durable batches.
        self.flush().await?;
        while self.index.must_writeback() {
            self.check_writable()?;
            let step = self.st.borrow().next.index_step(self.clock.now());
            if let IndexStep::DiskFull(reason) = step {
                return Err(self.disk_full_error(reason).await);
            }
            self.index_kick.notify();
            self.index.progress().wait().await;
        }
        Ok(())
    }

    /// The error for a failed index write. Without space (ENOSPC, EDQUOT) nothing was lost:
    /// the unwritten entries stay in memory, appends get DiskFull until a retry succeeds (see
    /// [`Self::ensure_index_writable`]) and reads go on. Anything else, and every failed
    /// sync (the checkpoint's `syncfs`, ENOSPC included: the page cache's state of the files
    /// is unknown after it), stops the log like a failed data write.
    pub(super) async fn index_write_failed(&self, what: &str, e: WritebackError) -> StorageError {
        match e {
            WritebackError::Write(e) if is_disk_full(&e) => {
                let reason = format!("{what}: {e}");
                tracing::warn!("{reason}; appends get DISK_FULL until there is room");
                self.st.borrow_mut().next.index_result(Err(reason.clone()), self.clock.now());
                self.disk_full_error(reason).await
            }
            e => {
                let reason = format!("{what} failed: {e}");
                self.fail(reason.clone());
                self.failed_error(&reason)
            }
        }
    }

    /// Appends wait here while the index could not be written for lack of space: DiskFull
    /// until the retry time, then one attempt (write-back, and the checkpoint if one is due).
    pub(super) async fn ensure_index_writable(self: &Rc<Self>) -> Result<()> {
        let step = self.st.borrow().next.index_step(self.clock.now());
        match step {
            IndexStep::Writable => Ok(()),
            IndexStep::DiskFull(reason) => Err(self.disk_full_error(reason).await),
            IndexStep::RetryNow => {
                self.index_writeback().await?;
                if self.checkpoint_due() {
                    self.checkpoint_index().await?;
                }
                self.st.borrow_mut().next.index_result(Ok(()), self.clock.now());
                Ok(())
            }
        }
    }

    /// Is a checkpoint due? One per `segment_size_bytes` of durable log bounds what recovery
    /// scans to about two segments.
    pub(super) fn checkpoint_due(&self) -> bool {
        let durable = self.st.borrow().durable;
        durable >= self.index.checkpoint_position() + self.config.segment_size_bytes
    }

    /// Writes every entry of the batches appended so far, makes the index files durable and
    /// then records `index.checkpoint`, so recovery only scans the log past this point.
    /// Waits for the log's durability of those batches first. A failed index write or sync
    /// stops the log, like a failed log write, except for a lack of space: that is DiskFull
    /// (see `Self::index_write_failed`), the previous checkpoint stays valid.
    ///
    /// The index's gate is held while the entries are written, not through the filesystem
    /// sync: behind a disk busy with the log's writes that took seconds, and retention (which
    /// needs the gate to drop entries) and write-backs waited for it while the log wrote on
    /// toward a full disk (BENCHMARKS.md, round 29). The sync covers every entry written
    /// before it, so those of this checkpoint's position; write-backs meanwhile only add
    /// entries past it (synced by the next checkpoint), and retention meanwhile only drops
    /// entries below its floors, as it may between two checkpoints. Checkpoints themselves run
    /// one at a time (`checkpoint_gate`).
    pub async fn checkpoint_index(self: &Rc<Self>) -> Result<()> {
        let _checkpoint =
            self.checkpoint_gate.acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        let gate = self.index.lock().await;
        let started = self.clock.now();
        self.check_writable()?;
        let (position, segments) = {
            let st = self.st.borrow();
            let segments = st
                .segments
                .values()
                .map(|s| SegmentCheckpoint {
                    base: s.base,
                    sealed_end: s.sealed_end.get(),
                    max_store_timestamp_ms: s.max_store_timestamp_ms.get(),
                })
                .collect();
            (st.append_pos, segments)
        };
        let queues = self.index.snapshot();
        self.wait_durable(position, None).await?;
        let written = self.index.writeback(&self.dir, position).await;
        if let Err(e) = written {
            return Err(self.index_write_failed("writing the queue index", e).await);
        }
        drop(gate);
        let written_at = self.clock.now();
        let synced = self.index.sync(&self.dir).await;
        tracing::debug!(
            writeback_ms = written_at.saturating_duration_since(started).as_millis() as u64,
            sync_ms = self.clock.now().saturating_duration_since(written_at).as_millis() as u64,
            "queue index checkpoint written and synced"
        );
        if let Err(e) = synced {
            let what = "syncing the queue index";
            return Err(self.index_write_failed(what, WritebackError::Sync(e)).await);
        }
        let ckpt = IndexCheckpoint {
            position,
            file_entries: self.config.index_file_entries,
            segments,
            queues,
        };
        let stored = self.dir.write_atomic(CHECKPOINT_FILE, &ckpt.encode()).await;
        if let Err(e) = stored {
            // The index files are durable; only the new checkpoint is missing (the old one
            // still describes a valid prefix), so this is a write, not a sync, failure.
            let what = "writing the index checkpoint";
            return Err(self.index_write_failed(what, WritebackError::Write(e)).await);
        }
        self.index.checkpointed(position);
        let took = self.clock.now().saturating_duration_since(started);
        self.probe.borrow_mut().index_checkpoint_latency.record(took);
        Ok(())
    }
}

/// Writes index entries behind the log and checkpoints the index when the flusher says it is
/// time. Holds only a weak reference so dropping the log ends it.
pub(super) async fn index_loop<D: LogDir + 'static>(weak: std::rc::Weak<CommitLog<D>>) {
    loop {
        let kick = match weak.upgrade() {
            Some(log) => log.index_kick.clone(),
            None => return,
        };
        kick.wait().await;
        let Some(log) = weak.upgrade() else { return };
        if !log.st.borrow().life.is_open() {
            // An append waiting for the index's room gets the log's error.
            log.index.progress().notify();
            return;
        }
        if matches!(log.st.borrow().next.index_step(log.clock.now()), IndexStep::DiskFull(_)) {
            // No room for the index: appends retry it after the back-off, not every flush.
            log.index.progress().notify();
            continue;
        }
        let outcome = if log.checkpoint_due() {
            log.checkpoint_index().await
        } else {
            log.index_writeback().await
        };
        // An append waiting for the index's room looks again (and asks for another pass).
        log.index.progress().notify();
        match outcome {
            // Failures of index I/O already stopped the log; a close meanwhile is fine; no
            // room is retried (by appends, or the next kick after the back-off).
            Err(StorageError::Closed | StorageError::DiskFull { .. }) | Ok(()) => {}
            Err(e) => {
                tracing::warn!("index write-back stopped: {e}");
                return;
            }
        }
    }
}
