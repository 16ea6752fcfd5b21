//! `ringmq cluster promote` (REPLICA_PROMOTE): a replica broker becomes the master of its
//! group without a restart (docs/design.md "Replication", "Failover").
//!
//! The shard that decodes the request coordinates: it refuses on a master or a single broker,
//! checks the new master's `[replication]` section, refuses while the old master still
//! answers (unless forced), writes the role override file (fsynced, so a restart keeps this
//! broker master instead of following the old master and truncating what it acknowledged),
//! then promotes every shard (itself directly, the others over the control mesh).
//!
//! Each shard, once: stops following (its follower leaves at its next wait; a batch being
//! written is finished), syncs its log, begins an epoch above every epoch it has seen
//! (epoch file fsynced before anything of the epoch is written), rebuilds the state the
//! loops that append keep (idempotence windows, committed offsets, scheduled messages,
//! undecided transactions) from its log, and then serves as master: produce accepted, its
//! own in-sync set, and the group, schedule, transaction and replication loops started
//! (`server.rs` waits for [`Promotion::promoted`] to start them).

use futures::future::{FutureExt, Shared};

use super::replication::{MasterSide, ShardRole};
use super::*;
use crate::broker::replication_peer::Peer;
use crate::protocol::replication::PromotedShard;
use crate::replication::config::{Mode, ReplicationConfig, Role};
use crate::replication::epochs::next_epoch;
use crate::replication::role_override::{RoleOverride, ROLE_OVERRIDE_FILE};
use crate::storage::dma_dir::DmaDir;
use crate::storage::file::LogDir;
use crate::storage::IoMode;

/// How long the old master gets to answer before a promotion counts it as gone.
const OLD_MASTER_PROBE: Duration = Duration::from_secs(2);

type Signal = Shared<oneshot::Receiver<()>>;

fn signal() -> (RefCell<Option<oneshot::Sender<()>>>, Signal) {
    let (tx, rx) = oneshot::channel();
    (RefCell::new(Some(tx)), rx.shared())
}

fn fire(tx: &RefCell<Option<oneshot::Sender<()>>>) {
    if let Some(tx) = tx.borrow_mut().take() {
        let _ = tx.send(());
    }
}

/// A shard's promotion state: the master side a promotion made and the signals between the
/// promotion, the follower task and the loops waiting to start.
pub struct Promotion {
    /// Set once, by the promotion ([`Shard::role`] prefers it to the role the shard started
    /// with).
    pub(super) master: std::cell::OnceCell<ShardRole>,
    unfollow_tx: RefCell<Option<oneshot::Sender<()>>>,
    unfollow: Signal,
    follower_done_tx: RefCell<Option<oneshot::Sender<()>>>,
    follower_done: Signal,
    promoted_tx: RefCell<Option<oneshot::Sender<()>>>,
    promoted: Signal,
    busy: Cell<bool>,
    /// This broker run's start count (`start_idempotence`).
    pub(super) boot: Cell<u64>,
    /// The highest producer-id boot a replicated batch carried that this shard recorded in
    /// the boot file ([`crate::broker::producer_ids::note_boot_seen`]).
    pub(super) seen_boot: Cell<u64>,
}

impl Promotion {
    pub fn new() -> Self {
        let (unfollow_tx, unfollow) = signal();
        let (follower_done_tx, follower_done) = signal();
        let (promoted_tx, promoted) = signal();
        Promotion {
            master: std::cell::OnceCell::new(),
            unfollow_tx,
            unfollow,
            follower_done_tx,
            follower_done,
            promoted_tx,
            promoted,
            busy: Cell::new(false),
            boot: Cell::new(0),
            seen_boot: Cell::new(0),
        }
    }
}

impl Default for Promotion {
    fn default() -> Self {
        Self::new()
    }
}

fn invalid(message: impl Into<String>) -> BrokerError {
    BrokerError::new(ErrorCode::INVALID_ARGUMENT, message.into())
}

fn failed(shard: ShardId, what: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(ErrorCode::INTERNAL, format!("promoting shard {shard}: {what}: {e}"))
}

impl<L: ShardLog> Shard<L> {
    /// Resolves when the follower should stop because this shard is being promoted.
    pub fn unfollow_signal(&self) -> Signal {
        self.promotion.unfollow.clone()
    }

    /// The follower task calls this when it has returned (for any reason).
    pub fn follower_stopped(&self) {
        fire(&self.promotion.follower_done_tx);
    }

