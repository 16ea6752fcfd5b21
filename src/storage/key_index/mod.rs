//! The per-shard key index: find messages by key (RocketMQ's IndexFile idea).
//!
//! Every keyed message a shard stores gets an entry (hash of topic and key, queue, offset,
//! store time) in a file of hash slots and linked entries, so `ringmq message query --key K`
//! reads one slot and follows links instead of scanning the log. A message is indexed under
//! each space-separated word of its key (RocketMQ KEYS), under the original message id a
//! retried or dead-lettered copy carries (`ORIGIN_MESSAGE_ID`), and under a client-set
//! `UNIQ_KEY` property.
//!
//! - [`layout`]: the file format, the in-memory active file and the chain walk (pure).
//! - [`store`]: the files on disk: checkpoint, sealing, retention, queries.
//! - [`staged`]: the keys read from the log and not yet indexed (pure).
//!
//! The index follows the log instead of sitting on the append path: the shard's key-index
//! reader (`broker/shard/key_index.rs`) reads written batches in log order from memory, behind
//! the acknowledgements; its writer indexes them once durable and checkpoints its progress; at
//! start it re-indexes the log from its checkpoint. A query may therefore miss the last
//! moments of produce (by about the task's interval), never a message older than that.

/// RocketMQ's client-set unique message id property (`UNIQ_KEY`): a message carrying it is
/// indexed under its value too.
pub const PROPERTY_UNIQ_KEY: &str = "UNIQ_KEY";

pub mod layout;
pub mod staged;
pub mod store;

pub use layout::{key_hash, split_keys, Entry, Geometry, Walk};
pub use store::{Found, KeyIndex, KeyIndexSettings};
