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
mod tests {
    use super::*;
    use crate::runtime::{Clock, SimClock};
    use proptest::prelude::*;

    fn member(id: &str, topics: &[&str]) -> MemberInfo {
        MemberInfo {
            client_id: id.into(),
            room: None,
            subscriptions: topics
                .iter()
                .map(|t| Subscription { topic: (*t).into(), expression: "*".into() })
                .collect(),
        }
    }

    fn limits() -> GroupLimits {
        GroupLimits {
            max_groups: 3,
            max_members_per_group: 2,
            max_subscriptions_per_member: 2,
            max_name_bytes: 16,
            session_timeout: Duration::from_secs(30),
            max_membership_bytes: 1 << 20,
            max_members_answer_bytes: 1 << 20,
        }
    }

    #[test]
    fn joins_renewals_and_changes_move_the_version() {
        let clock = SimClock::new(0);
        let mut g = Groups::new(limits());
        let a = g.heartbeat("g", member("a", &["t"]), clock.now()).unwrap();
        assert!(a.changed);
        // A renewal with the same subscriptions changes nothing.
        let again = g.heartbeat("g", member("a", &["t"]), clock.now()).unwrap();
        assert_eq!(again, Heartbeat { version: a.version, changed: false });
        // A second member, then a subscription change: new versions each time.
        let b = g.heartbeat("g", member("b", &["t"]), clock.now()).unwrap();
        assert!(b.changed && b.version > a.version);
        let sub = g.heartbeat("g", member("a", &["t", "u"]), clock.now()).unwrap();
        assert!(sub.changed && sub.version > b.version);
        let (v, ms) = g.members("g").unwrap();
        assert_eq!(v, sub.version);
        assert_eq!(ms.iter().map(|m| m.client_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ms[0].subscriptions.len(), 2);
        // Leaving bumps it again; the last one leaving removes the group.
        let left = g.leave("g", "b").unwrap();
        assert!(left > sub.version);
        assert_eq!(g.leave("g", "b"), None);
        g.leave("g", "a").unwrap();
        assert_eq!(g.members("g"), None);
        assert!(g.group_names().is_empty());
    }

    #[test]
    fn silent_members_expire_and_renewed_ones_stay() {
        let clock = SimClock::new(0);
        let mut g = Groups::new(limits());
        g.heartbeat("g", member("a", &["t"]), clock.now()).unwrap();
        g.heartbeat("g", member("b", &["t"]), clock.now()).unwrap();
        assert_eq!(g.next_expiry(), Some(clock.now() + Duration::from_secs(30)));
        clock.advance(Duration::from_secs(20));
        g.heartbeat("g", member("a", &["t"]), clock.now()).unwrap();
        clock.advance(Duration::from_secs(10) - Duration::from_millis(1));
        assert!(g.expire(clock.now()).is_empty(), "b has a millisecond left");
        clock.advance(Duration::from_millis(1));
        let (v_before, _) = g.members("g").unwrap();
        let changed = g.expire(clock.now());
        assert_eq!(changed.len(), 1);
        assert!(changed[0].1 > v_before);
        assert_eq!(g.members("g").unwrap().1.len(), 1);
        // a's session, renewed at 20 s, ends at 50 s.
        assert_eq!(g.next_expiry(), Some(clock.now() + Duration::from_secs(20)));
        clock.advance(Duration::from_secs(20));
        assert_eq!(g.expire(clock.now()).len(), 1);
        assert_eq!(g.members("g"), None);
        assert_eq!(g.next_expiry(), None);
    }

    #[test]
    fn limits_refuse_without_changing_anything() {
        let now = SimClock::new(0).now();
        let mut g = Groups::new(limits());
        g.heartbeat("g", member("a", &["t"]), now).unwrap();
        g.heartbeat("g", member("b", &["t"]), now).unwrap();
        let e = g.heartbeat("g", member("c", &["t"]), now).unwrap_err();
        assert!(matches!(e, GroupError::TooManyMembers { limit: 2, .. }), "{e}");
        let e = g.heartbeat("g", member("a", &["t", "u", "v"]), now).unwrap_err();
        assert!(matches!(e, GroupError::TooManySubscriptions { count: 3, limit: 2 }), "{e}");
        assert_eq!(g.members("g").unwrap().1[0].subscriptions.len(), 1, "a unchanged");
        g.heartbeat("h", member("a", &["t"]), now).unwrap();
        g.heartbeat("i", member("a", &["t"]), now).unwrap();
        let e = g.heartbeat("j", member("a", &["t"]), now).unwrap_err();
        assert_eq!(e, GroupError::TooManyGroups(3));
        assert!(g.members("j").is_none(), "a refused join leaves no empty group behind");
        for bad in ["", "a-name-longer-than-16"] {
            assert!(matches!(
                g.heartbeat(bad, member("a", &["t"]), now),
                Err(GroupError::InvalidName { .. })
            ));
            assert!(g.heartbeat("g", member(bad, &["t"]), now).is_err());
        }
        let mut m = member("a", &["t"]);
        m.subscriptions[0].expression = "A || || B".into();
        assert!(matches!(g.heartbeat("g", m, now), Err(GroupError::InvalidExpression(_))));
    }

    #[test]
    fn the_byte_budget_refuses_growth_and_gets_its_bytes_back() {
        let clock = SimClock::new(0);
        let used = |ms: &[(&str, &[&str])]| {
            group_bytes("g")
                + ms.iter().map(|(id, t)| member_bytes("g", &member(id, t))).sum::<usize>()
        };
        let budget = used(&[("a", &["t", "u"]), ("b", &["t"])]);
        let l = GroupLimits { max_members_per_group: 3, max_membership_bytes: budget, ..limits() };
        let mut g = Groups::new(l);
        g.heartbeat("g", member("a", &["t", "u"]), clock.now()).unwrap();
        let b = g.heartbeat("g", member("b", &["t"]), clock.now()).unwrap();
        assert_eq!(g.membership_bytes(), budget);
        // A new member, a new group, or a member's longer subscription list: over the budget.
        let e = g.heartbeat("g", member("c", &["t"]), clock.now()).unwrap_err();
        let over = budget + member_bytes("g", &member("c", &["t"]));
        assert_eq!(e, GroupError::TooManyBytes { bytes: over, limit: budget });
        assert!(e.to_string().contains("group.max_membership_bytes"), "{e}");
        assert!(matches!(
            g.heartbeat("h", member("c", &["t"]), clock.now()),
            Err(GroupError::TooManyBytes { .. })
        ));
        let mut longer = member("b", &["t"]);
        longer.room = Some("room".into());
        assert!(matches!(
            g.heartbeat("g", longer, clock.now()),
            Err(GroupError::TooManyBytes { .. })
        ));
        assert_eq!(g.members("g").unwrap().0, b.version, "nothing changed");
        assert_eq!(g.membership_bytes(), budget);
        // Renewing, or shrinking, always may; growing back into what it gave may too.
        g.heartbeat("g", member("b", &["t"]), clock.now()).unwrap();
        g.heartbeat("g", member("a", &["t"]), clock.now()).unwrap();
        assert_eq!(g.membership_bytes(), used(&[("a", &["t"]), ("b", &["t"])]));
        g.heartbeat("g", member("a", &["t", "u"]), clock.now()).unwrap();
        // Leaving gives a member's bytes back, expiry all of them.
        g.leave("g", "b").unwrap();
        assert_eq!(g.membership_bytes(), used(&[("a", &["t", "u"])]));
        g.heartbeat("g", member("c", &["t"]), clock.now()).unwrap();
        clock.advance(limits().session_timeout);
        assert_eq!(g.expire(clock.now()).len(), 1);
        assert_eq!((g.membership_bytes(), g.member_count()), (0, 0));
    }

    #[test]
    fn a_group_s_members_always_fit_one_answer_frame() {
        use crate::protocol::group::{GroupMember, GroupResponse};
        use crate::protocol::Response;
        let now = SimClock::new(0).now();
        let mut a = member("a", &["t", "u"]);
        a.room = Some("room-1".into());
        let b = member("b", &["t"]);
        let limit = MEMBERS_ANSWER_FIXED_BYTES + member_answer_bytes(&a) + member_answer_bytes(&b);
        let l =
            GroupLimits { max_members_per_group: 3, max_members_answer_bytes: limit, ..limits() };
        let mut g = Groups::new(l);
        g.heartbeat("g", a, now).unwrap();
        g.heartbeat("g", b, now).unwrap();
        // The answer as the broker encodes it takes exactly the bytes counted.
        let (version, ms) = g.members("g").unwrap();
        let members = ms.into_iter().map(GroupMember::from).collect();
        let frame = Response::Group(GroupResponse::Members { version, members }).encode_frame(7);
        assert_eq!(frame.len(), limit);
        // One more member, or a longer list for one, would not fit: refused.
        let e = g.heartbeat("g", member("c", &[]), now).unwrap_err();
        let bytes = limit + member_answer_bytes(&member("c", &[]));
        assert_eq!(e, GroupError::MembersAnswerTooLarge { group: "g".into(), bytes, limit });
        assert!(e.to_string().contains("broker.max_frame_bytes"), "{e}");
        assert!(g.heartbeat("g", member("b", &["t", "u"]), now).is_err());
        // The bound is per group; a shorter list always fits.
        g.heartbeat("h", member("c", &["t"]), now).unwrap();
        g.heartbeat("g", member("b", &[]), now).unwrap();
        g.heartbeat("g", member("b", &["t"]), now).unwrap();
    }

    #[test]
    fn the_largest_member_the_limits_allow_is_what_it_is_charged() {
        let l = GroupLimits { max_subscriptions_per_member: 2, ..limits() };
        let n = |c: char| c.to_string().repeat(l.max_name_bytes);
        let big = MemberInfo {
            client_id: n('c'),
            room: Some(n('r')),
            subscriptions: (0..2)
                .map(|i| Subscription { topic: format!("{i}{}", &n('t')[1..]), expression: n('e') })
                .collect(),
        };
        let mut g = Groups::new(GroupLimits {
            max_membership_bytes: l.largest_member_bytes(),
            max_members_answer_bytes: l.largest_member_answer_bytes(),
            ..l
        });
        g.heartbeat(&n('g'), big, SimClock::new(0).now()).unwrap();
        assert_eq!(g.membership_bytes(), l.largest_member_bytes());
    }

    #[test]
    fn tag_expressions_parse_as_rocketmq_writes_them() {
        assert_eq!(TagFilter::parse("*").unwrap(), TagFilter::All);
        assert_eq!(TagFilter::parse(" ").unwrap(), TagFilter::All);
        let f = TagFilter::parse("TagA || TagB||TagA").unwrap();
        assert_eq!(f, TagFilter::Tags(vec!["TagA".into(), "TagB".into()]));
        assert!(f.matches("TagB") && !f.matches("TagC"));
        for bad in ["A ||", "|| A", "A || *", "A B"] {
            assert!(TagFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Beat(u8, u8, bool),
        Leave(u8, u8),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4, 0u8..4, any::<bool>()).prop_map(|(g, m, s)| Op::Beat(g, m, s)),
            (0u8..4, 0u8..4).prop_map(|(g, m)| Op::Leave(g, m)),
            (0u16..40).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Against a model: members are those whose last heartbeat is within the session,
        /// versions only grow, every change of a member list moves its version, and the
        /// limits always hold.
        #[test]
        fn matches_a_model_of_sessions(ops in proptest::collection::vec(op(), 1..200)) {
            let clock = SimClock::new(0);
            let limits = GroupLimits { max_members_per_group: 3, ..limits() };
            let mut g = Groups::new(limits);
            // (group, member) -> (last heartbeat, subscribed to two topics)
            let mut model: BTreeMap<(u8, u8), (Instant, bool)> = BTreeMap::new();
            let mut last_seen: HashMap<String, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Beat(gi, mi, two) => {
                        let topics: &[&str] = if two { &["t", "u"] } else { &["t"] };
                        let r = g.heartbeat(&format!("g{gi}"), member(&format!("m{mi}"), topics), clock.now());
                        let members_of = model.keys().filter(|(x, _)| *x == gi).count();
                        let groups: std::collections::BTreeSet<u8> = model.keys().map(|(x, _)| *x).collect();
                        let known = model.contains_key(&(gi, mi));
                        let expect_ok = known
                            || (members_of < 3 && (groups.contains(&gi) || groups.len() < 3));
                        prop_assert_eq!(r.is_ok(), expect_ok, "{:?}", r);
                        if r.is_ok() {
                            let prev = model.insert((gi, mi), (clock.now(), two));
                            prop_assert_eq!(r.unwrap().changed, prev.map(|p| p.1) != Some(two));
                        }
                    }
                    Op::Leave(gi, mi) => {
                        let r = g.leave(&format!("g{gi}"), &format!("m{mi}"));
                        prop_assert_eq!(r.is_some(), model.remove(&(gi, mi)).is_some());
                    }
                    Op::Advance(s) => {
                        clock.advance(Duration::from_secs(u64::from(s)));
                        let now = clock.now();
                        let changed = g.expire(now);
                        let session = limits.session_timeout;
                        let expired: std::collections::BTreeSet<u8> = model
                            .iter()
                            .filter(|(_, (at, _))| *at + session <= now)
                            .map(|((gi, _), _)| *gi)
                            .collect();
                        model.retain(|_, (at, _)| *at + session > now);
                        let names: Vec<String> = changed.iter().map(|(n, _)| n.clone()).collect();
                        let want: Vec<String> = expired.iter().map(|gi| format!("g{gi}")).collect();
                        prop_assert_eq!(names, want);
                    }
                }
                // The coordinator's view equals the model's, and versions never go back.
                prop_assert!(g.group_names().len() <= 3);
                for gi in 0u8..4 {
                    let name = format!("g{gi}");
                    let want: Vec<String> = model
                        .keys()
                        .filter(|(x, _)| *x == gi)
                        .map(|(_, mi)| format!("m{mi}"))
                        .collect();
                    match g.members(&name) {
                        Some((v, ms)) => {
                            let got: Vec<String> = ms.into_iter().map(|m| m.client_id).collect();
                            prop_assert_eq!(got, want);
                            let seen = last_seen.entry(name).or_insert(0);
                            prop_assert!(v >= *seen);
                            *seen = v;
                        }
                        None => prop_assert!(want.is_empty()),
                    }
                }
            }
        }
    }

