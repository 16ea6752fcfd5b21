//! The broker front's request handling: each RocketMQ request becomes the native request the
//! native protocol would send, run through [`Shard::handle`], the same router, forwarding and
//! handlers as a native client's request (there is no other storage path); the native answer
//! is translated back. Runs on the shard whose front connection decoded the request.
//!
//! | RocketMQ | native |
//! |---|---|
//! | SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE | PRODUCE (DELAY: PRODUCE_SCHEDULED) |
//! | PULL_MESSAGE (suspend flag: long poll; commit flag) | FETCH with tags (+ COMMIT_OFFSETS) |
//! | QUERY/UPDATE_CONSUMER_OFFSET | FETCH_OFFSETS / COMMIT_OFFSETS |
//! | GET_MIN/MAX_OFFSET, SEARCH_OFFSET_BY_TIMESTAMP | OFFSETS |
//! | HEART_BEAT, UNREGISTER_CLIENT, GET_CONSUMER_LIST_BY_GROUP | HEARTBEAT, LEAVE_GROUP, GROUP_MEMBERS |
//! | DELETE_SUBSCRIPTIONGROUP with cleanOffset (without: nothing to delete) | DELETE_GROUP |
//! | LOCK/UNLOCK_BATCH_MQ, CONSUMER_SEND_MSG_BACK, VIEW_MESSAGE_BY_ID | see [`super::consume_ops`] |
//! | QUERY_MESSAGE | QUERY_KEYS on every shard, FETCH of each hit ([`super::query`]) |
//! | SEND_MESSAGE with TRAN_MSG, END_TRANSACTION | PRODUCE of a transactional batch, END_TRANSACTION ([`super::transaction`]) |

use std::net::SocketAddrV4;
use std::rc::Rc;

use super::bodies;
use super::codec::RemotingCommand;
use super::codes::{property, pull_flag, request, response};
use super::config::RocketMqConfig;
use super::consume_ops;
use super::headers::{self, ConsumerOffsetHeader, PullHeader, QueueHeader, SendHeader};
use super::namesrv::auto_queue_count;
use super::query;
use super::stored;
use super::transaction;
use super::translate::{self, RmqMessage, StoreSite, TagFilter};
use crate::broker::error::BrokerError;
use crate::broker::hangup::{self, HungUp};
use crate::broker::shard::{Answer, Shard};
use crate::broker::shard_log::ShardLog;
use crate::client::consumer::decode_batches;
use crate::format::batch::read_header;
use crate::format::{BatchBuilder, Record, HEADER_LEN};
use crate::protocol::group::{GroupQueue, GroupRequest, GroupResponse, QueueCommit};
use crate::protocol::message::Delivery;
use crate::protocol::{ErrorCode, ErrorDetail, Request, Response, SendStatus};

/// What every front connection of a broker shares.
#[derive(Debug, Clone)]
pub struct FrontSite {
    /// The advertised address and port of the front: store host of every message.
    pub store_host: SocketAddrV4,
    pub config: RocketMqConfig,
    /// The offsets pulls last committed on this shard, so a pull carrying the same offset
    /// again (every long poll of an idle queue does) appends no commit record.
    pub pull_commits: PullCommits,
}

impl FrontSite {
    pub fn new(store_host: SocketAddrV4, config: RocketMqConfig) -> Self {
        FrontSite { store_host, config, pull_commits: PullCommits::default() }
    }
}

/// Most (group, topic, queue) entries [`PullCommits`] keeps; when full it starts over (a
/// forgotten entry costs one redundant commit).
pub const MAX_PULL_COMMITS: usize = 65_536;

/// The last offset a pull committed per (group, topic, queue), bounded.
#[derive(Debug, Clone, Default)]
pub struct PullCommits(std::cell::RefCell<std::collections::HashMap<(String, String, u32), u64>>);

