#!/bin/bash
# one live-group run of /tmp/ab/$BIN with perf on the load generator for 8 s from second 5
BIN=${BIN:-r38b}; OUT=/tmp/r38/prof-$BIN; mkdir -p $OUT; DATA=/mnt/r22/data
cp /tmp/r38/live/broker-256.toml $OUT/
rm -rf $DATA; fstrim /mnt/r22; sync
/tmp/ab/$BIN/ringmq broker --config $OUT/broker-256.toml > $OUT/broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 /tmp/ab/$BIN/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 --set consumers=1 --set consumer_group=true --out $OUT/run.json > $OUT/run.txt 2>&1 &
sleep 5; pid=$(pgrep -f "ringmq-bench run" | head -1)
perf record -F 999 -g -p $pid -o $OUT/perf.data -- sleep 8 2>/dev/null
while pgrep -f "ringmq-bench run" >/dev/null; do sleep 1; done
kill -INT $bp; wait $bp
grep -E "produce MB/s|consume MB/s" $OUT/run.txt
