#!/bin/bash
# Read buffer pool (head) against its parent 4f7dcd0 (base): raw many-queues and raw batched,
# 15 s each, against a broker started by hand (one shard on CPU 0, async flush, defaults),
# load generator on CPU 1. Records MB/s; the broker's CPU seconds (utime + stime from
# /proc/<pid>/stat) and appended bytes (/metrics) between 5 s and 14 s into the run, and CPU
# seconds per GB appended in that window; and the head's ringmq_read_buffer_* metrics.
# Usage: OUT=dir BIN=dir ROUNDS=3 bash run.sh   (BIN holds base/ and head/, each with ringmq and
# ringmq-bench). WLS="many-queues batched" by default.
set -u
OUT=${OUT:?}; BIN=${BIN:?}; ROUNDS=${ROUNDS:-3}; WLS=${WLS:-many-queues batched}
mkdir -p "$OUT"; DATA=/tmp/rbp-data
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
one() { # arm workload round
  tag=$2-$1-$3; rm -rf $DATA
  "$BIN/$1/ringmq" broker --config "$OUT/broker.toml" > "$OUT/$tag.broker.log" 2>&1 & bp=$!
  for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
  taskset -c 1 "$BIN/$1/ringmq-bench" run bench-harness/workloads/$2.toml --broker 127.0.0.1:9877 \
    --cpus 1 --quiet --set client=raw --set duration_s=15 --out "$OUT/$tag.json" > "$OUT/$tag.txt" 2>&1 & bench=$!
  snap() { read ut st < <(awk '{print $14, $15}' /proc/$bp/stat)
    echo "$((ut + st)) $(curl -s localhost:9105/metrics | awk '$1 ~ "^ringmq_append_bytes_total" {s+=$2} END {printf "%.0f", s}')"; }
  sleep 5; read c0 b0 < <(snap); sleep 9; read c1 b1 < <(snap)
  wait $bench
  curl -s localhost:9105/metrics > "$OUT/$tag.metrics.txt"
  kill -INT $bp; wait $bp
  m() { awk -v k="$1" '$1 ~ "^"k {s+=$2} END {printf "%.0f", s}' "$OUT/$tag.metrics.txt"; }
  echo "$2 $1 $3 MB/s $(grep -m1 'produce MB/s' "$OUT/$tag.txt" | awk '{print $3}') window_cpu_s $(echo "scale=2; ($c1 - $c0) / 100" | bc) window_MB $(( (b1 - b0) / 1000000 )) cpu_s_per_GB $(echo "scale=3; ($c1 - $c0) / 100 / (($b1 - $b0) / 1000000000)" | bc) rb_allocated_MB $(( $(m ringmq_read_buffer_allocated_bytes_total) / 1000000 )) rb_pool_MB $(( $(m ringmq_read_buffer_pool_bytes) / 1000000 ))" | tee -a "$OUT/summary.txt"
  rm -rf $DATA
}
for r in $(seq 1 "$ROUNDS"); do
  for w in $WLS; do
    if [ $((r % 2)) = 1 ]; then arms="base head"; else arms="head base"; fi
    for a in $arms; do one $a $w $r; done
  done
done
