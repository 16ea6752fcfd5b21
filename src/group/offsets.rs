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
//! Pure: no I/O. Bounded by `max_entries` (group, topic, queue) triples. Each group also keeps
//! the exact size of its FETCH_OFFSETS answer for "every committed queue"
//! ([`CommittedOffsets::fetch_answer_bytes`]), so that a commit which would add a queue past
//! what one answer frame can carry is refused ([`CommittedOffsets::check_all`]) and every
//! member can always read its group's offsets.

use std::collections::BTreeMap;

const VERSION: u8 = 1;
/// Longest group or topic name in a record.
pub const MAX_NAME_BYTES: usize = 255;

/// Bytes of a FETCH_OFFSETS answer frame besides its entries: length prefix, response header
/// and the entry count.
pub const FETCH_ANSWER_FIXED_BYTES: usize =
    crate::protocol::frame::LEN_PREFIX + crate::protocol::frame::RESPONSE_HEADER_LEN + 4;

/// Most entries one FETCH_OFFSETS answer may hold: the decoders' bound on any list.
pub const MAX_FETCH_ANSWER_QUEUES: usize = crate::protocol::message::MAX_LIST_ITEMS as usize;

/// A committed queue's bytes in a FETCH_OFFSETS answer: `string topic, u32 queue_id, i64
/// offset` (strings are `u16 len | bytes`).
pub fn fetch_answer_entry_bytes(topic: &str) -> usize {
    2 + topic.len() + 4 + 8
}

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
    #[error(
        "group {group} would have {queues} committed queues, a {bytes}-byte FETCH_OFFSETS \
         answer: over the {limit} bytes a frame may carry (broker.max_frame_bytes) or the \
         {MAX_FETCH_ANSWER_QUEUES} entries an answer may hold; commit fewer queues or use \
         another group"
    )]
    FetchAnswerTooLarge { group: String, queues: usize, bytes: usize, limit: usize },
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

/// One group's committed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupOffsets {
    /// (topic, queue id) -> next offset.
    queues: BTreeMap<(String, u32), u64>,
    /// [`fetch_answer_entry_bytes`] of every queue.
    answer_bytes: usize,
}

