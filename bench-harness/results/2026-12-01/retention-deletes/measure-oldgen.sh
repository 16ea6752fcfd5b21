#!/bin/bash
# Issue 9: ack latency while retention deletes 256 MiB segments, before (a346171) and after.
# $1 = dir with the final ringmq + ringmq-bench.
final=$1
day=/work/main/bench-harness/results/2026-12-01
w=/work/main/bench-harness/workloads
quiet() { i=0; while pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; do i=$((i+1)); [ $i -gt 900 ] && break; sleep 1; done; }
mkdir -p $day/retention-deletes
for rep in 1 2 3; do
  for side in before after; do
    bin=/work/bin-before/ringmq; [ $side = after ] && bin=$final/ringmq
    quiet
    out=$day/retention-deletes/retention-sync-256MiB-oldgen-$side-$rep
    /work/bin-before/ringmq-bench run $w/latency.toml --spawn-broker --broker-bin $bin --broker-cpus 0 --cpus 1 --quiet \
      --data-dir /work --out $out.json \
      --set target_rate=20000 --set message_size_bytes=4096 --set duration_s=30 \
      --set storage.flush_mode=sync --set storage.segment_size_bytes=268435456 \
      --set storage.disk_max_used_ratio=0.000001 --set storage.retention_check_interval_ms=1000 > $out.txt 2>&1 || echo "exit $? $out"
  done
done