    /// A group of the model: its version and its members with their sessions' ends.
    type ModelGroup = (u64, BTreeMap<String, (MemberInfo, Instant)>);

    /// The straightforward coordinator the deadline index must behave exactly as: each
    /// member keeps its session's end, expiry scans every member (groups in name order), the
    /// next expiry is the least of them, and the bytes are summed afresh.
    #[derive(Default)]
    struct Model {
        groups: BTreeMap<String, ModelGroup>,
        last_version: u64,
    }

    impl Model {
        fn bytes(&self) -> usize {
            let members = |name: &str, ms: &BTreeMap<String, (MemberInfo, Instant)>| -> usize {
                ms.values().map(|(m, _)| member_bytes(name, m)).sum()
            };
            self.groups.iter().map(|(name, (_, ms))| group_bytes(name) + members(name, ms)).sum()
        }

        fn answer(&self, group: &str) -> usize {
            let ms = self.groups.get(group).map(|g| g.1.values());
            MEMBERS_ANSWER_FIXED_BYTES
                + ms.into_iter().flatten().map(|(m, _)| member_answer_bytes(m)).sum::<usize>()
        }

        fn heartbeat(
            &mut self,
            l: &GroupLimits,
            group: &str,
            mut info: MemberInfo,
            now: Instant,
        ) -> Result<Heartbeat, GroupError> {
            info.subscriptions.sort();
            info.subscriptions.dedup_by(|a, b| a.topic == b.topic);
            if !self.groups.contains_key(group) && self.groups.len() >= l.max_groups {
                return Err(GroupError::TooManyGroups(l.max_groups));
            }
            let members = self.groups.get(group).map_or(0, |g| g.1.len());
            let known = self.groups.get(group).is_some_and(|g| g.1.contains_key(&info.client_id));
            if !known && members >= l.max_members_per_group {
                let limit = l.max_members_per_group;
                return Err(GroupError::TooManyMembers { group: group.into(), limit });
            }
            let mut after = Model { groups: self.groups.clone(), last_version: 0 };
            let g = after.groups.entry(group.into()).or_default();
            let old = g.1.insert(info.client_id.clone(), (info.clone(), now + l.session_timeout));
            let (bytes, answer) = (after.bytes(), after.answer(group));
            if bytes > l.max_membership_bytes {
                return Err(GroupError::TooManyBytes { bytes, limit: l.max_membership_bytes });
            }
            if answer > l.max_members_answer_bytes {
                let limit = l.max_members_answer_bytes;
                return Err(GroupError::MembersAnswerTooLarge {
                    group: group.into(),
                    bytes: answer,
                    limit,
                });
            }
            let changed = old.map(|o| o.0) != Some(info);
            self.groups = after.groups;
            let g = self.groups.get_mut(group).unwrap();
            if changed {
                self.last_version += 1;
                g.0 = self.last_version;
            }
            Ok(Heartbeat { version: g.0, changed })
        }

