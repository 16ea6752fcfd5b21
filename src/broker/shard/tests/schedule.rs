//! Scheduled messages (`shard/schedule.rs`) on one shard over the real log on the simulated
//! directory, with a simulated clock: invisible until due, delivered unchanged, bounded steps,
//! crash recovery without loss or duplicates, and the idempotence windows left alone.

use super::*;

use super::super::schedule::StepReport;
use crate::format::batch::BatchView;
use crate::protocol::message::Delivery;

pub(super) const T0_MS: i64 = 1_700_000_000_000;

pub(super) fn sync_flush(st: &mut crate::storage::StorageConfig) {
    st.flush_mode = crate::storage::FlushMode::Sync;
}

pub(super) fn scheduled(queue_id: u32, delivery: Delivery, body: &str) -> Request {
    let mut b = BatchBuilder::new(1 << 16);
    let props: &[(&[u8], &[u8])] = &[(b"p", b"v")];
    let rec = Record {
        key: b"k",
        tag: b"TagA",
        properties: props,
        body: body.as_bytes(),
        timestamp_ms: 5,
    };
    b.push(&rec).unwrap();
    Request::ProduceScheduled {
        topic: "t".into(),
        queue_id,
        delivery,
        batch: b.finish(-1, -1).into(),
    }
}

/// Every record of queue `t/queue_id` as (key, tag, body, store timestamp).
pub(super) async fn queue_records(
    s: &Rc<Shard<SimLog>>,
    queue_id: u32,
) -> Vec<(Vec<u8>, Vec<u8>, String, i64)> {
    let req = Request::Fetch {
        topic: "t".into(),
        queue_id,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        tags: vec![],
    };
    let Ok(Response::Fetch { batches, .. }) = call(s, req).await else { panic!() };
    let mut out = Vec::new();
    let mut at = 0;
    while at < batches.len() {
        let view = BatchView::parse(&batches[at..], batches.len() - at).unwrap();
        for r in view.records() {
            let r = r.unwrap();
            if r.key == b"k" {
                assert_eq!(r.property(b"p"), Some(&b"v"[..]), "properties kept");
            }
            out.push((
                r.key.to_vec(),
                r.tag.to_vec(),
                String::from_utf8(r.body.to_vec()).unwrap(),
                view.header.stamp.store_timestamp_ms,
            ));
        }
        at += view.header.length as usize;
    }
    out
}

pub(super) async fn bodies(s: &Rc<Shard<SimLog>>, queue_id: u32) -> Vec<String> {
    let mut b: Vec<String> = queue_records(s, queue_id).await.into_iter().map(|r| r.2).collect();
    b.sort();
    b
}

