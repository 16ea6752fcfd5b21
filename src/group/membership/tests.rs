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
        group_bytes("g") + ms.iter().map(|(id, t)| member_bytes("g", &member(id, t))).sum::<usize>()
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
    assert!(matches!(g.heartbeat("g", longer, clock.now()), Err(GroupError::TooManyBytes { .. })));
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
    let l = GroupLimits { max_members_per_group: 3, max_members_answer_bytes: limit, ..limits() };
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
