//! Topic tables and offsets under replication, on one shard over the real log on the simulated
//! directory: a sync master answers a topic change (or an offsets reset or deletion) once the
//! replicas hold it, and a replica shard adopts its master's table before it writes the batches
//! that came with it, whatever the epochs.

use super::replication::{fetched, follow, joined, master, master_with_metadata, replica_fetch};
use super::*;

use crate::broker::shard::replication::MAX_REPLICA_WAIT_MS;
use crate::protocol::replication::{ReplRequest, ReplResponse, WireBatch};
use crate::replication::config::Mode;
use crate::replication::epochs::EpochHistory;

#[test]
fn a_topic_deletion_on_a_sync_master_is_answered_once_the_replica_holds_the_offsets_snapshot() {
    use super::group::{apply_topics, commit, group_call};
    // A sync master answers DELETE_TOPIC once the snapshot without the topic's offsets is on
    // every in-sync replica: else, promoted, a replica that missed it gives a topic created
    // again under the name its old offsets back (past its new queues' ends).
    run(|| async {
        let s = master(Mode::Sync, 60_000).await;
        s.start_groups().await.unwrap();
        let session = joined(&s, 0).await;
        let me = s.clone();
        let committing =
            runtime::spawn(async move { group_call(&me, commit("g", 0, &[(0, 7)])).await });
        let (next, _) = fetched(&s, session, 0).await;
        let (mut next, _) = fetched(&s, session, next).await;
        assert!(matches!(committing.await.unwrap(), Ok(Response::Group(_))));
        let mut table = s.topics.borrow().clone();
        table.delete("t").unwrap();
        let mut answered = apply_topics(&s, &table);
        // The snapshot is written and flushed here, but the replica has not fetched it.
        while s.log.durable_end() <= next {
            runtime::yield_once().await;
        }
        runtime::sleep(Duration::from_millis(50)).await;
        assert!(answered.try_recv().unwrap().is_none(), "answered before the replica has it");
        // The replica fetches the snapshot, then says it is synced: the deletion is answered.
        while s.log.append_end() > next {
            next = fetched(&s, session, next).await.0;
        }
        fetched(&s, session, next).await;
        answered.await.unwrap().unwrap();
    });
}

/// The full answer to a replica's fetch from `from` (acknowledging `from` as synced).
/// A sync master (timeout `timeout_ms`) whose topic changes are saved under `dir`, its
/// groups started.
async fn sync_master_changing_topics(dir: &std::path::Path, timeout_ms: u64) -> Rc<Shard<SimLog>> {
    let store = MetadataStore::open(dir).await.unwrap();
    let s = master_with_metadata(SimDir::new(3), Mode::Sync, timeout_ms, Some(store)).await;
    s.start_groups().await.unwrap();
    s
}

