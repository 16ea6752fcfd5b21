//! Replication on a shard (DESIGN.md section 7, docs/design.md "Replication"): the master's
//! side of the stream and its sync-produce gate, and the replica's refusals.
//!
//! A master shard owns its [`InSyncSet`] and [`SyncWaiters`] (the pure rules of
//! `crate::replication::in_sync`) and feeds them: its own log positions after every append and
//! tick, each replica's JOIN (connected, at the divergence point) and each REPLICA_FETCH (the
//! position the replica synced). Whenever the confirmed position moves, the log's read cap
//! follows it (consumers see confirmed data only) and parked consumer fetches are woken.
//! Sync produces wait in the bounded waiters for the confirmed position or their deadline.
//!
//! The master never waits for a replica on its produce path except where sync mode says so:
//! replication fetches read what is already written (`read_batches_at`), one bounded fetch in
//! flight per replica shard.

use std::net::SocketAddr;

use super::*;
use crate::broker::shard_log::AppendOutcome;
use crate::protocol::replication::{ReplRequest, ReplResponse, WireBatch};
use crate::replication::config::{Mode, ReplicationConfig};
use crate::replication::epochs::{conflict, divergence, EpochEntry, EpochHistory};
use crate::replication::in_sync::{InSyncSet, MembershipChange, SyncStatus, SyncWaiters};
use crate::storage::StorageError;

/// Longest a replication fetch waits at the master's end (the replica acknowledges at least
/// this often, so an idle but live replica stays in the in-sync set).
pub const MAX_REPLICA_WAIT_MS: u32 = 500;

/// This shard's part in replication; unset for a single broker.
pub enum ShardRole {
    Master(MasterSide),
    Replica(ReplicaSide),
}

/// A replica shard's state: whom it follows and its epoch history (the master's, once joined).
pub struct ReplicaSide {
    pub master: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub fetch_bytes: usize,
    pub history: RefCell<EpochHistory>,
}

/// One replica's current stream.
#[derive(Debug, Clone, Copy)]
struct Stream {
    session: u64,
    /// Where the replica's log can end at most: where it was kept at the join, or the end of
    /// the batches this stream sent it since. It cannot hold, let alone have synced, more.
    sent_end: u64,
    /// Whether this master knows `sent_end` to be one of its batch boundaries (it answered
    /// it as `next`, or it is its own log end or an epoch start at the join), rather than
    /// taking the replica's word for it.
    sent_end_checked: bool,
}

/// A master shard's replication state.
pub struct MasterSide {
    mode: Mode,
    replicas: Vec<SocketAddr>,
    history: EpochHistory,
    set: RefCell<InSyncSet>,
    waiters: RefCell<SyncWaiters<oneshot::Sender<SyncStatus>>>,
    /// The highest end a sync produce waits for (waiters are kept in log order).
    last_waited_end: Cell<u64>,
    /// The current stream of each replica (by its place in `replicas`).
    sessions: RefCell<Vec<Option<Stream>>>,
    next_session: Cell<u64>,
    /// Replication fetches parked at the master's end, woken by appends. Bounded.
    parked: RefCell<Vec<oneshot::Sender<()>>>,
    /// The append end the parked fetches were last woken for.
    woken_at: Cell<u64>,
    /// The confirmed position the log's read cap was last set to.
    read_cap: Cell<u64>,
    fetch_bytes: usize,
}

impl MasterSide {
    /// A master shard whose log ends at `end` (all of it readable: the master's log is the
    /// truth under static roles), writing in the epoch `history` ends with.
    pub fn new(config: &ReplicationConfig, history: EpochHistory, end: u64) -> Self {
        let replicas = config.replica_addrs();
        MasterSide {
            mode: config.replication,
            set: RefCell::new(InSyncSet::new(config.in_sync(), replicas.len(), end, end)),
            waiters: RefCell::new(SyncWaiters::new(config.max_sync_waiters, config.sync_timeout())),
            last_waited_end: Cell::new(0),
            sessions: RefCell::new(vec![None; replicas.len()]),
            next_session: Cell::new(1),
            parked: RefCell::new(Vec::new()),
            woken_at: Cell::new(end),
            read_cap: Cell::new(end),
            fetch_bytes: config.fetch_bytes,
            replicas,
            history,
        }
    }

