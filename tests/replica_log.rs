//! A replica's commit log as a byte copy of its master's (`CommitLog::read_batches_at` on the
//! master, `CommitLog::append_replicated` on the replica), on the simulated directory.

mod common;

use std::rc::Rc;

use common::{batch, batch_tag, run, small_config};
use ringmq::format::batch::{read_header, stamp, Stamp};
use ringmq::format::BatchView;
use ringmq::storage::file::LogDir;
use ringmq::storage::segment::segment_name;
use ringmq::storage::sim_dir::SimDir;
use ringmq::storage::{
    BatchLimit, CommitLog, FlushMode, LogPosition, QueueId, QueueKey, StorageConfig, StorageError,
    TopicId,
};

const QUEUES: [QueueKey; 3] = [
    QueueKey::new(TopicId::new(1), QueueId::new(0)),
    QueueKey::new(TopicId::new(1), QueueId::new(1)),
    QueueKey::new(TopicId::new(2), QueueId::new(0)),
];

/// Appends `n` batches round-robin over the queues (several segments' worth) and syncs.
async fn fill(log: &Rc<CommitLog<SimDir>>, from_tag: u64, n: u64) {
    for tag in from_tag..from_tag + n {
        let q = QUEUES[(tag % 3) as usize];
        log.append(q, &batch(tag, 1 + (tag % 4) as usize, 300 + (tag % 7) as usize * 100))
            .await
            .unwrap();
    }
    log.flush().await.unwrap();
}

/// Copies the master's log from `from` to its written end into the replica, as a replica's
/// follower task does, and makes it durable. Returns where it stopped.
async fn follow(
    master: &Rc<CommitLog<SimDir>>,
    replica: &Rc<CommitLog<SimDir>>,
    mut from: LogPosition,
) -> LogPosition {
    loop {
        let (batches, next) =
            master.read_batches_at(from, master.written_end(), 10_000).await.unwrap();
        for b in &batches {
            replica.append_replicated(b.position, &b.bytes).await.unwrap();
        }
        if next == from {
            break;
        }
        from = next;
    }
    replica.flush().await.unwrap();
    from
}

/// Every record tag of `q` with its queue offset.
async fn contents(log: &Rc<CommitLog<SimDir>>, q: QueueKey) -> Vec<(u64, u64, i64)> {
    let mut out = vec![];
    let mut off = log.offsets(q).min;
    loop {
        let r = log.read(q, off, 100_000).await.unwrap();
        if r.batches.is_empty() {
            return out;
        }
        for b in &r.batches {
            let h = BatchView::parse(b, usize::MAX).unwrap().header;
            out.push((h.stamp.base_offset, batch_tag(b), h.stamp.store_timestamp_ms));
        }
        off = r.next_offset;
    }
}

/// The two logs hold the same segments with the same bytes.
fn assert_same_segments(
    master: &Rc<CommitLog<SimDir>>,
    mdir: &SimDir,
    replica: &Rc<CommitLog<SimDir>>,
    rdir: &SimDir,
) {
    let bases = master.segment_bases();
    assert!(bases.len() >= 3, "the test must cross segments, got {bases:?}");
    assert_eq!(replica.segment_bases()[..bases.len()], bases[..]);
    for base in bases {
        let name = segment_name(base);
        let (m, r) = (mdir.contents(&name).unwrap(), rdir.contents(&name).unwrap());
        let n = m.len().min(r.len());
        assert!(m[..n] == r[..n], "segment {name} differs");
        assert!(m[n..].iter().chain(&r[n..]).all(|&b| b == 0), "segment {name}: extra bytes");
    }
}

/// Copies the master's whole log into the replica ([`follow`] from position 0) and checks the
/// replica then holds what the master does: the same records in every queue, the same
/// segment bytes.
async fn copy_all_and_compare(
    master: &Rc<CommitLog<SimDir>>,
    mdir: &SimDir,
    replica: &Rc<CommitLog<SimDir>>,
    rdir: &SimDir,
) {
    let end = follow(master, replica, LogPosition::new(0)).await;
    assert_eq!(end, master.written_end());
    for q in QUEUES {
        assert_eq!(contents(replica, q).await, contents(master, q).await, "{q}");
    }
    assert_same_segments(master, mdir, replica, rdir);
}

