//! The bytes of the two transaction system queues: half records (`%SYS%half`) and op records
//! (`%SYS%txn-op`).
//!
//! A half record is the body of the one record of a broker-built batch in `%SYS%half`; the
//! record's queue offset is the transaction id. It wraps the producer's batch unchanged, so
//! the batch delivered on commit keeps the producer's CRC, producer id and sequence:
//!
//! ```text
//! u8 version (1) | u16 group length | group | u32 topic id | u32 queue id
//! | u64 op_from (the %SYS%txn-op next offset when the half was written) | batch bytes (rest)
//! ```
//!
//! An op record (key [`OP_KEY`]) decides one half:
//!
//! ```text
//! u8 version (1) | u8 decision (1 commit, 2 rollback) | u8 by (1 producer, 2 check-back
//! exhausted, 3 restart found it delivered) | u64 transaction id | u64 low_watermark
//! ```
//!
//! `low_watermark` is at most the smallest undecided transaction id when the op was written
//! (or the half queue's next offset when none was): a restart replays halves from the last op
//! record's watermark and ops from that half's `op_from`, so replay reads only what may still
//! be undecided (see [`super::replay`]).
//!
//! Pure; decoders refuse anything else with an error, never a panic (proptest feeds garbage).

/// Key of a half record.
pub const HALF_KEY: &[u8] = b"h";
/// Key of an op record.
pub const OP_KEY: &[u8] = b"o";
/// Longest producer group name.
pub const MAX_GROUP_BYTES: usize = 255;
/// Bytes a half record adds around the producer's batch, at most.
pub const HALF_OVERHEAD_BYTES: usize = 1 + 2 + MAX_GROUP_BYTES + 4 + 4 + 8;

const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed transaction record: {0}")]
pub struct RecordError(pub String);

/// Where a half is delivered when committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub topic_id: u32,
    pub queue_id: u32,
}

/// A decoded half record, borrowing the batch bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfRecord<'a> {
    pub group: String,
    pub destination: Destination,
    pub op_from: u64,
    pub batch: &'a [u8],
}

/// Checks a producer group name (non-empty, at most [`MAX_GROUP_BYTES`]).
pub fn check_group(group: &str) -> Result<(), RecordError> {
    if group.is_empty() || group.len() > MAX_GROUP_BYTES {
        return Err(RecordError(format!(
            "producer group of {} bytes: it must have 1 to {MAX_GROUP_BYTES}",
            group.len()
        )));
    }
    Ok(())
}

impl HalfRecord<'_> {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        check_group(&self.group)?;
        let mut out = Vec::with_capacity(HALF_OVERHEAD_BYTES + self.batch.len());
        out.push(VERSION);
        out.extend_from_slice(&(self.group.len() as u16).to_le_bytes());
        out.extend_from_slice(self.group.as_bytes());
        out.extend_from_slice(&self.destination.topic_id.to_le_bytes());
        out.extend_from_slice(&self.destination.queue_id.to_le_bytes());
        out.extend_from_slice(&self.op_from.to_le_bytes());
        out.extend_from_slice(self.batch);
        Ok(out)
    }

    pub fn decode(body: &[u8]) -> Result<HalfRecord<'_>, RecordError> {
        let mut r = Reader { b: body };
        let v = r.u8()?;
        if v != VERSION {
            return Err(RecordError(format!("half record version {v}")));
        }
        let n = r.u16()? as usize;
        let group = String::from_utf8(r.take(n)?.to_vec())
            .map_err(|_| RecordError("group name is not UTF-8".into()))?;
        check_group(&group)?;
        let destination = Destination { topic_id: r.u32()?, queue_id: r.u32()? };
        let op_from = r.u64()?;
        if r.b.is_empty() {
            return Err(RecordError("half record without a batch".into()));
        }
        Ok(HalfRecord { group, destination, op_from, batch: r.b })
    }
}

