//! Segment files: the commit log is a sequence of fixed-size files named by the log position of
//! their first byte (20 digits, so names sort in log order), e.g. `00000000001073741824.log`.
//! A batch never spans two segments: when one does not fit, the appender writes an
//! end-of-segment control batch and continues at the next segment's base.

use std::cell::Cell;
use std::rc::Rc;

use super::types::LogPosition;

pub const SEGMENT_SUFFIX: &str = ".log";
/// Per-segment index files of an earlier version (replaced by the queue index); recovery
/// deletes them.
pub const INDEX_SUFFIX: &str = ".index";

pub fn segment_name(base: LogPosition) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", base.get())
}

/// Parses a segment file name back into its base position.
pub fn parse_segment_name(name: &str) -> Option<LogPosition> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok().map(LogPosition::new))
        .flatten()
}

/// One open segment. Shared (Rc) between the appender, in-flight writes and readers; a reader
/// holding it keeps the file readable even if retention unlinks it meanwhile.
pub struct Segment<F> {
    pub base: LogPosition,
    pub file: Rc<F>,
    /// Bytes of log the segment spans, so no batch in it is longer: the configured segment size
    /// when it was created; when found at start, its file's size or sealed end if larger (an
    /// earlier configuration may have had larger segments, and a file not preallocated is only
    /// as long as what was written).
    pub capacity: u64,
    /// Log position one past the last batch, once the segment is sealed (end marker written).
    pub sealed_end: Cell<Option<LogPosition>>,
    /// Newest store timestamp of a batch in this segment (for time-based retention).
    pub max_store_timestamp_ms: Cell<i64>,
    /// Completed writes not yet covered by an fdatasync.
    pub unsynced: Cell<bool>,
}

impl<F> Segment<F> {
    pub fn new(base: LogPosition, file: F, capacity: u64) -> Self {
        Segment {
            base,
            file: Rc::new(file),
            capacity,
            sealed_end: Cell::new(None),
            max_store_timestamp_ms: Cell::new(i64::MIN),
            unsynced: Cell::new(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pos: u64) -> LogPosition {
        LogPosition::new(pos)
    }

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_name(p(0)), "00000000000000000000.log");
        assert_eq!(parse_segment_name(&segment_name(p(1 << 30))), Some(p(1 << 30)));
        assert_eq!(parse_segment_name("1.log"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.log"), None);
        assert!(segment_name(p(9)) < segment_name(p(10)));
    }
}
