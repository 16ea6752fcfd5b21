//! The receiving side of the shard mesh: one loop per peer shard and mesh.
//!
//! Data loop: takes forwarded queue requests, at most `max_forwarded_in_flight` at once per
//! shard (a permit is taken before receiving, so a busy owner pushes back on the senders'
//! bounded channels), runs each as a task and sends the reply back on its oneshot.
//! Control loop: applies topic tables and answers stats inline, without waiting on any
//! shard, so control traffic cannot deadlock behind data traffic.
//! Both loops end when the peer closes its sender (it does so after its own connections
//! finished), which is how a stopping shard knows no more forwarded work can arrive.

use std::rc::Rc;

use crate::runtime::Semaphore;

use super::mesh::MeshReceiver;
use super::shard::{Control, Forward, Shard};
use super::shard_log::ShardLog;
use crate::runtime;

pub async fn data_loop<L: ShardLog>(
    shard: Rc<Shard<L>>,
    rx: MeshReceiver<Forward>,
    permits: Rc<Semaphore>,
) {
    loop {
        let permit = match permits.acquire_static_permit(1).await {
            Ok(p) => p,
            Err(_) => return,
        };
        let Some(Forward { request, reply }) = rx.recv().await else { return };
        let shard = shard.clone();
        runtime::spawn_detached(async move {
            let r = shard.handle_forwarded(request).await;
            let _ = reply.send(r);
            drop(permit);
        });
    }
}

pub async fn control_loop<L: ShardLog>(shard: Rc<Shard<L>>, rx: MeshReceiver<Control>) {
    while let Some(msg) = rx.recv().await {
        shard.apply_control(msg);
    }
    tracing::debug!(shard = %shard.id, from = %rx.from, "control channel closed");
}