impl PullCommits {
    /// Whether `offset` differs from what was last committed there (then it is recorded).
    pub fn changed(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> bool {
        let mut map = self.0.borrow_mut();
        let key = (group.to_owned(), topic.to_owned(), queue_id);
        if map.get(&key) == Some(&offset) {
            return false;
        }
        if map.len() >= MAX_PULL_COMMITS {
            map.clear();
        }
        map.insert(key, offset);
        true
    }

    /// Forgets an entry whose commit failed, so the next pull tries again.
    pub fn forget(&self, group: &str, topic: &str, queue_id: u32) {
        self.0.borrow_mut().remove(&(group.to_owned(), topic.to_owned(), queue_id));
    }
}

pub(super) type Reply = Result<RemotingCommand, (i32, String)>;

fn remark_of(e: &BrokerError) -> String {
    format!("ringmq {}: {}", e.code.name(), e.message)
}

/// The RocketMQ response code for a native error.
fn code_of(e: &BrokerError) -> i32 {
    match e.code {
        ErrorCode::UNKNOWN_TOPIC => response::TOPIC_NOT_EXIST,
        ErrorCode::INVALID_TOPIC_NAME
        | ErrorCode::UNKNOWN_QUEUE
        | ErrorCode::INVALID_BATCH
        | ErrorCode::BATCH_TOO_LARGE
        | ErrorCode::INVALID_DELIVERY_TIME
        | ErrorCode::INVALID_ARGUMENT => response::MESSAGE_ILLEGAL,
        // SLAVE_NOT_AVAILABLE included: ringmq refuses before storing anything, while
        // RocketMQ's code 11 means "stored on the master only", so a client must not read it
        // as stored; SYSTEM_BUSY makes it resend.
        c if c.retriable() == crate::protocol::Retriable::Yes => response::SYSTEM_BUSY,
        _ => response::SYSTEM_ERROR,
    }
}

pub(super) fn fail(e: BrokerError) -> (i32, String) {
    (code_of(&e), remark_of(&e))
}

pub(super) async fn call<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    req: Request,
) -> Result<Response, BrokerError> {
    shard.handle(req).await.map(Answer::into_response)
}

/// Answers one request (the caller drops the answer of a oneway request).
/// A PULL_MESSAGE still suspended when the connection hangs up is answered then.
pub async fn dispatch<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    site: &FrontSite,
    req: &RemotingCommand,
    hung_up: &HungUp,
) -> RemotingCommand {
    let reply = match req.code {
        request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
            send(shard, site, req).await
        }
        request::PULL_MESSAGE => pull(shard, site, req, hung_up).await,
        request::HEART_BEAT => heartbeat(shard, req).await,
        request::UNREGISTER_CLIENT => unregister(shard, req).await,
        request::GET_CONSUMER_LIST_BY_GROUP => consumer_list(shard, req).await,
        request::DELETE_SUBSCRIPTIONGROUP => delete_group(shard, req).await,
        request::QUERY_CONSUMER_OFFSET => query_offset(shard, req).await,
        request::UPDATE_CONSUMER_OFFSET => update_offset(shard, req).await,
        request::GET_MIN_OFFSET | request::GET_MAX_OFFSET | request::SEARCH_OFFSET_BY_TIMESTAMP => {
            queue_offset(shard, req).await
        }
        request::CONSUMER_SEND_MSG_BACK => consume_ops::send_back(shard, site, req).await,
        request::VIEW_MESSAGE_BY_ID => consume_ops::view_message(shard, site, req).await,
        request::LOCK_BATCH_MQ => consume_ops::lock(shard, req).await,
        request::UNLOCK_BATCH_MQ => consume_ops::unlock(shard, req).await,
        request::END_TRANSACTION => transaction::end(shard, req).await,
        request::QUERY_MESSAGE => query::query_message(shard, site, req).await,
        code => Err((
            response::REQUEST_CODE_NOT_SUPPORTED,
            format!("request code {code} is not supported by the ringmq RocketMQ front"),
        )),
    };
    reply.unwrap_or_else(|(code, remark)| RemotingCommand::response_to(req, code, Some(remark)))
}

fn bad_header(e: headers::HeaderError) -> (i32, String) {
    (response::SYSTEM_ERROR, e.to_string())
}

