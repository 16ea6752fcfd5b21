//! Replication with the real binary on 127.0.0.1: a master and two replicas, sync replication
//! and sync flush, two shards each (shard s streams to shard s).
//!
//! - acknowledged sends are on the replicas, byte-identical to the master's stored batches;
//! - a replica refuses produce with NOT_MASTER carrying the master's address;
//! - SIGKILL one replica: with min_in_sync_replicas = 2 and one replica left, sends succeed;
//! - SIGKILL both: sends are refused SLAVE_NOT_AVAILABLE (after a FLUSH_SLAVE_TIMEOUT or two
//!   while the in-sync set still counts the dead);
//! - a restarted replica catches up from the master's disk and rejoins: sends succeed again.

mod broker_common;

mod replication_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use broker_common::{config, free_port_block, poll_until, Broker};
use replication_common::*;
use ringmq::protocol::{ErrorCode, ErrorDetail, Request, SendStatus};

#[test]
fn sync_replication_with_replicas_killed_and_restarted() {
    let dir = tempdir();
    let (p1, p2) = (free_port_block(SHARDS as u16), free_port_block(SHARDS as u16));
    let (d0, d1, d2) = (dir.path().join("m"), dir.path().join("r1"), dir.path().join("r2"));
    let master = Broker::start_in(&d0, &master_config(&d0, &[p1, p2], "sync"));
    let mut r1 = Broker::start_in(&d1, &replica_config(&d1, p1, master.shared_port));
    let mut r2 = Broker::start_in(&d2, &replica_config(&d2, p2, master.shared_port));

    create_topic(master.shared_port);
    let mut m = Conn::connect(master.shared_port);
    // Topic metadata is on the replicas: a sync master answers a topic change once its
    // in-sync replicas hold it.
    for port in [p1, p2] {
        let mut c = Conn::connect(port);
        poll_until(WAIT, || (c.topics() == 1).then_some(()));
    }

    // Sends succeed once the replicas joined the in-sync set (before that: SLAVE_NOT_AVAILABLE).
    let mut acked = vec![0u64; QUEUES as usize];
    let mut tag = 0;
    poll_until(WAIT, || {
        tag += 1;
        let round = send_round(&mut m, tag);
        for r in &round {
            if let Err(e) = r {
                assert_eq!(e.known_code(), Some(ErrorCode::SLAVE_NOT_AVAILABLE), "{e:?}");
            }
        }
        all_ok(&round).then_some(())
    });
    for _ in 0..20 {
        tag += 1;
        let round = send_round(&mut m, tag);
        assert!(all_ok(&round), "{round:?}");
        for (q, r) in round.iter().enumerate() {
            acked[q] = r.as_ref().unwrap().1 + 3;
        }
    }
    let (mut c1, mut c2) = (Conn::connect(p1), Conn::connect(p2));
    assert_identical(&mut m, &mut c1, &acked);
    assert_identical(&mut m, &mut c2, &acked);

    // A replica refuses writes and names its master.
    let refused = c1.produce(0, 1).unwrap_err();
    assert_eq!(refused.known_code(), Some(ErrorCode::NOT_MASTER));
    let expected: SocketAddr = format!("127.0.0.1:{}", master.shared_port).parse().unwrap();
    assert_eq!(refused.detail, ErrorDetail::NotMaster { master: expected });
    let refused = c1.call(&Request::CreateTopic { topic: "other".into(), queue_count: 1 });
    assert_eq!(refused.unwrap_err().known_code(), Some(ErrorCode::NOT_MASTER));

    // One replica dies: with min_in_sync_replicas = 2 and one replica left, sends succeed
    // (the first may wait until the dead one leaves the in-sync set).
    r1.kill();
    tag += 1;
    let _ = send_round(&mut m, tag);
    for _ in 0..10 {
        tag += 1;
        let round = send_round(&mut m, tag);
        assert!(all_ok(&round), "one replica left: {round:?}");
        for (q, r) in round.iter().enumerate() {
            acked[q] = r.as_ref().unwrap().1 + 3;
        }
    }
    assert_identical(&mut m, &mut c2, &acked);

    // Both die: refused before anything is written, once the set knows.
    r2.kill();
    poll_until(WAIT, || match m.produce(0, 7) {
        Err(e) if e.known_code() == Some(ErrorCode::SLAVE_NOT_AVAILABLE) => Some(()),
        Ok((SendStatus::FlushSlaveTimeout, _)) | Ok((SendStatus::SendOk, _)) => None,
        other => panic!("with both replicas dead: {other:?}"),
    });

    // A restarted replica catches up from the master's disk and rejoins.
    let mut r1 = Broker::start_in(&d1, &replica_config(&d1, p1, master.shared_port));
    poll_until(WAIT, || {
        tag += 1;
        all_ok(&send_round(&mut m, tag)).then_some(())
    });
    for (q, a) in acked.iter_mut().enumerate() {
        *a = m.stored(q as u32).0;
    }
    let mut c1 = Conn::connect(p1);
    assert_identical(&mut m, &mut c1, &acked);
    assert!(r1.stop().success(), "the replica stops cleanly");
}

