#!/bin/sh
# backlog-drain --compare-raw with two builds (binaries in /tmp/ab/BUILD), interleaved, the
# order reversed every other round; the bench spawns the broker (CPU 0, load generator CPU 1)
# with its data under /mnt/r22 (the round's journaled ext4 loop image), trimmed before each run.
# Usage: OUT=dir ROUNDS=n BUILDS="a b" [FIRST=k: start at round k] sh run.sh
set -u
mkdir -p $OUT
for r in $(seq ${FIRST:-1} $ROUNDS); do
  list=$BUILDS; if [ $((r % 2)) = 0 ]; then list=$(echo $BUILDS | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for b in $list; do
    fstrim /mnt/r22 2>/dev/null; sync
    /tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/backlog-drain.toml --spawn-broker \
      --data-dir /mnt/r22/data --broker-cpus 0 --cpus 1 --quiet --compare-raw --out $OUT/$b-$r.json > $OUT/$b-$r.txt 2>&1
    echo "$b-$r $(grep 'library/raw' $OUT/$b-$r.txt)" | tee -a $OUT/summary.txt
  done
done
