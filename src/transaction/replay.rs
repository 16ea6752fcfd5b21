//! Rebuilding a shard's undecided halves at start, from its two system queues.
//!
//! Every half is decided at most once, by an op record appended after the half. Each op
//! record carries a low watermark (at most the smallest transaction id undecided when it was
//! written) and each half record the `%SYS%txn-op` offset where ops that may decide it start
//! (`op_from`). So a restart reads:
//! 1. the last op record: its watermark `W` ([`replay_from`]; the half queue's first offset
//!    when there is no op record). Halves below `W` are all decided.
//! 2. the half at `W`: its `op_from`. Ops deciding halves `>= W` all lie at or after it.
//! 3. the ops from there ([`TxnReplay::op`]), then the halves from `W` ([`TxnReplay::half`]).
//!
//! The read is bounded by what was written since the oldest undecided half was stored (at
//! most `(check_max + 1) x check_interval` of traffic, since check-back decides every half by
//! then), not by the age of the log. Memory: one entry per op read plus the undecided halves.

use std::collections::HashMap;

use super::record::{Decision, Destination, HalfRecord, OpRecord};
use super::table::{Fingerprint, Limits, NewHalf, Transactions};
use crate::format::batch::read_header;

/// Where replay starts in the half queue `[half_min, half_next)`, given the body of the last
/// op record (None when the op queue is empty). A damaged last op record starts at `half_min`.
pub fn replay_from(last_op: Option<&[u8]>, half_min: u64, half_next: u64) -> u64 {
    let w = last_op.and_then(|b| OpRecord::decode(b).ok()).map_or(half_min, |op| op.low_watermark);
    w.clamp(half_min, half_next.max(half_min))
}

/// Feeds records in the order above; [`TxnReplay::finish`] gives the table.
#[derive(Debug)]
pub struct TxnReplay {
    from: u64,
    decided: HashMap<u64, Decision>,
    table: Transactions,
    now_ms: i64,
    alive_until_ms: i64,
    /// Records read, and those that could not be used (malformed).
    pub ops: u64,
    pub halves: u64,
    pub skipped: u64,
}

impl TxnReplay {
    /// Replays halves from transaction id `from` (see [`replay_from`]), at time `now_ms`, for
    /// a broker last seen running at `alive_until_ms` (see [`Transactions::insert_replayed`]).
    pub fn new(limits: Limits, from: u64, now_ms: i64, alive_until_ms: i64) -> Self {
        TxnReplay {
            from,
            alive_until_ms,
            decided: HashMap::new(),
            table: Transactions::new(limits),
            now_ms,
            ops: 0,
            halves: 0,
            skipped: 0,
        }
    }

    /// Feeds one op record (all of them before any half).
    pub fn op(&mut self, body: &[u8]) {
        self.ops += 1;
        match OpRecord::decode(body) {
            Ok(op) if op.transaction_id >= self.from => {
                self.decided.insert(op.transaction_id, op.decision);
            }
            // Decided before the watermark: only remembered, so that a repeated end of it
            // after the restart is answered precisely.
            Ok(op) => self.table.remember(op.transaction_id, op.decision),
            Err(_) => self.skipped += 1,
        }
    }

    /// Feeds the half record at `transaction_id` (its queue offset), stored at `stored_ms`.
    pub fn half(&mut self, transaction_id: u64, stored_ms: i64, body: &[u8]) {
        if transaction_id < self.from {
            return;
        }
        self.halves += 1;
        let Some(new) = decode_half(transaction_id, stored_ms, body) else {
            self.skipped += 1;
            return;
        };
        if self.table.contains(transaction_id) {
            self.skipped += 1;
            return;
        }
        match self.decided.remove(&transaction_id) {
            Some(decision) => self.table.remember(transaction_id, decision),
            None => self.table.insert_replayed(new, self.now_ms, self.alive_until_ms),
        }
    }

    pub fn finish(self) -> Transactions {
        self.table
    }
}

/// The table entry of a half record; None when it does not decode.
pub fn decode_half(transaction_id: u64, stored_ms: i64, body: &[u8]) -> Option<NewHalf> {
    let half = HalfRecord::decode(body).ok()?;
    let header = read_header(half.batch).ok()?;
    Some(NewHalf {
        transaction_id,
        group: half.group,
        destination: half.destination,
        stored_ms,
        fingerprint: Fingerprint::of(&header),
    })
}

/// The destination and `op_from` of a half record.
pub fn half_origin(body: &[u8]) -> Option<(Destination, u64)> {
    HalfRecord::decode(body).ok().map(|h| (h.destination, h.op_from))
}
