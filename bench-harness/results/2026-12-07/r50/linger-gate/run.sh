#!/bin/sh
# `latency` at 3 rates x 3 producer settings (as shipped; small batches wait while anything is
# in flight: producer_small_batches_in_flight_bytes = 1; linger_ms = 1), 2 rounds, in this order.
B=${BIN:-/tmp/ab/head}/ringmq-bench
out=${OUT:-bench-harness/results/2026-12-07/r50/linger-gate}; mkdir -p $out

for round in a b; do
 for rate in 130000 30000 10000; do
  for cfg in base nagle linger1; do
   case $cfg in base) s="";; nagle) s="--set producer_small_batches_in_flight_bytes=1";; linger1) s="--set linger_ms=1";; esac
   fstrim ${DATA:-/mnt/r22/data} 2>/dev/null
   $B run bench-harness/workloads/latency.toml --spawn-broker --data-dir ${DATA:-/mnt/r22/data} --broker-cpus 0 --cpus 1 --quiet --set target_rate=$rate $s --out $out/$cfg-$rate-$round.json > $out/$cfg-$rate-$round.txt 2>&1
   echo "$round $rate $cfg: $(grep -i 'ack' $out/$cfg-$rate-$round.txt | head -2 | tr '\n' ' ')"
  done
 done
done
