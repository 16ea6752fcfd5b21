//! Multi-queue reads (`CommitLog::read_many`, FETCH_MULTI): batches taken in log order,
//! each queue's in offset order, blocks of a cold log read once, damage confined to its queue.

use super::*;

/// Queues of the tests below, `n` of them (topic 7).
fn queues(n: u32) -> Vec<QueueKey> {
    (0..n).map(|q| QueueKey::new(TopicId::new(7), QueueId::new(q))).collect()
}

/// A cold log (no chunk cache, no read-ahead) with `rounds` rounds of one batch per queue,
/// `body` bytes each, tag `round * 1000 + queue`; the log's bytes.
async fn interleaved(dir: &SimDir, qs: &[QueueKey], rounds: u64, body: usize) -> u64 {
    let mut cfg = small_config(FlushMode::Async);
    cfg.cache_bytes = 0;
    cfg.read_ahead_bytes = 0;
    cfg.segment_size_bytes = 16 << 20;
    let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
    for r in 0..rounds {
        for (i, q) in qs.iter().enumerate() {
            log.append(*q, &batch(r * 1000 + i as u64, 1, body)).await.unwrap();
        }
    }
    let end = log.visible_end().get();
    log.close().await.unwrap();
    end
}

fn cold(dir: &SimDir) -> impl std::future::Future<Output = Rc<CommitLog<SimDir>>> {
    let mut cfg = small_config(FlushMode::Async);
    cfg.cache_bytes = 0;
    cfg.read_ahead_bytes = 0;
    cfg.segment_size_bytes = 16 << 20;
    let dir = dir.clone();
    async move { CommitLog::open_with(dir, cfg).await.unwrap() }
}

/// Where each queue's next read starts after `batches`, from their headers.
fn next_of(batches: &[ringmq::storage::ReadBuf], from: u64) -> u64 {
    batches.last().map_or(from, |b| BatchView::parse(b, usize::MAX).unwrap().header.next_offset())
}

/// Reads every queue to its end with multi-queue reads of `max_bytes`, each reader given the
/// queues `qs[i]` for `i % readers == reader`, the readers taking turns; every queue's tags.
async fn read_all_many(
    log: &Rc<CommitLog<SimDir>>,
    qs: &[QueueKey],
    readers: usize,
    max_bytes: usize,
) -> (Vec<Vec<u64>>, usize) {
    let mut at = vec![0u64; qs.len()];
    let mut tags = vec![Vec::new(); qs.len()];
    let mut requests = 0;
    loop {
        let mut any = false;
        for reader in 0..readers {
            let mine: Vec<usize> = (0..qs.len()).filter(|i| i % readers == reader).collect();
            let reads: Vec<_> = mine.iter().map(|&i| (qs[i], off(at[i]))).collect();
            let got = log.read_many(&reads, max_bytes).await.unwrap();
            requests += 1;
            for (&i, r) in mine.iter().zip(got) {
                let batches = r.unwrap();
                any |= !batches.is_empty();
                tags[i].extend(batches.iter().map(|b| batch_tag(b)));
                at[i] = next_of(&batches, at[i]);
            }
        }
        if !any {
            return (tags, requests);
        }
    }
}

/// Batches come in log order across the queues, within `max_bytes` (at least one), each
/// queue's in its offset order and contiguous from its offset; a queue at its end, or whose
/// batches lie past what was taken, gets none.
#[test]
fn batches_are_taken_in_log_order_up_to_max_bytes_and_each_queue_s_in_offset_order() {
    run(|| async {
        let dir = SimDir::new(61);
        let qs = queues(50);
        interleaved(&dir, &qs, 4, 900).await;
        let log = cold(&dir).await;
        let one = batch(0, 1, 900).len();
        let reads: Vec<_> = qs.iter().map(|q| (*q, off(0))).collect();
        // Ten batches' worth: the first round's first ten queues.
        let got = log.read_many(&reads, 10 * one).await.unwrap();
        for (i, r) in got.iter().enumerate() {
            let tags: Vec<u64> = r.as_ref().unwrap().iter().map(|b| batch_tag(b)).collect();
            let want: Vec<u64> = if i < 10 { vec![i as u64] } else { vec![] };
            assert_eq!(tags, want, "queue {i}");
        }
        // At least one batch, however small `max_bytes`.
        let got = log.read_many(&reads[3..], 1).await.unwrap();
        assert_eq!(got[0].as_ref().unwrap().len(), 1);
        assert!(got[1..].iter().all(|r| r.as_ref().unwrap().is_empty()));
        // Queue 0 from offset 2, the others at their end: queue 0's last two batches.
        let mut at_end: Vec<_> = qs.iter().map(|q| (*q, off(4))).collect();
        at_end[0].1 = off(2);
        let got = log.read_many(&at_end, 1 << 20).await.unwrap();
        let tags: Vec<u64> = got[0].as_ref().unwrap().iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, vec![2000, 3000]);
        assert!(got[1..].iter().all(|r| r.as_ref().unwrap().is_empty()));
        // Everything, read through in requests of eight batches' worth.
        let (tags, requests) = read_all_many(&log, &qs, 1, 8 * one).await;
        for (i, t) in tags.iter().enumerate() {
            assert_eq!(t, &(0..4).map(|r| r * 1000 + i as u64).collect::<Vec<_>>(), "queue {i}");
        }
        assert_eq!(requests, 200 / 8 + 1, "eight batches a request, then one empty");
        log.close().await.unwrap();
    });
}