#[test]
fn a_scheduled_batch_is_invisible_until_due_then_arrives_unchanged() {
    run(|| async {
        let clock = runtime::SimClock::new(T0_MS);
        let s = shard_with_clock(SimDir::new(71), 8, |_| {}, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        let r = call(&s, scheduled(0, Delivery::Level(2), "five seconds")).await.unwrap();
        let Response::Produce { topic_id, base_offset: 0, status: SendStatus::SendOk, .. } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(topic_id, crate::broker::topics::SYSTEM_TOPIC_SCHEDULE);
        call(&s, scheduled(1, Delivery::AtMs(T0_MS + 2_000), "at two seconds")).await.unwrap();
        s.schedule_step().await.unwrap();
        assert!(queue_records(&s, 0).await.is_empty());

        clock.advance(Duration::from_millis(1_999));
        assert_eq!(s.schedule_step().await.unwrap().delivered, 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(s.schedule_step().await.unwrap().delivered, 1);
        assert_eq!(bodies(&s, 1).await, vec!["at two seconds"]);

        clock.advance(Duration::from_millis(2_999));
        s.schedule_step().await.unwrap();
        assert!(queue_records(&s, 0).await.is_empty(), "not a millisecond early");
        clock.advance(Duration::from_millis(1));
        s.schedule_step().await.unwrap();
        let got = queue_records(&s, 0).await;
        assert_eq!(got.len(), 1);
        let (key, tag, body, _) = &got[0];
        assert_eq!((&key[..], &tag[..], &body[..]), (&b"k"[..], &b"TagA"[..], "five seconds"));

        // A time already past is delivered by the next step.
        call(&s, scheduled(0, Delivery::AtMs(T0_MS - 60_000), "late")).await.unwrap();
        assert_eq!(s.schedule_step().await.unwrap().delivered, 1);
        assert_eq!(bodies(&s, 0).await, vec!["five seconds", "late"]);
    });
}

#[test]
fn bad_scheduled_produces_are_refused_clearly() {
    run(|| async {
        let clock = runtime::SimClock::new(T0_MS);
        let s = shard_with_clock(SimDir::new(72), 8, |_| {}, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        const DAY_MS: i64 = 24 * 3_600_000;
        for delivery in
            [Delivery::Level(0), Delivery::Level(19), Delivery::AtMs(T0_MS + 40 * DAY_MS + 1)]
        {
            let e = call(&s, scheduled(0, delivery, "x")).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_DELIVERY_TIME, "{delivery:?}: {}", e.message);
        }
        // The horizon is 40 days, whatever the retention (48 h here): held messages pin it.
        call(&s, scheduled(0, Delivery::AtMs(T0_MS + 40 * DAY_MS), "x")).await.unwrap();
        let Request::Produce { batch: idem, .. } = idempotent(0, 7 << 16, 0, 1) else { panic!() };
        let req = Request::ProduceScheduled {
            topic: "t".into(),
            queue_id: 0,
            delivery: Delivery::Level(1),
            batch: idem,
        };
        assert_eq!(call(&s, req).await.unwrap_err().code, ErrorCode::INVALID_BATCH);
        let mut bad = numbered_batch(1, "x", -1, -1);
        bad[100] ^= 1;
        let req = Request::ProduceScheduled {
            topic: "t".into(),
            queue_id: 0,
            delivery: Delivery::Level(1),
            batch: bad.into(),
        };
        assert_eq!(call(&s, req).await.unwrap_err().code, ErrorCode::CORRUPT_BATCH);
        let req = Request::ProduceScheduled {
            topic: "t".into(),
            queue_id: 9,
            delivery: Delivery::Level(1),
            batch: batch(1).into(),
        };
        assert_eq!(call(&s, req).await.unwrap_err().code, ErrorCode::UNKNOWN_QUEUE);
    });
}

#[test]
fn one_step_moves_a_bounded_number_of_due_messages() {
    run(|| async {
        let clock = runtime::SimClock::new(T0_MS);
        let few = |c: &mut Config| c.schedule.max_due_per_step = 40;
        let s = shard_configured(SimDir::new(73), |_| {}, few, clock.clone()).await;
        s.start_schedule().await.unwrap();
        for i in 0..100 {
            call(&s, scheduled(0, Delivery::Level(1), &format!("m{i:03}"))).await.unwrap();
        }
        clock.advance(Duration::from_secs(1));
        let steps: Vec<StepReport> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(s.schedule_step().await.unwrap());
            }
            v
        };
        let delivered: Vec<u64> = steps.iter().map(|r| r.delivered).collect();
        assert_eq!(delivered, vec![40, 40, 20, 0]);
        assert!(steps[0].more && steps[1].more && !steps[3].more);
        assert_eq!(bodies(&s, 0).await.len(), 100);
    });
}

#[test]
fn scheduled_messages_survive_crashes_without_loss_or_duplicates() {
    survive_crashes(74, 3_600_000);
}

/// The same with messages rewritten every 1.5 s while held (`roll_after_ms`): most of them
/// are written again several times, across the crashes, and each still arrives once.
#[test]
fn rewritten_scheduled_messages_survive_crashes_without_loss_or_duplicates() {
    survive_crashes(80, 1_500);
}

