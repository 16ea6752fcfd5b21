#!/usr/bin/env python3
"""Round 47: each phase's device reads from drain-depth.sh's samples.
python3 depth.py stats-<k>.txt ... (marks-<k>.txt beside each). /proc/diskstats fields after
the name: reads, merged, sectors, ms reading, writes, merged, sectors, ms writing, in flight,
ms busy, weighted ms. For fio's phases: first and last sample inside the marks, and
("busy" rows) only the samples where its reads grew, leaving out fio's start and end. For the drain:
the samples inside its marks where the reads grew and the writes did not (the drain proper)."""
import sys, collections

def load(path):
    rows = collections.defaultdict(list)
    for line in open(path):
        f = line.split()
        if len(f) < 16:
            continue
        t, dev = float(f[0]), f[3]
        v = [int(x) for x in f[4:15]]
        rows[dev].append((t, v))
    return rows

def phase(samples, t0, t1, drain, active=False):
    s = [x for x in samples if t0 <= x[0] <= t1]
    if drain:
        # keep intervals where reads grew and writes did not
        iv = [(a, b) for a, b in zip(s, s[1:]) if b[1][0] > a[1][0] and b[1][4] == a[1][4]]
    else:
        iv = [(s[0], s[-1])] if len(s) > 1 else []
        if active:
            iv = [(a, b) for a, b in zip(s, s[1:]) if b[1][0] > a[1][0]]
    dt = sum(b[0] - a[0] for a, b in iv)
    d = [sum(b[1][i] - a[1][i] for a, b in iv) for i in range(11)]
    if dt <= 0 or d[0] == 0:
        return None
    return dict(secs=dt, mbps=d[2] * 512 / dt / 1e6, req_kib=d[2] * 512 / d[0] / 1024,
                ms_per_read=d[3] / d[0], depth=d[3] / 1000 / dt, merged=d[1])

for path in sys.argv[1:]:
    marks = {}
    for line in open(path.replace("stats-", "marks-")):
        t, name, edge = line.split()
        marks.setdefault(name, {})[edge] = float(t)
    rows = load(path)
    for name, m in marks.items():
        for dev, samples in sorted(rows.items()):
            for act in ([False, True] if name != "drain" else [False]):
                p = phase(samples, m["start"], m["end"], name == "drain", act)
                if p:
                    label = name + (" busy" if act else "")
                    print(f"{path} {label:17} {dev:6} {p['secs']:5.2f} s {p['mbps']:6.0f} MB/s "
                          f"req {p['req_kib']:6.0f} KiB read {p['ms_per_read']:6.2f} ms "
                          f"depth {p['depth']:5.1f} merged {p['merged']}")