/// Consumers going through a cold log together, each for its own queues, read each block of
/// the log from disk once (the blocks are kept for the others), not once per consumer.
#[test]
fn readers_of_interleaved_queues_read_the_cold_log_about_once() {
    run(|| async {
        let dir = SimDir::new(62);
        let qs = queues(200);
        let log_bytes = interleaved(&dir, &qs, 10, 2000).await;
        for readers in [1, 2, 4] {
            let log = cold(&dir).await;
            let before = dir.read_bytes();
            let (tags, _) = read_all_many(&log, &qs, readers, 256 << 10).await;
            for (i, t) in tags.iter().enumerate() {
                assert_eq!(t, &(0..10).map(|r| r * 1000 + i as u64).collect::<Vec<_>>());
            }
            let read = dir.read_bytes() - before;
            // The log once, plus the index, plus at most the read-ahead past the end.
            assert!(
                read < log_bytes + log_bytes / 5 + (2 << 20),
                "{readers} readers read {read} bytes of a {log_bytes}-byte log"
            );
            // Counted: every batch served from the blocks, each block read once.
            let m = log.metrics().probe;
            assert_eq!(m.multi_read_served_bytes, log_bytes, "{readers} readers");
            assert!(m.multi_read_bytes >= log_bytes && m.multi_read_bytes < log_bytes + (1 << 20));
            log.close().await.unwrap();
        }
    });
}

/// With no blocks kept (`multi_read_keep_bytes = 0`) every batch is still served, in order:
/// each request reads its batches on its own.
#[test]
fn without_kept_blocks_every_batch_is_still_read_and_served_in_order() {
    run(|| async {
        let dir = SimDir::new(67);
        let qs = queues(60);
        interleaved(&dir, &qs, 5, 1500).await;
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 0;
        cfg.read_ahead_bytes = 0;
        cfg.segment_size_bytes = 16 << 20;
        cfg.multi_read_keep_bytes = 0;
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        for readers in [1, 2] {
            let (tags, _) = read_all_many(&log, &qs, readers, 64 << 10).await;
            for (i, t) in tags.iter().enumerate() {
                assert_eq!(t, &(0..5).map(|r| r * 1000 + i as u64).collect::<Vec<_>>());
            }
        }
        assert_eq!(log.metrics().probe.multi_read_served_bytes, 0, "nothing kept to serve from");
        log.close().await.unwrap();
    });
}

/// Per-queue reads of the same interleaved log read each batch on its own: the comparison
/// the test above stands against (many small reads, not a few long ones).
#[test]
fn a_multi_queue_read_makes_a_few_long_disk_reads_where_per_queue_reads_make_one_per_batch() {
    run(|| async {
        let dir = SimDir::new(63);
        let qs = queues(100);
        interleaved(&dir, &qs, 5, 1500).await;
        let log = cold(&dir).await;
        let before = dir.read_count();
        for q in &qs {
            let r = log.read(*q, off(0), 1 << 20).await.unwrap();
            assert_eq!(r.batches.len(), 5);
        }
        let per_queue = dir.read_count() - before;
        log.close().await.unwrap();
        let log = cold(&dir).await;
        let before = dir.read_count();
        let (tags, _) = read_all_many(&log, &qs, 1, 4 << 20).await;
        assert!(tags.iter().all(|t| t.len() == 5));
        let multi = dir.read_count() - before;
        // Index blocks are read either way (one per queue); the batches: one read per batch,
        // against one per block of the log.
        assert!(per_queue >= 500, "{per_queue} reads");
        assert!(multi < 150, "{multi} reads, per queue {per_queue}");
        log.close().await.unwrap();
    });
}