    pub fn confirmed(&self) -> u64 {
        self.set.borrow().confirmed()
    }

    pub fn in_sync_count(&self) -> usize {
        self.set.borrow().in_sync_count()
    }

    /// The epoch this master writes in, and where it began.
    pub fn current_epoch(&self) -> Option<EpochEntry> {
        self.history.latest()
    }
}

/// The NOT_MASTER refusal of a replica.
pub fn not_master(master: SocketAddr) -> BrokerError {
    BrokerError {
        code: ErrorCode::NOT_MASTER,
        message: format!(
            "this broker is a replica (reads only); send writes to its master {master}"
        ),
        detail: ErrorDetail::NotMaster { master },
    }
}

/// The OFFSET_OUT_OF_RANGE refusal of a replica that needs this master's log from `position`,
/// below `oldest`, the oldest position it still holds (its log holds `[oldest, end)`).
pub fn behind_retention(position: u64, oldest: u64, end: u64) -> BrokerError {
    BrokerError {
        code: ErrorCode::OFFSET_OUT_OF_RANGE,
        message: format!(
            "the replica needs this master's log from position {position}, but the oldest \
             position the master still holds is {oldest} (retention deleted the segments \
             before it; the master holds [{oldest}, {end})): the replica is behind the \
             master's retention and cannot catch up by fetching"
        ),
        detail: ErrorDetail::OffsetRange { min: oldest, next: end },
    }
}

fn log_changes(shard: ShardId, changes: &[MembershipChange], replicas: &[SocketAddr]) {
    for c in changes {
        match *c {
            MembershipChange::Joined(i) => {
                tracing::info!(%shard, replica = %replicas[i], "replica joined the in-sync set")
            }
            MembershipChange::Left(i) => {
                tracing::warn!(%shard, replica = %replicas[i], "replica left the in-sync set")
            }
        }
    }
}

impl<L: ShardLog> Shard<L> {
    /// Sets this shard's replication role (once, before it serves), and caps the log's reads:
    /// at the confirmed position on a master, at the synced position on a replica.
    pub fn set_role(&self, role: ShardRole) {
        let cap = match &role {
            ShardRole::Master(m) => m.read_cap.get(),
            ShardRole::Replica(_) => self.log.durable_end(),
        };
        self.log.set_read_cap(Some(cap));
        if self.replication.set(role).is_err() {
            panic!("the replication role of shard {} is set twice", self.id);
        }
    }

    /// The role this shard has now: the master side a promotion made, else the one it
    /// started with.
    pub fn role(&self) -> Option<&ShardRole> {
        self.promotion.master.get().or_else(|| self.replication.get())
    }

    fn master_side(&self) -> Option<&MasterSide> {
        match self.role() {
            Some(ShardRole::Master(m)) => Some(m),
            _ => None,
        }
    }

    /// This shard's replication state for the metrics endpoint.
    pub(super) fn replication_sample(&self) -> Option<crate::metrics::ReplicationSample> {
        use crate::metrics::{ReplicaSample, ReplicationSample};
        Some(match self.role()? {
            ShardRole::Master(m) => {
                let set = m.set.borrow();
                ReplicationSample::Master {
                    log_end: self.log.append_end(),
                    confirmed: set.confirmed(),
                    in_sync_members: set.in_sync_count() as u64,
                    replicas: m
                        .replicas
                        .iter()
                        .enumerate()
                        .map(|(i, a)| ReplicaSample {
                            replica: a.to_string(),
                            in_sync: set.is_in_sync(i),
                            lag_bytes: set.replica_lag_bytes(i),
                        })
                        .collect(),
                }
            }
            ShardRole::Replica(_) => ReplicationSample::Replica { synced: self.log.durable_end() },
        })
    }

