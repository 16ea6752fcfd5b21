#!/bin/bash
# many-queues --compare-raw as run-all.sh runs it (spawned broker on CPU 0, load generator on
# CPU 1, library then raw against the same broker: about 20 GB then 20+ GB), on the 40 GiB
# journaled loop image at /mnt/r22 (see ../retention/run.sh), trimmed before each run.
# Usage: OUT=dir ROUNDS=n BUILDS="r29base r29ret2" bash run.sh (binaries in /tmp/ab/<build>)
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-2}; BUILDS=${BUILDS:?}
mkdir -p $OUT
for r in $(seq 1 $ROUNDS); do
  for b in $BUILDS; do
    rm -rf /mnt/r22/data; mkdir -p /mnt/r22/data; fstrim /mnt/r22; sync
    /tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml --spawn-broker \
      --data-dir /mnt/r22/data --broker-cpus 0 --cpus 1 --quiet --compare-raw \
      --out $OUT/$b-$r.json > $OUT/$b-$r.txt 2>&1
    echo "$b-$r $(grep -A3 'library and raw' $OUT/$b-$r.txt | grep 'produce MB/s') failed: $(grep -c 'COUNT PROBLEM' $OUT/$b-$r.txt)" | tee -a $OUT/summary.txt
  done
done
rm -rf /mnt/r22/data; fstrim /mnt/r22
