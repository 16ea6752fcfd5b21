//! Consumer-group requests and responses (api keys 10-19 and 45): membership, the
//! members-changed notice, committed offsets, queue locks, offset reset, the group list and
//! the deletion of a group without members.
//!
//! Every request but `ListGroups` names a group and is served by the group's coordinator shard
//! (`crc32c(group) % shards`, see `broker::routing::coordinator_shard`); another shard forwards
//! it there. The members-changed notice is a parked request: `WatchGroup` returns as soon as the
//! group's version differs from the one the member knows (or after `max_wait_ms`), so a member
//! that keeps one watch outstanding hears of a change within a round trip, without the broker
//! ever writing a frame nobody asked for. Layouts are in docs/protocol.md ("Consumer groups").

use super::api::ApiKey;
use super::codec::{DecodeError, Reader, Writer};
use super::message::{SendStatus, MAX_LIST_ITEMS};

/// One queue of a topic, as group requests name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupQueue {
    pub topic: String,
    pub queue_id: u32,
}

/// The next offset a group consumes on a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCommit {
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
}

/// A member as `GroupMembers` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub client_id: String,
    /// Machine room label; empty for none.
    pub room: String,
    /// (topic, tag expression), sorted by topic.
    pub subscriptions: Vec<(String, String)>,
}

/// Where `ResetOffsets` moves a group on every queue of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The queue's first stored offset.
    Earliest,
    /// The queue's next offset (skip everything stored).
    Latest,
    /// The first offset stored at or after this time (ms since the epoch).
    Timestamp(i64),
    /// This offset, clamped to what the queue stores.
    Offset(u64),
}

/// One group in a `ListGroups` answer (from every shard's coordinator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: String,
    pub members: u32,
    pub version: u64,
    /// Queues with a committed offset.
    pub committed_queues: u32,
}

/// Bytes of a `ListGroups` answer frame besides its groups: length prefix, response header
/// and the group count (plus 1 for `more` when the request carried `after`).
pub const LIST_GROUPS_ANSWER_FIXED_BYTES: usize =
    super::frame::LEN_PREFIX + super::frame::RESPONSE_HEADER_LEN + 4;

