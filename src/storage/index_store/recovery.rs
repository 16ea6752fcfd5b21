//! Rebuilding the index at startup (from its checkpoint and the queue floors) and cutting it
//! back when the log is truncated.

use super::*;

impl<F: LogFile> IndexStore<F> {
    /// Rebuilds the in-memory state from a checkpoint (or from nothing) and the queue floors,
    /// deleting index files that hold no entry the index can use. `names` lists the directory.
    pub async fn recover<D: LogDir<File = F>>(
        &self,
        dir: &D,
        names: &[String],
        checkpoint: Option<&IndexCheckpoint>,
        floors: &HashMap<QueueKey, QueueOffset>,
    ) -> Result<(), LookupError> {
        let files: Vec<(QueueKey, u64)> =
            names.iter().filter_map(|n| parse_index_file_name(n)).collect();
        let Some(ckpt) = checkpoint else {
            // Nothing to trust: every entry is rebuilt by scanning the log.
            self.remove_files(dir, &files).await?;
            for (q, f) in floors {
                self.with_queue(*q, *f, |_| ());
            }
            return Ok(());
        };
        let mut lowest_file: HashMap<QueueKey, u64> = HashMap::new();
        for &(q, f) in &files {
            let e = lowest_file.entry(q).or_insert(f);
            *e = (*e).min(f);
        }
        let present: BTreeSet<(QueueKey, u64)> = files.iter().copied().collect();
        for c in &ckpt.queues {
            // Files below the lowest present one may be gone (retention after the checkpoint);
            // from there on, every file the checkpoint counts entries in must exist.
            let needed_from = lowest_file.get(&c.queue).map_or(0, |f| *f);
            let mut needed = (c.first_entry / self.file_entries).max(needed_from)
                ..c.next_entry.div_ceil(self.file_entries);
            let all_dropped = floors.get(&c.queue).is_some_and(|f| *f >= c.next_offset);
            // Checked first: the counts come from disk, and looking for every file of a huge
            // range that is all dropped anyway would never end.
            let missing =
                if all_dropped { None } else { needed.find(|f| !present.contains(&(c.queue, *f))) };
            if let Some(f) = missing {
                return Err(LookupError::Corrupt {
                    file: index_file_name(c.queue, f),
                    reason: "an index file the checkpoint counts entries in is missing".into(),
                });
            }
            self.with_queue(c.queue, c.min_offset, |q| {
                q.first_entry = c.first_entry;
                q.written_entries = c.next_entry;
                q.min_offset = c.min_offset;
                q.next_offset = c.next_offset;
            });
        }
        for (&queue, &floor) in floors {
            let (first, next, min_offset, next_offset) = self.with_queue(queue, floor, |q| {
                (q.first_entry, q.next_entry(), q.min_offset, q.next_offset)
            });
            if floor <= min_offset {
                continue;
            }
            // Retention ran after the checkpoint. Its files are deleted oldest first, so
            // files below the lowest one left held only dropped entries.
            // File numbers come from names on disk: one past every entry (a stray file) means
            // no file holds them any more, not entries beyond the queue's.
            let lo = lowest_file
                .get(&queue)
                .map_or(next, |f| f.saturating_mul(self.file_entries).clamp(first.min(next), next));
            if floor >= next_offset {
                self.with_queue(queue, floor, |q| {
                    q.drop_before(next, next_offset);
                    q.min_offset = floor;
                    q.next_offset = floor;
                });
                continue;
            }
            let n = self.partition(dir, queue, lo, next, |e| e.next_offset() <= floor).await?;
            let min = match n < next {
                true => self.entry(dir, queue, n).await?.base_offset,
                false => next_offset,
            };
            self.with_queue(queue, floor, |q| q.drop_before(n, min));
        }
        let stale: Vec<(QueueKey, u64)> = {
            let queues = self.queues.borrow();
            files
                .into_iter()
                .filter(|(q, f)| {
                    queues.get(q).map_or(true, |qi| {
                        // Saturating: a number from a stray name may overflow; it is stale.
                        *f < qi.first_entry / self.file_entries
                            || f.saturating_mul(self.file_entries) >= qi.next_entry()
                    })
                })
                .collect()
        };
        self.remove_files(dir, &stale).await?;
        self.checkpoint_position.set(ckpt.position);
        Ok(())
    }

    /// Recovery, after an index rebuilt from the log: a queue that has no entry and whose
    /// offsets start below `next` starts at `next` (its batches were all deleted, and retention
    /// recorded where they ended). Returns whether it moved.
    pub fn raise_empty_queue(&self, queue: QueueKey, next: QueueOffset) -> bool {
        self.with_queue(queue, next, |q| {
            let raise = q.is_empty() && q.next_offset < next;
            if raise {
                q.min_offset = next;
                q.next_offset = next;
            }
            raise
        })
    }

    /// Recovery: forgets entries of batches at or past `end` (the log ended before the
    /// checkpoint position; only after corruption).
    pub async fn truncate_from<D: LogDir<File = F>>(
        &self,
        dir: &D,
        end: LogPosition,
    ) -> Result<(), LookupError> {
        for queue in self.queue_keys() {
            let (first, next) = {
                let queues = self.queues.borrow();
                (queues[&queue].first_entry, queues[&queue].next_entry())
            };
            if first == next || self.entry(dir, queue, next - 1).await?.end() <= end {
                continue;
            }
            let n = self.partition(dir, queue, first, next, |e| e.end() <= end).await?;
            let offset = self.entry(dir, queue, n).await?.base_offset;
            self.with_queue(queue, QueueOffset::ZERO, |q| q.truncate_to(n, offset));
        }
        self.checkpoint_position.set(self.checkpoint_position.get().min(end));
        Ok(())
    }
}
