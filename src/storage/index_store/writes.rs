//! The index's writes: write-back of pending entries, fdatasync of written files, retention
//! of whole files. Callers hold [`IndexStore::lock`] (the gate that serializes write-back,
//! checkpoints and retention).

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
        self.writeback_passes(dir, durable, false).await
    }

    /// A checkpoint's write-back: [`Self::writeback`] of the entries of batches ending at or
    /// before `durable`, each queue's files fdatasynced by the task that wrote them, right
    /// after its writes, while it still holds them open. Then only the files written by
    /// earlier write-backs are left for [`Self::sync`]. Synced in a second pass, a checkpoint
    /// of 10,000 queues opened every file twice (at most [`MAX_OPEN_INDEX_FILES`] stay open).
    /// Caller holds [`Self::lock`].
    pub async fn writeback_synced<D: LogDir<File = F>>(
        &self,
        dir: &D,
        durable: LogPosition,
    ) -> Result<(), WritebackError> {
        self.writeback_passes(dir, || durable, true).await
    }

    async fn writeback_passes<D: LogDir<File = F>>(
        &self,
        dir: &D,
        durable: impl Fn() -> LogPosition,
        sync_each: bool,
    ) -> Result<(), WritebackError> {
        use futures::StreamExt;
        let todo: Vec<QueueKey> = {
            let end = durable();
            let queues = self.queues.borrow();
            queues.iter().filter(|(_, q)| q.writable_pending(end) > 0).map(|(k, _)| *k).collect()
        };
        let failed: RefCell<Option<WritebackError>> = RefCell::new(None);
        let syncing = Cell::new(false);
        let (failed_ref, syncing_ref, durable_ref) = (&failed, &syncing, &durable);
        futures::stream::iter(todo)
            .for_each_concurrent(INDEX_WRITE_CONCURRENCY, |queue| async move {
                if failed_ref.borrow().is_some() {
                    return;
                }
                let mut result = self.writeback_queue(dir, queue, durable_ref, sync_each).await;
                let too_many_dirty =
                    self.dirty_files.borrow().len() * DIRTY_FILE_BYTES > self.budget_bytes / 16;
                if result.is_ok() && too_many_dirty && !syncing_ref.replace(true) {
                    // Remembering which files need an fdatasync costs memory too: sync early.
                    result = self.sync(dir).await.map_err(WritebackError::Sync);
                    syncing_ref.set(false);
                }
                if let Err(e) = result {
                    failed_ref.borrow_mut().get_or_insert(e);
                }
            })
            .await;
        match failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes `queue`'s pending entries of durable batches, a block at a time; with
    /// `sync_each`, then fdatasyncs the files it wrote (and they are no longer dirty).
    async fn writeback_queue<D: LogDir<File = F>>(
        &self,
        dir: &D,
        queue: QueueKey,
        durable: &impl Fn() -> LogPosition,
        sync_each: bool,
    ) -> Result<(), WritebackError> {
        use WritebackError::Write;
        // The files written, held open until they are synced (a queue writes one file, or two
        // when its entries cross into the next).
        let mut to_sync: Vec<(u64, Rc<F>)> = Vec::new();
        loop {
            let (start, n) = match self.queues.borrow().get(&queue) {
                Some(q) => (q.written_entries, q.writable_pending(durable())),
                None => (0, 0),
            };
            if n == 0 {
                // Only this task writes this queue's files meanwhile (the caller holds the
                // gate), so a file synced here is clean unless written again later.
                for (file, f) in to_sync {
                    f.sync_data().await.map_err(WritebackError::Sync)?;
                    self.dirty_files.borrow_mut().remove(&(queue, file));
                }
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
            if sync_each && !to_sync.iter().any(|(w, _)| *w == file) {
                to_sync.push((file, f.clone()));
            }
            self.dirty_files.borrow_mut().insert((queue, file));
            self.cache.borrow_mut().insert(BlockKey { queue, block }, Rc::new(bytes));
            self.with_queue(queue, QueueOffset::ZERO, |q| q.mark_written(count));
            self.progress.notify();
        }
    }

    /// Makes every written entry durable (fdatasync of written files, directory fsync of
    /// created ones). Caller holds [`Self::lock`].
    ///
    /// Up to [`INDEX_SYNC_CONCURRENCY`] files are opened and fdatasynced at once: a checkpoint
    /// of 10,000 queues syncs as many files, and one at a time that took seconds (each waits
    /// for its own journal commit) while appends waited for the index's room. Every sync is
    /// awaited before an error is returned.
    pub async fn sync<D: LogDir<File = F>>(&self, dir: &D) -> io::Result<()> {
        use futures::StreamExt;
        let dirty = std::mem::take(&mut *self.dirty_files.borrow_mut());
        let results: Vec<io::Result<()>> = futures::stream::iter(dirty)
            .map(|(queue, file)| async move {
                match self.file(dir, queue, file, false).await {
                    Ok(f) => f.sync_data().await,
                    // Deleted by retention after it was written: nothing left to make durable.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(INDEX_SYNC_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<io::Result<()>>()?;
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
            self.dirty_files.borrow_mut().remove(&(queue, file));
            match dir.remove(&index_file_name(queue, file)).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.rebalance();
        Ok(())
    }
}
