//! The flusher: group commit, one task per log on the log's shard.
//!
//! Owns durability: the durable position, the waiters for it and the flush requests. A flush
//! takes everything appended so far as its target, dispatches the partial head chunk, waits
//! until every write below the target completed (a contiguous prefix, see
//! [`crate::storage::write_tracker`]), fdatasyncs each segment with unsynced writes, then
//! declares the target durable and wakes every waiter at or below it. One fdatasync thus
//! covers every append issued before the flush started.
//!
//! Promises: an acknowledgement in sync mode means the batch is on disk; a failed write or
//! fdatasync fails every waiter and stops the log (never retried: fsyncgate). In sync mode the
//! task waits for a kick only (no timer per group commit); in async mode also for
//! `flush_interval_ms`.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;

use super::CommitLog;
use crate::runtime;
use crate::storage::config::FlushMode;
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{LogDir, LogFile};
use crate::storage::segment::{segment_name, Segment};
use crate::storage::types::{AppendStatus, Appended, LogPosition};

impl<D: LogDir + 'static> CommitLog<D> {
    /// The acknowledgement step of [`Self::append_committed`], for callers that release the
    /// batch's buffer between the copy and the wait: in sync mode, waits for the fdatasync
    /// covering `appended` (up to `sync_flush_timeout_ms`, then `FlushDiskTimeout`).
    pub async fn commit(self: &Rc<Self>, appended: &Appended) -> Result<AppendStatus> {
        self.commit_through(appended.end).await
    }

    /// [`Self::commit`] for everything appended before `end`.
    pub async fn commit_through(self: &Rc<Self>, end: LogPosition) -> Result<AppendStatus> {
        if self.config.flush_mode == FlushMode::Async {
            return Ok(AppendStatus::Ok);
        }
        let durable = self.wait_durable(end, Some(self.config.sync_flush_timeout())).await?;
        Ok(if durable { AppendStatus::Ok } else { AppendStatus::FlushDiskTimeout })
    }

    /// Waits until everything before `end` is durable; false if `timeout` passed first.
    pub async fn wait_durable(
        self: &Rc<Self>,
        end: LogPosition,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let rx = {
            let mut st = self.st.borrow_mut();
            if st.durable >= end {
                return Ok(true);
            }
            if let Some(reason) = st.life.failure() {
                return Err(self.failed_error(reason));
            }
            assert!(end <= st.append_pos, "waiting for {end} beyond the appended end");
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back((end, tx));
            st.flush_requested = true;
            rx
        };
        self.flush_kick.notify();
        let outcome = match timeout {
            Some(t) => match runtime::timeout_at(&*self.clock, self.clock.now() + t, rx).await {
                Some(r) => r,
                None => return Ok(false),
            },
            None => rx.await,
        };
        match outcome {
            Ok(Ok(())) => Ok(true),
            Ok(Err(reason)) => Err(self.failed_error(&reason)),
            Err(oneshot::Canceled) => Err(StorageError::Closed),
        }
    }

    /// Makes everything appended so far durable.
    pub async fn flush(self: &Rc<Self>) -> Result<LogPosition> {
        let end = self.st.borrow().append_pos;
        self.wait_durable(end, None).await?;
        Ok(end)
    }

    pub(super) fn request_flush(&self) {
        self.st.borrow_mut().flush_requested = true;
        self.flush_kick.notify();
    }
}

/// The group-commit loop. Holds only a weak reference so dropping the log ends it.
pub(super) async fn flusher_loop<D: LogDir + 'static>(weak: std::rc::Weak<CommitLog<D>>) {
    loop {
        let Some(log) = weak.upgrade() else { return };
        let interval = log.config.flush_interval();
        let async_mode = log.config.flush_mode == FlushMode::Async;
        let wait = {
            let st = log.st.borrow();
            if !st.life.is_open() {
                return;
            }
            !st.flush_requested
        };
        if wait {
            // Wait holding only the signal, so a log dropped meanwhile is freed (its Drop
            // notifies the signal, and the next upgrade fails).
            let kick = log.flush_kick.clone();
            // Sync mode waits for a kick only: no timer per group commit.
            let timer = async_mode.then(|| log.clock.sleep_until(log.clock.now() + interval));
            drop(log);
            let kicked = match timer {
                Some(timer) => runtime::first_or_timeout(kick.wait(), timer).await.is_some(),
                None => {
                    kick.wait().await;
                    true
                }
            };
            let Some(log) = weak.upgrade() else { return };
            let st = log.st.borrow();
            if !kicked && st.append_pos > st.durable {
                drop(st);
                // flush_interval_ms elapsed with data pending: flush it.
                log.st.borrow_mut().flush_requested = true;
            }
            continue;
        }
        if let Err(reason) = flush_once(&log).await {
            log.fail(reason);
            return;
        }
    }
}

/// One group commit. Err is a failed write or sync (the log must stop).
pub(super) async fn flush_once<D: LogDir + 'static>(
    log: &Rc<CommitLog<D>>,
) -> std::result::Result<(), String> {
    let started = log.clock.now();
    let (target, from) = {
        let mut st = log.st.borrow_mut();
        st.flush_requested = false;
        log.dispatch_head(&mut st);
        (st.append_pos, st.durable)
    };
    loop {
        {
            let st = log.st.borrow();
            if let Some(r) = st.life.failure() {
                return Err(r.to_string());
            }
            if st.tracker.written() >= target {
                break;
            }
        }
        log.written_changed.wait().await;
    }
    let written = log.clock.now();
    let to_sync: Vec<Rc<Segment<D::File>>> = {
        let st = log.st.borrow();
        st.segments.values().filter(|s| s.unsynced.replace(false)).cloned().collect()
    };
    for seg in to_sync {
        let started = log.clock.now();
        seg.file
            .sync_data()
            .await
            .map_err(|e| format!("fdatasync of {} failed: {e}", segment_name(seg.base)))?;
        let took = log.clock.now().saturating_duration_since(started);
        log.probe.borrow_mut().fsync_latency.record(took);
    }
    let (ready, more) = {
        let mut st = log.st.borrow_mut();
        if let Some(r) = st.life.failure() {
            return Err(r.to_string());
        }
        st.durable = st.durable.max(target);
        let durable = st.durable;
        // Waiters are mostly in append order, but a flush() may have queued a later end before
        // an earlier append's waiter, so sweep them all.
        let mut ready = Vec::new();
        let mut rest = VecDeque::new();
        while let Some((end, tx)) = st.waiters.pop_front() {
            if end <= durable {
                ready.push(tx);
            } else {
                rest.push_back((end, tx));
            }
        }
        let more = !rest.is_empty();
        st.waiters = rest;
        log.probe.borrow_mut().flushes += 1;
        if more {
            st.flush_requested = true;
        }
        (ready, more)
    };
    // A group commit's timeline (`--log-level ringmq::storage::commit_log::flusher=trace`):
    // how much it made durable, how long it waited for its writes and for the fdatasync.
    tracing::trace!(
        bytes = target.get().saturating_sub(from.get()),
        writes_us = written.saturating_duration_since(started).as_micros() as u64,
        sync_us = log.clock.now().saturating_duration_since(written).as_micros() as u64,
        waiters = ready.len(),
        "group commit"
    );
    for tx in ready {
        let _ = tx.send(Ok(()));
    }
    // Newly durable batches may have their index entries written now (by the index task, so
    // index I/O never delays the next group commit).
    if log.index.wants_writeback() || log.checkpoint_due() {
        log.index_kick.notify();
    }
    if more {
        log.flush_kick.notify();
    }
    Ok(())
}
