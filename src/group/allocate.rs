//! Rebalance allocation: which queues of a group's subscription one member consumes.
//!
//! Rebalancing is client-side, as in RocketMQ: every member reads the same member list from the
//! group's coordinator and runs the same pure function over it, so the members agree on an
//! assignment without talking to each other. Each function here is deterministic in the *sets*
//! it is given: members and queues are put in a canonical order first, so two members that
//! received the lists in different orders still compute the same assignment. Over a member
//! list, the queues every member computes for itself partition the queues: each queue is
//! assigned to exactly one member (the property tests check this for every strategy).
//!
//! Strategies (RocketMQ's names in brackets):
//! - [`Strategy::Averagely`] (`AllocateMessageQueueAveragely`): contiguous ranges, sizes
//!   differing by at most one, the larger ranges first.
//! - [`Strategy::AveragelyByCircle`] (`AllocateMessageQueueAveragelyByCircle`): queue `i` goes to
//!   member `i mod members`.
//! - [`Strategy::ConsistentHash`] (`AllocateMessageQueueConsistentHash`): a hash ring with
//!   `virtual_nodes` points per member; a member joining or leaving moves only the queues it
//!   takes or gives up.
//! - [`Strategy::MachineRoom`] (`AllocateMachineRoomNearby`): queues whose room has members go
//!   to those members (averagely); queues of a room without members go to all members.
//! - [`Strategy::Custom`]: an application's own [`Allocate`] implementation, which must keep
//!   the same partition property (the client checks its own result for queues outside the
//!   subscription and duplicates).
//!
//! No I/O and no clock: inputs in, an assignment out.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One queue of a subscribed topic, with the machine room of the broker serving it (if the
/// broker was given one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocQueue {
    pub topic: String,
    pub queue_id: u32,
    pub room: Option<String>,
}

impl AllocQueue {
    pub fn new(topic: impl Into<String>, queue_id: u32) -> Self {
        AllocQueue { topic: topic.into(), queue_id, room: None }
    }

    pub fn in_room(mut self, room: impl Into<String>) -> Self {
        self.room = Some(room.into());
        self
    }
}

/// One member of the group as the coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocMember {
    pub client_id: String,
    /// The member's machine room, for [`Strategy::MachineRoom`].
    pub room: Option<String>,
}

impl AllocMember {
    pub fn new(client_id: impl Into<String>) -> Self {
        AllocMember { client_id: client_id.into(), room: None }
    }

    pub fn in_room(mut self, room: impl Into<String>) -> Self {
        self.room = Some(room.into());
        self
    }
}

/// An application's own allocation. It must be deterministic in the sets it gets and, over
/// all members, assign each queue to exactly one member.
pub trait Allocate: Send + Sync {
    /// A short name for logs and `group describe`.
    fn name(&self) -> &str;
    /// The queues `me` consumes; `members` and `queues` come in canonical (sorted) order.
    fn allocate(&self, me: &str, members: &[AllocMember], queues: &[AllocQueue])
        -> Vec<AllocQueue>;
}

/// How a group's queues are divided among its members.
#[derive(Clone)]
pub enum Strategy {
    Averagely,
    AveragelyByCircle,
    ConsistentHash { virtual_nodes: u32 },
    MachineRoom,
    Custom(Arc<dyn Allocate>),
}

impl fmt::Debug for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// RocketMQ's default number of virtual nodes per member on the consistent-hash ring.
pub const DEFAULT_VIRTUAL_NODES: u32 = 10;

impl Strategy {
    pub fn name(&self) -> &str {
        match self {
            Strategy::Averagely => "averagely",
            Strategy::AveragelyByCircle => "averagely-by-circle",
            Strategy::ConsistentHash { .. } => "consistent-hash",
            Strategy::MachineRoom => "machine-room",
            Strategy::Custom(a) => a.name(),
        }
    }

    /// The strategy a name on the command line or in a config means (custom ones have no name
    /// here: they are code).
    pub fn parse(name: &str) -> Option<Strategy> {
        Some(match name {
            "averagely" => Strategy::Averagely,
            "averagely-by-circle" => Strategy::AveragelyByCircle,
            "consistent-hash" => Strategy::ConsistentHash { virtual_nodes: DEFAULT_VIRTUAL_NODES },
            "machine-room" => Strategy::MachineRoom,
            _ => return None,
        })
    }

