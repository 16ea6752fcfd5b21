//! Translation between RocketMQ messages and ringmq records, both ways. Pure: no I/O.
//!
//! A RocketMQ message becomes one record: `KEYS` is the record key, `TAGS` its tag (what the
//! broker's tag filter and the native client use), every other property is kept as a record
//! property under its RocketMQ name, and the body is kept byte for byte. What a record has no
//! field for is kept in ringmq's own properties: the message `flag` when not 0
//! ([`property::RINGMQ_FLAG`]) and the compressed bit of `sysFlag`
//! ([`property::RINGMQ_COMPRESSED`]; the body stays compressed, so a native consumer must
//! inflate it, as a RocketMQ consumer does). The reverse puts them back, so a message
//! round-trips through ringmq unchanged; a message produced by the native client reads with
//! its key as `KEYS` and its tag as `TAGS`.

use std::net::SocketAddrV4;

use super::codes::{property, SYSFLAG_COMPRESSED};
use super::stored::{self, EncodeError, StoredMessage};
use crate::client::ConsumedMessage;

/// A RocketMQ message as a send request carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RmqMessage {
    pub flag: i32,
    pub sys_flag: i32,
    pub properties: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The record a RocketMQ message is stored as (owned; borrow with [`RecordParts::properties`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordParts {
    pub key: Vec<u8>,
    pub tag: Vec<u8>,
    pub properties: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RecordParts {
    pub fn property_refs(&self) -> Vec<(&[u8], &[u8])> {
        self.properties.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect()
    }

    pub fn property(&self, name: &str) -> Option<&[u8]> {
        self.properties.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_slice())
    }
}

impl RmqMessage {
    /// A property's value, if the message carries it.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The record this message is stored as.
    pub fn to_record(&self) -> RecordParts {
        let mut parts = RecordParts { body: self.body.clone(), ..Default::default() };
        for (name, value) in &self.properties {
            match name.as_str() {
                property::KEYS => parts.key = value.as_bytes().to_vec(),
                property::TAGS => parts.tag = value.as_bytes().to_vec(),
                // A client cannot set ringmq's own properties: they would change how the
                // message reads back.
                property::RINGMQ_FLAG | property::RINGMQ_COMPRESSED => {}
                _ => parts.properties.push((name.as_bytes().to_vec(), value.as_bytes().to_vec())),
            }
        }
        if self.flag != 0 {
            parts.properties.push((
                property::RINGMQ_FLAG.as_bytes().to_vec(),
                self.flag.to_string().into_bytes(),
            ));
        }
        if self.sys_flag & SYSFLAG_COMPRESSED != 0 {
            parts.properties.push((property::RINGMQ_COMPRESSED.as_bytes().to_vec(), b"1".to_vec()));
        }
        parts
    }
}

/// Why a batch body does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch body is malformed at byte {at}: {what}")]
pub struct BatchError {
    pub at: usize,
    pub what: &'static str,
}

/// Most messages one batch send may carry.
pub const MAX_BATCH_MESSAGES: usize = 4096;

/// Decodes a SEND_BATCH_MESSAGE body (`MessageDecoder.encodeMessages`): per message `i32
/// total_size | i32 magic | i32 body_crc | i32 flag | i32 body_length, body | i16
/// properties_length, properties`. Every length is checked against the bytes present.
pub fn decode_batch(body: &[u8]) -> Result<Vec<RmqMessage>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        if out.len() >= MAX_BATCH_MESSAGES {
            return Err(BatchError { at, what: "more than 4096 messages" });
        }
        let rest = &body[at..];
        let int = |from: usize, what| {
            rest.get(from..from + 4)
                .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
                .ok_or(BatchError { at: at + from, what })
        };
        let total = int(0, "total size")?;
        let total = usize::try_from(total)
            .ok()
            .filter(|t| *t >= 22 && *t <= rest.len())
            .ok_or(BatchError { at, what: "total size outside the body" })?;
        let msg = &rest[..total];
        let flag = int(12, "flag")?;
        let body_len = usize::try_from(int(16, "body length")?)
            .ok()
            .filter(|l| 20 + l + 2 <= total)
            .ok_or(BatchError { at: at + 16, what: "body length outside the message" })?;
        let message_body = msg[20..20 + body_len].to_vec();
        let p = 20 + body_len;
        let props_len = i16::from_be_bytes([msg[p], msg[p + 1]]);
        let props_len = usize::try_from(props_len)
            .ok()
            .filter(|l| p + 2 + l == total)
            .ok_or(BatchError { at: at + p, what: "properties length does not end the message" })?;
        let props = std::str::from_utf8(&msg[p + 2..p + 2 + props_len])
            .map_err(|_| BatchError { at: at + p + 2, what: "properties are not UTF-8" })?;
        out.push(RmqMessage {
            flag,
            sys_flag: 0,
            properties: stored::decode_properties(props),
            body: message_body,
        });
        at += total;
    }
    if out.is_empty() {
        return Err(BatchError { at: 0, what: "no messages" });
    }
    Ok(out)
}