        fn leave(&mut self, group: &str, client_id: &str) -> Option<u64> {
            let g = self.groups.get_mut(group)?;
            g.1.remove(client_id)?;
            self.last_version += 1;
            g.0 = self.last_version;
            if g.1.is_empty() {
                self.groups.remove(group);
            }
            Some(self.last_version)
        }

        fn expire(&mut self, now: Instant) -> Vec<(String, u64)> {
            let mut changed = Vec::new();
            for (name, g) in self.groups.iter_mut() {
                let before = g.1.len();
                g.1.retain(|_, (_, at)| *at > now);
                if g.1.len() != before {
                    self.last_version += 1;
                    g.0 = self.last_version;
                    changed.push((name.clone(), g.0));
                }
            }
            self.groups.retain(|_, g| !g.1.is_empty());
            changed
        }

        fn bump(&mut self, group: &str) -> Option<u64> {
            let g = self.groups.get_mut(group)?;
            self.last_version += 1;
            g.0 = self.last_version;
            Some(g.0)
        }

        fn next_expiry(&self) -> Option<Instant> {
            self.groups.values().flat_map(|g| g.1.values()).map(|(_, at)| *at).min()
        }
    }

    #[derive(Debug, Clone)]
    enum ModelOp {
        /// Group, client, subscriptions (topic and expression picks), room.
        Beat(u8, u8, Vec<(u8, u8)>, Option<u8>),
        Leave(u8, u8),
        /// Milliseconds; 0 keeps sessions ending at the same instant.
        Advance(u32),
        Expire,
        Bump(u8),
    }

