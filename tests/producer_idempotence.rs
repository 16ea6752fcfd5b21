//! Idempotent produce end to end: a loopback proxy between the client and the real broker
//! holds back the first copy of one batch past the producer's request timeout and lets
//! everything after it overtake it, then delivers it late. Every message must still be stored
//! exactly once, each queue in send order.
//!
//! The proxy listens on 127.0.0.2 on the same port numbers the broker bound on 127.0.0.1
//! (METADATA hands out ports, the client keeps the host it was given), so every connection
//! the shard-aware client makes goes through it.

mod broker_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_common::{config, drain, free_port_block, Broker};
use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};

/// What the proxy did, for the test to check it was not vacuous.
#[derive(Default)]
struct ProxyLog {
    held: AtomicBool,
    retry_seen: AtomicBool,
    released: AtomicBool,
    frames: AtomicUsize,
}

/// (queue, producer id, base sequence) of a produce.
type Numbering = (u32, i64, i32);

/// A PRODUCE frame's numbering, when `frame` is one.
fn produce_numbering(frame: &[u8]) -> Option<Numbering> {
    let api_key = u16::from_le_bytes(frame.get(4..6)?.try_into().ok()?);
    if api_key != 5 {
        return None;
    }
    let payload = &frame[12..];
    let topic_len = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    let rest = payload.get(2 + topic_len..)?;
    let queue = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let batch = rest.get(4 + 1 + 4..)?;
    let producer_id = i64::from_le_bytes(batch.get(68..76)?.try_into().ok()?);
    let base_sequence = i32::from_le_bytes(batch.get(76..80)?.try_into().ok()?);
    Some((queue, producer_id, base_sequence))
}

