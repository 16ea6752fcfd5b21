#!/bin/sh
# A flat system-wide profile (perf record -a -F 999, 6 s, 14 s into the run) of run.sh's workload
# on QPT queues per topic: samples by thread and symbol, both CPUs.
# Run from the repository root: OUT=dir BIN=/tmp/ab/head sh prof.sh QPT LABEL
set -u
q=$1; label=$2
SET="--set queues_per_topic=$q --set linger_ms=1000 --set batch_max_bytes=3300 --set producer_buffer_bytes=268435456 --set max_in_flight=200000 ${EXTRA:-}" \
  OUT=$OUT sh bench-harness/results/2026-12-03/broker-batch-cost/mqcpu.sh "$BIN" "$label" > "$OUT/$label-line.txt" &
sleep 16
perf record -a -F 999 -o /tmp/$label.data -- sleep 6 2> /dev/null
wait
perf report -i /tmp/$label.data --no-children --sort comm,sym --percent-limit 0.4 2>/dev/null | grep -v '^#' | grep -v '^$' > "$OUT/$label-flat.txt"
cat "$OUT/$label-line.txt"
