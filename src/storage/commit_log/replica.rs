//! The log's side of replication: reading whole batches by log position for a replica, and
//! appending a master's batches on a replica at the master's positions.
//!
//! A replica's log is a byte copy of its master's: every batch keeps the master's stamp (topic,
//! queue, base offset, store time) and lies at the master's position, and segments end where
//! the master's end (the end-of-segment markers are mirrored). So a position means the same
//! batch on every member, which is what the confirmed position, epochs and truncation
//! (`crate::replication`) are defined on.
//!
//! - [`CommitLog::read_batches_at`] (master): the batches from a batch boundary, whole, up to
//!   a byte budget and an end the caller chooses (what is written, or what is durable). It
//!   follows segment ends to the next segment's base.
//! - [`CommitLog::append_replicated`] (replica): checks the stamped batch (both CRCs, record
//!   framing), that it continues its queue's offsets and that it lies where this log's next
//!   batch goes, or at the next segment's base (then this log seals its active segment with an
//!   end marker at the same position the master's has). Group commit, acknowledgement per the
//!   flush mode and the index work as for any append.
//! - [`truncate_log`] (replica, log closed): cuts the log at the point where it diverged from
//!   its master, durably, before it follows again.

use std::rc::Rc;

use super::CommitLog;
use crate::format::batch::{BatchView, HEADER_LEN};
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{LogDir, LogFile};
use crate::storage::index::IndexEntry;
use crate::storage::index_store::CHECKPOINT_FILE;
use crate::storage::segment::segment_name;
use crate::storage::types::{Appended, LogPosition, QueueId, QueueKey, QueueOffset, TopicId};

/// One batch read for a replica: its log position and its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionedBatch {
    pub position: LogPosition,
    pub bytes: Vec<u8>,
}

