//! Replication requests between a replica shard and its master shard (API keys 40-42), and
//! the operator's REPLICA_PROMOTE (44).
//!
//! Replica shard s connects to master shard s's own port and pulls: JOIN once per connection
//! (shard count and shard checked, epoch histories compared, the point to truncate to
//! answered), then REPLICA_FETCH in a loop, each carrying the position the replica has synced
//! to disk (its acknowledgement) and asking for the log bytes from where its log ends. The
//! master answers whole stored batches with their log positions, unchanged. REPLICA_TOPICS
//! copies the master's topic table. Layouts: docs/protocol.md, "Replication".

use super::api::ApiKey;
use super::codec::{DecodeError, Reader, Writer};
use crate::replication::config::Mode;
use crate::replication::epochs::{EpochHistory, MAX_EPOCH_ENTRIES};

/// Most batches one fetch answer lists (bounded by bytes as well).
pub const MAX_FETCH_BATCHES: u32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplRequest {
    /// A replica shard starts following. `end` is where its log ends, `synced` how much of it
    /// is on disk, `history` its epoch history; `replica` is its address as the master's
    /// `replication.replicas` lists it.
    Join {
        shard_count: u32,
        shard: u32,
        replica: String,
        end: u64,
        synced: u64,
        history: EpochHistory,
    },
    /// Acknowledges `synced` and asks for batches from `from` (a batch boundary), up to about
    /// `max_bytes`; waits up to `max_wait_ms` when `from` is the master's end.
    Fetch { session: u64, from: u64, synced: u64, max_bytes: u32, max_wait_ms: u32 },
    /// The master's topic table.
    Topics,
    /// An operator's promotion of this replica broker to master, on every shard: the new
    /// master's `replicas`, its mode and `min_in_sync_replicas`. Without `force` it is refused
    /// while the old master answers.
    Promote { replicas: Vec<String>, mode: Mode, min_in_sync_replicas: u32, force: bool },
}

/// Most replica addresses a PROMOTE lists.
pub const MAX_PROMOTE_REPLICAS: u32 = 64;

/// One shard's new epoch after a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromotedShard {
    pub shard: u32,
    pub epoch: u32,
    /// The log position the epoch begins at (the shard's log end when it was promoted).
    pub start: u64,
}

/// One batch as the master stored it, at its log position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireBatch {
    pub position: u64,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplResponse {
    /// `session` names this stream in later fetches; the replica keeps `[0, truncate_to)` of
    /// its log and adopts `history`, the master's epoch history.
    Join { session: u64, truncate_to: u64, master_end: u64, history: EpochHistory },
    /// Batches in log order from the requested position; `next` is where to continue (past
    /// a segment's end it is the next segment's base). `confirmed` is the master's confirmed
    /// position, `topics_epoch` its topic table's version (a replica whose copy differs asks
    /// REPLICA_TOPICS).
    Fetch { confirmed: u64, topics_epoch: u64, next: u64, batches: Vec<WireBatch> },
    /// The master's topic table (`topics.json`'s bytes).
    Topics { table_json: Vec<u8> },
    /// Every shard's new epoch, by shard.
    Promote { shards: Vec<PromotedShard> },
}

impl ReplRequest {
    pub fn api_key(&self) -> ApiKey {
        match self {
            ReplRequest::Join { .. } => ApiKey::ReplicaJoin,
            ReplRequest::Fetch { .. } => ApiKey::ReplicaFetch,
            ReplRequest::Topics => ApiKey::ReplicaTopics,
            ReplRequest::Promote { .. } => ApiKey::ReplicaPromote,
        }
    }

