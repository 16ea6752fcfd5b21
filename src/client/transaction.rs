//! The transactional producer (RocketMQ's `TransactionMQProducer`): a half message, the
//! application's local transaction, then commit or rollback; the broker checks back undecided
//! halves with the producer's check callback.
//!
//! ```no_run
//! use ringmq::client::{Client, Message, TransactionProducer, TransactionProducerConfig, TransactionState};
//! # fn main() -> Result<(), ringmq::client::ClientError> {
//! let client = Client::connect("127.0.0.1:10911")?;
//! let config = TransactionProducerConfig::new("orders-tx");
//! // Asked by the broker about a half whose outcome it never heard (a crash, an Unknown).
//! let producer = client.transaction_producer(config, |_check| TransactionState::Commit)?;
//! let r = producer.send_in_transaction(Message::new("orders", "paid"), |_half| {
//!     // ... write the order to the database ...
//!     TransactionState::Commit
//! })?;
//! assert_eq!(r.state, TransactionState::Commit);
//! producer.close();
//! # Ok(())
//! # }
//! ```
//!
//! Threads: `send_in_transaction` runs on the caller's thread (send the half, run the local
//! transaction, end it). One check thread per broker shard keeps a CHECK_TRANSACTIONS parked
//! there (the broker cannot call a client) and answers each half it returns with the check
//! callback's verdict; `Unknown` leaves the half to be checked again later (at most
//! `transaction.check_max` times, then the broker rolls it back). A callback that panics
//! counts as `Unknown`.
//!
//! Delivery: a committed half is delivered exactly once. A half whose produce reply was lost
//! is not resent (the broker would hold two); it is resolved by check-back.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::ClientError;
use super::message::Message;
use super::router::Router;
use super::selector::QueueSelector;
use crate::format::batch::BatchView;
use crate::format::BatchBuilder;
use crate::protocol::transaction::{
    EndAction, HalfInfo, TransactionCheck, TxnRequest, TxnResponse, PRODUCER_GROUP_PROPERTY,
};
use crate::protocol::{Request, Response, SendStatus};

type Result<T> = std::result::Result<T, ClientError>;

/// A local transaction's outcome, as the application reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    Commit,
    Rollback,
    /// Not known yet: the broker will check back.
    Unknown,
}

/// Settings of a [`TransactionProducer`].
#[derive(Clone)]
pub struct TransactionProducerConfig {
    /// The producer group: halves are checked back with any live producer of it.
    pub group: String,
    pub selector: QueueSelector,
    /// How long a parked check waits on the broker before it is sent again. Default 1 s
    /// (also how long `close` may wait for the check threads).
    pub check_wait: Duration,
    /// Halves asked about per check answer, at most. Default 16.
    pub max_checks: u32,
    /// Largest half batch. Default 4 MiB less what the broker adds to hold a half.
    pub max_batch_bytes: usize,
}

impl TransactionProducerConfig {
    pub fn new(group: impl Into<String>) -> Self {
        TransactionProducerConfig {
            group: group.into(),
            selector: QueueSelector::RoundRobin,
            check_wait: Duration::from_secs(1),
            max_checks: 16,
            max_batch_bytes: (4 << 20) - 1024,
        }
    }
}

/// A half the local transaction runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfMessage {
    pub transaction_id: u64,
    pub topic: String,
    pub queue_id: u32,
    pub message: Message,
}

/// A half the broker asks about: its messages as they were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedHalf {
    pub transaction_id: u64,
    pub topic: String,
    pub queue_id: u32,
    /// Checks of this half so far, this one included.
    pub checks: u32,
    pub messages: Vec<Message>,
}

/// What `send_in_transaction` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    pub transaction_id: u64,
    pub topic: String,
    pub queue_id: u32,
    /// The local transaction's verdict, as sent to the broker (`Unknown`: nothing sent).
    pub state: TransactionState,
    /// Commit: the queue offset the message was delivered at.
    pub queue_offset: Option<u64>,
    /// Whether the half (and the commit, if any) reached the configured durability.
    pub status: SendStatus,
}

type CheckFn = dyn Fn(&CheckedHalf) -> TransactionState + Send + Sync;

pub struct TransactionProducer {
    router: Arc<Router>,
    config: TransactionProducerConfig,
    producer_id: i64,
    sequence: AtomicI32,
    closed: Arc<AtomicBool>,
    checkers: Vec<JoinHandle<()>>,
}

fn unexpected(what: &str, r: &Response) -> ClientError {
    ClientError::Protocol(format!("{what} got a {:?} reply", r.api_key()))
}

