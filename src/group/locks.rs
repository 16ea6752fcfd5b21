//! Queue locks for orderly consumption: at most one member of a group processes a queue at a
//! time, for a lease it renews.
//!
//! The group's coordinator grants its locks (one [`QueueLocks`] per shard, for the groups it
//! coordinates): a batch lock is one request to one shard whatever shards own the queues, and
//! the locks live next to the membership they depend on, so a member that leaves or whose
//! session expires loses its locks at once. (`../shared/DESIGN.md` section 5 places locks on
//! the queue's owner shard; docs/design.md says why ringmq keeps them at the coordinator.)
//! An orderly consumer locks the queues its
//! allocation gave it (in one batch request), processes a queue only while it holds the lock,
//! renews well before the lease ends (RocketMQ renews every 20 s for a 60 s lease), and unlocks
//! the queues it gives up after committing their offsets. A lock whose lease ran out is free
//! for the next member that asks: a crashed consumer's queues move on after one lease.
//!
//! Pure: no I/O, the time comes in with each call. Bounded: at most `max_locks` locks are
//! held; expired ones are dropped before a new one is refused. The locks are kept by group, so
//! releasing a member's (it left, or its session expired: the coordinator's timer) visits only
//! its group's locks, not every group's.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// RocketMQ's default lock lease (`rocketmq.broker.rebalance.lockMaxLiveTime`).
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(60);

/// One queue, as locks name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockedQueue {
    pub topic: String,
    pub queue_id: u32,
}

#[derive(Debug, Clone)]
struct Lock {
    owner: String,
    expires_at: Instant,
}

/// The queue locks one shard grants.
#[derive(Debug)]
pub struct QueueLocks {
    /// Group -> queue -> lock; no group without locks.
    locks: HashMap<String, HashMap<LockedQueue, Lock>>,
    /// Locks held, in all groups.
    len: usize,
    max_locks: usize,
}

impl QueueLocks {
    pub fn new(max_locks: usize) -> Self {
        QueueLocks { locks: HashMap::new(), len: 0, max_locks }
    }

    /// `client_id` of `group` asks for `queues` until `now + lease`. Returns the queues it
    /// holds afterwards, in the order asked: those that were free, expired or already its own
    /// (renewed). Queues another member holds under a live lease are left out, as are new
    /// ones past `max_locks`.
    pub fn lock(
        &mut self,
        group: &str,
        client_id: &str,
        queues: &[LockedQueue],
        now: Instant,
        lease: Duration,
    ) -> Vec<LockedQueue> {
        let mut granted = Vec::new();
        // Each queue is decided once, however often it is named: a request may name up to
        // `MAX_LIST_ITEMS` queues, and looking each up in `granted` would take quadratic time
        // on the coordinator's shard.
        let mut seen: HashSet<&LockedQueue> = HashSet::with_capacity(queues.len());
        let mut swept = false;
        for q in queues {
            if !seen.insert(q) {
                continue;
            }
            let current = self.locks.get(group).and_then(|g| g.get(q));
            if current.is_some_and(|l| l.owner != client_id && l.expires_at > now) {
                continue;
            }
            if current.is_none() && self.len >= self.max_locks {
                if !swept {
                    self.expire(now);
                    swept = true;
                }
                if self.len >= self.max_locks {
                    continue;
                }
            }
            let lock = Lock { owner: client_id.to_owned(), expires_at: now + lease };
            match self.locks.get_mut(group) {
                Some(g) => {
                    if g.insert(q.clone(), lock).is_none() {
                        self.len += 1;
                    }
                }
                None => {
                    self.locks.insert(group.to_owned(), HashMap::from([(q.clone(), lock)]));
                    self.len += 1;
                }
            }
            granted.push(q.clone());
        }
        granted
    }

    /// Releases the `queues` `client_id` holds (others' locks are untouched); returns how many
    /// it released.
    pub fn unlock(&mut self, group: &str, client_id: &str, queues: &[LockedQueue]) -> usize {
        let Some(g) = self.locks.get_mut(group) else {
            return 0;
        };
        let mut released = 0;
        for q in queues {
            if g.get(q).is_some_and(|l| l.owner == client_id) {
                g.remove(q);
                released += 1;
            }
        }
        self.len -= released;
        if g.is_empty() {
            self.locks.remove(group);
        }
        released
    }

    /// Releases every lock of `client_id` in `group` (it left the group or was expired).
    pub fn release_member(&mut self, group: &str, client_id: &str) -> usize {
        self.release_in(group, |owner| owner == client_id)
    }

