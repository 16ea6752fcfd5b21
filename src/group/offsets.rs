//! Committed consumer offsets: the next offset each group consumes on each queue, their record
//! codec and their snapshot.
//!
//! The coordinator appends every commit to the `%SYS%offsets` system queue of its shard's log,
//! so commits get group commit, crash recovery and (later) replication like messages do; a
//! commit is acknowledged once its record is durable per the flush mode. At startup the
//! coordinator loads the last snapshot (which names the system-queue offset it covers) and
//! replays the commit records after it, in log order; a periodic snapshot bounds that replay.
//!
//! Record body (little-endian): `u8 version (1) | u16 group length | group | u16 topic length |
//! topic | u32 queue id | u64 offset`. Snapshot: `u8 version (1) | u64 covered (the next
//! system-queue offset to replay) | u32 count | count x (record body without its version)`.
//! Decoders refuse anything else with an error, never a panic (proptest feeds them garbage).
//!
//! Pure: no I/O. Bounded by `max_entries` (group, topic, queue) triples.

use std::collections::BTreeMap;

const VERSION: u8 = 1;
/// Longest group or topic name in a record.
pub const MAX_NAME_BYTES: usize = 255;

/// One commit: `group` consumes `queue_id` of `topic` from `offset` next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    #[error("the coordinator holds its limit of {0} committed offsets")]
    TooMany(usize),
    #[error("{0} is empty or longer than 255 bytes")]
    InvalidName(&'static str),
    #[error("malformed offset record or snapshot: {0}")]
    Malformed(String),
}

impl OffsetCommit {
    /// The record body stored in `%SYS%offsets`.
    pub fn encode(&self) -> Result<Vec<u8>, OffsetError> {
        let mut out = vec![VERSION];
        self.encode_fields(&mut out)?;
        Ok(out)
    }

    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), OffsetError> {
        for (what, name) in [("group name", &self.group), ("topic name", &self.topic)] {
            if name.is_empty() || name.len() > MAX_NAME_BYTES {
                return Err(OffsetError::InvalidName(what));
            }
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        out.extend_from_slice(&self.queue_id.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        Ok(())
    }

    pub fn decode(body: &[u8]) -> Result<OffsetCommit, OffsetError> {
        let mut r = Reader { b: body };
        let v = r.u8()?;
        if v != VERSION {
            return Err(OffsetError::Malformed(format!("version {v}")));
        }
        let c = r.commit()?;
        r.finish()?;
        Ok(c)
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], OffsetError> {
        if self.b.len() < n {
            return Err(OffsetError::Malformed(format!("{} bytes short", n - self.b.len())));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, OffsetError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, OffsetError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, OffsetError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, OffsetError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn name(&mut self, what: &str) -> Result<String, OffsetError> {
        let n = self.u16()? as usize;
        if n == 0 || n > MAX_NAME_BYTES {
            return Err(OffsetError::Malformed(format!("{what} of {n} bytes")));
        }
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| OffsetError::Malformed(format!("{what} is not UTF-8")))
    }
    fn commit(&mut self) -> Result<OffsetCommit, OffsetError> {
        Ok(OffsetCommit {
            group: self.name("group name")?,
            topic: self.name("topic name")?,
            queue_id: self.u32()?,
            offset: self.u64()?,
        })
    }
    fn finish(&self) -> Result<(), OffsetError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(OffsetError::Malformed(format!("{} trailing bytes", self.b.len())))
        }
    }
}

/// The committed offsets one coordinator holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffsets {
    /// group -> (topic, queue id) -> next offset. Sorted, so snapshots are deterministic.
    groups: BTreeMap<String, BTreeMap<(String, u32), u64>>,
    entries: usize,
    max_entries: usize,
}

impl CommittedOffsets {
    pub fn new(max_entries: usize) -> Self {
        CommittedOffsets { groups: BTreeMap::new(), entries: 0, max_entries }
    }

    /// Whether `c` can be applied (checked before its record is appended, so a record in the
    /// log always replays).
    pub fn check(&self, c: &OffsetCommit) -> Result<(), OffsetError> {
        let known = self
            .groups
            .get(&c.group)
            .is_some_and(|g| g.contains_key(&(c.topic.clone(), c.queue_id)));
        if !known && self.entries >= self.max_entries {
            return Err(OffsetError::TooMany(self.max_entries));
        }
        Ok(())
    }

