#!/bin/sh
# many-queues A/B with every run's data kept (--keep-data under /work/kd), so no run deletes
# the 10,000 index files of the one before (ext4 then scans the freed inodes when the next
# broker creates its own: see BENCHMARKS.md, round 6). $ARMS (dirs under /tmp/ab holding
# ringmq + ringmq-bench) interleaved per round, $ROUNDS rounds, $SET overrides, files named
# $LABEL-$arm-$round in $OUT. Broker on CPU 0, load on CPU 1. Delete /work/kd afterwards.
cd /work/main
mkdir -p /work/kd
for round in $(seq 1 ${ROUNDS:-3}); do
  for arm in $ARMS; do
    f=$OUT/$LABEL-$arm-$round
    /tmp/ab/$arm/ringmq-bench run bench-harness/workloads/${WORKLOAD:-many-queues}.toml --spawn-broker --broker-cpus 0 --cpus 1 --quiet --keep-data --data-dir /work/kd $SET --out $f.json > $f.txt 2>&1
    echo "$round $LABEL $arm $(grep -E 'produce (MB|msg)/s' $f.txt | awk '{print $NF}' | tr '\n' ' ') p50=$(grep 'ack p50 us' $f.txt | head -1 | awk '{print $NF}') p99=$(grep 'ack p99 us' $f.txt | head -1 | awk '{print $NF}') $(head -1 $f.txt | grep -o '[0-9]* failed') load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
