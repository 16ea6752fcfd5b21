#!/bin/sh
# many-queues with the spawned broker's data kept (--keep-data), after 400 s without any file
# deletions on the machine, so ext4 has no recently freed inodes to scan when the broker
# creates its 10,000 index files; run 1 with the broker profiled for 3 s. Usage: keep-data.sh
# ARM (a dir under /tmp/ab); OUT=dir. Delete /work/kd afterwards.
cd /work/main
arm=$1
sleep 400
for r in 1 2; do
  /tmp/ab/$arm/ringmq-bench run bench-harness/workloads/many-queues.toml --spawn-broker --broker-cpus 0 --cpus 1 --quiet --keep-data --data-dir /work/kd --out $OUT/keep-data-$arm-$r.json > $OUT/keep-data-$arm-$r.txt 2>&1 &
  if [ $r = 1 ]; then
    sleep 6
    b=$(pgrep -f "ringmq broker" | head -1)
    perf record -F 499 -g -p $b -o /tmp/prof/kd.data -- sleep 3 > /dev/null 2>&1
  fi
  wait
done
perf report -i /tmp/prof/kd.data --children --sort sym --stdio -g none 2>/dev/null | grep -v '^$' | head -40 > $OUT/keep-data-perf-broker.txt
