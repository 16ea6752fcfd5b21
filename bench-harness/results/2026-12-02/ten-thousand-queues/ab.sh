#!/bin/sh
# A/B: $ARMS (dirs under /tmp/ab holding ringmq + ringmq-bench), interleaved per round; reports to $OUT.
cd /work/main
for round in 1 2 3; do
  for w in $WORKLOADS; do
    for arm in $ARMS; do
      /tmp/ab/$arm/ringmq-bench run bench-harness/workloads/$w.toml --spawn-broker --broker-cpus 0 --cpus 1 --quiet --out $OUT/$w-$arm-$round.json > $OUT/$w-$arm-$round.txt 2>&1
      echo "$round $w $arm $(grep -E 'produce (MB|msg)/s' $OUT/$w-$arm-$round.txt | awk '{print $NF}' | tr '\n' ' ') p99=$(grep 'ack p99 us' $OUT/$w-$arm-$round.txt | head -1 | awk '{print $NF}') failed=$(head -2 $OUT/$w-$arm-$round.txt | grep -o '[0-9]* failed') load=$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
