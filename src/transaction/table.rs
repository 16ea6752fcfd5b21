//! The undecided halves of one shard and their check-back schedule: a state machine without
//! I/O or clock reads (every call takes `now_ms`, unix milliseconds, from the caller).
//!
//! Lifecycle of a half: `insert` (when its record is copied into `%SYS%half`) -> undecided ->
//! `begin_decision` (an END_TRANSACTION, or a roll back by [`Transactions::tick`]) -> deciding
//! -> `finish` (its op record is copied into `%SYS%txn-op`) -> gone, remembered for a while
//! among the recent decisions so that a repeated END_TRANSACTION gets a precise answer. A
//! decision that fails before its op record goes back to undecided (`abort_decision`).
//!
//! Check-back schedule, per half: check slot 1 opens `check_interval_ms` after the half was
//! stored. When a slot is open the half is due: the first live producer of its group that asks
//! ([`Transactions::take_checks`]) is asked about it, which uses the slot, and the next slot
//! opens one interval later. A slot nobody asked for within one interval is used up unanswered
//! ([`Transactions::tick`]). Once `check_max` slots are used and the next one opens, the half is
//! rolled back. Answers "unknown" are no answer: the producer simply does not end it.
//!
//! Bounded: at most `max_undecided` halves ([`Transactions::admit`] refuses more) and
//! [`RECENT_DECISIONS`] remembered decisions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::record::{Decision, Destination};

/// Decisions remembered after their half is gone.
pub const RECENT_DECISIONS: usize = 4096;

/// The schedule and bounds (the `[transaction]` config section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub check_interval_ms: u64,
    pub check_max: u32,
    pub max_undecided: usize,
}

/// What identifies the producer's batch, so its delivered copy is recognised in the log (it
/// keeps the producer's CRC, id and sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub crc: u32,
    pub producer_id: i64,
    pub base_sequence: i32,
    pub record_count: u32,
}

impl Fingerprint {
    pub fn of(h: &crate::format::batch::BatchHeader) -> Self {
        Fingerprint {
            crc: h.crc,
            producer_id: h.producer_id,
            base_sequence: h.base_sequence,
            record_count: h.record_count,
        }
    }
}

/// A half as it is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHalf {
    pub transaction_id: u64,
    pub group: String,
    pub destination: Destination,
    pub stored_ms: i64,
    pub fingerprint: Fingerprint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Undecided,
    Deciding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Half {
    new: NewHalf,
    checks: u32,
    next_check_ms: i64,
    state: State,
}

/// A half in `ringmq txn list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfSummary {
    pub transaction_id: u64,
    pub group: String,
    pub destination: Destination,
    pub age_ms: u64,
    pub checks: u32,
    pub deciding: bool,
}

/// A check to send to a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckDue {
    pub transaction_id: u64,
    pub destination: Destination,
    /// Checks of this half so far, this one included.
    pub checks: u32,
}

/// Why a transaction request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error(
        "{0} halves are undecided on this shard (transaction.max_undecided_halves): end some \
         transactions first"
    )]
    TooMany(usize),
    #[error(
        "no undecided transaction {0} on this queue (never stored here, or decided and \
         forgotten long ago)"
    )]
    Unknown(u64),
    #[error("transaction {id} is for topic id {} queue {}, not this queue", .belongs.topic_id, .belongs.queue_id)]
    WrongQueue { id: u64, belongs: Destination },
    #[error("transaction {id} belongs to producer group {group:?}")]
    WrongGroup { id: u64, group: String },
    #[error("transaction {0} is being decided by another request")]
    Deciding(u64),
    #[error("transaction {id} is already {}", if *.decision == Decision::Commit { "committed" } else { "rolled back" })]
    Decided { id: u64, decision: Decision },
}

/// One shard's undecided halves.
#[derive(Debug, Clone)]
pub struct Transactions {
    limits: Limits,
    halves: BTreeMap<u64, Half>,
    /// (next_check_ms, id) of every undecided half.
    schedule: BTreeSet<(i64, u64)>,
    recent: VecDeque<u64>,
    recent_decisions: HashMap<u64, Decision>,
    /// Halves admitted whose record is being appended (not inserted yet).
    admitted: usize,
}

