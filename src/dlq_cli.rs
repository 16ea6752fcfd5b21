//! `ringmq dlq list|resend --group G`: a consumer group's dead letters (`%DLQ%<group>`,
//! [`ringmq::schedule::retry`]), which nothing consumes automatically.
//!
//! `list` prints each dead letter as `offset  origin-topic  reconsume-times  key  tag  body`
//! (tab-separated); `resend` sends each to the topic it was first sent to, as a plain message
//! again (the retry properties removed, key, tag, other properties and body kept), and prints
//! the offset to pass as `--from-offset` next time, since the dead-letter topic keeps its
//! messages.

use std::io::Write;
use std::time::Duration;

use clap::Subcommand;
use ringmq::client::{Client, ConsumedMessage, Message, ProducerConfig};
use ringmq::schedule::retry::{
    dlq_topic, PROPERTY_ORIGIN_MESSAGE_ID, PROPERTY_RECONSUME_TIME, PROPERTY_RETRY_TOPIC,
};

use super::err;

#[derive(Subcommand)]
pub enum DlqAction {
    /// Prints the group's dead letters.
    List {
        #[arg(long)]
        group: String,
        #[arg(long, default_value_t = 0)]
        from_offset: u64,
    },
    /// Sends the group's dead letters back to the topics they were first sent to.
    Resend {
        #[arg(long)]
        group: String,
        #[arg(long, default_value_t = 0)]
        from_offset: u64,
        /// Stop after this many messages.
        #[arg(long)]
        max_messages: Option<u64>,
    },
}

pub fn run(broker: &str, action: DlqAction) -> Result<(), String> {
    let client = Client::connect(broker).map_err(err)?;
    match action {
        DlqAction::List { group, from_offset } => {
            let mut out = std::io::stdout().lock();
            each(&client, &group, from_offset, None, |m| {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    m.offset,
                    m.origin_topic().unwrap_or("?"),
                    m.reconsume_times(),
                    String::from_utf8_lossy(&m.key),
                    String::from_utf8_lossy(&m.tag),
                    String::from_utf8_lossy(&m.body)
                );
                Ok(())
            })
            .map(|_| ())
        }
        DlqAction::Resend { group, from_offset, max_messages } => {
            let producer = client.producer(ProducerConfig::default()).map_err(err)?;
            let mut sent = 0u64;
            let next = each(&client, &group, from_offset, max_messages, |m| {
                let Some(topic) = m.origin_topic() else {
                    return Err(format!(
                        "dead letter at offset {} has no {PROPERTY_RETRY_TOPIC} property: its \
                         topic is unknown",
                        m.offset
                    ));
                };
                let ours =
                    [PROPERTY_RETRY_TOPIC, PROPERTY_RECONSUME_TIME, PROPERTY_ORIGIN_MESSAGE_ID];
                let mut copy = Message::new(topic, m.body.to_vec())
                    .with_key(m.key.to_vec())
                    .with_tag(m.tag.to_vec());
                copy.properties = m
                    .properties
                    .iter()
                    .filter(|(k, _)| !ours.iter().any(|o| o.as_bytes() == k.as_ref()))
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                producer.send(copy).map_err(err)?;
                sent += 1;
                Ok(())
            })?;
            println!("resent {sent} dead letters; next time resend --from-offset {next}");
            Ok(())
        }
    }
}

/// Calls `f` for each dead letter of `group` from `from` (at most `max`); returns the offset
/// after the last one handled.
fn each(
    client: &Client,
    group: &str,
    from: u64,
    max: Option<u64>,
    mut f: impl FnMut(&ConsumedMessage) -> Result<(), String>,
) -> Result<u64, String> {
    let topic = dlq_topic(group);
    let consumer = client.consumer();
    let (mut offset, mut done) = (from, 0u64);
    loop {
        let r = consumer.pull(&topic, 0, offset, Duration::ZERO).map_err(err)?;
        if r.messages.is_empty() && offset < r.min_offset {
            offset = r.min_offset;
            continue;
        }
        for m in &r.messages {
            if max.is_some_and(|n| done >= n) {
                return Ok(offset);
            }
            f(m)?;
            done += 1;
            offset = m.offset + 1;
        }
        if r.messages.is_empty() || r.next_offset >= r.max_offset {
            return Ok(offset);
        }
        offset = r.next_offset;
    }
}
