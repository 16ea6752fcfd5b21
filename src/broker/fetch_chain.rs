//! A connection's fetch chains: which queue each of its recent FETCHes read and where its
//! answer's scan ended, for the FETCH_NEXT that continues it (docs/protocol.md, "Fetch
//! continued").
//!
//! A queue's next fetch starts where the answer to the one before it ends, so a client that
//! names an offset has one fetch of a queue in flight: the broker waits for its request while
//! the client takes the answer, and the client waits while the broker reads and sends. A
//! FETCH_NEXT names the earlier fetch instead (by its correlation id) and may be sent right
//! behind it; the connection holds it until that fetch's answer is known, then serves it as a
//! FETCH from there. Both stay in flight, so the broker reads and writes the second while the
//! client takes the first.
//!
//! Bounds: a connection remembers its last [`MAX_LINKS`] fetches (a client sends the
//! FETCH_NEXT right behind the fetch it continues, so only the newest matter); an older one, or
//! one already continued, is unknown, and its FETCH_NEXT is answered FETCH_CHAIN_BROKEN, as is
//! the FETCH_NEXT of a fetch that failed. A FETCH_NEXT waiting for its fetch holds its place in
//! the connection's in-flight bounds, as every request does.

use std::collections::{BTreeMap, HashMap};

use futures::channel::oneshot;

use super::error::BrokerError;
use super::shard::{Answer, LocalReply};
use crate::protocol::{ErrorCode, Request, Response};

/// Fetches a connection remembers for FETCH_NEXT, at most.
pub const MAX_LINKS: usize = 256;

/// A remembered fetch: its queue and tags, and where its answer's scan ends once it is known.
pub struct Link {
    topic: String,
    queue_id: u32,
    tags: Vec<Vec<u8>>,
    end: oneshot::Receiver<Option<u64>>,
}

impl Link {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    pub fn tags(&self) -> &[Vec<u8>] {
        &self.tags
    }

    /// The FETCH that continues this link's fetch with `max_bytes` and `max_wait_ms`, once
    /// that fetch's answer is known; the refusal when it failed.
    pub async fn continued(self, max_bytes: u32, max_wait_ms: u32) -> Result<Request, BrokerError> {
        match self.end.await {
            Ok(Some(offset)) => Ok(Request::Fetch {
                topic: self.topic,
                queue_id: self.queue_id,
                offset,
                max_bytes,
                max_wait_ms,
                tags: self.tags,
            }),
            _ => Err(broken("the fetch it continues failed; fetch from an offset")),
        }
    }
}

/// Held by a fetch's task: tells the FETCH_NEXT continuing it (if any) where the fetch ended.
/// Dropped without [`Self::finish`], it tells that the fetch failed.
pub struct EndSender(oneshot::Sender<Option<u64>>);

impl EndSender {
    /// Reports the fetch's outcome: where its scan ended ([`scan_end`]), none for a failure.
    pub fn finish(self, reply: &LocalReply) {
        // Nobody continues it: nothing to tell.
        let _ = self.0.send(scan_end(reply));
    }
}

/// The FETCH_CHAIN_BROKEN refusal.
pub fn broken(why: &str) -> BrokerError {
    BrokerError::new(ErrorCode::FETCH_CHAIN_BROKEN, why)
}

/// Where a fetch's answer says the queue's next fetch starts: its scan end. None for an
/// error, or an answer that is not a fetch's.
pub fn scan_end(reply: &LocalReply) -> Option<u64> {
    match reply {
        Ok(Answer::Batches { scan_end_offset, .. })
        | Ok(Answer::Response(Response::Fetch { scan_end_offset, .. })) => Some(*scan_end_offset),
        _ => None,
    }
}

/// The connection's remembered fetches, by correlation id, oldest forgotten first.
pub struct FetchChains {
    links: HashMap<u32, (u64, Link)>,
    /// Registration number to correlation id, for forgetting the oldest.
    order: BTreeMap<u64, u32>,
    next_seq: u64,
    max: usize,
}

impl Default for FetchChains {
    fn default() -> Self {
        FetchChains::new(MAX_LINKS)
    }
}

impl FetchChains {
    pub fn new(max: usize) -> Self {
        FetchChains { links: HashMap::new(), order: BTreeMap::new(), next_seq: 0, max: max.max(1) }
    }

    /// Remembers fetch `id` (a correlation id) of `topic`'s queue `queue_id` with `tags`, for a
    /// FETCH_NEXT to continue; returns what its task reports its outcome with. Forgets the
    /// oldest beyond the bound, and an older fetch with the same id.
    pub fn register(
        &mut self,
        id: u32,
        topic: String,
        queue_id: u32,
        tags: Vec<Vec<u8>>,
    ) -> EndSender {
        let (tx, end) = oneshot::channel();
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some((old, _)) = self.links.insert(id, (seq, Link { topic, queue_id, tags, end })) {
            self.order.remove(&old);
        }
        self.order.insert(seq, id);
        while self.links.len() > self.max {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.links.remove(&oldest);
        }
        EndSender(tx)
    }