async fn fetch_answer(s: &Rc<Shard<SimLog>>, session: u64, from: u64) -> ReplResponse {
    match call(s, replica_fetch(session, from)).await.unwrap() {
        Response::Replication(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_topic_change_on_a_sync_master_is_answered_once_the_replica_fetched_and_acknowledged_it() {
    // A sync master answers CREATE_TOPIC (and DELETE_TOPIC) once every in-sync replica has
    // acknowledged a position of shard 0's log written after the change, fetched with the
    // changed table's epoch: a replica adopts that table before it acknowledges what came
    // with it. Without that, a failover right after the answer could lose the topic (and the
    // new master would give its id to another topic, with the first one's messages in it).
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let s = sync_master_changing_topics(tmp.path(), 60_000).await;
        let session = joined(&s, 0).await;
        let mut next = s.log.append_end();
        while let ReplResponse::Fetch { next: n, batches, .. } =
            fetch_answer(&s, session, next).await
        {
            if batches.is_empty() {
                break;
            }
            next = n;
        }
        let epoch_before = s.topics.borrow().epoch;
        let (tx, mut answered) = oneshot::channel();
        let me = s.clone();
        runtime::spawn_detached(async move {
            let r = call(&me, Request::CreateTopic { topic: "new".into(), queue_count: 2 }).await;
            let _ = tx.send(r);
        });
        while s.topics.borrow().epoch == epoch_before {
            if let Some(r) = answered.try_recv().unwrap() {
                panic!("answered without a change: {r:?}");
            }
            runtime::sleep(Duration::from_millis(1)).await;
        }
        runtime::sleep(Duration::from_millis(50)).await;
        assert!(answered.try_recv().unwrap().is_none(), "answered before the replica has it");
        // The replica fetches what shard 0 wrote after the change, with the new table's epoch.
        let ReplResponse::Fetch { next: after, batches, topics_epoch, .. } =
            fetch_answer(&s, session, next).await
        else {
            panic!("not a fetch answer")
        };
        assert!(!batches.is_empty(), "shard 0 wrote after the change");
        assert_eq!(topics_epoch, s.topics.borrow().epoch);
        runtime::sleep(Duration::from_millis(20)).await;
        assert!(answered.try_recv().unwrap().is_none(), "answered before the acknowledgement");
        // Its next fetch acknowledges it: the creation is answered.
        fetch_answer(&s, session, after).await;
        let r = answered.await.unwrap();
        assert!(matches!(r, Ok(Response::CreateTopic { .. })), "{r:?}");
    });
}

#[test]
fn a_topic_change_on_a_sync_master_without_enough_in_sync_replicas_is_refused_unapplied() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let s = sync_master_changing_topics(tmp.path(), 60_000).await;
        let epoch = s.topics.borrow().epoch;
        let e = call(&s, Request::CreateTopic { topic: "new".into(), queue_count: 1 }).await;
        assert_eq!(e.unwrap_err().code, ErrorCode::SLAVE_NOT_AVAILABLE);
        assert_eq!(s.topics.borrow().epoch, epoch, "nothing changed");
        assert!(s.topics.borrow().get("new").is_none());
    });
}

#[test]
fn a_topic_change_the_replicas_do_not_confirm_in_time_is_not_answered_as_done() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let s = sync_master_changing_topics(tmp.path(), 200).await;
        let (mut stop_handle, stop) = crate::broker::shutdown::stop_pair();
        let timer = runtime::spawn(s.clone().replication_loop(stop));
        let _session = joined(&s, 0).await;
        // The replica joined and never acknowledges anything.
        let e = call(&s, Request::CreateTopic { topic: "new".into(), queue_count: 1 }).await;
        stop_handle.fire();
        timer.await;
        let e = e.unwrap_err();
        assert_eq!(e.code, ErrorCode::INTERNAL, "{e:?}");
        assert!(e.message.contains("in-sync replicas"), "{e:?}");
        // The change stands on the master, as a sync produce that timed out stays stored.
        assert!(s.topics.borrow().get("new").is_some());
    });
}

/// A master's epoch history and its answer to a replica's first fetch, with a produce's
/// batch: (history, batches, where the next fetch goes).
async fn a_masters_first_batches() -> (EpochHistory, Vec<WireBatch>, u64) {
    let m = master(Mode::Async, 60_000).await;
    call(&m, produce(0, 2)).await.unwrap();
    let session = joined(&m, 0).await;
    let (next, batches) = fetched(&m, session, 0).await;
    assert!(!batches.is_empty());
    let mut history = EpochHistory::new();
    history.begin(1, 0).unwrap(); // the master's (`master_in`)
    (history, batches, next)
}

/// A scripted master (its address) that answers a replica's first fetch with
/// [`a_masters_first_batches`] and topic epoch `answer_epoch`, and REPLICA_TOPICS with `table`
/// when given.
async fn a_scripted_master(answer_epoch: u64, table: Option<TopicTable>) -> String {
    use crate::client::scripted_broker::{join_keeping, one_shard, scripted_broker};
    let (history, batches, next) = a_masters_first_batches().await;
    let json = table.map(|t| t.to_json());
    scripted_broker(move |port, request| match request {
        Request::Metadata { .. } => one_shard(port),
        Request::Replication(ReplRequest::Join { end, .. }) => join_keeping(end, history.clone()),
        Request::Replication(ReplRequest::Fetch { from, .. }) => {
            Response::Replication(ReplResponse::Fetch {
                confirmed: from,
                topics_epoch: answer_epoch,
                next,
                batches: if from == 0 { batches.clone() } else { Vec::new() },
            })
        }
        Request::Replication(ReplRequest::Topics) if json.is_some() => {
            Response::Replication(ReplResponse::Topics { table_json: json.clone().unwrap() })
        }
        other => panic!("unexpected {other:?}"),
    })
}

