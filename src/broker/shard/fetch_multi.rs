//! FETCH_MULTI on the shard: the queues it owns read together in log order
//! ([`ShardLog::read_many`]), the others' asked of their owner shards (one request each), and
//! a wait for data when none of the queues has any.

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;

use super::*;
use crate::protocol::fetch_multi::{FetchMulti, FetchQueue, FetchResult, FetchTopic, FetchedQueue};
use crate::protocol::ErrorResponse;

/// One queue's part of a FETCH_MULTI answer: its index in the request and its batches (as a
/// FETCH answer's) or error.
#[derive(Debug)]
pub struct MultiPart {
    pub index: u32,
    pub result: Result<Fetched, BrokerError>,
}

/// A queue's batches in a FETCH_MULTI answer, as the log holds them.
#[derive(Debug)]
pub struct Fetched {
    pub min_offset: u64,
    pub next_offset: u64,
    pub scan_end_offset: u64,
    pub batches: Vec<ReadBuf>,
}

/// Parts in index order as a `Send` response (batches copied once), for replies crossing
/// shards.
pub(crate) fn multi_response(mut parts: Vec<MultiPart>) -> Response {
    parts.sort_unstable_by_key(|p| p.index);
    let results = parts
        .into_iter()
        .map(|p| FetchResult {
            index: p.index,
            result: p
                .result
                .map(|f| FetchedQueue {
                    min_offset: f.min_offset,
                    next_offset: f.next_offset,
                    scan_end_offset: f.scan_end_offset,
                    batches: f.batches.iter().flat_map(|b| b.iter().copied()).collect(),
                })
                .map_err(|e| ErrorResponse {
                    code: e.code as u16,
                    message: e.message,
                    detail: e.detail,
                }),
        })
        .collect();
    Response::FetchMulti { results }
}

/// A queue owned by another shard: its index in the request, topic, tags and position.
struct Remote<'a> {
    index: u32,
    topic: &'a str,
    tags: &'a [Vec<u8>],
    queue: FetchQueue,
}

/// A queue this shard owns: its index in the request, key, position and its topic's tags.
struct Local<'a> {
    index: u32,
    key: QueueKey,
    from: u64,
    tags: &'a [Vec<u8>],
}

impl<L: ShardLog> Shard<L> {
    /// Serves a FETCH_MULTI: every queue's batches or error; queues with nothing new at their
    /// offset have no part. When none has anything, waits up to `max_wait_ms` (bounded by
    /// `max_long_poll_wait_ms`) for one of them to receive data.
    pub(super) async fn fetch_multi(self: &Rc<Self>, f: FetchMulti) -> LocalReply {
        self.stats.borrow_mut().fetch_requests += 1;
        let max_bytes = (f.max_bytes as usize).min(self.config.broker.max_fetch_bytes);
        let wait_ms = f.max_wait_ms.min(self.config.broker.max_long_poll_wait_ms);
        let mut parts = Vec::new();
        let mut local = Vec::new();
        let mut remote: HashMap<ShardId, Vec<Remote>> = HashMap::new();
        let mut index = 0u32;
        for t in &f.topics {
            // The topic is looked up once for its queues.
            let entry = self.topic_entry(&t.topic);
            for &queue in &t.queues {
                let i = index;
                index += 1;
                let entry =
                    match entry.as_ref().map_err(Clone::clone).and_then(|entry| {
                        has_queue(&t.topic, entry, queue.queue_id).map(|()| entry)
                    }) {
                        Ok(entry) => entry,
                        Err(e) => {
                            parts.push(MultiPart { index: i, result: Err(e) });
                            continue;
                        }
                    };
                let owner = owner_shard(&t.topic, queue.queue_id, self.shard_count);
                let tags = t.tags.as_slice();
                if owner == self.id {
                    let key = QueueKey::new(TopicId::new(entry.id), QueueId::new(queue.queue_id));
                    local.push(Local { index: i, key, from: queue.offset, tags });
                } else {
                    let (index, topic) = (i, t.topic.as_str());
                    remote.entry(owner).or_default().push(Remote { index, topic, tags, queue });
                }
            }
        }
        // The answer's bytes are shared between the shards that hold the queues.
        let owners = remote.len() + usize::from(!local.is_empty());
        let share = (max_bytes / owners.max(1)).max(1);
        // First everyone answers at once; only if nobody has anything, everyone waits and the
        // first to find data answers.
        for wait in [None, Some(wait_ms)] {
            if wait.is_some() && (wait_ms == 0 || !parts.is_empty()) {
                break;
            }
            let mut asked: FuturesUnordered<_> = FuturesUnordered::new();
            if !local.is_empty() {
                asked.push(self.fetch_multi_here(&local, share, wait).boxed_local());
            }
            for (&owner, queues) in &remote {
                asked.push(self.fetch_multi_there(owner, queues, share, wait).boxed_local());
            }
            while let Some(found) = asked.next().await {
                parts.extend(found?);
                if wait.is_some() && !parts.is_empty() {
                    break;
                }
            }
        }
        parts.sort_unstable_by_key(|p| p.index);
        Ok(Answer::Multi(parts))
    }

