//! The staging area: appends, the worker's hand-offs, bounds and spare buffers.

use super::spares::SPARE_MAX_CAPACITY;
use super::*;

fn staging() -> Staging {
    Staging::new(StagingLimits {
        max_batch_bytes: 400,
        pipeline_min_batch_bytes: 200,
        max_messages: 1000,
        max_bytes: 1 << 20,
    })
}

/// Appends a 40-byte body to queue `q` of "t"; whether the worker was asked to wake.
fn append(s: &Staging, q: u32, t0: Instant) -> bool {
    s.append("t", q, &Message::new("t", vec![7u8; 40]), 1, || t0, &|| {}).1
}

/// Batches of up to 1 MiB, none pipelined before it is full.
fn large_batches(max_messages: usize, max_bytes: usize) -> Staging {
    Staging::new(StagingLimits {
        max_batch_bytes: 1 << 20,
        pipeline_min_batch_bytes: 1 << 20,
        max_messages,
        max_bytes,
    })
}

/// Capacity of queue `id`'s open batch, if it has one.
fn open_capacity(s: &Staging, id: usize) -> Option<usize> {
    lock(&s.state).queues[id].open.as_ref().map(|o| o.builder_capacity())
}

fn dirty(s: &Staging) -> Vec<usize> {
    let (mut d, mut keys) = (Vec::new(), Vec::new());
    s.take_dirty(0, &mut d, &mut keys);
    d
}

#[test]
fn an_answered_batch_s_buffer_is_used_again_within_a_bound() {
    // max_bytes 1 MiB: spares keep at most 64 KiB.
    let s = large_batches(1000, 1 << 20);
    let t0 = Instant::now();
    // Without spares a new queue's batch starts at 1 KiB.
    append(&s, 0, t0);
    assert_eq!(open_capacity(&s, 0), Some(1024));
    // An answered batch's buffer opens the next new batch.
    s.release(0, Some(Vec::with_capacity(3000)));
    append(&s, 1, t0);
    assert_eq!(open_capacity(&s, 1), Some(3000));
    append(&s, 2, t0);
    assert_eq!(open_capacity(&s, 2), Some(1024), "no spare left");
    // A spare smaller than the batch's expected size is used too, and grows with it.
    s.release(0, Some(Vec::with_capacity(500)));
    append(&s, 3, t0);
    assert_eq!(open_capacity(&s, 3), Some(500));
    for _ in 0..20 {
        append(&s, 3, t0);
    }
    assert!(open_capacity(&s, 3).is_some_and(|c| c >= 21 * 40));
    // One far larger than the batch is expected to need (a new queue's: 1 KiB) is freed,
    // not handed to it.
    s.release(0, Some(Vec::with_capacity(4 * 1024 + 1)));
    append(&s, 4, t0);
    assert_eq!(open_capacity(&s, 4), Some(1024));
    assert_eq!(s.spare_count(), 0);
    // Bounded: large buffers are freed, and at most a sixteenth of max_bytes is kept.
    s.release(0, Some(Vec::with_capacity(SPARE_MAX_CAPACITY + 1)));
    for _ in 0..100 {
        s.release(0, Some(Vec::with_capacity(4096)));
    }
    let st = lock(&s.state);
    assert!(st.spares.bufs.iter().all(|b| b.capacity() <= SPARE_MAX_CAPACITY));
    assert_eq!(st.spares.bytes, st.spares.bufs.iter().map(Vec::capacity).sum::<usize>());
    assert_eq!(st.spares.bufs.len(), 16, "64 KiB of 4 KiB buffers");
    assert_eq!(st.spares.bytes, (1 << 20) / 16);
}

#[test]
fn queues_are_told_apart_by_topic_and_id_in_any_order() {
    let s = staging();
    let mut st = lock(&s.state);
    let ids: Vec<usize> = [("t", 5), ("t", 2), ("u", 2), ("t", 5), ("u", 0), ("t", 2)]
        .iter()
        .map(|&(t, q)| st.queue(t, q))
        .collect();
    assert_eq!(ids, [0, 1, 2, 0, 3, 1]);
    assert_eq!(st.queues[2].key, (Arc::from("u"), 2));
}