    pub fn encode_body(&self, w: &mut Writer) {
        match self {
            ReplRequest::Join { shard_count, shard, replica, end, synced, history } => {
                w.u32(*shard_count).u32(*shard).string(replica).u64(*end).u64(*synced);
                w.bytes(&history.encode());
            }
            ReplRequest::Fetch { session, from, synced, max_bytes, max_wait_ms } => {
                w.u64(*session).u64(*from).u64(*synced).u32(*max_bytes).u32(*max_wait_ms);
            }
            ReplRequest::Topics => {}
            ReplRequest::Promote { replicas, mode, min_in_sync_replicas, force } => {
                w.count(replicas.len());
                for r in replicas {
                    w.string(r);
                }
                w.u8(match mode {
                    Mode::Sync => 0,
                    Mode::Async => 1,
                });
                w.u32(*min_in_sync_replicas).u8(u8::from(*force));
            }
        }
    }

    pub fn decode_body(api: ApiKey, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            ApiKey::ReplicaJoin => ReplRequest::Join {
                shard_count: r.u32("shard_count")?,
                shard: r.u32("shard")?,
                replica: r.string("replica")?,
                end: r.u64("end")?,
                synced: r.u64("synced")?,
                history: history(r)?,
            },
            ApiKey::ReplicaFetch => ReplRequest::Fetch {
                session: r.u64("session")?,
                from: r.u64("from")?,
                synced: r.u64("synced")?,
                max_bytes: r.u32("max_bytes")?,
                max_wait_ms: r.u32("max_wait_ms")?,
            },
            ApiKey::ReplicaPromote => {
                let n = r.count("replicas", MAX_PROMOTE_REPLICAS, 2)?;
                let mut replicas = Vec::with_capacity(n);
                for _ in 0..n {
                    replicas.push(r.string("replica")?);
                }
                let mode = match r.u8("mode")? {
                    0 => Mode::Sync,
                    1 => Mode::Async,
                    v => return Err(DecodeError::BadValue { field: "mode", value: v.into() }),
                };
                let min_in_sync_replicas = r.u32("min_in_sync_replicas")?;
                let force = match r.u8("force")? {
                    0 => false,
                    1 => true,
                    v => return Err(DecodeError::BadValue { field: "force", value: v.into() }),
                };
                ReplRequest::Promote { replicas, mode, min_in_sync_replicas, force }
            }
            _ => ReplRequest::Topics,
        })
    }
}

fn history(r: &mut Reader<'_>) -> Result<EpochHistory, DecodeError> {
    let b = r.bytes("history")?;
    if b.len() > 12 + 12 * MAX_EPOCH_ENTRIES {
        return Err(DecodeError::TooMany {
            field: "history bytes",
            count: b.len() as u64,
            max: (12 + 12 * MAX_EPOCH_ENTRIES) as u64,
        });
    }
    EpochHistory::decode(b).map_err(|_| DecodeError::BadValue { field: "history", value: 0 })
}

impl ReplResponse {
    pub fn api_key(&self) -> ApiKey {
        match self {
            ReplResponse::Join { .. } => ApiKey::ReplicaJoin,
            ReplResponse::Fetch { .. } => ApiKey::ReplicaFetch,
            ReplResponse::Topics { .. } => ApiKey::ReplicaTopics,
            ReplResponse::Promote { .. } => ApiKey::ReplicaPromote,
        }
    }

    pub fn encode_body(&self, w: &mut Writer) {
        match self {
            ReplResponse::Join { session, truncate_to, master_end, history } => {
                w.u64(*session).u64(*truncate_to).u64(*master_end).bytes(&history.encode());
            }
            ReplResponse::Fetch { confirmed, topics_epoch, next, batches } => {
                w.u64(*confirmed).u64(*topics_epoch).u64(*next).count(batches.len());
                for b in batches {
                    w.u64(b.position).bytes(&b.bytes);
                }
            }
            ReplResponse::Topics { table_json } => {
                w.bytes(table_json);
            }
            ReplResponse::Promote { shards } => {
                w.count(shards.len());
                for s in shards {
                    w.u32(s.shard).u32(s.epoch).u64(s.start);
                }
            }
        }
    }

