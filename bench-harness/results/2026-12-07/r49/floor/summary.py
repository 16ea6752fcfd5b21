"""Summarises floor.sh and sweep.sh files: usage python3 summary.py DIR
Per round: the busy loop's lost time, the bare echo at the workload's request rate (130k and
30k msg/s), then per rate ringmq's ack p50/p99, the worst second's publish delay p99 and each
CPU's busy (user+system) and steal share over seconds 4-10 of the run."""
import glob
import json
import re
import statistics
import sys

d = sys.argv[1] if len(sys.argv) > 1 else "."


def cpu_use(path):
    rows = []
    for line in open(path):
        p = line.split()
        if p[0] != "S":
            continue
        c = {}
        for x in p[2:]:
            k, v = x.split(":")
            if k.startswith("cpu"):
                c[k] = list(map(int, v.split(",")))
        rows.append((int(p[1]), c))
    # seconds 4 to 10 after the sampler started: inside the measured 10 s of the run (the
    # broker starts within a second, then 2 s of warm-up)
    t0 = rows[0][0]
    window = [x for x in rows if 4e9 <= x[0] - t0 <= 10e9]
    a, b = window[0], window[-1]
    out = {}
    for cpu in ("cpu0", "cpu1"):
        dlt = [y - x for x, y in zip(a[1][cpu], b[1][cpu])]
        tot = sum(dlt)
        # user nice system idle iowait steal
        out[cpu] = (100.0 * (dlt[0] + dlt[1]) / tot, 100.0 * dlt[4] / tot)
    return out


rounds = sorted({int(re.search(r"-(\d+)\.json$", p).group(1)) for p in glob.glob(d + "/stalls-cpu1-*.json")})
for r in rounds:
    st = json.load(open("%s/stalls-cpu1-%d.json" % (d, r)))
    e1 = json.load(open("%s/echo-10500-%d.json" % (d, r)))
    e2 = json.load(open("%s/echo-2400-%d.json" % (d, r)))
    print("round %d: busy loop on CPU 1 lost %.1f ms of 3 s; echo p50/p99 at 10,500/s %.2f/%.2f ms, at 2,400/s %.2f/%.2f ms"
          % (r, st["lost_ms"], e1["p50_us"] / 1e3, e1["p99_us"] / 1e3, e2["p50_us"] / 1e3, e2["p99_us"] / 1e3))

def tag_key(t):
    rate, _, rest = t.partition("-")
    return (-int(rate), rest)


# runs are latency-<rate>[-<arm>]-<round>.json
tags = sorted({re.search(r"latency-(.+)-\d+\.json$", p).group(1) for p in glob.glob(d + "/latency-*-*.json")}, key=tag_key)
print()
print("| msg/s, arm | ack p50 ms | ack p99 ms (each run) | worst second's publish delay p99 ms | CPU 0 busy / steal % | CPU 1 busy / steal % |")
print("|---|---|---|---|---|---|")
for tag in tags:
    p50, p99, pub, c0, c1 = [], [], [], [], []
    runs = [f for f in glob.glob("%s/latency-%s-*.json" % (d, tag)) if re.fullmatch(r".*/latency-%s-\d+\.json" % re.escape(tag), f)]
    for f in sorted(runs):
        lat = json.load(open(f))
        a = lat["results"]["ack_latency"]
        p50.append(a["p50_us"] / 1e3)
        p99.append(a["p99_us"] / 1e3)
        pub.append(max(s["publish_delay_p99_us"] for s in lat["series"] if s["measuring"]) / 1e3)
        cu = cpu_use(f.replace("/latency-", "/stat-").replace(".json", ".txt"))
        c0.append(cu["cpu0"])
        c1.append(cu["cpu1"])
    print("| %s | %.2f | %s | %s | %s | %s |" % (
        tag, statistics.median(p50), ", ".join("%.2f" % x for x in p99), ", ".join("%.1f" % x for x in pub),
        ", ".join("%.0f / %.0f" % x for x in c0), ", ".join("%.0f / %.0f" % x for x in c1)))
