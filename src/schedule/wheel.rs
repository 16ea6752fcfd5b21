//! The hierarchical timer wheel (pure: no I/O, no clock reads; times are passed in).
//!
//! **Memory does not grow with the number of pending timers.** Like RocketMQ 5's TimerLog, the
//! per-timer entries live in an append-only *timer log* of fixed-size [`TimerRecord`]s
//! (`deliver_at_ms`, the schedule-queue offset of the message, the index of the previous
//! record of the same slot); the wheel holds only the head of each slot's chain:
//! [`LEVELS`] × [`SLOTS`] `u64`s, whatever the number of timers.
//!
//! Time is counted in ticks of `tick_ms` (the precision). A timer due at `deliver_at_ms` gets
//! the tick `ceil(deliver_at_ms / tick_ms)`, so it is never delivered early and at most one
//! tick late (plus the time to move it). Ticks are split into 6-bit digits: level `k` holds
//! timers whose tick first differs from the wheel's current tick in digit `k`, in the slot
//! given by that digit. When the current tick reaches a level-`k` slot (all lower digits 0),
//! the slot *cascades*: each of its timers is appended again to the timer log, into a finer
//! level; a level-0 slot holds timers of exactly one tick, all due when it is reached. Empty
//! stretches of time are skipped, not stepped through tick by tick.
//!
//! Driving the wheel (the broker's schedule task does this with async reads of its timer
//! log; [`advance`] does it over a synchronous [`RecordStore`]):
//! - [`Wheel::insert`] gives the record to append; append it at the index it names.
//! - [`Wheel::poll`] names the next timer-log record to read, or `None` when nothing is due
//!   at `now_ms`. Read it and hand it to [`Wheel::route`]: the timer is due, or it moved to a
//!   finer level (append the record `route` returns). Repeat.
//! - [`Wheel::checkpoint`] at any point between calls; [`Wheel::restore`] continues from it
//!   after a restart. Timers inserted after the checkpoint must be inserted again (the broker
//!   re-indexes the schedule queue past what the checkpoint covers); timers delivered after
//!   it are delivered again, so the caller de-duplicates or accepts at-least-once.
//!
//! The timer log only grows; what the caller reclaims is its business (records before the
//! oldest index still reachable from a head are garbage).

/// Bits of a tick per level.
pub const SLOT_BITS: u32 = 6;
/// Slots per level.
pub const SLOTS: usize = 1 << SLOT_BITS;
/// Levels: ticks up to 2^48 (with 1 ms ticks, about 8900 years).
pub const LEVELS: usize = 8;
/// First tick past the wheel's range.
pub const MAX_TICK: u64 = 1 << (SLOT_BITS as usize * LEVELS);
/// "No record": the end of a chain, or an empty slot.
pub const NO_RECORD: u64 = u64::MAX;

/// One timer-log record. Fixed size ([`TimerRecord::ENCODED_LEN`] bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerRecord {
    pub deliver_at_ms: i64,
    /// What the timer delivers: the schedule-queue offset of the message.
    pub entry: u64,
    /// Index of the previous record of the same slot, or [`NO_RECORD`].
    pub prev: u64,
}

impl TimerRecord {
    pub const ENCODED_LEN: usize = 24;

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0..8].copy_from_slice(&self.deliver_at_ms.to_le_bytes());
        b[8..16].copy_from_slice(&self.entry.to_le_bytes());
        b[16..24].copy_from_slice(&self.prev.to_le_bytes());
        b
    }

    /// Decodes bytes read back from the timer log; `None` unless exactly one record.
    pub fn decode(b: &[u8]) -> Option<TimerRecord> {
        let b: &[u8; Self::ENCODED_LEN] = b.try_into().ok()?;
        let u = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        Some(TimerRecord { deliver_at_ms: u(0) as i64, entry: u(8), prev: u(16) })
    }
}

