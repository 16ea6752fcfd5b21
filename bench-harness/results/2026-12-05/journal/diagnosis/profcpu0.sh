#!/bin/bash
arm=$1; WL=$2; tag=$3; BIN=/tmp/ab/$arm; OUT=/tmp/r21; DATA=${DATA:-/tmp/r21-data}; rm -rf $DATA; sed "s#/tmp/r20-data#$DATA#" /work/main/bench-harness/results/2026-12-04/write-room/broker.toml > $OUT/broker-$tag.toml
$BIN/ringmq broker --config $OUT/broker-$tag.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/$WL.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 $SETS --out $OUT/$tag.json > $OUT/$tag.txt 2>&1 & bench=$!
sleep 7; perf record -o $OUT/$tag.perf.data -g -F 1000 -C 0 -- sleep 5 >/dev/null 2>&1
wait $bench; kill -INT $bp; wait $bp; rm -rf $DATA
grep -m1 'produce MB/s' $OUT/$tag.txt
