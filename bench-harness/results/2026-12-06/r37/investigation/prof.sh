#!/bin/bash
# usage: prof.sh BIN TAG [extra bench args] -- profiles the bench process 4..12 s in
bin=/tmp/ab/$1; tag=$2; shift 2
OUT=/tmp/r37; DATA=/mnt/r22/data
rm -rf $DATA; fstrim /mnt/r22 2>/dev/null; sync
$bin/ringmq broker --config $OUT/broker-256.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $bin/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 "$@" --out $OUT/$tag.json > $OUT/$tag.txt 2>&1 & pid=$!
sleep 5
perf record -F 999 -g -p $pid -o $OUT/$tag.perf.data -- sleep 8 2>/dev/null >/dev/null
wait $pid
kill -INT $bp; wait $bp
echo "$tag produce $(grep -m1 'produce MB/s' $OUT/$tag.txt | awk '{print $3}') consume $(grep -m1 'consume MB/s' $OUT/$tag.txt | awk '{print $3}')"
