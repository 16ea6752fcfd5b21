//! The per-shard commit log.
//!
//! (Module essay is completed with the commit log itself.)

pub mod config;
pub mod dma_dir;
pub mod error;
pub mod file;
pub mod sim_dir;
pub mod types;

pub use config::{FlushMode, IoMode, StorageConfig};
pub use error::StorageError;
pub use types::{LogPosition, QueueKey, QueueOffsets};
