//! The production [`ShardLog`]: the storage engine's [`CommitLog`], one per shard in
//! `<data_dir>/shard-<n>/`.

use std::rc::Rc;

use super::shard_log::{AppendOutcome, Copied, OffsetRange, ShardLog};
use crate::replication::epoch_file;
use crate::replication::epochs::EpochHistory;
use crate::storage::commit_log::{Followed, FollowedBatch, PositionedBatch, Scanned, TailScan};
use crate::storage::file::LogDir;
use crate::storage::probe::LogMetrics;
use crate::storage::{
    AppendStatus, BatchLimit, CommitLog, LogPosition, QueueKey, QueueOffset, ReadBuf,
    StorageConfig, StorageError,
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
    async fn append_then<B: AsRef<[u8]>, T>(
        &self,
        queue: QueueKey,
        batch: B,
        limit: BatchLimit,
        copied: impl FnOnce(Copied) -> T,
    ) -> Result<(T, AppendOutcome), StorageError> {
        let a = CommitLog::append_within(self, queue, batch.as_ref(), limit).await?;
        // Copied into the log's chunk: release the caller's buffer before the durability wait.
        drop(batch);
        // Same poll as the copy's completion: no other task ran in between.
        let t = copied(Copied {
            base_offset: a.base_offset.get(),
            position: a.position.get(),
            bare: a.bare,
        });
        let status = self.commit(&a).await?;
        let outcome = AppendOutcome {
            base_offset: a.base_offset.get(),
            record_count: a.record_count,
            store_timestamp_ms: a.store_timestamp_ms,
            flush_timed_out: status == AppendStatus::FlushDiskTimeout,
            end: a.end.get(),
        };
        Ok((t, outcome))
    }

    async fn read(
        &self,
        queue: QueueKey,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<ReadBuf>, StorageError> {
        Ok(CommitLog::read(self, queue, QueueOffset::new(offset), max_bytes).await?.batches)
    }

    async fn read_many(
        &self,
        reads: &[(QueueKey, u64)],
        max_bytes: usize,
    ) -> Result<Vec<Result<Vec<ReadBuf>, StorageError>>, StorageError> {
        let reads: Vec<_> = reads.iter().map(|&(q, o)| (q, QueueOffset::new(o))).collect();
        CommitLog::read_many(self, &reads, max_bytes).await
    }

    fn offsets(&self, queue: QueueKey) -> OffsetRange {
        CommitLog::offsets(self, queue).into()
    }

    fn pin_retention(&self, queue: QueueKey, from: Option<u64>) {
        CommitLog::pin_retention(self, queue, from.map(QueueOffset::new))
    }

    fn pin_retention_once_durable(&self, queue: QueueKey, from: Option<u64>, durable_at: u64) {
        CommitLog::pin_retention_once_durable(
            self,
            queue,
            from.map(QueueOffset::new),
            LogPosition::new(durable_at),
        )
    }

    fn pin_retention_if_unpinned(&self, queue: QueueKey, from: u64) {
        CommitLog::pin_retention_if_unpinned(self, queue, QueueOffset::new(from))
    }

    fn take_retention_held(&self, queue: QueueKey) -> bool {
        CommitLog::take_retention_held(self, queue)
    }

    async fn offset_for_timestamp(
        &self,
        queue: QueueKey,
        timestamp_ms: i64,
    ) -> Result<u64, StorageError> {
        CommitLog::offset_for_timestamp(self, queue, timestamp_ms).await.map(QueueOffset::get)
    }

    fn visible_end(&self) -> u64 {
        CommitLog::visible_end(self).get()
    }

    fn last_store_timestamp_ms(&self) -> i64 {
        CommitLog::last_store_timestamp_ms(self)
    }

    async fn scan_tail(
        &self,
        max_bytes: u64,
        since_ms: i64,
        each: impl FnMut(Scanned<'_>),
    ) -> Result<TailScan, StorageError> {
        CommitLog::scan_tail(self, max_bytes, since_ms, each).await
    }

    async fn follow(
        &self,
        from: u64,
        max_bytes: u64,
        up_to: u64,
        mut each: impl FnMut(u64, &FollowedBatch<'_>),
    ) -> Result<Followed, StorageError> {
        let (from, up_to) = (LogPosition::new(from), LogPosition::new(up_to));
        CommitLog::follow(self, from, max_bytes, up_to, |p, b| each(p.get(), b)).await
    }

    fn oldest_position(&self) -> u64 {
        CommitLog::oldest_position(self).get()
    }

    async fn wait_visible(&self, end: u64) -> Result<(), StorageError> {
        if CommitLog::visible_end(self).get() >= end {
            return Ok(());
        }
        // Only sync mode gets here (async data is visible once appended): visible = durable.
        self.wait_durable(LogPosition::new(end), None).await.map(|_| ())
    }

    async fn commit_through(&self, end: u64) -> Result<bool, StorageError> {
        let status = CommitLog::commit_through(self, LogPosition::new(end)).await?;
        Ok(status == AppendStatus::Ok)
    }

    async fn flush(&self) -> Result<(), StorageError> {
        CommitLog::flush(self).await.map(|_| ())
    }

    async fn close(&self) -> Result<(), StorageError> {
        CommitLog::close(self).await
    }

    fn metrics(&self) -> LogMetrics {
        CommitLog::metrics(self)
    }

    fn append_end(&self) -> u64 {
        self.positions().0.get()
    }

    fn written_end(&self) -> u64 {
        CommitLog::written_end(self).get()
    }

    fn durable_end(&self) -> u64 {
        CommitLog::durable_end(self).get()
    }

    async fn read_batches_at(
        &self,
        from: u64,
        up_to: u64,
        max_bytes: usize,
    ) -> Result<(Vec<PositionedBatch>, u64), StorageError> {
        let (batches, next) = CommitLog::read_batches_at(
            self,
            LogPosition::new(from),
            LogPosition::new(up_to),
            max_bytes,
        )
        .await?;
        Ok((batches, next.get()))
    }

    async fn append_replicated(
        &self,
        position: u64,
        batch: &[u8],
    ) -> Result<Option<QueueKey>, StorageError> {
        let a = CommitLog::append_replicated(self, LogPosition::new(position), batch).await?;
        Ok((a.record_count > 0).then_some(a.queue))
    }

    fn set_read_cap(&self, cap: Option<u64>) {
        CommitLog::set_read_cap(self, cap.map(LogPosition::new))
    }

    fn set_epoch(&self, epoch: u32) {
        CommitLog::set_epoch(self, epoch)
    }

    async fn load_epochs(&self) -> Result<EpochHistory, StorageError> {
        epoch_file::load(self.dir(), LogPosition::MAX).await
    }

    async fn save_epochs(&self, history: &EpochHistory) -> Result<(), StorageError> {
        epoch_file::save(self.dir(), history).await
    }
}
