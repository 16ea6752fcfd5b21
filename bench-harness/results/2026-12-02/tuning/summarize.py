#!/usr/bin/env python3
"""Medians of the tuning sweep (sweep.sh) as Markdown tables, one per knob and workload.

    python3 summarize.py RUNS_DIR > RUNS_DIR/summary.md

Reads RUNS_DIR/runs.tsv (one line per run: round, knob, value label, workload, load average)
and each run's JSON report. For every (knob, workload) the first value listed in sweep.sh is
the baseline; "vs base" is the median over rounds of value / baseline within the same round
(both ran minutes apart), which is steadier on this shared machine than the raw medians.
A run whose counts failed (sends timed out: the machine stalled) is left out of the medians and
ratios and listed under its table.
"""
import csv
import json
import statistics
import sys
from collections import OrderedDict
from pathlib import Path


def ms(us):
    return us / 1000.0


def metrics(report):
    r = report["results"]
    m = {
        "mbps": r["produce_bytes_per_s"] / 1e6,
        "msgs": r["produce_msgs_per_s"],
        "ack_p50": ms(r["ack_latency"]["p50_us"]),
        "ack_p99": ms(r["ack_latency"]["p99_us"]),
        "e2e_p99": ms(r["e2e_latency"]["p99_us"]) if r["e2e_latency"]["count"] else None,
        "ok": bool(r["counts_ok"]),
        "failed": r["failed"] + r.get("flush_timeouts", 0),
    }
    b = r.get("backlog")
    if b:
        m["build_mbps"] = b["build_bytes_per_s"] / 1e6
        m["drain_mbps"] = b["drain_bytes_per_s"] / 1e6
    return m


def good(m):
    return m is not None and m["ok"] and not m["failed"]


def main_metric(workload):
    """The number each workload is about, and whether higher is better."""
    if workload == "backlog-drain":
        return "drain_mbps", True
    if workload == "latency20k":
        return "ack_p99", False
    return "mbps", True


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def main():
    d = Path(sys.argv[1])
    rows = list(csv.DictReader(open(d / "runs.tsv"), delimiter="\t"))
    groups = OrderedDict()  # (knob, workload) -> OrderedDict(label -> {round: (metrics, row)})
    revisions = set()
    binaries = set()
    for row in rows:
        key = (row["knob"], row["workload"])
        per_label = groups.setdefault(key, OrderedDict()).setdefault(row["label"], {})
        if row["exit"] == "skipped":
            continue
        revisions.add(row["revision"])
        f = d / row["file"]
        try:
            rep = json.load(open(f))
        except (OSError, ValueError):
            per_label[row["round"]] = (None, row)
            continue
        binaries.add(rep["git_revision"][:7])
        per_label[row["round"]] = (metrics(rep), row)

    print(f"Script at: {', '.join(sorted(revisions))}; broker binaries (ready line): "
          f"{', '.join(sorted(binaries))}. Runs: {len(rows)}. "
          "Medians over rounds; min-max in brackets; 'vs base' = median of same-round ratios "
          "to the first value (for latency20k the ratio of ack p99, lower is better).\n")
    for (knob, wl), labels in groups.items():
        key, _ = main_metric(wl)
        base_label = next(iter(labels))
        base = {rnd: m for rnd, (m, _) in labels[base_label].items() if good(m)}
        excluded = []
        ratio_lines = []
        print(f"### {knob} — {wl}\n")
        if wl == "backlog-drain":
            head = "| value | runs ok | drain MB/s | vs base | build MB/s | load1 |"
        elif wl == "latency20k":
            head = ("| value | runs ok | msg/s | ack p50 ms | ack p99 ms | vs base | e2e p99 ms "
                    "| load1 |")
        else:
            head = ("| value | runs ok | MB/s | vs base | msg/s | ack p50 ms | ack p99 ms "
                    "| load1 |")
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for label, per_round in labels.items():
            ms_ = [m for m, _ in per_round.values() if good(m)]
            loads = [float(r["load1"]) for m, r in per_round.values() if good(m)]
            for m, r in per_round.values():
                if not good(m):
                    why = "no report" if m is None else (
                        f"{m['failed']:,} sends failed, {fmt(m.get('drain_mbps', m['mbps']))} MB/s")
                    excluded.append(f"round {r['round']} {label} ({r['start_utc']}, load "
                                    f"{r['load1']}): {why}")
            if not ms_:
                print(f"| {label} | 0 | (no report) |")
                continue
            ratios = [m[key] / base[rnd][key] for rnd, (m, _) in per_round.items()
                      if good(m) and rnd in base and base[rnd][key]]
            ratio = fmt(med(ratios), 2) if label != base_label else "1.00"
            vals = [m[key] for m in ms_]
            main = f"{fmt(med(vals), 1 if key != 'mbps' and key != 'drain_mbps' else 0)} " \
                   f"({fmt(min(vals), 1 if 'p99' in key else 0)}-{fmt(max(vals), 1 if 'p99' in key else 0)})"
            load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
            n = f"{len(ms_)}/{len(per_round)}"
            if wl == "backlog-drain":
                print(f"| {label} | {n} | {main} | {ratio} | "
                      f"{fmt(med([m['build_mbps'] for m in ms_]))} | {load} |")
            elif wl == "latency20k":
                print(f"| {label} | {n} | {fmt(med([m['msgs'] for m in ms_]))} | "
                      f"{fmt(med([m['ack_p50'] for m in ms_]), 2)} | {main} | {ratio} | "
                      f"{fmt(med([m['e2e_p99'] for m in ms_]), 1)} | {load} |")
            else:
                print(f"| {label} | {n} | {main} | {ratio} | "
                      f"{fmt(med([m['msgs'] for m in ms_]))} | "
                      f"{fmt(med([m['ack_p50'] for m in ms_]), 1)} | "
                      f"{fmt(med([m['ack_p99'] for m in ms_]), 1)} | {load} |")
            if label != base_label:
                per = [f"{m[key] / base[rnd][key]:.2f}" if good(m) and rnd in base else "-"
                       for rnd, (m, _) in sorted(per_round.items(), key=lambda x: int(x[0]))]
                ratio_lines.append(f"- {label} / {base_label} per round: {' '.join(per)}")
        print()
        for line in ratio_lines:
            print(line)
        for e in excluded:
            print(f"- left out: {e}")
        print()


if __name__ == "__main__":
    main()
