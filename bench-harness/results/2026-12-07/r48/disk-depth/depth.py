#!/usr/bin/env python3
"""Round 48: the loop device's reads during a drain, from dstat.sh's samples (<label>.stats).
/proc/diskstats fields after the name: reads, merged, sectors, ms reading, writes, merged,
sectors, ms writing, in flight, ms busy, weighted ms. Only the intervals where reads grew and
writes did not (the drain proper)."""
import sys
for path in sys.argv[1:]:
    rows = []
    for line in open(path):
        f = line.split()
        i = f.index('loop0')
        rows.append((float(f[0]), [int(x) for x in f[i + 1:i + 12]]))
    iv = [(a, b) for a, b in zip(rows, rows[1:]) if b[1][0] > a[1][0] and b[1][4] == a[1][4]]
    dt = sum(b[0] - a[0] for a, b in iv)
    d = [sum(b[1][k] - a[1][k] for a, b in iv) for k in range(11)]
    print("%s drain secs %.1f MB/s %.0f req KiB %.0f ms/read %.2f depth %.2f busy %.2f" % (
        path, dt, d[2] * 512 / dt / 1e6, d[2] * 512 / d[0] / 1024, d[3] / d[0],
        d[3] / 1000 / dt, d[9] / 1000 / dt))
