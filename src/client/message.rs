//! Messages as the client sends and receives them (owned; the batch format is the encoding).

use bytes::Bytes;

use crate::format::{Record, RecordRef};
use crate::protocol::MessageId;

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
///
/// Its byte fields are [`Bytes`]: ranges of the buffer the fetch arrived in, shared and not
/// copied (a pull's or a push consumer's messages cost no allocation each). A message kept
/// keeps that buffer (its queue's part of one fetch) alive; copy the fields
/// (`Bytes::copy_from_slice`, `to_vec`) to keep a few small messages from a large fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    pub queue_id: u32,
    pub offset: u64,
    /// Where it is stored (shown as 32 hex digits); all zero for a message not read from a
    /// queue (a transaction's half in a check).
    pub message_id: MessageId,
    pub timestamp_ms: i64,
    pub store_timestamp_ms: i64,
    pub key: Bytes,
    pub tag: Bytes,
    pub properties: Vec<(Bytes, Bytes)>,
    pub body: Bytes,
}

impl ConsumedMessage {
    /// A property's value, if the message carries it.
    pub fn property(&self, name: &[u8]) -> Option<&[u8]> {
        self.properties.iter().find(|(n, _)| n.as_ref() == name).map(|(_, v)| v.as_ref())
    }

    /// Failed deliveries before this one: 0 for a message from its original topic, `n` for
    /// the `n`th retry from the group's retry topic ([`crate::schedule::retry`]).
    pub fn reconsume_times(&self) -> u32 {
        crate::schedule::retry::reconsume_times(
            self.properties.iter().map(|(n, v)| (n.as_ref(), v.as_ref())),
        )
    }

    /// The topic a retried or dead-lettered message was first sent to (`None` for a message
    /// still in its original topic).
    pub fn origin_topic(&self) -> Option<&str> {
        self.property(crate::schedule::retry::PROPERTY_RETRY_TOPIC.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// `record`, whose fields lie in `buf` (which starts at address `base`), as a message
    /// whose fields share `buf`.
    pub(crate) fn in_buffer(
        record: &RecordRef<'_>,
        buf: &Bytes,
        base: usize,
        id: MessageId,
        store_timestamp_ms: i64,
    ) -> ConsumedMessage {
        let at = |field: &[u8]| -> Bytes {
            if field.is_empty() {
                return Bytes::new();
            }
            let start = field.as_ptr() as usize - base;
            buf.slice(start..start + field.len())
        };
        ConsumedMessage {
            queue_id: id.queue_id,
            offset: id.offset,
            message_id: id,
            timestamp_ms: record.timestamp_ms,
            store_timestamp_ms,
            key: at(record.key),
            tag: at(record.tag),
            properties: if record.properties_raw().is_empty() {
                Vec::new()
            } else {
                record.properties().filter_map(|p| p.ok()).map(|(k, v)| (at(k), at(v))).collect()
            },
            body: at(record.body),
        }
    }

    /// `record` copied out (one allocation: the record's bytes, which the fields share).
    pub(crate) fn copied(record: &RecordRef<'_>, id: MessageId, store_timestamp_ms: i64) -> Self {
        let raw = record.raw();
        let buf = Bytes::copy_from_slice(raw);
        Self::in_buffer(record, &buf, raw.as_ptr() as usize, id, store_timestamp_ms)
    }
}
