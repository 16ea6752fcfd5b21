//! The replication handler (`shard/replication.rs`) on one shard over the real log on the
//! simulated directory, driven by REPLICA_JOIN / REPLICA_FETCH requests as a replica sends
//! them: the sync-produce gate and acknowledgement, the confirmed position capping consumers,
//! refusals, and a replica's NOT_MASTER.

use super::*;

use crate::broker::shard::replication::{MasterSide, ReplicaSide, ShardRole};
use crate::protocol::replication::{ReplRequest, ReplResponse, WireBatch};
use crate::replication::config::{Mode, ReplicationConfig, Role};
use crate::replication::epochs::{EpochEntry, EpochHistory};

const REPLICA: &str = "127.0.0.1:20911";

fn replication(mode: Mode, timeout_ms: u64) -> ReplicationConfig {
    ReplicationConfig {
        role: Some(Role::Master),
        replication: mode,
        replicas: vec![REPLICA.into()],
        sync_replication_timeout_ms: timeout_ms,
        replica_lag_max_ms: 60_000,
        ..Default::default()
    }
}

pub(super) async fn master(mode: Mode, timeout_ms: u64) -> Rc<Shard<SimLog>> {
    master_in(SimDir::new(3), mode, timeout_ms).await
}

/// A master shard (epoch 1 from position 0) on `dir`, its one replica not yet joined.
async fn master_in(dir: SimDir, mode: Mode, timeout_ms: u64) -> Rc<Shard<SimLog>> {
    master_with_metadata(dir, mode, timeout_ms, None).await
}

/// [`master_in`], with `metadata` as its topic table's file (topic changes need one).
pub(super) async fn master_with_metadata(
    dir: SimDir,
    mode: Mode,
    timeout_ms: u64,
    metadata: Option<MetadataStore>,
) -> Rc<Shard<SimLog>> {
    master_configured(dir, |_| {}, mode, timeout_ms, metadata).await
}

/// [`master_with_metadata`], its storage configured by `tweak` (the flush mode, say).
pub(super) async fn master_configured(
    dir: SimDir,
    tweak: impl FnOnce(&mut crate::storage::StorageConfig),
    mode: Mode,
    timeout_ms: u64,
    metadata: Option<MetadataStore>,
) -> Rc<Shard<SimLog>> {
    let rc = replication(mode, timeout_ms);
    let configured = rc.clone();
    let s = shard_with_metadata(
        dir,
        tweak,
        move |c| c.replication = Some(configured),
        runtime::system_clock(),
        metadata,
    )
    .await;
    let mut history = EpochHistory::new();
    history.begin(1, 0).unwrap();
    s.set_role(ShardRole::Master(MasterSide::new(&rc, history, 0)));
    s
}

fn join(end: u64) -> Request {
    Request::Replication(ReplRequest::Join {
        shard_count: 1,
        shard: 0,
        replica: REPLICA.into(),
        end,
        synced: end,
        history: EpochHistory::new(),
    })
}

pub(super) fn replica_fetch(session: u64, from: u64) -> Request {
    Request::Replication(ReplRequest::Fetch {
        session,
        from,
        synced: from,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
    })
}

pub(super) async fn fetched(
    s: &Rc<Shard<SimLog>>,
    session: u64,
    from: u64,
) -> (u64, Vec<WireBatch>) {
    match call(s, replica_fetch(session, from)).await.unwrap() {
        Response::Replication(ReplResponse::Fetch { next, batches, .. }) => (next, batches),
        other => panic!("{other:?}"),
    }
}

