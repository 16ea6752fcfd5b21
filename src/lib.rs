//! ringmq: a thread-per-core message broker on io_uring.
//!
//! - [`format`](mod@format): the one record-batch format used on the wire and on disk.
//! - [`storage`]: the per-shard commit log (direct I/O, group commit, per-queue indexes,
//!   recovery, retention).
//! - [`protocol`]: the native wire protocol (frames, requests, responses, error codes;
//!   `docs/protocol.md`).
//! - [`broker`]: the broker: shards, listeners, request routing over the shard mesh, topic
//!   metadata, long-poll, startup and shutdown.
//! - [`group`]: consumer groups: membership, offsets, rebalance allocation, queue locks.
//! - [`client`]: producer, pull consumer and admin client (std threads, usable from `fn main`).
//! - [`schedule`]: scheduled delivery: delay levels and the timer wheel (pure).
//! - [`tune`]: `ringmq tune`, the OS/config checker and the tuning profiles in tuning/.
//! - [`runtime`]: the thin wrapper around glommio; the rest of the crate names glommio types only
//!   through it.
//!
//! `../shared/DESIGN.md` (copied into `docs/design.md`) describes the architecture.

pub mod broker;
pub mod client;
pub mod compat;
pub mod format;
pub mod group;
pub mod metrics;
pub mod protocol;
pub mod replication;
pub mod runtime;
pub mod schedule;
pub mod storage;
pub mod transaction;
pub mod tune;