#[test]
fn a_replica_copies_the_master_byte_for_byte_across_segments() {
    run(|| async {
        let (mdir, rdir) = (SimDir::new(11), SimDir::new(12));
        let master =
            CommitLog::open_with(mdir.clone(), small_config(FlushMode::Async)).await.unwrap();
        let replica =
            CommitLog::open_with(rdir.clone(), small_config(FlushMode::Async)).await.unwrap();
        fill(&master, 0, 200).await;
        let end = follow(&master, &replica, LogPosition::new(0)).await;
        assert_eq!(end, master.written_end());
        assert_eq!(replica.written_end(), master.written_end());
        for q in QUEUES {
            let m = contents(&master, q).await;
            assert!(!m.is_empty());
            assert_eq!(contents(&replica, q).await, m, "{q}: same offsets, records, store times");
        }
        assert_same_segments(&master, &mdir, &replica, &rdir);
    });
}

#[test]
fn each_fetch_ends_where_the_replica_appends_next_even_at_a_segment_end() {
    // The master bounds a replica's acknowledgement by where its stream ended: that must be
    // where the replica's log ends after appending what it got, also when the byte budget
    // stops a fetch right after a segment's end marker (the replica then rolls to the next
    // segment's base).
    run(|| async {
        let master =
            CommitLog::open_with(SimDir::new(13), small_config(FlushMode::Async)).await.unwrap();
        let replica =
            CommitLog::open_with(SimDir::new(14), small_config(FlushMode::Async)).await.unwrap();
        fill(&master, 0, 120).await;
        assert!(master.segment_bases().len() >= 3, "the test must cross segments");
        let mut from = LogPosition::new(0);
        while from < master.written_end() {
            let (batches, next) =
                master.read_batches_at(from, master.written_end(), 1).await.unwrap();
            assert_eq!(batches.len(), 1, "one batch per fetch at {from}");
            replica.append_replicated(batches[0].position, &batches[0].bytes).await.unwrap();
            assert_eq!(next, replica.positions().0, "after the batch at {from}");
            from = next;
        }
    });
}

