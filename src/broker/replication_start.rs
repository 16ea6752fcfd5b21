//! A shard's replication role before it serves (`server.rs` calls it once per shard): a
//! master begins its new epoch; a replica joins its master, truncating a diverged log (and
//! dropping its key index checkpoint) first.

use std::rc::Rc;

use super::config::Config;
use super::log_backend::{self, Log};
use super::replication_peer::{self, JoinError, JoinFrom};
use super::server::close_log;
use super::shard::replication::{MasterSide, ReplicaSide, ShardRole};
use super::shard::Ports;
use super::shard_log::ShardLog;
use crate::replication::config::Role;
use crate::replication::epochs::next_epoch;
use crate::storage::commit_log::truncate_log;
use crate::storage::dma_dir::DmaDir;
use crate::storage::LogPosition;

/// Before a shard serves: a master begins its new epoch (fsynced epoch file, stamped into
/// every batch it appends); a replica joins its master once and, if its log diverged,
/// truncates it to the divergence point (closed, truncated and synced, reopened) and adopts
/// the master's epoch history. A master that cannot be reached is retried by the follower.
/// On error the log is closed.
pub(super) async fn start_replication(
    id: usize,
    shard_count: usize,
    config: &Config,
    log: Rc<Log>,
    ports: &Ports,
) -> Result<(Rc<Log>, Option<ShardRole>), String> {
    let Some(rc) = &config.replication else { return Ok((log, None)) };
    let mut log = log;
    let result = async {
        let mut history = log
            .load_epochs()
            .await
            .map_err(|e| format!("shard {id}: reading the epoch file: {e}"))?;
        // Above every epoch the file names, also one whose data a crash lost: a replica may
        // hold data of that epoch, and a reused number would look like agreement.
        let newest_epoch = history.latest().map_or(0, |e| e.epoch);
        history.truncate_to(log.append_end());
        match rc.role() {
            Role::Master => {
                // Refused where detectable: a replica that is a master, or follows another
                // broker, means this one was replaced (`ringmq cluster promote`).
                let probes = rc.replica_addrs().into_iter().map(|r| {
                    replication_peer::check_not_replaced(
                        r,
                        ports.shared,
                        config.broker.max_frame_bytes,
                    )
                });
                for probe in futures::future::join_all(probes).await {
                    probe.map_err(|e| format!("shard {id}: {e}"))?;
                }
                let end = log.append_end();
                let epoch = next_epoch(newest_epoch).map_err(|e| format!("shard {id}: {e}"))?;
                history
                    .begin(epoch, end)
                    .map_err(|e| format!("shard {id}: beginning epoch {epoch}: {e}"))?;
                log.save_epochs(&history)
                    .await
                    .map_err(|e| format!("shard {id}: writing the epoch file: {e}"))?;
                log.set_epoch(epoch);
                tracing::info!(shard = id, epoch, start = end, "master epoch begun");
                Ok(ShardRole::Master(MasterSide::new(rc, history, end)))
            }
            Role::Replica => {
                let master = rc.master_addr().expect("validated: a replica names its master");
                let end = log.append_end();
                let from = JoinFrom {
                    shard: id,
                    shard_count,
                    own_shared_port: ports.shared,
                    advertise: rc.advertise_addr(),
                    end,
                    synced: log.durable_end(),
                    history: &history,
                };
                match replication_peer::join(master, config.broker.max_frame_bytes, from).await {
                    Ok(joined) => {
                        if joined.truncate_to < end {
                            tracing::warn!(
                                shard = id,
                                end,
                                truncate_to = joined.truncate_to,
                                "the log diverged from the master's: truncating it before following"
                            );
                            drop(joined.peer);
                            log.close()
                                .await
                                .map_err(|e| format!("shard {id}: closing the log: {e}"))?;
                            let storage = config.storage_for_shard(id);
                            let dir = DmaDir::open(&storage.dir, storage.io_mode).await?;
                            truncate_log(&dir, LogPosition::new(joined.truncate_to))
                                .await
                                .map_err(|e| format!("shard {id}: truncating the log: {e}"))?;
                            // A key index covering the cut positions is rebuilt when it
                            // opens (`KeyIndex::open` distrusts a checkpoint past the log).
                            log = log_backend::open(storage)
                                .await
                                .map_err(|e| format!("reopening the log of shard {id}: {e}"))?;
                        }
                        history = joined.history;
                        log.save_epochs(&history)
                            .await
                            .map_err(|e| format!("shard {id}: writing the epoch file: {e}"))?;
                    }
                    Err(JoinError::Fatal(e)) => return Err(format!("shard {id}: {e}")),
                    Err(JoinError::Retry(e)) => tracing::warn!(
                        shard = id,
                        %master,
                        "cannot join the master at start ({e}); serving reads and retrying"
                    ),
                }
                Ok(ShardRole::Replica(ReplicaSide {
                    master,
                    advertise: rc.advertise_addr(),
                    fetch_bytes: rc.fetch_bytes,
                    history: std::cell::RefCell::new(history),
                }))
            }
        }
    }
    .await;
    match result {
        Ok(role) => Ok((log, Some(role))),
        Err(e) => {
            close_log(id, &log).await;
            Err(e)
        }
    }
}
