//! Reading records of the broker's own system queues (`%SYS%offsets`, `%SYS%schedule`,
//! `%SYS%half`, `%SYS%txn-op`): the one reader the group coordinator, the schedule task and
//! the transaction table use to rebuild their state and to fetch what they stored.

use super::*;
use crate::format::batch::BatchView;
use crate::storage::StorageError;

impl<L: ShardLog> Shard<L> {
    /// Calls `each(offset, store_timestamp_ms, key, body)` for every record of the system
    /// `queue` in `[from, to)`, in offset order. A damaged batch is skipped and logged (its
    /// records are lost, later ones still count); records retention deleted are passed.
    pub(super) async fn read_system_records(
        &self,
        queue: QueueKey,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64, i64, &[u8], &[u8]),
    ) -> Result<(), BrokerError> {
        let mut offset = from;
        while offset < to {
            // One record wanted: the batch holding it is enough.
            let max_bytes = if to - offset == 1 { 1 } else { 1 << 20 };
            let batches = match self.log.read(queue, offset, max_bytes).await {
                Ok(b) => b,
                Err(StorageError::CorruptBatch { next_offset, .. }) => {
                    tracing::warn!(shard = %self.id, %queue, offset, "a damaged system batch is skipped");
                    offset = next_offset.get();
                    continue;
                }
                Err(StorageError::OffsetOutOfRange { min, .. }) if min.get() > offset => {
                    tracing::warn!(shard = %self.id, %queue, offset, "system records deleted by retention are passed");
                    offset = min.get();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if batches.is_empty() {
                break;
            }
            for buf in &batches {
                let view = BatchView::parse(buf, buf.len())
                    .map_err(|e| BrokerError::new(ErrorCode::INTERNAL, e.to_string()))?;
                let base = view.header.stamp.base_offset;
                let stored_ms = view.header.stamp.store_timestamp_ms;
                for (i, record) in view.records().enumerate() {
                    let record =
                        record.map_err(|e| BrokerError::new(ErrorCode::INTERNAL, e.to_string()))?;
                    let at = base + i as u64;
                    if at >= offset && at < to {
                        each(at, stored_ms, record.key, record.body);
                    }
                }
                offset = offset.max(view.header.next_offset());
            }
        }
        Ok(())
    }
}
