#!/bin/sh
# usage: OUT=dir [WL=workload.toml] [SET="--set k=v ..."] run.sh BIN_DIR LABEL: one ringmq-bench
# run of WL (default many-queues) against a broker on CPU 0 with metrics (load generator on
# CPU 1). Writes LABEL.json, LABEL.txt, the broker's metrics (LABEL-all-metrics.txt) and its
# counters (LABEL-metrics.txt), and prints records per batch and batches per request. The
# broker's data goes to /work/kd/LABEL (ab.sh deletes it after each round).
bin=$1; label=$2; dir=/work/kd/$label
mkdir -p $dir
cat > $dir/broker.toml <<CFG
[broker]
port = 19911
data_dir = "$dir/data"
shards = 1
cpus = [0]
pin = true
[storage]
flush_mode = "async"
$STORAGE
CFG
$bin/ringmq ${LOG:+--log-level $LOG} broker --config $dir/broker.toml --metrics-listen 127.0.0.1:19990 > $dir/broker.log 2>&1 &
pid=$!
sleep 2
$bin/ringmq-bench run ${WL:-bench-harness/workloads/many-queues.toml} --broker 127.0.0.1:19911 --cpus 1 --quiet $SET --out $OUT/$label.json > $OUT/$label.txt 2>&1
curl -s 127.0.0.1:19990/metrics > $OUT/$label-all-metrics.txt; grep -E "^ringmq_(requests_total|append_batches_total|index_room_waits_total|append_records_total|append_bytes_total|index_checkpoint_latency_seconds_(sum|count))" $OUT/$label-all-metrics.txt > $OUT/$label-metrics.txt
kill $pid; wait $pid
v() { grep "^ringmq_$1" $OUT/$label-metrics.txt | awk '{print $NF}'; }
echo "$label $(grep 'produce MB/s' $OUT/$label.txt | awk '{print "MB/s=" $NF}') requests=$(v requests_total) batches=$(v append_batches_total) records=$(v append_records_total) records/batch=$(echo "$(v append_records_total) $(v append_batches_total)" | awk '{printf "%.1f", $1/$2}') batches/request=$(echo "$(v append_batches_total) $(v requests_total)" | awk '{printf "%.1f", $1/$2}') index_room_waits=$(v index_room_waits_total) checkpoints=$(v index_checkpoint_latency_seconds_count) checkpoint_s=$(v index_checkpoint_latency_seconds_sum)"
