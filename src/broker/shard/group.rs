//! Consumer groups on their coordinator shard (`crc32c(group) % shards`): the thin task around
//! the pure [`crate::group::coordinator::Coordinator`].
//!
//! - Group requests decoded on another shard are forwarded here over the data mesh (clients
//!   that know the shard layout connect to the coordinator directly).
//! - Committed offsets live in this shard's log, in the system queue [`SYS_OFFSETS`] (never in
//!   the topic table, so no client reads or writes it as a topic). A commit is checked, appended
//!   as one batch of records, applied to the coordinator in the same step as its copy into the
//!   log (the `group_gate` keeps check, copy and apply together), and acknowledged once durable
//!   per the flush mode: in sync mode an acknowledged commit survives a crash.
//! - Snapshots of all offsets are appended to the same queue under the same gate (by count
//!   and at least every `group.snapshot_interval_ms`); at startup [`Shard::start_groups`] finds
//!   the last complete snapshot by reading the queue backwards in steps and replays from there.
//! - The members-changed notice is a parked `WATCH_GROUP`: it returns when the group's version
//!   moves (join, leave, expiry, subscription change, offset reset), bounded by
//!   `group.max_watchers` per shard.
//! - [`Shard::group_tick`] (every [`GROUP_TICK`]) expires sessions and locks, wakes watchers,
//!   forgets the offsets of groups without members past `group.offsets_retention_ms`, and
//!   takes a snapshot when one is due or offsets went.
//! - DELETE_GROUP forgets a group without members: its offsets go and a snapshot is appended
//!   (under the gate) and durable per the flush mode before the answer, so a restart does not
//!   replay the forgotten commits.

use super::super::shard_log::AppendOutcome;
use super::super::shutdown::Stop;
use super::*;
use crate::group::coordinator::{CommitError, DeleteError};
use crate::group::locks::{LockedQueue, DEFAULT_LOCK_LEASE};
use crate::group::membership::{GroupError, MemberInfo, Subscription};
use crate::group::offsets::{
    parse_snapshot_key, snapshot_key, OffsetError, OffsetsReplay, COMMIT_KEY,
};
use crate::protocol::group::{
    group_summary_bytes, GroupMember, GroupQueue, GroupRequest, GroupResponse, GroupSummary,
    ResetTo, LIST_GROUPS_ANSWER_FIXED_BYTES,
};
use crate::protocol::message::MAX_LIST_ITEMS;

use super::super::routing::coordinator_shard;
use super::super::topics::SYSTEM_TOPIC_OFFSETS;

/// The queue of each shard's log holding its coordinator's committed offsets (`%SYS%offsets`).
pub const SYS_OFFSETS: QueueKey =
    QueueKey::new(TopicId::new(SYSTEM_TOPIC_OFFSETS), QueueId::new(0));

/// How often a coordinator expires sessions and locks and checks for a due snapshot.
pub const GROUP_TICK: Duration = Duration::from_millis(250);

mod offsets_log;

/// Parked `WATCH_GROUP` requests, by group; at most `max` in all.
pub(super) struct Watchers {
    by_group: HashMap<String, Vec<oneshot::Sender<u64>>>,
    count: usize,
    max: usize,
}

impl Watchers {
    pub(super) fn new(max: usize) -> Self {
        Watchers { by_group: HashMap::new(), count: 0, max }
    }

    fn add(&mut self, group: &str, tx: oneshot::Sender<u64>) -> Result<(), oneshot::Sender<u64>> {
        if self.count >= self.max {
            // Watches that timed out leave their sender behind: drop those first.
            for v in self.by_group.values_mut() {
                v.retain(|t| !t.is_canceled());
            }
            self.by_group.retain(|_, v| !v.is_empty());
            self.count = self.by_group.values().map(Vec::len).sum();
            if self.count >= self.max {
                return Err(tx);
            }
        }
        self.by_group.entry(group.to_owned()).or_default().push(tx);
        self.count += 1;
        Ok(())
    }

