//! Group membership as the coordinator keeps it: who is in each consumer group, what they
//! subscribe to, when each must next be heard from, and a version that changes whenever the
//! member list does.
//!
//! The coordinator of a group is one shard (`hash(group) % shards`); it runs one [`Groups`]
//! for the groups it coordinates. Members join and stay by heartbeating with their
//! subscriptions; a member not heard from for `session_timeout` is expired. Every change of a
//! group's member list or of a member's subscriptions takes a new version from one counter, so
//! versions only grow, even across a group that emptied and came back; members compare the
//! version they rebalanced on with the one a heartbeat returns, and the coordinator pushes a
//! "members changed" notice with it so the group converges well within a heartbeat interval.
//!
//! Pure: no I/O, no clock reads (every call that needs the time takes `now`), bounded by
//! [`GroupLimits`]. The thin task around it arms one timer at [`Groups::next_expiry`].
//!
//! Sessions are kept in a deadline index ordered by when each ends, so [`Groups::expire`] costs
//! O(expired · log n) and [`Groups::next_expiry`] O(log n), whatever the number of members:
//! with staggered heartbeats the timer fires often, on the shard's only thread.
//!
//! Memory is bounded in bytes too ([`GroupLimits::max_membership_bytes`]): each member is
//! charged [`member_bytes`], each group [`group_bytes`]; a heartbeat that would take the total
//! over the budget is refused, and leaving or expiring gives the bytes back. One group's
//! members must also fit one GROUP_MEMBERS answer frame
//! ([`GroupLimits::max_members_answer_bytes`]), so every member can always read the list it
//! rebalances on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A topic subscription: the topic and a tag expression, `*` or `A || B || C`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subscription {
    pub topic: String,
    pub expression: String,
}

/// A parsed tag expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// `*` (or an empty expression): every message.
    All,
    /// `A || B`: messages with one of these tags.
    Tags(Vec<String>),
}

impl TagFilter {
    /// Parses RocketMQ's tag expression syntax: `*`, or tags separated by `||`.
    pub fn parse(expression: &str) -> Result<TagFilter, GroupError> {
        let e = expression.trim();
        if e.is_empty() || e == "*" {
            return Ok(TagFilter::All);
        }
        let mut tags = Vec::new();
        for t in e.split("||").map(str::trim) {
            if t.is_empty() || t == "*" || t.chars().any(char::is_whitespace) {
                return Err(GroupError::InvalidExpression(expression.to_owned()));
            }
            if !tags.iter().any(|x| x == t) {
                tags.push(t.to_owned());
            }
        }
        Ok(TagFilter::Tags(tags))
    }

    pub fn matches(&self, tag: &str) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags(tags) => tags.iter().any(|t| t == tag),
        }
    }
}

/// Bytes charged for a member besides its strings: its entries in its group's map and in the
/// deadline index, and its session.
pub const MEMBER_OVERHEAD_BYTES: usize = 256;
/// Bytes charged for a subscription besides its topic and expression.
pub const SUBSCRIPTION_OVERHEAD_BYTES: usize = 64;
/// Bytes charged for a group besides its name.
pub const GROUP_OVERHEAD_BYTES: usize = 128;
/// Bytes of a GROUP_MEMBERS answer frame besides its members: length prefix, response header,
/// version and the member count.
pub const MEMBERS_ANSWER_FIXED_BYTES: usize = 4 + 6 + 8 + 4;

/// The bytes a member of `group` is charged against [`GroupLimits::max_membership_bytes`]: its
/// client id (twice: the deadline index names it too), the group's name (likewise), its room,
/// each subscription's topic and expression plus [`SUBSCRIPTION_OVERHEAD_BYTES`], and
/// [`MEMBER_OVERHEAD_BYTES`].
pub fn member_bytes(group: &str, member: &MemberInfo) -> usize {
    let subscriptions: usize = member
        .subscriptions
        .iter()
        .map(|s| SUBSCRIPTION_OVERHEAD_BYTES + s.topic.len() + s.expression.len())
        .sum();
    MEMBER_OVERHEAD_BYTES
        + group.len()
        + 2 * member.client_id.len()
        + member.room.as_ref().map_or(0, String::len)
        + subscriptions
}

/// The bytes a group (with members) is charged besides its members'.
pub fn group_bytes(group: &str) -> usize {
    GROUP_OVERHEAD_BYTES + group.len()
}

/// A member's bytes in a GROUP_MEMBERS answer: `string client_id, string room,
/// list<(string topic, string expression)>` (strings are `u16 len | bytes`, lists `u32 count |
/// items`).
pub fn member_answer_bytes(member: &MemberInfo) -> usize {
    let subscriptions: usize =
        member.subscriptions.iter().map(|s| 4 + s.topic.len() + s.expression.len()).sum();
    2 + member.client_id.len() + 2 + member.room.as_ref().map_or(0, String::len) + 4 + subscriptions
}