fn survive_crashes(seed: u64, roll_after_ms: u64) {
    run(move || async move {
        let dir = SimDir::new(seed);
        let clock = runtime::SimClock::new(T0_MS);
        // Checkpoints only when the test takes them, so deliveries after a checkpoint must be
        // recognised from their delivered records after a crash.
        let rare = |c: &mut Config| {
            c.schedule.checkpoint_interval_ms = 3_600_000;
            c.schedule.roll_after_ms = roll_after_ms;
        };
        let shard = || shard_configured(dir.clone(), sync_flush, rare, clock.clone());
        let mut s = shard().await;
        s.start_schedule().await.unwrap();
        let mut expected = [Vec::new(), Vec::new()];
        let mut produce_some = |from: i64, to: i64| {
            let mut requests = Vec::new();
            for i in from..to {
                let body = format!("m{i:03}");
                let at = T0_MS + 1_000 * (i + 1);
                requests.push(scheduled((i % 2) as u32, Delivery::AtMs(at), &body));
                expected[(i % 2) as usize].push(body);
            }
            requests
        };
        // 60 messages due one a second, produced in rounds between crashes.
        let mut produced = 0;
        for round in 0..12 {
            for r in produce_some(produced, produced + 5) {
                call(&s, r).await.unwrap();
            }
            produced += 5;
            clock.advance(Duration::from_millis(2_700));
            for _ in 0..=(round % 3) {
                s.schedule_step().await.unwrap();
            }
            if round % 4 == 1 {
                s.checkpoint_schedule().await.unwrap();
                clock.advance(Duration::from_millis(1_000));
                s.schedule_step().await.unwrap();
            }
            if round % 2 == 0 {
                // Power cut: only what the log made durable remains (sync: every ack).
                dir.crash();
                drop(s);
                s = shard().await;
                s.start_schedule().await.unwrap();
            }
        }
        clock.advance(Duration::from_secs(60));
        while s.schedule_step().await.unwrap().more {}
        for e in &mut expected {
            e.sort();
        }
        assert_eq!(bodies(&s, 0).await, expected[0]);
        assert_eq!(bodies(&s, 1).await, expected[1]);
    });
}

#[test]
fn delivered_batches_leave_the_idempotence_windows_alone() {
    run(|| async {
        let dir = SimDir::new(75);
        let clock = runtime::SimClock::new(T0_MS);
        let s = shard_with_clock(dir.clone(), 8, |_| {}, |_| {}, clock.clone()).await;
        s.start_idempotence(1).await.unwrap();
        s.start_schedule().await.unwrap();
        let Ok(Response::InitProducer { producer_id: pid }) = call(&s, Request::InitProducer).await
        else {
            panic!()
        };
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 0, 2)).await), 0);
        call(&s, scheduled(0, Delivery::Level(1), "delayed")).await.unwrap();
        clock.advance(Duration::from_secs(1));
        assert_eq!(s.schedule_step().await.unwrap().delivered, 1);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 2, 1)).await), 3);
        // The windows rebuilt at a restart skip the delivered batch: the producer's retry is
        // still answered with its offsets and its next batch still follows.
        s.log.close().await.unwrap();
        drop(s);
        let s = shard_with_clock(dir, 8, |_| {}, |_| {}, clock.clone()).await;
        s.start_idempotence(2).await.unwrap();
        s.start_schedule().await.unwrap();
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 2, 1)).await), 3);
        assert_eq!(base_offset(&call(&s, idempotent(0, pid, 3, 1)).await), 4);
        assert_eq!(bodies(&s, 0).await, vec!["delayed", "s0-0", "s0-1", "s2-0", "s3-0"]);
        assert_eq!(
            s.schedule_step().await.unwrap(),
            StepReport::default(),
            "nothing delivered twice"
        );
    });
}

