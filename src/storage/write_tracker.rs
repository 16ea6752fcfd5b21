//! Tracks which byte ranges of the log are on disk, so the durable position only advances over
//! a *contiguous* run of completed writes (writes complete out of order under io_uring).
//!
//! Pure logic: the appender reports `dispatched(start, end)` in log order and `completed`
//! in any order; `written()` is the end of the longest completed prefix.

use std::collections::BTreeMap;

use super::types::LogPosition;

#[derive(Debug)]
pub struct WriteTracker {
    written: LogPosition,
    /// Completed ranges beyond `written`: start -> end.
    completed: BTreeMap<LogPosition, LogPosition>,
    dispatched_end: LogPosition,
}

impl WriteTracker {
    pub fn new(start: LogPosition) -> Self {
        WriteTracker { written: start, completed: BTreeMap::new(), dispatched_end: start }
    }

    /// A write of valid bytes `[start, end)` was submitted. Ranges must be submitted in order and
    /// back to back (segment rolls skip ahead, which `skip_to` records).
    pub fn dispatched(&mut self, start: LogPosition, end: LogPosition) {
        assert_eq!(start, self.dispatched_end, "writes must be dispatched back to back");
        assert!(end >= start);
        self.dispatched_end = end;
    }

    /// The log jumps from the current dispatched end to `to` (the next segment's base) without
    /// writing the gap; the gap counts as written once everything before it is.
    pub fn skip_to(&mut self, to: LogPosition) {
        assert!(to >= self.dispatched_end);
        let from = self.dispatched_end;
        self.dispatched_end = to;
        self.completed(from, to);
    }

    pub fn completed(&mut self, start: LogPosition, end: LogPosition) {
        assert!(start >= self.written, "range {start}..{end} completed twice");
        self.completed.insert(start, end);
        while let Some(end) = self.completed.remove(&self.written) {
            self.written = end;
        }
    }

    /// End of the contiguous prefix of completed writes.
    pub fn written(&self) -> LogPosition {
        self.written
    }

    pub fn dispatched_end(&self) -> LogPosition {
        self.dispatched_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(pos: u64) -> LogPosition {
        LogPosition::new(pos)
    }

    #[test]
    fn advances_only_over_contiguous_prefix() {
        let mut t = WriteTracker::new(p(100));
        t.dispatched(p(100), p(200));
        t.dispatched(p(200), p(300));
        t.dispatched(p(300), p(310));
        t.completed(p(200), p(300));
        assert_eq!(t.written(), p(100));
        t.completed(p(300), p(310));
        assert_eq!(t.written(), p(100));
        t.completed(p(100), p(200));
        assert_eq!(t.written(), p(310));
        t.skip_to(p(4096));
        assert_eq!(t.written(), p(4096));
    }

    proptest! {
        #[test]
        fn any_completion_order_reaches_the_end(sizes in proptest::collection::vec(1u64..50, 1..30), seed in any::<u64>()) {
            let mut t = WriteTracker::new(p(0));
            let mut ranges = vec![];
            let mut pos = 0;
            for s in &sizes { t.dispatched(p(pos), p(pos + s)); ranges.push((pos, pos + s)); pos += s; }
            let mut order: Vec<usize> = (0..ranges.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() { x ^= x << 13; x ^= x >> 7; x ^= x << 17; order.swap(i, (x % (i as u64 + 1)) as usize); }
            let mut done = vec![false; ranges.len()];
            for i in order {
                t.completed(p(ranges[i].0), p(ranges[i].1));
                done[i] = true;
                let prefix = done.iter().take_while(|d| **d).count();
                let expect = if prefix == 0 { 0 } else { ranges[prefix - 1].1 };
                prop_assert_eq!(t.written(), p(expect));
            }
        }
    }
}
