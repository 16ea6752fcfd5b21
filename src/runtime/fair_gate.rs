//! A lock for the tasks of one thread, handed over in the order it was asked for.
//!
//! The commit log orders its appends with it: the shard checks a batch's sequence (idempotent
//! produce) and asks for the log's append gate in one go, so the order in which batches ask is
//! the order their producers sent them. glommio's `Semaphore` does not keep that order: a
//! released permit waits in the semaphore until the woken waiter runs, and a task that asks in
//! between takes it first. Under load (an append waiting for a chunk of the log while the next
//! batches of its queue queue up behind it) a later batch of a queue was stored before an
//! earlier one: the `ordered` workload found hundreds of thousands of keys out of order with
//! both cores busy (BENCHMARKS.md, round 27). Here a release hands the gate to the first
//! waiter directly; a later asker waits behind it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Waiter {
    granted: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct GateState {
    held: bool,
    /// Oldest first. A waiter that gives up leaves the line at once, so it holds only the
    /// tasks waiting now.
    waiters: VecDeque<Rc<RefCell<Waiter>>>,
}

/// See the module documentation. Not `Send`: one thread's tasks.
#[derive(Default)]
pub struct FairGate {
    st: Rc<RefCell<GateState>>,
}

/// Holds the gate until dropped; then the gate goes to the oldest waiter.
pub struct GatePermit {
    st: Rc<RefCell<GateState>>,
}

impl FairGate {
    pub fn new() -> FairGate {
        FairGate::default()
    }

    /// The gate, once every earlier asker had it. Its place in line is taken when this is
    /// called, not when the future is first polled.
    pub fn acquire(&self) -> Acquire {
        let mut st = self.st.borrow_mut();
        if !st.held && st.waiters.is_empty() {
            st.held = true;
            return Acquire { st: self.st.clone(), waiter: None, owned: true };
        }
        let waiter = Rc::new(RefCell::new(Waiter::default()));
        st.waiters.push_back(waiter.clone());
        Acquire { st: self.st.clone(), waiter: Some(waiter), owned: false }
    }

    /// Tasks waiting for the gate.
    pub fn waiting(&self) -> usize {
        self.st.borrow().waiters.len()
    }
}

/// Hands the gate to the oldest waiter, or frees it.
fn release(st: &RefCell<GateState>) {
    let next = {
        let mut st = st.borrow_mut();
        let next = st.waiters.pop_front();
        st.held = next.is_some();
        next
    };
    if let Some(w) = next {
        let waker = {
            let mut w = w.borrow_mut();
            w.granted = true;
            w.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        release(&self.st);
    }
}

/// The future of [`FairGate::acquire`].
pub struct Acquire {
    st: Rc<RefCell<GateState>>,
    /// In line for the gate (until it is handed over and taken as a permit).
    waiter: Option<Rc<RefCell<Waiter>>>,
    /// Holds the gate, not yet taken as a permit (it was free when asked for).
    owned: bool,
}

impl Future for Acquire {
    type Output = GatePermit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<GatePermit> {
        let granted = match &self.waiter {
            None => self.owned,
            Some(w) => {
                let mut w = w.borrow_mut();
                if !w.granted {
                    w.waker = Some(cx.waker().clone());
                }
                w.granted
            }
        };
        if !granted {
            return Poll::Pending;
        }
        // The permit holds the gate from here on.
        self.waiter = None;
        self.owned = false;
        Poll::Ready(GatePermit { st: self.st.clone() })
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let handed = self.waiter.as_ref().is_some_and(|w| w.borrow().granted);
        if self.owned || handed {
            // Held and never taken as a permit: pass the gate on.
            release(&self.st);
        } else if let Some(w) = &self.waiter {
            self.st.borrow_mut().waiters.retain(|other| !Rc::ptr_eq(other, w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// The sequence that let a later batch of a queue be stored first: the holder releases,
    /// the woken waiter has not run yet, and another task asks. It waits its turn; glommio's
    /// `Semaphore` gives it the permit in this sequence (checked when this gate was written).
    #[test]
    fn a_release_hands_the_gate_to_the_oldest_waiter_not_to_a_later_asker() {
        let gate = FairGate::new();
        let held = gate.acquire().now_or_never().expect("free: at once");
        let mut first = gate.acquire();
        assert!((&mut first).now_or_never().is_none(), "held: waits");
        drop(held);
        // The first waiter was handed the gate but has not run: a later asker waits.
        let mut later = gate.acquire();
        assert!((&mut later).now_or_never().is_none(), "a later asker does not go first");
        let p1 = first.now_or_never().expect("handed to the first waiter");
        assert!((&mut later).now_or_never().is_none());
        drop(p1);
        let p2 = later.now_or_never().expect("then to the next");
        drop(p2);
        assert!(gate.acquire().now_or_never().is_some(), "free again");
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_line_and_one_handed_the_gate_passes_it_on() {
        let gate = FairGate::new();
        let held = gate.acquire().now_or_never().unwrap();
        let mut a = gate.acquire();
        let mut b = gate.acquire();
        let mut c = gate.acquire();
        for f in [&mut a, &mut b, &mut c] {
            assert!(f.now_or_never().is_none());
        }
        assert_eq!(gate.waiting(), 3);
        drop(a); // gave up before its turn: out of the line
        assert_eq!(gate.waiting(), 2);
        drop(held); // to b
        drop(b); // handed the gate, dropped before it ran: passes it on to c
        let pc = c.now_or_never().expect("c has it");
        // Asked for and dropped without a poll while the gate was free: released too.
        drop(pc);
        drop(gate.acquire());
        assert!(gate.acquire().now_or_never().is_some());
    }

    #[test]
    fn tasks_get_the_gate_in_the_order_they_asked_for_it() {
        use crate::runtime::{run_on_new_executor, ExecutorOptions};
        run_on_new_executor(ExecutorOptions::default(), || async {
            let gate = Rc::new(FairGate::new());
            let order = Rc::new(RefCell::new(Vec::new()));
            let held = gate.acquire().await;
            let tasks: Vec<_> = (0..5)
                .map(|i| {
                    let acquire = gate.acquire();
                    let order = order.clone();
                    crate::runtime::spawn(async move {
                        let _p = acquire.await;
                        order.borrow_mut().push(i);
                        crate::runtime::yield_once().await;
                    })
                })
                .collect();
            crate::runtime::yield_once().await;
            drop(held);
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), [0, 1, 2, 3, 4]);
        })
        .unwrap();
    }
}