    /// The queues member `me` consumes. Empty when `me` is not in `members` (it has not joined
    /// yet, or the coordinator expired it): a member never consumes on a stale list.
    pub fn allocate(
        &self,
        me: &str,
        members: &[AllocMember],
        queues: &[AllocQueue],
    ) -> Vec<AllocQueue> {
        let mut members = canonical(members);
        // One entry per client id and per queue, whatever else the lists repeat.
        members.dedup_by(|a, b| a.client_id == b.client_id);
        let mut queues = canonical(queues);
        queues.dedup_by(|a, b| a.topic == b.topic && a.queue_id == b.queue_id);
        if queues.is_empty() || !members.iter().any(|m| m.client_id == me) {
            return Vec::new();
        }
        let ids: Vec<&str> = members.iter().map(|m| m.client_id.as_str()).collect();
        match self {
            Strategy::Averagely => averagely(me, &ids, &queues),
            Strategy::AveragelyByCircle => by_circle(me, &ids, &queues),
            Strategy::ConsistentHash { virtual_nodes } => {
                consistent_hash(me, &ids, &queues, (*virtual_nodes).max(1))
            }
            Strategy::MachineRoom => machine_room(me, &members, &queues),
            Strategy::Custom(a) => a.allocate(me, &members, &queues),
        }
    }
}

/// Sorted, without duplicates: the order every member agrees on.
fn canonical<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    v
}

fn averagely(me: &str, ids: &[&str], queues: &[AllocQueue]) -> Vec<AllocQueue> {
    let index = ids.iter().position(|id| *id == me).expect("checked by the caller");
    let (n, m) = (queues.len(), ids.len());
    // The first `n % m` members take one queue more than the rest.
    let (base, extra) = (n / m, n % m);
    let size = base + usize::from(index < extra);
    let start = index * base + index.min(extra);
    queues[start..start + size].to_vec()
}

fn by_circle(me: &str, ids: &[&str], queues: &[AllocQueue]) -> Vec<AllocQueue> {
    let index = ids.iter().position(|id| *id == me).expect("checked by the caller");
    queues.iter().skip(index).step_by(ids.len()).cloned().collect()
}

/// A stable 64-bit hash (FNV-1a): the same on every platform, process and release, which a
/// ring shared by members running different builds needs (std's hashers promise none of that).
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; a final avalanche spreads them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

fn consistent_hash(
    me: &str,
    ids: &[&str],
    queues: &[AllocQueue],
    virtual_nodes: u32,
) -> Vec<AllocQueue> {
    let mut ring: BTreeMap<u64, &str> = BTreeMap::new();
    for id in ids {
        for v in 0..virtual_nodes {
            // Equal points of two members (astronomically rare) go to the smaller id: the
            // ring stays the same whatever order the members came in.
            let point = stable_hash(&[id.as_bytes(), &v.to_le_bytes()]);
            ring.entry(point).and_modify(|o| *o = (*o).min(id)).or_insert(id);
        }
    }
    queues
        .iter()
        .filter(|q| {
            let h = stable_hash(&[q.topic.as_bytes(), &q.queue_id.to_le_bytes()]);
            let owner = ring.range(h..).next().or_else(|| ring.iter().next()).map(|(_, id)| *id);
            owner == Some(me)
        })
        .cloned()
        .collect()
}