/// Bytes of batches a consumer's fetch got.
fn consumer_sees(r: Reply) -> usize {
    match r.unwrap() {
        Response::Fetch { batches, .. } => batches.len(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_sync_produce_waits_for_the_replica_and_consumers_see_confirmed_data_only() {
    run(|| async {
        let s = master(Mode::Sync, 60_000).await;
        // No replica in the in-sync set: refused before anything is written.
        let e = call(&s, produce(0, 2)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::SLAVE_NOT_AVAILABLE, "{e:?}");
        assert_eq!(s.log.append_end(), 0, "nothing was written");

        let session = match call(&s, join(0)).await.unwrap() {
            Response::Replication(ReplResponse::Join { session, truncate_to, .. }) => {
                assert_eq!(truncate_to, 0);
                session
            }
            other => panic!("{other:?}"),
        };
        let me = s.clone();
        let pending = runtime::spawn(async move { call(&me, produce(0, 2)).await });
        // The produce is stored, then waits for the replica.
        while s.log.append_end() == 0 {
            runtime::yield_once().await;
        }
        let (next, batches) = fetched(&s, session, 0).await;
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].position, 0);
        assert_eq!(next, batches[0].bytes.len() as u64);
        assert_eq!(consumer_sees(call(&s, fetch(0, 0)).await), 0, "not confirmed yet");
        // The next fetch acknowledges the batch: confirmed, the produce is answered.
        let (_, more) = fetched(&s, session, next).await;
        assert!(more.is_empty());
        match pending.await.unwrap() {
            Ok(Response::Produce { status, base_offset: 0, .. }) => {
                assert_eq!(status, SendStatus::SendOk)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(consumer_sees(call(&s, fetch(0, 0)).await), next as usize, "confirmed");
        match s.replication_sample() {
            Some(crate::metrics::ReplicationSample::Master {
                log_end,
                confirmed,
                in_sync_members: 2,
                replicas,
            }) => {
                assert_eq!((log_end, confirmed), (next, next));
                assert!(replicas[0].in_sync);
                assert_eq!(replicas[0].lag_bytes, Some(0));
            }
            other => panic!("{other:?}"),
        }

        // Refusals: a stale session, an unlisted replica, another shard count.
        let e = call(&s, replica_fetch(session + 100, next)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_ARGUMENT, "{e:?}");
        let mut other = join(0);
        if let Request::Replication(ReplRequest::Join { replica, .. }) = &mut other {
            *replica = "127.0.0.1:1".into();
        }
        assert_eq!(call(&s, other).await.unwrap_err().code, ErrorCode::INVALID_ARGUMENT);
        let mut other = join(0);
        if let Request::Replication(ReplRequest::Join { shard_count, .. }) = &mut other {
            *shard_count = 4;
        }
        let e = call(&s, other).await.unwrap_err();
        assert!(e.message.contains("broker.shards"), "{e:?}");
    });
}

pub(super) async fn joined(s: &Rc<Shard<SimLog>>, end: u64) -> u64 {
    match call(s, join(end)).await.unwrap() {
        Response::Replication(ReplResponse::Join { session, .. }) => session,
        other => panic!("{other:?}"),
    }
}

/// Makes the shard a replica of `master` (a scripted broker's address), with no epochs yet.
pub(super) fn follow(s: &Rc<Shard<SimLog>>, master: &str) {
    s.set_role(ShardRole::Replica(ReplicaSide {
        master: master.parse().unwrap(),
        advertise: None,
        fetch_bytes: 1 << 20,
        history: RefCell::new(EpochHistory::new()),
    }));
}

/// A produce of 2 messages to a sync master, stored and waiting for its replicas; and the
/// log's end after it.
async fn a_sync_produce_waiting(
    s: &Rc<Shard<SimLog>>,
) -> (glommio::task::JoinHandle<Result<Response, BrokerError>>, u64) {
    let me = s.clone();
    let pending = runtime::spawn(async move { call(&me, produce(0, 2)).await });
    while s.log.append_end() == 0 {
        runtime::yield_once().await;
    }
    (pending, s.log.append_end())
}

/// The replication stream `session` is over: the replica must join again.
async fn stream_ended(s: &Rc<Shard<SimLog>>, session: u64) {
    let e = call(s, replica_fetch(session, 0)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::INVALID_ARGUMENT, "{e:?}");
}

/// A new replica fetches the master's one batch (ending at `end`) and confirms it: the
/// `pending` produce is acknowledged SEND_OK.
async fn a_new_replica_confirms(
    s: &Rc<Shard<SimLog>>,
    pending: glommio::task::JoinHandle<Result<Response, BrokerError>>,
    end: u64,
) {
    let session = joined(s, 0).await;
    let (next, batches) = fetched(s, session, 0).await;
    assert_eq!((batches.len(), next), (1, end));
    fetched(s, session, next).await;
    match pending.await.unwrap() {
        Ok(Response::Produce { status, .. }) => assert_eq!(status, SendStatus::SendOk),
        other => panic!("{other:?}"),
    }
}

/// The master's confirmed position, as its metrics report it.
fn confirmed(s: &Rc<Shard<SimLog>>) -> u64 {
    match s.replication_sample() {
        Some(crate::metrics::ReplicationSample::Master { confirmed, .. }) => confirmed,
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_acknowledgement_of_bytes_the_stream_never_sent_is_refused() {
    run(|| async {
        let s = master(Mode::Sync, 60_000).await;
        let session = joined(&s, 0).await;
        let (pending, end) = a_sync_produce_waiting(&s).await;
        // The replica never fetched the batch: it cannot have it on disk, whatever it says.
        // Claimed as its log end and synced position, or as synced past its own log end.
        let lies = [(end, end), (0, end)];
        for (i, (from, synced)) in lies.into_iter().enumerate() {
            let session = if i == 0 { session } else { joined(&s, 0).await };
            let lie = Request::Replication(ReplRequest::Fetch {
                session,
                from,
                synced,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
            });
            let e = call(&s, lie).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_ARGUMENT, "{e:?}");
            assert_eq!(confirmed(&s), 0, "from {from}, synced {synced}: not confirmed");
            assert_eq!(consumer_sees(call(&s, fetch(0, 0)).await), 0);
            stream_ended(&s, session).await;
        }
        // A replica that does fetch the batch confirms it.
        a_new_replica_confirms(&s, pending, end).await;
        assert_eq!(confirmed(&s), end);
    });
}

#[test]
fn a_fetch_from_inside_a_batch_is_the_replicas_mistake_not_a_corrupt_log() {
    run(|| async {
        let s = master(Mode::Sync, 60_000).await;
        let session = joined(&s, 0).await;
        let (pending, end) = a_sync_produce_waiting(&s).await;
        let from_5 = |session| {
            Request::Replication(ReplRequest::Fetch {
                session,
                from: 5,
                synced: 0,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
            })
        };
        // A replica that fetches from inside the batch its stream sent it; and one whose log
        // "ends" 5 bytes into that batch (not a copy of the master's log), with the master's
        // history, which the join keeps and the fetch cannot continue from.
        assert_eq!(fetched(&s, session, 0).await.0, end);
        let mut inside = join(5);
        if let Request::Replication(ReplRequest::Join { history, synced, .. }) = &mut inside {
            *history = EpochHistory::from_entries(vec![EpochEntry { epoch: 1, start: 0 }]).unwrap();
            *synced = 0;
        }
        for round in 0..2 {
            let session = match round {
                0 => session,
                _ => match call(&s, inside.clone()).await.unwrap() {
                    Response::Replication(ReplResponse::Join { session, truncate_to, .. }) => {
                        assert_eq!(truncate_to, 5);
                        session
                    }
                    other => panic!("{other:?}"),
                },
            };
            let e = call(&s, from_5(session)).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_ARGUMENT, "{e:?}");
            assert!(e.message.contains("position 5"), "{e:?}");
            assert!(e.message.contains("not a batch boundary"), "{e:?}");
            assert!(!e.message.contains("corrupt"), "the master's log is not blamed: {e:?}");
            stream_ended(&s, session).await;
        }
        // Nothing is wrong with the master's log: a replica at a batch boundary gets the
        // batch and confirms it, and consumers read it.
        a_new_replica_confirms(&s, pending, end).await;
        assert_eq!(consumer_sees(call(&s, fetch(0, 0)).await), end as usize);
    });
}

#[test]
fn a_damaged_header_where_the_master_said_to_continue_is_still_reported_as_damage() {
    run(|| async {
        let dir = SimDir::new(5);
        let s = master_in(dir.clone(), Mode::Async, 60_000).await;
        for _ in 0..2 {
            call(&s, produce(0, 1)).await.unwrap();
        }
        s.log.flush().await.unwrap();
        let session = joined(&s, 0).await;
        // One batch (a budget of one byte still gets one whole batch).
        let one = Request::Replication(ReplRequest::Fetch {
            session,
            from: 0,
            synced: 0,
            max_bytes: 1,
            max_wait_ms: 0,
        });
        let next = match call(&s, one).await.unwrap() {
            Response::Replication(ReplResponse::Fetch { next, batches, .. }) => {
                assert_eq!(batches.len(), 1);
                next
            }
            other => panic!("{other:?}"),
        };
        assert!(next < s.log.append_end());
        // The second batch's stamped queue id is damaged on disk: no intact header starts
        // where this master told its replica to continue. Its log, not the replica, is wrong.
        let first = crate::storage::segment::segment_name(crate::storage::LogPosition::ZERO);
        dir.corrupt(&first, next as usize + 16);
        let e = call(&s, replica_fetch(session, next)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::INTERNAL, "{e:?}");
        assert!(e.message.contains("corrupt") && e.message.contains("master"), "{e:?}");
    });
}

#[test]
fn an_unconfirmed_sync_produce_is_answered_flush_slave_timeout() {
    run(|| async {
        let s = master(Mode::Sync, 100).await;
        let (stop_handle, stop) = crate::broker::shutdown::stop_pair();
        let timer = runtime::spawn(s.clone().replication_loop(stop));
        let Response::Replication(ReplResponse::Join { .. }) = call(&s, join(0)).await.unwrap()
        else {
            panic!("join")
        };
        // The replica never acknowledges: stored, then FLUSH_SLAVE_TIMEOUT; so is every other
        // append a client is answered for (a scheduled send here), not only PRODUCE.
        let scheduled = Request::ProduceScheduled {
            topic: "t".into(),
            queue_id: 0,
            delivery: crate::protocol::message::Delivery::Level(1),
            batch: batch(1).into(),
        };
        for request in [produce(0, 1), scheduled] {
            match call(&s, request).await {
                Ok(Response::Produce { status, .. }) => {
                    assert_eq!(status, SendStatus::FlushSlaveTimeout)
                }
                other => panic!("{other:?}"),
            }
        }
        let mut stop_handle = stop_handle;
        stop_handle.fire();
        timer.await;
    });
}

#[test]
fn async_mode_acknowledges_on_local_durability() {
    run(|| async {
        let s = master(Mode::Async, 60_000).await;
        let (mut stop_handle, stop) = crate::broker::shutdown::stop_pair();
        let timer = runtime::spawn(s.clone().replication_loop(stop));
        match call(&s, produce(0, 1)).await {
            Ok(Response::Produce { status, .. }) => assert_eq!(status, SendStatus::SendOk),
            other => panic!("{other:?}"),
        }
        // The in-sync set is the master alone: its consumers see what it synced (async flush:
        // after the flush; the replication timer moves the cap).
        s.log.flush().await.unwrap();
        let mut seen = 0;
        for _ in 0..500 {
            seen = consumer_sees(call(&s, fetch(0, 0)).await);
            if seen > 0 {
                break;
            }
            runtime::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen > 0, "the master's own synced data is confirmed");
        stop_handle.fire();
        timer.await;
    });
}

#[test]
fn a_replica_refuses_writes_with_its_masters_address_and_serves_reads() {
    run(|| async {
        let s = shard(4).await;
        let master: std::net::SocketAddr = "10.0.0.1:10911".parse().unwrap();
        s.set_role(ShardRole::Replica(ReplicaSide {
            master,
            advertise: None,
            fetch_bytes: 1 << 20,
            history: RefCell::new(EpochHistory::new()),
        }));
        let e = call(&s, produce(0, 1)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NOT_MASTER);
        assert_eq!(e.detail, ErrorDetail::NotMaster { master });
        let e = call(&s, Request::CreateTopic { topic: "x".into(), queue_count: 1 }).await;
        assert_eq!(e.unwrap_err().code, ErrorCode::NOT_MASTER);
        assert_eq!(call(&s, join(0)).await.unwrap_err().code, ErrorCode::NOT_MASTER);
        assert_eq!(consumer_sees(call(&s, fetch(0, 0)).await), 0, "reads are served");
        let multi = Request::FetchMulti(crate::protocol::fetch_multi::FetchMulti {
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            topics: vec![],
        });
        assert!(matches!(call(&s, multi).await, Ok(Response::FetchMulti { .. })));
    });
}

#[test]
fn a_master_answering_every_fetch_at_once_with_nothing_is_not_asked_in_a_busy_loop() {
    use crate::client::scripted_broker::{join_keeping, one_shard, scripted_broker};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    run(|| async {
        let s = shard(5).await;
        let epoch = s.topics.borrow().epoch;
        // An honest master holds a fetch with nothing new for up to MAX_REPLICA_WAIT_MS; this
        // one answers at once, every time.
        let fetches = Arc::new(AtomicU64::new(0));
        let counted = fetches.clone();
        let master = scripted_broker(move |port, request| match request {
            Request::Metadata { .. } => one_shard(port),
            Request::Replication(ReplRequest::Join { end, .. }) => {
                join_keeping(end, EpochHistory::new())
            }
            Request::Replication(ReplRequest::Fetch { from, .. }) => {
                counted.fetch_add(1, Ordering::Relaxed);
                Response::Replication(ReplResponse::Fetch {
                    confirmed: from,
                    topics_epoch: epoch,
                    next: from,
                    batches: Vec::new(),
                })
            }
            other => panic!("unexpected {other:?}"),
        });
        follow(&s, &master);
        let stop = futures::FutureExt::shared(Box::pin(runtime::sleep(Duration::from_millis(400))));
        s.clone().follow_master(stop).await.unwrap();
        let n = fetches.load(Ordering::Relaxed);
        // At most one fetch per `EMPTY_FETCH_PACE` (10 ms), plus slack.
        assert!((1..=45).contains(&n), "{n} fetches in 400 ms");
    });
}

#[test]
fn a_replica_whose_master_deleted_its_next_position_stops_following_instead_of_retrying() {
    use crate::client::scripted_broker::{join_keeping, one_shard, scripted_broker_refusing};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    run(|| async {
        let s = shard(6).await;
        // Joined, then retention deleted what the replica needs next (it lagged too long).
        let fetches = Arc::new(AtomicU64::new(0));
        let counted = fetches.clone();
        let master = scripted_broker_refusing(move |port, request| match request {
            Request::Metadata { .. } => Ok(one_shard(port)),
            Request::Replication(ReplRequest::Join { end, .. }) => {
                Ok(join_keeping(end, EpochHistory::new()))
            }
            Request::Replication(ReplRequest::Fetch { from, .. }) => {
                counted.fetch_add(1, Ordering::Relaxed);
                let e = crate::broker::shard::replication::behind_retention(from, 65_536, 70_000);
                Err((e.code, e.message, e.detail))
            }
            other => panic!("unexpected {other:?}"),
        });
        follow(&s, &master);
        // Generous: the follower must stop by itself long before this.
        let stop = futures::FutureExt::shared(Box::pin(runtime::sleep(Duration::from_secs(60))));
        let e = s.clone().follow_master(stop).await.unwrap_err();
        assert!(e.contains("no longer holds this replica's position"), "{e}");
        assert!(e.contains("from position 0"), "{e}");
        assert!(e.contains("oldest retained position 65536"), "{e}");
        assert_eq!(fetches.load(Ordering::Relaxed), 1, "not asked again");
    });
}

#[test]
fn a_replica_behind_the_masters_retention_is_refused_with_the_oldest_position() {
    run(|| async {
        let rc = replication(Mode::Async, 60_000);
        let configured = rc.clone();
        let s = shard_configured(
            SimDir::new(8),
            |c| {
                c.segment_size_bytes = 64 * 1024;
                c.max_batch_bytes = 16 * 1024;
            },
            move |c| c.replication = Some(configured),
            runtime::system_clock(),
        )
        .await;
        let mut history = EpochHistory::new();
        history.begin(1, 0).unwrap();
        s.set_role(ShardRole::Master(MasterSide::new(&rc, history.clone(), 0)));
        let session = match call(&s, join(0)).await.unwrap() {
            Response::Replication(ReplResponse::Join { session, .. }) => session,
            other => panic!("{other:?}"),
        };
        // The replica goes quiet; the master writes several segments, then retention deletes
        // the old ones.
        while s.log.segment_bases().len() < 4 {
            call(&s, produce(0, 100)).await.unwrap();
        }
        s.log.flush().await.unwrap();
        let later = crate::storage::commit_log::now_ms() + 10_000 * 3_600_000;
        let deleted = s.log.enforce_retention(later).await.unwrap();
        assert!(!deleted.is_empty(), "the test needs deleted segments");
        let oldest = s.log.oldest_position();
        let end = s.log.append_end();
        let behind = |e: BrokerError, position: u64| {
            assert_eq!(e.code, ErrorCode::OFFSET_OUT_OF_RANGE, "{e:?}");
            assert_eq!(e.detail, ErrorDetail::OffsetRange { min: oldest, next: end });
            assert!(e.message.contains(&format!("from position {position}")), "{e:?}");
            assert!(e.message.contains(&format!("still holds is {oldest}")), "{e:?}");
            assert!(!e.message.contains("corrupt"), "{e:?}");
        };
        // Its stream's next fetch: the master's log is not blamed, and the stream ends.
        behind(call(&s, replica_fetch(session, 0)).await.unwrap_err(), 0);
        stream_ended(&s, session).await;
        // Joining again from where it stopped (or a new, empty replica): refused at the join.
        behind(call(&s, join(0)).await.unwrap_err(), 0);
        let mut inside = join(deleted[deleted.len() - 1].get() + 10);
        if let Request::Replication(ReplRequest::Join { history: h, .. }) = &mut inside {
            *h = history.clone();
        }
        behind(call(&s, inside).await.unwrap_err(), deleted[deleted.len() - 1].get() + 10);
        let Some(ShardRole::Master(m)) = s.role() else { panic!("a master") };
        assert_eq!(m.in_sync_count(), 1, "the master alone: refused joins do not count");
        // A replica whose log reaches the oldest retained position joins and streams from it.
        let mut kept = join(oldest);
        if let Request::Replication(ReplRequest::Join { history: h, .. }) = &mut kept {
            *h = history.clone();
        }
        let session = match call(&s, kept).await.unwrap() {
            Response::Replication(ReplResponse::Join { session, truncate_to, .. }) => {
                assert_eq!(truncate_to, oldest);
                session
            }
            other => panic!("{other:?}"),
        };
        let (_, batches) = fetched(&s, session, oldest).await;
        assert_eq!(batches[0].position, oldest);
    });
}
