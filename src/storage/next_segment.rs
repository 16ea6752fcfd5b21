//! The segment after the active one: created ahead of need, and the log's answer to a full disk.
//!
//! Owned by one [`super::CommitLog`], on its shard's executor.
//!
//! # Created ahead of need
//! Creating a segment means opening a new file, fallocating its full size (1 GiB by default)
//! and fsyncing the directory: milliseconds to seconds on a busy disk. If a roll did that, every
//! append behind it would stall. So once the active segment is half full the log starts a
//! background task that creates the next one; the roll then only writes the end marker and
//! switches files. A roll that finds the creation still running waits for it (the only case
//! where an append waits for file creation); one that finds none starts it itself.
//!
//! # Disk full
//! ENOSPC (or EDQUOT) while creating or preallocating a segment is not a failed write: nothing
//! was written, so nothing is lost. The partial file is removed (see [`create_segment`]), the
//! failure is remembered with a time before which nobody tries again (`disk_full_retry_ms`),
//! and appends that need the new segment get [`super::StorageError::DiskFull`] at once. Reads,
//! appends that still fit the active segment, and retention go on. The first append after the
//! retry time (or right after retention freed space) tries again, so writes resume by
//! themselves once space is free, at most one attempt per interval: no busy loop.
//! A failed *write or fsync of data* is different: the log stops (see `commit_log`).
//!
//! The queue index files are the other thing that grows: ENOSPC writing them (or the index
//! checkpoint) is the same kind of shortage. Their unwritten entries stay in memory, so appends
//! get DiskFull (keeping that memory within the index budget) until a retry after the same
//! back-off writes them ([`IndexStep`]); reads go on. A failed sync of the index files (the
//! checkpoint's `syncfs`) still stops the log, ENOSPC included: the files' page-cache state is
//! unknown after it.
//!
//! At recovery the same rule holds: if the active segment cannot be preallocated, or a sealed
//! last segment has no successor and one cannot be created, the log still opens for reads and
//! reports DISK_FULL to appends until the space is there ([`Shortage`]).
//!
//! [`NextSegment`] is the pure state machine (no I/O, no clock reads: `now` is passed in);
//! [`create_segment`] is the I/O.

use std::io;
use std::time::{Duration, Instant};

use super::config::StorageConfig;
use super::error::is_disk_full;
use super::file::{LogDir, LogFile};
use super::segment::{segment_name, Segment};
use super::types::LogPosition;

/// Why the last creation attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFailure {
    pub reason: String,
    /// ENOSPC/EDQUOT: retried after the interval. Anything else stops the log at the roll
    /// that needs the segment (after one more attempt there).
    pub disk_full: bool,
}

impl CreateFailure {
    pub fn from_io(e: &io::Error) -> Self {
        CreateFailure { reason: e.to_string(), disk_full: is_disk_full(e) }
    }
}

/// What recovery could not reserve for lack of space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortage {
    /// The active segment could not be preallocated to its full size.
    ActiveUnallocated { reason: String },
    /// The last segment is sealed and its successor at `base` could not be created.
    NoNextSegment { base: LogPosition, reason: String },
}

#[derive(Debug)]
enum Prep<S> {
    Idle,
    /// A task is creating the segment at `base`.
    Creating {
        base: LogPosition,
    },
    /// Created, preallocated, its name durable: a roll switches to it.
    Ready {
        base: LogPosition,
        seg: S,
    },
    Failed {
        base: LogPosition,
        failure: CreateFailure,
        retry_at: Instant,
    },
}

/// What a roll to the segment at `base` must do.
#[derive(Debug)]
pub enum RollStep<S> {
    /// Switch to this segment.
    Use(S),
    /// A segment prepared at another base (the segment size changed): delete it, then ask again.
    Discard { base: LogPosition, seg: S },
    /// Creation is running: wait for it to finish, then ask again.
    Wait,
    /// No space, and the retry time has not come: fail this append with DISK_FULL.
    DiskFull(String),
    /// Create it now (the state is `Creating`; report the outcome with [`NextSegment::created`]).
    CreateNow,
}

