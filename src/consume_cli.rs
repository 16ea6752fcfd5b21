//! `ringmq consume`: prints a topic's messages (`queue offset key tag body`, tab-separated,
//! one per line) from an offset, once or following new ones; `--group` consumes through a
//! consumer group instead (`group_consume`).

use std::io::Write;
use std::time::Duration;

use ringmq::client::{Client, ClientError};
use ringmq::protocol::{ErrorCode, ErrorDetail};

use super::err;

/// One consumed message as `ringmq consume` prints it: `queue offset key tag body`,
/// tab-separated.
pub(crate) fn print_message(out: &mut impl Write, m: &ringmq::client::ConsumedMessage) {
    let _ = writeln!(
        out,
        "{}\t{}\t{}\t{}\t{}",
        m.queue_id,
        m.offset,
        String::from_utf8_lossy(&m.key),
        String::from_utf8_lossy(&m.tag),
        String::from_utf8_lossy(&m.body)
    );
}

pub(crate) struct ConsumeOptions {
    pub(crate) from_offset: u64,
    pub(crate) follow: bool,
    pub(crate) max_messages: Option<u64>,
    pub(crate) tags: Vec<String>,
    pub(crate) skip_corrupt: bool,
}

pub(crate) fn consume(
    broker: &str,
    topic: &str,
    queue: Option<u32>,
    opts: ConsumeOptions,
) -> Result<(), String> {
    let ConsumeOptions { from_offset, follow, max_messages, tags, skip_corrupt } = opts;
    let client = Client::connect(broker).map_err(err)?;
    let route = client.admin().route(topic).map_err(err)?;
    let queues: Vec<u32> = match queue {
        Some(q) if q >= route.queue_count() => {
            return Err(format!("topic {topic} has {} queues, not queue {q}", route.queue_count()))
        }
        Some(q) => vec![q],
        None => (0..route.queue_count()).collect(),
    };
    let mut consumer = client.consumer();
    consumer.tags = tags.into_iter().map(String::into_bytes).collect();
    if follow {
        // Report trouble soon; the loop below keeps retrying.
        consumer.retry_timeout = Duration::from_millis(500);
    }
    let mut offsets: Vec<u64> = vec![from_offset; queues.len()];
    let mut done = vec![false; queues.len()];
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    // In follow mode, park briefly on each queue in turn.
    let wait = if follow { Duration::from_millis(200) } else { Duration::ZERO };
    // Follow mode outlives broker restarts: a pull that still fails after its own retries
    // (see PullConsumer::retry_timeout) is tried again, with a notice, instead of exiting.
    let mut lost: Option<String> = None;
    loop {
        let mut progressed = false;
        for (i, &q) in queues.iter().enumerate() {
            if done[i] {
                continue;
            }
            let r = match consumer.pull(topic, q, offsets[i], wait) {
                Ok(r) => r,
                Err(ClientError::Broker {
                    code,
                    detail: ErrorDetail::OffsetRange { min, next },
                    ..
                }) if code == ErrorCode::OFFSET_OUT_OF_RANGE as u16 => {
                    let to = if offsets[i] < min { min } else { next };
                    eprintln!(
                        "ringmq: queue {q}: offset {} is outside [{min}, {next}); starting at {to}",
                        offsets[i]
                    );
                    offsets[i] = to;
                    progressed = true;
                    continue;
                }
                Err(ClientError::CorruptData { first_offset, next_offset, reason, .. })
                    if skip_corrupt =>
                {
                    eprintln!(
                        "ringmq: queue {q}: skipped the damaged batch at offsets \
                         [{first_offset}, {next_offset}) (--skip-corrupt): {reason}"
                    );
                    offsets[i] = next_offset;
                    progressed = true;
                    continue;
                }
                Err(e) if follow && e.is_retriable() => {
                    if lost.is_none() {
                        eprintln!("ringmq: lost the broker ({e}); reconnecting");
                    }
                    lost = Some(e.to_string());
                    continue;
                }
                Err(e) => return Err(err(e)),
            };
            if lost.take().is_some() {
                eprintln!("ringmq: reconnected");
            }
            for m in &r.messages {
                print_message(&mut out, m);
                printed += 1;
                if max_messages.is_some_and(|n| printed >= n) {
                    let _ = out.flush();
                    return Ok(());
                }
            }
            if r.next_offset > offsets[i] {
                progressed = true;
            }
            offsets[i] = r.next_offset;
            if !follow && r.next_offset >= r.max_offset {
                done[i] = true;
            }
        }
        let _ = out.flush();
        if !follow && done.iter().all(|d| *d) {
            return Ok(());
        }
        if !follow && !progressed {
            return Ok(());
        }
    }
}
