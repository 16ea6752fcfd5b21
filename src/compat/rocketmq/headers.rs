//! The custom headers (a command's `extFields`) of the requests the front serves, read into
//! typed structs. Every field is text on the wire; a missing or malformed required field is an
//! error that names it, answered to the client, never a panic.

use std::str::FromStr;

use super::codec::RemotingCommand;

/// A header that does not read: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request header field {field}: {why}")]
pub struct HeaderError {
    pub field: &'static str,
    pub why: String,
}

fn required<'a>(cmd: &'a RemotingCommand, field: &'static str) -> Result<&'a str, HeaderError> {
    cmd.field(field).ok_or(HeaderError { field, why: "missing".into() })
}

fn number<T: FromStr>(cmd: &RemotingCommand, field: &'static str) -> Result<T, HeaderError> {
    let text = required(cmd, field)?;
    text.trim().parse().map_err(|_| HeaderError { field, why: format!("{text:?} is not a number") })
}

fn number_or<T: FromStr>(
    cmd: &RemotingCommand,
    field: &'static str,
    default: T,
) -> Result<T, HeaderError> {
    match cmd.field(field) {
        None => Ok(default),
        Some(_) => number(cmd, field),
    }
}

/// A boolean field: Java clients write `true`, the C++ client `1`.
fn flag_or(cmd: &RemotingCommand, field: &'static str) -> bool {
    cmd.field(field).is_some_and(|v| matches!(v.trim(), "true" | "1"))
}

/// SEND_MESSAGE (`SendMessageRequestHeader`, long names) and SEND_MESSAGE_V2 /
/// SEND_BATCH_MESSAGE (`SendMessageRequestHeaderV2`, one-letter names); read by which names
/// are present, as clients send either under either code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendHeader {
    pub producer_group: String,
    pub topic: String,
    pub default_topic_queue_nums: u32,
    /// Negative: the broker chooses (RocketMQ clients always choose).
    pub queue_id: i32,
    pub sys_flag: i32,
    pub born_timestamp_ms: i64,
    pub flag: i32,
    pub properties: String,
    pub reconsume_times: i32,
    pub batch: bool,
}

impl SendHeader {
    pub fn read(cmd: &RemotingCommand) -> Result<SendHeader, HeaderError> {
        if cmd.field("b").is_some() {
            Ok(SendHeader {
                producer_group: required(cmd, "a")?.to_owned(),
                topic: required(cmd, "b")?.to_owned(),
                default_topic_queue_nums: number_or(cmd, "d", 4)?,
                queue_id: number(cmd, "e")?,
                sys_flag: number_or(cmd, "f", 0)?,
                born_timestamp_ms: number_or(cmd, "g", 0)?,
                flag: number_or(cmd, "h", 0)?,
                properties: cmd.field("i").unwrap_or_default().to_owned(),
                reconsume_times: number_or(cmd, "j", 0)?,
                batch: flag_or(cmd, "m"),
            })
        } else {
            Ok(SendHeader {
                producer_group: required(cmd, "producerGroup")?.to_owned(),
                topic: required(cmd, "topic")?.to_owned(),
                default_topic_queue_nums: number_or(cmd, "defaultTopicQueueNums", 4)?,
                queue_id: number(cmd, "queueId")?,
                sys_flag: number_or(cmd, "sysFlag", 0)?,
                born_timestamp_ms: number_or(cmd, "bornTimestamp", 0)?,
                flag: number_or(cmd, "flag", 0)?,
                properties: cmd.field("properties").unwrap_or_default().to_owned(),
                reconsume_times: number_or(cmd, "reconsumeTimes", 0)?,
                batch: flag_or(cmd, "batch"),
            })
        }
    }
}

/// PULL_MESSAGE (`PullMessageRequestHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullHeader {
    pub consumer_group: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: i64,
    pub max_msg_nums: u32,
    pub sys_flag: i32,
    pub commit_offset: i64,
    pub suspend_timeout_ms: u64,
    pub subscription: Option<String>,
}

impl PullHeader {
    pub fn read(cmd: &RemotingCommand) -> Result<PullHeader, HeaderError> {
        Ok(PullHeader {
            consumer_group: required(cmd, "consumerGroup")?.to_owned(),
            topic: required(cmd, "topic")?.to_owned(),
            queue_id: number(cmd, "queueId")?,
            queue_offset: number(cmd, "queueOffset")?,
            max_msg_nums: number_or(cmd, "maxMsgNums", 32)?,
            sys_flag: number_or(cmd, "sysFlag", 0)?,
            commit_offset: number_or(cmd, "commitOffset", -1)?,
            suspend_timeout_ms: number_or(cmd, "suspendTimeoutMillis", 0)?,
            subscription: cmd.field("subscription").map(str::to_owned),
        })
    }
}

/// A (topic, queue) header: GET_MIN_OFFSET, GET_MAX_OFFSET, SEARCH_OFFSET_BY_TIMESTAMP (with a
/// timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHeader {
    pub topic: String,
    pub queue_id: u32,
    pub timestamp_ms: Option<i64>,
}