impl TransactionProducer {
    /// Starts a producer of `config.group`; `check` answers the broker's check-backs.
    pub fn new(
        router: Arc<Router>,
        config: TransactionProducerConfig,
        check: impl Fn(&CheckedHalf) -> TransactionState + Send + Sync + 'static,
    ) -> Result<TransactionProducer> {
        if config.group.is_empty() || config.group.len() > 255 {
            return Err(ClientError::Invalid("a producer group has 1 to 255 bytes".into()));
        }
        let producer_id = match router.call_bootstrap(&Request::InitProducer)? {
            Response::InitProducer { producer_id } if producer_id >= 0 => producer_id,
            other => return Err(unexpected("INIT_PRODUCER", &other)),
        };
        let check: Arc<CheckFn> = Arc::new(check);
        let closed = Arc::new(AtomicBool::new(false));
        let shards = router.shard_ports()?.len().max(1);
        let mut checkers = Vec::with_capacity(shards);
        for shard in 0..shards {
            let (router, config, check, closed) =
                (router.clone(), config.clone(), check.clone(), closed.clone());
            let handle = std::thread::Builder::new()
                .name(format!("ringmq-txn-check-{shard}"))
                .spawn(move || check_loop(&router, &config, shard as u16, &*check, &closed))
                .map_err(|e| ClientError::Invalid(format!("cannot start a check thread: {e}")))?;
            checkers.push(handle);
        }
        Ok(TransactionProducer {
            router,
            config,
            producer_id,
            sequence: AtomicI32::new(0),
            closed,
            checkers,
        })
    }

    /// Sends `msg` as a half, runs `local` with it, then commits or rolls back as `local`
    /// says (`Unknown`: ends nothing; the broker checks back). An error after the half was
    /// stored leaves the half to check-back too.
    pub fn send_in_transaction(
        &self,
        msg: Message,
        local: impl FnOnce(&HalfMessage) -> TransactionState,
    ) -> Result<TransactionResult> {
        let queue_id = self.router.select_queue(&msg, &self.config.selector)?;
        let batch = self.half_batch(&msg)?;
        let conn = self.router.queue_connection(&msg.topic, queue_id)?;
        let request =
            Request::Produce { topic: msg.topic.clone(), queue_id, flags: 0, batch: batch.into() };
        let (transaction_id, half_status) =
            match conn.call(&request, self.router.options.request_timeout)? {
                Response::Produce { base_offset, status, .. } => (base_offset, status),
                other => return Err(unexpected("a half PRODUCE", &other)),
            };
        let half = HalfMessage { transaction_id, topic: msg.topic.clone(), queue_id, message: msg };
        let state = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| local(&half)))
            .unwrap_or(TransactionState::Unknown);
        let mut result = TransactionResult {
            transaction_id,
            topic: half.topic.clone(),
            queue_id,
            state,
            queue_offset: None,
            status: half_status,
        };
        let action = match state {
            TransactionState::Commit => EndAction::Commit,
            TransactionState::Rollback => EndAction::Rollback,
            TransactionState::Unknown => return Ok(result),
        };
        let (status, offset) =
            end(&self.router, &self.config.group, &half.topic, queue_id, transaction_id, action)?;
        if status != SendStatus::SendOk {
            result.status = status;
        }
        result.queue_offset = (action == EndAction::Commit).then_some(offset);
        Ok(result)
    }

    /// Ends transaction `transaction_id` on `topic`/`queue_id` (a half whose local
    /// transaction was `Unknown`, resolved later); `Unknown` ends nothing. Returns the
    /// delivered queue offset on commit.
    pub fn end(
        &self,
        topic: &str,
        queue_id: u32,
        transaction_id: u64,
        state: TransactionState,
    ) -> Result<Option<u64>> {
        let action = match state {
            TransactionState::Commit => EndAction::Commit,
            TransactionState::Rollback => EndAction::Rollback,
            TransactionState::Unknown => return Ok(None),
        };
        let (_, offset) =
            end(&self.router, &self.config.group, topic, queue_id, transaction_id, action)?;
        Ok((action == EndAction::Commit).then_some(offset))
    }

    fn half_batch(&self, msg: &Message) -> Result<Vec<u8>> {
        let mut b = BatchBuilder::new(self.config.max_batch_bytes);
        let mut with_group = msg.clone();
        with_group
            .properties
            .insert(0, (PRODUCER_GROUP_PROPERTY.to_vec(), self.config.group.clone().into_bytes()));
        let now = crate::storage::commit_log::now_ms();
        with_group.with_record(msg.timestamp_ms.unwrap_or(now), |r| b.push(r)).map_err(|e| {
            ClientError::Invalid(format!("the message does not fit in a half: {e}"))
        })?;
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        Ok(b.finish_transactional(self.producer_id, seq))
    }

    /// Stops the check threads (each within `check_wait` plus a reply's time).
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        for h in self.checkers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for TransactionProducer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ends a transaction; (status, delivered offset).
fn end(
    router: &Router,
    group: &str,
    topic: &str,
    queue_id: u32,
    transaction_id: u64,
    action: EndAction,
) -> Result<(SendStatus, u64)> {
    let conn = router.queue_connection(topic, queue_id)?;
    let request = Request::Transaction(TxnRequest::End {
        group: group.into(),
        topic: topic.into(),
        queue_id,
        transaction_id,
        action,
    });
    match conn.call(&request, router.options.request_timeout)? {
        Response::Transaction(TxnResponse::End { status, base_offset, .. }) => {
            Ok((status, base_offset))
        }
        other => Err(unexpected("END_TRANSACTION", &other)),
    }
}

