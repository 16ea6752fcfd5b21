#!/bin/bash
# Where the broker's core goes, by task queue (ringmq_task_queue_busy_seconds_total), for
# raw and library produce-only workloads, 15 s each, against a broker started by hand (one
# shard on CPU 0, async flush, defaults), load generator on CPU 1. Between 5 s and 14 s into
# the run: each queue's busy seconds, the broker's CPU seconds (/proc/<pid>/stat) and MB
# appended. Usage: OUT=dir BIN=dir ROUNDS=2 bash run.sh  (BIN holds ringmq and ringmq-bench)
# RUNS="many-queues:raw ..." picks workload:client pairs.
set -u
OUT=${OUT:?}; BIN=${BIN:?}; ROUNDS=${ROUNDS:-2}
RUNS=${RUNS:-many-queues:raw batched:raw batched:library many-queues-keyed:library}
mkdir -p "$OUT"; DATA=/tmp/tqb-data
cat > "$OUT/broker.toml" <<T
[broker]
cpus = [0]
data_dir = "$DATA"
pin = true
port = 9877
shards = 1

[storage]
flush_mode = "async"
T
busy() { awk -v q="$2" '$1 ~ "^ringmq_task_queue_busy_seconds_total" && $1 ~ "queue=\""q"\"" {s+=$2} END {printf "%.3f", s}' "$1"; }
one() { # workload client round
  tag=$1-$2-$3; rm -rf $DATA
  "$BIN/ringmq" broker --config "$OUT/broker.toml" > "$OUT/$tag.broker.log" 2>&1 & bp=$!
  for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
  taskset -c 1 "$BIN/ringmq-bench" run bench-harness/workloads/$1.toml --broker 127.0.0.1:9877 \
    --cpus 1 --quiet --set client=$2 --set duration_s=15 --out "$OUT/$tag.json" > "$OUT/$tag.txt" 2>&1 & bench=$!
  sleep 5; read u0 s0 < <(awk '{print $14, $15}' /proc/$bp/stat); curl -s localhost:9105/metrics > "$OUT/$tag.metrics-5s.txt"
  sleep 9; read u1 s1 < <(awk '{print $14, $15}' /proc/$bp/stat); curl -s localhost:9105/metrics > "$OUT/$tag.metrics-14s.txt"
  wait $bench
  kill -INT $bp; wait $bp; rm -rf $DATA
  app() { awk '$1 ~ "^ringmq_append_bytes_total" {s+=$2} END {printf "%.0f", s}' "$1"; }
  line="$1 $2 $3 MB/s $(grep -m1 'produce MB/s' "$OUT/$tag.txt" | awk '{print $3}') window_MB $(( ($(app "$OUT/$tag.metrics-14s.txt") - $(app "$OUT/$tag.metrics-5s.txt")) / 1000000 )) cpu_s $(echo "scale=2; ($u1 + $s1 - $u0 - $s0) / 100" | bc)"
  for q in data control key_index; do
    line="$line $q $(echo "$(busy "$OUT/$tag.metrics-14s.txt" $q) - $(busy "$OUT/$tag.metrics-5s.txt" $q)" | bc)"
  done
  echo "$line" | tee -a "$OUT/summary.txt"
}
for r in $(seq 1 "$ROUNDS"); do
  for run in $RUNS; do one "${run%%:*}" "${run##*:}" $r; done
done
