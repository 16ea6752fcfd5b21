//! Topic metadata and topic changes. Changes run on shard 0 only, serialized, persisted, then
//! broadcast to every shard before the client gets its answer.

use super::*;

impl<L: ShardLog> Shard<L> {
    pub(super) fn metadata_response(&self, names: &[String]) -> Response {
        let table = self.topics.borrow();
        let route = |name: &str, e: TopicEntry| TopicRoute {
            name: name.to_owned(),
            error_code: ErrorCode::NONE as u16,
            topic_id: e.id,
            queue_owners: (0..e.queue_count)
                .map(|q| owner_shard(name, q, self.shard_count).get() as u16)
                .collect(),
        };
        let topics = if names.is_empty() {
            table.iter().map(|(n, e)| route(n, e)).collect()
        } else {
            names
                .iter()
                .map(|n| match (validate_topic_name(n), table.get(n)) {
                    (Ok(()), Some(e)) => route(n, e),
                    (Err(_), _) => TopicRoute {
                        name: n.clone(),
                        error_code: ErrorCode::INVALID_TOPIC_NAME as u16,
                        topic_id: 0,
                        queue_owners: Vec::new(),
                    },
                    (Ok(()), None) => TopicRoute {
                        name: n.clone(),
                        error_code: ErrorCode::UNKNOWN_TOPIC as u16,
                        topic_id: 0,
                        queue_owners: Vec::new(),
                    },
                })
                .collect()
        };
        Response::Metadata {
            shard_count: self.shard_count as u32,
            shared_port: self.ports.shared,
            shard_ports: self.ports.per_shard.clone(),
            topics,
        }
    }

    /// Shard 0: applies a topic change, persists it, and broadcasts it to every shard.
    pub(super) async fn admin(&self, request: Request) -> Reply {
        let Some((store, lock)) = &self.metadata else {
            return Err(BrokerError::new(ErrorCode::INTERNAL, "topic changes run on shard 0"));
        };
        let _serialized = lock.acquire_permit(1).await.map_err(|e| {
            BrokerError::new(ErrorCode::SHUTTING_DOWN, format!("topic lock closed: {e}"))
        })?;
        // A sync master changes nothing its in-sync set could not confirm (as a produce).
        self.admit_produce()?;
        let b = &self.config.broker;
        let mut table = self.topics.borrow().clone();
        let response = match &request {
            Request::CreateTopic { topic, queue_count } => Response::CreateTopic {
                topic_id: table.create(
                    topic,
                    *queue_count,
                    b.max_queues_per_topic,
                    b.max_topics,
                )?,
            },
            Request::DeleteTopic { topic } => {
                Response::DeleteTopic { topic_id: table.delete(topic)? }
            }
            _ => unreachable!("admin handles topic changes only"),
        };
        store.save(&table).await.map_err(|e| BrokerError::new(ErrorCode::INTERNAL, e))?;
        self.publish_topics(table).await.map_err(|e| {
            BrokerError::new(
                ErrorCode::INTERNAL,
                format!(
                    "the topic change is stored and applied on every shard of this broker, but \
                     it is not acknowledged: {e}. A deleted topic's committed offsets may come \
                     back after a power cut, or a failover to a replica may lose the change; \
                     check the broker's disk and replicas before creating a deleted topic again \
                     under its name"
                ),
            )
        })?;
        tracing::info!(?request, "topic change applied on all shards");
        Ok(response)
    }

    /// Replica shard 0: makes the master's topic table (`topics.json` bytes) this broker's,
    /// durably, on every shard.
    pub(super) async fn adopt_topics(&self, json: &[u8]) -> Result<(), String> {
        let table =
            TopicTable::from_json(json).map_err(|e| format!("the master's topic table: {e}"))?;
        if table.shard_count as usize != self.shard_count {
            return Err(format!(
                "the master's topic table is for {} shards, this replica runs {}",
                table.shard_count, self.shard_count
            ));
        }
        let Some((store, lock)) = &self.metadata else {
            return Err("the topic table is kept by shard 0".into());
        };
        let _serialized =
            lock.acquire_permit(1).await.map_err(|e| format!("topic lock closed: {e}"))?;
        store.save(&table).await?;
        tracing::info!(
            epoch = table.epoch,
            topics = table.len(),
            "adopted the master's topic table"
        );
        self.topics_adopted.set(true);
        self.publish_topics(table).await
    }

    /// Installs `table` here and on every other shard; returns once they applied it. Err:
    /// a shard's snapshot without a deleted topic's offsets is not durable, or, on a sync
    /// master, the in-sync replicas did not confirm the change in time (the first such
    /// reason; every shard still applied the table).
    ///
    /// On a sync master the change is confirmed through shard 0's log: a snapshot of its
    /// committed offsets is written after the table changed, and the change is answered once
    /// every in-sync replica acknowledged it. A replica fetches that snapshot with the master's
    /// new topic epoch in the answer, and adopts the table (durably) before it writes what
    /// came with it (`follower.rs`), so an acknowledged change survives a failover.
    async fn publish_topics(&self, table: TopicTable) -> Result<(), String> {
        *self.topics.borrow_mut() = table.clone();
        self.wake_parked_replica_fetches();
        let mut outcome = Ok(());
        // `forget_deleted_topics` first: it must run whether or not this is a sync master.
        if self.forget_deleted_topics() || self.is_sync_master() {
            // So that a restart does not replay the forgotten offsets, and, on a sync master,
            // so that the replicas confirm the change.
            outcome = self.snapshot_offsets_durably().await;
        }
        let mut acks = Vec::with_capacity(self.shard_count);
        for peer in ShardId::all(self.shard_count).filter(|&p| p != self.id) {
            let (ack, rx) = oneshot::channel();
            let msg = Control::Topics { table: table.clone(), ack };
            if self.control_mesh.send(peer, msg).await.is_ok() {
                acks.push(rx);
            }
        }
        for rx in acks {
            // A stopped peer no longer serves anything; it loads the file on restart.
            if let Ok(Err(e)) = rx.await {
                outcome = outcome.and(Err(e));
            }
        }
        outcome
    }

    /// Forgets every group's committed offsets of topics the table no longer holds (deleted):
    /// RocketMQ does the same at a topic's deletion. A topic created again under the name
    /// starts its queues at 0, and an old offset would put its consumers past their ends, where
    /// they jump to the end and skip what was produced meanwhile. True when any went and the
    /// change must be snapshotted. A following replica keeps its state as its log has it.
    pub(super) fn forget_deleted_topics(&self) -> bool {
        if self.is_following_replica() {
            return false;
        }
        let topics = self.topics.borrow();
        let gone = self.coordinator.borrow_mut().forget_topics(|t| topics.get(t).is_some());
        if gone > 0 {
            tracing::info!(shard = %self.id, offsets = gone, "forgot the committed offsets of deleted topics");
        }
        gone > 0
    }
}
