//! The shard mesh: one bounded glommio shared channel for every ordered pair of shards.
//!
//! Built on the main thread before the shards start ([`build`]); each shard takes its
//! [`MeshEnds`] and connects them on its own executor ([`MeshEnds::connect`]). A full channel
//! makes the sender wait (backpressure), never grow. Senders are indexed by shard id, so a
//! shard sends to `owner_shard(..)` directly. (glommio's own `MeshBuilder` orders peers by
//! executor id, not by our shard id, hence this small replacement.)

use super::routing::ShardId;
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

/// One shard's unconnected ends: a sender to every other shard, a receiver from each.
pub struct MeshEnds<T: Send + 'static> {
    pub shard: ShardId,
    to: Vec<Option<SharedSender<T>>>,
    from: Vec<Option<SharedReceiver<T>>>,
}

/// Creates the channels for `shards` shards; element `i` belongs to shard `i`.
pub fn build<T: Send + 'static>(shards: usize, capacity: usize) -> Vec<MeshEnds<T>> {
    let mut ends: Vec<MeshEnds<T>> = (0..shards)
        .map(|shard| MeshEnds {
            shard: ShardId::new(shard),
            to: (0..shards).map(|_| None).collect(),
            from: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (s, r) = shared_channel::new_bounded(capacity);
                ends[from].to[to] = Some(s);
                ends[to].from[from] = Some(r);
            }
        }
    }
    ends
}

/// Connected senders of one shard.
pub struct MeshSender<T: Send + 'static> {
    senders: Vec<Option<ConnectedSender<T>>>,
}

impl<T: Send + 'static> MeshSender<T> {
    /// Sends to shard `to`, waiting while its channel is full. `Err(msg)` if it stopped.
    pub async fn send(&self, to: ShardId, msg: T) -> Result<(), T> {
        match self.senders.get(to.get()).and_then(Option::as_ref) {
            Some(s) => s.send(msg).await.map_err(|e| match e {
                glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))
                | glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)) => m,
                other => panic!("unexpected shared channel error: {other}"),
            }),
            None => Err(msg),
        }
    }

    /// Closes every channel this shard sends on: receivers see the end once drained.
    pub fn close(&self) {
        for s in self.senders.iter().flatten() {
            s.close();
        }
    }
}

/// A connected receiver from shard `from`.
pub struct MeshReceiver<T: Send + 'static> {
    pub from: ShardId,
    inner: ConnectedReceiver<T>,
}

impl<T: Send + 'static> MeshReceiver<T> {
    /// The next message; None once the sender closed and everything was received.
    pub async fn recv(&self) -> Option<T> {
        self.inner.recv().await
    }
}

impl<T: Send + 'static> MeshEnds<T> {
    /// Connects every end; completes when all peers connected theirs.
    pub async fn connect(self) -> (MeshSender<T>, Vec<MeshReceiver<T>>) {
        let senders = futures::future::join_all(self.to.into_iter().map(|s| async move {
            match s {
                Some(s) => Some(s.connect().await),
                None => None,
            }
        }));
        let receivers = futures::future::join_all(self.from.into_iter().enumerate().map(
            |(from, r)| async move {
                match r {
                    Some(r) => {
                        Some(MeshReceiver { from: ShardId::new(from), inner: r.connect().await })
                    }
                    None => None,
                }
            },
        ));
        let (senders, receivers) = futures::future::join(senders, receivers).await;
        (MeshSender { senders }, receivers.into_iter().flatten().collect())
    }
}