/// What an append must do about the queue index (see [`NextSegment::index_step`]).
#[derive(Debug, PartialEq, Eq)]
pub enum IndexStep {
    /// The index is being written: go on.
    Writable,
    /// Writing it failed for lack of space; try again now and report with
    /// [`NextSegment::index_result`].
    RetryNow,
    /// Writing it failed for lack of space, and the retry time has not come.
    DiskFull(String),
}

/// What an append must do about the active segment's reservation.
#[derive(Debug, PartialEq, Eq)]
pub enum ActiveStep {
    /// Fully reserved: go on.
    Reserved,
    /// Not reserved; try to preallocate it now and report with [`NextSegment::active_result`].
    AllocateNow,
    /// Not reserved, and the retry time has not come.
    DiskFull(String),
}

/// The next segment's preparation and the disk-full back-off. See the module documentation.
#[derive(Debug)]
pub struct NextSegment<S> {
    prep: Prep<S>,
    /// Set while the active segment lacks its preallocation: (reason, retry_at).
    active_short: Option<(String, Instant)>,
    /// Set while the queue index could not be written for lack of space: (reason, retry_at).
    index_short: Option<(String, Instant)>,
    retry_interval: Duration,
}

impl<S> NextSegment<S> {
    pub fn new(retry_interval: Duration) -> Self {
        NextSegment { prep: Prep::Idle, active_short: None, index_short: None, retry_interval }
    }

    /// The state after recovery: a shortage is remembered as a disk-full failure whose retry
    /// time is one interval away.
    pub fn after_recovery(
        retry_interval: Duration,
        shortage: Option<Shortage>,
        now: Instant,
    ) -> Self {
        let mut n = Self::new(retry_interval);
        let retry_at = now + retry_interval;
        match shortage {
            None => {}
            Some(Shortage::ActiveUnallocated { reason }) => {
                n.active_short = Some((reason, retry_at))
            }
            Some(Shortage::NoNextSegment { base, reason }) => {
                n.prep = Prep::Failed {
                    base,
                    failure: CreateFailure { reason, disk_full: true },
                    retry_at,
                }
            }
        }
        n
    }

    /// Whether a background creation of the segment at `base` should start now; if so the
    /// state becomes `Creating` and the caller must report the outcome with [`Self::created`].
    pub fn start_background(&mut self, base: LogPosition, now: Instant) -> bool {
        if self.active_short.is_some() {
            // The active segment is short of space itself; the roll path retries both.
            return false;
        }
        let start = match &self.prep {
            Prep::Idle => true,
            Prep::Failed { retry_at, .. } => now >= *retry_at,
            Prep::Creating { .. } | Prep::Ready { .. } => false,
        };
        if start {
            self.prep = Prep::Creating { base };
        }
        start
    }

    /// Records the outcome of a creation started by [`Self::start_background`] or
    /// [`RollStep::CreateNow`]. Returns the segment back if nobody expects it any more (the
    /// caller then deletes its file).
    pub fn created(
        &mut self,
        base: LogPosition,
        outcome: Result<S, CreateFailure>,
        now: Instant,
    ) -> Option<S> {
        if !matches!(self.prep, Prep::Creating { base: b } if b == base) {
            return outcome.ok();
        }
        self.prep = match outcome {
            Ok(seg) => Prep::Ready { base, seg },
            Err(failure) => Prep::Failed { base, failure, retry_at: now + self.retry_interval },
        };
        None
    }

    /// What a roll to the segment at `base` does now.
    pub fn for_roll(&mut self, base: LogPosition, now: Instant) -> RollStep<S> {
        match std::mem::replace(&mut self.prep, Prep::Idle) {
            Prep::Ready { base: b, seg } if b == base => RollStep::Use(seg),
            Prep::Ready { base: b, seg } => RollStep::Discard { base: b, seg },
            Prep::Creating { base: b } => {
                self.prep = Prep::Creating { base: b };
                RollStep::Wait
            }
            Prep::Failed { base: b, failure, retry_at } if failure.disk_full && now < retry_at => {
                let reason = failure.reason.clone();
                self.prep = Prep::Failed { base: b, failure, retry_at };
                RollStep::DiskFull(reason)
            }
            Prep::Idle | Prep::Failed { .. } => {
                self.prep = Prep::Creating { base };
                RollStep::CreateNow
            }
        }
    }

