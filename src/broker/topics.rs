//! The topic table: names, ids, queue counts, and the rules for changing them.
//!
//! Pure logic, no I/O. Shard 0 owns the authoritative table, persists it (see
//! [`super::metadata_store`]) and broadcasts each new version to the other shards, which keep a
//! read-only copy for routing. Promises:
//! - names follow RocketMQ: `^[A-Za-z0-9_%|-]{1,127}$`;
//! - topic ids start at 1, grow monotonically and are never reused, even after a delete, so
//!   stored data of a deleted topic can never surface under a new topic of the same name;
//! - the shard count is recorded, because queue placement depends on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::ErrorCode;

/// Longest topic name (RocketMQ's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 127;
/// The most queues a topic can have: the bound of `broker.max_queues_per_topic`. A route
/// answer lists an owner per queue.
pub const MAX_QUEUES_PER_TOPIC: u32 = u16::MAX as u32;
const FORMAT_VERSION: u32 = 1;

/// One topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEntry {
    pub id: u32,
    pub queue_count: u32,
}

/// Why a topic change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("topic {0:?} already exists")]
    Exists(String),
    #[error("topic {0:?} does not exist")]
    Unknown(String),
    #[error("queue count {count} is outside 1..={max}")]
    BadQueueCount { count: u32, max: u32 },
    #[error("the broker already holds {0} topics (broker.max_topics)")]
    TooMany(usize),
    #[error("topic ids are exhausted")]
    IdsExhausted,
}

impl TopicError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TopicError::InvalidName { .. } => ErrorCode::INVALID_TOPIC_NAME,
            TopicError::Exists(_) => ErrorCode::TOPIC_EXISTS,
            TopicError::Unknown(_) => ErrorCode::UNKNOWN_TOPIC,
            TopicError::BadQueueCount { .. } => ErrorCode::INVALID_ARGUMENT,
            TopicError::TooMany(_) | TopicError::IdsExhausted => ErrorCode::TOO_MANY_TOPICS,
        }
    }
}

/// Checks a topic name against `^[A-Za-z0-9_%|-]{1,127}$`.
/// Topic ids from here on are never handed out: the broker's own queues use them in the
/// logs (they are not in the topic table, so no client can read or write them as topics).
pub const FIRST_SYSTEM_TOPIC_ID: u32 = 0xFFFF_FF00;
/// `%SYS%offsets`: each coordinator shard's committed consumer offsets (`shard/group.rs`).
pub const SYSTEM_TOPIC_OFFSETS: u32 = u32::MAX;
/// `%SYS%schedule`: each shard's scheduled messages, timer log and wheel checkpoints
/// (`shard/schedule.rs`, record formats in `crate::schedule::entry`).
pub const SYSTEM_TOPIC_SCHEDULE: u32 = 0xFFFF_FFFE;
/// `%SYS%half`: each shard's undecided and decided half messages (`shard/transaction.rs`).
pub const SYSTEM_TOPIC_HALF: u32 = 0xFFFF_FFFC;
/// `%SYS%txn-op`: each shard's transaction decisions (`shard/transaction.rs`).
pub const SYSTEM_TOPIC_TXN_OP: u32 = 0xFFFF_FFFB;

pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let bad = |reason| Err(TopicError::InvalidName { name: name.to_owned(), reason });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad("it is longer than 127 bytes");
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'%' | b'|' | b'-');
    if !name.bytes().all(ok) {
        return bad("only letters, digits and _ % | - are allowed");
    }
    Ok(())
}

/// All topics of the broker. Cloned (it is small) when broadcast to other shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicTable {
    version: u32,
    /// Shards the broker ran with when the table was written; queue placement depends on it.
    pub shard_count: u32,
    /// The id the next created topic gets.
    next_topic_id: u32,
    /// Bumped on every change; shards ignore broadcasts older than what they hold.
    pub epoch: u64,
    topics: BTreeMap<String, TopicEntry>,
}

