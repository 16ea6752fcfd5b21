//! RocketMQ's stored-message encoding (`MessageDecoder`, magic `0xDAA320A7`, the version every
//! 4.x client decodes), the property string, and offset message ids: what a PULL_MESSAGE
//! answer carries, one encoded message after another.
//!
//! ```text
//! i32 total_size       the whole message, this field included
//! i32 magic            0xDAA320A7 (v1: one-byte topic length, IPv4 hosts)
//! i32 body_crc         CRC-32 (IEEE) of the body & 0x7FFFFFFF
//! i32 queue_id
//! i32 flag
//! i64 queue_offset
//! i64 physical_offset  ringmq: topic id, queue id and queue offset packed ([`pack_position`])
//! i32 sys_flag         bit 0: the body is zlib-compressed (kept as the producer sent it)
//! i64 born_timestamp
//! 4+4 born_host        IPv4 address, i32 port
//! i64 store_timestamp
//! 4+4 store_host
//! i32 reconsume_times
//! i64 prepared_transaction_offset
//! i32 body_length, body
//! u8  topic_length, topic
//! i16 properties_length, properties   "name\x01value\x02" per property
//! ```
//! Integers are big-endian. Pure functions, no I/O.

use std::net::SocketAddrV4;

/// The v1 magic code (`MESSAGE_MAGIC_CODE`).
pub const MAGIC_V1: i32 = 0xDAA3_20A7_u32 as i32;
/// Between a property's name and value.
pub const NAME_VALUE_SEPARATOR: u8 = 1;
/// After each property.
pub const PROPERTY_SEPARATOR: u8 = 2;
/// Longest topic the encoding holds: clients read its length as a signed byte.
pub const MAX_TOPIC_BYTES: usize = 127;
/// Longest property string (a signed 16-bit length).
pub const MAX_PROPERTIES_BYTES: usize = i16::MAX as usize;

/// One message to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub flag: i32,
    pub queue_offset: u64,
    pub physical_offset: u64,
    pub sys_flag: i32,
    pub born_timestamp_ms: i64,
    pub born_host: SocketAddrV4,
    pub store_timestamp_ms: i64,
    pub store_host: SocketAddrV4,
    pub reconsume_times: i32,
    pub body: &'a [u8],
    /// Already encoded with [`encode_properties`].
    pub properties: &'a [u8],
}

/// Why a message cannot be put in the v1 encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("topic {0:?} is longer than the 127 bytes a RocketMQ client reads")]
    TopicTooLong(String),
    #[error("properties take {0} bytes, over the 32767 a RocketMQ client reads")]
    PropertiesTooLong(usize),
    #[error("body of {0} bytes is over the 2 GiB a RocketMQ client reads")]
    BodyTooLong(usize),
}

/// Bytes `m` takes encoded.
pub fn encoded_len(m: &StoredMessage<'_>) -> usize {
    4 + 4
        + 4
        + 4
        + 4
        + 8
        + 8
        + 4
        + 8
        + 8
        + 8
        + 8
        + 4
        + 8
        + 4
        + m.body.len()
        + 1
        + m.topic.len()
        + 2
        + m.properties.len()
}

/// Appends `m` to `out`.
pub fn encode(m: &StoredMessage<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if m.topic.len() > MAX_TOPIC_BYTES {
        return Err(EncodeError::TopicTooLong(m.topic.to_owned()));
    }
    if m.properties.len() > MAX_PROPERTIES_BYTES {
        return Err(EncodeError::PropertiesTooLong(m.properties.len()));
    }
    if m.body.len() > i32::MAX as usize / 2 {
        return Err(EncodeError::BodyTooLong(m.body.len()));
    }
    let total = encoded_len(m);
    out.reserve(total);
    out.extend_from_slice(&(total as i32).to_be_bytes());
    out.extend_from_slice(&MAGIC_V1.to_be_bytes());
    out.extend_from_slice(&body_crc(m.body).to_be_bytes());
    out.extend_from_slice(&(m.queue_id as i32).to_be_bytes());
    out.extend_from_slice(&m.flag.to_be_bytes());
    out.extend_from_slice(&(m.queue_offset as i64).to_be_bytes());
    out.extend_from_slice(&(m.physical_offset as i64).to_be_bytes());
    out.extend_from_slice(&m.sys_flag.to_be_bytes());
    out.extend_from_slice(&m.born_timestamp_ms.to_be_bytes());
    put_host(out, m.born_host);
    out.extend_from_slice(&m.store_timestamp_ms.to_be_bytes());
    put_host(out, m.store_host);
    out.extend_from_slice(&m.reconsume_times.to_be_bytes());
    out.extend_from_slice(&0i64.to_be_bytes()); // prepared transaction offset
    out.extend_from_slice(&(m.body.len() as i32).to_be_bytes());
    out.extend_from_slice(m.body);
    out.push(m.topic.len() as u8);
    out.extend_from_slice(m.topic.as_bytes());
    out.extend_from_slice(&(m.properties.len() as i16).to_be_bytes());
    out.extend_from_slice(m.properties);
    Ok(())
}

