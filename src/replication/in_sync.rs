//! The in-sync set of one master shard, its confirmed position (high watermark) and the
//! statuses of synchronously replicated produces.
//!
//! A master shard has replicas (shard s of each replica broker). Each replica acknowledges the
//! log position it has **synced to disk**. The in-sync set is the master plus the replicas
//! that keep up; the **confirmed position** is the lowest synced position among its members.
//! Consumers of the master see only confirmed data, and a SYNC_MASTER produce is acknowledged
//! once the confirmed position passes its batch while the set still has at least
//! `min_in_sync_replicas` members (the master counts).
//!
//! Rules (Kafka's ISR rules, which RocketMQ 5's controller mode follows):
//! - A replica is *caught up as of* time `t` when it has synced at least the master's log end
//!   at `t` (the ends at its recent acknowledgements are remembered, [`TARGET_SAMPLES`]). So a
//!   replica that follows a busy master, one round trip or several fetches behind the live end,
//!   is caught up as of a moment ago: Kafka's rule (caught up when it reaches the end as of its
//!   previous fetch) measured how far behind it is, not only whether it is one fetch behind.
//! - An in-sync replica that has not been caught up as of the last `replica_lag_max` leaves at
//!   the next [`InSyncSet::tick`]; one whose stream breaks leaves at once.
//! - An out-of-sync replica rejoins once it has synced the confirmed position. That keeps the
//!   confirmed position monotonic: it is the maximum of its old value and the minimum over the
//!   members, and a joining member is never below it.
//! - A produce is refused before anything is written (SLAVE_NOT_AVAILABLE) while the set has
//!   fewer than `min_in_sync_replicas` members. A waiting produce is acknowledged only when the
//!   confirmed position covers it **and** the set has enough members at that moment: when the
//!   set shrinks to the master alone, the confirmed position jumps to the master's own synced
//!   position, and acknowledging then would call data on one disk replicated (RocketMQ issue
//!   #7017's lesson). Past `sync_replication_timeout` it is answered FLUSH_SLAVE_TIMEOUT.
//!
//! Pure: no I/O, no clock reads (`now` is passed in). The broker's replication task feeds it
//! acknowledgements, connects, disconnects, appends and the master's own syncs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A replica of this shard, numbered by its place in the broker's `replicas` list.
pub type ReplicaIndex = usize;

/// The master's ends a replica's acknowledgements remember, per `replica_lag_max`: besides
/// the newest, one at most every `replica_lag_max / TARGET_SAMPLES`, none older than
/// `replica_lag_max`. How far behind a replica is gets known to that resolution.
pub const TARGET_SAMPLES: u32 = 64;

/// The in-sync rules' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InSyncConfig {
    /// Members (the master counts) a sync produce needs, to be accepted and to be acknowledged.
    pub min_in_sync_replicas: usize,
    /// How long an in-sync replica may go without being caught up before it leaves.
    pub replica_lag_max: Duration,
}

/// A change of membership, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    Joined(ReplicaIndex),
    Left(ReplicaIndex),
}

/// An acknowledgement the rules refuse: the replication task has a bug or the peer lies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("replica {0} does not exist")]
    UnknownReplica(ReplicaIndex),
    #[error("replica {replica} is not connected")]
    NotConnected { replica: ReplicaIndex },
    #[error("replica {replica} acknowledged {synced}, past the master's end {master_end}")]
    PastMasterEnd { replica: ReplicaIndex, synced: u64, master_end: u64 },
    #[error("replica {replica} went back from {before} to {synced} without reconnecting")]
    WentBack { replica: ReplicaIndex, before: u64, synced: u64 },
}

#[derive(Debug, Clone)]
struct Replica {
    connected: bool,
    in_sync: bool,
    synced: u64,
    last_caught_up: Option<Instant>,
    /// The master's end at this replica's recent acknowledgements, and when, oldest first
    /// (ascending in both): the newest always, the others [`TARGET_SAMPLES`] apart over the
    /// last `replica_lag_max`. At most `TARGET_SAMPLES + 2`.
    targets: VecDeque<(u64, Instant)>,
}

impl Replica {
    /// The replica synced `synced`: it is caught up as of the newest remembered end it reached,
    /// and those ends are done with.
    fn reached(&mut self, synced: u64) {
        let reached = self.targets.iter().take_while(|&&(end, _)| end <= synced).count();
        if let Some(&(_, at)) = reached.checked_sub(1).and_then(|i| self.targets.get(i)) {
            self.last_caught_up = Some(self.last_caught_up.map_or(at, |t| t.max(at)));
        }
        self.targets.drain(..reached);
    }