#[test]
fn async_replication_acks_on_local_durability_and_replicates() {
    let dir = tempdir();
    let p1 = free_port_block(SHARDS as u16);
    let (d0, d1) = (dir.path().join("m"), dir.path().join("r1"));
    let master = Broker::start_in(&d0, &master_config(&d0, &[p1], "async"));
    let mut m = Conn::connect(master.shared_port);
    m.call(&Request::CreateTopic { topic: TOPIC.into(), queue_count: QUEUES }).unwrap();
    // No replica yet: async sends are acknowledged on the master's own durability, and its
    // consumers see them (the in-sync set is the master alone).
    let mut acked = vec![0u64; QUEUES as usize];
    for tag in 0..5 {
        let round = send_round(&mut m, tag);
        assert!(all_ok(&round), "{round:?}");
        for (q, r) in round.iter().enumerate() {
            acked[q] = r.as_ref().unwrap().1 + 3;
        }
    }
    for q in 0..QUEUES {
        assert_eq!(m.stored(q).0, acked[q as usize]);
    }
    let mut r1 = Broker::start_in(&d1, &replica_config(&d1, p1, master.shared_port));
    let mut c1 = Conn::connect(p1);
    poll_until(WAIT, || (c1.topics() == 1).then_some(()));
    assert_identical(&mut m, &mut c1, &acked);
    r1.kill();
    for tag in 5..10 {
        assert!(all_ok(&send_round(&mut m, tag)), "async sends do not wait for replicas");
    }
}

