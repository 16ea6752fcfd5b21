//! The log's lifecycle: `Open`, then possibly `Failed`, and finally `Closed`. Held in the log's
//! state on its shard; pure (no I/O), so the transitions are tested on their own.
//!
//! ```text
//!   Open ──fail──▶ Failed { reason }
//!     │                 │
//!     └─────close───────┴──close──▶ Closed { failure }
//! ```
//!
//! Only an open log can fail: the first failure's reason is the one reported, later ones (other
//! writes in flight when the first failed) change nothing. A log closes from `Open` or
//! `Failed`; a closed log remembers why it had stopped, so `CommitLog::failure` and every later
//! call keep reporting the failure instead of a plain "closed". Nothing leaves `Closed`.

/// Where a log is in its life. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Accepting appends.
    Open,
    /// Stopped by an I/O failure: no write is accepted until a restart recovers from disk.
    Failed { reason: String },
    /// Closed; `failure` is the reason it had failed before, if it had.
    Closed { failure: Option<String> },
}

impl Lifecycle {
    /// Open → Failed. True if this was the transition; false (nothing changes) if the log had
    /// already failed or was closed.
    pub(super) fn fail(&mut self, reason: String) -> bool {
        match self {
            Lifecycle::Open => {
                *self = Lifecycle::Failed { reason };
                true
            }
            Lifecycle::Failed { .. } | Lifecycle::Closed { .. } => false,
        }
    }

    /// Open or Failed → Closed. Returns the failure the log had stopped with, if any; closing
    /// a closed log changes nothing.
    pub(super) fn close(&mut self) -> Option<String> {
        match self {
            Lifecycle::Open => *self = Lifecycle::Closed { failure: None },
            Lifecycle::Failed { reason } => {
                *self = Lifecycle::Closed { failure: Some(std::mem::take(reason)) }
            }
            Lifecycle::Closed { .. } => {}
        }
        self.failure().map(str::to_string)
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self, Lifecycle::Open)
    }

    pub(super) fn is_closed(&self) -> bool {
        matches!(self, Lifecycle::Closed { .. })
    }

    /// Why the log stopped, if an I/O failure stopped it (also once closed).
    pub(super) fn failure(&self) -> Option<&str> {
        match self {
            Lifecycle::Failed { reason } | Lifecycle::Closed { failure: Some(reason) } => {
                Some(reason)
            }
            Lifecycle::Open | Lifecycle::Closed { failure: None } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_log_fails_once_keeping_the_first_reason() {
        let mut life = Lifecycle::Open;
        assert!(life.is_open() && !life.is_closed() && life.failure().is_none());
        assert!(life.fail("write failed".into()));
        assert_eq!(life, Lifecycle::Failed { reason: "write failed".into() });
        assert!(!life.is_open() && !life.is_closed());
        assert!(!life.fail("a later write failed too".into()), "only an open log can fail");
        assert_eq!(life.failure(), Some("write failed"));
    }

    #[test]
    fn an_open_log_closes_and_then_cannot_fail() {
        let mut life = Lifecycle::Open;
        assert_eq!(life.close(), None);
        assert_eq!(life, Lifecycle::Closed { failure: None });
        assert!(life.is_closed() && !life.is_open());
        assert!(!life.fail("too late".into()), "a closed log cannot fail");
        assert_eq!(life.failure(), None);
        assert_eq!(life.close(), None, "closing twice changes nothing");
        assert_eq!(life, Lifecycle::Closed { failure: None });
    }

    #[test]
    fn a_failed_log_closes_remembering_its_failure() {
        let mut life = Lifecycle::Open;
        life.fail("fdatasync failed".into());
        assert_eq!(life.close().as_deref(), Some("fdatasync failed"));
        assert_eq!(life, Lifecycle::Closed { failure: Some("fdatasync failed".into()) });
        assert!(life.is_closed());
        assert_eq!(life.failure(), Some("fdatasync failed"));
        assert!(!life.fail("another".into()));
        assert_eq!(life.close().as_deref(), Some("fdatasync failed"), "closing twice");
    }
}
