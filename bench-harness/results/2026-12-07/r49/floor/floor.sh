#!/bin/sh
# The latency workload against this machine's own floor, interleaved (round 49):
#   stalls.py    CPU time the host takes from a lone busy loop on CPU 1 (3 s);
#   echo_floor   a bare TCP request/reply, CPU 1 -> CPU 0, at the latency workload's request
#                rate and size at 130k msg/s (10,500/s of 12,800 B) and at 30k msg/s (2,400/s);
#   latency      ringmq-bench at 130k and 30k msg/s, with ../stall-trace/sampler.py recording
#                each CPU's busy and steal time every 100 ms.
# usage (repository root): BIN=dir DATA=dir [OUT=dir] [ROUNDS=3] sh floor.sh
# BIN holds ringmq, ringmq-bench and examples/echo_floor.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?}; DATA=${DATA:?}; OUT=${OUT:-$HERE}; ROUNDS=${ROUNDS:-3}
STALLS=bench-harness/results/2026-12-03/latency-floor/stalls.py
SAMPLER=$HERE/../stall-trace/sampler.py
mkdir -p "$OUT"
{
  echo "kernel $(uname -r)"
  echo "cpuidle driver $(cat /sys/devices/system/cpu/cpuidle/current_driver), governor $(cat /sys/devices/system/cpu/cpuidle/current_governor 2>/dev/null || echo -)"
  echo "cmdline $(cat /proc/cmdline | cut -c1-200)"
} > "$OUT/machine.txt"
for r in $(seq 1 "$ROUNDS"); do
  python3 $STALLS 1 3 > "$OUT/stalls-cpu1-$r.json"
  "$BIN/examples/echo_floor" 10500 12800 8 0 1 > "$OUT/echo-10500-$r.json"
  "$BIN/examples/echo_floor" 2400 12800 8 0 1 > "$OUT/echo-2400-$r.json"
  for rate in 130000 30000; do
    rm -rf "$DATA"/*; sync; sleep 3
    python3 "$SAMPLER" > "$OUT/stat-$rate-$r.txt" &
    SP=$!
    "$BIN/ringmq-bench" run bench-harness/workloads/latency.toml --spawn-broker --data-dir "$DATA" \
      --broker-cpus 0 --cpus 1 --quiet --set target_rate=$rate --out "$OUT/latency-$rate-$r.json" \
      > "$OUT/latency-$rate-$r.txt" 2>&1 || true
    kill $SP; wait $SP 2>/dev/null || true
  done
  echo "round $r done"
done
