//! Consumer groups from the client: membership, the members-changed watch, committed offsets,
//! queue locks, offset reset, group deletion, and `describe` (members, assignment, offsets and
//! lag) for tools.
//!
//! Every call goes to the group's coordinator shard directly (`crc32c(group) % shards`, the
//! broker's rule; [`Router::coordinator_connection`]); a `NOT_COORDINATOR` answer (the layout
//! changed) makes the next call ask for the layout again.

use std::sync::Arc;
use std::time::Duration;

use super::admin::AdminClient;
use super::error::{ClientError, Result};
use super::router::Router;
use crate::group::allocate::{AllocMember, AllocQueue, Strategy};
use crate::protocol::group::{
    GroupMember, GroupQueue, GroupRequest, GroupResponse, GroupSummary, QueueCommit, ResetTo,
};
use crate::protocol::{ErrorCode, Request, Response, SendStatus};

/// One queue of a group as `describe` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLag {
    pub topic: String,
    pub queue_id: u32,
    /// The member the default allocation (averagely) gives the queue, if any member
    /// subscribes to its topic.
    pub assigned_to: Option<String>,
    pub committed: Option<u64>,
    /// The queue's next offset.
    pub max_offset: u64,
    /// `max_offset - committed` (from the queue's first offset when nothing is committed).
    pub lag: u64,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The group's version.
    pub version: u64,
    /// The member list or a subscription changed: members must rebalance.
    pub changed: bool,
    /// The member is expired (and its queue locks released) unless it heartbeats again
    /// within this: it must not act on its locks past it.
    pub session_timeout: Duration,
}

/// What `ringmq group describe` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub version: u64,
    pub members: Vec<GroupMember>,
    pub queues: Vec<QueueLag>,
    pub total_lag: u64,
}

pub struct GroupClient {
    router: Arc<Router>,
}

fn unexpected(what: &str, r: &Response) -> ClientError {
    ClientError::Protocol(format!("{what} got a {:?} reply", r.api_key()))
}

impl GroupClient {
    pub fn new(router: Arc<Router>) -> Self {
        GroupClient { router }
    }

    fn call(&self, request: GroupRequest, timeout: Duration) -> Result<GroupResponse> {
        let what = format!("{:?}", request.api_key());
        let conn = match request.group() {
            Some(group) => self.router.coordinator_connection(group)?,
            None => self.router.bootstrap()?,
        };
        match conn.call(&Request::Group(request), timeout) {
            Ok(Response::Group(g)) => Ok(g),
            Ok(other) => Err(unexpected(&what, &other)),
            Err(e) => {
                if e.code() == Some(ErrorCode::NOT_COORDINATOR) {
                    self.router.refresh_layout();
                }
                Err(e)
            }
        }
    }

    fn timeout(&self) -> Duration {
        self.router.options.request_timeout
    }

    /// Joins `group` (or renews the session) with these (topic, tag expression)
    /// subscriptions; `room` labels the member's machine room ("" for none).
    pub fn heartbeat(
        &self,
        group: &str,
        client_id: &str,
        room: &str,
        subscriptions: &[(String, String)],
    ) -> Result<HeartbeatAck> {
        let req = GroupRequest::Heartbeat {
            group: group.into(),
            client_id: client_id.into(),
            room: room.into(),
            subscriptions: subscriptions.to_vec(),
        };
        match self.call(req, self.timeout())? {
            GroupResponse::Heartbeat { version, changed, session_timeout_ms } => Ok(HeartbeatAck {
                version,
                changed,
                session_timeout: Duration::from_millis(session_timeout_ms.into()),
            }),
            other => Err(unexpected("heartbeat", &Response::Group(other))),
        }
    }

    /// Leaves the group (a clean shutdown, after committing).
    pub fn leave(&self, group: &str, client_id: &str) -> Result<u64> {
        let req = GroupRequest::Leave { group: group.into(), client_id: client_id.into() };
        match self.call(req, self.timeout())? {
            GroupResponse::Leave { version } => Ok(version),
            other => Err(unexpected("leave", &Response::Group(other))),
        }
    }

    /// The group's version and members (sorted by client id).
    pub fn members(&self, group: &str) -> Result<(u64, Vec<GroupMember>)> {
        match self.call(GroupRequest::Members { group: group.into() }, self.timeout())? {
            GroupResponse::Members { version, members } => Ok((version, members)),
            other => Err(unexpected("members", &Response::Group(other))),
        }
    }

    /// Waits until the group's version differs from `version` (at most `max_wait`); returns
    /// the version then.
    pub fn watch(&self, group: &str, version: u64, max_wait: Duration) -> Result<u64> {
        let max_wait_ms = max_wait.as_millis().min(u32::MAX.into()) as u32;
        let req = GroupRequest::Watch { group: group.into(), version, max_wait_ms };
        match self.call(req, max_wait + self.timeout())? {
            GroupResponse::Watch { version } => Ok(version),
            other => Err(unexpected("watch", &Response::Group(other))),
        }
    }