/// Why the wheel refuses something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WheelError {
    #[error("delivery time {0} ms is past the timer wheel's range")]
    OutOfRange(i64),
    #[error("tick_ms must be at least 1")]
    ZeroTick,
    #[error("checkpoint is malformed: {0}")]
    BadCheckpoint(&'static str),
}

/// What a routed record became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// The timer is due: deliver `entry`.
    Due { entry: u64, deliver_at_ms: i64 },
    /// The timer moved to a finer level: append `record` to the timer log at `index`.
    Moved { index: u64, record: TimerRecord },
}

/// The wheel's whole state, as [`Wheel::checkpoint`] returns it and [`Wheel::restore`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tick_ms: u64,
    /// Every tick before this one was processed.
    pub next_tick: u64,
    /// The next record of the slot being drained, or [`NO_RECORD`].
    pub draining: u64,
    /// Head of the chain of timers inserted with a tick already processed.
    pub overdue: u64,
    /// Timer-log records `[0, records)` are the ones the heads may reach.
    pub records: u64,
    /// Timers pending (inserted, not yet due).
    pub pending: u64,
    /// Slot heads, level 0 first.
    pub heads: Vec<u64>,
}

impl Checkpoint {
    /// Bytes of [`Checkpoint::encode`]'s output.
    pub const ENCODED_LEN: usize = 8 * 6 + 8 * LEVELS * SLOTS + 4;

