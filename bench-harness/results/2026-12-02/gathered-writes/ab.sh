#!/bin/sh
# A/B: base (4ded968) against new (working tree), interleaved per round.
cd /work/main
for round in 1 2 3; do
  for w in many-queues batched small-messages-sync; do
    for arm in base new; do
      case $w in small-messages-sync) wf=small-messages; extra="--set storage.flush_mode=sync";; *) wf=$w; extra="";; esac
      /tmp/ab/$arm/ringmq-bench run bench-harness/workloads/$wf.toml --spawn-broker --broker-cpus 0 --cpus 1 --quiet $extra --out /tmp/ab/out/$w-$arm-$round.json > /tmp/ab/out/$w-$arm-$round.txt 2>&1
      echo "$round $w $arm $(grep -E 'produce (MB|msg)/s' /tmp/ab/out/$w-$arm-$round.txt | awk '{print $NF}' | tr '\n' ' ') p99=$(grep 'ack p99 us' /tmp/ab/out/$w-$arm-$round.txt | awk '{print $NF}') load=$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
