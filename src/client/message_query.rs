//! Finding messages: by key (every shard's key index, api QUERY_KEYS) and by message id.
//!
//! A message id is the offset id RocketMQ calls `offsetMsgId`, made of where the message is
//! stored instead of a broker address and commit-log offset: 32 hex digits, the topic id (8),
//! the queue id (8) and the queue offset (16) ([`crate::protocol::message_id`]). So `get` needs
//! no index: it names the topic id's topic and reads that offset. A key query asks every shard
//! for the offsets stored under the key's hash, then reads each message and keeps those whose
//! key (one of its space-separated words) or original id (`ORIGIN_MESSAGE_ID`, carried by
//! retried and dead-lettered copies) is the key asked for.

use std::collections::HashSet;
use std::time::Duration;

use super::error::{ClientError, Result};
use super::message::ConsumedMessage;
use super::Client;
use crate::protocol::key_query::{KeyHits, KeyQuery};
use crate::protocol::{ErrorCode, MessageId, Request, Response};
use crate::schedule::retry::PROPERTY_ORIGIN_MESSAGE_ID;

/// Parses a message id (32 hex digits: topic id, queue id, offset; see [`MessageId`]).
pub fn parse_message_id(id: &str) -> std::result::Result<MessageId, String> {
    id.parse()
}

/// Does `m` carry `key` (a word of its key, its original id, or its `UNIQ_KEY`)?
pub fn message_has_key(m: &ConsumedMessage, key: &[u8]) -> bool {
    crate::storage::key_index::split_keys(&m.key).any(|k| k == key)
        || m.property(PROPERTY_ORIGIN_MESSAGE_ID.as_bytes()) == Some(key)
        || m.property(crate::storage::key_index::PROPERTY_UNIQ_KEY.as_bytes()) == Some(key)
}

/// A key query's answer.
#[derive(Debug, Clone, Default)]
pub struct KeyQueryResult {
    /// Newest first (by store time), at most the `max` asked for.
    pub messages: Vec<ConsumedMessage>,
    /// A shard stopped its walk at its bound: older messages with the key may exist.
    pub truncated: bool,
    /// Bytes of stored log some shard had not indexed yet when asked: the newest messages
    /// may be missing (the index follows the log by about `key_index.interval_ms`).
    pub unindexed_bytes: u64,
}

impl Client {
    /// The messages of `topic` stored under `key` with store times in `[from_ms, to_ms]`,
    /// newest first, at most `max`.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &[u8],
        from_ms: i64,
        to_ms: i64,
        max: u32,
    ) -> Result<KeyQueryResult> {
        let shards = self.router().shard_ports()?.len().max(1);
        let mut consumer = self.consumer();
        // One batch per read: a hit needs only the batch holding its offset.
        consumer.max_bytes = 1;
        let mut out = KeyQueryResult::default();
        let mut seen = HashSet::new();
        for shard in 0..shards {
            let request = Request::QueryKeys(KeyQuery {
                shard: shard as u16,
                topic: topic.into(),
                key: key.to_vec(),
                from_ms,
                to_ms,
                max,
            });
            let KeyHits { hits, truncated, indexed_to, log_end } =
                match self.router().call_bootstrap(&request)? {
                    Response::QueryKeys(h) => h,
                    other => {
                        return Err(ClientError::Protocol(format!(
                            "QUERY_KEYS got a {:?} reply",
                            other.api_key()
                        )))
                    }
                };
            out.truncated |= truncated;
            out.unindexed_bytes += log_end.saturating_sub(indexed_to);
            for hit in hits {
                if !seen.insert((hit.queue_id, hit.offset)) {
                    continue;
                }
                match read_at(&consumer, topic, hit.queue_id, hit.offset)? {
                    Some(m) if message_has_key(&m, key) => out.messages.push(m),
                    // Another key with the same hash, or removed by retention meanwhile.
                    _ => {}
                }
            }
        }
        out.messages.sort_by(|a, b| {
            (b.store_timestamp_ms, b.queue_id, b.offset).cmp(&(
                a.store_timestamp_ms,
                a.queue_id,
                a.offset,
            ))
        });
        out.messages.truncate(max as usize);
        Ok(out)
    }

    /// The message with id `id` and its topic's name.
    pub fn get_message(&self, id: &str) -> Result<(String, ConsumedMessage)> {
        let at = parse_message_id(id).map_err(ClientError::Invalid)?;
        let topics = self.admin().list_topics()?;
        let Some(topic) = topics.iter().find(|t| t.topic_id == at.topic_id) else {
            return Err(ClientError::Invalid(format!(
                "message {id}: no topic has id {} (was it deleted?)",
                at.topic_id
            )));
        };
        if at.queue_id >= topic.queue_count {
            return Err(ClientError::Invalid(format!(
                "message {id}: topic {} has queues 0..{}, not queue {}",
                topic.name, topic.queue_count, at.queue_id
            )));
        }
        let mut consumer = self.consumer();
        consumer.max_bytes = 1;
        let offsets = self.admin().queue_offsets(&topic.name, at.queue_id)?;
        if at.offset >= offsets.next {
            return Err(ClientError::Invalid(format!(
                "message {id}: queue {} of {} has offsets [{}, {}); offset {} was never written",
                at.queue_id, topic.name, offsets.min, offsets.next, at.offset
            )));
        }
        if at.offset < offsets.min {
            return Err(ClientError::Invalid(format!(
                "message {id}: offset {} of queue {} of {} was removed by retention (the queue \
                 starts at {})",
                at.offset, at.queue_id, topic.name, offsets.min
            )));
        }
        match read_at(&consumer, &topic.name, at.queue_id, at.offset)? {
            Some(m) => Ok((topic.name.clone(), m)),
            None => Err(ClientError::Invalid(format!(
                "message {id}: offset {} of queue {} of {} is no longer stored",
                at.offset, at.queue_id, topic.name
            ))),
        }
    }
}