/// SIGKILL the master or a replica at random moments while a producer sends (sync replication,
/// sync flush), restart it, and check: every acknowledged batch is on the master at its
/// acknowledged offset; replicas end byte-identical to the master. A replica whose log went
/// past the restarted master's (an unsynced tail the master lost) stops and truncates on
/// restart. `RINGMQ_REPL_ROUNDS=N` runs N rounds (default 20).
#[test]
fn sigkill_rounds_keep_every_acknowledged_batch() {
    let rounds: u64 =
        std::env::var("RINGMQ_REPL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempdir();
    let pm = free_port_block(SHARDS as u16);
    let (p1, p2) = (free_port_block(SHARDS as u16), free_port_block(SHARDS as u16));
    let dirs = [dir.path().join("m"), dir.path().join("r1"), dir.path().join("r2")];
    let master_text = format!(
        "{}[replication]\nrole = \"master\"\nreplicas = [\"127.0.0.1:{p1}\", \"127.0.0.1:{p2}\"]\n\
         min_in_sync_replicas = 2\nsync_replication_timeout_ms = 10000\nreplica_lag_max_ms = 3000\n",
        config(&dirs[0], SHARDS, &format!("port = {pm}"), "flush_mode = \"sync\"")
    );
    let configs = [master_text, replica_config(&dirs[1], p1, pm), replica_config(&dirs[2], p2, pm)];
    let start = |i: usize| Broker::start_in(&dirs[i], &configs[i]);
    let mut brokers = [start(0), start(1), start(2)];
    create_topic(pm);

    let mut acked: Vec<(u32, u64, u64)> = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut next_tag = 1u64;
    for round in 0..rounds {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let stop = stop.clone();
            let first_tag = next_tag;
            std::thread::spawn(move || {
                let mut s = Sender { port: pm, conn: None };
                let (mut ok, mut tag) = (Vec::new(), first_tag);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let q = (tag % u64::from(QUEUES)) as u32;
                    if let Some((SendStatus::SendOk, base)) = s.send(q, tag) {
                        ok.push((q, base, tag));
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    tag += 1;
                }
                (ok, tag)
            })
        };
        std::thread::sleep(Duration::from_millis(100 + rand(300)));
        let victim = rand(3) as usize;
        brokers[victim].kill();
        std::thread::sleep(Duration::from_millis(rand(200)));
        brokers[victim] = start(victim);
        std::thread::sleep(Duration::from_millis(100 + rand(200)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, tag) = producer.join().unwrap();
        next_tag = tag;
        acked.extend(ok);

        // Replicas that had to truncate stop; restarted, they truncate and follow. Wait
        // until a sync send succeeds again (enough replicas rejoined).
        let mut s = Sender { port: pm, conn: None };
        poll_until(WAIT, || {
            for (i, b) in brokers.iter_mut().enumerate().skip(1) {
                if !b.is_running() {
                    *b = start(i);
                }
            }
            next_tag += 1;
            matches!(s.send(0, next_tag), Some((SendStatus::SendOk, _))).then_some(())
        });
        let mut m = Conn::connect(pm);
        let master_bytes: Vec<Vec<u8>> = (0..QUEUES).map(|q| m.stored(q).1).collect();
        let on_master: Vec<_> = master_bytes.iter().map(|b| tags_by_offset(b)).collect();
        for &(q, base, tag) in &acked {
            assert_eq!(
                on_master[q as usize].get(&base),
                Some(&tag),
                "round {round}: acknowledged batch {tag} at {q}/{base} is not on the master"
            );
        }
        for (i, port) in [(1, p1), (2, p2)] {
            poll_until(WAIT, || {
                if !brokers[i].is_running() {
                    brokers[i] = start(i);
                }
                (try_stored(port)? == master_bytes).then_some(())
            });
        }
    }
    assert!(acked.len() as u64 >= rounds, "sends were acknowledged: {}", acked.len());
}

/// A replica holding a tail its master lost (here: the master's segments rolled back to an
/// older copy, its epoch file kept, as after losing unsynced writes) truncates at start to the
/// divergence point of the epoch histories and ends byte-identical to the master. The master
/// writes new data at the lost positions before the replica comes back, so the epoch it begins
/// after the loss must not reuse the lost epoch's number (then the two tails would look
/// alike); `min_in_sync_replicas = 1` lets it write alone.
#[test]
fn a_replica_truncates_a_tail_its_master_lost() {
    let dir = tempdir();
    let (pm, p1) = (free_port_block(SHARDS as u16), free_port_block(SHARDS as u16));
    let (d0, d1) = (dir.path().join("m"), dir.path().join("r1"));
    let master_text = format!(
        "{}[replication]\nrole = \"master\"\nreplicas = [\"127.0.0.1:{p1}\"]\n\
         min_in_sync_replicas = 1\nsync_replication_timeout_ms = 10000\n",
        config(&d0, SHARDS, &format!("port = {pm}"), "flush_mode = \"sync\"")
    );
    let replica_text = replica_config(&d1, p1, pm);
    let sends = |m: &mut Conn, from: u64, to: u64| {
        poll_until(WAIT, || all_ok(&send_round(m, from)).then_some(()));
        for tag in from + 1..to {
            assert!(all_ok(&send_round(m, tag)));
        }
    };

    let mut master = Broker::start_in(&d0, &master_text);
    let mut replica = Broker::start_in(&d1, &replica_text);
    let mut m = Conn::connect(pm);
    m.call(&Request::CreateTopic { topic: TOPIC.into(), queue_count: QUEUES }).unwrap();
    sends(&mut m, 1, 10);
    assert!(master.stop().success());
    let snapshot = dir.path().join("snapshot");
    copy_tree(&d0.join("data"), &snapshot);

    master = Broker::start_in(&d0, &master_text);
    let mut m = Conn::connect(pm);
    sends(&mut m, 100, 110); // reaches the replica
    let mut c1 = Conn::connect(p1);
    let lost: Vec<u64> = (0..QUEUES).map(|q| m.stored(q).0).collect();
    poll_until(WAIT, || (0..QUEUES).all(|q| c1.stored(q).0 >= lost[q as usize]).then_some(()));
    assert!(replica.stop().success());
    assert!(master.stop().success());

    // The master loses what it wrote since the snapshot, but keeps its epoch file.
    for shard in 0..SHARDS {
        let name = format!("shard-{shard}");
        let epochs = std::fs::read(d0.join("data").join(&name).join("epochs")).unwrap();
        std::fs::remove_dir_all(d0.join("data").join(&name)).unwrap();
        copy_tree(&snapshot.join(&name), &d0.join("data").join(&name));
        std::fs::write(d0.join("data").join(&name).join("epochs"), epochs).unwrap();
    }
    let master = Broker::start_in(&d0, &master_text);
    let mut m = Conn::connect(master.shared_port);
    let kept: Vec<u64> = (0..QUEUES).map(|q| m.stored(q).0).collect();
    assert!(kept.iter().zip(&lost).all(|(k, l)| k < l), "the master lost its tail");
    sends(&mut m, 200, 205);
    let _replica = Broker::start_in(&d1, &replica_text);
    let mut c1 = Conn::connect(p1);
    poll_until(WAIT, || try_stored(p1).filter(|r| *r == try_stored(pm).unwrap()).map(|_| ()));
    for q in 0..QUEUES {
        let tags = tags_by_offset(&c1.stored(q).1);
        // send_round tags batches `round * 100 + queue`: rounds 100..110 are the lost tail.
        assert!(tags.values().all(|t| !(10_000..11_000).contains(t)), "queue {q}: lost tail kept");
        assert!(tags.values().any(|t| *t >= 20_000), "queue {q}: the new data is there");
    }
    // The replica's key index was rebuilt past the cut: a query by the new data's key ("k2",
    // rounds 200..205) answers what the master's does (the replica's index had indexed the
    // lost tail, "k1", and would skip what replaced it).
    let by_key = |port: u16| {
        let client = ringmq::client::Client::connect(&format!("127.0.0.1:{port}")).ok()?;
        let found = client.query_by_key(TOPIC, b"k2", 0, i64::MAX, 10_000).ok()?;
        let mut at: Vec<(u32, u64, Vec<u8>)> =
            found.messages.iter().map(|m| (m.queue_id, m.offset, m.body.to_vec())).collect();
        at.sort();
        (found.unindexed_bytes == 0 && !found.truncated).then_some(at)
    };
    poll_until(WAIT, || {
        let master = by_key(pm)?;
        (by_key(p1)? == master && !master.is_empty()).then_some(())
    });
}

/// A sync master (sync flush) on `port` with one replica, on `replica`'s port, that must be
/// in sync (`min_in_sync_replicas = 2`).
fn sync_master_of_one(dir: &Path, port: u16, replica: u16) -> String {
    format!(
        "{}[replication]\nrole = \"master\"\nreplicas = [\"127.0.0.1:{replica}\"]\n\
         min_in_sync_replicas = 2\nsync_replication_timeout_ms = 10000\n",
        config(dir, SHARDS, &format!("port = {port}"), "flush_mode = \"sync\"")
    )
}

/// A sync master ("a", [`sync_master_of_one`]) and its replica ("b") in a new temporary
/// directory, with `TOPIC` created: the directory, each one's port and data directory, the
/// brokers.
fn sync_master_and_replica() -> (tempfile::TempDir, [(u16, PathBuf); 2], Broker, Broker) {
    let dir = tempdir();
    let (pa, pb) = (free_port_block(SHARDS as u16), free_port_block(SHARDS as u16));
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let a = Broker::start_in(&da, &sync_master_of_one(&da, pa, pb));
    let b = Broker::start_in(&db, &replica_config(&db, pb, pa));
    create_topic(pa);
    (dir, [(pa, da), (pb, db)], a, b)
}

/// Manual failover by configuration: the master is SIGKILLed while a producer sends; its
/// replica is restarted as the master (it begins a new epoch), the old master is restarted as
/// its replica (at start it truncates whatever it had that the new master lacks). Every send
/// acknowledged SEND_OK is on the new master exactly as acknowledged, and the old master ends
/// byte-identical to it.
#[test]
fn a_replica_restarted_as_master_keeps_every_acknowledged_send() {
    let (_dir, [(pa, da), (pb, db)], mut a, b) = sync_master_and_replica();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = Sender { port: pa, conn: None };
            let (mut ok, mut tag) = (Vec::new(), 1u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let q = (tag % u64::from(QUEUES)) as u32;
                match s.send(q, tag) {
                    Some((SendStatus::SendOk, base)) => ok.push((q, base, tag)),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
                tag += 1;
            }
            ok
        })
    };
    poll_until(WAIT, || (Conn::connect(pa).stored(0).0 > 20).then_some(()));
    a.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = producer.join().unwrap();
    assert!(!acked.is_empty());
    drop(b); // SIGKILL too: the promotion is a restart with the master's role

    let new_master = Broker::start_in(&db, &sync_master_of_one(&db, pb, pa));
    let mut m = Conn::connect(new_master.shared_port);
    let on_new: Vec<_> = (0..QUEUES).map(|q| tags_by_offset(&m.stored(q).1)).collect();
    for &(q, base, tag) in &acked {
        assert_eq!(on_new[q as usize].get(&base), Some(&tag), "acknowledged {tag} lost");
    }
    let _old = Broker::start_in(&da, &replica_config(&da, pa, pb));
    let mut tag = 1_000_000;
    poll_until(WAIT, || {
        tag += 1;
        all_ok(&send_round(&mut m, tag)).then_some(())
    });
    poll_until(WAIT, || try_stored(pa).filter(|r| *r == try_stored(pb).unwrap()).map(|_| ()));
}

