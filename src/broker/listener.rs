//! Accepting connections on one shard: the shared port (SO_REUSEPORT, the kernel spreads
//! connections over shards) and the shard's own port (shard-aware clients connect to the
//! owner of the queues they use).
//!
//! Connections are bounded per shard by a semaphore of `max_connections_per_shard` permits;
//! one over the limit is closed at once. At stop the loops return; the shard then waits for
//! the permits to come back, i.e. for every connection to finish its in-flight requests.

use std::rc::Rc;

use crate::runtime::Semaphore;
use futures::future::{select, Either};
use glommio::net::TcpListener;

use super::connection;
use super::shard::Shard;
use super::shard_log::ShardLog;
use super::shutdown::Stop;
use crate::runtime;

/// Binds `address:port` with SO_REUSEPORT (glommio's `TcpListener::bind` sets it), so every
/// shard can bind the same shared port. Port 0 picks a free port.
pub fn bind(address: &str, port: u16) -> Result<TcpListener, String> {
    TcpListener::bind((address, port))
        .map_err(|e| format!("cannot listen on {address}:{port}: {e}"))
}

pub fn local_port(l: &TcpListener) -> Result<u16, String> {
    l.local_addr().map(|a| a.port()).map_err(|e| format!("cannot read the bound port: {e}"))
}

/// Accepts until `stop` fires.
pub async fn accept_loop<L: ShardLog>(
    shard: Rc<Shard<L>>,
    listener: TcpListener,
    connections: Rc<Semaphore>,
    stop: Stop,
) {
    loop {
        let accepted = match select(Box::pin(listener.accept()), stop.clone()).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => return,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have; try again soon.
                tracing::warn!(shard = shard.id, "accept failed: {e}");
                runtime::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let permit = match connections.try_acquire_static_permit(1) {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(
                    shard = shard.id,
                    "refusing a connection: max_connections_per_shard reached"
                );
                drop(stream);
                continue;
            }
        };
        let (shard, stop) = (shard.clone(), stop.clone());
        runtime::spawn_detached(async move {
            shard.stats_mut().connections_open += 1;
            connection::serve(shard.clone(), stream, stop).await;
            shard.stats_mut().connections_open -= 1;
            drop(permit);
        });
    }
}
