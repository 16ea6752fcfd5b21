#!/bin/sh
# The latency workload with linger_ms 0 (as shipped) and 1, at several rates, rounds
# interleaved (the linger order alternates by round), each run with
# ../stall-trace/sampler.py recording per-CPU busy and steal time.
# usage (repository root): BIN=dir DATA=dir [OUT=dir] [ROUNDS=3] [RATES="130000 30000 10000"] sh ab.sh
# Summary: python3 bench-harness/results/2026-12-07/r49/floor/summary.py OUT
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?}; DATA=${DATA:?}; OUT=${OUT:-$HERE}; ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="0 1"; else order="1 0"; fi
  for rate in ${RATES:-130000 30000 10000}; do
    for l in $order; do
      rm -rf "$DATA"/*; sync; sleep 3
      python3 "$HERE/../stall-trace/sampler.py" > "$OUT/stat-$rate-linger$l-$r.txt" &
      SP=$!
      "$BIN/ringmq-bench" run bench-harness/workloads/latency.toml --spawn-broker --data-dir "$DATA" \
        --broker-cpus 0 --cpus 1 --quiet --set target_rate=$rate --set linger_ms=$l \
        --out "$OUT/latency-$rate-linger$l-$r.json" > "$OUT/latency-$rate-linger$l-$r.txt" 2>&1 || true
      kill $SP; wait $SP 2>/dev/null || true
    done
  done
done