    /// Applies a commit (a new one, or one replayed from the log). A commit may move an offset
    /// back: resets do.
    pub fn apply(&mut self, c: OffsetCommit) -> Result<(), OffsetError> {
        self.check(&c)?;
        let g = self.groups.entry(c.group).or_default();
        if g.insert((c.topic, c.queue_id), c.offset).is_none() {
            self.entries += 1;
        }
        Ok(())
    }

    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.groups.get(group)?.get(&(topic.to_owned(), queue_id)).copied()
    }

    /// The group's committed offsets, sorted by topic and queue.
    pub fn group(&self, group: &str) -> Vec<(String, u32, u64)> {
        self.groups
            .get(group)
            .map(|g| g.iter().map(|((t, q), o)| (t.clone(), *q, *o)).collect())
            .unwrap_or_default()
    }

    /// Groups with committed offsets, sorted.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Forgets a group's offsets (the group was deleted).
    pub fn remove_group(&mut self, group: &str) -> usize {
        let n = self.groups.remove(group).map_or(0, |g| g.len());
        self.entries -= n;
        n
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// A snapshot covering the system queue up to `covered` (the next offset to replay).
    pub fn snapshot(&self, covered: u64) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&covered.to_le_bytes());
        out.extend_from_slice(&(self.entries as u32).to_le_bytes());
        for (group, offsets) in &self.groups {
            for ((topic, queue_id), offset) in offsets {
                let c = OffsetCommit {
                    group: group.clone(),
                    topic: topic.clone(),
                    queue_id: *queue_id,
                    offset: *offset,
                };
                c.encode_fields(&mut out).expect("names were checked when committed");
            }
        }
        out
    }

    /// Loads a snapshot: the offsets and the system-queue offset replay starts at.
    pub fn restore(
        bytes: &[u8],
        max_entries: usize,
    ) -> Result<(CommittedOffsets, u64), OffsetError> {
        let mut r = Reader { b: bytes };
        let v = r.u8()?;
        if v != VERSION {
            return Err(OffsetError::Malformed(format!("snapshot version {v}")));
        }
        let covered = r.u64()?;
        let count = r.u32()? as usize;
        let mut offsets = CommittedOffsets::new(max_entries);
        for _ in 0..count {
            offsets.apply(r.commit()?)?;
        }
        r.finish()?;
        if offsets.entries != count {
            return Err(OffsetError::Malformed("repeated entries".into()));
        }
        Ok((offsets, covered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn commit(g: &str, t: &str, q: u32, o: u64) -> OffsetCommit {
        OffsetCommit { group: g.into(), topic: t.into(), queue_id: q, offset: o }
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let c = commit("orders-app", "orders", 7, 1 << 40);
        assert_eq!(OffsetCommit::decode(&c.encode().unwrap()).unwrap(), c);
        let mut b = c.encode().unwrap();
        b.push(0);
        assert!(matches!(OffsetCommit::decode(&b), Err(OffsetError::Malformed(_))));
        assert!(OffsetCommit::decode(&[2]).is_err());
        assert!(OffsetCommit::decode(&[]).is_err());
        assert!(matches!(commit("", "t", 0, 0).encode(), Err(OffsetError::InvalidName(_))));
        assert!(commit("g", &"t".repeat(256), 0, 0).encode().is_err());
    }

    #[test]
    fn commits_are_bounded_and_may_move_back() {
        let mut o = CommittedOffsets::new(2);
        o.apply(commit("g", "t", 0, 10)).unwrap();
        o.apply(commit("g", "t", 1, 10)).unwrap();
        assert_eq!(o.apply(commit("h", "t", 0, 1)), Err(OffsetError::TooMany(2)));
        // Updating a known entry at the limit works, backwards too (a reset).
        o.apply(commit("g", "t", 0, 3)).unwrap();
        assert_eq!(o.get("g", "t", 0), Some(3));
        assert_eq!(o.group("g"), vec![("t".into(), 0, 3), ("t".into(), 1, 10)]);
        assert_eq!(o.remove_group("g"), 2);
        assert!(o.is_empty());
        o.apply(commit("h", "t", 0, 1)).unwrap();
    }

    proptest! {
        /// A snapshot at any point plus a replay of the records after it gives the offsets of
        /// a full replay.
        #[test]
        fn snapshot_plus_replay_equals_full_replay(
            commits in proptest::collection::vec((0u8..3, 0u8..2, 0u32..4, any::<u64>()), 0..60),
            cut in any::<prop::sample::Index>(),
        ) {
            let records: Vec<Vec<u8>> = commits
                .iter()
                .map(|(g, t, q, o)| commit(&format!("g{g}"), &format!("t{t}"), *q, *o).encode().unwrap())
                .collect();
            let mut full = CommittedOffsets::new(1000);
            for r in &records {
                full.apply(OffsetCommit::decode(r).unwrap()).unwrap();
            }
            let k = if records.is_empty() { 0 } else { cut.index(records.len() + 1) };
            let mut early = CommittedOffsets::new(1000);
            for r in &records[..k] {
                early.apply(OffsetCommit::decode(r).unwrap()).unwrap();
            }
            let (mut restored, covered) = CommittedOffsets::restore(&early.snapshot(k as u64), 1000).unwrap();
            prop_assert_eq!(covered, k as u64);
            for r in &records[covered as usize..] {
                restored.apply(OffsetCommit::decode(r).unwrap()).unwrap();
            }
            prop_assert_eq!(restored, full);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = OffsetCommit::decode(&bytes);
            let _ = CommittedOffsets::restore(&bytes, 100);
        }
    }
}