/// Bounds of one coordinator's membership state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    pub max_groups: usize,
    pub max_members_per_group: usize,
    pub max_subscriptions_per_member: usize,
    /// Longest group name, client id, topic name or tag expression, in bytes.
    pub max_name_bytes: usize,
    /// A member not heard from for this long is expired.
    pub session_timeout: Duration,
    /// Bytes all groups' membership may take, as [`member_bytes`] and [`group_bytes`] count.
    pub max_membership_bytes: usize,
    /// Largest GROUP_MEMBERS answer frame one group may need ([`MEMBERS_ANSWER_FIXED_BYTES`]
    /// plus each member's [`member_answer_bytes`]): the frame limit.
    pub max_members_answer_bytes: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            max_groups: 10_000,
            max_members_per_group: 1_000,
            max_subscriptions_per_member: 100,
            max_name_bytes: 255,
            // RocketMQ's broker expires a client after 120 s without a heartbeat.
            session_timeout: Duration::from_secs(120),
            max_membership_bytes: 64 << 20,
            max_members_answer_bytes: crate::protocol::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl GroupLimits {
    /// The most one member may be charged, with its group: every name as long as allowed and
    /// every subscription taken. A budget below it would refuse members the other limits
    /// allow.
    pub fn largest_member_bytes(&self) -> usize {
        let n = self.max_name_bytes;
        MEMBER_OVERHEAD_BYTES
            + GROUP_OVERHEAD_BYTES
            + 5 * n
            + self.max_subscriptions_per_member.saturating_mul(SUBSCRIPTION_OVERHEAD_BYTES + 2 * n)
    }

    /// The largest GROUP_MEMBERS answer frame of a group with one member the other limits
    /// allow.
    pub fn largest_member_answer_bytes(&self) -> usize {
        let n = self.max_name_bytes;
        MEMBERS_ANSWER_FIXED_BYTES
            + 8
            + 2 * n
            + self.max_subscriptions_per_member.saturating_mul(4 + 2 * n)
    }
}

/// Why a membership request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the coordinator holds its limit of {0} groups")]
    TooManyGroups(usize),
    #[error("group {group} holds its limit of {limit} members")]
    TooManyMembers { group: String, limit: usize },
    #[error("{count} subscriptions exceed the limit of {limit} per member")]
    TooManySubscriptions { count: usize, limit: usize },
    #[error("{what} is empty or longer than {limit} bytes")]
    InvalidName { what: &'static str, limit: usize },
    #[error("invalid tag expression {0:?}: use * or tags separated by ||")]
    InvalidExpression(String),
    #[error("{client_id} is not a member of group {group} (its session expired?); heartbeat to join again")]
    NotMember { group: String, client_id: String },
    #[error(
        "the coordinator's membership would take {bytes} bytes, over its budget of {limit} \
         (group.max_membership_bytes): fewer members, subscriptions or shorter names"
    )]
    TooManyBytes { bytes: usize, limit: usize },
    #[error(
        "group {group}'s members would need a {bytes}-byte GROUP_MEMBERS answer, over the \
         {limit} bytes a frame may carry (broker.max_frame_bytes)"
    )]
    MembersAnswerTooLarge { group: String, bytes: usize, limit: usize },
}

/// A member as the coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub client_id: String,
    /// Machine room label, for machine-room allocation.
    pub room: Option<String>,
    /// Sorted by topic.
    pub subscriptions: Vec<Subscription>,
}

impl From<MemberInfo> for crate::protocol::group::GroupMember {
    /// The member as GROUP_MEMBERS answers it (no room: empty).
    fn from(m: MemberInfo) -> Self {
        crate::protocol::group::GroupMember {
            client_id: m.client_id,
            room: m.room.unwrap_or_default(),
            subscriptions: m.subscriptions.into_iter().map(|s| (s.topic, s.expression)).collect(),
        }
    }
}

#[derive(Debug)]
struct Member {
    info: MemberInfo,
    expires_at: Instant,
    /// Unique among members: with `expires_at`, its key in the deadline index.
    seq: u64,
    /// [`member_bytes`] of it.
    bytes: usize,
    /// [`member_answer_bytes`] of it.
    answer_bytes: usize,
}

#[derive(Debug)]
struct Group {
    members: BTreeMap<String, Member>,
    version: u64,
    /// The GROUP_MEMBERS answer frame's bytes: [`MEMBERS_ANSWER_FIXED_BYTES`] plus the members'.
    answer_bytes: usize,
}

