#!/usr/bin/env python3
"""Round 37 (round 36's script): medians of the group reports in a directory (python3 summarize.py DIR)."""
import glob, json, os, statistics, sys
from collections import defaultdict

d = sys.argv[1]
rows = defaultdict(lambda: defaultdict(list))
pauses = defaultdict(list)
for f in sorted(glob.glob(os.path.join(d, "*.json"))):
    arm = os.path.basename(f).rsplit("-r", 1)[0]
    r = json.load(open(f))
    for t in r["throughput"]:
        rows[arm][t["members"]].append(t["messages_per_s"])
    pauses[arm].append(r["rebalance"]["pause_ms_median"])
for arm in sorted(rows):
    for m in sorted(rows[arm]):
        v = rows[arm][m]
        print(f"{arm}\tmembers={m}\tmsg/s " + " / ".join(f"{x:,.0f}" for x in v)
              + f"\tmedian {statistics.median(v):,.0f}")
    print(f"{arm}\trebalance pause medians (ms) {pauses[arm]}")
