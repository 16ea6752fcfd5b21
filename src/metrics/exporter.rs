//! Gathering a scrape from the shards without sharing anything with them.
//!
//! The exporter runs on the endpoint's connection thread, never on a shard. Each shard has an
//! inbox (a bounded channel the exporter holds the senders of); a scrape sends every shard a
//! [`ShardQuery`] and waits, at most `scrape_timeout`, for the answers on a channel of its
//! own. A shard answers from its low-share control task queue by copying its counters, so
//! the data path never takes a lock or touches an atomic another thread writes: the only
//! cross-thread traffic is these messages, a few per scrape.
//!
//! Two rounds: first every shard's snapshot (counters, its queues, the committed offsets of
//! the groups it coordinates), then, if groups have offsets, the ends of the queues those
//! offsets are on, which their owner shards answer (the way `ringmq group describe` joins
//! the coordinator's offsets with the owners' ends). A shard that does not answer in time is
//! reported `ringmq_shard_up 0` and left out; the scrape still answers.
//!
//! Scrapes run one at a time (a mutex among the endpoint's threads only), so a shard's inbox
//! never holds more than one query per scrape.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;

use super::snapshot::{
    capped_group_offsets, queues_for_lag, BrokerSnapshot, SeriesLimits, ShardSnapshot,
};

/// What the exporter asks a shard.
#[derive(Debug, Clone)]
pub enum QueryKind {
    /// The shard's counters and what it owns, capped by the limits.
    Snapshot(SeriesLimits),
    /// The next offset of each of these queues that the shard owns (others are skipped).
    QueueEnds(Arc<Vec<(String, u32)>>),
}

/// A shard's answer.
#[derive(Debug)]
pub enum ShardAnswer {
    Snapshot(Box<ShardSnapshot>),
    QueueEnds(Vec<((String, u32), u64)>),
}

/// One query, with where to answer. The shard must answer with `try_send`: the channel has
/// room for every shard's answer, and a full or closed one means the scrape gave up.
#[derive(Debug)]
pub struct ShardQuery {
    pub kind: QueryKind,
    pub reply: SyncSender<ShardAnswer>,
}

/// A shard's end of its channel from the exporter.
pub type Inbox = mpsc::Receiver<ShardQuery>;

/// Queries waiting in one shard's inbox at most (one per round of one scrape, plus slack).
const INBOX_CAPACITY: usize = 2;

pub struct Exporter {
    shards: Vec<mpsc::Sender<ShardQuery>>,
    limits: SeriesLimits,
    scrape_timeout: Duration,
    one_at_a_time: Mutex<()>,
}

impl Exporter {
    /// An exporter for `shard_count` shards, and each shard's inbox (element `i` for shard `i`).
    pub fn new(
        shard_count: usize,
        limits: SeriesLimits,
        scrape_timeout: Duration,
    ) -> (Exporter, Vec<Inbox>) {
        let (senders, inboxes) = (0..shard_count).map(|_| mpsc::channel(INBOX_CAPACITY)).unzip();
        let exporter =
            Exporter { shards: senders, limits, scrape_timeout, one_at_a_time: Mutex::new(()) };
        (exporter, inboxes)
    }

    /// Asks every shard and joins the answers.
    pub fn gather(&self) -> BrokerSnapshot {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let deadline = Instant::now() + self.scrape_timeout;
        let mut snapshots = Vec::with_capacity(self.shards.len());
        for answer in self.ask_all(QueryKind::Snapshot(self.limits), deadline) {
            if let ShardAnswer::Snapshot(s) = answer {
                snapshots.push(*s);
            }
        }
        let offsets = capped_group_offsets(&snapshots, self.limits);
        let mut ends = HashMap::new();
        if !offsets.is_empty() {
            let queues = Arc::new(queues_for_lag(&offsets));
            for answer in self.ask_all(QueryKind::QueueEnds(queues), deadline) {
                if let ShardAnswer::QueueEnds(e) = answer {
                    ends.extend(e);
                }
            }
        }
        BrokerSnapshot::assemble(self.shards.len(), snapshots, &ends, self.limits)
    }