    /// What an append does about the active segment's own reservation.
    pub fn active_step(&self, now: Instant) -> ActiveStep {
        match &self.active_short {
            None => ActiveStep::Reserved,
            Some((_, retry_at)) if now >= *retry_at => ActiveStep::AllocateNow,
            Some((reason, _)) => ActiveStep::DiskFull(reason.clone()),
        }
    }

    /// Records the outcome of [`ActiveStep::AllocateNow`] (`Err(reason)` for lack of space).
    pub fn active_result(&mut self, outcome: Result<(), String>, now: Instant) {
        self.active_short = match outcome {
            Ok(()) => None,
            Err(reason) => Some((reason, now + self.retry_interval)),
        };
    }

    /// What an append does about the queue index: its unwritten entries stay in memory, so
    /// while they cannot be written appends get DISK_FULL (bounding that memory).
    pub fn index_step(&self, now: Instant) -> IndexStep {
        match &self.index_short {
            None => IndexStep::Writable,
            Some((_, retry_at)) if now >= *retry_at => IndexStep::RetryNow,
            Some((reason, _)) => IndexStep::DiskFull(reason.clone()),
        }
    }

    /// Records the outcome of writing the index (`Err(reason)` for lack of space).
    pub fn index_result(&mut self, outcome: Result<(), String>, now: Instant) {
        self.index_short = match outcome {
            Ok(()) => None,
            Err(reason) => Some((reason, now + self.retry_interval)),
        };
    }

    /// Space was freed (retention deleted files): the next attempt need not wait.
    pub fn space_freed(&mut self, now: Instant) {
        if let Prep::Failed { retry_at, .. } = &mut self.prep {
            *retry_at = now;
        }
        if let Some((_, retry_at)) = &mut self.active_short {
            *retry_at = now;
        }
        if let Some((_, retry_at)) = &mut self.index_short {
            *retry_at = now;
        }
    }

    pub fn is_creating(&self) -> bool {
        matches!(self.prep, Prep::Creating { .. })
    }

    /// Takes a prepared segment (when the log closes).
    pub fn take_ready(&mut self) -> Option<(LogPosition, S)> {
        match std::mem::replace(&mut self.prep, Prep::Idle) {
            Prep::Ready { base, seg } => Some((base, seg)),
            other => {
                self.prep = other;
                None
            }
        }
    }

    /// The reason appends get DISK_FULL now, if they do (for status reports).
    pub fn disk_full_reason(&self) -> Option<&str> {
        if let Some((reason, _)) = &self.active_short {
            return Some(reason);
        }
        if let Some((reason, _)) = &self.index_short {
            return Some(reason);
        }
        match &self.prep {
            Prep::Failed { failure, .. } if failure.disk_full => Some(&failure.reason),
            _ => None,
        }
    }
}

/// Creates the segment at `base`: opens the file, empties it (a stale file of that name may
/// exist), preallocates `segment_size_bytes` when configured, and makes the name durable.
/// On failure the partial file is removed, so a failed creation on a full disk does not keep
/// the space it grabbed (filesystems may keep a partial fallocate).
pub async fn create_segment<D: LogDir>(
    dir: &D,
    config: &StorageConfig,
    base: LogPosition,
) -> io::Result<Segment<D::File>> {
    let name = segment_name(base);
    let file = dir.open(&name, true).await?;
    let prepared = async {
        file.truncate(0).await?;
        if config.preallocate {
            preallocate(&file, config.segment_size_bytes).await?;
        }
        dir.sync_dir().await
    }
    .await;
    match prepared {
        Ok(()) => Ok(Segment::new(base, file, config.segment_size_bytes)),
        Err(e) => {
            drop(file);
            match dir.remove(&name).await {
                Ok(()) => {}
                Err(r) if r.kind() == io::ErrorKind::NotFound => {}
                Err(r) => tracing::warn!(
                    segment = %name,
                    "could not remove a segment whose creation failed ({e}): {r}"
                ),
            }
            Err(e)
        }
    }
}

