//! The index's writes: write-back of pending entries, the filesystem sync that makes them
//! durable, retention of whole files. Callers hold [`IndexStore::lock`] (the gate that
//! serializes write-back, checkpoints and retention).

use super::*;

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

    /// Writes `queue`'s pending entries of durable batches, a block at a time.
    async fn writeback_queue<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        durable: &impl Fn() -> LogPosition,
    ) -> Result<(), WritebackError> {
        use WritebackError::Write;
        loop {
            let (start, n) = match self.queues.borrow().get(&queue) {
                Some(q) => (q.written_entries, q.writable_pending(durable())),
                None => (0, 0),
            };
            if n == 0 {
                return Ok(());
            }
            let block = start / ENTRIES_PER_BLOCK;
            let slot = start % ENTRIES_PER_BLOCK;
            let count = (n as u64).min(ENTRIES_PER_BLOCK - slot) as usize;
            // Earlier entries of this block that are still retained must be kept; entries
            // dropped by retention before they were written leave nothing to keep.
            let first = self.queues.borrow().get(&queue).map_or(0, |q| q.first_entry);
            let keep_earlier = slot > 0 && first < start;
            let mut bytes = if keep_earlier {
                self.block(dir, queue, block).await.map_err(Write)?.to_vec()
            } else {
                vec![0u8; BLOCK_BYTES]
            };
            {
                let queues = self.queues.borrow();
                let q = queues.get(&queue).expect("queues are never removed");
                for (k, e) in q.pending.iter().take(count).enumerate() {
                    let at = (slot as usize + k) * ENTRY_BYTES;
                    e.encode(&mut bytes[at..at + ENTRY_BYTES]);
                }
            }
            let (file, at) = self.file_of(block);
            // Without an earlier entry in this block, the file may not exist yet.
            let new_file = !keep_earlier;
            let f = self.file(dir, queue, file, new_file).await.map_err(Write)?;
            let mut buf = runtime::alloc_dma(BLOCK_BYTES);
            buf.as_bytes_mut()[..BLOCK_BYTES].copy_from_slice(&bytes);
            self.write_epoch.set(self.write_epoch.get() + 1);
            let written = f.write_at(Rc::new(buf), at).await;
            self.write_epoch.set(self.write_epoch.get() + 1);
            written.map_err(Write)?;
            if new_file {
                self.created_files.set(true);
            }
            self.unsynced.set(true);
            self.cache.borrow_mut().insert(BlockKey { queue, block }, Rc::new(bytes));
            self.with_queue(queue, QueueOffset::ZERO, |q| q.mark_written(count));
            self.progress.notify();
        }
    }

    /// Makes every written entry durable: one filesystem sync (`syncfs`) when files were
    /// written since the last, and a directory fsync when files were created. Caller holds
    /// [`Self::lock`].
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

    /// Retention: drops every entry of a batch below log position `start`. Returns the index
    /// files that now hold no retained entry; delete them (with [`Self::remove_files`]) only
    /// once the new floors are durable. Caller holds [`Self::lock`].
    pub async fn drop_before<D: LogDir<File = F>>(
        &self,
        dir: &D,
        start: LogPosition,
    ) -> Result<Vec<(QueueKey, u64)>, LookupError> {
        let mut doomed = Vec::new();
        for queue in self.queue_keys() {
            let (first, next, next_offset) = {
                let queues = self.queues.borrow();
                let q = &queues[&queue];
                (q.first_entry, q.next_entry(), q.next_offset)
            };
            if first == next || self.entry(dir, queue, first).await?.position >= start {
                continue;
            }
            let n = self.partition(dir, queue, first, next, |e| e.position < start).await?;
            let min_offset = match n < next {
                true => self.entry(dir, queue, n).await?.base_offset,
                false => next_offset,
            };
            self.with_queue(queue, QueueOffset::ZERO, |q| q.drop_before(n, min_offset));
            doomed.extend((first / self.file_entries..n / self.file_entries).map(|f| (queue, f)));
        }
        Ok(doomed)
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
