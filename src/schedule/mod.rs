//! Scheduled delivery, pure parts (DESIGN.md section 6): the delay-level table and delivery
//! times ([`levels`]) and the hierarchical timer wheel over an append-only timer log
//! ([`wheel`]). No I/O and no clock reads: times are passed in. The broker's schedule task
//! (`broker/shard/schedule.rs`) does the I/O around them.

pub mod dedup;
pub mod entry;
pub mod levels;
pub mod pending;
pub mod retry;
pub mod wheel;
