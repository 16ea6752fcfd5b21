//! Transactional messages (RocketMQ's half messages with check-back): the pure part.
//!
//! A producer sends a transactional batch (attribute bit 3) for a queue; the shard that owns
//! the queue stores it, invisible, as a half record in its `%SYS%half` system queue and answers
//! with a transaction id (the record's offset there). The producer runs its local transaction
//! and ends it with END_TRANSACTION: commit appends the stored batch, unchanged, to its queue;
//! rollback discards it. Either way an op record goes to `%SYS%txn-op`, after the delivered
//! batch in the same log, so a surviving op record implies a surviving delivery. An undecided
//! half is checked back with a live producer of its group every `check_interval_ms`, at most
//! `check_max` times, then rolled back.
//!
//! This module owns the logic without I/O or clock reads, so it is tested exhaustively:
//! - [`record`]: the bytes of half and op records;
//! - [`table`]: the undecided halves of one shard, the check-back schedule and the bounds;
//! - [`replay`]: rebuilding the table from the two queues at start, reading only what may be
//!   undecided.
//!
//! The shard task around it (appends, the check loop, parked check requests) is
//! `broker/shard/transaction.rs`; it runs on the shard that owns the half's destination queue.

pub mod record;
pub mod replay;
pub mod table;

pub use record::{DecidedBy, Decision, Destination, HalfRecord, OpRecord};
pub use replay::{replay_from, TxnReplay};
pub use table::{CheckDue, Fingerprint, HalfSummary, Limits, NewHalf, Transactions, TxnError};

#[cfg(test)]
mod tests;