    fn model_op() -> impl Strategy<Value = ModelOp> {
        let subs = proptest::collection::vec((0u8..3, 0u8..2), 0..3);
        prop_oneof![
            4 => (0u8..4, 0u8..4, subs, proptest::option::of(0u8..2))
                .prop_map(|(g, m, s, r)| ModelOp::Beat(g, m, s, r)),
            1 => (0u8..4, 0u8..4).prop_map(|(g, m)| ModelOp::Leave(g, m)),
            2 => prop_oneof![Just(0u32), 0u32..40_000].prop_map(ModelOp::Advance),
            2 => Just(ModelOp::Expire),
            1 => (0u8..4).prop_map(ModelOp::Bump),
        ]
    }

    fn model_member(client: u8, subs: &[(u8, u8)], room: Option<u8>) -> MemberInfo {
        const TOPICS: [&str; 3] = ["t", "orders", "a-longer-topic"];
        const EXPRESSIONS: [&str; 2] = ["*", "TagA || TagB"];
        MemberInfo {
            client_id: format!("m{client}"),
            room: room.map(|r| ["r", "room-two"][usize::from(r)].to_owned()),
            subscriptions: subs
                .iter()
                .map(|&(t, e)| Subscription {
                    topic: TOPICS[usize::from(t)].into(),
                    expression: EXPRESSIONS[usize::from(e)].into(),
                })
                .collect(),
        }
    }