#[test]
fn a_delivery_whose_fsync_fails_is_made_after_the_restart() {
    run(|| async {
        let dir = SimDir::new(76);
        let clock = runtime::SimClock::new(T0_MS);
        let shard = || shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone());
        let s = shard().await;
        s.start_schedule().await.unwrap();
        for i in 0..5 {
            call(&s, scheduled(0, Delivery::Level(1), &format!("m{i}"))).await.unwrap();
        }
        s.schedule_step().await.unwrap();
        s.checkpoint_schedule().await.unwrap();
        clock.advance(Duration::from_secs(1));
        // The fsync covering the delivered batches fails: the log stops, the step reports it.
        dir.fail_syncs(1);
        let e = s.schedule_step().await.unwrap_err();
        assert_eq!(e.code, ErrorCode::SHARD_FAILED, "{}", e.message);
        dir.crash();
        drop(s);
        let s = shard().await;
        s.start_schedule().await.unwrap();
        while s.schedule_step().await.unwrap().more {}
        assert_eq!(bodies(&s, 0).await, vec!["m0", "m1", "m2", "m3", "m4"]);
    });
}

#[test]
fn a_delivery_refused_for_a_full_disk_is_made_once_space_is_back() {
    run(|| async {
        let dir = SimDir::new(77);
        let clock = runtime::SimClock::new(T0_MS);
        let small = |st: &mut crate::storage::StorageConfig| {
            st.segment_size_bytes = 256 << 10;
            st.max_batch_bytes = 64 << 10;
            st.disk_full_retry_ms = 5;
        };
        let s = shard_configured(dir.clone(), small, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        for i in 0..5 {
            call(&s, scheduled(1, Delivery::Level(1), &format!("m{i}"))).await.unwrap();
        }
        s.schedule_step().await.unwrap();
        // Room for the first segment, not for the next one: fill it.
        dir.set_capacity(Some(300 << 10));
        while call(&s, produce(0, 50)).await.is_ok() {}
        clock.advance(Duration::from_secs(1));
        let e = s.schedule_step().await.unwrap_err();
        assert_eq!(e.code, ErrorCode::DISK_FULL, "{}", e.message);
        assert!(bodies(&s, 1).await.is_empty());
        // The shard keeps running; once there is space the same messages are delivered, once.
        dir.set_capacity(None);
        let t = Instant::now();
        loop {
            match s.schedule_step().await {
                Ok(r) if !r.more && bodies(&s, 1).await.len() == 5 => break,
                Ok(_) => {}
                Err(e) => assert_eq!(e.code, ErrorCode::DISK_FULL, "{}", e.message),
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "never delivered: {:?}",
                bodies(&s, 1).await
            );
            runtime::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(bodies(&s, 1).await, vec!["m0", "m1", "m2", "m3", "m4"]);
    });
}

#[test]
fn retention_keeps_held_scheduled_messages_until_delivered_even_across_a_crash() {
    run(|| async {
        const DAY_MS: i64 = 24 * 3_600_000;
        let dir = SimDir::new(77);
        let clock = runtime::SimClock::new(T0_MS);
        let shard = || shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone());
        let mut s = shard().await;
        s.start_schedule().await.unwrap();
        for i in 0..25 {
            call(&s, filler(i)).await.unwrap();
        }
        // Held for 30 days, far past the 48 h retention; and one due soon.
        call(&s, scheduled(0, Delivery::AtMs(T0_MS + 30 * DAY_MS), "a month later")).await.unwrap();
        call(&s, scheduled(0, Delivery::AtMs(T0_MS + 1_000), "soon")).await.unwrap();
        s.schedule_step().await.unwrap();
        s.checkpoint_schedule().await.unwrap();
        let segments = roll_segments(&s, 75).await;
        let far = far_future_ms();
        // Only the segment before the held entry goes.
        assert_eq!(s.log.enforce_retention(far).await.unwrap().len(), 1);

        // After a power cut the pin is set again before retention can run.
        dir.crash();
        drop(s);
        s = shard().await;
        s.start_schedule().await.unwrap();
        assert!(s.log.enforce_retention(far).await.unwrap().is_empty());

        clock.advance(Duration::from_millis(1_000));
        assert_eq!(s.schedule_step().await.unwrap().delivered, 1);
        assert_eq!(bodies(&s, 0).await, vec!["soon"]);
        s.checkpoint_schedule().await.unwrap();
        assert!(s.log.enforce_retention(far).await.unwrap().is_empty(), "one is still held");

        clock.advance(Duration::from_millis((30 * DAY_MS) as u64));
        assert_eq!(s.schedule_step().await.unwrap().delivered, 1);
        assert_eq!(bodies(&s, 0).await, vec!["a month later", "soon"]);
        // Nothing is held once a checkpoint records it: the old segments go.
        s.checkpoint_schedule().await.unwrap();
        let deleted = s.log.enforce_retention(far).await.unwrap();
        assert!(deleted.len() >= segments - 2, "{deleted:?} of {segments}");
    });
}

/// A message held far longer than `schedule.roll_after_ms` (1 hour) is written again at the
/// log's end once it has waited that long: retention then deletes the segments its first copy
/// held back, and it still arrives once, not a millisecond early, also after a power cut.
#[test]
fn a_long_held_message_is_rewritten_so_retention_moves_past_it() {
    run(|| async {
        const HOUR_MS: u64 = 3_600_000;
        let dir = SimDir::new(79);
        let clock = runtime::SimClock::new(T0_MS);
        let shard = || shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone());
        let mut s = shard().await;
        s.start_schedule().await.unwrap();
        let month = T0_MS + 30 * 24 * HOUR_MS as i64;
        call(&s, scheduled(0, Delivery::AtMs(month), "a month later")).await.unwrap();
        s.schedule_step().await.unwrap();
        s.checkpoint_schedule().await.unwrap();
        let segments = roll_segments(&s, 75).await;
        let far = far_future_ms();
        assert_eq!(s.log.enforce_retention(far).await.unwrap(), vec![], "held where it is");

        clock.advance(Duration::from_millis(HOUR_MS - 1));
        assert_eq!(s.schedule_step().await.unwrap(), StepReport::default());
        clock.advance(Duration::from_millis(1));
        let r = s.schedule_step().await.unwrap();
        assert_eq!((r.rolled, r.delivered), (1, 0), "{r:?}");
        assert!(queue_records(&s, 0).await.is_empty(), "written again, not delivered");
        let snap = s.metrics_snapshot(super::metrics::WIDE_LIMITS);
        assert_eq!((snap.schedule_held, snap.schedule_rolled, snap.schedule_delivered), (1, 1, 0));
        assert_eq!(s.schedule_step().await.unwrap().indexed, 1, "the copy, at the log's end");
        s.checkpoint_schedule().await.unwrap();
        let deleted = s.log.enforce_retention(far).await.unwrap();
        assert!(deleted.len() >= segments - 2, "{deleted:?} of {segments}");

        dir.crash();
        drop(s);
        s = shard().await;
        let recovered = s.start_schedule().await.unwrap();
        // The checkpoint listed no done entry with a timer left, so the restart read done
        // entries' records only after it (not the copy's, which names the first one).
        assert_eq!((recovered.pending, recovered.already_delivered), (1, 0), "{recovered:?}");
        // Its timer comes due an hour after the copy was indexed; it is not due then.
        clock.advance(Duration::from_millis((month - T0_MS) as u64 - HOUR_MS - 1));
        while s.schedule_step().await.unwrap().more {}
        assert!(queue_records(&s, 0).await.is_empty(), "not a millisecond early");
        clock.advance(Duration::from_millis(1));
        while s.schedule_step().await.unwrap().more {}
        assert_eq!(bodies(&s, 0).await, vec!["a month later"]);
        s.schedule_step().await.unwrap(); // reads its delivered record: nothing unread is held
        let snap = s.metrics_snapshot(super::metrics::WIDE_LIMITS);
        assert_eq!((snap.schedule_held, snap.schedule_rolled, snap.schedule_delivered), (0, 1, 1));
        clock.advance(Duration::from_millis(2 * HOUR_MS));
        s.schedule_step().await.unwrap();
        assert_eq!(bodies(&s, 0).await, vec!["a month later"], "once");
    });
}

