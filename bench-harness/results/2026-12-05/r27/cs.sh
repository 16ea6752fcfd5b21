#!/bin/bash
# Context switches of the load generator (perf stat, 4 s from 6 s into a 12 s run) in one
# run of a workload, library or raw client, against a broker on CPU 0 (round 25's
# buffer/broker.toml: one shard, async flush, data on the journaled loop image of abrun.sh).
# Usage: BIN=/tmp/ab/<build> WL=small-messages CLIENT=library|raw bash cs.sh >> cs.txt
set -u
BIN=${BIN:?}; DATA=/mnt/r22/data; OUT=/tmp/cs; mkdir -p $OUT
WL=${WL:-small-messages}; CLIENT=${CLIENT:-library}
rm -rf $DATA; fstrim /mnt/r22; sync
$BIN/ringmq broker --config /work/main/bench-harness/results/2026-12-05/buffer/broker.toml > $OUT/broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/$WL.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=12 --set client=$CLIENT --out $OUT/run.json > $OUT/run.txt 2>&1 & bench=$!
sleep 6
bpid=$(pgrep -f "ringmq-bench run" | head -1)
cs=$(perf stat -x, -e context-switches -p $bpid -- sleep 4 2>&1 | awk -F, '/context-switches/ {print $1}')
wait $bench; kill -INT $bp; wait $bp; rm -rf $DATA; fstrim /mnt/r22
echo "$(basename $BIN) $WL $CLIENT context-switches/4s $cs produce_MB/s $(grep -m1 'produce MB/s' $OUT/run.txt | awk '{print $3}')"