impl<D: LogDir + 'static> CommitLog<D> {
    /// The written end of the log: every byte below it is on disk (not necessarily synced).
    pub fn written_end(&self) -> LogPosition {
        self.st.borrow().tracker.written()
    }

    /// The durable end of the log: every byte below it is synced.
    pub fn durable_end(&self) -> LogPosition {
        self.st.borrow().durable
    }

    /// Whole batches from `from` (a batch boundary, the end of a sealed segment, or the base of
    /// the next segment) while they end at or before `up_to` (at most the written end), until
    /// `max_bytes` are gathered (at least one batch when one fits under `up_to`). A segment's
    /// end marker is returned like a batch, so the replica ends its segment at the same place.
    /// Returns the batches and the position to continue from (the next segment's base when
    /// they end at a sealed segment's end).
    ///
    /// A `from` where no intact batch header starts is [`StorageError::NotABatchBoundary`]
    /// (the caller's mistake); one below the oldest segment (retention deleted it) is
    /// [`StorageError::BelowOldest`]; a damaged batch found there or further is `Corrupt`.
    pub async fn read_batches_at(
        self: &Rc<Self>,
        from: LogPosition,
        up_to: LogPosition,
        max_bytes: usize,
    ) -> Result<(Vec<PositionedBatch>, LogPosition)> {
        let up_to = up_to.min(self.written_end());
        let mut out = Vec::new();
        let mut gathered = 0usize;
        let mut pos = from;
        while pos < up_to && (out.is_empty() || gathered < max_bytes) {
            let (seg, next_base) = {
                let st = self.st.borrow();
                let Some(seg) = st.segment_for(pos).cloned() else {
                    // Below the oldest segment: retention deleted what held it (before this
                    // read, or while it ran).
                    return Err(StorageError::BelowOldest {
                        position: pos.get(),
                        oldest: st.segments.keys().next().map_or(0, |b| b.get()),
                        end: st.append_pos.get(),
                    });
                };
                let next = st.segments.range(seg.base + 1..).next().map(|(b, _)| *b);
                (seg, next)
            };
            if seg.sealed_end.get().is_some_and(|sealed| pos >= sealed) {
                match next_base {
                    Some(b) => {
                        pos = b;
                        continue;
                    }
                    None => break,
                }
            }
            let read = |at: LogPosition, len: usize| {
                let seg = seg.clone();
                async move {
                    seg.file.read_at(at - seg.base, len).await.map_err(|e| {
                        let what = format!("reading {} for a replica", segment_name(seg.base));
                        StorageError::io(what, e)
                    })
                }
            };
            if pos + HEADER_LEN as u64 > up_to {
                // Not even the header is there yet (it may be half written).
                break;
            }
            // Batches stored under larger limits than today's are sent too (a replica appends
            // up to its `movable_batch_limit`).
            let max_batch = self.config.stored_batch_limit(seg.capacity);
            let head = read(pos, HEADER_LEN).await?;
            if head.len() < HEADER_LEN {
                return Err(position_error(pos, "short read of a batch header"));
            }
            let length = crate::format::batch::peek_length(&head).unwrap_or(0) as usize;
            let no_batch = if length < HEADER_LEN || length > max_batch {
                Some(format!("its length field says {length} bytes"))
            } else if !crate::format::batch::stamp_verifies(&head) {
                Some("no intact batch header starts there".to_string())
            } else {
                None
            };
            if let Some(reason) = no_batch {
                // At the position the caller chose, the caller is wrong (a position inside a
                // batch); past it, this log walked there from a verified batch: damage.
                if pos == from {
                    return Err(StorageError::NotABatchBoundary { position: pos.get(), reason });
                }
                return Err(StorageError::Corrupt {
                    file: segment_name(seg.base),
                    offset: pos - seg.base,
                    reason: format!("not a batch boundary after a verified batch: {reason}"),
                });
            }
            if pos + length as u64 > up_to {
                break;
            }
            let bytes = read(pos, length).await?;
            if bytes.len() < length {
                return Err(position_error(pos, "short read of a batch"));
            }
            let bytes = bytes[..length].to_vec();
            BatchView::parse(&bytes, max_batch).and_then(|v| v.verify_stamp()).map_err(|e| {
                StorageError::Corrupt {
                    file: segment_name(seg.base),
                    offset: pos - seg.base,
                    reason: format!("batch for a replica failed verification: {e}"),
                }
            })?;
            gathered += length;
            out.push(PositionedBatch { position: pos, bytes });
            pos += length as u64;
        }
        // Nothing lies between a sealed segment's end and the next segment's base, and a
        // replica that appended the end marker continues at that base: so does the stream
        // (the master bounds the replica's acknowledgements by where it ended).
        let st = self.st.borrow();
        if let Some(seg) = st.segment_for(pos) {
            if seg.sealed_end.get().is_some_and(|sealed| pos >= sealed) {
                if let Some((&base, _)) = st.segments.range(seg.base + 1..).next() {
                    pos = base;
                }
            }
        }
        Ok((out, pos))
    }

    /// Appends a batch the master stored at `position`, keeping its stamp (see the module
    /// documentation). Not durable yet: see [`Self::commit`].
    pub async fn append_replicated(
        self: &Rc<Self>,
        position: LogPosition,
        batch: &[u8],
    ) -> Result<Appended> {
        // What the master may append: its producers' batches and the larger ones it moved.
        let max = self.config.movable_batch_limit();
        if batch.len() > max {
            return Err(StorageError::BatchTooLarge { size: batch.len(), max });
        }
        let view = BatchView::parse(batch, max)?;
        view.verify_stamp()?;
        if view.header.length as usize != batch.len() {
            return Err(position_error(position, "a replicated batch is one whole batch"));
        }
        if view.header.is_control() {
            return self.replicate_segment_end(position, batch).await;
        }
        view.validate_records()?;
        let header = view.header;
        let len = batch.len() as u64;
        let queue =
            QueueKey::new(TopicId::new(header.stamp.topic_id), QueueId::new(header.stamp.queue_id));

        let _gate = self.append_gate.acquire().await;
        self.check_writable()?;
        self.ensure_active_reserved().await?;
        self.ensure_index_writable().await?;
        let (append_pos, active_base, sealed) = {
            let st = self.st.borrow();
            let a = st.active();
            (st.append_pos, a.base, a.sealed_end.get().is_some())
        };
        if position != append_pos || sealed {
            return Err(mismatch(position, &format!("this log's next batch goes at {append_pos}")));
        }
        if append_pos + len + HEADER_LEN as u64 > active_base + self.config.segment_size_bytes {
            return Err(mismatch(
                position,
                "the batch does not fit the active segment: master and replica must use the \
                 same segment_size_bytes",
            ));
        }
        let next = self.index.next_offset(queue);
        if header.stamp.base_offset != next.get() {
            return Err(mismatch(
                position,
                &format!(
                    "the batch starts {queue} at offset {}, this log's next is {next}",
                    header.stamp.base_offset
                ),
            ));
        }
        self.wait_index_room().await?;
        self.reserve(batch.len()).await?;

        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        assert_eq!(st.append_pos, position, "nothing appended while the gate is held");
        let store_ts = header.stamp.store_timestamp_ms;
        st.last_store_ts = st.last_store_ts.max(store_ts);
        self.index.push(
            queue,
            IndexEntry {
                base_offset: QueueOffset::new(header.stamp.base_offset),
                position,
                length: len as u32,
                record_count: header.record_count,
                store_timestamp_ms: store_ts,
            },
        );
        let active = st.active().clone();
        active.max_store_timestamp_ms.set(active.max_store_timestamp_ms.get().max(store_ts));
        self.put(st, batch);
        drop(guard);
        self.prepare_next_segment();
        Ok(Appended {
            queue,
            base_offset: QueueOffset::new(header.stamp.base_offset),
            record_count: header.record_count,
            store_timestamp_ms: store_ts,
            position,
            end: position + len,
            bare: false,
        })
    }

    /// The master ended its segment with `marker` at `position`: end ours there with the same
    /// bytes and continue at the next segment's base, as the master does.
    async fn replicate_segment_end(
        self: &Rc<Self>,
        position: LogPosition,
        marker: &[u8],
    ) -> Result<Appended> {
        let marker: &[u8; HEADER_LEN] = marker
            .try_into()
            .map_err(|_| position_error(position, "an end marker is a bare header"))?;
        let _gate = self.append_gate.acquire().await;
        self.check_writable()?;
        self.ensure_active_reserved().await?;
        let (append_pos, sealed) = {
            let st = self.st.borrow();
            (st.append_pos, st.active().sealed_end.get().is_some())
        };
        if position != append_pos || sealed {
            return Err(mismatch(
                position,
                &format!("this log's segment end would go at {append_pos}"),
            ));
        }
        self.roll_with(Some(marker)).await?;
        Ok(Appended {
            queue: QueueKey::new(TopicId::new(0), QueueId::new(0)),
            base_offset: QueueOffset::ZERO,
            record_count: 0,
            store_timestamp_ms: 0,
            position,
            end: position + HEADER_LEN as u64,
            bare: false,
        })
    }
}

