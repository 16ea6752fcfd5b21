//! The production [`ShardLog`]: the storage engine's [`CommitLog`], one per shard in
//! `<data_dir>/shard-<n>/`.

use std::rc::Rc;

use super::shard_log::{AppendOutcome, ShardLog};
use crate::storage::file::LogDir;
use crate::storage::{
    AppendStatus, CommitLog, QueueKey, QueueOffsets, ReadBuf, StorageConfig, StorageError,
};

/// The log each shard runs on.
pub type Log = CommitLog;

/// Opens (creating or recovering) this shard's log in `config.dir`, on the shard's executor.
pub async fn open(config: StorageConfig) -> Result<Rc<Log>, String> {
    let dir = config.dir.clone();
    CommitLog::open(config).await.map_err(|e| format!("{}: {e}", dir.display()))
}

/// Any commit log is a shard log: production runs it on real files, broker unit tests on the
/// simulated directory (the real log code either way, never a stand-in).
impl<D: LogDir + 'static> ShardLog for Rc<CommitLog<D>> {
    async fn append(&self, queue: QueueKey, batch: &[u8]) -> Result<AppendOutcome, StorageError> {
        let (a, status) = self.append_committed(queue, batch).await?;
        Ok(AppendOutcome {
            base_offset: a.base_offset,
            record_count: a.record_count,
            store_timestamp_ms: a.store_timestamp_ms,
            flush_timed_out: status == AppendStatus::FlushDiskTimeout,
        })
    }

    async fn read(
        &self,
        queue: QueueKey,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<ReadBuf>, StorageError> {
        Ok(CommitLog::read(self, queue, offset, max_bytes).await?.batches)
    }

    fn offsets(&self, queue: QueueKey) -> QueueOffsets {
        CommitLog::offsets(self, queue)
    }

    async fn offset_for_timestamp(
        &self,
        queue: QueueKey,
        timestamp_ms: i64,
    ) -> Result<u64, StorageError> {
        CommitLog::offset_for_timestamp(self, queue, timestamp_ms).await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        CommitLog::flush(self).await.map(|_| ())
    }

    async fn close(&self) -> Result<(), StorageError> {
        CommitLog::close(self).await
    }
}