/// A queue that is busy among idle ones gets what the idle ones leave, not only its share.
#[test]
fn a_busy_queue_among_idle_ones_fills_the_answer() {
    run(|| async {
        let dir = SimDir::new(64);
        let qs = queues(100);
        let log = cold(&dir).await;
        for q in &qs {
            log.append(*q, &batch(0, 1, 100)).await.unwrap();
        }
        for t in 1..=40 {
            log.append(qs[0], &batch(t, 1, 4000)).await.unwrap();
        }
        let reads: Vec<_> = qs.iter().map(|q| (*q, off(0))).collect();
        let got = log.read_many(&reads, 100 << 10).await.unwrap();
        let busy = got[0].as_ref().unwrap();
        // Its share of 100 KiB is 1 KiB; it gets most of the answer.
        assert!(busy.len() > 15, "the busy queue got {} batches", busy.len());
        let tags: Vec<u64> = busy.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, (0..busy.len() as u64).collect::<Vec<_>>());
        assert!(got[1..].iter().all(|r| r.as_ref().unwrap().len() == 1));
        log.close().await.unwrap();
    });
}

/// A damaged batch ends its own queue's batches (or is reported with its offsets when the
/// queue's read starts at it); the other queues' batches, before and after it in the log,
/// are served.
#[test]
fn a_damaged_batch_ends_only_its_own_queue_s_batches() {
    run(|| async {
        let dir = SimDir::new(65);
        let qs = queues(4);
        interleaved(&dir, &qs, 3, 1000).await;
        // Queue 1's second batch (round 1): the sixth batch of the log.
        let one = batch(0, 1, 1000).len();
        dir.corrupt(&segment_name(LogPosition::ZERO), 5 * one + 300);
        let log = cold(&dir).await;
        let reads: Vec<_> = qs.iter().map(|q| (*q, off(0))).collect();
        let got = log.read_many(&reads, 1 << 20).await.unwrap();
        let tags = |r: &Result<Vec<ringmq::storage::ReadBuf>, StorageError>| -> Vec<u64> {
            r.as_ref().unwrap().iter().map(|b| batch_tag(b)).collect()
        };
        assert_eq!(tags(&got[0]), vec![0, 1000, 2000]);
        assert_eq!(tags(&got[1]), vec![1], "ends before its damaged batch");
        assert_eq!(tags(&got[2]), vec![2, 1002, 2002]);
        assert_eq!(tags(&got[3]), vec![3, 1003, 2003]);
        let from_damage = [(qs[1], off(1)), (qs[2], off(1))];
        let got = log.read_many(&from_damage, 1 << 20).await.unwrap();
        match &got[0] {
            Err(StorageError::CorruptBatch { first_offset, next_offset, .. })
                if (*first_offset, *next_offset) == (off(1), off(2)) => {}
            other => panic!("expected the damaged batch's offsets, got {other:?}"),
        }
        assert_eq!(tags(&got[1]), vec![1002, 2002]);
        // Skipping it reads on.
        let got = log.read_many(&[(qs[1], off(2))], 1 << 20).await.unwrap();
        assert_eq!(tags(&got[0]), vec![2001]);
        log.close().await.unwrap();
    });
}

/// Entries kept from a queue's earlier read are used only from the offset they start at,
/// and never for batches retention deleted.
#[test]
fn a_read_from_another_offset_or_below_the_log_start_looks_the_queue_up_again() {
    run(|| async {
        let dir = SimDir::new(66);
        let qs = queues(3);
        interleaved(&dir, &qs, 6, 1000).await;
        let log = cold(&dir).await;
        let reads: Vec<_> = qs.iter().map(|q| (*q, off(0))).collect();
        // One batch per queue; the rest of each queue's entries are kept.
        let one = batch(0, 1, 1000).len();
        let got = log.read_many(&reads, 3 * one).await.unwrap();
        assert!(got.iter().all(|r| r.as_ref().unwrap().len() == 1));
        // Queue 0 re-read from 0, queue 1 from 3 (skipping ahead), queue 2 on from 1.
        let again = [(qs[0], off(0)), (qs[1], off(3)), (qs[2], off(1))];
        let got = log.read_many(&again, 1 << 20).await.unwrap();
        let tags = |k: usize| -> Vec<u64> {
            got[k].as_ref().unwrap().iter().map(|b| batch_tag(b)).collect()
        };
        assert_eq!(tags(0), (0..6).map(|r| r * 1000).collect::<Vec<_>>());
        assert_eq!(tags(1), (3..6).map(|r| r * 1000 + 1).collect::<Vec<_>>());
        assert_eq!(tags(2), (1..6).map(|r| r * 1000 + 2).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}
