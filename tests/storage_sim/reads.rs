//! Disk reads of fetches: batches far apart, and a catching-up queue's next fetch read ahead.

use super::*;

/// For reads from disk: no chunk cache, no read-ahead, segments of `segment_size_bytes`.
fn cold_config(segment_size_bytes: u64) -> StorageConfig {
    let mut cfg = small_config(FlushMode::Async);
    cfg.cache_bytes = 0;
    cfg.read_ahead_bytes = 0;
    cfg.segment_size_bytes = segment_size_bytes;
    cfg
}

/// Polls `done` every millisecond for at most 5 s: a wait that never ends fails the test
/// (with `what`) instead of hanging it.
async fn poll_until(what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if done() {
            return;
        }
        ringmq::runtime::sleep(Duration::from_millis(1)).await;
    }
    panic!("{}", what());
}

/// Rounds of the next two tests: each one small Q1 batch (tag = round), then 10 Q2 batches
/// of 14 KB (tags 1000..): 140 KB of Q2, more than the coalescing gap, between Q1's batches.
const ROUNDS: u64 = 6;

async fn write_q1_between_q2(dir: &SimDir, cfg: &StorageConfig) {
    let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
    for i in 0..ROUNDS {
        log.append(Q1, &batch(i, 1, 600)).await.unwrap();
        for j in 0..10 {
            log.append(Q2, &batch(1000 + i * 10 + j, 1, 14_000)).await.unwrap();
        }
    }
    log.close().await.unwrap();
}

