//! A reply that will arrive later: wait for it (blocking) or `.await` it (any executor).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// A thread is (or was) blocked in `wait`/`wait_timeout`: only then does completing
    /// notify the condvar (a futex wake system call each time, also with nobody waiting; a
    /// producer completes one handle per message).
    blocked: bool,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// The receiving half: [`Pending::wait`], [`Pending::wait_timeout`], or `.await`.
pub struct Pending<T> {
    shared: Arc<Shared<T>>,
}

/// The sending half; completing it twice keeps the first value.
pub struct Completer<T> {
    shared: Arc<Shared<T>>,
}

pub fn pending<T>() -> (Completer<T>, Pending<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot { value: None, waker: None, blocked: false }),
        ready: Condvar::new(),
    });
    (Completer { shared: shared.clone() }, Pending { shared })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T> Completer<T> {
    pub fn complete(self, value: T) {
        let (waker, blocked) = {
            let mut s = lock(&self.shared.slot);
            if s.value.is_some() {
                return;
            }
            s.value = Some(value);
            (s.waker.take(), s.blocked)
        };
        if blocked {
            self.shared.ready.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Pending<T> {
    /// Blocks until the value arrives.
    pub fn wait(self) -> T {
        let mut s = lock(&self.shared.slot);
        loop {
            if let Some(v) = s.value.take() {
                return v;
            }
            s.blocked = true;
            s = self.shared.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks at most `timeout`; gives the handle back on timeout.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, Pending<T>> {
        let deadline = Instant::now() + timeout;
        {
            let mut s = lock(&self.shared.slot);
            loop {
                if let Some(v) = s.value.take() {
                    return Ok(v);
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                s.blocked = true;
                s = self
                    .shared
                    .ready
                    .wait_timeout(s, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        Err(self)
    }

    /// The value if it already arrived.
    pub fn try_take(&self) -> Option<T> {
        lock(&self.shared.slot).value.take()
    }
}

impl<T> Future for Pending<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = lock(&self.shared.slot);
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeout_and_future() {
        let (c, p) = pending::<u32>();
        let p = p.wait_timeout(Duration::from_millis(1)).unwrap_err();
        std::thread::spawn(move || c.complete(7));
        assert_eq!(p.wait(), 7);
    }
}
