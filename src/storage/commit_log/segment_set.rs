//! The segment set: the active segment, the next one created ahead of need, and the sealed
//! ones before them (`State::segments`, keyed by base position, and `State::next`).
//!
//! A roll seals the active segment with an end marker and switches to the next segment, which
//! is normally already created and preallocated in the background (started once the active
//! one is half full), so a roll only switches files. Without room for a segment, appends get
//! DiskFull and retry after a back-off (the policy is the pure state machine of
//! [`crate::storage::next_segment`]); any other failure to create one stops the log.
//!
//! Promises: the last segment is always the active one; a batch never spans two segments;
//! the next segment's base is aligned and at least one segment size after the active base.

use std::rc::Rc;

use super::{CommitLog, State};
use crate::format::batch::{self as fmt, Stamp, HEADER_LEN};
use crate::runtime;
use crate::storage::config::StorageConfig;
use crate::storage::error::{is_disk_full, Result, StorageError};
use crate::storage::file::LogDir;
use crate::storage::next_segment::{
    allocate_or_give_back, create_segment, ActiveStep, CreateFailure, RollStep,
};
use crate::storage::segment::{segment_name, Segment};
use crate::storage::types::LogPosition;

impl<F> State<F> {
    pub(super) fn active(&self) -> &Rc<Segment<F>> {
        self.segments.values().next_back().expect("a log always has an active segment")
    }
    pub(super) fn segment_for(&self, pos: LogPosition) -> Option<&Rc<Segment<F>>> {
        self.segments.range(..=pos).next_back().map(|(_, s)| s)
    }
}

