//! How the producer's worker thread is woken: one flag and the thread's park token, rung by
//! callers (a queue needs the worker, a flush, the producer closing) and by the connections
//! that deliver its replies.
//!
//! It replaced a blocking `select` over two channels (commands, and a token for replies). Each
//! such wait registered the worker with both channels and unregistered it afterwards, under
//! each channel's lock, and with the caller, the worker and the connection's reader on one
//! core (the load generator's), a thread preempted inside one of those locks or inside a
//! channel write left the others contending or spinning on it. Ringing is one atomic swap,
//! plus an unpark only for the first ring since the worker last looked; waiting is a swap and
//! a park only when nothing rang (`Thread::park_timeout`, whose token keeps a ring that comes
//! between the worker's last look and its park).

use std::sync::atomic::{AtomicBool, Ordering::AcqRel};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

use crossbeam_channel::{SendError, Sender};

use super::Command;

/// Rung whenever the worker has something to look at. See the module documentation.
#[derive(Default)]
pub(crate) struct Doorbell {
    /// Rung since the worker last cleared it.
    rung: AtomicBool,
    /// The worker's thread, once it runs (a ring before that is kept in `rung`).
    worker: OnceLock<Thread>,
}

impl Doorbell {
    /// Called on the worker's thread before its first wait.
    pub(crate) fn bind_current(&self) {
        let _ = self.worker.set(std::thread::current());
    }

    /// After whatever the worker must see was queued: it wakes, or if it is busy, it looks
    /// once more before it waits.
    pub(crate) fn ring(&self) {
        if !self.rung.swap(true, AcqRel) {
            if let Some(t) = self.worker.get() {
                t.unpark();
            }
        }
    }

    /// Waits until a ring or `timeout`; returns at once if rung since the last wait. Clears
    /// the ring before returning, and with acquire ordering, so what a ring announced is
    /// visible to the worker's look that follows, and a later ring wakes it again.
    pub(crate) fn wait(&self, timeout: Duration) {
        if !self.rung.swap(false, AcqRel) {
            std::thread::park_timeout(timeout);
            self.rung.swap(false, AcqRel);
        }
    }
}

/// The callers' end of the worker's commands: each send, and the end (dropping it), rings
/// the worker's doorbell.
pub(crate) struct CommandSender {
    tx: Option<Sender<Command>>,
    bell: std::sync::Arc<Doorbell>,
}

impl CommandSender {
    pub(crate) fn new(tx: Sender<Command>, bell: std::sync::Arc<Doorbell>) -> CommandSender {
        CommandSender { tx: Some(tx), bell }
    }

    /// Queues `c` (waits while the channel is full) and rings.
    pub(crate) fn send(&self, c: Command) -> Result<(), SendError<Command>> {
        let tx = self.tx.as_ref().expect("present until dropped");
        tx.send(c)?;
        self.bell.ring();
        Ok(())
    }
}

impl Drop for CommandSender {
    fn drop(&mut self) {
        // The channel closes first, then the worker is told to look (and finds it closed).
        self.tx.take();
        self.bell.ring();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_ring_before_the_wait_is_kept() {
        let bell = Doorbell::default();
        bell.bind_current();
        bell.ring();
        let t = Instant::now();
        bell.wait(Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(10), "the earlier ring ends the wait");
    }

    #[test]
    fn a_ring_before_the_worker_runs_is_kept() {
        let bell = Doorbell::default();
        bell.ring();
        bell.bind_current();
        let t = Instant::now();
        bell.wait(Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_wait_without_a_ring_lasts_its_timeout() {
        let bell = Doorbell::default();
        bell.bind_current();
        let t = Instant::now();
        bell.wait(Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_ring_from_another_thread_wakes_the_waiter() {
        let bell = Arc::new(Doorbell::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let b = bell.clone();
        let waiter = std::thread::spawn(move || {
            b.bind_current();
            ready_tx.send(()).unwrap();
            let t = Instant::now();
            b.wait(Duration::from_secs(30));
            t.elapsed()
        });
        ready_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        bell.ring();
        assert!(waiter.join().unwrap() < Duration::from_secs(10));
    }

    #[test]
    fn every_ring_is_seen_by_a_later_look() {
        // The worker's loop: look (count what was queued), then wait. Whatever a ringer queued
        // before its ring is counted by the look after the wait it ends, never left behind: a
        // lost ring leaves the worker parked for an hour and the result never comes.
        let bell = Arc::new(Doorbell::default());
        let queued = Arc::new(std::sync::atomic::AtomicU64::new(0));
        const N: u64 = 50_000;
        let (b, q) = (bell.clone(), queued.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            b.bind_current();
            ready_tx.send(()).unwrap();
            loop {
                let seen = q.load(std::sync::atomic::Ordering::Acquire);
                if seen == N {
                    break;
                }
                b.wait(Duration::from_secs(3600));
            }
            done_tx.send(()).unwrap();
        });
        ready_rx.recv().unwrap();
        for i in 0..N {
            queued.fetch_add(1, std::sync::atomic::Ordering::Release);
            bell.ring();
            if i % 1000 == 0 {
                std::thread::yield_now();
            }
        }
        assert!(done_rx.recv_timeout(Duration::from_secs(60)).is_ok(), "a ring was lost");
    }

    #[test]
    fn dropping_the_sender_rings() {
        let bell = Arc::new(Doorbell::default());
        bell.bind_current();
        let (tx, rx) = crossbeam_channel::bounded(1);
        drop(CommandSender::new(tx, bell.clone()));
        let t = Instant::now();
        bell.wait(Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(rx.try_recv().is_err());
    }
}
