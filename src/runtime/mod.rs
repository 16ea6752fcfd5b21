//! The only place that names glommio types: executors, timers, task spawning and DMA buffers;
//! and the [`Clock`] seam through which all other code reads the time (`clock.rs`).
//!
//! glommio is a thread-per-core runtime on io_uring. Each shard runs one `LocalExecutor` on
//! its own (optionally pinned) thread; everything a shard owns is `!Send` and lives there.
//! Keeping glommio behind this module lets the rest of the code change runtimes or versions
//! in one place.
//!
//! Locked memory: glommio pre-registers `io_memory` bytes of DMA buffers with io_uring per
//! executor, which counts against RLIMIT_MEMLOCK. When registration fails glommio falls back to
//! unregistered buffers (slightly slower); [`check_memlock`] reports the limit and how to raise it.
//! Either way the arena is resident from the start (pinned, or faulted in by the refused
//! registration), so it is sized small and the rest comes from the heap ([`tune_allocator`]).

pub mod clock;
pub mod fair_gate;

use std::future::Future;
use std::time::{Duration, Instant};

pub use clock::{system_clock, Clock, SharedClock, SimClock, Sleep, SystemClock};
pub use fair_gate::{FairGate, GatePermit};
pub use glommio::io::{DmaBuffer, ReadResult};

/// Options for one executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub name: String,
    /// Pin to this CPU (None: let the OS place it).
    pub cpu: Option<usize>,
    /// Bytes of DMA buffer arena for this executor (registered with io_uring if memlock allows).
    pub io_memory_bytes: usize,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions { name: "ringmq".into(), cpu: None, io_memory_bytes: 4 << 20 }
    }
}

/// Runs `make()`'s future to completion on a new executor thread and returns its output.
pub fn run_on_new_executor<F, Fut, T>(opts: ExecutorOptions, make: F) -> std::io::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = spawn_executor(opts, make)?;
    handle.join().map_err(|e| std::io::Error::other(explain_executor_error(&e.to_string())))
}

/// Starts an executor thread running `make()`'s future.
pub fn spawn_executor<F, Fut, T>(
    opts: ExecutorOptions,
    make: F,
) -> std::io::Result<glommio::ExecutorJoinHandle<T>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match opts.cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    };
    glommio::LocalExecutorBuilder::new(placement)
        .name(&opts.name)
        .io_memory(opts.io_memory_bytes)
        // The helper thread for unlink/rename/listing (storage::dma_dir): unbound, so a slow
        // unlink of a 1 GiB segment need not share the pinned shard's core (glommio's default
        // pins it to the executor's CPU).
        .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(1))
        .spawn(make)
        .map_err(|e| std::io::Error::other(describe_executor_error(e)))
}

fn describe_executor_error(e: glommio::GlommioError<()>) -> String {
    explain_executor_error(&e.to_string())
}

/// Turns glommio's executor start-up errors into messages that say what to change.
pub fn explain_executor_error(text: &str) -> String {
    let (cur, _) = memlock_limit();
    if text.contains("MemLockLimit")
        || text.contains("memlock")
        || text.contains("Cannot allocate memory")
        || text.contains("ENOMEM")
    {
        format!(
            "cannot start an io_uring executor ({text}): the locked-memory limit (RLIMIT_MEMLOCK, \
             `ulimit -l`) is {} KiB and each shard needs at least 512 KiB. Raise it with \
             `ulimit -l unlimited` in the shell that starts ringmq, LimitMEMLOCK=infinity in its \
             systemd unit, or a `memlock` line in /etc/security/limits.conf",
            cur / 1024
        )
    } else if text.contains("Operation not permitted") || text.contains("Function not implemented")
    {
        format!(
            "cannot start an io_uring executor ({text}): io_uring is disabled or blocked here \
             (check the sysctl kernel.io_uring_disabled and the container's seccomp profile)"
        )
    } else {
        format!("executor failed: {text}")
    }
}

/// The current RLIMIT_MEMLOCK (soft, hard) in bytes.
pub fn memlock_limit() -> (u64, u64) {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and has no other effects.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if rc != 0 {
        return (0, 0);
    }
    (rl.rlim_cur, rl.rlim_max)
}

/// A warning to log when `executors` executors of `io_memory_bytes` each cannot all register
/// their buffers under the locked-memory limit; None when the limit is enough.
pub fn check_memlock(executors: usize, io_memory_bytes: usize) -> Option<String> {
    let (cur, _) = memlock_limit();
    let need = (executors * io_memory_bytes) as u64;
    (cur != libc::RLIM_INFINITY && cur < need).then(|| {
        format!(
            "locked-memory limit is {} KiB but {executors} shard(s) want {} KiB of registered I/O \
             buffers; they will run with unregistered buffers (slower). Raise it with \
             `ulimit -l unlimited` (or LimitMEMLOCK=infinity in a systemd unit)",
            cur / 1024,
            need / 1024
        )
    })
}

