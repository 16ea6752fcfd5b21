//! The client's sequencer against the broker's sequence windows over a faulty simulated
//! network, without sockets or clocks: requests and replies are lost, duplicated, delayed
//! and reordered at random, sends time out. Whatever happens, once the network behaves again
//! every batch is acknowledged, stored exactly once, and stored in the order it was sent.
//!
//! The network may even deliver one request twice (TCP never does; resends are new
//! attempts), a harsher model than the real one. `SIM_TRACE=1` prints every delivery and
//! reply, to read a failing case.
//!
//! Out of the model on purpose: window expiry and eviction (documented limit: dedup covers
//! what the windows hold) and send deadlines (a batch that times out may be stored or not).

use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringmq::broker::idempotence::{SequenceWindows, Verdict};
use ringmq::client::sequencer::{
    generation, wire_epoch, QueueSequencer, ReplyKind, Resolution, SequencerConfig,
};
use ringmq::protocol::producer_id::WINDOW_BATCHES;
use ringmq::storage::QueueKey;
use ringmq::storage::{QueueId, TopicId};

const PID: i64 = 3 << 16;
const Q: QueueKey = QueueKey::new(TopicId::new(1), QueueId::new(0));

#[derive(Debug, Clone, Copy)]
struct Req {
    attempt: u64,
    epoch: u32,
    seq: i32,
    count: u32,
    batch: u32,
}

#[derive(Debug, Clone, Copy)]
struct Rep {
    attempt: u64,
    epoch: u32,
    seq: i32,
    kind: ReplyKind,
}

#[derive(Debug, Clone)]
enum Op {
    Push,
    Deliver(usize),
    Lose(usize),
    Duplicate(usize),
    Reply(usize),
    LoseReply(usize),
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Push),
        6 => any::<usize>().prop_map(Op::Deliver),
        1 => any::<usize>().prop_map(Op::Lose),
        1 => any::<usize>().prop_map(Op::Duplicate),
        5 => any::<usize>().prop_map(Op::Reply),
        1 => any::<usize>().prop_map(Op::LoseReply),
        2 => (0..300u16).prop_map(Op::Tick),
    ]
}

struct Sim {
    t0: Instant,
    now_ms: u64,
    client: QueueSequencer<u32>,
    broker: SequenceWindows,
    /// The queue: batch ids in offset order (one entry per record).
    log: Vec<u32>,
    requests: Vec<Req>,
    replies: Vec<Rep>,
    pushed: u32,
    acked: Vec<u32>,
}

fn count_of(batch: u32) -> u32 {
    1 + batch % 3
}

