//! The client library: producer, pull consumer and admin client for the native protocol.
//!
//! It runs on ordinary threads with blocking sockets, so it needs no async runtime and works
//! from a plain `fn main`; async callers can `.await` the [`SendHandle`]s `send_async` returns
//! and the [`Pending`] handles of batch sends (they are std futures, woken from the producer's
//! worker thread). A `SendHandle` costs no allocation, lock or wake-up per message: all the
//! handles of one batch share its one completion ([`send_handle`]).
//!
//! ```no_run
//! use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};
//! use std::time::Duration;
//!
//! fn main() -> Result<(), ringmq::client::ClientError> {
//!     let client = Client::connect("127.0.0.1:10911")?;
//!     client.admin().create_topic("orders", 8)?;
//!     let producer = client.producer(ProducerConfig {
//!         selector: QueueSelector::KeyHash, // same key -> same queue -> ordered
//!         ..Default::default()
//!     })?;
//!     let r = producer.send(Message::new("orders", "created").with_key("order-42"))?;
//!     let consumer = client.consumer();
//!     let got = consumer.pull("orders", r.queue_id, r.queue_offset, Duration::from_secs(1))?;
//!     assert_eq!(got.messages[0].body, &b"created"[..]);
//!     producer.close()
//! }
//! ```
//!
//! Messages without a selector of their own go round the topic's queues a batch at a time
//! ([`QueueSelector::RoundRobinPerBatch`], the default: one queue's batch fills, then the next
//! queue's), as RocketMQ's producer does with `autoBatch` and Kafka's for records without a
//! key. [`QueueSelector::RoundRobin`] puts each message on the next queue instead; with
//! thousands of queues that leaves a few messages in each batch and costs about half the
//! throughput (BENCHMARKS.md, many-queues).
//!
//! To read a queue in order, [`PullConsumer::stream`] gives a [`QueueReader`]: batches of
//! borrowed messages, the next fetch already in flight while the caller reads one, fetch
//! buffers reused:
//!
//! ```no_run
//! # use ringmq::client::Client;
//! # use std::time::Duration;
//! # fn main() -> Result<(), ringmq::client::ClientError> {
//! # let client = Client::connect("127.0.0.1:10911")?;
//! let mut reader = client.consumer().stream("orders", 0, 0);
//! while let Some(batch) = reader.next_batch(Duration::from_secs(1))? {
//!     for m in batch.messages() {
//!         println!("{} {:?}", m.offset, m.body());
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The messages `pull` returns and a push consumer's listener gets ([`ConsumedMessage`]) share
//! the buffer their fetch arrived in (`bytes::Bytes` fields, a numeric [`MessageId`]): no
//! allocation or copy per message. A message kept keeps its part of that fetch alive; copy
//! the fields out to keep a few small messages of a large fetch.
//!
//! Threads: each connection has one reader thread; each producer one worker thread. Shared
//! state (routes, connections, waiters) sits behind std mutexes: this is the client, not the
//! broker's data path. Every buffer is bounded (in-flight requests per connection, messages
//! and bytes per producer).
//!
//! Routing is shard-aware ([`router`]): requests for a queue go straight to the port of the
//! shard that owns it.

pub mod accumulator;
pub mod admin;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod message;
pub mod message_query;
pub mod multi_reader;
pub mod pending;
pub mod process_queue;
pub mod producer;
pub mod push_consumer;
pub mod queue_reader;
pub mod retry;
pub mod router;
pub mod scheduled;
#[cfg(test)]
pub(crate) mod scripted_broker;
pub mod selector;
pub mod send_handle;
pub mod sequencer;
pub(crate) mod staging;
pub mod trace;
pub mod transaction;

use std::sync::Arc;

/// When a scheduled send is delivered: a delay level or a Unix time in ms.
pub use crate::protocol::message::Delivery;
pub use crate::protocol::MessageId;
pub use admin::AdminClient;
pub use consumer::{MessageView, PullConsumer, PullResult, PullView};
pub use error::ClientError;
pub use group::{GroupClient, GroupDescription, QueueLag};
pub use message::{ConsumedMessage, Message};
pub use multi_reader::{MultiQueueReader, ReaderWaker};
pub use pending::Pending;
pub use producer::{Producer, ProducerConfig, SendBatchResult, SendResult};
pub use push_consumer::{
    Buffered, ConsumeContext, ConsumeFrom, ConsumeMode, ConsumeStatus, MessageListener,
    MessageModel, PushConsumer, PushConsumerConfig,
};
pub use queue_reader::QueueReader;
pub use router::{ClientOptions, Router};
pub use scheduled::SCHEDULE_TOPIC;
pub use selector::QueueSelector;
pub use send_handle::SendHandle;
pub use transaction::{
    CheckedHalf, HalfMessage, TransactionProducer, TransactionProducerConfig, TransactionResult,
    TransactionState,
};

/// Entry point: one per broker; cheap to clone.
#[derive(Clone)]
pub struct Client {
    router: Arc<Router>,
}

impl Client {
    /// `address` is the broker's shared port, "host:port".
    pub fn connect(address: &str) -> Result<Client, ClientError> {
        Client::with_options(address, ClientOptions::default())
    }

    pub fn with_options(address: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let router = Router::new(address, options)?;
        router.bootstrap()?;
        Ok(Client { router })
    }

    /// A client of the same broker with its own connections, so its requests never queue
    /// behind this one's (a push consumer's heartbeats behind a busy producer's sends).
    pub fn detached(&self) -> Client {
        Client { router: self.router.detached() }
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Consumer-group calls (membership, committed offsets, locks, reset, describe).
    pub fn groups(&self) -> GroupClient {
        GroupClient::new(self.router.clone())
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.router.clone())
    }

    pub fn producer(&self, config: ProducerConfig) -> Result<Producer, ClientError> {
        Producer::new(self.router.clone(), config)
    }

    /// A transactional producer of `config.group`; `check` answers the broker's check-backs
    /// of undecided halves ([`transaction`]).
    pub fn transaction_producer(
        &self,
        config: TransactionProducerConfig,
        check: impl Fn(&CheckedHalf) -> TransactionState + Send + Sync + 'static,
    ) -> Result<TransactionProducer, ClientError> {
        TransactionProducer::new(self.router.clone(), config, check)
    }

    pub fn consumer(&self) -> PullConsumer {
        PullConsumer::new(self.router.clone())
    }
}
