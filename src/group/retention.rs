//! Retention of the committed offsets of groups without members (Kafka's
//! `offsets.retention.minutes`): a group that has had no member and no commit for
//! `group.offsets_retention_ms` has its offsets forgotten, so groups nobody uses any more
//! (or names made up by a client that committed without joining) do not keep their share of
//! the shard's `group.max_committed_offsets` for ever.
//!
//! A group's last activity is its last commit, or the moment its last member left or expired;
//! while it has members it never lapses. Offsets restored at start count from the start.
//!
//! Pure: no clock reads (every call takes `now`). Bounded: one entry per group with committed
//! offsets (the coordinator forgets a group's entry when its offsets go).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Last activity of every group with committed offsets, in the order they can lapse.
#[derive(Debug)]
pub struct OffsetsRetention {
    retention: Duration,
    /// Group -> its last activity.
    last: HashMap<String, Instant>,
    /// The same entries ordered by (last activity, group): the oldest lapses first.
    order: BTreeSet<(Instant, String)>,
}

impl OffsetsRetention {
    /// `retention` must be positive (the config refuses 0).
    pub fn new(retention: Duration) -> Self {
        OffsetsRetention { retention, last: HashMap::new(), order: BTreeSet::new() }
    }

    /// `group` was active at `now` (it committed, or its last member left). Never moves a
    /// group's last activity back.
    pub fn touch(&mut self, group: &str, now: Instant) {
        match self.last.get_mut(group) {
            Some(at) if *at >= now => {}
            Some(at) => {
                self.order.remove(&(*at, group.to_owned()));
                *at = now;
                self.order.insert((now, group.to_owned()));
            }
            None => {
                self.last.insert(group.to_owned(), now);
                self.order.insert((now, group.to_owned()));
            }
        }
    }

    /// Drops `group`'s entry (its offsets went).
    pub fn forget(&mut self, group: &str) {
        if let Some(at) = self.last.remove(group) {
            self.order.remove(&(at, group.to_owned()));
        }
    }

    /// Keeps only the groups `keep` accepts (those that still have offsets).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.last.retain(|g, _| keep(g));
        self.order.retain(|(_, g)| keep(g));
    }

    /// The groups whose offsets lapse at `now`: no members (`has_members` says) and a last
    /// activity at least the retention before `now`. Their entries are dropped (the caller
    /// forgets their offsets). A group with members that reached the front counts as active
    /// now, so a call scans only groups that lapse or have members, not every group.
    pub fn lapsed(&mut self, now: Instant, has_members: impl Fn(&str) -> bool) -> Vec<String> {
        let mut lapsed = Vec::new();
        let mut active = Vec::new();
        while let Some((at, _)) = self.order.first() {
            if now.saturating_duration_since(*at) < self.retention {
                break;
            }
            let (_, group) = self.order.pop_first().expect("first exists");
            self.last.remove(&group);
            if has_members(&group) {
                active.push(group);
            } else {
                lapsed.push(group);
            }
        }
        for group in active {
            self.touch(&group, now);
        }
        lapsed
    }

    /// Groups tracked (those with committed offsets).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION: Duration = Duration::from_secs(3600);

    #[test]
    fn a_group_lapses_exactly_at_the_retention_after_its_last_activity() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = OffsetsRetention::new(RETENTION);
        r.touch("g", t0);
        r.touch("h", t0 + ms(5));
        assert!(r.lapsed(t0 + RETENTION - ms(1), |_| false).is_empty());
        assert_eq!(r.lapsed(t0 + RETENTION, |_| false), vec!["g".to_string()]);
        assert_eq!(r.len(), 1, "g's entry went with it");
        // A touch moves h's count on; an older one does not move it back.
        r.touch("h", t0 + ms(10));
        r.touch("h", t0);
        assert!(r.lapsed(t0 + ms(9) + RETENTION, |_| false).is_empty());
        assert_eq!(r.lapsed(t0 + ms(10) + RETENTION, |_| false), vec!["h".to_string()]);
        assert!(r.is_empty());
    }

    #[test]
    fn a_group_with_members_never_lapses_and_forgotten_groups_leave_no_entry() {
        let t0 = Instant::now();
        let mut r = OffsetsRetention::new(RETENTION);
        r.touch("busy", t0);
        r.touch("gone", t0);
        r.touch("kept", t0);
        for day in 1..10 {
            let now = t0 + RETENTION * day;
            assert!(r.lapsed(now, |g| g == "busy" || g == "gone" || g == "kept").is_empty());
        }
        assert_eq!(r.len(), 3);
        r.forget("gone");
        r.retain(|g| g != "kept");
        assert_eq!(r.len(), 1);
        assert_eq!(r.lapsed(t0 + RETENTION * 20, |_| false), vec!["busy".to_string()]);
    }
}