/// Reserves a segment's space up front (fewer extent allocations while appending, and no
/// ENOSPC on a data write later). Filesystems without fallocate (ramfs, some network
/// filesystems) just skip it.
pub async fn preallocate<F: LogFile>(file: &F, len: u64) -> io::Result<()> {
    match file.allocate(len).await {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::debug!("filesystem does not support fallocate; segments grow as written");
            Ok(())
        }
        other => other,
    }
}

/// Preallocates an existing segment to `len`; when that fails for lack of space, gives back
/// what a partial fallocate took (truncating to the size before), so metadata writes still fit.
pub async fn allocate_or_give_back<F: LogFile>(file: &F, len: u64) -> io::Result<()> {
    let before = file.size().await?;
    match preallocate(file, len).await {
        Err(e) if is_disk_full(&e) => {
            if let Err(t) = file.truncate(before).await {
                tracing::warn!("could not give back a partial preallocation: {t}");
            }
            Err(e)
        }
        other => other,
    }
}

/// When `disk_max_used_ratio` leaves less than one segment of a `total_bytes` filesystem free
/// (retention, under the ratio, deletes nothing while the next segment cannot be allocated):
/// the highest ratio that leaves one, in hundredths. None when it leaves one, or at 1.0 (no
/// deleting for disk usage at all).
pub fn ratio_short_of_a_segment(
    total_bytes: u64,
    segment_size_bytes: u64,
    disk_max_used_ratio: f64,
) -> Option<f64> {
    let room = total_bytes as f64 * (1.0 - disk_max_used_ratio);
    if disk_max_used_ratio >= 1.0 || room >= segment_size_bytes as f64 {
        return None;
    }
    let fits = 1.0 - segment_size_bytes as f64 / total_bytes.max(1) as f64;
    Some((fits * 100.0).floor() / 100.0)
}

