#!/bin/bash
# many-queues (and batched, many-queues-sticky) with the broker's data directory on this VM's
# root filesystem (ext4 without a journal) against a journaled ext4 in a loop-mounted image
# (losetup --direct-io=on, so O_DIRECT reaches the disk file), interleaved, order reversed every
# other round. Broker started by hand (one shard on CPU 0, async flush, defaults), load
# generator on CPU 1, 15 s runs. Between 5 s and 14 s into each run: each CPU's busy share
# (/proc/stat), the broker's io_uring worker threads' CPU seconds (where the index files'
# create/open/write run), and the appends that waited for index room. One line per run in
# summary.txt.
# Setup (root):  truncate -s 48G /work/r21-ext4.img && mkfs.ext4 -q -F /work/r21-ext4.img
#                L=$(losetup --direct-io=on -f --show /work/r21-ext4.img); mount $L /mnt/r21
# Usage: OUT=dir BIN=/tmp/ab/<build> ROUNDS=n WLS="many-queues batched" sh run.sh
set -u
OUT=${OUT:?}; BIN=${BIN:?}; ROUNDS=${ROUNDS:-3}; WLS=${WLS:-many-queues}
mkdir -p $OUT
busy() { paste $1 $2 | awk -v c=$3 '$1==c {n=NF/2; t=0; for(i=2;i<=n;i++) t+=$(i+n)-$i; idle=($(5+n)-$5)+($(6+n)-$6); printf "%.2f", 1-idle/t}'; }
iowrk() { for t in /proc/$1/task/*; do grep -q '^iou-wrk' $t/comm 2>/dev/null && awk '{print $14+$15}' $t/stat; done | awk '{s+=$1} END {print s+0}'; }
waits() { awk '$1 ~ "^ringmq_index_room_waits_total" {print $2}' $1; }
one() { wl=$1; fs=$2; r=$3; tag=$wl-$fs-$r
  case $fs in root) DATA=/tmp/r21-data ;; journal) DATA=/mnt/r21/data ;; esac
  rm -rf $DATA
  cat > $OUT/broker-$fs.toml <<T
[broker]
cpus = [0]
data_dir = "$DATA"
pin = true
port = 9877
shards = 1

[storage]
flush_mode = "async"
T
  $BIN/ringmq broker --config $OUT/broker-$fs.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
  for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
  taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/$wl.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 --out $OUT/$tag.json > $OUT/$tag.txt 2>&1 & bench=$!
  sleep 5; grep -E '^cpu[01] ' /proc/stat > $OUT/$tag.s0; w0=$(iowrk $bp); curl -s localhost:9105/metrics > $OUT/$tag.m0
  sleep 9; grep -E '^cpu[01] ' /proc/stat > $OUT/$tag.s1; w1=$(iowrk $bp); curl -s localhost:9105/metrics > $OUT/$tag.m1
  wait $bench; kill -INT $bp; wait $bp; rm -rf $DATA
  echo "$wl $fs $r MB/s $(grep -m1 'produce MB/s' $OUT/$tag.txt | awk '{print $3}') cpu0_busy $(busy $OUT/$tag.s0 $OUT/$tag.s1 cpu0) cpu1_busy $(busy $OUT/$tag.s0 $OUT/$tag.s1 cpu1) io_workers_cpu_s $(echo "scale=2; ($w1-$w0)/100" | bc) index_room_waits $(( $(waits $OUT/$tag.m1) - $(waits $OUT/$tag.m0) ))" | tee -a $OUT/summary.txt
}
for r in $(seq 1 $ROUNDS); do
  if [ $((r % 2)) = 1 ]; then order="root journal"; else order="journal root"; fi
  for wl in $WLS; do for fs in $order; do one $wl $fs $r; done; done
done
