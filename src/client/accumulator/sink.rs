//! The worker's two seams with the network: where its sealed batches go ([`BatchSink`]: the
//! router's connections, or a scripted sink in tests), and how replies come back to it
//! ([`Replies`], the `ReplySink` its requests carry).

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::client::connection::{Connection, ProduceFrame, ReplySink, ReplyTag};
use crate::client::error::Result;
use crate::client::router::Router;
use crate::protocol::Response;

pub(crate) struct Reply {
    /// The queue's index in the worker's `queues` (`tag.queue`), and which send of which batch
    /// this answers (see `QueueSequencer::on_reply`).
    pub(super) tag: ReplyTag,
    pub(super) result: Result<Response>,
}

/// The worker's end of its replies: queued for the worker, which a token wakes.
pub(super) struct Replies {
    pub(super) tx: Sender<Reply>,
    pub(super) woken: Sender<()>,
}

impl ReplySink for Replies {
    fn deliver(&self, tag: ReplyTag, result: Result<Response>) {
        let _ = self.tx.send(Reply { tag, result });
    }
    fn wake(&self) {
        let _ = self.woken.try_send(());
    }
}

/// Where the worker sends sealed batches: the seam between batching logic and the network.
/// `send_all` takes every frame of `frames` (leaving it empty, its capacity kept) and must
/// eventually complete each frame's `reply` exactly once (also on failure); a request that
/// carries several batches holds at most `max_request_bytes` of them (the producer's
/// `max_batch_bytes`, which fits the broker's frame bound as one batch does).
pub(crate) trait BatchSink: Send + 'static {
    fn send_all(&self, frames: &mut Vec<ProduceFrame>, max_request_bytes: usize);
    /// The route of `topic` may be stale (after NOT_OWNER or a connection failure).
    fn refresh(&self, topic: &str);
    /// A new idempotent producer id from the broker, for a queue that used every epoch of its
    /// own (blocks until the broker answers).
    fn new_producer_id(&self) -> Result<i64>;
}

impl BatchSink for Arc<Router> {
    /// One gathered write per connection for a step's batches (the usual case is one
    /// connection per shard), in their order within each connection.
    fn send_all(&self, frames: &mut Vec<ProduceFrame>, max_request_bytes: usize) {
        let mut by_conn: Vec<(Arc<Connection>, Vec<ProduceFrame>)> = Vec::new();
        for f in frames.drain(..) {
            match self.queue_connection(&f.topic, f.queue_id) {
                Ok(conn) => match by_conn.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &conn)) {
                    Some((_, fs)) => fs.push(f),
                    None => by_conn.push((conn, vec![f])),
                },
                Err(e) => f.reply.complete(Err(e)),
            }
        }
        for (conn, fs) in by_conn {
            // On a failed write every reply was already completed with the error.
            conn.send_produces(fs, max_request_bytes);
        }
    }
    fn refresh(&self, topic: &str) {
        Router::refresh(self, topic)
    }
    fn new_producer_id(&self) -> Result<i64> {
        crate::client::producer::init_producer(self).map(|(producer_id, _)| producer_id)
    }
}
