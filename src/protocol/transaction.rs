//! Transaction requests and responses (api keys 30-32): ending a transaction, the parked
//! check-back request, and the list of undecided halves.
//!
//! A half message is sent with an ordinary PRODUCE of a batch with attribute bit 3 whose first
//! record carries the producer group in property [`PRODUCER_GROUP_PROPERTY`]; the answer is a
//! PRODUCE response whose `topic_id` is `0xFFFF_FFFC` (`%SYS%half`) and whose `base_offset` is
//! the transaction id. `EndTransaction` goes to the shard owning the half's queue (any shard
//! forwards it). The broker cannot call a client, so a transactional producer keeps one
//! `CheckTransactions` parked on each shard: it returns with the halves of its group due for a
//! check (or empty after `max_wait_ms`), and the producer answers each with `EndTransaction`
//! (an "unknown" answer is no answer). `ListTransactions` lists one shard's undecided halves.
//! Layouts are in docs/protocol.md ("Transactions").

use super::api::ApiKey;
use super::codec::{DecodeError, Reader, Writer};
use super::message::{SendStatus, MAX_LIST_ITEMS};

/// The record property naming a half message's producer group (RocketMQ's `PGROUP`).
pub const PRODUCER_GROUP_PROPERTY: &[u8] = b"PGROUP";

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndAction {
    Commit,
    Rollback,
}

/// A half the broker asks a producer about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionCheck {
    pub transaction_id: u64,
    pub topic: String,
    pub queue_id: u32,
    /// Checks of this half so far, this one included.
    pub checks: u32,
    /// The half's batch as the producer sent it.
    pub batch: Vec<u8>,
}

/// An undecided half in a `ListTransactions` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfInfo {
    pub transaction_id: u64,
    pub group: String,
    /// Empty when the topic was deleted.
    pub topic: String,
    pub queue_id: u32,
    pub age_ms: u64,
    pub checks: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRequest {
    /// Commits (delivers the half to its queue, exactly once) or rolls back transaction
    /// `transaction_id` of `group` on `topic`/`queue_id`.
    End { group: String, topic: String, queue_id: u32, transaction_id: u64, action: EndAction },
    /// Parked: returns up to `max_checks` halves of `group` on shard `shard` due for a check.
    Check { group: String, shard: u16, max_wait_ms: u32, max_checks: u32 },
    /// Shard `shard`'s undecided halves, oldest first, at most `max`.
    List { shard: u16, max: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResponse {
    /// Commit: where the batch was delivered; rollback: `record_count` 0.
    End {
        status: SendStatus,
        base_offset: u64,
        record_count: u32,
    },
    Check {
        checks: Vec<TransactionCheck>,
    },
    List {
        halves: Vec<HalfInfo>,
    },
}

impl TxnRequest {
    pub fn api_key(&self) -> ApiKey {
        match self {
            TxnRequest::End { .. } => ApiKey::EndTransaction,
            TxnRequest::Check { .. } => ApiKey::CheckTransactions,
            TxnRequest::List { .. } => ApiKey::ListTransactions,
        }
    }

    pub(super) fn encode_body(&self, w: &mut Writer) {
        match self {
            TxnRequest::End { group, topic, queue_id, transaction_id, action } => {
                w.string(group).string(topic).u32(*queue_id).u64(*transaction_id).u8(
                    match action {
                        EndAction::Commit => 1,
                        EndAction::Rollback => 2,
                    },
                );
            }
            TxnRequest::Check { group, shard, max_wait_ms, max_checks } => {
                w.string(group).u16(*shard).u32(*max_wait_ms).u32(*max_checks);
            }
            TxnRequest::List { shard, max } => {
                w.u16(*shard).u32(*max);
            }
        }
    }

    pub(super) fn decode_body(api: ApiKey, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            ApiKey::EndTransaction => TxnRequest::End {
                group: r.string("group")?,
                topic: r.string("topic")?,
                queue_id: r.u32("queue_id")?,
                transaction_id: r.u64("transaction_id")?,
                action: match r.u8("action")? {
                    1 => EndAction::Commit,
                    2 => EndAction::Rollback,
                    v => return Err(DecodeError::BadValue { field: "action", value: v.into() }),
                },
            },
            ApiKey::CheckTransactions => TxnRequest::Check {
                group: r.string("group")?,
                shard: r.u16("shard")?,
                max_wait_ms: r.u32("max_wait_ms")?,
                max_checks: r.u32("max_checks")?,
            },
            ApiKey::ListTransactions => {
                TxnRequest::List { shard: r.u16("shard")?, max: r.u32("max")? }
            }
            other => unreachable!("{other:?} is not a transaction api key"),
        })
    }
}

impl TxnResponse {
    pub fn api_key(&self) -> ApiKey {
        match self {
            TxnResponse::End { .. } => ApiKey::EndTransaction,
            TxnResponse::Check { .. } => ApiKey::CheckTransactions,
            TxnResponse::List { .. } => ApiKey::ListTransactions,
        }
    }

    pub(super) fn encode_body(&self, w: &mut Writer) {
        match self {
            TxnResponse::End { status, base_offset, record_count } => {
                w.u8(*status as u8).u64(*base_offset).u32(*record_count);
            }
            TxnResponse::Check { checks } => {
                w.count(checks.len());
                for c in checks {
                    w.u64(c.transaction_id).string(&c.topic).u32(c.queue_id).u32(c.checks);
                    w.bytes(&c.batch);
                }
            }
            TxnResponse::List { halves } => {
                w.count(halves.len());
                for h in halves {
                    w.u64(h.transaction_id).string(&h.group).string(&h.topic).u32(h.queue_id);
                    w.u64(h.age_ms).u32(h.checks);
                }
            }
        }
    }

    pub(super) fn decode_body(api: ApiKey, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            ApiKey::EndTransaction => TxnResponse::End {
                status: match r.u8("status")? {
                    0 => SendStatus::SendOk,
                    1 => SendStatus::FlushDiskTimeout,
                    v => return Err(DecodeError::BadValue { field: "status", value: v.into() }),
                },
                base_offset: r.u64("base_offset")?,
                record_count: r.u32("record_count")?,
            },
            ApiKey::CheckTransactions => {
                let n = r.count("checks", MAX_LIST_ITEMS, 8 + 2 + 4 + 4 + 4)?;
                let mut checks = Vec::with_capacity(n);
                for _ in 0..n {
                    checks.push(TransactionCheck {
                        transaction_id: r.u64("transaction_id")?,
                        topic: r.string("topic")?,
                        queue_id: r.u32("queue_id")?,
                        checks: r.u32("checks")?,
                        batch: r.bytes("batch")?.to_vec(),
                    });
                }
                TxnResponse::Check { checks }
            }
            ApiKey::ListTransactions => {
                let n = r.count("halves", MAX_LIST_ITEMS, 8 + 2 + 2 + 4 + 8 + 4)?;
                let mut halves = Vec::with_capacity(n);
                for _ in 0..n {
                    halves.push(HalfInfo {
                        transaction_id: r.u64("transaction_id")?,
                        group: r.string("group")?,
                        topic: r.string("topic")?,
                        queue_id: r.u32("queue_id")?,
                        age_ms: r.u64("age_ms")?,
                        checks: r.u32("checks")?,
                    });
                }
                TxnResponse::List { halves }
            }
            other => unreachable!("{other:?} is not a transaction api key"),
        })
    }
}
