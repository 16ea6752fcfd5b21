//! Tracks which byte ranges of the log are on disk, so the durable position only advances over
//! a *contiguous* run of completed writes (writes complete out of order under io_uring).
//!
//! Pure logic: the appender reports `dispatched(start, end)` in log order and `completed`
//! in any order; `written()` is the end of the longest completed prefix.

use std::collections::BTreeMap;

#[derive(Debug)]
pub struct WriteTracker {
    written: u64,
    /// Completed ranges beyond `written`: start -> end.
    completed: BTreeMap<u64, u64>,
    dispatched_end: u64,
}

impl WriteTracker {
    pub fn new(start: u64) -> Self {
        WriteTracker { written: start, completed: BTreeMap::new(), dispatched_end: start }
    }

    /// A write of valid bytes `[start, end)` was submitted. Ranges must be submitted in order and
    /// back to back (segment rolls skip ahead, which `skip_to` records).
    pub fn dispatched(&mut self, start: u64, end: u64) {
        assert_eq!(start, self.dispatched_end, "writes must be dispatched back to back");
        assert!(end >= start);
        self.dispatched_end = end;
    }

    /// The log jumps from the current dispatched end to `to` (the next segment's base) without
    /// writing the gap; the gap counts as written once everything before it is.
    pub fn skip_to(&mut self, to: u64) {
        assert!(to >= self.dispatched_end);
        let from = self.dispatched_end;
        self.dispatched_end = to;
        self.completed(from, to);
    }

    pub fn completed(&mut self, start: u64, end: u64) {
        assert!(start >= self.written, "range {start}..{end} completed twice");
        self.completed.insert(start, end);
        while let Some(end) = self.completed.remove(&self.written) {
            self.written = end;
        }
    }

    /// End of the contiguous prefix of completed writes.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn dispatched_end(&self) -> u64 {
        self.dispatched_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn advances_only_over_contiguous_prefix() {
        let mut t = WriteTracker::new(100);
        t.dispatched(100, 200);
        t.dispatched(200, 300);
        t.dispatched(300, 310);
        t.completed(200, 300);
        assert_eq!(t.written(), 100);
        t.completed(300, 310);
        assert_eq!(t.written(), 100);
        t.completed(100, 200);
        assert_eq!(t.written(), 310);
        t.skip_to(4096);
        assert_eq!(t.written(), 4096);
    }

    proptest! {
        #[test]
        fn any_completion_order_reaches_the_end(sizes in proptest::collection::vec(1u64..50, 1..30), seed in any::<u64>()) {
            let mut t = WriteTracker::new(0);
            let mut ranges = vec![];
            let mut pos = 0;
            for s in &sizes { t.dispatched(pos, pos + s); ranges.push((pos, pos + s)); pos += s; }
            let mut order: Vec<usize> = (0..ranges.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() { x ^= x << 13; x ^= x >> 7; x ^= x << 17; order.swap(i, (x % (i as u64 + 1)) as usize); }
            let mut done = vec![false; ranges.len()];
            for i in order {
                t.completed(ranges[i].0, ranges[i].1);
                done[i] = true;
                let prefix = done.iter().take_while(|d| **d).count();
                let expect = if prefix == 0 { 0 } else { ranges[prefix - 1].1 };
                prop_assert_eq!(t.written(), expect);
            }
        }
    }
}
