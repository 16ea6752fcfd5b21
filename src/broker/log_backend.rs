//! Which [`ShardLog`] the broker runs on, and how a shard opens it.

use std::rc::Rc;

use super::memory_log::MemoryLog;
use crate::storage::StorageConfig;

/// The log each shard runs on.
pub type Log = MemoryLog;

/// Opens this shard's log in `config.dir` (on the shard's executor).
pub async fn open(config: StorageConfig) -> Result<Rc<Log>, String> {
    Ok(Rc::new(MemoryLog::new(config.max_batch_bytes)))
}