    /// Remembers the master's end `end` at `now`, keeping [`TARGET_SAMPLES`] over `lag_max`.
    fn remember(&mut self, end: u64, now: Instant, lag_max: Duration) {
        let spacing = lag_max / TARGET_SAMPLES;
        let n = self.targets.len();
        if n >= 2
            && self.targets[n - 1].1.saturating_duration_since(self.targets[n - 2].1) < spacing
        {
            self.targets.pop_back();
        }
        self.targets.push_back((end, now));
        while self
            .targets
            .front()
            .is_some_and(|&(_, at)| now.saturating_duration_since(at) > lag_max)
            || self.targets.len() > TARGET_SAMPLES as usize + 2
        {
            self.targets.pop_front();
        }
    }
}

/// One master shard's in-sync set and confirmed position.
#[derive(Debug, Clone)]
pub struct InSyncSet {
    config: InSyncConfig,
    master_end: u64,
    master_synced: u64,
    confirmed: u64,
    replicas: Vec<Replica>,
}

impl InSyncSet {
    /// A master whose log ends at `end`, all of it synced locally, with `replicas` replicas not
    /// yet connected. `confirmed` is where the confirmed position starts (the last one saved,
    /// or `end` when the data predates replication); it is never above `end`.
    pub fn new(config: InSyncConfig, replicas: usize, end: u64, confirmed: u64) -> Self {
        assert!(confirmed <= end, "confirmed {confirmed} past the log end {end}");
        let replica = Replica {
            connected: false,
            in_sync: false,
            synced: 0,
            last_caught_up: None,
            targets: VecDeque::new(),
        };
        InSyncSet {
            config,
            master_end: end,
            master_synced: end,
            confirmed,
            replicas: vec![replica; replicas],
        }
    }

    pub fn config(&self) -> InSyncConfig {
        self.config
    }

    /// The confirmed position (high watermark): data below it is on every in-sync member's disk.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Members of the in-sync set, the master included.
    pub fn in_sync_count(&self) -> usize {
        1 + self.replicas.iter().filter(|r| r.in_sync).count()
    }

    pub fn is_in_sync(&self, replica: ReplicaIndex) -> bool {
        self.replicas.get(replica).is_some_and(|r| r.in_sync)
    }

    /// A replica's synced position as last acknowledged.
    pub fn replica_synced(&self, replica: ReplicaIndex) -> Option<u64> {
        self.replicas.get(replica).filter(|r| r.connected).map(|r| r.synced)
    }

    /// Bytes the master has that `replica` has not acknowledged (its replication lag).
    pub fn replica_lag_bytes(&self, replica: ReplicaIndex) -> Option<u64> {
        self.replica_synced(replica).map(|s| self.master_end - s)
    }

    /// Whether a sync produce may be written now: `Err((members, needed))` means answer
    /// SLAVE_NOT_AVAILABLE without writing.
    pub fn admit(&self) -> Result<(), (usize, usize)> {
        let members = self.in_sync_count();
        if members < self.config.min_in_sync_replicas {
            Err((members, self.config.min_in_sync_replicas))
        } else {
            Ok(())
        }
    }

    /// Whether data up to `end` may be acknowledged to a sync producer now.
    pub fn covers(&self, end: u64) -> bool {
        self.confirmed >= end && self.in_sync_count() >= self.config.min_in_sync_replicas
    }

    /// The master appended up to `end` (not yet synced).
    pub fn appended(&mut self, end: u64) {
        assert!(end >= self.master_end, "master end went back from {} to {end}", self.master_end);
        self.master_end = end;
    }

    /// The master's own log is synced up to `synced`.
    pub fn master_synced(&mut self, synced: u64) {
        assert!(synced <= self.master_end, "synced {synced} past the end {}", self.master_end);
        self.master_synced = self.master_synced.max(synced);
        self.recompute();
    }

    /// A replica's stream (re)starts with its log synced to `synced` (after any truncation).
    /// It is out of the set until it has synced the confirmed position.
    pub fn connected(
        &mut self,
        replica: ReplicaIndex,
        synced: u64,
        now: Instant,
    ) -> Result<Vec<MembershipChange>, AckError> {
        let master_end = self.master_end;
        let r = self.replicas.get_mut(replica).ok_or(AckError::UnknownReplica(replica))?;
        if synced > master_end {
            return Err(AckError::PastMasterEnd { replica, synced, master_end });
        }
        let was_in_sync = r.in_sync;
        *r = Replica {
            connected: true,
            in_sync: false,
            synced,
            last_caught_up: (synced >= master_end).then_some(now),
            targets: VecDeque::from([(master_end, now)]),
        };
        self.try_join(replica, now, &mut Vec::new());
        self.recompute();
        // The net change: a member whose new stream starts caught up (a replica's start-up
        // join followed by its follower's, or a reconnect) never left.
        Ok(match (was_in_sync, self.replicas[replica].in_sync) {
            (true, false) => vec![MembershipChange::Left(replica)],
            (false, true) => vec![MembershipChange::Joined(replica)],
            _ => Vec::new(),
        })
    }

