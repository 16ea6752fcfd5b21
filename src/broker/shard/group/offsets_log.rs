//! The committed offsets in the coordinator shard's log (`%SYS%offsets`): snapshots under the
//! commit gate, the replay from the last complete one at startup, and retention's pin on what
//! that replay needs, on a master ([`Shard::append_snapshot`]) and on a replica, which follows
//! the master's snapshots as its follower writes them ([`Shard::replicated_offsets_batch`]).

use super::*;

/// Records read per step when looking backwards for the last complete snapshot.
const SNAPSHOT_SEARCH_STEP: u64 = 4096;

/// Largest snapshot part (one record, one batch).
const SNAPSHOT_PART_BYTES: usize = 1 << 20;

/// What [`Shard::start_groups`] replayed: records of `%SYS%offsets` from offset `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetsRecovered {
    pub from: u64,
    pub records: u64,
}

impl<L: ShardLog> Shard<L> {
    /// Appends a snapshot of every committed offset (under the commit gate, so it holds
    /// exactly the commits before it in the log).
    pub(in crate::broker::shard) async fn snapshot_offsets(&self) -> Result<(), BrokerError> {
        let _gate = self.group_gate.acquire().await;
        self.append_snapshot(None).await.map(|_| ())
    }

    /// [`Self::snapshot_offsets`] for a caller that holds the commit gate: the outcome of the
    /// snapshot's last part. `deleting`: the snapshot that deletes that group (DELETE_GROUP,
    /// checked): written without its offsets, which are forgotten here as its last part is
    /// copied into the log (how many queues' offsets went is returned).
    pub(super) async fn append_snapshot(
        &self,
        deleting: Option<&str>,
    ) -> Result<(AppendOutcome, usize), BrokerError> {
        let now = self.clock.now();
        let part_bytes = SNAPSHOT_PART_BYTES.min(self.config.storage.max_batch_bytes / 2);
        let parts = self.coordinator.borrow().snapshot_parts(part_bytes, deleting);
        // Even a failed snapshot waits for the next interval (a log that fails has stopped).
        self.coordinator.borrow_mut().snapshot_taken(now);
        let n = parts.len() as u32;
        let timestamp_ms = self.clock.unix_ms();
        let mut last = None;
        let mut first_offset = None;
        for (i, part) in parts.iter().enumerate() {
            let key = snapshot_key(i as u32, n);
            let mut builder = BatchBuilder::new(self.config.storage.max_batch_bytes);
            let record = Record { key: &key, tag: b"", properties: &[], body: part, timestamp_ms };
            builder.push(&record).map_err(internal)?;
            let batch = builder.finish(-1, -1);
            let last_part = i + 1 == parts.len();
            let copied = |_| match deleting {
                Some(group) if last_part => self.coordinator.borrow_mut().forget_group(group),
                _ => 0,
            };
            let (removed, outcome) =
                self.log.append_then(SYS_OFFSETS, &batch, BatchLimit::Produced, copied).await?;
            first_offset.get_or_insert(outcome.base_offset);
            last = Some((outcome, removed));
        }
        if let (Some(first), Some((outcome, _))) = (first_offset, &last) {
            // Retention then deletes nothing a restart replays: the last durable complete
            // snapshot and the commits after it.
            self.log.pin_retention_once_durable(SYS_OFFSETS, Some(first), outcome.end);
        }
        tracing::debug!(shard = %self.id, parts = n, "committed offsets snapshotted");
        last.ok_or_else(|| internal("a snapshot has at least one part"))
    }

    /// On a replica: the follower wrote a batch of the offsets queue ending at log position
    /// `end`. A snapshot's parts are consecutive records (one a batch); once the follower
    /// has written all parts of one, the offsets' pin moves to its first part when the log is
    /// durable past it, as on the master. A promotion then replays from a snapshot
    /// retention kept.
    pub(in crate::broker::shard) fn replicated_offsets_batch(&self, batch: &[u8], end: u64) {
        let part = crate::format::BatchView::parse(batch, batch.len()).ok().and_then(|view| {
            let key = view.records().next()?.ok()?.key;
            let (part, parts) = parse_snapshot_key(key)?;
            Some((view.header.stamp.base_offset, part, parts))
        });
        let mut seen = self.replicated_snapshot.get();
        seen = match (part, seen) {
            (Some((base, 0, parts)), _) => Some((base, 1, parts)),
            (Some((_, part, parts)), Some((first, next, of))) if part == next && parts == of => {
                Some((first, next + 1, parts))
            }
            // A commit between parts cannot happen (the parts are written under the commit
            // gate); anything else ends the snapshot being followed.
            _ => None,
        };
        if let Some((first, done, parts)) = seen {
            if done == parts {
                self.log.pin_retention_once_durable(SYS_OFFSETS, Some(first), end);
                seen = None;
            }
        }
        self.replicated_snapshot.set(seen);
    }

