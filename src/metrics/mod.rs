//! Metrics: what the shards count, how a scrape gathers it, and the Prometheus `/metrics`
//! endpoint (DESIGN.md section 8).
//!
//! # Who owns what
//! Every counter and histogram is owned by one shard and written only by that shard's thread:
//! the shard's `Stats` counters and [`ShardProbe`] (produce/fetch latency, errors by code), and
//! its commit log's [`crate::storage::probe::LogProbe`] (group commits, fsync latency, chunk
//! pool waits) next to the caches' own hit counts. They are plain numbers in `RefCell`s: no
//! lock, no atomic, nothing another core writes, so counting costs an add on the data path.
//!
//! # How a scrape gathers them
//! The endpoint (`http.rs`, std threads, not on any shard) asks the [`Exporter`]
//! (`exporter.rs`), which sends each shard a query over a bounded channel and waits, with a
//! timeout, for the answers. A shard answers from its low-share control task queue with a
//! [`ShardSnapshot`], a copy (`snapshot.rs`); the exporter joins them into a
//! [`BrokerSnapshot`] (queue series, group lag from the coordinators' offsets and the owners'
//! queue ends, the series caps) and `exposition.rs` writes it in the Prometheus text format
//! with the `prometheus-client` crate. Values are therefore exact at the moment each shard
//! answered, never up to a publishing interval old.
//!
//! # What it promises
//! - A scrape never blocks a shard: queries wait in the shard's inbox until its control queue
//!   runs them, and answers are sent without waiting.
//! - A scrape answers within `[metrics] scrape_timeout_ms` even when a shard does not
//!   (`ringmq_shard_up` says which did).
//! - Output is bounded: per-shard series by the shard count, per-queue and per-group series by
//!   `max_queue_series` and `max_group_series` (`snapshot.rs`).
//! - A slow or hostile HTTP client cannot hang the endpoint or the broker (`http.rs`).

pub mod config;
pub mod exporter;
pub mod exposition;
pub mod histogram;
pub mod http;
pub mod probe;
pub mod snapshot;

pub use config::MetricsConfig;
pub use exporter::{Exporter, Inbox, QueryKind, ShardAnswer, ShardQuery};
pub use histogram::LatencyHistogram;
pub use probe::ShardProbe;
pub use snapshot::{
    BrokerSnapshot, GroupOffsetSample, QueueSample, ReplicaSample, ReplicationSample, SeriesLimits,
    ShardSnapshot,
};