fn machine_room(me: &str, members: &[AllocMember], queues: &[AllocQueue]) -> Vec<AllocQueue> {
    let my_room = members.iter().find(|m| m.client_id == me).and_then(|m| m.room.clone());
    let rooms_with_members: Vec<&Option<String>> = members.iter().map(|m| &m.room).collect();
    // Queues of this member's room, shared among that room's members.
    let local_ids: Vec<&str> =
        members.iter().filter(|m| m.room == my_room).map(|m| m.client_id.as_str()).collect();
    let local: Vec<AllocQueue> = queues.iter().filter(|q| q.room == my_room).cloned().collect();
    let mut mine = if local.is_empty() { Vec::new() } else { averagely(me, &local_ids, &local) };
    // Queues of rooms without members, shared among everyone.
    let orphans: Vec<AllocQueue> =
        queues.iter().filter(|q| !rooms_with_members.contains(&&q.room)).cloned().collect();
    if !orphans.is_empty() {
        let all: Vec<&str> = members.iter().map(|m| m.client_id.as_str()).collect();
        mine.extend(averagely(me, &all, &orphans));
    }
    mine
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};
    use proptest::strategy::Strategy as _;
    use std::collections::BTreeSet;

    fn queues(topics: &[(&str, u32)]) -> Vec<AllocQueue> {
        topics.iter().flat_map(|(t, n)| (0..*n).map(move |q| AllocQueue::new(*t, q))).collect()
    }

    fn members(ids: &[&str]) -> Vec<AllocMember> {
        ids.iter().map(|id| AllocMember::new(*id)).collect()
    }

    fn ids(qs: &[AllocQueue]) -> Vec<u32> {
        qs.iter().map(|q| q.queue_id).collect()
    }

    fn strategies() -> Vec<Strategy> {
        vec![
            Strategy::Averagely,
            Strategy::AveragelyByCircle,
            Strategy::ConsistentHash { virtual_nodes: DEFAULT_VIRTUAL_NODES },
            Strategy::MachineRoom,
        ]
    }

    /// Every member's share, checked to partition `qs`.
    fn partition(s: &Strategy, ms: &[AllocMember], qs: &[AllocQueue]) -> Vec<Vec<AllocQueue>> {
        let shares: Vec<Vec<AllocQueue>> =
            ms.iter().map(|m| s.allocate(&m.client_id, ms, qs)).collect();
        let mut seen = BTreeSet::new();
        for share in &shares {
            for q in share {
                assert!(seen.insert(q.clone()), "{s:?}: {q:?} assigned twice");
            }
        }
        let all: BTreeSet<AllocQueue> = qs.iter().cloned().collect();
        assert_eq!(seen, all, "{s:?}: every queue assigned");
        shares
    }

    #[test]
    fn averagely_gives_contiguous_ranges_larger_first() {
        let qs = queues(&[("t", 8)]);
        let ms = members(&["c", "a", "b"]); // sorted: a, b, c
        let s = Strategy::Averagely;
        assert_eq!(ids(&s.allocate("a", &ms, &qs)), vec![0, 1, 2]);
        assert_eq!(ids(&s.allocate("b", &ms, &qs)), vec![3, 4, 5]);
        assert_eq!(ids(&s.allocate("c", &ms, &qs)), vec![6, 7]);
        // More members than queues: the last ones get nothing.
        let many = members(&["a", "b", "c", "d", "e"]);
        let three = queues(&[("t", 3)]);
        assert_eq!(ids(&s.allocate("c", &many, &three)), vec![2]);
        assert!(s.allocate("d", &many, &three).is_empty());
    }

    #[test]
    fn by_circle_deals_queues_round() {
        let qs = queues(&[("t", 8)]);
        let ms = members(&["a", "b", "c"]);
        let s = Strategy::AveragelyByCircle;
        assert_eq!(ids(&s.allocate("a", &ms, &qs)), vec![0, 3, 6]);
        assert_eq!(ids(&s.allocate("b", &ms, &qs)), vec![1, 4, 7]);
        assert_eq!(ids(&s.allocate("c", &ms, &qs)), vec![2, 5]);
    }

    #[test]
    fn a_member_not_in_the_list_consumes_nothing() {
        let qs = queues(&[("t", 4)]);
        for s in strategies() {
            assert!(s.allocate("z", &members(&["a", "b"]), &qs).is_empty(), "{s:?}");
            assert!(s.allocate("a", &[], &qs).is_empty(), "{s:?}");
        }
    }

    #[test]
    fn machine_room_keeps_queues_near_and_shares_orphans() {
        let qs: Vec<AllocQueue> = (0..4)
            .map(|q| AllocQueue::new("t", q).in_room("east"))
            .chain((4..8).map(|q| AllocQueue::new("t", q).in_room("west")))
            .chain((8..10).map(|q| AllocQueue::new("t", q).in_room("north")))
            .collect();
        let ms = vec![
            AllocMember::new("e1").in_room("east"),
            AllocMember::new("e2").in_room("east"),
            AllocMember::new("w1").in_room("west"),
        ];
        let s = Strategy::MachineRoom;
        let shares = partition(&s, &ms, &qs);
        // East's queues stay in the east, west's in the west; north has no member, so its
        // queues go around everyone.
        assert_eq!(ids(&shares[0]), vec![0, 1, 8]);
        assert_eq!(ids(&shares[1]), vec![2, 3, 9]);
        assert_eq!(ids(&shares[2]), vec![4, 5, 6, 7]);
    }

    #[test]
    fn names_parse_back() {
        for s in strategies() {
            assert_eq!(Strategy::parse(s.name()).unwrap().name(), s.name());
        }
        assert!(Strategy::parse("random").is_none());
    }

    #[test]
    fn a_custom_allocation_gets_canonical_lists() {
        struct FirstTakesAll;
        impl Allocate for FirstTakesAll {
            fn name(&self) -> &str {
                "first-takes-all"
            }
            fn allocate(
                &self,
                me: &str,
                members: &[AllocMember],
                queues: &[AllocQueue],
            ) -> Vec<AllocQueue> {
                if members[0].client_id == me {
                    queues.to_vec()
                } else {
                    Vec::new()
                }
            }
        }
        let s = Strategy::Custom(Arc::new(FirstTakesAll));
        let qs = queues(&[("t", 3)]);
        let shares = partition(&s, &members(&["b", "a"]), &qs);
        assert_eq!(ids(&shares[1]), vec![0, 1, 2], "a is first once sorted");
        assert_eq!(s.name(), "first-takes-all");
    }

    fn member_list() -> impl proptest::strategy::Strategy<Value = Vec<AllocMember>> {
        proptest::collection::btree_set(("[a-f]{1,3}", proptest::option::of("[xy]")), 1..12)
            .prop_map(|set| {
                // Client ids are unique in a member list (the coordinator keys members by id).
                let mut seen = BTreeSet::new();
                set.into_iter()
                    .filter(|(id, _)| seen.insert(id.clone()))
                    .map(|(id, room)| AllocMember { client_id: id, room })
                    .collect()
            })
    }

    fn queue_list() -> impl proptest::strategy::Strategy<Value = Vec<AllocQueue>> {
        proptest::collection::btree_set(("[pq]", 0u32..40, proptest::option::of("[xyz]")), 0..60)
            .prop_map(|set| {
                // One room per (topic, queue): a queue lives on one broker.
                let mut seen = BTreeSet::new();
                set.into_iter()
                    .filter(|(t, q, _)| seen.insert((t.clone(), *q)))
                    .map(|(topic, queue_id, room)| AllocQueue { topic, queue_id, room })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn every_strategy_partitions_the_queues_in_any_input_order(
            ms in member_list(),
            qs in queue_list(),
            seed in any::<u64>(),
        ) {
            for s in strategies() {
                let shares = partition(&s, &ms, &qs);
                // Shuffled inputs (members and queues as another member may have received
                // them) give every member the same share.
                let mut rng = seed;
                let mut shuffle = |n: usize| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (rng >> 33) as usize % n.max(1)
                };
                let (mut ms2, mut qs2) = (ms.clone(), qs.clone());
                for i in (1..ms2.len()).rev() { let j = shuffle(i + 1); ms2.swap(i, j); }
                for i in (1..qs2.len()).rev() { let j = shuffle(i + 1); qs2.swap(i, j); }
                for (m, share) in ms.iter().zip(&shares) {
                    prop_assert_eq!(&s.allocate(&m.client_id, &ms2, &qs2), share);
                }
            }
        }

        #[test]
        fn averagely_shares_differ_by_at_most_one(ms in member_list(), qs in queue_list()) {
            for s in [Strategy::Averagely, Strategy::AveragelyByCircle] {
                let sizes: Vec<usize> = partition(&s, &ms, &qs).iter().map(Vec::len).collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "{:?}: {:?}", s, sizes);
            }
        }

        #[test]
        fn consistent_hash_moves_only_what_a_joiner_takes(
            ms in member_list(),
            qs in queue_list(),
            joiner in "[g-h]{1,3}",
        ) {
            let s = Strategy::ConsistentHash { virtual_nodes: DEFAULT_VIRTUAL_NODES };
            let before = partition(&s, &ms, &qs);
            let mut grown = ms.clone();
            grown.push(AllocMember::new(joiner.clone()));
            let after = partition(&s, &grown, &qs);
            for (old, new) in before.iter().zip(&after) {
                // Every existing member keeps a subset of what it had: moved queues all went
                // to the joiner.
                for q in new {
                    prop_assert!(old.contains(q), "{:?} moved between existing members", q);
                }
            }
        }
    }
}
