#!/bin/bash
# Round 41: backlog-drain with --compare-raw, builds A/B (the long polls' hang-up in the fetch
# path: `base` = 445af21, before it; `head` = after), interleaved, order reversed every other
# round. Broker spawned by ringmq-bench on CPU 0, load generator on CPU 1, data on a journaled
# ext4 loop image (`losetup --direct-io=on`), trimmed before each run.
# Usage: OUT=dir ROUNDS=n bash ab.sh   (binaries in /tmp/ab/<build>/)
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-3}; DATA=${DATA:-/mnt/r22/data}
mkdir -p $OUT
one() { b=$1; r=$2
  fstrim $(dirname $DATA) 2>/dev/null; sync
  /tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/backlog-drain.toml --spawn-broker \
    --data-dir $DATA --broker-cpus 0 --cpus 1 --quiet --compare-raw --out $OUT/$b-$r.json > $OUT/$b-$r.txt 2>&1
  echo "$b-$r drain MB/s (library, raw): $(grep 'backlog drain MB/s' $OUT/$b-$r.txt | awk '{print $4}' | tr '\n' ' ') counts: $(grep -c 'counts: OK' $OUT/$b-$r.txt)" | tee -a $OUT/summary.txt
}
for r in $(seq 1 $ROUNDS); do
  if [ $((r % 2)) = 1 ]; then one base $r; one head $r; else one head $r; one base $r; fi
done
