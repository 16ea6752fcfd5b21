//! Replication with the real binary on 127.0.0.1: a master and two replicas, sync replication
//! and sync flush, two shards each (shard s streams to shard s).
//!
//! - acknowledged sends are on the replicas, byte-identical to the master's stored batches;
//! - a replica refuses produce with NOT_MASTER carrying the master's address;
//! - SIGKILL one replica: with min_in_sync_replicas = 2 and one replica left, sends succeed;
//! - SIGKILL both: sends are refused SLAVE_NOT_AVAILABLE (after a FLUSH_SLAVE_TIMEOUT or two
//!   while the in-sync set still counts the dead);
//! - a restarted replica catches up from the master's disk and rejoins: sends succeed again.

mod broker_common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use broker_common::{config, free_port_block, poll_until, Broker, Raw};
use ringmq::format::{BatchBuilder, Record};
use ringmq::protocol::{
    ErrorCode, ErrorDetail, ErrorResponse, Request, Response, SendStatus, SharedBytes,
};

const TOPIC: &str = "repl";
const QUEUES: u32 = 4;
const SHARDS: usize = 2;
const WAIT: Duration = Duration::from_secs(60);

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-repl").tempdir().unwrap()
}

struct Conn {
    raw: Raw,
    next_id: u32,
}

impl Conn {
    fn connect(port: u16) -> Conn {
        Conn { raw: Raw::connect(port), next_id: 1 }
    }

    fn call(&mut self, request: &Request) -> Result<Response, ErrorResponse> {
        let id = self.next_id;
        self.next_id += 1;
        self.raw.send(&request.encode_frame(id));
        let (h, payload) = self.raw.read_frame().expect("the broker answered");
        assert_eq!(h.correlation_id, id);
        if h.error_code != 0 {
            return Err(ErrorResponse::decode(h.error_code, &payload).unwrap());
        }
        Ok(Response::decode(request.api_key(), &payload).unwrap())
    }

    fn produce(&mut self, queue_id: u32, tag: u64) -> Result<(SendStatus, u64), ErrorResponse> {
        let mut b = BatchBuilder::new(1 << 20);
        for i in 0..3 {
            let body = format!("{tag}:{i}:{}", "x".repeat(100));
            b.push(&Record {
                key: b"k",
                tag: b"T",
                properties: &[],
                body: body.as_bytes(),
                timestamp_ms: 1_000,
            })
            .unwrap();
        }
        let batch = SharedBytes::from(b.finish(-1, -1));
        let request = Request::Produce { topic: TOPIC.into(), queue_id, flags: 0, batch };
        match self.call(&request)? {
            Response::Produce { status, base_offset, .. } => Ok((status, base_offset)),
            other => panic!("produce answered {other:?}"),
        }
    }

    /// Every stored batch of `queue_id` readable here, concatenated as the broker stores them.
    fn stored(&mut self, queue_id: u32) -> (u64, Vec<u8>) {
        let (mut offset, mut bytes) = (0u64, Vec::new());
        loop {
            let request = Request::Fetch {
                topic: TOPIC.into(),
                queue_id,
                offset,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                tags: vec![],
            };
            match self.call(&request).unwrap() {
                Response::Fetch { next_offset, scan_end_offset, batches, .. } => {
                    bytes.extend_from_slice(&batches);
                    if batches.is_empty() || scan_end_offset >= next_offset {
                        return (next_offset, bytes);
                    }
                    offset = scan_end_offset;
                }
                other => panic!("fetch answered {other:?}"),
            }
        }
    }

    fn topics(&mut self) -> usize {
        match self.call(&Request::ListTopics).unwrap() {
            Response::ListTopics { topics } => topics.len(),
            other => panic!("list answered {other:?}"),
        }
    }
}

fn master_config(dir: &Path, replicas: &[u16], mode: &str) -> String {
    let list: Vec<String> = replicas.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "{}[replication]\nrole = \"master\"\nreplication = \"{mode}\"\nreplicas = [{}]\n\
         min_in_sync_replicas = 2\nsync_replication_timeout_ms = 10000\nreplica_lag_max_ms = 3000\n",
        config(dir, SHARDS, "", "flush_mode = \"sync\""),
        list.join(", ")
    )
}

fn replica_config(dir: &Path, port: u16, master: u16) -> String {
    format!(
        "{}[replication]\nrole = \"replica\"\nmaster = \"127.0.0.1:{master}\"\n",
        config(dir, SHARDS, &format!("port = {port}"), "flush_mode = \"sync\"")
    )
}

/// Sends to every queue until one round is all SEND_OK; returns the acknowledged offsets.
fn send_round(conn: &mut Conn, tag: u64) -> Vec<Result<(SendStatus, u64), ErrorResponse>> {
    (0..QUEUES).map(|q| conn.produce(q, tag * 100 + u64::from(q))).collect()
}

fn all_ok(round: &[Result<(SendStatus, u64), ErrorResponse>]) -> bool {
    round.iter().all(|r| matches!(r, Ok((SendStatus::SendOk, _))))
}