impl Default for Group {
    fn default() -> Self {
        Group { members: BTreeMap::new(), version: 0, answer_bytes: MEMBERS_ANSWER_FIXED_BYTES }
    }
}

/// What a heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The group's version after it.
    pub version: u64,
    /// The member list or a subscription changed: the group's members must rebalance.
    pub changed: bool,
}

/// Every group one coordinator serves.
#[derive(Debug)]
pub struct Groups {
    limits: GroupLimits,
    groups: HashMap<String, Group>,
    /// (end of session, member seq) -> (group, client id): one entry per member.
    deadlines: BTreeMap<(Instant, u64), (String, String)>,
    /// The next member's seq.
    next_seq: u64,
    /// Bytes charged: [`group_bytes`] of each group plus [`member_bytes`] of each member.
    bytes: usize,
    /// The last version handed out, to any group.
    last_version: u64,
}

impl Groups {
    pub fn new(limits: GroupLimits) -> Self {
        Groups {
            limits,
            groups: HashMap::new(),
            deadlines: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
            last_version: 0,
        }
    }

    pub fn limits(&self) -> &GroupLimits {
        &self.limits
    }

    fn check_name(&self, what: &'static str, name: &str) -> Result<(), GroupError> {
        if name.is_empty() || name.len() > self.limits.max_name_bytes {
            return Err(GroupError::InvalidName { what, limit: self.limits.max_name_bytes });
        }
        Ok(())
    }

    /// Whether `group` is a name a member could join (a request that parks or keeps state
    /// under a group's name checks it first).
    pub fn check_group_name(&self, group: &str) -> Result<(), GroupError> {
        self.check_name("group name", group)
    }

    /// A member joins `group`, or renews its session; its subscriptions and room replace
    /// the ones it had. Nothing changes when the request is refused.
    pub fn heartbeat(
        &mut self,
        group: &str,
        member: MemberInfo,
        now: Instant,
    ) -> Result<Heartbeat, GroupError> {
        self.check_name("group name", group)?;
        self.check_name("client id", &member.client_id)?;
        let limit = self.limits.max_subscriptions_per_member;
        if member.subscriptions.len() > limit {
            let count = member.subscriptions.len();
            return Err(GroupError::TooManySubscriptions { count, limit });
        }
        for s in &member.subscriptions {
            self.check_name("topic name", &s.topic)?;
            if s.expression.len() > self.limits.max_name_bytes {
                return Err(GroupError::InvalidName {
                    what: "tag expression",
                    limit: self.limits.max_name_bytes,
                });
            }
            TagFilter::parse(&s.expression)?;
        }
        if let Some(room) = &member.room {
            self.check_name("machine room", room)?;
        }
        if !self.groups.contains_key(group) && self.groups.len() >= self.limits.max_groups {
            return Err(GroupError::TooManyGroups(self.limits.max_groups));
        }
        let mut info = member;
        info.subscriptions.sort();
        info.subscriptions.dedup_by(|a, b| a.topic == b.topic);
        let expires_at = now + self.limits.session_timeout;
        let max_members = self.limits.max_members_per_group;
        let existing = self.groups.get(group);
        let old = existing.and_then(|g| g.members.get(&info.client_id));
        if old.is_none() && existing.is_some_and(|g| g.members.len() >= max_members) {
            return Err(GroupError::TooManyMembers { group: group.to_owned(), limit: max_members });
        }
        // Bytes: the state after it must fit the budgets (a member growing, joining or
        // founding its group may not fit; one shrinking or renewing always does).
        let new_bytes = member_bytes(group, &info);
        let new_answer = member_answer_bytes(&info);
        let (old_bytes, old_answer) = old.map_or((0, 0), |m| (m.bytes, m.answer_bytes));
        let founding = if existing.is_none() { group_bytes(group) } else { 0 };
        let bytes = self.bytes - old_bytes + new_bytes + founding;
        if bytes > self.limits.max_membership_bytes {
            let limit = self.limits.max_membership_bytes;
            return Err(GroupError::TooManyBytes { bytes, limit });
        }
        let group_answer = existing.map_or(MEMBERS_ANSWER_FIXED_BYTES, |g| g.answer_bytes);
        let answer = group_answer - old_answer + new_answer;
        if answer > self.limits.max_members_answer_bytes {
            return Err(GroupError::MembersAnswerTooLarge {
                group: group.to_owned(),
                bytes: answer,
                limit: self.limits.max_members_answer_bytes,
            });
        }
        if existing.is_none() {
            self.groups.insert(group.to_owned(), Group::default());
        }
        self.bytes = self.bytes - old_bytes + new_bytes + founding;
        let g = self.groups.get_mut(group).expect("inserted above");
        g.answer_bytes = g.answer_bytes - old_answer + new_answer;
        let changed = match g.members.get_mut(&info.client_id) {
            Some(m) => {
                if m.expires_at != expires_at {
                    if let Some(names) = self.deadlines.remove(&(m.expires_at, m.seq)) {
                        self.deadlines.insert((expires_at, m.seq), names);
                    }
                    m.expires_at = expires_at;
                }
                m.bytes = new_bytes;
                m.answer_bytes = new_answer;
                let changed = m.info != info;
                m.info = info;
                changed
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let client = info.client_id.clone();
                self.deadlines.insert((expires_at, seq), (group.to_owned(), client.clone()));
                let member =
                    Member { info, expires_at, seq, bytes: new_bytes, answer_bytes: new_answer };
                g.members.insert(client, member);
                true
            }
        };
        if changed {
            self.last_version += 1;
            g.version = self.last_version;
        }
        Ok(Heartbeat { version: g.version, changed })
    }

