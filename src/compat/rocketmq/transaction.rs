//! Transactional messages over the front, on the native transactions
//! ([`crate::transaction`], `broker/shard/transaction.rs`); nothing is held in the front.
//!
//! - A send whose message carries `TRAN_MSG=true` (or the prepared bits of `sysFlag`) is a
//!   half: [`prepare`] makes it one native transactional record (the batch's transactional
//!   attribute; `PGROUP` names the producer group, from the header when the message lacks
//!   it; `TRAN_MSG` is not stored: the delivered message does not carry it, as in RocketMQ)
//!   and the send is the same PRODUCE the native `TransactionProducer` sends. The answer's
//!   `queueOffset` is the transaction id and its `msgId` an offset id whose commit-log
//!   offset packs (destination topic id, queue id, transaction id)
//!   ([`super::stored::pack_position`]), since END_TRANSACTION names nothing else.
//! - END_TRANSACTION (`commitOrRollback` 8 commit, 12 rollback, 0 unknown: nothing) unpacks
//!   `commitLogOffset` and sends the native END_TRANSACTION: commit delivers the stored batch
//!   to its queue exactly once. Clients send it oneway, so failures are logged.
//! - Check-back: once a connection's HEART_BEAT names a producer group, [`check_loop`] keeps
//!   one native CHECK_TRANSACTIONS of that group parked on every shard (at most
//!   [`MAX_CHECKED_GROUPS`] groups per connection); the halves it returns (when the native
//!   schedule makes them due) go to the client as CHECK_TRANSACTION_STATE (code 39, oneway,
//!   as RocketMQ's broker sends it) with the half in the stored-message encoding. The
//!   client's END_TRANSACTION (`fromTransactionCheck`) decides; no answer or "unknown" leaves
//!   the half to the native schedule (checked again, rolled back after
//!   `transaction.check_max` checks). The table hands each due half to one parked check, so
//!   one connection of the group is asked. A connection that closes while its check is
//!   parked may absorb one round of checks (they come again after
//!   `transaction.check_interval_ms`).

use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::channels::local_channel;

use super::codec::{self, RemotingCommand, SerializeType};
use super::codes::{property, request, response, txn_flag};
use super::dispatch::{call, fail, unexpected, FrontSite, Reply};
use super::stored;
use super::translate::{self, RmqMessage, StoreSite};
use crate::broker::hangup::{self, HungUp};
use crate::broker::shard::Shard;
use crate::broker::shard_log::ShardLog;
use crate::client::ConsumedMessage;
use crate::format::batch::BatchView;
use crate::protocol::transaction::{EndAction, TransactionCheck, TxnRequest, TxnResponse};
use crate::protocol::{ErrorCode, Request, Response, Retriable};
use crate::runtime;

/// Producer groups one connection is checked back for.
pub const MAX_CHECKED_GROUPS: usize = 16;

/// How long one parked check waits before it is renewed (also how long a closed connection's
/// parked checks stay).
const CHECK_WAIT_MS: u32 = 5_000;

/// Halves one parked check may return.
const MAX_CHECKS: u32 = 16;

/// Pause after a failed check request before the next.
const CHECK_RETRY: Duration = Duration::from_secs(1);

type Writer = local_channel::LocalSender<Vec<u8>>;

/// Whether `m` is a transaction's half message.
pub fn is_half(m: &RmqMessage, sys_flag: i32) -> bool {
    m.property(property::TRAN_MSG).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || sys_flag & txn_flag::MASK == txn_flag::PREPARED
}

/// The message as its half is stored: without `TRAN_MSG`, with `PGROUP` (the header's
/// producer group when the message does not name one).
pub fn prepare(m: &RmqMessage, producer_group: &str) -> RmqMessage {
    let mut m = m.clone();
    m.properties.retain(|(k, _)| k != property::TRAN_MSG);
    if m.property(property::PGROUP).map_or(true, str::is_empty) {
        m.properties.retain(|(k, _)| k != property::PGROUP);
        m.properties.push((property::PGROUP.to_owned(), producer_group.to_owned()));
    }
    m
}

/// The id of `topic`: this shard's copy of the topic table, else the broker's topic list.
pub(super) async fn topic_id_of<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    topic: &str,
) -> Result<u32, (i32, String)> {
    if let Some(id) = shard.topic_id(topic) {
        return Ok(id);
    }
    match call(shard, Request::ListTopics).await.map_err(fail)? {
        Response::ListTopics { topics } => {
            topics.into_iter().find(|t| t.name == topic).map(|t| t.topic_id).ok_or_else(|| {
                (response::TOPIC_NOT_EXIST, format!("topic {topic:?} does not exist"))
            })
        }
        other => Err(unexpected("list topics", &other)),
    }
}

