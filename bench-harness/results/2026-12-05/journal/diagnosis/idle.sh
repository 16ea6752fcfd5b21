#!/bin/bash
# idle.sh ARM WL TAG: per-CPU busy share (from /proc/stat) between 5 s and 14 s of a 15 s run
arm=$1; WL=$2; tag=$3; BIN=/tmp/ab/$arm; OUT=/tmp/r21; DATA=${DATA:-/tmp/r21-data}; rm -rf $DATA; sed "s#/tmp/r20-data#$DATA#" /work/main/bench-harness/results/2026-12-04/write-room/broker.toml > $OUT/broker-$tag.toml
$BIN/ringmq broker --config $OUT/broker-$tag.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/$WL.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 $SETS --out $OUT/$tag.json > $OUT/$tag.txt 2>&1 & bench=$!
sleep 5; grep -E "^cpu[01] " /proc/stat > $OUT/$tag.s0; sleep 9; grep -E "^cpu[01] " /proc/stat > $OUT/$tag.s1
wait $bench; kill -INT $bp; wait $bp; rm -rf $DATA
paste $OUT/$tag.s0 $OUT/$tag.s1 | awk '{n=NF/2; tot=0; for(i=2;i<=n;i++) tot+=$(i+n)-$i; idle=($(5+n)-$5)+($(6+n)-$6); printf "%s busy %.2f (user %.2f sys %.2f softirq %.2f iowait %.2f)\n", $1, 1-idle/tot, ($(2+n)-$2)/tot, ($(4+n)-$4)/tot, ($(8+n)-$8)/tot, ($(6+n)-$6)/tot}'
grep -m1 'produce MB/s' $OUT/$tag.txt
