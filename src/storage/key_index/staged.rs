//! What the key index's reader took from the log and its writer has not indexed yet (pure).
//!
//! The reader follows the log up to its *written* end, while the chunk cache still holds the
//! bytes; the writer adds a batch to the index only once the log's *durable* end has passed it,
//! so the index never names a message a crash can take back. Between the two, the entries wait
//! here, in log order. Before this split the index read only durable bytes, and a slow fdatasync
//! (100-400 ms under a 1.7 GB/s write load on the reference machine) or its own checkpoint let
//! the log run more than the cache's 256 MiB ahead: from then on every byte was read back from
//! a disk busy with writes, and the index fell tens of GB behind (BENCHMARKS.md, 2026-12-04).
//!
//! Bounded: at most `max_entries` keys and [`MAX_SPANS`] spans wait; [`Staged::has_room`]
//! tells the reader when to wait for the writer. Batches without keys take no entry, and
//! neighbours among them are merged into one span of at most [`MAX_MERGED_SPAN_BYTES`], so a
//! writer waiting for durability has whole spans to take as the durable end moves on.

use std::collections::VecDeque;

use super::layout::Entry;
use crate::storage::LogPosition;

/// Spans waiting at most (each a batch with keys, or a run of batches without).
pub const MAX_SPANS: usize = 16_384;

/// Log bytes one merged span of batches without keys covers at most: the writer takes a span
/// whole, once the durable end is past all of it.
pub const MAX_MERGED_SPAN_BYTES: u64 = 1 << 20;

/// What the staged keys hold at most with a bound of `max_entries` (the reader also finishes
/// the step that reached it: the keys of up to `max_step_bytes` more of log come on top).
pub fn max_bytes(max_entries: usize) -> usize {
    max_entries * std::mem::size_of::<Entry>() + MAX_SPANS * std::mem::size_of::<Span>()
}

/// One batch with keys, or a run of neighbouring batches without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Where its first batch starts.
    pub position: LogPosition,
    /// Where its last batch ends.
    pub end: LogPosition,
    /// The keys of its one batch (empty for a run without keys).
    pub entries: Vec<Entry>,
}

/// The reader's entries waiting for the writer. See the module documentation.
#[derive(Debug)]
pub struct Staged {
    spans: VecDeque<Span>,
    entries: usize,
    max_entries: usize,
    /// Where the reader continues: the end of what it took.
    read_to: LogPosition,
}

impl Staged {
    /// Nothing waiting; the reader starts at `from` (the index's position).
    pub fn new(from: LogPosition, max_entries: usize) -> Self {
        Staged {
            spans: VecDeque::new(),
            entries: 0,
            max_entries: max_entries.max(1),
            read_to: from,
        }
    }

    /// Where the reader continues.
    pub fn read_to(&self) -> LogPosition {
        self.read_to
    }

    /// Keys waiting.
    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Whether the reader may take more: below both bounds.
    pub fn has_room(&self) -> bool {
        self.entries < self.max_entries && self.spans.len() < MAX_SPANS
    }

    /// Takes the batch from `position` to `end` with its keys. Batches come in log order;
    /// a gap (a segment's end, a range retention removed) is fine, a batch before
    /// [`Self::read_to`] is ignored (already taken).
    pub fn push(&mut self, position: LogPosition, end: LogPosition, entries: Vec<Entry>) {
        if position < self.read_to || end <= position {
            return;
        }
        self.read_to = end;
        if entries.is_empty() {
            if let Some(last) = self.spans.back_mut() {
                let merged = end.get() - last.position.get();
                if last.entries.is_empty()
                    && last.end == position
                    && merged <= MAX_MERGED_SPAN_BYTES
                {
                    last.end = end;
                    return;
                }
            }
        }
        self.entries += entries.len();
        self.spans.push_back(Span { position, end, entries });
    }

    /// Notes that the reader continues at `to` (past the batches it took: the log holds
    /// nothing more to index before it). Never moves back.
    pub fn skip_to(&mut self, to: LogPosition) {
        self.read_to = self.read_to.max(to);
    }