    /// A replica serves reads only: every other request is refused with its master's address.
    pub(super) fn refuse_on_replica(&self, request: &Request) -> Result<(), BrokerError> {
        match self.role() {
            Some(ShardRole::Replica(r)) => match request {
                Request::Replication(ReplRequest::Promote { .. })
                | Request::Metadata { .. }
                | Request::ListTopics
                | Request::Fetch { .. }
                | Request::FetchMulti(_)
                | Request::Offsets { .. }
                | Request::QueryKeys(_)
                | Request::Stats => Ok(()),
                _ => Err(not_master(r.master)),
            },
            _ => Ok(()),
        }
    }

    /// A master: answers the replica fetches parked at its end now (with what they find),
    /// so that a replica hears of a new topic table without waiting for data or for
    /// `MAX_REPLICA_WAIT_MS`: its other shards wait for it before they write what came with
    /// the new table (`follower.rs`).
    pub(super) fn wake_parked_replica_fetches(&self) {
        if let Some(m) = self.master_side() {
            for tx in m.parked.borrow_mut().drain(..) {
                let _ = tx.send(());
            }
        }
    }

    /// Whether this shard is a master that replicates synchronously (its role now).
    pub(super) fn is_sync_master(&self) -> bool {
        self.master_side().is_some_and(|m| m.mode == Mode::Sync)
    }

    /// Before a produce (or a topic change) writes anything: a sync master with too few
    /// in-sync members refuses.
    pub(super) fn admit_produce(&self) -> Result<(), BrokerError> {
        let Some(m) = self.master_side().filter(|m| m.mode == Mode::Sync) else { return Ok(()) };
        m.set.borrow().admit().map_err(|(members, needed)| {
            BrokerError::new(
                ErrorCode::SLAVE_NOT_AVAILABLE,
                format!(
                    "shard {} has {members} in-sync member(s) (the master counts), sync \
                     replication needs min_in_sync_replicas = {needed}; nothing was written",
                    self.id
                ),
            )
        })
    }

    /// Feeds the master's log positions to the in-sync set, answers the sync produces it now
    /// covers (or whose deadline passed), moves the read cap with the confirmed position and
    /// wakes who waits for it.
    pub(super) fn replication_progress(&self) {
        let Some(m) = self.master_side() else { return };
        let now = self.clock.now();
        let end = self.log.append_end();
        let (answered, confirmed) = {
            let mut set = m.set.borrow_mut();
            set.appended(end);
            set.master_synced(self.log.durable_end());
            let answered = m.waiters.borrow_mut().poll(&set, now);
            (answered, set.confirmed())
        };
        for (tx, status) in answered {
            let _ = tx.send(status);
        }
        // Acknowledgements move the confirmed position too (inside the set): compare with
        // what the cap was last set to, not with the position before this call.
        if confirmed != m.read_cap.get() {
            m.read_cap.set(confirmed);
            self.log.set_read_cap(Some(confirmed));
            self.long_poll.borrow_mut().notify_all();
        }
        if end > m.woken_at.get() {
            m.woken_at.set(end);
            self.wake_parked_replica_fetches();
        }
    }

    /// The status to acknowledge an append with, once the flush mode and, on a sync master,
    /// the in-sync set say so: every append a client is answered for (produce, scheduled
    /// produce, transaction half, offset commit) goes through here, so a SEND_OK from a sync
    /// master always means durable on every in-sync member.
    pub(super) async fn ack_status(&self, out: &AppendOutcome) -> SendStatus {
        self.promise_status(!out.flush_timed_out, out.end).await
    }

    /// The status of an answer for a batch stored before log position `end`, `durable_here`
    /// per the flush mode: not durable here yet, FLUSH_DISK_TIMEOUT (replication is not
    /// waited for either); on a sync master, SEND_OK once the in-sync set confirmed it and
    /// FLUSH_SLAVE_TIMEOUT when it did not in time; SEND_OK otherwise.
    async fn promise_status(&self, durable_here: bool, end: u64) -> SendStatus {
        if !durable_here {
            self.replication_progress();
            return SendStatus::FlushDiskTimeout;
        }
        match self.await_replication(end).await {
            Some(SyncStatus::FlushSlaveTimeout) => SendStatus::FlushSlaveTimeout,
            Some(SyncStatus::SendOk) | None => SendStatus::SendOk,
        }
    }

