#!/bin/sh
# One backlog-drain --compare-raw against a broker started here, then the broker's prefetch
# counters (ringmq_prefetch_*_total, summed over both drains: library, then raw). Broker on
# CPU 0 with the workload's [storage] settings (broker.toml), load generator on CPU 1.
#   BIN=/tmp/ab/pf4 OUT=dir/d972513-1mib EXTRA="--set fetch_max_bytes=1048576" sh run.sh
# BIN: ringmq and ringmq-bench; EXTRA: more ringmq-bench flags; OUT: report prefix. Run from
# the repository root. (These runs used copies of this script and broker.toml in /tmp/mdrain.)
set -u
rm -rf /work/mdrain-data; mkdir -p /work/mdrain-data
taskset -c 0 "$BIN/ringmq" broker --config "$(dirname "$0")/broker.toml" --data-dir /work/mdrain-data \
  --port 0 --ready-file "$OUT.ready" --metrics-listen 127.0.0.1:9187 > "$OUT-broker.log" 2>&1 &
bp=$!
for i in $(seq 100); do [ -s "$OUT.ready" ] && break; sleep 0.1; done
port=$(grep -o '[0-9]*' "$OUT.ready" | head -1)
"$BIN/ringmq-bench" run bench-harness/workloads/backlog-drain.toml --broker 127.0.0.1:$port \
  --cpus 1 --quiet --compare-raw ${EXTRA:-} --out "$OUT.json" > "$OUT.txt" 2>&1
curl -s http://127.0.0.1:9187/metrics | grep -E "^ringmq_prefetch" > "$OUT-metrics.txt"
kill $bp; wait $bp 2>/dev/null
rm -f "$OUT.ready"; rm -rf /work/mdrain-data
echo "$OUT $(grep 'library/raw:' "$OUT.txt") $(awk '{s[$1]+=$2} END {for (k in s) printf "%s=%.0f ", k, s[k]}' "$OUT-metrics.txt")"
