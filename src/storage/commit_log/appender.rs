//! The appender: the write half of the commit log, run by whichever task appends on the shard.
//!
//! Owns the append order (a FIFO gate: one append at a time, and the copy never awaits), the
//! head chunk being filled, the carried last partial block of the previous chunk, and the
//! chunk permits reserved before a copy. A batch is validated, stamped (topic, queue, base
//! offset, store time) and copied once into the head chunk; a full chunk, or a partial one the
//! flusher asks for, is dispatched as one O_DIRECT write. Writes run concurrently; the only
//! ordering they need is between two writes of the same carried block, which the later one
//! waits for.
//!
//! Promises: positions are handed out contiguously, a chunk never crosses a segment, and a
//! failed write stops the log (see [`super::CommitLog`], Failure).

use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

use super::{CommitLog, State};
use crate::format::batch::{self as fmt, BatchView, FormatError, Stamp, HEADER_LEN};
use crate::runtime::{self, DmaBuffer, StaticPermit};
use crate::storage::config::{BatchLimit, FlushMode};
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{align_down, align_up, LogDir, LogFile, ALIGN};
use crate::storage::index::IndexEntry;
use crate::storage::segment::segment_name;
use crate::storage::types::{AppendStatus, Appended, LogPosition, QueueKey};

/// The chunk being filled.
pub(super) struct Head {
    pub(super) buf: Rc<DmaBuffer>,
    /// Log position of `buf[0]` (aligned).
    pub(super) pos: LogPosition,
    /// Valid bytes from `buf[0]`.
    pub(super) filled: usize,
    /// `buf[..dispatched]` was already written by an earlier write (the carried block).
    pub(super) dispatched: usize,
    pub(super) permit: StaticPermit,
}

/// The last partial block of a dispatched chunk, to be rewritten with more data.
pub(super) struct Carry {
    pub(super) pos: LogPosition,
    pub(super) bytes: Vec<u8>,
}

pub(super) type Done = Shared<oneshot::Receiver<()>>;