    fn notify(&mut self, group: &str, version: u64) {
        if let Some(waiting) = self.by_group.remove(group) {
            self.count -= waiting.len();
            for tx in waiting {
                let _ = tx.send(version);
            }
        }
    }

    /// The broker is stopping: every watch returns now.
    pub(super) fn close_all(&mut self) {
        self.by_group.clear();
        self.count = 0;
    }
}

fn group_error(e: GroupError) -> BrokerError {
    let code = match e {
        GroupError::TooManyGroups(_)
        | GroupError::TooManyMembers { .. }
        | GroupError::TooManySubscriptions { .. }
        | GroupError::TooManyBytes { .. }
        | GroupError::MembersAnswerTooLarge { .. } => ErrorCode::GROUP_LIMIT,
        GroupError::InvalidName { .. } | GroupError::InvalidExpression(_) => {
            ErrorCode::INVALID_ARGUMENT
        }
        GroupError::NotMember { .. } => ErrorCode::UNKNOWN_MEMBER,
    };
    BrokerError::new(code, e.to_string())
}

fn commit_error(e: CommitError) -> BrokerError {
    let code = match &e {
        CommitError::Stale { .. } => ErrorCode::STALE_GENERATION,
        CommitError::Offsets(OffsetError::TooMany(_))
        | CommitError::Offsets(OffsetError::FetchAnswerTooLarge { .. }) => ErrorCode::GROUP_LIMIT,
        CommitError::Offsets(OffsetError::InvalidName(_)) => ErrorCode::INVALID_ARGUMENT,
        CommitError::Offsets(OffsetError::Malformed(_)) => ErrorCode::INTERNAL,
    };
    BrokerError::new(code, e.to_string())
}

fn delete_error(e: DeleteError) -> BrokerError {
    match e {
        DeleteError::Group(e) => group_error(e),
        e @ DeleteError::NotEmpty { .. } => {
            BrokerError::new(ErrorCode::GROUP_NOT_EMPTY, e.to_string())
        }
    }
}

fn internal(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(ErrorCode::INTERNAL, what.to_string())
}

impl<L: ShardLog> Shard<L> {
    /// A group request decoded on this shard: served here if this shard coordinates the group,
    /// else forwarded to the coordinator. `ListGroups` gathers a page of every shard's groups.
    pub(super) async fn group_request(self: &Rc<Self>, request: GroupRequest) -> Reply {
        let Some(group) = request.group() else {
            let GroupRequest::ListGroups { after } = request else {
                return Err(internal("a group request without a group"));
            };
            return Ok(Response::Group(self.list_groups(after).await));
        };
        let coordinator = coordinator_shard(group, self.shard_count);
        if coordinator == self.id {
            return self.coordinate(request).await.map(Response::Group);
        }
        self.forward(coordinator, Request::Group(request), "the coordinator shard").await
    }

    /// A group request forwarded by another shard.
    pub(super) async fn group_forwarded(self: &Rc<Self>, request: GroupRequest) -> Reply {
        let Some(group) = request.group() else {
            return Err(internal("LIST_GROUPS is never forwarded"));
        };
        let coordinator = coordinator_shard(group, self.shard_count);
        if coordinator != self.id {
            return Err(BrokerError::new(
                ErrorCode::NOT_COORDINATOR,
                format!(
                    "shard {} does not coordinate group {group:?}; shard {coordinator} does",
                    self.id
                ),
            ));
        }
        self.coordinate(request).await.map(Response::Group)
    }