async fn send<L: ShardLog>(shard: &Rc<Shard<L>>, site: &FrontSite, req: &RemotingCommand) -> Reply {
    let h = SendHeader::read(req).map_err(bad_header)?;
    let messages = if h.batch || req.code == request::SEND_BATCH_MESSAGE {
        translate::decode_batch(&req.body)
            .map_err(|e| (response::MESSAGE_ILLEGAL, e.to_string()))?
    } else {
        vec![RmqMessage {
            flag: h.flag,
            sys_flag: h.sys_flag,
            properties: stored::decode_properties(&h.properties),
            body: req.body.clone(),
        }]
    };
    let half = messages.iter().any(|m| transaction::is_half(m, h.sys_flag));
    let messages = if half {
        if messages.len() != 1 {
            return Err((
                response::MESSAGE_ILLEGAL,
                "a transactional message cannot be sent in a batch".into(),
            ));
        }
        vec![transaction::prepare(&messages[0], &h.producer_group)]
    } else {
        messages
    };
    // RocketMQ clients always choose the queue; a negative one (the broker's choice) is 0.
    let queue_id = u32::try_from(h.queue_id).unwrap_or(0);
    if half && stored::pack_position(shard.topic_id(&h.topic).unwrap_or(0), queue_id, 0).is_none() {
        // END_TRANSACTION could not name it (see `transaction`): refused before it is stored.
        return Err((
            response::MESSAGE_ILLEGAL,
            format!(
                "a transactional message for queue {queue_id} of {}: the front's message ids \
                 carry topic ids below 65536 and queue ids below 1024 only",
                h.topic
            ),
        ));
    }
    let timestamp_ms =
        if h.born_timestamp_ms > 0 { h.born_timestamp_ms } else { shard.clock.unix_ms() };
    let mut builder = BatchBuilder::new(shard.config.storage.max_batch_bytes);
    for m in &messages {
        let parts = m.to_record();
        let props = parts.property_refs();
        let record = Record {
            key: &parts.key,
            tag: &parts.tag,
            properties: &props,
            body: &parts.body,
            timestamp_ms,
        };
        builder.push(&record).map_err(|e| {
            (response::MESSAGE_ILLEGAL, format!("the message does not fit a ringmq batch: {e}"))
        })?;
    }
    let delay_level: u32 = messages
        .first()
        .filter(|_| messages.len() == 1 && !half)
        .and_then(|m| m.property(property::DELAY))
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or(0);
    // A half: the native transactional batch (held until END_TRANSACTION).
    let batch = if half { builder.finish_transactional(-1, -1) } else { builder.finish(-1, -1) };
    let make = |batch: Vec<u8>| {
        if delay_level > 0 {
            Request::ProduceScheduled {
                topic: h.topic.clone(),
                queue_id,
                delivery: Delivery::Level(delay_level),
                batch: batch.into(),
            }
        } else {
            Request::Produce { topic: h.topic.clone(), queue_id, flags: 0, batch: batch.into() }
        }
    };
    let mut result = call(shard, make(batch.clone())).await;
    if matches!(&result, Err(e) if e.code == ErrorCode::UNKNOWN_TOPIC)
        && site.config.auto_create_topics
    {
        create_topic(shard, &h.topic, &site.config).await.map_err(fail)?;
        result = call(shard, make(batch)).await;
    }
    match result.map_err(fail)? {
        Response::Produce { status, topic_id, queue_id, base_offset, record_count, .. } => {
            let code = match status {
                SendStatus::SendOk => response::SUCCESS,
                SendStatus::FlushDiskTimeout => response::FLUSH_DISK_TIMEOUT,
                SendStatus::FlushSlaveTimeout => response::FLUSH_SLAVE_TIMEOUT,
            };
            // A half's base offset is its transaction id; its id names its destination.
            let topic_id =
                if half { transaction::topic_id_of(shard, &h.topic).await? } else { topic_id };
            let ids: Vec<String> = (0..u64::from(record_count))
                .map(|i| {
                    let offset = base_offset + i;
                    let packed =
                        stored::pack_position(topic_id, queue_id, offset).unwrap_or(offset);
                    stored::offset_message_id(site.store_host, packed)
                })
                .collect();
            let mut resp = RemotingCommand::response_to(req, code, None);
            resp.set_field("msgId", ids.join(","));
            resp.set_field("queueId", queue_id);
            resp.set_field("queueOffset", base_offset);
            resp.set_field("MSG_REGION", "DefaultRegion");
            resp.set_field("TRACE_ON", "false");
            Ok(resp)
        }
        other => Err(unexpected("produce", &other)),
    }
}

