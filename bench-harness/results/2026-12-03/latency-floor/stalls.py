"""How long this machine takes a running CPU away: a busy loop pinned to one CPU reads the
clock and records every gap over 0.2 ms between two reads (nothing else should run there).
usage: python3 stalls.py CPU SECONDS -> one JSON line"""
import json
import os
import sys
import time

cpu, secs = int(sys.argv[1]), float(sys.argv[2])
os.sched_setaffinity(0, {cpu})
end = time.perf_counter_ns() + int(secs * 1e9)
last = time.perf_counter_ns()
gaps = []
while True:
    now = time.perf_counter_ns()
    if now - last > 200_000:
        gaps.append(now - last)
    last = now
    if now > end:
        break
gaps.sort()
print(json.dumps({
    "cpu": cpu, "seconds": secs, "gaps_over_0_2ms": len(gaps),
    "over_1ms": sum(g > 1e6 for g in gaps), "over_2ms": sum(g > 2e6 for g in gaps),
    "max_ms": round(gaps[-1] / 1e6, 2) if gaps else 0,
    "lost_ms": round(sum(gaps) / 1e6, 1),
}))
