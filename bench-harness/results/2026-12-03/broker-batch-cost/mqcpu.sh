#!/bin/sh
# usage: OUT=dir [WL=workload.toml] [SET="--set k=v ..."] [LOG=filter] mqcpu.sh BIN_DIR LABEL
# many-queues (or $WL) against a broker on CPU 0 with metrics (load generator on CPU 1), as
# ../produce-multi/mqrun.sh, plus the broker's CPU time: one line with MB/s, the broker's
# batches, records and requests, and its CPU microseconds per batch appended (utime + stime
# from /proc/PID/stat over the whole run, startup included). The run's data is deleted after
# it (each run writes about 10 GB); its broker log stays in /work/kd/LABEL.
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
$bin/ringmq ${LOG:+--log-level $LOG} broker --config $dir/broker.toml --metrics-listen 127.0.0.1:19990 > $dir/broker.log 2>&1 &
pid=$!
$bin/ringmq --version > $OUT/$label-version.txt
sleep 2
$bin/ringmq-bench run ${WL:-bench-harness/workloads/many-queues.toml} --broker 127.0.0.1:19911 --cpus 1 --quiet $SET --out $OUT/$label.json > $OUT/$label.txt 2>&1
curl -s 127.0.0.1:19990/metrics | grep -E "^ringmq_(requests_total|append_batches_total|index_room_waits_total|append_records_total|append_bytes_total|index_checkpoint_latency_seconds_(sum|count))" > $OUT/$label-metrics.txt
ticks=$(awk '{print $14 + $15}' /proc/$pid/stat)
kill $pid; wait $pid
rm -rf $dir/data
v() { grep "^ringmq_$1" $OUT/$label-metrics.txt | awk '{print $NF}'; }
hz=$(getconf CLK_TCK)
echo "$label $(grep 'produce MB/s' $OUT/$label.txt | awk '{print "MB/s=" $NF}') batches=$(v append_batches_total) records=$(v append_records_total) requests=$(v requests_total) broker_cpu_s=$(echo "$ticks $hz" | awk '{printf "%.1f", $1/$2}') cpu_us/batch=$(echo "$ticks $hz $(v append_batches_total)" | awk '{printf "%.2f", 1e6*$1/$2/$3}') index_room_waits=$(v index_room_waits_total) checkpoints=$(v index_checkpoint_latency_seconds_count)"
