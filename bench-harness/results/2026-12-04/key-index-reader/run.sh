#!/bin/bash
# Key index reader/writer (c262759) against its parent (eaf60df), raw many-queues for 15 s
# against a broker started by hand (one shard on CPU 0, async flush, default key index),
# load generator on CPU 1; the key index's lag is read from /metrics 15 s into the run (2 s
# warm-up + 13 s), then the broker is stopped with SIGINT and the stop timed.
# Usage: OUT=dir BIN=dir ROUNDS=3 sh run.sh   (BIN holds ringmq-base, ringmq-head, ringmq-bench)
# NOKI=1: with [key_index] enabled = false (what the write pool change costs alone).
# POOL=n: storage.chunk_pool_chunks = n (default 32). ARMS="head": one arm only.
set -u
OUT=${OUT:?}; BIN=${BIN:?}; ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"; DATA=/tmp/kir-data
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
[ -n "${POOL:-}" ] && echo "chunk_pool_chunks = $POOL" >> "$OUT/broker.toml"
[ "${NOKI:-0}" = 1 ] && printf '\n[key_index]\nenabled = false\n' >> "$OUT/broker.toml"
one() { # arm round
  tag=mq-$1-$2; rm -rf $DATA
  "$BIN/ringmq-$1" broker --config "$OUT/broker.toml" > "$OUT/$tag.broker.log" 2>&1 & bp=$!
  for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
  taskset -c 1 "$BIN/ringmq-bench" run bench-harness/workloads/many-queues.toml --broker 127.0.0.1:9877 \
    --cpus 1 --quiet --set client=raw --set duration_s=15 --out "$OUT/$tag.json" > "$OUT/$tag.txt" 2>&1 & bench=$!
  sleep 15; curl -s localhost:9105/metrics > "$OUT/$tag.metrics-15s.txt"
  wait $bench; curl -s localhost:9105/metrics > "$OUT/$tag.metrics-end.txt"
  t0=$(date +%s.%N); kill -INT $bp; wait $bp; t1=$(date +%s.%N)
  m() { awk -v k="$1" '$1 ~ "^"k {print $2}' "$2"; }
  echo "$1 $2 MB/s $(grep -m1 'produce MB/s' "$OUT/$tag.txt" | awk '{print $3}') behind@15s $(m ringmq_key_index_behind_bytes "$OUT/$tag.metrics-15s.txt") behind@end $(m ringmq_key_index_behind_bytes "$OUT/$tag.metrics-end.txt") disk_read $(m ringmq_key_index_disk_read_bytes_total "$OUT/$tag.metrics-end.txt") stop_s $(echo "$t1 - $t0" | bc)" | tee -a "$OUT/summary.txt"
  rm -rf $DATA
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then arms="base head"; else arms="head base"; fi
  [ -n "${ARMS:-}" ] && arms=$ARMS
  for a in $arms; do one $a $r; done
done
