//! The push consumer's control thread: heartbeats, rebalancing, taking and giving up queues
//! under the group's locks, lock renewal and commits (see the parent module).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    lock, ConsumeFrom, ConsumeMode, FetchCommand, MessageModel, QueueKey, QueueState, Shared,
};
use crate::client::error::Result;
use crate::client::group::GroupClient;
use crate::client::process_queue::ProcessQueue;
use crate::client::AdminClient;
use crate::group::allocate::{AllocMember, AllocQueue};
use crate::group::membership::TagFilter;
use crate::protocol::ErrorCode;

/// The first retry of a queue lock another member holds, after a rebalance; each further
/// one waits twice as long, up to [`TAKE_MAX_RETRY`] (every 100 ms before round 38: a
/// rebalance paused a moved queue about 100 ms).
const TAKE_FIRST_RETRY: Duration = Duration::from_millis(5);
const TAKE_MAX_RETRY: Duration = Duration::from_millis(100);

/// The control thread's state.
pub(super) struct Control {
    s: Arc<Shared>,
    groups: GroupClient,
    admin: AdminClient,
    owned: BTreeMap<QueueKey, Arc<QueueState>>,
    /// Queues this member should own but whose lock it does not have yet.
    pending: BTreeSet<QueueKey>,
    version: u64,
    broadcast_offsets: BTreeMap<String, u64>,
}

