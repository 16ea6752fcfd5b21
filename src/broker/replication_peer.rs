//! A replica shard's connection to its master: one request at a time over the native protocol
//! (frames checked complete and bounded before decoding, every wait bounded by a timeout).
//!
//! Lives on the replica shard's executor (glommio's TCP stream). Used by the follower
//! (`shard/follower.rs`) and by the replica's start-up handshake (`server.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::protocol::frame::{check_response, split_response, Check};
use crate::protocol::replication::{ReplRequest, ReplResponse};
use crate::protocol::{ErrorCode, ErrorResponse, Request, Response};
use crate::replication::epochs::{conflict, EpochHistory};
use crate::runtime;

/// How a call to the master failed.
#[derive(Debug)]
pub enum PeerError {
    /// Connecting, reading, writing, a timeout, or bytes that do not decode: reconnect.
    Io(String),
    /// The master answered with an error.
    Refused(ErrorResponse),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Io(e) => f.write_str(e),
            PeerError::Refused(e) => {
                let name = e.known_code().map_or("UNKNOWN", ErrorCode::name);
                write!(f, "{name}: {}", e.message)
            }
        }
    }
}

pub struct Peer {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
    next_id: u32,
    max_frame: usize,
}

impl Peer {
    pub async fn connect(
        addr: SocketAddr,
        max_frame: usize,
        within: Duration,
    ) -> Result<Peer, PeerError> {
        let stream = runtime::timeout(within, TcpStream::connect(addr))
            .await
            .ok_or_else(|| PeerError::Io(format!("connecting to {addr} timed out")))?
            .map_err(|e| PeerError::Io(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Peer { stream, addr, buf: Vec::new(), next_id: 1, max_frame })
    }

    /// The local IP of this connection (how the master sees this broker).
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.stream.local_addr().ok().map(|a| a.ip())
    }

    /// Sends `request` and waits (at most `within`) for its answer.
    pub async fn call(
        &mut self,
        request: &Request,
        within: Duration,
    ) -> Result<Response, PeerError> {
        let addr = self.addr;
        runtime::timeout(within, self.call_inner(request)).await.unwrap_or_else(|| {
            Err(PeerError::Io(format!("no answer from {addr} within {within:?}")))
        })
    }

    async fn call_inner(&mut self, request: &Request) -> Result<Response, PeerError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let io =
            |what: &str, e: std::io::Error| PeerError::Io(format!("{what} {}: {e}", self.addr));
        self.stream.write_all(&request.encode_frame(id)).await.map_err(|e| io("writing to", e))?;
        self.buf.clear();
        let frame_bytes = loop {
            match check_response(&self.buf, self.max_frame) {
                Ok(Check::Complete { frame_bytes }) => break frame_bytes,
                Ok(Check::Incomplete { needed }) => {
                    // One request at a time: read exactly up to the end of this frame.
                    let have = self.buf.len();
                    self.buf.resize(needed, 0);
                    let n = self
                        .stream
                        .read(&mut self.buf[have..])
                        .await
                        .map_err(|e| io("reading from", e))?;
                    self.buf.truncate(have + n);
                    if n == 0 {
                        return Err(PeerError::Io(format!("{} closed the connection", self.addr)));
                    }
                }
                Err(e) => return Err(PeerError::Io(format!("bad frame from {}: {e}", self.addr))),
            }
        };
        let (header, payload) = split_response(&self.buf[..frame_bytes]);
        if header.correlation_id != id {
            return Err(PeerError::Io(format!(
                "{} answered correlation id {} to request {id}",
                self.addr, header.correlation_id
            )));
        }
        let bad = |e: crate::protocol::DecodeError| {
            PeerError::Io(format!("undecodable answer from {}: {e}", self.addr))
        };
        if header.error_code != 0 {
            return Err(PeerError::Refused(
                ErrorResponse::decode(header.error_code, payload).map_err(bad)?,
            ));
        }
        Response::decode(request.api_key(), payload).map_err(bad)
    }
}

/// What a replica shard learns when it joins its master.
pub struct Joined {
    pub peer: Peer,
    pub session: u64,
    pub truncate_to: u64,
    pub history: EpochHistory,
}

/// Why joining failed.
pub enum JoinError {
    /// Worth retrying later (master unreachable, stopping, refusing for now).
    Retry(String),
    /// A configuration mismatch a retry cannot fix.
    Fatal(String),
}

/// Where this replica's log stands when it joins.
pub struct JoinFrom<'a> {
    pub shard: usize,
    pub shard_count: usize,
    pub own_shared_port: u16,
    pub advertise: Option<SocketAddr>,
    pub end: u64,
    pub synced: u64,
    pub history: &'a EpochHistory,
}

pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the master's shared port, checks its shard count, connects to the master shard
/// of the same number and joins its stream.
pub async fn join(
    master: SocketAddr,
    max_frame: usize,
    from: JoinFrom<'_>,
) -> Result<Joined, JoinError> {
    let retry = |e: PeerError| JoinError::Retry(e.to_string());
    let mut peer = Peer::connect(master, max_frame, CALL_TIMEOUT).await.map_err(retry)?;
    let meta = peer
        .call(&Request::Metadata { topics: vec!["%".into()] }, CALL_TIMEOUT)
        .await
        .map_err(retry)?;
    let Response::Metadata { shard_count, shard_ports, .. } = meta else {
        return Err(JoinError::Retry("the master answered METADATA with something else".into()));
    };
    if shard_count as usize != from.shard_count || shard_ports.len() != from.shard_count {
        return Err(JoinError::Fatal(format!(
            "the master {master} runs {shard_count} shards but this replica runs {}: shard s of a \
             master replicates to shard s of its replicas, so set broker.shards = {shard_count}",
            from.shard_count
        )));
    }
    let shard_addr = SocketAddr::new(master.ip(), shard_ports[from.shard]);
    let mut peer = Peer::connect(shard_addr, max_frame, CALL_TIMEOUT).await.map_err(retry)?;
    let advertise = match from.advertise {
        Some(a) => a,
        None => {
            let ip = peer.local_ip().ok_or_else(|| JoinError::Retry("no local address".into()))?;
            SocketAddr::new(ip, from.own_shared_port)
        }
    };
    let request = Request::Replication(ReplRequest::Join {
        shard_count: from.shard_count as u32,
        shard: from.shard as u32,
        replica: advertise.to_string(),
        end: from.end,
        synced: from.synced,
        history: from.history.clone(),
    });
    match peer.call(&request, CALL_TIMEOUT).await {
        Ok(Response::Replication(ReplResponse::Join { session, truncate_to, history, .. })) => {
            if truncate_to > from.end {
                return Err(JoinError::Retry(format!(
                    "the master answered truncate_to {truncate_to} past this log's end {}",
                    from.end
                )));
            }
            // The master checked this replica's history against its own; one whose history
            // conflicts anyway (an epoch this replica holds missing or numbered elsewhere) is
            // not followed: adopting its history would forget that epoch.
            if let Some(reason) = conflict(&history, from.history) {
                return Err(JoinError::Fatal(format!(
                    "the master {master} answered an epoch history this replica cannot adopt: \
                     {reason}"
                )));
            }
            Ok(Joined { peer, session, truncate_to, history })
        }
        Ok(_) => Err(JoinError::Retry("the master answered JOIN with something else".into())),
        Err(PeerError::Refused(e)) if e.known_code() == Some(ErrorCode::INVALID_ARGUMENT) => Err(
            JoinError::Fatal(format!("the master {master} refused this replica: {}", e.message)),
        ),
        Err(PeerError::Refused(e)) if e.known_code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
            Err(JoinError::Fatal(behind_retention(master, &e)))
        }
        Err(e) => Err(retry(e)),
    }
}

/// Why a replica stops when its master refuses it with OFFSET_OUT_OF_RANGE (at the join or a
/// fetch): the master's retention deleted the log this replica would continue from. No retry
/// brings it back, so the replica does not retry; the message says what the operator does.
pub fn behind_retention(master: SocketAddr, refusal: &ErrorResponse) -> String {
    let oldest = match refusal.detail {
        crate::protocol::ErrorDetail::OffsetRange { min, .. } => min.to_string(),
        _ => "?".into(),
    };
    format!(
        "the master {master} no longer holds this replica's position: {}. This replica stops \
         following: no fetch can bring the deleted data back. Rebuild it from a copy of the \
         master's data directory taken while the master is stopped, without its LOCK and \
         replication-role.json files (its logs begin at the master's oldest retained \
         position {oldest}), then start it; see docs/protocol.md, \"Replication\", a replica \
         behind the master's retention",
        refusal.message
    )
}