/// A start-up warning when the filesystem cannot hold what the log needs to keep writing: two
/// segments in all (the active one and the next), room for the next segment above the fill at
/// which retention starts deleting for disk usage (`disk_max_used_ratio`), or one more
/// segment in its free space; or a fill already over that ratio (the first retention run then
/// deletes segments of any age).
pub fn space_warning(
    used_bytes: u64,
    total_bytes: u64,
    segment_size_bytes: u64,
    disk_max_used_ratio: f64,
) -> Option<String> {
    let free = total_bytes.saturating_sub(used_bytes);
    if total_bytes < 2 * segment_size_bytes {
        return Some(format!(
            "the data filesystem holds {total_bytes} bytes, less than two segments of \
             segment_size_bytes = {segment_size_bytes}: the first roll will report DISK_FULL; \
             lower segment_size_bytes or use a larger disk"
        ));
    }
    if let Some(fits) =
        ratio_short_of_a_segment(total_bytes, segment_size_bytes, disk_max_used_ratio)
    {
        return Some(format!(
            "the data filesystem holds {total_bytes} bytes: at disk_max_used_ratio = \
             {disk_max_used_ratio}, where retention starts deleting for disk usage, less than \
             one segment (segment_size_bytes = {segment_size_bytes}) is left free, so the log \
             can reach DISK_FULL for its next segment while retention deletes nothing; set \
             disk_max_used_ratio to at most {fits:.2} or lower segment_size_bytes"
        ));
    }
    if free < segment_size_bytes {
        return Some(format!(
            "the data filesystem has {free} bytes free, less than one segment of \
             segment_size_bytes = {segment_size_bytes}: the next roll will report DISK_FULL \
             until retention or an operator frees space"
        ));
    }
    let fill = used_bytes as f64 / total_bytes.max(1) as f64;
    if fill > disk_max_used_ratio {
        return Some(format!(
            "the data filesystem is {:.1}% full, over disk_max_used_ratio ({disk_max_used_ratio}): \
             retention deletes the oldest segments, younger than retention_hours too, until it \
             is below",
            fill * 100.0
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_millis(1000);

    fn p(pos: u64) -> LogPosition {
        LogPosition::new(pos)
    }

    fn full(reason: &str) -> CreateFailure {
        CreateFailure { reason: reason.into(), disk_full: true }
    }

    #[test]
    fn an_unwritable_index_is_disk_full_until_a_retry_succeeds() {
        let t0 = Instant::now();
        let mut n: NextSegment<&str> = NextSegment::new(RETRY);
        assert_eq!(n.index_step(t0), IndexStep::Writable);
        n.index_result(Err("ENOSPC".into()), t0);
        assert_eq!(n.index_step(t0), IndexStep::DiskFull("ENOSPC".into()));
        assert_eq!(n.disk_full_reason(), Some("ENOSPC"));
        assert_eq!(n.index_step(t0 + RETRY), IndexStep::RetryNow);
        // A failed retry waits another interval; freed space makes the retry due at once.
        n.index_result(Err("still".into()), t0 + RETRY);
        assert!(matches!(n.index_step(t0 + RETRY), IndexStep::DiskFull(_)));
        n.space_freed(t0 + RETRY);
        assert_eq!(n.index_step(t0 + RETRY), IndexStep::RetryNow);
        n.index_result(Ok(()), t0 + RETRY);
        assert_eq!(n.index_step(t0 + RETRY), IndexStep::Writable);
        assert_eq!(n.disk_full_reason(), None);
    }

    #[test]
    fn background_creation_is_used_by_the_roll() {
        let t0 = Instant::now();
        let mut n: NextSegment<&str> = NextSegment::new(RETRY);
        assert!(n.start_background(p(100), t0));
        assert!(!n.start_background(p(100), t0), "one creation at a time");
        assert!(matches!(n.for_roll(p(100), t0), RollStep::Wait));
        assert!(n.created(p(100), Ok("seg"), t0).is_none());
        assert!(matches!(n.for_roll(p(100), t0), RollStep::Use("seg")));
        // After the switch, the next one can be prepared again.
        assert!(n.start_background(p(200), t0));
    }

    #[test]
    fn a_roll_without_preparation_creates_now_and_a_wrong_base_is_discarded() {
        let t0 = Instant::now();
        let mut n: NextSegment<&str> = NextSegment::new(RETRY);
        assert!(matches!(n.for_roll(p(100), t0), RollStep::CreateNow));
        assert!(n.is_creating());
        n.created(p(100), Ok("a"), t0);
        assert!(
            matches!(n.for_roll(p(300), t0), RollStep::Discard { base, seg: "a" } if base == p(100))
        );
        assert!(matches!(n.for_roll(p(300), t0), RollStep::CreateNow));
        // An outcome nobody waits for any more is handed back for deletion.
        assert_eq!(n.created(p(999), Ok("stale"), t0), Some("stale"));
    }

    #[test]
    fn disk_full_backs_off_and_retries_once_per_interval() {
        let t0 = Instant::now();
        let mut n: NextSegment<&str> = NextSegment::new(RETRY);
        assert!(matches!(n.for_roll(p(100), t0), RollStep::CreateNow));
        n.created(p(100), Err(full("No space left on device")), t0);
        assert_eq!(n.disk_full_reason(), Some("No space left on device"));
        // Within the interval: DISK_FULL at once, no attempt, no background start.
        let soon = t0 + RETRY / 2;
        assert!(
            matches!(n.for_roll(p(100), soon), RollStep::DiskFull(r) if r.contains("No space"))
        );
        assert!(!n.start_background(p(100), soon));
        // After it: one attempt.
        let later = t0 + RETRY;
        assert!(matches!(n.for_roll(p(100), later), RollStep::CreateNow));
        assert!(matches!(n.for_roll(p(100), later), RollStep::Wait));
        n.created(p(100), Ok("seg"), later);
        assert!(matches!(n.for_roll(p(100), later), RollStep::Use("seg")));
        assert_eq!(n.disk_full_reason(), None);
    }

    #[test]
    fn freed_space_makes_the_retry_due_at_once() {
        let t0 = Instant::now();
        let mut n: NextSegment<&str> = NextSegment::new(RETRY);
        assert!(n.start_background(p(100), t0));
        n.created(p(100), Err(full("ENOSPC")), t0);
        assert!(!n.start_background(p(100), t0));
        n.space_freed(t0);
        assert!(n.start_background(p(100), t0));
    }

    #[test]
    fn other_failures_are_retried_by_the_roll_without_waiting() {
        let t0 = Instant::now();
        let mut n: NextSegment<&str> = NextSegment::new(RETRY);
        assert!(n.start_background(p(100), t0));
        n.created(p(100), Err(CreateFailure { reason: "EIO".into(), disk_full: false }), t0);
        assert_eq!(n.disk_full_reason(), None);
        assert!(matches!(n.for_roll(p(100), t0), RollStep::CreateNow));
    }

    #[test]
    fn recovery_shortages_block_appends_until_retried() {
        let t0 = Instant::now();
        let short = Shortage::ActiveUnallocated { reason: "ENOSPC".into() };
        let mut n: NextSegment<&str> = NextSegment::after_recovery(RETRY, Some(short), t0);
        assert_eq!(n.active_step(t0), ActiveStep::DiskFull("ENOSPC".into()));
        assert!(
            !n.start_background(p(100), t0),
            "no background creation while the active is short"
        );
        assert_eq!(n.active_step(t0 + RETRY), ActiveStep::AllocateNow);
        n.active_result(Err("still ENOSPC".into()), t0 + RETRY);
        assert_eq!(n.active_step(t0 + RETRY), ActiveStep::DiskFull("still ENOSPC".into()));
        n.space_freed(t0 + RETRY);
        assert_eq!(n.active_step(t0 + RETRY), ActiveStep::AllocateNow);
        n.active_result(Ok(()), t0 + RETRY);
        assert_eq!(n.active_step(t0 + RETRY), ActiveStep::Reserved);

        let short = Shortage::NoNextSegment { base: p(100), reason: "ENOSPC".into() };
        let mut n: NextSegment<&str> = NextSegment::after_recovery(RETRY, Some(short), t0);
        assert!(matches!(n.for_roll(p(100), t0), RollStep::DiskFull(_)));
        assert!(matches!(n.for_roll(p(100), t0 + RETRY), RollStep::CreateNow));
    }

    #[test]
    fn space_warning_names_the_knob() {
        let seg = 1 << 30;
        assert!(space_warning(0, 10 * seg, seg, 0.85).is_none());
        let w = space_warning(0, seg + seg / 2, seg, 0.85).unwrap();
        assert!(w.contains("two segments") && w.contains("segment_size_bytes"), "{w}");
        let w = space_warning(9 * seg + 1, 10 * seg, seg, 0.85).unwrap();
        assert!(w.contains("free") && w.contains("DISK_FULL"), "{w}");
        // 6 GiB at 0.85 leaves 0.9 GiB above the ratio: the next 1 GiB segment may not fit
        // while retention, under the ratio, deletes nothing.
        let w = space_warning(0, 6 * seg, seg, 0.85).unwrap();
        assert!(w.contains("disk_max_used_ratio to at most 0.83"), "{w}");
        assert!(space_warning(0, 6 * seg, seg, 0.8).is_none());
        assert!(space_warning(0, 6 * seg, seg, 1.0).is_none(), "1.0: no deleting for disk usage");
        // Room for segments, but already over the ratio: retention deletes unexpired ones.
        let w = space_warning(86 * seg / 10, 10 * seg, seg, 0.85).unwrap();
        assert!(w.contains("86.0% full, over disk_max_used_ratio (0.85)"), "{w}");
        assert!(space_warning(84 * seg / 10, 10 * seg, seg, 0.85).is_none());
    }
}
