//! Messages as the client sends and receives them (owned; the batch format is the encoding).

use crate::format::Record;

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    /// Business key (RocketMQ KEYS); also what [`super::QueueSelector::KeyHash`] hashes.
    pub key: Vec<u8>,
    /// Tag for consumer-side filtering (RocketMQ TAGS).
    pub tag: Vec<u8>,
    pub properties: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Producer timestamp; None = the time of the send call.
    pub timestamp_ms: Option<i64>,
}

impl Message {
    pub fn new(topic: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Message { topic: topic.into(), body: body.into(), ..Default::default() }
    }
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = key.into();
        self
    }
    pub fn with_tag(mut self, tag: impl Into<Vec<u8>>) -> Self {
        self.tag = tag.into();
        self
    }
    pub fn with_property(mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// Encodes through `f` as a format [`Record`] stamped with `timestamp_ms`.
    pub(crate) fn with_record<T>(&self, timestamp_ms: i64, f: impl FnOnce(&Record<'_>) -> T) -> T {
        let props: Vec<(&[u8], &[u8])> =
            self.properties.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        f(&Record {
            key: &self.key,
            tag: &self.tag,
            properties: &props,
            body: &self.body,
            timestamp_ms,
        })
    }
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    pub queue_id: u32,
    pub offset: u64,
    pub message_id: String,
    pub timestamp_ms: i64,
    pub store_timestamp_ms: i64,
    pub key: Vec<u8>,
    pub tag: Vec<u8>,
    pub properties: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl ConsumedMessage {
    /// A property's value, if the message carries it.
    pub fn property(&self, name: &[u8]) -> Option<&[u8]> {
        self.properties.iter().find(|(n, _)| n.as_slice() == name).map(|(_, v)| v.as_slice())
    }

    /// Failed deliveries before this one: 0 for a message from its original topic, `n` for
    /// the `n`th retry from the group's retry topic ([`crate::schedule::retry`]).
    pub fn reconsume_times(&self) -> u32 {
        crate::schedule::retry::reconsume_times(
            self.properties.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        )
    }

    /// The topic a retried or dead-lettered message was first sent to (`None` for a message
    /// still in its original topic).
    pub fn origin_topic(&self) -> Option<&str> {
        self.property(crate::schedule::retry::PROPERTY_RETRY_TOPIC.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}