    /// Sends `kind` to every shard; the answers that arrive before `deadline`.
    fn ask_all(&self, kind: QueryKind, deadline: Instant) -> Vec<ShardAnswer> {
        let (tx, rx): (SyncSender<ShardAnswer>, Receiver<ShardAnswer>) =
            sync_channel(self.shards.len());
        let mut asked = 0;
        for shard in &self.shards {
            // A full inbox means the shard has not taken the last scrape's query yet; a closed
            // one that it stopped. Either way it is reported as not answering.
            if shard.clone().try_send(ShardQuery { kind: kind.clone(), reply: tx.clone() }).is_ok()
            {
                asked += 1;
            }
        }
        drop(tx);
        let mut answers = Vec::with_capacity(asked);
        while answers.len() < asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) => answers.push(a),
                Err(_) => break,
            }
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::{GroupOffsetSample, QueueSample};
    use futures::StreamExt;

    const LIMITS: SeriesLimits = SeriesLimits { max_queue_series: 10, max_group_series: 10 };

    /// Answers like a shard would, on a thread of its own; `silent` never answers.
    fn fake_shard(id: u32, mut inbox: Inbox, silent: bool) -> glommio::ExecutorJoinHandle<()> {
        crate::runtime::spawn_executor(
            crate::runtime::ExecutorOptions::default(),
            move || async move {
                while let Some(q) = inbox.next().await {
                    if silent {
                        continue;
                    }
                    let answer = match q.kind {
                        QueryKind::Snapshot(_) => {
                            let mut s = ShardSnapshot { shard: id, ..Default::default() };
                            s.counters.produce_records = 10 + u64::from(id);
                            if id == 0 {
                                s.group_offsets = vec![GroupOffsetSample {
                                    group: "g".into(),
                                    topic: "t".into(),
                                    queue: 1,
                                    committed_offset: 3,
                                }];
                                s.group_offsets_held = 1;
                            } else {
                                s.queues = vec![QueueSample {
                                    topic: "t".into(),
                                    queue: 1,
                                    shard: id,
                                    min_offset: 0,
                                    next_offset: 8,
                                }];
                                s.queues_owned = 1;
                            }
                            ShardAnswer::Snapshot(Box::new(s))
                        }
                        QueryKind::QueueEnds(queues) => ShardAnswer::QueueEnds(if id == 1 {
                            queues.iter().map(|q| (q.clone(), 8)).collect()
                        } else {
                            Vec::new()
                        }),
                    };
                    let _ = q.reply.try_send(answer);
                }
            },
        )
        .unwrap()
    }

    #[test]
    fn a_scrape_joins_every_shard_and_computes_lag_from_the_owners_ends() {
        let (exporter, inboxes) = Exporter::new(2, LIMITS, Duration::from_secs(20));
        let threads: Vec<_> =
            inboxes.into_iter().enumerate().map(|(i, b)| fake_shard(i as u32, b, false)).collect();
        let b = exporter.gather();
        assert_eq!(
            b.shards.iter().map(|s| s.counters.produce_records).collect::<Vec<_>>(),
            [10, 11]
        );
        assert_eq!(b.groups.len(), 1);
        assert_eq!(b.groups[0].lag(), Some(5));
        assert_eq!(b.queues.len(), 1);
        drop(exporter);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_silent_or_stopped_shard_is_left_out_after_the_timeout() {
        let (exporter, mut inboxes) = Exporter::new(3, LIMITS, Duration::from_millis(200));
        drop(inboxes.pop()); // shard 2 stopped
        let silent = fake_shard(1, inboxes.pop().unwrap(), true);
        let live = fake_shard(0, inboxes.pop().unwrap(), false);
        let started = Instant::now();
        let b = exporter.gather();
        assert_eq!(b.shards.iter().map(|s| s.shard).collect::<Vec<_>>(), [0]);
        assert_eq!(b.shard_count, 3);
        assert_eq!(b.groups[0].lag(), None, "the queue's owner did not answer");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(exporter);
        live.join().unwrap();
        silent.join().unwrap();
    }
}