    proptest! {
        /// The deadline index and the byte accounts against the straightforward model, over
        /// random heartbeats, leaves, expiries and bumps at simulated times: every answer
        /// (versions and errors included), the next expiry, the members and the bytes agree.
        #[test]
        fn the_deadline_index_matches_a_full_scan(
            ops in proptest::collection::vec(model_op(), 1..300),
            budget in 1_000usize..4_000,
            answer in 40usize..200,
        ) {
            let clock = SimClock::new(0);
            let l = GroupLimits {
                max_groups: 3,
                max_members_per_group: 3,
                max_membership_bytes: budget,
                max_members_answer_bytes: answer,
                ..limits()
            };
            let mut g = Groups::new(l);
            let mut model = Model::default();
            for op in ops {
                let now = clock.now();
                match op {
                    ModelOp::Beat(gi, mi, subs, room) => {
                        let m = model_member(mi, &subs, room);
                        let group = format!("g{gi}");
                        prop_assert_eq!(
                            g.heartbeat(&group, m.clone(), now),
                            model.heartbeat(&l, &group, m, now)
                        );
                    }
                    ModelOp::Leave(gi, mi) => {
                        let (group, client) = (format!("g{gi}"), format!("m{mi}"));
                        prop_assert_eq!(g.leave(&group, &client), model.leave(&group, &client));
                    }
                    ModelOp::Advance(ms) => clock.advance(Duration::from_millis(u64::from(ms))),
                    ModelOp::Expire => prop_assert_eq!(g.expire(now), model.expire(now)),
                    ModelOp::Bump(gi) => {
                        let group = format!("g{gi}");
                        prop_assert_eq!(g.bump(&group), model.bump(&group));
                    }
                }
                prop_assert_eq!(g.next_expiry(), model.next_expiry());
                prop_assert_eq!(g.membership_bytes(), model.bytes());
                prop_assert_eq!(g.group_names(), model.groups.keys().cloned().collect::<Vec<_>>());
                let mut members = 0;
                for (name, (version, ms)) in &model.groups {
                    let want: Vec<MemberInfo> = ms.values().map(|(m, _)| m.clone()).collect();
                    members += want.len();
                    prop_assert_eq!(g.members(name), Some((*version, want)));
                }
                prop_assert_eq!(g.member_count(), members);
            }
        }
    }
}
