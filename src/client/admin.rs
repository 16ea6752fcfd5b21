//! The admin client: topics, consumer-group deletion, queue offsets, broker stats.

use std::sync::Arc;
use std::time::Duration;

use super::error::{ClientError, Result};
use super::router::{Router, TopicRoute};
use crate::protocol::replication::{PromotedShard, ReplRequest, ReplResponse};
use crate::protocol::{ErrorCode, Request, Response, ShardStats, TopicInfo};
use crate::replication::config::Mode;

/// A queue's offsets `[min, next)` as the broker reports them: `next` is where the next record
/// goes. Plain numbers, as on the wire (the broker's storage types them; the client need not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueOffsets {
    pub min: u64,
    pub next: u64,
}

/// How often a topic change asks a sync master again while its in-sync set lacks members
/// (for at most `ClientOptions::topic_change_wait`).
const IN_SYNC_RETRY: Duration = Duration::from_millis(100);

pub struct AdminClient {
    router: Arc<Router>,
}

fn unexpected(what: &str, r: &Response) -> ClientError {
    ClientError::Protocol(format!("{what} got a {:?} reply", r.api_key()))
}

impl AdminClient {
    pub fn new(router: Arc<Router>) -> Self {
        AdminClient { router }
    }

    /// A topic change. A sync master refuses one with SLAVE_NOT_AVAILABLE, before changing
    /// anything, while its in-sync set has fewer than `min_in_sync_replicas` members (as it
    /// refuses sends): just after the brokers started, its replicas may not have joined yet.
    /// Asked again every [`IN_SYNC_RETRY`] for at most `ClientOptions::topic_change_wait`.
    fn change_topics(&self, request: &Request) -> Result<Response> {
        let deadline = std::time::Instant::now() + self.router.options.topic_change_wait;
        loop {
            match self.router.call_bootstrap(request) {
                Err(e)
                    if e.code() == Some(ErrorCode::SLAVE_NOT_AVAILABLE)
                        && std::time::Instant::now() + IN_SYNC_RETRY < deadline =>
                {
                    std::thread::sleep(IN_SYNC_RETRY);
                }
                other => return other,
            }
        }
    }

    /// Creates a topic with `queue_count` queues; returns its id. On a sync master, answered
    /// once every in-sync replica holds the change (a failover keeps it).
    pub fn create_topic(&self, topic: &str, queue_count: u32) -> Result<u32> {
        let r = self.change_topics(&Request::CreateTopic { topic: topic.into(), queue_count })?;
        self.router.refresh(topic);
        match r {
            Response::CreateTopic { topic_id } => Ok(topic_id),
            other => Err(unexpected("create topic", &other)),
        }
    }

    /// Deletes a topic; returns the id it had. On a sync master, as [`Self::create_topic`].
    pub fn delete_topic(&self, topic: &str) -> Result<u32> {
        let r = self.change_topics(&Request::DeleteTopic { topic: topic.into() })?;
        self.router.refresh(topic);
        match r {
            Response::DeleteTopic { topic_id } => Ok(topic_id),
            other => Err(unexpected("delete topic", &other)),
        }
    }

    /// Deletes a consumer group without members: its committed offsets are forgotten (durably,
    /// before the answer). Returns how many queues' offsets went (0 for a group nothing was
    /// committed for). A group with live members is refused (`GROUP_NOT_EMPTY`). Sent to the
    /// group's coordinator shard ([`super::group::GroupClient::delete`]).
    pub fn delete_group(&self, group: &str) -> Result<u32> {
        super::group::GroupClient::new(self.router.clone()).delete(group)
    }

