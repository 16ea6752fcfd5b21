#!/bin/bash
# broker profile under raw many-queues with small batches (broker-bound)
set -u
BIN=${BIN:-/tmp/ab/r28base}; DATA=/mnt/r22/data; OUT=${OUT:-/tmp/profr}; mkdir -p $OUT
BM=${BM:-4700}; CG=${CG:---call-graph dwarf,16384}
rm -rf $DATA; fstrim /mnt/r22; sync
$BIN/ringmq broker --config /work/main/bench-harness/results/2026-12-05/buffer/broker.toml > $OUT/broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set client=raw --set duration_s=12 --set batch_max_bytes=$BM --out $OUT/run.json > $OUT/run.txt 2>&1 & bench=$!
sleep 5
perf record -F 499 $CG -p $bp -o $OUT/perf.data -- sleep 3 2>/dev/null >/dev/null
wait $bench; kill -INT $bp; wait $bp; rm -rf $DATA; fstrim /mnt/r22
grep "produce MB/s" $OUT/run.txt
