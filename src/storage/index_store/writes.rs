//! The index's writes: write-back of pending entries, the filesystem sync that makes them
//! durable, retention of whole files. Callers hold [`IndexStore::lock`] (the gate that
//! serializes write-back, checkpoints and retention).

use super::*;

/// Entries one index write carries at most (64 KiB): the write's buffer is a copy of them.
const MAX_WRITE_ENTRIES: u64 = 2048;

impl<F: LogFile> IndexStore<F> {
    /// Serializes write-back, checkpoints and retention.
    pub async fn lock(&self) -> glommio::sync::Permit<'_> {
        self.gate.acquire_permit(1).await.expect("the index gate is never closed")
    }

    /// Writes the pending entries of batches ending at or before `durable`. Caller holds
    /// [`Self::lock`]. On a failed write the entries not yet written stay pending.
    pub async fn writeback<D: LogDir<File = F>>(
        &self,
        dir: &D,
        durable: LogPosition,
    ) -> Result<(), WritebackError> {
        self.writeback_live(dir, || durable).await
    }

    /// [`IndexStore::writeback`] with the durable end read again for each queue: a long
    /// write-back (thousands of queues) also writes the entries made durable while it runs,
    /// so each queue it reaches is written whole and its memory freed (a queue's pending
    /// entries keep their buffer until all are written).
    ///
    /// Up to [`INDEX_WRITE_CONCURRENCY`] queues are written at once (each queue's blocks in
    /// order, by one task): one queue at a time, a pass over 10,000 queues took about 4 s of
    /// waiting on single 4 KiB writes and file opens, during which appends could reach the
    /// bound of unwritten entries. After a failure no queue is started; those running finish.
    pub async fn writeback_live<D: LogDir<File = F>>(
        &self,
        dir: &D,
        durable: impl Fn() -> LogPosition,
    ) -> Result<(), WritebackError> {
        use futures::StreamExt;
        let todo: Vec<QueueKey> = {
            let end = durable();
            let queues = self.queues.borrow();
            queues.iter().filter(|(_, q)| q.writable_pending(end) > 0).map(|(k, _)| *k).collect()
        };
        let failed: RefCell<Option<WritebackError>> = RefCell::new(None);
        let (failed_ref, durable_ref) = (&failed, &durable);
        futures::stream::iter(todo)
            .for_each_concurrent(INDEX_WRITE_CONCURRENCY, |queue| async move {
                if failed_ref.borrow().is_some() {
                    return;
                }
                if let Err(e) = self.writeback_queue(dir, queue, durable_ref).await {
                    failed_ref.borrow_mut().get_or_insert(e);
                }
            })
            .await;
        match failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes `queue`'s pending entries of durable batches: writes of exactly their bytes, one
    /// per index file they fall in and per [`MAX_WRITE_ENTRIES`] (index files go through the
    /// page cache, which takes unaligned writes). Cached blocks they fall in get them too.
    ///
    /// It wrote a whole 4 KiB block per write: a queue with a few new entries in a block
    /// that already held others needed the block's earlier entries first, from the cache or
    /// read from the file, and with 10,000 queues the cache could not hold every queue's
    /// last block, so a write-back pass read about as many blocks as it wrote.
    async fn writeback_queue<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        durable: &impl Fn() -> LogPosition,
    ) -> Result<(), WritebackError> {
        use WritebackError::Write;
        loop {
            let (start, n, first) = match self.queues.borrow().get(&queue) {
                Some(q) => (q.written_entries, q.writable_pending(durable()), q.first_entry),
                None => (0, 0, 0),
            };
            if n == 0 {
                return Ok(());
            }
            let file = start / self.file_entries;
            let in_file = start % self.file_entries;
            let count = (n as u64).min(self.file_entries - in_file).min(MAX_WRITE_ENTRIES) as usize;
            let mut bytes = vec![0u8; count * ENTRY_BYTES];
            {
                let queues = self.queues.borrow();
                let q = queues.get(&queue).expect("queues are never removed");
                for (e, at) in q.pending.iter().take(count).zip(bytes.chunks_exact_mut(ENTRY_BYTES))
                {
                    e.encode(at);
                }
            }
            // The file exists if it holds a retained entry written before these (retention
            // deletes a file only once none of its entries is retained).
            let new_file = in_file == 0 || first >= start;
            let f = self.file(dir, queue, file, new_file).await.map_err(Write)?;
            // Into the cache first (the write takes the bytes): readers use a block's entries
            // only below the written count, which moves once the write succeeded, and a failed
            // write leaves these entries pending, to be written again with the same bytes.
            self.update_cached_blocks(queue, start, &bytes);
            let in_flight = WriteInFlight::start(self);
            let written = f.write_bytes_at(bytes, in_file * ENTRY_BYTES as u64).await;
            drop(in_flight);
            written.map_err(Write)?;
            if new_file {
                self.created_files.set(true);
            }
            self.unsynced.set(true);
            self.with_queue(queue, QueueOffset::ZERO, |q| q.mark_written(count));
            self.progress.notify();
        }
    }

    /// Copies entries `[start, start + bytes / 32)` of `queue` into the cached blocks holding
    /// them (a block not cached is read from its file when next needed).
    fn update_cached_blocks(&self, queue: QueueKey, start: u64, bytes: &[u8]) {
        let mut cache = self.cache.borrow_mut();
        let (mut n, mut rest) = (start, bytes);
        while !rest.is_empty() {
            let (block, slot) = (n / ENTRIES_PER_BLOCK, (n % ENTRIES_PER_BLOCK) as usize);
            let take = rest.len().min((ENTRIES_PER_BLOCK as usize - slot) * ENTRY_BYTES);
            let (head, tail) = rest.split_at(take);
            let at = slot * ENTRY_BYTES;
            cache.update(BlockKey { queue, block }, |b| b[at..at + take].copy_from_slice(head));
            n += (take / ENTRY_BYTES) as u64;
            rest = tail;
        }
    }

    /// Makes every entry written before it durable: one filesystem sync (`syncfs`) when files
    /// were written since the last, and a directory fsync when files were created. One call at
    /// a time (the log's checkpoint gate); write-backs may run meanwhile (what they write
    /// after the call began is left for the next).
    ///
    /// One fdatasync per written file made a checkpoint of 10,000 queues 10,000 syncs (32 at
    /// a time, each opening its file again when it was no longer open): 1.8-3.5 s, during
    /// which appends could reach the bound of unwritten entries and wait. On this machine's
    /// ext4, 10,000 fdatasyncs of 4 KiB O_DIRECT writes take 0.66-0.74 s one at a time and
    /// one syncfs after the same writes 12-63 ms (BENCHMARKS.md, "The index checkpoint
    /// syncs the filesystem once").
    pub async fn sync<D: LogDir<File = F>>(&self, dir: &D) -> io::Result<()> {
        if self.unsynced.replace(false) {
            dir.sync_filesystem().await?;
        }
        if self.created_files.replace(false) {
            dir.sync_dir().await?;
        }
        self.rebalance();
        Ok(())
    }

    /// Records that a checkpoint at `position` is durable.
    pub fn checkpointed(&self, position: LogPosition) {
        self.checkpoint_position.set(position);
    }

    /// Each queue's next offset counting only batches that end at or before `durable`: what
    /// retention records with the log start (see [`crate::storage::floors`]).
    pub fn durable_nexts(&self, durable: LogPosition) -> Vec<(QueueKey, QueueOffset)> {
        self.queues.borrow().iter().map(|(k, q)| (*k, q.visible_offsets(durable).next)).collect()
    }

    /// Retention: drops every entry of a batch below log position `start`. Returns the index
    /// files that now hold no retained entry; delete them (with [`Self::remove_files`]) only
    /// once the new floors are durable. [`Self::plan_drop`] then [`Self::apply_drop`] in one
    /// go: for recovery and tests, where nothing else runs meanwhile.
    pub async fn drop_before<D: LogDir<File = F>>(
        &self,
        dir: &D,
        start: LogPosition,
    ) -> Result<Vec<(QueueKey, u64)>, LookupError> {
        let plan = self.plan_drop(dir, start).await?;
        Ok(self.apply_drop(&plan))
    }

    /// Finds each queue's first entry at or above log position `start` (the boundary of
    /// [`Self::drop_before`]), reading the index but changing nothing, so the caller need not
    /// hold [`Self::lock`]: with 20,000 queues this reads a block of each, 1.3-3.7 s on a busy
    /// disk, and holding the gate throughout kept write-back and checkpoints waiting that long
    /// (BENCHMARKS.md, round 31). Entries below `start` never change (the queue's first ones
    /// move only by a drop, one at a time, and entries are added at the log's end, past
    /// `start`), so the plan stays right until [`Self::apply_drop`].
    ///
    /// Each queue's boundary is looked for from its first entry (`partition_from`),
    /// where retention finds it, and up to [`INDEX_WRITE_CONCURRENCY`] queues are looked at
    /// at once. One queue at a time with a binary search over each queue's entries, the first
    /// drop with 10,000 queues read about four blocks of each, waited 7 s on a disk busy with
    /// the log's writes, and the disk filled to DISK_FULL meanwhile (BENCHMARKS.md, round 29).
    /// After a failure no queue is started and the error is returned.
    pub async fn plan_drop<D: LogDir<File = F>>(
        &self,
        dir: &D,
        start: LogPosition,
    ) -> Result<DropPlan, LookupError> {
        use futures::StreamExt;
        let planned = RefCell::new(Vec::new());
        let failed: RefCell<Option<LookupError>> = RefCell::new(None);
        let (planned_ref, failed_ref) = (&planned, &failed);
        futures::stream::iter(self.queue_keys())
            .for_each_concurrent(INDEX_WRITE_CONCURRENCY, |queue| async move {
                if failed_ref.borrow().is_some() {
                    return;
                }
                match self.plan_queue_drop(dir, queue, start).await {
                    Ok(Some(step)) => planned_ref.borrow_mut().push(step),
                    Ok(None) => {}
                    Err(e) => {
                        failed_ref.borrow_mut().get_or_insert(e);
                    }
                }
            })
            .await;
        match failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(DropPlan { queues: planned.into_inner() }),
        }
    }

    /// [`Self::plan_drop`] of one queue: None when it has nothing below `start`.
    async fn plan_queue_drop<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        start: LogPosition,
    ) -> Result<Option<QueueDrop>, LookupError> {
        let (first, next, next_offset) = {
            let queues = self.queues.borrow();
            let q = &queues[&queue];
            (q.first_entry, q.next_entry(), q.next_offset)
        };
        if first == next || self.entry(dir, queue, first).await?.position >= start {
            return Ok(None);
        }
        let n = self.partition_from(dir, queue, first, next, |e| e.position < start).await?;
        // Entries added since `next` was read lie past `start`: the first of them has offset
        // `next_offset`.
        let min_offset = match n < next {
            true => self.entry(dir, queue, n).await?.base_offset,
            false => next_offset,
        };
        Ok(Some(QueueDrop { queue, first, to: n, min_offset }))
    }

    /// Drops the entries `plan` found below its log position, without I/O: the index files
    /// that now hold no retained entry. Caller holds [`Self::lock`] (a write-back in flight
    /// counts the queues' entries).
    pub fn apply_drop(&self, plan: &DropPlan) -> Vec<(QueueKey, u64)> {
        let mut files = Vec::new();
        for d in &plan.queues {
            let first = self.queues.borrow().get(&d.queue).map(|q| q.first_entry);
            // Only a drop moves a queue's first entry, one drop at a time.
            debug_assert_eq!(first, Some(d.first), "a queue's first entry moved during a drop");
            if first != Some(d.first) {
                continue;
            }
            self.with_queue(d.queue, QueueOffset::ZERO, |q| q.drop_before(d.to, d.min_offset));
            files.extend(
                (d.first / self.file_entries..d.to / self.file_entries).map(|f| (d.queue, f)),
            );
        }
        files
    }

    /// Deletes index files (missing ones are fine). Caller holds [`Self::lock`].
    pub async fn remove_files<D: LogDir<File = F>>(
        &self,
        dir: &D,
        files: &[(QueueKey, u64)],
    ) -> io::Result<()> {
        for &(queue, file) in files {
            self.files.borrow_mut().remove((queue, file));
            match dir.remove(&index_file_name(queue, file)).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.rebalance();
        Ok(())
    }
}

