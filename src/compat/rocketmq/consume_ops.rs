//! The consumer requests that act on one stored message or on queue locks, translated like
//! the rest of the front ([`super::dispatch`]):
//!
//! - CONSUMER_SEND_MSG_BACK: a message a consumer failed is copied, as the native push
//!   consumer does ([`crate::schedule::retry`]), to `%RETRY%<group>` held for its delay level
//!   (PRODUCE_SCHEDULED), or past `maxReconsumeTimes` to `%DLQ%<group>` (PRODUCE), with
//!   RETRY_TOPIC, RECONSUME_TIME and ORIGIN_MESSAGE_ID set.
//! - VIEW_MESSAGE_BY_ID: the message an offset message id names (FETCH of one offset).
//! - LOCK_BATCH_MQ / UNLOCK_BATCH_MQ: the group coordinator's queue locks (LOCK_QUEUES /
//!   UNLOCK_QUEUES), leased for 60 s as RocketMQ's broker does; orderly consumers renew them
//!   every 20 s.
//!
//! A message is found by its `physical_offset` ([`super::stored::pack_position`]: topic id,
//! queue id, queue offset); the topic's name comes from the topic list.

use std::rc::Rc;

use serde::Deserialize;
use serde_json::json;

use super::codec::RemotingCommand;
use super::codes::response;
use super::dispatch::{call, create_topic, fail, unexpected, FrontSite, Reply};
use super::stored;
use super::translate::{self, StoreSite};
use crate::broker::shard::Shard;
use crate::broker::shard_log::ShardLog;
use crate::client::consumer::decode_batches;
use crate::client::ConsumedMessage;
use crate::format::{BatchBuilder, Record};
use crate::protocol::group::{GroupQueue, GroupRequest, GroupResponse};
use crate::protocol::message::Delivery;
use crate::protocol::{Request, Response};
use crate::schedule::retry::{self, SendBack, SendBackPolicy};

/// RocketMQ's queue lock lease (`REBALANCE_LOCK_MAX_LIVE_TIME`).
pub const LOCK_LEASE_MS: u32 = 60_000;

fn field<'a>(req: &'a RemotingCommand, name: &str) -> Result<&'a str, (i32, String)> {
    req.field(name)
        .ok_or_else(|| (response::SYSTEM_ERROR, format!("request header field {name}: missing")))
}

fn number<T: std::str::FromStr>(req: &RemotingCommand, name: &str) -> Result<T, (i32, String)> {
    let text = field(req, name)?;
    text.trim().parse().map_err(|_| {
        (response::SYSTEM_ERROR, format!("request header field {name}: {text:?} is not a number"))
    })
}

/// The stored message at `physical_offset` and its topic's name and id.
async fn find<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    physical_offset: u64,
) -> Result<(String, u32, ConsumedMessage), (i32, String)> {
    let (topic_id, queue_id, offset) = stored::unpack_position(physical_offset);
    let not_found = || {
        (response::SYSTEM_ERROR, format!("no message at offset {physical_offset:#x} (topic id {topic_id}, queue {queue_id}, offset {offset})"))
    };
    let topic = match call(shard, Request::ListTopics).await.map_err(fail)? {
        Response::ListTopics { topics } => {
            topics.into_iter().find(|t| t.topic_id == topic_id).ok_or_else(not_found)?.name
        }
        other => return Err(unexpected("list topics", &other)),
    };
    let m = read_one(shard, &topic, queue_id, offset).await?.ok_or_else(not_found)?;
    Ok((topic, topic_id, m))
}