    /// A replica's stream broke: it leaves the set at once (it cannot acknowledge anything).
    pub fn disconnected(&mut self, replica: ReplicaIndex) -> Vec<MembershipChange> {
        let Some(r) = self.replicas.get_mut(replica) else { return Vec::new() };
        let was = r.in_sync;
        r.connected = false;
        r.in_sync = false;
        self.recompute();
        if was {
            vec![MembershipChange::Left(replica)]
        } else {
            Vec::new()
        }
    }

    /// A replica acknowledged that its log is synced up to `synced`.
    pub fn acknowledged(
        &mut self,
        replica: ReplicaIndex,
        synced: u64,
        now: Instant,
    ) -> Result<Vec<MembershipChange>, AckError> {
        let master_end = self.master_end;
        let r = self.replicas.get_mut(replica).ok_or(AckError::UnknownReplica(replica))?;
        if !r.connected {
            return Err(AckError::NotConnected { replica });
        }
        if synced > master_end {
            return Err(AckError::PastMasterEnd { replica, synced, master_end });
        }
        if synced < r.synced {
            return Err(AckError::WentBack { replica, before: r.synced, synced });
        }
        r.synced = synced;
        if synced >= master_end {
            r.last_caught_up = Some(now);
            r.targets.clear();
        } else {
            r.reached(synced);
        }
        r.remember(master_end, now, self.config.replica_lag_max);
        let mut changes = Vec::new();
        self.try_join(replica, now, &mut changes);
        self.recompute();
        Ok(changes)
    }

    /// Removes the in-sync replicas that have not been caught up for `replica_lag_max`.
    pub fn tick(&mut self, now: Instant) -> Vec<MembershipChange> {
        let lag_max = self.config.replica_lag_max;
        let mut changes = Vec::new();
        for (i, r) in self.replicas.iter_mut().enumerate() {
            let behind_since = r.last_caught_up;
            let lagging = match behind_since {
                Some(t) => now.saturating_duration_since(t) > lag_max,
                None => true,
            };
            if r.in_sync && lagging {
                r.in_sync = false;
                changes.push(MembershipChange::Left(i));
            }
        }
        if !changes.is_empty() {
            self.recompute();
        }
        changes
    }

    fn try_join(
        &mut self,
        replica: ReplicaIndex,
        now: Instant,
        changes: &mut Vec<MembershipChange>,
    ) {
        let confirmed = self.confirmed;
        let lag_max = self.config.replica_lag_max;
        let r = &mut self.replicas[replica];
        let recent = r.last_caught_up.is_some_and(|t| now.saturating_duration_since(t) <= lag_max);
        if r.connected && !r.in_sync && r.synced >= confirmed && recent {
            r.in_sync = true;
            changes.push(MembershipChange::Joined(replica));
        }
    }

    fn recompute(&mut self) {
        let lowest = self
            .replicas
            .iter()
            .filter(|r| r.in_sync)
            .map(|r| r.synced)
            .fold(self.master_synced, u64::min);
        self.confirmed = self.confirmed.max(lowest);
    }
}

/// What a synchronously replicated produce is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// On stable storage on every member of an in-sync set of at least the minimum size.
    SendOk,
    /// Written and synced locally, but not confirmed by enough replicas in time.
    FlushSlaveTimeout,
}

/// Produces waiting for the confirmed position, in log order. Bounded: [`SyncWaiters::push`]
/// refuses past `capacity` (backpressure for the producer).
#[derive(Debug)]
pub struct SyncWaiters<T> {
    capacity: usize,
    timeout: Duration,
    waiting: VecDeque<(u64, Instant, T)>,
}

impl<T> SyncWaiters<T> {
    pub fn new(capacity: usize, timeout: Duration) -> Self {
        SyncWaiters { capacity, timeout, waiting: VecDeque::new() }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Waits for data up to `end` (appended at `now`). Ends come in log order. `Err(token)`
    /// when full.
    pub fn push(&mut self, end: u64, now: Instant, token: T) -> Result<(), T> {
        if self.waiting.len() >= self.capacity {
            return Err(token);
        }
        if let Some(&(last, _, _)) = self.waiting.back() {
            assert!(end >= last, "sync waiters out of log order: {end} after {last}");
        }
        self.waiting.push_back((end, now + self.timeout, token));
        Ok(())
    }

    /// The waiters answered now: those the set covers, then those past their deadline.
    pub fn poll(&mut self, set: &InSyncSet, now: Instant) -> Vec<(T, SyncStatus)> {
        let mut out = Vec::new();
        while let Some(&(end, deadline, _)) = self.waiting.front() {
            let status = if set.covers(end) {
                SyncStatus::SendOk
            } else if deadline <= now {
                SyncStatus::FlushSlaveTimeout
            } else {
                break;
            };
            let (_, _, token) = self.waiting.pop_front().expect("front exists");
            out.push((token, status));
        }
        out
    }

    /// The earliest deadline, for the task's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.front().map(|&(_, d, _)| d)
    }
}

#[cfg(test)]
mod tests;
