//! The broker: shards, their listeners and connections, request routing between shards,
//! topic metadata, long-poll fetches, startup and shutdown.
//!
//! Thread model: the main thread only starts and stops shards ([`server::run`]). Each shard is
//! a glommio executor (one thread, optionally pinned) that owns, without sharing: its
//! [`shard_log::ShardLog`] (the commit log in `<data_dir>/shard-<n>/`), its copy of the
//! [`topics::TopicTable`], its [`long_poll::LongPoll`] waiters and its counters. Shards share
//! only the immutable [`config::Config`] (an `Arc`) and talk through bounded channels
//! ([`mesh`]).
//!
//! Request path: a connection on any shard decodes a request; a queue request whose owner
//! ([`routing::owner_shard`]) is another shard is forwarded over the data mesh and the reply
//! comes back on a oneshot; shard-aware clients connect to the owner's own port so the hot path
//! stays on one core. Topic changes run on shard 0, are persisted ([`metadata_store`]) and
//! broadcast over the control mesh before they are acknowledged.
//!
//! The broker never decodes records: it validates and appends producer batches as they are
//! (the log stamps them) and serves fetches with the stored bytes, written to the socket from
//! the log's buffers when the fetch is served on the connection's own shard; tag filters are
//! applied per batch with the header's tag summary. Control-plane work runs in a low-share
//! task queue so it cannot stall produce and fetch.
//!
//! Bounds: frame size (requests and responses), in-flight requests per connection,
//! connections per shard and per client IP, the time a frame may take to arrive and a
//! connection may stay idle, mesh channel capacity, forwarded requests in flight (a forwarded
//! long-poll holds one of those for its wait), long-poll waiters per queue, fetch size and
//! tag-filter scan length.
//!
//! The files: `config` (the TOML), `data_dir_lock` (one broker per data dir), `topics` (table rules), `routing` (placement),
//! `metadata_store` (topics.json), `shard_log` (the seam to storage), `log_backend` (which
//! log), `long_poll`, `mesh`, `shard` (request handling), `read_deadline` (slow-frame and idle timeouts),
//! `forwarding` (mesh receivers), `hangup` (a connection's long polls end with it), `connection`, `listener`, `shutdown`, `server`, `error`.

pub mod config;
pub mod connection;
pub mod data_dir_lock;
pub mod error;
pub mod fetch_chain;
pub mod forwarding;
pub mod hangup;
pub mod idempotence;
pub mod listener;
pub mod log_backend;
pub mod long_poll;
pub mod mesh;
pub mod metadata_store;
pub mod producer_ids;
pub mod read_deadline;
pub mod replication_peer;
mod replication_start;
pub mod routing;
pub mod server;
pub mod shard;
pub mod shard_log;
pub mod shutdown;
pub mod topics;

pub use config::{BrokerConfig, Config};
pub use server::run;
