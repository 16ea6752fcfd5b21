#!/bin/bash
# Library produce A/B: broker started by hand (one shard on CPU 0, async flush, defaults), load
# generator on CPU 1, 15 s runs, arms interleaved (order reversed every other round). Between 5 s
# and 14 s into each run: bytes appended (broker metrics), the load generator's and the
# broker's CPU seconds (/proc/PID/stat), CPU 1's steal time. One line per run in summary.txt.
# Usage: ARMS="a b" ROUNDS=n WL=batched OUT=dir [SETS="--set x=y"]; binaries in /tmp/ab/ARM
# KiB_per_batch: bytes appended per batch in the window (ringmq_append_batches_total); the
# broker's metrics at 5 s and 14 s are kept as <run>.m0 and <run>.m1.
# Since round 21 (2026-12-05): DATA=dir is the broker's data directory (default /tmp/r21-data),
# and each line also has the broker's user CPU per GB and its user CPU µs per batch.
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-2}; WL=${WL:-batched}; SETS=${SETS:-}
mkdir -p $OUT; DATA=${DATA:-/tmp/r21-data}
cat > $OUT/broker.toml <<T
[broker]
cpus = [0]
data_dir = "$DATA"
pin = true
port = 9877
shards = 1

[storage]
flush_mode = "async"
T
app() { awk '$1 ~ "^ringmq_append_bytes_total" {s+=$2} END {printf "%.0f", s}' "$1"; }
bat() { awk '$1 ~ "^ringmq_append_batches_total" {s+=$2} END {printf "%.0f", s}' "$1"; }
steal() { awk '$1=="cpu1" {print $9}' /proc/stat; }
one() { arm=$1; r=$2; tag=$WL-$arm-$r; BIN=/tmp/ab/$arm; rm -rf $DATA
  $BIN/ringmq broker --config $OUT/broker.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
  for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
  taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/$WL.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 $SETS --out $OUT/$tag.json > $OUT/$tag.txt 2>&1 & bench=$!
  sleep 5; read bu0 bs0 < <(awk '{print $14, $15}' /proc/$bench/stat); read u0 s0 < <(awk '{print $14, $15}' /proc/$bp/stat); st0=$(steal); curl -s localhost:9105/metrics > $OUT/$tag.m0; a0=$(app $OUT/$tag.m0); b0=$(bat $OUT/$tag.m0)
  sleep 9; read bu1 bs1 < <(awk '{print $14, $15}' /proc/$bench/stat); read u1 s1 < <(awk '{print $14, $15}' /proc/$bp/stat); st1=$(steal); curl -s localhost:9105/metrics > $OUT/$tag.m1; a1=$(app $OUT/$tag.m1); b1=$(bat $OUT/$tag.m1)
  wait $bench; kill -INT $bp; wait $bp; rm -rf $DATA
  gb=$(echo "scale=4; ($a1-$a0)/1000000000" | bc)
  echo "$WL $arm $r MB/s $(grep -m1 'produce MB/s' $OUT/$tag.txt | awk '{print $3}') winGB $gb client_cpu_per_GB $(echo "scale=3; ($bu1+$bs1-$bu0-$bs0)/100/$gb" | bc) broker_cpu_per_GB $(echo "scale=3; ($u1+$s1-$u0-$s0)/100/$gb" | bc) broker_user_per_GB $(echo "scale=3; ($u1-$u0)/100/$gb" | bc) broker_us_per_batch $(echo "scale=2; ($u1-$u0)*10000/($b1-$b0)" | bc) steal_s $(echo "scale=2; ($st1-$st0)/100" | bc) KiB_per_batch $(echo "scale=1; ($a1-$a0)/($b1-$b0)/1024" | bc)" | tee -a $OUT/summary.txt
}
for r in $(seq 1 $ROUNDS); do
  if [ $((r % 2)) = 1 ]; then order="$ARMS"; else order=$(echo $ARMS | awk '{for(i=NF;i>0;i--) printf "%s ", $i}'); fi
  for arm in $order; do one $arm $r; done
done