    /// The fetch FETCH_NEXT `after` continues, taken: a fetch is continued once.
    pub fn take(&mut self, after: u32) -> Option<Link> {
        let (seq, link) = self.links.remove(&after)?;
        self.order.remove(&seq);
        Some(link)
    }

    /// Fetches remembered now.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn batches(scan_end_offset: u64) -> LocalReply {
        Ok(Answer::Batches { min_offset: 0, next_offset: 99, scan_end_offset, batches: Vec::new() })
    }

    fn fetch_of(r: Result<Request, BrokerError>) -> (String, u32, u64, u32, u32, Vec<Vec<u8>>) {
        match r {
            Ok(Request::Fetch { topic, queue_id, offset, max_bytes, max_wait_ms, tags }) => {
                (topic, queue_id, offset, max_bytes, max_wait_ms, tags)
            }
            other => panic!("not a fetch: {:?}", other.map(|r| r.api_key())),
        }
    }

    #[test]
    fn a_continued_fetch_reads_the_same_queue_and_tags_from_where_the_scan_ended() {
        let mut chains = FetchChains::default();
        let end = chains.register(7, "t".into(), 3, vec![b"a".to_vec()]);
        let link = chains.take(7).expect("registered");
        let mut next = Box::pin(link.continued(4096, 50));
        assert!(next.as_mut().now_or_never().is_none(), "waits for the fetch's answer");
        end.finish(&batches(42));
        let got = fetch_of(next.now_or_never().expect("answered"));
        assert_eq!(got, ("t".to_string(), 3, 42, 4096, 50, vec![b"a".to_vec()]));
        assert!(chains.take(7).is_none(), "a fetch is continued once");
        assert!(chains.is_empty());
    }

    #[test]
    fn the_scan_end_of_a_forwarded_answer_counts_and_a_failure_breaks_the_chain() {
        let forwarded: LocalReply = Ok(Answer::Response(Response::Fetch {
            min_offset: 0,
            next_offset: 10,
            scan_end_offset: 8,
            batches: Vec::new(),
        }));
        assert_eq!(scan_end(&forwarded), Some(8));
        assert_eq!(scan_end(&Ok(Answer::Response(Response::ListTopics { topics: vec![] }))), None);
        let mut chains = FetchChains::default();
        for (id, reply) in [(1, Err(broken("x"))), (2, batches(5))] {
            let end = chains.register(id, "t".into(), 0, Vec::new());
            let link = chains.take(id).unwrap();
            end.finish(&reply);
            let got = link.continued(1, 0).now_or_never().unwrap();
            if id == 1 {
                assert_eq!(got.unwrap_err().code, ErrorCode::FETCH_CHAIN_BROKEN);
            } else {
                assert_eq!(fetch_of(got).2, 5);
            }
        }
        // A fetch task dropped without an outcome (its connection went away) breaks it too.
        let end = chains.register(3, "t".into(), 0, Vec::new());
        let link = chains.take(3).unwrap();
        drop(end);
        let got = link.continued(1, 0).now_or_never().unwrap();
        assert_eq!(got.unwrap_err().code, ErrorCode::FETCH_CHAIN_BROKEN);
    }

    #[test]
    fn the_oldest_fetches_are_forgotten_beyond_the_bound_and_a_reused_id_replaces() {
        let mut chains = FetchChains::new(4);
        let mut ends = Vec::new();
        for id in 0..10u32 {
            ends.push(chains.register(id, format!("t{id}"), id, Vec::new()));
            assert!(chains.len() <= 4);
        }
        assert!((0..6).all(|id| chains.take(id).is_none()), "forgotten");
        assert!(chains.take(6).is_some());
        assert_eq!(chains.len(), 3);
        // The same id again (a client's ids wrap around): the newer fetch is the one continued.
        let _old = chains.register(8, "old".into(), 0, Vec::new());
        let newer = chains.register(8, "new".into(), 1, Vec::new());
        assert_eq!(chains.len(), 3);
        let link = chains.take(8).unwrap();
        newer.finish(&batches(3));
        let got = fetch_of(link.continued(1, 0).now_or_never().unwrap());
        assert_eq!((got.0.as_str(), got.1, got.2), ("new", 1, 3));
        // Taken links leave no trace in the order: registering many more stays bounded.
        for id in 100..10_000u32 {
            let _ = chains.register(id, "t".into(), 0, Vec::new());
            let _ = chains.take(id);
        }
        assert!(chains.order.len() <= 4 && chains.links.len() <= 4);
    }
}
