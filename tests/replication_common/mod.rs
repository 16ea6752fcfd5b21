//! What the replication tests on the real binary share: a raw native-protocol connection
//! (`Conn`), a producer that survives a killed broker (`Sender`), the master and replica
//! configs (two shards, sync flush), and comparisons of what brokers store.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use crate::broker_common::{config, poll_until, Raw};
use ringmq::format::{BatchBuilder, Record};
use ringmq::protocol::{ErrorCode, ErrorResponse, Request, Response, SendStatus, SharedBytes};

pub const TOPIC: &str = "repl";
pub const QUEUES: u32 = 4;
pub const SHARDS: usize = 2;
pub const WAIT: Duration = Duration::from_secs(60);

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-repl").tempdir().unwrap()
}

pub struct Conn {
    raw: Raw,
    next_id: u32,
}

impl Conn {
    pub fn connect(port: u16) -> Conn {
        Conn { raw: Raw::connect(port), next_id: 1 }
    }

    pub fn call(&mut self, request: &Request) -> Result<Response, ErrorResponse> {
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

    pub fn produce(&mut self, queue_id: u32, tag: u64) -> Result<(SendStatus, u64), ErrorResponse> {
        self.produce_as(queue_id, tag, -1, -1)
    }

    /// A producer id from INIT_PRODUCER.
    pub fn init_producer(&mut self) -> i64 {
        match self.call(&Request::InitProducer).unwrap() {
            Response::InitProducer { producer_id } => producer_id,
            other => panic!("INIT_PRODUCER answered {other:?}"),
        }
    }

    /// [`Conn::produce`] as an idempotent producer (`-1, -1`: not idempotent).
    pub fn produce_as(
        &mut self,
        queue_id: u32,
        tag: u64,
        producer_id: i64,
        base_sequence: i32,
    ) -> Result<(SendStatus, u64), ErrorResponse> {
        let mut b = BatchBuilder::new(1 << 20);
        // The key names the hundreds of the round (`send_round`): "k1" for rounds 100..199.
        let key = format!("k{}", tag / 10_000);
        for i in 0..3 {
            let body = format!("{tag}:{i}:{}", "x".repeat(100));
            b.push(&Record {
                key: key.as_bytes(),
                tag: b"T",
                properties: &[],
                body: body.as_bytes(),
                timestamp_ms: 1_000,
            })
            .unwrap();
        }
        let batch = SharedBytes::from(b.finish(producer_id, base_sequence));
        let request = Request::Produce { topic: TOPIC.into(), queue_id, flags: 0, batch };
        match self.call(&request)? {
            Response::Produce { status, base_offset, .. } => Ok((status, base_offset)),
            other => panic!("produce answered {other:?}"),
        }
    }

    /// Every stored batch of `queue_id` readable here, concatenated as the broker stores them.
    pub fn stored(&mut self, queue_id: u32) -> (u64, Vec<u8>) {
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

    pub fn topics(&mut self) -> usize {
        match self.call(&Request::ListTopics).unwrap() {
            Response::ListTopics { topics } => topics.len(),
            other => panic!("list answered {other:?}"),
        }
    }
}

/// Creates `TOPIC` on the master at `port`. A sync master refuses topic changes with
/// SLAVE_NOT_AVAILABLE until its replicas joined the in-sync set (as it refuses sends): asks
/// again until then.
pub fn create_topic(port: u16) {
    let mut m = Conn::connect(port);
    let request = Request::CreateTopic { topic: TOPIC.into(), queue_count: QUEUES };
    poll_until(WAIT, || match m.call(&request) {
        Ok(Response::CreateTopic { .. }) => Some(()),
        Err(e) if e.known_code() == Some(ErrorCode::SLAVE_NOT_AVAILABLE) => None,
        other => panic!("create topic: {other:?}"),
    });
}

pub fn master_config(dir: &Path, replicas: &[u16], mode: &str) -> String {
    let list: Vec<String> = replicas.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "{}[replication]\nrole = \"master\"\nreplication = \"{mode}\"\nreplicas = [{}]\n\
         min_in_sync_replicas = 2\nsync_replication_timeout_ms = 10000\nreplica_lag_max_ms = 3000\n",
        config(dir, SHARDS, "", "flush_mode = \"sync\""),
        list.join(", ")
    )
}

pub fn replica_config(dir: &Path, port: u16, master: u16) -> String {
    format!(
        "{}[replication]\nrole = \"replica\"\nmaster = \"127.0.0.1:{master}\"\n",
        config(dir, SHARDS, &format!("port = {port}"), "flush_mode = \"sync\"")
    )
}

/// Sends to every queue until one round is all SEND_OK; returns the acknowledged offsets.
pub fn send_round(conn: &mut Conn, tag: u64) -> Vec<Result<(SendStatus, u64), ErrorResponse>> {
    (0..QUEUES).map(|q| conn.produce(q, tag * 100 + u64::from(q))).collect()
}

pub fn all_ok(round: &[Result<(SendStatus, u64), ErrorResponse>]) -> bool {
    round.iter().all(|r| matches!(r, Ok((SendStatus::SendOk, _))))
}

/// The replica holds, byte for byte, what the master holds up to `acked[q]` on each queue.
pub fn assert_identical(master: &mut Conn, replica: &mut Conn, acked: &[u64]) {
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

/// A produce-only client that never panics on a broken connection (the broker is killed).
pub struct Sender {
    pub port: u16,
    pub conn: Option<Conn>,
}

impl Sender {
    pub fn send(&mut self, queue_id: u32, tag: u64) -> Option<(SendStatus, u64)> {
        if self.conn.is_none() {
            self.conn = Some(try_connect(self.port)?);
        }
        let conn = self.conn.as_mut().unwrap();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.produce(queue_id, tag)))
        {
            Ok(Ok(r)) => Some(r),
            Ok(Err(_)) => None,
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }
}

/// A connection, or None while nothing listens on `port` (a killed broker).
pub fn try_connect(port: u16) -> Option<Conn> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    std::panic::catch_unwind(|| Conn::connect(port)).ok()
}

/// What `port` stores of every queue, or None if it cannot answer now.
pub fn try_stored(port: u16) -> Option<Vec<Vec<u8>>> {
    let mut c = try_connect(port)?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (0..QUEUES).map(|q| c.stored(q).1).collect()
    }))
    .ok()
}

/// Record 0's tag of every batch of the queue, by its base offset.
pub fn tags_by_offset(bytes: &[u8]) -> std::collections::BTreeMap<u64, u64> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let v = ringmq::format::BatchView::parse(rest, 1 << 24).expect("stored batch parses");
        v.verify_stamp().expect("stamp crc");
        let r = v.records().next().unwrap().unwrap();
        let tag = std::str::from_utf8(r.body).unwrap().split(':').next().unwrap().parse().unwrap();
        out.insert(v.header.stamp.base_offset, tag);
        rest = &rest[v.as_bytes().len()..];
    }
    out
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else if e.file_name() != "broker.lock" {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
