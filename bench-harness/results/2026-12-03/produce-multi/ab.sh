#!/bin/sh
# A/B of $WORKLOADS (workload names) between $ARMS (dirs under /tmp/ab holding ringmq +
# ringmq-bench), interleaved per round, $ROUNDS rounds, $SET overrides; reports named
# $workload-$arm-$round in $OUT. Spawned broker on CPU 0 (its temp data deleted after each
# run: use ../broker-per-batch/ab-keep.sh for 10,000-queue workloads), load on CPU 1.
cd /work/main
for round in $(seq 1 ${ROUNDS:-2}); do
  for wl in $WORKLOADS; do
    for arm in $ARMS; do
      f=$OUT/$wl-$arm-$round
      /tmp/ab/$arm/ringmq-bench run bench-harness/workloads/$wl.toml --spawn-broker --broker-cpus 0 --cpus 1 --quiet --data-dir /work/kd $SET --out $f.json > $f.txt 2>&1
      echo "$round $wl $arm $(grep -E 'produce (MB|msg)/s' $f.txt | awk '{print $NF}' | tr '\n' ' ')consume=$(grep -E 'consume MB/s' $f.txt | head -1 | awk '{print $NF}') p50=$(grep 'ack p50 us' $f.txt | head -1 | awk '{print $NF}') p99=$(grep 'ack p99 us' $f.txt | head -1 | awk '{print $NF}') $(head -1 $f.txt | grep -o '[0-9]* failed') load=$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
