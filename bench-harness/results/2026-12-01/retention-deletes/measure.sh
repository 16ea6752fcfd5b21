#!/bin/bash
# Ack latency while retention deletes 256 MiB segments: `latency` at 20k msg/s of 4 KiB, sync
# flush, 30 s, 3 runs per side, sides interleaved. What ran for the BENCHMARKS table:
#   GEN=/work/bin-before/ringmq-bench NAME=retention-sync-256MiB-oldgen ./measure.sh before after
#   GEN=<final>/ringmq-bench          NAME=retention-sync-256MiB       ./measure.sh after
#   GEN=/work/bin-before/ringmq-bench NAME=nodeletes-sync-256MiB-oldgen RATIO=0.99 ./measure.sh after
# Sides: before = broker built at a346171 ($BEFORE), after = broker built at 324a8dc ($AFTER).
# RATIO = storage.disk_max_used_ratio: 0.000001 deletes every sealed segment each second.
set -u
BEFORE=${BEFORE:-/work/bin-before/ringmq}
AFTER=${AFTER:-/work/bin-s2/ringmq}
RATIO=${RATIO:-0.000001}
out=$(dirname "$0")
w=$(dirname "$0")/../../../workloads
quiet() { i=0; while pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; do i=$((i+1)); [ $i -gt 900 ] && break; sleep 1; done; }
for rep in 1 2 3; do
  for side in "$@"; do
    bin=$BEFORE; [ "$side" = after ] && bin=$AFTER
    quiet
    o=$out/$NAME-$side-$rep
    $GEN run $w/latency.toml --spawn-broker --broker-bin $bin --broker-cpus 0 --cpus 1 --quiet \
      --data-dir /work --out $o.json \
      --set target_rate=20000 --set message_size_bytes=4096 --set duration_s=30 \
      --set storage.flush_mode=sync --set storage.segment_size_bytes=268435456 \
      --set storage.disk_max_used_ratio=$RATIO --set storage.retention_check_interval_ms=1000 \
      > $o.txt 2>&1 || echo "exit $? $o"
  done
done