pub(super) fn unexpected(what: &str, r: &Response) -> (i32, String) {
    (response::SYSTEM_ERROR, format!("ringmq answered {what} with {:?}", r.api_key()))
}

/// Creates `topic` as the name server would on first use (an existing one is fine).
pub(super) async fn create_topic<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    topic: &str,
    config: &RocketMqConfig,
) -> Result<(), BrokerError> {
    let queue_count = auto_queue_count(topic, config.auto_create_queue_count);
    match call(shard, Request::CreateTopic { topic: topic.to_owned(), queue_count }).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::TOPIC_EXISTS => Ok(()),
        Err(e) => Err(e),
    }
}

async fn pull<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    site: &FrontSite,
    req: &RemotingCommand,
    hung_up: &HungUp,
) -> Reply {
    let h = PullHeader::read(req).map_err(bad_header)?;
    let (group, topic, queue_id) = (&h.consumer_group, &h.topic, h.queue_id);
    if h.sys_flag & pull_flag::COMMIT_OFFSET != 0
        && h.commit_offset >= 0
        && site.pull_commits.changed(group, topic, queue_id, h.commit_offset as u64)
    {
        // As RocketMQ's broker does: the pull carries the consumer's progress on this queue.
        let commit = commit(shard, group, topic, queue_id, h.commit_offset as u64);
        if let Err(e) = commit.await {
            site.pull_commits.forget(group, topic, queue_id);
            tracing::debug!(%group, "commit carried by a pull failed: {e}");
        }
    }
    let tags = match h.subscription.as_deref().map(translate::parse_tag_expression) {
        Some(TagFilter::Tags(t)) => t,
        _ => Vec::new(),
    };
    let suspend = h.sys_flag & pull_flag::SUSPEND != 0;
    let max_wait_ms =
        if suspend { h.suspend_timeout_ms.min(site.config.max_suspend_ms) } else { 0 };
    let offset = u64::try_from(h.queue_offset).unwrap_or(0);
    let fetch = Request::Fetch {
        topic: h.topic.clone(),
        queue_id: h.queue_id,
        offset,
        max_bytes: u32::try_from(site.config.max_pull_bytes).unwrap_or(u32::MAX),
        max_wait_ms: max_wait_ms as u32,
        tags: tags.clone(),
    };
    let answer = |code, next: u64, min: u64, max: u64, body: Vec<u8>| {
        let mut resp = RemotingCommand::response_to(req, code, None);
        resp.set_field("nextBeginOffset", next);
        resp.set_field("minOffset", min);
        resp.set_field("maxOffset", max);
        resp.set_field("suggestWhichBrokerId", 0);
        resp.body = body;
        Ok(resp)
    };
    // A suspended pull of a client that hung up is answered then, not at its deadline.
    let fetched = hangup::handle(shard, fetch, hung_up).await.map(Answer::into_response);
    let (min_offset, next_offset, scan_end_offset, batches) = match (h.queue_offset < 0, fetched) {
        (false, Ok(Response::Fetch { min_offset, next_offset, scan_end_offset, batches })) => {
            (min_offset, next_offset, scan_end_offset, batches)
        }
        (true, _) => return Err((response::PULL_OFFSET_MOVED, "negative queueOffset".into())),
        (false, Err(e)) => {
            if let ErrorDetail::OffsetRange { min, next } = e.detail {
                let moved_to = offset.clamp(min, next);
                return answer(response::PULL_OFFSET_MOVED, moved_to, min, next, Vec::new());
            }
            return Err(fail(e));
        }
        (false, Ok(other)) => return Err(unexpected("fetch", &other)),
    };
    let decoded = decode_batches(&batches, offset, &tags);
    if decoded.messages.is_empty() {
        if let Some(c) = decoded.corrupt {
            return Err((
                response::SYSTEM_ERROR,
                format!(
                    "queue {} of {} holds corrupt data at offsets [{}, {}): {}",
                    h.queue_id, h.topic, c.first_offset, c.next_offset, c.reason
                ),
            ));
        }
        let next = decoded.next_offset.max(scan_end_offset).max(offset);
        let code =
            if next > offset { response::PULL_RETRY_IMMEDIATELY } else { response::PULL_NOT_FOUND };
        return answer(code, next, min_offset, next_offset, Vec::new());
    }
    let topic_id = if batches.len() >= HEADER_LEN {
        read_header(&batches).map(|b| b.stamp.topic_id).unwrap_or(0)
    } else {
        0
    };
    let limit = h.max_msg_nums.clamp(1, 1024) as usize;
    let site_of = StoreSite { topic_id, store_host: site.store_host };
    let mut body = Vec::new();
    let mut last = offset;
    for m in decoded.messages.iter().take(limit) {
        translate::encode_consumed(&h.topic, m, site_of, &mut body).map_err(|e| {
            (
                response::SYSTEM_ERROR,
                format!("message at offset {} of {} queue {}: {e}", m.offset, h.topic, h.queue_id),
            )
        })?;
        last = m.offset;
    }
    let next = if decoded.messages.len() > limit {
        last + 1
    } else if decoded.corrupt.is_some() {
        decoded.next_offset
    } else {
        decoded.next_offset.max(scan_end_offset).max(offset)
    };
    answer(response::SUCCESS, next, min_offset, next_offset, body)
}

