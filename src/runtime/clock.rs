//! Time as a seam: every time-dependent decision in storage, broker and client logic reads the
//! time through a [`Clock`] instead of calling `Instant::now()` / `SystemTime::now()` itself.
//!
//! Production code uses [`SystemClock`]. Tests use [`SimClock`], whose time moves only when the
//! test calls [`SimClock::advance`], so flush intervals, long-poll deadlines, linger, request
//! timeouts, retry backoff and retention by age are tested exactly, without sleeps and without
//! flaking on a loaded machine.
//!
//! A clock answers two questions: a monotonic instant (for deadlines and intervals; never goes
//! back) and the wall-clock time in milliseconds since the Unix epoch (for store timestamps and
//! retention by age; may jump when the host's clock is set). Both come from one source, so a
//! simulated clock moves them together.
//!
//! Clocks are `Send + Sync`: the client's threads share one, and a broker hands a clone of its
//! `Arc` to each shard (immutable, no contention: [`SystemClock`] holds no state).
//!
//! Waiting goes through the clock too, on shard executors: [`Clock::sleep_until`] is a glommio
//! timer for the system clock and, for a simulated clock, a future that completes when the test
//! advances the time past its deadline. So a long-poll that waits 30 s, or a connection's idle
//! timeout of 10 minutes, is tested by advancing a [`SimClock`], not by waiting. (Client threads
//! block on OS primitives and re-read the clock when they wake.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A future that completes at a deadline of a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()>>>;

/// A source of time. See the module documentation.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for deadlines and intervals.
    fn now(&self) -> Instant;
    /// Wall-clock time in milliseconds since the Unix epoch (negative before 1970).
    fn unix_ms(&self) -> i64;
    /// Completes once [`Clock::now`] reaches `deadline`. For the system clock this is a glommio
    /// timer, so it must be awaited on a shard executor.
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

/// A clock shared between components and threads.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        }
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())))
    }
}

/// The system clock as a [`SharedClock`].
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to. Its monotonic time starts at the instant it was made;
/// its wall-clock time starts at the `unix_ms` it was given. [`SimClock::advance`] moves both;
/// [`SimClock::set_unix_ms`] moves the wall clock alone (as an operator setting the host's clock
/// would), so code can be tested against wall-clock jumps too.
#[derive(Debug)]
pub struct SimClock {
    state: Arc<SimState>,
}

#[derive(Debug)]
struct SimState {
    origin: Instant,
    elapsed_ns: AtomicU64,
    unix_ms: AtomicI64,
    /// Sleeps waiting for the time to move; all are woken on every advance and re-check their
    /// deadline (a test clock has few sleepers; each registers at most once per advance).
    sleepers: Mutex<Vec<Waker>>,
}

impl SimState {
    fn now(&self) -> Instant {
        self.origin + Duration::from_nanos(self.elapsed_ns.load(Ordering::SeqCst))
    }
}

impl SimClock {
    pub fn new(unix_ms: i64) -> Arc<SimClock> {
        Arc::new(SimClock {
            state: Arc::new(SimState {
                origin: Instant::now(),
                elapsed_ns: AtomicU64::new(0),
                unix_ms: AtomicI64::new(unix_ms),
                sleepers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Moves time forward by `d` (monotonic and wall clock alike) and wakes the sleeps whose
    /// deadline it reached.
    pub fn advance(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).expect("a simulated step fits in u64 nanoseconds");
        self.state.elapsed_ns.fetch_add(ns, Ordering::SeqCst);
        self.state.unix_ms.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
        let woken =
            std::mem::take(&mut *self.state.sleepers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in woken {
            w.wake();
        }
    }

    /// Sleeps that have not completed yet and are waiting for the time to move.
    pub fn sleepers(&self) -> usize {
        self.state.sleepers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sets the wall clock alone; the monotonic time does not move.
    pub fn set_unix_ms(&self, unix_ms: i64) {
        self.state.unix_ms.store(unix_ms, Ordering::SeqCst);
    }

    /// How far the monotonic time moved since the clock was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.state.elapsed_ns.load(Ordering::SeqCst))
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.state.now()
    }

    fn unix_ms(&self) -> i64 {
        self.state.unix_ms.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(SimSleep { state: self.state.clone(), deadline })
    }
}

struct SimSleep {
    state: Arc<SimState>,
    deadline: Instant,
}

impl Future for SimSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut sleepers = self.state.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock `advance` takes to wake, so no advance is missed.
        if self.state.now() >= self.deadline {
            return Poll::Ready(());
        }
        if !sleepers.iter().any(|w| w.will_wake(cx.waker())) {
            sleepers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_time_moves_only_when_advanced() {
        let c = SimClock::new(1_700_000_000_000);
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        assert_eq!(c.unix_ms(), 1_700_000_000_000);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - t0, Duration::from_millis(1500));
        assert_eq!(c.unix_ms(), 1_700_000_001_500);
    }

    #[test]
    fn wall_clock_can_jump_without_moving_monotonic_time() {
        let c = SimClock::new(10_000);
        let t0 = c.now();
        c.set_unix_ms(5_000);
        assert_eq!(c.unix_ms(), 5_000);
        assert_eq!(c.now(), t0);
    }

    #[test]
    fn a_simulated_sleep_completes_when_time_reaches_its_deadline() {
        use futures::FutureExt;
        let c = SimClock::new(0);
        let mut sleep = c.sleep_until(c.now() + Duration::from_secs(30));
        assert!(sleep.as_mut().now_or_never().is_none());
        assert_eq!(c.sleepers(), 1);
        c.advance(Duration::from_secs(29));
        assert!(sleep.as_mut().now_or_never().is_none(), "one second early");
        c.advance(Duration::from_secs(1));
        assert_eq!(c.sleepers(), 0, "woken");
        assert!(sleep.as_mut().now_or_never().is_some());
    }

    #[test]
    fn system_clock_is_near_the_os_clock() {
        let c = system_clock();
        let os = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((c.unix_ms() - os).abs() < 5_000);
        let a = c.now();
        assert!(c.now() >= a);
    }
}