    /// Commits next offsets (all or nothing). `generation`: the group version the caller
    /// rebalanced on, or 0 for a tool.
    pub fn commit(
        &self,
        group: &str,
        generation: u64,
        offsets: &[(String, u32, u64)],
    ) -> Result<SendStatus> {
        let offsets = offsets
            .iter()
            .map(|(topic, queue_id, offset)| QueueCommit {
                topic: topic.clone(),
                queue_id: *queue_id,
                offset: *offset,
            })
            .collect();
        let req = GroupRequest::CommitOffsets { group: group.into(), generation, offsets };
        match self.call(req, self.timeout())? {
            GroupResponse::CommitOffsets { status } => Ok(status),
            other => Err(unexpected("commit", &Response::Group(other))),
        }
    }

    /// Committed offsets of these queues (every committed queue of the group when empty).
    pub fn committed(
        &self,
        group: &str,
        queues: &[(String, u32)],
    ) -> Result<Vec<(String, u32, Option<u64>)>> {
        let queues = queues
            .iter()
            .map(|(topic, queue_id)| GroupQueue { topic: topic.clone(), queue_id: *queue_id })
            .collect();
        let req = GroupRequest::FetchOffsets { group: group.into(), queues };
        match self.call(req, self.timeout())? {
            GroupResponse::FetchOffsets { offsets } => Ok(offsets
                .into_iter()
                .map(|(q, o)| (q.topic, q.queue_id, u64::try_from(o).ok()))
                .collect()),
            other => Err(unexpected("fetch offsets", &Response::Group(other))),
        }
    }

    /// Locks (or renews) queues for `client_id` for `lease`; returns those it holds.
    pub fn lock(
        &self,
        group: &str,
        client_id: &str,
        lease: Duration,
        queues: &[(String, u32)],
    ) -> Result<Vec<(String, u32)>> {
        let req = GroupRequest::Lock {
            group: group.into(),
            client_id: client_id.into(),
            lease_ms: lease.as_millis().clamp(1, u32::MAX.into()) as u32,
            queues: queues
                .iter()
                .map(|(topic, queue_id)| GroupQueue { topic: topic.clone(), queue_id: *queue_id })
                .collect(),
        };
        match self.call(req, self.timeout())? {
            GroupResponse::Lock { granted } => {
                Ok(granted.into_iter().map(|q| (q.topic, q.queue_id)).collect())
            }
            other => Err(unexpected("lock", &Response::Group(other))),
        }
    }

    pub fn unlock(&self, group: &str, client_id: &str, queues: &[(String, u32)]) -> Result<u32> {
        let req = GroupRequest::Unlock {
            group: group.into(),
            client_id: client_id.into(),
            queues: queues
                .iter()
                .map(|(topic, queue_id)| GroupQueue { topic: topic.clone(), queue_id: *queue_id })
                .collect(),
        };
        match self.call(req, self.timeout())? {
            GroupResponse::Unlock { released } => Ok(released),
            other => Err(unexpected("unlock", &Response::Group(other))),
        }
    }

    /// Moves the group's committed offset on every queue of `topic`; returns (queue, offset).
    pub fn reset(&self, group: &str, topic: &str, to: ResetTo) -> Result<Vec<(u32, u64)>> {
        let req = GroupRequest::Reset { group: group.into(), topic: topic.into(), to };
        match self.call(req, self.timeout())? {
            GroupResponse::Reset { offsets } => Ok(offsets),
            other => Err(unexpected("reset", &Response::Group(other))),
        }
    }

    /// Deletes a group without members: forgets its committed offsets (durably, before the
    /// answer) and returns how many queues' offsets went. `GROUP_NOT_EMPTY` while it has
    /// members.
    pub fn delete(&self, group: &str) -> Result<u32> {
        let req = GroupRequest::Delete { group: group.into() };
        match self.call(req, self.timeout())? {
            GroupResponse::Delete { removed } => Ok(removed),
            other => Err(unexpected("delete group", &Response::Group(other))),
        }
    }

    /// One page of the broker's groups (with members or committed offsets): those whose names
    /// sort after `after` (`""`: from the first), in name order, as many as fit one answer
    /// frame; and whether more remain (ask again after the last one listed).
    pub fn list_page(&self, after: &str) -> Result<(Vec<GroupSummary>, bool)> {
        let request = GroupRequest::ListGroups { after: Some(after.to_owned()) };
        match self.call(request, self.timeout())? {
            // A broker answers `more` to a request with `after`; without it, it listed all.
            GroupResponse::ListGroups { groups, more } => Ok((groups, more.unwrap_or(false))),
            other => Err(unexpected("list groups", &Response::Group(other))),
        }
    }