    /// The oldest span if all of it lies below `durable`.
    pub fn pop_durable(&mut self, durable: LogPosition) -> Option<Span> {
        if self.spans.front()?.end > durable {
            return None;
        }
        let span = self.spans.pop_front()?;
        self.entries -= span.entries.len();
        Some(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(p: u64) -> LogPosition {
        LogPosition::new(p)
    }

    fn keys(n: usize, offset: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                key_hash: i as u32,
                topic_id: 1,
                queue_id: 0,
                offset: offset + i as u64,
                store_ms: 5,
            })
            .collect()
    }

    #[test]
    fn spans_leave_in_log_order_once_durable_and_keyless_neighbours_merge() {
        let mut s = Staged::new(pos(100), 1000);
        s.push(pos(100), pos(200), vec![]);
        s.push(pos(200), pos(300), vec![]);
        s.push(pos(300), pos(400), keys(2, 0));
        s.push(pos(400), pos(500), vec![]);
        assert_eq!(s.read_to(), pos(500));
        assert_eq!(s.entries(), 2);
        assert_eq!(s.pop_durable(pos(250)), None, "the merged run is not all durable");
        let run = s.pop_durable(pos(350)).unwrap();
        assert_eq!((run.position, run.end, run.entries.len()), (pos(100), pos(300), 0));
        assert_eq!(s.pop_durable(pos(350)), None, "the keyed batch ends at 400");
        let keyed = s.pop_durable(pos(1000)).unwrap();
        assert_eq!((keyed.position, keyed.end, keyed.entries), (pos(300), pos(400), keys(2, 0)));
        assert_eq!(s.entries(), 0);
        assert_eq!(s.pop_durable(pos(1000)).unwrap().end, pos(500));
        assert!(s.is_empty());
        assert_eq!(s.pop_durable(pos(1000)), None);
    }

    #[test]
    fn a_merged_run_is_bounded_and_gaps_are_not_merged() {
        let mut s = Staged::new(pos(0), 10);
        let step = MAX_MERGED_SPAN_BYTES / 4;
        for i in 0..8 {
            s.push(pos(i * step), pos((i + 1) * step), vec![]);
        }
        let first = s.pop_durable(pos(u64::MAX)).unwrap();
        assert_eq!(first.end, pos(MAX_MERGED_SPAN_BYTES), "one run stops at the bound");
        // A gap (a segment's end) starts a new run.
        s.skip_to(pos(10 * step));
        s.push(pos(10 * step), pos(11 * step), vec![]);
        assert_eq!(s.pop_durable(pos(u64::MAX)).unwrap().end, pos(8 * step));
        let after_gap = s.pop_durable(pos(u64::MAX)).unwrap();
        assert_eq!((after_gap.position, after_gap.end), (pos(10 * step), pos(11 * step)));
    }

    #[test]
    fn the_reader_waits_when_entries_or_spans_reach_their_bound() {
        let mut s = Staged::new(pos(0), 5);
        s.push(pos(0), pos(10), keys(3, 0));
        assert!(s.has_room());
        s.push(pos(10), pos(20), keys(2, 3));
        assert!(!s.has_room(), "five keys wait");
        s.pop_durable(pos(10)).unwrap();
        assert!(s.has_room());

        let mut s = Staged::new(pos(0), usize::MAX);
        for i in 0..MAX_SPANS as u64 {
            // Keyed batches are never merged: one span each.
            s.push(pos(i * 10), pos(i * 10 + 10), keys(1, i));
        }
        assert!(!s.has_room(), "{} spans wait", MAX_SPANS);
    }

    #[test]
    fn batches_already_taken_or_empty_are_ignored() {
        let mut s = Staged::new(pos(100), 10);
        s.push(pos(50), pos(100), keys(1, 0));
        s.push(pos(100), pos(100), keys(1, 0));
        assert!(s.is_empty());
        s.push(pos(100), pos(150), keys(1, 0));
        s.skip_to(pos(120));
        assert_eq!(s.read_to(), pos(150), "skip_to never moves back");
        assert_eq!(s.entries(), 1);
    }
}