/// How long a starting master waits for each of its replicas to say whom it follows.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Before a master begins a new epoch: asks `replica` whom it follows (REPLICA_TOPICS, which a
/// master answers and a replica refuses with NOT_MASTER naming its master). Err when the
/// replica is a master itself or follows another broker than this one (`me`, this broker's
/// shared port at the IP it reaches the replica from): another broker was promoted, so this
/// one must rejoin as a replica instead of starting a second master. Ok when it follows this
/// broker, or cannot be asked (down, unreachable, no replication: nothing to learn).
pub async fn check_not_replaced(
    replica: SocketAddr,
    own_shared_port: u16,
    max_frame: usize,
) -> Result<(), String> {
    let Ok(mut peer) = Peer::connect(replica, max_frame, PROBE_TIMEOUT).await else {
        return Ok(());
    };
    let me = peer.local_ip().map(|ip| SocketAddr::new(ip, own_shared_port));
    let answer = peer.call(&Request::Replication(ReplRequest::Topics), PROBE_TIMEOUT).await;
    let restart_as_replica = |master: &str| {
        format!(
            "restart this broker with role = \"replica\" and master = \"{master}\" (it truncates \
             what the master lacks and follows), or, if this broker must be the master, \
             reconfigure {replica} first"
        )
    };
    match answer {
        Ok(Response::Replication(ReplResponse::Topics { .. })) => Err(format!(
            "replica {replica} answers as a master (promoted?): starting this broker as a \
             master too would make two masters; {}",
            restart_as_replica(&replica.to_string())
        )),
        Err(PeerError::Refused(e)) => match e.detail {
            crate::protocol::ErrorDetail::NotMaster { master } if Some(master) != me => {
                Err(format!(
                    "replica {replica} follows {master}, not this broker ({}): another broker \
                     is master; {}",
                    me.map_or("?".into(), |m| m.to_string()),
                    restart_as_replica(&master.to_string())
                ))
            }
            _ => Ok(()),
        },
        Ok(_) | Err(PeerError::Io(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::scripted_broker::{join_keeping, one_shard, scripted_broker};
    use crate::replication::epochs::EpochEntry;
    use crate::runtime::{run_on_new_executor, ExecutorOptions};

    fn history(entries: &[(u32, u64)]) -> EpochHistory {
        let entries = entries.iter().map(|&(epoch, start)| EpochEntry { epoch, start }).collect();
        EpochHistory::from_entries(entries).unwrap()
    }

    #[test]
    fn a_master_answering_a_history_without_this_replicas_newest_epoch_is_refused() {
        // A master (stale, or broken) that joins a replica holding epoch 2 although its own
        // history ends at epoch 1: adopting that history would forget epoch 2, and a later
        // promotion could begin epoch 2 again over different data.
        let master = scripted_broker(|port, request| match request {
            Request::Metadata { .. } => one_shard(port),
            Request::Replication(ReplRequest::Join { end, .. }) => {
                join_keeping(end, history(&[(1, 0)]))
            }
            other => panic!("unexpected {other:?}"),
        });
        let master: SocketAddr = master.parse().unwrap();
        let outcome = run_on_new_executor(ExecutorOptions::default(), move || async move {
            let own = history(&[(1, 0), (2, 500)]);
            let from = JoinFrom {
                shard: 0,
                shard_count: 1,
                own_shared_port: 1,
                advertise: Some("127.0.0.1:1".parse().unwrap()),
                end: 1000,
                synced: 1000,
                history: &own,
            };
            match join(master, 1 << 20, from).await {
                Ok(j) => Err(format!("joined with history {:?}", j.history)),
                Err(JoinError::Retry(e)) => Err(format!("retry: {e}")),
                Err(JoinError::Fatal(e)) => Ok(e),
            }
        })
        .unwrap();
        let reason = outcome.unwrap();
        assert!(reason.contains("epoch 2"), "{reason}");
    }

    #[test]
    fn a_replica_behind_its_masters_retention_stops_with_what_to_do() {
        use crate::client::scripted_broker::scripted_broker_refusing;
        use crate::protocol::ErrorDetail;
        // The master deleted the segments this replica's log would continue into: a refusal
        // no retry can change, so the join fails for good, saying why and what to do.
        let master = scripted_broker_refusing(|port, request| match request {
            Request::Metadata { .. } => Ok(one_shard(port)),
            Request::Replication(ReplRequest::Join { .. }) => Err((
                ErrorCode::OFFSET_OUT_OF_RANGE,
                "the replica needs this master's log from position 0, but the oldest position \
                 the master still holds is 65536"
                    .into(),
                ErrorDetail::OffsetRange { min: 65536, next: 70000 },
            )),
            other => panic!("unexpected {other:?}"),
        });
        let master: SocketAddr = master.parse().unwrap();
        let outcome = run_on_new_executor(ExecutorOptions::default(), move || async move {
            let own = EpochHistory::new();
            let from = JoinFrom {
                shard: 0,
                shard_count: 1,
                own_shared_port: 1,
                advertise: Some("127.0.0.1:1".parse().unwrap()),
                end: 0,
                synced: 0,
                history: &own,
            };
            match join(master, 1 << 20, from).await {
                Ok(_) => Err("joined".to_string()),
                Err(JoinError::Retry(e)) => Err(format!("retry: {e}")),
                Err(JoinError::Fatal(e)) => Ok(e),
            }
        })
        .unwrap();
        let reason = outcome.unwrap();
        assert!(reason.contains("no longer holds this replica's position"), "{reason}");
        assert!(reason.contains("oldest position the master still holds is 65536"), "{reason}");
        assert!(reason.contains("oldest retained position 65536"), "{reason}");
        assert!(reason.contains("stops following"), "{reason}");
    }
}
