//! The push consumer: a member of a consumer group that pulls its share of the queues and
//! calls a listener, committing what the listener finished (RocketMQ's
//! `DefaultMQPushConsumer`).
//!
//! ```no_run
//! use ringmq::client::{
//!     Client, ConsumeContext, ConsumeStatus, ConsumedMessage, PushConsumer, PushConsumerConfig,
//! };
//!
//! fn main() -> Result<(), ringmq::client::ClientError> {
//!     let client = Client::connect("127.0.0.1:10911")?;
//!     let config = PushConsumerConfig::new("billing").subscribe("orders", "paid || shipped");
//!     let listener = |messages: &[ConsumedMessage], ctx: &ConsumeContext<'_>| {
//!         for m in messages {
//!             println!("{} {} {}", ctx.queue_id, m.offset, String::from_utf8_lossy(&m.body));
//!         }
//!         ConsumeStatus::Success
//!     };
//!     let consumer = PushConsumer::start(&client, config, listener)?;
//!     // ... until the application stops:
//!     consumer.shutdown(); // commits what was processed and leaves the group
//!     Ok(())
//! }
//! ```
//!
//! # Threads
//! - **control**: heartbeats, rebalances when the group's version moves (told at once by the
//!   watch thread's parked `WATCH_GROUP`, or by a heartbeat), takes and gives up queues,
//!   renews queue locks, commits offsets every `commit_interval`;
//! - **watch**: keeps one `WATCH_GROUP` outstanding and wakes the control thread;
//! - **one puller per owned queue**: pulls (long-poll) and, in concurrent mode, hands batches
//!   of `batch_size` messages to the worker pool; in orderly mode it calls the listener itself,
//!   one batch at a time, in queue order;
//! - **workers** (concurrent mode): `threads` threads taking batches from a bounded channel;
//! - **retry** (concurrent mode): redelivers `RECONSUME_LATER` batches after their delay.
//!
//! # Ownership of a queue (clustering)
//! Every member computes its share with the same allocation over the member list. A queue is
//! consumed only under the group's lock on it (held at the coordinator, renewed every third of
//! the lease): a member gaining a queue asks for its lock until the previous owner, which stops
//! its puller, lets running batches finish, commits and unlocks, has let go; only then does it
//! read the committed offset and start. So a queue has at most one consumer at a time and a
//! rebalance redelivers nothing. A member that crashes keeps its locks until its session
//! expires (`group.session_timeout_ms`); its queues then restart from its last commit.
//!
//! # Offsets
//! The offset committed for a queue never passes a message the listener has not finished
//! ([`ProcessQueue`]). Clustering commits to the coordinator with the generation (group
//! version) the member rebalanced on; after an offset reset the coordinator refuses those
//! commits (`STALE_GENERATION`) and the member drops its queues without committing and takes
//! them again from the reset offsets. Broadcasting keeps offsets in a local file instead
//! (every member consumes every queue). Shutdown commits what was finished and leaves the
//! group, so the others take its queues at once.
//!
//! # Bounds
//! Unfinished messages per queue (`max_unfinished_per_queue`; the puller waits above it), the
//! worker channel (`threads * 2` batches), one pull buffer per owned queue.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::error::{ClientError, Result};
use super::group::GroupClient;
use super::message::ConsumedMessage;
use super::process_queue::{ProcessQueue, RetryPolicy};
use super::{AdminClient, Client};
use crate::group::allocate::{AllocMember, AllocQueue, Strategy};
use crate::group::membership::TagFilter;
use crate::protocol::{ErrorCode, ErrorDetail};

/// What the listener did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeStatus {
    /// Processed: its offsets may be committed.
    Success,
    /// Deliver again later (concurrent: after the retry policy's delay; orderly: the queue is
    /// suspended for `suspend` and the same batch is retried).
    ReconsumeLater,
}

/// Where a batch comes from.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeContext<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    /// Earlier failed deliveries of this batch (0 on the first).
    pub attempt: u32,
}

/// The application's callback. Called from worker threads (concurrent) or one thread per
/// queue (orderly); a panic counts as `ReconsumeLater`.
pub trait MessageListener: Send + Sync + 'static {
    fn consume(&self, messages: &[ConsumedMessage], ctx: &ConsumeContext<'_>) -> ConsumeStatus;
}