    /// The status of an answer to a resend from the earlier store of the same batch: the
    /// promise a first send's answer makes ([`Self::ack_status`]), waited for as a first send
    /// waits (the flush in sync mode, then a sync master's in-sync set). A resend of a batch a
    /// sync master's replicas have not confirmed is not SEND_OK: a failover could lose it. Its
    /// log position is not kept, so the waits are for everything appended so far (it lies
    /// before).
    pub(super) async fn resend_status(&self) -> Result<SendStatus, BrokerError> {
        let end = self.log.append_end();
        let durable_here = self.log.commit_through(end).await?;
        Ok(self.promise_status(durable_here, end).await)
    }

    /// After a produce stored its batch (ending at log position `end`): in sync mode, waits
    /// until the in-sync set confirmed it or its deadline passed. None: no waiting applies.
    pub(super) async fn await_replication(&self, end: u64) -> Option<SyncStatus> {
        let m = self.master_side()?;
        self.replication_progress();
        if m.mode != Mode::Sync {
            return None;
        }
        // Waiters are kept in log order; a produce that finished after a later one waits for
        // that one's end too (confirming more never acknowledges early).
        let end = end.max(m.last_waited_end.get());
        m.last_waited_end.set(end);
        let (tx, rx) = oneshot::channel();
        if m.waiters.borrow_mut().push(end, self.clock.now(), tx).is_err() {
            return Some(SyncStatus::FlushSlaveTimeout);
        }
        self.replication_progress();
        Some(rx.await.unwrap_or(SyncStatus::FlushSlaveTimeout))
    }

    /// Waits until the log holds everything up to `end` durably, whatever the flush mode, and,
    /// on a sync master, until every in-sync replica does: for an answer that promises more
    /// than the flush mode does (a deletion another file already holds durably). Err: why not,
    /// as the end of a sentence about what was written ("is not durable (...)", "was not
    /// confirmed ...").
    pub(super) async fn durable_and_confirmed(&self, end: u64) -> Result<(), String> {
        self.log.flush().await.map_err(|e| format!("is not durable ({e})"))?;
        match self.await_replication(end).await {
            Some(SyncStatus::FlushSlaveTimeout) => Err(format!(
                "was not confirmed by the in-sync replicas within \
                 replication.sync_replication_timeout_ms (log position {end})"
            )),
            Some(SyncStatus::SendOk) | None => Ok(()),
        }
    }

    /// The master's replication timer: drops lagging replicas from the in-sync set and
    /// answers sync produces past their deadline. On stop, answers every waiting produce.
    pub async fn replication_loop(self: Rc<Self>, stop: crate::broker::shutdown::Stop) {
        let Some(m) = self.master_side() else { return };
        let c = self.config.replication.as_ref().expect("a master has a [replication] section");
        let tick = (c.replica_lag_max_ms.min(c.sync_replication_timeout_ms) / 10).clamp(5, 100);
        let tick = Duration::from_millis(tick);
        loop {
            let sleep = Box::pin(self.clock.sleep_until(self.clock.now() + tick));
            if let Either::Right(_) = select(sleep, stop.clone()).await {
                break;
            }
            let changes = m.set.borrow_mut().tick(self.clock.now());
            log_changes(self.id, &changes, &m.replicas);
            self.replication_progress();
        }
        let late = self.clock.now() + c.sync_timeout() + c.sync_timeout();
        let answered = m.waiters.borrow_mut().poll(&m.set.borrow(), late);
        for (tx, status) in answered {
            let _ = tx.send(status);
        }
    }

    /// Ends replica `index`'s stream `session` (if still its current one): it leaves the
    /// in-sync set and must join again.
    fn end_stream(&self, m: &MasterSide, index: usize, session: u64) {
        let mut sessions = m.sessions.borrow_mut();
        if sessions[index].is_some_and(|s| s.session == session) {
            sessions[index] = None;
            drop(sessions);
            let c = m.set.borrow_mut().disconnected(index);
            log_changes(self.id, &c, &m.replicas);
        }
    }