/// Client → broker: forwards whole request frames, except the first PRODUCE with a base
/// sequence of at least `hold_from`, which it keeps until its retry went through and `hold`
/// passed, and then sends.
fn pump_requests(
    mut from: TcpStream,
    mut to: TcpStream,
    hold_from: i32,
    hold: Duration,
    log: Arc<ProxyLog>,
    held_once: Arc<AtomicBool>,
) {
    from.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut held: Option<(Vec<u8>, Numbering, Instant)> = None;
    loop {
        match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        while buf.len() >= 4 {
            let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize + 4;
            if buf.len() < len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..len).collect();
            log.frames.fetch_add(1, Ordering::Relaxed);
            let numbering = produce_numbering(&frame);
            if let Some(n) = numbering {
                if n.2 >= hold_from && !held_once.swap(true, Ordering::SeqCst) {
                    log.held.store(true, Ordering::SeqCst);
                    held = Some((frame, n, Instant::now()));
                    continue;
                }
                if held.as_ref().is_some_and(|h| h.1 == n) {
                    log.retry_seen.store(true, Ordering::SeqCst);
                }
            }
            if to.write_all(&frame).is_err() {
                return;
            }
        }
        let due = held.as_ref().is_some_and(|(_, _, at)| {
            log.retry_seen.load(Ordering::SeqCst) && at.elapsed() >= hold
        });
        if due {
            let (frame, _, _) = held.take().unwrap();
            if to.write_all(&frame).is_err() {
                return;
            }
            log.released.store(true, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn pump_responses(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Proxies 127.0.0.2:`port` to 127.0.0.1:`port` for each port.
fn start_proxy(ports: &[u16], hold_from: i32, hold: Duration) -> Arc<ProxyLog> {
    let log = Arc::new(ProxyLog::default());
    let held_once = Arc::new(AtomicBool::new(false));
    for &port in ports {
        let listener = TcpListener::bind(("127.0.0.2", port)).expect("bind 127.0.0.2");
        let log = log.clone();
        let held_once = held_once.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let broker = TcpStream::connect(("127.0.0.1", port)).unwrap();
                client.set_nodelay(true).unwrap();
                broker.set_nodelay(true).unwrap();
                let (c2, b2) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
                let (log, held_once) = (log.clone(), held_once.clone());
                std::thread::spawn(move || {
                    pump_requests(client, broker, hold_from, hold, log, held_once)
                });
                std::thread::spawn(move || pump_responses(b2, c2));
            }
        });
    }
    log
}

#[test]
fn a_delayed_first_copy_is_stored_once_and_overtaken_batches_keep_their_order() {
    let dir = tempfile::Builder::new().prefix("ringmq-idem").tempdir().unwrap();
    let cfg = config(dir.path(), 2, "listen_address = \"127.0.0.1\"", "");
    let broker = Broker::start_in(dir.path(), &cfg);
    let mut ports = vec![broker.shared_port];
    ports.extend(&broker.shard_ports);
    let request_timeout = Duration::from_millis(300);
    let log = start_proxy(&ports, 2, request_timeout * 2);

    let client = Client::connect(&format!("127.0.0.2:{}", broker.shared_port)).unwrap();
    client.admin().create_topic("idem", 2).unwrap();
    let producer = client
        .producer(ProducerConfig {
            request_timeout,
            send_timeout: Duration::from_secs(30),
            ..Default::default()
        })
        .unwrap();
    // Sent in bursts so each queue has several batches in flight behind the held one.
    let mut pending = Vec::new();
    for round in 0..20 {
        for i in 0..10 {
            let body = format!("m{}", round * 10 + i);
            pending.push((body.clone(), producer.send_async(Message::new("idem", body)).unwrap()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut sent: Vec<(u32, u64, String)> = Vec::new();
    for (body, p) in pending {
        let r = p.wait().unwrap();
        sent.push((r.queue_id, r.queue_offset, body));
    }
    assert!(log.held.load(Ordering::SeqCst), "the proxy held a batch");
    assert!(log.retry_seen.load(Ordering::SeqCst), "the producer resent it");
    // The held copy reaches the broker after the retry; wait (bounded) until it was sent.
    let t = Instant::now();
    while !log.released.load(Ordering::SeqCst) {
        assert!(t.elapsed() < Duration::from_secs(30), "held copy never released");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The broker decides about a produce when it starts it, in arrival order per connection,
    // and appends in that order: once a later send to each queue is answered, the held copy
    // was either answered as a duplicate or (the bug this test is for) stored.
    for q in 0..2u32 {
        let body = format!("after-{q}");
        let r = producer
            .send_with(Message::new("idem", body.clone()), &QueueSelector::Queue(q))
            .unwrap();
        sent.push((r.queue_id, r.queue_offset, body));
    }
    for q in 0..2u32 {
        let stored: Vec<(u64, String)> = drain(&client, "idem", q, 0)
            .into_iter()
            .map(|m| (m.offset, String::from_utf8(m.body.to_vec()).unwrap()))
            .collect();
        let expected: Vec<(u64, String)> =
            sent.iter().filter(|s| s.0 == q).map(|s| (s.1, s.2.clone())).collect();
        assert_eq!(stored, expected, "queue {q}: each message once, in send order, where acked");
    }
    producer.close().unwrap();
}

/// The broker is killed while batches are in flight; the producer resends them after the
/// restart, and the windows rebuilt from the log answer the ones that were stored. (With
/// `idempotence_recovery_window_ms = 0`, i.e. no rebuild, this stores duplicates.)
#[test]
fn batches_in_flight_at_a_sigkill_are_stored_once_after_the_restart() {
    let dir = tempfile::Builder::new().prefix("ringmq-idem").tempdir().unwrap();
    let port = free_port_block(3);
    let cfg = config(dir.path(), 2, &format!("port = {port}"), "flush_mode = \"sync\"");
    let mut broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("crash", 2).unwrap();
    let producer = Arc::new(
        client
            .producer(ProducerConfig {
                send_timeout: Duration::from_secs(60),
                ..Default::default()
            })
            .unwrap(),
    );
    // Sends at a steady pace while the broker is killed and restarted under it.
    let sender = {
        let producer = producer.clone();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            for i in 0..3000 {
                let body = format!("m{i}");
                pending.push((body.clone(), producer.send_async(Message::new("crash", body))));
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            pending
        })
    };
    let stored = |client: &Client| -> u64 {
        client.admin().stats().map(|s| s.iter().map(|s| s.produce_records).sum()).unwrap_or(0)
    };
    let t = Instant::now();
    while stored(&client) < 300 {
        assert!(t.elapsed() < Duration::from_secs(60), "the producer does not get going");
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill();
    let broker = Broker::start_in(dir.path(), &cfg);
    let mut sent: Vec<(u32, u64, String)> = Vec::new();
    for (body, p) in sender.join().unwrap() {
        let r = p.unwrap().wait().unwrap_or_else(|e| panic!("{body}: {e}"));
        sent.push((r.queue_id, r.queue_offset, body));
    }
    let client = Client::connect(&broker.addr()).unwrap();
    for q in 0..2u32 {
        let stored: Vec<(u64, String)> = drain(&client, "crash", q, 0)
            .into_iter()
            .map(|m| (m.offset, String::from_utf8(m.body.to_vec()).unwrap()))
            .collect();
        let expected: Vec<(u64, String)> =
            sent.iter().filter(|s| s.0 == q).map(|s| (s.1, s.2.clone())).collect();
        assert_eq!(stored.len(), expected.len(), "queue {q}: stored once each");
        assert!(stored == expected, "queue {q}: each message once, in send order");
    }
    drop(broker);
}
