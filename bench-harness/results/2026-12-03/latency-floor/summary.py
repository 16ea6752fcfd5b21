"""Prints the table of measure.sh's results (run in this directory, or pass it)."""
import glob
import json
import os
import sys

d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def load(name):
    with open(os.path.join(d, name)) as f:
        return json.load(f)


def bench(name):
    """ack p50/p99 and publish-delay p99 (ms) from a ringmq-bench JSON report."""
    r = load(name)
    run = r["runs"][0] if "runs" in r else r
    lat = run["latency"] if "latency" in run else run
    return lat


rounds = sorted({f.split("-")[-1][:-5] for f in glob.glob(os.path.join(d, "echo-poll*.json"))}, key=int)
print("| round | halt poll | CPU 1 lost to the host (3 s) | echo p50 / p99 ms | echo send delay p99 ms | latency 130k: ack p50 / p99 ms | latency 10k: ack p50 / p99 ms |")
print("|---|---|---|---|---|---|---|")
for r in rounds:
    for poll in ("0", "200000"):
        tag = f"poll{poll}-{r}"
        s = load(f"stalls-cpu1-{tag}.json")
        e = load(f"echo-{tag}.json")
        cells = []
        for rate in ("130000", "10000"):
            txt = open(os.path.join(d, f"latency-{rate}-{tag}.txt")).read().split("\n")
            get = lambda key: next(float(l.split()[-1]) for l in txt if l.strip().startswith(key))
            cells.append(f"{get('ack p50 us') / 1000:.2f} / {get('ack p99 us') / 1000:.1f}")
        print(f"| {r} | {'off' if poll == '0' else '200 us'} | {s['lost_ms']} ms, {s['over_2ms']} gaps > 2 ms | "
              f"{e['p50_us'] / 1000:.2f} / {e['p99_us'] / 1000:.1f} | {e['send_delay_p99_us'] / 1000:.1f} | {cells[0]} | {cells[1]} |")
