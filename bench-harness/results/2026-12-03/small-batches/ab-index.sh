#!/bin/sh
# The index A/B (BENCHMARKS.md, "The index checkpoint syncs the filesystem once"): base = new
# = 10b4c6a, idx = 2012803, release builds copied to /tmp/ab/ARM. Arms interleaved per round;
# the broker logs each checkpoint's write-back and sync times (LABEL.broker.log, the lines of
# `index_writer`). /work/kd is emptied and left quiet for 45 s after each round.
here=$(dirname "$0"); OUT=${OUT:-$here}; export OUT
ARMS=${ARMS:-"new idx"}
LOG="info,ringmq::storage::commit_log::index_writer=debug"; export LOG
for r in $(seq 1 ${MQ_ROUNDS:-3}); do
  for a in $ARMS; do
    sh $here/run.sh /tmp/ab/$a ix-mq-$a-$r | tail -1
    grep "checkpoint written" /work/kd/ix-mq-$a-$r/broker.log > $OUT/ix-mq-$a-$r.broker.log
  done
  rm -rf /work/kd; sleep 45
done
for a in $ARMS; do
  for w in batched sync-flush backlog-drain many-queues-keyed; do
    WL=bench-harness/workloads/$w.toml sh $here/run.sh /tmp/ab/$a ix-$w-$a >/dev/null 2>&1
  done
  rm -rf /work/kd; sleep 20
done
