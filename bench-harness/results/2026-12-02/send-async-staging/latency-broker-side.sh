#!/bin/sh
# Where the latency workload's ack p99 goes: the broker's own append->ack histogram
# (ringmq_append_ack_latency_seconds, from the metrics endpoint) next to the client's ack
# latency for the same run. Broker pinned to CPU 0 with metrics, harness on CPU 1.
# Usage: latency-broker-side.sh BIN_DIR LABEL [RATE]   (OUT=<dir>: reports there, not here)
set -eu
bin=$1; label=$2; rate=${3:-20000}
out=${OUT:-$(dirname "$0")}
dir=$(mktemp -d /work/ringmq-lat-XXXX)
cat > "$dir/broker.toml" <<CFG
[broker]
port = 19911
data_dir = "$dir/data"
shards = 1
cpus = [0]
pin = true
[storage]
flush_mode = "async"
CFG
"$bin/ringmq" broker --config "$dir/broker.toml" --metrics-listen 127.0.0.1:19990 > "$dir/broker.log" 2>&1 &
pid=$!
sleep 2
"$bin/ringmq-bench" run bench-harness/workloads/latency.toml --broker 127.0.0.1:19911 --cpus 1 \
    --quiet --set target_rate=$rate --out "$out/$label.json" > "$out/$label.txt" 2>&1 || true
curl -s http://127.0.0.1:19990/metrics | grep -E 'append_ack_latency|fsync_latency' > "$out/$label-broker-metrics.txt" || true
kill "$pid"; wait "$pid" || true
rm -rf "$dir"