    /// Every group of the broker, page by page: `visit` gets each page, in name order.
    pub fn list_each(&self, mut visit: impl FnMut(Vec<GroupSummary>)) -> Result<()> {
        let mut after = String::new();
        loop {
            let (groups, more) = self.list_page(&after)?;
            if let Some(g) = groups.iter().find(|g| g.group <= after) {
                return Err(ClientError::Protocol(format!(
                    "LIST_GROUPS after {after:?} listed {:?}, not after it",
                    g.group
                )));
            }
            let next = groups.last().map(|g| g.group.clone());
            visit(groups);
            match next {
                Some(last) if more => after = last,
                None if more => {
                    return Err(ClientError::Protocol(format!(
                        "LIST_GROUPS after {after:?} said more remain but listed none"
                    )))
                }
                _ => return Ok(()),
            }
        }
    }

    /// Every group of the broker (with members or committed offsets), in name order: every
    /// page of [`Self::list_page`].
    pub fn list(&self) -> Result<Vec<GroupSummary>> {
        let mut all = Vec::new();
        self.list_each(|page| all.extend(page))?;
        Ok(all)
    }

    /// Members, the queues of the topics they subscribe to (and of topics the group
    /// committed), each queue's assignment by the default allocation, committed offset, end
    /// and lag.
    pub fn describe(&self, group: &str) -> Result<GroupDescription> {
        let (version, members) = self.members(group)?;
        let committed = self.committed(group, &[])?;
        let mut topics: Vec<String> = members
            .iter()
            .flat_map(|m| m.subscriptions.iter().map(|(t, _)| t.clone()))
            .chain(committed.iter().map(|(t, _, _)| t.clone()))
            .collect();
        topics.sort();
        topics.dedup();
        let admin = AdminClient::new(self.router.clone());
        let mut queues = Vec::new();
        let mut total_lag = 0u64;
        for topic in topics {
            let route = match admin.route(&topic) {
                Ok(r) => r,
                // A committed topic deleted since: nothing to report for it.
                Err(e) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC) => continue,
                Err(e) => return Err(e),
            };
            let subscribers: Vec<AllocMember> = members
                .iter()
                .filter(|m| m.subscriptions.iter().any(|(t, _)| *t == topic))
                .map(|m| AllocMember {
                    client_id: m.client_id.clone(),
                    room: (!m.room.is_empty()).then(|| m.room.clone()),
                })
                .collect();
            let all: Vec<AllocQueue> = (0..route.queue_count())
                .map(|queue_id| AllocQueue { topic: topic.clone(), queue_id, room: None })
                .collect();
            let mut owner = vec![None; all.len()];
            for m in &subscribers {
                for q in Strategy::Averagely.allocate(&m.client_id, &subscribers, &all) {
                    owner[q.queue_id as usize] = Some(m.client_id.clone());
                }
            }
            for queue_id in 0..route.queue_count() {
                let bounds = admin.queue_offsets(&topic, queue_id)?;
                let c = committed
                    .iter()
                    .find(|(t, q, _)| *t == topic && *q == queue_id)
                    .and_then(|(_, _, o)| *o);
                let lag = bounds.next.saturating_sub(c.unwrap_or(bounds.min).max(bounds.min));
                total_lag = total_lag.saturating_add(lag);
                queues.push(QueueLag {
                    topic: topic.clone(),
                    queue_id,
                    assigned_to: owner[queue_id as usize].clone(),
                    committed: c,
                    max_offset: bounds.next,
                    lag,
                });
            }
        }
        Ok(GroupDescription { group: group.into(), version, members, queues, total_lag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::scripted_broker::{one_shard_with, scripted_broker};
    use crate::client::Client;

    #[test]
    fn describe_saturates_a_total_lag_past_u64_max_instead_of_overflowing() {
        // A broker whose two queues each claim nearly u64::MAX messages.
        let addr = scripted_broker(|port, request| match request {
            Request::Metadata { topics } => one_shard_with(port, topics, 2),
            Request::Group(GroupRequest::Members { .. }) => {
                let member = GroupMember {
                    client_id: "a".into(),
                    room: String::new(),
                    subscriptions: vec![("t".into(), "*".into())],
                };
                Response::Group(GroupResponse::Members { version: 1, members: vec![member] })
            }
            Request::Group(GroupRequest::FetchOffsets { .. }) => {
                Response::Group(GroupResponse::FetchOffsets { offsets: Vec::new() })
            }
            Request::Offsets { .. } => {
                Response::Offsets { min_offset: 0, next_offset: u64::MAX, timestamp_offset: 0 }
            }
            other => panic!("unexpected {other:?}"),
        });
        let d = Client::connect(&addr).unwrap().groups().describe("g").unwrap();
        assert_eq!(d.queues.len(), 2);
        assert!(d.queues.iter().all(|q| q.lag == u64::MAX));
        assert_eq!(d.total_lag, u64::MAX);
    }
}