impl Control {
    pub(super) fn new(s: Arc<Shared>) -> Self {
        // Separate from the fetch thread's connections: a heartbeat never waits behind parked
        // fetches.
        let control = s.client.detached();
        let (groups, admin) = (control.groups(), control.admin());
        let broadcast_offsets = match &s.config.model {
            MessageModel::Broadcasting { offset_file } => std::fs::read(offset_file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            MessageModel::Clustering => BTreeMap::new(),
        };
        Control {
            s,
            groups,
            admin,
            owned: BTreeMap::new(),
            pending: BTreeSet::new(),
            version: 0,
            broadcast_offsets,
        }
    }

    fn clustering(&self) -> bool {
        self.s.config.model == MessageModel::Clustering
    }

    pub(super) fn run(mut self) {
        let c = self.s.config.clone();
        let now = Instant::now();
        let (mut next_heartbeat, mut next_commit, mut next_renew, mut next_take) =
            (now, now, now, now);
        // Queues whose lock another member still holds are asked for again soon after a
        // rebalance (that member lets go within milliseconds of seeing it), then less often.
        let mut take_backoff = TAKE_FIRST_RETRY;
        while !self.s.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_heartbeat || self.s.changed.swap(false, Ordering::Relaxed) {
                next_heartbeat = now + c.heartbeat_interval;
                let hb = self.groups.heartbeat(&c.group, &c.client_id, &c.room, &c.subscriptions);
                if let Ok(ack) = &hb {
                    *lock(&self.s.session_until) = now + ack.session_timeout * 2 / 3;
                }
                match hb.map(|ack| ack.version) {
                    Ok(v) if v != self.version => {
                        take_backoff = TAKE_FIRST_RETRY;
                        next_take = now + take_backoff;
                        if let Err(e) = self.rebalance() {
                            tracing::warn!(group = %c.group, "rebalance failed, retrying: {e}");
                            next_heartbeat = now + Duration::from_millis(200);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(group = %c.group, "heartbeat failed: {e}");
                        next_heartbeat = now + Duration::from_millis(500);
                    }
                }
            }
            if !self.pending.is_empty() && now >= next_take {
                take_backoff = (take_backoff * 2).min(TAKE_MAX_RETRY);
                next_take = now + take_backoff;
                if let Err(e) = self.take_pending() {
                    tracing::debug!(group = %c.group, "taking queues: {e}");
                }
            }
            if self.clustering() && now >= next_renew {
                next_renew = now + c.lock_lease / 3;
                self.renew();
            }
            if now >= next_commit {
                next_commit = now + c.commit_interval;
                self.commit_all();
            }
            let all_caught_up = self.pending.is_empty()
                && self.version != 0
                && self.s.fetched_all.load(Ordering::SeqCst)
                && self.owned.values().all(|q| {
                    q.running.load(Ordering::SeqCst) == 0 && lock(&q.progress).unfinished() == 0
                });
            self.s.caught_up.store(all_caught_up, Ordering::Relaxed);
            let mut nap = Duration::from_millis(50);
            if !self.pending.is_empty() {
                nap = nap.min(next_take.saturating_duration_since(Instant::now()));
            }
            self.s.sleep(nap);
        }
        // Shutdown: give every queue up with a commit, then leave.
        let all: Vec<QueueKey> = self.owned.keys().cloned().collect();
        self.give_up(&all, true);
        self.save_broadcast_offsets();
        let _ = self.groups.leave(&c.group, &c.client_id);
        self.s.fetch_done.store(true, Ordering::SeqCst);
    }

    /// Takes this member's share at the group's current version.
    fn rebalance(&mut self) -> Result<()> {
        let c = self.s.config.clone();
        let (version, members) = self.groups.members(&c.group)?;
        let mut wanted = BTreeSet::new();
        for (topic, _) in &c.subscriptions {
            let count = self.admin.route(topic)?.queue_count();
            let queues: Vec<AllocQueue> =
                (0..count).map(|q| AllocQueue::new(topic.clone(), q)).collect();
            let mine = if self.clustering() {
                let subscribers: Vec<AllocMember> = members
                    .iter()
                    .filter(|m| m.subscriptions.iter().any(|(t, _)| t == topic))
                    .map(|m| AllocMember {
                        client_id: m.client_id.clone(),
                        room: (!m.room.is_empty()).then(|| m.room.clone()),
                    })
                    .collect();
                c.strategy.allocate(&c.client_id, &subscribers, &queues)
            } else {
                queues
            };
            wanted.extend(mine.into_iter().map(|q| (q.topic, q.queue_id)));
        }
        let removed: Vec<QueueKey> =
            self.owned.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        self.give_up(&removed, true);
        self.pending.retain(|k| wanted.contains(k));
        for k in wanted {
            if !self.owned.contains_key(&k) {
                self.pending.insert(k);
            }
        }
        self.version = version;
        self.s.version.store(version, Ordering::Relaxed);
        tracing::debug!(group = %c.group, version, owned = self.owned.len(), pending = self.pending.len(), "rebalanced");
        self.take_pending()
    }

    /// Starts the pending queues this member can lock (all of them in broadcasting).
    fn take_pending(&mut self) -> Result<()> {
        let c = self.s.config.clone();
        let asked: Vec<QueueKey> = self.pending.iter().cloned().collect();
        if asked.is_empty() {
            return Ok(());
        }
        let granted = if self.clustering() {
            let answer = self.groups.lock(&c.group, &c.client_id, c.lock_lease, &asked)?;
            // The queues asked for, once each: a queue read for anything else would be one
            // nobody owns, so nobody stops reading it.
            let granted: BTreeSet<QueueKey> =
                answer.iter().filter(|k| self.pending.contains(*k)).cloned().collect();
            if granted.len() != answer.len() {
                tracing::warn!(
                    group = %c.group,
                    "the coordinator granted queue locks not asked for (or twice); ignoring those"
                );
            }
            granted.into_iter().collect()
        } else {
            asked
        };
        if granted.is_empty() {
            return Ok(());
        }
        let committed: HashMap<QueueKey, u64> = if self.clustering() {
            self.groups
                .committed(&c.group, &granted)?
                .into_iter()
                .filter_map(|(t, q, o)| o.map(|o| ((t, q), o)))
                .collect()
        } else {
            granted
                .iter()
                .filter_map(|(t, q)| {
                    self.broadcast_offsets.get(&format!("{t}:{q}")).map(|o| ((t.clone(), *q), *o))
                })
                .collect()
        };
        let lease_end = Instant::now() + c.lock_lease * 2 / 3;
        let mut started = Vec::new();
        let mut failed = Ok(());
        let max = c.max_unfinished_per_queue;
        for key in granted {
            // Without a commit, the first fetch finds the first or last offset (no lookup per
            // queue: a member may take thousands); a time needs its lookup.
            let progress = match (committed.get(&key), c.consume_from) {
                (Some(&o), _) => Ok(ProcessQueue::new(o, max)),
                (None, ConsumeFrom::FirstOffset) => Ok(ProcessQueue::unresolved(0, max)),
                (None, ConsumeFrom::LastOffset) => Ok(ProcessQueue::unresolved(u64::MAX, max)),
                (None, ConsumeFrom::Timestamp(ms)) => self
                    .admin
                    .offset_for_timestamp(&key.0, key.1, ms)
                    .map(|o| ProcessQueue::new(o, max)),
            };
            let progress = match progress {
                Ok(p) if matches!(c.mode, ConsumeMode::Concurrent { .. }) => {
                    p.with_max_span(c.max_span_per_queue.max(max as u64))
                }
                Ok(p) => p,
                Err(e) => {
                    // This queue and the rest stay pending; those started so far are read.
                    failed = Err(e);
                    break;
                }
            };
            let state = Arc::new(QueueState {
                topic: key.0.clone(),
                queue_id: key.1,
                progress: Mutex::new(progress),
                stop: AtomicBool::new(false),
                lost: AtomicBool::new(false),
                running: AtomicUsize::new(0),
                lock_until: Mutex::new(lease_end),
                detached: AtomicBool::new(false),
                slot: AtomicUsize::new(usize::MAX),
                orderly: Mutex::new(Default::default()),
            });
            let expression =
                c.subscriptions.iter().find(|(t, _)| *t == key.0).map_or("*", |(_, e)| e.as_str());
            let tags = match TagFilter::parse(expression) {
                Ok(TagFilter::Tags(tags)) => tags.into_iter().map(String::into_bytes).collect(),
                _ => Vec::new(),
            };
            started.push(FetchCommand::Add(state.clone(), tags));
            self.pending.remove(&key);
            self.owned.insert(key, state);
            if started.len() >= 1024 {
                // Time lookups take a round trip each: the first queues are read meanwhile.
                self.s.tell_fetch(std::mem::take(&mut started));
            }
        }
        // All at once: the fetch thread asks for them in one request.
        self.s.tell_fetch(started);
        failed
    }

    /// Stops reading the queues, lets their running batches finish, commits (if `commit` and
    /// the lock was not lost) and unlocks them.
    fn give_up(&mut self, keys: &[QueueKey], commit: bool) {
        // Stop every queue first, then wait for them together.
        let mut stopping = Vec::new();
        for key in keys {
            let Some(q) = self.owned.remove(key) else { continue };
            q.stop.store(true, Ordering::SeqCst);
            stopping.push((key.clone(), q));
        }
        self.s.tell_fetch(stopping.iter().map(|(_, q)| FetchCommand::Remove(q.clone())));
        let mut gone = Vec::new();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        for (key, q) in stopping {
            // The fetch thread hands nothing more over once it let go of the queue; then
            // every batch handed over is counted in `running`.
            while !(q.detached.load(Ordering::SeqCst) && q.running.load(Ordering::SeqCst) == 0)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            gone.push((key, q));
        }
        if gone.is_empty() {
            return;
        }
        tracing::debug!(group = %self.s.config.group, queues = gone.len(), took = ?started.elapsed(), "stopped queues");
        let c = self.s.config.clone();
        if commit {
            let offsets: Vec<(String, u32, u64)> = gone
                .iter()
                .filter(|(_, st)| !st.lost.load(Ordering::Relaxed))
                .filter_map(|((t, q), st)| {
                    lock(&st.progress).to_commit().map(|o| (t.clone(), *q, o))
                })
                .collect();
            if self.clustering() {
                if !offsets.is_empty() {
                    if let Err(e) = self.groups.commit(&c.group, self.version, &offsets) {
                        tracing::warn!(group = %c.group, "commit while giving queues up failed: {e}");
                    }
                }
            } else {
                for (t, q, o) in offsets {
                    self.broadcast_offsets.insert(format!("{t}:{q}"), o);
                }
            }
        }
        if self.clustering() {
            let keys: Vec<QueueKey> = gone.into_iter().map(|(k, _)| k).collect();
            let _ = self.groups.unlock(&c.group, &c.client_id, &keys);
        }
    }

    /// Renews the locks of the owned queues; a queue whose lock is gone stops without a commit
    /// (another member may have it) and is asked for again.
    fn renew(&mut self) {
        let c = self.s.config.clone();
        let keys: Vec<QueueKey> = self.owned.keys().cloned().collect();
        if keys.is_empty() {
            return;
        }
        let asked_at = Instant::now();
        let r = self.groups.lock(&c.group, &c.client_id, c.lock_lease, &keys);
        let Ok(granted) = r else {
            return; // the broker is unreachable: orderly queues stop at their lease's end
        };
        let granted: BTreeSet<QueueKey> = granted.into_iter().collect();
        let mut lost = Vec::new();
        for (k, q) in &self.owned {
            if granted.contains(k) {
                *lock(&q.lock_until) = asked_at + c.lock_lease * 2 / 3;
            } else {
                q.lost.store(true, Ordering::SeqCst);
                lost.push(k.clone());
            }
        }
        if !lost.is_empty() {
            self.give_up(&lost, false);
            self.pending.extend(lost);
        }
    }

    fn commit_all(&mut self) {
        let c = self.s.config.clone();
        let moved: Vec<(String, u32, u64)> = self
            .owned
            .iter()
            .filter_map(|((t, q), state)| {
                lock(&state.progress).to_commit().map(|off| (t.clone(), *q, off))
            })
            .collect();
        if moved.is_empty() {
            return;
        }
        if !self.clustering() {
            for (t, q, o) in &moved {
                self.broadcast_offsets.insert(format!("{t}:{q}"), *o);
            }
            self.save_broadcast_offsets();
        } else {
            match self.groups.commit(&c.group, self.version, &moved) {
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::STALE_GENERATION) => {
                    // The group's offsets were reset: start over from them.
                    let all: Vec<QueueKey> = self.owned.keys().cloned().collect();
                    self.give_up(&all, false);
                    self.version = 0;
                    self.s.changed.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!(group = %c.group, "commit failed, retrying: {e}");
                    return;
                }
            }
        }
        for (t, q, off) in moved {
            if let Some(state) = self.owned.get(&(t, q)) {
                lock(&state.progress).mark_committed(off);
            }
        }
    }