    /// Serves a request for a group this shard coordinates.
    async fn coordinate(
        self: &Rc<Self>,
        request: GroupRequest,
    ) -> Result<GroupResponse, BrokerError> {
        let now = self.clock.now();
        match request {
            GroupRequest::Heartbeat { group, client_id, room, subscriptions } => {
                let member = MemberInfo {
                    client_id,
                    room: (!room.is_empty()).then_some(room),
                    subscriptions: subscriptions
                        .into_iter()
                        .map(|(topic, expression)| Subscription { topic, expression })
                        .collect(),
                };
                let hb = self.coordinator.borrow_mut().heartbeat(&group, member, now);
                let hb = hb.map_err(group_error)?;
                if hb.changed {
                    self.watchers.borrow_mut().notify(&group, hb.version);
                }
                let session_timeout_ms =
                    self.config.group.session_timeout_ms.min(u32::MAX.into()) as u32;
                Ok(GroupResponse::Heartbeat {
                    version: hb.version,
                    changed: hb.changed,
                    session_timeout_ms,
                })
            }
            GroupRequest::Leave { group, client_id } => {
                let version = self.coordinator.borrow_mut().leave(&group, &client_id, now);
                if version != 0 {
                    self.watchers.borrow_mut().notify(&group, version);
                }
                Ok(GroupResponse::Leave { version })
            }
            GroupRequest::Members { group } => {
                let (version, members) = self.coordinator.borrow().members(&group);
                let members = members.into_iter().map(GroupMember::from).collect();
                Ok(GroupResponse::Members { version, members })
            }
            GroupRequest::Watch { group, version, max_wait_ms } => {
                // A parked watch keeps the group's name until it returns: only names a member
                // could join, so group.max_watchers bounds the bytes too (not 64 KiB each).
                self.coordinator.borrow().check_group_name(&group).map_err(group_error)?;
                let current = self.coordinator.borrow().version(&group);
                if current != version || max_wait_ms == 0 || self.stopping.get() {
                    return Ok(GroupResponse::Watch { version: current });
                }
                let (tx, rx) = oneshot::channel();
                if self.watchers.borrow_mut().add(&group, tx).is_err() {
                    return Err(BrokerError::new(
                        ErrorCode::GROUP_LIMIT,
                        format!(
                            "shard {} holds its limit of {} parked watches (group.max_watchers)",
                            self.id, self.config.group.max_watchers
                        ),
                    ));
                }
                let wait = max_wait_ms.min(self.config.broker.max_long_poll_wait_ms);
                let deadline = now + Duration::from_millis(wait.into());
                let woken = runtime::timeout_at(&*self.clock, deadline, rx).await;
                let version = match woken {
                    Some(Ok(v)) => v,
                    _ => self.coordinator.borrow().version(&group),
                };
                Ok(GroupResponse::Watch { version })
            }
            GroupRequest::CommitOffsets { group, generation, offsets } => {
                for c in &offsets {
                    self.queue_entry(&c.topic, c.queue_id)?;
                    // FETCH_OFFSETS answers an i64 (-1: none committed), RESET_OFFSETS and
                    // RocketMQ take no larger offset: a larger one would read back as negative.
                    if i64::try_from(c.offset).is_err() {
                        return Err(BrokerError::new(
                            ErrorCode::INVALID_ARGUMENT,
                            format!(
                                "offset {} of queue {} of {:?} is above {} (offsets are i64)",
                                c.offset,
                                c.queue_id,
                                c.topic,
                                i64::MAX
                            ),
                        ));
                    }
                }
                let offsets = offsets.into_iter().map(|c| (c.topic, c.queue_id, c.offset));
                let status = self.commit_offsets(&group, generation, offsets).await?;
                Ok(GroupResponse::CommitOffsets { status })
            }
            GroupRequest::FetchOffsets { group, queues } => {
                let queues: Vec<(String, u32)> =
                    queues.into_iter().map(|q| (q.topic, q.queue_id)).collect();
                let committed = self.coordinator.borrow().committed(&group, &queues);
                let offsets = committed
                    .into_iter()
                    .map(|(topic, queue_id, o)| {
                        (GroupQueue { topic, queue_id }, o.map_or(-1, |o| o as i64))
                    })
                    .collect();
                Ok(GroupResponse::FetchOffsets { offsets })
            }
            GroupRequest::Lock { group, client_id, lease_ms, queues } => {
                // Every lease, the default one too, is cut to group.max_lock_lease_ms.
                let asked = match lease_ms {
                    0 => DEFAULT_LOCK_LEASE,
                    ms => Duration::from_millis(ms.into()),
                };
                let lease = asked.min(Duration::from_millis(self.config.group.max_lock_lease_ms));
                // Only queues that exist are locked: a lock is kept until its lease ends, and
                // locks on made-up queues would fill the shard's table (`max_queue_locks`, shared
                // by every group) with names of any length. A name no topic can have is bad
                // input; a topic or queue that does not exist (deleted since the client's last
                // route refresh) is left out of the answer like a queue another member holds,
                // so the member's other queues keep their locks.
                for q in &queues {
                    validate_topic_name(&q.topic)?;
                }
                let topics = self.topics.borrow();
                let queues: Vec<LockedQueue> = queues
                    .into_iter()
                    .filter(|q| topics.get(&q.topic).is_some_and(|e| q.queue_id < e.queue_count))
                    .map(|q| LockedQueue { topic: q.topic, queue_id: q.queue_id })
                    .collect();
                drop(topics);
                let granted =
                    self.coordinator.borrow_mut().lock(&group, &client_id, &queues, now, lease);
                let granted = granted
                    .map_err(group_error)?
                    .into_iter()
                    .map(|q| GroupQueue { topic: q.topic, queue_id: q.queue_id })
                    .collect();
                Ok(GroupResponse::Lock { granted })
            }
            GroupRequest::Unlock { group, client_id, queues } => {
                let queues: Vec<LockedQueue> = queues
                    .into_iter()
                    .map(|q| LockedQueue { topic: q.topic, queue_id: q.queue_id })
                    .collect();
                let released = self.coordinator.borrow_mut().unlock(&group, &client_id, &queues);
                Ok(GroupResponse::Unlock { released: released as u32 })
            }
            GroupRequest::Reset { group, topic, to } => {
                self.reset_offsets(&group, &topic, to).await
            }
            GroupRequest::Delete { group } => {
                let removed = self.delete_group(&group).await?;
                Ok(GroupResponse::Delete { removed })
            }
            GroupRequest::ListGroups { .. } => {
                Err(internal("LIST_GROUPS is gathered, not coordinated"))
            }
        }
    }

