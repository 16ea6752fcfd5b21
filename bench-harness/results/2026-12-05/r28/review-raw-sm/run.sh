#!/bin/bash
# Raw small-messages (100 B records, 16 KiB batches: the broker's per-record work), BUILDS
# (default r28base
# = a05e519, r28comb (fa2a1ea, with the produce path's look at every record's key and
# properties lengths), three rounds interleaved; broker on CPU 0, raw client on CPU 1,
# journaled loop image at /mnt/r22. One line per run in summary.txt.
set -u
O=$(dirname $0); DATA=/mnt/r22/data
busy() { paste $1 $2 | awk -v c=$3 '$1==c {n=NF/2; t=0; for(i=2;i<=n;i++) t+=$(i+n)-$i; idle=($(5+n)-$5)+($(6+n)-$6); printf "%.2f", 1-idle/t}'; }
BUILDS=${BUILDS:-"r28base r28comb"}; ROUNDS=${ROUNDS:-3}
for r in $(seq 1 $ROUNDS); do
  list=$BUILDS; [ $((r % 2)) = 0 ] && list=$(echo $BUILDS | tr " " "\n" | tac | tr "\n" " ")
  for b in $list; do
    rm -rf $DATA; fstrim /mnt/r22; sync
    /tmp/ab/$b/ringmq broker --config /work/main/bench-harness/results/2026-12-05/buffer/broker.toml > /dev/null 2>&1 & bp=$!
    for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
    taskset -c 1 /tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/small-messages.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set client=raw --set duration_s=12 --out $O/$b-$r.json > $O/$b-$r.txt 2>&1 & bench=$!
    sleep 5; grep -E '^cpu[01] ' /proc/stat > /tmp/s0; sleep 8; grep -E '^cpu[01] ' /proc/stat > /tmp/s1
    wait $bench; kill -INT $bp; wait $bp
    echo "$b-$r msg/s $(grep -m1 'produce msg/s' $O/$b-$r.txt | awk '{print $3}') cpu0 $(busy /tmp/s0 /tmp/s1 cpu0) cpu1 $(busy /tmp/s0 /tmp/s1 cpu1)" | tee -a $O/summary.txt
  done
done
rm -rf $DATA