impl TopicTable {
    pub fn new(shard_count: u32) -> Self {
        TopicTable {
            version: FORMAT_VERSION,
            shard_count,
            next_topic_id: 1,
            epoch: 0,
            topics: BTreeMap::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<TopicEntry> {
        self.topics.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, TopicEntry)> {
        self.topics.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Creates a topic; returns its new id.
    pub fn create(
        &mut self,
        name: &str,
        queue_count: u32,
        max_queues: u32,
        max_topics: usize,
    ) -> Result<u32, TopicError> {
        validate_topic_name(name)?;
        if queue_count == 0 || queue_count > max_queues {
            return Err(TopicError::BadQueueCount { count: queue_count, max: max_queues });
        }
        if self.topics.contains_key(name) {
            return Err(TopicError::Exists(name.to_owned()));
        }
        if self.topics.len() >= max_topics {
            return Err(TopicError::TooMany(self.topics.len()));
        }
        let id = self.next_topic_id;
        if id >= FIRST_SYSTEM_TOPIC_ID {
            return Err(TopicError::IdsExhausted);
        }
        self.next_topic_id = id + 1;
        self.topics.insert(name.to_owned(), TopicEntry { id, queue_count });
        self.epoch += 1;
        Ok(id)
    }

    /// Deletes a topic; returns the id it had. Its stored data stays in the commit logs until
    /// retention removes it; the id is never handed out again.
    pub fn delete(&mut self, name: &str) -> Result<u32, TopicError> {
        validate_topic_name(name)?;
        let e = self.topics.remove(name).ok_or_else(|| TopicError::Unknown(name.to_owned()))?;
        self.epoch += 1;
        Ok(e.id)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("topic table serializes");
        v.push(b'\n');
        v
    }

    /// Parses a stored table and checks its invariants.
    pub fn from_json(bytes: &[u8]) -> Result<TopicTable, String> {
        let t: TopicTable = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if t.version != FORMAT_VERSION {
            return Err(format!("unsupported topic table version {}", t.version));
        }
        for (name, e) in &t.topics {
            validate_topic_name(name).map_err(|e| e.to_string())?;
            if e.id == 0 || e.id >= t.next_topic_id {
                return Err(format!(
                    "topic {name:?} has id {} but next_topic_id is {}",
                    e.id, t.next_topic_id
                ));
            }
            if e.queue_count == 0 {
                return Err(format!("topic {name:?} has no queues"));
            }
            if e.queue_count > MAX_QUEUES_PER_TOPIC {
                return Err(format!(
                    "topic {name:?} has {} queues; a broker creates at most \
                     {MAX_QUEUES_PER_TOPIC}",
                    e.queue_count
                ));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rocketmq_rules() {
        for ok in ["a", "TopicTest", "a_b-c%d|e", &"x".repeat(127)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "ü", "a.b", &"x".repeat(128)] {
            assert!(
                matches!(validate_topic_name(bad), Err(TopicError::InvalidName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_monotonic_and_never_reused() {
        let mut t = TopicTable::new(2);
        assert_eq!(t.create("a", 4, 16, 10), Ok(1));
        assert_eq!(t.create("b", 4, 16, 10), Ok(2));
        assert_eq!(t.create("a", 4, 16, 10), Err(TopicError::Exists("a".into())));
        assert_eq!(t.delete("a"), Ok(1));
        assert_eq!(t.create("a", 2, 16, 10), Ok(3));
        assert_eq!(t.delete("zz"), Err(TopicError::Unknown("zz".into())));
        assert!(matches!(t.create("c", 0, 16, 10), Err(TopicError::BadQueueCount { .. })));
        assert!(matches!(t.create("c", 17, 16, 10), Err(TopicError::BadQueueCount { .. })));
        assert!(matches!(t.create("c", 1, 16, 2), Err(TopicError::TooMany(2))));
        let back = TopicTable::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.get("a"), Some(TopicEntry { id: 3, queue_count: 2 }));
    }

    #[test]
    fn corrupt_tables_are_refused() {
        assert!(TopicTable::from_json(b"{").is_err());
        let mut t = TopicTable::new(1);
        t.create("a", 1, 16, 10).unwrap();
        let text = String::from_utf8(t.to_json())
            .unwrap()
            .replace("\"next_topic_id\": 2", "\"next_topic_id\": 1");
        assert!(TopicTable::from_json(text.as_bytes()).is_err());
    }

    #[test]
    fn a_stored_table_with_more_queues_than_a_broker_creates_is_refused() {
        let mut t = TopicTable::new(1);
        t.create("a", 2, 16, 10).unwrap();
        let text = String::from_utf8(t.to_json()).unwrap();
        let with = |n: u32| text.replace("\"queue_count\": 2", &format!("\"queue_count\": {n}"));
        assert!(TopicTable::from_json(with(MAX_QUEUES_PER_TOPIC).as_bytes()).is_ok());
        // A route answer would have allocated an owner per queue: 8 GB for this one.
        let e = TopicTable::from_json(with(4_000_000_000).as_bytes()).unwrap_err();
        assert!(e.contains("4000000000 queues") && e.contains("65535"), "{e}");
    }
}