    /// Appends commits to `%SYS%offsets` as one batch and applies them as it is copied into
    /// the log; resolves once durable per the flush mode.
    async fn commit_offsets(
        &self,
        group: &str,
        generation: u64,
        offsets: impl IntoIterator<Item = (String, u32, u64)>,
    ) -> Result<SendStatus, BrokerError> {
        let gate = self.group_gate.acquire().await;
        let now = self.clock.now();
        let commits = self.coordinator.borrow().check_commit(group, generation, offsets);
        let commits = commits.map_err(commit_error)?;
        if commits.is_empty() {
            return Ok(SendStatus::SendOk);
        }
        let mut builder = BatchBuilder::new(self.config.storage.max_batch_bytes);
        let timestamp_ms = self.clock.unix_ms();
        for c in &commits {
            let body = c
                .encode()
                .map_err(|e| BrokerError::new(ErrorCode::INVALID_ARGUMENT, e.to_string()))?;
            let record =
                Record { key: COMMIT_KEY, tag: b"", properties: &[], body: &body, timestamp_ms };
            builder.push(&record).map_err(|_| {
                BrokerError::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!(
                        "{} offsets do not fit in one commit (storage.max_batch_bytes); commit \
                         fewer queues per request",
                        commits.len()
                    ),
                )
            })?;
        }
        let batch = builder.finish(-1, -1);
        let ((), outcome) = self
            .log
            .append_then(SYS_OFFSETS, &batch, BatchLimit::Produced, move |_| {
                self.coordinator.borrow_mut().apply_commit(commits, now);
                drop(gate);
            })
            .await?;
        Ok(self.ack_status(&outcome).await)
    }

    /// Moves the group's committed offset on every queue of `topic`. Commits from members
    /// that rebalanced before the reset are refused from now on (they fetch the new offsets
    /// when the group's new version reaches them).
    async fn reset_offsets(
        self: &Rc<Self>,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<GroupResponse, BrokerError> {
        validate_topic_name(topic)?;
        let entry = self.topics.borrow().get(topic).ok_or_else(|| {
            BrokerError::new(ErrorCode::UNKNOWN_TOPIC, format!("topic {topic:?} does not exist"))
        })?;
        let timestamp_ms = match to {
            ResetTo::Timestamp(ms) => ms.max(0),
            _ => -1,
        };
        let mut targets = Vec::with_capacity(entry.queue_count as usize);
        for queue_id in 0..entry.queue_count {
            let request = Request::Offsets { topic: topic.to_owned(), queue_id, timestamp_ms };
            let answer = Box::pin(self.dispatch(request)).await?;
            let Answer::Response(Response::Offsets { min_offset, next_offset, timestamp_offset }) =
                answer
            else {
                return Err(internal("an OFFSETS request answered something else"));
            };
            let offset = match to {
                ResetTo::Earliest => min_offset,
                ResetTo::Latest => next_offset,
                ResetTo::Timestamp(_) => timestamp_offset,
                ResetTo::Offset(o) => o.clamp(min_offset, next_offset),
            };
            targets.push((queue_id, offset));
        }
        let version = self.coordinator.borrow_mut().begin_reset(group);
        let commits = targets.iter().map(|&(q, o)| (topic.to_owned(), q, o));
        let committed = self.commit_offsets(group, 0, commits).await;
        if let Some(v) = version {
            self.watchers.borrow_mut().notify(group, v);
        }
        // The answer has no status: a reset its flush (sync flush mode) or the in-sync
        // replicas (sync master) did not confirm in time is an error, not a success.
        let status = committed?;
        if status != SendStatus::SendOk {
            return Err(BrokerError::new(
                ErrorCode::INTERNAL,
                format!(
                    "group {group}'s offsets on {topic} are reset on this broker, but the reset \
                     is not acknowledged ({status:?}): it may be undone by a power cut or a \
                     failover; reset again once the broker and its replicas are healthy"
                ),
            ));
        }
        Ok(GroupResponse::Reset { offsets: targets })
    }

    /// Forgets a group without members (DELETE_GROUP): its offsets go, and a snapshot without
    /// them is appended under the same gate and made durable (whatever the flush mode) and, on
    /// a sync master, confirmed by the in-sync set before the answer, so neither a restart nor
    /// a failover replays the forgotten commits. How many queues' offsets went.
    async fn delete_group(&self, group: &str) -> Result<u32, BrokerError> {
        let gate = self.group_gate.acquire().await;
        let has_offsets = self.coordinator.borrow().check_delete(group).map_err(delete_error)?;
        let (removed, end) = if has_offsets {
            // Forgotten here only as the snapshot without them is copied into the log: a
            // snapshot that cannot be written (a full disk) changes nothing, and deleting the
            // group again writes it.
            let (outcome, removed) = self.append_snapshot(Some(group)).await.map_err(|mut e| {
                e.message = format!("group {group} is not deleted: {}", e.message);
                e
            })?;
            (removed, outcome.end)
        } else {
            // No offsets to forget (its reset fence, if any, goes); a deletion answered with
            // an error before (its snapshot not durable) is made durable by this one.
            self.coordinator.borrow_mut().forget_group(group);
            (0, self.log.append_end())
        };
        // Commits may go on while the snapshot is flushed and the replicas confirm it.
        drop(gate);
        // Durable before the answer whatever the flush mode, and on a sync master on every
        // in-sync replica: a power cut or a failover must not bring the offsets back.
        let not_done = |why: String| {
            let message = format!(
                "group {group}'s committed offsets are forgotten on this broker, but the \
                 snapshot that forgets them {why}: they may come back after a power cut or a \
                 failover; delete the group again once the broker and its replicas are healthy"
            );
            tracing::error!(shard = %self.id, "{message}");
            BrokerError::new(ErrorCode::INTERNAL, message)
        };
        self.durable_and_confirmed(end).await.map_err(not_done)?;
        if removed > 0 {
            tracing::info!(shard = %self.id, group, queues = removed, "group deleted: its committed offsets were forgotten");
        }
        Ok(removed.min(u32::MAX as usize) as u32)
    }

    /// Expires sessions and locks, tells the watchers of groups that changed, and snapshots
    /// the offsets when due (or when retention was held back by their pin). Called every
    /// `GROUP_TICK`.
    pub async fn group_tick(&self) {
        let now = self.clock.now();
        let changed = self.coordinator.borrow_mut().expire(now);
        for (group, version) in changed {
            self.watchers.borrow_mut().notify(&group, version);
        }
        let lapsed = self.coordinator.borrow_mut().expire_offsets(now);
        for (group, queues) in &lapsed {
            tracing::info!(
                shard = %self.id,
                group,
                queues,
                retention_ms = self.config.group.offsets_retention_ms,
                "forgot the committed offsets of a group without members past \
                 group.offsets_retention_ms"
            );
        }
        // A snapshot without the lapsed groups, so that a restart does not replay them; and
        // one when retention wanted to delete what the offsets' pin keeps (the last snapshot
        // is old): the new one moves the pin up.
        let held = self.log.take_retention_held(SYS_OFFSETS);
        if held || !lapsed.is_empty() || self.coordinator.borrow().snapshot_due(now) {
            self.snapshot_offsets_logged().await;
        }
    }

    /// Runs [`Self::group_tick`] every `GROUP_TICK` until `stop`.
    pub async fn group_loop(self: Rc<Self>, stop: Stop) {
        loop {
            let tick = Box::pin(self.clock.sleep_until(self.clock.now() + GROUP_TICK));
            if let Either::Right(_) = select(tick, stop.clone()).await {
                return;
            }
            self.group_tick().await;
        }
    }

    /// A page of every shard's groups (this one's and its peers', over the control mesh): those
    /// after `after` in name order, as many as fit one answer frame (`broker.max_frame_bytes`)
    /// and one list ([`MAX_LIST_ITEMS`]). A request without `after` (a client before paging)
    /// gets the first page, without `more`.
    ///
    /// Each shard answers its own first groups that fit a frame; a shard that had more marks
    /// where the page must end (a group of its after its last one may sort before another
    /// shard's next). The page is kept within a frame after each shard's, so the gathering
    /// holds at most two pages.
    async fn list_groups(&self, after: Option<String>) -> GroupResponse {
        let fixed = LIST_GROUPS_ANSWER_FIXED_BYTES + usize::from(after.is_some());
        let max_bytes = self.config.broker.max_frame_bytes.saturating_sub(fixed);
        let from = after.as_deref().unwrap_or("");
        let mut page = ListPage::new(max_bytes);
        page.add(self.group_page(from, max_bytes));
        for peer in ShardId::all(self.shard_count).filter(|&p| p != self.id) {
            let (reply, rx) = oneshot::channel();
            let ask = Control::Groups { after: from.to_owned(), max_bytes, reply };
            if self.control_mesh.send(peer, ask).await.is_ok() {
                if let Ok(p) = rx.await {
                    page.add(p);
                }
            }
        }
        GroupResponse::ListGroups { more: after.map(|_| page.more()), groups: page.groups }
    }

    /// This shard's groups after `after`, in name order, as many as fit `max_bytes` of a
    /// LIST_GROUPS answer (at least one), and whether more remain.
    pub(super) fn group_page(&self, after: &str, max_bytes: usize) -> GroupPage {
        let (groups, more) =
            self.coordinator.borrow().overview_page(after, max_bytes, MAX_LIST_ITEMS as usize);
        let groups = groups
            .into_iter()
            .map(|g| GroupSummary {
                group: g.group,
                members: g.members.min(u32::MAX as usize) as u32,
                version: g.version,
                committed_queues: g.committed_queues.min(u32::MAX as usize) as u32,
            })
            .collect();
        GroupPage { groups, more }
    }
}