    /// JOIN, REPLICA_FETCH and REPLICA_TOPICS from a replica shard.
    pub(super) async fn replication_request(self: &Rc<Self>, request: ReplRequest) -> Reply {
        if let ReplRequest::Promote { replicas, mode, min_in_sync_replicas, force } = request {
            let shards = self.promote_broker(replicas, mode, min_in_sync_replicas, force).await?;
            return Ok(Response::Replication(ReplResponse::Promote { shards }));
        }
        let m = match self.role() {
            Some(ShardRole::Master(m)) => m,
            Some(ShardRole::Replica(r)) => return Err(not_master(r.master)),
            None => {
                return Err(BrokerError::new(
                    ErrorCode::INVALID_ARGUMENT,
                    "this broker has no [replication] section: it is not a master",
                ))
            }
        };
        let invalid = |message: String| Err(BrokerError::new(ErrorCode::INVALID_ARGUMENT, message));
        match request {
            ReplRequest::Join { shard_count, shard, replica, end, synced, history } => {
                if shard_count as usize != self.shard_count {
                    return invalid(format!(
                        "the replica runs {shard_count} shards but the master runs {}: a replica \
                         must run with the master's broker.shards",
                        self.shard_count
                    ));
                }
                if shard as usize != self.id.get() {
                    return Err(BrokerError::new(
                        ErrorCode::NOT_OWNER,
                        format!(
                            "this is shard {}; replica shard {shard} joins on its own port",
                            self.id
                        ),
                    ));
                }
                let Some(index) = replica
                    .parse::<SocketAddr>()
                    .ok()
                    .and_then(|a| m.replicas.iter().position(|r| *r == a))
                else {
                    return invalid(format!(
                        "replica {replica:?} is not in this master's replication.replicas {:?}",
                        m.replicas
                    ));
                };
                if let Some(reason) = conflict(&m.history, &history) {
                    tracing::error!(shard = %self.id, %replica, "join refused: {reason}");
                    return invalid(format!(
                        "join refused: {reason}. If this broker is a stale master, stop it and \
                         restart it with role = \"replica\" following the current master"
                    ));
                }
                self.replication_progress();
                let master_end = self.log.append_end();
                let truncate_to = divergence(&m.history, master_end, &history, end);
                let oldest = self.log.oldest_position();
                if truncate_to < oldest {
                    // The replica would continue from a position retention deleted here: no
                    // stream can bring it back, so it is not joined (nor counted in sync).
                    let e = behind_retention(truncate_to, oldest, master_end);
                    tracing::warn!(
                        shard = %self.id, %replica, end, truncate_to, oldest, master_end,
                        "join refused: {}", e.message
                    );
                    return Err(e);
                }
                let session = m.next_session.get();
                m.next_session.set(session + 1);
                let sent_end_checked = truncate_to == master_end
                    || m.history.entries().iter().any(|e| e.start == truncate_to);
                m.sessions.borrow_mut()[index] =
                    Some(Stream { session, sent_end: truncate_to, sent_end_checked });
                let now = self.clock.now();
                let changes = m.set.borrow_mut().connected(index, synced.min(truncate_to), now);
                match changes {
                    Ok(c) => log_changes(self.id, &c, &m.replicas),
                    Err(e) => return invalid(format!("join refused: {e}")),
                }
                tracing::info!(
                    shard = %self.id, replica = %replica, end, truncate_to, master_end,
                    "replica joined the stream"
                );
                self.replication_progress();
                Ok(Response::Replication(ReplResponse::Join {
                    session,
                    truncate_to,
                    master_end,
                    history: m.history.clone(),
                }))
            }
            ReplRequest::Fetch { session, from, synced, max_bytes, max_wait_ms } => {
                let stream = m
                    .sessions
                    .borrow()
                    .iter()
                    .enumerate()
                    .find_map(|(i, s)| s.filter(|s| s.session == session).map(|s| (i, s)));
                let Some((index, stream)) = stream else {
                    return invalid(format!(
                        "replication session {session} is not current: join again"
                    ));
                };
                self.replication_progress();
                let acked = if synced > from || from > stream.sent_end {
                    Err(format!(
                        "the replica says its log ends at {from} with {synced} synced, but this \
                         stream sent it data up to {} only",
                        stream.sent_end
                    ))
                } else {
                    let now = self.clock.now();
                    m.set.borrow_mut().acknowledged(index, synced, now).map_err(|e| e.to_string())
                };
                match acked {
                    Ok(c) => log_changes(self.id, &c, &m.replicas),
                    Err(e) => {
                        tracing::warn!(
                            shard = %self.id, replica = %m.replicas[index],
                            "acknowledgement refused, the stream ends: {e}"
                        );
                        self.end_stream(m, index, session);
                        return invalid(format!("acknowledgement refused: {e}; join again"));
                    }
                }
                self.replication_progress();
                if from >= self.log.append_end() && max_wait_ms > 0 && !self.stopping.get() {
                    let (tx, rx) = oneshot::channel();
                    let room = {
                        let mut parked = m.parked.borrow_mut();
                        parked.retain(|t| !t.is_canceled());
                        parked.len() < 4 * m.replicas.len() + 4 && {
                            parked.push(tx);
                            true
                        }
                    };
                    if room {
                        let wait = max_wait_ms.min(MAX_REPLICA_WAIT_MS);
                        let _ = runtime::timeout(Duration::from_millis(wait.into()), rx).await;
                    }
                }
                if from >= self.log.written_end() && from < self.log.append_end() {
                    // Appended but still in the head chunk (async flush mode): write it out.
                    self.log.flush().await?;
                }
                let max = (max_bytes as usize).min(m.fetch_bytes);
                let read = self.log.read_batches_at(from, self.log.append_end(), max).await;
                let (batches, next) = match read {
                    Ok(r) => r,
                    Err(StorageError::NotABatchBoundary { position, reason })
                        if !(from == stream.sent_end && stream.sent_end_checked) =>
                    {
                        // The replica's position, not this log, is wrong: its log is not a
                        // copy of this one there (or it has a bug). Its acknowledgements are
                        // not trusted either: the stream ends, as for a bad acknowledgement.
                        let e = format!(
                            "the replica fetches from position {position}, which is not a batch \
                             boundary of this master's log ({reason}); its log is not a copy of \
                             the master's there"
                        );
                        tracing::warn!(
                            shard = %self.id, replica = %m.replicas[index],
                            "replica fetch refused, the stream ends: {e}"
                        );
                        self.end_stream(m, index, session);
                        return invalid(format!("{e}; join again"));
                    }
                    Err(StorageError::NotABatchBoundary { position, reason }) => {
                        // A position this master answered as a batch boundary itself.
                        let e = StorageError::Corrupt {
                            file: "the master's log".into(),
                            offset: position,
                            reason: format!(
                                "no intact batch header at a batch boundary this master sent \
                                 its replica ({reason})"
                            ),
                        };
                        tracing::error!(shard = %self.id, "replica fetch: {e}");
                        return Err(e.into());
                    }
                    Err(StorageError::BelowOldest { position, oldest, end }) => {
                        // Retention deleted what the replica still needed while it streamed
                        // (it lagged longer than the retention): it cannot continue.
                        let e = behind_retention(position, oldest, end);
                        tracing::warn!(
                            shard = %self.id, replica = %m.replicas[index],
                            "replica fetch refused, the stream ends: {}", e.message
                        );
                        self.end_stream(m, index, session);
                        return Err(e);
                    }
                    Err(e) => return Err(e.into()),
                };
                // The session may have been replaced while this fetch waited.
                if let Some(s) = m.sessions.borrow_mut()[index].as_mut() {
                    if s.session == session {
                        s.sent_end = s.sent_end.max(next);
                        s.sent_end_checked = s.sent_end == next || s.sent_end_checked;
                    }
                }
                let batches = batches
                    .into_iter()
                    .map(|b| WireBatch { position: b.position.get(), bytes: b.bytes })
                    .collect();
                Ok(Response::Replication(ReplResponse::Fetch {
                    confirmed: m.confirmed(),
                    topics_epoch: self.topics.borrow().epoch,
                    next,
                    batches,
                }))
            }
            ReplRequest::Topics => Ok(Response::Replication(ReplResponse::Topics {
                table_json: self.topics.borrow().to_json(),
            })),
            ReplRequest::Promote { .. } => unreachable!("answered above"),
        }
    }
}