/// A restart that finds entries already delivered, whose timers the restored wheel still holds
/// (one step moves one message here, so one of them waits), and a checkpoint taken then: the
/// checkpoint lists that entry, so the next restart, which reads delivered records only after
/// the checkpoint, still does not deliver it again.
#[test]
fn a_checkpoint_lists_delivered_entries_whose_timers_wait_and_a_restart_skips_them() {
    run(|| async {
        let dir = SimDir::new(81);
        let clock = runtime::SimClock::new(T0_MS);
        let one_a_step = |c: &mut Config| {
            c.schedule.max_due_per_step = 1;
            c.schedule.checkpoint_interval_ms = 3_600_000;
        };
        let shard = || shard_configured(dir.clone(), sync_flush, one_a_step, clock.clone());
        let mut s = shard().await;
        s.start_schedule().await.unwrap();
        for body in ["a", "b"] {
            call(&s, scheduled(0, Delivery::AtMs(T0_MS + 10_000), body)).await.unwrap();
        }
        s.schedule_step().await.unwrap();
        s.checkpoint_schedule().await.unwrap();
        clock.advance(Duration::from_secs(10));
        assert_eq!(s.schedule_step().await.unwrap().delivered, 1);
        assert_eq!(s.schedule_step().await.unwrap().delivered, 1);
        s.log.flush().await.unwrap();
        dir.crash();
        drop(s);

        s = shard().await;
        assert_eq!(s.start_schedule().await.unwrap().already_delivered, 2);
        let r = s.schedule_step().await.unwrap();
        assert_eq!((r.skipped, r.delivered, r.more), (1, 0, true), "{r:?}");
        // One delivered entry's timer still waits: the checkpoint lists it.
        s.checkpoint_schedule().await.unwrap();
        s.log.flush().await.unwrap();
        dir.crash();
        drop(s);

        s = shard().await;
        assert_eq!(s.start_schedule().await.unwrap().already_delivered, 1, "from the list");
        while s.schedule_step().await.unwrap().more {}
        assert_eq!(bodies(&s, 0).await, vec!["a", "b"], "each once");
    });
}