    /// Takes `client_id` out of group `name`, with its deadline and bytes; removes the group
    /// if it emptied (and returns whether it did). None if it was not a member.
    fn remove_member(&mut self, name: &str, client_id: &str) -> Option<bool> {
        let g = self.groups.get_mut(name)?;
        let m = g.members.remove(client_id)?;
        self.deadlines.remove(&(m.expires_at, m.seq));
        self.bytes -= m.bytes;
        g.answer_bytes -= m.answer_bytes;
        Some(g.members.is_empty())
    }

    /// A new version for group `name`, which just lost members; removes it if it has none
    /// left. The version.
    fn lost_members(&mut self, name: &str) -> u64 {
        self.last_version += 1;
        let Some(g) = self.groups.get_mut(name) else {
            debug_assert!(false, "group {name} not found");
            return self.last_version;
        };
        g.version = self.last_version;
        if g.members.is_empty() {
            self.groups.remove(name);
            self.bytes -= group_bytes(name);
        }
        self.last_version
    }

    /// A member leaves (a clean shutdown). The group's new version if it was a member.
    pub fn leave(&mut self, group: &str, client_id: &str) -> Option<u64> {
        self.remove_member(group, client_id)?;
        Some(self.lost_members(group))
    }

    /// Expires every member whose session ended at or before `now`; returns the groups that
    /// changed with their new versions, sorted by name (their members must rebalance; the
    /// versions are handed out in that order). Costs O(expired · log n): only the deadline
    /// index's due entries are visited.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, u64)> {
        let mut changed = BTreeSet::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (group, client_id) = entry.remove();
            let Some(g) = self.groups.get_mut(&group) else {
                debug_assert!(false, "indexed member {client_id} of a missing group {group}");
                continue;
            };
            if let Some(m) = g.members.remove(&client_id) {
                self.bytes -= m.bytes;
                g.answer_bytes -= m.answer_bytes;
            }
            changed.insert(group);
        }
        changed
            .into_iter()
            .map(|group| {
                let version = self.lost_members(&group);
                (group, version)
            })
            .collect()
    }

    /// Gives a group with members a new version without changing its members (its offsets
    /// were reset: members must fetch them again). The new version, if it has members.
    pub fn bump(&mut self, group: &str) -> Option<u64> {
        let g = self.groups.get_mut(group)?;
        self.last_version += 1;
        g.version = self.last_version;
        Some(g.version)
    }

    /// Whether `group` has members (a group is dropped when its last member goes).
    pub fn has_members(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    pub fn is_member(&self, group: &str, client_id: &str) -> bool {
        self.groups.get(group).is_some_and(|g| g.members.contains_key(client_id))
    }

    /// When the next member expires: the coordinator's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|((at, _), _)| *at)
    }

    /// The group's version and members (sorted by client id); None for a group without
    /// members.
    pub fn members(&self, group: &str) -> Option<(u64, Vec<MemberInfo>)> {
        let g = self.groups.get(group)?;
        Some((g.version, g.members.values().map(|m| m.info.clone()).collect()))
    }

    /// The group's version and how many members it has, without copying them.
    pub fn version_and_size(&self, group: &str) -> Option<(u64, usize)> {
        self.groups.get(group).map(|g| (g.version, g.members.len()))
    }

    /// The names of the groups with members, unordered and not copied.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.groups.keys().map(String::as_str)
    }

    /// The groups with members, sorted.
    pub fn group_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.groups.keys().cloned().collect();
        v.sort();
        v
    }

    /// Members across all groups (bounded by the limits).
    pub fn member_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Bytes charged against [`GroupLimits::max_membership_bytes`].
    pub fn membership_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests;
