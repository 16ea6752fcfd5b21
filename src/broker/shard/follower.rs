//! A replica shard following its master shard: join (the divergence point is checked: a log
//! that must be truncated stops the broker with a message, since truncation happens at start,
//! before anything is served; so does a master that no longer holds the position this
//! replica continues from, at the join or at any fetch: its retention deleted it), then pull
//! the master's batches, write them at the master's positions (`append_replicated`: same
//! appender, O_DIRECT, group commit), sync them, and acknowledge the synced position with the
//! next fetch. Reads on the replica are capped at what it synced. Shard 0 also copies the
//! master's topic table when its version changes.
//!
//! One fetch in flight, at most `replication.fetch_bytes` of batches: the memory replication
//! uses here is bounded. Network waits are raced with the stop signal; log work is never
//! abandoned half-way.

use super::replication::{ReplicaSide, ShardRole, MAX_REPLICA_WAIT_MS};
use super::*;
use crate::broker::replication_peer::{self, JoinError, JoinFrom, Joined, PeerError, CALL_TIMEOUT};
use crate::protocol::replication::{ReplRequest, ReplResponse};
use crate::storage::StorageError;
use std::future::Future;

fn storage_failure(e: StorageError, what: &str) -> JoinError {
    match e {
        StorageError::Failed { .. } | StorageError::Closed => {
            JoinError::Fatal(format!("{what}: {e}"))
        }
        e => JoinError::Retry(format!("{what}: {e}")),
    }
}

