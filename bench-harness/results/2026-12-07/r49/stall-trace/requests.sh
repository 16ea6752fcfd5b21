#!/bin/sh
# Requests and wake-ups by thread during one `latency` run per rate (requests.bt).
# usage (repository root): BIN=dir DATA=dir [OUT=dir] sh requests.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?}; DATA=${DATA:?}; OUT=${OUT:-$HERE/requests}
mkdir -p "$OUT"
for rate in 10000 30000 130000; do
  rm -rf "$DATA"/*; sync; sleep 2
  bpftrace "$HERE/requests.bt" > "$OUT/requests-$rate.txt" 2>/dev/null &
  BT=$!
  sleep 3
  "$BIN/ringmq-bench" run bench-harness/workloads/latency.toml --spawn-broker --data-dir "$DATA" \
    --broker-cpus 0 --cpus 1 --quiet --set target_rate=$rate --out "$OUT/latency-$rate.json" > /dev/null 2>&1 || true
  kill -INT $BT; wait $BT 2>/dev/null || true
done
