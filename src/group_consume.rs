//! `ringmq consume --group G`: the CLI as a member of a consumer group (clustering).
//!
//! It joins the group with one subscription (the topic, with the `--tag`s as a tag
//! expression), takes the queues the default allocation (averagely) gives it among the group's
//! members, starts each at the group's committed offset (else at `--from-offset`, clamped to
//! what the queue stores), prints, and commits what it printed about every second and at the
//! end. Each heartbeat (every second) tells whether the group changed; then it commits, asks
//! for the members and takes its new share. A reset of the group's offsets shows up the same
//! way (its commits from before are refused as stale, and it re-reads the offsets). Without
//! `--follow` it stops once its queues are drained; with it, on SIGINT/SIGTERM. Either way it
//! commits and leaves the group, so the others take its queues at once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq::client::{Client, ClientError, GroupClient};
use ringmq::group::allocate::{AllocMember, AllocQueue, Strategy};
use ringmq::protocol::{ErrorCode, ErrorDetail};

use super::{err, ConsumeOptions};

/// How often the member heartbeats (and learns of a changed group) and commits.
const ROUND: Duration = Duration::from_secs(1);

struct Member<'a> {
    groups: GroupClient,
    group: &'a str,
    topic: &'a str,
    client_id: String,
    subscriptions: Vec<(String, String)>,
    queue_count: u32,
    from_offset: u64,
    version: u64,
    /// Owned queues and the next offset to print.
    owned: BTreeMap<u32, u64>,
    /// Offsets printed but not committed yet.
    dirty: bool,
}

impl Member<'_> {
    /// Takes this member's share of the queues at the group's current version.
    fn rebalance(&mut self) -> Result<(), String> {
        let (version, members) = self.groups.members(self.group).map_err(err)?;
        let subscribers: Vec<AllocMember> = members
            .iter()
            .filter(|m| m.subscriptions.iter().any(|(t, _)| t == self.topic))
            .map(|m| AllocMember { client_id: m.client_id.clone(), room: None })
            .collect();
        let queues: Vec<AllocQueue> =
            (0..self.queue_count).map(|q| AllocQueue::new(self.topic, q)).collect();
        let mine = Strategy::Averagely.allocate(&self.client_id, &subscribers, &queues);
        let asked: Vec<(String, u32)> =
            mine.iter().map(|q| (self.topic.to_owned(), q.queue_id)).collect();
        let committed = self.groups.committed(self.group, &asked).map_err(err)?;
        self.owned =
            committed.into_iter().map(|(_, q, o)| (q, o.unwrap_or(self.from_offset))).collect();
        self.version = version;
        Ok(())
    }

    /// Commits the printed offsets of the owned queues. A commit refused as stale (the
    /// group's offsets were reset meanwhile) is dropped: the reset wins.
    fn commit(&mut self) -> Result<(), String> {
        if !self.dirty {
            return Ok(());
        }
        let offsets: Vec<(String, u32, u64)> =
            self.owned.iter().map(|(&q, &o)| (self.topic.to_owned(), q, o)).collect();
        match self.groups.commit(self.group, self.version, &offsets) {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::STALE_GENERATION) => {
                eprintln!("ringmq: the group's offsets were reset; continuing from them");
            }
            Err(e) => return Err(err(e)),
        }
        self.dirty = false;
        Ok(())
    }

    /// Heartbeats; on a changed group, commits and takes the new share.
    fn heartbeat(&mut self) -> Result<(), String> {
        let (version, _) = self
            .groups
            .heartbeat(self.group, &self.client_id, "", &self.subscriptions)
            .map_err(err)?;
        if version != self.version {
            self.commit()?;
            self.rebalance()?;
        }
        Ok(())
    }
}

pub fn run(broker: &str, topic: &str, group: &str, opts: ConsumeOptions) -> Result<(), String> {
    let ConsumeOptions { from_offset, follow, max_messages, tags, skip_corrupt } = opts;
    let client = Client::connect(broker).map_err(err)?;
    let route = client.admin().route(topic).map_err(err)?;
    let stop = Arc::new(AtomicBool::new(false));
    if follow {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, stop.clone())
                .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let expression = if tags.is_empty() { "*".to_owned() } else { tags.join(" || ") };
    let mut m = Member {
        groups: client.groups(),
        group,
        topic,
        client_id: format!("ringmq-cli-{}-{nanos:08x}", std::process::id()),
        subscriptions: vec![(topic.to_owned(), expression)],
        queue_count: route.queue_count(),
        from_offset,
        version: 0,
        owned: BTreeMap::new(),
        dirty: false,
    };
    m.heartbeat()?;
    let mut consumer = client.consumer();
    consumer.tags = tags.into_iter().map(String::into_bytes).collect();
    let wait = if follow { Duration::from_millis(200) } else { Duration::ZERO };
    let mut drained = BTreeSet::new();
    let mut printed = 0u64;
    let mut last_round = Instant::now();
    let mut out = std::io::stdout().lock();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if last_round.elapsed() >= ROUND {
            last_round = Instant::now();
            let round = m.heartbeat().and_then(|()| m.commit());
            if let Err(e) = round {
                break Err(e);
            }
        }
        let queues: Vec<u32> = m.owned.keys().copied().collect();
        if queues.is_empty() && !follow {
            break Ok(());
        }
        if queues.is_empty() {
            std::thread::sleep(wait);
        }
        let (mut full, mut failure) = (false, None);
        for q in queues {
            let Some(&offset) = m.owned.get(&q) else { continue };
            let r = match consumer.pull(topic, q, offset, wait) {
                Ok(r) => r,
                Err(ClientError::Broker {
                    code,
                    detail: ErrorDetail::OffsetRange { min, next },
                    ..
                }) if code == ErrorCode::OFFSET_OUT_OF_RANGE as u16 => {
                    m.owned.insert(q, if offset < min { min } else { next });
                    m.dirty = true;
                    continue;
                }
                Err(ClientError::CorruptData { first_offset, next_offset, reason, .. })
                    if skip_corrupt =>
                {
                    eprintln!(
                        "ringmq: queue {q}: skipped the damaged batch at offsets \
                         [{first_offset}, {next_offset}) (--skip-corrupt): {reason}"
                    );
                    m.owned.insert(q, next_offset);
                    m.dirty = true;
                    continue;
                }
                Err(e) if follow && e.is_retriable() => continue,
                Err(e) => {
                    failure = Some(err(e));
                    break;
                }
            };
            for msg in &r.messages {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    msg.queue_id,
                    msg.offset,
                    String::from_utf8_lossy(&msg.key),
                    String::from_utf8_lossy(&msg.tag),
                    String::from_utf8_lossy(&msg.body)
                );
                printed += 1;
                m.owned.insert(q, msg.offset + 1);
                m.dirty = true;
                if max_messages.is_some_and(|n| printed >= n) {
                    full = true;
                    break;
                }
            }
            if full {
                break;
            }
            if r.next_offset > offset {
                m.owned.insert(q, r.next_offset);
                m.dirty = true;
            }
            if r.next_offset >= r.max_offset {
                drained.insert(q);
            } else {
                drained.remove(&q);
            }
        }
        let _ = out.flush();
        if let Some(e) = failure {
            break Err(e);
        }
        if full || (!follow && m.owned.keys().all(|q| drained.contains(q))) {
            break Ok(());
        }
    };
    let _ = out.flush();
    // Commit what was printed and leave, so the others take these queues at once.
    let committed = m.commit();
    let _ = m.groups.leave(group, &m.client_id);
    result.and(committed)
}
