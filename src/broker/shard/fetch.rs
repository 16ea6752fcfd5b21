//! Fetch on the owning shard: stored batches from the one holding the offset, tag-summary
//! skipping on the broker, and long-polls parked at the end of the queue.

use super::*;

impl<L: ShardLog> Shard<L> {
    /// Serves a fetch: stored batches from the one holding `offset`; long-polls at the end.
    /// With `tags`, batches whose tag summary cannot match are skipped here (DESIGN.md section
    /// 3), scanning at most [`TAG_SCAN_FACTOR`] times `max_bytes` per request; the reply's
    /// scan end tells the client where to go on either way.
    pub(super) async fn fetch(
        &self,
        key: QueueKey,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
        tags: &[Vec<u8>],
    ) -> LocalReply {
        self.stats.borrow_mut().fetch_requests += 1;
        let max_bytes = (max_bytes as usize).min(self.config.broker.max_fetch_bytes);
        let wait_ms = max_wait_ms.min(self.config.broker.max_long_poll_wait_ms);
        let deadline = self.clock.now() + Duration::from_millis(wait_ms.into());
        let scan_budget = max_bytes.max(64 * 1024).saturating_mul(TAG_SCAN_FACTOR);
        let mut scanned = 0usize;
        let mut from = offset;
        loop {
            let o = self.log.offsets(key);
            if from < o.min || from > o.next {
                return Err(out_of_range(key, from, o));
            }
            let empty = |o: crate::broker::shard_log::OffsetRange, at: u64| Answer::Batches {
                min_offset: o.min,
                next_offset: o.next,
                scan_end_offset: at,
                batches: Vec::new(),
            };
            if from == o.next {
                let now = self.clock.now();
                if now >= deadline || self.stopping.get() || scanned >= scan_budget {
                    return Ok(empty(o, from));
                }
                let Some(waiter) = self.long_poll.borrow_mut().register(key) else {
                    return Ok(empty(o, from));
                };
                let late = self.late_end(key);
                let flushed = async {
                    match late {
                        Some(end) => self.log.wait_visible(end).await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                // Woken by an append, a late flush, shutdown, or the deadline; look again.
                let flushed = std::pin::pin!(flushed);
                let woken = select(waiter, flushed);
                if let Some(Either::Right((false, _))) =
                    runtime::timeout_at(&*self.clock, deadline, woken).await
                {
                    // The log stopped: that data never becomes readable; stop waiting for it.
                    self.late_visible.borrow_mut().remove(&key);
                }
                continue;
            }
            let read_started = self.clock.now();
            let mut batches = self.log.read(key, from, max_bytes).await?;
            let took = self.clock.now().saturating_duration_since(read_started);
            self.probe.borrow_mut().record_fetch_read(took);
            let total: usize = batches.iter().map(|b| b.len()).sum();
            let scan_end = keep_tagged(&mut batches, from, tags);
            let sent: usize = batches.iter().map(|b| b.len()).sum();
            self.stats.borrow_mut().fetch_bytes += sent as u64;
            let o = self.log.offsets(key);
            if batches.is_empty() && scan_end > from {
                // Everything read was filtered out: look further, within the scan budget.
                scanned += total;
                from = scan_end;
                if scanned >= scan_budget {
                    return Ok(empty(o, from));
                }
                continue;
            }
            return Ok(Answer::Batches {
                min_offset: o.min,
                next_offset: o.next,
                scan_end_offset: scan_end,
                batches,
            });
        }
    }

    /// Where the queue's acknowledged but not yet readable data ends, if it has any.
    pub(super) fn late_end(&self, key: QueueKey) -> Option<u64> {
        let mut late = self.late_visible.borrow_mut();
        let end = *late.get(&key)?;
        if end <= self.log.visible_end() {
            late.remove(&key);
            return None;
        }
        Some(end)
    }
}

/// Leaves out of `batches` (read from offset `from`) those whose tag summary cannot hold one of
/// `tags` (empty: none left out) and returns the offset the scan ended at: past the last batch
/// read, kept or not. A header that does not decode is kept: the client reports it. FETCH and
/// FETCH_MULTI filter alike.
pub(super) fn keep_tagged(batches: &mut Vec<ReadBuf>, from: u64, tags: &[Vec<u8>]) -> u64 {
    let scan_end = batches
        .last()
        .and_then(|b| read_header(b).ok())
        .map_or(from, |h| h.next_offset().max(from));
    if !tags.is_empty() {
        batches.retain(|b| {
            read_header(b)
                .map_or(true, |h| h.tag_summary.may_contain_any(tags.iter().map(Vec::as_slice)))
        });
    }
    scan_end
}