impl QueueHeader {
    pub fn read(cmd: &RemotingCommand) -> Result<QueueHeader, HeaderError> {
        Ok(QueueHeader {
            topic: required(cmd, "topic")?.to_owned(),
            queue_id: number(cmd, "queueId")?,
            timestamp_ms: cmd.field("timestamp").map(|_| number(cmd, "timestamp")).transpose()?,
        })
    }
}

/// QUERY_CONSUMER_OFFSET and UPDATE_CONSUMER_OFFSET (with `commitOffset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOffsetHeader {
    pub consumer_group: String,
    pub topic: String,
    pub queue_id: u32,
    pub commit_offset: Option<i64>,
}

impl ConsumerOffsetHeader {
    pub fn read(cmd: &RemotingCommand) -> Result<ConsumerOffsetHeader, HeaderError> {
        Ok(ConsumerOffsetHeader {
            consumer_group: required(cmd, "consumerGroup")?.to_owned(),
            topic: required(cmd, "topic")?.to_owned(),
            queue_id: number(cmd, "queueId")?,
            commit_offset: cmd
                .field("commitOffset")
                .map(|_| number(cmd, "commitOffset"))
                .transpose()?,
        })
    }
}

/// The `topic` field (GET_ROUTEINFO_BY_TOPIC).
pub fn topic(cmd: &RemotingCommand) -> Result<String, HeaderError> {
    Ok(required(cmd, "topic")?.to_owned())
}

/// The `consumerGroup` field (GET_CONSUMER_LIST_BY_GROUP).
pub fn consumer_group(cmd: &RemotingCommand) -> Result<String, HeaderError> {
    Ok(required(cmd, "consumerGroup")?.to_owned())
}

/// DELETE_SUBSCRIPTIONGROUP: (group name, whether to clean its offsets). `cleanOffset` is
/// absent (false) from older clients.
pub fn delete_group(cmd: &RemotingCommand) -> Result<(String, bool), HeaderError> {
    Ok((required(cmd, "groupName")?.to_owned(), flag_or(cmd, "cleanOffset")))
}

/// UNREGISTER_CLIENT: (client id, consumer group if any).
pub fn unregister(cmd: &RemotingCommand) -> Result<(String, Option<String>), HeaderError> {
    let group = cmd.field("consumerGroup").filter(|g| !g.is_empty()).map(str::to_owned);
    Ok((required(cmd, "clientID")?.to_owned(), group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(fields: &[(&str, &str)]) -> RemotingCommand {
        let mut c = RemotingCommand::request(0, 1);
        for (k, v) in fields {
            c.set_field(k, v);
        }
        c
    }

    #[test]
    fn send_headers_read_in_both_spellings() {
        let v2 = cmd(&[
            ("a", "pg"),
            ("b", "T"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "3"),
            ("f", "1"),
            ("g", "1700000000000"),
            ("h", "0"),
            ("i", "TAGS\u{1}A\u{2}"),
            ("j", "0"),
            ("k", "0"),
            ("m", "1"),
        ]);
        let h = SendHeader::read(&v2).unwrap();
        assert_eq!(h.topic, "T");
        assert_eq!(h.queue_id, 3);
        assert_eq!(h.sys_flag, 1);
        assert_eq!(h.born_timestamp_ms, 1_700_000_000_000);
        assert!(h.batch);
        let v1 = cmd(&[
            ("producerGroup", "pg"),
            ("topic", "T"),
            ("queueId", "3"),
            ("flag", "5"),
            ("batch", "false"),
        ]);
        let h1 = SendHeader::read(&v1).unwrap();
        assert_eq!((h1.topic.as_str(), h1.queue_id, h1.flag, h1.batch), ("T", 3, 5, false));
        let bad = cmd(&[("a", "pg"), ("b", "T"), ("e", "three")]);
        let e = SendHeader::read(&bad).unwrap_err();
        assert_eq!(e.field, "e");
        assert!(SendHeader::read(&cmd(&[("topic", "T")])).is_err(), "no producer group");
    }

    #[test]
    fn pull_and_offset_headers_read() {
        let p = PullHeader::read(&cmd(&[
            ("consumerGroup", "g"),
            ("topic", "T"),
            ("queueId", "1"),
            ("queueOffset", "10"),
            ("maxMsgNums", "32"),
            ("sysFlag", "7"),
            ("commitOffset", "9"),
            ("suspendTimeoutMillis", "20000"),
            ("subscription", "A || B"),
            ("subVersion", "0"),
        ]))
        .unwrap();
        assert_eq!(p.queue_offset, 10);
        assert_eq!(p.commit_offset, 9);
        assert_eq!(p.suspend_timeout_ms, 20_000);
        assert_eq!(p.subscription.as_deref(), Some("A || B"));
        let q = QueueHeader::read(&cmd(&[("topic", "T"), ("queueId", "2"), ("timestamp", "5")]))
            .unwrap();
        assert_eq!(q.timestamp_ms, Some(5));
        assert!(QueueHeader::read(&cmd(&[("topic", "T"), ("queueId", "-1")])).is_err());
        let o = ConsumerOffsetHeader::read(&cmd(&[
            ("consumerGroup", "g"),
            ("topic", "T"),
            ("queueId", "0"),
            ("commitOffset", "12"),
        ]))
        .unwrap();
        assert_eq!(o.commit_offset, Some(12));
    }
}
