#!/bin/sh
# usage: OUT=dir [WL=workload.toml] ixrun.sh BIN_DIR LABEL: many-queues (or $WL) against a
# broker on CPU 0 with metrics (load generator on CPU 1), data kept under /work/kd/LABEL; the
# broker's index counters at the end of the run and 15 s later. The arms' brokers logged each
# index checkpoint's write-back and sync time at info level (a temporary line; the committed
# build logs it at debug).
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
CFG
$bin/ringmq broker --config $dir/broker.toml --metrics-listen 127.0.0.1:19990 > $dir/broker.log 2>&1 &
pid=$!
sleep 2
$bin/ringmq-bench run ${WL:-bench-harness/workloads/many-queues.toml} --broker 127.0.0.1:19911 --cpus 1 --quiet --out $OUT/$label.json > $OUT/$label.txt 2>&1
curl -s 127.0.0.1:19990/metrics | grep -E "^ringmq_(index_room_waits_total|index_checkpoint_latency_seconds_(sum|count)|append_bytes_total|requests_total)" > $OUT/$label-metrics-end.txt
sleep 15
curl -s 127.0.0.1:19990/metrics | grep -E "^ringmq_(index_room_waits_total|index_checkpoint_latency_seconds_(sum|count))" > $OUT/$label-metrics-after15s.txt
kill $pid; wait $pid
echo "$label $(grep 'produce MB/s' $OUT/$label.txt | awk '{print "MB/s=" $NF}') $(tr '\n' ' ' < $OUT/$label-metrics-end.txt) | after15s: $(tr '\n' ' ' < $OUT/$label-metrics-after15s.txt)"