#[test]
fn a_replica_adopts_a_new_topic_table_before_it_writes_the_batches_that_came_with_it() {
    // What a replica has written may be acknowledged before it adopts a table: by its next
    // fetch, or by a JOIN after a crash (it reports what is on disk). A sync master answers a
    // topic change once its replicas acknowledged what shard 0 wrote after it, so the table
    // that came with batches is adopted before they are written.
    run(|| async {
        // This master cannot give the table (yet).
        let s = table_keeper_following_a_newer_table(3, || {
            Err((ErrorCode::INTERNAL, "no table today".into(), ErrorDetail::None))
        })
        .await;
        let stop = futures::FutureExt::shared(Box::pin(runtime::sleep(Duration::from_millis(300))));
        s.clone().follow_master(stop).await.unwrap();
        assert_eq!(s.log.append_end(), 0, "written before the table that came with it");
    });
}

/// A replica's shard 0 (it keeps the topic table, on simulated directory `seed`) set to
/// follow a scripted master whose first batches come with a newer table's epoch and which
/// answers REPLICA_TOPICS with `topics()`.
async fn table_keeper_following_a_newer_table(
    seed: u64,
    topics: impl Fn() -> Result<Response, (ErrorCode, String, ErrorDetail)> + Send + Sync + 'static,
) -> Rc<Shard<SimLog>> {
    use crate::client::scripted_broker::{join_keeping, one_shard, scripted_broker_refusing};
    let (history, batches, next) = a_masters_first_batches().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = MetadataStore::open(tmp.path()).await.unwrap();
    let s = shard_with_metadata(
        SimDir::new(seed),
        |_| {},
        |_| {},
        runtime::system_clock(),
        Some(store),
    )
    .await;
    let newer = s.topics.borrow().epoch + 1;
    let master = scripted_broker_refusing(move |port, request| match request {
        Request::Metadata { .. } => Ok(one_shard(port)),
        Request::Replication(ReplRequest::Join { end, .. }) => {
            Ok(join_keeping(end, history.clone()))
        }
        Request::Replication(ReplRequest::Fetch { from, .. }) => {
            Ok(Response::Replication(ReplResponse::Fetch {
                confirmed: from,
                topics_epoch: newer,
                next,
                batches: if from == 0 { batches.clone() } else { Vec::new() },
            }))
        }
        Request::Replication(ReplRequest::Topics) => topics(),
        other => panic!("unexpected {other:?}"),
    });
    follow(&s, &master);
    s
}

/// Shard `s` (not the table's keeper) follows a scripted master whose batches come with
/// topic epoch `answer_epoch`: it writes nothing until shard 0 sends it `table`, then writes
/// them. `why` names what writing earlier would have meant.
async fn writes_the_fetched_batches_once_shard_0_sends(
    s: &Rc<Shard<SimLog>>,
    answer_epoch: u64,
    table: TopicTable,
    why: &str,
) {
    let master = a_scripted_master(answer_epoch, None).await;
    follow(s, &master);
    let (mut stop_handle, stop) = crate::broker::shutdown::stop_pair();
    let following = runtime::spawn(s.clone().follow_master(stop));
    runtime::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.log.append_end(), 0, "written before {why}");
    let (ack, _answered) = oneshot::channel();
    s.apply_control(Control::Topics { table, ack });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.log.append_end() == 0 {
        assert!(std::time::Instant::now() < deadline, "not written after the table came");
        runtime::sleep(Duration::from_millis(5)).await;
    }
    stop_handle.fire();
    following.await.unwrap().unwrap();
}