    /// Fixed-size little-endian encoding with a trailing CRC32C.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::ENCODED_LEN);
        for v in
            [self.tick_ms, self.next_tick, self.draining, self.overdue, self.records, self.pending]
        {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for h in &self.heads {
            b.extend_from_slice(&h.to_le_bytes());
        }
        let crc = crate::format::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes bytes read back from disk; checks length and CRC, never panics.
    pub fn decode(b: &[u8]) -> Result<Checkpoint, WheelError> {
        if b.len() != Self::ENCODED_LEN {
            return Err(WheelError::BadCheckpoint("wrong length"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crate::format::crc::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes"))
        {
            return Err(WheelError::BadCheckpoint("checksum mismatch"));
        }
        let mut words =
            body.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
        let mut next = || words.next().expect("length checked");
        let (tick_ms, next_tick, draining) = (next(), next(), next());
        let (overdue, records, pending) = (next(), next(), next());
        let heads: Vec<u64> = (0..LEVELS * SLOTS).map(|_| next()).collect();
        let cp = Checkpoint { tick_ms, next_tick, draining, overdue, records, pending, heads };
        cp.check()?;
        Ok(cp)
    }

    fn check(&self) -> Result<(), WheelError> {
        if self.tick_ms == 0 {
            return Err(WheelError::BadCheckpoint("tick_ms is 0"));
        }
        if self.next_tick > MAX_TICK || self.heads.len() != LEVELS * SLOTS {
            return Err(WheelError::BadCheckpoint("out of range"));
        }
        let reachable = |i: u64| i == NO_RECORD || i < self.records;
        if !reachable(self.draining)
            || !reachable(self.overdue)
            || !self.heads.iter().all(|&h| reachable(h))
        {
            return Err(WheelError::BadCheckpoint("a head points past the records it covers"));
        }
        // A slot behind the current tick would never be reached (the wheel keeps none).
        for (i, &h) in self.heads.iter().enumerate() {
            if h != NO_RECORD && slot_tick(self.next_tick, i / SLOTS, i % SLOTS) < self.next_tick {
                return Err(WheelError::BadCheckpoint(
                    "a slot behind the current tick holds timers",
                ));
            }
        }
        Ok(())
    }
}

/// The wheel: slot heads and the current tick. Fixed size.
#[derive(Debug, Clone)]
pub struct Wheel {
    tick_ms: u64,
    next_tick: u64,
    heads: [[u64; SLOTS]; LEVELS],
    /// Bit `s` of level `k`: slot `s` is not empty (finds the next event without a scan).
    occupied: [u64; LEVELS],
    draining: u64,
    /// Timers inserted with a tick already processed: due at the next poll, whatever the time.
    overdue: u64,
    records: u64,
    pending: u64,
}

/// The tick at which `slot` of `level` is processed, seen from `current`.
fn slot_tick(current: u64, level: usize, slot: usize) -> u64 {
    let shift = SLOT_BITS as usize * level;
    let span_bits = shift + SLOT_BITS as usize;
    let base = if span_bits >= 64 { 0 } else { current >> span_bits << span_bits };
    base | ((slot as u64) << shift)
}

fn digit(tick: u64, level: usize) -> usize {
    ((tick >> (SLOT_BITS as usize * level)) as usize) & (SLOTS - 1)
}

impl Wheel {
    /// An empty wheel whose timer log is empty, at time `now_ms`.
    pub fn new(tick_ms: u64, now_ms: i64) -> Result<Wheel, WheelError> {
        if tick_ms == 0 {
            return Err(WheelError::ZeroTick);
        }
        let mut w = Wheel {
            tick_ms,
            next_tick: 0,
            heads: [[NO_RECORD; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            draining: NO_RECORD,
            overdue: NO_RECORD,
            records: 0,
            pending: 0,
        };
        w.next_tick = w.floor_tick(now_ms).min(MAX_TICK);
        Ok(w)
    }

    /// Continues from a checkpoint. `records` is the timer log's length now (at least the
    /// checkpoint's: records appended after it are unreachable and stay unused).
    pub fn restore(cp: &Checkpoint, records: u64) -> Result<Wheel, WheelError> {
        cp.check()?;
        if records < cp.records {
            return Err(WheelError::BadCheckpoint("the timer log is shorter than it covers"));
        }
        let mut w = Wheel::new(cp.tick_ms, 0)?;
        w.next_tick = cp.next_tick;
        w.draining = cp.draining;
        w.overdue = cp.overdue;
        w.records = records;
        w.pending = cp.pending;
        for (i, &h) in cp.heads.iter().enumerate() {
            let (level, slot) = (i / SLOTS, i % SLOTS);
            w.heads[level][slot] = h;
            if h != NO_RECORD {
                w.occupied[level] |= 1 << slot;
            }
        }
        Ok(w)
    }

    /// An empty wheel at `now_ms` over a timer log that already holds `records` records
    /// (none reachable: after a restart without a usable checkpoint).
    pub fn starting_at(tick_ms: u64, now_ms: i64, records: u64) -> Result<Wheel, WheelError> {
        let mut w = Wheel::new(tick_ms, now_ms)?;
        w.records = records;
        Ok(w)
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tick_ms: self.tick_ms,
            next_tick: self.next_tick,
            draining: self.draining,
            overdue: self.overdue,
            records: self.records,
            pending: self.pending,
            heads: self.heads.iter().flatten().copied().collect(),
        }
    }

    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Timers inserted and not yet due.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// The timer log's length as the wheel counts it (the next record's index).
    pub fn records(&self) -> u64 {
        self.records
    }

    fn floor_tick(&self, ms: i64) -> u64 {
        (ms.max(0) as u64) / self.tick_ms
    }

    /// First tick at or after `ms`: a timer is never processed before its time.
    fn ceil_tick(&self, ms: i64) -> u64 {
        (ms.max(0) as u64).div_ceil(self.tick_ms)
    }

    /// Adds a timer; returns the record to append to the timer log and its index. A time
    /// already past is due at the next [`Wheel::poll`].
    pub fn insert(
        &mut self,
        deliver_at_ms: i64,
        entry: u64,
    ) -> Result<(u64, TimerRecord), WheelError> {
        let tick = self.ceil_tick(deliver_at_ms);
        if tick >= MAX_TICK {
            return Err(WheelError::OutOfRange(deliver_at_ms));
        }
        self.pending += 1;
        Ok(self.link(tick, deliver_at_ms, entry))
    }

    fn link(&mut self, tick: u64, deliver_at_ms: i64, entry: u64) -> (u64, TimerRecord) {
        let index = self.records;
        self.records += 1;
        if tick < self.next_tick {
            let record = TimerRecord { deliver_at_ms, entry, prev: self.overdue };
            self.overdue = index;
            return (index, record);
        }
        let differs = tick ^ self.next_tick;
        let level = if differs == 0 {
            0
        } else {
            (63 - differs.leading_zeros()) as usize / SLOT_BITS as usize
        };
        let slot = digit(tick, level);
        let record = TimerRecord { deliver_at_ms, entry, prev: self.heads[level][slot] };
        self.heads[level][slot] = index;
        self.occupied[level] |= 1 << slot;
        (index, record)
    }

    /// The tick at which the earliest non-empty slot is processed, with its level and slot
    /// (the coarsest level first on a tie: it may cascade timers into that same tick).
    fn next_event(&self) -> Option<(u64, usize, usize)> {
        let mut best: Option<(u64, usize, usize)> = None;
        for level in (0..LEVELS).rev() {
            let bits = self.occupied[level];
            if bits == 0 {
                continue;
            }
            let current = digit(self.next_tick, level);
            // Slots at or after the current digit; the invariant keeps the others empty.
            let ahead = bits & (u64::MAX << current);
            debug_assert_eq!(ahead, bits, "level {level} holds slots behind its current digit");
            let slot = ahead.trailing_zeros() as usize;
            let tick = slot_tick(self.next_tick, level, slot);
            debug_assert!(tick >= self.next_tick);
            if !matches!(best, Some((t, _, _)) if t <= tick) {
                best = Some((tick, level, slot));
            }
        }
        best
    }

    /// The next timer-log record to read and [`Wheel::route`], or `None` when nothing more is
    /// due at `now_ms` (the wheel then stands at `now_ms`).
    pub fn poll(&mut self, now_ms: i64) -> Option<u64> {
        if self.draining != NO_RECORD {
            return Some(self.draining);
        }
        if self.overdue != NO_RECORD {
            self.draining = std::mem::replace(&mut self.overdue, NO_RECORD);
            return Some(self.draining);
        }
        let now_tick = self.floor_tick(now_ms).min(MAX_TICK - 1);
        loop {
            match self.next_event() {
                Some((tick, level, slot)) if tick <= now_tick => {
                    self.next_tick = tick;
                    let head = std::mem::replace(&mut self.heads[level][slot], NO_RECORD);
                    self.occupied[level] &= !(1 << slot);
                    if level == 0 {
                        // Every timer of this slot is due at `tick`: the wheel moves past it.
                        self.next_tick = tick + 1;
                    }
                    if head != NO_RECORD {
                        self.draining = head;
                        return Some(head);
                    }
                }
                _ => {
                    self.next_tick = self.next_tick.max(now_tick + 1);
                    return None;
                }
            }
        }
    }

    /// The record [`Wheel::poll`] named was read back: it is due, or moved to a finer level.
    pub fn route(&mut self, record: &TimerRecord) -> Routed {
        assert_ne!(self.draining, NO_RECORD, "route without a record named by poll");
        // A record only ever points back at older records (it is appended after the one it
        // points at). One read back pointing at itself or past it is bad: end the chain there
        // rather than route the same records forever.
        self.draining = match record.prev {
            prev if prev == NO_RECORD || prev < self.draining => prev,
            _ => NO_RECORD,
        };
        // The record comes back from disk: a time past the range (which `insert` refuses) can
        // only be a bad record. Keep it in the last tick the wheel has, never delivered early.
        let tick = self.ceil_tick(record.deliver_at_ms).min(MAX_TICK - 1);
        if tick < self.next_tick {
            // Saturating: the count comes from a checkpoint that cannot be checked against
            // the chains it counts (they are in the timer log).
            self.pending = self.pending.saturating_sub(1);
            Routed::Due { entry: record.entry, deliver_at_ms: record.deliver_at_ms }
        } else {
            let (index, record) = self.link(tick, record.deliver_at_ms, record.entry);
            Routed::Moved { index, record }
        }
    }
}

/// A timer log the synchronous [`advance`] reads and appends (an in-memory `Vec` in tests).
pub trait RecordStore {
    /// Appends `record`; it must land at `index` (the log's length).
    fn append(&mut self, index: u64, record: TimerRecord);
    fn get(&self, index: u64) -> TimerRecord;
}

impl RecordStore for Vec<TimerRecord> {
    fn append(&mut self, index: u64, record: TimerRecord) {
        assert_eq!(index, self.len() as u64, "timer log appends out of order");
        self.push(record);
    }
    fn get(&self, index: u64) -> TimerRecord {
        self[index as usize]
    }
}

/// Moves the wheel to `now_ms` over a synchronous store, handing at most `max_due` due
/// timers to `due` (in tick order); returns how many it handed. Call again while it returns
/// `max_due`.
pub fn advance<S: RecordStore>(
    wheel: &mut Wheel,
    store: &mut S,
    now_ms: i64,
    max_due: usize,
    mut due: impl FnMut(u64, i64),
) -> usize {
    let mut handed = 0;
    while handed < max_due {
        let Some(index) = wheel.poll(now_ms) else { break };
        match wheel.route(&store.get(index)) {
            Routed::Due { entry, deliver_at_ms } => {
                due(entry, deliver_at_ms);
                handed += 1;
            }
            Routed::Moved { index, record } => store.append(index, record),
        }
    }
    handed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inserts and returns the tick the timer is processed at (its own, or the wheel's
    /// current tick for a time already past).
    fn insert(w: &mut Wheel, log: &mut Vec<TimerRecord>, at: i64, entry: u64) -> u64 {
        // Timers already past go first, at the next poll.
        let effective = Some(w.ceil_tick(at)).filter(|&t| t >= w.next_tick).unwrap_or(0);
        let (i, r) = w.insert(at, entry).unwrap();
        RecordStore::append(log, i, r);
        effective
    }

    fn drain(w: &mut Wheel, log: &mut Vec<TimerRecord>, now: i64) -> Vec<(u64, i64)> {
        let mut out = Vec::new();
        advance(w, log, now, usize::MAX, |e, at| out.push((e, at)));
        out
    }

    #[test]
    fn timers_fire_at_their_tick_never_before() {
        let mut w = Wheel::new(10, 1_000).unwrap();
        let mut log = Vec::new();
        insert(&mut w, &mut log, 1_005, 1);
        insert(&mut w, &mut log, 1_000, 2);
        insert(&mut w, &mut log, 900, 3);
        insert(&mut w, &mut log, 3_600_000 + 1_000, 4);
        // One tick's timers come in no particular order (here: the last inserted first).
        assert_eq!(drain(&mut w, &mut log, 1_000), vec![(3, 900), (2, 1_000)]);
        insert(&mut w, &mut log, 1_000, 5);
        assert_eq!(drain(&mut w, &mut log, 1_000), vec![(5, 1_000)], "past: due at once");
        assert_eq!(drain(&mut w, &mut log, 1_009), vec![]);
        assert_eq!(drain(&mut w, &mut log, 1_010), vec![(1, 1_005)]);
        assert_eq!(drain(&mut w, &mut log, 3_600_999), vec![]);
        assert_eq!(w.pending(), 1);
        assert_eq!(drain(&mut w, &mut log, 3_601_000), vec![(4, 3_601_000)]);
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn the_wheel_is_the_same_size_whatever_the_timers() {
        let mut w = Wheel::new(1, 0).unwrap();
        let mut log = Vec::new();
        for i in 0..100_000u64 {
            insert(&mut w, &mut log, (i * 7919 % 40_000_000) as i64, i);
        }
        assert_eq!(w.pending(), 100_000);
        // The wheel holds only slot heads; every timer is a record of the log.
        assert!(std::mem::size_of::<Wheel>() < 5 * 1024);
        let mut seen = 0;
        let mut last = 0;
        advance(&mut w, &mut log, 40_000_000, usize::MAX, |_, at| {
            assert!(at >= last);
            last = at;
            seen += 1;
        });
        assert_eq!(seen, 100_000);
    }

    #[test]
    fn max_due_bounds_one_step() {
        let mut w = Wheel::new(10, 0).unwrap();
        let mut log = Vec::new();
        for i in 0..25 {
            insert(&mut w, &mut log, 50, i);
        }
        let mut n = Vec::new();
        for _ in 0..4 {
            n.push(advance(&mut w, &mut log, 100, 10, |_, _| ()));
        }
        assert_eq!(n, vec![10, 10, 5, 0]);
    }

    #[test]
    fn far_times_are_refused_and_checkpoints_check_their_bytes() {
        let mut w = Wheel::new(1, 0).unwrap();
        assert_eq!(w.insert(i64::MAX, 0), Err(WheelError::OutOfRange(i64::MAX)));
        assert_eq!(Wheel::new(0, 0).unwrap_err(), WheelError::ZeroTick);
        let cp = w.checkpoint();
        let mut bytes = cp.encode();
        assert_eq!(bytes.len(), Checkpoint::ENCODED_LEN);
        assert_eq!(Checkpoint::decode(&bytes), Ok(cp));
        bytes[9] ^= 1;
        assert!(Checkpoint::decode(&bytes).is_err());
        assert!(Checkpoint::decode(&bytes[1..]).is_err());
        // A timer in a slot the wheel already passed is refused, not silently never delivered.
        let mut w = Wheel::new(1, 1_000).unwrap();
        w.insert(1_000 + 64 * 5, 1).unwrap();
        let mut cp = w.checkpoint();
        cp.next_tick += 64 * 10;
        assert_eq!(
            Checkpoint::decode(&cp.encode()),
            Err(WheelError::BadCheckpoint("a slot behind the current tick holds timers"))
        );
        let r = TimerRecord { deliver_at_ms: -1, entry: 7, prev: NO_RECORD };
        assert_eq!(TimerRecord::decode(&r.encode()), Some(r));
        assert_eq!(TimerRecord::decode(&[0; 23]), None);
    }

    #[test]
    fn a_record_read_back_with_a_time_past_the_range_stays_pending_instead_of_panicking() {
        // The timer log is checksummed, but a record from an older version (or a hand-edited
        // log) can hold a delivery time `insert` would have refused.
        let mut w = Wheel::new(1, 0).unwrap();
        let mut log = Vec::new();
        insert(&mut w, &mut log, 5, 1);
        log[0].deliver_at_ms = i64::MAX;
        assert_eq!(drain(&mut w, &mut log, 10), vec![]);
        assert_eq!(w.pending(), 1);
    }

    #[test]
    fn a_record_read_back_whose_chain_points_at_itself_ends_the_chain() {
        // Records only ever point back at older ones; a record pointing at itself (or past
        // itself) would make the wheel route it again and again.
        let mut w = Wheel::new(1, 0).unwrap();
        let mut log = Vec::new();
        insert(&mut w, &mut log, 5, 1);
        log[0].prev = 0;
        assert_eq!(drain(&mut w, &mut log, 10), vec![(1, 5)]);
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn a_checkpoint_counting_fewer_pending_timers_than_its_chains_hold_does_not_underflow() {
        // The count cannot be checked against the chains when decoding (they live in the
        // timer log), so a checksum-valid checkpoint may count too few.
        let mut w = Wheel::new(1, 0).unwrap();
        let mut log = Vec::new();
        insert(&mut w, &mut log, 5, 1);
        let mut cp = w.checkpoint();
        cp.pending = 0;
        let cp = Checkpoint::decode(&cp.encode()).unwrap();
        let mut w = Wheel::restore(&cp, 1).unwrap();
        assert_eq!(drain(&mut w, &mut log, 10), vec![(1, 5)]);
        assert_eq!(w.pending(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A timer `delay_ms` after now (negative: in the past).
        Insert(i64),
        /// Time moves on; the wheel moves at most `max_due` timers per step.
        Advance(i64, usize),
        Checkpoint,
        /// Restart from the last checkpoint; `lose_tail`: timer-log records past it are lost.
        Restart {
            lose_tail: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => prop_oneof![
                -50i64..200,
                0i64..5_000,
                0i64..400_000,
                0i64..40_000_000,
            ].prop_map(Op::Insert),
            4 => (prop_oneof![0i64..30, 0i64..3_000, 0i64..500_000], 1usize..50)
                .prop_map(|(d, m)| Op::Advance(d, m)),
            1 => Just(Op::Checkpoint),
            1 => any::<bool>().prop_map(|lose_tail| Op::Restart { lose_tail }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Against a sorted-list model: no timer is delivered early, none is missed once its
        /// tick has passed, each is delivered once between restarts in tick order, and a
        /// restart from a checkpoint (re-inserting what came after it) loses nothing.
        #[test]
        fn wheel_matches_a_sorted_list(
            tick_ms in prop_oneof![Just(1u64), Just(10), Just(100), 1u64..1000],
            start in 0i64..1_000_000_000_000,
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let mut now = start;
            let mut w = Wheel::new(tick_ms, now).unwrap();
            let mut log: Vec<TimerRecord> = Vec::new();
            // Model: every timer with its time, and whether it was delivered since it was
            // (re)inserted.
            let mut times: Vec<i64> = Vec::new();
            let mut delivered: Vec<bool> = Vec::new();
            let mut effective: Vec<u64> = Vec::new();
            let mut checkpoint = (w.checkpoint(), 0usize, delivered.clone());
            let due_by = |at: i64, now: i64| (at.max(0) as u64).div_ceil(tick_ms) * tick_ms <= now.max(0) as u64;
            for op in ops {
                match op {
                    Op::Insert(delay) => {
                        let entry = times.len() as u64;
                        let at = now + delay;
                        times.push(at);
                        delivered.push(false);
                        effective.push(insert(&mut w, &mut log, at, entry));
                    }
                    Op::Advance(d, max_due) => {
                        now += d;
                        let mut got = Vec::new();
                        while advance(&mut w, &mut log, now, max_due, |e, at| got.push((e, at))) == max_due {}
                        let mut last_tick = 0;
                        for &(e, at) in &got {
                            let e = e as usize;
                            prop_assert_eq!(times[e], at);
                            prop_assert!(due_by(at, now), "timer {} at {} delivered at {}", e, at, now);
                            prop_assert!(!delivered[e], "timer {} delivered twice", e);
                            delivered[e] = true;
                            prop_assert!(effective[e] >= last_tick, "timer {} out of tick order", e);
                            last_tick = effective[e];
                        }
                        for (e, &at) in times.iter().enumerate() {
                            if due_by(at, now) {
                                prop_assert!(delivered[e], "timer {} at {} missed at {}", e, at, now);
                            }
                        }
                        prop_assert_eq!(w.pending() as usize, delivered.iter().filter(|d| !**d).count());
                    }
                    Op::Checkpoint => {
                        checkpoint = (w.checkpoint(), times.len(), delivered.clone());
                    }
                    Op::Restart { lose_tail } => {
                        let (cp, inserted, was_delivered) = &checkpoint;
                        if lose_tail {
                            log.truncate(cp.records as usize);
                        }
                        w = Wheel::restore(cp, log.len() as u64).unwrap();
                        // Deliveries after the checkpoint happen again; timers inserted after it
                        // are inserted again (the broker re-reads them from the schedule queue).
                        delivered[..*inserted].copy_from_slice(&was_delivered[..]);
                        for e in *inserted..times.len() {
                            delivered[e] = false;
                            effective[e] = insert(&mut w, &mut log, times[e], e as u64);
                        }
                        prop_assert_eq!(w.pending() as usize, delivered.iter().filter(|d| !**d).count());
                    }
                }
            }
        }
    }
}
