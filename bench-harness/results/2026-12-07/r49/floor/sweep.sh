#!/bin/sh
# The latency workload at lower rates (rounds interleaved), each with
# ../stall-trace/sampler.py recording per-CPU busy and steal time.
# usage (repository root): BIN=dir DATA=dir [OUT=dir] [ROUNDS=3] [RATES="10000 20000 65000"] sh sweep.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?}; DATA=${DATA:?}; OUT=${OUT:-$HERE}; ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for rate in ${RATES:-10000 20000 65000}; do
    rm -rf "$DATA"/*; sync; sleep 3
    python3 "$HERE/../stall-trace/sampler.py" > "$OUT/stat-$rate-$r.txt" &
    SP=$!
    "$BIN/ringmq-bench" run bench-harness/workloads/latency.toml --spawn-broker --data-dir "$DATA" \
      --broker-cpus 0 --cpus 1 --quiet --set target_rate=$rate --out "$OUT/latency-$rate-$r.json" \
      > "$OUT/latency-$rate-$r.txt" 2>&1 || true
    kill $SP; wait $SP 2>/dev/null || true
  done
done