    /// Waits until this shard is promoted (true) or `stop` fires first (false).
    pub async fn await_promotion(&self, stop: crate::broker::shutdown::Stop) -> bool {
        if self.promotion.master.get().is_some() {
            return true;
        }
        let promoted = self.promotion.promoted.clone();
        match select(promoted, stop).await {
            Either::Left((r, _)) => r.is_ok(),
            Either::Right(_) => false,
        }
    }

    /// REPLICA_PROMOTE on the shard that decoded it: checks, the role override file, then
    /// every shard's promotion. Returns each shard's new epoch.
    pub(super) async fn promote_broker(
        self: &Rc<Self>,
        replicas: Vec<String>,
        mode: Mode,
        min_in_sync_replicas: u32,
        force: bool,
    ) -> Result<Vec<PromotedShard>, BrokerError> {
        let Some(configured) = &self.config.replication else {
            return Err(invalid(
                "this broker has no [replication] section: a single broker has nothing to \
                 promote",
            ));
        };
        let old_master = match self.replication.get() {
            Some(ShardRole::Replica(r)) => r.master,
            _ => {
                let epoch = match self.role() {
                    Some(ShardRole::Master(m)) => m.current_epoch().map_or(0, |e| e.epoch),
                    _ => 0,
                };
                return Err(invalid(format!(
                    "this broker is already a master (epoch {epoch}); promote a replica"
                )));
            }
        };
        let o = RoleOverride {
            role: Role::Master,
            replication: mode,
            replicas,
            min_in_sync_replicas: min_in_sync_replicas as usize,
            promoted_from: Some(old_master.to_string()),
            promoted_at_ms: self.clock.unix_ms(),
        };
        let (max_batch, max_fetch) =
            (self.config.storage.max_batch_bytes, self.config.broker.max_fetch_bytes);
        let section = o.apply(configured, max_batch, max_fetch).map_err(invalid)?;
        if !force && self.promotion.master.get().is_none() {
            if let Some(answer) = probe(old_master, self.config.broker.max_frame_bytes).await {
                return Err(BrokerError::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!(
                        "the old master {old_master} still answers ({answer}): promoting now \
                         would leave two masters taking writes. Stop it first (or make sure \
                         no client and no replica can reach it) and promote again, or pass \
                         --force"
                    ),
                ));
            }
        }
        // Durable before any shard stops following: a crash from here on restarts this
        // broker as master, never as a follower that truncates what it acknowledged.
        let dir = DmaDir::open(&self.config.broker.data_dir, IoMode::Buffered)
            .await
            .map_err(|e| failed(self.id, "opening the data directory", e))?;
        dir.write_atomic(ROLE_OVERRIDE_FILE, &o.encode())
            .await
            .map_err(|e| failed(self.id, &format!("writing {ROLE_OVERRIDE_FILE}"), e))?;
        tracing::warn!(
            shard = %self.id, %old_master, replicas = ?section.replicas, mode = ?section.replication,
            "promoting this broker to master; {ROLE_OVERRIDE_FILE} written"
        );
        let mut waits = Vec::new();
        for s in 0..self.shard_count {
            let target = ShardId::new(s);
            let (reply, rx) = oneshot::channel();
            if target == self.id {
                let me = self.clone();
                let section = section.clone();
                let _detached = self.control_queue.spawn(async move {
                    let _ = reply.send(me.promote_shard(&section).await);
                });
            } else {
                let msg = Control::Promote { config: section.clone(), reply };
                if self.control_mesh.send(target, msg).await.is_err() {
                    return Err(BrokerError::new(
                        ErrorCode::SHUTTING_DOWN,
                        format!("shard {target} stopped"),
                    ));
                }
            }
            waits.push(rx);
        }
        let mut shards = Vec::with_capacity(waits.len());
        for (s, rx) in futures::future::join_all(waits).await.into_iter().enumerate() {
            shards.push(ok_or_stopped(rx, &format!("shard {s}"))??);
        }
        Ok(shards)
    }

    /// Promotes this shard with the new master's `[replication]` section; a shard already
    /// promoted answers its epoch.
    pub(super) async fn promote_shard(
        &self,
        section: &ReplicationConfig,
    ) -> Result<PromotedShard, BrokerError> {
        let answer = |m: &MasterSide| {
            let e = m.current_epoch().expect("a master has begun an epoch");
            PromotedShard { shard: self.id.get() as u32, epoch: e.epoch, start: e.start }
        };
        if let Some(ShardRole::Master(m)) = self.promotion.master.get() {
            return Ok(answer(m));
        }
        let Some(ShardRole::Replica(r)) = self.replication.get() else {
            return Err(invalid(format!("shard {} is not a replica", self.id)));
        };
        if self.promotion.busy.replace(true) {
            return Err(invalid(format!(
                "shard {} is being promoted already; try again once that ends",
                self.id
            )));
        }
        let result = self.promote_replica(r, section).await;
        self.promotion.busy.set(false);
        let m = result?;
        Ok(answer(m))
    }

    /// A replica shard that is not being promoted: nothing may append to its log but the
    /// follower.
    pub(super) fn is_following_replica(&self) -> bool {
        matches!(self.role(), Some(ShardRole::Replica(_))) && !self.promotion.busy.get()
    }

    async fn promote_replica(
        &self,
        r: &super::replication::ReplicaSide,
        section: &ReplicationConfig,
    ) -> Result<&MasterSide, BrokerError> {
        let id = self.id;
        // 1. Stop following: the follower leaves at its next wait (a fetched batch is written
        //    and synced first), and says so.
        fire(&self.promotion.unfollow_tx);
        let _ = self.promotion.follower_done.clone().await;
        // 2. Everything received is on disk.
        self.log.flush().await.map_err(|e| failed(id, "syncing the log", e))?;
        let end = self.log.append_end();
        // 3. An epoch above every epoch this shard has seen (its file may name one its log
        //    lost in a crash), durable before anything is written in it.
        let file = self.log.load_epochs().await.map_err(|e| failed(id, "reading epochs", e))?;
        let mut history = r.history.borrow().clone();
        let newest = [history.latest(), file.latest()].into_iter().flatten().map(|e| e.epoch);
        let epoch = next_epoch(newest.max().unwrap_or(0))
            .map_err(|e| failed(id, "choosing the epoch", e))?;
        history.truncate_to(end);
        history.begin(epoch, end).map_err(|e| failed(id, "beginning the epoch", e))?;
        self.log.save_epochs(&history).await.map_err(|e| failed(id, "saving epochs", e))?;
        self.log.set_epoch(epoch);
        // 4. The state the writing loops keep, from the log as replicated (the follower
        //    wrote the master's records without applying them).
        *self.sequences.borrow_mut() = SequenceWindows::new(
            self.config.broker.idempotence_max_producer_queues,
            self.config.broker.idempotence_expiry_ms,
        );
        //    Producer ids from a boot count no id of this data directory was made with, and
        //    above every boot the old master's ids carried (the follower recorded them): a
        //    producer of the old master keeps its id, and no new producer may get it.
        let boot = crate::broker::producer_ids::advance_boot(&self.config.broker.data_dir)
            .map_err(|e| failed(id, "taking a fresh producer-id boot", e))?;
        self.start_idempotence(boot).await?;
        self.start_groups().await?;
        self.start_schedule().await?;
        self.start_transactions().await?;
        // 5. Serve as master.
        let side = MasterSide::new(section, history, end);
        self.log.set_read_cap(Some(end));
        if self.promotion.master.set(ShardRole::Master(side)).is_err() {
            return Err(failed(id, "setting the role", "promoted twice"));
        }
        fire(&self.promotion.promoted_tx);
        self.replication_progress();
        tracing::warn!(shard = %id, epoch, start = end, "promoted to master");
        match self.promotion.master.get() {
            Some(ShardRole::Master(m)) => Ok(m),
            _ => Err(failed(id, "setting the role", "no master side")),
        }
    }
}

/// Whether the broker at `addr` answers a METADATA request within [`OLD_MASTER_PROBE`]:
/// Some(what it answered) if it does.
async fn probe(addr: std::net::SocketAddr, max_frame: usize) -> Option<String> {
    let mut peer = Peer::connect(addr, max_frame, OLD_MASTER_PROBE).await.ok()?;
    let answer = peer.call(&Request::Metadata { topics: vec![] }, OLD_MASTER_PROBE).await;
    match answer {
        Ok(r) => Some(format!("{:?}", r.api_key())),
        Err(crate::broker::replication_peer::PeerError::Refused(e)) => {
            Some(format!("error {}", e.message))
        }
        Err(_) => None,
    }
}