#[test]
fn a_replica_shard_writes_batches_only_once_its_topic_table_is_as_new_as_theirs() {
    // A shard that does not keep the topic table waits for shard 0 to apply the one its
    // batches came with: a send to a topic just created, on any shard, is acknowledged by a
    // replica only once that replica knows the topic.
    run(|| async {
        let s = shard(7).await; // no topic table of its own to keep
        let mut newer = s.topics.borrow().clone();
        newer.create("new", 1, 16, 16).unwrap();
        let why = "this broker's table knew their topic";
        writes_the_fetched_batches_once_shard_0_sends(&s, newer.epoch, newer, why).await;
    });
}

#[test]
fn a_topic_change_answers_the_replica_fetches_parked_at_the_masters_end() {
    // A replica's shards other than 0 wait for shard 0 to adopt a new table before they write
    // what came with it; shard 0 hears of it at once, not after its parked fetch's wait.
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(tmp.path()).await.unwrap();
        let s = master_with_metadata(SimDir::new(3), Mode::Async, 60_000, Some(store)).await;
        s.start_groups().await.unwrap();
        let session = joined(&s, 0).await;
        let end = s.log.append_end();
        let me = s.clone();
        let parked = runtime::spawn(async move {
            let asked = std::time::Instant::now();
            let fetch = Request::Replication(ReplRequest::Fetch {
                session,
                from: end,
                synced: end,
                max_bytes: 1 << 20,
                max_wait_ms: MAX_REPLICA_WAIT_MS,
            });
            let answer = call(&me, fetch).await.unwrap();
            (answer, asked.elapsed())
        });
        runtime::sleep(Duration::from_millis(20)).await;
        let created = call(&s, Request::CreateTopic { topic: "new".into(), queue_count: 1 }).await;
        assert!(created.is_ok(), "{created:?}");
        let (answer, waited) = parked.await.unwrap();
        let Response::Replication(ReplResponse::Fetch { topics_epoch, .. }) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(topics_epoch, s.topics.borrow().epoch);
        assert!(
            waited < Duration::from_millis(MAX_REPLICA_WAIT_MS as u64 - 100),
            "the parked fetch waited {waited:?}"
        );
    });
}

#[test]
fn an_offsets_reset_the_replicas_do_not_confirm_in_time_is_not_answered_as_done() {
    use crate::protocol::group::{GroupRequest, ResetTo};
    run(|| async {
        let s = master(Mode::Sync, 200).await;
        s.start_groups().await.unwrap();
        let (mut stop_handle, stop) = crate::broker::shutdown::stop_pair();
        let timer = runtime::spawn(s.clone().replication_loop(stop));
        let _session = joined(&s, 0).await;
        // The replica joined and never acknowledges anything.
        let reset =
            GroupRequest::Reset { group: "g".into(), topic: "t".into(), to: ResetTo::Earliest };
        let r = super::group::group_call(&s, reset).await;
        stop_handle.fire();
        timer.await;
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::INTERNAL, "{e:?}");
        assert!(e.message.contains("FlushSlaveTimeout"), "{e:?}");
    });
}

/// A former master's table (shard `s`'s, with two topics its new master never got) and its
/// new master's, whose epoch is lower.
fn a_former_masters_table_and_its_masters(s: &Rc<Shard<SimLog>>) -> (TopicTable, TopicTable) {
    let mut ours = s.topics.borrow().clone();
    ours.create("only-here-1", 1, 16, 16).unwrap();
    ours.create("only-here-2", 1, 16, 16).unwrap();
    let mut masters = TopicTable::new(1);
    masters.create("t", 2, 16, 16).unwrap();
    masters.create("on-the-master", 1, 16, 16).unwrap();
    assert!(masters.epoch < ours.epoch);
    (ours, masters)
}