/// Makes the process allocator keep and reuse the broker's large buffers instead of mapping
/// and unmapping them each time. Call once, before the shards start.
///
/// Why: the write chunks (1 MiB), fetch and read buffers and grown connection buffers outlive
/// glommio's small DMA arena and come from the heap. glibc serves blocks above its mmap
/// threshold (128 KiB to start) with a fresh `mmap` and returns them with `munmap`, so every
/// chunk was page-faulted in again while the batch was copied into it: measured as ~60% of the
/// append path (BENCHMARKS.md, "Where the time goes"). Serving them from the heap and trimming
/// it only above `TRIM_THRESHOLD_BYTES` of free top memory reuses them with no faults, while
/// memory still grows only with use (an idle broker stays small) up to the configured bounds.
/// A no-op on allocators other than glibc's.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc caps the mmap threshold at 32 MiB on 64-bit targets.
        const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD_BYTES: libc::c_int = 128 << 20;
        // SAFETY: mallopt only changes allocator parameters; it returns 0 when it refuses.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 0
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 0
        };
        if !ok {
            tracing::warn!("the allocator refused mallopt; large buffers will be remapped per use");
        }
    }
}

/// Returns the allocator's free memory to the system (glibc `malloc_trim`: unmaps free pages in
/// every arena, not only at the top of the heap). Process-wide; takes each arena's lock
/// briefly. With [`tune_allocator`] nothing else gives back the memory of buffers freed in the
/// middle of the heap (thousands of closed connections). A no-op on other allocators.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocates a DMA-aligned buffer from the executor's arena (falls back to the heap when full).
pub fn alloc_dma(size: usize) -> DmaBuffer {
    glommio::allocate_dma_buffer(size)
}

/// Spawns a task on the current executor; it runs until completion even if the handle is dropped.
///
/// glommio may poll the new task inline, before this returns: a task that touches state its
/// spawner may still be borrowing must `yield_once().await` first.
pub fn spawn_detached<F: Future<Output = ()> + 'static>(fut: F) {
    glommio::spawn_local(fut).detach();
}