async fn commit<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    group: &str,
    topic: &str,
    queue_id: u32,
    offset: u64,
) -> Result<(), BrokerError> {
    let offsets = vec![QueueCommit { topic: topic.to_owned(), queue_id, offset }];
    let req = GroupRequest::CommitOffsets { group: group.to_owned(), generation: 0, offsets };
    call(shard, Request::Group(req)).await.map(|_| ())
}

async fn heartbeat<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let hb = bodies::parse_heartbeat(&req.body).map_err(|e| (response::SYSTEM_ERROR, e))?;
    for c in hb.consumers.iter().filter(|c| !c.is_broadcasting()) {
        let mut subscriptions: Vec<(String, String)> =
            c.subscriptions.iter().map(|s| (s.topic.clone(), s.expression.clone())).collect();
        subscriptions.sort();
        subscriptions.dedup_by(|a, b| a.0 == b.0);
        let join = GroupRequest::Heartbeat {
            group: c.group.clone(),
            client_id: hb.client_id.clone(),
            room: String::new(),
            subscriptions,
        };
        call(shard, Request::Group(join)).await.map_err(fail)?;
    }
    Ok(RemotingCommand::response_to(req, response::SUCCESS, None))
}

async fn unregister<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let (client_id, group) = headers::unregister(req).map_err(bad_header)?;
    if let Some(group) = group {
        call(shard, Request::Group(GroupRequest::Leave { group, client_id }))
            .await
            .map_err(fail)?;
    }
    Ok(RemotingCommand::response_to(req, response::SUCCESS, None))
}

/// RocketMQ's broker deletes the group's subscription config and, with `cleanOffset`, its
/// offsets. ringmq keeps no subscription config, so without `cleanOffset` there is nothing to
/// delete; with it the group's offsets go as DELETE_GROUP's do, which, unlike RocketMQ, is
/// refused while the group has live members (remark `GROUP_NOT_EMPTY`).
async fn delete_group<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let (group, clean_offset) = headers::delete_group(req).map_err(bad_header)?;
    if clean_offset {
        match call(shard, Request::Group(GroupRequest::Delete { group })).await.map_err(fail)? {
            Response::Group(GroupResponse::Delete { .. }) => {}
            other => return Err(unexpected("delete group", &other)),
        }
    }
    Ok(RemotingCommand::response_to(req, response::SUCCESS, None))
}