    pub fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        match self.router.call_bootstrap(&Request::ListTopics)? {
            Response::ListTopics { topics } => Ok(topics),
            other => Err(unexpected("list topics", &other)),
        }
    }

    pub fn route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        self.router.route(topic)
    }

    fn offsets_call(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<(QueueOffsets, u64)> {
        let conn = self.router.queue_connection(topic, queue_id)?;
        let req = Request::Offsets { topic: topic.into(), queue_id, timestamp_ms };
        match conn.call(&req, self.router.options.request_timeout)? {
            Response::Offsets { min_offset, next_offset, timestamp_offset } => {
                Ok((QueueOffsets { min: min_offset, next: next_offset }, timestamp_offset))
            }
            other => Err(unexpected("offsets", &other)),
        }
    }

    /// The queue's bounds `[min, next)`.
    pub fn queue_offsets(&self, topic: &str, queue_id: u32) -> Result<QueueOffsets> {
        Ok(self.offsets_call(topic, queue_id, -1)?.0)
    }

    /// The first offset stored at or after `timestamp_ms` (the queue's end if none).
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<u64> {
        Ok(self.offsets_call(topic, queue_id, timestamp_ms.max(0))?.1)
    }

    /// Makes the replica broker this client is connected to the master of its group, on
    /// every shard (REPLICA_PROMOTE, `ringmq cluster promote`): its replicas, their mode and
    /// `min_in_sync_replicas` as the new master's `[replication]` section. Without `force` the
    /// broker refuses while its old master still answers. Waits up to `timeout` (a promotion
    /// rebuilds each shard's state from its log). Returns each shard's new epoch.
    pub fn promote(
        &self,
        replicas: Vec<String>,
        mode: Mode,
        min_in_sync_replicas: u32,
        force: bool,
        timeout: Duration,
    ) -> Result<Vec<PromotedShard>> {
        let req = Request::Replication(ReplRequest::Promote {
            replicas,
            mode,
            min_in_sync_replicas,
            force,
        });
        match self.router.bootstrap()?.call(&req, timeout)? {
            Response::Replication(ReplResponse::Promote { shards }) => Ok(shards),
            other => Err(unexpected("promote", &other)),
        }
    }

    /// Counters of every shard.
    pub fn stats(&self) -> Result<Vec<ShardStats>> {
        match self.router.call_bootstrap(&Request::Stats)? {
            Response::Stats { shards } => Ok(shards),
            other => Err(unexpected("stats", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::client::scripted_broker::{one_shard, scripted_broker_refusing};
    use crate::client::{Client, ClientOptions};
    use crate::protocol::{ErrorCode, ErrorDetail, Request, Response};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_topic_change_is_asked_again_while_a_sync_master_lacks_in_sync_replicas() {
        // Refused twice (the replicas have not joined yet), then done; another error is not
        // asked again.
        let asked = Arc::new(AtomicU32::new(0));
        let counted = asked.clone();
        let addr = scripted_broker_refusing(move |port, request| match request {
            Request::Metadata { .. } => Ok(one_shard(port)),
            Request::CreateTopic { topic, .. } if topic == "t" => {
                if counted.fetch_add(1, Ordering::Relaxed) < 2 {
                    let e = "1 in-sync member(s), needs 2".to_string();
                    Err((ErrorCode::SLAVE_NOT_AVAILABLE, e, ErrorDetail::None))
                } else {
                    Ok(Response::CreateTopic { topic_id: 7 })
                }
            }
            Request::CreateTopic { .. } => {
                counted.fetch_add(1, Ordering::Relaxed);
                Err((ErrorCode::TOPIC_EXISTS, "exists".into(), ErrorDetail::None))
            }
            other => panic!("unexpected {other:?}"),
        });
        let admin = Client::connect(&addr).unwrap().admin();
        assert_eq!(admin.create_topic("t", 1).unwrap(), 7);
        assert_eq!(asked.load(Ordering::Relaxed), 3);
        let e = admin.create_topic("u", 1).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::TOPIC_EXISTS));
        assert_eq!(asked.load(Ordering::Relaxed), 4, "asked once");

        // Without a wait (the RocketMQ name server's choice): the refusal comes back at once.
        asked.store(0, Ordering::Relaxed);
        let options = ClientOptions { topic_change_wait: Duration::ZERO, ..Default::default() };
        let admin = Client::with_options(&addr, options).unwrap().admin();
        let e = admin.create_topic("t", 1).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::SLAVE_NOT_AVAILABLE));
        assert_eq!(asked.load(Ordering::Relaxed), 1, "asked once");
    }
}