    fn save_broadcast_offsets(&self) {
        let MessageModel::Broadcasting { offset_file } = &self.s.config.model else { return };
        let tmp = offset_file.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&self.broadcast_offsets).expect("a map of numbers");
        // Durable before it replaces the old file, and the rename durable too.
        let dir = match offset_file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let written = std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, offset_file))
            .and_then(|()| std::fs::File::open(&dir)?.sync_all());
        if let Err(e) = written {
            tracing::warn!(file = %offset_file.display(), "cannot save the broadcasting offsets: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::push_consumer::{ConsumeContext, ConsumeStatus, PushConsumerConfig};
    use crate::client::scripted_broker::scripted_broker;
    use crate::client::Client;
    use crate::client::ConsumedMessage;
    use crate::protocol::group::{GroupQueue, GroupRequest, GroupResponse};
    use crate::protocol::{Request, Response};

    /// A coordinator that answers every LOCK_QUEUES with the queues asked for, one of them
    /// twice, plus a queue nobody asked for; and offset 0 for every committed offset asked.
    fn over_granting_broker() -> String {
        scripted_broker(|port, request| match request {
            Request::Metadata { .. } => Response::Metadata {
                shard_count: 1,
                shared_port: port,
                shard_ports: Vec::new(),
                topics: Vec::new(),
            },
            Request::Group(GroupRequest::Lock { queues, .. }) => {
                let mut granted = queues.clone();
                granted.extend(queues.first().cloned());
                granted.push(GroupQueue { topic: "other".into(), queue_id: 7 });
                Response::Group(GroupResponse::Lock { granted })
            }
            Request::Group(GroupRequest::FetchOffsets { queues, .. }) => {
                let offsets = queues.into_iter().map(|q| (q, 0)).collect();
                Response::Group(GroupResponse::FetchOffsets { offsets })
            }
            other => panic!("unexpected {other:?}"),
        })
    }

    fn shared(client: &Client) -> Arc<Shared> {
        let listener = |_: &[ConsumedMessage], _: &ConsumeContext<'_>| ConsumeStatus::Success;
        Arc::new(Shared {
            config: PushConsumerConfig::new("g").subscribe("z", "*"),
            client: client.detached(),
            listener: Arc::new(listener),
            stop: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            wake: (Mutex::new(()), std::sync::Condvar::new()),
            version: std::sync::atomic::AtomicU64::new(0),
            tasks: Mutex::new(None),
            buffered: Mutex::default(),
            taken: std::sync::Condvar::new(),
            retries: Mutex::new(Vec::new()),
            caught_up: AtomicBool::new(false),
            send_back: None,
            session_until: Mutex::new(Instant::now()),
            tracer: None,
            fetch: Mutex::new(Vec::new()),
            fetch_waker: Mutex::new(None),
            fetch_done: AtomicBool::new(false),
            fetched_all: AtomicBool::new(false),
        })
    }

    #[test]
    fn a_lock_answer_starts_only_the_queues_asked_for_once_each() {
        let client = Client::connect(&over_granting_broker()).unwrap();
        let mut control = Control::new(shared(&client));
        let asked: BTreeSet<QueueKey> = [("z".to_string(), 0), ("z".to_string(), 1)].into();
        control.pending = asked.clone();
        control.take_pending().unwrap();
        let owned: BTreeSet<QueueKey> = control.owned.keys().cloned().collect();
        assert_eq!(owned, asked, "a queue not asked for is not consumed");
        assert!(control.pending.is_empty());
        // A queue granted twice is read once, and nothing not asked for is read at all: the
        // fetch thread is told to read exactly the owned queues.
        let read: Vec<QueueKey> = lock(&control.s.fetch)
            .iter()
            .map(|c| match c {
                FetchCommand::Add(q, _) => (q.topic.clone(), q.queue_id),
                FetchCommand::Remove(_) => panic!("nothing was given up"),
            })
            .collect();
        assert_eq!(read, asked.into_iter().collect::<Vec<_>>());
    }
}