/// A task on the current executor; awaiting the handle yields its output.
pub fn spawn<F, T>(fut: F) -> glommio::task::JoinHandle<T>
where
    F: Future<Output = T> + 'static,
    T: 'static,
{
    glommio::spawn_local(fut).detach()
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Awaits `fut` until `clock` reaches `deadline`; None on timeout.
pub async fn timeout_at<F: Future>(
    clock: &dyn Clock,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    first_or_timeout(fut, clock.sleep_until(deadline)).await
}

/// Awaits `fut` unless `timer` completes first; None then.
pub async fn first_or_timeout<F: Future>(fut: F, timer: Sleep) -> Option<F::Output> {
    futures::pin_mut!(fut);
    match futures::future::select(fut, timer).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

/// Awaits `fut` for at most `d`; None on timeout.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Option<F::Output> {
    futures::pin_mut!(fut);
    let timer = glommio::timer::sleep(d);
    futures::pin_mut!(timer);
    match futures::future::select(fut, timer).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

/// Returns Pending once (waking itself), so the caller resumes only after the current poll of
/// whoever spawned or woke it has finished.
pub async fn yield_once() {
    let mut yielded = false;
    futures::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

pub use glommio::sync::{Semaphore, StaticPermit};
pub use glommio::task::JoinHandle;

/// A level-triggered wake-up for one waiting task on this executor: `notify` sets a flag and
/// wakes the waiter; `wait` returns once the flag is set and clears it. Notifications before
/// `wait` are not lost; several collapse into one.
#[derive(Default)]
pub struct Signal {
    state: std::cell::RefCell<(bool, Option<std::task::Waker>)>,
}

impl Signal {
    pub fn notify(&self) {
        let waker = {
            let mut s = self.state.borrow_mut();
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        futures::future::poll_fn(move |cx| {
            let mut s = self.state.borrow_mut();
            if s.0 {
                s.0 = false;
                std::task::Poll::Ready(())
            } else {
                s.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
    }
}

/// How often an executor polls I/O and timers while a [`TaskQueue::yielding`] queue has tasks
/// ready.
pub const YIELDING_QUEUE_PREEMPT: Duration = Duration::from_millis(1);

/// A task queue of the current executor. Queues share the CPU in proportion to their shares
/// (the executor's default queue has 1000), so work spawned into a low-share queue (admin,
/// timers) cannot starve the default queue's data-plane tasks.
#[derive(Clone, Copy, Debug)]
pub struct TaskQueue(glommio::TaskQueueHandle);

impl TaskQueue {
    /// Creates a queue on the current executor; `shares` is its relative weight.
    pub fn new(name: &str, shares: usize) -> TaskQueue {
        TaskQueue(glommio::executor().create_task_queue(
            glommio::Shares::Static(shares),
            glommio::Latency::NotImportant,
            name,
        ))
    }

    /// [`Self::new`] for work that steps in a loop and yields between steps without awaiting
    /// I/O ([`yield_once`]; the key index catching up from memory). glommio polls io_uring
    /// completions and timers only when its preempt timer fires (100 ms by default) or no task
    /// is ready, and such a loop is always ready: every socket read, disk write completion
    /// and timer of the shard waited for up to 100 ms at a time. While this queue has tasks
    /// ready, the executor polls at least every [`YIELDING_QUEUE_PREEMPT`]. (Every executor
    /// at 1 ms, always, cost about 5% more of the broker's CPU at 130k msg/s, BENCHMARKS.md
    /// round 22.)
    pub fn yielding(name: &str, shares: usize) -> TaskQueue {
        TaskQueue(glommio::executor().create_task_queue(
            glommio::Shares::Static(shares),
            glommio::Latency::Matters(YIELDING_QUEUE_PREEMPT),
            name,
        ))
    }

    /// The queue of the task that calls this (an executor's first task runs in its default
    /// queue).
    pub fn current() -> TaskQueue {
        TaskQueue(glommio::executor().current_task_queue())
    }

    /// How long this queue's tasks ran since the previous call (glommio hands its counter
    /// over and restarts it, so one owner must do all the reading); zero outside an executor
    /// or for a removed queue.
    pub fn take_runtime(&self) -> Duration {
        glommio::executor().task_queue_stats(self.0).map(|s| s.runtime()).unwrap_or_default()
    }

    /// Spawns `fut` into this queue; it runs to completion even if the handle is dropped.
    pub fn spawn<F, T>(&self, fut: F) -> JoinHandle<T>
    where
        F: Future<Output = T> + 'static,
        T: 'static,
    {
        glommio::spawn_local_into(fut, self.0)
            .expect("a task queue lives as long as its executor")
            .detach()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_warning_names_the_limit_and_the_fix() {
        let (cur, _) = memlock_limit();
        if cur == libc::RLIM_INFINITY {
            assert!(check_memlock(64, 1 << 30).is_none());
            return;
        }
        let msg = check_memlock(64, 1 << 30).expect("64 GiB exceeds any finite limit");
        assert!(msg.contains("ulimit -l") && msg.contains("LimitMEMLOCK"), "{msg}");
        assert!(msg.contains(&format!("{} KiB", cur / 1024)), "{msg}");
        assert!(check_memlock(1, 0).is_none());
    }

    #[test]
    fn a_task_that_keeps_yielding_in_its_queue_does_not_hold_off_io_or_timers() {
        use futures::{AsyncReadExt, AsyncWriteExt};
        use std::io::{Read, Write};
        // A peer that answers each byte 2 ms later: the read waits on the ring.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 1];
            while s.read(&mut b).is_ok_and(|n| n == 1) {
                std::thread::sleep(Duration::from_millis(2));
                let _ = s.write_all(&b);
            }
        });
        let (trips, sleeps) = run_on_new_executor(ExecutorOptions::default(), move || async move {
            let stop = std::rc::Rc::new(std::cell::Cell::new(false));
            let stopped = stop.clone();
            let spinner = TaskQueue::yielding("spinner", 100).spawn(async move {
                while !stopped.get() {
                    yield_once().await;
                }
            });
            let mut c = glommio::net::TcpStream::connect(addr).await.unwrap();
            let (mut trips, mut sleeps) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let at = Instant::now();
                c.write_all(&[1]).await.unwrap();
                c.read_exact(&mut [0u8; 1]).await.unwrap();
                trips.push(at.elapsed());
                let at = Instant::now();
                sleep(Duration::from_millis(1)).await;
                sleeps.push(at.elapsed());
            }
            stop.set(true);
            spinner.await;
            (trips, sleeps)
        })
        .unwrap();
        // In a queue of `TaskQueue::new` each took about 100 ms (glommio's preempt timer);
        // here a few ms. The medians, with a wide margin for a loaded machine.
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let (trip, slept) = (median(trips), median(sleeps));
        assert!(trip < Duration::from_millis(50), "a 2 ms round trip took {trip:?}");
        assert!(slept < Duration::from_millis(50), "a 1 ms sleep took {slept:?}");
    }

    #[test]
    fn signal_wakes_a_waiter_once() {
        run_on_new_executor(ExecutorOptions::default(), || async {
            let s = std::rc::Rc::new(Signal::default());
            s.notify();
            s.notify();
            s.wait().await; // both notifications collapse into one
            let s2 = s.clone();
            let t = spawn(async move { s2.wait().await });
            yield_once().await;
            s.notify();
            t.await;
        })
        .unwrap();
    }
}
