//! The library client's consumer threads: pipelined queue readers over fixed queues (one
//! FETCH per queue in flight, or FETCH_MULTI over many queues) and consumer-group members.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use ringmq::client::{Client, MultiQueueReader, QueueReader};

use crate::clock::pin_current_thread;
use crate::payload::Prefix;
use crate::runner::{record_consumed, Shared};
use crate::stats::Recorder;
use crate::workload::Workload;

#[allow(clippy::too_many_arguments)]
pub(crate) fn consumer_main(
    id: u32,
    w: &Workload,
    queues: &[(String, u32)],
    address: &str,
    cpu: Option<usize>,
    shared: &Shared,
    recorder: &Mutex<Recorder>,
) -> Result<(), String> {
    if let Some(c) = cpu {
        pin_current_thread(c)?;
    }
    let client = Client::connect(address).map_err(|e| format!("consumer {id}: {e}"))?;
    let mut consumer = client.consumer();
    consumer.max_bytes = w.fetch_max_bytes;
    if !shared.wait_for_consumers_go() {
        return Ok(());
    }
    if w.consumer_fetch_multi.unwrap_or(queues.len() > MULTI_FETCH_ABOVE_QUEUES) && queues.len() > 1
    {
        return multi_consumer(id, w, consumer, queues, shared, recorder);
    }
    // One queue: long-poll it. Several: sweep them without waiting (each reader keeps its
    // next fetch in flight), nap when none had anything.
    let wait = if queues.len() == 1 { Duration::from_millis(100) } else { Duration::ZERO };
    let mut readers: Vec<QueueReader> = queues
        .iter()
        .map(|(topic, queue)| {
            consumer
                .stream(topic, *queue, 0)
                .with_max_wait(wait)
                .with_fetch_next(w.consumer_fetch_next)
        })
        .collect();
    let mut prefixes = Vec::new();
    while !shared.stop_consumers.load(Relaxed) {
        let mut got = 0usize;
        for reader in readers.iter_mut() {
            let r = if wait.is_zero() {
                reader.try_next()
            } else {
                reader.next_batch(wait + Duration::from_millis(100))
            };
            let view = match r {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    shared.error(format!(
                        "consumer {id}: {}/{}: {e}",
                        reader.topic(),
                        reader.queue_id()
                    ));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            got += record_view(w, shared, recorder, &view, &mut prefixes);
        }
        if got == 0 && wait.is_zero() {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// Records a fetched view's messages (their prefixes read into `prefixes`); how many.
fn record_view(
    w: &Workload,
    shared: &Shared,
    recorder: &Mutex<Recorder>,
    view: &ringmq::client::PullView,
    prefixes: &mut Vec<Prefix>,
) -> usize {
    let mut foreign = 0u64;
    prefixes.clear();
    for m in view.messages() {
        match Prefix::read(m.body()) {
            Some(p) => prefixes.push(p),
            None => foreign += 1,
        }
    }
    record_consumed(w, shared, recorder, prefixes, foreign);
    prefixes.len() + foreign as usize
}

/// A library consumer of more queues than this reads them with FETCH_MULTI unless the workload
/// says otherwise (`consumer_fetch_multi`): with few queues, one FETCH per queue in flight
/// read large batches as fast or faster (round 35, `r35/`).
const MULTI_FETCH_ABOVE_QUEUES: usize = 64;

/// A consumer of several queues reading each shard's queues with FETCH_MULTI.
fn multi_consumer(
    id: u32,
    w: &Workload,
    consumer: ringmq::client::PullConsumer,
    queues: &[(String, u32)],
    shared: &Shared,
    recorder: &Mutex<Recorder>,
) -> Result<(), String> {
    let from: Vec<_> = queues.iter().map(|(t, q)| (t.clone(), *q, 0)).collect();
    let mut reader = MultiQueueReader::new(consumer, &from, Duration::from_millis(100));
    let mut prefixes = Vec::new();
    while !shared.stop_consumers.load(Relaxed) {
        let got = match reader.next_batches(Duration::from_millis(200)) {
            Ok(got) => got,
            Err(e) => {
                shared.error(format!("consumer {id}: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        for (i, view) in got {
            let view = match view {
                Ok(v) => v,
                Err(e) => {
                    let (topic, queue) = reader.queue(i);
                    shared.error(format!("consumer {id}: {topic}/{queue}: {e}"));
                    continue;
                }
            };
            record_view(w, shared, recorder, &view, &mut prefixes);
        }
    }
    Ok(())
}

/// A consumer that is a member of the run's consumer group: a `PushConsumer` subscribed to
/// every topic of the run, sharing the queues with the other members by rebalancing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_consumer_main(
    id: u32,
    w: &Workload,
    topics: &[String],
    group: &str,
    address: &str,
    cpu: Option<usize>,
    shared: &Shared,
    recorder: &Mutex<Recorder>,
) -> Result<(), String> {
    use ringmq::client::{
        ConsumeFrom, ConsumeMode, ConsumeStatus, PushConsumer, PushConsumerConfig,
    };
    if let Some(c) = cpu {
        // The consumer's threads inherit this thread's CPU.
        pin_current_thread(c)?;
    }
    let client = Client::connect(address).map_err(|e| format!("consumer {id}: {e}"))?;
    if !shared.wait_for_consumers_go() {
        return Ok(());
    }
    let mut config = PushConsumerConfig::new(group);
    for t in topics {
        config = config.subscribe(t.clone(), "*");
    }
    config.consume_from = ConsumeFrom::FirstOffset;
    config.heartbeat_interval = Duration::from_secs(1);
    config.max_unfinished_per_queue = 8192;
    config.mode = if w.verify_order {
        ConsumeMode::Orderly { threads: 1, batch_size: 256, suspend: Duration::from_millis(10) }
    } else {
        ConsumeMode::Concurrent { threads: 1, batch_size: 256 }
    };
    // The listener must be 'static: it hands what it read to this thread, which records it.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Prefix>, u64)>(1024);
    let listener = move |messages: &[ringmq::client::ConsumedMessage],
                         _: &ringmq::client::ConsumeContext<'_>| {
        let mut prefixes = Vec::with_capacity(messages.len());
        let mut foreign = 0;
        for m in messages {
            match Prefix::read(&m.body) {
                Some(p) => prefixes.push(p),
                None => foreign += 1,
            }
        }
        let _ = tx.send((prefixes, foreign));
        ConsumeStatus::Success
    };
    let consumer = PushConsumer::start(&client, config, listener)
        .map_err(|e| format!("consumer {id}: {e}"))?;
    while !shared.stop_consumers.load(Relaxed) {
        while let Ok((prefixes, foreign)) = rx.recv_timeout(Duration::from_millis(5)) {
            record_consumed(w, shared, recorder, &prefixes, foreign);
        }
    }
    // Stop receiving only after the consumer stopped (a listener blocked on a full channel
    // would keep its shutdown waiting).
    let drain = std::thread::scope(|s| {
        let h = s.spawn(move || consumer.shutdown());
        while !h.is_finished() {
            while let Ok((prefixes, foreign)) = rx.recv_timeout(Duration::from_millis(5)) {
                record_consumed(w, shared, recorder, &prefixes, foreign);
            }
        }
        h.join()
    });
    drain.map_err(|_| format!("consumer {id}: shutting the push consumer down panicked"))?;
    Ok(())
}
