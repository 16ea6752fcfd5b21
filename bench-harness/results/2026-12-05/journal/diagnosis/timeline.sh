#!/bin/bash
arm=$1; WL=$2; tag=$3; BIN=/tmp/ab/$arm; OUT=/tmp/r21; DATA=${DATA:-/tmp/r21-data}; rm -rf $DATA; sed "s#/tmp/r20-data#$DATA#" /work/main/bench-harness/results/2026-12-04/write-room/broker.toml > $OUT/broker-$tag.toml
$BIN/ringmq broker --config $OUT/broker-$tag.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/$WL.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 $SETS --out $OUT/$tag.json > $OUT/$tag.txt 2>&1 & bench=$!
sleep 4
for i in $(seq 1 100); do
  m=$(curl -s localhost:9105/metrics); 
  echo "$(date +%s.%N | cut -c1-14) $(echo "$m" | awk '$1 ~ "^ringmq_append_bytes_total" {s+=$2} $1 ~ "^ringmq_index_room_waits" {w=$2} $1 ~ "^ringmq_index_checkpoint_latency_seconds_count" {c=$2} $1 ~ /queue="data"/ {d=$2} $1 ~ "^ringmq_flushes_total" {f=$2} END {printf "%.0f %d %d %.3f %d", s, w, c, d, f}') $(awk '{print $14+$15}' /proc/$bp/task/$((bp+4))/stat 2>/dev/null)"
  sleep 0.1
done > $OUT/$tag.timeline
wait $bench; kill -INT $bp; wait $bp; rm -rf $DATA
awk 'NR>1 {dt=$1-t; printf "%.2f MB/s=%5.0f waits+%d ckpt=%d busy=%.2f flushes+%d\n", $1-t0, ($2-b)/dt/1e6, $3-w, $4, ($5-d)/dt, $6-f} NR==1 {t0=$1} {t=$1; b=$2; w=$3; d=$5; f=$6}' $OUT/$tag.timeline
grep -m1 'produce MB/s' $OUT/$tag.txt
