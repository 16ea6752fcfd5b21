use super::*;
use proptest::prelude::*;

const LAG_MAX: Duration = Duration::from_millis(1_000);

fn config(min: usize) -> InSyncConfig {
    InSyncConfig { min_in_sync_replicas: min, replica_lag_max: LAG_MAX }
}

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn replicas_join_once_they_have_synced_the_confirmed_position() {
    let t0 = Instant::now();
    let mut set = InSyncSet::new(config(2), 2, 100, 100);
    assert_eq!(set.admit(), Err((1, 2)), "no replica yet: sync sends are refused");
    // Behind the confirmed position: connected but not a member.
    assert_eq!(set.connected(0, 40, t0).unwrap(), vec![]);
    assert_eq!(set.acknowledged(0, 90, ms(t0, 10)).unwrap(), vec![]);
    assert_eq!(set.acknowledged(0, 100, ms(t0, 20)).unwrap(), vec![MembershipChange::Joined(0)]);
    assert_eq!(set.admit(), Ok(()));
    // The master appends and syncs; the confirmed position waits for the member.
    set.appended(300);
    set.master_synced(300);
    assert_eq!(set.confirmed(), 100);
    set.acknowledged(0, 250, ms(t0, 30)).unwrap();
    assert_eq!(set.confirmed(), 250);
    assert!(!set.covers(300));
    set.acknowledged(0, 300, ms(t0, 40)).unwrap();
    assert!(set.covers(300));
}

#[test]
fn a_lagging_replica_leaves_after_the_lag_limit_and_the_set_then_needs_more_members() {
    let t0 = Instant::now();
    let mut set = InSyncSet::new(config(2), 1, 0, 0);
    set.connected(0, 0, t0).unwrap();
    assert!(set.is_in_sync(0));
    set.appended(1_000);
    set.master_synced(1_000);
    // One round trip behind a busy master is still caught up.
    set.acknowledged(0, 500, ms(t0, 100)).unwrap();
    set.appended(2_000);
    set.master_synced(2_000);
    set.acknowledged(0, 1_000, ms(t0, 200)).unwrap();
    assert!(
        set.tick(ms(t0, 1_050)).is_empty(),
        "caught up at 100 ms (the end as of its previous ack)"
    );
    // It stops keeping up: no ack reaches the end as of its previous ack.
    set.appended(5_000);
    set.acknowledged(0, 1_500, ms(t0, 400)).unwrap();
    assert!(set.tick(ms(t0, 1_099)).is_empty());
    assert_eq!(set.tick(ms(t0, 1_101)), vec![MembershipChange::Left(0)]);
    assert_eq!(set.admit(), Err((1, 2)));
    // The set is the master alone: the confirmed position is the master's, but a sync produce
    // waiting for it is not acknowledged, since only one disk has it.
    assert_eq!(set.confirmed(), 2_000);
    assert!(!set.covers(2_000));
}

/// A replica that keeps pace with a busy master from further behind than one acknowledgement
/// (a sync producer's pipeline deeper than one replication fetch) stays in the set: at every
/// acknowledgement it has the master's end of 200 ms earlier. It used to count as caught up
/// only on reaching the end as of its previous acknowledgement, and left after the lag limit
/// under any such load (on a broker: every 5 s, its sync sends refused or timed out).
#[test]
fn a_replica_keeping_pace_several_acknowledgements_behind_stays_in_the_set() {
    let t0 = Instant::now();
    let mut set = InSyncSet::new(config(2), 1, 0, 0);
    set.connected(0, 0, t0).unwrap();
    // Every 10 ms the master appends 4 bytes; the replica acknowledges what it had 20 steps
    // (200 ms) before. 10 s: ten times the lag limit.
    for step in 1..=1_000u64 {
        let now = ms(t0, step * 10);
        set.appended(step * 4);
        set.master_synced(step * 4);
        set.acknowledged(0, step.saturating_sub(20) * 4, now).unwrap();
        assert!(set.tick(now).is_empty(), "left at {} ms", step * 10);
    }
    assert_eq!(set.confirmed(), 980 * 4);
    // It stops: what it has is the master's end at 9,800 ms, so it leaves a lag limit after
    // that (give or take the spacing of the ends remembered: LAG_MAX / 64).
    let mut left_at = None;
    for step in 1_001..=1_200u64 {
        let now = ms(t0, step * 10);
        set.appended(step * 4);
        set.acknowledged(0, 980 * 4, now).unwrap();
        if !set.tick(now).is_empty() {
            left_at = Some(step * 10);
            break;
        }
    }
    let left_at = left_at.expect("a replica that stopped leaves");
    assert!((10_800..=10_830).contains(&left_at), "left at {left_at} ms");
}