/// The name of topic `topic_id`: this shard's copy of the topic table, else the topic list.
pub(super) async fn topic_name_of<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    topic_id: u32,
) -> Result<Option<String>, (i32, String)> {
    if let Some(name) = shard.topic_name(topic_id) {
        return Ok(Some(name));
    }
    match call(shard, Request::ListTopics).await.map_err(fail)? {
        Response::ListTopics { topics } => {
            Ok(topics.into_iter().find(|t| t.topic_id == topic_id).map(|t| t.name))
        }
        other => Err(unexpected("list topics", &other)),
    }
}

/// The fields of an END_TRANSACTION header the front uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndHeader {
    pub producer_group: String,
    pub commit_log_offset: u64,
    pub tran_state_table_offset: Option<u64>,
    /// `None`: unknown (0): nothing to do yet.
    pub action: Option<EndAction>,
    pub from_check: bool,
}

impl EndHeader {
    pub fn read(req: &RemotingCommand) -> Result<EndHeader, (i32, String)> {
        let missing =
            |f: &str| (response::SYSTEM_ERROR, format!("request header field {f}: missing"));
        let number = |f: &'static str| -> Result<Option<i64>, (i32, String)> {
            req.field(f)
                .map(|t| {
                    t.trim().parse::<i64>().map_err(|_| {
                        (
                            response::SYSTEM_ERROR,
                            format!("request header field {f}: {t:?} is not a number"),
                        )
                    })
                })
                .transpose()
        };
        let producer_group = req.field("producerGroup").ok_or_else(|| missing("producerGroup"))?;
        let offset = number("commitLogOffset")?.ok_or_else(|| missing("commitLogOffset"))?;
        let commit_log_offset = u64::try_from(offset).map_err(|_| {
            (response::SYSTEM_ERROR, format!("commitLogOffset {offset} is negative"))
        })?;
        let action = match number("commitOrRollback")?.ok_or_else(|| missing("commitOrRollback"))? {
            v if v == i64::from(txn_flag::COMMIT) => Some(EndAction::Commit),
            v if v == i64::from(txn_flag::ROLLBACK) => Some(EndAction::Rollback),
            v if v == i64::from(txn_flag::NOT_TYPE) => None,
            v => {
                return Err((
                    response::SYSTEM_ERROR,
                    format!(
                        "commitOrRollback {v} is none of 8 (commit), 12 (rollback), 0 (unknown)"
                    ),
                ))
            }
        };
        Ok(EndHeader {
            producer_group: producer_group.to_owned(),
            commit_log_offset,
            tran_state_table_offset: number("tranStateTableOffset")?.map(|v| v as u64),
            action,
            from_check: req
                .field("fromTransactionCheck")
                .is_some_and(|v| matches!(v.trim(), "true" | "1")),
        })
    }
}

/// END_TRANSACTION: the native END of the half the commit-log offset names.
pub async fn end<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let result = end_inner(shard, req).await;
    if let Err((code, remark)) = &result {
        // Clients send it oneway: the answer is dropped, so say it here.
        tracing::warn!(code, "RocketMQ END_TRANSACTION failed: {remark}");
    }
    result
}

async fn end_inner<L: ShardLog>(shard: &Rc<Shard<L>>, req: &RemotingCommand) -> Reply {
    let h = EndHeader::read(req)?;
    let (topic_id, queue_id, transaction_id) = stored::unpack_position(h.commit_log_offset);
    if let Some(t) = h.tran_state_table_offset.filter(|t| *t != transaction_id) {
        return Err((
            response::SYSTEM_ERROR,
            format!(
                "tranStateTableOffset {t} does not match commitLogOffset {:#x} (transaction {transaction_id})",
                h.commit_log_offset
            ),
        ));
    }
    let Some(action) = h.action else {
        tracing::debug!(transaction_id, from_check = h.from_check, "END_TRANSACTION: unknown");
        return Ok(RemotingCommand::response_to(req, response::SUCCESS, None));
    };
    let topic = topic_name_of(shard, topic_id).await?.ok_or_else(|| {
        (
            response::SYSTEM_ERROR,
            format!(
                "commitLogOffset {:#x} names topic id {topic_id}, which does not exist",
                h.commit_log_offset
            ),
        )
    })?;
    let end = TxnRequest::End { group: h.producer_group, topic, queue_id, transaction_id, action };
    match call(shard, Request::Transaction(end)).await.map_err(fail)? {
        Response::Transaction(TxnResponse::End { status, .. }) => {
            let code = match status {
                crate::protocol::SendStatus::SendOk => response::SUCCESS,
                crate::protocol::SendStatus::FlushDiskTimeout => response::FLUSH_DISK_TIMEOUT,
                crate::protocol::SendStatus::FlushSlaveTimeout => response::FLUSH_SLAVE_TIMEOUT,
            };
            Ok(RemotingCommand::response_to(req, code, None))
        }
        other => Err(unexpected("end transaction", &other)),
    }
}