/// The message at `offset` of queue `queue_id` of `topic` (`None`: no message there).
pub(super) async fn read_one<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    topic: &str,
    queue_id: u32,
    offset: u64,
) -> Result<Option<ConsumedMessage>, (i32, String)> {
    let fetch = Request::Fetch {
        topic: topic.to_owned(),
        queue_id,
        offset,
        max_bytes: 64 * 1024,
        max_wait_ms: 0,
        tags: Vec::new(),
    };
    let batches = match call(shard, fetch).await {
        Ok(Response::Fetch { batches, .. }) => batches,
        Ok(other) => return Err(unexpected("fetch", &other)),
        Err(e) if e.code == crate::protocol::ErrorCode::OFFSET_OUT_OF_RANGE => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    Ok(decode_batches(&batches, offset, &[]).messages.into_iter().find(|m| m.offset == offset))
}

pub async fn view_message<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    site: &FrontSite,
    req: &RemotingCommand,
) -> Reply {
    let (topic, topic_id, m) = find(shard, number(req, "offset")?).await?;
    let mut resp = RemotingCommand::response_to(req, response::SUCCESS, None);
    translate::encode_consumed(
        &topic,
        &m,
        StoreSite { topic_id, store_host: site.store_host },
        &mut resp.body,
    )
    .map_err(|e| (response::SYSTEM_ERROR, e.to_string()))?;
    Ok(resp)
}

pub async fn send_back<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    site: &FrontSite,
    req: &RemotingCommand,
) -> Reply {
    let group = field(req, "group")?.to_owned();
    let delay_level: i32 = req.field("delayLevel").map_or(Ok(0), |_| number(req, "delayLevel"))?;
    let max_times: i32 =
        req.field("maxReconsumeTimes").map_or(Ok(-1), |_| number(req, "maxReconsumeTimes"))?;
    let (stored_topic, topic_id, m) = find(shard, number(req, "offset")?).await?;
    let policy = SendBackPolicy {
        max_reconsume_times: u32::try_from(max_times).unwrap_or(16),
        ..SendBackPolicy::default()
    };
    let mut decision = policy.decide(m.reconsume_times());
    if let (SendBack::Retry { reconsume_times, .. }, true) = (decision, delay_level < 0) {
        decision = SendBack::DeadLetter { reconsume_times };
    } else if let (SendBack::Retry { reconsume_times, .. }, true) = (decision, delay_level > 0) {
        decision = SendBack::Retry { delay_level: delay_level as u32, reconsume_times };
    }
    let times = match decision {
        SendBack::Retry { reconsume_times, .. } | SendBack::DeadLetter { reconsume_times } => {
            reconsume_times
        }
    };
    let origin_topic = m
        .origin_topic()
        .map(str::to_owned)
        .or_else(|| req.field("originTopic").filter(|t| !t.is_empty()).map(str::to_owned))
        .unwrap_or(stored_topic);
    let origin_id = m
        .property(retry::PROPERTY_ORIGIN_MESSAGE_ID.as_bytes())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .or_else(|| req.field("originMsgId").filter(|t| !t.is_empty()).map(str::to_owned))
        .unwrap_or_else(|| {
            let packed = stored::pack_position(topic_id, m.queue_id, m.offset).unwrap_or(m.offset);
            stored::offset_message_id(site.store_host, packed)
        });
    let ours = [
        retry::PROPERTY_RETRY_TOPIC,
        retry::PROPERTY_RECONSUME_TIME,
        retry::PROPERTY_ORIGIN_MESSAGE_ID,
    ];
    let mut properties: Vec<(&[u8], &[u8])> = m
        .properties
        .iter()
        .filter(|(k, _)| !ours.iter().any(|o| o.as_bytes() == k.as_ref()))
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    let times_text = times.to_string();
    properties.push((retry::PROPERTY_RETRY_TOPIC.as_bytes(), origin_topic.as_bytes()));
    properties.push((retry::PROPERTY_RECONSUME_TIME.as_bytes(), times_text.as_bytes()));
    properties.push((retry::PROPERTY_ORIGIN_MESSAGE_ID.as_bytes(), origin_id.as_bytes()));
    let mut builder = BatchBuilder::new(shard.config.storage.max_batch_bytes);
    let record = Record {
        key: &m.key,
        tag: &m.tag,
        properties: &properties,
        body: &m.body,
        timestamp_ms: m.timestamp_ms,
    };
    builder.push(&record).map_err(|e| (response::SYSTEM_ERROR, e.to_string()))?;
    let batch = builder.finish(-1, -1);
    let (topic, request) = match decision {
        SendBack::Retry { delay_level, .. } => {
            let topic = retry::retry_topic(&group);
            let r = Request::ProduceScheduled {
                topic: topic.clone(),
                queue_id: 0,
                delivery: Delivery::Level(delay_level),
                batch: batch.into(),
            };
            (topic, r)
        }
        SendBack::DeadLetter { .. } => {
            let topic = retry::dlq_topic(&group);
            tracing::warn!(%group, "message failed {times} times: moved to {topic}");
            let r = Request::Produce {
                topic: topic.clone(),
                queue_id: 0,
                flags: 0,
                batch: batch.into(),
            };
            (topic, r)
        }
    };
    // The group's retry and dead-letter topics are created on first use, whatever
    // rocketmq.auto_create_topics says (RocketMQ's broker does the same).
    create_topic(shard, &topic, &site.config).await.map_err(fail)?;
    call(shard, request).await.map_err(fail)?;
    Ok(RemotingCommand::response_to(req, response::SUCCESS, None))
}

