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
        let file = log
            .load_epochs()
            .await
            .map_err(|e| format!("shard {id}: reading the epoch file: {e}"))?;
        // Above every epoch the file names, also one whose data a crash lost: a replica may
        // hold data of that epoch, and a reused number would look like agreement.
        let newest_epoch = file.latest().map_or(0, |e| e.epoch);
        let mut history = file.clone();
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
                // The whole file, not cut to the log's end: an epoch whose data a crash lost is
                // checked against the master's history too (a master that lacks it while its
                // newest epoch is older is stale; one that has that number from elsewhere
                // reused it). Adopting the master's history must not forget it silently: a
                // later promotion of this broker would begin that epoch number again. The cut
                // entries start at or past `end`, so the divergence point is the same.
                let from = JoinFrom {
                    shard: id,
                    shard_count,
                    own_shared_port: ports.shared,
                    advertise: rc.advertise_addr(),
                    end,
                    synced: log.durable_end(),
                    history: &file,
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
                    Err(JoinError::Retry(e)) => {
                        tracing::warn!(
                            shard = id,
                            %master,
                            "cannot join the master at start ({e}); serving reads and retrying"
                        );
                        // The follower joins with it later: the whole file, as above.
                        history = file;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::scripted_broker::{join_keeping, one_shard, scripted_broker};
    use crate::protocol::replication::ReplRequest;
    use crate::protocol::Request;
    use crate::replication::config::ReplicationConfig;
    use crate::replication::epochs::{EpochEntry, EpochHistory};
    use crate::runtime::{run_on_new_executor, ExecutorOptions};
    use crate::storage::IoMode;

    fn history(entries: &[(u32, u64)]) -> EpochHistory {
        let entries = entries.iter().map(|&(epoch, start)| EpochEntry { epoch, start }).collect();
        EpochHistory::from_entries(entries).unwrap()
    }

    /// A replica's config on `dir`, following `master`.
    fn replica_config(dir: &std::path::Path, master: String) -> Config {
        let mut config = Config::default();
        config.broker.data_dir = dir.to_path_buf();
        config.storage.io_mode = IoMode::Buffered;
        config.storage.segment_size_bytes = 16 << 20;
        config.replication = Some(ReplicationConfig {
            role: Some(Role::Replica),
            master: Some(master),
            ..Default::default()
        });
        config
    }

    /// Starts shard 0 of `config` as a replica (its epoch file first set to `file`, its log
    /// empty); returns how the start ended (the history the replica follows with) and the
    /// epoch file after it.
    fn start_with_epoch_file(
        config: Config,
        file: EpochHistory,
    ) -> (Result<EpochHistory, String>, EpochHistory) {
        run_on_new_executor(ExecutorOptions::default(), move || async move {
            let log = log_backend::open(config.storage_for_shard(0)).await.unwrap();
            log.save_epochs(&file).await.unwrap();
            let ports = Ports { shared: 1, per_shard: vec![2] };
            let started = start_replication(0, 1, &config, log, &ports).await;
            let started = match started {
                Ok((log, Some(ShardRole::Replica(r)))) => {
                    log.close().await.unwrap();
                    Ok(r.history.into_inner())
                }
                Ok(_) => panic!("not a replica"),
                Err(e) => Err(e),
            };
            let log = log_backend::open(config.storage_for_shard(0)).await.unwrap();
            let after = log.load_epochs().await.unwrap();
            log.close().await.unwrap();
            (started, after)
        })
        .unwrap()
    }

    #[test]
    fn a_replica_never_forgets_an_epoch_only_its_epoch_file_names() {
        // This broker began epoch 2 at position 0 (promoted), then crashed and lost all it
        // wrote in it: its log is empty, its epoch file still names epoch 2. Restarted as a
        // replica of a master whose newest epoch is 1 (stale: epoch 2 was begun after it),
        // adopting the master's history would forget epoch 2, and a later promotion would
        // begin epoch 2 again, which a replica holding the lost epoch-2 data takes for
        // agreement.
        let master = scripted_broker(|port, request| match request {
            Request::Metadata { .. } => one_shard(port),
            Request::Replication(ReplRequest::Join { end, .. }) => {
                join_keeping(end, history(&[(1, 0)]))
            }
            other => panic!("unexpected {other:?}"),
        });
        let dir = tempfile::tempdir().unwrap();
        let (started, after) =
            start_with_epoch_file(replica_config(dir.path(), master), history(&[(2, 0)]));
        let e = started.unwrap_err();
        assert!(e.contains("epoch 2") && e.contains("newest epoch 1"), "{e}");
        assert_eq!(after, history(&[(2, 0)]), "the epoch file still names epoch 2");

        // A master that has the epoch: followed, its history adopted.
        let master = scripted_broker(|port, request| match request {
            Request::Metadata { .. } => one_shard(port),
            Request::Replication(ReplRequest::Join { end, .. }) => {
                join_keeping(end, history(&[(2, 0), (3, 100)]))
            }
            other => panic!("unexpected {other:?}"),
        });
        let dir = tempfile::tempdir().unwrap();
        let (started, after) =
            start_with_epoch_file(replica_config(dir.path(), master), history(&[(2, 0)]));
        assert_eq!(started.unwrap(), history(&[(2, 0), (3, 100)]));
        assert_eq!(after, history(&[(2, 0), (3, 100)]));

        // A master that cannot be reached at start: the follower joins later with the whole
        // epoch file too, not with it cut to the log's end.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let master = closed.local_addr().unwrap().to_string();
        drop(closed);
        let dir = tempfile::tempdir().unwrap();
        let (started, after) =
            start_with_epoch_file(replica_config(dir.path(), master), history(&[(2, 0)]));
        assert_eq!(started.unwrap(), history(&[(2, 0)]));
        assert_eq!(after, history(&[(2, 0)]));
    }
}
