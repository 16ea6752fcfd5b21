//! One client connection, served on the shard that accepted it.
//!
//! The reader decodes frames (checked complete and bounded first) and starts one task per
//! request; at most `max_in_flight_per_connection` run at once, and the reader stops reading
//! while that many are in flight (backpressure through TCP). Tasks finish in any order and
//! hand their response frames, tagged with the request's correlation id, to the writer task.
//!
//! Errors: a request that decodes badly gets an error response and the connection goes on
//! (framing is intact). A frame that is too large or too short for a header breaks framing:
//! the broker answers FRAME_TOO_LARGE / MALFORMED_REQUEST (with the correlation id when it
//! could read one), finishes in-flight requests and closes the connection. A client that
//! disconnects mid-frame or mid-request only ends its own connection.
//!
//! On stop the reader stops taking new frames, in-flight requests complete and are answered,
//! then the connection closes.

use std::rc::Rc;

use crate::runtime::Semaphore;
use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use super::shard::Shard;
use super::shard_log::ShardLog;
use super::shutdown::Stop;
use crate::protocol::frame::{check_request, split_request, Check};
use crate::protocol::{decode_request, encode_error, ErrorDetail};
use crate::runtime;

const READ_CHUNK_BYTES: usize = 64 * 1024;

pub async fn serve<L: ShardLog>(shard: Rc<Shard<L>>, stream: TcpStream, stop: Stop) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
    }
    let max_in_flight = shard.config.broker.max_in_flight_per_connection;
    let max_frame = shard.config.broker.max_frame_bytes;
    let (mut reader, writer) = stream.split();
    // Room for every in-flight response plus the one refusal sent when framing breaks.
    let (tx, rx) = local_channel::new_bounded::<Vec<u8>>(max_in_flight + 2);
    let tx = Rc::new(tx);
    let write_task = runtime::spawn(write_loop(writer, rx, peer.clone()));
    let permits = Rc::new(Semaphore::new(max_in_flight as u64));

    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    'conn: loop {
        let mut start = 0;
        loop {
            match check_request(&buf[start..], max_frame) {
                Ok(Check::Incomplete { .. }) => break,
                Ok(Check::Complete { frame_bytes }) => {
                    let frame = &buf[start..start + frame_bytes];
                    start += frame_bytes;
                    let (header, payload) = split_request(frame);
                    match decode_request(&header, payload) {
                        Err(e) => {
                            tracing::debug!(%peer, "refused request: {e}");
                            shard.stats_mut().errors += 1;
                            let f = encode_error(
                                header.correlation_id,
                                e.code(),
                                &e.to_string(),
                                ErrorDetail::None,
                            );
                            if tx.send(f).await.is_err() {
                                break 'conn;
                            }
                        }
                        Ok(request) => {
                            let permit = match permits.acquire_static_permit(1).await {
                                Ok(p) => p,
                                Err(_) => break 'conn,
                            };
                            let (shard, tx) = (shard.clone(), tx.clone());
                            let id = header.correlation_id;
                            runtime::spawn_detached(async move {
                                let wants_response = request.wants_response();
                                let reply = shard.handle(request).await;
                                let frame = match reply {
                                    Ok(resp) => resp.encode_frame(id),
                                    Err(e) => encode_error(id, e.code, &e.message, e.detail),
                                };
                                if wants_response {
                                    // Fails only when the writer is gone (peer closed).
                                    let _ = tx.send(frame).await;
                                }
                                drop(permit);
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(%peer, "closing connection: {e}");
                    shard.stats_mut().errors += 1;
                    let f = encode_error(
                        e.correlation_id().unwrap_or(0),
                        e.code(),
                        &format!("{e}; closing the connection"),
                        ErrorDetail::None,
                    );
                    let _ = tx.send(f).await;
                    break 'conn;
                }
            }
        }
        if start > 0 {
            buf.drain(..start);
        }
        let read = reader.read(&mut chunk);
        match select(read, stop.clone()).await {
            Either::Left((Ok(0), _)) => {
                if !buf.is_empty() {
                    tracing::debug!(%peer, "peer closed mid-frame ({} bytes buffered)", buf.len());
                }
                break;
            }
            Either::Left((Ok(n), _)) => buf.extend_from_slice(&chunk[..n]),
            Either::Left((Err(e), _)) => {
                tracing::debug!(%peer, "read failed: {e}");
                break;
            }
            Either::Right(_) => break,
        }
    }
    // In-flight tasks hold clones of `tx`; the writer ends once they all answered.
    drop(tx);
    write_task.await;
}

async fn write_loop<W: futures::AsyncWrite + Unpin>(
    mut writer: W,
    rx: local_channel::LocalReceiver<Vec<u8>>,
    peer: String,
) {
    let mut healthy = true;
    while let Some(frame) = rx.recv().await {
        if !healthy {
            continue; // keep draining so request tasks never wait on a dead peer
        }
        if let Err(e) = writer.write_all(&frame).await {
            tracing::debug!(%peer, "write failed: {e}");
            healthy = false;
        }
    }
    if healthy {
        let _ = writer.flush().await;
        let _ = writer.close().await;
    }
}
