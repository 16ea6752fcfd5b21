//! What the host took from this machine's CPUs during a run: every CPU's busy and steal time
//! from `/proc/stat`, sampled about every 100 ms by the per-second reporter.
//!
//! On a virtual machine the host may stop a vCPU for a whole sample: on the reference VM the
//! `latency` workload's stalled seconds (ack p99 of 90-100 ms in one second, the rest near 1 ms)
//! each came with one vCPU's steal at 100 ms of a 100 ms sample (BENCHMARKS.md, round 49). A
//! per-second total cannot tell such a block from the same steal spread thinly, so each point
//! keeps the longest steal of one CPU within one sample, and the run counts the *steal
//! blocks*: samples in which one CPU lost at least [`BLOCK_MIN_MS`] and at least
//! [`BLOCK_MIN_SHARE`] of the sample to the host.
//!
//! The sampler ([`HostCpu`]) is pure: [`HostCpu::observe`] takes a time and the CPUs' counters;
//! [`HostCpu::poll`] reads `/proc/stat` and feeds it.

use serde::{Deserialize, Serialize};

/// Time between two samples.
pub const SAMPLE_NS: u64 = 100_000_000;
/// A steal block: one CPU lost at least this many milliseconds of one sample...
pub const BLOCK_MIN_MS: f64 = 80.0;
/// ...and at least this share of the sample's length. Half, not more: the sampling thread
/// may itself wait on the stolen vCPU, and a sample of 100 ms stolen then lasts 150-200 ms
/// (seen in round 49's run-all); steal spread thinly never reaches 80 ms in such a sample.
pub const BLOCK_MIN_SHARE: f64 = 0.5;

/// One CPU's counters from `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    /// Its number (`cpuN`): offline CPUs have no line, so a position is not a number.
    pub cpu: usize,
    /// user + nice + system + irq + softirq
    pub busy: u64,
    /// idle + iowait
    pub idle: u64,
    pub steal: u64,
}

/// The `cpuN` lines of `/proc/stat`, in order (the aggregate `cpu` line left out). A line that
/// does not parse is left out.
pub fn parse_proc_stat(text: &str) -> Vec<CpuTicks> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(cpu) = f.next().and_then(|n| n.strip_prefix("cpu")?.parse().ok()) else {
            continue;
        };
        let v: Vec<u64> = f.take(8).map_while(|x| x.parse().ok()).collect();
        if v.len() < 8 {
            continue;
        }
        // user nice system idle iowait irq softirq steal
        out.push(CpuTicks {
            cpu,
            busy: v[0] + v[1] + v[2] + v[5] + v[6],
            idle: v[3] + v[4],
            steal: v[7],
        });
    }
    out
}

/// One CPU over the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuShare {
    pub cpu: usize,
    /// Percent of the window this CPU ran something (user, system, interrupts).
    pub busy_pct: f64,
    /// Percent of the window the host ran something else on this vCPU.
    pub steal_pct: f64,
}

/// The host's share of the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostCpuSummary {
    pub cpus: Vec<CpuShare>,
    /// Samples (about 100 ms) in the measured window in which one CPU was taken by the host
    /// for at least 80 ms and half of the sample.
    pub steal_blocks: u64,
    /// The longest steal of one CPU within one sample, in the measured window (ms).
    pub longest_steal_ms: f64,
}

/// The sampler: see the module docs.
#[derive(Debug)]
pub struct HostCpu {
    ms_per_tick: f64,
    /// When `/proc/stat` was last read or tried (a failed read waits a sample too).
    tried_ns: Option<u64>,
    last: Option<(u64, Vec<CpuTicks>)>,
    /// Since the last point: steal of all CPUs, and the longest of one CPU in one sample (ms).
    point_steal_ms: f64,
    point_longest_ms: f64,
    measuring: bool,
    /// Over the measured samples: per CPU its (busy, idle, steal) ticks, in the order first seen.
    window: Vec<CpuTicks>,
    blocks: u64,
    longest_ms: f64,
}

impl HostCpu {
    /// `ticks_per_s`: the kernel's USER_HZ (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
    pub fn new(ticks_per_s: u64) -> HostCpu {
        HostCpu {
            ms_per_tick: 1000.0 / ticks_per_s.max(1) as f64,
            tried_ns: None,
            last: None,
            point_steal_ms: 0.0,
            point_longest_ms: 0.0,
            measuring: false,
            window: Vec::new(),
            blocks: 0,
            longest_ms: 0.0,
        }
    }

    /// For this machine; reads nothing yet.
    pub fn for_this_machine() -> HostCpu {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        HostCpu::new(if hz > 0 { hz as u64 } else { 100 })
    }

    /// Reads `/proc/stat` if a sample is due at `now_ns` (one read or try per [`SAMPLE_NS`]).
    pub fn poll(&mut self, now_ns: u64) {
        if self.tried_ns.map_or(true, |t| now_ns >= t + SAMPLE_NS) {
            self.sample_now(now_ns);
        }
    }

