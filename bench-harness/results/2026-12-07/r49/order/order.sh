#!/bin/sh
# batched with 64 KiB batches, library and raw each against its own fresh broker (not
# --compare-raw, whose raw half always runs second), the order alternating by round: does the
# second half of a --compare-raw pair run on a faster disk?
# usage (repository root): BIN=dir DATA=dir [OUT=dir] [ROUNDS=4] sh order.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?}; DATA=${DATA:?}; OUT=${OUT:-$HERE}; ROUNDS=${ROUNDS:-4}
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="library raw"; else order="raw library"; fi
  for c in $order; do
    rm -rf "$DATA"/*; fstrim "$DATA" 2>/dev/null || true; sync; sleep 3
    "$BIN/ringmq-bench" run bench-harness/workloads/batched.toml --spawn-broker --data-dir "$DATA" \
      --broker-cpus 0 --cpus 1 --quiet --set batch_max_bytes=65536 --set client=$c \
      --out "$OUT/batched-64k-$c-$r.json" > "$OUT/batched-64k-$c-$r.txt" 2>&1 || true
    python3 -c "import json;r=json.load(open('$OUT/batched-64k-$c-$r.json'))['results'];print('round $r $c %.0f MB/s'%(r['produce_bytes_per_s']/1e6))"
  done
done
