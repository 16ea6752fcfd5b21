#!/bin/sh
# usage: [ROUNDS=3] [OUT=dir] sh small-messages.sh: base against early, small-messages at max
# rate (100-byte messages, 16 KiB batches, two producers), interleaved; rounds after ab.sh's one.
here=$(dirname "$0"); out=${OUT:-$here}
for r in $(seq 2 $((${ROUNDS:-3} + 1))); do
  for arm in base early; do
    l=small-messages-$arm-$r
    /tmp/ab/$arm/ringmq-bench run bench-harness/workloads/small-messages.toml --spawn-broker --broker-cpus 0 \
      --cpus 1 --quiet --out $out/$l.json > $out/$l.txt 2>&1
    echo "$l: $(grep -E "produce msg/s|ack p99 " $out/$l.txt | tr -s ' ' | paste -sd' ')"
  done
done