async fn consumer_list<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let group = headers::consumer_group(req).map_err(bad_header)?;
    match call(shard, Request::Group(GroupRequest::Members { group })).await.map_err(fail)? {
        Response::Group(GroupResponse::Members { members, .. }) => {
            let ids: Vec<String> = members.into_iter().map(|m| m.client_id).collect();
            let mut resp = RemotingCommand::response_to(req, response::SUCCESS, None);
            resp.body = bodies::consumer_list(&ids);
            Ok(resp)
        }
        other => Err(unexpected("group members", &other)),
    }
}

async fn offsets<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    topic: &str,
    queue_id: u32,
    timestamp_ms: i64,
) -> Result<(u64, u64, u64), (i32, String)> {
    let req = Request::Offsets { topic: topic.to_owned(), queue_id, timestamp_ms };
    match call(shard, req).await.map_err(fail)? {
        Response::Offsets { min_offset, next_offset, timestamp_offset } => {
            Ok((min_offset, next_offset, timestamp_offset))
        }
        other => Err(unexpected("offsets", &other)),
    }
}

async fn query_offset<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let h = ConsumerOffsetHeader::read(req).map_err(bad_header)?;
    let queues = vec![GroupQueue { topic: h.topic.clone(), queue_id: h.queue_id }];
    let fetch = GroupRequest::FetchOffsets { group: h.consumer_group.clone(), queues };
    let committed = match call(shard, Request::Group(fetch)).await.map_err(fail)? {
        Response::Group(GroupResponse::FetchOffsets { offsets }) => {
            offsets.first().map_or(-1, |(_, o)| *o)
        }
        other => return Err(unexpected("fetch offsets", &other)),
    };
    // As RocketMQ's broker: a group new to a queue that still holds its first message starts
    // at 0 (so a consumer started after the producer sees everything); otherwise the client
    // applies its consume-from-where policy.
    let offset = if committed >= 0 {
        committed
    } else {
        let (min, _, _) = offsets(shard, &h.topic, h.queue_id, -1).await?;
        if min != 0 {
            return Err((response::QUERY_NOT_FOUND, "Not found, the group has no offset".into()));
        }
        0
    };
    let mut resp = RemotingCommand::response_to(req, response::SUCCESS, None);
    resp.set_field("offset", offset);
    Ok(resp)
}

async fn update_offset<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let h = ConsumerOffsetHeader::read(req).map_err(bad_header)?;
    let offset = h.commit_offset.ok_or_else(|| {
        bad_header(headers::HeaderError { field: "commitOffset", why: "missing".into() })
    })?;
    let offset = u64::try_from(offset)
        .map_err(|_| (response::SYSTEM_ERROR, format!("commitOffset {offset} is negative")))?;
    commit(shard, &h.consumer_group, &h.topic, h.queue_id, offset).await.map_err(fail)?;
    Ok(RemotingCommand::response_to(req, response::SUCCESS, None))
}

async fn queue_offset<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let h = QueueHeader::read(req).map_err(bad_header)?;
    let timestamp = match req.code {
        request::SEARCH_OFFSET_BY_TIMESTAMP => h
            .timestamp_ms
            .ok_or_else(|| {
                bad_header(headers::HeaderError { field: "timestamp", why: "missing".into() })
            })?
            .max(0),
        _ => -1,
    };
    let (min, next, at) = offsets(shard, &h.topic, h.queue_id, timestamp).await?;
    let offset = match req.code {
        request::GET_MIN_OFFSET => min,
        request::GET_MAX_OFFSET => next,
        _ => at,
    };
    let mut resp = RemotingCommand::response_to(req, response::SUCCESS, None);
    resp.set_field("offset", offset);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_commit_is_sent_only_when_the_offset_moved() {
        let c = PullCommits::default();
        assert!(c.changed("g", "t", 0, 5));
        assert!(!c.changed("g", "t", 0, 5), "the same offset again");
        assert!(c.changed("g", "t", 1, 5), "another queue");
        assert!(c.changed("g", "t", 0, 6));
        c.forget("g", "t", 0);
        assert!(c.changed("g", "t", 0, 6), "a failed commit is tried again");
        for q in 0..(MAX_PULL_COMMITS as u32 + 10) {
            c.changed("g", "t", q, 1);
        }
        assert!(c.0.borrow().len() <= MAX_PULL_COMMITS, "bounded");
    }
}
