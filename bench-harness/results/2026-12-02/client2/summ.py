"""Medians of the small-messages before/after/owned runs in this directory (and backlog-drain
runs if present): python3 summ.py > summary.txt"""
import json, glob, statistics, os
d = os.path.dirname(os.path.abspath(__file__))
m = statistics.median
def fmt(xs, f='%.2f'):
    return ', '.join(f % x for x in xs)
for w in ['small', 'drain']:
    for v in ['before', 'after', 'owned']:
        files = sorted(glob.glob(f'{d}/{w}-{v}-*.json'))
        if not files:
            continue
        lib, raw, rat = [], [], []
        for f in files:
            j = json.load(open(f))
            L, R = j['library']['results'], j['raw']['results']
            if w == 'small':
                lib.append(L['produce_msgs_per_s'] / 1e6); raw.append(R['produce_msgs_per_s'] / 1e6)
            else:
                lib.append(L['backlog']['drain_bytes_per_s'] / 1e6); raw.append(R['backlog']['drain_bytes_per_s'] / 1e6)
            rat.append(lib[-1] / raw[-1])
        unit = 'M msg/s' if w == 'small' else 'MB/s'
        print(f"{w:6s} {v:7s} n={len(files)} library {unit} {m(lib):.2f} ({fmt(lib)}) raw {m(raw):.2f} ({fmt(raw)}) library/raw {m(rat):.2f} ({fmt(rat)})")
# Per-round pairs (the same round's runs, minutes apart).
def rate(f, side, w):
    r = json.load(open(f))[side]['results']
    return r['produce_msgs_per_s'] if w == 'small' else r['backlog']['drain_bytes_per_s']
for i in range(1, 100):
    b = f'{d}/small-before-{i}.json'
    if not os.path.exists(b):
        break
    a, o = f'{d}/small-after-{i}.json', f'{d}/small-owned-{i}.json'
    print(f"round {i} library msg/s: after/before {rate(a, 'library', 'small') / rate(b, 'library', 'small'):.2f}"
          f" owned/before {rate(o, 'library', 'small') / rate(b, 'library', 'small'):.2f}")
for i in range(1, 100):
    b = f'{d}/drain-before-{i}.json'
    if not os.path.exists(b):
        break
    a = f'{d}/drain-after-{i}.json'
    print(f"drain round {i} after/before: library {rate(a, 'library', 'drain') / rate(b, 'library', 'drain'):.2f}"
          f" raw {rate(a, 'raw', 'drain') / rate(b, 'raw', 'drain'):.2f}")
