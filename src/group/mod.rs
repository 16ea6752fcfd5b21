//! Consumer groups (`../shared/DESIGN.md` section 5): membership, committed offsets, rebalance
//! allocation and queue locks. Each part is a pure state machine (inputs in, decisions out, no
//! I/O, time passed in), tested without sockets or sleeps; the broker's and the client's tasks
//! do the I/O around them.
//!
//! - [`allocate`]: which queues one member consumes, computed the same way by every member.
//! - [`membership`]: the coordinator's members per group, sessions and versions.
//! - [`locks`]: queue locks with leases, for orderly consumption.
//! - [`offsets`]: committed offsets, their `%SYS%offsets` record codec, snapshots and replay.
//! - [`retention`]: when the offsets of a group without members are forgotten.
//! - [`coordinator`]: one shard's coordinator state (the parts above together) and when to
//!   snapshot.
pub mod allocate;
pub mod coordinator;
pub mod locks;
pub mod membership;
pub mod offsets;
pub mod retention;
