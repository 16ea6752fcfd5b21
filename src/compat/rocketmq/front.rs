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
//! Errors: a frame that decodes badly or breaks the framing closes the connection (the
//! stream's framing can no longer be trusted; RocketMQ's own broker does the same). A frame
//! must arrive whole within `broker.frame_read_timeout_ms`; a connection with nothing
//! received and nothing in flight for `broker.idle_timeout_ms` is closed. On stop the reader
//! stops, in-flight requests are answered, then the connection closes.

use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use super::codec::{self, SerializeType};
use super::dispatch::{dispatch, FrontSite};
use crate::broker::shard::Shard;
use crate::broker::shard_log::ShardLog;
use crate::broker::shutdown::Stop;
use crate::runtime::{self, Semaphore};

const READ_CHUNK_BYTES: usize = 64 * 1024;

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
                continue; // answers to requests the front never sends
            }
            let Ok(permit) = permits.acquire_static_permit(1).await else { break 'conn };
            let (shard, site, tx) = (shard.clone(), site.clone(), tx.clone());
            runtime::spawn_detached(async move {
                let answer = dispatch(&shard, &site, &request).await;
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
    drop(tx);
    write_task.await;
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