impl Transactions {
    pub fn new(limits: Limits) -> Self {
        Transactions {
            limits,
            halves: BTreeMap::new(),
            schedule: BTreeSet::new(),
            recent: VecDeque::new(),
            recent_decisions: HashMap::new(),
            admitted: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.halves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.halves.is_empty()
    }

    /// Reserves room for one more half before its record is appended (halves being appended
    /// count against the bound); [`Self::insert`] uses the reservation, [`Self::cancel_admit`]
    /// returns it when the append failed.
    pub fn admit(&mut self) -> Result<(), TxnError> {
        let held = self.halves.len() + self.admitted;
        if held >= self.limits.max_undecided {
            return Err(TxnError::TooMany(held));
        }
        self.admitted += 1;
        Ok(())
    }

    pub fn cancel_admit(&mut self) {
        self.admitted = self.admitted.saturating_sub(1);
    }

    /// Adds a half stored at `stored_ms`. Its first check slot opens one interval later, or at
    /// `now_ms` if that is later (after a restart, slots missed while the broker was down are
    /// not counted against it). Replay may pass more than `max_undecided` halves (the bound
    /// was lowered): they are kept, and new ones refused until enough are decided.
    pub fn insert(&mut self, half: NewHalf, now_ms: i64) {
        self.insert_replayed(half, now_ms, i64::MIN);
    }

    /// [`Self::insert`] for a half read back after a restart, when the broker was last seen
    /// running at `alive_until_ms` (its log's newest store time): the check slots that had
    /// closed by then count as used (checks are not persisted), so restarts do not grant a
    /// half more than `check_max` checks; at most the slot open at the stop is granted again.
    pub fn insert_replayed(&mut self, half: NewHalf, now_ms: i64, alive_until_ms: i64) {
        let id = half.transaction_id;
        self.admitted = self.admitted.saturating_sub(1);
        let interval = self.interval_ms().max(1);
        // Slot j (from 0) opens at stored + (j + 1) * interval and closes one interval later.
        let closed = (alive_until_ms.saturating_sub(half.stored_ms) / interval - 1).max(0);
        let checks = u32::try_from(closed).unwrap_or(u32::MAX).min(self.limits.check_max);
        let first = half
            .stored_ms
            .saturating_add(interval.saturating_mul(i64::from(checks) + 1))
            .max(now_ms);
        let old = self
            .halves
            .insert(id, Half { new: half, checks, next_check_ms: first, state: State::Undecided });
        assert!(old.is_none(), "transaction id {id} inserted twice");
        self.schedule.insert((first, id));
    }

    fn interval_ms(&self) -> i64 {
        i64::try_from(self.limits.check_interval_ms).unwrap_or(i64::MAX)
    }

    /// Starts deciding `id` for an END_TRANSACTION on `destination` from `group`: the half is
    /// taken off the schedule until [`Self::finish`] or [`Self::abort_decision`].
    pub fn begin_decision(
        &mut self,
        id: u64,
        destination: Destination,
        group: &str,
    ) -> Result<NewHalf, TxnError> {
        let Some(h) = self.halves.get_mut(&id) else {
            return Err(match self.recent_decisions.get(&id) {
                Some(&decision) => TxnError::Decided { id, decision },
                None => TxnError::Unknown(id),
            });
        };
        if h.new.destination != destination {
            return Err(TxnError::WrongQueue { id, belongs: h.new.destination });
        }
        if h.new.group != group {
            return Err(TxnError::WrongGroup { id, group: h.new.group.clone() });
        }
        if h.state == State::Deciding {
            return Err(TxnError::Deciding(id));
        }
        h.state = State::Deciding;
        self.schedule.remove(&(h.next_check_ms, id));
        Ok(h.new.clone())
    }

    /// A decision that could not be recorded: the half is undecided again, on its schedule
    /// as before (due now if its slot opened meanwhile).
    pub fn abort_decision(&mut self, id: u64) {
        if let Some(h) = self.halves.get_mut(&id) {
            if h.state == State::Deciding {
                h.state = State::Undecided;
                self.schedule.insert((h.next_check_ms, id));
            }
        }
    }

    /// The decision of `id` is recorded (its op record copied into the log): the half goes.
    pub fn finish(&mut self, id: u64, decision: Decision) -> Option<NewHalf> {
        let h = self.halves.remove(&id)?;
        self.schedule.remove(&(h.next_check_ms, id));
        self.remember(id, decision);
        Some(h.new)
    }

    /// Remembers a decision replayed from the log (its half is gone), so a repeated
    /// END_TRANSACTION after a restart is answered precisely.
    pub fn remember(&mut self, id: u64, decision: Decision) {
        if self.recent_decisions.insert(id, decision).is_some() {
            return;
        }
        self.recent.push_back(id);
        if self.recent.len() > RECENT_DECISIONS {
            if let Some(old) = self.recent.pop_front() {
                self.recent_decisions.remove(&old);
            }
        }
    }

    /// The replay start for the next restart: at most the smallest undecided (or deciding)
    /// transaction id, `half_next` (the half queue's next offset) when there is none.
    pub fn low_watermark(&self, half_next: u64) -> u64 {
        self.halves.keys().next().map_or(half_next, |&id| id.min(half_next))
    }

    /// [`Self::low_watermark`] once `deciding` is decided: what the op record deciding it
    /// carries. A replica pins its half queue there (nothing below is undecided once that
    /// record is durable); with `deciding` left in, its pin could not pass the last half
    /// decided. Other halves whose decisions are in flight still count.
    pub fn low_watermark_after(&self, deciding: u64, half_next: u64) -> u64 {
        self.halves.keys().find(|&&id| id != deciding).map_or(half_next, |&id| id.min(half_next))
    }

    /// Groups with a half due for a check at `now_ms`.
    pub fn due_groups(&self, now_ms: i64) -> BTreeSet<String> {
        self.schedule
            .range(..=(now_ms, u64::MAX))
            .map(|(_, id)| self.halves[id].new.group.clone())
            .collect()
    }

    /// Hands up to `max` due halves of `group` to a producer that asked: each uses its open
    /// slot, and its next slot opens one interval from now. Halves whose checks are exhausted
    /// are left for [`Self::tick`] to roll back.
    pub fn take_checks(&mut self, group: &str, now_ms: i64, max: usize) -> Vec<CheckDue> {
        let check_max = self.limits.check_max;
        let due: Vec<(i64, u64)> = self
            .schedule
            .range(..=(now_ms, u64::MAX))
            .filter(|(_, id)| {
                let h = &self.halves[id];
                h.new.group == group && h.checks < check_max
            })
            .take(max)
            .copied()
            .collect();
        let next = now_ms.saturating_add(self.interval_ms());
        let mut out = Vec::with_capacity(due.len());
        for (at, id) in due {
            self.schedule.remove(&(at, id));
            let h = self.halves.get_mut(&id).expect("scheduled halves exist");
            h.checks += 1;
            h.next_check_ms = next;
            self.schedule.insert((next, id));
            out.push(CheckDue {
                transaction_id: id,
                destination: h.new.destination,
                checks: h.checks,
            });
        }
        out
    }

    /// Advances time: an open slot nobody asked for within one interval is used up
    /// unanswered (the next opens now); halves whose `check_max` slots are used and whose next
    /// slot opened are returned to be rolled back, already deciding.
    pub fn tick(&mut self, now_ms: i64) -> Vec<NewHalf> {
        let interval = self.interval_ms();
        let due: Vec<(i64, u64)> = self.schedule.range(..=(now_ms, u64::MAX)).copied().collect();
        let mut rollbacks = Vec::new();
        for (at, id) in due {
            let h = self.halves.get_mut(&id).expect("scheduled halves exist");
            if h.checks >= self.limits.check_max {
                self.schedule.remove(&(at, id));
                h.state = State::Deciding;
                rollbacks.push(h.new.clone());
            } else if now_ms >= at.saturating_add(interval) {
                // Nobody asked within the slot: it is used up unanswered, the next one opens
                // where it ended.
                self.schedule.remove(&(at, id));
                h.checks += 1;
                h.next_check_ms = at.saturating_add(interval);
                if h.checks >= self.limits.check_max && now_ms >= h.next_check_ms {
                    h.state = State::Deciding;
                    rollbacks.push(h.new.clone());
                } else {
                    self.schedule.insert((h.next_check_ms, id));
                }
            }
        }
        rollbacks
    }

    /// The undecided halves with their age and checks, oldest first, at most `max`.
    pub fn list(&self, now_ms: i64, max: usize) -> Vec<HalfSummary> {
        self.halves
            .values()
            .take(max)
            .map(|h| HalfSummary {
                transaction_id: h.new.transaction_id,
                group: h.new.group.clone(),
                destination: h.new.destination,
                age_ms: now_ms.saturating_sub(h.new.stored_ms).max(0) as u64,
                checks: h.checks,
                deciding: h.state == State::Deciding,
            })
            .collect()
    }

    /// The oldest undecided half whose batch is `fingerprint` for `destination` (its delivered
    /// copy was found in the log).
    pub fn find_delivered(
        &self,
        destination: Destination,
        fingerprint: Fingerprint,
    ) -> Option<NewHalf> {
        self.halves
            .values()
            .find(|h| {
                h.state == State::Undecided
                    && h.new.destination == destination
                    && h.new.fingerprint == fingerprint
            })
            .map(|h| h.new.clone())
    }

    /// Whether `id` is undecided or being decided.
    pub fn contains(&self, id: u64) -> bool {
        self.halves.contains_key(&id)
    }

    /// Checks made of `id` so far.
    pub fn checks(&self, id: u64) -> Option<u32> {
        self.halves.get(&id).map(|h| h.checks)
    }
}