impl<L: ShardLog> Shard<L> {
    /// Follows the master until `stop` (the broker stops, or a promotion stops the
    /// following). An error means this replica cannot follow without a restart (its log
    /// diverged, the shard counts differ, its storage failed).
    pub async fn follow_master<S>(self: Rc<Self>, stop: S) -> Result<(), String>
    where
        S: Future + Clone + Unpin,
    {
        let Some(ShardRole::Replica(r)) = self.replication.get() else { return Ok(()) };
        let mut backoff = Duration::from_millis(100);
        let mut last_error = String::new();
        loop {
            let mut joined = false;
            match self.follow_session(r, &stop, &mut joined).await {
                Ok(()) => return Ok(()),
                Err(JoinError::Fatal(e)) => return Err(format!("shard {}: {e}", self.id)),
                Err(JoinError::Retry(e)) => {
                    if joined {
                        backoff = Duration::from_millis(100);
                    }
                    if e != last_error {
                        tracing::warn!(shard = %self.id, master = %r.master, "replication: {e}; retrying");
                        last_error = e;
                    }
                }
            }
            let sleep = Box::pin(self.clock.sleep_until(self.clock.now() + backoff));
            if let Either::Right(_) = select(sleep, stop.clone()).await {
                return Ok(());
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One connection's worth of following; Ok when stopped.
    async fn follow_session<S>(
        &self,
        r: &ReplicaSide,
        stop: &S,
        joined: &mut bool,
    ) -> Result<(), JoinError>
    where
        S: Future + Clone + Unpin,
    {
        let history = r.history.borrow().clone();
        let end = self.log.append_end();
        let from = JoinFrom {
            shard: self.id.get(),
            shard_count: self.shard_count,
            own_shared_port: self.ports.shared,
            advertise: r.advertise,
            end,
            synced: self.log.durable_end(),
            history: &history,
        };
        let join =
            Box::pin(replication_peer::join(r.master, self.config.broker.max_frame_bytes, from));
        let Joined { mut peer, session, truncate_to, history } =
            match select(join, stop.clone()).await {
                Either::Left((j, _)) => j?,
                Either::Right(_) => return Ok(()),
            };
        if truncate_to < end {
            return Err(JoinError::Fatal(format!(
                "this replica's log (end {end}) diverged from its master's at position \
                 {truncate_to}: restart the replica; at start it truncates its log there and \
                 follows the master"
            )));
        }
        if history != *r.history.borrow() {
            self.log
                .save_epochs(&history)
                .await
                .map_err(|e| storage_failure(e, "saving the epoch file"))?;
            *r.history.borrow_mut() = history;
        }
        *joined = true;
        tracing::info!(shard = %self.id, master = %r.master, from = end, "following the master");
        loop {
            if self.stopping.get() {
                return Ok(());
            }
            let request = Request::Replication(ReplRequest::Fetch {
                session,
                from: self.log.append_end(),
                synced: self.log.durable_end(),
                max_bytes: r.fetch_bytes as u32,
                max_wait_ms: MAX_REPLICA_WAIT_MS,
            });
            let asked = self.clock.now();
            let call = Box::pin(peer.call(&request, CALL_TIMEOUT));
            let answer = match select(call, stop.clone()).await {
                Either::Left((a, _)) => a,
                Either::Right(_) => return Ok(()),
            };
            let (topics_epoch, batches) = match answer {
                Ok(Response::Replication(ReplResponse::Fetch {
                    topics_epoch, batches, ..
                })) => (topics_epoch, batches),
                Ok(_) => {
                    return Err(JoinError::Retry(
                        "the master answered a fetch with something else".into(),
                    ))
                }
                Err(PeerError::Refused(e))
                    if e.known_code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) =>
                {
                    // Retention deleted what this replica needs next while it streamed.
                    return Err(JoinError::Fatal(replication_peer::behind_retention(r.master, &e)));
                }
                Err(e) => return Err(JoinError::Retry(e.to_string())),
            };
            // Before these batches are written, so before anything acknowledges them (the next
            // fetch, or a JOIN after a crash, reports what is on disk), this broker's topic
            // table is at least as new as the one they came with (`topics_epoch`, the master
            // shard's): a batch is never acknowledged on a replica that does not know its topic.
            // A sync master relies on it: it answers a topic change once its replicas
            // acknowledged what shard 0 wrote after it (`publish_topics`), and a send to a new
            // topic, on any shard, once its replicas acknowledged the batch.
            // - The shard that keeps the table (shard 0) adopts the master's current one: at
            //   its first fetch whatever the epochs (the table this broker started with may be
            //   a former master's, see `topics_adopted`), then whenever the epoch changes.
            // - The others wait until shard 0 has applied it here.
            if self.metadata.is_some()
                && (!self.topics_adopted.get() || topics_epoch != self.topics.borrow().epoch)
            {
                let request = Request::Replication(ReplRequest::Topics);
                let call = Box::pin(peer.call(&request, CALL_TIMEOUT));
                let answer = match select(call, stop.clone()).await {
                    Either::Left((a, _)) => a,
                    Either::Right(_) => return Ok(()), // a hung master does not hold a stop
                };
                match answer {
                    Ok(Response::Replication(ReplResponse::Topics { table_json })) => {
                        self.adopt_topics(&table_json).await.map_err(JoinError::Retry)?;
                    }
                    Ok(_) => {
                        return Err(JoinError::Retry(
                            "the master answered REPLICA_TOPICS with something else".into(),
                        ))
                    }
                    Err(e) => return Err(JoinError::Retry(e.to_string())),
                }
            }
            if self.metadata.is_none() && !self.topics_reach(topics_epoch, r, stop).await {
                return Ok(()); // stopped
            }
            let mut queues = std::collections::HashSet::new();
            for b in &batches {
                match self.log.append_replicated(b.position, &b.bytes).await {
                    Ok(Some(q)) => {
                        // The system queues' retention pins follow what a promotion would
                        // restore from.
                        let end = b.position + b.bytes.len() as u64;
                        if q == super::group::SYS_OFFSETS {
                            self.replicated_offsets_batch(&b.bytes, end);
                        } else if q == super::schedule::SYS_WHEEL {
                            self.replicated_checkpoint(&b.bytes, end);
                        } else if q == super::transaction::SYS_HALF
                            || q == super::transaction::SYS_TXN_OP
                        {
                            self.replicated_transaction_batch(q, &b.bytes, end);
                        }
                        queues.insert(q);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let what = format!("writing the master's batch at position {}", b.position);
                        return Err(storage_failure(e, &what));
                    }
                }
            }
            // Before this position is acknowledged: the master's producer-id boots, so that
            // this broker, once a master, never hands out an id the old one made.
            let boot = batches
                .iter()
                .filter_map(|b| read_header(&b.bytes).ok())
                .filter(|h| h.producer_id >= 0)
                .map(|h| crate::protocol::producer_id::boot(h.producer_id))
                .max();
            if let Some(boot) = boot.filter(|&b| b > self.promotion.seen_boot.get()) {
                crate::broker::producer_ids::note_boot_seen(&self.config.broker.data_dir, boot)
                    .map_err(|e| {
                        JoinError::Fatal(format!("recording the master's producer-id boot: {e}"))
                    })?;
                self.promotion.seen_boot.set(boot);
            }
            if !batches.is_empty() {
                self.log.flush().await.map_err(|e| {
                    JoinError::Fatal(format!("syncing replicated data failed: {e}"))
                })?;
                self.log.set_read_cap(Some(self.log.durable_end()));
                self.keys_reader.written(self.log.written_end());
                let mut long_poll = self.long_poll.borrow_mut();
                for q in queues {
                    long_poll.notify(q);
                }
                let mut s = self.stats.borrow_mut();
                s.produce_batches += batches.len() as u64;
                s.produce_bytes += batches.iter().map(|b| b.bytes.len() as u64).sum::<u64>();
            }
            if let Some(at) = next_fetch_at(asked, !batches.is_empty()) {
                let pause = Box::pin(self.clock.sleep_until(at));
                if let Either::Right(_) = select(pause, stop.clone()).await {
                    return Ok(());
                }
            }
        }
    }
}

impl<L: ShardLog> Shard<L> {
    /// A replica shard that does not keep the topic table: waits until shard 0 has applied
    /// here a table it adopted from the master, of at least `epoch` (each table it sends
    /// notifies `topics_applied`). A wait past [`TOPICS_WAIT_WARNING`] is logged. False when
    /// `stop` fired first.
    async fn topics_reach<S>(&self, epoch: u64, r: &ReplicaSide, stop: &S) -> bool
    where
        S: Future + Clone + Unpin,
    {
        let mut warn_at = Some(self.clock.now() + TOPICS_WAIT_WARNING);
        while !self.topics_adopted.get() || self.topics.borrow().epoch < epoch {
            let applied = Box::pin(self.topics_applied.wait());
            let woken = match warn_at {
                Some(at) => {
                    let warning = Box::pin(self.clock.sleep_until(at));
                    match select(select(applied, warning), stop.clone()).await {
                        Either::Left((Either::Left(_), _)) => true,
                        Either::Left((Either::Right(_), _)) => false,
                        Either::Right(_) => return false,
                    }
                }
                None => match select(applied, stop.clone()).await {
                    Either::Left(_) => true,
                    Either::Right(_) => return false,
                },
            };
            if !woken {
                warn_at = None;
                tracing::warn!(
                    shard = %self.id, master = %r.master, epoch,
                    "replication: waiting for shard 0 to adopt the master's topic table before \
                     writing what came with it"
                );
            }
        }
        true
    }
}

/// A wait that long for it is logged (shard 0 cannot reach the master, or cannot store it).
const TOPICS_WAIT_WARNING: Duration = Duration::from_secs(5);

/// When the next fetch may go, after one asked at `asked` came back: at once with batches;
/// after an empty answer, not before `EMPTY_FETCH_PACE` from the last ask. A master holds a
/// fetch with nothing new for up to `MAX_REPLICA_WAIT_MS`, so only a master that answers
/// empty at once (misbehaving) is paced: without this, its replica asked it again thousands
/// of times a second.
fn next_fetch_at(asked: Instant, got_batches: bool) -> Option<Instant> {
    (!got_batches).then(|| asked + EMPTY_FETCH_PACE)
}

const EMPTY_FETCH_PACE: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_answers_pace_the_next_fetch() {
        let t = Instant::now();
        assert_eq!(next_fetch_at(t, true), None);
        assert_eq!(next_fetch_at(t, false), Some(t + Duration::from_millis(10)));
        // An empty answer that took the master's whole wait is not delayed further: the
        // pause ends before the answer came.
        let answered = t + Duration::from_millis(MAX_REPLICA_WAIT_MS as u64);
        assert!(next_fetch_at(t, false).unwrap() < answered);
    }
}
