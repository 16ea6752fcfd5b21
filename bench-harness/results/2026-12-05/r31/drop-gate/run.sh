#!/bin/bash
# many-queues --compare-raw (library, then raw: 20,000 queues' data on one shard) against a
# broker started by hand with info logs, so that its retention lines show what each run and
# each drop of index entries took, and its metrics at the end: appends that waited for the
# queue index's room, and index checkpoint times (round 31: the drop without the index gate).
# Broker on CPU 0 (one shard, async flush, defaults:
# disk_max_used_ratio 0.75), load generator on CPU 1, the 40 GiB journaled ext4 loop image at
# /mnt/r22 (see ../../r29/retention/run.sh), trimmed before each run.
# Per run: <tag>.txt/json (the report), <tag>.retention (the broker's retention lines),
# <tag>.df (the filesystem's used/free MiB every second), <tag>.metrics (the broker's at the end).
# Usage: OUT=dir ROUNDS=n BUILDS="r31base r31plan" bash run.sh (binaries in /tmp/ab/<build>)
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-1}; BUILDS=${BUILDS:?}; DATA=/mnt/r22/data
mkdir -p $OUT
metric() { awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}' $1; }
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
      --broker 127.0.0.1:9877 --cpus 1 --quiet --compare-raw --out $OUT/$tag.json > $OUT/$tag.txt 2>&1
    curl -s localhost:9105/metrics > $OUT/$tag.metrics
    kill -INT $bp; wait $bp; kill $dfp
    grep -E "retention|No space" $OUT/$tag.broker.log | cut -c1-400 > $OUT/$tag.retention
    rm $OUT/$tag.broker.log
    echo "$tag $(grep -A3 'library and raw' $OUT/$tag.txt | grep 'produce MB/s') failed: $(grep -c 'COUNT PROBLEM' $OUT/$tag.txt) seconds_at_0_free $(awk '$3 == 0' $OUT/$tag.df | wc -l) index_room_waits $(metric $OUT/$tag.metrics ringmq_index_room_waits_total) checkpoints $(metric $OUT/$tag.metrics ringmq_index_checkpoint_latency_seconds_count) checkpoint_s $(metric $OUT/$tag.metrics ringmq_index_checkpoint_latency_seconds_sum) drops $(grep -c 'dropped index' $OUT/$tag.retention) raw_ack_p99_us $(awk '$1=="ack" && $2=="p99" {n++; if (n == 2) print $4}' $OUT/$tag.txt)" | tee -a $OUT/summary.txt
  done
done
rm -rf $DATA; fstrim /mnt/r22