/// The replica holds, byte for byte, what the master holds up to `acked[q]` on each queue.
fn assert_identical(master: &mut Conn, replica: &mut Conn, acked: &[u64]) {
    for q in 0..QUEUES {
        let (m_next, m_bytes) = master.stored(q);
        assert!(m_next >= acked[q as usize], "the master shows every acknowledged record");
        let (r_next, r_bytes) = poll_until(WAIT, || {
            let (next, bytes) = replica.stored(q);
            (next >= acked[q as usize]).then_some((next, bytes))
        });
        let common = m_bytes.len().min(r_bytes.len());
        assert!(r_next >= acked[q as usize]);
        assert_eq!(&m_bytes[..common], &r_bytes[..common], "queue {q}: stored bytes differ");
        assert!(common > 0);
    }
}

#[test]
fn sync_replication_with_replicas_killed_and_restarted() {
    let dir = tempdir();
    let (p1, p2) = (free_port_block(SHARDS as u16), free_port_block(SHARDS as u16));
    let (d0, d1, d2) = (dir.path().join("m"), dir.path().join("r1"), dir.path().join("r2"));
    let master = Broker::start_in(&d0, &master_config(&d0, &[p1, p2], "sync"));
    let mut r1 = Broker::start_in(&d1, &replica_config(&d1, p1, master.shared_port));
    let mut r2 = Broker::start_in(&d2, &replica_config(&d2, p2, master.shared_port));

    let mut m = Conn::connect(master.shared_port);
    match m.call(&Request::CreateTopic { topic: TOPIC.into(), queue_count: QUEUES }) {
        Ok(Response::CreateTopic { .. }) => {}
        other => panic!("create topic: {other:?}"),
    }
    // Topic metadata reaches the replicas.
    for port in [p1, p2] {
        let mut c = Conn::connect(port);
        poll_until(WAIT, || (c.topics() == 1).then_some(()));
    }

    // Sends succeed once the replicas joined the in-sync set (before that: SLAVE_NOT_AVAILABLE).
    let mut acked = vec![0u64; QUEUES as usize];
    let mut tag = 0;
    poll_until(WAIT, || {
        tag += 1;
        let round = send_round(&mut m, tag);
        for r in &round {
            if let Err(e) = r {
                assert_eq!(e.known_code(), Some(ErrorCode::SLAVE_NOT_AVAILABLE), "{e:?}");
            }
        }
        all_ok(&round).then_some(())
    });
    for _ in 0..20 {
        tag += 1;
        let round = send_round(&mut m, tag);
        assert!(all_ok(&round), "{round:?}");
        for (q, r) in round.iter().enumerate() {
            acked[q] = r.as_ref().unwrap().1 + 3;
        }
    }
    let (mut c1, mut c2) = (Conn::connect(p1), Conn::connect(p2));
    assert_identical(&mut m, &mut c1, &acked);
    assert_identical(&mut m, &mut c2, &acked);

    // A replica refuses writes and names its master.
    let refused = c1.produce(0, 1).unwrap_err();
    assert_eq!(refused.known_code(), Some(ErrorCode::NOT_MASTER));
    let expected: SocketAddr = format!("127.0.0.1:{}", master.shared_port).parse().unwrap();
    assert_eq!(refused.detail, ErrorDetail::NotMaster { master: expected });
    let refused = c1.call(&Request::CreateTopic { topic: "other".into(), queue_count: 1 });
    assert_eq!(refused.unwrap_err().known_code(), Some(ErrorCode::NOT_MASTER));

    // One replica dies: with min_in_sync_replicas = 2 and one replica left, sends succeed
    // (the first may wait until the dead one leaves the in-sync set).
    r1.kill();
    tag += 1;
    let _ = send_round(&mut m, tag);
    for _ in 0..10 {
        tag += 1;
        let round = send_round(&mut m, tag);
        assert!(all_ok(&round), "one replica left: {round:?}");
        for (q, r) in round.iter().enumerate() {
            acked[q] = r.as_ref().unwrap().1 + 3;
        }
    }
    assert_identical(&mut m, &mut c2, &acked);

    // Both die: refused before anything is written, once the set knows.
    r2.kill();
    poll_until(WAIT, || match m.produce(0, 7) {
        Err(e) if e.known_code() == Some(ErrorCode::SLAVE_NOT_AVAILABLE) => Some(()),
        Ok((SendStatus::FlushSlaveTimeout, _)) | Ok((SendStatus::SendOk, _)) => None,
        other => panic!("with both replicas dead: {other:?}"),
    });

    // A restarted replica catches up from the master's disk and rejoins.
    let mut r1 = Broker::start_in(&d1, &replica_config(&d1, p1, master.shared_port));
    poll_until(WAIT, || {
        tag += 1;
        all_ok(&send_round(&mut m, tag)).then_some(())
    });
    for (q, a) in acked.iter_mut().enumerate() {
        *a = m.stored(q as u32).0;
    }
    let mut c1 = Conn::connect(p1);
    assert_identical(&mut m, &mut c1, &acked);
    assert!(r1.stop().success(), "the replica stops cleanly");
}
