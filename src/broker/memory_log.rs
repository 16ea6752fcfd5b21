//! An in-memory [`ShardLog`] for broker tests: same validation and stamping as the commit
//! log, no durability. The `ringmq` binary never uses it.

use std::cell::RefCell;
use std::collections::HashMap;

use super::shard_log::{AppendOutcome, ShardLog};
use crate::format::batch::{peek_length, stamp};
use crate::format::{BatchView, Stamp};
use crate::storage::file::ReadBuf;
use crate::storage::{QueueKey, QueueOffsets, StorageError};

/// Stored batches per queue: `(base_offset, next_offset, store_ms, bytes)`.
type Stored = Vec<(u64, u64, i64, ReadBuf)>;

pub struct MemoryLog {
    max_batch_bytes: usize,
    queues: RefCell<HashMap<QueueKey, Stored>>,
    closed: std::cell::Cell<bool>,
}

impl MemoryLog {
    pub fn new(max_batch_bytes: usize) -> Self {
        MemoryLog {
            max_batch_bytes,
            queues: RefCell::new(HashMap::new()),
            closed: std::cell::Cell::new(false),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ShardLog for MemoryLog {
    async fn append(&self, queue: QueueKey, batch: &[u8]) -> Result<AppendOutcome, StorageError> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        if let Some(len) = peek_length(batch) {
            if len as usize > self.max_batch_bytes {
                return Err(StorageError::BatchTooLarge {
                    size: len as usize,
                    max: self.max_batch_bytes,
                });
            }
        }
        let view = BatchView::parse(batch, self.max_batch_bytes)?;
        let count = view.header.record_count;
        let mut queues = self.queues.borrow_mut();
        let list = queues.entry(queue).or_default();
        let base = list.last().map(|b| b.1).unwrap_or(0);
        let store_ms = now_ms();
        let mut bytes = view.as_bytes().to_vec();
        stamp(
            &mut bytes,
            &Stamp {
                topic_id: queue.topic_id,
                queue_id: queue.queue_id,
                base_offset: base,
                store_timestamp_ms: store_ms,
            },
        );
        list.push((base, base + u64::from(count), store_ms, ReadBuf::from_vec(bytes)));
        Ok(AppendOutcome {
            base_offset: base,
            record_count: count,
            store_timestamp_ms: store_ms,
            flush_timed_out: false,
        })
    }

    async fn read(
        &self,
        queue: QueueKey,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<ReadBuf>, StorageError> {
        let o = self.offsets(queue);
        if offset < o.min || offset > o.next {
            return Err(StorageError::OffsetOutOfRange {
                queue,
                requested: offset,
                min: o.min,
                next: o.next,
            });
        }
        let queues = self.queues.borrow();
        let Some(list) = queues.get(&queue) else { return Ok(Vec::new()) };
        let start = list.partition_point(|b| b.1 <= offset);
        let mut out = Vec::new();
        let mut total = 0;
        for b in &list[start..] {
            if !out.is_empty() && total + b.3.len() > max_bytes {
                break;
            }
            total += b.3.len();
            out.push(b.3.clone());
        }
        Ok(out)
    }

    fn offsets(&self, queue: QueueKey) -> QueueOffsets {
        let queues = self.queues.borrow();
        match queues.get(&queue) {
            Some(list) if !list.is_empty() => {
                QueueOffsets { min: list[0].0, next: list[list.len() - 1].1 }
            }
            _ => QueueOffsets::default(),
        }
    }

    fn offset_for_timestamp(&self, queue: QueueKey, timestamp_ms: i64) -> u64 {
        let queues = self.queues.borrow();
        let next = self.offsets(queue).next;
        queues
            .get(&queue)
            .and_then(|l| l.iter().find(|b| b.2 >= timestamp_ms).map(|b| b.0))
            .unwrap_or(next)
    }

    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.closed.set(true);
        Ok(())
    }
}