/// A group's bytes in a `ListGroups` answer: `string group, u32 members, u64 version, u32
/// committed_queues`.
pub fn group_summary_bytes(group: &str) -> usize {
    2 + group.len() + 4 + 8 + 4
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRequest {
    /// Joins `group` or renews the session; the subscriptions and room replace earlier ones.
    Heartbeat {
        group: String,
        client_id: String,
        room: String,
        subscriptions: Vec<(String, String)>,
    },
    /// Leaves (a clean shutdown): the group rebalances at once instead of after the session.
    Leave {
        group: String,
        client_id: String,
    },
    Members {
        group: String,
    },
    /// Parks until the group's version differs from `version`, at most `max_wait_ms`.
    Watch {
        group: String,
        version: u64,
        max_wait_ms: u32,
    },
    /// Commits next offsets, all-or-nothing, acknowledged once durable per the flush mode.
    /// `generation` is the group version the committer rebalanced on (0: not a member, e.g. a
    /// tool); a commit from before the group's last reset is refused (`STALE_GENERATION`).
    CommitOffsets {
        group: String,
        generation: u64,
        offsets: Vec<QueueCommit>,
    },
    /// Committed offsets of these queues; every queue the group committed when empty.
    FetchOffsets {
        group: String,
        queues: Vec<GroupQueue>,
    },
    /// Locks (or renews) queues for `client_id` for `lease_ms`; answers those it holds.
    Lock {
        group: String,
        client_id: String,
        lease_ms: u32,
        queues: Vec<GroupQueue>,
    },
    Unlock {
        group: String,
        client_id: String,
        queues: Vec<GroupQueue>,
    },
    /// Moves the group's committed offset on every queue of `topic`.
    Reset {
        group: String,
        topic: String,
        to: ResetTo,
    },
    /// A page of the broker's groups, in name order: those whose names sort after `after`,
    /// as many as fit one answer frame. `after` is optional on the wire: a request without it
    /// (an empty payload, what clients before paging send) gets the first page and an answer
    /// without `more`; one with it (`Some("")` for the first page) gets `more`.
    ListGroups {
        after: Option<String>,
    },
    /// Forgets a group without members: its committed offsets (and its reset fence). Refused
    /// with `GROUP_NOT_EMPTY` while the group has members.
    Delete {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupResponse {
    /// `changed`: the member list or a subscription changed; members must rebalance.
    /// `session_timeout_ms`: without another heartbeat within it the member is expired and
    /// its locks released, so a member must not act on its locks past that.
    Heartbeat {
        version: u64,
        changed: bool,
        session_timeout_ms: u32,
    },
    /// The group's version after the leave (0 if the client was not a member).
    Leave {
        version: u64,
    },
    /// Version 0 and no members for a group without members.
    Members {
        version: u64,
        members: Vec<GroupMember>,
    },
    Watch {
        version: u64,
    },
    CommitOffsets {
        status: SendStatus,
    },
    /// `offset` -1: nothing committed for that queue.
    FetchOffsets {
        offsets: Vec<(GroupQueue, i64)>,
    },
    Lock {
        granted: Vec<GroupQueue>,
    },
    Unlock {
        released: u32,
    },
    /// The committed offset each queue of the topic was moved to.
    Reset {
        offsets: Vec<(u32, u64)>,
    },
    /// `more`: groups after the last one listed remain (ask again with `after` set to its
    /// name); present only when the request carried `after`.
    ListGroups {
        groups: Vec<GroupSummary>,
        more: Option<bool>,
    },
    /// How many queues' committed offsets the deletion forgot (0: nothing was committed).
    Delete {
        removed: u32,
    },
}

/// Smallest encoded group queue: an empty topic name and a queue id.
const QUEUE_BYTES: usize = 2 + 4;

impl GroupRequest {
    pub fn api_key(&self) -> ApiKey {
        match self {
            GroupRequest::Heartbeat { .. } => ApiKey::Heartbeat,
            GroupRequest::Leave { .. } => ApiKey::LeaveGroup,
            GroupRequest::Members { .. } => ApiKey::GroupMembers,
            GroupRequest::Watch { .. } => ApiKey::WatchGroup,
            GroupRequest::CommitOffsets { .. } => ApiKey::CommitOffsets,
            GroupRequest::FetchOffsets { .. } => ApiKey::FetchOffsets,
            GroupRequest::Lock { .. } => ApiKey::LockQueues,
            GroupRequest::Unlock { .. } => ApiKey::UnlockQueues,
            GroupRequest::Reset { .. } => ApiKey::ResetOffsets,
            GroupRequest::ListGroups { .. } => ApiKey::ListGroups,
            GroupRequest::Delete { .. } => ApiKey::DeleteGroup,
        }
    }

    /// The group whose coordinator serves the request (`None` for `ListGroups`).
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupRequest::Heartbeat { group, .. }
            | GroupRequest::Leave { group, .. }
            | GroupRequest::Members { group }
            | GroupRequest::Watch { group, .. }
            | GroupRequest::CommitOffsets { group, .. }
            | GroupRequest::FetchOffsets { group, .. }
            | GroupRequest::Lock { group, .. }
            | GroupRequest::Unlock { group, .. }
            | GroupRequest::Reset { group, .. }
            | GroupRequest::Delete { group } => Some(group),
            GroupRequest::ListGroups { .. } => None,
        }
    }

    pub(super) fn encode_body(&self, w: &mut Writer) {
        match self {
            GroupRequest::Heartbeat { group, client_id, room, subscriptions } => {
                w.string(group).string(client_id).string(room).count(subscriptions.len());
                for (topic, expression) in subscriptions {
                    w.string(topic).string(expression);
                }
            }
            GroupRequest::Leave { group, client_id } => {
                w.string(group).string(client_id);
            }
            GroupRequest::Members { group } | GroupRequest::Delete { group } => {
                w.string(group);
            }
            GroupRequest::Watch { group, version, max_wait_ms } => {
                w.string(group).u64(*version).u32(*max_wait_ms);
            }
            GroupRequest::CommitOffsets { group, generation, offsets } => {
                w.string(group).u64(*generation).count(offsets.len());
                for c in offsets {
                    w.string(&c.topic).u32(c.queue_id).u64(c.offset);
                }
            }
            GroupRequest::FetchOffsets { group, queues } => {
                w.string(group);
                put_queues(w, queues);
            }
            GroupRequest::Lock { group, client_id, lease_ms, queues } => {
                w.string(group).string(client_id).u32(*lease_ms);
                put_queues(w, queues);
            }
            GroupRequest::Unlock { group, client_id, queues } => {
                w.string(group).string(client_id);
                put_queues(w, queues);
            }
            GroupRequest::Reset { group, topic, to } => {
                w.string(group).string(topic);
                let (mode, value) = match *to {
                    ResetTo::Earliest => (0, 0),
                    ResetTo::Latest => (1, 0),
                    ResetTo::Timestamp(ms) => (2, ms),
                    ResetTo::Offset(o) => (3, o as i64),
                };
                w.u8(mode).i64(value);
            }
            GroupRequest::ListGroups { after } => {
                if let Some(after) = after {
                    w.string(after);
                }
            }
        }
    }

    pub(super) fn decode_body(api: ApiKey, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            ApiKey::Heartbeat => {
                let group = r.string("group")?;
                let client_id = r.string("client_id")?;
                let room = r.string("room")?;
                let n = r.count("subscriptions", MAX_LIST_ITEMS, 4)?;
                let mut subscriptions = Vec::with_capacity(n);
                for _ in 0..n {
                    subscriptions.push((r.string("topic")?, r.string("expression")?));
                }
                GroupRequest::Heartbeat { group, client_id, room, subscriptions }
            }
            ApiKey::LeaveGroup => {
                GroupRequest::Leave { group: r.string("group")?, client_id: r.string("client_id")? }
            }
            ApiKey::GroupMembers => GroupRequest::Members { group: r.string("group")? },
            ApiKey::WatchGroup => GroupRequest::Watch {
                group: r.string("group")?,
                version: r.u64("version")?,
                max_wait_ms: r.u32("max_wait_ms")?,
            },
            ApiKey::CommitOffsets => {
                let group = r.string("group")?;
                let generation = r.u64("generation")?;
                let n = r.count("offsets", MAX_LIST_ITEMS, QUEUE_BYTES + 8)?;
                let mut offsets = Vec::with_capacity(n);
                for _ in 0..n {
                    offsets.push(QueueCommit {
                        topic: r.string("topic")?,
                        queue_id: r.u32("queue_id")?,
                        offset: r.u64("offset")?,
                    });
                }
                GroupRequest::CommitOffsets { group, generation, offsets }
            }
            ApiKey::FetchOffsets => {
                GroupRequest::FetchOffsets { group: r.string("group")?, queues: get_queues(r)? }
            }
            ApiKey::LockQueues => GroupRequest::Lock {
                group: r.string("group")?,
                client_id: r.string("client_id")?,
                lease_ms: r.u32("lease_ms")?,
                queues: get_queues(r)?,
            },
            ApiKey::UnlockQueues => GroupRequest::Unlock {
                group: r.string("group")?,
                client_id: r.string("client_id")?,
                queues: get_queues(r)?,
            },
            ApiKey::ResetOffsets => {
                let group = r.string("group")?;
                let topic = r.string("topic")?;
                let mode = r.u8("mode")?;
                let value = r.i64("value")?;
                let to = match mode {
                    0 => ResetTo::Earliest,
                    1 => ResetTo::Latest,
                    2 => ResetTo::Timestamp(value),
                    3 if value >= 0 => ResetTo::Offset(value as u64),
                    3 => {
                        return Err(DecodeError::BadValue { field: "offset", value: value as u64 })
                    }
                    m => return Err(DecodeError::BadValue { field: "mode", value: m.into() }),
                };
                GroupRequest::Reset { group, topic, to }
            }
            // Clients before paging send nothing: the first page.
            ApiKey::ListGroups if r.remaining() == 0 => GroupRequest::ListGroups { after: None },
            ApiKey::ListGroups => GroupRequest::ListGroups { after: Some(r.string("after")?) },
            ApiKey::DeleteGroup => GroupRequest::Delete { group: r.string("group")? },
            _ => unreachable!("decode_body is called for group api keys only"),
        })
    }
}