impl<D: LogDir + 'static> CommitLog<D> {
    /// Appends a producer's batch to `queue` and returns where it went. The batch is in memory
    /// (readable in async mode) but not necessarily durable: see [`Self::append_committed`].
    pub async fn append(self: &Rc<Self>, queue: QueueKey, batch: &[u8]) -> Result<Appended> {
        self.append_within(queue, batch, BatchLimit::Produced).await
    }

    /// [`Self::append`] of a batch kept to `limit` (a message accepted earlier and moved now
    /// may be larger than today's `max_batch_bytes`: [`BatchLimit::Moved`]).
    pub async fn append_within(
        self: &Rc<Self>,
        queue: QueueKey,
        batch: &[u8],
        limit: BatchLimit,
    ) -> Result<Appended> {
        let max = self.config.batch_limit(limit);
        if batch.len() > max {
            return Err(StorageError::BatchTooLarge { size: batch.len(), max });
        }
        let view = BatchView::parse(batch, max)?;
        if view.header.is_control() {
            return Err(FormatError::UnknownAttributes(fmt::ATTR_CONTROL).into());
        }
        if view.header.length as usize != batch.len() {
            return Err(FormatError::BadLength {
                length: batch.len() as u64,
                min: HEADER_LEN,
                max: view.header.length as usize,
            }
            .into());
        }
        // A valid CRC over malformed records would fail every consumer of the queue.
        let bare = view.validate_records_bare()?;
        let len = batch.len() as u64;

        let _gate = self.append_gate.acquire().await;
        self.check_writable()?;
        self.ensure_active_reserved().await?;
        self.ensure_index_writable().await?;
        let needs_roll = {
            let st = self.st.borrow();
            let active = st.active();
            active.sealed_end.get().is_some()
                || st.append_pos + len + HEADER_LEN as u64
                    > active.base + self.config.segment_size_bytes
        };
        if needs_roll {
            self.roll().await?;
        }
        // Bound the index's unwritten entries.
        self.wait_index_room().await?;
        self.reserve(len as usize).await?;

        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        let store_ts = self.clock.unix_ms().max(st.last_store_ts);
        st.last_store_ts = store_ts;
        let base_offset = self.index.next_offset(queue);
        let record_count = view.header.record_count;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&batch[..HEADER_LEN]);
        fmt::stamp(
            &mut header,
            &Stamp {
                topic_id: queue.topic_id.get(),
                queue_id: queue.queue_id.get(),
                base_offset: base_offset.get(),
                store_timestamp_ms: store_ts,
                epoch: self.epoch.get(),
            },
        );
        let position = st.append_pos;
        self.index.push(
            queue,
            IndexEntry {
                base_offset,
                position,
                length: len as u32,
                record_count,
                store_timestamp_ms: store_ts,
            },
        );
        let active = st.active().clone();
        active.max_store_timestamp_ms.set(active.max_store_timestamp_ms.get().max(store_ts));
        self.put(st, &header);
        self.put(st, &batch[HEADER_LEN..]);
        let pending = st.append_pos - st.durable;
        drop(guard);
        if self.config.flush_mode == FlushMode::Async && pending >= self.config.flush_bytes {
            self.request_flush();
        }
        self.prepare_next_segment();
        Ok(Appended {
            queue,
            base_offset,
            record_count,
            store_timestamp_ms: store_ts,
            position,
            end: position + len,
            bare,
        })
    }

    /// Appends and acknowledges per the flush mode: in sync mode, waits for the fdatasync
    /// covering the batch (up to `sync_flush_timeout_ms`, then `FlushDiskTimeout`).
    pub async fn append_committed(
        self: &Rc<Self>,
        queue: QueueKey,
        batch: &[u8],
    ) -> Result<(Appended, AppendStatus)> {
        let appended = self.append(queue, batch).await?;
        let status = self.commit(&appended).await?;
        Ok((appended, status))
    }

    /// Acquires chunk permits so that `len` more bytes can be copied without waiting.
    pub(super) async fn reserve(&self, len: usize) -> Result<()> {
        loop {
            let missing = {
                let st = self.st.borrow();
                let chunk = self.config.chunk_size_bytes;
                let space = match &st.head {
                    Some(h) => chunk - h.filled,
                    None => 0,
                };
                let carried = st.carry.as_ref().map_or(0, |c| c.bytes.len());
                let need_bytes = if st.head.is_some() { len } else { len + carried };
                let chunks = need_bytes.saturating_sub(space).div_ceil(chunk);
                chunks.saturating_sub(st.spare_permits.len())
            };
            if missing == 0 {
                return Ok(());
            }
            if self.pool.available() == 0 {
                // Every chunk is being filled or written: this append waits for a write.
                self.probe.borrow_mut().chunk_pool_waits += 1;
            }
            let permit =
                self.pool.acquire_static_permit(1).await.map_err(|_| StorageError::Closed)?;
            self.st.borrow_mut().spare_permits.push(permit);
            self.check_writable()?;
        }
    }

    /// Copies bytes into the head chunk(s); never awaits. Permits must have been reserved.
    pub(super) fn put(self: &Rc<Self>, st: &mut State<D::File>, mut bytes: &[u8]) {
        let chunk = self.config.chunk_size_bytes;
        while !bytes.is_empty() {
            if st.head.is_none() {
                let permit = st.spare_permits.pop().expect("chunk permits reserved before put");
                let mut buf = st.cache.take_spare();
                let (pos, filled) = match st.carry.take() {
                    Some(c) => {
                        buf.as_bytes_mut()[..c.bytes.len()].copy_from_slice(&c.bytes);
                        (c.pos, c.bytes.len())
                    }
                    None => {
                        assert!(st.append_pos.is_aligned(), "a new chunk starts aligned");
                        (st.append_pos, 0)
                    }
                };
                assert_eq!(pos + filled as u64, st.append_pos, "chunk continues the log");
                st.head = Some(Head { buf: Rc::new(buf), pos, filled, dispatched: filled, permit });
            }
            let head = st.head.as_mut().expect("head chunk present");
            let n = bytes.len().min(chunk - head.filled);
            Rc::get_mut(&mut head.buf)
                .expect("the head chunk is not shared while filling")
                .as_bytes_mut()[head.filled..head.filled + n]
                .copy_from_slice(&bytes[..n]);
            head.filled += n;
            st.append_pos += n as u64;
            bytes = &bytes[n..];
            if head.filled == chunk {
                self.dispatch_head(st);
            }
        }
    }

    /// Writes the head chunk's undispatched bytes. A partial last block is carried into the
    /// next chunk, and the write that rewrites it waits for this one (same block, ordered).
    pub(super) fn dispatch_head(self: &Rc<Self>, st: &mut State<D::File>) {
        let Some(mut head) = st.head.take() else { return };
        if head.dispatched == head.filled {
            // Nothing new: keep the chunk (it may still hold a carried block).
            st.head = Some(head);
            return;
        }
        let valid_start = head.pos + head.dispatched as u64;
        let valid_end = head.pos + head.filled as u64;
        let write_len = align_up(head.filled as u64) as usize;
        {
            let buf = Rc::get_mut(&mut head.buf).expect("head chunk uniquely owned");
            buf.as_bytes_mut()[head.filled..write_len].fill(0);
            buf.trim_to_size(write_len);
        }
        if head.filled as u64 % ALIGN != 0 {
            let block = align_down(head.filled as u64) as usize;
            st.carry = Some(Carry {
                pos: head.pos + block as u64,
                bytes: head.buf.as_bytes()[block..head.filled].to_vec(),
            });
        }
        let wait_for = if head.dispatched > 0 { st.last_write.clone() } else { None };
        let (done_tx, done_rx) = oneshot::channel();
        st.last_write = Some(done_rx.shared());
        st.tracker.dispatched(valid_start, valid_end);
        st.cache.insert(head.pos, valid_end, head.buf.clone());
        let seg = st.segment_for(head.pos).expect("head chunk lies in a segment").clone();
        assert!(valid_end <= seg.base + self.config.segment_size_bytes, "chunk crosses a segment");
        let file_offset = head.pos - seg.base;
        let log = self.clone();
        let Head { buf, permit, .. } = head;
        runtime::spawn_detached(async move {
            // The caller holds the state borrow while dispatching; run after it returns.
            runtime::yield_once().await;
            if let Some(prev) = wait_for {
                let _ = prev.await;
            }
            let result = seg.file.write_at(buf, file_offset).await;
            match result {
                Ok(()) => {
                    let mut st = log.st.borrow_mut();
                    seg.unsynced.set(true);
                    st.tracker.completed(valid_start, valid_end);
                    let written = st.tracker.written();
                    st.cache.evict(written);
                    // This chunk's permit, and those of later chunks that completed first, go
                    // back once the written end has passed them.
                    st.written_permits.insert(valid_end, permit);
                    let later = st.written_permits.split_off(&LogPosition::new(written.get() + 1));
                    let released = std::mem::replace(&mut st.written_permits, later);
                    drop(st);
                    drop(released);
                    log.written_changed.notify();
                }
                Err(e) => log.fail(format!(
                    "write of {} bytes at {} in segment {} failed: {e}",
                    valid_end - valid_start,
                    valid_start,
                    segment_name(seg.base)
                )),
            }
            let _ = done_tx.send(());
        });
    }
}
