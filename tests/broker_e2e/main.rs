//! End-to-end tests against the real `ringmq` binary: routing across shards, ordering,
//! long-poll, restart and crash durability.

#[path = "../broker_common/mod.rs"]
mod broker_common;

mod restarts;
mod routing;
mod sends_and_pulls;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use broker_common::{config, drain, free_port_block, poll_until, Broker};
use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};
use ringmq::protocol::{Request, Response, SendStatus};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-e2e").tempdir().unwrap()
}

/// Runs a future to completion on this thread (the client's futures need no runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "future did not complete");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}