    /// Reads `/proc/stat` now; does nothing where it cannot be read.
    pub fn sample_now(&mut self, now_ns: u64) {
        self.tried_ns = Some(now_ns);
        if let Ok(text) = std::fs::read_to_string("/proc/stat") {
            self.observe(now_ns, &parse_proc_stat(&text));
        }
    }

    /// One sample: the CPUs' counters at `now_ns`.
    pub fn observe(&mut self, now_ns: u64, cpus: &[CpuTicks]) {
        if let Some((t, prev)) = self.last.take() {
            // Only reads of the same CPUs compare (one went offline or came back: skipped).
            let same =
                prev.len() == cpus.len() && prev.iter().zip(cpus).all(|(a, b)| a.cpu == b.cpu);
            if same && now_ns > t {
                let sample_ms = (now_ns - t) as f64 / 1e6;
                for (a, b) in prev.iter().zip(cpus) {
                    let steal_ms = b.steal.saturating_sub(a.steal) as f64 * self.ms_per_tick;
                    self.point_steal_ms += steal_ms;
                    self.point_longest_ms = self.point_longest_ms.max(steal_ms);
                    if !self.measuring {
                        continue;
                    }
                    let i = match self.window.iter().position(|w| w.cpu == b.cpu) {
                        Some(i) => i,
                        None => {
                            self.window.push(CpuTicks { cpu: b.cpu, ..CpuTicks::default() });
                            self.window.len() - 1
                        }
                    };
                    let w = &mut self.window[i];
                    w.busy += b.busy.saturating_sub(a.busy);
                    w.idle += b.idle.saturating_sub(a.idle);
                    w.steal += b.steal.saturating_sub(a.steal);
                    self.longest_ms = self.longest_ms.max(steal_ms);
                    if steal_ms >= BLOCK_MIN_MS && steal_ms >= BLOCK_MIN_SHARE * sample_ms {
                        self.blocks += 1;
                    }
                }
            }
        }
        self.last = Some((now_ns, cpus.to_vec()));
    }

    /// Whether the following samples count in the window (the run's measured part). Take a
    /// sample ([`Self::sample_now`]) right before, so none straddles the change.
    pub fn set_measuring(&mut self, on: bool) {
        self.measuring = on;
    }

    /// The steal since the last point: (all CPUs' total, the longest of one CPU in one
    /// sample), in ms; starts the next point.
    pub fn take_point(&mut self) -> (f64, f64) {
        let p = (self.point_steal_ms, self.point_longest_ms);
        self.point_steal_ms = 0.0;
        self.point_longest_ms = 0.0;
        p
    }

    /// The measured window, or None if no sample fell in it.
    pub fn summary(&self) -> Option<HostCpuSummary> {
        if self.window.is_empty() {
            return None;
        }
        let cpus = self
            .window
            .iter()
            .map(|w| {
                let total = (w.busy + w.idle + w.steal).max(1) as f64;
                CpuShare {
                    cpu: w.cpu,
                    busy_pct: 100.0 * w.busy as f64 / total,
                    steal_pct: 100.0 * w.steal as f64 / total,
                }
            })
            .collect();
        Some(HostCpuSummary { cpus, steal_blocks: self.blocks, longest_steal_ms: self.longest_ms })
    }
}

