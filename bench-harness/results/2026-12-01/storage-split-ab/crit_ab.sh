#!/bin/bash
# Criterion A/B of the storage benches: before = main before the commit_log split, after = merged.
# $1 before binary, $2 after binary, $3 results dir. Interleaved, 2 runs each, in one session.
set -u
before=$1; after=$2; out=$3; mkdir -p $out
cd /work/main   # criterion writes under ./target/criterion
quiet() { i=0; while pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; do i=$((i+1)); [ $i -gt 900 ] && break; sleep 1; done; }
for rep in 1 2 3; do
  for side in before after; do
    bin=$before; [ $side = after ] && bin=$after
    quiet
    $bin --bench --noplot --save-baseline $side-$rep > $out/$side-$rep.txt 2>&1
  done
done
# One JSON per run: every benchmark's median time (ns) and throughput unit, from criterion's estimates.
python3 - $out <<'PY'
import json, os, sys, glob
out = sys.argv[1]
res = {}
for est in glob.glob('/work/main/target/criterion/*/*/*/estimates.json'):
    parts = est.split('/')
    group, bench, baseline = parts[-4], parts[-3], parts[-2]
    if not (baseline.startswith('before-') or baseline.startswith('after-')):
        continue
    med = json.load(open(est))['median']['point_estimate']
    res.setdefault(f'{group}/{bench}', {})[baseline] = med
json.dump(res, open(os.path.join(out, 'medians-ns.json'), 'w'), indent=1, sort_keys=True)
for k, v in sorted(res.items()):
    b = sorted(x for n, x in v.items() if n.startswith('before'))
    a = sorted(x for n, x in v.items() if n.startswith('after'))
    if a and b:
        mb, ma = b[len(b)//2], a[len(a)//2]
        print(f'{k:40s} before {b} after {a} after/before(time) {ma/mb:.3f}')
PY