/// What an op record decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Commit,
    Rollback,
}

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// An END_TRANSACTION from a producer (its own or an answer to a check).
    Producer,
    /// `transaction_check_max` checks went unanswered or unknown: rolled back.
    CheckExhausted,
    /// At start the broker found the half's batch delivered without its op record (a crash
    /// between the two appends): the commit is recorded, not delivered again.
    FoundDelivered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRecord {
    pub decision: Decision,
    pub by: DecidedBy,
    pub transaction_id: u64,
    pub low_watermark: u64,
}

impl OpRecord {
    pub const LEN: usize = 1 + 1 + 1 + 8 + 8;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(VERSION);
        out.push(match self.decision {
            Decision::Commit => 1,
            Decision::Rollback => 2,
        });
        out.push(match self.by {
            DecidedBy::Producer => 1,
            DecidedBy::CheckExhausted => 2,
            DecidedBy::FoundDelivered => 3,
        });
        out.extend_from_slice(&self.transaction_id.to_le_bytes());
        out.extend_from_slice(&self.low_watermark.to_le_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<OpRecord, RecordError> {
        let mut r = Reader { b: body };
        let v = r.u8()?;
        if v != VERSION {
            return Err(RecordError(format!("op record version {v}")));
        }
        let decision = match r.u8()? {
            1 => Decision::Commit,
            2 => Decision::Rollback,
            d => return Err(RecordError(format!("decision {d}"))),
        };
        let by = match r.u8()? {
            1 => DecidedBy::Producer,
            2 => DecidedBy::CheckExhausted,
            3 => DecidedBy::FoundDelivered,
            b => return Err(RecordError(format!("decided-by {b}"))),
        };
        let op = OpRecord { decision, by, transaction_id: r.u64()?, low_watermark: r.u64()? };
        if !r.b.is_empty() {
            return Err(RecordError(format!("{} trailing bytes", r.b.len())));
        }
        Ok(op)
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.b.len() < n {
            return Err(RecordError(format!("{} bytes short", n - self.b.len())));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn half_records_round_trip_and_bad_ones_are_refused() {
        let h = HalfRecord {
            group: "orders-tx".into(),
            destination: Destination { topic_id: 7, queue_id: 3 },
            op_from: 42,
            batch: b"the batch",
        };
        let bytes = h.encode().unwrap();
        assert!(bytes.len() <= HALF_OVERHEAD_BYTES + h.batch.len());
        assert_eq!(HalfRecord::decode(&bytes).unwrap(), h);
        // No batch, a wrong version, an empty or too long group: refused.
        let mut no_batch = bytes.clone();
        no_batch.truncate(bytes.len() - h.batch.len());
        assert!(HalfRecord::decode(&no_batch).is_err());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(HalfRecord::decode(&v2).is_err());
        assert!(HalfRecord { group: String::new(), ..h.clone() }.encode().is_err());
        assert!(HalfRecord { group: "g".repeat(256), ..h.clone() }.encode().is_err());
        assert!(HalfRecord::decode(&[]).is_err());
    }

    #[test]
    fn op_records_round_trip_and_bad_ones_are_refused() {
        for decision in [Decision::Commit, Decision::Rollback] {
            for by in [DecidedBy::Producer, DecidedBy::CheckExhausted, DecidedBy::FoundDelivered] {
                let op = OpRecord { decision, by, transaction_id: 1 << 40, low_watermark: 9 };
                let bytes = op.encode();
                assert_eq!(bytes.len(), OpRecord::LEN);
                assert_eq!(OpRecord::decode(&bytes), Ok(op));
            }
        }
        let good = OpRecord {
            decision: Decision::Commit,
            by: DecidedBy::Producer,
            transaction_id: 1,
            low_watermark: 0,
        }
        .encode();
        for (at, bad) in [(0, 9u8), (1, 0), (1, 3), (2, 0), (2, 4)] {
            let mut b = good.clone();
            b[at] = bad;
            assert!(OpRecord::decode(&b).is_err(), "byte {at} = {bad}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(OpRecord::decode(&long).is_err());
        assert!(OpRecord::decode(&good[..10]).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = HalfRecord::decode(&bytes);
            let _ = OpRecord::decode(&bytes);
        }
    }
}
