#!/bin/sh
# run-all's two rows that missed 0.70 in one round (batched with 64 KiB batches, sync-flush),
# ROUNDS more times each, as run-all runs them (--compare-raw: library, then raw, one broker).
# usage (repository root): BIN=dir DATA=dir [OUT=dir] [ROUNDS=3] sh rerun.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?}; DATA=${DATA:?}; OUT=${OUT:-$HERE}; ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for wl in "batched 64k --set batch_max_bytes=65536" "sync-flush 1m"; do
    set -- $wl; name=$1; tag=$2; shift 2
    rm -rf "$DATA"/*; fstrim "$DATA" 2>/dev/null || true; sync; sleep 3
    "$BIN/ringmq-bench" run bench-harness/workloads/$name.toml --spawn-broker --data-dir "$DATA" \
      --broker-cpus 0 --cpus 1 --quiet --compare-raw "$@" --out "$OUT/$name-$tag-$r.json" \
      > "$OUT/$name-$tag-$r.txt" 2>&1 || true
    python3 -c "import json;d=json.load(open('$OUT/$name-$tag-$r.json'));m={x['metric']:x for x in d['ratios']}['produce MB/s'];print('$name $tag round $r: library %.0f raw %.0f ratio %.2f'%(m['library'],m['raw'],m['library_over_raw']))"
  done
done
