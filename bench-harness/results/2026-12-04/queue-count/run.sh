#!/bin/sh
# The same round-robin workload on 20, 250, 1,000 and 10,000 queues (10 topics of QPT queues),
# every batch exactly 3 records: batch_max_bytes 3300 (88 header + 3 x 1,044-byte records) and a
# linger (1 s) and producer buffer (256 MiB) that never seal a batch before it is full. So the
# queue count is the only difference between the arms: what the per-queue state costs at a
# fixed batch size (issue 10 item 2), apart from how batches shrink with many queues.
# Broker on CPU 0 with metrics, load generator on CPU 1 (../../2026-12-03/broker-batch-cost/mqcpu.sh).
# Run from the repository root: OUT=dir BIN=/tmp/ab/head FIRST=1 LAST=3 [QPTS="2 25 100 1000"] sh run.sh
set -u
mq=bench-harness/results/2026-12-03/broker-batch-cost/mqcpu.sh
for i in $(seq "$FIRST" "$LAST"); do
  qpts=${QPTS:-2 25 100 1000}
  # alternate the order each round
  if [ $((i % 2)) = 0 ]; then qpts=$(echo $qpts | tr ' ' '\n' | sort -rn | tr '\n' ' '); fi
  for q in $qpts; do
    SET="--set queues_per_topic=$q --set linger_ms=1000 --set batch_max_bytes=3300 --set producer_buffer_bytes=268435456 --set max_in_flight=200000 ${EXTRA:-}" \
      OUT=$OUT sh $mq "$BIN" q$q-$i | tee -a "$OUT/summary.txt"
    sleep 15
  done
done