fn put_host(out: &mut Vec<u8>, host: SocketAddrV4) {
    out.extend_from_slice(&host.ip().octets());
    out.extend_from_slice(&i32::from(host.port()).to_be_bytes());
}

/// RocketMQ's body CRC: CRC-32 (IEEE 802.3, as zlib and `java.util.zip.CRC32`) of the body,
/// masked to 31 bits.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32_ieee(body) & 0x7FFF_FFFF) as i32
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), by the `crc32fast` crate.
pub fn crc32_ieee(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Encodes properties as RocketMQ writes them. A name or value holding a separator byte
/// cannot be represented and is left out (the returned count says how many were).
pub fn encode_properties<'a>(
    properties: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    let separator = |b: &&u8| **b == NAME_VALUE_SEPARATOR || **b == PROPERTY_SEPARATOR;
    for (name, value) in properties {
        if name.is_empty()
            || name.iter().any(|b| separator(&b))
            || value.iter().any(|b| separator(&b))
        {
            skipped += 1;
            continue;
        }
        out.extend_from_slice(name);
        out.push(NAME_VALUE_SEPARATOR);
        out.extend_from_slice(value);
        out.push(PROPERTY_SEPARATOR);
    }
    (out, skipped)
}

/// Decodes a property string (a send request's `properties` field); entries without a
/// separator are ignored, as RocketMQ's own decoder does.
pub fn decode_properties(text: &str) -> Vec<(String, String)> {
    text.split(PROPERTY_SEPARATOR as char)
        .filter_map(|entry| {
            let (name, value) = entry.split_once(NAME_VALUE_SEPARATOR as char)?;
            (!name.is_empty()).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Bits of the packed position ([`pack_position`]).
const OFFSET_BITS: u32 = 38;
const QUEUE_BITS: u32 = 10;
const TOPIC_BITS: u32 = 16;

/// ringmq has no commit-log offset shared by all queues; the `physical_offset` field (and so
/// the offset message id) carries the topic id (16 bits), queue id (10 bits) and queue offset
/// (38 bits) instead. `None` when one does not fit (the id is then not unique).
pub fn pack_position(topic_id: u32, queue_id: u32, offset: u64) -> Option<u64> {
    if u64::from(topic_id) >> TOPIC_BITS != 0
        || u64::from(queue_id) >> QUEUE_BITS != 0
        || offset >> OFFSET_BITS != 0
    {
        return None;
    }
    Some(
        (u64::from(topic_id) << (QUEUE_BITS + OFFSET_BITS))
            | (u64::from(queue_id) << OFFSET_BITS)
            | offset,
    )
}

/// The inverse of [`pack_position`]: (topic id, queue id, queue offset).
pub fn unpack_position(packed: u64) -> (u32, u32, u64) {
    (
        (packed >> (QUEUE_BITS + OFFSET_BITS)) as u32,
        ((packed >> OFFSET_BITS) & ((1 << QUEUE_BITS) - 1)) as u32,
        packed & ((1 << OFFSET_BITS) - 1),
    )
}

/// An offset message id (`MessageDecoder.createMessageId`): the store host's IPv4 address and
/// port and the physical offset, 16 bytes as 32 upper-case hex digits.
pub fn offset_message_id(store_host: SocketAddrV4, physical_offset: u64) -> String {
    let ip = u32::from(*store_host.ip());
    format!("{ip:08X}{:08X}{physical_offset:016X}", u32::from(store_host.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_ieee(b""), 0);
        assert_eq!(body_crc(b"123456789"), 0x4BF4_3926);
        // zlib's crc32("The quick brown fox jumps over the lazy dog").
        assert_eq!(crc32_ieee(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    /// CRC-32 bit by bit, straight from the definition (reflected, polynomial 0xEDB88320,
    /// initial and final XOR all ones): what the front computed by hand before `crc32fast`.
    fn crc32_by_definition(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    proptest::proptest! {
        #[test]
        fn crc32fast_gives_the_same_bytes_as_the_definition(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
        ) {
            proptest::prop_assert_eq!(crc32_ieee(&data), crc32_by_definition(&data));
            proptest::prop_assert_eq!(
                body_crc(&data),
                (crc32_by_definition(&data) & 0x7FFF_FFFF) as i32
            );
        }
    }

    #[test]
    fn a_message_encodes_field_by_field_as_the_spec_lays_it_out() {
        let store = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 7), 10911);
        let born = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 5555);
        let (props, skipped) =
            encode_properties([(&b"TAGS"[..], &b"A"[..]), (&b"UNIQ_KEY"[..], &b"ID1"[..])]);
        assert_eq!(skipped, 0);
        assert_eq!(props, b"TAGS\x01A\x02UNIQ_KEY\x01ID1\x02");
        let m = StoredMessage {
            topic: "T",
            queue_id: 3,
            flag: 9,
            queue_offset: 0x0102,
            physical_offset: 0x0A0B,
            sys_flag: 1,
            born_timestamp_ms: 1000,
            born_host: born,
            store_timestamp_ms: 2000,
            store_host: store,
            reconsume_times: 2,
            body: b"hi",
            properties: &props,
        };
        let mut out = Vec::new();
        encode(&m, &mut out).unwrap();
        // Built by hand from the layout in the module documentation.
        let mut want = Vec::new();
        let total: i32 =
            4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 2 + 1 + 1 + 2 + 20;
        want.extend_from_slice(&total.to_be_bytes());
        want.extend_from_slice(&[0xDA, 0xA3, 0x20, 0xA7]);
        want.extend_from_slice(&((crc32_ieee(b"hi") & 0x7FFF_FFFF) as i32).to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 9]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x0A, 0x0B]);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&1000i64.to_be_bytes());
        want.extend_from_slice(&[192, 168, 1, 2, 0, 0, 0x15, 0xB3]);
        want.extend_from_slice(&2000i64.to_be_bytes());
        want.extend_from_slice(&[10, 0, 0, 7, 0, 0, 0x2A, 0x9F]);
        want.extend_from_slice(&[0, 0, 0, 2]);
        want.extend_from_slice(&[0; 8]);
        want.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']);
        want.extend_from_slice(&[1, b'T']);
        want.extend_from_slice(&[0, 20]);
        want.extend_from_slice(b"TAGS\x01A\x02UNIQ_KEY\x01ID1\x02");
        assert_eq!(out, want);
        assert_eq!(encoded_len(&m), want.len());
    }

    #[test]
    fn limits_of_the_encoding_are_errors() {
        let host = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let long = "t".repeat(128);
        let big = vec![b'x'; MAX_PROPERTIES_BYTES + 1];
        let base = StoredMessage {
            topic: "ok",
            queue_id: 0,
            flag: 0,
            queue_offset: 0,
            physical_offset: 0,
            sys_flag: 0,
            born_timestamp_ms: 0,
            born_host: host,
            store_timestamp_ms: 0,
            store_host: host,
            reconsume_times: 0,
            body: b"",
            properties: b"",
        };
        let mut out = Vec::new();
        let m = StoredMessage { topic: &long, ..base.clone() };
        assert!(matches!(encode(&m, &mut out), Err(EncodeError::TopicTooLong(_))));
        let m = StoredMessage { properties: &big, ..base.clone() };
        assert!(matches!(encode(&m, &mut out), Err(EncodeError::PropertiesTooLong(_))));
        assert!(out.is_empty(), "nothing is written for a refused message");
    }

    #[test]
    fn properties_round_trip_and_separators_are_refused() {
        let (bytes, skipped) = encode_properties([
            (&b"KEYS"[..], &b"k1 k2"[..]),
            (&b"bad\x01name"[..], &b"v"[..]),
            (&b"n"[..], &b"bad\x02value"[..]),
            (&b"EMPTY"[..], &b""[..]),
        ]);
        assert_eq!(skipped, 2);
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            decode_properties(&text),
            vec![("KEYS".into(), "k1 k2".into()), ("EMPTY".into(), String::new())]
        );
        assert_eq!(decode_properties("noseparator\u{2}\u{1}x\u{2}"), vec![]);
    }

    #[test]
    fn positions_pack_and_ids_print_as_clients_decode_them() {
        let p = pack_position(5, 1023, (1 << 38) - 1).unwrap();
        assert_eq!(unpack_position(p), (5, 1023, (1 << 38) - 1));
        assert_eq!(pack_position(1 << 16, 0, 0), None);
        assert_eq!(pack_position(0, 1024, 0), None);
        assert_eq!(pack_position(0, 0, 1 << 38), None);
        let host = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 10911);
        assert_eq!(offset_message_id(host, 0x1234), "7F00000100002A9F0000000000001234");
    }
}
