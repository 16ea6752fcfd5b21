//! The broker front's connections: RocketMQ remoting frames in, answers out, on the shard
//! that accepted the connection (every shard accepts on the front port, SO_REUSEPORT).
//!
//! The reader checks each frame's length against `broker.max_frame_bytes` before buffering it,
//! decodes it and runs it as its own task ([`super::dispatch::dispatch`]), so a long-polling
//! pull does not hold up the sends behind it on the same connection (RocketMQ clients share one
//! connection per broker). At most `rocketmq.max_in_flight_per_connection` run at once; the
//! reader stops reading while that many are in flight (backpressure through TCP). Answers go
//! to a writer task in any order, matched by the client through `opaque`.
//!
//! Members-changed notices: once a connection's HEART_BEAT names a clustering consumer
//! group, a task on this shard keeps one WATCH_GROUP parked at the group's coordinator and,
//! each time the group's membership version moves, sends the client NOTIFY_CONSUMER_IDS_CHANGED
//! (a oneway request, as RocketMQ's broker does), so its members rebalance at once instead of
//! on their next periodic rebalance. At most [`MAX_WATCHED_GROUPS`] per connection; the task
//! and its parked watch end when the connection's reader does (its hang-up,
//! [`crate::broker::hangup`]) or on an error.
//!
//! Transaction check-back: once a connection's HEART_BEAT names a producer group, tasks on
//! this shard keep the group's native check parked on every shard and send the client
//! CHECK_TRANSACTION_STATE for each half due ([`transaction::check_loop`]); they end with the
//! connection's hang-up too.
//!
//! Errors: a frame that decodes badly or breaks the framing closes the connection (the
//! stream's framing can no longer be trusted; RocketMQ's own broker does the same). A frame
//! must arrive whole within `broker.frame_read_timeout_ms`; a connection with nothing
//! received and nothing in flight for `broker.idle_timeout_ms` is closed. On stop the reader
//! stops, in-flight requests are answered, then the connection closes. When the reader ends
//! for any reason, a suspended PULL_MESSAGE is answered at once with what the queue holds: a
//! client that is gone keeps no long-poll slot.

use std::collections::HashSet;
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use super::bodies;
use super::codec::{self, RemotingCommand, SerializeType};
use super::codes::request;
use super::dispatch::{dispatch, FrontSite};
use super::transaction;
use crate::broker::hangup::{self, HungUp};
use crate::broker::shard::Shard;
use crate::broker::shard_log::ShardLog;
use crate::broker::shutdown::Stop;
use crate::protocol::group::{GroupRequest, GroupResponse};
use crate::protocol::{Request, Response};
use crate::runtime::{self, Semaphore};

const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Consumer groups one connection gets members-changed notices for.
pub const MAX_WATCHED_GROUPS: usize = 64;

/// How long one parked watch waits before it is renewed.
const WATCH_WAIT_MS: u32 = 30_000;

type Writer = local_channel::LocalSender<Vec<u8>>;

pub async fn serve<L: ShardLog>(
    shard: Rc<Shard<L>>,
    site: Rc<FrontSite>,
    stream: TcpStream,
    stop: Stop,
) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let b = &shard.config.broker;
    let max_frame = b.max_frame_bytes;
    let frame_timeout = Duration::from_millis(b.frame_read_timeout_ms);
    let idle_timeout = Duration::from_millis(b.idle_timeout_ms);
    let max_in_flight = site.config.max_in_flight_per_connection;
    let (mut reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded::<Vec<u8>>(max_in_flight + 1);
    let tx = Rc::new(tx);
    let write_task = runtime::spawn(write_loop(writer, rx, peer.clone()));
    let permits = Rc::new(Semaphore::new(max_in_flight as u64));
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut watched: HashSet<String> = HashSet::new();
    let mut checked: HashSet<String> = HashSet::new();
    // Fired when the reader ends: suspended pulls are answered then, and the connection's
    // members-changed watches and check-backs stop (`crate::broker::hangup`).
    let (hangup, hung_up) = hangup::pair();
    'conn: loop {
        loop {
            let len = match codec::frame_length(&buf, max_frame) {
                Ok(Some(len)) if buf.len() >= len => len,
                Ok(_) => break,
                Err(e) => {
                    tracing::info!(%peer, "RocketMQ front: closing connection: {e}");
                    break 'conn;
                }
            };
            let decoded = codec::decode(&buf[..len]);
            buf.drain(..len);
            let (request, ty) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    tracing::info!(%peer, "RocketMQ front: closing connection: {e}");
                    break 'conn;
                }
            };
            if request.is_response() {
                continue; // answers to the oneway notices the front sends: none expected
            }
            if request.code == request::HEART_BEAT {
                watch_groups(&shard, &request, ty, &tx, &hung_up, &mut watched);
                check_producers(&shard, &site, &request, ty, &tx, &hung_up, &mut checked);
            }
            let Ok(permit) = permits.acquire_static_permit(1).await else { break 'conn };
            let (shard, site, tx, hung_up) =
                (shard.clone(), site.clone(), tx.clone(), hung_up.clone());
            runtime::spawn_detached(async move {
                let answer = dispatch(&shard, &site, &request, &hung_up).await;
                if !request.is_oneway() {
                    let frame = encode_bounded(&answer, ty, max_frame);
                    let _ = tx.send(frame).await;
                }
                drop(permit);
            });
        }
        let limit = if buf.is_empty() { idle_timeout } else { frame_timeout };
        let read = Box::pin(runtime::timeout(limit, reader.read(&mut chunk)));
        let result = match select(read, stop.clone()).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => break,
        };
        match result {
            None => {
                let in_flight = max_in_flight - permits.available() as usize;
                if buf.is_empty() && in_flight > 0 {
                    continue; // waiting on its own long polls is not idle
                }
                tracing::debug!(%peer, "RocketMQ front: closing a slow or idle connection");
                break;
            }
            Some(Ok(0)) | Some(Err(_)) => break,
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    drop(hangup);
    drop(tx);
    write_task.await;
}