fn scheduled_with_id(id: &str, delivery: Delivery, body: &str) -> Request {
    let mut b = BatchBuilder::new(1 << 16);
    let props: &[(&[u8], &[u8])] = &[(b"UNIQ_KEY", id.as_bytes())];
    let rec =
        Record { key: b"u", tag: b"", properties: props, body: body.as_bytes(), timestamp_ms: 5 };
    b.push(&rec).unwrap();
    Request::ProduceScheduled {
        topic: "t".into(),
        queue_id: 0,
        delivery,
        batch: b.finish(-1, -1).into(),
    }
}

fn held_at(r: Response) -> u64 {
    let Response::Produce { base_offset, status: SendStatus::SendOk, .. } = r else {
        panic!("{r:?}")
    };
    base_offset
}

#[test]
fn a_resent_scheduled_batch_is_held_once_by_its_unique_id_even_after_a_crash() {
    run(|| async {
        let dir = SimDir::new(78);
        let clock = runtime::SimClock::new(T0_MS);
        let shard = || shard_configured(dir.clone(), sync_flush, |_| {}, clock.clone());
        let mut s = shard().await;
        s.start_schedule().await.unwrap();
        let at = Delivery::AtMs(T0_MS + 5_000);
        let first = held_at(call(&s, scheduled_with_id("id-1", at, "one")).await.unwrap());
        // A resend (lost reply): the same place, nothing held twice.
        assert_eq!(held_at(call(&s, scheduled_with_id("id-1", at, "one")).await.unwrap()), first);
        // Two copies in flight at once: one is stored, both get its place.
        let (a, b) = futures::join!(
            call(&s, scheduled_with_id("id-2", at, "two")),
            call(&s, scheduled_with_id("id-2", at, "two"))
        );
        assert_eq!(held_at(a.unwrap()), held_at(b.unwrap()));
        // Without a unique id nothing is recognised.
        call(&s, scheduled(0, at, "plain")).await.unwrap();
        call(&s, scheduled(0, at, "plain")).await.unwrap();
        // The same id to another queue, or with another reconsume count (a consumer's next
        // retry of the message), is a send of its own.
        let other_queue = match scheduled_with_id("id-1", at, "one, queue 1") {
            Request::ProduceScheduled { topic, delivery, batch, .. } => {
                Request::ProduceScheduled { topic, queue_id: 1, delivery, batch }
            }
            _ => unreachable!(),
        };
        assert_ne!(held_at(call(&s, other_queue).await.unwrap()), first);
        let mut b = BatchBuilder::new(1 << 16);
        let props: &[(&[u8], &[u8])] = &[(b"UNIQ_KEY", b"id-1"), (b"RECONSUME_TIME", b"1")];
        let rec = Record {
            key: b"u",
            tag: b"",
            properties: props,
            body: b"one, retry 1",
            timestamp_ms: 5,
        };
        b.push(&rec).unwrap();
        let retry = Request::ProduceScheduled {
            topic: "t".into(),
            queue_id: 0,
            delivery: at,
            batch: b.finish(-1, -1).into(),
        };
        assert_ne!(held_at(call(&s, retry).await.unwrap()), first);

        // After a power cut the ids are read back from the log.
        dir.crash();
        drop(s);
        s = shard().await;
        let recovered = s.start_schedule().await.unwrap();
        assert_eq!(recovered.remembered, 4, "{recovered:?}");
        assert_eq!(held_at(call(&s, scheduled_with_id("id-1", at, "one")).await.unwrap()), first);

        clock.advance(Duration::from_millis(5_000));
        while s.schedule_step().await.unwrap().more {}
        assert_eq!(bodies(&s, 0).await, vec!["one", "one, retry 1", "plain", "plain", "two"]);
        assert_eq!(bodies(&s, 1).await, vec!["one, queue 1"]);

        // Past the window the id is forgotten: a much later send is held again.
        clock.advance(Duration::from_millis(600_000));
        let again = held_at(call(&s, scheduled_with_id("id-1", at, "one")).await.unwrap());
        assert!(again > first);
    });
}

/// A scheduled message stored after the last checkpoint (here: none since the start, with
/// nothing pending) is kept by retention before any checkpoint covers it: a restart from that
/// checkpoint re-indexes it, so the pin holds from the checkpoint's first unindexed offset
/// even when nothing was stored there yet.
#[test]
fn retention_keeps_a_scheduled_message_no_checkpoint_covers_yet() {
    run(|| async {
        let clock = runtime::SimClock::new(T0_MS);
        let s = shard_configured(SimDir::new(78), sync_flush, |_| {}, clock.clone()).await;
        s.start_schedule().await.unwrap();
        let month = T0_MS + 30 * 24 * 3_600_000;
        call(&s, scheduled(0, Delivery::AtMs(month), "a month later")).await.unwrap();
        roll_segments(&s, 45).await;
        assert_eq!(s.log.enforce_retention(far_future_ms()).await.unwrap(), vec![]);
        assert_eq!(s.log.offsets(crate::broker::shard::schedule::SYS_SCHEDULE).min, 0);
    });
}
