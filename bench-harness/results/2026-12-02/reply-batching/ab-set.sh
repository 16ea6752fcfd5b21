#!/bin/sh
# ab.sh with workload overrides: $ARMS (dirs under /tmp/ab holding ringmq + ringmq-bench),
# interleaved per round, $ROUNDS rounds; $SET (e.g. "--set target_rate=336000"); files named
# $LABEL-$arm-$round in $OUT. Each run spawns its broker on CPU 0, load on CPU 1.
cd /work/main
for round in $(seq 1 ${ROUNDS:-3}); do
  for arm in $ARMS; do
    f=$OUT/$LABEL-$arm-$round
    /tmp/ab/$arm/ringmq-bench run bench-harness/workloads/$WORKLOAD.toml --spawn-broker --broker-cpus 0 --cpus 1 --quiet $SET --out $f.json > $f.txt 2>&1
    echo "$round $LABEL $arm $(grep -E 'produce (MB|msg)/s' $f.txt | awk '{print $NF}' | tr '\n' ' ') p50=$(grep 'ack p50 us' $f.txt | head -1 | awk '{print $NF}') p99=$(grep 'ack p99 us' $f.txt | head -1 | awk '{print $NF}') $(head -1 $f.txt | grep -o '[0-9]* failed') load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
