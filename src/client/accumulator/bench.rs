//! Support for `benches/client_accumulator.rs`: the producer's worker thread behind the same
//! hand-off as `Producer::send_async`, with a sink that answers every batch at once (no
//! sockets, no broker), so the bench measures the client's own cost per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};

use super::{BatchSink, Command, Staging, Worker};
use crate::client::connection::{ProduceFrame, ProduceReply};
use crate::client::error::Result;
use crate::client::message::Message;
use crate::client::producer::{enqueue, run_worker, ProducerConfig};
use crate::client::send_handle::SendHandle;
use crate::format::BatchView;
use crate::protocol::{Response, SendStatus};
use crate::runtime::{system_clock, SharedClock};

/// Stores every batch at the next offsets of its queue and answers at once.
#[derive(Default)]
struct Loopback {
    next: Mutex<HashMap<u32, u64>>,
}

impl BatchSink for Arc<Loopback> {
    fn send_all(&self, frames: &mut Vec<ProduceFrame>, _max_request_bytes: usize) {
        for f in frames.drain(..) {
            self.send(f.queue_id, &f.batch, f.reply);
        }
    }
    fn refresh(&self, _topic: &str) {}
    fn new_producer_id(&self) -> Result<i64> {
        // Every batch is stored at once: no queue renumbers, let alone 65,536 times.
        Err(crate::client::ClientError::Protocol("the loopback hands out no producer ids".into()))
    }
}

impl Loopback {
    fn send(&self, queue_id: u32, batch: &[u8], on_reply: ProduceReply) {
        let reply = BatchView::parse(batch, batch.len()).map(|v| {
            let count = v.header.record_count;
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let base = next.entry(queue_id).or_default();
            let base_offset = *base;
            *base += u64::from(count);
            Response::Produce {
                status: SendStatus::SendOk,
                topic_id: 1,
                queue_id,
                base_offset,
                record_count: count,
                store_timestamp_ms: 0,
            }
        });
        on_reply.complete(reply.map_err(|e| crate::client::ClientError::Protocol(e.to_string())));
    }
}

/// A producer worker answering from memory.
pub struct LoopbackProducer {
    clock: SharedClock,
    staging: Arc<Staging>,
    commands: Option<Sender<Command>>,
    worker: Option<JoinHandle<()>>,
}

impl LoopbackProducer {
    pub fn start(config: ProducerConfig) -> LoopbackProducer {
        let clock = system_clock();
        let (tx, rx) = bounded(config.buffer_messages.max(1));
        let worker = Worker::new(Arc::new(Loopback::default()), config, 1 << 16, clock.clone());
        let staging = worker.staging().clone();
        let handle = std::thread::spawn(move || run_worker(worker, rx));
        LoopbackProducer { clock, staging, commands: Some(tx), worker: Some(handle) }
    }

    /// `Producer::send_async` on queue `queue_id` (the queue already chosen).
    pub fn send_async(&self, msg: Message, queue_id: u32) -> Result<SendHandle> {
        let tx = self.commands.as_ref().expect("open until dropped");
        enqueue(&self.clock, &self.staging, tx, &msg, queue_id)
    }
}

impl Drop for LoopbackProducer {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}