    pub fn decode_body(api: ApiKey, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match api {
            ApiKey::ReplicaJoin => ReplResponse::Join {
                session: r.u64("session")?,
                truncate_to: r.u64("truncate_to")?,
                master_end: r.u64("master_end")?,
                history: history(r)?,
            },
            ApiKey::ReplicaFetch => {
                let confirmed = r.u64("confirmed")?;
                let topics_epoch = r.u64("topics_epoch")?;
                let next = r.u64("next")?;
                let n = r.count("batches", MAX_FETCH_BATCHES, 12)?;
                let mut batches = Vec::with_capacity(n);
                for _ in 0..n {
                    let position = r.u64("position")?;
                    batches.push(WireBatch { position, bytes: r.bytes("batch")?.to_vec() });
                }
                ReplResponse::Fetch { confirmed, topics_epoch, next, batches }
            }
            ApiKey::ReplicaPromote => {
                let n = r.count("shards", 1024, 16)?;
                let mut shards = Vec::with_capacity(n);
                for _ in 0..n {
                    shards.push(PromotedShard {
                        shard: r.u32("shard")?,
                        epoch: r.u32("epoch")?,
                        start: r.u64("start")?,
                    });
                }
                ReplResponse::Promote { shards }
            }
            _ => ReplResponse::Topics { table_json: r.bytes("table")?.to_vec() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{split_request, split_response};
    use crate::protocol::{decode_request, Request, Response};
    use crate::replication::epochs::EpochEntry;

    #[test]
    fn requests_and_responses_round_trip() {
        let history = EpochHistory::from_entries(vec![
            EpochEntry { epoch: 1, start: 0 },
            EpochEntry { epoch: 3, start: 4096 },
        ])
        .unwrap();
        for req in [
            ReplRequest::Join {
                shard_count: 2,
                shard: 1,
                replica: "127.0.0.1:20911".into(),
                end: 9000,
                synced: 8000,
                history: history.clone(),
            },
            ReplRequest::Fetch {
                session: 7,
                from: 4096,
                synced: 4000,
                max_bytes: 1 << 20,
                max_wait_ms: 500,
            },
            ReplRequest::Topics,
            ReplRequest::Promote {
                replicas: vec!["127.0.0.1:30911".into(), "127.0.0.1:10911".into()],
                mode: Mode::Async,
                min_in_sync_replicas: 2,
                force: true,
            },
        ] {
            let req = Request::Replication(req);
            let frame = req.encode_frame(5);
            let (h, payload) = split_request(&frame[..]);
            assert_eq!(decode_request(&h, payload).unwrap(), req);
        }
        for resp in [
            ReplResponse::Join { session: 1, truncate_to: 100, master_end: 200, history },
            ReplResponse::Fetch {
                confirmed: 10,
                topics_epoch: 3,
                next: 300,
                batches: vec![
                    WireBatch { position: 100, bytes: vec![1; 100] },
                    WireBatch { position: 200, bytes: vec![2; 88] },
                ],
            },
            ReplResponse::Topics { table_json: b"{}".to_vec() },
            ReplResponse::Promote {
                shards: vec![
                    PromotedShard { shard: 0, epoch: 3, start: 8192 },
                    PromotedShard { shard: 1, epoch: 2, start: 0 },
                ],
            },
        ] {
            let api = resp.api_key();
            let resp = Response::Replication(resp);
            let frame = resp.encode_frame(9);
            let (_, payload) = split_response(&frame[..]);
            assert_eq!(Response::decode(api, payload).unwrap(), resp);
        }
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let req = Request::Replication(ReplRequest::Join {
            shard_count: 1,
            shard: 0,
            replica: "r".into(),
            end: 1,
            synced: 1,
            history: EpochHistory::new(),
        });
        let frame = req.encode_frame(1);
        let (h, payload) = split_request(&frame[..]);
        for n in 0..payload.len() {
            assert!(decode_request(&h, &payload[..n]).is_err());
        }
        let mut bad = payload.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1; // the history's checksum
        assert!(decode_request(&h, &bad).is_err());
    }
}