/// "cpu0 busy 81% steal 9%, cpu1 busy 83% steal 11%; 2 steal blocks, longest 100 ms"
pub fn line(s: &HostCpuSummary) -> String {
    let cpus: Vec<String> = s
        .cpus
        .iter()
        .map(|c| format!("cpu{} busy {:.0}% steal {:.0}%", c.cpu, c.busy_pct, c.steal_pct))
        .collect();
    format!(
        "{}; {} steal blocks (one CPU taken >= 80 ms of a ~100 ms sample), longest {:.0} ms",
        cpus.join(", "),
        s.steal_blocks,
        s.longest_steal_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 0 20 300 4 0 1 7 0 0\n\
                        cpu0 5 0 10 150 2 0 1 3 0 0\n\
                        cpu1 5 0 10 150 2 0 0 4 0 0\n\
                        intr 12345\n\
                        ctxt 99\n";

    fn ticks(cpu: usize, busy: u64, idle: u64, steal: u64) -> CpuTicks {
        CpuTicks { cpu, busy, idle, steal }
    }

    #[test]
    fn parses_the_cpu_lines_and_skips_the_total_and_others() {
        let v = parse_proc_stat(STAT);
        assert_eq!(v, vec![ticks(0, 16, 152, 3), ticks(1, 15, 152, 4)]);
        assert!(parse_proc_stat("cpu0 1 2 3\nbogus\n").is_empty(), "short lines are left out");
    }

    #[test]
    fn a_whole_sample_taken_is_a_block_and_spread_steal_is_not() {
        let mut h = HostCpu::new(100);
        h.set_measuring(true);
        let ms = 1_000_000;
        h.observe(0, &[ticks(0, 0, 0, 0), ticks(1, 0, 0, 0)]);
        // 100 ms: CPU 0 all stolen (10 ticks), CPU 1 one tick.
        h.observe(100 * ms, &[ticks(0, 0, 0, 10), ticks(1, 9, 0, 1)]);
        // 100 ms: 5 ticks each: spread, no block.
        h.observe(200 * ms, &[ticks(0, 5, 0, 15), ticks(1, 14, 0, 6)]);
        assert_eq!(h.take_point(), (10.0 * 10.0 + 10.0 + 50.0 + 50.0, 100.0));
        assert_eq!(h.take_point(), (0.0, 0.0), "a point starts afresh");
        let s = h.summary().expect("samples were measured");
        assert_eq!(s.steal_blocks, 1);
        assert_eq!(s.longest_steal_ms, 100.0);
        assert_eq!(s.cpus[0].steal_pct, 75.0);
        assert_eq!(s.cpus[0].busy_pct, 25.0);
        assert_eq!(s.cpus[1].steal_pct, 30.0);
    }

    #[test]
    fn a_late_sample_needs_half_of_its_length_stolen_to_be_a_block() {
        let mut h = HostCpu::new(100);
        h.set_measuring(true);
        let ms = 1_000_000;
        h.observe(0, &[ticks(0, 0, 0, 0)]);
        // 90 ms stolen of a 200 ms sample (the reporter was late): not a block.
        h.observe(200 * ms, &[ticks(0, 11, 0, 9)]);
        // 100 ms of 200 (the reporter waited on the stolen vCPU): a block.
        h.observe(400 * ms, &[ticks(0, 21, 0, 19)]);
        // 160 ms of 190: a block.
        h.observe(590 * ms, &[ticks(0, 24, 0, 35)]);
        let s = h.summary().unwrap();
        assert_eq!(s.steal_blocks, 2);
        assert_eq!(s.longest_steal_ms, 160.0);
    }

    #[test]
    fn only_measured_samples_count_in_the_window() {
        let mut h = HostCpu::new(100);
        let ms = 1_000_000;
        h.observe(0, &[ticks(0, 0, 0, 0)]);
        h.observe(100 * ms, &[ticks(0, 0, 0, 10)]); // warm-up: a block, not counted
        assert!(h.summary().is_none(), "nothing measured yet");
        h.set_measuring(true);
        h.observe(200 * ms, &[ticks(0, 10, 0, 10)]);
        h.set_measuring(false);
        h.observe(300 * ms, &[ticks(0, 10, 0, 20)]); // after: not counted
        let s = h.summary().unwrap();
        assert_eq!((s.steal_blocks, s.cpus[0].busy_pct, s.cpus[0].steal_pct), (0, 100.0, 0.0));
        assert_eq!(h.take_point().1, 100.0, "points see every sample");
    }

    #[test]
    fn a_read_of_other_cpus_is_not_compared_and_cpus_keep_their_numbers() {
        let mut h = HostCpu::new(100);
        h.set_measuring(true);
        h.observe(0, &[ticks(0, 0, 0, 0)]);
        h.observe(100_000_000, &[ticks(0, 0, 0, 10), ticks(1, 0, 0, 10)]);
        assert!(h.summary().is_none(), "another number of CPUs");
        // CPU 1 went offline and CPU 3 is there instead: the same length, other CPUs.
        h.observe(200_000_000, &[ticks(0, 0, 0, 20), ticks(3, 0, 0, 0)]);
        assert!(h.summary().is_none(), "other CPUs");
        h.observe(300_000_000, &[ticks(0, 5, 0, 25), ticks(3, 10, 0, 0)]);
        let s = h.summary().unwrap();
        assert_eq!(s.cpus.iter().map(|c| c.cpu).collect::<Vec<_>>(), vec![0, 3]);
        assert_eq!((s.cpus[0].steal_pct, s.cpus[1].busy_pct), (50.0, 100.0));
        let offline =
            parse_proc_stat("cpu  1 1 1 1 1 1 1 1\ncpu0 1 1 1 1 1 1 1 1\ncpu2 1 1 1 1 1 1 1 1\n");
        assert_eq!(offline.iter().map(|c| c.cpu).collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn poll_samples_at_most_every_100_ms() {
        let mut h = HostCpu::new(100);
        h.poll(1_000_000_000);
        assert_eq!(h.tried_ns, Some(1_000_000_000));
        let first = h.last.as_ref().map(|(t, _)| *t);
        h.poll(1_050_000_000);
        assert_eq!(h.tried_ns, Some(1_000_000_000), "not due yet");
        assert_eq!(h.last.as_ref().map(|(t, _)| *t), first);
        h.poll(1_100_000_000);
        assert_eq!(h.tried_ns, Some(1_100_000_000));
        if first.is_some() {
            assert_eq!(h.last.as_ref().map(|(t, _)| *t), Some(1_100_000_000));
        }
        h.sample_now(1_120_000_000);
        assert_eq!(h.tried_ns, Some(1_120_000_000), "a sample on demand, due or not");
    }
}