    /// The queues this shard owns, read together; with `wait`, waits up to that many ms for
    /// one of them to have data. A queue whose batches its tags filtered out has a part with
    /// no batches and the scan end past them.
    async fn fetch_multi_here(
        &self,
        queues: &[Local<'_>],
        max_bytes: usize,
        wait: Option<u32>,
    ) -> Result<Vec<MultiPart>, BrokerError> {
        let deadline = wait.map(|ms| self.clock.now() + Duration::from_millis(ms.into()));
        loop {
            let mut parts = Vec::new();
            let mut reads = Vec::new();
            let mut read_index = Vec::new();
            let mut bounds = Vec::new();
            for q in queues {
                let (index, key, from) = (q.index, q.key, q.from);
                let o = self.log.offsets(key);
                if from < o.min || from > o.next {
                    parts.push(MultiPart { index, result: Err(out_of_range(key, from, o)) });
                } else if from < o.next {
                    reads.push((key, from));
                    read_index.push((index, q.tags));
                    bounds.push(o);
                }
            }
            if !reads.is_empty() {
                let read_started = self.clock.now();
                let read = self.log.read_many(&reads, max_bytes).await?;
                let took = self.clock.now().saturating_duration_since(read_started);
                self.probe.borrow_mut().record_fetch_read(took);
                let answered = read.into_iter().zip(&reads).zip(read_index).zip(bounds);
                for (((result, &(_, from)), (index, tags)), o) in answered {
                    match result {
                        Err(e) => parts.push(MultiPart { index, result: Err(e.into()) }),
                        Ok(batches) if batches.is_empty() => {}
                        Ok(mut batches) => {
                            let scan_end_offset =
                                super::fetch::keep_tagged(&mut batches, from, tags);
                            let sent: usize = batches.iter().map(|b| b.len()).sum();
                            self.stats.borrow_mut().fetch_bytes += sent as u64;
                            parts.push(MultiPart {
                                index,
                                result: Ok(Fetched {
                                    min_offset: o.min,
                                    next_offset: o.next,
                                    scan_end_offset,
                                    batches,
                                }),
                            });
                        }
                    }
                }
            }
            let Some(deadline) = deadline else { return Ok(parts) };
            if !parts.is_empty() || self.clock.now() >= deadline || self.stopping.get() {
                return Ok(parts);
            }
            let Some(waiter) = self.long_poll.borrow_mut().register_any() else {
                return Ok(parts);
            };
            // Woken by an append to any queue of this shard, shutdown, or the deadline.
            runtime::timeout_at(&*self.clock, deadline, waiter).await;
        }
    }

    /// The queues `owner` owns, asked of it in one FETCH_MULTI.
    async fn fetch_multi_there(
        &self,
        owner: ShardId,
        queues: &[Remote<'_>],
        max_bytes: usize,
        wait: Option<u32>,
    ) -> Result<Vec<MultiPart>, BrokerError> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for r in queues {
            match topics.last_mut() {
                Some(t) if t.topic == r.topic && t.tags == r.tags => t.queues.push(r.queue),
                _ => topics.push(FetchTopic {
                    topic: r.topic.to_owned(),
                    tags: r.tags.to_vec(),
                    queues: vec![r.queue],
                }),
            }
        }
        let request = Request::FetchMulti(FetchMulti {
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
            max_wait_ms: wait.unwrap_or(0),
            topics,
        });
        let Response::FetchMulti { results } =
            self.forward(owner, request, "the owner shard").await?
        else {
            return Err(BrokerError::new(ErrorCode::INTERNAL, "FETCH_MULTI got another answer"));
        };
        let mut parts = Vec::with_capacity(results.len());
        for r in results {
            let Some(q) = queues.get(r.index as usize) else {
                return Err(BrokerError::new(
                    ErrorCode::INTERNAL,
                    format!("shard {owner} answered FETCH_MULTI for a queue it was not asked"),
                ));
            };
            let result = match r.result {
                Ok(f) => Ok(Fetched {
                    min_offset: f.min_offset,
                    next_offset: f.next_offset,
                    scan_end_offset: f.scan_end_offset,
                    batches: vec![ReadBuf::from_vec(f.batches)],
                }),
                Err(e) => Err(BrokerError {
                    code: ErrorCode::from_u16(e.code).unwrap_or(ErrorCode::INTERNAL),
                    message: e.message,
                    detail: e.detail,
                }),
            };
            parts.push(MultiPart { index: q.index, result });
        }
        Ok(parts)
    }
}
