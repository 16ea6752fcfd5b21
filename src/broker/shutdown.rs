//! Stopping: the signal a shard's tasks watch, the main thread's SIGINT/SIGTERM handling,
//! and the steps of a shard's stop that say when they take long (`StopStep`).
//!
//! The main thread owns one [`StopHandle`] per shard; firing it resolves that shard's [`Stop`]
//! future, which every accept loop and connection reader of the shard selects on. The order a
//! shard stops in is in [`super::server`].

use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

use crate::runtime;

/// Resolves when the shard should stop. Cheap to clone; all clones resolve together.
pub type Stop = Shared<oneshot::Receiver<()>>;

/// Fires a shard's [`Stop`] (also when dropped).
pub struct StopHandle(Option<oneshot::Sender<()>>);

impl StopHandle {
    pub fn fire(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.send(());
        }
    }
}

pub fn stop_pair() -> (StopHandle, Stop) {
    let (tx, rx) = oneshot::channel();
    (StopHandle(Some(tx)), rx.shared())
}

/// Starts a thread that reports SIGINT and SIGTERM to `on_signal`. A second signal while the
/// broker is stopping exits at once with status 130 (the operator insists).
pub fn watch_signals(on_signal: impl Fn(i32) + Send + 'static) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("ringmq-signals".into()).spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            if seen > 1 {
                eprintln!("ringmq: second signal {sig}, exiting without a clean stop");
                std::process::exit(130);
            }
            on_signal(sig);
        }
    })?;
    Ok(())
}

/// One step of a shard's stop that has no deadline of its own (its task ends when it sees the
/// stop). A step still running after `grace` is logged, naming it, and waited for: a stop
/// that hangs says where.
pub(super) struct StopStep {
    pub shard: usize,
    pub what: &'static str,
    pub grace: Duration,
}

impl StopStep {
    pub async fn wait<F: std::future::Future>(self, fut: F) -> F::Output {
        futures::pin_mut!(fut);
        if let Some(v) = runtime::timeout(self.grace, fut.as_mut()).await {
            tracing::debug!(shard = self.shard, "stopping: {} done", self.what);
            return v;
        }
        let Self { shard, what, grace } = self;
        tracing::warn!(shard, "stopping: still waiting for {what} after {grace:?}");
        let v = fut.await;
        tracing::warn!(shard, "stopping: {what} done");
        v
    }
}