#[test]
fn a_replica_refuses_batches_out_of_place() {
    run(|| async {
        let master =
            CommitLog::open_with(SimDir::new(21), small_config(FlushMode::Async)).await.unwrap();
        let replica =
            CommitLog::open_with(SimDir::new(22), small_config(FlushMode::Async)).await.unwrap();
        fill(&master, 0, 6).await;
        let (batches, _) = master
            .read_batches_at(LogPosition::new(0), master.written_end(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(batches.len(), 6);
        // Skipping a batch: the next one is not where this log's next batch goes. A position
        // mismatch between the replica and the stream, not damage in either log.
        let misplaced = |e: Result<_, StorageError>, at: LogPosition, says: &str| match e {
            Err(e @ StorageError::ReplicaMismatch { position, .. }) => {
                assert_eq!(position, at.get());
                let text = e.to_string();
                assert!(text.contains("does not continue this replica's log"), "{text}");
                assert!(text.contains(says), "{text}");
                assert!(!text.contains("corrupt"), "{text}");
            }
            e => panic!("expected a replica mismatch at {at}, got {e:?}"),
        };
        let e = replica.append_replicated(batches[1].position, &batches[1].bytes).await;
        let first = format!("this log's next batch goes at {}", LogPosition::new(0));
        misplaced(e, batches[1].position, &first);
        replica.append_replicated(batches[0].position, &batches[0].bytes).await.unwrap();
        // The same batch again (a retried stream) is refused, not stored twice.
        let e = replica.append_replicated(batches[0].position, &batches[0].bytes).await;
        let next = format!("this log's next batch goes at {}", batches[1].position);
        misplaced(e, batches[0].position, &next);
        // Right place, wrong queue offset (a log that diverged): refused.
        let mut wrong = batches[3].bytes.clone();
        let h = read_header(&wrong).unwrap();
        stamp(&mut wrong, &Stamp { base_offset: h.stamp.base_offset + 1, ..h.stamp });
        let e = replica.append_replicated(batches[1].position, &wrong).await;
        misplaced(e, batches[1].position, "this log's next is");
        // A damaged stamp is an invalid batch.
        let mut damaged = batches[1].bytes.clone();
        damaged[20] ^= 1;
        let e = replica.append_replicated(batches[1].position, &damaged).await;
        assert!(matches!(e, Err(StorageError::InvalidBatch(_))), "{e:?}");
        // Nothing of the refused batches was written.
        replica.append_replicated(batches[1].position, &batches[1].bytes).await.unwrap();
        assert_eq!(replica.written_end().get(), 0, "not yet written: async mode, no flush");
        replica.flush().await.unwrap();
        assert_eq!(replica.written_end(), batches[2].position);
    });
}

#[test]
fn a_replica_that_crashed_recovers_and_resumes_from_its_own_end() {
    run(|| async {
        let (mdir, rdir) = (SimDir::new(31), SimDir::new(32));
        let master =
            CommitLog::open_with(mdir.clone(), small_config(FlushMode::Async)).await.unwrap();
        let replica =
            CommitLog::open_with(rdir.clone(), small_config(FlushMode::Async)).await.unwrap();
        fill(&master, 0, 120).await;
        follow(&master, &replica, LogPosition::new(0)).await;
        // More data reaches the replica but is not synced when it crashes.
        fill(&master, 120, 40).await;
        let (batches, _) = master
            .read_batches_at(replica.written_end(), master.written_end(), 1 << 20)
            .await
            .unwrap();
        for b in &batches[..10] {
            replica.append_replicated(b.position, &b.bytes).await.unwrap();
        }
        drop(replica);
        rdir.crash();
        let replica =
            CommitLog::open_with(rdir.clone(), small_config(FlushMode::Async)).await.unwrap();
        let resumed_from = replica.written_end();
        assert!(resumed_from < batches[10].position, "the unsynced tail was lost");
        follow(&master, &replica, resumed_from).await;
        fill(&master, 160, 60).await;
        follow(&master, &replica, replica.written_end()).await;
        for q in QUEUES {
            assert_eq!(contents(&replica, q).await, contents(&master, q).await);
        }
        assert_same_segments(&master, &mdir, &replica, &rdir);
    });
}

#[test]
fn a_replica_truncated_to_the_divergence_point_follows_a_new_master_byte_for_byte() {
    run(|| async {
        let (odir, rdir, ndir) = (SimDir::new(41), SimDir::new(42), SimDir::new(43));
        let cfg = || small_config(FlushMode::Async);
        let old = CommitLog::open_with(odir.clone(), cfg()).await.unwrap();
        let replica = CommitLog::open_with(rdir.clone(), cfg()).await.unwrap();
        let new = CommitLog::open_with(ndir.clone(), cfg()).await.unwrap();
        // The old master wrote 150 batches; the replica has them all, the new master only the
        // first 90 (it was behind when it was promoted), then writes batches of its own.
        fill(&old, 0, 150).await;
        follow(&old, &replica, LogPosition::new(0)).await;
        let (first, _) =
            old.read_batches_at(LogPosition::new(0), old.written_end(), 1 << 30).await.unwrap();
        let data: Vec<_> =
            first.iter().filter(|b| read_header(&b.bytes).unwrap().record_count > 0).collect();
        let cut = data[90].position;
        for b in first.iter().take_while(|b| b.position < cut) {
            new.append_replicated(b.position, &b.bytes).await.unwrap();
        }
        new.flush().await.unwrap();
        assert_eq!(new.written_end(), cut);
        fill(&new, 1_000, 80).await;

        // The replica keeps [0, cut): truncated on disk, then reopened.
        replica.close().await.unwrap();
        drop(replica);
        ringmq::storage::commit_log::truncate_log(&rdir, cut).await.unwrap();
        let replica = CommitLog::open_with(rdir.clone(), cfg()).await.unwrap();
        assert_eq!(replica.written_end(), cut);
        for q in QUEUES {
            let kept: Vec<_> = contents(&replica, q).await;
            assert!(kept.iter().all(|&(_, tag, _)| tag < 90), "{q}: nothing past the cut");
        }
        follow(&new, &replica, cut).await;
        for q in QUEUES {
            assert_eq!(contents(&replica, q).await, contents(&new, q).await);
        }
        assert_same_segments(&new, &ndir, &replica, &rdir);
        // A crash right after truncating keeps the truncation (it was synced).
        drop(replica);
        rdir.crash();
        let replica = CommitLog::open_with(rdir.clone(), cfg()).await.unwrap();
        assert_eq!(replica.written_end(), new.written_end());
    });
}

#[test]
fn a_read_below_the_oldest_retained_segment_names_it_and_is_not_damage() {
    // A replica that fell behind the master's retention asks for a position whose segment
    // the master deleted: the master says so, with its oldest retained position, instead of
    // reporting its own log as corrupt.
    run(|| async {
        let master =
            CommitLog::open_with(SimDir::new(51), small_config(FlushMode::Async)).await.unwrap();
        fill(&master, 0, 200).await;
        let now = ringmq::storage::commit_log::now_ms();
        let deleted = master.enforce_retention(now + 49 * 3_600_000).await.unwrap();
        assert!(!deleted.is_empty(), "the test needs deleted segments");
        let oldest = master.oldest_position();
        assert!(oldest > LogPosition::new(0));
        let end = master.written_end();
        for from in [LogPosition::new(0), deleted[deleted.len() - 1]] {
            let e = master.read_batches_at(from, end, 1 << 20).await.unwrap_err();
            let text = e.to_string();
            let StorageError::BelowOldest { position, oldest: o, end: e_end } = e else {
                panic!("from {from}: expected BelowOldest, got {text}");
            };
            assert_eq!((position, o, e_end), (from.get(), oldest.get(), end.get()));
            let named = format!("oldest retained position {}", oldest.get());
            assert!(text.contains(&named), "{text}");
            assert!(!text.contains("corrupt"), "{text}");
        }
        // From the oldest retained position the stream reads on.
        let (batches, _) = master.read_batches_at(oldest, end, 1 << 20).await.unwrap();
        assert_eq!(batches[0].position, oldest);
    });
}

#[test]
fn a_replica_rebuilt_from_a_copy_of_a_master_log_after_retention_follows_on_from_its_end() {
    // The documented way back for a replica behind its master's retention: a copy of the
    // stopped master's log directory (segments from the oldest retained one, queue floors,
    // index checkpoint). It opens at the master's oldest position with the master's queue
    // offsets, and continues the master's stream byte for byte.
    run(|| async {
        let (mdir, rdir) = (SimDir::new(61), SimDir::new(62));
        let cfg = || small_config(FlushMode::Async);
        let master = CommitLog::open_with(mdir.clone(), cfg()).await.unwrap();
        fill(&master, 0, 200).await;
        let now = ringmq::storage::commit_log::now_ms();
        assert!(!master.enforce_retention(now + 49 * 3_600_000).await.unwrap().is_empty());
        fill(&master, 200, 20).await;
        let oldest = master.oldest_position();
        assert!(oldest > LogPosition::new(0));
        master.close().await.unwrap();
        drop(master);
        for name in mdir.names() {
            rdir.write_atomic(&name, &mdir.contents(&name).unwrap()).await.unwrap();
        }
        let master = CommitLog::open_with(mdir.clone(), cfg()).await.unwrap();
        let copied_end = master.written_end();
        fill(&master, 220, 60).await;

        let replica = CommitLog::open_with(rdir.clone(), cfg()).await.unwrap();
        assert_eq!(replica.oldest_position(), oldest);
        assert_eq!(replica.written_end(), copied_end);
        follow(&master, &replica, copied_end).await;
        for q in QUEUES {
            assert_eq!(replica.offsets(q), master.offsets(q), "{q}");
            assert_eq!(contents(&replica, q).await, contents(&master, q).await, "{q}");
        }
        assert_same_segments(&master, &mdir, &replica, &rdir);
    });
}

/// A master restarted with a lower `max_batch_bytes` than it stored batches under still sends
/// them to a replica (whose limit holds them): reading them for the replica failed, as if no
/// batch started there, and the replica could never catch up past the first.
#[test]
fn a_master_with_a_lowered_batch_limit_still_sends_the_larger_batches_it_stored() {
    run(|| async {
        let (mdir, rdir) = (SimDir::new(15), SimDir::new(16));
        let master =
            CommitLog::open_with(mdir.clone(), small_config(FlushMode::Async)).await.unwrap();
        fill(&master, 0, 200).await;
        master.close().await.unwrap();
        drop(master);
        let lowered = StorageConfig { max_batch_bytes: 1024, ..small_config(FlushMode::Async) };
        let master = CommitLog::open_with(mdir.clone(), lowered).await.unwrap();
        let replica =
            CommitLog::open_with(rdir.clone(), small_config(FlushMode::Async)).await.unwrap();
        copy_all_and_compare(&master, &mdir, &replica, &rdir).await;
    });
}

/// Lowered with the segment size too, the master's stored-batch bound was half of today's
/// segment size: a batch over it in an older, larger segment was refused as damaged
/// (`Corrupt`) and replication stopped there.
#[test]
fn a_master_with_lowered_segment_and_batch_limits_still_sends_the_larger_batches_it_stored() {
    run(|| async {
        let (mdir, rdir) = (SimDir::new(19), SimDir::new(20));
        let wide = StorageConfig {
            segment_size_bytes: 256 * 1024,
            max_batch_bytes: 100 * 1024,
            chunk_pool_chunks: 32,
            ..small_config(FlushMode::Async)
        };
        let master = CommitLog::open_with(mdir.clone(), wide.clone()).await.unwrap();
        fill(&master, 0, 20).await;
        master.append(QUEUES[0], &batch(20, 60, 1000)).await.unwrap();
        fill(&master, 21, 300).await;
        master.close().await.unwrap();
        drop(master);
        let lowered = StorageConfig { max_batch_bytes: 1024, ..small_config(FlushMode::Async) };
        let master = CommitLog::open_with(mdir.clone(), lowered).await.unwrap();
        let replica = CommitLog::open_with(rdir.clone(), wide).await.unwrap();
        copy_all_and_compare(&master, &mdir, &replica, &rdir).await;
    });
}

/// A batch the master moved past its `max_batch_bytes` (a message accepted under a larger
/// limit, delivered or committed now: `BatchLimit::Moved`) is copied by a replica configured
/// like it: the replica refused it as too large, and replication stopped there.
#[test]
fn a_replica_copies_a_batch_its_master_moved_past_max_batch_bytes() {
    run(|| async {
        let (mdir, rdir) = (SimDir::new(17), SimDir::new(18));
        let config = small_config(FlushMode::Async);
        let moved = batch(7, 20, 1000);
        assert!(
            moved.len() > config.max_batch_bytes && moved.len() <= config.movable_batch_limit()
        );
        let master = CommitLog::open_with(mdir.clone(), config.clone()).await.unwrap();
        let replica = CommitLog::open_with(rdir.clone(), config).await.unwrap();
        fill(&master, 0, 20).await;
        assert!(master.append(QUEUES[0], &moved).await.is_err(), "a producer's batch is refused");
        master.append_within(QUEUES[0], &moved, BatchLimit::Moved).await.unwrap();
        fill(&master, 20, 200).await;
        copy_all_and_compare(&master, &mdir, &replica, &rdir).await;
    });
}
