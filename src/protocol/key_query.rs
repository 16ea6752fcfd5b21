//! Finding messages by key (api key 43): `QueryKeys` asks one shard's key index for the
//! messages of a topic stored under a key within a time range. A client asks every shard
//! (any shard forwards the request to the one it names) and reads each hit with an ordinary
//! FETCH at its offset, checking the key there: the index holds key hashes, so a hit can be
//! another key with the same hash. Layouts are in docs/protocol.md ("Finding messages").

use super::api::ApiKey;
use super::codec::{DecodeError, Reader, Writer};
use super::message::MAX_LIST_ITEMS;

/// Most hits one answer carries.
pub const MAX_KEY_HITS: u32 = 10_000;
/// Longest key a query may name (a record key's bound).
pub const MAX_QUERY_KEY_BYTES: usize = crate::format::record::MAX_KEY_LEN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQuery {
    pub shard: u16,
    pub topic: String,
    pub key: Vec<u8>,
    /// Store times, inclusive (Unix ms).
    pub from_ms: i64,
    pub to_ms: i64,
    pub max: u32,
}

/// One message stored under the key (or a key with the same hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHit {
    pub queue_id: u32,
    pub offset: u64,
    pub store_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHits {
    /// Newest first.
    pub hits: Vec<KeyHit>,
    /// The shard stopped walking at its bound: older matches may exist.
    pub truncated: bool,
    /// The log position below which the shard has indexed every message, and the shard's
    /// durable log end: the gap is what a query cannot find yet.
    pub indexed_to: u64,
    pub log_end: u64,
}

impl KeyQuery {
    pub fn api_key(&self) -> ApiKey {
        ApiKey::QueryKeys
    }

    pub fn encode_body(&self, w: &mut Writer) {
        w.u16(self.shard)
            .string(&self.topic)
            .bytes(&self.key)
            .i64(self.from_ms)
            .i64(self.to_ms)
            .u32(self.max);
    }

    pub fn decode_body(r: &mut Reader<'_>) -> Result<KeyQuery, DecodeError> {
        let shard = r.u16("shard")?;
        let topic = r.string("topic")?;
        let key = r.bytes("key")?;
        if key.len() > MAX_QUERY_KEY_BYTES {
            return Err(DecodeError::TooMany {
                field: "key bytes",
                count: key.len() as u64,
                max: MAX_QUERY_KEY_BYTES as u64,
            });
        }
        Ok(KeyQuery {
            shard,
            topic,
            key: key.to_vec(),
            from_ms: r.i64("from_ms")?,
            to_ms: r.i64("to_ms")?,
            max: r.u32("max")?,
        })
    }
}

impl KeyHits {
    pub fn encode_body(&self, w: &mut Writer) {
        w.u8(u8::from(self.truncated)).u64(self.indexed_to).u64(self.log_end);
        w.count(self.hits.len());
        for h in &self.hits {
            w.u32(h.queue_id).u64(h.offset).i64(h.store_timestamp_ms);
        }
    }

    pub fn decode_body(r: &mut Reader<'_>) -> Result<KeyHits, DecodeError> {
        let truncated = r.u8("truncated")? != 0;
        let indexed_to = r.u64("indexed_to")?;
        let log_end = r.u64("log_end")?;
        let n = r.count("hits", MAX_KEY_HITS.min(MAX_LIST_ITEMS), 20)?;
        let mut hits = Vec::with_capacity(n);
        for _ in 0..n {
            hits.push(KeyHit {
                queue_id: r.u32("queue_id")?,
                offset: r.u64("offset")?,
                store_timestamp_ms: r.i64("store_timestamp_ms")?,
            });
        }
        Ok(KeyHits { hits, truncated, indexed_to, log_end })
    }
}
