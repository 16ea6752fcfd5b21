#!/bin/bash
# The broker's own limit with many small batches: the raw client (one Produce request per
# batch, built ahead, cheap on the load generator's core) sends many-queues' 10,000 queues
# round-robin in batches of BM bytes (4700: four 1 KiB records), so the broker's core, not the
# client's, is the limit. Same setup as cold-stall/abrun.sh (broker on CPU 0, one shard, async
# flush; load generator on CPU 1; journaled ext4 loop image at /mnt/r22, trimmed before each
# run); 12 s runs, arms interleaved, order reversed every other round.
# Usage: OUT=dir ROUNDS=n ARMS="build[:BM] ..." bash rawsmall.sh   (builds in /tmp/ab/<build>)
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-3}; ARMS=${ARMS:?}; DATA=/mnt/r22/data
mkdir -p $OUT
busy() { paste $1 $2 | awk -v c=$3 '$1==c {n=NF/2; t=0; for(i=2;i<=n;i++) t+=$(i+n)-$i; idle=($(5+n)-$5)+($(6+n)-$6); printf "%.2f", 1-idle/t}'; }
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
one() { arm=$1; r=$2; b=${arm%%:*}; bm=4700; case $arm in *:*) bm=${arm#*:} ;; esac
  tag=$b-$bm-$r; bin=/tmp/ab/$b
  rm -rf $DATA; fstrim $(dirname $DATA) 2>/dev/null; sync
  $bin/ringmq broker --config $OUT/broker.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
  for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
  taskset -c 1 $bin/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set client=raw --set duration_s=12 --set batch_max_bytes=$bm --out $OUT/$tag.json > $OUT/$tag.txt 2>&1 & bench=$!
  sleep 5; grep -E '^cpu[01] ' /proc/stat > $OUT/$tag.s0
  sleep 8; grep -E '^cpu[01] ' /proc/stat > $OUT/$tag.s1
  wait $bench; curl -s localhost:9105/metrics > $OUT/$tag.metrics; kill -INT $bp; wait $bp
  rec=$(metric $OUT/$tag.metrics ringmq_append_records_total); bat=$(metric $OUT/$tag.metrics ringmq_append_batches_total)
  echo "$tag MB/s $(grep -m1 'produce MB/s' $OUT/$tag.txt | awk '{print $3}') records/batch $(echo "scale=2; ${rec:-0}/${bat:-1}" | bc) cpu0 $(busy $OUT/$tag.s0 $OUT/$tag.s1 cpu0) cpu1 $(busy $OUT/$tag.s0 $OUT/$tag.s1 cpu1)" | tee -a $OUT/summary.txt
}
for r in $(seq 1 $ROUNDS); do
  list=$ARMS; if [ $((r % 2)) = 0 ]; then list=$(echo $ARMS | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for a in $list; do one $a $r; done
done
rm -rf $DATA; fstrim $(dirname $DATA) 2>/dev/null