/// Topic changes a sync master acknowledged survive a failover: topics are created and one
/// deleted, the master is SIGKILLed right after the last answer, and its replica, restarted as
/// master, lists exactly the acknowledged topics with their ids (a replica adopts the master's
/// topic table before it writes what came with it; `docs/protocol.md`, CREATE_TOPIC).
#[test]
fn topic_changes_a_sync_master_acknowledged_survive_a_failover() {
    let (_dir, [(pa, _), (pb, db)], mut a, b) = sync_master_and_replica();
    let mut m = Conn::connect(pa);
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..5 {
        let name = format!("t{i}");
        match m.call(&Request::CreateTopic { topic: name.clone(), queue_count: 2 }) {
            Ok(ringmq::protocol::Response::CreateTopic { topic_id }) => {
                expected.insert(name, topic_id);
            }
            other => panic!("create {name}: {other:?}"),
        }
    }
    m.call(&Request::DeleteTopic { topic: "t3".into() }).unwrap();
    expected.remove("t3");
    a.kill();
    drop(b); // SIGKILL too: the promotion is a restart with the master's role

    let new_master = Broker::start_in(&db, &sync_master_of_one(&db, pb, pa));
    let listed = match Conn::connect(new_master.shared_port).call(&Request::ListTopics).unwrap() {
        ringmq::protocol::Response::ListTopics { topics } => topics,
        other => panic!("list answered {other:?}"),
    };
    let on_new: std::collections::BTreeMap<String, u32> =
        listed.into_iter().filter(|t| t.name != TOPIC).map(|t| (t.name, t.topic_id)).collect();
    assert_eq!(on_new, expected);
}
