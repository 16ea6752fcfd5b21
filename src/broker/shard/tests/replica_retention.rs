//! A replica's retention pins on its system queues (offsets, schedule, transaction halves),
//! moved by its follower as the master moves its own, against a scripted master serving a
//! real master shard's log.

use super::replication::{fetched, follow, joined, master};
use super::*;
use crate::protocol::replication::{ReplRequest, ReplResponse, WireBatch};
use crate::replication::config::Mode;
use crate::replication::epochs::EpochHistory;

/// A replica shard on `dir` (it keeps no topic table of its own) that followed master `m`
/// (an async master shard) to the end of its log, then stopped following.
async fn replicated(m: &Rc<Shard<SimLog>>, dir: &SimDir) -> Rc<Shard<SimLog>> {
    use crate::client::scripted_broker::{join_keeping, one_shard, scripted_broker};
    let end = m.log.append_end();
    let session = joined(m, 0).await;
    let (mut batches, mut from) = (Vec::new(), 0);
    while from < end {
        let (next, got) = fetched(m, session, from).await;
        batches.extend(got);
        from = next;
    }
    // A master serving those batches, about 1 MiB a fetch.
    let mut history = EpochHistory::new();
    history.begin(1, 0).unwrap(); // the master's (`master_in`)
    let epoch = m.topics.borrow().epoch;
    let master = scripted_broker(move |port, request| match request {
        Request::Metadata { .. } => one_shard(port),
        Request::Replication(ReplRequest::Join { end, .. }) => join_keeping(end, history.clone()),
        Request::Replication(ReplRequest::Fetch { from, .. }) => {
            let mut answer: Vec<WireBatch> = Vec::new();
            for b in batches.iter().filter(|b| b.position >= from) {
                if answer.iter().map(|b| b.bytes.len()).sum::<usize>() >= 1 << 20 {
                    break;
                }
                answer.push(b.clone());
            }
            let next = answer.last().map_or(from, |b| b.position + b.bytes.len() as u64);
            Response::Replication(ReplResponse::Fetch {
                confirmed: next,
                topics_epoch: epoch,
                next,
                batches: answer,
            })
        }
        other => panic!("unexpected {other:?}"),
    });
    let r = shard_configured(dir.clone(), |_| {}, |_| {}, runtime::system_clock()).await;
    follow(&r, &master);
    r.start_groups().await.unwrap();
    r.start_schedule().await.unwrap();
    r.start_transactions().await.unwrap();
    // As shard 0 would after adopting the master's table (this shard does not keep one).
    let (ack, _answered) = oneshot::channel();
    r.apply_control(Control::Topics { table: m.topics.borrow().clone(), ack });
    let (mut stop_handle, stop) = crate::broker::shutdown::stop_pair();
    let following = runtime::spawn(r.clone().follow_master(stop));
    for _ in 0..500 {
        if r.log.durable_end() >= end {
            break;
        }
        runtime::sleep(Duration::from_millis(10)).await;
    }
    stop_handle.fire();
    following.await.unwrap().unwrap();
    assert_eq!(r.log.durable_end(), end);
    r
}

