//! QUERY_MESSAGE (code 12): the messages of a topic stored under a key, through the shards'
//! key index, as the native `ringmq message query` finds them
//! ([`crate::client::message_query`]).
//!
//! Each shard is asked (native QUERY_KEYS, forwarded by this shard) for the offsets stored
//! under the key's hash within `[beginTimestamp, endTimestamp]` (store times); the hits are
//! read newest first and kept when the message carries the key (a word of `KEYS`, its
//! `UNIQ_KEY`, or its original id on a retried copy): the index holds hashes. At most
//! `maxNum` messages (and [`MAX_QUERY_MESSAGES`], and `rocketmq.max_pull_bytes` of
//! encoding) come back in the stored-message encoding. None found is QUERY_NOT_FOUND, as
//! RocketMQ answers.
//!
//! Response header: `indexLastUpdatePhyoffset` is the lowest log position below which every
//! shard has indexed its log (positions are per shard); `indexLastUpdateTimestamp` is the
//! time of the answer when every shard's index had caught up with its durable log, else 0
//! (the newest messages may be missing: the index follows the log by about
//! `key_index.interval_ms`).

use std::rc::Rc;

use super::codec::RemotingCommand;
use super::codes::response;
use super::consume_ops::read_one;
use super::dispatch::{call, fail, unexpected, FrontSite, Reply};
use super::transaction::topic_id_of;
use super::translate::{self, StoreSite};
use crate::broker::shard::Shard;
use crate::broker::shard_log::ShardLog;
use crate::client::message_query::message_has_key;
use crate::protocol::key_query::{KeyHit, KeyQuery};
use crate::protocol::{Request, Response};

/// Most messages one answer carries (RocketMQ's broker default is 32 per query).
pub const MAX_QUERY_MESSAGES: u32 = 64;

/// The fields of a QUERY_MESSAGE header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryHeader {
    pub topic: String,
    pub key: String,
    pub max: u32,
    pub begin_ms: i64,
    pub end_ms: i64,
}

impl QueryHeader {
    pub fn read(req: &RemotingCommand) -> Result<QueryHeader, (i32, String)> {
        let field = |f: &str| {
            req.field(f).ok_or_else(|| {
                (response::SYSTEM_ERROR, format!("request header field {f}: missing"))
            })
        };
        let number = |f: &str| -> Result<i64, (i32, String)> {
            let t = field(f)?;
            t.trim().parse().map_err(|_| {
                (response::SYSTEM_ERROR, format!("request header field {f}: {t:?} is not a number"))
            })
        };
        let max = number("maxNum")?.clamp(1, i64::from(MAX_QUERY_MESSAGES)) as u32;
        let (begin_ms, end_ms) = (number("beginTimestamp")?, number("endTimestamp")?);
        if begin_ms > end_ms {
            return Err((
                response::SYSTEM_ERROR,
                format!("beginTimestamp {begin_ms} is after endTimestamp {end_ms}"),
            ));
        }
        Ok(QueryHeader {
            topic: field("topic")?.to_owned(),
            key: field("key")?.to_owned(),
            max,
            begin_ms,
            end_ms,
        })
    }
}

pub async fn query_message<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    site: &FrontSite,
    req: &RemotingCommand,
) -> Reply {
    let h = QueryHeader::read(req)?;
    let mut hits: Vec<KeyHit> = Vec::new();
    let mut indexed_to = u64::MAX;
    let mut caught_up = true;
    for target in 0..shard.shard_count {
        let q = KeyQuery {
            shard: target as u16,
            topic: h.topic.clone(),
            key: h.key.as_bytes().to_vec(),
            from_ms: h.begin_ms,
            to_ms: h.end_ms,
            max: h.max.saturating_mul(4).max(16),
        };
        match call(shard, Request::QueryKeys(q)).await.map_err(fail)? {
            Response::QueryKeys(found) => {
                hits.extend(found.hits);
                indexed_to = indexed_to.min(found.indexed_to);
                caught_up &= found.indexed_to >= found.log_end;
            }
            other => return Err(unexpected("query keys", &other)),
        }
    }
    hits.sort_by_key(|h| std::cmp::Reverse(h.store_timestamp_ms));
    let topic_id = if hits.is_empty() { 0 } else { topic_id_of(shard, &h.topic).await? };
    let site_of = StoreSite { topic_id, store_host: site.store_host };
    let mut body = Vec::new();
    let mut found = 0;
    for hit in hits {
        if found >= h.max || body.len() >= site.config.max_pull_bytes {
            break;
        }
        let Some(m) = read_one(shard, &h.topic, hit.queue_id, hit.offset).await? else {
            continue; // deleted by retention since it was indexed
        };
        if !message_has_key(&m, h.key.as_bytes()) {
            continue; // another key with the same hash
        }
        translate::encode_consumed(&h.topic, &m, site_of, &mut body)
            .map_err(|e| (response::SYSTEM_ERROR, e.to_string()))?;
        found += 1;
    }
    let code = if found > 0 { response::SUCCESS } else { response::QUERY_NOT_FOUND };
    let remark = (found == 0).then(|| {
        format!(
            "no message of {} under key {:?} stored between {} and {}",
            h.topic, h.key, h.begin_ms, h.end_ms
        )
    });
    let mut resp = RemotingCommand::response_to(req, code, remark);
    resp.set_field("indexLastUpdateTimestamp", if caught_up { shard.clock.unix_ms() } else { 0 });
    resp.set_field("indexLastUpdatePhyoffset", if indexed_to == u64::MAX { 0 } else { indexed_to });
    resp.body = body;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(fields: &[(&str, &str)]) -> RemotingCommand {
        let mut c = RemotingCommand::request(12, 1);
        for (k, v) in fields {
            c.set_field(k, v);
        }
        c
    }

    #[test]
    fn query_headers_read_bounded_and_refuse_bad_values() {
        let h = QueryHeader::read(&req(&[
            ("topic", "T"),
            ("key", "k1"),
            ("maxNum", "100000"),
            ("beginTimestamp", "0"),
            ("endTimestamp", "9223372036854775807"),
        ]))
        .unwrap();
        assert_eq!(h.max, MAX_QUERY_MESSAGES, "bounded");
        assert_eq!((h.topic.as_str(), h.key.as_str(), h.end_ms), ("T", "k1", i64::MAX));
        let e = QueryHeader::read(&req(&[
            ("topic", "T"),
            ("key", "k"),
            ("maxNum", "1"),
            ("beginTimestamp", "5"),
            ("endTimestamp", "4"),
        ]))
        .unwrap_err();
        assert!(e.1.contains("after"), "{}", e.1);
        let e = QueryHeader::read(&req(&[("topic", "T"), ("maxNum", "1")])).unwrap_err();
        assert!(e.1.contains("beginTimestamp") || e.1.contains("key"), "{}", e.1);
    }
}
