#!/bin/bash
# Retention under raw many-queues on a 40 GiB journaled ext4 image (loop-mounted at /mnt/r22,
# `losetup --direct-io=on`): one shard on CPU 0 (async flush, defaults: disk_max_used_ratio
# 0.75), the raw client on CPU 1 writing 10,000 queues at ~1.5 GB/s for 30 s (about 45 GB,
# more than the filesystem holds). Per run: the filesystem's used/free MiB every second
# (<tag>.df), the broker's retention log lines (<tag>.retention), the report (<tag>.txt/json).
# Usage: OUT=dir ROUNDS=n BUILDS="r29base r29drop" bash run.sh (binaries in /tmp/ab/<build>)
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-2}; BUILDS=${BUILDS:?}; DATA=/mnt/r22/data
mkdir -p $OUT
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
for r in $(seq 1 $ROUNDS); do
  for b in $BUILDS; do
    tag=$b-$r
    rm -rf $DATA; fstrim /mnt/r22; sync
    (while true; do echo "$(date +%T) $(df -B1M /mnt/r22 | tail -1 | awk '{print $3, $4}')"; sleep 1; done) > $OUT/$tag.df & dfp=$!
    RUST_LOG=ringmq=info /tmp/ab/$b/ringmq broker --config $OUT/broker.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
    for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
    taskset -c 1 /tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml \
      --broker 127.0.0.1:9877 --cpus 1 --quiet --set client=raw --set duration_s=30 \
      --out $OUT/$tag.json > $OUT/$tag.txt 2>&1
    kill -INT $bp; wait $bp; kill $dfp
    grep -E "retention|No space" $OUT/$tag.broker.log | cut -c1-400 > $OUT/$tag.retention
    rm $OUT/$tag.broker.log
    full=$(awk '$3 == 0' $OUT/$tag.df | wc -l)
    echo "$tag MB/s $(grep -m1 'produce MB/s' $OUT/$tag.txt | awk '{print $3}') failed_sends $(grep -m1 'COUNT PROBLEM' $OUT/$tag.txt | awk '{print $3}') seconds_at_0_free $full max_used_mib $(sort -k2 -n $OUT/$tag.df | tail -1 | awk '{print $2}') first_delete $(grep -m1 'retention deleted' $OUT/$tag.retention | cut -c12-26)" | tee -a $OUT/summary.txt
  done
done
rm -rf $DATA; fstrim /mnt/r22
