"""Every 100 ms: per-CPU jiffies (user, system, idle, iowait, steal) from /proc/stat and
the block devices' in-flight counts from /sys/block/*/inflight. The first line gives the
offset between CLOCK_REALTIME and CLOCK_MONOTONIC (bpftrace's nsecs) in ns."""
import sys
import time

devs = sys.argv[1:] or ["vda", "loop0"]
out = sys.stdout
out.write("OFFSET %d\n" % (time.time_ns() - time.monotonic_ns()))
while True:
    t = time.monotonic_ns()
    cpus = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                p = line.split()
                # user nice system idle iowait irq softirq steal
                cpus.append("%s:%s,%s,%s,%s,%s" % (p[0], p[1], p[3], p[4], p[5], p[8]))
    inflight = []
    for d in devs:
        try:
            with open("/sys/block/%s/inflight" % d) as f:
                r, w = f.read().split()
            inflight.append("%s:%s,%s" % (d, r, w))
        except OSError:
            pass
    out.write("S %d %s %s\n" % (t, " ".join(cpus), " ".join(inflight)))
    out.flush()
    time.sleep(0.1)