/// Physically truncates the closed log in `dir` to `end` (a batch boundary): a replica that
/// diverged from its master keeps `[0, end)` and nothing after it. Segments starting past
/// `end` are deleted and the one holding it is cut at `end`, each step synced, so a crash
/// during or after it never brings the cut data back. The next open rebuilds the state from
/// what remains (the queue index past `end` is dropped by recovery, see `recovery.rs`).
pub async fn truncate_log<D: LogDir>(dir: &D, end: LogPosition) -> Result<()> {
    let io = |what: String| move |e| StorageError::io(what, e);
    let mut bases: Vec<LogPosition> = dir
        .list()
        .await
        .map_err(io("listing the log directory".into()))?
        .iter()
        .filter_map(|n| crate::storage::segment::parse_segment_name(n))
        .collect();
    bases.sort();
    // The index checkpoint describes segments and queues up to where it was taken, possibly
    // past `end`: without it the next open rebuilds the queue index by scanning the whole
    // log (a cost paid once, on a replica rejoining after a failover).
    match dir.remove(CHECKPOINT_FILE).await {
        Ok(()) => dir.sync_dir().await.map_err(io("syncing the log directory".into()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("deleting the index checkpoint", e)),
    }
    // Newest first: if a crash interrupts, what remains is still a prefix of the log.
    for &base in bases.iter().rev() {
        let name = segment_name(base);
        if base > end || (base == end && bases.first() != Some(&base)) {
            dir.remove(&name).await.map_err(io(format!("deleting {name}")))?;
            dir.sync_dir().await.map_err(io("syncing the log directory".into()))?;
        } else {
            let file = dir.open(&name, false).await.map_err(io(format!("opening {name}")))?;
            file.truncate(end - base).await.map_err(io(format!("truncating {name}")))?;
            file.sync_data().await.map_err(io(format!("syncing {name}")))?;
            file.close().await.map_err(io(format!("closing {name}")))?;
            break;
        }
    }
    dir.sync_dir().await.map_err(io("syncing the log directory".into()))?;
    Ok(())
}

/// A master's batch that does not continue this replica's log (see
/// [`StorageError::ReplicaMismatch`]).
fn mismatch(position: LogPosition, reason: &str) -> StorageError {
    StorageError::ReplicaMismatch { position: position.get(), reason: reason.to_string() }
}

fn position_error(position: LogPosition, reason: &str) -> StorageError {
    StorageError::Corrupt {
        file: "replicated log".into(),
        offset: position.get(),
        reason: reason.to_string(),
    }
}
