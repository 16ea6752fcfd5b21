"""Do the stalled seconds of `latency` runs coincide with the host taking a vCPU away?
For every run with a sampler file (stat-*.txt beside latency-*.json, as run.sh, floor.sh,
sweep.sh and ../linger/ab.sh write them): the 100 ms samples in which a CPU's steal was at
least 80 ms ("steal blocks"), and each measured second whose ack p99 exceeded 20 ms, marked
with whether a steal block ended in it or in the 0.3 s before it.
usage: python3 steal.py DIR..."""
import glob
import json
import os
import sys

HZ = 100  # jiffies per second (USER_HZ)


def samples(path):
    lines = open(path).read().split("\n")
    off = int(lines[0].split()[1])
    rows = []
    for line in lines[1:]:
        p = line.split()
        if len(p) < 3 or p[0] != "S":
            continue
        c = {}
        for x in p[2:]:
            k, v = x.split(":")
            if k.startswith("cpu"):
                c[k] = list(map(int, v.split(",")))
        rows.append(((int(p[1]) + off) / 1e6, c))  # unix ms
    return rows


total = {"runs": 0, "stalled": 0, "with_block": 0, "blocks": 0, "blocks_in_quiet": 0}
for d in sys.argv[1:]:
    for rep in sorted(glob.glob(os.path.join(d, "latency-*.json"))):
        stat = rep.replace("latency-", "stat-").replace(".json", ".txt")
        if not os.path.exists(stat):
            continue
        r = json.load(open(rep))
        rows = samples(stat)
        start = r["started_unix_ms"]
        blocks = []  # (end time relative to start in s, cpu, steal ms)
        for (t0, a), (t1, b) in zip(rows, rows[1:]):
            for cpu in a:
                st = (b[cpu][4] - a[cpu][4]) * 1000 / HZ
                if st >= 80:
                    blocks.append(((t1 - start) / 1000, cpu, st))
        total["runs"] += 1
        run_blocks = [x for x in blocks if 0 < x[0] < r["series"][-1]["t_s"]]
        total["blocks"] += len(run_blocks)
        stalled = []
        prev = 0.0
        for s in r["series"]:
            hit = [x for x in run_blocks if prev - 0.3 <= x[0] <= s["t_s"]]
            if s["measuring"] and s["ack_p99_us"] > 20000:
                total["stalled"] += 1
                total["with_block"] += bool(hit)
                stalled.append("t=%.0f s %.0f ms%s" % (s["t_s"], s["ack_p99_us"] / 1e3,
                                                       " [steal block %s]" % ", ".join("%s %.0f ms" % (c, m) for _, c, m in hit) if hit else " [none]"))
            prev = s["t_s"]
        print("%s: ack p99 %.1f ms; steal blocks during the run: %d (%s); stalled seconds: %s"
              % (os.path.relpath(rep), r["results"]["ack_latency"]["p99_us"] / 1e3, len(run_blocks),
                 ", ".join("%.1f s %s" % (t, c) for t, c, _ in run_blocks) or "-", "; ".join(stalled) or "-"))
print("runs %(runs)d, measured seconds with ack p99 > 20 ms: %(stalled)d, of them with a steal block in or just before: %(with_block)d; steal blocks in all: %(blocks)d" % total)