#[test]
fn a_broken_stream_leaves_at_once_and_a_reconnect_starts_out_of_the_set() {
    let t0 = Instant::now();
    let mut set = InSyncSet::new(config(2), 2, 0, 0);
    set.connected(0, 0, t0).unwrap();
    set.connected(1, 0, t0).unwrap();
    assert_eq!(set.in_sync_count(), 3);
    assert_eq!(set.disconnected(1), vec![MembershipChange::Left(1)]);
    assert_eq!(set.in_sync_count(), 2);
    assert!(matches!(set.acknowledged(1, 0, t0), Err(AckError::NotConnected { replica: 1 })));
    set.appended(100);
    set.master_synced(100);
    set.acknowledged(0, 100, ms(t0, 1)).unwrap();
    assert_eq!(set.confirmed(), 100);
    // Rejoining behind the confirmed position: out until caught up.
    assert_eq!(set.connected(1, 60, ms(t0, 2)).unwrap(), vec![]);
    assert_eq!(set.confirmed(), 100, "a reconnect never lowers the confirmed position");
}

#[test]
fn a_member_that_reconnects_caught_up_reports_no_change() {
    let t0 = Instant::now();
    let mut set = InSyncSet::new(config(2), 1, 100, 100);
    assert_eq!(set.connected(0, 100, t0).unwrap(), vec![MembershipChange::Joined(0)]);
    // A second stream (the replica's follower after its start-up join): still a member, no
    // "left" then "joined".
    assert_eq!(set.connected(0, 100, ms(t0, 5)).unwrap(), vec![]);
    assert!(set.is_in_sync(0));
    // Reconnecting behind the confirmed position is a real departure.
    set.appended(200);
    set.master_synced(200);
    set.acknowledged(0, 200, ms(t0, 6)).unwrap();
    assert_eq!(set.confirmed(), 200);
    assert_eq!(set.connected(0, 150, ms(t0, 7)).unwrap(), vec![MembershipChange::Left(0)]);
    assert!(!set.is_in_sync(0));
}

#[test]
fn acknowledgements_the_rules_cannot_accept_are_errors() {
    let t0 = Instant::now();
    let mut set = InSyncSet::new(config(2), 1, 10, 10);
    assert!(matches!(set.connected(3, 0, t0), Err(AckError::UnknownReplica(3))));
    assert!(matches!(set.connected(0, 11, t0), Err(AckError::PastMasterEnd { .. })));
    set.connected(0, 10, t0).unwrap();
    assert!(matches!(set.acknowledged(0, 9, t0), Err(AckError::WentBack { .. })));
}

#[test]
fn waiters_are_answered_in_log_order_on_confirmation_or_timeout_and_are_bounded() {
    let t0 = Instant::now();
    let mut set = InSyncSet::new(config(2), 1, 0, 0);
    set.connected(0, 0, t0).unwrap();
    let mut waiters = SyncWaiters::new(2, Duration::from_millis(500));
    set.appended(100);
    waiters.push(100, t0, "a").unwrap();
    set.appended(200);
    waiters.push(200, ms(t0, 10), "b").unwrap();
    assert_eq!(waiters.push(200, ms(t0, 10), "c"), Err("c"));
    set.master_synced(200);
    assert!(waiters.poll(&set, ms(t0, 20)).is_empty());
    set.acknowledged(0, 150, ms(t0, 30)).unwrap();
    assert_eq!(waiters.poll(&set, ms(t0, 30)), vec![("a", SyncStatus::SendOk)]);
    assert_eq!(waiters.next_deadline(), Some(ms(t0, 510)));
    assert!(waiters.poll(&set, ms(t0, 509)).is_empty());
    assert_eq!(waiters.poll(&set, ms(t0, 510)), vec![("b", SyncStatus::FlushSlaveTimeout)]);
    assert!(waiters.is_empty());
}

