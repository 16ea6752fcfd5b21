#!/bin/sh
# Requests and wake-ups by thread during one `latency` run per rate (requests.bt).
# usage (repository root): BIN=dir DATA=dir [OUT=dir] [RATES="10000 30000 130000"] [SET=...] [TAG=] sh requests.sh
# (round 49 also ran RATES=130000 SET="--set linger_ms=1" TAG=-linger1)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?}; DATA=${DATA:?}; OUT=${OUT:-$HERE/requests}
mkdir -p "$OUT"
for rate in ${RATES:-10000 30000 130000}; do
  rm -rf "$DATA"/*; sync; sleep 2
  bpftrace "$HERE/requests.bt" > "$OUT/requests-$rate${TAG:-}.txt" 2>/dev/null &
  BT=$!
  sleep 3
  "$BIN/ringmq-bench" run bench-harness/workloads/latency.toml --spawn-broker --data-dir "$DATA" \
    --broker-cpus 0 --cpus 1 --quiet --set target_rate=$rate ${SET:-} --out "$OUT/latency-$rate${TAG:-}.json" > /dev/null 2>&1 || true
  kill -INT $BT; wait $BT 2>/dev/null || true
done
