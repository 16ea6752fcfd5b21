//! One monotonic clock for the whole process: nanoseconds since the first call. Producers
//! write intended send times with it into messages; consumers in the same process subtract
//! them from their receive time, so end-to-end latency needs no synchronised wall clocks.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ORIGIN: OnceLock<Instant> = OnceLock::new();

pub fn now_ns() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Waits until `deadline_ns`, always by sleeping (nanosleep), never by spinning or yielding.
///
/// The load generator's threads (producers, consumers, the client's worker and connection
/// readers) usually share one pinned core. An earlier version yielded (`sched_yield`) for the
/// last 200 µs before each send; at fixed rates of 10-20k msg/s a producer then waits in that
/// yield loop almost all the time, and on this kernel (Linux 6.18, EEVDF scheduler) the
/// threads it shares the core with were intermittently not run for ~1.5 s: acks and
/// deliveries stopped while the broker sat idle (BENCHMARKS.md, finding 6 and its follow-up).
/// Sleeping hands the core to them for sure. Call [`precise_sleeps`] on the waiting thread so
/// a short sleep overshoots by microseconds rather than the default 50 µs timer slack.
pub fn wait_until(deadline_ns: u64) {
    loop {
        let now = now_ns();
        if now >= deadline_ns {
            return;
        }
        std::thread::sleep(Duration::from_nanos(deadline_ns - now));
    }
}

/// Sets the calling thread's timer slack to 1 µs (prctl PR_SET_TIMERSLACK), so sleeps in
/// [`wait_until`] end close to their deadline. Best effort: the default slack only makes the
/// publish delay (which the report shows) a little larger.
pub fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects the calling thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// Pins the calling thread (and the threads it starts later) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < CPU_SETSIZE,
    // checked first; sched_setaffinity(0, ..) affects only the calling thread.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("cpu {cpu} is out of range"));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("cannot pin to cpu {cpu}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Parses a CPU list: `1`, `0,2`, `2-5`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid CPU list {s:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("1").unwrap(), vec![1]);
        assert_eq!(parse_cpus("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("3-1").is_err());
    }

    #[test]
    fn monotonic_and_waits() {
        let a = now_ns();
        wait_until(a + 300_000);
        assert!(now_ns() >= a + 300_000);
    }
}