/// A write of entries in flight ([`IndexStore::block`] does not cache what it reads meanwhile):
/// counted from its start to its end, also when the write's future is dropped.
struct WriteInFlight<'a, F> {
    store: &'a IndexStore<F>,
}

impl<'a, F> WriteInFlight<'a, F> {
    fn start(store: &'a IndexStore<F>) -> Self {
        store.write_epoch.set(store.write_epoch.get() + 1);
        store.writes_in_flight.set(store.writes_in_flight.get() + 1);
        WriteInFlight { store }
    }
}

impl<F> Drop for WriteInFlight<'_, F> {
    fn drop(&mut self) {
        let s = self.store;
        s.writes_in_flight.set(s.writes_in_flight.get() - 1);
        s.write_epoch.set(s.write_epoch.get() + 1);
    }
}

/// What a drop of the entries below a log position will do ([`IndexStore::plan_drop`]): one
/// step for each queue with entries below it. Bounded by the queue count.
#[derive(Debug, Default)]
pub struct DropPlan {
    queues: Vec<QueueDrop>,
}

impl DropPlan {
    /// Queues with entries to drop.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

/// One queue's step of a [`DropPlan`]: its entries `first..to` go, and its offsets then start
/// at `min_offset`.
#[derive(Debug)]
struct QueueDrop {
    queue: QueueKey,
    first: u64,
    to: u64,
    min_offset: QueueOffset,
}