/// LOCK_BATCH_MQ and UNLOCK_BATCH_MQ bodies (`LockBatchRequestBody`).
#[derive(Debug, Deserialize)]
struct LockBody {
    #[serde(rename = "consumerGroup")]
    group: String,
    #[serde(rename = "clientId")]
    client_id: String,
    #[serde(rename = "mqSet", default)]
    queues: Vec<LockQueue>,
}

#[derive(Debug, Deserialize)]
struct LockQueue {
    topic: String,
    #[serde(rename = "brokerName", default)]
    broker_name: String,
    #[serde(rename = "queueId")]
    queue_id: u32,
}

/// Most queues one lock request may name.
const MAX_LOCK_QUEUES: usize = 4096;

fn lock_body(req: &RemotingCommand) -> Result<LockBody, (i32, String)> {
    let body: LockBody = serde_json::from_slice(&req.body).map_err(|e| {
        (
            response::SYSTEM_ERROR,
            format!("lock body is not RocketMQ LockBatchRequestBody JSON: {e}"),
        )
    })?;
    if body.queues.len() > MAX_LOCK_QUEUES {
        return Err((response::SYSTEM_ERROR, format!("more than {MAX_LOCK_QUEUES} queues")));
    }
    Ok(body)
}

pub async fn lock<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let body = lock_body(req)?;
    let queues: Vec<GroupQueue> = body
        .queues
        .iter()
        .map(|q| GroupQueue { topic: q.topic.clone(), queue_id: q.queue_id })
        .collect();
    let lock = GroupRequest::Lock {
        group: body.group.clone(),
        client_id: body.client_id.clone(),
        lease_ms: LOCK_LEASE_MS,
        queues,
    };
    let granted = match call(shard, Request::Group(lock)).await.map_err(fail)? {
        Response::Group(GroupResponse::Lock { granted }) => granted,
        other => return Err(unexpected("lock queues", &other)),
    };
    let locked: Vec<serde_json::Value> = body
        .queues
        .iter()
        .filter(|q| granted.iter().any(|g| g.topic == q.topic && g.queue_id == q.queue_id))
        .map(|q| json!({ "topic": q.topic, "brokerName": q.broker_name, "queueId": q.queue_id }))
        .collect();
    let mut resp = RemotingCommand::response_to(req, response::SUCCESS, None);
    resp.body = serde_json::to_vec(&json!({ "lockOKMQSet": locked })).expect("JSON serializes");
    Ok(resp)
}

pub async fn unlock<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let body = lock_body(req)?;
    let queues = body
        .queues
        .iter()
        .map(|q| GroupQueue { topic: q.topic.clone(), queue_id: q.queue_id })
        .collect();
    let unlock = GroupRequest::Unlock { group: body.group, client_id: body.client_id, queues };
    call(shard, Request::Group(unlock)).await.map_err(fail)?;
    Ok(RemotingCommand::response_to(req, response::SUCCESS, None))
}