/// A subscription expression: `*` (or empty) for every tag, else tags joined by `||`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    All,
    Tags(Vec<Vec<u8>>),
}

/// Parses a tag expression as RocketMQ does (`FilterAPI.buildSubscriptionData`): tags are
/// trimmed and empty ones dropped.
pub fn parse_tag_expression(expression: &str) -> TagFilter {
    let expression = expression.trim();
    if expression.is_empty() || expression == "*" {
        return TagFilter::All;
    }
    let tags: Vec<Vec<u8>> = expression
        .split("||")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.as_bytes().to_vec())
        .collect();
    if tags.is_empty() {
        TagFilter::All
    } else {
        TagFilter::Tags(tags)
    }
}

/// Where a pulled message was stored, for the encoding's host fields.
#[derive(Debug, Clone, Copy)]
pub struct StoreSite {
    pub topic_id: u32,
    pub store_host: SocketAddrV4,
}

/// Appends `m` (read from `topic`) in RocketMQ's stored-message encoding.
pub fn encode_consumed(
    topic: &str,
    m: &ConsumedMessage,
    site: StoreSite,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut flag = 0;
    let mut sys_flag = 0;
    let mut reconsume_times = 0;
    let mut props: Vec<(&[u8], &[u8])> = Vec::with_capacity(m.properties.len() + 2);
    if !m.key.is_empty() {
        props.push((property::KEYS.as_bytes(), &m.key));
    }
    if !m.tag.is_empty() {
        props.push((property::TAGS.as_bytes(), &m.tag));
    }
    for (name, value) in &m.properties {
        let text = std::str::from_utf8(value).ok();
        match name.as_ref() {
            n if n == property::RINGMQ_FLAG.as_bytes() => {
                flag = text.and_then(|t| t.parse().ok()).unwrap_or(0);
            }
            n if n == property::RINGMQ_COMPRESSED.as_bytes() => sys_flag |= SYSFLAG_COMPRESSED,
            n => {
                if n == property::RECONSUME_TIME.as_bytes() {
                    reconsume_times = text.and_then(|t| t.parse().ok()).unwrap_or(0);
                }
                props.push((name, value));
            }
        }
    }
    let (properties, _) = stored::encode_properties(props);
    let physical_offset =
        stored::pack_position(site.topic_id, m.queue_id, m.offset).unwrap_or(m.offset);
    stored::encode(
        &StoredMessage {
            topic,
            queue_id: m.queue_id,
            flag,
            queue_offset: m.offset,
            physical_offset,
            sys_flag,
            born_timestamp_ms: m.timestamp_ms,
            born_host: site.store_host,
            store_timestamp_ms: m.store_timestamp_ms,
            store_host: site.store_host,
            reconsume_times,
            body: &m.body,
            properties: &properties,
        },
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn props(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keys_and_tags_become_the_record_key_and_tag_and_the_rest_stays() {
        let m = RmqMessage {
            flag: 7,
            sys_flag: SYSFLAG_COMPRESSED,
            properties: props(&[
                ("KEYS", "order-1"),
                ("TAGS", "A"),
                ("UNIQ_KEY", "AC11000100002A9F0000000000000001"),
                ("RMQ_FLAG", "99"),
                ("custom", "x"),
            ]),
            body: b"\x78\x9c compressed".to_vec(),
        };
        let r = m.to_record();
        assert_eq!(r.key, b"order-1");
        assert_eq!(r.tag, b"A");
        assert_eq!(r.body, m.body);
        assert_eq!(r.property("UNIQ_KEY"), Some(&b"AC11000100002A9F0000000000000001"[..]));
        assert_eq!(r.property("custom"), Some(&b"x"[..]));
        assert_eq!(r.property("RMQ_FLAG"), Some(&b"7"[..]), "the client's own RMQ_FLAG is dropped");
        assert_eq!(r.property("RMQ_COMPRESSED"), Some(&b"1"[..]));
        assert_eq!(r.property("KEYS"), None);
    }

    #[test]
    fn a_stored_record_encodes_back_with_flag_sysflag_and_properties() {
        let consumed = ConsumedMessage {
            queue_id: 2,
            offset: 41,
            message_id: crate::protocol::MessageId::default(),
            timestamp_ms: 10,
            store_timestamp_ms: 20,
            key: bytes::Bytes::from_static(b"k"),
            tag: bytes::Bytes::from_static(b"T"),
            properties: vec![
                (bytes::Bytes::from_static(b"RMQ_FLAG"), bytes::Bytes::from_static(b"7")),
                (bytes::Bytes::from_static(b"RMQ_COMPRESSED"), bytes::Bytes::from_static(b"1")),
                (bytes::Bytes::from_static(b"RECONSUME_TIME"), bytes::Bytes::from_static(b"3")),
                (bytes::Bytes::from_static(b"UNIQ_KEY"), bytes::Bytes::from_static(b"U")),
            ],
            body: bytes::Bytes::from_static(b"body"),
        };
        let host = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 10911);
        let mut out = Vec::new();
        encode_consumed("topic", &consumed, StoreSite { topic_id: 3, store_host: host }, &mut out)
            .unwrap();
        let (p, _) = stored::encode_properties([
            (&b"KEYS"[..], &b"k"[..]),
            (&b"TAGS"[..], &b"T"[..]),
            (&b"RECONSUME_TIME"[..], &b"3"[..]),
            (&b"UNIQ_KEY"[..], &b"U"[..]),
        ]);
        let mut want = Vec::new();
        stored::encode(
            &StoredMessage {
                topic: "topic",
                queue_id: 2,
                flag: 7,
                queue_offset: 41,
                physical_offset: stored::pack_position(3, 2, 41).unwrap(),
                sys_flag: SYSFLAG_COMPRESSED,
                born_timestamp_ms: 10,
                born_host: host,
                store_timestamp_ms: 20,
                store_host: host,
                reconsume_times: 3,
                body: b"body",
                properties: &p,
            },
            &mut want,
        )
        .unwrap();
        assert_eq!(out, want);
    }

    /// One message as `MessageDecoder.encodeMessage` lays it out.
    fn batch_entry(flag: i32, body: &[u8], props: &str) -> Vec<u8> {
        let total = 20 + body.len() + 2 + props.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(total as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&flag.to_be_bytes());
        b.extend_from_slice(&(body.len() as i32).to_be_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&(props.len() as i16).to_be_bytes());
        b.extend_from_slice(props.as_bytes());
        b
    }

    #[test]
    fn batch_bodies_decode_and_bad_lengths_are_errors() {
        let mut body = batch_entry(1, b"one", "TAGS\u{1}A\u{2}");
        body.extend(batch_entry(0, b"", ""));
        let msgs = decode_batch(&body).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].flag, 1);
        assert_eq!(msgs[0].body, b"one");
        assert_eq!(msgs[0].property("TAGS"), Some("A"));
        assert!(msgs[1].body.is_empty());

        assert!(decode_batch(&[]).is_err(), "an empty batch");
        assert!(decode_batch(&body[..body.len() - 1]).is_err(), "truncated");
        let mut bad = batch_entry(0, b"abc", "");
        bad[19] = 200; // body length past the message
        assert!(decode_batch(&bad).is_err());
        let mut bad = batch_entry(0, b"abc", "");
        bad[3] = 5; // total size below the fixed part
        assert!(decode_batch(&bad).is_err());
        for cut in 0..body.len() {
            let _ = decode_batch(&body[..cut]); // never panics
        }
    }

    proptest::proptest! {
        /// The driver of `fuzz/fuzz_targets/rocketmq_bodies.rs`, on arbitrary and on
        /// damaged well-formed batch bodies.
        #[test]
        fn front_readers_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            flip in 0usize..64,
        ) {
            let mut body = batch_entry(3, b"body", "TAGS\u{1}A\u{2}KEYS\u{1}k\u{2}");
            body.extend(batch_entry(0, &data[..data.len().min(40)], ""));
            let at = flip % body.len();
            body[at] ^= 0x5A;
            for input in [&data[..], &body[..]] {
                if let Ok(msgs) = decode_batch(input) {
                    let held: usize = msgs.iter().map(|m| m.body.len()).sum();
                    proptest::prop_assert!(held <= input.len());
                    for m in &msgs {
                        let _ = m.to_record();
                    }
                }
                let _ = crate::compat::rocketmq::bodies::parse_heartbeat(input);
                let text = String::from_utf8_lossy(input);
                let _ = stored::decode_properties(&text);
                let _ = parse_tag_expression(&text);
            }
        }
    }

    #[test]
    fn tag_expressions_parse_as_rocketmq_does() {
        assert_eq!(parse_tag_expression("*"), TagFilter::All);
        assert_eq!(parse_tag_expression(" "), TagFilter::All);
        assert_eq!(
            parse_tag_expression("A || B ||  "),
            TagFilter::Tags(vec![b"A".to_vec(), b"B".to_vec()])
        );
        assert_eq!(parse_tag_expression("A"), TagFilter::Tags(vec![b"A".to_vec()]));
    }
}
