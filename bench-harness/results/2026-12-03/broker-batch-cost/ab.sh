#!/bin/sh
# usage: [ROUNDS=3] [ARMS="head0 r12"] OUT=dir ab.sh: many-queues with each arm's binaries in
# /tmp/ab/ARM, interleaved, ROUNDS rounds (mqcpu.sh); summary lines in $OUT/summary.txt.
R=$(dirname $0)
for r in $(seq 1 ${ROUNDS:-3}); do
  for a in ${ARMS:-head0 r12}; do
    sh $R/mqcpu.sh /tmp/ab/$a $a-$r | tee -a $OUT/summary.txt
    uptime >> $OUT/loadavg.txt
  done
done
