#!/bin/bash
# The broker's resident memory while the latency workload (1 KiB messages at 130k msg/s, one
# producer, no consumer) writes for DUR seconds with flush_mode = FLUSH (sync: a group commit
# about every millisecond, each dispatching a partly filled chunk). Broker on CPU 0 (one shard,
# defaults: 256 MiB chunk cache), load generator on CPU 1, data on the loop image at /mnt/r22.
# Usage: BIN=/tmp/ab/<build> FLUSH=sync DUR=150 bash rss.sh > out.txt
set -u
BIN=${BIN:?}; FLUSH=${FLUSH:-sync}; DUR=${DUR:-150}; DATA=/mnt/r22/data
rm -rf $DATA; fstrim /mnt/r22 2>/dev/null; sync
cfg=$(mktemp); printf '[broker]\ncpus = [0]\ndata_dir = "%s"\npin = true\nport = 9877\nshards = 1\n\n[storage]\nflush_mode = "%s"\n' $DATA $FLUSH > $cfg
$BIN/ringmq broker --config $cfg > /dev/null 2>&1 & bp=$!
for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 $BIN/ringmq-bench run /work/main/bench-harness/workloads/latency.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=$DUR --set consumers=0 --out /tmp/rss-run.json > /tmp/rss-run.txt 2>&1 & b=$!
for i in $(seq 1 $((DUR / 15))); do sleep 15; echo "t=$((i*15))s broker_rss_kb=$(grep VmRSS /proc/$bp/status | awk '{print $2}')"; done
wait $b; grep -E "produce MB/s" /tmp/rss-run.txt; kill -INT $bp; wait $bp; rm -rf $DATA $cfg