/// The committed offsets one coordinator holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffsets {
    /// group -> its offsets. Sorted, so snapshots are deterministic.
    groups: BTreeMap<String, GroupOffsets>,
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
        if !self.has(c) && self.entries >= self.max_entries {
            return Err(OffsetError::TooMany(self.max_entries));
        }
        Ok(())
    }

    /// Whether `c`'s queue already has a committed offset for its group.
    fn has(&self, c: &OffsetCommit) -> bool {
        self.groups
            .get(&c.group)
            .is_some_and(|g| g.queues.contains_key(&(c.topic.clone(), c.queue_id)))
    }

    /// Whether every commit of `commits` can be applied together (distinct new entries are
    /// counted against the bound once each), and each group's FETCH_OFFSETS answer for every
    /// committed queue would still fit `max_answer_bytes` (the frame limit) and
    /// [`MAX_FETCH_ANSWER_QUEUES`] entries. Commits to queues already committed always pass
    /// the latter: only a new queue grows the answer.
    pub fn check_all(
        &self,
        commits: &[OffsetCommit],
        max_answer_bytes: usize,
    ) -> Result<(), OffsetError> {
        let mut new = std::collections::BTreeSet::new();
        for c in commits {
            OffsetCommit::encode_fields(c, &mut Vec::new())?;
            if !self.has(c) {
                new.insert((&c.group, &c.topic, c.queue_id));
            }
        }
        if self.entries + new.len() > self.max_entries {
            return Err(OffsetError::TooMany(self.max_entries));
        }
        // The new queues by group (sorted by group: one run each).
        let mut at = 0;
        let new: Vec<_> = new.into_iter().collect();
        while at < new.len() {
            let group = new[at].0;
            let run = new[at..].iter().take_while(|(g, _, _)| *g == group).count();
            let added: usize =
                new[at..at + run].iter().map(|(_, t, _)| fetch_answer_entry_bytes(t)).sum();
            let bytes = self.fetch_answer_bytes(group) + added;
            let queues = self.groups.get(group).map_or(0, |g| g.queues.len()) + run;
            if bytes > max_answer_bytes || queues > MAX_FETCH_ANSWER_QUEUES {
                return Err(OffsetError::FetchAnswerTooLarge {
                    group: group.clone(),
                    queues,
                    bytes,
                    limit: max_answer_bytes,
                });
            }
            at += run;
        }
        Ok(())
    }

    /// The exact size of `group`'s FETCH_OFFSETS answer frame for every committed queue
    /// ([`FETCH_ANSWER_FIXED_BYTES`] for a group without offsets).
    pub fn fetch_answer_bytes(&self, group: &str) -> usize {
        FETCH_ANSWER_FIXED_BYTES + self.groups.get(group).map_or(0, |g| g.answer_bytes)
    }

    /// Applies a commit (a new one, or one replayed from the log). A commit may move an offset
    /// back: resets do.
    pub fn apply(&mut self, c: OffsetCommit) -> Result<(), OffsetError> {
        self.check(&c)?;
        self.replay(c);
        Ok(())
    }

    /// Applies a commit the log holds (a commit record, or a snapshot's entry): it passed
    /// [`Self::check`] when it was committed, so no bound applies now. A `max_entries` lowered
    /// since must not drop offsets committed under the old one (every group would start over
    /// from its `consume_from`); new entries are refused until the count is below it.
    fn replay(&mut self, c: OffsetCommit) {
        let g = self.groups.entry(c.group).or_default();
        let entry_bytes = fetch_answer_entry_bytes(&c.topic);
        if g.queues.insert((c.topic, c.queue_id), c.offset).is_none() {
            self.entries += 1;
            g.answer_bytes += entry_bytes;
        }
    }

    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.groups.get(group)?.queues.get(&(topic.to_owned(), queue_id)).copied()
    }

    /// The group's committed offsets, sorted by topic and queue.
    pub fn group(&self, group: &str) -> Vec<(String, u32, u64)> {
        self.groups
            .get(group)
            .map(|g| g.queues.iter().map(|((t, q), o)| (t.clone(), *q, *o)).collect())
            .unwrap_or_default()
    }

    /// How many queues `group` committed.
    pub fn group_len(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |g| g.queues.len())
    }

    /// Every committed offset as (group, topic, queue id, offset), sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u32, u64)> + '_ {
        self.groups.iter().flat_map(|(g, offsets)| {
            offsets.queues.iter().map(move |((t, q), o)| (g.as_str(), t.as_str(), *q, *o))
        })
    }

    /// Groups with committed offsets, sorted.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Groups with committed offsets whose names sort after `after`, in name order.
    pub fn group_names_after<'a>(&'a self, after: &str) -> impl Iterator<Item = &'a str> + 'a {
        use std::ops::Bound;
        let range = (Bound::Excluded(after.to_owned()), Bound::Unbounded);
        self.groups.range::<String, _>(range).map(|(g, _)| g.as_str())
    }

    /// Whether `group` has any committed offset.
    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Forgets a group's offsets (the group was deleted).
    pub fn remove_group(&mut self, group: &str) -> usize {
        let n = self.groups.remove(group).map_or(0, |g| g.queues.len());
        self.entries -= n;
        n
    }

    /// Forgets every group's offsets of the topics `keep` refuses (deleted topics: a topic
    /// created again under its name starts its queues at 0, and an old offset would put its
    /// consumers past the new queues' ends). One pass; returns how many went.
    pub fn retain_topics(&mut self, keep: impl Fn(&str) -> bool) -> usize {
        let mut n = 0;
        self.groups.retain(|_, g| {
            let before = g.queues.len();
            let mut gone_bytes = 0;
            g.queues.retain(|(t, _), _| {
                let kept = keep(t);
                if !kept {
                    gone_bytes += fetch_answer_entry_bytes(t);
                }
                kept
            });
            g.answer_bytes -= gone_bytes;
            n += before - g.queues.len();
            !g.queues.is_empty()
        });
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
            for ((topic, queue_id), offset) in &offsets.queues {
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

    /// The snapshot split into standalone snapshots of about `max_part_bytes` each (at least
    /// one entry per part; one empty part when there is nothing), so each fits in a batch.
    /// Without the offsets of group `without` when given (the snapshot that deletes it).
    pub fn snapshot_parts(&self, max_part_bytes: usize, without: Option<&str>) -> Vec<Vec<u8>> {
        let mut parts = Vec::new();
        let mut part = CommittedOffsets::new(usize::MAX);
        let mut bytes = 0;
        for (group, offsets) in &self.groups {
            if without == Some(group.as_str()) {
                continue;
            }
            for ((topic, queue_id), offset) in &offsets.queues {
                let entry_bytes = 2 + group.len() + 2 + topic.len() + 12;
                if bytes > 0 && bytes + entry_bytes > max_part_bytes {
                    parts.push(std::mem::replace(&mut part, CommittedOffsets::new(usize::MAX)));
                    bytes = 0;
                }
                let c = OffsetCommit {
                    group: group.clone(),
                    topic: topic.clone(),
                    queue_id: *queue_id,
                    offset: *offset,
                };
                part.apply(c).expect("an unbounded part takes every entry");
                bytes += entry_bytes;
            }
        }
        parts.push(part);
        parts.iter().map(|p| p.snapshot(0)).collect()
    }

    /// Adds every entry of `other` (entries of `other` win), as [`Self::replay`] does.
    fn merge(&mut self, other: CommittedOffsets) {
        for (group, offsets) in other.groups {
            for ((topic, queue_id), offset) in offsets.queues {
                self.replay(OffsetCommit { group: group.clone(), topic, queue_id, offset });
            }
        }
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
            offsets.replay(r.commit()?);
        }
        r.finish()?;
        if offsets.entries != count {
            return Err(OffsetError::Malformed("repeated entries".into()));
        }
        Ok((offsets, covered))
    }
}