#[test]
fn a_shard_takes_the_table_shard_0_adopted_even_with_a_lower_epoch_than_its_own() {
    // A former master restarted as a replica of the broker that replaced it (async
    // replication): its own table had changes the new master never got, so its epoch can be
    // higher than the new master's. Shard 0 adopts the master's table; every other shard must
    // take it too, or it would serve and wait on a table the master does not have.
    run(|| async {
        let s = shard(7).await; // a shard other than the table's keeper
        let (ours, masters) = a_former_masters_table_and_its_masters(&s);
        super::group::apply_topics(&s, &ours).await.unwrap().unwrap();
        super::group::apply_topics(&s, &masters).await.unwrap().unwrap();
        let now = s.topics.borrow().clone();
        assert!(now.get("on-the-master").is_some() && now.get("only-here-1").is_none());
        assert_eq!(now.epoch, masters.epoch);
    });
}

/// A replica's shard 0 following a scripted master that has `masters` as its table (at the
/// same epoch as `ours`, this broker's own table, with other topics): what its table is after
/// a short while of following.
async fn shard_0_following_a_master_with_the_same_epoch(
    ours: TopicTable,
    masters: TopicTable,
) -> TopicTable {
    let tmp = tempfile::tempdir().unwrap();
    let store = MetadataStore::open(tmp.path()).await.unwrap();
    let s =
        shard_with_metadata(SimDir::new(3), |_| {}, |_| {}, runtime::system_clock(), Some(store))
            .await;
    *s.topics.borrow_mut() = ours;
    let master = a_scripted_master(masters.epoch, Some(masters)).await;
    follow(&s, &master);
    let stop = futures::FutureExt::shared(Box::pin(runtime::sleep(Duration::from_millis(300))));
    s.clone().follow_master(stop).await.unwrap();
    assert!(s.log.append_end() > 0, "the master's batches were written");
    let table = s.topics.borrow().clone();
    table
}

#[test]
fn a_replica_adopts_its_masters_table_at_its_first_fetch_whatever_the_epochs() {
    // A former master restarted as the replica of the broker that replaced it (async
    // replication) may hold a table whose epoch says nothing about its master's: changes the
    // new master never got, under numbers the new master may reach with other changes. The
    // first fetch's table is adopted even when the epochs are equal.
    run(|| async {
        let mut ours = TopicTable::new(1);
        ours.create("only-here", 1, 16, 16).unwrap();
        let mut masters = TopicTable::new(1);
        masters.create("on-the-master", 1, 16, 16).unwrap();
        assert_eq!(ours.epoch, masters.epoch);
        let now = shard_0_following_a_master_with_the_same_epoch(ours, masters.clone()).await;
        assert!(now.get("on-the-master").is_some(), "{now:?}");
        assert!(now.get("only-here").is_none(), "{now:?}");
    });
}

#[test]
fn a_replica_shard_waits_for_the_masters_table_even_when_its_own_epoch_is_higher() {
    // The other shards of that former master: their table's epoch is higher than the one the
    // master's batches come with, but it is not the master's table. They write nothing before
    // shard 0 adopted the master's (a batch's topic id may name another topic there).
    run(|| async {
        let s = shard(7).await; // a shard other than the table's keeper
        let (ours, masters) = a_former_masters_table_and_its_masters(&s);
        *s.topics.borrow_mut() = ours;
        let why = "shard 0 adopted the master's table";
        writes_the_fetched_batches_once_shard_0_sends(&s, masters.epoch, masters, why).await;
    });
}

/// A stop does not wait for a master that holds the replica's REPLICA_TOPICS call (a hung
/// master answers nothing until the call's 10 s timeout).
#[test]
fn a_replica_stops_while_its_master_holds_a_topics_call() {
    run(|| async {
        let s = table_keeper_following_a_newer_table(4, || {
            std::thread::sleep(Duration::from_secs(20)); // past the test's bound
            Ok(Response::Replication(ReplResponse::Topics { table_json: Vec::new() }))
        })
        .await;
        let stop = futures::FutureExt::shared(Box::pin(runtime::sleep(Duration::from_millis(300))));
        let started = std::time::Instant::now();
        s.clone().follow_master(stop).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    });
}
