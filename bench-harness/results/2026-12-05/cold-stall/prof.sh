#!/bin/bash
# The load generator profiled (perf, 999 Hz, call graphs, 5 s from 6 s into the run) in one
# many-queues run with a MIB-MiB producer buffer (default 256) on the journaled loop filesystem
# of run.sh; builds in /tmp/ab/r22 (05bc1dd). Output in /tmp/prof-mq.
set -u
BIN=${BIN:-/tmp/ab/r22}; DATA=/mnt/r22/data; OUT=/tmp/prof-mq; mkdir -p $OUT
MIB=${MIB:-256}; WL=${WL:-many-queues}
rm -rf $DATA; fstrim /mnt/r22; sync
$BIN/ringmq broker --config /work/main/bench-harness/results/2026-12-05/buffer/broker.toml > $OUT/broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/$WL.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 --set producer_buffer_bytes=$((MIB<<20)) --set max_in_flight=$((MIB*2048)) --out $OUT/run.json > $OUT/run.txt 2>&1 & bench=$!
sleep 6
bpid=$(pgrep -f "ringmq-bench run" | head -1)
perf record -F 999 -g -p $bpid -o $OUT/perf.data -- sleep 5 2>/dev/null
wait $bench; kill -INT $bp; wait $bp; rm -rf $DATA; fstrim /mnt/r22
grep "produce MB/s" $OUT/run.txt
perf report -i $OUT/perf.data --no-children --sort sym --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -45