/// A fetch whose batches lie far apart (other queues' batches between them) reads them as
/// several disk runs, issued at once: the batches still come back in order, and a damaged
/// batch in a later run ends the read there as it does for one run.
#[test]
fn a_fetch_of_batches_far_apart_reads_them_in_order_and_stops_at_a_damaged_one() {
    run(|| async {
        let dir = SimDir::new(14);
        let cfg = cold_config(1 << 20);
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        assert_eq!(log.segment_bases().len(), 1, "all in one segment: runs split by the gap");
        let r = log.read(Q1, off(0), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, (0..ROUNDS).collect::<Vec<_>>());
        let q2 = read_all(&log, Q2).await;
        assert_eq!(q2, (0..ROUNDS * 10).map(|t| 1000 + t).collect::<Vec<_>>());
        log.close().await.unwrap();
        // Damage Q1's batch 3 (its fourth disk run).
        let round = (batch(0, 1, 600).len() + 10 * batch(1000, 1, 14_000).len()) as u64;
        dir.corrupt(&segment_name(LogPosition::ZERO), (3 * round + 500) as usize);
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let r = log.read(Q1, off(0), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, vec![0, 1, 2]);
        assert_eq!(r.next_offset, off(3));
        match log.read(Q1, off(3), 1 << 20).await.unwrap_err() {
            StorageError::CorruptBatch { first_offset, next_offset, .. }
                if (first_offset, next_offset) == (off(3), off(4)) => {}
            err => panic!("expected the damaged batch's offsets, got {err}"),
        }
        let r = log.read(Q1, off(4), 1 << 20).await.unwrap();
        let tags: Vec<u64> = r.batches.iter().map(|b| batch_tag(b)).collect();
        assert_eq!(tags, (4..ROUNDS).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

#[test]
fn a_fetch_of_batches_far_apart_reads_no_other_queues_bytes_ahead() {
    run(|| async {
        let dir = SimDir::new(15);
        let mut cfg = small_config(FlushMode::Async);
        cfg.cache_bytes = 0;
        cfg.read_ahead_bytes = 64 << 10;
        // Read-ahead alone (the next test reads the next fetch ahead).
        cfg.prefetch_bytes = 0;
        cfg.segment_size_bytes = 4 << 20;
        // Q1's batches lie 140 KB apart, between Q2's: every Q1 batch is a disk run.
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let before = dir.read_bytes();
        let r = log.read(Q1, off(0), 1 << 20).await.unwrap();
        assert_eq!(r.batches.len() as u64, ROUNDS);
        let served: u64 = r.batches.iter().map(|b| b.len() as u64).sum();
        // Its batches and its index page, not 64 KiB ahead of each of them.
        let read = dir.read_bytes() - before;
        assert!(read < served + (64 << 10), "read {read} bytes to serve {served}");
        // One run (Q2's adjacent batches): read ahead, so the next fetch reads nothing.
        let first = log.read(Q2, off(0), 30_000).await.unwrap();
        assert_eq!(first.batches.len(), 2);
        let reads = dir.read_count();
        let next = log.read(Q2, first.next_offset, 30_000).await.unwrap();
        assert_eq!(next.batches.len(), 2);
        assert_eq!(dir.read_count(), reads, "served from the read-ahead");
        log.close().await.unwrap();
    });
}

/// A queue whose fetch was read from disk is catching up: its next fetch is read while its
/// consumer takes the current one, and is then served from those reads. Every batch still
/// comes once, in order, and nothing is read twice, also when the next fetch comes at once
/// (it waits for the prefetch's reads). With `prefetch_bytes = 0`, or a bound below one fetch,
/// every fetch reads the disk itself.
#[test]
fn a_catching_up_queues_next_fetch_is_read_while_it_takes_the_current_one() {
    run(|| async {
        // (prefetch_bytes, prefetching, the consumer waits for the prefetch before its next fetch)
        let cases = [(32 << 20, true, true), (32 << 20, true, false), (0, false, false)];
        for (prefetch_bytes, prefetched, pause) in cases.into_iter().chain([(1000, false, false)]) {
            let dir = SimDir::new(16);
            let mut cfg = cold_config(4 << 20);
            cfg.prefetch_bytes = prefetch_bytes;
            // Q1's batches lie 140 KB apart: two of them a fetch, each its own disk read.
            write_q1_between_q2(&dir, &cfg).await;
            let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
            let fetch = 2 * batch(0, 1, 600).len();
            let (mut tags, mut at, mut served) = (Vec::new(), off(0), 0u64);
            // Disk reads during the fetches after the first.
            let mut read_in_fetches = 0;
            let mut fetches = 0;
            while tags.len() < ROUNDS as usize {
                let before = dir.read_count();
                let r = log.read(Q1, at, fetch).await.unwrap();
                if fetches > 0 {
                    read_in_fetches += dir.read_count() - before;
                }
                fetches += 1;
                tags.extend(r.batches.iter().map(|b| batch_tag(b)));
                served += r.batches.iter().map(|b| b.len() as u64).sum::<u64>();
                at = r.next_offset;
                // The consumer takes its time: its next fetch is read meanwhile (polled with a
                // bound; the last fetch has no next). Every fetch after the first is read
                // ahead, each `fetch` bytes (the first fetch started two: the next two).
                if pause && tags.len() < ROUNDS as usize {
                    let next_read = fetches * fetch as u64;
                    let read_ahead = || log.metrics().probe.prefetch_bytes >= next_read;
                    poll_until(|| "the next fetch was not read ahead".into(), read_ahead).await;
                }
            }
            assert_eq!(tags, (0..ROUNDS).collect::<Vec<_>>(), "prefetch_bytes {prefetch_bytes}");
            assert_eq!(fetches, ROUNDS / 2);
            let m = log.metrics().probe;
            if prefetched {
                if pause {
                    // Each fetch after the first was read while the one before was taken.
                    assert_eq!(read_in_fetches, 0);
                }
                assert_eq!(m.prefetch_served_bytes, served * 2 / 3);
                assert_eq!(m.prefetch_bytes, m.prefetch_served_bytes, "nothing read twice");
            } else {
                assert!(read_in_fetches >= ROUNDS - 2, "each batch read by its fetch");
                assert_eq!((m.prefetch_bytes, m.prefetch_served_bytes), (0, 0));
            }
            log.close().await.unwrap();
        }
    });
}

/// A catching-up queue's next two fetches are read ahead together, their reads in flight with
/// the fetch's own, so the disk has work while each is served; the second only from room no
/// kept buffer needs (`prefetch_bytes` of 24 KiB holds one fetch of two 8 KiB-charged reads
/// in flight, not two).
#[test]
fn the_next_two_fetches_are_read_ahead_together_the_second_from_free_room() {
    run(|| async {
        for (prefetch_bytes, in_flight) in [(32 << 20, 6), (24 * 1024, 4)] {
            let dir = SimDir::new(21);
            let mut cfg = cold_config(4 << 20);
            cfg.prefetch_bytes = prefetch_bytes;
            write_q1_between_q2(&dir, &cfg).await;
            let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
            let fetch = 2 * batch(0, 1, 600).len();
            // Q1's index block cached: the reads below are batches only.
            assert_eq!(log.read(Q1, off(ROUNDS - 1), fetch).await.unwrap().batches.len(), 1);
            let reads = || dir.in_progress(SimOp::Read);
            dir.pause(SimOp::Read);
            let first = {
                let log = log.clone();
                ringmq::runtime::spawn(async move { log.read(Q1, off(0), fetch).await })
            };
            // Two batches 140 KB apart per fetch: two reads each.
            poll_until(
                || format!("{} reads in flight, not {in_flight}", reads()),
                || reads() == in_flight,
            )
            .await;
            ringmq::runtime::sleep(Duration::from_millis(5)).await;
            assert_eq!(reads(), in_flight, "prefetch_bytes {prefetch_bytes}: no more");
            dir.resume(SimOp::Read);
            let mut tags: Vec<u64> =
                first.await.unwrap().unwrap().batches.iter().map(|b| batch_tag(b)).collect();
            let mut at = off(2);
            while tags.len() < ROUNDS as usize {
                let r = log.read(Q1, at, fetch).await.unwrap();
                tags.extend(r.batches.iter().map(|b| batch_tag(b)));
                at = r.next_offset;
            }
            assert_eq!(tags, (0..ROUNDS).collect::<Vec<_>>());
            let m = log.metrics().probe;
            assert_eq!(m.prefetch_bytes, m.prefetch_served_bytes, "nothing read twice");
            log.close().await.unwrap();
        }
    });
}

/// A prefetch starts only while the disk reads in flight (other fetches', this fetch's own and
/// the prefetches') leave room for it within `prefetch_bytes`: consumers whose own fetches
/// keep that much read at once keep the disk busy without it. Q2's fetch of 42 KB is in flight
/// while Q1 fetches two small batches: no prefetch (32 KiB bound); alone, Q1's next fetch is
/// read ahead.
#[test]
fn no_prefetch_while_other_fetches_reads_fill_the_bound() {
    run(|| async {
        let dir = SimDir::new(19);
        let mut cfg = cold_config(4 << 20);
        cfg.prefetch_bytes = 32 * 1024;
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let fetch = 2 * batch(0, 1, 600).len();
        // The last batch of each queue (nothing after it to prefetch): their index blocks are
        // cached, so the fetches below read only batches.
        assert_eq!(log.read(Q1, off(ROUNDS - 1), fetch).await.unwrap().batches.len(), 1);
        assert_eq!(log.read(Q2, off(ROUNDS * 10 - 1), 64 * 1024).await.unwrap().batches.len(), 1);
        let reads = || dir.in_progress(SimOp::Read);
        let settle = |n: u32| {
            poll_until(
                move || format!("{} reads in flight, not {n}", reads()),
                move || reads() == n,
            )
        };
        dir.pause(SimOp::Read);
        let q2 = {
            let log = log.clone();
            ringmq::runtime::spawn(async move { log.read(Q2, off(57), 64 * 1024).await })
        };
        settle(1).await; // Q2's three batches: one read of 42 KB.
        let q1 = {
            let log = log.clone();
            ringmq::runtime::spawn(async move { log.read(Q1, off(0), fetch).await })
        };
        settle(3).await; // Q1's two batches lie apart: two reads.
        ringmq::runtime::sleep(Duration::from_millis(5)).await;
        assert_eq!(dir.in_progress(SimOp::Read), 3, "no prefetch reads issued");
        dir.resume(SimOp::Read);
        assert_eq!(q2.await.unwrap().unwrap().batches.len(), 3);
        let first = q1.await.unwrap().unwrap();
        assert_eq!(first.batches.iter().map(|b| batch_tag(b)).collect::<Vec<_>>(), [0, 1]);
        settle(0).await;
        assert_eq!(log.metrics().probe.prefetch_bytes, 0);
        // Alone, with room: Q1's fetch after the next is read ahead.
        let next = log.read(Q1, first.next_offset, fetch).await.unwrap();
        assert_eq!(next.batches.len(), 2);
        let read_ahead = || log.metrics().probe.prefetch_bytes == fetch as u64;
        poll_until(|| "the fetch after it was not read ahead".into(), read_ahead).await;
        log.close().await.unwrap();
    });
}

/// Close waits for a prefetch in flight (it reads segment files close is about to close), and
/// the log reopens with every batch readable.
#[test]
fn close_waits_for_a_prefetch_in_flight() {
    run(|| async {
        let dir = SimDir::new(17);
        let cfg = cold_config(4 << 20);
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg.clone()).await.unwrap();
        let fetch = 2 * batch(0, 1, 600).len();
        let first = log.read(Q1, off(0), fetch).await.unwrap();
        assert_eq!(first.batches.len(), 2);
        // The prefetches of the next two fetches have not read yet: their reads take 50 ms
        // each.
        assert_eq!(log.metrics().probe.prefetch_bytes, 0);
        dir.set_latency(SimOp::Read, Duration::from_millis(50));
        log.close().await.unwrap();
        assert_eq!(log.metrics().probe.prefetch_bytes, 2 * fetch as u64, "they finished first");
        dir.set_latency(SimOp::Read, Duration::ZERO);
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        assert_eq!(read_all(&log, Q1).await, (0..ROUNDS).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

/// A prefetch in flight holds the log only weakly: a dropped log is freed (its flusher and
/// index writer stop) while the prefetch's reads still run. Holding it made a crashed log's
/// index writer write into the index files of the log reopened on its directory
/// (`storage_model.rs`, `crash_with_a_prefetch_in_flight`).
#[test]
fn a_dropped_log_is_freed_while_a_prefetch_reads() {
    run(|| async {
        let dir = SimDir::new(18);
        let cfg = cold_config(4 << 20);
        write_q1_between_q2(&dir, &cfg).await;
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        let fetch = 2 * batch(0, 1, 600).len();
        let first = log.read(Q1, off(0), fetch).await.unwrap();
        let read_ahead = || log.metrics().probe.prefetch_bytes > 0;
        poll_until(|| "the second fetch was not read ahead".into(), read_ahead).await;
        // The second fetch is served from memory and starts the third's prefetch, whose reads
        // are held.
        dir.pause(SimOp::Read);
        let second = log.read(Q1, first.next_offset, fetch).await.unwrap();
        assert_eq!(second.batches.len(), 2);
        let weak = Rc::downgrade(&log);
        drop(log);
        for _ in 0..100 {
            if weak.upgrade().is_none() {
                dir.resume(SimOp::Read);
                return;
            }
            ringmq::runtime::sleep(Duration::from_millis(2)).await;
        }
        panic!("the log is still alive while its prefetch reads");
    });
}

/// Batches that straddle two cached chunks (a 1 MiB batch over 1 MiB chunks nearly always
/// does) are served from memory with one copy, no disk read; the chunk cache counts them as
/// hits, for `read` and `read_many` alike. They were counted as misses, "log reads that went
/// to disk": with 1 MiB batches the cache's hit ratio read near 0 while it served every read.
#[test]
fn batches_straddling_cached_chunks_count_as_chunk_cache_hits() {
    run(|| async {
        let dir = SimDir::new(31);
        let mut cfg = small_config(FlushMode::Async);
        cfg.segment_size_bytes = 1 << 20;
        cfg.cache_bytes = 512 * 1024;
        let log = CommitLog::open_with(dir.clone(), cfg).await.unwrap();
        // 6,000-byte batches over 8 KiB chunks: most of them straddle two.
        for tag in 0..20 {
            log.append(Q1, &batch(tag, 1, 6000)).await.unwrap();
            log.append(Q2, &batch(100 + tag, 1, 6000)).await.unwrap();
        }
        log.flush().await.unwrap();
        let (reads, before) = (dir.read_count(), log.metrics());
        assert_eq!(read_all(&log, Q1).await, (0..20).collect::<Vec<_>>());
        let many = log.read_many(&[(Q1, off(0)), (Q2, off(0))], 1 << 20).await.unwrap();
        let got: usize = many.iter().map(|r| r.as_ref().unwrap().len()).sum();
        assert_eq!(got, 40, "both queues' batches in one read");
        let after = log.metrics();
        assert_eq!(dir.read_count(), reads, "served from memory");
        assert_eq!(after.chunk_cache_misses, before.chunk_cache_misses, "{after:?}");
        assert_eq!(after.chunk_cache_hits - before.chunk_cache_hits, 60, "{after:?}");
        log.close().await.unwrap();
    });
}
