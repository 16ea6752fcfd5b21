#!/bin/bash
# Issue 11 measurement: consumer-group consumption through the push consumer.
# $1 = dir with ringmq + ringmq-bench (release), $2 = results dir.
# Broker: 1 shard on core 0, default config (async flush); ringmq-bench (its push consumers
# and the preloading producer) pinned to core 1 with taskset.
set -u
bin=$1; out=$2; mkdir -p $out
d=$(mktemp -d /work/bench-group.XXXX)
port=19931
quiet() { i=0; while pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; do i=$((i+1)); [ $i -gt 900 ] && break; sleep 1; done; }
quiet
taskset -c 0 $bin/ringmq broker --port $port --shards 1 --data-dir $d/data > $d/out.txt 2> $d/err.txt &
pid=$!
i=0; while ! grep -q ready $d/out.txt 2>/dev/null; do i=$((i+1)); [ $i -gt 600 ] && { cat $d/err.txt; exit 1; }; sleep 0.05; done
for run in 1 2 3; do
  taskset -c 1 $bin/ringmq-bench group --broker 127.0.0.1:$port --members 1,2,4 \
    --messages ${MESSAGES:-2000000} --message-size 100 --rebalance-rate 20000 \
    --out $out/group-run$run.json > $out/group-run$run.txt 2>&1
done
kill -TERM $pid; wait $pid
rm -rf $d