impl Client {
    /// The trace events recorded for message `id` in `trace_topic` ([`super::trace`]),
    /// oldest first, at most `max`.
    pub fn trace_message(
        &self,
        id: &str,
        trace_topic: &str,
        max: u32,
    ) -> Result<Vec<super::trace::TraceEvent>> {
        parse_message_id(id).map_err(ClientError::Invalid)?;
        // Ids are written in upper case; the index holds the key as written.
        let id = id.to_ascii_uppercase();
        let found = match self.query_by_key(trace_topic, id.as_bytes(), 0, i64::MAX, max) {
            Ok(f) => f,
            Err(e) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC) => {
                return Err(ClientError::Invalid(format!(
                    "no trace topic {trace_topic:?}: no producer or consumer with tracing on \
                     has used this broker (ProducerConfig::trace, PushConsumerConfig::trace)"
                )))
            }
            Err(e) => return Err(e),
        };
        let mut events: Vec<super::trace::TraceEvent> = found
            .messages
            .iter()
            .filter_map(|m| super::trace::TraceEvent::decode(&m.body).ok())
            .filter(|e| e.msg_id() == id)
            .collect();
        events.sort_by_key(|e| e.time_ms());
        Ok(events)
    }
}

/// The message at `offset` of a queue, None when retention removed it.
fn read_at(
    consumer: &super::PullConsumer,
    topic: &str,
    queue_id: u32,
    offset: u64,
) -> Result<Option<ConsumedMessage>> {
    match consumer.pull(topic, queue_id, offset, Duration::ZERO) {
        Ok(r) => Ok(r.messages.into_iter().find(|m| m.offset == offset)),
        Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message_id;

    #[test]
    fn ids_round_trip_and_bad_ids_are_explained() {
        let id = message_id(7, 3, 1 << 40);
        assert_eq!(
            parse_message_id(&id),
            Ok(MessageId { topic_id: 7, queue_id: 3, offset: 1 << 40 })
        );
        assert_eq!(parse_message_id(&id.to_lowercase()), parse_message_id(&id));
        for bad in ["", "123", &format!("{id}0"), &id.replace('0', "g")] {
            assert!(parse_message_id(bad).unwrap_err().contains("32 hex digits"), "{bad}");
        }
    }

    #[test]
    fn a_message_has_each_key_word_and_its_origin_id() {
        let m = ConsumedMessage {
            queue_id: 0,
            offset: 0,
            message_id: crate::protocol::MessageId::default(),
            timestamp_ms: 0,
            store_timestamp_ms: 0,
            key: bytes::Bytes::from_static(b"a bc"),
            tag: bytes::Bytes::new(),
            properties: vec![
                (
                    bytes::Bytes::from_static(PROPERTY_ORIGIN_MESSAGE_ID.as_bytes()),
                    bytes::Bytes::from_static(b"X1"),
                ),
                (bytes::Bytes::from_static(b"UNIQ_KEY"), bytes::Bytes::from_static(b"U1")),
            ],
            body: bytes::Bytes::new(),
        };
        assert!(message_has_key(&m, b"a") && message_has_key(&m, b"bc"));
        assert!(message_has_key(&m, b"X1") && message_has_key(&m, b"U1"));
        assert!(!message_has_key(&m, b"b") && !message_has_key(&m, b"a bc"));
    }
}
