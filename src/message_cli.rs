//! `ringmq message query|get`: finding stored messages by key or by id.
//!
//! A message id is 32 hex digits: the topic id (8), the queue id (8) and the queue offset (16)
//! of the message, as `ringmq produce` prints it (RocketMQ's offset message id, with the
//! storage place named by topic, queue and offset instead of broker address and commit-log
//! offset). `query` prints one line per message, newest first:
//! `id  queue  offset  store-time  key  body` (tab-separated, the body cut to 64 characters);
//! `get` prints the whole message, one field per line.

use clap::Subcommand;
use ringmq::client::{Client, ConsumedMessage};

use super::{err, rfc3339_ms};

/// Body characters a query line shows.
const BODY_PREVIEW_CHARS: usize = 64;

#[derive(Subcommand)]
pub enum MessageAction {
    /// Messages of a topic stored under a key (a word of their key, or the original id of a
    /// retried or dead-lettered copy), newest first, from every shard's key index. The index
    /// follows the log: a message is found about key_index.interval_ms (200 ms) after its send
    /// was acknowledged.
    Query {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        key: String,
        /// Only messages stored at or after this time (RFC 3339, e.g. 2026-12-01T10:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Only messages stored at or before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// At most this many messages.
        #[arg(long, default_value_t = 32)]
        max: u32,
    },
    /// The message with this id: 32 hex digits, topic id (8) + queue id (8) + queue offset
    /// (16), as `ringmq produce` and `ringmq message query` print it.
    Get { id: String },
    /// A message's life from the trace topic: sent (by which host, status, latency), stored
    /// (queue, offset, store time), consumed (by which group and consumer, with what status,
    /// how long). Needs tracing on in its producer and consumers (ProducerConfig::trace,
    /// PushConsumerConfig::trace).
    Trace {
        id: String,
        /// Where the clients recorded their traces.
        #[arg(long, default_value = ringmq::client::trace::DEFAULT_TRACE_TOPIC)]
        trace_topic: String,
    },
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn store_time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

fn preview(body: &[u8]) -> String {
    let s = text(body).replace(['\t', '\n', '\r'], " ");
    match s.char_indices().nth(BODY_PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s,
    }
}

pub fn run(broker: &str, action: MessageAction) -> Result<(), String> {
    let client = Client::connect(broker).map_err(err)?;
    match action {
        MessageAction::Query { topic, key, from, to, max } => {
            let from_ms = from.as_deref().map(|t| rfc3339_ms("--from", t)).transpose()?;
            let to_ms = to.as_deref().map(|t| rfc3339_ms("--to", t)).transpose()?;
            let (from_ms, to_ms) = (from_ms.unwrap_or(0), to_ms.unwrap_or(i64::MAX));
            if from_ms > to_ms {
                return Err("--from is after --to: the time range is empty".into());
            }
            if key.is_empty() || key.contains(' ') {
                return Err("--key names one key, without spaces (a message is indexed under \
                            each space-separated word of its key)"
                    .into());
            }
            let found = client
                .query_by_key(&topic, key.as_bytes(), from_ms, to_ms, max.max(1))
                .map_err(err)?;
            for m in &found.messages {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    m.message_id,
                    m.queue_id,
                    m.offset,
                    store_time(m.store_timestamp_ms),
                    text(&m.key),
                    preview(&m.body)
                );
            }
            if found.messages.is_empty() {
                eprintln!("no message of topic {topic} has key {key:?} in that time range");
            }
            if found.truncated {
                eprintln!("the search stopped at its bound: older messages may have this key");
            }
            if found.unindexed_bytes > 0 {
                eprintln!(
                    "{} bytes of the newest log were not indexed yet: messages sent in the last \
                     moments may be missing",
                    found.unindexed_bytes
                );
            }
            Ok(())
        }
        MessageAction::Get { id } => {
            let (topic, m) = client.get_message(&id).map_err(err)?;
            print_message(&topic, &m);
            Ok(())
        }
        MessageAction::Trace { id, trace_topic } => trace(&client, &id, &trace_topic),
    }
}

/// Prints `message`'s life: one line per event, oldest first, tab-separated:
/// `time  sent|consumed  ...` (see the help).
fn trace(client: &Client, id: &str, trace_topic: &str) -> Result<(), String> {
    use ringmq::client::trace::TraceEvent;
    let events = client.trace_message(id, trace_topic, 1000).map_err(err)?;
    // What the broker holds now, if it still does (retention may have removed it).
    match client.get_message(id) {
        Ok((topic, m)) => println!(
            "{}\tstored\ttopic={topic}\tqueue={}\toffset={}\tkey={}",
            store_time(m.store_timestamp_ms),
            m.queue_id,
            m.offset,
            text(&m.key)
        ),
        Err(e) => eprintln!("the message itself: {e}"),
    }
    if events.is_empty() {
        return Err(format!(
            "no trace of message {id} in {trace_topic}: was tracing on for its producer and \
             consumers? (the trace of a message is findable about 200 ms after it was recorded)"
        ));
    }
    for e in &events {
        match e {
            TraceEvent::Send {
                time_ms,
                host,
                client,
                status,
                latency_ms,
                topic,
                queue_id,
                offset,
                store_time_ms,
                ..
            } => println!(
                "{}\tsent\thost={host}\tclient={client}\tstatus={status}\tlatency_ms={latency_ms}\t\
                 topic={topic}\tqueue={queue_id}\toffset={offset}\tstored={}",
                store_time(*time_ms),
                store_time(*store_time_ms)
            ),
            TraceEvent::Consume {
                time_ms,
                host,
                group,
                consumer_id,
                status,
                latency_ms,
                topic,
                queue_id,
                offset,
                reconsume_times,
                ..
            } => println!(
                "{}\tconsumed\tgroup={group}\tconsumer={consumer_id}\thost={host}\t\
                 status={status}\tlatency_ms={latency_ms}\ttopic={topic}\tqueue={queue_id}\t\
                 offset={offset}\treconsume_times={reconsume_times}",
                store_time(*time_ms)
            ),
        }
    }
    Ok(())
}

fn print_message(topic: &str, m: &ConsumedMessage) {
    println!("id\t{}", m.message_id);
    println!("topic\t{topic}");
    println!("queue\t{}", m.queue_id);
    println!("offset\t{}", m.offset);
    println!("born\t{}", store_time(m.timestamp_ms));
    println!("stored\t{}", store_time(m.store_timestamp_ms));
    println!("key\t{}", text(&m.key));
    println!("tag\t{}", text(&m.tag));
    for (name, value) in &m.properties {
        println!("property\t{}={}", text(name), text(value));
    }
    println!("body\t{}", text(&m.body));
}