#[derive(Debug, Clone)]
enum Step {
    Append(u64),
    MasterSync(u8),
    Ack(usize, u8),
    Connect(usize, u8),
    Disconnect(usize),
    Advance(u64),
    Wait,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..200).prop_map(Step::Append),
        2 => any::<u8>().prop_map(Step::MasterSync),
        5 => (0usize..3, any::<u8>()).prop_map(|(r, f)| Step::Ack(r, f)),
        1 => (0usize..3, any::<u8>()).prop_map(|(r, f)| Step::Connect(r, f)),
        1 => (0usize..3).prop_map(Step::Disconnect),
        3 => (0u64..700).prop_map(Step::Advance),
        2 => Just(Step::Wait),
    ]
}

/// `from + (to - from) * f / 255`.
fn between(from: u64, to: u64, f: u8) -> u64 {
    from + (to - from) * u64::from(f) / 255
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// After every step: the confirmed position never goes back, is on every member's disk,
    /// members are connected and recently caught up, and a produce acknowledged SEND_OK was on
    /// at least `min_in_sync_replicas` disks when it was answered.
    #[test]
    fn the_rules_hold_after_every_step(
        min in 1usize..4,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut set = InSyncSet::new(config(min), 3, 0, 0);
        let mut waiters = SyncWaiters::new(64, Duration::from_millis(900));
        let mut confirmed = 0;
        for s in steps {
            match s {
                Step::Append(n) => set.appended(set.master_end + n),
                Step::MasterSync(f) => set.master_synced(between(set.master_synced, set.master_end, f)),
                Step::Ack(r, f) => {
                    if set.replicas[r].connected {
                        let to = between(set.replicas[r].synced, set.master_end, f);
                        set.acknowledged(r, to, now).unwrap();
                    }
                }
                Step::Connect(r, f) => {
                    set.connected(r, between(0, set.master_end, f), now).unwrap();
                }
                Step::Disconnect(r) => {
                    set.disconnected(r);
                }
                Step::Advance(d) => {
                    now += Duration::from_millis(d);
                    set.tick(now);
                    for r in set.replicas.iter().filter(|r| r.in_sync) {
                        let t = r.last_caught_up.expect("a member was caught up once");
                        prop_assert!(now.saturating_duration_since(t) <= LAG_MAX);
                    }
                }
                Step::Wait => {
                    if set.admit().is_ok() {
                        let _ = waiters.push(set.master_end, now, set.master_end);
                    } else {
                        prop_assert!(set.in_sync_count() < min);
                    }
                }
            }
            prop_assert!(set.confirmed() >= confirmed, "confirmed went back");
            confirmed = set.confirmed();
            prop_assert!(confirmed <= set.master_synced);
            for r in set.replicas.iter().filter(|r| r.in_sync) {
                prop_assert!(r.connected);
                prop_assert!(r.synced >= confirmed);
            }
            for (end, status) in waiters.poll(&set, now) {
                if status == SyncStatus::SendOk {
                    let on_disk = 1 + set.replicas.iter().filter(|r| r.in_sync && r.synced >= end).count();
                    prop_assert!(on_disk >= min, "acknowledged {end} on {on_disk} disks, need {min}");
                }
            }
        }
    }

    /// When every replica keeps acknowledging the master's end, all of them are members and
    /// everything synced is confirmed.
    #[test]
    fn replicas_that_keep_up_stay_in_and_confirm_everything(
        appends in proptest::collection::vec((1u64..500, 0u64..900), 1..60),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut set = InSyncSet::new(config(3), 2, 0, 0);
        set.connected(0, 0, now).unwrap();
        set.connected(1, 0, now).unwrap();
        for (n, gap_ms) in appends {
            now += Duration::from_millis(gap_ms);
            let end = set.master_end + n;
            set.appended(end);
            set.master_synced(end);
            set.acknowledged(0, end, now).unwrap();
            set.acknowledged(1, end, now).unwrap();
            prop_assert!(set.tick(now).is_empty());
            prop_assert!(set.covers(end));
        }
    }
}
