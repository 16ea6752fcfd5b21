#!/bin/bash
# backlog-drain --compare-raw with round 30's last build and round 31's, interleaved, order
# reversed every other round, as run-all.sh runs it (--spawn-broker: broker on CPU 0, load
# generator on CPU 1), data on DATA (default /work/bd-data, the root ext4 filesystem), fio's
# 1 MiB O_DIRECT sequential read of 2 GiB there before each round.
# Usage: OUT=dir ROUNDS=n BUILDS="r31base r31final" bash run.sh (binaries in /tmp/ab/<build>)
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-3}; BUILDS=${BUILDS:?}; DATA=${DATA:-/work/bd-data}
mkdir -p $OUT
for r in $(seq 1 $ROUNDS); do
  mkdir -p $DATA
  fio --name=seqread --filename=$DATA/fio.test --rw=read --bs=1M --size=2G --direct=1 \
      --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json > $OUT/fio-read-$r.json 2>/dev/null
  rm -f $DATA/fio.test
  list=$BUILDS; if [ $((r % 2)) = 0 ]; then list=$(echo $BUILDS | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for b in $list; do
    rm -rf $DATA/broker
    /tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/backlog-drain.toml \
      --spawn-broker --data-dir $DATA --broker-cpus 0 --cpus 1 --quiet --compare-raw \
      --out $OUT/$b-$r.json > $OUT/$b-$r.txt 2>&1
    echo "$b-$r $(grep '^library/raw' $OUT/$b-$r.txt)" | tee -a $OUT/summary.txt
  done
done
rm -rf $DATA