/// Starts a members-changed watch for each clustering group the heartbeat names that this
/// connection does not watch yet.
fn watch_groups<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    heartbeat: &RemotingCommand,
    ty: SerializeType,
    tx: &Rc<Writer>,
    hung_up: &HungUp,
    watched: &mut HashSet<String>,
) {
    let Ok(hb) = bodies::parse_heartbeat(&heartbeat.body) else { return };
    for c in hb.consumers.iter().filter(|c| !c.is_broadcasting()) {
        if watched.len() >= MAX_WATCHED_GROUPS || watched.contains(&c.group) {
            continue;
        }
        watched.insert(c.group.clone());
        let (shard, group, tx) = (shard.clone(), c.group.clone(), Rc::downgrade(tx));
        runtime::spawn_detached(notify_loop(shard, group, ty, tx, hung_up.clone()));
    }
}

/// Starts check-back for each producer group the heartbeat names that this connection is
/// not checked back for yet: one parked check per shard ([`transaction::check_loop`]).
fn check_producers<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    site: &Rc<FrontSite>,
    heartbeat: &RemotingCommand,
    ty: SerializeType,
    tx: &Rc<Writer>,
    hung_up: &HungUp,
    checked: &mut HashSet<String>,
) {
    let Ok(hb) = bodies::parse_heartbeat(&heartbeat.body) else { return };
    for p in hb.producers.iter().filter(|p| p.group != bodies::CLIENT_INNER_PRODUCER) {
        if checked.len() >= transaction::MAX_CHECKED_GROUPS || checked.contains(&p.group) {
            continue;
        }
        checked.insert(p.group.clone());
        for target in 0..shard.shard_count {
            let loop_ = transaction::check_loop(
                shard.clone(),
                site.clone(),
                p.group.clone(),
                target as u16,
                ty,
                Rc::downgrade(tx),
                hung_up.clone(),
            );
            runtime::spawn_detached(loop_);
        }
    }
}

/// Parks a watch on `group` until its version moves, then notifies the client; ends when the
/// connection hangs up (the parked watch too) or its writer is gone, or a watch fails (the
/// broker stops, or the watcher limit).
async fn notify_loop<L: ShardLog>(
    shard: Rc<Shard<L>>,
    group: String,
    ty: SerializeType,
    tx: Weak<Writer>,
    hung_up: HungUp,
) {
    let mut known = u64::MAX; // the first answer only tells the current version
    let mut opaque = 0i32;
    loop {
        let watch = GroupRequest::Watch {
            group: group.clone(),
            version: known,
            max_wait_ms: WATCH_WAIT_MS,
        };
        let watched =
            hangup::unless_hung_up(&hung_up, Box::pin(shard.handle(Request::Group(watch))));
        let Some(watched) = watched.await else { return };
        let version = match watched {
            Ok(answer) => match answer.into_response() {
                Response::Group(GroupResponse::Watch { version }) => version,
                _ => return,
            },
            Err(e) => {
                tracing::debug!(%group, "RocketMQ front: members-changed watch ended: {e}");
                return;
            }
        };
        let Some(writer) = tx.upgrade() else { return };
        if known != u64::MAX && version != known {
            opaque = opaque.wrapping_add(1);
            let mut notice = RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED, opaque);
            notice.flag = codec::FLAG_ONEWAY;
            notice.set_field("consumerGroup", &group);
            if writer.send(codec::encode(&notice, ty)).await.is_err() {
                return;
            }
        }
        known = version;
    }
}

/// Encodes an answer; one over the frame limit becomes an error answer instead (the client
/// would refuse the frame and drop its connection).
fn encode_bounded(answer: &codec::RemotingCommand, ty: SerializeType, max_frame: usize) -> Vec<u8> {
    let frame = codec::encode(answer, ty);
    if frame.len() <= max_frame {
        return frame;
    }
    let mut small = answer.clone();
    small.body.clear();
    small.ext_fields.clear();
    small.code = codec::sys_code::SYSTEM_ERROR;
    small.remark = Some(format!(
        "the answer would be {} bytes, over broker.max_frame_bytes = {max_frame}",
        frame.len()
    ));
    codec::encode(&small, ty)
}

async fn write_loop<W: futures::AsyncWrite + Unpin>(
    mut writer: W,
    rx: local_channel::LocalReceiver<Vec<u8>>,
    peer: String,
) {
    let mut healthy = true;
    while let Some(frame) = rx.recv().await {
        if healthy {
            if let Err(e) = writer.write_all(&frame).await {
                tracing::debug!(%peer, "RocketMQ front: write failed: {e}");
                healthy = false;
            }
        }
    }
    if healthy {
        let _ = writer.flush().await;
        let _ = writer.close().await;
    }
}