/// Keeps a CHECK_TRANSACTIONS parked on `shard` and answers what it returns, until `closed`.
fn check_loop(
    router: &Router,
    config: &TransactionProducerConfig,
    shard: u16,
    check: &CheckFn,
    closed: &AtomicBool,
) {
    let wait_ms = config.check_wait.as_millis().min(u128::from(u32::MAX)) as u32;
    let request = Request::Transaction(TxnRequest::Check {
        group: config.group.clone(),
        shard,
        max_wait_ms: wait_ms,
        max_checks: config.max_checks,
    });
    while !closed.load(Ordering::Relaxed) {
        let reply = router.shard_ports().and_then(|ports| {
            let port = ports.get(usize::from(shard)).copied().ok_or_else(|| {
                ClientError::Invalid(format!("the broker has no shard {shard} any more"))
            })?;
            router
                .connection(port)?
                .call(&request, config.check_wait + router.options.request_timeout)
        });
        let checks = match reply {
            Ok(Response::Transaction(TxnResponse::Check { checks })) => checks,
            Ok(other) => {
                tracing::warn!("CHECK_TRANSACTIONS got a {:?} reply", other.api_key());
                std::thread::sleep(config.check_wait);
                continue;
            }
            Err(e) => {
                // The broker is restarting or unreachable: try again after a pause.
                tracing::debug!(shard, "check-back request failed: {e}");
                std::thread::sleep(config.check_wait);
                continue;
            }
        };
        for c in checks {
            answer(router, &config.group, check, c);
        }
    }
}

fn answer(router: &Router, group: &str, check: &CheckFn, c: TransactionCheck) {
    let half = CheckedHalf {
        transaction_id: c.transaction_id,
        topic: c.topic,
        queue_id: c.queue_id,
        checks: c.checks,
        messages: messages_of(&c.batch),
    };
    let state = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&half)))
        .unwrap_or(TransactionState::Unknown);
    let action = match state {
        TransactionState::Commit => EndAction::Commit,
        TransactionState::Rollback => EndAction::Rollback,
        TransactionState::Unknown => return,
    };
    if half.topic.is_empty() {
        return; // its topic was deleted: the broker rolls it back after its checks
    }
    if let Err(e) = end(router, group, &half.topic, half.queue_id, half.transaction_id, action) {
        tracing::warn!(
            transaction = half.transaction_id,
            "ending a checked transaction failed: {e}"
        );
    }
}

/// The messages of a half's batch as the producer sent them (the PGROUP property dropped).
fn messages_of(batch: &[u8]) -> Vec<Message> {
    let Ok(view) = BatchView::parse(batch, batch.len()) else { return Vec::new() };
    view.records()
        .filter_map(|r| r.ok())
        .map(|r| Message {
            topic: String::new(),
            key: r.key.to_vec(),
            tag: r.tag.to_vec(),
            properties: r
                .properties()
                .filter_map(|p| p.ok())
                .filter(|(n, _)| *n != PRODUCER_GROUP_PROPERTY)
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
            body: r.body.to_vec(),
            timestamp_ms: Some(r.timestamp_ms),
        })
        .collect()
}

/// Every shard's undecided halves (`ringmq txn list`), oldest first per shard: (shard, half).
pub fn list_undecided(router: &Router, max_per_shard: u32) -> Result<Vec<(u16, HalfInfo)>> {
    let ports = router.shard_ports()?;
    let mut out = Vec::new();
    for shard in 0..ports.len().max(1) as u16 {
        let request = Request::Transaction(TxnRequest::List { shard, max: max_per_shard });
        match router.call_bootstrap(&request)? {
            Response::Transaction(TxnResponse::List { halves }) => {
                out.extend(halves.into_iter().map(|h| (shard, h)));
            }
            other => return Err(unexpected("LIST_TRANSACTIONS", &other)),
        }
    }
    Ok(out)
}
