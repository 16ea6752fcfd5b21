"""Summarises run.sh's traces: usage python3 summary.py DIR
Per round: ack p99, then per thread name the waits for a CPU over 1 ms after a wake-up
(count, total, max), uninterruptible sleeps over 5 ms, and block requests over 5 ms."""
import collections
import glob
import json
import re
import sys

d = sys.argv[1] if len(sys.argv) > 1 else "."
for path in sorted(glob.glob(d + "/trace-*.txt"), key=lambda p: int(re.search(r"(\d+)\.txt$", p).group(1))):
    n = re.search(r"(\d+)\.txt$", path).group(1)
    rep = json.load(open("%s/latency-%s.json" % (d, n)))
    a = rep["results"]["ack_latency"]
    runq = collections.defaultdict(list)
    dsleep = collections.defaultdict(list)
    bio = collections.defaultdict(list)
    for line in open(path):
        p = line.split()
        if not p:
            continue
        if p[0] == "RUNQ":
            runq[p[2]].append(int(p[4]))
        elif p[0] == "OFF" and p[4] == "2":
            dsleep[p[2]].append(int(p[5]))
        elif p[0] == "BIO":
            bio[p[3]].append(int(p[5]))
    print("round %s: ack p50 %.2f ms, p99 %.2f ms" % (n, a["p50_us"] / 1e3, a["p99_us"] / 1e3))
    for name, w in sorted(runq.items(), key=lambda x: -sum(x[1])):
        print("  waited for a CPU > 1 ms: %-16s %4d times, %6.0f ms in all, max %5.1f ms" % (name, len(w), sum(w) / 1e3, max(w) / 1e3))
    for name, w in sorted(dsleep.items()):
        print("  uninterruptible > 5 ms:  %-16s %4d times, max %5.1f ms" % (name, len(w), max(w) / 1e3))
    for kind, w in sorted(bio.items()):
        print("  block requests > 5 ms:   %-16s %4d, max %5.1f ms" % (kind, len(w), max(w) / 1e3))