#[test]
fn a_queue_s_next_batch_starts_about_the_size_of_its_last_one() {
    let s = Staging::new(StagingLimits {
        max_batch_bytes: 1 << 20,
        pipeline_min_batch_bytes: 0,
        max_messages: 1000,
        max_bytes: 1 << 30,
    });
    let t0 = Instant::now();
    let capacity = |s: &Staging| {
        let st = lock(&s.state);
        let q = &st.queues[0];
        (q.capacity(), q.open.as_ref().map(|o| o.builder_capacity()))
    };
    let msg = Message::new("t", vec![7u8; 3000]);
    s.append("t", 0, &msg, 1, || t0, &|| {});
    assert_eq!(capacity(&s).0, 1024, "a new queue's first batch starts small (and grows)");
    let mut out = Vec::new();
    s.take(0, &mut out, |_, _, _, _| true);
    let taken = out[0].builder.len_bytes();
    assert_eq!(capacity(&s).0, 2 * taken);
    s.append("t", 0, &msg, 1, || t0, &|| {});
    assert_eq!(capacity(&s).1, Some(2 * taken), "room for the next one, no regrowth");
    for _ in 0..100 {
        s.append("t", 0, &msg, 1, || t0, &|| {});
    }
    s.take(0, &mut out, |_, _, _, _| true);
    let taken = out[1].builder.len_bytes();
    assert!(taken > 64 * 1024);
    assert_eq!(capacity(&s).0, 2 * taken);
    s.append("t", 0, &msg, 1, || t0, &|| {});
    assert_eq!(capacity(&s).1, Some(2 * taken), "a large batch's room at once too");
}

#[test]
fn room_beyond_64_kib_is_given_within_the_buffer_s_bytes_and_given_back() {
    let s = large_batches(100_000, 4 << 20);
    let t0 = Instant::now();
    let reserved = |s: &Staging| lock(&s.state).reserved;
    {
        // Ten queues whose last batches were full.
        let mut st = lock(&s.state);
        for q in 0..10 {
            let id = st.queue("t", q);
            st.queues[id].last_batch_bytes = 1 << 20;
        }
    }
    for q in 0..6 {
        append(&s, q, t0);
    }
    // The batch limit's room for as many as max_bytes holds, 64 KiB for the others.
    let caps: Vec<_> = (0..6).map(|id| open_capacity(&s, id).unwrap()).collect();
    assert_eq!(caps, [1 << 20, 1 << 20, 1 << 20, 1 << 20, 64 * 1024, 64 * 1024]);
    assert_eq!(reserved(&s), 4 << 20);
    // A batch taken long before it is full gives its room back, and its unused bytes too.
    let mut out = Vec::new();
    s.take(0, &mut out, |_, _, _, _| true);
    assert_eq!(reserved(&s), 3 << 20);
    assert!(out[0].builder.capacity() < 64 * 1024, "{}", out[0].builder.capacity());
    // A batch filled past half its room keeps it.
    let open_len = |s: &Staging, id: usize| {
        lock(&s.state).queues[id].open.as_ref().map_or(0, |o| o.builder.len_bytes())
    };
    while open_len(&s, 1) < 600 * 1024 {
        append(&s, 1, t0);
    }
    s.take(1, &mut out, |_, _, _, _| true);
    assert_eq!(out[1].builder.capacity(), 1 << 20);
    assert_eq!(reserved(&s), 2 << 20);
    // The room given back goes to the next large batch.
    append(&s, 6, t0);
    assert_eq!(open_capacity(&s, 6), Some(1 << 20));
    // Every batch sealed (the worker gone) gives it all back.
    s.close();
    assert_eq!(reserved(&s), 0);
}