impl GroupResponse {
    pub fn api_key(&self) -> ApiKey {
        match self {
            GroupResponse::Heartbeat { .. } => ApiKey::Heartbeat,
            GroupResponse::Leave { .. } => ApiKey::LeaveGroup,
            GroupResponse::Members { .. } => ApiKey::GroupMembers,
            GroupResponse::Watch { .. } => ApiKey::WatchGroup,
            GroupResponse::CommitOffsets { .. } => ApiKey::CommitOffsets,
            GroupResponse::FetchOffsets { .. } => ApiKey::FetchOffsets,
            GroupResponse::Lock { .. } => ApiKey::LockQueues,
            GroupResponse::Unlock { .. } => ApiKey::UnlockQueues,
            GroupResponse::Reset { .. } => ApiKey::ResetOffsets,
            GroupResponse::ListGroups { .. } => ApiKey::ListGroups,
            GroupResponse::Delete { .. } => ApiKey::DeleteGroup,
        }
    }

    pub(super) fn encode_body(&self, w: &mut Writer) {
        match self {
            GroupResponse::Heartbeat { version, changed, session_timeout_ms } => {
                w.u64(*version).u8(u8::from(*changed)).u32(*session_timeout_ms);
            }
            GroupResponse::Leave { version } | GroupResponse::Watch { version } => {
                w.u64(*version);
            }
            GroupResponse::Members { version, members } => {
                w.u64(*version).count(members.len());
                for m in members {
                    w.string(&m.client_id).string(&m.room).count(m.subscriptions.len());
                    for (topic, expression) in &m.subscriptions {
                        w.string(topic).string(expression);
                    }
                }
            }
            GroupResponse::CommitOffsets { status } => {
                w.u8(*status as u8);
            }
            GroupResponse::FetchOffsets { offsets } => {
                w.count(offsets.len());
                for (q, offset) in offsets {
                    w.string(&q.topic).u32(q.queue_id).i64(*offset);
                }
            }
            GroupResponse::Lock { granted } => put_queues(w, granted),
            GroupResponse::Unlock { released } | GroupResponse::Delete { removed: released } => {
                w.u32(*released);
            }
            GroupResponse::Reset { offsets } => {
                w.count(offsets.len());
                for (queue_id, offset) in offsets {
                    w.u32(*queue_id).u64(*offset);
                }
            }
            GroupResponse::ListGroups { groups, more } => {
                w.count(groups.len());
                for g in groups {
                    w.string(&g.group).u32(g.members).u64(g.version).u32(g.committed_queues);
                }
                if let Some(more) = more {
                    w.u8(u8::from(*more));
                }
            }
        }
    }

