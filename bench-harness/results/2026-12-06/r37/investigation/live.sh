#!/bin/bash
# usage: live.sh BIN TAG [extra bench args]
bin=/tmp/ab/$1; tag=$2; shift 2
OUT=/tmp/r37; DATA=/mnt/r22/data
cat > $OUT/broker-256.toml <<T
[broker]
cpus = [0]
data_dir = "$DATA"
pin = true
port = 9877
shards = 1

[storage]
flush_mode = "async"
cache_bytes = $((256 << 20))
T
rm -rf $DATA; fstrim /mnt/r22 2>/dev/null; sync
$bin/ringmq broker --config $OUT/broker-256.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $bin/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=10 --set consumers=1 --set target_rate=200000 "$@" --out $OUT/$tag.json > $OUT/$tag.txt 2>&1
curl -s localhost:9105/metrics > $OUT/$tag.metrics; kill -INT $bp; wait $bp
echo "$tag produce $(grep -m1 'produce MB/s' $OUT/$tag.txt | awk '{print $3}') consume $(grep -m1 'consume MB/s' $OUT/$tag.txt | awk '{print $3}') fetches $(awk '$1 ~ /^ringmq_fetch_requests_total/ {s+=$2} END {print s}' $OUT/$tag.metrics) $(grep -m1 counts $OUT/$tag.txt | tr -s ' ')"