#[test]
fn when_the_worker_is_gone_waiting_and_staged_sends_fail_instead_of_blocking() {
    let s = Arc::new(Staging::new(StagingLimits {
        max_batch_bytes: 400,
        pipeline_min_batch_bytes: 200,
        max_messages: 1,
        max_bytes: 1 << 20,
    }));
    let t0 = Instant::now();
    let (staged, _) = s.append("t", 0, &Message::new("t", vec![7u8; 40]), 1, || t0, &|| {});
    // Full: the next caller waits for room, which only the worker would make.
    let waiter = {
        let s = s.clone();
        std::thread::spawn(move || {
            s.append("t", 0, &Message::new("t", vec![7u8; 40]), 1, || t0, &|| {}).0.wait()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    s.close();
    assert!(matches!(waiter.join().unwrap(), Err(ClientError::Closed)));
    assert!(matches!(staged.wait(), Err(ClientError::Closed)));
    // Later sends fail at once.
    let (p, woke) = s.append("t", 1, &Message::new("t", vec![1]), 1, || t0, &|| {});
    assert!(!woke);
    assert!(matches!(p.wait(), Err(ClientError::Closed)));
}

#[test]
fn the_worker_hears_of_a_batch_opened_pipelineable_or_sealed_not_of_every_message() {
    let s = staging();
    let t0 = Instant::now();
    assert!(append(&s, 0, t0), "a new batch: wake the worker");
    let q0 = s.staged().1;
    assert!(!append(&s, 1, t0), "another new batch, the wake-up already asked for");
    let q1 = s.staged().1 - q0;
    let record = q0 - crate::format::HEADER_LEN;
    assert_eq!(dirty(&s), [0, 1]);
    // Appends to queue 0 ask for nothing until its batch reaches pipeline_min_batch_bytes.
    let mut messages = 2;
    loop {
        let woke = append(&s, 0, t0);
        messages += 1;
        let open = s.staged().1 - q1;
        if woke {
            assert!(open >= 200 && open - record < 200, "{open}");
            break;
        }
        assert!(open < 200 && dirty(&s).is_empty(), "{open}");
    }
    assert_eq!(dirty(&s), [0]);
    // Then nothing until it is full and sealed (the message that did not fit opens the
    // next batch).
    loop {
        let woke = append(&s, 0, t0);
        messages += 1;
        if woke {
            break;
        }
        assert!(s.staged().1 - q1 <= 400);
    }
    assert_eq!(s.staged().0, messages);
    // The worker takes queue 0's sealed batch and, when it says so, the open one.
    let mut out = Vec::new();
    let bytes = s.staged().1;
    let left = s.take(0, &mut out, |sealed, started, _, pressed| {
        assert!(sealed == 1 && started == t0 && !pressed);
        false
    });
    assert!(left.is_some_and(|(started, len)| started == t0 && len > 0));
    assert_eq!(out.len(), 1);
    assert!(out[0].builder.len_bytes() <= 400);
    assert_eq!(s.staged().1, bytes, "taken bytes count until released");
    assert!(s.take(0, &mut out, |_, _, _, _| true).is_none());
    assert!(s.take(1, &mut out, |_, _, _, _| true).is_none());
    assert_eq!(s.staged(), (0, bytes), "every message taken");
    let records: u32 = out.iter().map(|b| b.builder.record_count()).sum();
    assert_eq!(records as usize, messages);
    let taken: usize = out.iter().map(|b| b.builder.len_bytes()).sum();
    assert_eq!(taken, bytes, "the bytes counted are the batches' bytes");
    s.release(taken, None);
    assert_eq!(s.staged(), (0, 0));
}

#[test]
fn a_message_too_large_for_any_batch_fails_alone() {
    let s = staging();
    let t0 = Instant::now();
    let (p, woke) = s.append("t", 0, &Message::new("t", vec![0u8; 500]), 1, || t0, &|| {});
    assert!(!woke);
    assert!(matches!(p.try_take(), Some(Err(ClientError::Invalid(_)))));
    assert_eq!(s.staged(), (0, 0));
    assert!(append(&s, 0, t0));
}

#[test]
fn room_is_given_back_when_a_full_batch_is_sealed_and_when_a_message_fits_in_none() {
    let s = large_batches(100_000, 4 << 20);
    let t0 = Instant::now();
    let reserved = |s: &Staging| lock(&s.state).reserved;
    lock(&s.state).queue("t", 0);
    lock(&s.state).queues[0].last_batch_bytes = 1 << 20;
    // A message larger than any batch: the batch opened for it gives its room back.
    let (h, _) = s.append("t", 0, &Message::new("t", vec![0u8; 2 << 20]), 1, || t0, &|| {});
    assert!(h.wait().is_err());
    assert_eq!(reserved(&s), 0);
    // Filled until a message no longer fits: the full batch is sealed and gives its room back,
    // the next one (its last batch was full) takes the whole room again.
    append(&s, 0, t0);
    assert_eq!(reserved(&s), 1 << 20);
    while lock(&s.state).queues[0].sealed.is_empty() {
        append(&s, 0, t0);
    }
    assert_eq!(open_capacity(&s, 0), Some(1 << 20));
    assert_eq!(reserved(&s), 1 << 20, "one open batch holds it, the sealed one none");
    // A batch built by the caller seals the open one behind it.
    let b = crate::format::batch::one_record_builder(1 << 20);
    let (done, _pending) = crate::client::pending::pending();
    s.push_batch("t", 0, b, t0, done, &|| {});
    assert_eq!(reserved(&s), 0);
}

#[test]
fn a_queue_written_to_rarely_has_its_records_checksummed_as_they_come() {
    let s = large_batches(100_000, 4 << 20);
    let t0 = Instant::now();
    let queues = HOT_QUEUE as u32 + 10;
    // Round-robin over more queues than the hot distance: from its second message on, each
    // queue is cold when written to. Queue 0 then gets messages back to back (hot).
    for _ in 0..3 {
        for q in 0..queues {
            append(&s, q, t0);
        }
    }
    for _ in 0..3 {
        append(&s, 0, t0);
    }
    let pending = |id: usize| {
        lock(&s.state).queues[id].open.as_ref().map(|o| o.builder.unchecksummed_bytes())
    };
    assert_eq!(pending(1), Some(0), "every record of a cold queue is in the running CRC");
    assert!(pending(0).unwrap() > 0, "a hot queue's records are checksummed at the end");
    for id in [0, 1, queues as usize - 1] {
        let mut out = Vec::new();
        s.take(id, &mut out, |_, _, _, _| true);
        let [batch] = &mut out[..] else { panic!("one batch") };
        let builder = std::mem::replace(&mut batch.builder, BatchBuilder::new(1024));
        let bytes = builder.finish(-1, -1);
        let view = crate::format::BatchView::parse(&bytes, bytes.len()).expect("its CRC holds");
        assert_eq!(view.header.record_count, if id == 0 { 6 } else { 3 });
    }
}

#[test]
fn appends_to_a_queue_whose_reply_the_worker_awaits_do_not_wake_it() {
    let s = staging(); // batches of 400 bytes, pipelined from 200
    let t0 = Instant::now();
    let sealed = |s: &Staging| lock(&s.state).queues[0].sealed.len();
    let open_bytes =
        |s: &Staging| lock(&s.state).queues[0].open.as_ref().map_or(0, |o| o.builder.len_bytes());
    // Nothing held: a new batch asks for the worker, and so does a sealed one.
    assert!(append(&s, 0, t0));
    assert_eq!(dirty(&s), [0]);
    while sealed(&s) == 0 {
        append(&s, 0, t0);
    }
    assert_eq!(dirty(&s), [0]);
    let mut out = Vec::new();
    s.take(0, &mut out, |_, _, _, _| true);
    // The worker holds batches of queue 0, below its in-flight bound: a new batch gathers for
    // the reply, one that became big enough to be pipelined asks for the worker, a sealed one
    // waits for the reply.
    assert!(!s.set_flow(0, true, false));
    assert!(!append(&s, 0, t0));
    assert_eq!(dirty(&s), Vec::<usize>::new());
    while open_bytes(&s) < 200 {
        append(&s, 0, t0);
    }
    assert_eq!(dirty(&s), [0], "pipelineable");
    while sealed(&s) == 0 {
        assert!(!append(&s, 0, t0));
    }
    assert_eq!(dirty(&s), Vec::<usize>::new());
    // All it may have in flight: a batch that can be pipelined does not ask for it either.
    assert!(!s.set_flow(0, true, true));
    while open_bytes(&s) < 200 {
        assert!(!append(&s, 0, t0));
    }
    assert_eq!(dirty(&s), Vec::<usize>::new());
    // The flags cleared with batches staged: the worker is told to look at the queue.
    assert!(s.set_flow(0, true, false));
    assert!(!s.set_flow(0, true, false), "not cleared: nothing to say");
    assert!(s.set_flow(0, false, false));
    // Nothing staged: nothing to look at.
    s.take(0, &mut out, |_, _, _, _| true);
    s.set_flow(0, true, true);
    assert!(!s.set_flow(0, false, false));
    assert!(append(&s, 0, t0), "an idle queue's new batch asks for the worker again");
}

#[test]
fn an_open_batch_s_handles_are_paid_for_in_advance() {
    let s = large_batches(1000, 1 << 20);
    let t0 = Instant::now();
    let refs = |s: &Staging| {
        let st = lock(&s.state);
        st.queues[0].open.as_ref().map(|o| (o.completion.refs(), o.credits.left()))
    };
    let msg = Message::new("t", vec![7u8; 40]);
    let mut handles = Vec::new();
    handles.push(s.append("t", 0, &msg, 1, || t0, &|| {}).0);
    assert_eq!(refs(&s), Some((1 + HANDLE_CREDITS, HANDLE_CREDITS - 1)), "one add paid for many");
    for _ in 1..HANDLE_CREDITS {
        handles.push(s.append("t", 0, &msg, 1, || t0, &|| {}).0);
    }
    assert_eq!(refs(&s), Some((1 + HANDLE_CREDITS, 0)), "no count per handle");
    handles.push(s.append("t", 0, &msg, 1, || t0, &|| {}).0);
    assert_eq!(refs(&s), Some((1 + 2 * HANDLE_CREDITS, HANDLE_CREDITS - 1)), "the next add");
    // Sealed, the batch gives back the references it did not hand out: its completion's
    // count is its own reference and its handles'.
    let sealed = {
        let mut st = lock(&s.state);
        let q = &mut st.queues[0];
        let open = q.open.take().unwrap();
        let mut reserved = open.reserved;
        open.seal(&mut reserved)
    };
    let Completion::PerMessage { batch, count } = &sealed.completion else {
        panic!("a batch of send_async messages")
    };
    assert_eq!(*count as usize, handles.len());
    assert_eq!(batch.refs(), 1 + handles.len());
    drop(handles);
    assert_eq!(batch.refs(), 1);
}

/// Appends a 40-byte body to topic `t` round robin per batch over `queues`; the queue id it
/// went to and whether the worker was asked to wake.
fn append_per_batch(s: &Staging, t: &str, queues: u32) -> (u32, bool) {
    let msg = Message::new(t, vec![7u8; 40]);
    let target = Target::PerBatch { queue_count: queues };
    let woke = s.append(t, target, &msg, 1, Instant::now, &|| {}).1;
    let st = lock(&s.state);
    (st.index[t].current.expect("a current queue").0, woke)
}

/// The staging index of `topic` queue `q`.
fn id_of(s: &Staging, topic: &str, q: u32) -> usize {
    lock(&s.state).index[topic].ids[q as usize] as usize
}

#[test]
fn round_robin_per_batch_fills_a_queue_s_batch_then_moves_to_the_next_queue() {
    let s = staging(); // batches of at most 400 bytes
    lock(&s.state).first_queue = 6; // queue 6 % 4 = 2 first
    let (first, woke) = append_per_batch(&s, "t", 4);
    assert_eq!(first, 2);
    assert!(woke, "a new batch: the worker hears of it");
    for _ in 0..3 {
        assert_eq!(append_per_batch(&s, "t", 4), (2, false), "the open batch takes it");
    }
    // The worker takes the open batch (its linger ran out): the next message opens a batch
    // on the next queue, not on queue 2 again.
    let mut out = Vec::new();
    s.take(id_of(&s, "t", 2), &mut out, |_, _, _, _| true);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].builder.record_count(), 4);
    assert_eq!(append_per_batch(&s, "t", 4).0, 3);
    let mut out = Vec::new();
    s.take(id_of(&s, "t", 3), &mut out, |_, _, _, _| true);
    assert_eq!(append_per_batch(&s, "t", 4).0, 0, "round the topic's queues");
    // Another topic has a turn of its own.
    let (other, _) = append_per_batch(&s, "u", 3);
    assert_eq!(other, 0, "6 % 3");
    assert_eq!(append_per_batch(&s, "t", 4).0, 0, "t's batch on queue 0 is still open");
    // Fewer queues than the current one's id (the topic's route changed): the turn goes on
    // among the queues there are.
    let mut out = Vec::new();
    s.take(id_of(&s, "t", 0), &mut out, |_, _, _, _| true);
    for _ in 0..3 {
        let (q, _) = append_per_batch(&s, "t", 4);
        assert_eq!(q, 1);
        let mut out = Vec::new();
        s.take(id_of(&s, "t", 1), &mut out, |_, _, _, _| true);
        let (q, _) = append_per_batch(&s, "t", 4);
        assert_eq!(q, 2);
        s.take(id_of(&s, "t", 2), &mut out, |_, _, _, _| true);
        let (q, _) = append_per_batch(&s, "t", 2);
        assert_eq!(q, (2 + 1) % 2, "queue 2 is past 2 queues: the next one modulo 2");
        s.take(id_of(&s, "t", 1), &mut out, |_, _, _, _| true);
        assert_eq!(append_per_batch(&s, "t", 2).0, 0);
        s.take(id_of(&s, "t", 0), &mut out, |_, _, _, _| true);
    }
}

#[test]
fn round_robin_per_batch_seals_a_full_batch_and_gives_the_next_message_to_the_next_queue() {
    let s = staging(); // batches of at most 400 bytes: a few 40-byte messages each
    lock(&s.state).first_queue = 0;
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for _ in 0..40 {
        let (q, _) = append_per_batch(&s, "t", 3);
        match runs.last_mut() {
            Some((last, n)) if *last == q => *n += 1,
            _ => runs.push((q, 1)),
        }
    }
    // Each batch filled up on its own queue, then the next queue took the next batch:
    // queues in turn, every batch but the last the same number of messages.
    let per_batch = runs[0].1;
    assert!(per_batch >= 3, "{runs:?}");
    for (i, &(q, n)) in runs.iter().enumerate() {
        assert_eq!(q, i as u32 % 3, "{runs:?}");
        if i + 1 < runs.len() {
            assert_eq!(n, per_batch, "{runs:?}");
        }
    }
    // The full batches were sealed (and the worker told), not left open on their queues.
    let st = lock(&s.state);
    let sealed: usize = st.queues.iter().map(|q| q.sealed.len()).sum();
    assert_eq!(sealed, runs.len() - 1);
    let open: Vec<_> = st.queues.iter().filter(|q| q.open.is_some()).map(|q| q.key.1).collect();
    assert_eq!(open, vec![runs.last().unwrap().0], "only the current queue has an open batch");
    drop(st);
    assert!(!dirty(&s).is_empty(), "the sealed batches are on the dirty list");
}