    /// [`Self::snapshot_offsets`] where nobody waits for its answer: a failure is logged (the
    /// next snapshot is due at the next interval).
    pub(in crate::broker::shard) async fn snapshot_offsets_logged(&self) {
        if let Err(e) = self.snapshot_offsets().await {
            tracing::warn!(shard = %self.id, "snapshot of the committed offsets failed: {}", e.message);
        }
    }

    /// [`Self::snapshot_offsets`], then [`Self::durable_and_confirmed`]: for a change another
    /// file already holds durably. A topic's deletion is in `topics.json` at once; were the
    /// snapshot that forgets its offsets lost to a power cut, or to a failover onto a replica
    /// that had not fetched it, a topic created again under its name would get them back. Err:
    /// the snapshot was not stored, not made durable or not confirmed (what to tell whoever
    /// waits for the change).
    pub(in crate::broker::shard) async fn snapshot_offsets_durably(&self) -> Result<(), String> {
        let failed = |why: String| {
            let message = format!("shard {}: the committed offsets' snapshot {why}", self.id);
            tracing::error!("{message}");
            message
        };
        self.snapshot_offsets().await.map_err(|e| failed(format!("failed: {}", e.message)))?;
        self.durable_and_confirmed(self.log.append_end()).await.map_err(failed)
    }

    /// Before serving: rebuilds the committed offsets from `%SYS%offsets`, replaying from the
    /// last complete snapshot.
    pub async fn start_groups(&self) -> Result<OffsetsRecovered, BrokerError> {
        let t = self.clock.now();
        let o = self.log.offsets(SYS_OFFSETS);
        let start = self.last_snapshot_start(o.min, o.next).await?;
        // What the replay below reads stays until a later snapshot is durable (with no record
        // yet, the pin holds from the first one written).
        self.log.pin_retention(SYS_OFFSETS, Some(start));
        let mut replay = OffsetsReplay::new(self.config.group.max_committed_offsets);
        self.read_system_records(SYS_OFFSETS, start, o.next, |_, _, key, body| {
            replay.record(key, body)
        })
        .await?;
        let (records, skipped) = (replay.records, replay.skipped);
        // Offsets restored count their retention from now: the log does not say when a group
        // was last active.
        self.coordinator.borrow_mut().restore(replay.finish(), self.clock.now());
        // Topics deleted before a crash that came before the snapshot after their deletion:
        // the next snapshot stores the offsets without them.
        self.forget_deleted_topics();
        if skipped > 0 {
            tracing::warn!(shard = %self.id, skipped, "offset records that could not be applied");
        }
        tracing::info!(
            shard = %self.id,
            from = start,
            records,
            offsets = self.coordinator.borrow().offsets_len(),
            elapsed_ms = self.clock.now().saturating_duration_since(t).as_millis() as u64,
            "committed offsets rebuilt"
        );
        Ok(OffsetsRecovered { from: start, records })
    }

    /// Offset of the first part of the last complete snapshot in `[min, next)`, else `min`.
    async fn last_snapshot_start(&self, min: u64, next: u64) -> Result<u64, BrokerError> {
        let mut hi = next;
        while hi > min {
            let lo = hi.saturating_sub(SNAPSHOT_SEARCH_STEP).max(min);
            let mut starts = Vec::new();
            self.read_system_records(SYS_OFFSETS, lo, hi, |offset, _, key, _| {
                if let Some((0, parts)) = parse_snapshot_key(key) {
                    starts.push((offset, parts));
                }
            })
            .await?;
            for (first, parts) in starts.into_iter().rev() {
                let end = first + u64::from(parts);
                if end > next {
                    continue;
                }
                let mut complete = true;
                self.read_system_records(SYS_OFFSETS, first + 1, end, |offset, _, key, _| {
                    complete &= parse_snapshot_key(key) == Some(((offset - first) as u32, parts));
                })
                .await?;
                if complete {
                    return Ok(first);
                }
            }
            hi = lo;
        }
        Ok(min)
    }
}