/// A replica keeps the committed offsets' last snapshot from retention as its master does:
/// the follower moves the offsets' pin to each snapshot it wrote, so a promotion replays the
/// offsets from a snapshot that is still there (retention by disk usage deletes segments of
/// any age).
#[test]
fn a_replica_pins_the_last_offsets_snapshot_it_wrote() {
    run(|| async {
        // The master: a snapshot early, then a commit and a snapshot after two segments.
        let m = master(Mode::Async, 60_000).await;
        m.start_groups().await.unwrap();
        call(&m, Request::Group(super::group::commit("g", 0, &[(0, 7)]))).await.unwrap();
        m.snapshot_offsets().await.unwrap();
        roll_segments(&m, 45).await;
        call(&m, Request::Group(super::group::commit("g", 0, &[(0, 8)]))).await.unwrap();
        m.snapshot_offsets().await.unwrap();
        roll_segments(&m, 25).await;
        let dir = SimDir::new(90);
        let r = replicated(&m, &dir).await;
        // The first snapshot's segments go; the second's stays, and a restart (a promotion's
        // replay) finds the last commit.
        let deleted = r.log.enforce_retention(far_future_ms()).await.unwrap();
        assert!(!deleted.is_empty(), "the pin stayed at the first commit");
        drop(r);
        let r = shard_configured(dir.clone(), |_| {}, |_| {}, runtime::system_clock()).await;
        r.start_groups().await.unwrap();
        let fetched = super::group::group_call(
            &r,
            crate::protocol::group::GroupRequest::FetchOffsets {
                group: "g".into(),
                queues: vec![],
            },
        )
        .await;
        let Ok(Response::Group(crate::protocol::group::GroupResponse::FetchOffsets { offsets })) =
            fetched
        else {
            panic!("{fetched:?}")
        };
        let offsets: Vec<_> = offsets.into_iter().map(|(q, o)| (q.queue_id, o)).collect();
        assert_eq!(offsets, vec![(0, 8)]);
    });
}

/// A replica keeps a held scheduled message from retention as its master does: the follower
/// pins the schedule queue where each wheel checkpoint it wrote needs it, so a promotion
/// still delivers the message.
#[test]
fn a_replica_keeps_the_scheduled_messages_its_last_wheel_checkpoint_holds() {
    use crate::protocol::message::Delivery;
    run(|| async {
        let m = master(Mode::Async, 60_000).await;
        m.start_schedule().await.unwrap();
        let month = crate::storage::commit_log::now_ms() + 30 * 24 * 3_600_000;
        let held = super::schedule::scheduled(0, Delivery::AtMs(month), "a month later");
        call(&m, held).await.unwrap();
        // The master indexes what its replicas confirmed: a replica's fetches confirm it.
        let session = joined(&m, 0).await;
        let (next, _) = fetched(&m, session, 0).await;
        fetched(&m, session, next).await;
        m.schedule_step().await.unwrap();
        m.checkpoint_schedule().await.unwrap();
        roll_segments(&m, 45).await;
        let r = replicated(&m, &SimDir::new(91)).await;
        assert_eq!(r.log.enforce_retention(far_future_ms()).await.unwrap(), vec![]);
        assert_eq!(r.log.offsets(crate::broker::shard::schedule::SYS_SCHEDULE).min, 0);
    });
}

/// A replica pins its undecided transaction halves as its master does: from a half written
/// with nothing pinned, and from each decision's low watermark (the oldest half still
/// undecided after it) once durable. The decided half's segments go; the undecided one's stay,
/// so a promotion finds it.
#[test]
fn a_replica_keeps_the_undecided_halves_and_lets_the_decided_go() {
    use super::transaction::{end, half, half_batch};
    use crate::protocol::transaction::EndAction;
    run(|| async {
        let m = master(Mode::Async, 60_000).await;
        m.start_transactions().await.unwrap();
        let first = half(&m, 0, half_batch(1, "tx", -1, -1)).await;
        call(&m, end(0, first, EndAction::Rollback)).await.unwrap();
        roll_segments(&m, 45).await;
        let open = half(&m, 0, half_batch(1, "tx", -1, -1)).await; // never decided
        roll_segments(&m, 25).await;
        let r = replicated(&m, &SimDir::new(92)).await;
        let deleted = r.log.enforce_retention(far_future_ms()).await.unwrap();
        assert!(!deleted.is_empty(), "held at the decided half");
        let halves = r.log.offsets(crate::broker::shard::transaction::SYS_HALF);
        assert_eq!(halves.min, open, "the undecided half was deleted");
        // With no decision yet, the first half written pins the queue.
        let m = master(Mode::Async, 60_000).await;
        m.start_transactions().await.unwrap();
        half(&m, 0, half_batch(1, "tx", -1, -1)).await;
        roll_segments(&m, 45).await;
        let r = replicated(&m, &SimDir::new(93)).await;
        assert_eq!(r.log.enforce_retention(far_future_ms()).await.unwrap(), vec![]);
    });
}
