//! The receiving side of the shard mesh: one loop per peer shard and mesh.
//!
//! Data loop: takes forwarded queue requests, at most `max_forwarded_in_flight` at once per
//! shard (a permit is taken before receiving, so a busy owner pushes back on the senders'
//! bounded channels), runs each as a task and sends the reply back on its oneshot. A long
//! poll (FETCH, FETCH_MULTI, WATCH_GROUP, CHECK_TRANSACTIONS) ends as soon as its sender stops
//! waiting for the reply: the shard that received a FETCH_MULTI asks every owner shard at once
//! and drops the other answers when the first one comes, and a connection that hangs up stops
//! its long polls ([`super::hangup`]).
//! Control loop: applies topic tables and answers stats inline, without waiting on any
//! shard, so control traffic cannot deadlock behind data traffic.
//! Both loops end when the peer closes its sender (it does so after its own connections
//! finished), which is how a stopping shard knows no more forwarded work can arrive.

use std::rc::Rc;

use futures::future::{select, Either};

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
        let Some(Forward { request, mut reply }) = rx.recv().await else { return };
        let shard = shard.clone();
        runtime::spawn_detached(async move {
            // A long poll may stop halfway (it only answers sooner). Left waiting, one whose
            // sender stopped waiting held this permit and a waiter slot until its deadline (up
            // to `max_long_poll_wait_ms`), and read what arrived for nobody: a FETCH_MULTI
            // whose receiving shard took another shard's answer, any long poll of a connection
            // that hung up (`hangup`).
            let long_poll = request.long_poll_wait_ms().is_some();
            let handled = shard.handle_forwarded(request);
            let r = if long_poll {
                let handled = std::pin::pin!(handled);
                match select(handled, reply.cancellation()).await {
                    Either::Left((r, _)) => r,
                    Either::Right(_) => return, // nobody waits for it: the permit goes now
                }
            } else {
                handled.await
            };
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