    /// Releases the locks in `group` of every holder `keep` rejects (members that left or
    /// expired); returns how many it released.
    pub fn release_absent(&mut self, group: &str, keep: impl Fn(&str) -> bool) -> usize {
        self.release_in(group, |owner| !keep(owner))
    }

    /// Releases the locks in `group` whose owner `release` picks, visiting that group's locks
    /// only.
    fn release_in(&mut self, group: &str, release: impl Fn(&str) -> bool) -> usize {
        let Some(g) = self.locks.get_mut(group) else {
            return 0;
        };
        let before = g.len();
        g.retain(|_, l| !release(&l.owner));
        let released = before - g.len();
        self.len -= released;
        if g.is_empty() {
            self.locks.remove(group);
        }
        released
    }

    /// Who holds `queue` for `group` at `now`.
    pub fn holder(&self, group: &str, queue: &LockedQueue, now: Instant) -> Option<&str> {
        self.locks.get(group)?.get(queue).filter(|l| l.expires_at > now).map(|l| l.owner.as_str())
    }

    /// Drops every lock whose lease ended at or before `now`.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.len;
        for g in self.locks.values_mut() {
            g.retain(|_, l| l.expires_at > now);
        }
        self.locks.retain(|_, g| !g.is_empty());
        self.len = self.locks.values().map(HashMap::len).sum();
        before - self.len
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Clock, SimClock};
    use proptest::prelude::*;

    fn q(id: u32) -> LockedQueue {
        LockedQueue { topic: "t".into(), queue_id: id }
    }

    #[test]
    fn one_holder_per_queue_until_its_lease_ends() {
        let clock = SimClock::new(0);
        let lease = Duration::from_secs(60);
        let mut l = QueueLocks::new(100);
        assert_eq!(l.lock("g", "a", &[q(0), q(1)], clock.now(), lease), vec![q(0), q(1)]);
        // b gets only the free queue; another group is independent.
        assert_eq!(l.lock("g", "b", &[q(1), q(2)], clock.now(), lease), vec![q(2)]);
        assert_eq!(l.lock("h", "b", &[q(1)], clock.now(), lease), vec![q(1)]);
        // a renews at 40 s; b still cannot take q1 at 60 s, but can at 100 s.
        clock.advance(Duration::from_secs(40));
        assert_eq!(l.lock("g", "a", &[q(1)], clock.now(), lease), vec![q(1)]);
        clock.advance(Duration::from_secs(20));
        assert!(l.lock("g", "b", &[q(1)], clock.now(), lease).is_empty());
        assert_eq!(l.holder("g", &q(1), clock.now()), Some("a"));
        // q0 was not renewed: its lease ended at 60 s.
        assert_eq!(l.holder("g", &q(0), clock.now()), None);
        assert_eq!(l.lock("g", "b", &[q(0)], clock.now(), lease), vec![q(0)]);
        clock.advance(Duration::from_secs(40));
        assert_eq!(l.lock("g", "b", &[q(1)], clock.now(), lease), vec![q(1)]);
    }

    #[test]
    fn unlock_releases_only_the_callers_locks() {
        let now = SimClock::new(0).now();
        let mut l = QueueLocks::new(100);
        l.lock("g", "a", &[q(0), q(1)], now, DEFAULT_LOCK_LEASE);
        assert_eq!(l.unlock("g", "b", &[q(0)]), 0);
        assert_eq!(l.unlock("g", "a", &[q(0), q(5)]), 1);
        assert_eq!(l.lock("g", "b", &[q(0), q(1)], now, DEFAULT_LOCK_LEASE), vec![q(0)]);
        assert_eq!(l.release_member("g", "a"), 1);
        assert_eq!(l.holder("g", &q(1), now), None);
    }

    #[test]
    fn releasing_a_member_s_locks_leaves_other_groups_alone() {
        let now = SimClock::new(0).now();
        let mut l = QueueLocks::new(100);
        let groups = ["", "f", "g", "g2", "h"];
        for group in groups {
            assert_eq!(l.lock(group, "a", &[q(0), q(2)], now, DEFAULT_LOCK_LEASE).len(), 2);
            assert_eq!(l.lock(group, "b", &[q(1)], now, DEFAULT_LOCK_LEASE).len(), 1);
        }
        assert_eq!(l.release_member("g", "a"), 2);
        assert_eq!(l.release_member("g", "a"), 0);
        assert_eq!(l.release_absent("g2", |m| m == "a"), 1, "b's");
        assert_eq!(l.release_absent("nobody", |_| false), 0);
        assert_eq!(l.len(), groups.len() * 3 - 3);
        for group in groups {
            let a = (group != "g").then_some("a");
            let b = (group != "g2").then_some("b");
            assert_eq!(l.holder(group, &q(2), now), a, "{group:?}");
            assert_eq!(l.holder(group, &q(1), now), b, "{group:?}");
        }
        // Emptied groups are forgotten: the count is that of the locks left.
        for group in groups {
            l.release_absent(group, |_| false);
        }
        assert!(l.is_empty());
        assert!(l.locks.is_empty(), "no group without locks is kept");
    }

    #[test]
    fn the_number_of_locks_is_bounded() {
        let clock = SimClock::new(0);
        let mut l = QueueLocks::new(2);
        let lease = Duration::from_secs(10);
        assert_eq!(l.lock("g", "a", &[q(0), q(1), q(2)], clock.now(), lease), vec![q(0), q(1)]);
        assert_eq!(l.len(), 2);
        // Renewing what it holds still works at the limit; expired locks make room.
        assert_eq!(l.lock("g", "a", &[q(1)], clock.now(), lease), vec![q(1)]);
        clock.advance(Duration::from_secs(10));
        assert_eq!(l.lock("g", "b", &[q(2)], clock.now(), lease), vec![q(2)]);
        assert!(l.len() <= 2);
    }

    #[test]
    fn a_queue_named_again_in_one_request_is_answered_once() {
        let now = SimClock::new(0).now();
        // As many queues as one request may name (`MAX_LIST_ITEMS`), then repeats. Its time
        // (it was quadratic in the queues named) is measured by `benches/group_locks.rs`.
        let n = crate::protocol::message::MAX_LIST_ITEMS;
        let mut l = QueueLocks::new(n as usize);
        let mut queues: Vec<LockedQueue> = (0..n).map(q).collect();
        queues.extend((0..10).map(q));
        let granted = l.lock("g", "a", &queues, now, DEFAULT_LOCK_LEASE);
        assert_eq!(granted, (0..n).map(q).collect::<Vec<_>>(), "each queue once, in order");
        assert_eq!(l.len(), n as usize);
    }

    proptest! {
        /// Whatever the members of two groups ask, renew, release, leave with or let expire:
        /// at any time at most one member holds a queue of a group, a holder only changes once
        /// the lease ended or was released, and the bound holds.
        #[test]
        fn never_two_holders(
            ops in proptest::collection::vec((0u8..5, 0u8..3, 0u32..4, 0u8..30, 0u8..2), 1..300),
        ) {
            let clock = SimClock::new(0);
            let lease = Duration::from_secs(20);
            let mut l = QueueLocks::new(6);
            // (group, queue) -> (holder, lease end) as granted
            let mut granted: HashMap<(u8, u32), (String, Instant)> = HashMap::new();
            for (kind, member, queue, secs, group) in ops {
                let (m, g) = (format!("m{member}"), format!("g{group}"));
                let now = clock.now();
                match kind {
                    0 | 1 => {
                        let got = l.lock(&g, &m, &[q(queue)], now, lease);
                        if got == vec![q(queue)] {
                            if let Some((h, end)) = granted.get(&(group, queue)) {
                                prop_assert!(*h == m || *end <= now, "{} took q{} from {}", m, queue, h);
                            }
                            granted.insert((group, queue), (m.clone(), now + lease));
                        }
                    }
                    2 => {
                        if l.unlock(&g, &m, &[q(queue)]) == 1 {
                            let (h, _) = granted.remove(&(group, queue)).unwrap();
                            prop_assert_eq!(h, m);
                        }
                    }
                    3 => {
                        l.release_member(&g, &m);
                        granted.retain(|(gi, _), (h, _)| *gi != group || *h != m);
                    }
                    _ => clock.advance(Duration::from_secs(u64::from(secs))),
                }
                prop_assert!(l.len() <= 6);
                prop_assert_eq!(l.len(), l.locks.values().map(HashMap::len).sum::<usize>());
                prop_assert!(l.locks.values().all(|g| !g.is_empty()), "no group without locks");
                for ((group, queue), (h, end)) in &granted {
                    let holder = l.holder(&format!("g{group}"), &q(*queue), clock.now());
                    if *end > clock.now() {
                        prop_assert_eq!(holder, Some(h.as_str()));
                    } else {
                        prop_assert_eq!(holder, None);
                    }
                }
            }
        }
    }
}
