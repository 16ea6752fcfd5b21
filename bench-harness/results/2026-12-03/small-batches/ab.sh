#!/bin/sh
# The round-10 A/B (BENCHMARKS.md, "Many small batches: reused buffers; a fixed-rate
# producer's sleeps"): base = 26cd260, new = 10b4c6a, release builds copied to /tmp/ab/ARM.
# Arms interleaved per round; /work/kd is emptied and left quiet for 60 s after each
# many-queues round (deleting 10,000 index files slows ext4 for a while).
here=$(dirname "$0"); OUT=${OUT:-$here}; export OUT
ARMS=${ARMS:-"base new"}
for r in $(seq 1 ${MQ_ROUNDS:-3}); do
  for a in $ARMS; do sh $here/run.sh /tmp/ab/$a mq-$a-$r | tail -1; done
  rm -rf /work/kd; sleep 60
done
for r in 1 2; do
  for a in $ARMS; do
    WL=bench-harness/workloads/latency.toml SET="--set target_rate=336000" sh $here/run.sh /tmp/ab/$a lat336k-$a-$r >/dev/null 2>&1
    WL=bench-harness/workloads/latency.toml sh $here/run.sh /tmp/ab/$a lat130k-$a-$r >/dev/null 2>&1
    for w in batched small-messages; do
      [ $r = 1 ] && WL=bench-harness/workloads/$w.toml sh $here/run.sh /tmp/ab/$a $w-$a-$r >/dev/null 2>&1
    done
  done
done
rm -rf /work/kd