impl Sim {
    fn new() -> Self {
        Sim {
            t0: Instant::now(),
            now_ms: 0,
            client: QueueSequencer::new(SequencerConfig {
                max_in_flight: WINDOW_BATCHES,
                request_timeout: Duration::from_millis(100),
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_millis(40),
            }),
            broker: SequenceWindows::new(1000, u64::MAX / 2),
            log: Vec::new(),
            requests: Vec::new(),
            replies: Vec::new(),
            pushed: 0,
            acked: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    fn send(&mut self) {
        let now = self.now();
        while let Some(s) = self.client.next_send(now) {
            let batch = *s.batch;
            self.requests.push(Req {
                attempt: s.attempt,
                epoch: s.epoch,
                seq: s.base_sequence,
                count: count_of(batch),
                batch,
            });
        }
    }

    fn resolve(&mut self, rs: Vec<Resolution<u32>>) -> Result<(), TestCaseError> {
        for r in rs {
            match r {
                Resolution::Stored(b) => self.acked.push(b),
                Resolution::Failed(b, why) => {
                    prop_assert!(false, "batch {b} failed: {why:?}")
                }
            }
        }
        Ok(())
    }

    fn deliver(&mut self, r: Req) -> Result<(), TestCaseError> {
        // A generation of epochs is numbered under its own producer id (the next one, here).
        let base = PID + (i64::from(generation(r.epoch)) << 16);
        let pid = base | i64::from(wire_epoch(r.epoch));
        let verdict = self.broker.check(pid, Q, r.seq, r.count, self.now_ms);
        let kind = match verdict {
            Verdict::Append => {
                let at = ringmq::broker::idempotence::Stored {
                    base_offset: self.log.len() as u64,
                    store_timestamp_ms: 0,
                };
                self.log.extend(std::iter::repeat(r.batch).take(r.count as usize));
                self.broker.stored(pid, Q, r.seq, at);
                ReplyKind::Stored
            }
            Verdict::Duplicate(at) => {
                prop_assert_eq!(self.log[at.base_offset as usize], r.batch, "wrong offsets");
                ReplyKind::Stored
            }
            Verdict::OutOfOrder { .. } | Verdict::Fenced { .. } => ReplyKind::OutOfOrderSequence,
            Verdict::TooOld { .. } => ReplyKind::Fatal, // only a stale copy: ignored
            Verdict::InProgress | Verdict::Mismatch { .. } => {
                prop_assert!(false, "unexpected {verdict:?}");
                unreachable!()
            }
        };
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("deliver {r:?} -> {verdict:?}");
        }
        self.replies.push(Rep { attempt: r.attempt, epoch: r.epoch, seq: r.seq, kind });
        Ok(())
    }

    fn reply(&mut self, r: Rep) -> Result<(), TestCaseError> {
        let now = self.now();
        let rs = self.client.on_reply(r.attempt, r.epoch, r.seq, r.kind, now);
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("reply {r:?} -> {rs:?}");
        }
        self.resolve(rs)
    }

    fn tick(&mut self, ms: u64) -> Result<(), TestCaseError> {
        self.now_ms += ms;
        let now = self.now();
        let rs = self.client.poll(now);
        self.resolve(rs)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn every_batch_is_stored_once_in_send_order(ops in proptest::collection::vec(op(), 1..300)) {
        let mut sim = Sim::new();
        let far = Duration::from_secs(3600);
        for op in ops {
            match op {
                Op::Push => {
                    let b = sim.pushed;
                    sim.pushed += 1;
                    let deadline = sim.now() + far;
                    sim.client.push(b, count_of(b), deadline);
                }
                Op::Deliver(i) if !sim.requests.is_empty() => {
                    let r = sim.requests.remove(i % sim.requests.len());
                    sim.deliver(r)?;
                }
                Op::Lose(i) if !sim.requests.is_empty() => {
                    sim.requests.remove(i % sim.requests.len());
                }
                Op::Duplicate(i) if !sim.requests.is_empty() => {
                    let r = sim.requests[i % sim.requests.len()];
                    sim.requests.push(r);
                }
                Op::Reply(i) if !sim.replies.is_empty() => {
                    let r = sim.replies.remove(i % sim.replies.len());
                    sim.reply(r)?;
                }
                Op::LoseReply(i) if !sim.replies.is_empty() => {
                    sim.replies.remove(i % sim.replies.len());
                }
                Op::Tick(ms) => sim.tick(u64::from(ms))?,
                _ => {}
            }
            sim.send();
        }
        // The network behaves again: in-order delivery, nothing lost, time moves on.
        for _ in 0..200 {
            if sim.client.is_empty() && sim.requests.is_empty() && sim.replies.is_empty() {
                break;
            }
            sim.send();
            for r in std::mem::take(&mut sim.requests) {
                sim.deliver(r)?;
            }
            for r in std::mem::take(&mut sim.replies) {
                sim.reply(r)?;
            }
            sim.tick(50)?;
        }
        prop_assert!(sim.client.is_empty(), "{} batches never acknowledged", sim.client.len());
        let mut acked = sim.acked.clone();
        acked.sort_unstable();
        prop_assert_eq!(acked, (0..sim.pushed).collect::<Vec<_>>(), "every batch acknowledged once");
        let mut stored: Vec<u32> = sim.log.clone();
        stored.dedup();
        prop_assert_eq!(stored, (0..sim.pushed).collect::<Vec<_>>(), "stored once each, in send order");
    }
}