impl<F> MessageListener for F
where
    F: Fn(&[ConsumedMessage], &ConsumeContext<'_>) -> ConsumeStatus + Send + Sync + 'static,
{
    fn consume(&self, messages: &[ConsumedMessage], ctx: &ConsumeContext<'_>) -> ConsumeStatus {
        self(messages, ctx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeMode {
    /// Batches of a queue may be processed in parallel and out of order.
    Concurrent { threads: usize, batch_size: usize },
    /// Each queue's messages strictly in order, one batch at a time, only while holding the
    /// queue's lock.
    Orderly { batch_size: usize, suspend: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageModel {
    /// The group's members share the queues; offsets are committed to the coordinator.
    Clustering,
    /// Every member consumes every queue; offsets are kept in this local file.
    Broadcasting { offset_file: PathBuf },
}

/// Where a queue without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The queue's end: only messages stored from now on (RocketMQ's default).
    LastOffset,
    FirstOffset,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct PushConsumerConfig {
    pub group: String,
    /// Unique per member; default `<pid>-<random>`.
    pub client_id: String,
    /// (topic, tag expression: `*` or `A || B`).
    pub subscriptions: Vec<(String, String)>,
    pub model: MessageModel,
    pub consume_from: ConsumeFrom,
    pub strategy: Strategy,
    /// Machine room label for [`Strategy::MachineRoom`]; empty for none.
    pub room: String,
    pub mode: ConsumeMode,
    /// Must stay well below the broker's `group.session_timeout_ms`. Default 10 s.
    pub heartbeat_interval: Duration,
    /// Default 1 s.
    pub commit_interval: Duration,
    /// Queue lock lease (renewed every third of it). Default 60 s.
    pub lock_lease: Duration,
    /// Long-poll wait of each pull (also how soon a puller notices it must stop). Default 1 s.
    pub pull_wait: Duration,
    pub max_unfinished_per_queue: usize,
    pub retry: RetryPolicy,
}

impl PushConsumerConfig {
    pub fn new(group: impl Into<String>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        PushConsumerConfig {
            group: group.into(),
            client_id: format!("{}-{nanos:08x}", std::process::id()),
            subscriptions: Vec::new(),
            model: MessageModel::Clustering,
            consume_from: ConsumeFrom::LastOffset,
            strategy: Strategy::Averagely,
            room: String::new(),
            mode: ConsumeMode::Concurrent { threads: 4, batch_size: 1 },
            heartbeat_interval: Duration::from_secs(10),
            commit_interval: Duration::from_secs(1),
            lock_lease: Duration::from_secs(60),
            pull_wait: Duration::from_secs(1),
            max_unfinished_per_queue: 1000,
            retry: RetryPolicy::default(),
        }
    }

    pub fn subscribe(mut self, topic: impl Into<String>, expression: impl Into<String>) -> Self {
        self.subscriptions.push((topic.into(), expression.into()));
        self
    }
}

type QueueKey = (String, u32);

/// One owned queue, shared by its puller, the workers and the control thread.
struct QueueState {
    topic: String,
    queue_id: u32,
    progress: Mutex<ProcessQueue>,
    stop: AtomicBool,
    /// The lock was lost (orderly and clustering): stop without committing.
    lost: AtomicBool,
    /// Batches in the worker channel or being processed.
    running: AtomicUsize,
    /// The last pull found nothing more to read.
    caught_up: AtomicBool,
    /// Orderly: process only before this (the lock's lease as last granted).
    lock_until: Mutex<Instant>,
}

struct Task {
    queue: Arc<QueueState>,
    messages: Vec<ConsumedMessage>,
    attempt: u32,
}

struct Shared {
    config: PushConsumerConfig,
    client: Client,
    listener: Arc<dyn MessageListener>,
    stop: AtomicBool,
    /// The watch thread saw the group change.
    changed: AtomicBool,
    wake: (Mutex<()>, Condvar),
    version: AtomicU64,
    tasks: Mutex<Option<Sender<Task>>>,
    retries: Mutex<Vec<(Instant, Task)>>,
    /// Every owned queue has been drained (for tools that stop at the end).
    caught_up: AtomicBool,
    /// Until when this member's session surely lasts (the last acknowledged heartbeat's send
    /// time plus two thirds of the session timeout). Past it the coordinator may have expired
    /// the member and given its queues to another: pullers pause, so a member that stalls
    /// (or loses the broker) cannot consume a queue someone else now owns.
    session_until: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn wake(&self) {
        let _g = lock(&self.wake.0);
        self.wake.1.notify_all();
    }

    fn sleep(&self, d: Duration) {
        let g = lock(&self.wake.0);
        if !self.stop.load(Ordering::Relaxed) {
            let _ = self.wake.1.wait_timeout(g, d);
        }
    }

    fn call_listener(
        &self,
        q: &QueueState,
        messages: &[ConsumedMessage],
        attempt: u32,
    ) -> ConsumeStatus {
        let ctx = ConsumeContext { topic: &q.topic, queue_id: q.queue_id, attempt };
        std::panic::catch_unwind(AssertUnwindSafe(|| self.listener.consume(messages, &ctx)))
            .unwrap_or_else(|_| {
                tracing::error!(topic = %q.topic, queue = q.queue_id, "the listener panicked; reconsuming later");
                ConsumeStatus::ReconsumeLater
            })
    }
}

/// A running push consumer; [`PushConsumer::shutdown`] stops it (dropping it does too).
pub struct PushConsumer {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
}

impl PushConsumer {
    /// Joins the group and starts consuming.
    pub fn start(
        client: &Client,
        config: PushConsumerConfig,
        listener: impl MessageListener,
    ) -> Result<PushConsumer> {
        if config.subscriptions.is_empty() {
            return Err(ClientError::Invalid(
                "a push consumer needs at least one subscription".into(),
            ));
        }
        for (topic, expression) in &config.subscriptions {
            TagFilter::parse(expression).map_err(|e| ClientError::Invalid(e.to_string()))?;
            client.admin().route(topic)?;
        }
        let threads_wanted = match config.mode {
            ConsumeMode::Concurrent { threads, .. } => threads.max(1),
            ConsumeMode::Orderly { .. } => 0,
        };
        let (tx, rx) = bounded::<Task>(threads_wanted.max(1) * 2);
        let shared = Arc::new(Shared {
            config,
            // Its own connections: heartbeats and pulls never wait behind the application's
            // other traffic (a producer's pipelined sends fill a shared connection's slots).
            client: client.detached(),
            listener: Arc::new(listener),
            stop: AtomicBool::new(false),
            changed: AtomicBool::new(true),
            wake: (Mutex::new(()), Condvar::new()),
            version: AtomicU64::new(0),
            tasks: Mutex::new(Some(tx)),
            retries: Mutex::new(Vec::new()),
            caught_up: AtomicBool::new(false),
            session_until: Mutex::new(Instant::now()),
        });
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| ClientError::Invalid(format!("cannot start a consumer thread: {e}")))
        };
        for i in 0..threads_wanted {
            let (s, rx) = (shared.clone(), rx.clone());
            threads.push(spawn(format!("ringmq-consume-{i}"), Box::new(move || worker(&s, &rx)))?);
        }
        drop(rx);
        if threads_wanted > 0 {
            let s = shared.clone();
            threads.push(spawn("ringmq-retry".into(), Box::new(move || retry_loop(&s)))?);
        }
        let s = shared.clone();
        threads.push(spawn("ringmq-watch".into(), Box::new(move || watch_loop(&s)))?);
        let s = shared.clone();
        let control = spawn("ringmq-rebalance".into(), Box::new(move || Control::new(s).run()))?;
        Ok(PushConsumer { shared, threads, control: Some(control) })
    }

    /// The group version this member last rebalanced on.
    pub fn generation(&self) -> u64 {
        self.shared.version.load(Ordering::Relaxed)
    }

    /// Whether every queue this member owns was read to its end (and finished) at least
    /// once since it was taken, and no queue is waiting for its lock.
    pub fn caught_up(&self) -> bool {
        self.shared.caught_up.load(Ordering::Relaxed)
    }

    /// Stops pulling, lets running batches finish, commits, leaves the group.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake();
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
        lock(&self.shared.tasks).take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        if self.control.is_some() {
            self.stop();
        }
    }
}

fn worker(s: &Shared, rx: &Receiver<Task>) {
    while let Ok(task) = rx.recv() {
        let status = s.call_listener(&task.queue, &task.messages, task.attempt);
        let offsets = task.messages.iter().map(|m| m.offset);
        match status {
            ConsumeStatus::Success => lock(&task.queue.progress).finished(offsets),
            ConsumeStatus::ReconsumeLater => {
                let failures = task.attempt + 1;
                match s.config.retry.delay(failures) {
                    Some(d) => {
                        let retry = Task {
                            queue: task.queue.clone(),
                            messages: task.messages,
                            attempt: failures,
                        };
                        lock(&s.retries).push((Instant::now() + d, retry));
                    }
                    None => {
                        tracing::error!(
                            topic = %task.queue.topic,
                            queue = task.queue.queue_id,
                            "giving up a batch after {failures} failed deliveries"
                        );
                        lock(&task.queue.progress).finished(offsets);
                    }
                }
            }
        }
        task.queue.running.fetch_sub(1, Ordering::Relaxed);
    }
}

fn retry_loop(s: &Shared) {
    while !s.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due: Vec<Task> = {
            let mut r = lock(&s.retries);
            let (due, wait): (Vec<_>, Vec<_>) = r.drain(..).partition(|(at, _)| *at <= now);
            *r = wait;
            due.into_iter().map(|(_, t)| t).collect()
        };
        for t in due {
            // A queue given up meanwhile: its batch stays unfinished (the next owner gets it).
            if t.queue.stop.load(Ordering::Relaxed) {
                continue;
            }
            t.queue.running.fetch_add(1, Ordering::Relaxed);
            let q = t.queue.clone();
            let sender = lock(&s.tasks).clone();
            if sender.map_or(true, |tx| tx.send(t).is_err()) {
                q.running.fetch_sub(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn watch_loop(s: &Shared) {
    let groups = s.client.groups();
    while !s.stop.load(Ordering::Relaxed) {
        let known = s.version.load(Ordering::Relaxed);
        match groups.watch(&s.config.group, known, Duration::from_secs(5)) {
            Ok(v) if v != known && known != 0 => {
                s.changed.store(true, Ordering::Relaxed);
                s.wake();
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
        if known == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn puller(s: Arc<Shared>, q: Arc<QueueState>, tags: Vec<Vec<u8>>) {
    let mut consumer = s.client.consumer();
    consumer.tags = tags;
    let mut logged = false;
    while !q.stop.load(Ordering::Relaxed) && !q.lost.load(Ordering::Relaxed) {
        if Instant::now() >= *lock(&s.session_until) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let (offset, room) = {
            let p = lock(&q.progress);
            (p.next_pull(), p.has_room())
        };
        if !room {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let r = match consumer.pull(&q.topic, q.queue_id, offset, s.config.pull_wait) {
            Ok(r) => r,
            Err(ClientError::Broker {
                code,
                detail: ErrorDetail::OffsetRange { min, next },
                ..
            }) if code == ErrorCode::OFFSET_OUT_OF_RANGE as u16 => {
                lock(&q.progress).jump_to(if offset < min { min } else { next });
                continue;
            }
            Err(ClientError::CorruptData { first_offset, next_offset, reason, .. }) => {
                tracing::error!(
                    topic = %q.topic, queue = q.queue_id,
                    "skipping the damaged batch at offsets [{first_offset}, {next_offset}): {reason}"
                );
                lock(&q.progress).jump_to(next_offset);
                continue;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(topic = %q.topic, queue = q.queue_id, "pull failed, retrying: {e}");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        logged = false;
        q.caught_up
            .store(r.messages.is_empty() && r.next_offset >= r.max_offset, Ordering::Relaxed);
        lock(&q.progress).pulled(r.messages.iter().map(|m| m.offset), r.next_offset);
        if r.messages.is_empty() {
            continue;
        }
        match s.config.mode {
            ConsumeMode::Concurrent { batch_size, .. } => {
                let mut rest = r.messages;
                while !rest.is_empty() {
                    let tail = rest.split_off(batch_size.max(1).min(rest.len()));
                    let batch = std::mem::replace(&mut rest, tail);
                    q.running.fetch_add(1, Ordering::Relaxed);
                    let task = Task { queue: q.clone(), messages: batch, attempt: 0 };
                    let sender = lock(&s.tasks).clone();
                    if sender.map_or(true, |tx| tx.send(task).is_err()) {
                        q.running.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            ConsumeMode::Orderly { batch_size, suspend } => {
                for batch in r.messages.chunks(batch_size.max(1)) {
                    let mut attempt = 0;
                    loop {
                        if q.stop.load(Ordering::Relaxed) || q.lost.load(Ordering::Relaxed) {
                            return;
                        }
                        let valid = (*lock(&q.lock_until)).min(*lock(&s.session_until));
                        if Instant::now() >= valid {
                            // The lease or the session may have run out: wait for the control
                            // thread's renewal.
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        match s.call_listener(&q, batch, attempt) {
                            ConsumeStatus::Success => {
                                lock(&q.progress).finished(batch.iter().map(|m| m.offset));
                                break;
                            }
                            ConsumeStatus::ReconsumeLater => {
                                attempt += 1;
                                std::thread::sleep(suspend);
                            }
                        }
                    }
                }
            }
        }
    }
}

struct Owned {
    state: Arc<QueueState>,
    puller: Option<JoinHandle<()>>,
}

/// The control thread's state.
struct Control {
    s: Arc<Shared>,
    groups: GroupClient,
    admin: AdminClient,
    owned: BTreeMap<QueueKey, Owned>,
    /// Queues this member should own but whose lock it does not have yet.
    pending: BTreeSet<QueueKey>,
    version: u64,
    broadcast_offsets: BTreeMap<String, u64>,
}

impl Control {
    fn new(s: Arc<Shared>) -> Self {
        // Separate from the pullers' connections: a heartbeat never waits behind parked pulls.
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

    fn run(mut self) {
        let c = self.s.config.clone();
        let now = Instant::now();
        let (mut next_heartbeat, mut next_commit, mut next_renew, mut next_take) =
            (now, now, now, now);
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
                next_take = now + Duration::from_millis(100);
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
                && self.owned.values().all(|o| {
                    o.state.caught_up.load(Ordering::Relaxed)
                        && o.state.running.load(Ordering::Relaxed) == 0
                        && lock(&o.state.progress).unfinished() == 0
                });
            self.s.caught_up.store(all_caught_up, Ordering::Relaxed);
            self.s.sleep(Duration::from_millis(50));
        }
        // Shutdown: give every queue up with a commit, then leave.
        let all: Vec<QueueKey> = self.owned.keys().cloned().collect();
        self.give_up(&all, true);
        self.save_broadcast_offsets();
        let _ = self.groups.leave(&c.group, &c.client_id);
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
            self.groups.lock(&c.group, &c.client_id, c.lock_lease, &asked)?
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
        for key in granted {
            let start = match committed.get(&key) {
                Some(&o) => o,
                None => match c.consume_from {
                    ConsumeFrom::FirstOffset => self.admin.queue_offsets(&key.0, key.1)?.min,
                    ConsumeFrom::LastOffset => self.admin.queue_offsets(&key.0, key.1)?.next,
                    ConsumeFrom::Timestamp(ms) => {
                        self.admin.offset_for_timestamp(&key.0, key.1, ms)?
                    }
                },
            };
            let state = Arc::new(QueueState {
                topic: key.0.clone(),
                queue_id: key.1,
                progress: Mutex::new(ProcessQueue::new(start, c.max_unfinished_per_queue)),
                stop: AtomicBool::new(false),
                lost: AtomicBool::new(false),
                running: AtomicUsize::new(0),
                caught_up: AtomicBool::new(false),
                lock_until: Mutex::new(lease_end),
            });
            let expression =
                c.subscriptions.iter().find(|(t, _)| *t == key.0).map_or("*", |(_, e)| e.as_str());
            let tags = match TagFilter::parse(expression) {
                Ok(TagFilter::Tags(tags)) => tags.into_iter().map(String::into_bytes).collect(),
                _ => Vec::new(),
            };
            let (s, q) = (self.s.clone(), state.clone());
            let puller = std::thread::Builder::new()
                .name(format!("ringmq-pull-{}-{}", key.0, key.1))
                .spawn(move || puller(s, q, tags))
                .map_err(|e| ClientError::Invalid(format!("cannot start a puller thread: {e}")))?;
            self.pending.remove(&key);
            self.owned.insert(key, Owned { state, puller: Some(puller) });
        }
        Ok(())
    }

    /// Stops the queues' pullers, lets their running batches finish, commits (if `commit` and
    /// the lock was not lost) and unlocks them.
    fn give_up(&mut self, keys: &[QueueKey], commit: bool) {
        // Stop every puller first, then wait for them together: each may be in a long-poll.
        let mut stopping = Vec::new();
        for key in keys {
            let Some(o) = self.owned.remove(key) else { continue };
            o.state.stop.store(true, Ordering::Relaxed);
            stopping.push((key.clone(), o));
        }
        let mut gone = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for (key, mut o) in stopping {
            if let Some(p) = o.puller.take() {
                let _ = p.join();
            }
            while o.state.running.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            gone.push((key, o.state));
        }
        if gone.is_empty() {
            return;
        }
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
            return; // the broker is unreachable: the orderly pullers stop at their lease's end
        };
        let granted: BTreeSet<QueueKey> = granted.into_iter().collect();
        let mut lost = Vec::new();
        for (k, o) in &self.owned {
            if granted.contains(k) {
                *lock(&o.state.lock_until) = asked_at + c.lock_lease * 2 / 3;
            } else {
                o.state.lost.store(true, Ordering::Relaxed);
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
            .filter_map(|((t, q), o)| {
                lock(&o.state.progress).to_commit().map(|off| (t.clone(), *q, off))
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
            if let Some(o) = self.owned.get(&(t, q)) {
                lock(&o.state.progress).mark_committed(off);
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
