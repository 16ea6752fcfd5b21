#!/bin/sh
# many-queues-linger (as committed: 30 s send timeout since 8603ff9) 3 rounds on fresh brokers.
B=${BIN:-/tmp/ab/r50}/ringmq-bench
D=${DATA:-/mnt/r22/data}
out=${OUT:-bench-harness/results/2026-12-07/r50/send-timeout}; mkdir -p $out
for round in a b c; do
    fstrim $D 2>/dev/null
    $B run bench-harness/workloads/many-queues-linger.toml --spawn-broker --data-dir $D \
        --broker-cpus 0 --cpus 1 --quiet --out $out/many-queues-linger-$round.json \
        > $out/many-queues-linger-$round.txt 2>&1
    head -2 $out/many-queues-linger-$round.txt | tail -1
done