/// Key of a commit record in `%SYS%offsets`.
pub const COMMIT_KEY: &[u8] = b"c";

/// Key of part `part` of a snapshot of `parts` parts: `s | u32 part | u32 parts`.
pub fn snapshot_key(part: u32, parts: u32) -> Vec<u8> {
    let mut k = b"s".to_vec();
    k.extend_from_slice(&part.to_le_bytes());
    k.extend_from_slice(&parts.to_le_bytes());
    k
}

/// `(part, parts)` if `key` is a snapshot part's key.
pub fn parse_snapshot_key(key: &[u8]) -> Option<(u32, u32)> {
    if key.len() != 9 || key[0] != b's' {
        return None;
    }
    let part = u32::from_le_bytes(key[1..5].try_into().ok()?);
    let parts = u32::from_le_bytes(key[5..9].try_into().ok()?);
    (part < parts).then_some((part, parts))
}

/// Rebuilds the committed offsets from `%SYS%offsets` records fed in log order.
///
/// A commit record applies on top of what came before. A snapshot is a run of consecutive
/// parts `0..parts`; once its last part arrives the offsets become the snapshot's (it holds
/// every commit appended before it, see the coordinator). A snapshot interrupted (a crash while
/// it was appended, or a record in between) is ignored. Replay may start anywhere: at the first
/// retained record, or at the first part of the last complete snapshot (fastest).
#[derive(Debug)]
pub struct OffsetsReplay {
    state: CommittedOffsets,
    pending: Option<(u32, u32, CommittedOffsets)>,
    max_entries: usize,
    /// Records that could not be applied (malformed).
    pub skipped: u64,
    pub records: u64,
}

impl OffsetsReplay {
    pub fn new(max_entries: usize) -> Self {
        OffsetsReplay {
            state: CommittedOffsets::new(max_entries),
            pending: None,
            max_entries,
            skipped: 0,
            records: 0,
        }
    }

    /// Feeds one record.
    pub fn record(&mut self, key: &[u8], body: &[u8]) {
        self.records += 1;
        if key == COMMIT_KEY {
            self.pending = None;
            let applied = OffsetCommit::decode(body).map(|c| self.state.replay(c));
            self.skipped += u64::from(applied.is_err());
            return;
        }
        let Some((part, parts)) = parse_snapshot_key(key) else {
            self.pending = None;
            self.skipped += 1;
            return;
        };
        if part == 0 {
            self.pending = Some((0, parts, CommittedOffsets::new(self.max_entries)));
        }
        let Some((next, want, mut acc)) = self.pending.take() else {
            self.skipped += 1;
            return;
        };
        if part != next || parts != want {
            self.skipped += 1;
            return;
        }
        match CommittedOffsets::restore(body, self.max_entries).map(|(o, _)| acc.merge(o)) {
            Ok(()) if part + 1 == parts => self.state = acc,
            Ok(()) => self.pending = Some((next + 1, want, acc)),
            Err(_) => self.skipped += 1,
        }
    }

    pub fn finish(self) -> CommittedOffsets {
        self.state
    }
}

#[cfg(test)]
mod tests;