impl<D: LogDir + 'static> CommitLog<D> {
    /// Seals the active segment with an end marker and switches to the next one. The next
    /// segment is normally ready (created in the background); the switch itself never awaits.
    /// If it cannot be created for lack of space, nothing changes and the append gets DiskFull.
    pub(super) async fn roll(self: &Rc<Self>) -> Result<()> {
        self.roll_with(None).await
    }

    /// [`Self::roll`], writing `mirrored` as the end marker instead of a new one (a replica
    /// mirrors its master's marker byte for byte).
    pub(super) async fn roll_with(
        self: &Rc<Self>,
        mirrored: Option<&[u8; HEADER_LEN]>,
    ) -> Result<()> {
        let marker_len = HEADER_LEN as u64;
        let (old_base, sealed_end) = {
            let st = self.st.borrow();
            let active = st.active();
            (active.base, active.sealed_end.get().unwrap_or(st.append_pos + marker_len))
        };
        let next_base = next_segment_base(old_base, sealed_end, &self.config);
        let seg = self.next_segment_for_roll(old_base, next_base).await?;
        // Reserve after the wait above: the flusher may have dispatched the head chunk
        // meanwhile. Nothing awaits between this and the switch.
        if self.st.borrow().active().sealed_end.get().is_none() {
            self.reserve(marker_len as usize).await?;
        }
        let mut st = self.st.borrow_mut();
        let active = st.active().clone();
        if active.sealed_end.get().is_none() {
            let marker = match mirrored {
                Some(m) => *m,
                None => {
                    let ts = self.clock.unix_ms().max(st.last_store_ts);
                    fmt::control_batch(
                        &Stamp {
                            topic_id: 0,
                            queue_id: 0,
                            base_offset: 0,
                            store_timestamp_ms: ts,
                            epoch: self.epoch.get(),
                        },
                        0,
                    )
                }
            };
            assert_eq!(marker.len() as u64, marker_len, "end marker is a bare header");
            self.put(&mut st, &marker);
            assert_eq!(st.append_pos, sealed_end, "the roll was planned for this end");
            active.sealed_end.set(Some(st.append_pos));
            self.dispatch_head(&mut st);
        }
        // The carried block belongs to the sealed segment; the next segment starts fresh.
        if let Some(h) = st.head.take() {
            st.spare_permits.push(h.permit);
        }
        st.carry = None;
        st.tracker.skip_to(next_base);
        st.append_pos = next_base;
        st.segments.insert(next_base, seg);
        self.retention_kick.notify();
        Ok(())
    }

    /// The segment at `base` for a roll: the one prepared in the background, or a new one.
    pub(super) async fn next_segment_for_roll(
        self: &Rc<Self>,
        old_base: LogPosition,
        base: LogPosition,
    ) -> Result<Rc<Segment<D::File>>> {
        loop {
            let step = self.st.borrow_mut().next.for_roll(base, self.clock.now());
            match step {
                RollStep::Use(seg) => return Ok(seg),
                RollStep::Wait => {
                    self.next_changed.wait().await;
                    self.check_writable()?;
                }
                RollStep::Discard { base: stale, seg } => {
                    drop(seg);
                    self.remove_unused_segment(stale).await;
                }
                RollStep::DiskFull(reason) => return Err(self.disk_full_error(reason).await),
                RollStep::CreateNow => {
                    let created = create_segment(&self.dir, &self.config, base).await;
                    let now = self.clock.now();
                    match created {
                        Ok(seg) => {
                            let seg = Rc::new(seg);
                            let mut st = self.st.borrow_mut();
                            if let Some(seg) = st.next.created(base, Ok(seg), now) {
                                return Ok(seg);
                            }
                        }
                        Err(e) => {
                            let failure = CreateFailure::from_io(&e);
                            self.st.borrow_mut().next.created(base, Err(failure.clone()), now);
                            if failure.disk_full {
                                return Err(self.disk_full_error(failure.reason).await);
                            }
                            let reason = format!(
                                "cannot create segment after {}: {e}",
                                segment_name(old_base)
                            );
                            self.fail(reason.clone());
                            return Err(self.failed_error(&reason));
                        }
                    }
                }
            }
        }
    }

    /// Starts creating the next segment in the background once the active one is half full.
    pub(super) fn prepare_next_segment(self: &Rc<Self>) {
        let base = {
            let mut st = self.st.borrow_mut();
            if !st.life.is_open() {
                return;
            }
            let active = st.active().clone();
            let filled = st.append_pos - active.base;
            if active.sealed_end.get().is_some() || filled * 2 < self.config.segment_size_bytes {
                return;
            }
            let base =
                next_segment_base(active.base, st.append_pos + HEADER_LEN as u64, &self.config);
            if !st.next.start_background(base, self.clock.now()) {
                return;
            }
            base
        };
        let log = self.clone();
        runtime::spawn_detached(async move {
            // The appender may still hold the state borrow; run after it returns.
            runtime::yield_once().await;
            let created = create_segment(&log.dir, &log.config, base).await;
            let outcome = match created {
                Ok(seg) => Ok(Rc::new(seg)),
                Err(e) => {
                    tracing::warn!(
                        segment = %segment_name(base),
                        "creating the next segment ahead of need failed: {e}"
                    );
                    Err(CreateFailure::from_io(&e))
                }
            };
            let unused = log.st.borrow_mut().next.created(base, outcome, log.clock.now());
            if unused.is_some() {
                drop(unused);
                log.remove_unused_segment(base).await;
            }
            log.next_changed.notify();
            log.retention_kick.notify();
        });
    }

    /// Deletes a created segment the log will not use (best effort: recovery discards it too).
    pub(super) async fn remove_unused_segment(&self, base: LogPosition) {
        match self.dir.remove(&segment_name(base)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                segment = %segment_name(base),
                "could not remove an unused pre-created segment: {e}"
            ),
        }
    }

    /// Preallocates the active segment if recovery could not (disk full), at most once per
    /// retry interval; DiskFull while it still does not fit.
    pub(super) async fn ensure_active_reserved(&self) -> Result<()> {
        let step = self.st.borrow().next.active_step(self.clock.now());
        match step {
            ActiveStep::Reserved => return Ok(()),
            ActiveStep::DiskFull(reason) => return Err(self.disk_full_error(reason).await),
            ActiveStep::AllocateNow => {}
        }
        let active = self.st.borrow().active().clone();
        let outcome = allocate_or_give_back(&*active.file, self.config.segment_size_bytes).await;
        let now = self.clock.now();
        match outcome {
            Ok(()) => {
                self.st.borrow_mut().next.active_result(Ok(()), now);
                Ok(())
            }
            Err(e) if is_disk_full(&e) => {
                self.st.borrow_mut().next.active_result(Err(e.to_string()), now);
                Err(self.disk_full_error(e.to_string()).await)
            }
            Err(e) => {
                let reason = format!(
                    "preallocating active segment {} failed: {e}",
                    segment_name(active.base)
                );
                self.fail(reason.clone());
                Err(self.failed_error(&reason))
            }
        }
    }

    pub(super) async fn disk_full_error(&self, reason: String) -> StorageError {
        let free_bytes = match self.dir.disk_usage().await {
            Ok((used, total)) => total.saturating_sub(used),
            Err(_) => 0,
        };
        StorageError::DiskFull {
            dir: self.dir.path().to_path_buf(),
            needed_bytes: self.config.segment_size_bytes,
            free_bytes,
            reason,
        }
    }

    /// Why appends get DISK_FULL now, if they do.
    pub fn disk_full(&self) -> Option<String> {
        self.st.borrow().next.disk_full_reason().map(str::to_string)
    }
}

/// Where the segment after one based at `base` and sealed at `sealed_end` starts (robust to
/// `segment_size_bytes` changing between runs).
pub(super) fn next_segment_base(
    base: LogPosition,
    sealed_end: LogPosition,
    config: &StorageConfig,
) -> LogPosition {
    (base + config.segment_size_bytes).max(sealed_end.align_up())
}