/// One shard's page of LIST_GROUPS: its groups in name order and whether it had more.
#[derive(Debug)]
pub struct GroupPage {
    pub groups: Vec<GroupSummary>,
    pub more: bool,
}

/// The LIST_GROUPS answer being gathered from the shards' pages.
struct ListPage {
    /// Every group of the pages so far up to `end`, in name order.
    groups: Vec<GroupSummary>,
    /// The last name the answer may hold: a shard that had more does not say what its next
    /// group is, nor does a page cut at the frame; None while every page was whole.
    end: Option<String>,
    max_bytes: usize,
}

impl ListPage {
    fn new(max_bytes: usize) -> Self {
        ListPage { groups: Vec::new(), end: None, max_bytes }
    }

    /// Whether groups after the last one gathered remain.
    fn more(&self) -> bool {
        self.end.is_some()
    }

    /// Merges a shard's page: in name order, up to `end`, within the frame and the list bound
    /// (at least one group: a frame of at least 1024 bytes always holds one).
    fn add(&mut self, page: GroupPage) {
        if page.more {
            if let Some(last) = page.groups.last() {
                if self.end.as_ref().map_or(true, |end| last.group < *end) {
                    self.end = Some(last.group.clone());
                }
            }
        }
        self.groups.extend(page.groups);
        self.groups.sort_by(|a, b| a.group.cmp(&b.group));
        if let Some(end) = &self.end {
            let cut = self.groups.partition_point(|g| g.group <= *end);
            self.groups.truncate(cut);
        }
        let mut bytes = 0;
        let mut keep = 0;
        for g in &self.groups {
            let b = group_summary_bytes(&g.group);
            if keep > 0 && (keep >= MAX_LIST_ITEMS as usize || bytes + b > self.max_bytes) {
                break;
            }
            bytes += b;
            keep += 1;
        }
        if keep < self.groups.len() {
            self.groups.truncate(keep);
            self.end = self.groups.last().map(|g| g.group.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(group: &str) -> GroupSummary {
        GroupSummary { group: group.into(), members: 0, version: 0, committed_queues: 1 }
    }

    /// Shard `groups` (sorted) as `group_page` answers: its first after `after` within
    /// `max_bytes` (at least one).
    fn shard_page(groups: &[String], after: &str, max_bytes: usize) -> GroupPage {
        let mut page = Vec::new();
        let mut bytes = 0;
        for g in groups.iter().filter(|g| g.as_str() > after) {
            let b = group_summary_bytes(g);
            if !page.is_empty() && bytes + b > max_bytes {
                return GroupPage { groups: page, more: true };
            }
            bytes += b;
            page.push(summary(g));
        }
        GroupPage { groups: page, more: false }
    }

    /// Pages through shards holding `shards` until a page says no more: every group once, in
    /// order, each page within `max_bytes`.
    fn page_through(shards: &[Vec<String>], max_bytes: usize) -> Vec<String> {
        let mut after = String::new();
        let mut listed = Vec::new();
        for _ in 0..10_000 {
            let mut page = ListPage::new(max_bytes);
            for groups in shards {
                page.add(shard_page(groups, &after, max_bytes));
            }
            let bytes: usize = page.groups.iter().map(|g| group_summary_bytes(&g.group)).sum();
            assert!(bytes <= max_bytes, "{bytes} bytes");
            let more = page.more();
            listed.extend(page.groups.into_iter().map(|g| g.group));
            if !more {
                return listed;
            }
            after = listed.last().expect("a page with more lists a group").clone();
        }
        panic!("paging did not end");
    }

    #[test]
    fn pages_merged_from_shards_list_every_group_once_in_order() {
        // Long names on one shard, short ones on another sorting between them: a shard that
        // stopped early must end the page, or the short names past its next would be listed
        // before it.
        let long = |i: usize| format!("a{i:03}{}", "x".repeat(250));
        let shards = vec![
            (0..40).map(long).collect::<Vec<_>>(),
            (0..300).map(|i| format!("a{i:03}")).collect(),
            (0..7).map(|i| format!("b{i}")).collect(),
            vec![],
        ];
        let mut want: Vec<String> = shards.iter().flatten().cloned().collect();
        want.sort();
        for max_bytes in [300, 1000, 4000, 1 << 20] {
            assert_eq!(page_through(&shards, max_bytes), want, "{max_bytes}");
        }
        // Nothing anywhere: one empty page without more.
        assert_eq!(page_through(&[vec![], vec![]], 1000), Vec::<String>::new());
    }
}