    pub(super) fn decode_body(api: ApiKey, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            ApiKey::Heartbeat => GroupResponse::Heartbeat {
                version: r.u64("version")?,
                changed: match r.u8("changed")? {
                    0 => false,
                    1 => true,
                    v => return Err(DecodeError::BadValue { field: "changed", value: v.into() }),
                },
                session_timeout_ms: r.u32("session_timeout_ms")?,
            },
            ApiKey::LeaveGroup => GroupResponse::Leave { version: r.u64("version")? },
            ApiKey::WatchGroup => GroupResponse::Watch { version: r.u64("version")? },
            ApiKey::GroupMembers => {
                let version = r.u64("version")?;
                let n = r.count("members", MAX_LIST_ITEMS, 2 + 2 + 4)?;
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    let client_id = r.string("client_id")?;
                    let room = r.string("room")?;
                    let k = r.count("subscriptions", MAX_LIST_ITEMS, 4)?;
                    let mut subscriptions = Vec::with_capacity(k);
                    for _ in 0..k {
                        subscriptions.push((r.string("topic")?, r.string("expression")?));
                    }
                    members.push(GroupMember { client_id, room, subscriptions });
                }
                GroupResponse::Members { version, members }
            }
            ApiKey::CommitOffsets => GroupResponse::CommitOffsets {
                status: match r.u8("status")? {
                    0 => SendStatus::SendOk,
                    1 => SendStatus::FlushDiskTimeout,
                    v => return Err(DecodeError::BadValue { field: "status", value: v.into() }),
                },
            },
            ApiKey::FetchOffsets => {
                let n = r.count("offsets", MAX_LIST_ITEMS, QUEUE_BYTES + 8)?;
                let mut offsets = Vec::with_capacity(n);
                for _ in 0..n {
                    let q = GroupQueue { topic: r.string("topic")?, queue_id: r.u32("queue_id")? };
                    offsets.push((q, r.i64("offset")?));
                }
                GroupResponse::FetchOffsets { offsets }
            }
            ApiKey::LockQueues => GroupResponse::Lock { granted: get_queues(r)? },
            ApiKey::UnlockQueues => GroupResponse::Unlock { released: r.u32("released")? },
            ApiKey::ResetOffsets => {
                let n = r.count("offsets", MAX_LIST_ITEMS, 12)?;
                let mut offsets = Vec::with_capacity(n);
                for _ in 0..n {
                    offsets.push((r.u32("queue_id")?, r.u64("offset")?));
                }
                GroupResponse::Reset { offsets }
            }
            ApiKey::ListGroups => {
                let n = r.count("groups", MAX_LIST_ITEMS, 2 + 16)?;
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    groups.push(GroupSummary {
                        group: r.string("group")?,
                        members: r.u32("members")?,
                        version: r.u64("version")?,
                        committed_queues: r.u32("committed_queues")?,
                    });
                }
                // A broker answers `more` only to a request that carried `after`.
                let more = match r.remaining() {
                    0 => None,
                    _ => Some(match r.u8("more")? {
                        0 => false,
                        1 => true,
                        v => return Err(DecodeError::BadValue { field: "more", value: v.into() }),
                    }),
                };
                GroupResponse::ListGroups { groups, more }
            }
            ApiKey::DeleteGroup => GroupResponse::Delete { removed: r.u32("removed")? },
            _ => unreachable!("decode_body is called for group api keys only"),
        })
    }
}

fn put_queues(w: &mut Writer, queues: &[GroupQueue]) {
    w.count(queues.len());
    for q in queues {
        w.string(&q.topic).u32(q.queue_id);
    }
}

fn get_queues(r: &mut Reader<'_>) -> Result<Vec<GroupQueue>, DecodeError> {
    let n = r.count("queues", MAX_LIST_ITEMS, QUEUE_BYTES)?;
    let mut queues = Vec::with_capacity(n);
    for _ in 0..n {
        queues.push(GroupQueue { topic: r.string("topic")?, queue_id: r.u32("queue_id")? });
    }
    Ok(queues)
}