/// Keeps a native CHECK_TRANSACTIONS of `group` parked on shard `target` and sends each half
/// it returns to the client; ends with the connection (its hang-up, the parked check too, or
/// `tx` gone), when the broker stops, or on an error that would repeat.
pub async fn check_loop<L: ShardLog>(
    shard: Rc<Shard<L>>,
    site: Rc<FrontSite>,
    group: String,
    target: u16,
    ty: SerializeType,
    tx: Weak<Writer>,
    hung_up: HungUp,
) {
    let mut opaque = 0i32;
    loop {
        let check = TxnRequest::Check {
            group: group.clone(),
            shard: target,
            max_wait_ms: CHECK_WAIT_MS,
            max_checks: MAX_CHECKS,
        };
        let parked = Box::pin(shard.handle(Request::Transaction(check)));
        let Some(answer) = hangup::unless_hung_up(&hung_up, parked).await else { return };
        let checks = match answer {
            Ok(answer) => match answer.into_response() {
                Response::Transaction(TxnResponse::Check { checks }) => checks,
                _ => return,
            },
            Err(e)
                if e.code != ErrorCode::SHUTTING_DOWN && e.code.retriable() == Retriable::Yes =>
            {
                tracing::debug!(%group, "RocketMQ front: check-back request failed: {e}");
                runtime::sleep(CHECK_RETRY).await;
                if tx.strong_count() == 0 || hangup::is_hung_up(&hung_up) {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(%group, "RocketMQ front: check-back ended: {e}");
                return;
            }
        };
        let Some(writer) = tx.upgrade() else { return };
        for c in checks {
            let transaction_id = c.transaction_id;
            match check_request(&shard, &site, c, opaque.wrapping_add(1)).await {
                Ok(Some(frame)) => {
                    opaque = opaque.wrapping_add(1);
                    if writer.send(codec::encode(&frame, ty)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {} // its topic was deleted: rolled back after its checks
                Err((_, why)) => tracing::warn!(
                    %group,
                    transaction_id,
                    "RocketMQ front: cannot ask about a half: {why}"
                ),
            }
        }
    }
}

/// The CHECK_TRANSACTION_STATE request for a due half (`None` when its topic is gone).
async fn check_request<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    site: &FrontSite,
    c: TransactionCheck,
    opaque: i32,
) -> Result<Option<RemotingCommand>, (i32, String)> {
    if c.topic.is_empty() {
        return Ok(None);
    }
    let topic_id = topic_id_of(shard, &c.topic).await?;
    let Some(mut m) = half_message(&c) else {
        return Err((response::SYSTEM_ERROR, "the half's batch holds no record".into()));
    };
    m.properties.push((property::TRAN_MSG.as_bytes().into(), b"true"[..].into()));
    let packed =
        stored::pack_position(topic_id, c.queue_id, c.transaction_id).ok_or_else(|| {
            (
                response::SYSTEM_ERROR,
                format!(
                    "topic id {topic_id}, queue {} or transaction {} is past what a commit-log \
                 offset can carry",
                    c.queue_id, c.transaction_id
                ),
            )
        })?;
    let offset_id = stored::offset_message_id(site.store_host, packed);
    let uniq = m
        .property(property::UNIQ_KEY.as_bytes())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| offset_id.clone());
    let mut req = RemotingCommand::request(request::CHECK_TRANSACTION_STATE, opaque);
    req.flag = codec::FLAG_ONEWAY;
    req.set_field("tranStateTableOffset", c.transaction_id);
    req.set_field("commitLogOffset", packed);
    req.set_field("msgId", &uniq);
    req.set_field("transactionId", &uniq);
    req.set_field("offsetMsgId", &offset_id);
    translate::encode_consumed(
        &c.topic,
        &m,
        StoreSite { topic_id, store_host: site.store_host },
        &mut req.body,
    )
    .map_err(|e| (response::SYSTEM_ERROR, e.to_string()))?;
    Ok(Some(req))
}

/// The (first) message of a half's batch, placed at its queue with the transaction id as its
/// offset (what the check's header says).
fn half_message(c: &TransactionCheck) -> Option<ConsumedMessage> {
    let view = BatchView::parse(&c.batch, c.batch.len()).ok()?;
    let store_ms = view.header.stamp.store_timestamp_ms;
    let r = view.records().next()?.ok()?;
    let store_ms = if store_ms > 0 { store_ms } else { r.timestamp_ms };
    let mut m = ConsumedMessage::copied(&r, crate::protocol::MessageId::default(), store_ms);
    m.queue_id = c.queue_id;
    m.offset = c.transaction_id;
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(props: &[(&str, &str)]) -> RmqMessage {
        RmqMessage {
            properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn halves_are_recognised_by_property_or_sys_flag() {
        assert!(is_half(&msg(&[("TRAN_MSG", "true")]), 0));
        assert!(is_half(&msg(&[("TRAN_MSG", "TRUE")]), 0));
        assert!(is_half(&msg(&[]), txn_flag::PREPARED | 1));
        assert!(!is_half(&msg(&[("TRAN_MSG", "false")]), 0));
        assert!(!is_half(&msg(&[]), txn_flag::COMMIT));
    }

    #[test]
    fn a_half_is_stored_without_tran_msg_and_with_its_group() {
        let m = prepare(&msg(&[("TRAN_MSG", "true"), ("KEYS", "k")]), "pg");
        assert_eq!(m.property("TRAN_MSG"), None);
        assert_eq!(m.property("PGROUP"), Some("pg"));
        assert_eq!(m.property("KEYS"), Some("k"));
        let m = prepare(&msg(&[("PGROUP", "own")]), "header");
        assert_eq!(m.property("PGROUP"), Some("own"), "the message's own group wins");
        let m = prepare(&msg(&[("PGROUP", "")]), "header");
        assert_eq!(m.properties, vec![("PGROUP".to_string(), "header".to_string())]);
    }

    fn end_req(fields: &[(&str, &str)]) -> RemotingCommand {
        let mut c = RemotingCommand::request(request::END_TRANSACTION, 1);
        for (k, v) in fields {
            c.set_field(k, v);
        }
        c
    }

    proptest::proptest! {
        /// Any text in any END_TRANSACTION or QUERY_MESSAGE field is read or refused, never
        /// a panic.
        #[test]
        fn header_readers_never_panic(
            values in proptest::collection::vec(".{0,24}", 8),
            present in proptest::collection::vec(proptest::prelude::any::<bool>(), 8),
        ) {
            let names = [
                "producerGroup", "commitLogOffset", "tranStateTableOffset", "commitOrRollback",
                "fromTransactionCheck", "topic", "key", "maxNum",
            ];
            let mut c = RemotingCommand::request(request::END_TRANSACTION, 1);
            for ((name, value), on) in names.iter().zip(&values).zip(&present) {
                if *on {
                    c.set_field(name, value);
                }
            }
            c.set_field("beginTimestamp", &values[1]);
            c.set_field("endTimestamp", &values[2]);
            let _ = EndHeader::read(&c);
            if let Ok(q) = super::super::query::QueryHeader::read(&c) {
                proptest::prop_assert!(q.max >= 1 && q.max <= super::super::query::MAX_QUERY_MESSAGES);
                proptest::prop_assert!(q.begin_ms <= q.end_ms);
            }
        }
    }

    #[test]
    fn end_headers_read_and_refuse_bad_values() {
        let h = EndHeader::read(&end_req(&[
            ("producerGroup", "pg"),
            ("commitLogOffset", "123"),
            ("tranStateTableOffset", "7"),
            ("commitOrRollback", "8"),
            ("fromTransactionCheck", "true"),
            ("msgId", "X"),
            ("transactionId", "X"),
        ]))
        .unwrap();
        assert_eq!(
            h,
            EndHeader {
                producer_group: "pg".into(),
                commit_log_offset: 123,
                tran_state_table_offset: Some(7),
                action: Some(EndAction::Commit),
                from_check: true,
            }
        );
        let base = [("producerGroup", "pg"), ("commitLogOffset", "1")];
        let with = |v: &str| {
            let mut f = base.to_vec();
            f.push(("commitOrRollback", v));
            EndHeader::read(&end_req(&f))
        };
        assert_eq!(with("12").unwrap().action, Some(EndAction::Rollback));
        assert_eq!(with("0").unwrap().action, None);
        assert!(with("4").unwrap_err().1.contains("commitOrRollback"));
        assert!(with("x").is_err());
        assert!(EndHeader::read(&end_req(&base)).unwrap_err().1.contains("commitOrRollback"));
        let neg = end_req(&[
            ("producerGroup", "pg"),
            ("commitLogOffset", "-1"),
            ("commitOrRollback", "8"),
        ]);
        assert!(EndHeader::read(&neg).unwrap_err().1.contains("negative"));
    }
}
